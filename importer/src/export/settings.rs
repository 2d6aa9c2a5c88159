//! What `export` works with: its flags resolved once, at the edge, into plain values
//! (`cli::ExportArgs::settings`), so that nothing under `export/` knows the command line's
//! types. A value read from the environment at run time (the password on stdin, the importer
//! binary's check, the mirrors' form) is checked where it is used, at the moment it always was.

use std::path::PathBuf;

use anyhow::Result;

use super::engine::Choice;
use crate::archive::{Compression, Platform};
use crate::exit;

/// One `export` run, as asked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the references come from.
    pub inputs: Inputs,
    /// The bundle directory.
    pub output: PathBuf,
    /// The platforms to export, each once, the host's when none was asked; the docker,
    /// podman and skopeo engines export the first.
    pub platforms: Vec<Platform>,
    /// The engine asked for.
    pub engine: Choice,
    /// The compression of the archives the docker, podman and skopeo engines write.
    pub compression: Compression,
    /// Images exported at the same time (and the registry engine's downloads).
    pub jobs: usize,
    /// Export every image again, and keep no blob cache.
    pub no_cache: bool,
    /// The registry engine's blob cache; `None`: the default place.
    pub cache_dir: Option<PathBuf>,
    /// Root certificates trusted for registries besides the system's.
    pub ca_file: Option<PathBuf>,
    /// `SRC=MIRROR` as given (checked when the registry engine starts).
    pub registry_mirrors: Vec<String>,
    /// The user of `--username`; the password is read from stdin when the registry engine
    /// starts.
    pub username: Option<String>,
    /// Registries (host[:port], no trailing slash) reached over plain HTTP or without TLS
    /// verification.
    pub insecure: Vec<String>,
    /// Only print the collected references.
    pub dry_run: bool,
    /// The importer binary the bundle carries.
    pub importer_binary: ImporterBinary,
    /// Exit 0, writing nothing, when the inputs name no image.
    pub allow_empty: bool,
    /// Archives, or one OCI image layout.
    pub format: BundleFormat,
    /// With a layout: keep the blobs no image of the new index uses.
    pub keep_unused: bool,
    /// `--since`: the earlier layout bundle an upgrade builds on.
    pub since: Option<PathBuf>,
    /// `--pack FILE` (and `--split SIZE`): the layout bundle packed into one file to carry.
    pub pack: Option<PackTo>,
    /// `--no-signatures`: leave out the images' signatures, attestations, SBOMs and referrers.
    pub no_signatures: bool,
    /// `--verify-key`: cosign public keys; an image signed by none of them is refused.
    pub verify_keys: Vec<PathBuf>,
    /// `--verify-trusted-root` and the identity and issuer it asks for: an image signed by
    /// a certificate this takes is taken too.
    pub verify_certificates: Option<CertificatePolicy>,
    /// `--sign-key KEY`: the private key the bundle's identity is signed with.
    pub sign_key: Option<PathBuf>,
    /// The docker config file credentials are read from; `None`: `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json` (a delivery spec's `auth.dockerConfig` sets it).
    pub docker_config: Option<PathBuf>,
}

/// What a signing certificate must be for `export` to take its signature
/// (`signatures::certificate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePolicy {
    /// `--verify-trusted-root`: a Sigstore trusted root, or PEM CA certificates.
    pub trusted_root: PathBuf,
    /// `--verify-certificate-identity`: an email or URI the certificate must be for.
    pub identities: Vec<String>,
    /// `--verify-certificate-oidc-issuer`: the OIDC issuer that vouched for it.
    pub issuer: String,
}

/// Where `--pack` writes the layout bundle, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackTo {
    /// FILE, ending in `.tar` or `.tar.zst`.
    pub file: PathBuf,
    /// A `.tar.zst`: a zstd frame per member and the frame index.
    pub zstd: bool,
    /// `--split SIZE`: parts of at most this many bytes.
    pub split: Option<u64>,
}

/// The smallest `--split` part.
const SPLIT_MIN: u64 = 64 << 10;

/// `--pack FILE` and `--split SIZE` as given, checked against `--format`: FILE must end in
/// `.tar` or `.tar.zst`, `--split` needs `--pack`, `--pack` writes a layout.
pub fn pack_to(
    file: Option<&PathBuf>,
    split: Option<&str>,
    format: BundleFormat,
) -> Result<Option<PackTo>> {
    let Some(file) = file else {
        if let Some(split) = split {
            return Err(exit::usage(format!(
                "--split {split} applies to --pack: give --pack FILE to cut it into parts"
            )));
        }
        return Ok(None);
    };
    if format == BundleFormat::Archives {
        return Err(exit::usage(
            "--pack packs a layout bundle: it cannot be given with --format archives",
        ));
    }
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let zstd = name.ends_with(".tar.zst");
    if !zstd && !name.ends_with(".tar") {
        return Err(exit::usage(format!(
            "--pack {}: the file must end in .tar or .tar.zst",
            file.display()
        )));
    }
    Ok(Some(PackTo {
        file: file.clone(),
        zstd,
        split: split.map(split_size).transpose()?,
    }))
}

/// `--split SIZE`: bytes, or a number with K, M, G or T (powers of 1024, as `split -b`
/// reads them) or KB, MB, GB, TB (powers of 1000); at least 64K.
pub fn split_size(given: &str) -> Result<u64> {
    let s = given.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => 0,
    };
    let size = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor));
    match size {
        Some(size) if size >= SPLIT_MIN => Ok(size),
        _ => Err(exit::usage(format!(
            "--split {given:?} is not a size of at least 64K (e.g. 4G, 700M, 1500MB)"
        ))),
    }
}

/// What the bundle directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BundleFormat {
    /// One archive per image.
    #[default]
    Archives,
    /// One OCI image layout, each blob once (the registry engine only).
    Layout,
}

/// Every source of references, in the order an operator gives them.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// References given as arguments.
    pub images: Vec<String>,
    /// Files of one reference per line.
    pub images_files: Vec<PathBuf>,
    /// Values files: given to `helm template` with a chart, else read as values.
    pub values: Vec<PathBuf>,
    /// Rendered manifests (`-` is stdin).
    pub manifests: Vec<PathBuf>,
    /// A chart to render with `helm template`.
    pub chart: Option<Chart>,
    /// Indirect images are listed but not exported.
    pub no_indirect: bool,
}

/// A chart and what `helm template` is told about the release.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// A directory, a `.tgz`, `oci://...` or `repo/name`.
    pub chart: String,
    pub version: Option<String>,
    pub set: Vec<String>,
    pub namespace: Option<String>,
    pub kube_version: Option<String>,
    pub api_versions: Vec<String>,
    /// The helm executable; `None`: `helm` on PATH.
    pub helm: Option<PathBuf>,
    /// The release name the chart is rendered with.
    pub release_name: String,
}

/// The static importer binary the bundle carries for the chart's bootstrap mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImporterBinary {
    /// None (`--no-importer-binary`).
    Omitted,
    /// These files (`--importer-binary`, repeatable), each refused unless it is a static
    /// Linux importer for x86_64 or aarch64; one per architecture.
    Given(Vec<PathBuf>),
    /// This binary, when it is static, and `offline-images-<machine>` beside it for the other
    /// architecture, when there is one; else none, with a note.
    Running,
}

impl Inputs {
    /// Whether any input was given at all.
    pub fn given(&self) -> bool {
        !self.images.is_empty()
            || !self.images_files.is_empty()
            || self.chart.is_some()
            || !self.values.is_empty()
            || !self.manifests.is_empty()
    }
}

impl Settings {
    /// Whether images come from the registry engine (`auto` or `registry`).
    pub fn uses_registry(&self) -> bool {
        matches!(self.engine, Choice::Auto | Choice::Registry)
    }
}

/// The file extension of an archive a docker, podman or skopeo engine writes.
pub fn extension(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => ".tar.gz",
        Compression::Zstd => ".tar.zst",
        Compression::None => ".tar",
    }
}

/// The platforms asked for (`--platform`), each once, the host's when none.
pub fn platforms(given: &[String]) -> Result<Vec<Platform>> {
    let mut out = Vec::new();
    for p in given {
        let parsed = Platform::parse(p).ok_or_else(|| {
            exit::usage(format!(
                "--platform {p:?} is not of the form os/arch[/variant], e.g. linux/amd64"
            ))
        })?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    if out.is_empty() {
        out.push(Platform::host());
    }
    Ok(out)
}

/// `host[:port]` of `--insecure-registry`, without a trailing slash.
pub fn insecure_hosts(given: &[String]) -> Vec<String> {
    given
        .iter()
        .map(|h| h.trim_end_matches('/').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_kept_once_in_order_and_the_hosts_without_any() {
        let given = ["linux/arm64", "linux/amd64", "linux/arm64"].map(String::from);
        let got: Vec<String> = platforms(&given)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["linux/arm64", "linux/amd64"]);
        assert_eq!(platforms(&[]).unwrap(), vec![Platform::host()]);
        let e = platforms(&["amd64".to_string()]).unwrap_err();
        assert_eq!(exit::Code::from_error(&e), exit::Code::Usage);
        assert_eq!(
            e.to_string(),
            "--platform \"amd64\" is not of the form os/arch[/variant], e.g. linux/amd64"
        );
    }

    #[test]
    fn insecure_hosts_lose_a_trailing_slash_and_the_extension_follows_the_compression() {
        let hosts = insecure_hosts(&["reg:5000/".to_string(), "other".to_string()]);
        assert_eq!(hosts, ["reg:5000", "other"]);
        assert_eq!(extension(Compression::Gzip), ".tar.gz");
        assert_eq!(extension(Compression::Zstd), ".tar.zst");
        assert_eq!(extension(Compression::None), ".tar");
    }

    #[test]
    fn pack_takes_a_tar_or_tar_zst_and_split_a_size() {
        assert_eq!(split_size("4G").unwrap(), 4 << 30);
        assert_eq!(split_size("700M").unwrap(), 700 << 20);
        assert_eq!(split_size("1500MB").unwrap(), 1_500_000_000);
        assert_eq!(split_size("65536").unwrap(), 65536);
        for bad in ["", "4X", "G", "1K", "-1M"] {
            let e = split_size(bad).unwrap_err();
            assert_eq!(exit::Code::from_error(&e), exit::Code::Usage, "{bad}");
        }
        let file = PathBuf::from("/out/bundle.tar.zst");
        let to = pack_to(Some(&file), Some("1G"), BundleFormat::Layout)
            .unwrap()
            .unwrap();
        assert_eq!((to.zstd, to.split), (true, Some(1 << 30)));
        let e = pack_to(Some(&file), None, BundleFormat::Archives).unwrap_err();
        assert!(e.to_string().contains("--format archives"), "{e}");
        let e = pack_to(Some(&PathBuf::from("b.tgz")), None, BundleFormat::Layout).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--pack b.tgz: the file must end in .tar or .tar.zst"
        );
        let e = pack_to(None, Some("1G"), BundleFormat::Layout).unwrap_err();
        assert!(
            e.to_string().starts_with("--split 1G applies to --pack"),
            "{e}"
        );
        assert_eq!(pack_to(None, None, BundleFormat::Archives).unwrap(), None);
    }
}
