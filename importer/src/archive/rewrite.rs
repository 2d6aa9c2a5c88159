//! The archive described anew for a loader that reads only one of its layouts, from what the
//! one pass kept: a docker-archive `manifest.json` for an OCI layout (Docker 20.10), one whose
//! `RepoTags` Docker takes, and an `index.json` that names every image in full (ctr, and
//! Docker's containerd image store). The entries are appended to the stream before its
//! end-of-archive blocks; the last of a name is the one those loaders read.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::documents::{blob_path, parse, Descriptor, Manifest, ANNOTATION_CONTAINERD_NAME};
use super::inspect::Inspected;
use super::scan::is_blob_name;
use super::Platform;
use crate::reference;

impl Inspected {
    /// A docker-archive `manifest.json` describing this OCI layout, for a loader that reads only
    /// docker-archives: one entry per image, for the manifest of `node`'s platform, whose
    /// `Config` and `Layers` are the blob files already in the archive. Images with no complete
    /// manifest for `node` are left out (the import names them, for every backend); an error
    /// when none is left.
    pub fn docker_manifest_for(&self, node: &Platform) -> Result<Vec<u8>> {
        let mut entries = Vec::new();
        for image in &self.info.images {
            let Some(chosen) = image.for_platform(node) else {
                continue;
            };
            let manifest_digest = chosen.manifest_digest.as_deref().ok_or_else(|| {
                anyhow!(
                    "{} has no image manifest in this archive",
                    image.display_names()
                )
            })?;
            let path = blob_path(manifest_digest);
            let data = self
                .scan
                .json_of(&path)
                .ok_or_else(|| anyhow!("the manifest {manifest_digest} is not in the archive"))?;
            let manifest: Manifest = parse(&path, data)?;
            // A tag names an image in Docker; a digest reference cannot be a RepoTag.
            let tags: Vec<String> = image
                .names
                .iter()
                .filter(|n| reference::Reference::parse(n).is_ok_and(|r| r.digest.is_none()))
                .cloned()
                .collect();
            entries.push(serde_json::json!({
                "Config": blob_path(&manifest.config.digest),
                "RepoTags": if tags.is_empty() { serde_json::Value::Null } else { tags.into() },
                "Layers": manifest.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
            }));
        }
        if entries.is_empty() {
            bail!("{}", self.info.no_image_for(node));
        }
        serde_json::to_vec(&entries).map_err(|e| anyhow!("manifest.json: {e}"))
    }
}

impl Inspected {
    /// A `manifest.json` that Docker loads, when the archive's own has a `RepoTags` entry that
    /// Docker refuses ("invalid tag"): a bare name such as `test_image_2` becomes its
    /// normalised form with `:latest` (the name containerd gives it), and a digest reference,
    /// which cannot be a tag, is left out. None when the archive's own will do.
    pub fn docker_manifest_retagged(&self) -> Result<Option<Vec<u8>>> {
        let Some(data) = self.scan.json_of("manifest.json") else {
            return Ok(None);
        };
        let mut entries: Vec<serde_json::Value> = parse("manifest.json", data)?;
        let mut changed = false;
        for entry in &mut entries {
            let Some(tags) = entry.get_mut("RepoTags").and_then(|t| t.as_array_mut()) else {
                continue;
            };
            let mut fixed = Vec::new();
            for tag in tags.iter() {
                let raw = tag.as_str().unwrap_or_default();
                if docker_takes_repo_tag(raw) {
                    fixed.push(tag.clone());
                    continue;
                }
                changed = true;
                if let Ok(r) = reference::Reference::parse(raw) {
                    if r.digest.is_none() {
                        fixed.push(r.to_string().into());
                    }
                }
            }
            *tags = fixed;
        }
        if !changed {
            return Ok(None);
        }
        serde_json::to_vec(&entries)
            .map(Some)
            .map_err(|e| anyhow!("manifest.json: {e}"))
    }
}

impl Inspected {
    /// An `index.json` for a loader that names images from the index alone (ctr, and Docker's
    /// containerd image store), when the archive's own would not give them the names this
    /// reading gives: one entry per name with that name as `io.containerd.image.name`.
    /// - An index with no manifests (`"manifests": null` beside a valid `manifest.json`, as
    ///   Docker 25+ can write): the entries point to each named image's OCI manifest blob.
    /// - An index whose entries carry a short name (`oi/app:1` as a `ref.name`, as skopeo
    ///   writes it), or none beside the names `manifest.json` gives: the same entries, named.
    ///
    /// The last `index.json` of a tar stream is the one those loaders read. None when the
    /// archive's own index will do.
    pub fn oci_index_for_containerd(&self) -> Result<Option<Vec<u8>>> {
        let Some(index) = self.scan.json_of("index.json") else {
            return Ok(None);
        };
        let doc: serde_json::Value = parse("index.json", index)?;
        let entries = doc["manifests"].as_array().cloned().unwrap_or_default();
        let manifests = if entries.is_empty() {
            if !self.has_docker_manifest {
                return Ok(None);
            }
            self.entries_from_docker_manifest()
        } else {
            match self.renamed_entries(&entries) {
                Some(m) => m,
                None => return Ok(None),
            }
        };
        if manifests.is_empty() {
            return Ok(None);
        }
        let mut out = doc.clone();
        out["manifests"] = manifests.into();
        if out.get("schemaVersion").is_none() {
            out["schemaVersion"] = 2.into();
        }
        serde_json::to_vec(&out)
            .map(Some)
            .map_err(|e| anyhow!("index.json: {e}"))
    }

    /// The index's entries with each image's names as `io.containerd.image.name`, one entry per
    /// name; None when every entry already carries exactly its one name.
    fn renamed_entries(&self, entries: &[serde_json::Value]) -> Option<Vec<serde_json::Value>> {
        let mut changed = false;
        let mut out = Vec::new();
        for (entry, image) in entries.iter().zip(&self.info.images) {
            let given = entry["annotations"][ANNOTATION_CONTAINERD_NAME].as_str();
            if image.names.is_empty() {
                out.push(entry.clone());
                continue;
            }
            if image.names.len() != 1 || given != Some(image.names[0].as_str()) {
                changed = true;
            }
            for name in &image.names {
                let mut e = entry.clone();
                if !e["annotations"].is_object() {
                    e["annotations"] = serde_json::json!({});
                }
                e["annotations"][ANNOTATION_CONTAINERD_NAME] = name.as_str().into();
                out.push(e);
            }
        }
        changed.then_some(out)
    }

    /// Index entries for the images `manifest.json` names: each points to the OCI manifest
    /// blob of the image's config.
    fn entries_from_docker_manifest(&self) -> Vec<serde_json::Value> {
        let mut manifests = Vec::new();
        for image in &self.info.images {
            let Some(config) = image.platforms.iter().find_map(|p| p.config_digest.clone()) else {
                continue;
            };
            let Some((path, media_type)) = self.manifest_blob_of(&config) else {
                continue;
            };
            let desc = |name: Option<&String>| {
                let mut d = serde_json::json!({
                    "mediaType": media_type,
                    "digest": path.trim_start_matches("blobs/").replacen('/', ":", 1),
                    "size": self.scan.size_of(&path).unwrap_or(0),
                });
                if let Some(n) = name {
                    d["annotations"] = serde_json::json!({ ANNOTATION_CONTAINERD_NAME: n });
                }
                d
            };
            if image.names.is_empty() {
                manifests.push(desc(None));
            }
            manifests.extend(image.names.iter().map(|n| desc(Some(n))));
        }
        manifests
    }

    /// The blob path and media type of the image manifest whose config is `config`.
    fn manifest_blob_of(&self, config: &str) -> Option<(String, String)> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(rename = "mediaType", default)]
            media_type: String,
            config: Descriptor,
        }
        self.scan.json.iter().find_map(|(path, data)| {
            let doc: Doc = serde_json::from_slice(data).ok()?;
            (is_blob_name(path) && doc.config.digest == config).then(|| {
                let t = if doc.media_type.is_empty() {
                    "application/vnd.oci.image.manifest.v1+json".to_string()
                } else {
                    doc.media_type
                };
                (path.clone(), t)
            })
        })
    }
}

impl Inspected {
    /// An `index.json` for `podman load`, which loads an OCI archive only when its index has
    /// one entry ("more than one image in oci, choose an image") and names the image from
    /// that entry's `org.opencontainers.image.ref.name` (a short name as `localhost/…`): the
    /// entry of image `which` of this reading (its manifest or index, so the digest the
    /// registry gave it is kept), named by its first tag in full. None when the archive has
    /// no OCI index with entries (a docker-archive, which podman loads whole).
    pub fn oci_index_for_podman(&self, which: usize) -> Result<Option<Vec<u8>>> {
        let Some(index) = self.scan.json_of("index.json") else {
            return Ok(None);
        };
        let doc: serde_json::Value = parse("index.json", index)?;
        let entries = doc["manifests"].as_array().cloned().unwrap_or_default();
        let Some(image) = self.info.images.get(which) else {
            return Ok(None);
        };
        let Some(digest) = image.digest.as_deref() else {
            return Ok(None);
        };
        let Some(entry) = entries
            .iter()
            .find(|e| e["digest"].as_str() == Some(digest))
        else {
            return Ok(None);
        };
        let mut entry = entry.clone();
        let tag = image
            .names
            .iter()
            .find(|n| reference::Reference::parse(n).is_ok_and(|r| r.digest.is_none()));
        entry["annotations"] = match tag {
            Some(t) => serde_json::json!({ "org.opencontainers.image.ref.name": t }),
            None => serde_json::json!({}),
        };
        let out = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry],
        });
        serde_json::to_vec(&out)
            .map(Some)
            .map_err(|e| anyhow!("index.json: {e}"))
    }
}

/// Docker loads a `RepoTags` entry only when it names a tag: `name:tag`, not `name` alone nor
/// `name@digest`.
fn docker_takes_repo_tag(raw: &str) -> bool {
    let last = raw.rsplit('/').next().unwrap_or(raw);
    !raw.contains('@') && last.contains(':') && reference::Reference::parse(raw).is_ok()
}

#[cfg(test)]
mod tests {
    use crate::archive::fixtures::multi_platform_oci;
    use crate::archive::{inspect_stream_detailed, tar_of, Compression, Limits, Platform};

    #[test]
    fn a_bare_repo_tag_is_given_latest_for_docker_and_the_rest_left_as_they_are() {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let tags = |t: &str| {
            let manifest =
                format!(r#"[{{"Config":"c.json","RepoTags":{t},"Layers":["l/layer.tar"]}}]"#);
            let tar = tar_of(&[
                ("l/layer.tar", b"xx"),
                ("c.json", config),
                ("manifest.json", manifest.as_bytes()),
            ]);
            let i =
                inspect_stream_detailed(&tar[..], Compression::None, Limits::default()).unwrap();
            i.docker_manifest_retagged().unwrap().map(|m| {
                serde_json::from_slice::<serde_json::Value>(&m).unwrap()[0]["RepoTags"].clone()
            })
        };
        assert_eq!(
            tags(r#"["test_image_2", "oi/app:1"]"#),
            Some(serde_json::json!([
                "docker.io/library/test_image_2:latest",
                "oi/app:1"
            ]))
        );
        assert_eq!(
            tags(r#"["localhost:5000/app"]"#),
            Some(serde_json::json!(["localhost:5000/app:latest"]))
        );
        assert_eq!(tags(r#"["oi/app:1", "registry:5000/app:2"]"#), None);
        assert_eq!(tags("null"), None);
    }

    #[test]
    fn an_oci_layout_is_described_as_a_docker_archive_for_its_platform_alone() {
        let (tar, cfg_d) = multi_platform_oci();
        let layer = format!("blobs/sha256/{}", crate::archive::scan::hex_sha256(b"xx"));
        // The same archive described as a docker-archive, for a loader that reads only those.
        let inspected =
            inspect_stream_detailed(&tar[..], Compression::None, Limits::default()).unwrap();
        assert!(!inspected.has_docker_manifest);
        assert_eq!(inspected.end_of_entries, tar.len() as u64 - 1024);
        let json = inspected
            .docker_manifest_for(&Platform::parse("linux/amd64").unwrap())
            .unwrap();
        let m: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            m,
            serde_json::json!([{
                "Config": cfg_d.replacen("sha256:", "blobs/sha256/", 1),
                "RepoTags": ["example.com/multi:1"],
                "Layers": [layer],
            }])
        );
        let err = inspected
            .docker_manifest_for(&Platform::parse("linux/arm64").unwrap())
            .unwrap_err();
        assert!(
            err.to_string()
                == "the archive holds no complete image for this node's platform linux/arm64 \
                    (it has: linux/amd64)",
            "{err}"
        );
    }
}
