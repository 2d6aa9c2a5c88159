//! Fixture images and archives: tiny images built FROM scratch around the static busybox on
//! the real dockerd, saved in every archive flavour the importer reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::daemons::{daemons, matrix};
use super::run::{ctr, docker, run, skopeo, stdout_of, temp_dir};

/// Run `export` (a `ctr images export` that writes `out`) until tar can list what it wrote,
/// up to three times, each short archive logged: ctr 2.1, exporting through containerd's
/// transfer service, has exited 0 with an archive short of its last bytes.
pub fn ctr_export(export: impl Fn() -> Command, out: &Path, label: &str) {
    for attempt in 1..=3 {
        run(&mut export());
        let listed = Command::new("tar").arg("-tf").arg(out).output().unwrap();
        if listed.status.success() {
            return;
        }
        eprintln!(
            "{label}: ctr export wrote a truncated {} (attempt {attempt}): {}",
            out.display(),
            String::from_utf8_lossy(&listed.stderr).trim()
        );
    }
    panic!(
        "{label}: ctr export wrote a truncated {} three times",
        out.display()
    );
}

/// A test image as the daemon knows it.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// As given to docker build, e.g. `oi-test/alpha:1`.
    pub tag: String,
    /// Normalised, e.g. `docker.io/oi-test/alpha:1`.
    pub reference: String,
    /// The config digest, as `docker image inspect` reports it (`.Id`).
    pub config_digest: String,
}

/// Build an image FROM scratch with the static busybox and a file of its own, so that each
/// image has a distinct config and a layer shared with the others (busybox).
pub fn build_image(tag: &str, message: &str) -> TestImage {
    let ctx = temp_dir("build");
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    std::fs::write(ctx.join("message"), format!("{message}\n")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY message /message\n\
         ENTRYPOINT [\"/bin/busybox\"]\nCMD [\"cat\", \"/message\"]\n",
    )
    .unwrap();
    run(docker().args(["build", "-q", "-t", tag]).arg(&ctx));
    test_image(tag)
}

/// `skopeo copy` (the `skopeo` command given, with `extra` flags) of `tag` from the default
/// pair's dockerd to `dest` (`docker-archive:PATH:TAG`, `oci-archive:PATH`, …).
pub fn skopeo_from_daemon(mut skopeo: Command, extra: &[&str], tag: &str, dest: String) {
    run(skopeo
        .args(["copy", "--quiet"])
        .args(extra)
        .args(["--src-daemon-host", &daemons().docker_host])
        .arg(format!("docker-daemon:{tag}"))
        .arg(dest));
}

/// The image the default pair's dockerd holds under `tag`, with its config digest.
pub fn test_image(tag: &str) -> TestImage {
    let id = stdout_of(docker().args(["image", "inspect", "--format", "{{.Id}}", tag]));
    TestImage {
        tag: tag.to_string(),
        reference: offline_images::reference::normalize(tag).unwrap(),
        config_digest: id.trim().to_string(),
    }
}

/// Every archive flavour the importer reads, built once per test process.
pub struct Fixtures {
    pub alpha: TestImage,
    pub beta: TestImage,
    pub dir: PathBuf,
    /// (flavour, archive path, the image it holds)
    pub flavours: Vec<(&'static str, PathBuf, TestImage)>,
    /// `docker save` of alpha and beta together.
    pub two_images: PathBuf,
    /// `docker save` of alpha by image ID: no name inside.
    pub untagged: PathBuf,
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(build_fixtures)
}

fn build_fixtures() -> Fixtures {
    let alpha = build_image("oi-test/alpha:1", "hello from alpha");
    let beta = build_image("oi-test/beta:1", "hello from beta");
    let dir = temp_dir("fixtures");
    let p = |name: &str| dir.join(name);

    run(docker()
        .args(["save", "-o"])
        .arg(p("docker.tar"))
        .arg(&alpha.tag));
    gzip(&p("docker.tar"), &p("docker.tar.gz"));

    // ctr export writes an OCI layout; the image goes through containerd first.
    let ns = "oi-fixtures";
    run(ctr(ns).args(["images", "import"]).arg(p("docker.tar")));
    run(ctr(ns)
        .args(["images", "export", "--platform", "linux/amd64"])
        .arg(p("ctr-oci.tar"))
        .arg(&alpha.reference));

    for (dest, file) in [
        ("docker-archive", "skopeo-docker.tar"),
        ("oci-archive", "skopeo-oci.tar"),
    ] {
        let to = format!("{dest}:{}:{}", p(file).display(), alpha.tag);
        skopeo_from_daemon(skopeo(), &[], &alpha.tag, to);
    }

    run(docker()
        .args(["save", "-o"])
        .arg(p("two-images.tar"))
        .args([&alpha.tag, &beta.tag]));
    run(docker()
        .args(["save", "-o"])
        .arg(p("untagged.tar"))
        .arg(&alpha.config_digest));

    // skopeo converts the config to OCI media types when it writes an OCI archive, so that
    // image has a config digest of its own: take it from skopeo's own reading of the archive.
    let oci_manifest: serde_json::Value = serde_json::from_str(&stdout_of(
        skopeo()
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", p("skopeo-oci.tar").display())),
    ))
    .unwrap();
    let alpha_oci = TestImage {
        config_digest: oci_manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        ..alpha.clone()
    };
    let flavours = vec![
        ("docker save", p("docker.tar"), alpha.clone()),
        ("docker save | gzip", p("docker.tar.gz"), alpha.clone()),
        ("ctr export", p("ctr-oci.tar"), alpha.clone()),
        (
            "skopeo docker-archive",
            p("skopeo-docker.tar"),
            alpha.clone(),
        ),
        ("skopeo oci-archive", p("skopeo-oci.tar"), alpha_oci),
    ];
    Fixtures {
        two_images: p("two-images.tar"),
        untagged: p("untagged.tar"),
        alpha,
        beta,
        dir,
        flavours,
    }
}

/// gzip a file with the system gzip, as operators' scripts do.
pub fn gzip(src: &Path, dst: &Path) {
    let out = std::fs::File::create(dst).unwrap();
    run(Command::new("gzip").arg("-c").arg(src).stdout(out));
}

/// A name no other test uses, for images a test builds and removes on its own.
pub fn unique_tag(label: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "oi-test/{label}:{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Save `image` in one archive flavour (the names are those of `fixtures().flavours`), the
/// way `build_fixtures` does, into a fresh directory. Returns the archive and the image as
/// that archive holds it (skopeo's OCI archive has a config digest of its own).
pub fn save_as(flavour: &str, image: &TestImage) -> (PathBuf, TestImage) {
    let dir = temp_dir("flavour");
    let tar = dir.join("image.tar");
    let skopeo_to = |dest: &str| {
        let to = format!("{dest}:{}:{}", tar.display(), image.tag);
        skopeo_from_daemon(skopeo(), &[], &image.tag, to);
    };
    match flavour {
        "docker save" | "docker save | gzip" => {
            run(docker().args(["save", "-o"]).arg(&tar).arg(&image.tag));
            if flavour.ends_with("gzip") {
                let gz = dir.join("image.tar.gz");
                gzip(&tar, &gz);
                return (gz, image.clone());
            }
        }
        "ctr export" => {
            let saved = dir.join("saved.tar");
            run(docker().args(["save", "-o"]).arg(&saved).arg(&image.tag));
            let ns = format!("oi-save-{}", dir.file_name().unwrap().to_string_lossy());
            run(ctr(&ns).args(["images", "import"]).arg(&saved));
            run(ctr(&ns)
                .args(["images", "export", "--platform", "linux/amd64"])
                .arg(&tar)
                .arg(&image.reference));
            let _ = ctr(&ns).args(["images", "rm", &image.reference]).output();
        }
        "skopeo docker-archive" => skopeo_to("docker-archive"),
        "skopeo oci-archive" | "skopeo oci-archive, gzip layers" => {
            if flavour.ends_with("gzip layers") {
                // As images copied from a registry are stored: compressed layers.
                let to = format!("oci-archive:{}:{}", tar.display(), image.tag);
                skopeo_from_daemon(skopeo(), &["--dest-compress"], &image.tag, to);
            } else {
                skopeo_to("oci-archive");
            }
            let manifest: serde_json::Value = serde_json::from_str(&stdout_of(
                skopeo()
                    .args(["inspect", "--raw"])
                    .arg(format!("oci-archive:{}", tar.display())),
            ))
            .unwrap();
            if flavour.ends_with("gzip layers") {
                let layers = manifest["layers"].as_array().unwrap();
                assert!(
                    layers.iter().all(|l| l["mediaType"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("+gzip"))),
                    "skopeo did not compress the layers: {manifest}"
                );
            }
            let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
            return (
                tar,
                TestImage {
                    config_digest,
                    ..image.clone()
                },
            );
        }
        other => panic!("unknown archive flavour {other:?}"),
    }
    (tar, image.clone())
}

/// Remove an image (by tag or ID) from the test dockerd; absent is fine. Its untagged parents
/// stay: they are the build cache other tests' builds share.
pub fn docker_rmi(image: &str) {
    let _ = docker()
        .args(["image", "rm", "--force", "--no-prune", image])
        .stdin(Stdio::null())
        .output();
}

/// `docker image inspect --format {{.Id}}`, or None when the daemon has no such image.
pub fn docker_image_id(image: &str) -> Option<String> {
    let out = docker()
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Build an image, push it to the test registry as `REGISTRY/oi-export/NAME:1`, and remove it
/// from the test dockerd, so that whoever wants it must pull it from the registry.
pub fn pushed_image(name: &str, message: &str) -> TestImage {
    let tag = format!("{}/oi-export/{name}:1", daemons().registry);
    let image = build_image(&tag, message);
    run(docker().args(["push", "-q", &tag]));
    // --no-prune: the untagged parent (the cached busybox step) may be the parent of an image
    // another test is building right now.
    run(docker().args(["rmi", "--no-prune", &tag]));
    image
}

/// An image FROM scratch holding only the static busybox: its one layer is the first layer of
/// every image `build_image` makes, so saving it with them shares that layer.
pub fn build_base_image(tag: &str) -> TestImage {
    let ctx = temp_dir("build-base");
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\nCMD [\"echo\", \"hello from base\"]\n",
    )
    .unwrap();
    run(docker().args(["build", "-q", "-t", tag]).arg(&ctx));
    test_image(tag)
}

/// `docker save` of three images that share the busybox layer (base, alpha, beta), made by
/// the Docker of each version of the matrix (same index), and the images it holds with the
/// message each prints. Docker before 25 stores the shared layer once and links the other
/// `layer.tar` to it (`../<id>/layer.tar`).
pub struct SharedLayerSave {
    pub archive: PathBuf,
    pub images: Vec<(TestImage, &'static str)>,
}

pub fn shared_layer_saves() -> &'static [SharedLayerSave] {
    static S: OnceLock<Vec<SharedLayerSave>> = OnceLock::new();
    S.get_or_init(|| {
        let f = fixtures();
        let base = build_base_image("oi-test/base:1");
        let images = vec![
            (base, "hello from base"),
            (f.alpha.clone(), "hello from alpha"),
            (f.beta.clone(), "hello from beta"),
        ];
        let tags: Vec<&str> = images.iter().map(|(i, _)| i.tag.as_str()).collect();
        let dir = temp_dir("shared-layer");
        let first = dir.join("shared-0.tar");
        run(docker().args(["save", "-o"]).arg(&first).args(&tags));
        let mut out = vec![SharedLayerSave {
            archive: first.clone(),
            images: images.clone(),
        }];
        for (i, d) in matrix().iter().enumerate().skip(1) {
            // Each version's own docker save, of the same images loaded into it.
            run(d.docker().args(["load", "-q", "-i"]).arg(&first));
            let archive = dir.join(format!("shared-{i}.tar"));
            run(d.docker().args(["save", "-o"]).arg(&archive).args(&tags));
            for (img, _) in &images {
                let _ = d
                    .docker()
                    .args(["image", "rm", "--force", &img.tag])
                    .stdin(Stdio::null())
                    .output();
            }
            // The same configs, so the same config digests, whatever the version.
            out.push(SharedLayerSave {
                archive,
                images: images.clone(),
            });
        }
        out
    })
}

/// An image FROM scratch whose one layer is a file of `mib` MiB of random bytes (it does not
/// compress), built as `tag` in the rig's dockerd.
pub fn build_random_image(tag: &str, mib: usize) {
    use std::io::Read;
    let ctx = temp_dir("build-random");
    let mut data = vec![0u8; mib << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::write(ctx.join("random"), &data).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY random /random\n",
    )
    .unwrap();
    run(docker().args(["build", "-q", "-t", tag]).arg(&ctx));
}
