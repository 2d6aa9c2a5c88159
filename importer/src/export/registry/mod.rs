//! The `registry` engine: images straight from registries over the OCI distribution API,
//! written as OCI image layouts with the registry's bytes unchanged.
//!
//! Layers, shaped as go-containerregistry's remote package: [`transport`] owns the scheme,
//! authentication and retries; [`fetch`] knows manifests and blobs and reads every blob
//! through [`verify`]; [`cache`] keeps blobs by digest across runs; [`layout`] writes the tar.
//!
//! The layout's `index.json` names the image by every name a pod may use: `repo:tag` and
//! `repo@<digest the reference resolved to>` on the top descriptor (the index of a
//! multi-platform image, kept as the registry served it, with only the chosen platforms'
//! blobs), and `repo@<manifest digest>` for each chosen platform's manifest. containerd's
//! importer creates one image record per entry.

pub mod artifacts;
pub mod auth;
pub mod cache;
pub mod error;
pub mod fetch;
pub mod layout;
pub mod transport;
pub mod upload;
pub mod verify;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::archive::Platform;
use crate::reference::Reference;
use cache::Cache;
use error::RegistryError;
use fetch::{is_index, Fetched, Repo};
use layout::Blob;
use transport::Transport;

pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The engine, for one run.
pub struct Registry {
    transport: Transport,
    /// SRC host -> mirror hosts, tried in order before SRC.
    mirrors: Vec<(String, String)>,
    cache: Cache,
    platforms: Vec<Platform>,
}

/// One platform's image, as exported.
#[derive(Debug, Clone)]
pub struct PlatformExport {
    pub platform: Option<Platform>,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<(String, u64)>,
}

/// What one image's export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The digest the reference resolved to (an index or a manifest).
    pub digest: String,
    /// `Some` when `digest` is an index.
    pub index_digest: Option<String>,
    pub images: Vec<PlatformExport>,
    /// The names `index.json` gives the image.
    pub names: Vec<String>,
    /// Bytes downloaded now, and bytes taken from the cache.
    pub downloaded: u64,
    pub cached: u64,
    /// The registry endpoint the image came from, e.g. `https://mirror:5000`.
    pub source: String,
}

/// One image as fetched: its documents as the registry served them, and its blobs in the
/// cache.
pub struct Image {
    top: Fetched,
    chosen: Vec<Chosen>,
    /// The configs and the layers not already held: (digest, size, where the bytes are).
    pub blobs: Vec<(String, u64, Blob)>,
    pub exported: Exported,
}

impl Image {
    /// The index (when the reference names one) and each chosen manifest: (digest, bytes).
    pub fn documents(&self) -> Vec<(&str, &[u8])> {
        is_index(&self.top.media_type)
            .then_some(&self.top)
            .into_iter()
            .chain(self.chosen.iter().map(|c| &c.manifest))
            .map(|m| (m.digest.as_str(), m.bytes.as_slice()))
            .collect()
    }

    /// The entries of a layout's `index.json` that name this image, one per name.
    pub fn index_entries(&self) -> Result<Vec<serde_json::Value>> {
        index_entries(&self.top, &self.chosen, &self.exported.names)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ManifestDoc {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The endpoint that serves a reference's domain: Docker Hub's API lives at
/// `registry-1.docker.io`.
pub fn endpoint_of(domain: &str) -> String {
    if domain == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        domain.to_string()
    }
}

/// A chosen platform's manifest and its blobs.
struct Chosen {
    descriptor_media_type: String,
    manifest: Fetched,
    doc: ManifestDoc,
    platform: Option<Platform>,
}

impl Registry {
    pub fn new(
        options: transport::Options,
        mirrors: Vec<(String, String)>,
        cache: Cache,
        platforms: Vec<Platform>,
    ) -> Result<Registry> {
        Ok(Registry {
            transport: Transport::new(options)?,
            mirrors,
            cache,
            platforms,
        })
    }

    /// Endpoints to try for `r`, mirrors first.
    fn endpoints(&self, r: &Reference) -> Vec<String> {
        let mut out: Vec<String> = self
            .mirrors
            .iter()
            .filter(|(src, _)| {
                src == &r.domain || (r.domain == "docker.io" && src == "registry-1.docker.io")
            })
            .map(|(_, m)| m.clone())
            .collect();
        out.push(endpoint_of(&r.domain));
        out
    }

    fn repo(&self, endpoint: &str, r: &Reference) -> Result<Repo<'_>> {
        let auth_host = if endpoint == endpoint_of(&r.domain) {
            r.domain.as_str()
        } else {
            endpoint
        };
        let host = self.transport.host(endpoint, auth_host)?;
        Ok(Repo::new(&self.transport, host, &r.path))
    }

    /// Run `f` on the first endpoint (mirrors, then the source) where it succeeds; a mirror's
    /// failure is logged and the next endpoint tried.
    fn on_endpoints<T>(&self, r: &Reference, f: impl Fn(&Repo) -> Result<T>) -> Result<T> {
        let endpoints = self.endpoints(r);
        let last = endpoints.len() - 1;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let attempt = self.repo(endpoint, r).and_then(|repo| f(&repo));
            match attempt {
                Ok(v) => return Ok(v),
                Err(e) if i < last => eprintln!(
                    "offline-images: {r}: the mirror {endpoint} failed ({e:#}); trying {}",
                    endpoints[i + 1]
                ),
                Err(e) => return Err(e),
            }
        }
        unreachable!("the source endpoint is always tried")
    }

    /// The digest `r` resolves to now (for the up-to-date check).
    pub fn resolve(&self, r: &Reference) -> Result<String> {
        let wanted = r
            .digest
            .clone()
            .or_else(|| r.tag.clone())
            .unwrap_or_default();
        self.on_endpoints(r, |repo| Ok(repo.manifest(&wanted)?.digest))
    }

    /// Export `r` as an OCI layout tar into `out`. `on_bytes` hears of every byte downloaded.
    pub fn export(
        &self,
        r: &Reference,
        out: &mut impl Write,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Exported> {
        let image = self.fetch(r, &|_, _| false, on_bytes)?;
        self.write_layout(
            out,
            &image.top,
            &image.chosen,
            &image.exported.names,
            image.blobs,
        )?;
        Ok(image.exported)
    }

    /// Fetch `r`: its index (when there is one) and the chosen platforms' manifests, and
    /// every config and layer into the cache, but for the layers `have(digest, size)` says
    /// the caller already holds (those are neither downloaded nor returned).
    pub fn fetch(
        &self,
        r: &Reference,
        have: &(dyn Fn(&str, u64) -> bool + Sync),
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Image> {
        let wanted = r
            .digest
            .clone()
            .or_else(|| r.tag.clone())
            .unwrap_or_default();
        let (top, chosen, source) = self.on_endpoints(r, |repo| {
            let top = repo.manifest(&wanted)?;
            let chosen = self.choose(repo, &top, r)?;
            Ok((top, chosen, repo.base().to_string()))
        })?;
        let blobs = self.on_endpoints(r, |repo| self.download(repo, &chosen, have, on_bytes))?;
        let (downloaded, cached) = blobs.1;
        let mut chosen = chosen;
        for c in chosen.iter_mut().filter(|c| c.platform.is_none()) {
            // A single-platform image: its config says which platform it is for.
            c.platform = self.config_platform(&c.doc.config.digest);
            if let Some(p) = &c.platform {
                if let Some(want) = self.platforms.iter().find(|w| !p.runs_on(w)) {
                    bail!(
                        "{r} has no image for {want} (it is a single-platform image for {p}, \
                         not a multi-platform index)"
                    );
                }
            }
        }
        let names = names_of(r, &top, &chosen);
        let exported = Exported {
            digest: top.digest.clone(),
            index_digest: is_index(&top.media_type).then(|| top.digest.clone()),
            images: chosen
                .iter()
                .map(|c| PlatformExport {
                    platform: c.platform.clone(),
                    manifest_digest: c.manifest.digest.clone(),
                    config_digest: c.doc.config.digest.clone(),
                    layers: c
                        .doc
                        .layers
                        .iter()
                        .map(|l| (l.digest.clone(), l.size))
                        .collect(),
                })
                .collect(),
            names,
            downloaded,
            cached,
            source,
        };
        Ok(Image {
            top,
            chosen,
            blobs: blobs.0,
            exported,
        })
    }

    /// The layout tar: the index (when there is one), the chosen manifests, then `blobs`.
    fn write_layout(
        &self,
        out: &mut impl Write,
        top: &Fetched,
        chosen: &[Chosen],
        names: &[String],
        blobs: Vec<(String, u64, Blob)>,
    ) -> Result<()> {
        let index = layout_index(top, chosen, names)?;
        let mut files: Vec<(String, u64, Blob)> = Vec::new();
        let docs = is_index(&top.media_type)
            .then_some(top)
            .into_iter()
            .chain(chosen.iter().map(|c| &c.manifest));
        for m in docs {
            files.push((
                m.digest.clone(),
                m.bytes.len() as u64,
                Blob::Bytes(m.bytes.clone()),
            ));
        }
        files.extend(blobs);
        layout::write(out, &index, &files).inspect_err(|e| {
            // A cached blob that fails verification is removed, so the next run downloads it.
            let Some(damaged) = RegistryError::find(e).and_then(RegistryError::damaged_blob) else {
                return;
            };
            let cached = files
                .iter()
                .any(|(digest, _, blob)| matches!(blob, Blob::File(_)) && digest == damaged);
            if cached {
                self.cache.forget(damaged);
            }
        })
    }

    /// Drop a cached blob found damaged, so the next run downloads it again.
    pub fn forget(&self, digest: &str) {
        self.cache.forget(digest);
    }

    /// The platform a cached config states.
    fn config_platform(&self, digest: &str) -> Option<Platform> {
        let data = std::fs::read(self.cache.path(digest)).ok()?;
        let p: Platform = serde_json::from_slice(&data).ok()?;
        (!p.os.is_empty() && !p.architecture.is_empty()).then_some(p)
    }

    /// The manifests of the platforms asked for.
    fn choose(&self, repo: &Repo, top: &Fetched, r: &Reference) -> Result<Vec<Chosen>> {
        if !is_index(&top.media_type) {
            let doc: ManifestDoc = serde_json::from_slice(&top.bytes)
                .with_context(|| format!("the manifest {} of {r} is not valid", top.digest))?;
            return Ok(vec![Chosen {
                descriptor_media_type: top.media_type.clone(),
                manifest: Fetched {
                    bytes: top.bytes.clone(),
                    media_type: top.media_type.clone(),
                    digest: top.digest.clone(),
                },
                doc,
                platform: None,
            }]);
        }
        let index: IndexDoc = serde_json::from_slice(&top.bytes)
            .with_context(|| format!("the index {} of {r} is not valid", top.digest))?;
        let mut chosen: Vec<Chosen> = Vec::new();
        for want in &self.platforms {
            let Some(d) = index.manifests.iter().find(|d| {
                d.platform.as_ref().is_some_and(|p| p.runs_on(want)) && !is_index(&d.media_type)
            }) else {
                let has: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                    .filter(|p| !p.starts_with("unknown"))
                    .collect();
                bail!(
                    "{r} has no image for {want} (its index {} has: {})",
                    top.digest,
                    has.join(", ")
                );
            };
            if chosen.iter().any(|c| c.manifest.digest == d.digest) {
                continue;
            }
            let manifest = repo.manifest(&d.digest)?;
            let doc: ManifestDoc = serde_json::from_slice(&manifest.bytes)
                .with_context(|| format!("the manifest {} of {r} is not valid", d.digest))?;
            chosen.push(Chosen {
                descriptor_media_type: d.media_type.clone(),
                manifest,
                doc,
                platform: d.platform.clone(),
            });
        }
        Ok(chosen)
    }

    /// Every config and layer of the chosen manifests (but the layers `have` says are held),
    /// into the cache (`--jobs` downloads at a
    /// time across images, each blob once per run). Returns the blobs, and the bytes
    /// downloaded and taken from the cache.
    #[allow(clippy::type_complexity)]
    fn download(
        &self,
        repo: &Repo,
        chosen: &[Chosen],
        have: &(dyn Fn(&str, u64) -> bool + Sync),
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(Vec<(String, u64, Blob)>, (u64, u64))> {
        let mut wanted: Vec<(String, u64)> = Vec::new();
        for c in chosen {
            // The config is always fetched (from the cache when it is there): a
            // single-platform image's platform is read from it.
            let layers = c.doc.layers.iter().filter(|l| !have(&l.digest, l.size));
            for d in std::iter::once(&c.doc.config).chain(layers) {
                if !wanted.iter().any(|(w, _)| w == &d.digest) {
                    wanted.push((d.digest.clone(), d.size));
                }
            }
        }
        let downloaded = AtomicU64::new(0);
        let cached = AtomicU64::new(0);
        let results: Vec<Result<(std::path::PathBuf, bool)>> = std::thread::scope(|s| {
            let handles: Vec<_> = wanted
                .iter()
                .map(|(digest, size)| {
                    let (downloaded, cached) = (&downloaded, &cached);
                    s.spawn(move || {
                        let (path, fresh) = self
                            .cache
                            .ensure(digest, *size, |f| repo.blob(digest, *size, f, on_bytes))?;
                        if fresh { downloaded } else { cached }.fetch_add(*size, Ordering::Relaxed);
                        Ok((path, fresh))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a download thread panicked")))
                })
                .collect()
        });
        let mut blobs = Vec::new();
        for ((digest, size), result) in wanted.into_iter().zip(results) {
            let blob = match result? {
                (path, true) => Blob::Verified(path),
                (path, false) => Blob::File(path),
            };
            blobs.push((digest, size, blob));
        }
        Ok((blobs, (downloaded.into_inner(), cached.into_inner())))
    }
}

/// `repo:tag` (when tagged), `repo@<top digest>`, then `repo@<manifest>` per platform.
fn names_of(r: &Reference, top: &Fetched, chosen: &[Chosen]) -> Vec<String> {
    let repo = r.repository();
    let mut names = Vec::new();
    if let Some(t) = &r.tag {
        names.push(format!("{repo}:{t}"));
    }
    names.push(format!("{repo}@{}", top.digest));
    for c in chosen {
        let n = format!("{repo}@{}", c.manifest.digest);
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The layout's `index.json`.
fn layout_index(top: &Fetched, chosen: &[Chosen], names: &[String]) -> Result<Vec<u8>> {
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": fetch::OCI_INDEX,
        "manifests": index_entries(top, chosen, names)?,
    });
    Ok(serde_json::to_vec(&doc)?)
}

/// One descriptor per name: a platform's manifest for `repo@<its digest>`, else the top one,
/// each annotated with the name for containerd and for OCI readers.
fn index_entries(
    top: &Fetched,
    chosen: &[Chosen],
    names: &[String],
) -> Result<Vec<serde_json::Value>> {
    let annotate = |name: &str| {
        serde_json::json!({
            ANNOTATION_CONTAINERD_NAME: name,
            ANNOTATION_REF_NAME: name,
        })
    };
    let mut manifests = Vec::new();
    for name in names {
        let per_platform = chosen.iter().find(|c| {
            name.ends_with(&format!("@{}", c.manifest.digest)) && c.manifest.digest != top.digest
        });
        let entry = match per_platform {
            Some(c) => {
                let mut e = serde_json::json!({
                    "mediaType": c.descriptor_media_type,
                    "digest": c.manifest.digest,
                    "size": c.manifest.bytes.len(),
                    "annotations": annotate(name),
                });
                if let Some(p) = &c.platform {
                    e["platform"] = serde_json::to_value(p)?;
                }
                e
            }
            None => serde_json::json!({
                "mediaType": top.media_type,
                "digest": top.digest,
                "size": top.bytes.len(),
                "annotations": annotate(name),
            }),
        };
        manifests.push(entry);
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_are_fetched_from_its_api_host() {
        let r = Reference::parse("nginx:1.27").unwrap();
        assert_eq!(r.repository(), "docker.io/library/nginx");
        assert_eq!(endpoint_of(&r.domain), "registry-1.docker.io");
        assert_eq!(endpoint_of("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn index_json_names_the_tag_the_index_and_each_platform_manifest() {
        let top = Fetched {
            bytes: b"{}".to_vec(),
            media_type: fetch::OCI_INDEX.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
        };
        let manifest = Fetched {
            bytes: b"{\"config\":{}}".to_vec(),
            media_type: fetch::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", "b".repeat(64)),
        };
        let doc: ManifestDoc = serde_json::from_str(&format!(
            r#"{{"config":{{"digest":"sha256:{}","size":2}},"layers":[]}}"#,
            "c".repeat(64)
        ))
        .unwrap();
        let chosen = vec![Chosen {
            descriptor_media_type: fetch::OCI_MANIFEST.into(),
            manifest,
            doc,
            platform: Platform::parse("linux/amd64"),
        }];
        let r = Reference::parse("reg.example.com/app:1").unwrap();
        let names = names_of(&r, &top, &chosen);
        assert_eq!(
            names,
            vec![
                "reg.example.com/app:1".to_string(),
                format!("reg.example.com/app@sha256:{}", "a".repeat(64)),
                format!("reg.example.com/app@sha256:{}", "b".repeat(64)),
            ]
        );
        let index: serde_json::Value =
            serde_json::from_slice(&layout_index(&top, &chosen, &names).unwrap()).unwrap();
        let m = index["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0]["digest"], top.digest.as_str());
        assert_eq!(m[1]["digest"], top.digest.as_str());
        assert_eq!(m[2]["platform"]["architecture"], "amd64");
        assert_eq!(
            m[2]["annotations"][ANNOTATION_CONTAINERD_NAME],
            names[2].as_str()
        );
    }
}
