//! The `export` command's flags: compiled only with the `export` feature, which the node's
//! importer is built without (docs/decisions/0024-node-build-without-export.md).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

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

    /// Leave out the images' cosign signatures, attestations and SBOMs and their OCI
    /// referrers, which a layout bundle otherwise carries with each image (and push sends).
    #[arg(long)]
    pub no_signatures: bool,

    /// A cosign public key (KEY.pub, ECDSA P-256 in PEM, as `cosign generate-key-pair`
    /// writes it); repeatable. Each image must carry a cosign signature by one of the keys
    /// for the digest it resolved to (cosign's .sig tag, or a Sigstore bundle among its OCI
    /// referrers), or it is refused by name and the rest go on. No transparency log is
    /// consulted [default: none, no image is checked].
    #[arg(long, value_name = "KEY.pub")]
    pub verify_key: Vec<PathBuf>,
    /// Take images signed by a certificate (cosign's keyless form): the certificate the
    /// signature carries must chain to a CA of FILE (a Sigstore trusted_root.json, as
    /// `cosign trusted-root create` writes it and Sigstore's TUF repository serves it, or PEM
    /// CA certificates), name --verify-certificate-identity and
    /// --verify-certificate-oidc-issuer, and have been valid when it signed: at the time the
    /// signature's transparency-log entry promises (checked with the key of a log FILE
    /// names), else the time its RFC 3161 timestamp gives (by an authority FILE names), else
    /// now [default: none, only --verify-key is checked].
    #[arg(
        long,
        value_name = "FILE",
        requires_all = ["verify_certificate_identity", "verify_certificate_oidc_issuer"]
    )]
    pub verify_trusted_root: Option<PathBuf>,
    /// With --verify-trusted-root: an identity (email or URI, exactly as the certificate's
    /// subject alternative name has it) the signing certificate must be for; repeatable, any
    /// one suffices [default: none; required with --verify-trusted-root].
    #[arg(long, value_name = "ID", requires = "verify_trusted_root")]
    pub verify_certificate_identity: Vec<String>,
    /// With --verify-trusted-root: the OIDC issuer (a URL, exactly) the signing certificate
    /// names as having vouched for its identity [default: none; required with
    /// --verify-trusted-root].
    #[arg(long, value_name = "URL", requires = "verify_trusted_root")]
    pub verify_certificate_oidc_issuer: Option<String>,
    /// Sign the bundle: its identity (the sha256 of index.json, images.json and SHA256SUMS)
    /// signed with KEY (ECDSA P-256: PKCS#8 or SEC1 PEM, or cosign's encrypted key with
    /// COSIGN_PASSWORD), written under .offline-images/ as cosign's signature file and a
    /// Sigstore bundle, and carried by --pack as members of the pack. `import --verify-key`
    /// checks it [default: none: the bundle is not signed].
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
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
    /// `--verify-trusted-root` and the identities and issuer it asks for (clap requires
    /// them with it).
    fn certificate_policy(&self) -> Option<crate::export::CertificatePolicy> {
        let root = self.verify_trusted_root.as_ref()?;
        Some(crate::export::CertificatePolicy {
            trusted_root: root.clone(),
            identities: self.verify_certificate_identity.clone(),
            issuer: self
                .verify_certificate_oidc_issuer
                .clone()
                .unwrap_or_default(),
        })
    }

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
            no_signatures: self.no_signatures,
            verify_keys: self.verify_key.clone(),
            verify_certificates: self.certificate_policy(),
            sign_key: self.sign_key.clone(),
            docker_config: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

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
