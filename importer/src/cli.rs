//! Command-line interface: the names here are a contract that scripts and the chart rely on
//! (docs/ARCHITECTURE.md, "Modules").

use std::ffi::OsStr;
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::report;
use crate::runtime::detect;

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
    Export(Box<ExportArgs>),
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
    /// Wait for SIGTERM or SIGINT, then exit 0: the main container of the chart's mirror
    /// DaemonSet, whose work is done by its init container.
    Wait,
}

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
}

impl RuntimeArgs {
    /// What `runtime::detect` needs, in its own terms.
    pub fn config(&self) -> detect::Config {
        detect::Config {
            runtime: match self.runtime {
                RuntimeKind::Auto => detect::RuntimeKind::Auto,
                RuntimeKind::Containerd => detect::RuntimeKind::Containerd,
                RuntimeKind::Docker => detect::RuntimeKind::Docker,
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// Multi-threaded gzip: readable by every runtime and by `gzip -d`.
    Gzip,
    /// zstd: smaller and faster to decompress; needs a reader that knows it.
    Zstd,
    /// Plain tar.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The registry; an image the registry does not serve but docker or podman holds
    /// locally (built, never pushed) is saved with that engine, and the log says so.
    Auto,
    /// Straight from the registry over the OCI distribution API: no docker, podman or skopeo
    /// needed. Each image is an OCI image layout `.tar` holding the registry's bytes.
    Registry,
    Docker,
    Podman,
    Skopeo,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Image references to export (e.g. nginx:1.27, ghcr.io/org/app@sha256:...).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,

    /// A Helm values file (repeatable). With --chart it is given to `helm template`. Without,
    /// images are read from the values themselves: files merged as Helm merges them (deep,
    /// later wins, null deletes), subcharts' values.yaml read when charts/ is beside the file,
    /// and every reference that depends on the chart's templates logged as a guess.
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    pub values: Vec<PathBuf>,

    /// Rendered manifests (e.g. `helm template` output) to collect images from; `-` is stdin.
    #[arg(long = "manifests", value_name = "FILE|-")]
    pub manifests: Vec<PathBuf>,

    /// A file with one image reference per line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub images_file: Vec<PathBuf>,

    /// Bundle directory to write (created; an existing bundle is merged into).
    #[arg(long, short, default_value = "./images", value_name = "DIR")]
    pub output: PathBuf,

    /// Platform to export (repeatable). The registry engine keeps a multi-platform image's
    /// index and the chosen platforms' images; the other engines export the first platform
    /// given. An image that has no image for a platform asked fails [default: this host's
    /// platform]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<String>,

    /// Compression of the archives the docker, podman and skopeo engines write (the registry
    /// engine writes a plain `.tar` of the registry's already compressed blobs).
    #[arg(long, value_enum, default_value = "gzip")]
    pub compress: Compression,

    /// Images exported at the same time (and, with the registry engine, blobs downloaded at
    /// the same time, across images).
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Export every image again, even when its archive is present and up to date, and use
    /// no blob cache (blobs are downloaded into a scratch directory removed at the end).
    #[arg(long)]
    pub no_cache: bool,

    /// The registry engine's content-addressed blob cache, shared across exports, so that
    /// the next release downloads only the layers that changed [default:
    /// $XDG_CACHE_HOME/offline-images, else ~/.cache/offline-images]
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,

    /// Root certificates (PEM) trusted for registries, besides the system's trust store: the
    /// first of $SSL_CERT_FILE, /etc/ssl/certs/ca-certificates.crt,
    /// /etc/pki/tls/certs/ca-bundle.crt, /etc/ssl/ca-bundle.pem and /etc/ssl/cert.pem that
    /// holds certificates.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Fetch SRC's images from MIRROR first (host[:port] each, repeatable; `docker.io` for
    /// Docker Hub); the source registry is used when the mirror fails.
    #[arg(long, value_name = "SRC=MIRROR")]
    pub registry_mirror: Vec<String>,

    /// Registry user name, with the password read from stdin (--password-stdin); used for
    /// every registry, in place of the docker config file's credentials.
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,

    /// Read the password for --username from stdin (one line).
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// Tool used to pull and save images.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: Engine,

    /// A registry (host[:port]) reached over plain HTTP or without TLS verification, e.g. a
    /// staging mirror (repeatable). Used by the registry engine (which also allows plain
    /// HTTP to loopback addresses), podman and skopeo; docker follows its daemon's
    /// `insecure-registries` setting (127.0.0.0/8 is insecure to docker by default).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,

    /// Only print the collected references; pull nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Static importer binary to put in the bundle (under `.offline-images/linux-<arch>/`,
    /// with its sha256), so the chart's bootstrap mode can run it from the bundle in an image
    /// every node already has. Repeatable, one per architecture (x86_64, aarch64: read from
    /// the file) [default: this binary, when it is statically linked, and
    /// offline-images-aarch64 (or -x86_64) beside it for the other architecture]
    #[arg(long, value_name = "FILE", conflicts_with = "no_importer_binary")]
    pub importer_binary: Vec<PathBuf>,

    /// Do not put the importer binary in the bundle.
    #[arg(long)]
    pub no_importer_binary: bool,

    /// A Helm chart to render with the host's `helm template` (Helm 3 or 4), subcharts and
    /// dependencies included: a directory, a .tgz, oci://HOST/PATH, or REPO/NAME. The images of
    /// the rendered manifests are collected as --manifests collects them. The recommended
    /// input: it gives exactly the images the release runs. An oci:// chart on a registry
    /// given to --insecure-registry is fetched with `helm template --plain-http`.
    #[arg(long, value_name = "DIR|TGZ|oci://...")]
    pub chart: Option<String>,

    /// The chart version, for an oci:// or REPO/NAME chart (`helm template --version`).
    #[arg(long = "version", value_name = "VERSION", requires = "chart")]
    pub chart_version: Option<String>,

    /// A value for `helm template --set` (repeatable).
    #[arg(long, value_name = "KEY=VALUE", requires = "chart")]
    pub set: Vec<String>,

    /// The release's namespace, for `helm template --namespace`.
    #[arg(long = "namespace", value_name = "NS", requires = "chart")]
    pub chart_namespace: Option<String>,

    /// The Kubernetes version the chart is rendered for (`helm template --kube-version`), for
    /// charts whose images follow it (kubectl).
    #[arg(long, value_name = "VERSION", requires = "chart")]
    pub kube_version: Option<String>,

    /// An API version the cluster serves, e.g. monitoring.coreos.com/v1 (`helm template
    /// --api-versions`, repeatable), for charts that render objects only when it is there.
    #[arg(long, value_name = "GROUP/VERSION", requires = "chart")]
    pub api_versions: Vec<String>,

    /// The helm executable for --chart [default: helm on PATH]
    #[arg(long, value_name = "PATH", requires = "chart")]
    pub helm: Option<PathBuf>,

    /// The release name the chart is rendered with.
    #[arg(long, default_value = "release", value_name = "NAME")]
    pub release_name: String,

    /// Leave out indirect images: those no pod template names but that the release runs
    /// (custom resources' `image`, `--...image...=REF` arguments, env variables ending in
    /// IMAGE). They are still listed in the log.
    #[arg(long)]
    pub no_indirect: bool,

    /// Exit 0, writing nothing, when the inputs name no image (a values file, a chart, a list
    /// or manifests without any), instead of 1.
    #[arg(long)]
    pub allow_empty: bool,

    /// What the bundle directory holds: one OCI image layout (oci-layout, index.json naming
    /// every reference, blobs/sha256/) with each blob stored once whatever number of images
    /// use it, or one archive per image (for tools that want a file per image: docker load,
    /// ctr import, kind load image-archive). A layout takes images from registries only
    /// (--engine auto or registry); a re-export writes only the blobs it lacks. [default:
    /// layout; archives with --engine docker, podman or skopeo]
    #[arg(long, value_enum)]
    pub format: Option<BundleFormat>,

    /// With --format layout: keep the blobs no image of the new index uses (by default they
    /// are removed once the new index is written).
    #[arg(long)]
    pub keep_unused: bool,

    /// An upgrade: PREVIOUS is an earlier layout bundle (its directory or its images.json),
    /// one the site has imported. The new bundle's index.json names every image of the
    /// release, but its blobs/ leaves out the layers PREVIOUS (or a bundle it builds on)
    /// carried; images.json names each, with the bundle that carried it. Implies
    /// --format layout; write it to a directory of its own.
    #[arg(long, value_name = "PREVIOUS")]
    pub since: Option<PathBuf>,

    /// Once the layout bundle is written, pack it into FILE (ending in .tar or .tar.zst) to
    /// carry as one file; implies --format layout. The importer reads FILE in place as it
    /// reads the directory. Written beside FILE and renamed when complete; FILE.sha256sums
    /// holds its checksum.
    #[arg(long, value_name = "FILE")]
    pub pack: Option<PathBuf>,

    /// With --pack: cut FILE into FILE.part-000, FILE.part-001, ... of at most SIZE each
    /// (e.g. 4G, 700M; K, M, G are powers of 1024, KB, MB, GB of 1000). `cat FILE.part-* >
    /// FILE` joins them; the importer reads the parts in place.
    #[arg(long, value_name = "SIZE")]
    pub split: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BundleFormat {
    /// One archive per image, with SHA256SUMS and images.json.
    Archives,
    /// One OCI image layout, with images.json and SHA256SUMS.
    Layout,
}

impl ExportArgs {
    /// The flags resolved into what `export` works with; a malformed `--platform` is a usage
    /// error (exit 2), as it always was before anything else ran.
    pub fn settings(&self) -> anyhow::Result<crate::export::Settings> {
        use crate::export::{self, Choice, ImporterBinary, Kind};
        let engine = match self.engine {
            Engine::Auto => Choice::Auto,
            Engine::Registry => Choice::Registry,
            Engine::Docker => Choice::Tool(Kind::Docker),
            Engine::Podman => Choice::Tool(Kind::Podman),
            Engine::Skopeo => Choice::Tool(Kind::Skopeo),
        };
        let importer_binary = match (&self.importer_binary[..], self.no_importer_binary) {
            (_, true) => ImporterBinary::Omitted,
            ([], false) => ImporterBinary::Running,
            (paths, false) => ImporterBinary::Given(paths.to_vec()),
        };
        let chart = self.chart.as_ref().map(|chart| export::Chart {
            chart: chart.clone(),
            version: self.chart_version.clone(),
            set: self.set.clone(),
            namespace: self.chart_namespace.clone(),
            kube_version: self.kube_version.clone(),
            api_versions: self.api_versions.clone(),
            helm: self.helm.clone(),
            release_name: self.release_name.clone(),
        });
        // One OCI layout unless the engine can write only archives, or --format says so;
        // --since and --pack write a layout.
        let wants_layout = self.since.is_some() || self.pack.is_some();
        let format = match (self.format, &self.engine) {
            (Some(BundleFormat::Layout), _) => export::BundleFormat::Layout,
            (Some(BundleFormat::Archives), _) if self.since.is_some() => {
                return Err(crate::exit::usage(
                    "--since writes an OCI layout bundle: leave out --format archives",
                ))
            }
            (Some(BundleFormat::Archives), _) => export::BundleFormat::Archives,
            (None, Engine::Auto | Engine::Registry) => export::BundleFormat::Layout,
            (None, _) if wants_layout => export::BundleFormat::Layout,
            (None, _) => export::BundleFormat::Archives,
        };
        Ok(export::Settings {
            inputs: export::Inputs {
                images: self.images.clone(),
                images_files: self.images_file.clone(),
                values: self.values.clone(),
                manifests: self.manifests.clone(),
                chart,
                no_indirect: self.no_indirect,
            },
            output: self.output.clone(),
            platforms: export::platforms(&self.platform)?,
            engine,
            compression: match self.compress {
                Compression::Gzip => crate::archive::Compression::Gzip,
                Compression::Zstd => crate::archive::Compression::Zstd,
                Compression::None => crate::archive::Compression::None,
            },
            jobs: usize::from(self.jobs),
            no_cache: self.no_cache,
            cache_dir: self.cache_dir.clone(),
            ca_file: self.ca_file.clone(),
            registry_mirrors: self.registry_mirror.clone(),
            username: self.username.clone(),
            insecure: export::insecure_hosts(&self.insecure_registry),
            dry_run: self.dry_run,
            importer_binary,
            allow_empty: self.allow_empty,
            format,
            keep_unused: self.keep_unused,
            since: self.since.clone(),
            pack: export::pack_to(self.pack.as_ref(), self.split.as_deref(), format)?,
        })
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

    /// The bundle is one OCI layout unless the engine can only write archives or
    /// `--format archives` says so; `--since` builds on a layout and refuses archives.
    #[test]
    fn the_bundle_format_defaults_to_a_layout_and_archives_with_a_local_engine() {
        let format = |extra: &[&str]| {
            let mut argv = vec![
                "offline-images",
                "export",
                "--output",
                "o",
                "--no-importer-binary",
            ];
            argv.extend(extra);
            argv.push("r/a:1");
            let Command::Export(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not export")
            };
            args.settings().map(|s| s.format)
        };
        use crate::export::BundleFormat as F;
        assert_eq!(format(&[]).unwrap(), F::Layout);
        assert_eq!(format(&["--engine", "registry"]).unwrap(), F::Layout);
        assert_eq!(format(&["--engine", "docker"]).unwrap(), F::Archives);
        assert_eq!(format(&["--format", "archives"]).unwrap(), F::Archives);
        assert_eq!(format(&["--since", "prev"]).unwrap(), F::Layout);
        assert!(format(&["--since", "prev", "--format", "archives"]).is_err());
    }
}
