//! One image of a layout (one `index.json` entry) and every blob it reaches: the manifest or
//! index it names, for an index each platform's manifest the layout holds (another platform's,
//! left out of the layout, is passed over as an OCI archive's is), and each manifest's config
//! and layers, which must all be there. Only the JSON documents are read, each checked against
//! its digest and within the archive reader's limits; the layers are only found and sized.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::blobs::{Blob, BlobDirs};
use super::Carried;
use crate::archive::Limits;
use crate::bundle::CarriedBlob;

/// A descriptor, as `index.json` and image indexes give one.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Descriptor {
    pub(crate) digest: String,
    #[serde(default)]
    pub(crate) size: Option<u64>,
    #[serde(default)]
    pub(crate) annotations: std::collections::BTreeMap<String, String>,
}

/// An index or manifest document, as far as the walk needs it.
#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// Every blob one image reaches: the JSON documents, read and checked, then the layers.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    pub(crate) docs: Vec<(Blob, Vec<u8>)>,
    pub(crate) layers: Vec<Blob>,
    /// Layers the layout does not hold because an earlier bundle carried them, as its
    /// `images.json` says (`export --since`): the runtime must have them already.
    pub(crate) carried: Vec<CarriedBlob>,
    /// Each layer's chain ID in each manifest that uses it (`digest::chain_ids`), where its
    /// config gives one diff ID per layer: (layer digest, chain ID).
    pub(crate) chains: Vec<(String, String)>,
    json_total: u64,
}

impl Graph {
    /// The blobs of the image `top` names, found through `dirs`.
    pub(crate) fn of(
        dirs: &BlobDirs,
        top: &Descriptor,
        limits: Limits,
        carried: &Carried,
    ) -> Result<Graph> {
        let mut graph = Graph::default();
        let mut walk = Walk {
            dirs,
            limits,
            chain: Vec::new(),
            carried,
        };
        walk.document(&mut graph, top, None)?;
        Ok(graph)
    }

    /// Every blob, each once: documents first.
    pub(crate) fn blobs(&self) -> impl Iterator<Item = &Blob> {
        self.docs.iter().map(|(b, _)| b).chain(&self.layers)
    }

    fn has(&self, digest: &str) -> bool {
        self.blobs().any(|b| b.digest == digest) || self.carried.iter().any(|c| c.digest == digest)
    }

    fn count(&self) -> usize {
        self.docs.len() + self.layers.len() + self.carried.len()
    }
}

/// The walk from the top descriptor down: the documents on the way (a cycle is refused).
struct Walk<'a> {
    dirs: &'a BlobDirs,
    limits: Limits,
    chain: Vec<String>,
    carried: &'a Carried,
}

impl Walk<'_> {
    /// The blob `desc` names, of the size it says: an error naming it when it is missing.
    fn blob(&self, desc: &Descriptor, what: &str) -> Result<Blob> {
        let blob = self.dirs.find(&desc.digest)?.ok_or_else(|| {
            anyhow!(
                "{what} {} is not in the layout (looked in {})",
                desc.digest,
                self.dirs.looked_in()
            )
        })?;
        check_size(desc, &blob)?;
        Ok(blob)
    }

    /// The manifest or index `desc` names, and what it reaches. `parent` is the index that
    /// names it, None for the image's own entry.
    fn document(
        &mut self,
        graph: &mut Graph,
        desc: &Descriptor,
        parent: Option<&str>,
    ) -> Result<()> {
        if self.chain.contains(&desc.digest) {
            bail!(
                "the image index {} names {}, an index that names it: a cycle, refusing it",
                parent.unwrap_or("index.json"),
                desc.digest
            );
        }
        if self.chain.len() > 4 {
            bail!("the layout's indexes nest more than 4 deep");
        }
        let blob = match (self.dirs.find(&desc.digest)?, parent) {
            (Some(blob), _) => blob,
            // Another platform's manifest, left out of the layout: fine.
            (None, Some(_)) => return Ok(()),
            (None, None) => self.blob(desc, "the image's manifest")?,
        };
        check_size(desc, &blob)?;
        if graph.has(&blob.digest) {
            return Ok(());
        }
        let data = self.json(graph, &blob)?;
        let doc: Document = serde_json::from_slice(&data)
            .map_err(|e| anyhow!("{} is not an image manifest or index: {e}", desc.digest))?;
        // Said before the digest check, which such a document also fails: it is the cause.
        let named = doc.manifests.iter().flatten();
        let named = named.chain(doc.config.iter()).chain(&doc.layers);
        if named.clone().any(|d| d.digest == desc.digest) {
            bail!(
                "the image {} {} names itself: refusing it",
                if doc.manifests.is_some() {
                    "index"
                } else {
                    "manifest"
                },
                desc.digest
            );
        }
        blob.check(&data)?;
        graph.docs.push((blob, data));
        match (doc.manifests, doc.config) {
            (Some(children), None) => {
                if children.len() > self.limits.images_max {
                    bail!(
                        "the image index {} gives {} manifests, over the limit of {} for one \
                         archive: refusing it",
                        desc.digest,
                        children.len(),
                        self.limits.images_max
                    );
                }
                self.chain.push(desc.digest.clone());
                for child in &children {
                    self.document(graph, child, Some(&desc.digest))?;
                }
                self.chain.pop();
                Ok(())
            }
            (None, Some(config)) => self.manifest(graph, &config, &doc.layers),
            _ => bail!(
                "{} is neither an image index (manifests) nor an image manifest (config)",
                desc.digest
            ),
        }
    }

    /// A manifest's config and layers, every one of which must be in the layout.
    fn manifest(
        &self,
        graph: &mut Graph,
        config: &Descriptor,
        layers: &[Descriptor],
    ) -> Result<()> {
        let blob = self.blob(config, "the image config")?;
        if !graph.has(&blob.digest) {
            let data = self.json(graph, &blob)?;
            blob.check(&data)?;
            graph.docs.push((blob.clone(), data));
        }
        let chains = graph
            .docs
            .iter()
            .find(|(b, _)| b.digest == blob.digest)
            .map(|(_, data)| chains_of(data, layers.len()))
            .unwrap_or_default();
        for (layer, chain) in layers.iter().zip(&chains) {
            graph.chains.push((layer.digest.clone(), chain.clone()));
        }
        for layer in layers {
            if graph.has(&layer.digest) {
                continue;
            }
            match (
                self.dirs.find(&layer.digest)?,
                self.carried.get(&layer.digest),
            ) {
                (None, Some(c)) if layer.size.is_none_or(|s| s == c.size) => {
                    let chain_ids = graph
                        .chains
                        .iter()
                        .filter(|(d, _)| *d == layer.digest)
                        .map(|(_, c)| c.clone())
                        .collect();
                    graph.carried.push(CarriedBlob {
                        chain_ids,
                        ..c.clone()
                    });
                }
                _ => {
                    let blob = self.blob(layer, "the layer")?;
                    graph.layers.push(blob);
                }
            }
            if graph.count() as u64 > self.limits.entries_max {
                bail!(
                    "the image has more than {} blobs, over the limit for one archive",
                    self.limits.entries_max
                );
            }
        }
        Ok(())
    }

    /// A JSON document's bytes, within the limits (the caller checks them against the digest).
    fn json(&self, graph: &mut Graph, blob: &Blob) -> Result<Vec<u8>> {
        let data = blob.read_json(self.limits.blob_json_max)?;
        graph.json_total += data.len() as u64;
        if graph.json_total > self.limits.total_json_max {
            bail!(
                "the image's manifests and configs take more than {}: refusing it",
                crate::units::human_bytes(self.limits.total_json_max)
            );
        }
        Ok(data)
    }
}

/// The chain ID of each of a manifest's `layers` layers, from its config's `rootfs.diff_ids`;
/// none when the config does not give one diff ID per layer.
fn chains_of(config: &[u8], layers: usize) -> Vec<String> {
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    match serde_json::from_slice::<Config>(config) {
        Ok(c) if c.rootfs.diff_ids.len() == layers => crate::digest::chain_ids(&c.rootfs.diff_ids),
        _ => Vec::new(),
    }
}

/// A descriptor that says another size than its blob's is refused (the OCI spec requires them
/// equal).
fn check_size(desc: &Descriptor, blob: &Blob) -> Result<()> {
    match desc.size {
        Some(claimed) if claimed != blob.size => bail!(
            "a descriptor says {} is {claimed} bytes, but the layout's blob is {} bytes",
            desc.digest,
            blob.size
        ),
        _ => Ok(()),
    }
}
