//! Command-line interface: the names here are a contract (DESIGN.md "CLI contract").

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Get a release's container images onto air-gapped nodes.
///
/// On a connected host, `export` pulls every image a release needs into a bundle of
/// compressed archives with SHA256SUMS and images.json. On the node (usually as a Helm
/// pre-install hook Job), `import` loads every archive of the bundle into containerd or
/// Docker, skipping what is already there and carrying on past bad archives.
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
    /// Pull images and write them as a bundle: archives, SHA256SUMS and images.json.
    ///
    /// References come from IMAGE arguments, --images-file, Helm values files (`image:`
    /// strings and registry/repository/tag/digest maps at any depth) and rendered manifests
    /// (every container, init container and ephemeral container of every pod template).
    /// Each image is pulled and saved with the host's engine (docker, podman or skopeo, using
    /// its own registry login) and written as one archive named after its reference:
    /// `docker.io/library/nginx:1.27` becomes `docker.io_library_nginx_1.27.tar.gz`
    /// (`.tar.zst` with --compress zstd, `.tar` with --compress none). Archives are complete or
    /// absent, never partial. A re-run skips images whose archive matches SHA256SUMS and whose
    /// image is unchanged at the registry. Exit 1 if any image or input failed; the others are
    /// still exported.
    Export(ExportArgs),
    /// Remove the images a release imported (those labelled with its name), on this node.
    ///
    /// containerd only: an image still used by a container is kept, and an image that another
    /// release also imported only loses this release's label. Removed images are listed on
    /// stdout. Docker images carry no labels after `docker load`, so Docker is refused (exit 2).
    Prune(PruneArgs),
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

    /// containerd socket (default: probe the usual sockets of kubeadm, k3s/RKE2, MicroK8s, k0s).
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

    /// Docker Engine socket, as unix:///path (default: unix:///var/run/docker.sock).
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

    /// Snapshotter the native client unpacks layers into (default: the one the CRI plugin
    /// uses when its configuration can be read, else overlayfs).
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", value_name = "NAME")]
    pub snapshotter: Option<String>,
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
    #[arg(long, env = "NO_DISK_PREFLIGHT")]
    pub no_disk_preflight: bool,

    /// Archives imported at the same time.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Exit 1 if any archive failed (default: report failures and exit 0).
    #[arg(long, env = "IMPORT_STRICT")]
    pub strict: bool,

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

    /// Label every image of the bundle (imported or already present) as used by this Helm
    /// release, so that `offline-images prune --release NAME` can remove them later.
    #[arg(long, env = "RELEASE_NAME", value_name = "NAME")]
    pub release: Option<String>,
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
    /// docker, then podman, then skopeo, whichever is found first on PATH.
    Auto,
    Docker,
    Podman,
    Skopeo,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Image references to export (e.g. nginx:1.27, ghcr.io/org/app@sha256:...).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,

    /// A Helm values file to collect `image:` references from (repeatable).
    #[arg(long = "values", value_name = "FILE")]
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

    /// Platform to export.
    #[arg(long, default_value = "linux/amd64", value_name = "OS/ARCH[/VARIANT]")]
    pub platform: String,

    /// Compression of the written archives.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compress: Compression,

    /// Images exported at the same time.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Export every image again, even when its archive is present and up to date.
    #[arg(long)]
    pub no_cache: bool,

    /// Tool used to pull and save images.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: Engine,

    /// A registry (host[:port]) reached over plain HTTP or without TLS verification, e.g. a
    /// staging mirror (repeatable). Used by podman and skopeo; docker follows its daemon's
    /// `insecure-registries` setting (127.0.0.0/8 is insecure to docker by default).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,

    /// Only print the collected references; pull nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Static importer binary to put in the bundle (under `.offline-images/`, with its
    /// sha256), so the chart's bootstrap mode can run it from the bundle in an image every
    /// node already has. Default: this binary, when it is statically linked.
    #[arg(long, value_name = "FILE", conflicts_with = "no_importer_binary")]
    pub importer_binary: Option<PathBuf>,

    /// Do not put the importer binary in the bundle.
    #[arg(long)]
    pub no_importer_binary: bool,
}
