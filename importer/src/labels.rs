//! The labels the importer sets on the images it imports (containerd), and what they mean.
//! `import` sets them, `prune` and re-runs read them (docs/ARCHITECTURE.md, "Data flow: import").

use anyhow::Result;

use crate::exit;

/// Labels set on every imported image (containerd). Pinned images are never removed by
/// kubelet's image garbage collection, so a node under disk pressure keeps what the air-gapped
/// cluster cannot pull again.
pub const LABEL_PINNED: &str = "io.cri-containerd.pinned";
pub const LABEL_MANAGED: &str = "io.offline-images.managed";
/// Prefix of a label naming an archive (by fingerprint) that gave this image:
/// `io.offline-images.archive.<fingerprint>=<images in that archive>/<config digest>`.
/// One label per archive, so an image that several archives carry keeps them all.
pub const LABEL_ARCHIVE_PREFIX: &str = "io.offline-images.archive.";
/// Prefix of a label naming a Helm release that uses this image:
/// `io.offline-images.release.<release>=true`. One label per release, so an image that two
/// releases imported keeps both, and `prune` of one release leaves it to the other.
pub const LABEL_RELEASE_PREFIX: &str = "io.offline-images.release.";

/// The release label key for `release`, or a usage error when the name cannot be one.
/// Helm release names are lowercase DNS labels of at most 53 characters; anything made of
/// letters, digits, `.`, `_` and `-` is accepted here.
pub fn release_label(release: &str) -> Result<String> {
    let ok = !release.is_empty()
        && release.len() <= 200
        && release
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(exit::usage(format!(
            "--release {release:?} is not a release name: use letters, digits, '.', '_' and '-' \
             (at most 200 characters), as Helm release names do"
        )));
    }
    Ok(format!("{LABEL_RELEASE_PREFIX}{release}"))
}
