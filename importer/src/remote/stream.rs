//! Files as entries of a tar stream built while the bundle is read, what crosses into a kind
//! node (`PUT /containers/{id}/archive`) and into an edge host (`receive` over SSH), each of
//! exactly the size announced. Nothing is staged on the operator's disk.

use std::io::{self, Read, Write};

use anyhow::{bail, Context, Result};

/// A small text file (a checksum list) into the stream, mode 0644.
pub fn append_text<W: Write>(tar: &mut tar::Builder<W>, path: &str, text: &str) -> Result<()> {
    append(tar, path, text.len() as u64, 0o644, &mut text.as_bytes())
}

/// One file entry of `size` bytes read from `data`; fewer or more bytes are an error.
pub fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    mode: u32,
    data: &mut dyn Read,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    let mut counted = Exact {
        inner: data,
        left: size,
    };
    tar.append_data(&mut header, path, &mut counted)
        .with_context(|| format!("sending /{path}"))?;
    if counted.left != 0 {
        bail!(
            "/{path}: its source gave {} bytes fewer than the {size} announced",
            counted.left
        );
    }
    let mut extra = [0u8; 1];
    if counted.inner.read(&mut extra)? != 0 {
        bail!("/{path}: its source gave more than the {size} bytes announced");
    }
    Ok(())
}

/// A reader that gives at most `left` bytes.
struct Exact<'a> {
    inner: &'a mut dyn Read,
    left: u64,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_of_another_length_is_refused() {
        let mut tar = tar::Builder::new(Vec::new());
        assert!(append(&mut tar, "a", 3, 0o644, &mut &b"ab"[..]).is_err());
        let mut tar = tar::Builder::new(Vec::new());
        assert!(append(&mut tar, "b", 1, 0o644, &mut &b"ab"[..]).is_err());
        let mut tar = tar::Builder::new(Vec::new());
        append(&mut tar, "c", 2, 0o644, &mut &b"ab"[..]).unwrap();
    }
}
