//! Finding the node's container runtime: probe the usual sockets, take the first that answers.
//!
//! Socket paths are paths on the node. With `--host-root DIR` (the node's root mounted into
//! the importer's container) each is looked up under DIR; the runtime still gets the node path
//! where it needs one (`ctr` runs chrooted into DIR).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{ctr, docker, native, podman, Runtime};
use crate::exit;

/// Which runtime to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// containerd if one of its sockets answers, else Docker.
    Auto,
    Containerd,
    Docker,
    /// containers-storage (CRI-O's store) through the node's podman ([`podman`]).
    Podman,
}

/// How to talk to containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerdClient {
    /// containerd's gRPC API on the socket ([`native`]).
    Native,
    /// The node's own `ctr` ([`ctr`]).
    Ctr,
}

/// How to find and reach the runtime; the CLI's `Config` convert into it. Socket paths
/// are node paths, looked up under `host_root` when there is one.
#[derive(Debug, Clone)]
pub struct Config {
    pub runtime: RuntimeKind,
    pub containerd_address: Option<PathBuf>,
    pub namespace: String,
    /// `unix:///path` or an absolute path.
    pub docker_host: Option<String>,
    pub host_root: Option<PathBuf>,
    pub containerd_client: ContainerdClient,
    pub snapshotter: Option<String>,
    /// Storage podman works on, over the node's storage.conf.
    pub storage: podman::Storage,
}

/// containerd sockets of the common distributions, in the order they are tried.
pub const CONTAINERD_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock", // kubeadm, containerd packages
    "/run/k3s/containerd/containerd.sock", // k3s, RKE2
    "/var/snap/microk8s/common/run/containerd.sock", // MicroK8s
    "/run/k0s/containerd.sock",        // k0s
];

pub const DOCKER_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// On a node whose kubelet uses Docker (through cri-dockerd), containerd answers too (Docker
/// runs on it), but kubelet reads Docker's images, not containerd's k8s.io namespace. The
/// cri-dockerd socket tells such a node apart, so `auto` then tries Docker alone: an image put
/// into containerd there would be one the kubelet never sees.
pub const CRI_DOCKERD_SOCKETS: &[&str] = &["/run/cri-dockerd.sock", "/var/run/cri-dockerd.sock"];

/// The runtime chosen, and why.
pub struct Detected {
    pub runtime: Box<dyn Runtime>,
    /// The socket as this process reaches it (under `--host-root` when given).
    pub socket: PathBuf,
    /// The socket's path on the node.
    pub node_socket: PathBuf,
    /// containerd namespace; `None` for Docker.
    pub namespace: Option<String>,
    /// One sentence for the log: which socket, and why that one.
    pub reason: String,
}

/// One socket that was tried.
#[derive(Debug, Clone)]
pub struct Probe {
    pub kind: &'static str,
    pub node_path: PathBuf,
    pub path: PathBuf,
    /// `None` when the socket answered, else what was wrong.
    pub problem: Option<String>,
}

pub use super::socket::{local_path, probe_socket};

/// `unix:///var/run/docker.sock` (or a plain absolute path) -> the path.
pub fn docker_socket_path(host: &str) -> Result<PathBuf> {
    if let Some(p) = host.strip_prefix("unix://") {
        if p.starts_with('/') {
            return Ok(PathBuf::from(p));
        }
    } else if host.starts_with('/') {
        return Ok(PathBuf::from(host));
    }
    Err(exit::usage(format!(
        "--docker-host {host:?} is not supported: give the Docker socket as unix:///path \
         (the importer talks to the node's own daemon through its socket, not over TCP)"
    )))
}

fn containerd_socket_path(addr: &Path) -> PathBuf {
    let s = addr.to_string_lossy();
    match s.strip_prefix("unix://") {
        Some(p) => PathBuf::from(p),
        None => addr.to_path_buf(),
    }
}

/// The cri-dockerd socket of the node, when `auto` is asked with no containerd address and
/// the node has one.
fn cri_dockerd_socket(args: &Config) -> Option<PathBuf> {
    if args.runtime != RuntimeKind::Auto || args.containerd_address.is_some() {
        return None;
    }
    CRI_DOCKERD_SOCKETS
        .iter()
        .map(|s| local_path(args.host_root.as_deref(), Path::new(s)))
        .find(|p| p.exists())
}

/// The sockets to try, as the flags ask: containerd then Docker, or Docker alone on a node
/// where kubelet uses Docker through cri-dockerd.
pub fn candidates(args: &Config) -> Result<Vec<(&'static str, PathBuf, &'static str)>> {
    let cri_dockerd = cri_dockerd_socket(args).is_some();
    let mut containerd = Vec::new();
    if args.runtime != RuntimeKind::Docker && !cri_dockerd {
        match &args.containerd_address {
            Some(a) => containerd.push((
                "containerd",
                containerd_socket_path(a),
                "--containerd-address",
            )),
            None => containerd.extend(
                CONTAINERD_SOCKETS
                    .iter()
                    .map(|s| ("containerd", PathBuf::from(s), "usual location")),
            ),
        }
    }
    let mut docker = Vec::new();
    if args.runtime != RuntimeKind::Containerd {
        match &args.docker_host {
            Some(h) => docker.push(("docker", docker_socket_path(h)?, "--docker-host")),
            None => docker.extend(DOCKER_SOCKETS.iter().map(|s| {
                let source = if cri_dockerd {
                    "usual location; the only runtime tried, because a cri-dockerd socket shows \
                     kubelet uses Docker's images"
                } else {
                    "usual location"
                };
                ("docker", PathBuf::from(s), source)
            })),
        }
    }
    Ok(containerd.into_iter().chain(docker).collect())
}

/// Probe the candidate sockets in order and connect to the first runtime that answers.
/// No answer at all is an environment error (exit 2) listing every path and its problem.
pub fn detect(args: &Config) -> Result<Detected> {
    let host_root = args.host_root.as_deref();
    if let Some(root) = host_root {
        if !root.is_dir() {
            return Err(exit::usage(format!(
                "--host-root {} is not a directory: is the node's root filesystem mounted there?",
                root.display()
            )));
        }
    }
    if let Some(found) = podman_first(args)? {
        return Ok(found);
    }
    let mut probes: Vec<Probe> = Vec::new();
    for (kind, node_path, source) in candidates(args)? {
        let path = local_path(host_root, &node_path);
        let problem = probe_socket(&path);
        let answered = problem.is_none();
        probes.push(Probe {
            kind,
            node_path: node_path.clone(),
            path: path.clone(),
            problem,
        });
        if !answered {
            continue;
        }
        let mut reason = format!("{kind} socket {} answered ({source})", path.display());
        let skipped: Vec<_> = probes.iter().filter(|p| p.problem.is_some()).collect();
        if !skipped.is_empty() {
            reason.push_str("; before it: ");
            let parts: Vec<String> = skipped
                .iter()
                .map(|p| {
                    format!(
                        "{} {}",
                        p.path.display(),
                        p.problem.as_deref().unwrap_or("")
                    )
                })
                .collect();
            reason.push_str(&parts.join("; "));
        }
        let (runtime, namespace): (Box<dyn Runtime>, _) = match kind {
            "containerd" => (
                containerd_backend(args, &path, &node_path)?,
                Some(args.namespace.clone()),
            ),
            _ => (Box::new(docker::connect(&path)?), None),
        };
        return Ok(Detected {
            runtime,
            socket: path,
            node_socket: node_path,
            namespace,
            reason,
        });
    }
    // Only a node's podman (under --host-root): a podman on the importer's own PATH is no
    // sign of the node's runtime.
    if args.runtime == RuntimeKind::Auto && host_root.is_some() && podman::find(host_root).is_some()
    {
        return podman_detected(
            args,
            "node has podman, and no containerd or Docker socket answered",
        );
    }
    Err(exit::usage(no_runtime_message(args, &probes)))
}

/// `--runtime podman`, or `auto` on a node where CRI-O's socket answers (its kubelet reads
/// containers-storage): podman, before any socket is probed.
fn podman_first(args: &Config) -> Result<Option<Detected>> {
    match args.runtime {
        RuntimeKind::Podman => {
            podman_detected(args, "node's podman was asked for (--runtime podman)").map(Some)
        }
        RuntimeKind::Auto => match podman::crio_socket(args.host_root.as_deref()) {
            Some(sock) => podman_detected(
                args,
                &format!(
                    "CRI-O socket {} answered, so the kubelet reads containers-storage",
                    sock.display()
                ),
            )
            .map(Some),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// The podman backend: the lock is taken on its storage's graph root.
fn podman_detected(args: &Config, why: &str) -> Result<Detected> {
    let p = podman::Podman::new(args.host_root.as_deref(), &args.storage)
        .map_err(|e| exit::usage(format!("{e:#}")))?;
    let lock = p.lock_file();
    Ok(Detected {
        reason: why.to_string(),
        node_socket: lock.clone(),
        socket: lock,
        namespace: None,
        runtime: Box::new(p),
    })
}

/// The containerd backend `--containerd-client` asks for.
fn containerd_backend(args: &Config, path: &Path, node_path: &Path) -> Result<Box<dyn Runtime>> {
    Ok(match args.containerd_client {
        ContainerdClient::Native => Box::new(native::Native::new(
            path,
            &args.namespace,
            args.snapshotter.as_deref(),
            args.host_root.as_deref(),
        )?),
        ContainerdClient::Ctr => Box::new(ctr::Containerd::new(
            path,
            node_path,
            &args.namespace,
            args.host_root.as_deref(),
        )?),
    })
}

fn no_runtime_message(args: &Config, probes: &[Probe]) -> String {
    // Each said whole, as the guide's troubleshooting table quotes it.
    let mut msg = match args.runtime {
        RuntimeKind::Auto => {
            "no container runtime (containerd or Docker) answered on any socket \
                              probed:"
        }
        RuntimeKind::Containerd => "no containerd answered on any socket probed:",
        RuntimeKind::Docker => "no Docker Engine answered on any socket probed:",
        RuntimeKind::Podman => "no podman was found:",
    }
    .to_string();
    if let Some(socket) = cri_dockerd_socket(args) {
        let _ = write!(
            msg,
            "\n  containerd was not tried: the cri-dockerd socket {} shows the kubelet reads \
             Docker's images, and it would not see an image put into containerd (--runtime \
             containerd imports there all the same)",
            socket.display()
        );
    }
    for p in probes {
        let _ = write!(
            msg,
            "\n  {} ({}): {}",
            p.path.display(),
            p.kind,
            p.problem.as_deref().unwrap_or("answered")
        );
    }
    match &args.host_root {
        Some(root) => {
            let _ = write!(
                msg,
                "\nPaths were looked up under --host-root {}: is the node's root mounted there?",
                root.display()
            );
        }
        None => msg.push_str(
            "\nMount the node's runtime socket into the container (or the node's root with \
             --host-root), or name it with --containerd-address / --docker-host.",
        ),
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_are_looked_up_under_the_host_root() {
        assert_eq!(
            local_path(
                Some(Path::new("/host")),
                Path::new("/run/containerd/containerd.sock")
            ),
            PathBuf::from("/host/run/containerd/containerd.sock")
        );
        assert_eq!(
            local_path(None, Path::new("/run/docker.sock")),
            PathBuf::from("/run/docker.sock")
        );
    }

    fn auto_args(host_root: &Path) -> Config {
        Config {
            runtime: RuntimeKind::Auto,
            containerd_address: None,
            namespace: "k8s.io".into(),
            docker_host: None,
            host_root: Some(host_root.to_path_buf()),
            containerd_client: ContainerdClient::Native,
            snapshotter: None,
            storage: Default::default(),
        }
    }

    #[test]
    fn auto_tries_docker_first_only_on_a_node_with_cri_dockerd() {
        let root = std::env::temp_dir().join(format!("oi-detect-{}", std::process::id()));
        std::fs::create_dir_all(root.join("run")).unwrap();
        let first = |args: &Config| candidates(args).unwrap()[0].0;
        assert_eq!(first(&auto_args(&root)), "containerd");
        std::fs::write(root.join("run/cri-dockerd.sock"), b"").unwrap();
        assert_eq!(first(&auto_args(&root)), "docker");
        let explicit = Config {
            containerd_address: Some("/run/containerd/containerd.sock".into()),
            ..auto_args(&root)
        };
        assert_eq!(first(&explicit), "containerd", "an explicit address wins");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_cri_dockerd_node_never_falls_back_to_docker_s_containerd() {
        let root = std::env::temp_dir().join(format!("oi-detect-cri-{}", std::process::id()));
        std::fs::create_dir_all(root.join("var/run")).unwrap();
        std::fs::write(root.join("var/run/cri-dockerd.sock"), b"").unwrap();
        let kinds: Vec<_> = candidates(&auto_args(&root))
            .unwrap()
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(kinds, ["docker", "docker"]);
        let said = no_runtime_message(&auto_args(&root), &[]);
        assert!(
            said.contains("containerd was not tried: the cri-dockerd socket"),
            "{said}"
        );
        let asked = Config {
            runtime: RuntimeKind::Containerd,
            ..auto_args(&root)
        };
        assert_eq!(candidates(&asked).unwrap()[0].0, "containerd");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn docker_host_must_be_a_unix_socket() {
        assert_eq!(
            docker_socket_path("unix:///var/run/docker.sock").unwrap(),
            PathBuf::from("/var/run/docker.sock")
        );
        assert!(docker_socket_path("tcp://10.0.0.1:2375")
            .unwrap_err()
            .to_string()
            .contains("unix:///path"));
    }

    #[test]
    fn a_missing_path_and_a_directory_are_each_named_for_what_they_are() {
        let dir = std::env::temp_dir();
        assert!(probe_socket(&dir).unwrap().contains("directory"));
        assert!(probe_socket(&dir.join("surely-not-here.sock"))
            .unwrap()
            .contains("does not exist"));
    }
}
