//! The free space of the filesystems that hold containerd's stores, as seen from here: read
//! by the disk preflight before an archive is sent, and by the upload as it goes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One filesystem's size and free space, and its identity.
pub struct Fs {
    pub path: PathBuf,
    pub id: u64,
    pub total: u64,
    pub avail: u64,
}

pub fn statfs(path: &Path) -> Result<Fs> {
    // containerd 2 makes its stores' directories on first use: until then, the filesystem
    // they will be on is the nearest one that exists.
    let existing = path.ancestors().find(|p| p.exists()).unwrap_or(path);
    let s = nix::sys::statvfs::statvfs(existing).with_context(|| {
        format!(
            "cannot read the free space of {} for the disk preflight (mount containerd's \
                 root there, read-only is enough, or turn the check off with --no-disk-preflight)",
            path.display()
        )
    })?;
    let unit = s.fragment_size() as u64;
    Ok(Fs {
        path: path.to_path_buf(),
        id: s.filesystem_id() as u64,
        total: s.blocks() as u64 * unit,
        avail: s.blocks_available() as u64 * unit,
    })
}

/// Bytes free for containerd at `path`.
pub fn available(path: &Path) -> Option<u64> {
    statfs(path).ok().map(|f| f.avail)
}
