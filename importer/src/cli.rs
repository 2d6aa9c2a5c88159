//! Command-line interface: the names here are a contract that scripts and the chart rely on
//! (docs/ARCHITECTURE.md, "Modules").

use std::ffi::OsStr;
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::report;
use crate::runtime::detect;
use crate::wait;

#[cfg(feature = "export")]
mod export;
#[cfg(feature = "export")]
pub use export::{BundleFormat, Compression, Engine, ExportArgs};

/// Get a release's container images onto air-gapped nodes.
///
/// On a connected host, `export` pulls every image a release needs into a bundle of
/// compressed archives with SHA256SUMS and images.json. On the node (usually as a Helm
/// pre-install hook Job), `import` loads every archive of the bundle into containerd or
/// Docker, skipping what is already there and carrying on past bad archives.
///
/// The copy of this binary that `export` puts in a bundle (.offline-images/offline-images)
/// checks itself before any command against the .sha256 file beside it and, when
/// OFFLINE_IMAGES_BINARY_SHA256 is set (the chart's imagePull.bootstrap.binarySha256), against
/// that sha256 as well; on a mismatch it refuses to run (exit 2).
#[derive(Debug, Parser)]
#[command(
    name = "offline-images",
    version,
    about,
    long_about,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import every .tar / .tar.gz / .tgz / .tar.zst of a directory into the node's runtime.
    Import(ImportArgs),
    /// Show the images inside archives (references, digests, platforms), without importing.
    List(ListArgs),
    /// Check that every image of every archive is present in the runtime (exit 1 if not).
    Verify(VerifyArgs),
    /// Fetch images and write them as a bundle: one OCI image layout (or archives),
    /// SHA256SUMS and images.json.
    ///
    /// References come from IMAGE arguments, --images-file, a chart rendered with the host's
    /// `helm template` (--chart, the recommended input), rendered manifests (every container,
    /// init container and ephemeral container of every pod template, plus the indirect images
    /// that operators launch, each logged) and Helm values files (`image:` strings and
    /// registry/repository/tag/digest maps at any depth; every guess logged).
    /// By default (--engine auto or registry) each image is fetched straight from its
    /// registry over the OCI distribution API, by digest, with no docker, podman or skopeo
    /// needed, and written as one OCI image-layout archive holding the registry's bytes
    /// unchanged, so digests hold: `docker.io/library/nginx:1.27` becomes
    /// `docker.io_library_nginx_1.27.tar`, naming the image `repo:tag`, `repo@<index digest>`
    /// and `repo@<manifest digest>`. Credentials come from the docker config file (auths,
    /// credHelpers, credsStore) or --username with --password-stdin. With --engine docker,
    /// podman or skopeo the host's engine pulls and saves the image (using its own registry
    /// login) as `.tar.gz` (`.tar.zst` with --compress zstd, `.tar` with --compress none).
    /// Archives are complete or absent, never partial. A re-run skips images whose archive
    /// matches SHA256SUMS and whose image is unchanged at the registry. Exit 1 if any image or
    /// input failed; the others are still exported.
    #[cfg(feature = "export")]
    Export(Box<ExportArgs>),
    /// Every named image the runtime holds, as JSON lines (what `import --kind` asks a node).
    #[command(hide = true)]
    Present(PresentArgs),
    /// Remove the images a release imported (those labelled with its name), on this node.
    ///
    /// containerd only: every name of the release's images is looked at (the tag and the
    /// digest names alike). A name still used by a container is kept, and a name whose image
    /// another release also imported (under this name or another) only loses this release's
    /// label. Removed names are listed on stdout. Docker images carry no labels after `docker
    /// load`, so Docker is refused (exit 2).
    Prune(PruneArgs),
    /// Point this node's containerd at the site registry: a hosts.toml per registry the
    /// bundle's images come from, so pods keep their image names and pull from the site.
    ///
    /// Writes `<certs-dir>/<upstream>/hosts.toml` for every upstream registry the bundle names
    /// (from images.json, else from the names in its archives and layouts): the site registry
    /// as a pull and resolve host under its path for that upstream
    /// (`https://REGISTRY/v2/PREFIX/<upstream>`, override_path), with `--ca-file` copied beside
    /// it, and the upstream itself as the fallback server. The certs directory is the registry
    /// config_path containerd reports through its CRI status; without one, mirror exits 2 with
    /// the config.toml lines to add. A hosts.toml that was there is kept as
    /// hosts.toml.offline-images-backup and put back by --remove. Nothing is written outside
    /// `<certs-dir>/<upstream>/`. On k3s and RKE2, which rewrite certs.d from registries.yaml,
    /// nothing is written: the registries.yaml to use is printed (exit 2).
    Mirror(MirrorArgs),
    /// Wait for SIGTERM or SIGINT, then exit 0: the main container of the chart's
    /// DaemonSets, whose work is done by their init containers.
    ///
    /// With --listen, connections on that port are accepted meanwhile (the pod's "done" for
    /// the chart's post-delete hook). With --peers, wait instead until every address the host
    /// resolves to accepts a connection on the port, steadily for --settle seconds; exit 1 after
    /// --timeout seconds, naming the addresses that never answered.
    Wait(WaitArgs),
    /// Push the bundle into the site's own registry, every digest kept.
    ///
    /// Every image lands at REGISTRY/PREFIX/<upstream registry>/<repository> under its tags
    /// and digests, its index, manifests, config and layers the bundle's bytes. What the
    /// registry has is never sent: a blob is looked up first, mounted from a repository this
    /// push already put it in, or uploaded in chunks that resume after a cut connection.
    /// Manifests go by digest first, then the tags. Credentials and TLS as export has them.
    /// A failed image is named and the rest go on; exit 1 when any failed.
    #[cfg(feature = "export")]
    Push(PushArgs),
    /// Deliver the bundle to hosts over SSH, each sent only what its runtime lacks.
    ///
    /// Per host, up to --transfer-pool at once: one ssh command learns its architecture, its
    /// runtimes and the importer it keeps (~/.cache/offline-images); the static importer for
    /// its architecture is sent once and reused by checksum; the host's importer says what
    /// its runtime holds; the units it lacks go as one stream over the SSH connection (a cut
    /// stream is retried, what arrived kept) and are imported there, its log prefixed with the
    /// host. Host keys are checked (BatchMode, StrictHostKeyChecking): an unknown host is
    /// refused. A line per host, a table, exit 1 when any host failed (0 with --tolerant).
    #[cfg(feature = "export")]
    Deliver(DeliverArgs),
    /// Write a tar stream read on stdin into a directory, each file renamed when whole (what
    /// `deliver` runs on a host).
    #[command(hide = true)]
    Receive(ReceiveArgs),
}

#[cfg(feature = "export")]
pub use deliver::DeliverArgs;
pub use deliver::ReceiveArgs;

#[cfg(feature = "export")]
mod push;
#[cfg(feature = "export")]
pub use push::PushArgs;
mod deliver;

/// The value of a yes/no flag that its environment variable may set, spelt as shells and
/// Kubernetes `env` entries spell it: 1, true, yes, on (any case) turn it on; 0, false, no, off
/// and the empty string turn it off. clap's own parser takes only `true` and `false`, so
/// `IMPORT_STRICT=0` stopped the run with exit 2. The flag given on the command line sets it on.
#[derive(Debug, Clone, Copy)]
pub struct EnvFlag(pub &'static str);

/// `Some(on)` for the spellings [`EnvFlag`] takes, `None` for any other.
pub fn yes_or_no(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "" | "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl TypedValueParser for EnvFlag {
    type Value = bool;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<bool, clap::Error> {
        let text = value.to_string_lossy();
        yes_or_no(&text).ok_or_else(|| {
            let message = format!(
                "{}={text:?} is neither yes nor no: 1, true, yes or on turn it on; 0, false, no, \
                 off or empty turn it off\n",
                self.0
            );
            clap::Error::raw(ErrorKind::InvalidValue, message).with_cmd(cmd)
        })
    }
}

/// Which container runtime to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// containerd if one of its sockets answers, else Docker.
    Auto,
    Containerd,
    Docker,
    /// containers-storage (the store CRI-O reads) through the node's podman.
    Podman,
}

/// How to talk to containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ContainerdClient {
    /// containerd's gRPC API on the socket: needs nothing of the node but the socket, sends
    /// only the blobs containerd lacks, unpacks only the layers it lacks.
    Native,
    /// The node's own `ctr` (found on PATH, or under --host-root and run chrooted there).
    Ctr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, for a person reading `kubectl logs`.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// How to reach the runtime. Socket paths are paths on the node: with `--host-root`
/// they are looked up under that directory.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Runtime to work on (import into, verify, prune).
    #[arg(long, value_enum, env = "IMAGE_RUNTIME", default_value = "auto")]
    pub runtime: RuntimeKind,

    /// containerd socket [default: the first that answers of /run/containerd/containerd.sock
    /// (kubeadm), /run/k3s/containerd/containerd.sock (k3s, RKE2),
    /// /var/snap/microk8s/common/run/containerd.sock (MicroK8s), /run/k0s/containerd.sock (k0s)]
    #[arg(long, env = "CONTAINERD_ADDRESS", value_name = "SOCK")]
    pub containerd_address: Option<PathBuf>,

    /// containerd namespace; kubelet only sees images in k8s.io.
    #[arg(
        long,
        env = "CONTAINERD_NAMESPACE",
        default_value = "k8s.io",
        value_name = "NS"
    )]
    pub namespace: String,

    /// Docker Engine socket, as unix:///path [default: the first that answers of
    /// unix:///var/run/docker.sock, unix:///run/docker.sock]
    #[arg(long, env = "DOCKER_HOST", value_name = "unix:///PATH")]
    pub docker_host: Option<String>,

    /// The node's root filesystem as mounted in this container (e.g. /host): sockets and
    /// the node's `ctr` are looked up there, and `ctr` runs chrooted into it.
    #[arg(long, env = "HOST_ROOT", value_name = "DIR")]
    pub host_root: Option<PathBuf>,

    /// How to talk to containerd: its gRPC API on the socket alone (native), or the node's `ctr`.
    #[arg(
        long,
        value_enum,
        env = "CONTAINERD_CLIENT",
        default_value = "native",
        value_name = "CLIENT"
    )]
    pub containerd_client: ContainerdClient,

    /// Snapshotter the native client unpacks layers into [default: the one the CRI plugin
    /// uses, when containerd says, else overlayfs]
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", value_name = "NAME")]
    pub snapshotter: Option<String>,

    /// podman: the containers-storage graph root to import into, a node path [default: the
    /// one the node's /etc/containers/storage.conf gives, as CRI-O reads it]
    #[arg(long, env = "STORAGE_ROOT", value_name = "DIR")]
    pub storage_root: Option<PathBuf>,

    /// podman: the storage's run root, a node path [default: storage.conf's; with
    /// --storage-root, DIR/run]
    #[arg(long, env = "STORAGE_RUN_ROOT", value_name = "DIR")]
    pub run_root: Option<PathBuf>,

    /// podman: the storage driver (overlay, vfs) [default: storage.conf's]
    #[arg(long, env = "STORAGE_DRIVER", value_name = "NAME")]
    pub storage_driver: Option<String>,
}

impl RuntimeArgs {
    /// What `runtime::detect` needs, in its own terms.
    pub fn config(&self) -> detect::Config {
        detect::Config {
            runtime: match self.runtime {
                RuntimeKind::Auto => detect::RuntimeKind::Auto,
                RuntimeKind::Containerd => detect::RuntimeKind::Containerd,
                RuntimeKind::Docker => detect::RuntimeKind::Docker,
                RuntimeKind::Podman => detect::RuntimeKind::Podman,
            },
            containerd_address: self.containerd_address.clone(),
            namespace: self.namespace.clone(),
            docker_host: self.docker_host.clone(),
            host_root: self.host_root.clone(),
            containerd_client: match self.containerd_client {
                ContainerdClient::Native => detect::ContainerdClient::Native,
                ContainerdClient::Ctr => detect::ContainerdClient::Ctr,
            },
            snapshotter: self.snapshotter.clone(),
            storage: crate::runtime::podman::Storage {
                root: self.storage_root.clone(),
                run_root: self.run_root.clone(),
                driver: self.storage_driver.clone(),
            },
        }
    }
}

impl From<LogFormat> for report::Format {
    fn from(f: LogFormat) -> report::Format {
        match f {
            LogFormat::Text => report::Format::Text,
            LogFormat::Json => report::Format::Json,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Directory holding the archives (searched recursively; hidden and partial files skipped).
    #[arg(
        long,
        env = "IMAGES_PATH",
        default_value = "/images",
        value_name = "DIR"
    )]
    pub images_path: PathBuf,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Refuse an archive whose import would leave the filesystem of containerd's root more
    /// than PERCENT full: what it adds is the blobs containerd lacks plus the unpacked size of
    /// the layers it lacks (native client). 85 is where the kubelet's image GC starts.
    #[arg(
        long,
        env = "DISK_MAX_USED",
        default_value_t = 85,
        value_name = "PERCENT",
        value_parser = clap::value_parser!(u8).range(1..=100)
    )]
    pub disk_max_used: u8,

    /// Do not check the free space of containerd's disk before each archive.
    #[arg(long, env = "NO_DISK_PREFLIGHT", value_parser = EnvFlag("NO_DISK_PREFLIGHT"))]
    pub no_disk_preflight: bool,

    /// Archives imported at the same time. containerd's native client imports in two steps:
    /// with any N above 1, one archive's layers are unpacked while the next one's content is
    /// sent (two archives at most, each step in the bundle's order), and 1 turns that off.
    /// With ctr and Docker, N archives are imported side by side [default: 2 with the native
    /// client, 1 with ctr and Docker]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,

    /// Exit 1 if any archive failed (default: report failures and exit 0).
    #[arg(long, env = "IMPORT_STRICT", value_parser = EnvFlag("IMPORT_STRICT"))]
    pub strict: bool,

    /// Exit 0 when the images path holds no image at all (no archive, no layout) instead of
    /// 1: a node that has no bundle on purpose.
    #[arg(long)]
    pub allow_empty: bool,

    /// Import even archives whose images are already present.
    #[arg(long)]
    pub force: bool,

    /// Inspect and plan, but import nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Log format on stderr.
    #[arg(long, value_enum, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Also write the run's summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Where Kubernetes reads the container's termination message (the pod's
    /// terminationMessagePath): the summary and every failure are written there when the file
    /// exists and is writable.
    #[arg(long, default_value = report::TERMINATION_LOG, value_name = "FILE")]
    pub termination_log: PathBuf,

    #[command(flatten)]
    pub lock: LockArgs,

    /// Label every image of the bundle (imported or already present), under each of its
    /// names, as used by this Helm release, so that `offline-images prune --release NAME` can
    /// remove them later. Docker keeps no labels: the run then says at the start that prune
    /// cannot remove them.
    #[arg(long, env = "RELEASE_NAME", value_name = "NAME")]
    pub release: Option<String>,

    /// An image that must be in the runtime after the run (repeat the flag, or list them
    /// comma-separated in REQUIRED_IMAGES). Every image the bundle's images.json lists for
    /// this node's platform is checked too. A missing one makes the run exit 1, with or
    /// without --strict; a bad archive still never stops the others.
    #[arg(
        long = "require",
        env = "REQUIRED_IMAGES",
        value_name = "IMAGE",
        value_delimiter = ','
    )]
    pub require: Vec<String>,

    /// A node the chart left out of the import, with the reason ("node: why"; a list is
    /// `;`-separated in LEFT_OUT_NODES): named in the log, so each node's log says which
    /// nodes did not get the images.
    #[arg(
        long = "left-out-node",
        env = "LEFT_OUT_NODES",
        value_name = "NODE: WHY",
        value_delimiter = ';'
    )]
    pub left_out_nodes: Vec<String>,

    /// Import only a bundle signed (`export --sign-key`) by one of these cosign public keys
    /// (PEM, ECDSA P-256; repeatable, any one suffices): checked before anything is imported,
    /// every blob and archive against the signed identity; else refused with exit 2
    /// [default: none: a bundle is imported signed or not].
    #[arg(
        long = "verify-key",
        env = "VERIFY_KEYS",
        value_name = "KEY.pub",
        value_delimiter = ','
    )]
    pub verify_keys: Vec<PathBuf>,

    #[command(flatten)]
    pub kind: KindArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// The release whose images are removed (the NAME given to `import --release`).
    #[arg(long, env = "RELEASE_NAME", value_name = "NAME")]
    pub release: String,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Only list what would be removed and what would be kept.
    #[arg(long)]
    pub dry_run: bool,

    /// Wait up to this many seconds for the containers that use the release's images to go
    /// (after `helm uninstall` the release's pods are still terminating); an image still in
    /// use then is kept. 0 decides at once.
    #[arg(long, default_value_t = 0, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub wait_for_containers: u64,

    /// Format of the result lines on stdout and the log on stderr.
    #[arg(long, value_enum, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub lock: LockArgs,
}

/// The node lock: one importer (or prune) at a time per runtime socket.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// Seconds to wait for another importer on this node, which holds the lock on the runtime
    /// socket's directory, before giving up with exit 2; 0 gives up at once.
    #[arg(
        long,
        env = "LOCK_TIMEOUT",
        default_value_t = crate::lock::DEFAULT_TIMEOUT_SECS,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(0..=86400)
    )]
    pub lock_timeout: u64,
}

impl LockArgs {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_timeout)
    }
}

impl ImportArgs {
    /// The flags and environment resolved into what `import` works with.
    pub fn settings(&self) -> crate::import::Settings {
        crate::import::Settings {
            images_path: self.images_path.clone(),
            runtime: self.runtime.config(),
            disk_max_used: (!self.no_disk_preflight).then_some(self.disk_max_used),
            jobs: self.jobs,
            strict: self.strict,
            allow_empty: self.allow_empty,
            force: self.force,
            dry_run: self.dry_run,
            log_format: self.log_format.into(),
            report: self.report.clone(),
            termination_log: self.termination_log.clone(),
            lock_timeout: self.lock.timeout(),
            release: self.release.clone(),
            require: self.require.clone(),
            left_out_nodes: self.left_out_nodes.clone(),
            verify_keys: self.verify_keys.clone(),
        }
    }
}

impl PruneArgs {
    /// The flags and environment resolved into what `prune` works with.
    pub fn settings(&self) -> crate::prune::Settings {
        crate::prune::Settings {
            release: self.release.clone(),
            runtime: self.runtime.config(),
            dry_run: self.dry_run,
            wait_for_containers: self.wait_for_containers,
            log_format: self.log_format.into(),
            lock_timeout: self.lock.timeout(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Archives, or directories to search for archives.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// One JSON object per archive, one per line, on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Directory holding the archives.
    #[arg(
        long,
        env = "IMAGES_PATH",
        default_value = "/images",
        value_name = "DIR"
    )]
    pub images_path: PathBuf,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Log format on stderr.
    #[arg(long, value_enum, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Check the bundle alone, with no runtime: every blob of an OCI layout bundle matches
    /// its digest, every blob its index.json needs is there, and SHA256SUMS holds (for a
    /// bundle of archives, SHA256SUMS alone). Each fault is named; exit 0 or 1.
    #[arg(long)]
    pub bundle_only: bool,

    /// Check first that the bundle is signed (`export --sign-key`) by one of these cosign
    /// public keys and matches its signed identity, as `import --verify-key` does; a refusal
    /// exits 2 [default: none: the signature is not checked].
    #[arg(long = "verify-key", value_name = "KEY.pub")]
    pub verify_keys: Vec<PathBuf>,

    #[command(flatten)]
    pub kind: KindArgs,
}

impl ListArgs {
    /// The arguments as `list` works with them.
    pub fn settings(&self) -> crate::list::Settings {
        crate::list::Settings {
            paths: self.paths.clone(),
            json: self.json,
        }
    }
}

impl VerifyArgs {
    /// The flags and environment resolved into what `verify` works with.
    pub fn settings(&self) -> crate::verify::Settings {
        crate::verify::Settings {
            images_path: self.images_path.clone(),
            runtime: self.runtime.config(),
            log_format: self.log_format.into(),
            bundle_only: self.bundle_only,
            verify_keys: self.verify_keys.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Accept (and close) connections on this TCP port until stopped [default: none: wait
    /// without listening].
    #[arg(long, value_name = "PORT", conflicts_with = "peers")]
    pub listen: Option<u16>,

    /// HOST:PORT: wait until every address HOST resolves to (a headless Service's pods)
    /// accepts a connection on PORT, then exit 0 [default: none: wait for SIGTERM].
    #[arg(long, value_name = "HOST:PORT")]
    pub peers: Option<String>,

    /// With --peers: seconds to wait at most; then exit 1, naming who did not answer.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        requires = "peers"
    )]
    pub timeout: u64,

    /// With --peers: seconds the set of addresses must stay the same, every one answering,
    /// so that pods still being created are not missed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, requires = "peers")]
    pub settle: u64,
}

impl WaitArgs {
    pub fn settings(&self) -> wait::Settings {
        wait::Settings {
            listen: self.listen,
            peers: self.peers.clone(),
            timeout: std::time::Duration::from_secs(self.timeout),
            settle: std::time::Duration::from_secs(self.settle),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct MirrorArgs {
    /// The site registry, REGISTRY[/PREFIX]: host[:port] and an optional path prefix under
    /// which `push` put the images (`REGISTRY/PREFIX/docker.io/library/nginx:1.25`).
    #[arg(long, env = "MIRROR_REGISTRY", value_name = "REGISTRY[/PREFIX]")]
    pub to: String,

    /// The bundle whose images' registries get a hosts.toml (not read with --upstream).
    #[arg(
        long,
        env = "IMAGES_PATH",
        default_value = "/images",
        value_name = "DIR"
    )]
    pub images_path: PathBuf,

    /// An upstream registry to mirror (repeatable, or comma-separated in MIRROR_UPSTREAMS), in
    /// place of the ones the bundle names: for nodes that do not hold the bundle.
    #[arg(
        long,
        env = "MIRROR_UPSTREAMS",
        value_delimiter = ',',
        value_name = "REGISTRY"
    )]
    pub upstream: Vec<String>,

    /// The directory containerd reads hosts.toml files from, as the node names it [default:
    /// the registry config_path containerd reports]. Given and different from what containerd
    /// reports, mirror refuses (exit 2).
    #[arg(long, env = "MIRROR_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,

    /// The site registry's CA certificate (PEM), copied beside each hosts.toml as
    /// offline-images-ca.crt and named by its `ca` key.
    #[arg(long, env = "MIRROR_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// containerd's configuration file, as the node names it: read for the registry
    /// config_path where containerd does not report it (containerd 2).
    #[arg(
        long,
        env = "CONTAINERD_CONFIG",
        default_value = "/etc/containerd/config.toml",
        value_name = "FILE"
    )]
    pub containerd_config: PathBuf,

    /// The site registry speaks plain HTTP (default: HTTPS).
    #[arg(long, env = "MIRROR_PLAIN_HTTP", value_parser = EnvFlag("MIRROR_PLAIN_HTTP"))]
    pub plain_http: bool,

    /// Undo: remove every hosts.toml mirror wrote under the certs directory and put back the
    /// files they replaced.
    #[arg(long, env = "MIRROR_REMOVE", value_parser = EnvFlag("MIRROR_REMOVE"))]
    pub remove: bool,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl MirrorArgs {
    /// The flags resolved into what `mirror` works with; a malformed `--to` is a usage error.
    pub fn settings(&self) -> anyhow::Result<crate::mirror::Settings> {
        Ok(crate::mirror::Settings {
            site: crate::mirror::Site::parse(&self.to, self.plain_http)?,
            images_path: self.images_path.clone(),
            upstreams: self.upstream.clone(),
            certs_dir: self.certs_dir.clone(),
            ca_file: self.ca_file.clone(),
            remove: self.remove,
            containerd_config: self.containerd_config.clone(),
            runtime: self.runtime.config(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Flags that take a value and have no default: without them nothing of the kind is used.
    const NO_DEFAULT: &[&str] = &[
        "import --host-root",
        "import --report",
        "import --release",
        "import --require",
        "import --left-out-node",
        "verify --host-root",
        "prune --host-root",
        "prune --release",
        "mirror --to",
        "mirror --upstream",
        "mirror --certs-dir",
        "mirror --ca-file",
        "mirror --host-root",
        "export --values",
        "export --manifests",
        "export --images-file",
        "export --since",
        "export --ca-file",
        "export --registry-mirror",
        "export --username",
        "export --insecure-registry",
        "export --chart",
        "export --version",
        "export --set",
        "export --namespace",
        "export --kube-version",
        "export --api-versions",
        "export --pack",
        "export --split",
        "import --kind",
        "import --docker-node",
        "verify --kind",
        "verify --docker-node",
        "present --host-root",
        "push --images-path",
        "push --to",
        "push --ca-file",
        "push --username",
        "push --insecure-registry",
        "push --print-mirror-config",
        "deliver --images-path",
        "deliver --ssh",
        "deliver --hosts-file",
        "deliver --identity",
        "deliver --ssh-option",
        "deliver --importer-binary",
        "deliver --json-report",
        "deliver --spec",
        "receive --dir",
    ];

    /// The long help of `--flag` of `command`.
    fn help_of(command: &str, flag: &str) -> String {
        let cli = Cli::command();
        let sub = cli.find_subcommand(command).unwrap();
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .unwrap_or_else(|| panic!("{command} has no --{flag}"));
        arg.get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default()
    }

    /// Issue 30, "a help default for every flag that matches what runs": every flag that takes
    /// a value states its default, clap's own or written in its help as clap writes one.
    #[test]
    fn every_flag_with_a_value_states_its_default_in_its_help() {
        let cli = Cli::command();
        let mut silent = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments().filter(|a| !a.is_positional()) {
                let Some(long) = arg.get_long() else { continue };
                let name = format!("{} --{long}", sub.get_name());
                if !arg.get_action().takes_values() || NO_DEFAULT.contains(&name.as_str()) {
                    continue;
                }
                let stated = !arg.get_default_values().is_empty()
                    || help_of(sub.get_name(), long).contains("[default: ");
                if !stated {
                    silent.push(name);
                }
            }
        }
        assert!(
            silent.is_empty(),
            "flags whose help states no default: {silent:?}"
        );
    }

    /// The defaults written by hand are the ones the code uses.
    #[test]
    fn the_hand_written_defaults_are_the_codes() {
        for command in ["import", "verify", "prune"] {
            let help = help_of(command, "containerd-address");
            let mut at = 0;
            for socket in detect::CONTAINERD_SOCKETS {
                let found = help[at..].find(socket);
                assert!(
                    found.is_some(),
                    "{command}: {socket} not in order in {help}"
                );
                at += found.unwrap_or_default();
            }
            let help = help_of(command, "docker-host");
            let mut at = 0;
            for socket in detect::DOCKER_SOCKETS {
                let found = help[at..].find(&format!("unix://{socket}"));
                assert!(
                    found.is_some(),
                    "{command}: {socket} not in order in {help}"
                );
                at += found.unwrap_or_default();
            }
            let help = help_of(command, "snapshotter");
            assert!(
                help.contains(&format!(
                    "else {}]",
                    crate::runtime::native::DEFAULT_SNAPSHOTTER
                )),
                "{help}"
            );
        }
        assert!(help_of("import", "jobs")
            .ends_with("[default: 2 with the native client, 1 with ctr and Docker]"));
    }

    #[test]
    fn import_strict_0_or_empty_is_off_instead_of_an_exit_2() {
        for off in ["", "0", "false", "False", "no", "NO", "off", " 0 "] {
            assert_eq!(yes_or_no(off), Some(false), "{off:?}");
        }
        for on in ["1", "true", "TRUE", "yes", "Yes", "on"] {
            assert_eq!(yes_or_no(on), Some(true), "{on:?}");
        }
        for neither in ["maybe", "2", "-1", "y e s", "enabled"] {
            assert_eq!(yes_or_no(neither), None, "{neither:?}");
        }
    }

    #[test]
    fn an_env_flag_that_is_neither_yes_nor_no_names_the_variable_and_the_spellings() {
        let cmd = clap::Command::new("offline-images");
        let err = EnvFlag("IMPORT_STRICT")
            .parse_ref(&cmd, None, OsStr::new("maybe"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(
            text.contains("IMPORT_STRICT=\"maybe\" is neither yes nor no"),
            "{text}"
        );
        assert!(
            text.contains("0, false, no, off or empty turn it off"),
            "{text}"
        );
    }

    #[test]
    fn the_flags_on_the_command_line_still_turn_strict_and_no_disk_preflight_on() {
        let parsed = Cli::try_parse_from(["offline-images", "import", "--strict"]).unwrap();
        let Command::Import(args) = parsed.command else {
            panic!("not import")
        };
        assert!(args.strict);
        let parsed =
            Cli::try_parse_from(["offline-images", "import", "--no-disk-preflight"]).unwrap();
        let Command::Import(args) = parsed.command else {
            panic!("not import")
        };
        assert!(args.no_disk_preflight);
    }
}

/// `import --kind` and `--docker-node`: the import run from the host into Docker-hosted nodes.
#[derive(Debug, Clone, Args)]
pub struct KindArgs {
    /// Import into every node of this kind cluster, from the host, through the Docker socket
    /// (DOCKER_HOST): the nodes are the containers labelled io.x-k8s.kind.cluster=CLUSTER.
    #[arg(long = "kind", value_name = "CLUSTER")]
    pub cluster: Option<String>,

    /// Import into this Docker container running containerd (a k3d or minikube node, ...),
    /// from the host; repeat the flag for several.
    #[arg(long = "docker-node", value_name = "NAME")]
    pub nodes: Vec<String>,

    /// The static importer copied into the nodes [default: the bundle's
    /// .offline-images/linux-<arch>/offline-images, else this binary when it is static]
    #[arg(long, value_name = "FILE")]
    pub importer_binary: Option<PathBuf>,
}

/// `present`: which runtime to list.
#[derive(Debug, Clone, Args)]
pub struct PresentArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Print instead which of the layers listed in FILE (- for standard input; a line each:
    /// its digest, then its chain IDs) the runtime holds, one digest a line: containerd's
    /// content store by digest, Docker's classic store by chain; none where the runtime takes
    /// an image only whole (podman) [default: list the images]
    #[arg(long, value_name = "FILE")]
    pub holds_from: Option<PathBuf>,
}

impl ImportArgs {
    /// With `--kind` or `--docker-node`: what the import from the host works with, and the
    /// flags each node's importer is given.
    pub fn kind_settings(&self) -> Option<crate::kind::Settings> {
        if self.kind.cluster.is_none() && self.kind.nodes.is_empty() {
            return None;
        }
        let mut node_args = Vec::new();
        let flags = [
            (self.strict, "--strict"),
            (self.force, "--force"),
            (self.dry_run, "--dry-run"),
            (self.allow_empty, "--allow-empty"),
            (self.no_disk_preflight, "--no-disk-preflight"),
        ];
        node_args.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| f.to_string()),
        );
        node_args.push(format!("--disk-max-used={}", self.disk_max_used));
        node_args.push(format!(
            "--log-format={}",
            if matches!(self.log_format, LogFormat::Json) {
                "json"
            } else {
                "text"
            }
        ));
        if let Some(j) = self.jobs {
            node_args.push(format!("--jobs={j}"));
        }
        if let Some(r) = &self.release {
            node_args.push(format!("--release={r}"));
        }
        node_args.extend(self.require.iter().map(|r| format!("--require={r}")));
        if let Some(s) = &self.runtime.snapshotter {
            node_args.push(format!("--snapshotter={s}"));
        }
        Some(crate::kind::Settings {
            cluster: self.kind.cluster.clone(),
            nodes: self.kind.nodes.clone(),
            images_path: self.images_path.clone(),
            docker_host: self.runtime.docker_host.clone(),
            importer_binary: self.kind.importer_binary.clone(),
            namespace: self.runtime.namespace.clone(),
            node_args,
            require: self.require.clone(),
            strict: self.strict,
            dry_run: self.dry_run,
            log_format: self.log_format.into(),
        })
    }
}

impl VerifyArgs {
    /// With `--kind` or `--docker-node`: every node checked from the host.
    pub fn kind_settings(&self) -> Option<crate::kind::Settings> {
        if self.kind.cluster.is_none() && self.kind.nodes.is_empty() {
            return None;
        }
        Some(crate::kind::Settings {
            cluster: self.kind.cluster.clone(),
            nodes: self.kind.nodes.clone(),
            images_path: self.images_path.clone(),
            docker_host: self.runtime.docker_host.clone(),
            importer_binary: self.kind.importer_binary.clone(),
            namespace: self.runtime.namespace.clone(),
            node_args: Vec::new(),
            require: Vec::new(),
            strict: false,
            dry_run: false,
            log_format: self.log_format.into(),
        })
    }
}
