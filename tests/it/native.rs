//! The native containerd client: what it alone does (disk preflight, blobs and snapshots
//! skipped when present), on real containerd daemons. The import, verify, prune and fault
//! suites run with it too (see `harness::containerd_client`).

use std::path::Path;
use std::process::Command;

use crate::harness::*;

const BOUND: u64 = 120;

/// `cd.import`, with the native client whatever the suite's client is.
pub(crate) fn native_import(cd: &PrivateContainerd, dir: &Path, ns: &str) -> Command {
    let mut c = cd.import(dir, ns);
    c.env("CONTAINERD_CLIENT", "native")
        .env("PATH", empty_path());
    c
}

fn line_of<'a>(log: &'a str, file: &str) -> &'a str {
    log.lines()
        .find(|l| {
            (l.starts_with("imported") || l.starts_with("FAILED") || l.starts_with("skipped"))
                && l.contains(file)
        })
        .unwrap_or_else(|| panic!("no result line for {file}:\n{log}"))
}

/// Bytes under `dir`, as the files there hold them.
fn bytes_under(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn the_disk_preflight_refuses_an_archive_that_would_not_fit_before_sending_a_byte_and_the_others_import(
) {
    let f = fixtures();
    // 44 MiB of layer, stored and unpacked: 88 MiB of a 120 MiB disk, over 70%, under 85%.
    let cd = PrivateContainerd::start("preflight", Some(120));
    let dir = scratch_dir("preflight-images");
    big_docker_archive(&dir.join("a-big.tar"), "oi-test/preflight-big:1", 44);
    std::fs::copy(f.dir.join("docker.tar.gz"), dir.join("b-alpha.tar.gz")).unwrap();
    let ns = "preflight";
    let content = cd.root.join("io.containerd.content.v1.content");

    let out = run_bounded(
        native_import(&cd, &dir, ns).args(["--disk-max-used", "70"]),
        BOUND,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = line_of(&out.stderr, "a-big.tar");
    assert!(line.starts_with("FAILED"), "{}", out.stderr);
    for words in [
        "not enough disk space",
        "88.0 MiB",
        "70%",
        "nothing of it was sent",
    ] {
        assert!(line.contains(words), "{words:?} in {line}");
    }
    assert!(
        line_of(&out.stderr, "b-alpha.tar.gz").starts_with("imported"),
        "{}",
        out.stderr
    );
    // Not a byte of the big layer reached containerd: its store holds alpha alone.
    let stored = bytes_under(&content);
    assert!(stored < 8 << 20, "{stored} bytes in {}", content.display());
    assert!(!cd.images(ns).iter().any(|n| n.contains("preflight-big")));

    // At the default limit (85%) it fits, and goes in.
    let out = run_bounded(&native_import(&cd, &dir, ns), BOUND);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        line_of(&out.stderr, "a-big.tar").starts_with("imported"),
        "{}",
        out.stderr
    );
    assert!(cd
        .images(ns)
        .contains(&"docker.io/oi-test/preflight-big:1".to_string()));
}

// ---- what the kubelet sees ------------------------------------------------------------------

pub(crate) mod cri {
    use k8s_cri::v1::image_service_client::ImageServiceClient;
    use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
    use tonic::transport::Channel;

    /// A CRI client on a containerd socket, as the kubelet connects.
    pub struct Cri {
        pub rt: tokio::runtime::Runtime,
        channel: Channel,
    }

    impl Cri {
        pub fn connect(socket: &std::path::Path) -> Cri {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let path = socket.to_path_buf();
            let channel = rt
                .block_on(
                    tonic::transport::Endpoint::from_static("http://[::]").connect_with_connector(
                        tower::service_fn(move |_| {
                            let path = path.clone();
                            async move {
                                let s = tokio::net::UnixStream::connect(path).await?;
                                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                            }
                        }),
                    ),
                )
                .unwrap();
            Cri { rt, channel }
        }

        pub fn images(&self) -> ImageServiceClient<Channel> {
            ImageServiceClient::new(self.channel.clone())
        }

        pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
            RuntimeServiceClient::new(self.channel.clone())
        }
    }
}

/// Whether the CRI of the containerd whose `ctr version` server part is `server` fills in an
/// image's `pinned`: from the `io.cri-containerd.pinned` label, since containerd 1.6.22 and
/// 1.7.3 ("Pinned image support"). Before, the field is in the CRI messages but never set
/// (`toCRIImage` of 1.6.20 and 1.7.0 leaves it out), so it reads false whatever the labels.
fn cri_reports_pinned(server: &str) -> bool {
    let version = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(|v| v.trim().trim_start_matches('v'))
        .unwrap_or_else(|| panic!("no server version in {server}"));
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match (major, minor) {
        (1, 6) => patch >= 22,
        (1, 7) => patch >= 3,
        (1, m) => m > 7,
        (m, _) => m > 1,
    }
}

/// An image FROM scratch whose command runs until killed: the pod sandbox's "pause" image.
pub(crate) fn pause_archive(dir: &Path) -> (std::path::PathBuf, String) {
    let ctx = temp_dir("pause-build");
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n\
         CMD [\"sleep\", \"3600\"]\n",
    )
    .unwrap();
    let tag = unique_tag("pause");
    run(docker().args(["build", "-q", "-t", &tag]).arg(&ctx));
    let path = dir.join("pause.tar");
    run(docker().args(["save", "-o"]).arg(&path).arg(&tag));
    (path, offline_images::reference::normalize(&tag).unwrap())
}

#[test]
fn the_kubelet_finds_every_imported_reference_through_the_cri_and_each_is_pinned() {
    use k8s_cri::v1::*;
    let f = fixtures();
    let dir = temp_dir("cri-images");
    std::fs::copy(&f.two_images, dir.join("two-images.tar")).unwrap();
    let multi = offline_images::reference::normalize(&unique_tag("cri-multi")).unwrap();
    multi_platform_oci(&f.dir.join("ctr-oci.tar"), &dir.join("multi.tar"), &multi);
    let (_, pause) = pause_archive(&dir);
    let cd = PrivateContainerd::start_cri("cri", &pause);
    let out = run_bounded(&native_import(&cd, &dir, "k8s.io"), BOUND);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("FAILED"), "{}", out.stderr);
    // Unpacked where the kubelet's containers will look: the CRI plugin's snapshotter.
    assert!(
        out.stderr.contains("snapshotter native: the CRI plugin's"),
        "{}",
        out.stderr
    );
    let snapshots =
        stdout_of(
            cd.ctr("k8s.io")
                .args(["snapshots", "--snapshotter", "native", "ls"]),
        );
    assert!(snapshots.lines().count() > 1, "{snapshots}");

    let cri = cri::Cri::connect(&cd.socket);
    let version = stdout_of(cd.ctr("default").args(["version"]));
    let server = version.split("Server:").nth(1).unwrap_or("");
    let reports_pinned = cri_reports_pinned(server);
    let listed = cri
        .rt
        .block_on(cri.images().list_images(ListImagesRequest { filter: None }))
        .unwrap()
        .into_inner()
        .images;
    for reference in [&f.alpha.reference, &f.beta.reference, &multi, &pause] {
        let image = listed
            .iter()
            .find(|i| i.repo_tags.contains(reference))
            .unwrap_or_else(|| panic!("ListImages has no {reference}: {listed:?}"));
        assert!(
            image.pinned || !reports_pinned,
            "{reference} is not pinned: {image:?}"
        );
        // Where the CRI does not tell, the label it would read is there all the same.
        let labels =
            stdout_of(
                cd.ctr("k8s.io")
                    .args(["images", "ls", &format!("name=={reference}")]),
            );
        assert!(
            labels.contains("io.cri-containerd.pinned=pinned"),
            "{labels}"
        );
        let status = cri
            .rt
            .block_on(cri.images().image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
                verbose: false,
            }))
            .unwrap()
            .into_inner()
            .image
            .unwrap_or_else(|| panic!("ImageStatus does not find {reference}"));
        assert!(status.pinned || !reports_pinned, "{reference}: {status:?}");
    }
    let alpha = listed
        .iter()
        .find(|i| i.repo_tags.contains(&f.alpha.reference))
        .unwrap();
    assert_eq!(
        alpha.id, f.alpha.config_digest,
        "the image ID is its config digest"
    );
}

#[test]
fn a_pod_on_the_host_network_runs_a_container_from_an_imported_image_with_no_registry() {
    let f = fixtures();
    let dir = temp_dir("pod-images");
    std::fs::copy(f.dir.join("docker.tar.gz"), dir.join("alpha.tar.gz")).unwrap();
    let (_, pause) = pause_archive(&dir);
    let cd = PrivateContainerd::start_cri("pod", &pause);
    let out = run_bounded(&native_import(&cd, &dir, "k8s.io"), BOUND);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cri = cri::Cri::connect(&cd.socket);
    let logs = temp_dir("pod-logs");
    let log = cd.dir.join("containerd.log");
    let printed = run_a_pod(&cri, &logs, &f.alpha.reference, &log);
    assert!(printed.contains("hello from alpha"), "{printed}");
}

/// Removes the pod sandbox when the test ends, however it ends, so no shim outlives it.
struct Pod<'a> {
    cri: &'a cri::Cri,
    id: String,
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        use k8s_cri::v1::*;
        let id = self.id.clone();
        let _ = self
            .cri
            .rt
            .block_on(self.cri.runtime().stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            }));
        let _ = self.cri.rt.block_on(
            self.cri
                .runtime()
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
        );
    }
}

/// A pod sandbox on the host network (no CNI) with one container from `image`, as the kubelet
/// makes it; what the container printed.
pub(crate) fn run_a_pod(cri: &cri::Cri, logs: &Path, image: &str, daemon_log: &Path) -> String {
    use k8s_cri::v1::*;
    let failed = |what: &str, e: tonic::Status| -> ! {
        let log = std::fs::read_to_string(daemon_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("{what}: {e}\ncontainerd's log ends:\n{}", tail.join("\n"))
    };
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "oi-pod".into(),
            uid: "oi-pod-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Pod as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = cri
        .rt
        .block_on(cri.runtime().run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        }))
        .unwrap_or_else(|e| failed("the pod sandbox does not start", e))
        .into_inner()
        .pod_sandbox_id;
    let _pod = Pod {
        cri,
        id: id.clone(),
    };
    let container = cri
        .rt
        .block_on(cri.runtime().create_container(CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "hello".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                log_path: "hello.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox),
        }))
        .unwrap_or_else(|e| failed("the container is not created from the imported image", e))
        .into_inner()
        .container_id;
    cri.rt
        .block_on(cri.runtime().start_container(StartContainerRequest {
            container_id: container.clone(),
        }))
        .unwrap_or_else(|e| failed("the container does not start", e));
    for _ in 0..200 {
        let state = cri
            .rt
            .block_on(cri.runtime().container_status(ContainerStatusRequest {
                container_id: container.clone(),
                verbose: false,
            }))
            .unwrap()
            .into_inner()
            .status
            .map(|s| s.state);
        if state == Some(ContainerState::ContainerExited as i32) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::read_to_string(logs.join("hello.log")).unwrap_or_default()
}

#[test]
fn a_layer_two_images_share_names_both_repositories_as_its_distribution_source() {
    let f = fixtures();
    let dir = temp_dir("sources");
    std::fs::copy(&f.two_images, dir.join("two-images.tar")).unwrap();
    let ns = unique_namespace("sources");
    let mut cmd = against_containerd("import", &dir, &ns);
    cmd.env("CONTAINERD_CLIENT", "native")
        .env("PATH", empty_path());
    let (code, _, stderr) = outcome(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    // alpha and beta share the busybox layer: its label lists both, whichever came last.
    let content = stdout_of(ctr(&ns).args(["content", "ls"]));
    let both = ["oi-test/alpha,oi-test/beta", "oi-test/beta,oi-test/alpha"]
        .map(|r| format!("containerd.io/distribution.source.docker.io={r}"));
    assert!(
        content
            .lines()
            .any(|l| l.contains("containerd.io/uncompressed") && both.iter().any(|b| l.contains(b))),
        "{content}"
    );
}

/// The log line in which the native client says what it sent for `file`.
fn sent_line<'a>(log: &'a str, file: &str) -> &'a str {
    log.lines()
        .find(|l| l.starts_with(&format!("{file}: sent ")))
        .unwrap_or_else(|| panic!("no line of what was sent for {file}:\n{log}"))
}

/// Bytes of a `human_bytes` amount at the start of `text`, e.g. `1.5 KiB` (rounded down).
fn amount(text: &str) -> u64 {
    let mut it = text.split_whitespace();
    let v: f64 = it.next().unwrap().parse().unwrap();
    let unit = match it.next().unwrap() {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        u => panic!("unit {u}"),
    };
    (v * unit as f64) as u64
}

/// What the native client sent for `file`: (bytes sent, layers unpacked).
fn sent_of(log: &str, file: &str) -> (u64, usize) {
    let line = sent_line(log, file);
    let sent = amount(line.split(": sent ").nth(1).unwrap());
    let unpacked = line
        .split("; ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    (sent, unpacked)
}

#[test]
fn a_rerun_over_docker_save_archives_ctr_imported_sends_no_layer_plain_or_gzip() {
    let f = fixtures();
    for file in ["docker.tar", "docker.tar.gz"] {
        let ns = unique_namespace("rerun-other");
        let plain = f.dir.join("docker.tar");
        run(ctr(&ns).args(["images", "import"]).arg(&plain));
        let dir = temp_dir("rerun-other");
        std::fs::copy(f.dir.join(file), dir.join(file)).unwrap();
        let mut cmd = against_containerd("import", &dir, &ns);
        cmd.env("CONTAINERD_CLIENT", "native")
            .env("PATH", empty_path());
        let (code, _, stderr) = outcome(&mut cmd);
        assert_eq!(code, 0, "{stderr}");
        assert!(line_of(&stderr, file).starts_with("imported"), "{stderr}");
        // The busybox layer is about 1 MiB: only the config and the manifest go.
        let (sent, unpacked) = sent_of(&stderr, file);
        assert!(sent < 64 << 10, "{file}: {}", sent_line(&stderr, file));
        assert_eq!(unpacked, 0, "{file}: {}", sent_line(&stderr, file));
        assert_eq!(
            ctr_config_digest(&ns, &f.alpha.reference).as_deref(),
            Some(f.alpha.config_digest.as_str()),
            "{stderr}"
        );
    }
}

#[test]
fn a_gzip_layer_of_the_size_of_another_present_is_sent_in_a_second_pass() {
    // Two images whose own layers have the same size and different bytes.
    let a = build_image(&unique_tag("same-size-a"), "same size, image a");
    let b = build_image(&unique_tag("same-size-b"), "same size, image b");
    let work = temp_dir("same-size");
    let (tar_a, tar_b) = (work.join("a.tar"), work.join("b.tar"));
    run(docker().args(["save", "-o"]).arg(&tar_a).arg(&a.tag));
    run(docker().args(["save", "-o"]).arg(&tar_b).arg(&b.tag));
    let ns = unique_namespace("same-size");
    run(ctr(&ns).args(["images", "import"]).arg(&tar_a));
    let dir = temp_dir("same-size-images");
    gzip(&tar_b, &dir.join("b.tar.gz"));
    let mut cmd = against_containerd("import", &dir, &ns);
    cmd.env("CONTAINERD_CLIENT", "native")
        .env("PATH", empty_path());
    let (code, _, stderr) = outcome(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        line_of(&stderr, "b.tar.gz").starts_with("imported"),
        "{stderr}"
    );
    // Its own layer was hashed, found missing, and sent from a second reading; busybox not.
    let (sent, unpacked) = sent_of(&stderr, "b.tar.gz");
    assert_eq!(unpacked, 1, "{}", sent_line(&stderr, "b.tar.gz"));
    assert!(sent < 64 << 10, "{}", sent_line(&stderr, "b.tar.gz"));
    assert_eq!(
        ctr_config_digest(&ns, &b.reference).as_deref(),
        Some(b.config_digest.as_str()),
        "{stderr}"
    );
    let check = stdout_of(ctr(&ns).args(["images", "check"]));
    let line = check
        .lines()
        .find(|l| l.starts_with(&b.reference))
        .unwrap_or_else(|| panic!("{check}"));
    assert!(
        line.contains("complete (") && !line.contains("incomplete"),
        "{check}"
    );
    let verify = outcome(&mut against_containerd("verify", &dir, &ns));
    assert_eq!(verify.0, 0, "{}", verify.2);
}

/// A decompressed archive stream that counts what was read of it.
struct Counted<'c, R> {
    inner: R,
    read: &'c std::cell::Cell<u64>,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// The content containerd has in namespace `ns`, and the uploads under way there.
fn content_and_uploads(ns: &str) -> (String, String) {
    (
        stdout_of(ctr(ns).args(["content", "ls", "-q"])),
        stdout_of(ctr(ns).args(["content", "active"])),
    )
}

/// What containerd had, and how much of the archive had been read, each time the gate was
/// passed; and how much was read in all.
type Passes = (Vec<(u64, (String, String))>, u64);

/// Both steps of the native client's import of `file`, through the library, with a gate that
/// notes what it saw.
fn stage_with_a_watched_gate(ns: &str, file: &Path) -> Passes {
    use offline_images::archive::{open_ahead, Platform};
    use offline_images::runtime::native::Native;
    use offline_images::runtime::Runtime;

    let native = Native::new(&daemons().containerd_sock, ns, None, None).unwrap();
    let read = std::cell::Cell::new(0);
    let passes = std::cell::RefCell::new(Vec::new());
    let gate = || -> anyhow::Result<()> {
        passes
            .borrow_mut()
            .push((read.get(), content_and_uploads(ns)));
        Ok(())
    };
    let mut tar = Counted {
        inner: open_ahead(file).unwrap().reader,
        read: &read,
    };
    let rest = native
        .stage_file(Some(file), &mut tar, &Platform::host(), &gate)
        .unwrap();
    rest().unwrap();
    let total = read.get();
    (passes.into_inner(), total)
}

/// The gate of an archive's import (its turn to store, and the disk preflight) is passed once,
/// before the first write: an archive containerd lacks has written nothing when it is passed;
/// an archive containerd has whole is read to its end first, so that on a re-run the next
/// archive is read while the one before it is still being stored.
#[test]
fn the_native_client_reads_before_the_gate_and_writes_only_after_it() {
    let f = fixtures();
    for file in ["docker.tar", "docker.tar.gz", "ctr-oci.tar"] {
        let path = f.dir.join(file);
        let ns = unique_namespace("gate");
        let (passes, total) = stage_with_a_watched_gate(&ns, &path);
        assert_eq!(passes.len(), 1, "{file}: the gate was passed {passes:?}");
        let (read, (content, uploads)) = &passes[0];
        assert!(
            read < &total,
            "{file}: read whole ({total} bytes) before its first write"
        );
        assert_eq!(content.trim(), "", "{file}: written before the gate");
        assert!(
            !uploads.lines().any(|l| l.contains("offline-images-")),
            "{file}: an upload began before the gate:\n{uploads}"
        );
        assert_eq!(
            ctr_config_digest(&ns, &f.alpha.reference).as_deref(),
            Some(f.alpha.config_digest.as_str()),
            "{file}"
        );

        // Again, with everything there: read to the end, and only then the gate.
        let before = content_and_uploads(&ns).0;
        let (passes, total) = stage_with_a_watched_gate(&ns, &path);
        assert_eq!(passes.len(), 1, "{file}: the gate was passed {passes:?}");
        let (read, _) = &passes[0];
        assert_eq!(*read, total, "{file}: read on after the gate of a re-run");
        assert_eq!(content_and_uploads(&ns).0, before, "{file}: a re-run wrote");
    }
}
