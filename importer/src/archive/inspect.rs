//! Reading what an archive holds from one sequential pass over its tar stream.
//!
//! Only small JSON documents (manifests, indexes, configs) are kept in memory, each under a
//! cap; layer data is skipped (seeked over in a plain tar file, read and dropped in a
//! compressed stream), so memory stays flat whatever the archive's size. The pass itself is
//! `scan`, the images are found in what it kept by `resolve`, and `rewrite` describes the
//! archive anew for a loader that reads only one of the layouts.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::limits::Limits;
use super::resolve::resolve;
use super::scan::{scan, tar_error, EntryData, EntrySink, Scan};
use super::{open, ArchiveInfo, Compression};
use crate::stop::Stoppable;

/// Inspect an archive file. A plain tar is read by seeking over layer data; a compressed one
/// is decompressed once, as a stream.
pub fn inspect_path(path: &Path, limits: Limits) -> Result<ArchiveInfo> {
    inspect_path_into(path, limits, &mut NoSink)
}

/// [`inspect_path`], handing every file and link to `sink` (layer data it leaves unread is
/// seeked over in a plain tar).
pub fn inspect_path_into(
    path: &Path,
    limits: Limits,
    sink: &mut dyn EntrySink,
) -> Result<ArchiveInfo> {
    let opened = open(path)?;
    if opened.compression == Compression::None {
        drop(opened);
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut archive = tar::Archive::new(file);
        let entries = archive.entries_with_seek().map_err(tar_error)?;
        let scan = scan(entries, limits, sink)?;
        // Seeking past the end of a file is no error, and the tar reader takes the end of the
        // file for the end of the archive: a file cut inside an entry's data reads as a shorter
        // archive unless its last entry is checked against the file's size.
        if scan.end_of_entries > size {
            bail!(
                "the tar stream is truncated: the file ends at {size} bytes, inside its last entry \
                 (whose data runs to {} bytes)",
                scan.end_of_entries
            );
        }
        return resolve(&scan, Compression::None, size, limits);
    }
    inspect_stream_into(opened.reader, opened.compression, limits, sink).map(|i| i.info)
}

/// Inspect a decompressed tar stream, reading it to its very end (so a caller that tees the
/// stream into a runtime has passed on every byte when this returns).
pub fn inspect_stream<R: Read>(
    reader: R,
    compression: Compression,
    limits: Limits,
) -> Result<ArchiveInfo> {
    inspect_stream_detailed(reader, compression, limits).map(|i| i.info)
}

/// [`inspect_stream`], keeping what a caller needs to re-describe the archive (for a runtime
/// that reads only one of the layouts) and where its entries end.
pub fn inspect_stream_detailed<R: Read>(
    reader: R,
    compression: Compression,
    limits: Limits,
) -> Result<Inspected> {
    inspect_stream_into(reader, compression, limits, &mut NoSink)
}

struct NoSink;

impl EntrySink for NoSink {
    fn file(&mut self, _: &str, _: u64, _: EntryData<'_>) -> Result<()> {
        Ok(())
    }
}

/// [`inspect_stream_detailed`], handing every file and link to `sink` as it streams by.
pub fn inspect_stream_into<R: Read>(
    reader: R,
    compression: Compression,
    limits: Limits,
    sink: &mut dyn EntrySink,
) -> Result<Inspected> {
    let mut counted = Stoppable::new(reader);
    let scan = {
        let mut archive = tar::Archive::new(&mut counted);
        let entries = archive.entries().map_err(tar_error)?;
        scan(entries, limits, sink)?
    };
    // Past the end-of-archive blocks there may be padding; a tee must see it all.
    io::copy(&mut counted, &mut io::sink()).map_err(tar_error)?;
    let end_of_entries = scan.end_of_entries;
    let has_docker_manifest = scan.json_of("manifest.json").is_some();
    let info = resolve(&scan, compression, counted.bytes_read(), limits)?;
    Ok(Inspected {
        info,
        end_of_entries,
        has_docker_manifest,
        scan,
    })
}

/// What an archive holds, from a listing of its files made without a tar (an image of an
/// OCI layout directory): every file with its size, and the JSON documents among them as the
/// pass over a tar keeps them, already checked against their digests.
pub fn inspect_listing(
    files: Vec<(String, u64)>,
    json: Vec<(String, Vec<u8>)>,
    tar_size: u64,
    limits: Limits,
) -> Result<ArchiveInfo> {
    let mut scan = Scan::default();
    scan.files.extend(files);
    scan.json.extend(json);
    resolve(&scan, Compression::None, tar_size, limits)
}

/// What one pass over an archive learned, beyond [`ArchiveInfo`].
pub struct Inspected {
    pub info: ArchiveInfo,
    /// Offset in the tar stream where the last entry's data (and its padding) ends: the
    /// end-of-archive blocks start here.
    pub end_of_entries: u64,
    /// The archive carries a docker-archive `manifest.json` (docker save, podman, skopeo
    /// docker-archive), which every Docker version loads.
    pub has_docker_manifest: bool,
    pub(super) scan: Scan,
}

impl Inspected {
    /// Mark complete each platform whose only missing blobs are layers `held` says the
    /// runtime already has: an image of an upgrade bundle (`export --since`), whose earlier
    /// layers the bundle does not carry. Its config must be in the archive; a layer the
    /// runtime lacks keeps the platform incomplete.
    pub fn complete_with(&mut self, held: &dyn Fn(&str) -> bool) {
        self.complete_where(&|digest, _| held(digest));
    }

    /// [`Inspected::complete_with`] for a runtime that keeps layers by chain ID (Docker's
    /// classic store): `held` is asked each missing layer's chain ID in its image, from the
    /// config's diff IDs; a layer without one (a config that does not give one diff ID per
    /// layer) is not held.
    pub fn complete_by_chain(&mut self, held: &dyn Fn(&str) -> bool) {
        self.complete_where(&|_, chain| chain.is_some_and(held));
    }

    fn complete_where(&mut self, held: &dyn Fn(&str, Option<&str>) -> bool) {
        use super::documents::{blob_path, Manifest};
        #[derive(serde::Deserialize)]
        struct Config {
            rootfs: RootFs,
        }
        #[derive(serde::Deserialize)]
        struct RootFs {
            diff_ids: Vec<String>,
        }
        let scan = &self.scan;
        for p in self.info.images.iter_mut().flat_map(|i| &mut i.platforms) {
            let (false, Some(manifest)) = (p.complete, &p.manifest_digest) else {
                continue;
            };
            let Some(m) = scan
                .json_of(&blob_path(manifest))
                .and_then(|d| serde_json::from_slice::<Manifest>(d).ok())
            else {
                continue;
            };
            let Some(config) = scan.json_of(&blob_path(&m.config.digest)) else {
                continue;
            };
            let chains = match serde_json::from_slice::<Config>(config) {
                Ok(c) if c.rootfs.diff_ids.len() == m.layers.len() => {
                    crate::digest::chain_ids(&c.rootfs.diff_ids)
                }
                _ => Vec::new(),
            };
            let mut missing = m
                .layers
                .iter()
                .enumerate()
                .filter(|(_, l)| scan.size_of(&blob_path(&l.digest)).is_none());
            if missing.all(|(i, l)| held(&l.digest, chains.get(i).map(String::as_str))) {
                p.complete = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::archive::fixtures::{multi_platform_oci, oci_archive_with_entry};
    use crate::archive::scan::{hex_sha256, link_target};
    use crate::archive::{tar_of, Format, Platform};

    #[test]
    fn a_cut_compressed_stream_is_named_by_its_compression_and_a_cut_tar_as_tar() {
        use std::io::Write;
        let tar = tar_of(&[("manifest.json", &vec![b' '; 200_000][..])]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut gz = gz.finish().unwrap();
        gz.truncate(gz.len() / 2);
        let (c, r) = crate::archive::decompress(io::Cursor::new(gz)).unwrap();
        let err = format!("{:#}", inspect_stream(r, c, Limits::default()).unwrap_err());
        assert!(err.contains("the gzip stream is truncated"), "{err}");
        assert!(!err.contains("tar stream"), "{err}");
        let cut = tar[..tar.len() / 2].to_vec();
        let err = format!(
            "{:#}",
            inspect_stream(&cut[..], Compression::None, Limits::default()).unwrap_err()
        );
        assert!(err.contains("tar stream"), "{err}");
    }

    #[test]
    fn a_legacy_docker_archive_gives_names_config_digest_and_platform() {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let manifest =
            br#"[{"Config":"abc.json","RepoTags":["demo:1"],"Layers":["l1/layer.tar"]}]"#;
        let tar = tar_of(&[
            ("l1/layer.tar", b"xx"),
            ("abc.json", config),
            ("manifest.json", manifest),
        ]);
        let info = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap();
        assert_eq!(info.format, Format::DockerArchive);
        assert_eq!(info.images[0].names, vec!["docker.io/library/demo:1"]);
        let p = &info.images[0].platforms[0];
        assert_eq!(
            p.config_digest.as_deref(),
            Some(format!("sha256:{}", hex_sha256(config)).as_str())
        );
        assert_eq!(p.platform.as_ref().unwrap().to_string(), "linux/amd64");
        assert_eq!(info.tar_size, tar.len() as u64);
    }

    #[test]
    fn an_index_with_null_manifests_is_read_through_manifest_json() {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cfg = format!("blobs/sha256/{}", hex_sha256(config));
        let layer = format!("blobs/sha256/{}", hex_sha256(b"xx"));
        let manifest =
            format!(r#"[{{"Config":"{cfg}","RepoTags":["demo:1"],"Layers":["{layer}"]}}]"#);
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}"#;
        let tar = tar_of(&[
            (&layer, b"xx"),
            (&cfg, config),
            ("index.json", index),
            ("manifest.json", manifest.as_bytes()),
        ]);
        let info = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap();
        assert_eq!(info.images.len(), 1);
        assert_eq!(info.images[0].names, vec!["docker.io/library/demo:1"]);
        assert!(info.images[0].platforms[0].complete);
    }

    #[test]
    fn a_manifest_naming_an_absent_layer_is_refused_naming_the_layer() {
        let manifest =
            br#"[{"Config":"abc.json","RepoTags":["demo:1"],"Layers":["gone/layer.tar"]}]"#;
        let tar = tar_of(&[("abc.json", b"{}"), ("manifest.json", manifest)]);
        let err = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap_err();
        assert!(err.to_string().contains("gone/layer.tar"), "{err}");
    }

    #[test]
    fn entries_climbing_out_are_refused() {
        let tar = {
            let mut data = tar_of(&[("manifest.json", b"[]")]);
            // tar::Builder refuses '..', so write the name into the header by hand.
            data[..100].fill(0);
            data[..16].copy_from_slice(b"../manifest.json");
            let mut h = tar::Header::from_byte_slice(&data[..512]).clone();
            h.set_cksum();
            data[..512].copy_from_slice(h.as_bytes());
            data
        };
        let err = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap_err();
        assert!(err.to_string().contains(".."), "{err}");
    }

    #[test]
    fn link_targets_are_resolved_lexically_inside_the_archive() {
        let shared = link_target("dc86/layer.tar", "../3245/layer.tar", true).unwrap();
        assert_eq!(shared, "3245/layer.tar");
        assert_eq!(
            link_target("a/b/layer.tar", "./../c/./layer.tar", true).unwrap(),
            "a/c/layer.tar"
        );
        // A hard link names its target from the archive's root.
        assert_eq!(
            link_target("b/layer.tar", "a/layer.tar", false).unwrap(),
            "a/layer.tar"
        );
        for (name, target, symlink) in [
            ("dc86/layer.tar", "../../etc/shadow", true),
            ("layer.tar", "../layer.tar", true),
            ("dc86/layer.tar", "/etc/shadow", true),
            ("dc86/layer.tar", "../x", false),
        ] {
            let err = link_target(name, target, symlink).unwrap_err().to_string();
            assert!(
                err.contains("points outside it"),
                "{name} -> {target}: {err}"
            );
        }
    }

    #[test]
    fn an_oversized_manifest_is_refused_not_buffered() {
        let big = vec![b' '; 2048];
        let tar = tar_of(&[("manifest.json", &big)]);
        let limits = Limits {
            metadata_max: 1024,
            ..Limits::default()
        };
        let err = inspect_stream(&tar[..], Compression::None, limits).unwrap_err();
        assert!(err.to_string().contains("over the"), "{err}");
    }

    #[test]
    fn a_plain_tar_with_no_image_metadata_is_named_for_what_it_is() {
        let tar = tar_of(&[("etc/hosts", b"127.0.0.1 localhost")]);
        let err = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap_err();
        assert!(
            err.to_string().contains("not a docker-archive or OCI"),
            "{err}"
        );
    }

    #[test]
    fn a_multi_platform_index_with_only_one_platforms_blobs_is_usable_for_that_platform() {
        let (tar, cfg_d) = multi_platform_oci();
        let info = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap();
        assert_eq!(info.format, Format::Oci);
        let image = &info.images[0];
        assert_eq!(image.names, vec!["example.com/multi:1"]);
        assert_eq!(image.platforms.len(), 2);
        let amd64 = image
            .for_platform(&Platform::parse("linux/amd64").unwrap())
            .unwrap();
        assert_eq!(amd64.config_digest.as_deref(), Some(cfg_d.as_str()));
        assert!(image
            .for_platform(&Platform::parse("linux/arm64").unwrap())
            .is_none());
    }

    fn refusal(tar: &[u8], limits: Limits) -> String {
        format!(
            "{:#}",
            inspect_stream(tar, Compression::None, limits).unwrap_err()
        )
    }

    #[test]
    fn two_hundred_thousand_repo_tags_are_refused_by_count_before_any_is_parsed() {
        let tags: Vec<String> = (0..200_000).map(|i| format!("chaos.test/t:{i}")).collect();
        let manifest = serde_json::to_vec(&serde_json::json!([
            {"Config": "c.json", "RepoTags": tags, "Layers": []}
        ]))
        .unwrap();
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"diff_ids":[]}}"#;
        let tar = tar_of(&[("c.json", config), ("manifest.json", &manifest)]);
        let err = refusal(&tar, Limits::default());
        assert!(
            err.contains("manifest.json gives the image c.json 200000 names (RepoTags), over the limit of 1000"),
            "{err}"
        );
    }

    #[test]
    fn an_archive_over_the_entry_limit_is_refused_at_the_entry_past_it() {
        let files: Vec<(String, Vec<u8>)> =
            (0..11).map(|i| (format!("f{i}"), Vec::new())).collect();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
        let limits = Limits {
            entries_max: 10,
            ..Limits::default()
        };
        let err = refusal(&tar_of(&refs), limits);
        assert!(err.contains("more than 10 tar entries"), "{err}");
        let refs = &refs[..10];
        let err = refusal(&tar_of(refs), limits);
        assert!(err.contains("not a docker-archive or OCI"), "{err}");
    }

    #[test]
    fn an_index_of_more_images_than_the_limit_is_refused_by_count() {
        let entry = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{man}","size":{man_size}}"#;
        let many = [entry; 11].join(",");
        let tar = oci_archive_with_entry(&many);
        let limits = Limits {
            images_max: 10,
            ..Limits::default()
        };
        let err = refusal(&tar, limits);
        assert!(
            err.contains("index.json gives 11 images, over the limit of 10"),
            "{err}"
        );
        let names = |n: usize| {
            (0..n)
                .map(|i| format!(r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{{man}}","size":{{man_size}},"annotations":{{"io.containerd.image.name":"chaos.test/n:{i}"}}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        let limits = Limits {
            names_max: 3,
            ..Limits::default()
        };
        let err = refusal(&oci_archive_with_entry(&names(4)), limits);
        assert!(
            err.contains("the archive gives 4 image names, over the limit of 3"),
            "{err}"
        );
        assert!(inspect_stream(
            &oci_archive_with_entry(&names(3))[..],
            Compression::None,
            limits
        )
        .is_ok());
    }

    #[test]
    fn an_index_entry_pointing_at_a_layer_is_told_it_is_no_manifest_not_that_it_is_absent() {
        let tar = oci_archive_with_entry(
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{layer}","size":2}"#,
        );
        let err = refusal(&tar, Limits::default());
        assert!(
            err.contains("is in the archive but is no image manifest or index (a blob of 2 bytes"),
            "{err}"
        );
    }

    #[test]
    fn an_index_typed_entry_that_is_a_manifest_is_named_for_what_it_is() {
        let tar = oci_archive_with_entry(
            r#"{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{man}","size":{man_size}}"#,
        );
        let err = refusal(&tar, Limits::default());
        assert!(
            err.contains("is an image manifest, but the descriptor that points to it says application/vnd.oci.image.index.v1+json"),
            "{err}"
        );
    }

    #[test]
    fn a_descriptor_claiming_a_terabyte_for_a_small_blob_is_refused() {
        let tar = oci_archive_with_entry(
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{man}","size":1099511627776}"#,
        );
        let err = refusal(&tar, Limits::default());
        assert!(
            err.contains("is 1099511627776 bytes, but the archive's blob is"),
            "{err}"
        );
        let ok = oci_archive_with_entry(
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{man}","size":{man_size}}"#,
        );
        inspect_stream(&ok[..], Compression::None, Limits::default()).unwrap();
    }

    /// An image whose archive leaves out its lower layer is complete for a runtime that holds
    /// that layer's chain (Docker's classic store), and for none that does not.
    #[test]
    fn a_missing_layer_held_by_its_chain_completes_the_image() {
        let digest = |d: &[u8]| format!("sha256:{}", hex_sha256(d));
        let (lower, upper) = (&b"lower layer"[..], &b"upper layer"[..]);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            digest(lower),
            digest(upper)
        );
        let layer = |d: &[u8]| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}"#,
                digest(d),
                d.len()
            )
        };
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{},{}]}}"#,
            digest(config.as_bytes()),
            config.len(),
            layer(lower),
            layer(upper)
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"io.containerd.image.name":"docker.io/library/demo:1"}}}}]}}"#,
            digest(manifest.as_bytes()),
            manifest.len()
        );
        let blob = |d: &[u8]| format!("blobs/sha256/{}", hex_sha256(d));
        let tar = tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            (&blob(config.as_bytes()), config.as_bytes()),
            (&blob(manifest.as_bytes()), manifest.as_bytes()),
            (&blob(upper), upper),
            ("index.json", index.as_bytes()),
        ]);
        let node = Platform::parse("linux/amd64").unwrap();
        let inspect = || inspect_stream_detailed(&tar[..], Compression::None, Limits::default());
        let chain = crate::digest::chain_ids(&[digest(lower)])[0].clone();
        let mut held = inspect().unwrap();
        assert!(held.info.images[0].for_platform(&node).is_none());
        held.complete_by_chain(&|c| c == chain);
        assert!(held.info.images[0].for_platform(&node).is_some());
        // The upper layer's chain, or the lower's blob digest by another name, is not it.
        let upper_chain = crate::digest::chain_ids(&[digest(lower), digest(upper)])[1].clone();
        let mut other = inspect().unwrap();
        other.complete_by_chain(&|c| c == upper_chain);
        assert!(other.info.images[0].for_platform(&node).is_none());
    }
}
