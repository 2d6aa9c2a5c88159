//! `export --since PREVIOUS`: an upgrade that carries only what the site lacks. PREVIOUS is an
//! earlier layout bundle (its directory, or its `images.json`); every layer it carried, and
//! every layer it relied on an earlier bundle for, is left out of the new bundle's `blobs/`
//! and named in its `images.json` (`carried_earlier`) with the bundle that carried it. The
//! JSON documents (indexes, manifests, configs) are always carried: a few KiB per image, and
//! with them the importer plans, names and checks every image without the earlier bundle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bundle::{self, BundleId, CarriedBlob, INDEX_FILE};
use crate::exit;

/// What the site has from PREVIOUS and the bundles it builds on.
#[derive(Debug, Default)]
pub struct Since {
    /// Layer digest → its size and the bundle that carried it.
    carried: HashMap<String, (u64, BundleId)>,
    /// PREVIOUS, then the bundles it builds on.
    pub builds_on: Vec<BundleId>,
    /// PREVIOUS as given, for the log.
    pub path: PathBuf,
}

impl Since {
    /// `--since` as asked (read, and said in the log), or None.
    pub fn asked(previous: Option<&Path>, output: &Path) -> Result<Option<Since>> {
        let Some(previous) = previous else {
            return Ok(None);
        };
        let since = Since::read(previous, output)?;
        eprintln!(
            "offline-images: an upgrade on {} ({}): its {} layer(s) are left out",
            since.path.display(),
            since.builds_on[0],
            since.len()
        );
        Ok(Some(since))
    }

    /// Read PREVIOUS: a bundle directory or its `images.json`. It must be an OCI layout
    /// bundle (`export --format layout`), and not `output` itself.
    pub fn read(previous: &Path, output: &Path) -> Result<Since> {
        let dir = if previous.is_dir() {
            previous.to_path_buf()
        } else if previous.file_name().is_some_and(|n| n == INDEX_FILE) {
            previous.parent().unwrap_or(Path::new(".")).to_path_buf()
        } else {
            return Err(exit::usage(format!(
                "--since {}: give an earlier bundle's directory or its {INDEX_FILE}",
                previous.display()
            )));
        };
        if same_dir(&dir, output) {
            return Err(exit::usage(format!(
                "--since {} is the output directory: write the upgrade to a directory of its \
                 own (the earlier bundle stays as it is, for sites that still need it)",
                previous.display()
            )));
        }
        let index = bundle::read_index(&dir)
            .with_context(|| format!("--since {}", previous.display()))?
            .ok_or_else(|| {
                exit::usage(format!(
                    "--since {}: there is no {INDEX_FILE} in {}",
                    previous.display(),
                    dir.display()
                ))
            })?;
        let layout = index.layout.ok_or_else(|| {
            exit::usage(format!(
                "--since {}: that bundle is made of archives; an upgrade builds on an OCI \
                 layout bundle (export --format layout)",
                previous.display()
            ))
        })?;
        Ok(Since::of(&layout, previous))
    }

    fn of(layout: &bundle::BundleLayout, path: &Path) -> Since {
        let id = layout.id();
        let mut carried: HashMap<String, (u64, BundleId)> = layout
            .carried_earlier
            .iter()
            .map(|c| (c.digest.clone(), (c.size, c.carried_by.clone())))
            .collect();
        for image in layout.references.iter().flat_map(|r| &r.images) {
            for layer in &image.layers {
                carried
                    .entry(layer.digest.clone())
                    .or_insert_with(|| (layer.size, id.clone()));
            }
        }
        let mut builds_on = vec![id];
        builds_on.extend(layout.builds_on.iter().cloned());
        Since {
            carried,
            builds_on,
            path: path.to_path_buf(),
        }
    }

    /// Whether the site has the layer `digest` of `size` bytes from an earlier bundle.
    pub fn has(&self, digest: &str, size: u64) -> bool {
        self.carried.get(digest).is_some_and(|(s, _)| *s == size)
    }

    /// The record of a layer an earlier bundle carried.
    pub fn carried(&self, digest: &str, size: u64) -> Option<CarriedBlob> {
        let (s, by) = self.carried.get(digest).filter(|(s, _)| *s == size)?;
        Some(CarriedBlob {
            chain_ids: Vec::new(),
            digest: digest.to_string(),
            size: *s,
            carried_by: by.clone(),
        })
    }

    /// Layers known from the earlier bundles.
    pub fn len(&self) -> usize {
        self.carried.len()
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{BundleImage, BundleLayer, BundleLayout, BundleSource, LayoutReference};

    fn layout(id: &str, layers: &[(&str, u64)], earlier: Vec<CarriedBlob>) -> BundleLayout {
        let source: BundleSource = serde_json::from_value(
            serde_json::json!({"reference": "r/a:1", "repository": "r/a", "digest": "sha256:m"}),
        )
        .unwrap();
        BundleLayout {
            index_json_digest: id.into(),
            exported_at: "2026-12-01T00:00:00Z".into(),
            references: vec![LayoutReference {
                source,
                images: vec![BundleImage {
                    names: vec![],
                    config_digest: "sha256:c".into(),
                    manifest_digest: None,
                    platform: None,
                    layers: layers
                        .iter()
                        .map(|(d, s)| BundleLayer {
                            digest: (*d).into(),
                            size: *s,
                        })
                        .collect(),
                }],
                artifacts: Vec::new(),
            }],
            builds_on: vec![],
            carried_earlier: earlier,
        }
    }

    #[test]
    fn a_layer_is_carried_by_the_bundle_that_first_carried_it_and_only_at_its_size() {
        let first = layout("sha256:one", &[("sha256:base", 10)], vec![]);
        let s1 = Since::of(&first, Path::new("one"));
        let base = s1.carried("sha256:base", 10).unwrap();
        assert_eq!(base.carried_by.index_json_digest, "sha256:one");
        assert!(!s1.has("sha256:base", 11), "another size is another blob");
        let second = layout(
            "sha256:two",
            &[("sha256:base", 10), ("sha256:new", 5)],
            vec![base],
        );
        let s2 = Since::of(&second, Path::new("two"));
        assert_eq!(
            s2.carried("sha256:base", 10)
                .unwrap()
                .carried_by
                .index_json_digest,
            "sha256:one"
        );
        assert_eq!(
            s2.carried("sha256:new", 5)
                .unwrap()
                .carried_by
                .index_json_digest,
            "sha256:two"
        );
        let chain: Vec<&str> = s2
            .builds_on
            .iter()
            .map(|b| b.index_json_digest.as_str())
            .collect();
        assert_eq!(chain, ["sha256:two"]);
        assert_eq!(s2.len(), 2);
    }
}
