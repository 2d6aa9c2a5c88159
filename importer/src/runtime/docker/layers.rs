//! Which layers Docker's classic store holds, by chain ID. The store keeps a layer with every
//! layer under it, named by their chain (`digest::chain_ids` of the image's diff IDs), and
//! its load looks each layer's chain up before it opens the layer's file: a layer it holds is
//! never read from the archive. So every prefix of every image's `RootFS.Layers` is a layer
//! an archive need not carry. The containerd image store keeps blobs instead, and is not
//! asked.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Result;
use serde::Deserialize;

use super::{Docker, IMAGE_LIST_MAX, SMALL_ANSWER};

/// What [`Docker::held_chains`] answers: `None` on the containerd image store.
pub(super) type Chains = Arc<Option<BTreeSet<String>>>;

impl Docker {
    /// Which of `chains` the store holds; `None` on the containerd image store.
    pub(super) fn chains_held(&self, chains: &[&str]) -> Result<Option<BTreeSet<String>>> {
        let held = self.held_chains()?;
        let Some(all) = held.as_ref() else {
            return Ok(None);
        };
        Ok(Some(
            chains
                .iter()
                .filter(|c| all.contains(**c))
                .map(|c| c.to_string())
                .collect(),
        ))
    }

    /// [`Docker::layer_chains`], kept until the next load: the check of an archive's
    /// left-out layers and its completion then ask once.
    pub(super) fn held_chains(&self) -> Result<Chains> {
        if let Some(chains) = crate::sync::lock(&self.chains).as_ref() {
            return Ok(chains.clone());
        }
        let chains = Arc::new(self.layer_chains()?);
        *crate::sync::lock(&self.chains) = Some(chains.clone());
        Ok(chains)
    }

    /// Every chain some image's layers give (every image, intermediate ones included): the
    /// layers the store holds; `None` on the containerd image store.
    fn layer_chains(&self) -> Result<Option<BTreeSet<String>>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Summary {
            id: String,
        }
        #[derive(Deserialize)]
        struct Inspect {
            #[serde(rename = "RootFS", default)]
            root_fs: Option<RootFs>,
        }
        #[derive(Deserialize)]
        struct RootFs {
            #[serde(rename = "Layers", default)]
            layers: Vec<String>,
        }
        if self.containerd_store {
            return Ok(None);
        }
        let mut held = BTreeSet::new();
        let images: Vec<Summary> = self.get_json("/images/json?all=1", IMAGE_LIST_MAX)?;
        for image in images {
            // An image removed since the listing is no answer about the others.
            let Ok(inspect) =
                self.get_json::<Inspect>(&format!("/images/{}/json", image.id), SMALL_ANSWER)
            else {
                continue;
            };
            let layers = inspect.root_fs.map(|r| r.layers).unwrap_or_default();
            held.extend(crate::digest::chain_ids(&layers));
        }
        Ok(Some(held))
    }
}
