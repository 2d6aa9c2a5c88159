//! Opening an archive as a stream of tar bytes, whatever its compression.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Compression of an archive file, found from its first bytes (never from its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// Read buffer for archive files: large enough that the kernel reads ahead in big chunks.
const READ_BUFFER: usize = 256 * 1024;

/// An archive opened for reading: the decompressed tar stream.
pub struct Opened {
    pub compression: Compression,
    /// Size of the file on disk.
    pub file_size: u64,
    pub reader: Box<dyn Read + Send>,
}

/// Look at the first bytes of a file and say how it is compressed.
pub fn sniff(head: &[u8]) -> Result<Compression> {
    match head {
        [] => bail!("the file is empty"),
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => {
            bail!("the file is xz-compressed, which is not supported: recompress it with gzip or zstd")
        }
        [b'B', b'Z', b'h', ..] => {
            bail!("the file is bzip2-compressed, which is not supported: recompress it with gzip or zstd")
        }
        _ if is_tar_header(head) => Ok(Compression::None),
        _ if head.len() < 512 => bail!(
            "the file is {} bytes long, too short to be a tar archive",
            head.len()
        ),
        _ => bail!("the file is neither a tar archive nor gzip- or zstd-compressed"),
    }
}

/// A tar header block: "ustar" magic at 257, or (old v7 tar) a valid header checksum.
fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    let stored = std::str::from_utf8(&head[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let computed: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(computed) && head[0] != 0
}

/// Open an archive file for streaming. A FIFO or device is refused before anything is read,
/// so a stray pipe named `x.tar` cannot block the run.
pub fn open(path: &Path) -> Result<Opened> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    from_file(file, meta.len())
}

fn from_file(file: File, file_size: u64) -> Result<Opened> {
    let mut buf = BufReader::with_capacity(READ_BUFFER, file);
    // A regular file fills the whole buffer on the first read unless it is shorter.
    let head = buf.fill_buf().context("cannot read the file")?;
    let compression = sniff(head)?;
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(gzip_reader(buf)),
        Compression::Zstd => Box::new(ZstdReader(
            ruzstd::decoding::StreamingDecoder::new(buf)
                .map_err(|e| anyhow::anyhow!("the zstd frame header is invalid: {e}"))?,
        )),
    };
    Ok(Opened {
        compression,
        file_size,
        reader,
    })
}

/// Decompress a gzip stream, multi-member (pigz, our exporter) included, with errors that say
/// what is wrong with it.
pub fn gzip_reader<R: BufRead>(compressed: R) -> impl Read {
    GzipReader(flate2::bufread::MultiGzDecoder::new(compressed))
}

/// Names gzip in its error messages, which flate2 does not.
struct GzipReader<R>(R);

impl<R: Read> Read for GzipReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.0.read(out).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the gzip stream is truncated (the file ends before the compressed data does)",
            ),
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the gzip stream is corrupt: {e}"),
            ),
            _ => e,
        })
    }
}

struct ZstdReader<R>(R);

impl<R: Read> Read for ZstdReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.0.read(out).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the zstd stream is corrupt or truncated: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_found_from_magic_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]).unwrap(), Compression::Gzip);
        assert_eq!(
            sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap(),
            Compression::Zstd
        );
        let mut header = tar::Header::new_ustar();
        header.set_path("manifest.json").unwrap();
        header.set_size(0);
        header.set_cksum();
        assert_eq!(sniff(header.as_bytes()).unwrap(), Compression::None);
        let mut old = tar::Header::new_old();
        old.set_path("manifest.json").unwrap();
        old.set_size(0);
        old.set_cksum();
        assert_eq!(sniff(old.as_bytes()).unwrap(), Compression::None);
    }

    #[test]
    fn non_archives_are_refused_with_a_reason() {
        assert!(sniff(&[]).unwrap_err().to_string().contains("empty"));
        assert!(sniff(b"hello")
            .unwrap_err()
            .to_string()
            .contains("too short"));
        assert!(sniff(&[0x42u8; 600])
            .unwrap_err()
            .to_string()
            .contains("neither"));
        assert!(sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0])
            .unwrap_err()
            .to_string()
            .contains("xz"));
    }
}
