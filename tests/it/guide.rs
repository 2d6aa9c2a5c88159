//! The operator's guide shows what runs (issue 30, findings 11 and 12): every `offline-images`
//! command of OFFLINE-IMAGES.md's code blocks is run here, in the guide's order, against the
//! real containerd, Docker and a registry, or named below with the reason it cannot run here.
//!
//! The guide's convention: in a `text` block, a line `$ COMMAND` is a command and the lines up
//! to the next `$ ` are what it printed (stderr and stdout as a terminal shows them); a line
//! `...` stands for lines left out. Those lines are compared with what the command prints
//! now, digests, sizes and times redacted. A command of a `sh` block shows no output: it must
//! exit as the script below says.
//!
//! The guide's paths and addresses are a node's (`/var/lib/offline-images/images`,
//! `/run/containerd/containerd.sock`, `127.0.0.1:5000`, namespace `k8s.io`); the test runs
//! with its own and writes the guide's back into the output. Every command runs with nothing
//! on PATH but the static binary (and, for `export --chart`, helm): no ctr, docker or podman.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::*;

const GUIDE: &str = "OFFLINE-IMAGES.md";

/// The guide's names for the node, the registry and the namespace.
const NODE_BUNDLE: &str = "/var/lib/offline-images/images";
const NODE_SOCKET: &str = "/run/containerd/containerd.sock";
const K3S_SOCKET: &str = "/run/k3s/containerd/containerd.sock";
const DOCKER_HOST: &str = "unix:///var/run/docker.sock";
const REGISTRY: &str = "127.0.0.1:5000";

/// One command of the guide, as written there (continuation lines joined).
#[derive(Debug, Clone)]
struct Shown {
    command: String,
    /// The lines shown under a `$ ` command; None for a command of a `sh` block.
    output: Option<Vec<String>>,
}

/// Every `offline-images` command of the guide's code blocks, in order.
fn shown_commands(text: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let mut block = Vec::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            block.push(l.to_string());
        }
        match lang {
            "sh" => out.extend(sh_commands(&block)),
            "text" => out.extend(transcripts(&block)),
            _ => {}
        }
    }
    out
}

fn sh_commands(block: &[String]) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut joined = String::new();
    for line in block {
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(part) => {
                joined.push_str(part.trim_end());
                joined.push(' ');
            }
            None => {
                joined.push_str(line);
                let command = std::mem::take(&mut joined);
                let runs_it =
                    command.starts_with("offline-images ") || command.contains("| offline-images ");
                if runs_it && !command.starts_with('#') {
                    out.push(Shown {
                        command: one_spaced(&command),
                        output: None,
                    });
                }
            }
        }
    }
    out
}

fn transcripts(block: &[String]) -> Vec<Shown> {
    let mut out: Vec<Shown> = Vec::new();
    for line in block {
        if let Some(command) = line.strip_prefix("$ ") {
            out.push(Shown {
                command: one_spaced(command),
                output: Some(Vec::new()),
            });
        } else if let Some(Some(lines)) = out.last_mut().map(|s| s.output.as_mut()) {
            lines.push(line.clone());
        }
    }
    out
}

fn one_spaced(command: &str) -> String {
    command.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the world must be like before a command, and how it must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    Nothing,
    /// The node's copy of the bundle: what export wrote, plus a damaged older archive that
    /// SHA256SUMS does not list.
    DamagedBundleOnTheNode,
    /// The worker image removed from containerd, and what only it used collected.
    WorkerRemoved,
    /// The images removed from Docker.
    NotInDocker,
    /// The damaged archive copied again whole (removed).
    DamagedArchiveGone,
}

/// Where a command runs, and what it may find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The connected host of the export transcript, with its values.yaml.
    Host,
    /// A connected host with a chart, site values and helm.
    ChartHost,
    /// The charts of the tests' corpus (tests/export-charts), with helm.
    ChartCorpus,
    /// A node: the runtime's sockets are the test's (by environment where the command names
    /// none).
    Node,
    /// A node root with no runtime at all, mounted at /host.
    EmptyNodeRoot,
}

/// What the test does with one command of the guide.
#[derive(Debug, Clone, Copy)]
enum Step {
    Run {
        before: Before,
        place: Place,
        exit: i32,
    },
    /// Shown in the guide, but needs what is not here.
    NotHere(&'static str),
}

const fn runs(before: Before, place: Place, exit: i32) -> Step {
    Step::Run {
        before,
        place,
        exit,
    }
}

/// Every command of the guide, in its order.
fn script() -> Vec<(&'static str, Step)> {
    use Before::*;
    use Place::*;
    vec![
        (
            "offline-images export --chart ./my-chart -f site-values.yaml --output ./images",
            runs(Nothing, ChartHost, 0),
        ),
        (
            "offline-images export --chart oci://registry.example.com/charts/shop --version 1.4.2 -f site-values.yaml --set web.replicas=3 --namespace shop --kube-version 1.30.0 --output ./images",
            Step::NotHere("registry.example.com serves no chart here"),
        ),
        (
            "helm template shop ./my-chart -f site-values.yaml | offline-images export --manifests - --output ./images",
            runs(Nothing, ChartHost, 0),
        ),
        (
            "offline-images export --values my-chart/values.yaml --values site-values.yaml --output ./images",
            runs(Nothing, ChartHost, 0),
        ),
        (
            "offline-images export --images-file images.txt nginx:1.27 --output ./images",
            Step::NotHere("nginx:1.27 is on Docker Hub, out of reach here"),
        ),
        (
            "offline-images export --chart ./my-chart -f site-values.yaml --dry-run",
            runs(Nothing, ChartHost, 0),
        ),
        (
            "offline-images export --values values.yaml --output ./images",
            runs(Nothing, Host, 0),
        ),
        (
            "offline-images export --values values.yaml --output ./images",
            runs(Nothing, Host, 0),
        ),
        (
            "offline-images export --chart ./monitoring --release-name shop --dry-run",
            runs(Nothing, ChartCorpus, 0),
        ),
        (
            "offline-images export --values values.yaml --format layout --output ./release-1",
            runs(Nothing, Host, 0),
        ),
        (
            "offline-images export --values values.yaml --since ./release-1 --output ./release-2",
            runs(Nothing, Host, 0),
        ),
        (
            "offline-images verify --bundle-only --images-path ./release-2",
            runs(Nothing, Host, 0),
        ),
        (
            "offline-images push --images-path ./release-1 --to 127.0.0.1:5000/site --jobs 1",
            runs(Nothing, Host, 0),
        ),
        (
            "offline-images push --images-path ./release-1 --to 127.0.0.1:5000/site",
            runs(Nothing, Host, 0),
        ),
        (
            "offline-images push --images-path ./release-1 --to 127.0.0.1:5000/site --print-mirror-config containerd",
            runs(Nothing, Host, 0),
        ),
        (
            "offline-images mirror --to registry.site.example:5000/mirror --images-path /var/lib/offline-images/images --ca-file /etc/pki/site-ca.pem",
            Step::NotHere("needs a node's containerd with the CRI and config_path: mirror.rs runs it on containerd 1.6, 1.7 and 2.1"),
        ),
        (
            "offline-images export --values values.yaml --verify-key cosign.pub --output ./images",
            Step::NotHere("the guide's images carry no cosign signature: signatures.rs runs --verify-key with real cosign 2.5 and 3.1"),
        ),
        (
            "offline-images push --images-path ./images --to registry.site.example:5000/site",
            Step::NotHere("registry.site.example is not here: signatures.rs pushes the signatures into a second registry and verifies them there with cosign"),
        ),
        (
            "offline-images export --values values.yaml --output ./images --verify-trusted-root trusted_root.json --verify-certificate-identity release@example.com --verify-certificate-oidc-issuer https://login.example.com",
            Step::NotHere("the guide's images carry no certificate signature: signatures.rs runs --verify-trusted-root with certificates of a CA made in the test, signed by real cosign 2.5 and 3.1"),
        ),
        (
            "offline-images import --images-path ./bundle --verify-key cosign.pub",
            Step::NotHere("needs a bundle signed with a key of cosign's: signing.rs exports one with --sign-key and imports it with --verify-key"),
        ),
        (
            "offline-images prune --release shop --dry-run",
            runs(Nothing, Node, 0),
        ),
        (
            "offline-images import --images-path /var/lib/offline-images/images --containerd-address /run/containerd/containerd.sock",
            runs(DamagedBundleOnTheNode, Node, 0),
        ),
        (
            "offline-images import --images-path /var/lib/offline-images/images --containerd-address /run/containerd/containerd.sock",
            runs(Nothing, Node, 0),
        ),
        (
            "offline-images import --images-path /var/lib/offline-images/images --containerd-address /run/containerd/containerd.sock --log-format json",
            runs(WorkerRemoved, Node, 0),
        ),
        (
            "offline-images verify --images-path /var/lib/offline-images/images",
            runs(Nothing, Node, 1),
        ),
        (
            "offline-images verify --images-path /var/lib/offline-images/images --containerd-address /run/containerd/containerd.sock",
            runs(Nothing, Node, 1),
        ),
        (
            "offline-images import --images-path /var/lib/offline-images/images --runtime docker --docker-host unix:///var/run/docker.sock",
            runs(NotInDocker, Node, 0),
        ),
        (
            "offline-images import --images-path /var/lib/offline-images/images --containerd-address /run/containerd/containerd.sock --disk-max-used 80",
            runs(Nothing, Node, 0),
        ),
        (
            "offline-images list /var/lib/offline-images/images",
            runs(DamagedArchiveGone, Node, 0),
        ),
        (
            "offline-images import --images-path /var/lib/offline-images/images --runtime docker",
            runs(Nothing, Node, 0),
        ),
        (
            "offline-images import --images-path /var/lib/offline-images/images --runtime containerd --containerd-address /run/k3s/containerd/containerd.sock --dry-run",
            runs(Nothing, Node, 0),
        ),
        (
            "offline-images verify --images-path /var/lib/offline-images/images",
            runs(Nothing, Node, 0),
        ),
        (
            "offline-images import --images-path /images --runtime podman --host-root /host",
            Step::NotHere("podman is not on this run's PATH; tests/it/podman.rs runs it, chrooted into a node root"),
        ),
        (
            "offline-images import --images-path /var/lib/offline-images/images --runtime podman --storage-root /var/lib/containers/storage --storage-driver overlay",
            Step::NotHere("podman is not on this run's PATH; tests/it/podman.rs runs it on storage of its own"),
        ),
        (
            "offline-images import --images-path /images --host-root /host",
            runs(Nothing, EmptyNodeRoot, 2),
        ),
        (
            "offline-images import --kind dev --images-path ./images",
            Step::NotHere("needs a kind cluster: kind.rs runs import --kind on kind-shaped nodes"),
        ),
        (
            "offline-images import --docker-node k3d-dev-server-0 --docker-node k3d-dev-agent-0 --images-path ./images",
            Step::NotHere("needs k3d nodes: kind.rs runs the same path on kind-shaped nodes"),
        ),
        (
            "offline-images verify --kind dev --images-path ./images",
            Step::NotHere("needs a kind cluster: kind.rs runs verify --kind on kind-shaped nodes"),
        ),
        (
            "offline-images deliver --images-path ./images --ssh root@edge-1.example --ssh ops@10.0.4.7:2222",
            Step::NotHere("needs SSH hosts: deliver.rs delivers to hosts in network namespaces, each with its sshd"),
        ),
        (
            "offline-images deliver --images-path ./images --hosts-file hosts --transfer-pool 4 --json-report delivery.json",
            Step::NotHere("needs SSH hosts: deliver.rs delivers to hosts in network namespaces, each with its sshd"),
        ),
        (
            "offline-images deliver --spec site-7.yaml",
            Step::NotHere("needs SSH hosts and registry.example.com: deliver.rs runs deliver --spec against hosts in network namespaces and the test registry"),
        ),
    ]
}

/// The test's world, and the guide's names for it. containerd and dockerd are its own, so that
/// no other test's import shares their node lock (and its "waiting for another importer").
struct Demo {
    registry: PrivateRegistry,
    containerd: PrivateContainerd,
    dockerd: PrivateDockerd,
    /// The connected host's working directory (values.yaml; export writes ./images).
    host: PathBuf,
    chart_host: PathBuf,
    /// The bundle on the node.
    node: PathBuf,
    /// The Job's /images and /host.
    job_images: PathBuf,
    node_root: PathBuf,
    home: PathBuf,
    /// PATH: the static binary, and helm with what it needs.
    path: PathBuf,
    images: Vec<String>,
    /// The web image as `docker save` wrote it: the older release's archive the guide shows
    /// damaged beside the bundle.
    older_web: PathBuf,
}

impl Demo {
    fn new() -> Demo {
        let registry = PrivateRegistry::start("guide-registry", false, RegistryAuth::Anonymous);
        let mut images = Vec::new();
        let root = temp_dir("guide");
        let older_web = root.join("older-web.tar");
        for (name, message) in [
            ("web", "hello from web 4.5.6"),
            ("worker", "hello from worker"),
        ] {
            let built = build_image(&unique_tag(&format!("guide-{name}")), message);
            images.push(registry.push(&built, &format!("shop/{name}:4.5.6")));
            if name == "web" {
                run(docker()
                    .args(["save", "-o"])
                    .arg(&older_web)
                    .arg(&built.tag));
            }
            docker_rmi(&built.tag);
        }
        let dir = |name: &str| {
            let d = root.join(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let demo = Demo {
            containerd: PrivateContainerd::start("guide-containerd", None),
            dockerd: PrivateDockerd::start("guide-dockerd"),
            host: dir("host"),
            chart_host: dir("chart-host"),
            node: root.join("node-images"),
            job_images: dir("job-images"),
            node_root: dir("node-root"),
            home: dir("home"),
            path: dir("bin"),
            registry,
            images,
            older_web,
        };
        demo.write_inputs();
        demo
    }

    /// The files the guide's commands name: values.yaml, a chart and site values.
    fn write_inputs(&self) {
        let (web, worker) = (&self.images[0], &self.images[1]);
        std::fs::write(
            self.host.join("values.yaml"),
            format!("web:\n  image: {web}\nworker:\n  image: {worker}\n"),
        )
        .unwrap();
        let chart = self.chart_host.join("my-chart");
        std::fs::create_dir_all(chart.join("templates")).unwrap();
        std::fs::write(
            chart.join("Chart.yaml"),
            "apiVersion: v2\nname: my-chart\nversion: 0.1.0\n",
        )
        .unwrap();
        std::fs::write(chart.join("values.yaml"), format!("web:\n  image: {web}\n")).unwrap();
        let deployment = |name: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  \
                 selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      \
                 labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: {name}\n  \
                 \x20       image: {{{{ .Values.{name}.image }}}}\n"
            )
        };
        std::fs::write(chart.join("templates/web.yaml"), deployment("web")).unwrap();
        std::fs::write(
            chart.join("templates/worker.yaml"),
            format!(
                "{{{{- if .Values.worker }}}}\n{}{{{{- end }}}}\n",
                deployment("worker")
            ),
        )
        .unwrap();
        std::fs::write(
            self.chart_host.join("site-values.yaml"),
            format!("worker:\n  image: {worker}\n"),
        )
        .unwrap();
        let static_bin = std::env::var("OI_STATIC_BIN")
            .expect("OI_STATIC_BIN is not set: run through scripts/test.sh, which builds it");
        let helm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bin");
        for (name, target) in [
            ("offline-images", PathBuf::from(static_bin)),
            ("helm", helm.join("helm")),
            ("helm.py", helm.join("helm.py")),
            ("bash", "/bin/bash".into()),
            ("dirname", "/usr/bin/dirname".into()),
        ] {
            std::os::unix::fs::symlink(target, self.path.join(name)).unwrap();
        }
    }

    /// The node's ctr, on the test's containerd, in the kubelet's namespace.
    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(&self.containerd.socket)
            .args(["-n", "k8s.io"]);
        c
    }

    fn port(&self) -> &str {
        self.registry.addr.rsplit(':').next().unwrap()
    }

    /// The guide's values in a command made the test's, argument by argument.
    fn command(&self, shown: &str) -> String {
        let socket = self.containerd.socket.display().to_string();
        let ours = |arg: &str| -> String {
            match arg {
                NODE_BUNDLE => self.node.display().to_string(),
                NODE_SOCKET | K3S_SOCKET => socket.clone(),
                DOCKER_HOST => self.dockerd.host(),
                "/images" => self.job_images.display().to_string(),
                "/host" => self.node_root.display().to_string(),
                // push --to REGISTRY/PREFIX
                other if other.starts_with(&format!("{REGISTRY}/")) => {
                    other.replacen(REGISTRY, &self.registry.addr, 1)
                }
                other => other.to_string(),
            }
        };
        shown.split(' ').map(ours).collect::<Vec<_>>().join(" ")
    }

    /// The test's names in what a command run at `place` printed made the guide's.
    fn as_shown(&self, printed: &str, place: Place) -> String {
        let docker_socket = self.dockerd.socket.display().to_string();
        let mut pairs: Vec<(String, String)> = vec![
            (self.node.display().to_string(), NODE_BUNDLE.into()),
            (self.node_root.display().to_string(), "/host".into()),
            (self.job_images.display().to_string(), "/images".into()),
            (
                self.containerd.socket.display().to_string(),
                NODE_SOCKET.into(),
            ),
            (docker_socket, "/var/run/docker.sock".into()),
            (format!("{}/{place:?}", self.home.display()), "~".into()),
            (self.registry.addr.clone(), REGISTRY.into()),
            (
                format!("127.0.0.1_{}_", self.port()),
                "127.0.0.1_5000_".into(),
            ),
            (
                format!("127.0.0.1_{}/", self.port()),
                "127.0.0.1_5000/".into(),
            ),
            (
                format!("127.0.0.1_{}\"", self.port()),
                "127.0.0.1_5000\"".into(),
            ),
        ];
        pairs.sort_by_key(|(ours, _)| std::cmp::Reverse(ours.len()));
        let mut text = printed.to_string();
        for (ours, guide) in pairs {
            text = text.replace(&ours, &guide);
        }
        text
    }

    fn prepare(&self, before: Before) {
        let damaged = self.node.join("old-release_shop_web_4.5.5.tar.gz");
        match before {
            Before::Nothing => {}
            Before::DamagedBundleOnTheNode => {
                run_ok(
                    Command::new("cp")
                        .arg("-a")
                        .arg(self.host.join("images"))
                        .arg(&self.node),
                );
                let gz = self.host.join("older.tar.gz");
                gzip(&self.older_web, &gz);
                let whole = std::fs::read(&gz).unwrap();
                std::fs::write(&damaged, &whole[..whole.len() / 2]).unwrap();
            }
            Before::WorkerRemoved => {
                let listed = stdout_of(self.ctr().args(["images", "ls", "-q"]));
                let names: Vec<&str> = listed
                    .lines()
                    .filter(|n| n.contains("/shop/worker"))
                    .collect();
                assert!(!names.is_empty(), "the worker image was imported");
                run_ok(self.ctr().args(["images", "rm", "--sync"]).args(&names));
            }
            Before::NotInDocker => {
                for image in &self.images {
                    let present = Command::new(&daemons().docker_cli)
                        .env("DOCKER_HOST", self.dockerd.host())
                        .args(["image", "inspect", image])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                    assert!(!present.success(), "{image} is in Docker already");
                }
            }
            Before::DamagedArchiveGone => std::fs::remove_file(&damaged).unwrap(),
        }
    }

    /// Run `shown` where `place` says: its exit code, and stdout and stderr as one stream.
    fn run(&self, shown: &str, place: Place) -> (i32, String) {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export-charts");
        let cwd = match place {
            Place::ChartHost => &self.chart_host,
            Place::ChartCorpus => &corpus,
            _ => &self.host,
        };
        let out = temp_dir("guide-out").join("out");
        let file = std::fs::File::create(&out).unwrap();
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(self.command(shown))
            .current_dir(cwd)
            .env_clear()
            .env("PATH", &self.path)
            // A blob cache of its own per host, so the first export downloads.
            .env("HOME", self.home.join(format!("{place:?}")))
            // The test daemons' disks may be fuller than a node's: the preflight is tested on
            // its own (native.rs).
            .env("DISK_MAX_USED", "100")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if let Ok(python) = std::env::var("OI_PYTHON") {
            c.env("OI_PYTHON", python);
        }
        if place == Place::Node {
            c.env("CONTAINERD_ADDRESS", &self.containerd.socket)
                .env("DOCKER_HOST", self.dockerd.host());
        }
        let status = c.status().unwrap();
        let printed = std::fs::read_to_string(&out).unwrap();
        (status.code().unwrap_or(-1), self.as_shown(&printed, place))
    }
}

fn run_ok(c: &mut Command) {
    crate::harness::run(c);
}

/// Digests, sizes, times and rates are not the guide's business to match: a digest, a
/// sha256, a number with a unit of size or seconds, and the JSON numbers of times and sizes
/// are each made one word.
fn redacted(line: &str) -> String {
    let line = line.trim_end();
    let mut out = String::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        let before = out.chars().last();
        let word_start = !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == '.');
        if let Some(after) = rest.strip_prefix("sha256:").filter(|a| hex_run(a) == 64) {
            out.push_str("sha256:<digest>");
            rest = &after[64..];
        } else if word_start && hex_run(rest) == 64 {
            out.push_str("<sha256>");
            rest = &rest[64..];
        } else if word_start && c.is_ascii_digit() {
            let n = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(n);
            let unit = ["B", "KiB", "MiB", "GiB", "TiB", "s"].iter().find(|u| {
                after
                    .strip_prefix(' ')
                    .and_then(|a| a.strip_prefix(**u))
                    .is_some_and(|a| !a.starts_with(|c: char| c.is_ascii_alphanumeric()))
            });
            let json_number = ["\"seconds\":", "\"bytes\":", "\"tar_bytes\":"]
                .iter()
                .any(|k| out.ends_with(k));
            // Which of two images exported at once writes a blob they share varies.
            let new_blobs = after.starts_with(" new blob(s)");
            match unit {
                Some(&"s") => {
                    out.push_str("<time>");
                    rest = &after[2..];
                }
                Some(u) => {
                    out.push_str("<size>");
                    rest = &after[1 + u.len()..];
                }
                None if json_number || new_blobs => {
                    out.push_str("<n>");
                    rest = after;
                }
                None => {
                    out.push_str(number);
                    rest = after;
                }
            }
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// How many lowercase hex digits `text` starts with, when they end a word.
fn hex_run(text: &str) -> usize {
    let n = text
        .find(|c: char| !matches!(c, '0'..='9' | 'a'..='f'))
        .unwrap_or(text.len());
    let ends_word = !text[n..].starts_with(|c: char| c.is_ascii_alphanumeric());
    if ends_word {
        n
    } else {
        0
    }
}

/// Lines of several images exported at once (`[n/N] …`) may come in any order between the
/// images; each image's own lines keep theirs.
fn in_image_order(lines: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut run: Vec<String> = Vec::new();
    let key = |l: &str| {
        l.strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|(k, _)| k.to_string())
    };
    for line in lines {
        if key(&line).is_some() {
            run.push(line);
            continue;
        }
        run.sort_by_key(|l| key(l));
        out.append(&mut run);
        out.push(line);
    }
    run.sort_by_key(|l| key(l));
    out.append(&mut run);
    out
}

/// Whether `printed` is what `shown` shows: `...` lines stand for lines left out.
fn matches(shown: &[String], printed: &[String]) -> bool {
    let segments: Vec<&[String]> = shown.split(|l| l == "...").collect();
    let mut at = 0;
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            continue;
        }
        let fits = |from: usize| printed[from..].starts_with(segment);
        let found = if i == 0 {
            fits(0).then_some(0)
        } else {
            (at..=printed.len().saturating_sub(segment.len())).find(|&f| fits(f))
        };
        let Some(from) = found else { return false };
        at = from + segment.len();
        if i == last && at != printed.len() {
            return false;
        }
    }
    segments.last().is_some_and(|s| s.is_empty()) || at == printed.len()
}

#[test]
fn every_command_the_guide_shows_prints_what_the_guide_shows() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(GUIDE)).unwrap();
    let shown: VecDeque<Shown> = shown_commands(&text).into();
    let script = script();
    let listed: Vec<&str> = shown.iter().map(|s| s.command.as_str()).collect();
    let scripted: Vec<&str> = script.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        listed, scripted,
        "the guide's commands are not the ones this test knows, in its order"
    );
    let demo = Demo::new();
    let mut wrong = Vec::new();
    for (shown, (_, step)) in shown.iter().zip(&script) {
        let (before, place, exit) = match *step {
            Step::Run {
                before,
                place,
                exit,
            } => (before, place, exit),
            Step::NotHere(why) => {
                eprintln!("not run here: {}: {why}", shown.command);
                continue;
            }
        };
        demo.prepare(before);
        let (code, printed) = demo.run(&shown.command, place);
        // To write the guide's examples again: OI_GUIDE_SHOW=1, and `--nocapture`.
        if std::env::var_os("OI_GUIDE_SHOW").is_some() {
            eprintln!("$ {}\n{printed}", shown.command);
        }
        if code != exit {
            wrong.push(format!(
                "$ {}\nexited {code}, not {exit}:\n{printed}",
                shown.command
            ));
            continue;
        }
        let Some(expected) = &shown.output else {
            continue;
        };
        let want = in_image_order(expected.iter().map(|l| redacted(l)).collect());
        let got = in_image_order(printed.lines().map(redacted).collect());
        if !matches(&want, &got) {
            wrong.push(format!(
                "$ {}\nthe guide shows:\n{}\nit prints:\n{printed}",
                shown.command,
                expected.join("\n")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn the_guide_comparison_redacts_only_what_varies_and_keeps_the_order_of_each_image() {
    let digest = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        redacted(&format!(
            "imported  a.tar  config {digest}  1.0 MiB read in 0.3 s (3.3 MiB/s)"
        )),
        "imported  a.tar  config sha256:<digest>  <size> read in <time> (<size>/s)"
    );
    assert_eq!(
        redacted("shop:4.5.6 of 3 archive(s) in 12 s; 2 layer(s)"),
        "shop:4.5.6 of 3 archive(s) in <time>; 2 layer(s)"
    );
    assert_eq!(
        redacted(&format!("(sha256 {})", "b".repeat(64))),
        "(sha256 <sha256>)"
    );
    assert_eq!(
        redacted(r#"{"seconds":0.43,"bytes":1061219}"#),
        r#"{"seconds":<n>,"bytes":<n>}"#
    );
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let printed = lines(&[
        "head",
        "[2/2] b: one",
        "[1/2] a: one",
        "[1/2] a: two",
        "end",
    ]);
    assert_eq!(
        in_image_order(printed),
        lines(&[
            "head",
            "[1/2] a: one",
            "[1/2] a: two",
            "[2/2] b: one",
            "end"
        ])
    );
    let got = lines(&["a", "b", "c", "d"]);
    assert!(matches(&lines(&["a", "...", "d"]), &got));
    assert!(matches(&lines(&["...", "b", "c", "..."]), &got));
    assert!(!matches(&lines(&["a", "c", "...", "d"]), &got));
    assert!(!matches(&lines(&["a", "b", "c"]), &got));
    assert!(!matches(&lines(&["b", "...", "d"]), &got));
}
