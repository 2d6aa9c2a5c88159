//! The one pass over an archive's tar entries: every file's size, every link, and the small
//! JSON documents kept (each under a cap, a blob's checked against its digest). Entry names
//! are normalised, and names or links that would point outside the archive are refused.

use std::collections::HashMap;
use std::io::{self, Read};

use anyhow::{anyhow, bail, Result};
use sha2::{Digest, Sha256};

use super::limits::Limits;
use crate::stop::stop_signal;
use crate::units::human_bytes;

/// A reader of the archive's files, called during the one pass over the tar stream (for a
/// runtime that stores blobs as they stream by).
pub trait EntrySink {
    /// A regular file. `data` is its content: in memory when the scan keeps it (small JSON
    /// candidates), else a stream the sink may read (what it leaves unread is skipped).
    fn file(&mut self, name: &str, size: u64, data: EntryData<'_>) -> Result<()>;
    /// A symlink or hard link `name` to the file `target` (both normalised archive names).
    fn link(&mut self, _name: &str, _target: &str) {}
}

/// The content of one tar entry, as [`EntrySink::file`] gets it.
pub enum EntryData<'a> {
    Bytes(&'a [u8]),
    Stream(&'a mut dyn Read),
}

const METADATA_FILES: &[&str] = &["manifest.json", "index.json", "oci-layout", "repositories"];

/// What one pass over the tar entries collected.
#[derive(Default)]
pub(super) struct Scan {
    /// Regular files: name -> size.
    pub(super) files: HashMap<String, u64>,
    /// Symlinks and hard links: name -> target name.
    pub(super) links: HashMap<String, String>,
    /// Small JSON documents kept for resolving: name -> bytes.
    pub(super) json: HashMap<String, Vec<u8>>,
    pub(super) json_total: u64,
    /// Where the last entry's data, padded to a whole block, ends.
    pub(super) end_of_entries: u64,
}

impl Scan {
    /// Follow links (a few hops at most) to the regular file a name stands for.
    pub(super) fn resolve_name<'a>(&'a self, mut name: &'a str) -> Option<&'a str> {
        for _ in 0..8 {
            if self.files.contains_key(name) {
                return Some(name);
            }
            name = self.links.get(name)?;
        }
        None
    }

    pub(super) fn size_of(&self, name: &str) -> Option<u64> {
        self.resolve_name(name)
            .and_then(|n| self.files.get(n).copied())
    }

    pub(super) fn json_of(&self, name: &str) -> Option<&[u8]> {
        self.resolve_name(name)
            .and_then(|n| self.json.get(n))
            .map(Vec::as_slice)
    }
}

pub(super) fn tar_error(e: io::Error) -> anyhow::Error {
    // Decompression errors already say what is wrong; tar's own need the word "tar".
    if super::open::is_decompress_error(&e) {
        anyhow!("{e}")
    } else {
        anyhow!("the tar stream is corrupt or truncated: {e}")
    }
}

pub(super) fn scan<R: Read>(
    entries: tar::Entries<'_, R>,
    limits: Limits,
    sink: &mut dyn EntrySink,
) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut count: u64 = 0;
    for entry in entries {
        if let Some(sig) = stop_signal() {
            bail!("aborted by {sig}");
        }
        count += 1;
        if count > limits.entries_max {
            bail!(
                "the archive has more than {} tar entries, over the limit for one archive: \
                 this is not an image archive (or one to split)",
                limits.entries_max
            );
        }
        let mut entry = entry.map_err(tar_error)?;
        scan.end_of_entries = entry.raw_file_position() + entry.size().div_ceil(512) * 512;
        let name = normalize_name(&entry.path_bytes())?;
        if name.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| anyhow!("link {name:?} has no target"))?;
            let target = String::from_utf8_lossy(&target).into_owned();
            let target = link_target(&name, &target, kind.is_symlink())?;
            sink.link(&name, &target);
            scan.links.insert(name, target);
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            continue;
        }
        let size = entry.size();
        scan.files.insert(name.clone(), size);
        let is_metadata = METADATA_FILES.contains(&name.as_str());
        let may_be_json = is_metadata || is_blob_name(&name) || is_legacy_config_name(&name);
        if !may_be_json {
            sink.file(&name, size, EntryData::Stream(&mut entry))?;
            continue;
        }
        let cap = if is_metadata {
            limits.metadata_max
        } else {
            limits.blob_json_max
        };
        if size > cap {
            if is_metadata {
                bail!(
                    "{name} is {} long, over the {} limit for image metadata: this is not an image archive's {name}",
                    human_bytes(size),
                    human_bytes(cap)
                );
            }
            sink.file(&name, size, EntryData::Stream(&mut entry))?;
            continue;
        }
        let mut data = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut data)
            .map_err(tar_error)?;
        if (data.len() as u64) < size {
            bail!(
                "the tar stream is truncated: {name} has {} of its {size} bytes",
                data.len()
            );
        }
        sink.file(&name, size, EntryData::Bytes(&data))?;
        scan.keep_json(name, data, limits)?;
    }
    Ok(scan)
}

impl Scan {
    /// Keep a small entry that is JSON (a blob's checked against its name), within the cap on
    /// all JSON of one archive; anything else read whole is dropped.
    fn keep_json(&mut self, name: String, data: Vec<u8>, limits: Limits) -> Result<()> {
        let first = data.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') && first != Some(&b'[') {
            return Ok(());
        }
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let actual = hex_sha256(&data);
            if actual != hex {
                bail!("blob sha256:{hex} is corrupt: its content hashes to sha256:{actual}");
            }
        }
        self.json_total += data.len() as u64;
        if self.json_total > limits.total_json_max {
            bail!(
                "the archive holds more than {} of JSON metadata: refusing it",
                human_bytes(limits.total_json_max)
            );
        }
        self.json.insert(name, data);
        Ok(())
    }
}

/// `./a/b` -> `a/b`. Absolute names and `..` are refused: no image archive has them.
pub(super) fn normalize_name(raw: &[u8]) -> Result<String> {
    let s = String::from_utf8_lossy(raw);
    if s.starts_with('/') {
        bail!("the archive has an entry with an absolute name ({s:?}); refusing it");
    }
    let mut parts = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                bail!("the archive has an entry that climbs out with '..' ({s:?}); refusing it")
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The entry a link named `name` stands for. A symlink's target is relative to the link's own
/// directory (docker save before 25 stores a layer shared by several images once and links the
/// others to it as `../<id>/layer.tar`), a hard link's to the archive's root. `..` is resolved
/// lexically, inside the archive: a target that climbs above its root, or an absolute one,
/// points outside the archive and is refused.
pub(super) fn link_target(name: &str, target: &str, symlink: bool) -> Result<String> {
    let outside =
        || anyhow!("the archive has a link {name} -> {target} that points outside it; refusing it");
    if target.starts_with('/') {
        return Err(outside());
    }
    let mut parts: Vec<&str> = Vec::new();
    if symlink {
        parts.extend(name.split('/'));
        parts.pop();
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(outside)?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

pub(super) fn is_blob_name(name: &str) -> bool {
    name.starts_with("blobs/") && name.matches('/').count() == 2
}

fn is_legacy_config_name(name: &str) -> bool {
    !name.contains('/') && name.ends_with(".json") && !METADATA_FILES.contains(&name)
}

pub(super) fn hex_sha256(data: &[u8]) -> String {
    crate::digest::hex(&Sha256::digest(data))
}
