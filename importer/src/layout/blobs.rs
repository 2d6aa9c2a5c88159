//! The blobs of a layout, read only inside it: a blob is `blobs/<alg>/<hex>` under the layout
//! directory, or `<alg>/<hex>` under a shared blob directory of the images path (skopeo's
//! `--dest-shared-blob-dir`). A digest that is not `sha256:` and 64 lowercase hex digits is
//! refused before it becomes a path; a symlink anywhere on the way is refused naming it, as is
//! anything that is not a regular file. Every byte read is checked against the digest: a JSON
//! document when it is read, a layer while it streams, its last bytes held back until they
//! match. In a pack (`export --pack`), a blob is the member `blobs/<alg>/<hex>`, read at its
//! place in the file.

use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::pack::Pack;
use crate::units::human_bytes;

/// Where the blobs of one layout are looked for, in order: its own `blobs/`, then the shared
/// blob directories of the images path.
#[derive(Debug, Clone)]
pub(crate) struct BlobDirs {
    /// The layout directory, as the log names it.
    pub(crate) layout: PathBuf,
    /// Shared blob directories (each holding `sha256/<hex>`).
    pub(crate) shared: Vec<PathBuf>,
    /// The pack the layout is, its blobs its members (then `layout` is the pack's path and
    /// `shared` empty).
    pub(crate) pack: Option<Arc<Pack>>,
}

/// A blob found on disk, its size as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blob {
    pub(crate) digest: String,
    pub(crate) size: u64,
    /// Its file; in a pack, the pack's path joined with the member's name, for the log.
    pub(crate) path: PathBuf,
    /// The pack it is a member of.
    pub(crate) pack: Option<Arc<Pack>>,
}

/// The member name of a blob: `blobs/sha256/<hex>`.
fn member_name(hex: &str) -> String {
    format!("blobs/sha256/{hex}")
}

/// The hex of a `sha256:` digest, refused unless it is exactly 64 lowercase hex digits (so no
/// digest can become a path that leaves the blob directory).
pub(crate) fn sha256_hex(digest: &str) -> Result<&str> {
    let Some((alg, hex)) = digest.split_once(':') else {
        bail!("{digest:?} is not a digest (algorithm:hex)");
    };
    if alg != "sha256" {
        bail!("the digest {digest:?} is not sha256, the one algorithm this importer checks");
    }
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        bail!("{digest:?} is not a sha256 digest (64 lowercase hex digits)");
    }
    Ok(hex)
}

impl BlobDirs {
    /// The blob of `digest`, if the layout or a shared blob directory has it. An error when
    /// the digest is malformed or the way to the blob is a symlink or no regular file.
    pub(crate) fn find(&self, digest: &str) -> Result<Option<Blob>> {
        let hex = sha256_hex(digest)?;
        if let Some(pack) = &self.pack {
            let name = member_name(hex);
            return Ok(pack.size(&name)?.map(|size| Blob {
                digest: digest.to_string(),
                size,
                path: pack.path.join(&name),
                pack: Some(pack.clone()),
            }));
        }
        let mut dirs = vec![self.layout.join("blobs")];
        dirs.extend(self.shared.iter().cloned());
        for dir in dirs {
            if let Some(blob) = in_dir(&dir, hex, digest)? {
                return Ok(Some(blob));
            }
        }
        Ok(None)
    }

    /// Where a missing blob was looked for, for the error that names it.
    pub(crate) fn looked_in(&self) -> String {
        if let Some(pack) = &self.pack {
            return format!("{} (blobs/sha256/)", pack.path.display());
        }
        let mut dirs = vec![self.layout.join("blobs").display().to_string()];
        dirs.extend(self.shared.iter().map(|d| d.display().to_string()));
        dirs.join(", ")
    }
}

/// `dir/sha256/<hex>`, each step a real directory and the blob a regular file, or None when
/// it is not there.
fn in_dir(dir: &Path, hex: &str, digest: &str) -> Result<Option<Blob>> {
    let alg = dir.join("sha256");
    for step in [dir, alg.as_path()] {
        match fs::symlink_metadata(step) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow!("cannot read {}: {e}", step.display())),
            Ok(m) => real(step, &m, "a directory", m.is_dir())?,
        }
    }
    let path = alg.join(hex);
    let meta = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
        Ok(m) => m,
    };
    real(&path, &meta, "a regular file", meta.is_file())?;
    Ok(Some(Blob {
        digest: digest.to_string(),
        size: meta.len(),
        path,
        pack: None,
    }))
}

/// A path on the way to a blob must be what it should be, and never a symlink: a layout is
/// read only inside itself.
fn real(path: &Path, meta: &Metadata, what: &str, is: bool) -> Result<()> {
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
        bail!(
            "{} is a symlink (to {target}): a layout's blobs are read only inside it, refusing it",
            path.display()
        );
    }
    if !is {
        bail!("{} is not {what}, refusing it", path.display());
    }
    Ok(())
}

impl Blob {
    /// The blob opened for reading, without following a symlink put in its place since it was
    /// found, and still of the size it was found with; in a pack, the member's data.
    fn open(&self) -> Result<Box<dyn Read + Send>> {
        if let Some(pack) = &self.pack {
            let hex = sha256_hex(&self.digest)?;
            return pack.open(&member_name(hex));
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() != self.size {
            bail!(
                "{} changed while it was read (now {} bytes, {} before)",
                self.path.display(),
                meta.len(),
                self.size
            );
        }
        Ok(Box::new(file))
    }

    /// The whole blob, at most `max` bytes, not yet checked against its digest (see
    /// [`Blob::check`]): a manifest, an index or a config.
    pub(crate) fn read_json(&self, max: u64) -> Result<Vec<u8>> {
        if self.size > max {
            bail!(
                "{} is {}, over the {} limit for an image manifest, index or config",
                self.digest,
                human_bytes(self.size),
                human_bytes(max)
            );
        }
        let mut data = Vec::with_capacity(self.size as usize);
        self.open()?
            .take(self.size)
            .read_to_end(&mut data)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok(data)
    }

    /// `data`, read from this blob, against its digest.
    pub(crate) fn check(&self, data: &[u8]) -> Result<()> {
        let actual = crate::digest::hex(&Sha256::digest(data));
        if Some(actual.as_str()) != self.digest.strip_prefix("sha256:") {
            bail!(
                "blob {} is corrupt: {} hashes to sha256:{actual}",
                self.digest,
                self.path.display()
            );
        }
        Ok(())
    }

    /// The blob as it streams, checked against its digest: its last bytes are given only
    /// when the whole matches, so a reader never receives a complete blob that does not.
    pub(crate) fn reader(&self) -> Result<Verified> {
        Ok(Verified {
            file: self.open()?,
            remaining: self.size,
            hasher: Sha256::new(),
            blob: self.clone(),
        })
    }
}

impl crate::source::OpenBlob for Blob {
    fn reader(&self) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(Blob::reader(self)?))
    }
}

/// A blob's bytes, hashed as they pass (see [`Blob::reader`]).
pub(crate) struct Verified {
    file: Box<dyn Read + Send>,
    remaining: u64,
    hasher: Sha256,
    blob: Blob,
}

impl Read for Verified {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "{} ends {} bytes short of its size",
                self.blob.path.display(),
                self.remaining
            )));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        if self.remaining == 0 {
            let actual = crate::digest::hex(&self.hasher.clone().finalize());
            if Some(actual.as_str()) != self.blob.digest.strip_prefix("sha256:") {
                return Err(io::Error::other(format!(
                    "blob {} is corrupt: {} hashes to sha256:{actual}",
                    self.blob.digest,
                    self.blob.path.display()
                )));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("oi-blobs-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("blobs/sha256")).unwrap();
        d
    }

    fn hex_of(data: &[u8]) -> String {
        crate::digest::hex(&Sha256::digest(data))
    }

    #[test]
    fn a_digest_is_refused_before_it_becomes_a_path() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(sha256_hex(&good).is_ok());
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "a".repeat(64)),
            "a".repeat(64),
            format!("sha256:{}/x", "a".repeat(62)),
        ] {
            assert!(sha256_hex(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_blob_is_found_in_the_layout_then_in_a_shared_directory_and_never_through_a_symlink() {
        let d = dir("find");
        let data = b"{\"a\":1}";
        let hex = hex_of(data);
        let digest = format!("sha256:{hex}");
        let shared = d.join("shared");
        fs::create_dir_all(shared.join("sha256")).unwrap();
        fs::write(shared.join("sha256").join(&hex), data).unwrap();
        let dirs = BlobDirs {
            layout: d.clone(),
            shared: vec![shared.clone()],
            pack: None,
        };
        let found = dirs.find(&digest).unwrap().unwrap();
        assert_eq!(found.path, shared.join("sha256").join(&hex));
        assert_eq!(found.read_json(1 << 20).unwrap(), data);
        found.check(data).unwrap();
        assert!(found.check(b"other").is_err());
        let alone = BlobDirs {
            layout: d.clone(),
            shared: vec![],
            pack: None,
        };
        assert_eq!(alone.find(&digest).unwrap(), None);
        // A symlink where the blob should be is refused, naming it.
        let outside = d.join("outside");
        fs::write(&outside, data).unwrap();
        std::os::unix::fs::symlink(&outside, d.join("blobs/sha256").join(&hex)).unwrap();
        let err = format!("{:#}", dirs.find(&digest).unwrap_err());
        assert!(err.contains("is a symlink") && err.contains(&hex), "{err}");
        // So is a blobs/sha256 directory that is a symlink.
        let d2 = dir("find2");
        fs::remove_dir_all(d2.join("blobs/sha256")).unwrap();
        std::os::unix::fs::symlink(shared.join("sha256"), d2.join("blobs/sha256")).unwrap();
        let via = BlobDirs {
            layout: d2.clone(),
            shared: vec![],
            pack: None,
        };
        let err = format!("{:#}", via.find(&digest).unwrap_err());
        assert!(err.contains("blobs/sha256 is a symlink"), "{err}");
        let _ = fs::remove_dir_all(&d);
        let _ = fs::remove_dir_all(&d2);
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_never_gives_its_last_bytes() {
        let d = dir("verify");
        let good = vec![7u8; 100_000];
        let hex = hex_of(&good);
        let mut bad = good.clone();
        bad[99_999] = 8;
        let path = d.join("blobs/sha256").join(&hex);
        fs::write(&path, &bad).unwrap();
        let blob = Blob {
            digest: format!("sha256:{hex}"),
            size: bad.len() as u64,
            path: path.clone(),
            pack: None,
        };
        let mut out = Vec::new();
        let err = blob.reader().unwrap().read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
        assert!(out.len() < bad.len());
        fs::write(&path, &good).unwrap();
        let mut out = Vec::new();
        blob.reader().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, good);
        // Cut short after it was found: named, not taken for the end of the blob.
        fs::write(&path, &good[..10]).unwrap();
        let err = format!("{:#}", blob.reader().err().unwrap());
        assert!(err.contains("changed while it was read"), "{err}");
        let _ = fs::remove_dir_all(&d);
    }
}
