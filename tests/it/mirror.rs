//! `offline-images mirror`: containerd pulls through the site registry, as the kubelet asks
//! (CRI `PullImage`), in a network namespace whose only route is its loopback, where the site
//! registry (Debian's docker-registry, TLS with a CA made here) is the only registry there is.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::*;
use crate::native::cri::Cri;

/// A network namespace of the test's own with its loopback up and nothing else, deleted on
/// drop.
struct Netns(String);

impl Netns {
    fn new(label: &str) -> Netns {
        let name = format!("oi-{label}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]));
        Netns(name)
    }

    /// `program` run inside the namespace.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A docker-registry with TLS inside `ns`, on 127.0.0.1 there; its access log names every
/// request it answered.
struct SiteRegistry {
    addr: String,
    dir: PathBuf,
    ca: PathBuf,
    child: std::process::Child,
}

impl SiteRegistry {
    fn start(ns: &Netns) -> SiteRegistry {
        let dir = temp_dir("mirror-site");
        let (ca, crt, key) = make_tls(&dir);
        let addr = format!("127.0.0.1:{}", closed_port());
        std::fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("data").display(),
                crt.display(),
                key.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = ns
            .cmd("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed");
        let reg = SiteRegistry {
            addr,
            dir,
            ca,
            child,
        };
        wait_until_up("site registry", 30, &reg.dir.join("registry.log"), || {
            let mut c = ns.cmd("openssl");
            c.args(["s_client", "-connect", &reg.addr])
                .stdin(Stdio::null());
            c
        });
        reg
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap()
    }

    /// Copy `tag` from the test dockerd to `path` here with skopeo (inside `ns`); the manifest
    /// digest it wrote.
    fn put(&self, ns: &Netns, tag: &str, path: &str) -> String {
        let certs = self.dir.join("skopeo-certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(&self.ca, certs.join("ca.crt")).unwrap();
        let digest_file = self.dir.join("digest");
        run(ns
            .cmd(skopeo().get_program())
            .args([
                "copy",
                "--quiet",
                "--src-daemon-host",
                &daemons().docker_host,
            ])
            .arg("--dest-cert-dir")
            .arg(&certs)
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(format!("docker-daemon:{tag}"))
            .arg(format!("docker://{}/{path}", self.addr)));
        std::fs::read_to_string(digest_file)
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for SiteRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release: three images from three upstream registries, in the test dockerd, and a
/// bundle of them as `docker save` writes it.
struct Release {
    hub: String,
    quay: String,
    k8s: String,
    bundle: PathBuf,
}

fn release() -> Release {
    let run_id = unique_tag("mirror").replace([':', '/'], "-");
    let hub = format!("oi-mirror-hub:{run_id}");
    let quay = format!("quay.io/oi-test/mirror-app:{run_id}");
    let k8s = format!("registry.k8s.io/oi-test/mirror-pause:{run_id}");
    for (tag, message) in [(&hub, "from hub"), (&quay, "from quay"), (&k8s, "from k8s")] {
        build_image(tag, message);
    }
    let bundle = temp_dir("mirror-bundle");
    run(docker()
        .args(["save", "-o"])
        .arg(bundle.join("release.tar"))
        .args([&hub, &quay, &k8s]));
    Release {
        hub,
        quay,
        k8s,
        bundle,
    }
}

/// The pod sandbox image the CRI is configured with; no pod runs here, so it is never pulled.
const SANDBOX: &str = "registry.k8s.io/pause:3.9";

/// `mirror` against `cd`, whose configuration file is named for containerd 2's sake.
fn mirror(images: &Path, to: &str, cd: &PrivateContainerd) -> Command {
    let mut c = offline_images();
    c.arg("mirror")
        .arg("--images-path")
        .arg(images)
        .args(["--to", to])
        .arg("--containerd-address")
        .arg(&cd.socket)
        .arg("--containerd-config")
        .arg(cd.dir.join("config.toml"))
        .env_remove("MIRROR_CERTS_DIR");
    c
}

/// Pull `image` through the CRI, as the kubelet does; the image reference containerd reports.
fn cri_pull(socket: &Path, image: &str) -> Result<String, String> {
    use k8s_cri::v1::*;
    let cri = Cri::connect(socket);
    let mut images = cri.images();
    cri.rt
        .block_on(images.pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .map(|r| r.into_inner().image_ref)
        .map_err(|e| e.to_string())
}

/// Issue 24: after `mirror`, a tag of Docker Hub, a digest-pinned quay.io image and a
/// registry.k8s.io image are pulled by the CRI from the site registry, the only registry the
/// namespace can reach; `--remove` then puts back the node's own file byte for byte.
#[test]
fn cri_pulls_go_to_the_site_registry_after_mirror_and_remove_restores_the_nodes_files() {
    let rel = release();
    for d in every_version() {
        let ns = Netns::new("mirror");
        let site = SiteRegistry::start(&ns);
        site.put(
            &ns,
            &rel.hub,
            &format!("site/docker.io/library/{}", rel.hub),
        );
        let quay_digest = site.put(&ns, &rel.quay, &format!("site/{}", rel.quay));
        site.put(&ns, &rel.k8s, &format!("site/{}", rel.k8s));

        let certs = temp_dir("mirror-certs");
        std::fs::create_dir_all(certs.join("docker.io")).unwrap();
        let nodes_own = b"server = \"https://registry-1.docker.io\"\n# the node's own\n";
        std::fs::write(certs.join("docker.io/hosts.toml"), nodes_own).unwrap();
        let bin = d.ctr.parent().filter(|p| !p.as_os_str().is_empty());
        let cd = PrivateContainerd::start_cri_with(
            "mirror-cri",
            SANDBOX,
            CriOptions {
                bin: bin.map(Path::to_path_buf),
                netns: Some(ns.0.clone()),
                config_path: Some(certs.clone()),
            },
        );

        // Before mirror, nothing in the namespace serves Docker Hub.
        let hub = format!("docker.io/library/{}", rel.hub);
        assert!(
            cri_pull(&cd.socket, &hub).is_err(),
            "{}: pulled before mirror",
            d.label
        );

        let to = format!("{}/site", site.addr);
        let out = run(mirror(&rel.bundle, &to, &cd).arg("--ca-file").arg(&site.ca));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        for upstream in ["docker.io", "quay.io", "registry.k8s.io"] {
            let hosts = std::fs::read_to_string(certs.join(upstream).join("hosts.toml")).unwrap();
            let host = format!("[host.\"https://{}/v2/site/{upstream}\"]", site.addr);
            assert!(hosts.contains(&host), "{}: {hosts}", d.label);
        }
        assert!(
            stdout.contains("summary: 3 upstream registries pointed at"),
            "{}: {stdout}",
            d.label
        );

        let pinned = format!("{}@{quay_digest}", rel.quay.rsplit_once(':').unwrap().0);
        for (image, asked) in [
            (
                format!("docker.io/library/{}", rel.hub),
                format!(
                    "GET /v2/site/docker.io/library/{}/manifests/",
                    rel.hub.split(':').next().unwrap()
                ),
            ),
            (
                pinned.clone(),
                format!("GET /v2/site/quay.io/oi-test/mirror-app/manifests/{quay_digest}"),
            ),
            (
                rel.k8s.clone(),
                "GET /v2/site/registry.k8s.io/oi-test/mirror-pause/manifests/".to_string(),
            ),
        ] {
            let pulled = cri_pull(&cd.socket, &image);
            assert!(
                pulled.is_ok(),
                "{}: CRI PullImage {image}: {pulled:?}\n{}",
                d.label,
                site.log()
            );
            assert!(
                site.log().contains(&asked),
                "{}: the site registry was not asked {asked:?}:\n{}",
                d.label,
                site.log()
            );
        }

        let out = run(mirror(&rel.bundle, &to, &cd).arg("--remove"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            stdout.contains("docker.io  restored the site's own"),
            "{stdout}"
        );
        assert_eq!(
            std::fs::read(certs.join("docker.io/hosts.toml")).unwrap(),
            nodes_own
        );
        let left: Vec<_> = std::fs::read_dir(&certs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("docker.io")], "{}", d.label);
        let left: Vec<_> = std::fs::read_dir(certs.join("docker.io"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            [std::ffi::OsString::from("hosts.toml")],
            "{}",
            d.label
        );
    }
}

/// Issue 24: a containerd with no registry config_path (the kubeadm default of 1.6 and 1.7)
/// reads no hosts.toml: mirror writes nothing and exits 2 with the lines to add.
#[test]
fn without_a_config_path_mirror_exits_2_with_the_config_lines_and_writes_nothing() {
    let rel = release();
    for d in every_version()
        .iter()
        .filter(|d| d.containerd_version.starts_with("1."))
    {
        let bin = d.ctr.parent().filter(|p| !p.as_os_str().is_empty());
        let cd = PrivateContainerd::start_cri_with(
            "mirror-no-config-path",
            SANDBOX,
            CriOptions {
                bin: bin.map(Path::to_path_buf),
                ..Default::default()
            },
        );
        let (code, stdout, stderr) = outcome(&mut mirror(&rel.bundle, "site.example/x", &cd));
        assert_eq!(code, 2, "{}: {stdout}{stderr}", d.label);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}: one line: {stderr}", d.label);
        assert!(
            lines[0].contains(&format!(
                "containerd at {} has no registry config_path",
                cd.socket.display()
            )) && lines[0].contains("`config_path = \"/etc/containerd/certs.d\"`")
                && lines[0].contains("restart containerd"),
            "{}: {stderr}",
            d.label
        );
    }
}

/// `wait`, the mirror DaemonSet's main container: it idles until SIGTERM, then exits 0.
#[test]
fn wait_idles_until_sigterm_and_exits_0() {
    let mut child = offline_images()
        .arg("wait")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "wait ended on its own");
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            started.elapsed().as_secs() < 5,
            "wait did not end on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
