//! The content-addressed blob cache, shared across exports: `blobs/sha256/<hex>`, each file
//! complete or absent (written to a temp file, renamed once verified). Within a run, each
//! blob is downloaded once: a second image that needs it waits for the first download.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, Result};

pub struct Cache {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    slots: Slots,
    n: AtomicUsize,
}

/// At most N downloads at once, across images.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn take(&self) -> SlotGuard<'_> {
        let mut free = crate::sync::lock(&self.free);
        while *free == 0 {
            free = self
                .cv
                .wait(free)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *free -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *crate::sync::lock(&self.0.free) += 1;
        self.0.cv.notify_one();
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/offline-images`, else
/// `~/.cache/offline-images`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(Path::new(&d).join("offline-images"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".cache").join("offline-images"))
}

impl Cache {
    pub fn open(dir: &Path, downloads: usize) -> Result<Cache> {
        for sub in ["blobs/sha256", "tmp"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d)
                .with_context(|| format!("cannot create the cache directory {}", d.display()))?;
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            locks: Mutex::new(HashMap::new()),
            slots: Slots {
                free: Mutex::new(downloads.max(1)),
                cv: Condvar::new(),
            },
            n: AtomicUsize::new(0),
        })
    }

    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs").join(digest.replacen(':', "/", 1))
    }

    /// The cached file of `digest`, downloaded by `fetch` (into an empty file) when it is not
    /// there yet. The second value says whether it was downloaded now.
    pub fn ensure(
        &self,
        digest: &str,
        size: u64,
        fetch: impl FnOnce(&mut File) -> Result<()>,
    ) -> Result<(PathBuf, bool)> {
        let lock = crate::sync::lock(&self.locks)
            .entry(digest.to_string())
            .or_default()
            .clone();
        let _held = crate::sync::lock(&lock);
        let path = self.path(digest);
        if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size) {
            return Ok((path, false));
        }
        let _slot = self.slots.take();
        let tmp = self.dir.join("tmp").join(format!(
            "{}.{}.{}",
            digest.replace(':', "-"),
            std::process::id(),
            self.n.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f =
                File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            fetch(&mut f)?;
            // No fsync: the cache can be rebuilt, a blob that a crash left short fails the size
            // check above, and every blob an earlier run cached is verified again as it goes
            // into an archive (a damaged one is removed). The archives themselves are synced.
            drop(f);
            fs::rename(&tmp, &path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| (path, true))
    }

    /// Remove a cached blob found damaged.
    pub fn forget(&self, digest: &str) {
        let _ = fs::remove_file(self.path(digest));
    }
}
