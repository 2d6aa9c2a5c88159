//! What crosses into a machine (a kind node, an edge host) for the units it lacks, planned
//! before anything is sent: an archive as stored, and the images of layouts as one OCI layout
//! under `layout/` of the staging directory, every blob in it once however many of the images
//! use it. Layers the machine's runtime says it holds (`present --holds-from`) are left out
//! and named in that layout's `images.json` as carried, as an upgrade bundle names what an
//! earlier bundle carried: the machine's import asks its runtime for them again before it
//! relies on them, and fails the image by name when one has gone since.
//!
//! A plan is a list of files with their sizes, so that a retry sends only the files that did
//! not fully arrive, and the same plan gives the same bytes each time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use anyhow::{Context, Result};

use super::stream::append;
use crate::bundle::{self, BundleId, BundleIndex, BundleLayout, CarriedBlob};
use crate::source::{BlobRef, Checksum, ImageBlobs, Source, Unit};

/// A layer the machine is asked whether it holds: by its digest (a content store), or by
/// every chain ID it has in the images sent (Docker's layer store, which keeps a layer with
/// the layers under it). One line of `present --holds-from`.
pub struct Ask {
    pub digest: String,
    pub chains: Vec<String>,
}

impl Ask {
    pub fn line(&self) -> String {
        let mut line = self.digest.clone();
        for c in &self.chains {
            line.push(' ');
            line.push_str(c);
        }
        line.push('\n');
        line
    }
}

/// The digests of `asked` that a machine's answer (`present --holds-from`, a digest a line)
/// names; anything else it printed is ignored.
pub fn held_in<'a>(answer: impl Iterator<Item = &'a str>, asked: &[Ask]) -> BTreeSet<String> {
    let said: BTreeSet<&str> = answer.map(str::trim).collect();
    asked
        .iter()
        .filter(|a| said.contains(a.digest.as_str()))
        .map(|a| a.digest.clone())
        .collect()
}

/// What the machine is asked: which of these layers it holds.
pub type Holds<'h> = dyn FnMut(&[Ask]) -> Result<BTreeSet<String>> + 'h;

/// The directory under the staging directory that holds the layout.
pub const LAYOUT_DIR: &str = "layout";

/// One file of the stream, named relative to the staging directory.
pub struct File<'a> {
    pub name: String,
    pub size: u64,
    data: Data<'a>,
}

enum Data<'a> {
    /// An archive, as stored.
    Unit(&'a Unit),
    /// A blob of a layout, checked against its digest as it is read.
    Blob(BlobRef),
    /// A document made here (`index.json`, `images.json`, `oci-layout`, `SHA256SUMS`).
    Bytes(Vec<u8>),
}

/// The blobs of a set of images, each once: documents and layers by digest (a layer with the
/// bundle it is read from), what their bundles left out, and what to ask the machine.
struct Blobs<'i> {
    docs: BTreeMap<&'i str, &'i BlobRef>,
    layers: BTreeMap<&'i str, (&'i BlobRef, &'i BundleId)>,
    carried: BTreeMap<String, CarriedBlob>,
    asks: Vec<Ask>,
}

impl<'i> Blobs<'i> {
    fn of(images: &'i [ImageBlobs]) -> Blobs<'i> {
        let mut blobs = Blobs {
            docs: BTreeMap::new(),
            layers: BTreeMap::new(),
            carried: BTreeMap::new(),
            asks: Vec::new(),
        };
        let mut chains: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for image in images {
            for (digest, chain) in &image.chains {
                chains.entry(digest).or_default().insert(chain);
            }
            for blob in &image.docs {
                blobs.docs.insert(&blob.digest, blob);
            }
            for blob in &image.layers {
                blobs.layers.insert(&blob.digest, (blob, &image.bundle));
            }
            for c in &image.carried {
                blobs.carried.insert(c.digest.clone(), c.clone());
            }
        }
        blobs.asks = blobs
            .layers
            .keys()
            .map(|d| Ask {
                digest: d.to_string(),
                chains: chains
                    .get(d)
                    .into_iter()
                    .flatten()
                    .map(|c| c.to_string())
                    .collect(),
            })
            .collect();
        blobs
    }
}

/// What to send for a set of lacking units.
pub struct Plan<'a> {
    pub files: Vec<File<'a>>,
    /// The units the plan carries (an image of a layout that cannot be read is not among
    /// them: see `left_out`).
    pub units: Vec<&'a Unit>,
    /// Units that cannot be sent, each with why (an image of a layout with a blob missing).
    pub left_out: Vec<(&'a Unit, String)>,
    /// Layers left out because the machine holds them: how many, and their bytes.
    pub held: usize,
    pub held_bytes: u64,
}

impl<'a> Plan<'a> {
    /// The plan for `units` of `source`; `holds` is asked which of the layers of the images
    /// of layouts the machine's runtime holds (not called when there are none).
    pub fn new(
        source: &'a dyn Source,
        units: &[&'a Unit],
        holds: &mut Holds<'_>,
    ) -> Result<Plan<'a>> {
        let mut plan = Plan {
            files: Vec::new(),
            units: Vec::new(),
            left_out: Vec::new(),
            held: 0,
            held_bytes: 0,
        };
        let mut images = Vec::new();
        let mut sums = String::new();
        for &unit in units {
            match source.image_blobs(unit) {
                None => {
                    if let Checksum::Sha256(hex) = source.checksum(unit) {
                        sums.push_str(&format!("{hex}  {}\n", unit.name));
                    }
                    plan.files.push(File {
                        name: unit.name.clone(),
                        size: unit.size,
                        data: Data::Unit(unit),
                    });
                    plan.units.push(unit);
                }
                Some(Ok(blobs)) => {
                    images.push(blobs);
                    plan.units.push(unit);
                }
                Some(Err(e)) => plan.left_out.push((unit, format!("{e:#}"))),
            }
        }
        if !images.is_empty() {
            plan.layout(&images, holds)?;
        }
        if !sums.is_empty() {
            plan.files.push(File {
                name: bundle::SUMS_FILE.into(),
                size: sums.len() as u64,
                data: Data::Bytes(sums.into_bytes()),
            });
        }
        Ok(plan)
    }

    /// The files of the layout that holds `images`: its blobs, each once, but the layers
    /// the machine holds; its `index.json`; its `images.json` naming what was left out.
    fn layout(&mut self, images: &[ImageBlobs], holds: &mut Holds<'_>) -> Result<()> {
        let Blobs {
            docs,
            layers,
            mut carried,
            asks,
        } = Blobs::of(images);
        let held = if asks.is_empty() {
            BTreeSet::new()
        } else {
            holds(&asks)?
        };
        let dir = LAYOUT_DIR;
        self.bytes(
            format!("{dir}/oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        let blob_file = |blob: &BlobRef| File {
            name: format!(
                "{dir}/blobs/sha256/{}",
                blob.digest.trim_start_matches("sha256:")
            ),
            size: blob.size,
            data: Data::Blob(blob.clone()),
        };
        for (digest, (blob, bundle)) in &layers {
            if held.contains(*digest) {
                self.held += 1;
                self.held_bytes += blob.size;
                carried.insert(
                    digest.to_string(),
                    CarriedBlob {
                        chain_ids: Vec::new(),
                        digest: digest.to_string(),
                        size: blob.size,
                        carried_by: (*bundle).clone(),
                    },
                );
            } else if !docs.contains_key(digest) {
                self.files.push(blob_file(blob));
            }
        }
        self.files.extend(docs.values().map(|b| blob_file(b)));
        self.documents(images, carried.into_values().collect())
    }

    /// The layout's `index.json` (the entries of `images`) and `images.json` (naming
    /// `carried`, the layers it does not hold).
    fn documents(&mut self, images: &[ImageBlobs], carried: Vec<CarriedBlob>) -> Result<()> {
        let dir = LAYOUT_DIR;
        let entries: Vec<&serde_json::Value> = images.iter().flat_map(|i| &i.entries).collect();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))?;
        let described = BundleIndex {
            version: bundle::INDEX_VERSION,
            generator: format!("offline-images {}", env!("CARGO_PKG_VERSION")),
            archives: Vec::new(),
            layout: Some(BundleLayout {
                index_json_digest: format!("sha256:{}", bundle::sha256_reader(&index[..])?),
                exported_at: bundle::utc_now(),
                references: Vec::new(),
                builds_on: Vec::new(),
                carried_earlier: carried,
            }),
        };
        self.bytes(format!("{dir}/index.json"), &index);
        self.bytes(
            format!("{dir}/{}", bundle::INDEX_FILE),
            &serde_json::to_vec_pretty(&described)?,
        );
        Ok(())
    }

    fn bytes(&mut self, name: String, data: &[u8]) {
        self.files.push(File {
            name,
            size: data.len() as u64,
            data: Data::Bytes(data.to_vec()),
        });
    }

    /// For the log line that says what is sent: the layers left out, held by the machine's
    /// `runtime`; nothing when none were.
    pub fn held_words(&self, runtime: &str) -> String {
        match self.held {
            0 => String::new(),
            n => format!(
                ", without {n} layers its {runtime} holds ({})",
                crate::units::human_bytes(self.held_bytes)
            ),
        }
    }

    /// Every byte the plan sends, as stored.
    #[cfg(feature = "export")]
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The directories the files are in, parents first (for a receiver that does not make
    /// them: Docker's `PUT /containers/{id}/archive`).
    pub fn dirs(&self) -> Vec<String> {
        let mut dirs = BTreeSet::new();
        for f in &self.files {
            let mut path = f.name.as_str();
            while let Some((parent, _)) = path.rsplit_once('/') {
                dirs.insert(parent.to_string());
                path = parent;
            }
        }
        dirs.into_iter().collect()
    }

    /// Each file for which `send` says yes into `tar`, under `dir`; bytes of file data.
    pub fn send<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        source: &dyn Source,
        dir: &str,
        send: &dyn Fn(&File) -> bool,
    ) -> Result<u64> {
        let mut bytes = 0;
        for file in self.files.iter().filter(|f| send(f)) {
            let mut data: Box<dyn Read + Send + '_> = match &file.data {
                Data::Unit(unit) => source.bytes(unit)?,
                Data::Blob(blob) => blob.data.reader()?,
                Data::Bytes(b) => Box::new(&b[..]),
            };
            let path = if dir.is_empty() || dir == "." {
                file.name.clone()
            } else {
                format!("{dir}/{}", file.name)
            };
            append(tar, &path, file.size, 0o644, &mut data)
                .with_context(|| format!("sending {}", file.name))?;
            bytes += file.size;
        }
        Ok(bytes)
    }
}
