//! The images an archive holds, found in what the pass over it kept: names (as Docker and
//! containerd give them, checked with Docker's rules), platforms, config and manifest digests,
//! within the archive's limits.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::documents::{
    blob_path, config_platform, document_is_index, is_index_type, parse, Descriptor,
    DockerManifestEntry, Index, Manifest, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME,
};
use super::limits::Limits;
use super::scan::{hex_sha256, normalize_name, Scan};
use super::{ArchiveInfo, Compression, Format, Image, Platform, PlatformImage};
use crate::failure::{Failure, Kind};
use crate::reference;

pub(super) fn resolve(
    scan: &Scan,
    compression: Compression,
    tar_size: u64,
    limits: Limits,
) -> Result<ArchiveInfo> {
    let mut warnings = Vec::new();
    let index = scan.json_of("index.json");
    let manifest = scan.json_of("manifest.json");
    let (format, mut images) = match (index, manifest) {
        (None, None) => {
            if scan.files.is_empty() {
                bail!("the archive holds no files");
            }
            bail!("it has no manifest.json or index.json: this tar is not a docker-archive or OCI image archive");
        }
        (Some(index), manifest) => {
            let index: Index = parse("index.json", index)?;
            check_count(
                "index.json",
                "images",
                index.manifests.len(),
                limits.images_max,
            )?;
            let mut images = Vec::new();
            for desc in &index.manifests {
                images.push(oci_image(scan, desc)?);
            }
            let format = if let Some(m) = manifest {
                merge_docker_names(scan, m, &mut images, limits)?;
                Format::DockerOci
            } else {
                Format::Oci
            };
            for (desc, image) in index.manifests.iter().zip(&images) {
                if let (true, Some(tag)) = (image.names.is_empty(), bare_tag(desc)) {
                    warnings.push(format!(
                        "image {} is named only by the tag {tag:?} (no repository); it is imported without a name",
                        desc.digest
                    ));
                }
            }
            (format, images)
        }
        (None, Some(manifest)) => {
            let entries = docker_entries(manifest, limits)?;
            let mut images = Vec::new();
            for entry in &entries {
                images.push(docker_image(scan, entry)?);
            }
            (Format::DockerArchive, images)
        }
    };
    if images.is_empty() {
        bail!("the archive's index lists no images");
    }
    for image in &mut images {
        image.names.dedup();
    }
    let names: usize = images.iter().map(|i| i.names.len()).sum();
    check_count("the archive", "image names", names, limits.names_max)?;
    let mut seen = HashSet::new();
    for name in images.iter().flat_map(|i| &i.names) {
        if !seen.insert(name) {
            warnings.push(format!(
                "{name} is named twice in this archive; the last one wins"
            ));
        }
    }
    Ok(ArchiveInfo {
        format,
        compression,
        tar_size,
        images,
        warnings,
    })
}

/// A descriptor's size against the blob's in the archive, when both are known: a descriptor
/// that claims another size than its blob's is refused (the OCI spec requires them equal, and
/// a reader trusting the claim would report or reserve what is not there).
fn check_size(scan: &Scan, desc: &Descriptor, path: &str) -> Result<()> {
    match (desc.size, scan.size_of(path)) {
        (Some(claimed), Some(actual)) if claimed != actual => bail!(
            "a descriptor says {} is {claimed} bytes, but the archive's blob is {actual} bytes",
            desc.digest
        ),
        _ => Ok(()),
    }
}

/// A count from the archive against its limit: past it, the archive is refused, naming both.
fn check_count(whose: &str, what: &str, count: usize, max: usize) -> Result<()> {
    if count > max {
        bail!(
            "{whose} gives {count} {what}, over the limit of {max} for one archive: refusing it \
             before any of them is imported"
        );
    }
    Ok(())
}

/// The entries of a docker-archive `manifest.json`, each with no more names than one image may
/// have (checked before a name is parsed, so a hostile list costs no time).
fn docker_entries(data: &[u8], limits: Limits) -> Result<Vec<DockerManifestEntry>> {
    let entries: Vec<DockerManifestEntry> = parse("manifest.json", data)?;
    check_count("manifest.json", "images", entries.len(), limits.images_max)?;
    for entry in &entries {
        let tags = entry.repo_tags.as_ref().map_or(0, Vec::len);
        if tags > limits.names_per_image_max {
            bail!(
                "manifest.json gives the image {} {tags} names (RepoTags), over the limit of {} \
                 for one image: refusing the archive before any of them is imported",
                entry.config,
                limits.names_per_image_max
            );
        }
    }
    Ok(entries)
}

/// The names as Docker and containerd write them, each once (in linear time), in their first
/// order. A name that is not a reference by Docker's rules (see `reference`) refuses the whole
/// archive: Docker would load the images named before it and then fail, and the kubelet could
/// never ask for it.
fn normalize_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
    source: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for n in names {
        match reference::normalize(n) {
            Ok(r) => {
                if seen.insert(r.clone()) {
                    out.push(r)
                }
            }
            Err(e) => {
                return Err(Failure::error(
                    Kind::Archive,
                    format!("{source}: {e}; no image of this archive is imported"),
                ))
            }
        }
    }
    Ok(out)
}

/// Name precedence, as containerd's importer has it: `io.containerd.image.name`, then
/// `org.opencontainers.image.ref.name` when it is a whole reference (not just a tag).
fn oci_names(desc: &Descriptor) -> Result<Vec<String>> {
    if let Some(n) = desc.annotations.get(ANNOTATION_CONTAINERD_NAME) {
        return normalize_names(
            [n.as_str()],
            &format!("index.json {ANNOTATION_CONTAINERD_NAME}"),
        );
    }
    match desc.annotations.get(ANNOTATION_REF_NAME) {
        Some(n) if n.contains('/') || n.contains(':') => {
            normalize_names([n.as_str()], &format!("index.json {ANNOTATION_REF_NAME}"))
        }
        _ => Ok(Vec::new()),
    }
}

/// The bare tag an OCI index gives an image that has no whole name, e.g. `latest`.
fn bare_tag(desc: &Descriptor) -> Option<&str> {
    desc.annotations
        .get(ANNOTATION_REF_NAME)
        .filter(|n| !n.contains('/') && !n.contains(':'))
        .map(String::as_str)
}

fn oci_image(scan: &Scan, desc: &Descriptor) -> Result<Image> {
    let names = oci_names(desc)?;
    let mut platforms = Vec::new();
    collect_platforms(scan, desc, None, 0, &mut platforms)?;
    Ok(Image {
        names,
        digest: Some(desc.digest.clone()),
        platforms,
    })
}

fn collect_platforms(
    scan: &Scan,
    desc: &Descriptor,
    platform: Option<Platform>,
    depth: usize,
    out: &mut Vec<PlatformImage>,
) -> Result<()> {
    if depth > 4 {
        bail!("the archive's indexes nest more than 4 deep");
    }
    let path = blob_path(&desc.digest);
    check_size(scan, desc, &path)?;
    let Some(data) = scan.json_of(&path) else {
        if let Some(size) = scan.size_of(&path) {
            bail!(
                "{} points to {}, which is in the archive but is no image manifest or index \
                 (a blob of {size} bytes that is not a JSON document)",
                if depth == 0 {
                    "index.json"
                } else {
                    "an image index"
                },
                desc.digest
            );
        }
        if depth == 0 {
            bail!(
                "index.json points to {}, which is not in the archive",
                desc.digest
            );
        }
        // Another platform's manifest, left out of a single-platform export: fine.
        out.push(PlatformImage {
            manifest_digest: Some(desc.digest.clone()),
            platform,
            config_digest: None,
            layers: 0,
            size: 0,
            complete: false,
        });
        return Ok(());
    };
    if document_is_index(&path, data)? {
        if !desc.media_type.is_empty() && !is_index_type(&desc.media_type) {
            bail!(
                "{} is an image index, but the descriptor that points to it says {}",
                desc.digest,
                desc.media_type
            );
        }
        let index: Index = parse(&path, data)?;
        for child in &index.manifests {
            if child
                .annotations
                .get("vnd.docker.reference.type")
                .map(String::as_str)
                == Some("attestation-manifest")
            {
                continue;
            }
            collect_platforms(scan, child, child.platform.clone(), depth + 1, out)?;
        }
        return Ok(());
    }
    out.push(manifest_platform(scan, desc, &path, data, platform)?);
    Ok(())
}

/// The image manifest `desc` points to, read from `data`, for `platform` (or its config's).
fn manifest_platform(
    scan: &Scan,
    desc: &Descriptor,
    path: &str,
    data: &[u8],
    platform: Option<Platform>,
) -> Result<PlatformImage> {
    if is_index_type(&desc.media_type) {
        bail!(
            "{} is an image manifest, but the descriptor that points to it says {}",
            desc.digest,
            desc.media_type
        );
    }
    let manifest: Manifest = parse(path, data)?;
    check_size(scan, &manifest.config, &blob_path(&manifest.config.digest))?;
    let config = scan.json_of(&blob_path(&manifest.config.digest));
    let mut size = 0;
    let mut complete = config.is_some();
    for layer in &manifest.layers {
        check_size(scan, layer, &blob_path(&layer.digest))?;
        match scan.size_of(&blob_path(&layer.digest)) {
            Some(s) => size += s,
            None => complete = false,
        }
    }
    Ok(PlatformImage {
        manifest_digest: Some(desc.digest.clone()),
        platform: platform.or_else(|| config.and_then(config_platform)),
        config_digest: Some(manifest.config.digest.clone()),
        layers: manifest.layers.len(),
        size,
        complete,
    })
}

/// docker save 25+ writes `manifest.json` beside the OCI index; its `RepoTags` name images too.
fn merge_docker_names(
    scan: &Scan,
    manifest: &[u8],
    images: &mut Vec<Image>,
    limits: Limits,
) -> Result<()> {
    let entries = docker_entries(manifest, limits)?;
    for entry in &entries {
        let tags = entry.repo_tags.iter().flatten().map(String::as_str);
        let names = normalize_names(tags, "manifest.json RepoTags")?;
        let config_digest = entry
            .config
            .strip_prefix("blobs/")
            .map(|rest| rest.replacen('/', ":", 1));
        let existing = images.iter_mut().find(|img| {
            img.platforms
                .iter()
                .any(|p| p.config_digest.is_some() && p.config_digest == config_digest)
        });
        match existing {
            Some(img) => {
                for n in names {
                    if !img.names.contains(&n) {
                        img.names.push(n);
                    }
                }
            }
            None => images.push(docker_image(scan, entry)?),
        }
    }
    Ok(())
}

fn docker_image(scan: &Scan, entry: &DockerManifestEntry) -> Result<Image> {
    let config_name = normalize_name(entry.config.as_bytes())?;
    let config = scan.json_of(&config_name).ok_or_else(|| {
        anyhow!("manifest.json names the config {config_name}, which is not in the archive")
    })?;
    let mut size = 0;
    let mut sizes = Vec::new();
    for layer in &entry.layers {
        let name = normalize_name(layer.as_bytes())?;
        let s = scan.size_of(&name).ok_or_else(|| {
            anyhow!("manifest.json names the layer {name}, which is not in the archive")
        })?;
        size += s;
        sizes.push(s);
    }
    let tags = entry.repo_tags.iter().flatten().map(String::as_str);
    Ok(Image {
        names: normalize_names(tags, "manifest.json RepoTags")?,
        digest: None,
        platforms: vec![PlatformImage {
            manifest_digest: converted_manifest_digest(config, &sizes),
            platform: config_platform(config),
            config_digest: Some(format!("sha256:{}", hex_sha256(config))),
            layers: entry.layers.len(),
            size,
            complete: true,
        }],
    })
}

/// The digest of the manifest containerd writes for a docker-archive image when it imports it
/// (ctr, and Docker's containerd image store, whose image ID it is): a Docker schema 2
/// manifest of the config and of each `layer.tar`, whose digest is the layer's diff ID when
/// it is an uncompressed tar, as docker save writes it. None when the config lists a
/// different number of diff IDs than there are layers.
fn converted_manifest_digest(config: &[u8], layer_sizes: &[u64]) -> Option<String> {
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    let diff_ids = serde_json::from_slice::<Config>(config)
        .ok()?
        .rootfs
        .diff_ids;
    if diff_ids.len() != layer_sizes.len() {
        return None;
    }
    // Field by field in the order containerd writes them.
    let layers: Vec<String> = diff_ids
        .iter()
        .zip(layer_sizes)
        .map(|(d, size)| {
            format!(
                r#"{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar","digest":{},"size":{size}}}"#,
                serde_json::Value::from(d.as_str())
            )
        })
        .collect();
    let doc = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{}","size":{}}},"layers":[{}]}}"#,
        hex_sha256(config),
        config.len(),
        layers.join(",")
    );
    Some(format!("sha256:{}", hex_sha256(doc.as_bytes())))
}
