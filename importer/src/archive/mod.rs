//! Image archives: find them, open them as a stream, and inspect them without extracting.
//!
//! Every flavour found in the wild is read from one sequential pass over the tar stream:
//! `docker save` (legacy `manifest.json` layout and the 25+ layout that is both OCI and
//! docker-archive), podman/skopeo `docker-archive` and `oci-archive`, `ctr export` and
//! `nerdctl save` (OCI layout), plain or compressed (detected by magic bytes).

mod ahead;
mod discover;
mod documents;
// Test code only (`#![cfg(test)]` inside).
mod fixtures;
mod inspect;
mod limits;
mod open;
mod resolve;
mod rewrite;
mod scan;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::units::human_bytes;
pub use ahead::open_ahead;
pub use discover::{check_images_path, discover, Found, Rejected};
pub use inspect::{
    inspect_listing, inspect_path, inspect_path_into, inspect_stream, inspect_stream_detailed,
    inspect_stream_into, Inspected,
};
pub use limits::Limits;
pub use open::{decompress, open, sniff, Compression, Opened};
pub use scan::{EntryData, EntrySink};

/// The layout an archive was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `manifest.json` with `Config`/`RepoTags`/`Layers` (docker save < 25, podman, skopeo).
    DockerArchive,
    /// docker save 25+: an OCI layout that also carries a `manifest.json`.
    DockerOci,
    /// An OCI image layout: `oci-layout`, `index.json` and `blobs/` (skopeo, ctr, nerdctl).
    Oci,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::DockerArchive => "docker-archive",
            Format::DockerOci => "docker-archive+oci",
            Format::Oci => "oci-archive",
        })
    }
}

/// An OS/architecture pair, as image configs and OCI indexes state it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in OCI terms.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut it = s.split('/');
        let os = it.next().filter(|s| !s.is_empty())?;
        let architecture = it.next().filter(|s| !s.is_empty())?;
        let variant = it.next().map(str::to_string);
        if it.next().is_some() {
            return None;
        }
        Some(Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant,
        })
    }

    /// Whether an image built for `self` runs on `node`. A missing variant matches any
    /// (arm64 images rarely state `v8`).
    pub fn runs_on(&self, node: &Platform) -> bool {
        self.os == node.os
            && self.architecture == node.architecture
            && match (&self.variant, &node.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One platform's image inside an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformImage {
    /// Digest of the image manifest, where the archive has one (OCI layouts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Digest of the image config: the image ID Docker shows, the key to "already present".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    pub layers: usize,
    /// Bytes of this image's layers as stored in the archive.
    pub size: u64,
    /// The config and every layer are in the archive, so this platform can be imported.
    pub complete: bool,
}

/// One named (or untagged) image of an archive: a manifest, or an index of per-platform manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Normalised references (`docker.io/library/nginx:1.27`); empty when untagged.
    pub names: Vec<String>,
    /// Digest of the manifest or index the names point to, where the archive has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// One entry per platform (exactly one unless the archive holds an index).
    pub platforms: Vec<PlatformImage>,
}

impl Image {
    /// The complete image that runs on `node`, if the archive carries one.
    pub fn for_platform(&self, node: &Platform) -> Option<&PlatformImage> {
        self.platforms
            .iter()
            .find(|p| p.complete && p.platform.as_ref().is_none_or(|pl| pl.runs_on(node)))
    }

    /// Names for a log line: the references, or `<untagged>`.
    pub fn display_names(&self) -> String {
        if self.names.is_empty() {
            "<untagged>".to_string()
        } else {
            self.names.join(", ")
        }
    }
}

/// What `inspect` learned about an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    pub format: Format,
    pub compression: Compression,
    /// Uncompressed bytes of the tar stream that were read.
    pub tar_size: u64,
    pub images: Vec<Image>,
    /// Things a person should know that do not stop the archive from being used.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ArchiveInfo {
    /// The platforms this archive holds a complete image for, for a message such as
    /// "it has: linux/arm64"; `none` when it holds no complete image at all.
    pub fn complete_platforms(&self) -> String {
        let have: Vec<String> = self
            .images
            .iter()
            .flat_map(|i| &i.platforms)
            .filter(|p| p.complete)
            .map(|p| {
                p.platform
                    .as_ref()
                    .map_or("unknown".into(), Platform::to_string)
            })
            .collect();
        if have.is_empty() {
            "none".into()
        } else {
            have.join(", ")
        }
    }
}

impl ArchiveInfo {
    /// The one way to say that an archive has nothing `platform` can run (every backend and
    /// `verify` give it): the bundle was exported for another platform.
    pub fn no_image_for(&self, platform: &Platform) -> String {
        format!(
            "the archive holds no complete image for this node's platform {platform} (it has: {})",
            self.complete_platforms()
        )
    }
}

impl Image {
    /// The one way to say that one image of an archive has nothing `platform` can run.
    pub fn not_for(&self, platform: &Platform) -> String {
        format!(
            "{} has no complete image for this node's platform {platform} in this archive",
            self.display_names()
        )
    }
}

/// Small archives written in memory, for unit tests here and in the runtimes.
#[cfg(test)]
pub(crate) fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}
