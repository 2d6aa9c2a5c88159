//! The archive on its way to Docker: every byte passed on as the reader reads it, except the
//! all-zero tar blocks at its end, held back so that a `manifest.json` or `index.json` can still
//! be put in before the end-of-archive marker.

use std::io::{self, Read, Write};

use anyhow::{bail, Context, Result};

const BLOCK: usize = 512;
static ZEROS: [u8; BLOCK] = [0; BLOCK];

/// Reads the archive for the inspector and passes every byte on to Docker, except that
/// all-zero tar blocks are held back (counted, not stored) until a non-zero block follows.
/// At the end of the stream the held blocks are the end-of-archive marker (and padding), so a
/// `manifest.json` entry can still be put in front of them.
pub(super) struct Forward<'a, R: Read + ?Sized, W: Write> {
    inner: &'a mut R,
    out: &'a mut W,
    /// Stream offset of the first byte of `partial` (always a block boundary).
    pos: u64,
    /// The start of a block not yet complete.
    partial: Vec<u8>,
    /// Zero blocks held back, and where the run of them starts.
    zeros: u64,
    zeros_start: u64,
    /// Docker stopped taking the body.
    pub(super) sink_error: Option<io::Error>,
}

impl<'a, R: Read + ?Sized, W: Write> Forward<'a, R, W> {
    pub(super) fn new(inner: &'a mut R, out: &'a mut W) -> Self {
        Forward {
            inner,
            out,
            pos: 0,
            partial: Vec::with_capacity(BLOCK),
            zeros: 0,
            zeros_start: 0,
            sink_error: None,
        }
    }

    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(e) = &self.sink_error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        self.out.write_all(data).inspect_err(|e| {
            self.sink_error = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }

    fn send_zeros(&mut self, mut bytes: u64) -> io::Result<()> {
        while bytes > 0 {
            let n = bytes.min(BLOCK as u64) as usize;
            self.send(&ZEROS[..n])?;
            bytes -= n as u64;
        }
        Ok(())
    }

    fn release_zeros(&mut self) -> io::Result<()> {
        let held = self.zeros * BLOCK as u64;
        self.zeros = 0;
        self.send_zeros(held)
    }

    /// Take in bytes read from the archive, block by block.
    fn take_in(&mut self, mut data: &[u8]) -> io::Result<()> {
        if !self.partial.is_empty() {
            let need = BLOCK - self.partial.len();
            let n = need.min(data.len());
            self.partial.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.partial.len() < BLOCK {
                return Ok(());
            }
            let block = std::mem::take(&mut self.partial);
            self.blocks(&block)?;
            self.partial = block;
            self.partial.clear();
        }
        let whole = data.len() / BLOCK * BLOCK;
        self.blocks(&data[..whole])?;
        self.partial.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// Whole blocks: runs of non-zero blocks go out in one write, zero blocks are held.
    fn blocks(&mut self, data: &[u8]) -> io::Result<()> {
        let mut run_start = 0;
        for (i, block) in data.chunks_exact(BLOCK).enumerate() {
            let offset = i * BLOCK;
            if block.iter().all(|&b| b == 0) {
                if run_start < offset {
                    self.send(&data[run_start..offset])?;
                }
                if self.zeros == 0 {
                    self.zeros_start = self.pos + offset as u64;
                }
                self.zeros += 1;
                run_start = offset + BLOCK;
            } else if self.zeros > 0 {
                if run_start < offset {
                    self.send(&data[run_start..offset])?;
                }
                self.release_zeros()?;
                run_start = offset;
            }
        }
        if run_start < data.len() {
            self.send(&data[run_start..])?;
        }
        self.pos += data.len() as u64;
        Ok(())
    }

    /// The archive already suits Docker: send the held bytes as they were.
    pub(super) fn pass_through_end(&mut self) -> Result<()> {
        self.release_zeros()?;
        let tail = std::mem::take(&mut self.partial);
        self.send(&tail)?;
        Ok(())
    }

    /// Send the entry data held back, then `entries` (name, data), then the end-of-archive.
    pub(super) fn append_entries(&mut self, end: u64, entries: &[(&str, Vec<u8>)]) -> Result<()> {
        let zeros_start = if self.zeros == 0 {
            self.pos
        } else {
            self.zeros_start
        };
        let held = self.zeros * BLOCK as u64;
        if end < zeros_start || end > zeros_start + held {
            bail!(
                "the archive has data after its end-of-archive blocks, so no manifest.json can be added for Docker"
            );
        }
        // Zero blocks that belong to the last entry's data.
        let of_entries = end - zeros_start;
        self.zeros = 0;
        self.send_zeros(of_entries)?;
        for (name, data) in entries {
            let mut header = tar::Header::new_ustar();
            header
                .set_path(name)
                .with_context(|| format!("cannot write the {name} header"))?;
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            self.send(header.as_bytes())?;
            self.send(data)?;
            let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
            self.send_zeros(pad as u64)?;
        }
        // The end-of-archive: two zero blocks at least, and the padding that followed.
        let rest = held - of_entries;
        self.send_zeros(rest.max(2 * BLOCK as u64))?;
        Ok(())
    }
}

impl<R: Read + ?Sized, W: Write> Read for Forward<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.take_in(&buf[..n]).map_err(|e| {
            io::Error::new(e.kind(), format!("Docker stopped reading the archive: {e}"))
        })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])], trailing_zero_blocks: usize) -> Vec<u8> {
        let mut tar = crate::archive::tar_of(files);
        tar.extend(std::iter::repeat_n(0u8, trailing_zero_blocks * BLOCK));
        tar
    }

    /// Pass `tar` through a forwarder in reads of `step` bytes, as the inspector does.
    fn forward(tar: &[u8], step: usize, manifest: Option<&[u8]>) -> Vec<u8> {
        let mut input = tar;
        let mut out = Vec::new();
        let mut f = Forward::new(&mut input, &mut out);
        let mut buf = vec![0u8; step];
        while f.read(&mut buf).unwrap() > 0 {}
        match manifest {
            None => f.pass_through_end().unwrap(),
            Some(m) => {
                let end = {
                    let mut a = tar::Archive::new(tar);
                    let last = a.entries().unwrap().last().unwrap().unwrap();
                    last.raw_file_position() + last.size().div_ceil(512) * 512
                };
                f.append_entries(end, &[("manifest.json", m.to_vec())])
                    .unwrap()
            }
        }
        out
    }

    #[test]
    fn an_archive_passes_through_byte_for_byte_whatever_the_read_sizes() {
        // A last entry whose data ends in zero blocks, and extra padding after the end.
        let mut layer = vec![7u8; 700];
        layer.extend(vec![0u8; 3 * BLOCK]);
        let tar = tar_of(&[("a", b"x"), ("layer.tar", &layer)], 16);
        for step in [1, 100, 512, 513, 4096, 1 << 20] {
            assert_eq!(forward(&tar, step, None), tar, "read size {step}");
        }
    }

    #[test]
    fn a_manifest_goes_after_the_last_entrys_zero_data_and_before_the_end_blocks() {
        let mut layer = vec![7u8; 700];
        layer.extend(vec![0u8; 3 * BLOCK]);
        let tar = tar_of(&[("index.json", b"{}"), ("blobs/sha256/l", &layer)], 8);
        for step in [1, 512, 777, 1 << 20] {
            let out = forward(&tar, step, Some(b"[{}]"));
            let mut a = tar::Archive::new(&out[..]);
            let entries: Vec<(String, Vec<u8>)> = a
                .entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let mut data = Vec::new();
                    e.read_to_end(&mut data).unwrap();
                    (e.path().unwrap().display().to_string(), data)
                })
                .collect();
            let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                ["index.json", "blobs/sha256/l", "manifest.json"],
                "read size {step}"
            );
            assert_eq!(
                entries[1].1, layer,
                "the layer's own zero blocks stay in it"
            );
            assert_eq!(entries[2].1, b"[{}]");
            assert!(
                out.ends_with(&[0u8; 2 * BLOCK]),
                "end-of-archive blocks follow"
            );
            assert_eq!(out.len() % BLOCK, 0);
        }
    }
}
