//! The field's archives beyond the fixtures: each made once per test process by the real tool
//! that writes it in the field (pigz, gzip and zstd runs appended, pzstd, `zstd --long`,
//! skopeo 1.22, podman 5, `ctr export` of a multi-platform index, `docker save --platform`),
//! plus an image with two identical layers, untagged images and an archive over 2 GiB.
//! `versions.rs` puts every one of them in the "Versions tested" table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::harness::*;

/// `src` compressed by `tool` with `args`, the tar on its stdin (as `docker save | tool`).
fn piped(tool: &str, args: &[&str], src: &Path, dst: &Path) {
    let out = std::fs::File::create(dst).unwrap();
    let status = Command::new(tool)
        .args(args)
        .stdin(std::fs::File::open(src).unwrap())
        .stdout(out)
        .status()
        .unwrap();
    assert!(status.success(), "{tool} {args:?} failed: {status}");
}

/// `zstd -lv` of `path`: the frame count and window lines.
fn zstd_frames(path: &Path) -> String {
    let out = Command::new("zstd").arg("-lv").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The compressions operators' scripts apply to `docker save`'s archive of alpha:
/// (row name, archive).
pub fn compressed() -> &'static [(&'static str, PathBuf)] {
    static C: OnceLock<Vec<(&'static str, PathBuf)>> = OnceLock::new();
    C.get_or_init(|| {
        let f = fixtures();
        let tar = f.dir.join("docker.tar");
        let dir = temp_dir("compressed");
        let p = |n: &str| dir.join(n);
        piped("pigz", &["-c"], &tar, &p("pigz.tar.gz"));
        // Two halves compressed by two runs, the second appended: two gzip members, two
        // zstd frames (`split` cuts the tar stream anywhere, even inside a header).
        run(Command::new("split")
            .args(["-n", "2", "-d"])
            .arg(&tar)
            .arg(p("half")));
        for (tool, file) in [("gzip", "members.tar.gz"), ("zstd", "frames.tar.zst")] {
            let out = std::fs::File::create(p(file)).unwrap();
            for half in ["half00", "half01"] {
                run(Command::new(tool)
                    .args(["-q", "-c"])
                    .arg(p(half))
                    .stdout(out.try_clone().unwrap()));
            }
        }
        let frames = zstd_frames(&p("frames.tar.zst"));
        assert!(frames.contains("Frames: 2"), "{frames}");
        // pzstd starts the file with a skippable frame (its frame index).
        run(Command::new("pzstd")
            .args(["-q", "-p", "2", "-o"])
            .arg(p("pzstd.tar.zst"))
            .arg(&tar));
        let pz = zstd_frames(&p("pzstd.tar.zst"));
        assert!(pz.contains("Skippable Frames: 1"), "{pz}");
        // `--long` on a stream of unknown size: the frame asks for the whole 128 MiB window.
        // Both halves so, the second appended: a second frame with that window.
        let long = p("long.tar.zst");
        piped("zstd", &["-q", "--long", "-c"], &p("half00"), &long);
        let second = p("long-second.zst");
        piped("zstd", &["-q", "--long", "-c"], &p("half01"), &second);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&long)
            .unwrap()
            .write_all(&std::fs::read(&second).unwrap())
            .unwrap();
        let l = zstd_frames(&long);
        assert!(
            l.contains("Window Size: 128 MiB") && l.contains("Frames: 2"),
            "{l}"
        );
        vec![
            ("docker save | pigz", p("pigz.tar.gz")),
            (
                "docker save, gzip twice appended (two members)",
                p("members.tar.gz"),
            ),
            (
                "docker save | pzstd (a skippable frame first)",
                p("pzstd.tar.zst"),
            ),
            (
                "docker save, zstd twice appended (two frames)",
                p("frames.tar.zst"),
            ),
            (
                "docker save | zstd --long, twice appended (128 MiB windows)",
                long,
            ),
        ]
    })
}

/// alpha as skopeo 1.22 (forky, `OI_SKOPEO_122`) writes it to a docker-archive; None without it.
pub fn skopeo_122_docker_archive() -> Option<&'static PathBuf> {
    static A: OnceLock<Option<PathBuf>> = OnceLock::new();
    A.get_or_init(|| {
        let skopeo = std::env::var_os("OI_SKOPEO_122")?;
        let f = fixtures();
        let tar = temp_dir("skopeo-122").join("alpha-docker.tar");
        let to = format!("docker-archive:{}:{}", tar.display(), f.alpha.tag);
        skopeo_from_daemon(Command::new(&skopeo), &[], &f.alpha.tag, to);
        Some(tar)
    })
    .as_ref()
}

/// podman 5 (forky, `OI_PODMAN`) on storage of its own under the test temp dir.
fn podman() -> Option<Command> {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    let bin = std::env::var_os("OI_PODMAN")?;
    let store = STORE.get_or_init(|| temp_dir("podman"));
    let mut c = Command::new(bin);
    c.arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]);
    Some(c)
}

/// `image` pushed to the test registry as `REGISTRY/oi-test/<name>:1` by the default pair's
/// docker (its own tag removed again), as a TestImage of that name.
fn in_registry(image: &TestImage, name: &str) -> TestImage {
    let tag = format!("{}/oi-test/{name}:1", daemons().registry);
    run(docker().args(["tag", &image.tag, &tag]));
    run(docker().args(["push", "-q", &tag]));
    run(docker().args(["rmi", "--no-prune", &tag]));
    TestImage {
        reference: offline_images::reference::normalize(&tag).unwrap(),
        tag,
        config_digest: image.config_digest.clone(),
    }
}

/// The registry copies of alpha and beta.
fn registry_images() -> &'static (TestImage, TestImage) {
    static R: OnceLock<(TestImage, TestImage)> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixtures();
        (in_registry(&f.alpha, "alpha"), in_registry(&f.beta, "beta"))
    })
}

/// What podman 5 saves of alpha and beta pulled from the test registry.
pub struct PodmanSaves {
    pub docker_archive: PathBuf,
    pub oci_archive: PathBuf,
    /// `--multi-image-archive` of alpha and beta.
    pub multi: PathBuf,
    pub alpha: TestImage,
    pub beta: TestImage,
}

/// None when scripts/test.sh gave no podman 5 (`OI_PODMAN`).
pub fn podman_saves() -> Option<&'static PodmanSaves> {
    static P: OnceLock<Option<PodmanSaves>> = OnceLock::new();
    P.get_or_init(|| {
        std::env::var_os("OI_PODMAN")?;
        let podman = || podman().unwrap();
        let (alpha, beta) = registry_images().clone();
        for image in [&alpha, &beta] {
            run(podman().args(["pull", "-q", "--tls-verify=false", &image.tag]));
        }
        let dir = temp_dir("podman-saves");
        let saves = PodmanSaves {
            docker_archive: dir.join("podman-docker.tar"),
            oci_archive: dir.join("podman-oci.tar"),
            multi: dir.join("podman-multi.tar"),
            alpha,
            beta,
        };
        run(podman()
            .args(["save", "-q", "-o"])
            .arg(&saves.docker_archive)
            .arg(&saves.alpha.tag));
        run(podman()
            .args(["save", "-q", "--format", "oci-archive", "-o"])
            .arg(&saves.oci_archive)
            .arg(&saves.alpha.tag));
        run(podman()
            .args(["save", "-q", "--multi-image-archive", "-o"])
            .arg(&saves.multi)
            .args([&saves.alpha.tag, &saves.beta.tag]));
        Some(saves)
    })
    .as_ref()
}

/// A two-platform index in the test registry, `REGISTRY/oi-test/multi:1`: alpha for
/// linux/amd64 and an image of its own for linux/arm64, made with podman 5 (`podman import
/// --arch arm64`, `podman manifest create`, `add`, `push --all`). None without podman.
pub fn multi_platform_index() -> Option<&'static TestImage> {
    static M: OnceLock<Option<TestImage>> = OnceLock::new();
    M.get_or_init(|| {
        std::env::var_os("OI_PODMAN")?;
        let podman = || podman().unwrap();
        let (alpha, _) = registry_images().clone();
        let registry = &daemons().registry;
        let arm = format!("{registry}/oi-test/arm64:1");
        let multi = format!("{registry}/oi-test/multi:1");
        let dir = temp_dir("arm64");
        std::fs::create_dir_all(dir.join("root/bin")).unwrap();
        std::fs::copy("/bin/busybox", dir.join("root/bin/busybox")).unwrap();
        run(Command::new("tar")
            .arg("-C")
            .arg(dir.join("root"))
            .arg("-cf")
            .arg(dir.join("rootfs.tar"))
            .arg("bin"));
        run(podman()
            .args(["import", "-q", "--arch", "arm64"])
            .args(["--change", r#"ENTRYPOINT ["/bin/busybox"]"#])
            .arg(dir.join("rootfs.tar"))
            .arg(&arm));
        run(podman().args(["push", "-q", "--tls-verify=false", &arm]));
        run(podman().args(["manifest", "create", &multi]));
        for image in [&alpha.tag, &arm] {
            run(podman()
                .args(["manifest", "add", "--tls-verify=false", &multi])
                .arg(format!("docker://{image}")));
        }
        run(podman()
            .args([
                "manifest",
                "push",
                "-q",
                "--all",
                "--tls-verify=false",
                &multi,
            ])
            .arg(format!("docker://{multi}")));
        Some(TestImage {
            reference: offline_images::reference::normalize(&multi).unwrap(),
            tag: multi,
            config_digest: alpha.config_digest,
        })
    })
    .as_ref()
}

/// `ctr export` by `d`'s own ctr of the multi-platform index, pulled from the test registry:
/// without `--all-platforms` (the index, this platform's blobs only) or with it (every
/// platform's blobs, pulled with `--all-platforms`).
pub fn ctr_export_multi_platform(d: &Daemons, all: bool) -> Option<PathBuf> {
    let index = multi_platform_index()?;
    let ns = unique_namespace("multi-export");
    let flag: &[&str] = if all { &["--all-platforms"] } else { &[] };
    run(d
        .ctr(&ns)
        .args(["images", "pull", "--plain-http"])
        .args(flag)
        .arg(&index.reference));
    let out = temp_dir("multi-export").join(if all { "all.tar" } else { "one.tar" });
    ctr_export(
        || {
            let mut c = d.ctr(&ns);
            c.args(["images", "export"])
                .args(flag)
                .arg(&out)
                .arg(&index.reference);
            c
        },
        &out,
        &d.label,
    );
    let _ = d.ctr(&ns).args(["images", "rm", &index.reference]).output();
    Some(out)
}

/// Whether `d`'s docker CLI has `docker save --platform` (Docker 28 has; 20.10 and 26.1 not).
pub fn has_save_platform(d: &Daemons) -> bool {
    let help = d.docker().args(["save", "--help"]).output().unwrap();
    String::from_utf8_lossy(&help.stdout).contains("--platform")
}

/// `docker save --platform linux/amd64` of alpha by `d`'s own docker, where it has the flag.
pub fn docker_save_platform(d: &Daemons) -> Option<PathBuf> {
    if !has_save_platform(d) {
        return None;
    }
    let f = fixtures();
    run(d
        .docker()
        .args(["load", "-q", "-i"])
        .arg(f.dir.join("docker.tar")));
    let out = temp_dir("save-platform").join("alpha-amd64.tar");
    run(d
        .docker()
        .args(["save", "--platform", "linux/amd64", "-o"])
        .arg(&out)
        .arg(&f.alpha.tag));
    let _ = d
        .docker()
        .args(["image", "rm", "--force", &f.alpha.tag])
        .stdin(Stdio::null())
        .output();
    Some(out)
}

/// An image whose config lists one layer twice (the same file added by two `COPY` steps of
/// the classic builder), and `docker save`'s archive of it.
pub fn twin_layers() -> &'static (PathBuf, TestImage) {
    static T: OnceLock<(PathBuf, TestImage)> = OnceLock::new();
    T.get_or_init(|| {
        let ctx = temp_dir("twin");
        std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
        std::fs::write(ctx.join("message"), "hello from twin\n").unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY message /message\n\
             COPY message /message\nENTRYPOINT [\"/bin/busybox\"]\nCMD [\"cat\", \"/message\"]\n",
        )
        .unwrap();
        let tag = "oi-test/twin:1";
        run(docker()
            .args(["build", "-q", "-t", tag])
            .env("DOCKER_BUILDKIT", "0")
            .arg(&ctx));
        let layers: Vec<String> = serde_json::from_str(&stdout_of(docker().args([
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            tag,
        ])))
        .unwrap();
        assert!(
            layers.len() == 3 && layers[1] == layers[2],
            "the two COPY steps must make one layer twice: {layers:?}"
        );
        let tar = temp_dir("twin-save").join("twin.tar");
        run(docker().args(["save", "-o"]).arg(&tar).arg(tag));
        (tar, test_image(tag))
    })
}

/// skopeo's oci-archive of alpha written without a reference: its index names nothing.
/// Returns it and alpha's config digest in it (skopeo writes an OCI config of its own).
pub fn untagged_oci() -> &'static (PathBuf, String) {
    static U: OnceLock<(PathBuf, String)> = OnceLock::new();
    U.get_or_init(|| {
        let f = fixtures();
        let tar = temp_dir("untagged-oci").join("untagged-oci.tar");
        let to = format!("oci-archive:{}", tar.display());
        skopeo_from_daemon(skopeo(), &[], &f.alpha.tag, to);
        let index: serde_json::Value =
            serde_json::from_slice(&tar_file(&tar, "index.json")).unwrap();
        assert!(
            index["manifests"][0].get("annotations").is_none(),
            "skopeo named the image: {index}"
        );
        let manifest: serde_json::Value = serde_json::from_str(&stdout_of(
            skopeo()
                .args(["inspect", "--raw"])
                .arg(format!("oci-archive:{}", tar.display())),
        ))
        .unwrap();
        let config = manifest["config"]["digest"].as_str().unwrap().to_string();
        (tar, config)
    })
}

/// One regular file of a tar archive.
fn tar_file(path: &Path, name: &str) -> Vec<u8> {
    tar_files(path)
        .into_iter()
        .find(|(n, _)| n.trim_start_matches("./") == name)
        .unwrap_or_else(|| panic!("{name} not in {}", path.display()))
        .1
}

/// The size of the big archive's data file: over 2 GiB, so that the archive is too.
const BIG_MIB: u64 = 2100;

/// An image of busybox and 2100 MiB of incompressible data (a 4 MiB random block repeated:
/// more than any gzip or zstd window) made by `docker import` from a tar stream written
/// straight into it, and `docker save`'s plain tar of it: over 2 GiB, written once per run.
pub fn big_archive() -> &'static (PathBuf, TestImage) {
    static B: OnceLock<(PathBuf, TestImage)> = OnceLock::new();
    B.get_or_init(|| {
        let started = std::time::Instant::now();
        let tag = "oi-test/big:1";
        let mut import = docker()
            .arg("import")
            .args(["--change", r#"ENTRYPOINT ["/bin/busybox"]"#])
            .args(["--change", r#"CMD ["echo", "hello from big"]"#])
            .args(["-", tag])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        write_big_rootfs(import.stdin.take().unwrap());
        let out = import.wait_with_output().unwrap();
        assert!(out.status.success(), "docker import failed");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let tar = temp_dir("big-save").join("big.tar");
        run(docker().args(["save", "-o"]).arg(&tar).arg(tag));
        run(docker().args(["rmi", tag]));
        let size = std::fs::metadata(&tar).unwrap().len();
        assert!(size > 2 << 30, "{size}");
        eprintln!(
            "the big archive ({} MiB) took {:.1}s to make (docker import, docker save)",
            size >> 20,
            started.elapsed().as_secs_f64()
        );
        let image = TestImage {
            tag: tag.into(),
            reference: offline_images::reference::normalize(tag).unwrap(),
            config_digest: id,
        };
        (tar, image)
    })
}

/// A rootfs tar stream: /bin/busybox and /data of `BIG_MIB` MiB.
fn write_big_rootfs(to: impl Write) {
    let mut block = vec![0u8; 4 << 20];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut block,
    )
    .unwrap();
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, to));
    b.append_path_with_name("/bin/busybox", "bin/busybox")
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(BIG_MIB << 20);
    h.set_mode(0o644);
    h.set_cksum();
    let blocks = (BIG_MIB << 20) / block.len() as u64;
    let data = Repeat {
        block: &block,
        at: 0,
        left: blocks * block.len() as u64,
    };
    b.append_data(&mut h, "data", data).unwrap();
    b.into_inner().unwrap().flush().unwrap();
}

/// `block` repeated until `left` bytes are given.
struct Repeat<'a> {
    block: &'a [u8],
    at: usize,
    left: u64,
}

impl std::io::Read for Repeat<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(self.block.len() - self.at)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at = (self.at + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}
