//! One image as an OCI image-layout tar: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//! Entries have fixed metadata (mode 0644, mtime 0, no owner), so the same image always makes
//! the same archive; blobs an earlier run cached are verified again as they are written
//! (this run's downloads were verified as they arrived).

use std::fs::File;
use std::io::{self, Read, Write};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::verify::{Verifier, VerifyingReader};

/// Where a blob's bytes are.
pub enum Blob {
    Bytes(Vec<u8>),
    /// A cached file, verified again on its way into the archive: it may have been damaged
    /// since an earlier run stored it.
    File(std::path::PathBuf),
    /// A cached file this run downloaded and verified a moment ago: copied without hashing
    /// it a second time, its size checked.
    Verified(std::path::PathBuf),
}

/// A reader that fails unless `inner` gives exactly `left` bytes.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} bytes short", self.left),
            ));
        }
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "longer than its size"))?;
        Ok(n)
    }
}

/// A writer that counts and hashes what passes, for `SHA256SUMS`.
pub struct Hashing<W> {
    pub inner: W,
    hasher: Sha256,
    pub count: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn hex(&self) -> String {
        crate::bundle::hex(&self.hasher.clone().finalize())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// Write the layout: `index` is the layout's `index.json`; `blobs` (digest, size, bytes) in
/// the order given, each once.
pub fn write(out: &mut impl Write, index: &[u8], blobs: &[(String, u64, Blob)]) -> Result<()> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    for (name, data) in [("oci-layout", &layout[..]), ("index.json", index)] {
        let mut h = header(data.len() as u64);
        b.append_data(&mut h, name, data)
            .with_context(|| format!("cannot write {name}"))?;
    }
    let mut seen = std::collections::HashSet::new();
    for (digest, size, blob) in blobs {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let name = format!("blobs/{}", digest.replacen(':', "/", 1));
        let mut h = header(*size);
        let verifier = Verifier::new(digest, Some(*size));
        let written = match blob {
            Blob::Bytes(data) => {
                b.append_data(&mut h, &name, VerifyingReader::new(&data[..], verifier))
            }
            Blob::Verified(path) => {
                let f = File::open(path)
                    .with_context(|| format!("cannot open the cached blob {}", path.display()))?;
                let exact = Exact {
                    inner: f.take(*size + 1),
                    left: *size,
                };
                b.append_data(&mut h, &name, exact)
            }
            Blob::File(path) => {
                let f = File::open(path)
                    .with_context(|| format!("cannot open the cached blob {}", path.display()))?;
                b.append_data(
                    &mut h,
                    &name,
                    VerifyingReader::new(f.take(*size + 1), verifier),
                )
            }
        };
        // A cached blob that fails its check carries a `RegistryError` in the io::Error: the
        // caller drops that copy from the cache, so the next run downloads it again.
        written.with_context(|| format!("cannot write {name}"))?;
    }
    b.finish().context("cannot finish the archive")?;
    Ok(())
}
