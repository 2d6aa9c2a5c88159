//! The bundle as one OCI image layout (`export --format layout`): `oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`, `images.json` and `SHA256SUMS`. Every blob is stored once whatever
//! number of images use it, byte for byte as the registry served it.
//!
//! Incremental and crash-safe: a blob the layout lacks is written to a hidden temp file beside
//! its place, checked against its digest on the way, synced and renamed; a blob already there
//! (its size right) is not written again. `index.json`, `images.json` and `SHA256SUMS` are
//! replaced together, last, by `bundle::commit`, and only then are the blobs no image of the
//! new index uses removed (unless `--keep-unused`). An export killed at any point leaves the
//! previous bundle whole (its blobs are all still there), and the next run completes a commit
//! it left half done.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::Value;

use super::registry::verify::{Verifier, VerifyingReader};
use super::registry::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use super::settings::BundleFormat;
use super::since::Since;
use crate::archive::human_bytes;
use crate::bundle::{
    self, BundleIndex, BundleLayout, CarriedBlob, LayoutReference, INDEX_FILE, SUMS_FILE,
};
use crate::exit;
use crate::reference::Reference;

/// The `oci-layout` file of every layout.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_JSON: &str = "index.json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The order a commit puts the files in place (`SHA256SUMS` last).
const COMMIT_ORDER: [&str; 3] = [INDEX_JSON, INDEX_FILE, SUMS_FILE];

/// Refuse to mix the two formats in one directory: a layout written over archives (or the
/// reverse) would leave `images.json` describing only half of what is there.
pub fn refuse_mixed(dir: &Path, format: BundleFormat) -> Result<()> {
    let Ok(Some(index)) = bundle::read_index(dir) else {
        return Ok(());
    };
    match format {
        BundleFormat::Layout if !index.archives.is_empty() => Err(exit::usage(format!(
            "{} holds a bundle of archives ({} in images.json); write the OCI layout \
             (--format layout) to a directory of its own",
            dir.display(),
            index.archives.len()
        ))),
        BundleFormat::Archives if index.layout.is_some() => Err(exit::usage(format!(
            "{} holds an OCI layout bundle; export into it with --format layout, or write \
             archives to a directory of their own",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// The layout being written, shared by the workers.
pub struct Layout {
    pub dir: PathBuf,
    blobs: PathBuf,
    /// The references the bundle held before this run, with their `index.json` entries.
    previous: Vec<(LayoutReference, Vec<Value>)>,
    /// This run's references, each with its record and its `index.json` entries.
    done: Mutex<HashMap<String, (LayoutReference, Vec<Value>)>>,
    /// Numbers the temp files, so two workers writing one blob never share one.
    n: AtomicUsize,
    /// `--since`: the layers the site has from earlier bundles, left out of `blobs/`.
    since: Option<Since>,
}

/// What a commit did, for the log.
pub struct Committed {
    pub references: usize,
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs no image of the new index uses: removed, or kept with `--keep-unused`.
    pub unused: usize,
    pub unused_bytes: u64,
    /// Layers the images use that earlier bundles carried (`--since`), left out.
    pub carried: usize,
    pub carried_bytes: u64,
}

impl Layout {
    /// The layout in `dir` (created), with the commit a killed run left completed (or dropped
    /// when it was not complete) and what the bundle held read from `images.json`.
    pub fn open(dir: &Path, since: Option<Since>) -> Result<Layout> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).with_context(|| format!("cannot create {}", blobs.display()))?;
        if bundle::finish_commit(dir, &COMMIT_ORDER)? {
            eprintln!(
                "offline-images: completed the commit of index.json, images.json and SHA256SUMS \
                 an interrupted export left in {}",
                dir.display()
            );
        }
        super::write::remove_stale_temps(&blobs);
        let layout_file = dir.join(OCI_LAYOUT_FILE);
        if fs::read(&layout_file).ok().as_deref() != Some(OCI_LAYOUT) {
            bundle::write_atomic(&layout_file, OCI_LAYOUT)?;
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
            blobs,
            previous: previous_references(dir),
            done: Mutex::new(HashMap::new()),
            n: AtomicUsize::new(0),
            since,
        })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.blobs
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// Whether the layout holds the blob `digest` (a file of its size).
    pub fn has(&self, digest: &str, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Whether the layout holds the layer `digest`, or an earlier bundle carried it
    /// (`--since`): either way this export need not fetch it.
    pub fn has_or_carried(&self, digest: &str, size: u64) -> bool {
        self.has(digest, size) || self.since.as_ref().is_some_and(|s| s.has(digest, size))
    }

    /// Store the blob `digest` of `size` bytes read from `data`, unless the layout has it:
    /// through a temp file, checked against the digest, synced, then renamed. Whether it was
    /// written.
    pub fn put(&self, digest: &str, size: u64, data: impl Read) -> Result<bool> {
        super::registry::verify::check_algorithm(digest)?;
        if self.has(digest, size) {
            return Ok(false);
        }
        let path = self.blob_path(digest);
        let tmp = self.temp_path(digest);
        let result = (|| -> Result<()> {
            let out =
                File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            let mut out = io::BufWriter::with_capacity(1 << 20, out);
            let mut reader =
                VerifyingReader::new(data.take(size + 1), Verifier::new(digest, Some(size)));
            io::copy(&mut reader, &mut out)
                .with_context(|| format!("cannot write the blob {digest} into the layout"))?;
            let out = out
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            out.sync_all()
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            fs::rename(&tmp, &path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        if let Ok(d) = File::open(&self.blobs) {
            let _ = d.sync_all();
        }
        Ok(true)
    }

    /// Store the blob `digest` from the blob cache's file `path`, unless the layout has it:
    /// hard-linked where the cache and the layout share a file system, so its bytes are
    /// written once, not twice; copied (and checked) otherwise. A file `verified` by this
    /// run's download is linked as it is; one an earlier run cached is read and checked
    /// against its digest first. Whether it was stored.
    pub fn put_file(&self, digest: &str, size: u64, path: &Path, verified: bool) -> Result<bool> {
        super::registry::verify::check_algorithm(digest)?;
        if self.has(digest, size) {
            return Ok(false);
        }
        let open = || {
            File::open(path)
                .with_context(|| format!("cannot open the cached blob {}", path.display()))
        };
        if !verified {
            let mut reader =
                VerifyingReader::new(open()?.take(size + 1), Verifier::new(digest, Some(size)));
            io::copy(&mut reader, &mut io::sink())
                .with_context(|| format!("cannot read the cached blob {}", path.display()))?;
        } else if fs::metadata(path).map(|m| m.len()).ok() != Some(size) {
            return self.put(digest, size, open()?);
        }
        let dest = self.blob_path(digest);
        let tmp = self.temp_path(digest);
        if fs::hard_link(path, &tmp).is_err() {
            // Another file system, or one without hard links: a copy.
            return self.put(digest, size, open()?);
        }
        let result = open()
            .and_then(|f| f.sync_all().context("cannot sync the cached blob"))
            .and_then(|()| {
                fs::rename(&tmp, &dest).with_context(|| {
                    format!("cannot rename {} to {}", tmp.display(), dest.display())
                })
            });
        // Also after a rename that succeeded: where another worker put the same cached file
        // in place first, `tmp` and the blob are links to one file, and rename(2) then leaves
        // both names.
        let _ = fs::remove_file(&tmp);
        result?;
        if let Ok(d) = File::open(&self.blobs) {
            let _ = d.sync_all();
        }
        Ok(true)
    }

    /// A hidden temp file beside the blob `digest`'s place, never shared by two workers.
    fn temp_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        self.blobs
            .join(format!(".{hex}-{n}.{}.tmp", std::process::id()))
    }

    /// Record one reference exported this run: its record and its `index.json` entries.
    pub fn record(&self, r: &Reference, record: LayoutReference, entries: Vec<Value>) {
        crate::sync::lock(&self.done).insert(r.to_string(), (record, entries));
    }

    /// Write `index.json`, `images.json` and `SHA256SUMS` for `refs` (in that order; a
    /// reference that failed this run keeps what the bundle held for it), then remove the blobs
    /// no image of the new index uses, unless `keep_unused`.
    pub fn commit(&self, refs: &[Reference], keep_unused: bool) -> Result<Committed> {
        let done = crate::sync::lock(&self.done);
        let mut chosen: Vec<(&LayoutReference, &[Value])> = Vec::new();
        for r in refs {
            let key = r.to_string();
            let kept = done.get(&key).or_else(|| {
                self.previous
                    .iter()
                    .find(|(p, _)| p.source.reference == key)
            });
            if let Some((record, entries)) = kept {
                chosen.push((record, entries));
            }
        }
        for (p, _) in &self.previous {
            if !refs.iter().any(|r| r.to_string() == p.source.reference) {
                eprintln!(
                    "offline-images: {} is no longer in the layout: this export did not ask for it",
                    p.source.reference
                );
            }
        }
        let index_json = index_json(chosen.iter().flat_map(|(_, e)| e.iter()))?;
        let carried_earlier = self.carried_earlier(&chosen);
        let index = BundleIndex {
            layout: Some(BundleLayout {
                index_json_digest: format!("sha256:{}", bundle::sha256_reader(&index_json[..])?),
                exported_at: bundle::utc_now(),
                references: chosen.iter().map(|(r, _)| (*r).clone()).collect(),
                builds_on: match &self.since {
                    Some(s) if !carried_earlier.is_empty() => s.builds_on.clone(),
                    _ => Vec::new(),
                },
                carried_earlier,
            }),
            ..BundleIndex::new()
        };
        let mut images_json = serde_json::to_vec_pretty(&index)?;
        images_json.push(b'\n');
        let mut sums = std::collections::BTreeMap::new();
        for (name, data) in [
            (INDEX_JSON, &index_json[..]),
            (INDEX_FILE, &images_json[..]),
            (OCI_LAYOUT_FILE, OCI_LAYOUT),
        ] {
            sums.insert(name.to_string(), bundle::sha256_reader(data)?);
        }
        let sums_text: String = sums
            .iter()
            .map(|(file, hex)| format!("{hex}  {file}\n"))
            .collect();
        bundle::commit(
            &self.dir,
            &[
                (INDEX_JSON, &index_json),
                (INDEX_FILE, &images_json),
                (SUMS_FILE, sums_text.as_bytes()),
            ],
        )?;
        let used: BTreeSet<&str> = chosen.iter().flat_map(|(r, _)| r.blobs()).collect();
        let mut committed = self.sweep(&used, keep_unused, chosen.len())?;
        if let Some(l) = &index.layout {
            committed.carried = l.carried_earlier.len();
            committed.carried_bytes = l.carried_earlier.iter().map(|c| c.size).sum();
        }
        Ok(committed)
    }

    /// The layers the chosen references use that `blobs/` lacks and an earlier bundle
    /// carried, each once, by digest.
    fn carried_earlier(&self, chosen: &[(&LayoutReference, &[Value])]) -> Vec<CarriedBlob> {
        let Some(since) = &self.since else {
            return Vec::new();
        };
        let mut out: BTreeMap<&str, CarriedBlob> = BTreeMap::new();
        let layers = chosen
            .iter()
            .flat_map(|(r, _)| &r.images)
            .flat_map(|i| &i.layers);
        for layer in layers {
            if self.has(&layer.digest, layer.size) || out.contains_key(layer.digest.as_str()) {
                continue;
            }
            if let Some(c) = since.carried(&layer.digest, layer.size) {
                out.insert(&layer.digest, c);
            }
        }
        out.into_values().collect()
    }

    /// Count the blobs the new index uses, and remove (or, `keep`, count) the others.
    fn sweep(&self, used: &BTreeSet<&str>, keep: bool, references: usize) -> Result<Committed> {
        let mut c = Committed {
            references,
            blobs: 0,
            bytes: 0,
            unused: 0,
            unused_bytes: 0,
            carried: 0,
            carried_bytes: 0,
        };
        let entries = fs::read_dir(&self.blobs)
            .with_context(|| format!("cannot read {}", self.blobs.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let size = entry.metadata().map_or(0, |m| m.len());
            if used.contains(format!("sha256:{name}").as_str()) {
                c.blobs += 1;
                c.bytes += size;
                continue;
            }
            if !keep {
                fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
            c.unused += 1;
            c.unused_bytes += size;
        }
        Ok(c)
    }
}

impl Committed {
    /// The closing lines of the commit.
    pub fn log(&self, dir: &Path, keep_unused: bool) {
        eprintln!(
            "offline-images: {} committed: {} reference(s), {} blob(s) ({})",
            dir.display(),
            self.references,
            self.blobs,
            human_bytes(self.bytes)
        );
        if self.carried > 0 {
            eprintln!(
                "offline-images: {} layer(s) ({}) left out: earlier bundles carried them \
                 (images.json names each, and the bundle that carried it)",
                self.carried,
                human_bytes(self.carried_bytes)
            );
        }
        if self.unused > 0 {
            let what = if keep_unused {
                "kept (--keep-unused)"
            } else {
                "removed"
            };
            eprintln!(
                "offline-images: {} blob(s) no image of the layout uses ({}) {what}",
                self.unused,
                human_bytes(self.unused_bytes)
            );
        }
    }
}

/// The new `index.json`: every entry once per name (the first wins).
fn index_json<'a>(entries: impl Iterator<Item = &'a Value>) -> Result<Vec<u8>> {
    let mut seen = BTreeSet::new();
    let manifests: Vec<&Value> = entries
        .filter(|e| seen.insert(entry_name(e).unwrap_or_default().to_string()))
        .collect();
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let mut data = serde_json::to_vec_pretty(&doc)?;
    data.push(b'\n');
    Ok(data)
}

fn entry_name(entry: &Value) -> Option<&str> {
    let a = &entry["annotations"];
    a[ANNOTATION_REF_NAME]
        .as_str()
        .or_else(|| a[ANNOTATION_CONTAINERD_NAME].as_str())
}

/// What the bundle in `dir` held: each reference `images.json` records, with the entries of
/// `index.json` that name it. Nothing when either is missing or unreadable.
fn previous_references(dir: &Path) -> Vec<(LayoutReference, Vec<Value>)> {
    let Ok(Some(index)) = bundle::read_index(dir) else {
        return Vec::new();
    };
    let Some(layout) = index.layout else {
        return Vec::new();
    };
    let entries: Vec<Value> = fs::read(dir.join(INDEX_JSON))
        .ok()
        .and_then(|d| serde_json::from_slice::<Value>(&d).ok())
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default();
    layout
        .references
        .into_iter()
        .map(|r| {
            let mine: Vec<Value> = entries
                .iter()
                .filter(|e| {
                    entry_name(e).is_some_and(|n| {
                        r.source.refs.iter().any(|x| x == n)
                            || r.artifacts.iter().any(|a| a.reference == n)
                    })
                })
                .cloned()
                .collect();
            (r, mine)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oi-layout-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_blob_is_stored_once_checked_against_its_digest_and_a_wrong_one_leaves_nothing() {
        let dir = temp_dir("put");
        let layout = Layout::open(&dir, None).unwrap();
        assert_eq!(fs::read(dir.join(OCI_LAYOUT_FILE)).unwrap(), OCI_LAYOUT);
        let digest = format!("sha256:{}", bundle::sha256_reader(&b"abc"[..]).unwrap());
        assert!(layout.put(&digest, 3, &b"abc"[..]).unwrap());
        assert!(layout.has(&digest, 3));
        assert!(
            !layout.put(&digest, 3, &b"abc"[..]).unwrap(),
            "written twice"
        );
        let other = format!("sha256:{}", "0".repeat(64));
        assert!(layout.put(&other, 3, &b"abd"[..]).is_err());
        let names: Vec<String> = fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [digest.trim_start_matches("sha256:")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A cached blob goes in as a hard link (its bytes written once), after a check of its
    /// digest unless this run's download verified it; a damaged one leaves nothing.
    #[test]
    fn a_cached_blob_is_linked_in_once_checked_and_a_damaged_one_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = temp_dir("link");
        let cache = dir.join("cache");
        fs::create_dir_all(&cache).unwrap();
        let layout = Layout::open(&dir.join("layout"), None).unwrap();
        let good = cache.join("good");
        fs::write(&good, b"abc").unwrap();
        let digest = format!("sha256:{}", bundle::sha256_reader(&b"abc"[..]).unwrap());
        assert!(layout.put_file(&digest, 3, &good, false).unwrap());
        let stored = layout.blob_path(&digest);
        assert_eq!(
            fs::metadata(&stored).unwrap().ino(),
            fs::metadata(&good).unwrap().ino()
        );
        assert!(
            !layout.put_file(&digest, 3, &good, true).unwrap(),
            "stored twice"
        );
        let bad = cache.join("bad");
        fs::write(&bad, b"abd").unwrap();
        let other = format!("sha256:{}", bundle::sha256_reader(&b"xyz"[..]).unwrap());
        assert!(layout.put_file(&other, 3, &bad, false).is_err());
        assert!(!layout.has(&other, 3));
        let names: Vec<String> = fs::read_dir(dir.join("layout/blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [digest.trim_start_matches("sha256:")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_name_is_one_entry_of_index_json() {
        let entry = |name: &str, d: char| {
            serde_json::json!({
                "mediaType": "m", "digest": format!("sha256:{}", d.to_string().repeat(64)),
                "size": 1, "annotations": {ANNOTATION_REF_NAME: name, ANNOTATION_CONTAINERD_NAME: name},
            })
        };
        let entries = [
            entry("r/a:1", 'a'),
            entry("r/a@x", 'a'),
            entry("r/a@x", 'b'),
        ];
        let doc: Value = serde_json::from_slice(&index_json(entries.iter()).unwrap()).unwrap();
        let m = doc["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1]["digest"], entries[1]["digest"]);
        assert_eq!(doc["schemaVersion"], 2);
    }
}
