//! A bundle: the directory `export` writes and `import` reads. Archives, plus
//!
//! - `SHA256SUMS`: `sha256sum -c` compatible, one line per archive, paths relative to the bundle;
//! - `images.json`: what each archive holds (names, config digest, platform), so `import` can
//!   tell which archives are already in the runtime without reading them.
//!
//! Both are written atomically (temp file, fsync, rename): a reader never sees half a file.
//!
//! A bundle written with `export --format layout` is one OCI image layout instead of archives:
//! `oci-layout`, `index.json` and `blobs/sha256/<hex>`; `images.json` then describes it under
//! `layout` ([`BundleLayout`]), and `SHA256SUMS` lists the files not named by their digest.
//! Those three are replaced together through [`commit`], so that a reader never sees one of
//! them new and another old ([`read_committed`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::{Compression, Format};

pub const SUMS_FILE: &str = "SHA256SUMS";
pub const INDEX_FILE: &str = "images.json";
pub const INDEX_VERSION: u32 = 1;

/// `images.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleIndex {
    /// Format version of this file; readers refuse versions they do not know.
    pub version: u32,
    /// The tool and version that last wrote the file, e.g. `offline-images 0.1.0`.
    #[serde(default)]
    pub generator: String,
    /// Sorted by `file`.
    #[serde(default)]
    pub archives: Vec<BundleArchive>,
    /// What an OCI layout bundle holds (`export --format layout`); then `archives` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<BundleLayout>,
}

/// The images of an OCI layout bundle, and the bundle's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleLayout {
    /// The digest (`sha256:<hex>`) of the `index.json` these records describe.
    pub index_json_digest: String,
    /// When the export that wrote it committed, in UTC (RFC 3339).
    pub exported_at: String,
    /// One record per reference, in the export's order.
    pub references: Vec<LayoutReference>,
    /// The earlier bundles this one builds on (`export --since`), newest first: the site must
    /// have imported them, or have the layers they carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds_on: Vec<BundleId>,
    /// The layers this bundle's images use but its `blobs/` does not hold, because an
    /// earlier bundle carried them (`export --since`), sorted by digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried_earlier: Vec<CarriedBlob>,
}

/// A bundle's identity: the digest of its `index.json`, and when it was exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleId {
    pub index_json_digest: String,
    pub exported_at: String,
}

impl std::fmt::Display for BundleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the bundle {} exported {}",
            self.index_json_digest, self.exported_at
        )
    }
}

/// A blob a bundle relies on the site already having, and the earlier bundle that carried it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedBlob {
    pub digest: String,
    pub size: u64,
    pub carried_by: BundleId,
    /// The chain IDs the layer has in the image being imported (`digest::chain_ids`), found
    /// when the image is read, never written: how a runtime that keeps layers by chain
    /// (Docker's classic store) is asked whether it holds it.
    #[serde(skip)]
    pub chain_ids: Vec<String>,
}

impl BundleLayout {
    /// This bundle's identity.
    pub fn id(&self) -> BundleId {
        BundleId {
            index_json_digest: self.index_json_digest.clone(),
            exported_at: self.exported_at.clone(),
        }
    }
}

/// One reference of an OCI layout bundle: where it came from and, per platform, its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutReference {
    pub source: BundleSource,
    pub images: Vec<BundleImage>,
    /// The image's signatures, attestations, SBOMs and OCI referrers the bundle carries
    /// (`export`, unless `--no-signatures`): no image to import, pushed with the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<BundleArtifact>,
}

/// A supply-chain artifact of an image, as its registry keeps it: one of cosign's tags
/// (`sha256-<hex>.sig`, `.att`, `.sbom`), or the OCI 1.1 referrers of a digest (kept as the
/// index the referrers API or its fallback tag `sha256-<hex>` gives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleArtifact {
    /// `sig`, `att`, `sbom` or `referrers`.
    pub kind: String,
    /// The digest of the manifest or index it is about.
    pub subject: String,
    /// Its name in the image's repository: `registry/path:sha256-<hex>.sig`.
    pub reference: String,
    /// The manifest (or the referrers' index) the tag names.
    pub digest: String,
    /// Every blob it uses, its own documents included, sorted.
    pub blobs: Vec<String>,
}

impl LayoutReference {
    /// Every blob of the layout this reference uses: its index (when it names one), and each
    /// platform's manifest, config and layers.
    pub fn blobs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .source
            .index_digest
            .iter()
            .map(String::as_str)
            .collect();
        out.push(&self.source.digest);
        for image in &self.images {
            out.extend(image.manifest_digest.as_deref());
            out.push(&image.config_digest);
            out.extend(image.layers.iter().map(|l| l.digest.as_str()));
        }
        for a in &self.artifacts {
            out.push(&a.digest);
            out.extend(a.blobs.iter().map(String::as_str));
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// One archive of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleArchive {
    /// Path relative to the bundle directory, with `/` separators.
    pub file: String,
    pub size: u64,
    /// Hex SHA-256 of the file, as in `SHA256SUMS`.
    pub sha256: String,
    pub compression: Compression,
    pub format: Format,
    pub images: Vec<BundleImage>,
    /// Where the image came from, for archives the registry engine wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<BundleSource>,
    /// The file as `export` left it on the host that wrote it (see [`FileStamp`]): a re-export
    /// there reuses an archive whose stamp still matches without reading it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<FileStamp>,
}

/// How long a timestamp the kernel gives a file can lag behind the clock: one tick of the
/// coarse clock it reads (at most 10 ms at HZ=100), with room to spare.
const TICK: Duration = Duration::from_millis(20);

/// What tells, on the host that wrote it, that a file is unchanged without reading it: its
/// size, inode, and modification and change times in nanoseconds. Any write, truncation,
/// rename onto it or `touch` sets the change time to the clock, and user space cannot set it
/// back; so a file whose stamp is the one taken once its change time was a clock tick in
/// the past has not been written since. A copy (a new inode and change time) or another
/// host never matches, and is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub inode: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileStamp {
    /// The stamp of `meta`; None on a filesystem whose times have no sub-second part (FAT,
    /// some network filesystems), where two writes in one second would look the same.
    fn of(meta: &fs::Metadata) -> Option<FileStamp> {
        if meta.mtime_nsec() == 0 && meta.ctime_nsec() == 0 {
            return None;
        }
        let ns = |s: i64, n: i64| s.checked_mul(1_000_000_000)?.checked_add(n);
        Some(FileStamp {
            size: meta.len(),
            inode: meta.ino(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec())?,
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec())?,
        })
    }

    /// The stamp of `path`, taken once its change time is a clock tick in the past (waiting
    /// up to that long), so that a later write cannot carry the same change time. None when
    /// the file cannot be stamped.
    pub fn settled(path: &Path) -> Option<FileStamp> {
        for _ in 0..10 {
            let stamp = FileStamp::of(&fs::metadata(path).ok()?)?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
            let now = i64::try_from(now.as_nanos()).ok()?;
            let tick = TICK.as_nanos() as i64;
            let wait = stamp.ctime_ns + tick - now;
            if wait <= 0 {
                return Some(stamp);
            }
            if wait > tick {
                // A change time in the future: the clock was set back; trust nothing.
                return None;
            }
            std::thread::sleep(Duration::from_nanos(wait as u64));
        }
        None
    }

    /// Whether `path` is still the file this stamp was taken of.
    pub fn matches(&self, path: &Path) -> bool {
        fs::metadata(path)
            .ok()
            .and_then(|m| FileStamp::of(&m))
            .is_some_and(|s| s == *self)
    }
}

/// The registry's identity of an exported image (the registry engine records it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSource {
    /// The reference as asked, e.g. `nginx:1.27` or `reg/app@sha256:...`.
    pub reference: String,
    /// `registry/path`, normalised.
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The digest the reference resolved to at the registry (an index or a manifest).
    pub digest: String,
    /// The index digest, when the reference names a multi-platform index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// Every name the archive gives the image (tag and digest references).
    #[serde(default)]
    pub refs: Vec<String>,
}

impl BundleSource {
    /// The names the archive gives the image whose manifest is `manifest_digest`: each tag,
    /// `repository@<the digest the reference resolved to>` and `repository@<its manifest>`,
    /// but not another platform's `repository@<manifest>` (that name is that image's). Taken
    /// from `refs`, the names the archive's `index.json` gives; where `refs` has no digest
    /// name (a file no version wrote, but readable), derived from the digests recorded.
    pub fn names_for(&self, manifest_digest: Option<&str>) -> Vec<String> {
        let own = |digest: &str| digest == self.digest || Some(digest) == manifest_digest;
        let mut names: Vec<String> = self
            .refs
            .iter()
            .filter(|r| r.split_once('@').is_none_or(|(_, digest)| own(digest)))
            .cloned()
            .collect();
        if !self.refs.iter().any(|r| r.contains('@')) {
            let derived = [Some(self.digest.as_str()), manifest_digest];
            for digest in derived.into_iter().flatten() {
                let name = format!("{}@{digest}", self.repository);
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }
}

/// A layer as the registry serves it (compressed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleLayer {
    pub digest: String,
    pub size: u64,
}

/// One image of an archive, for the platform that was exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleImage {
    /// Normalised references (`docker.io/library/nginx:1.27`).
    pub names: Vec<String>,
    pub config_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// `os/arch[/variant]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The layers, for archives the registry engine wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<BundleLayer>,
}

impl BundleIndex {
    pub fn new() -> Self {
        BundleIndex {
            version: INDEX_VERSION,
            generator: generator(),
            archives: Vec::new(),
            layout: None,
        }
    }

    /// Give every image of every archive the registry engine wrote each name its archive
    /// gives it (see [`BundleSource::names_for`]). A file written before `images.json`
    /// recorded the digest names lists the tag alone; this makes it say what the archive says.
    pub fn complete_names(&mut self) {
        for archive in &mut self.archives {
            let Some(source) = &archive.source else {
                continue;
            };
            for image in &mut archive.images {
                for name in source.names_for(image.manifest_digest.as_deref()) {
                    if !image.names.contains(&name) {
                        image.names.push(name);
                    }
                }
            }
        }
    }

    pub fn archive(&self, file: &str) -> Option<&BundleArchive> {
        self.archives.iter().find(|a| a.file == file)
    }

    /// Add or replace the entry for `archive.file`, keeping the list sorted.
    pub fn upsert(&mut self, archive: BundleArchive) {
        match self
            .archives
            .binary_search_by(|a| a.file.cmp(&archive.file))
        {
            Ok(i) => self.archives[i] = archive,
            Err(i) => self.archives.insert(i, archive),
        }
    }
}

pub fn generator() -> String {
    format!("offline-images {}", env!("CARGO_PKG_VERSION"))
}

/// Read `images.json` from a bundle directory; `None` when there is none.
pub fn read_index(dir: &Path) -> Result<Option<BundleIndex>> {
    let path = dir.join(INDEX_FILE);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut index: BundleIndex = serde_json::from_slice(&data)
        .with_context(|| format!("{} is not valid", path.display()))?;
    if index.version != INDEX_VERSION {
        bail!(
            "{} has version {}; this offline-images reads version {INDEX_VERSION}",
            path.display(),
            index.version
        );
    }
    index.complete_names();
    Ok(Some(index))
}

pub fn write_index(dir: &Path, index: &BundleIndex) -> Result<()> {
    let mut data = serde_json::to_vec_pretty(index)?;
    data.push(b'\n');
    write_atomic(&dir.join(INDEX_FILE), &data)
}

/// Read `SHA256SUMS`: file (relative, `/` separators) -> hex digest. `None` when there is none.
pub fn read_sums(dir: &Path) -> Result<Option<BTreeMap<String, String>>> {
    let path = dir.join(SUMS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    parse_sums(&text)
        .map(Some)
        .with_context(|| format!("{} is not valid", path.display()))
}

/// Parse `sha256sum` output: `<64 hex>  <file>` (text mode) or `<64 hex> *<file>` (binary mode).
pub fn parse_sums(text: &str) -> Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .split_once(' ')
            .filter(|(hex, _)| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|(hex, rest)| {
                let file = rest
                    .strip_prefix(' ')
                    .or_else(|| rest.strip_prefix('*'))
                    .unwrap_or(rest);
                (
                    hex.to_ascii_lowercase(),
                    file.strip_prefix("./").unwrap_or(file).to_string(),
                )
            });
        match parsed {
            Some((hex, file)) if !file.is_empty() => {
                sums.insert(file, hex);
            }
            _ => bail!("line {} is not `<sha256>  <file>`: {line:?}", n + 1),
        }
    }
    Ok(sums)
}

pub fn write_sums(dir: &Path, sums: &BTreeMap<String, String>) -> Result<()> {
    let mut text = String::new();
    for (file, hex) in sums {
        text.push_str(hex);
        text.push_str("  ");
        text.push_str(file);
        text.push('\n');
    }
    write_atomic(&dir.join(SUMS_FILE), text.as_bytes())
}

/// The path of `file` relative to the bundle `dir`, with `/` separators (as `SHA256SUMS` has it).
pub fn relative_name(dir: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(dir).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Hex SHA-256 of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    sha256_reader(file).with_context(|| format!("cannot read {}", path.display()))
}

pub use crate::digest::hex;

/// Write a file so that readers see the old content or the new, never a part:
/// a temp file beside it, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = temp_name(path);
    let result = (|| -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // Make the rename itself durable; not every filesystem allows fsync on a directory.
            if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// The hidden directory of a bundle through which [`commit`] replaces its files.
pub const COMMIT_DIR: &str = ".offline-images-commit";

/// Replace `files` (name, bytes) of the bundle `dir` as one step, `SHA256SUMS` last among
/// them: each is first written into [`COMMIT_DIR`] (`SHA256SUMS` last, its presence there
/// marking the commit complete), then renamed into place in the order given. A run killed
/// before the mark leaves the bundle as it was; one killed after it leaves a commit that
/// [`read_committed`] reads through and [`finish_commit`] completes.
pub fn commit(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    debug_assert_eq!(files.last().map(|f| f.0), Some(SUMS_FILE));
    let pending = dir.join(COMMIT_DIR);
    if pending.exists() {
        fs::remove_dir_all(&pending)
            .with_context(|| format!("cannot remove {}", pending.display()))?;
    }
    fs::create_dir_all(&pending).with_context(|| format!("cannot create {}", pending.display()))?;
    for (name, data) in files {
        write_atomic(&pending.join(name), data)?;
    }
    let order: Vec<&str> = files.iter().map(|f| f.0).collect();
    finish_commit(dir, &order).map(drop)
}

/// Complete the commit an earlier run left in [`COMMIT_DIR`], or drop one it did not finish
/// writing. `order` is the order the files are put in place (`SHA256SUMS` is always last);
/// files not named there follow it. Whether there was one to complete.
pub fn finish_commit(dir: &Path, order: &[&str]) -> Result<bool> {
    let pending = dir.join(COMMIT_DIR);
    if !pending.exists() {
        return Ok(false);
    }
    let complete = pending.join(SUMS_FILE).is_file();
    if complete {
        let mut names: Vec<String> = fs::read_dir(&pending)
            .with_context(|| format!("cannot read {}", pending.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        let rank = |n: &str| match (n == SUMS_FILE, order.iter().position(|o| *o == n)) {
            (true, _) => usize::MAX,
            (false, Some(i)) => i,
            (false, None) => order.len(),
        };
        names.sort_by_key(|n| (rank(n), n.clone()));
        for name in &names {
            let (from, to) = (pending.join(name), dir.join(name));
            fs::rename(&from, &to)
                .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
            sync_dir(dir);
        }
    }
    fs::remove_dir_all(&pending).with_context(|| format!("cannot remove {}", pending.display()))?;
    Ok(complete)
}

/// The bytes of the bundle file `name` as the last commit made it: the copy in
/// [`COMMIT_DIR`] while a complete commit has not put it in place yet, else the file itself.
pub fn read_committed(dir: &Path, name: &str) -> io::Result<Vec<u8>> {
    let pending = dir.join(COMMIT_DIR);
    if pending.join(SUMS_FILE).is_file() {
        match fs::read(pending.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
    }
    fs::read(dir.join(name))
}

/// Make a rename in `dir` durable; not every filesystem allows fsync on a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The time now in UTC, as RFC 3339 (`2025-01-31T12:00:00Z`).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_time(secs)
}

/// `secs` after the Unix epoch as RFC 3339 UTC (the civil date from days, Hinnant's method).
fn utc_time(secs: u64) -> String {
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `dir/.name.<pid>.tmp`: hidden and `.tmp`, so `import` never mistakes it for an archive.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_text_and_binary_mode_are_read_and_written_back_in_sha256sum_form() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let sums = parse_sums(&format!("{a}  x.tar.gz\n{b} *./sub/y file.tar\n\n")).unwrap();
        assert_eq!(sums["x.tar.gz"], a);
        assert_eq!(sums["sub/y file.tar"], "b".repeat(64));
        assert!(parse_sums("nothex  x.tar").is_err());
    }

    #[test]
    fn a_stamp_matches_its_file_until_a_write_even_one_that_keeps_size_and_mtime() {
        let dir = std::env::temp_dir().join(format!("oi-stamp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.tar");
        fs::write(&path, b"0123456789").unwrap();
        let stamp = FileStamp::settled(&path).expect("a filesystem with sub-second times");
        assert!(stamp.matches(&path));
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, b"0123456789").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        assert!(
            !stamp.matches(&path),
            "rewritten with the same bytes, size and mtime"
        );
        let copy = dir.join("b.tar");
        fs::copy(&path, &copy).unwrap();
        assert!(!FileStamp::settled(&path).unwrap().matches(&copy));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// images.json as export wrote it before it recorded the digest names: each image named
    /// by the tag alone, the archive's names only in `source.refs` (or, in a file no version
    /// wrote, not even there).
    #[test]
    fn an_old_images_json_without_digest_names_is_read_with_every_name_the_archive_gives() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let (index, amd, arm) = (d('a'), d('b'), d('c'));
        let repo = "reg.example.com/shop/web";
        let old = serde_json::json!({
            "version": 1,
            "generator": "offline-images 0.1.0",
            "archives": [
                {
                    "file": "multi.tar", "size": 10, "sha256": "0".repeat(64),
                    "compression": "none", "format": "oci",
                    "images": [
                        {"names": [format!("{repo}:1")], "config_digest": d('d'),
                         "manifest_digest": amd, "platform": "linux/amd64"},
                        {"names": [format!("{repo}:1")], "config_digest": d('e'),
                         "manifest_digest": arm, "platform": "linux/arm64"}
                    ],
                    "source": {
                        "reference": format!("{repo}:1"), "repository": repo, "tag": "1",
                        "digest": index, "index_digest": index,
                        "refs": [format!("{repo}:1"), format!("{repo}@{index}"),
                                 format!("{repo}@{amd}"), format!("{repo}@{arm}")]
                    }
                },
                {
                    "file": "no-refs.tar", "size": 10, "sha256": "0".repeat(64),
                    "compression": "none", "format": "oci",
                    "images": [{"names": [format!("{repo}:2")], "config_digest": d('f'),
                                "manifest_digest": amd, "platform": "linux/amd64"}],
                    "source": {"reference": format!("{repo}:2"), "repository": repo,
                               "tag": "2", "digest": amd}
                },
                {
                    "file": "saved.tar.gz", "size": 10, "sha256": "0".repeat(64),
                    "compression": "gzip", "format": "docker-archive",
                    "images": [{"names": ["docker.io/library/app:1"], "config_digest": d('f')}]
                }
            ]
        });
        let dir = std::env::temp_dir().join(format!("oi-old-index-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(INDEX_FILE), old.to_string()).unwrap();
        let read = read_index(&dir).unwrap().unwrap();
        let names = |file: &str, i: usize| read.archive(file).unwrap().images[i].names.clone();
        assert_eq!(
            names("multi.tar", 0),
            [
                format!("{repo}:1"),
                format!("{repo}@{index}"),
                format!("{repo}@{amd}")
            ]
        );
        assert_eq!(
            names("multi.tar", 1),
            [
                format!("{repo}:1"),
                format!("{repo}@{index}"),
                format!("{repo}@{arm}")
            ]
        );
        assert_eq!(
            names("no-refs.tar", 0),
            [format!("{repo}:2"), format!("{repo}@{amd}")]
        );
        assert_eq!(names("saved.tar.gz", 0), ["docker.io/library/app:1"]);
        // Written back (export merges into it), it reads the same.
        write_index(&dir, &read).unwrap();
        assert_eq!(read_index(&dir).unwrap().unwrap(), read);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn utc_times_are_rfc_3339() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn a_commit_is_read_through_until_complete_and_one_not_marked_is_dropped() {
        let dir = std::env::temp_dir().join(format!("oi-commit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        commit(&dir, &[("index.json", b"one"), (SUMS_FILE, b"sums one")]).unwrap();
        assert!(!dir.join(COMMIT_DIR).exists());
        assert_eq!(fs::read(dir.join("index.json")).unwrap(), b"one");

        // Killed after the mark, before index.json was put in place: read through.
        let pending = dir.join(COMMIT_DIR);
        fs::create_dir_all(&pending).unwrap();
        fs::write(pending.join("index.json"), b"two").unwrap();
        fs::write(pending.join(SUMS_FILE), b"sums two").unwrap();
        assert_eq!(read_committed(&dir, "index.json").unwrap(), b"two");
        assert_eq!(read_committed(&dir, SUMS_FILE).unwrap(), b"sums two");
        assert!(finish_commit(&dir, &["index.json"]).unwrap());
        assert_eq!(fs::read(dir.join("index.json")).unwrap(), b"two");
        assert_eq!(fs::read(dir.join(SUMS_FILE)).unwrap(), b"sums two");

        // Killed before the mark: the bundle is as it was, and the commit is dropped.
        fs::create_dir_all(&pending).unwrap();
        fs::write(pending.join("index.json"), b"three").unwrap();
        assert_eq!(read_committed(&dir, "index.json").unwrap(), b"two");
        assert!(!finish_commit(&dir, &["index.json"]).unwrap());
        assert_eq!(fs::read(dir.join("index.json")).unwrap(), b"two");
        assert!(!pending.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_and_sha256_match_known_vectors() {
        assert_eq!(
            sha256_reader(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
