//! Labels of images in containers-storage. podman's images carry only their config's labels,
//! which nothing may change (they are part of the image ID). So the labels the importer sets
//! (managed, archive fingerprint, release) are kept beside the store, in
//! `<graph root>/offline-images/labels.json`: per name, the image it pointed to when labelled,
//! and its labels. A name that now points to another image has no labels. The file is written
//! whole, through a temp file and a rename, under the node lock every importer and prune holds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The config digest of the image the name pointed to.
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

pub struct Labels {
    path: PathBuf,
    guard: Mutex<()>,
}

impl Labels {
    /// The labels kept beside the storage whose graph root is `graph_root` (as this process
    /// sees it).
    pub fn beside(graph_root: &Path) -> Labels {
        Labels {
            path: graph_root.join("offline-images").join("labels.json"),
            guard: Mutex::new(()),
        }
    }

    /// Every name's entry; none when the file is absent.
    pub fn read(&self) -> Result<BTreeMap<String, Entry>> {
        match std::fs::read(&self.path) {
            Ok(data) => serde_json::from_slice(&data)
                .with_context(|| format!("cannot read the labels in {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        }
    }

    /// The labels of `name` while it points to `image`.
    pub fn of(all: &BTreeMap<String, Entry>, name: &str, image: &str) -> BTreeMap<String, String> {
        all.get(name)
            .filter(|e| e.image == image)
            .map(|e| e.labels.clone())
            .unwrap_or_default()
    }

    /// Change the entries under the lock and write the file.
    pub fn update(&self, change: impl FnOnce(&mut BTreeMap<String, Entry>)) -> Result<()> {
        let _held = crate::sync::lock(&self.guard);
        let mut all = self.read()?;
        change(&mut all);
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = dir.join(format!(".labels.json.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&all).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_labels_only_while_it_points_to_the_same_image() {
        let dir = std::env::temp_dir().join(format!("oi-podman-labels-{}", std::process::id()));
        let labels = Labels::beside(&dir);
        assert!(labels.read().unwrap().is_empty());
        labels
            .update(|all| {
                all.insert(
                    "docker.io/a/b:1".into(),
                    Entry {
                        image: "sha256:aa".into(),
                        labels: [("k".to_string(), "v".to_string())].into(),
                    },
                );
            })
            .unwrap();
        let all = labels.read().unwrap();
        assert_eq!(Labels::of(&all, "docker.io/a/b:1", "sha256:aa")["k"], "v");
        assert!(Labels::of(&all, "docker.io/a/b:1", "sha256:bb").is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
