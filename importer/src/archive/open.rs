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
        // A skippable frame first (pzstd starts every file with one): zstd as well.
        [m, 0x2a, 0x4d, 0x18, ..] if m & 0xf0 == 0x50 => Ok(Compression::Zstd),
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
    // A regular file fills the whole buffer on the first read unless it is shorter.
    let (compression, reader) = decompress(BufReader::with_capacity(READ_BUFFER, file))?;
    Ok(Opened {
        compression,
        file_size,
        reader,
    })
}

/// The tar stream inside `source`, whatever its compression (found from its first bytes, which
/// must be in the buffer after one `fill_buf`). Files go through [`open`]; this serves any
/// other byte source the same way (the fuzz target reads every format through it).
pub fn decompress<R: BufRead + Send + 'static>(
    mut source: R,
) -> Result<(Compression, Box<dyn Read + Send>)> {
    let head = source.fill_buf().context("cannot read the file")?;
    let compression = sniff(head)?;
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(source),
        Compression::Gzip => Box::new(gzip_reader(source)),
        Compression::Zstd => Box::new(ZstdReader::new(source)?),
    };
    Ok((compression, reader))
}

/// Decompress a gzip stream, multi-member (pigz, our exporter) included, with errors that say
/// what is wrong with it.
fn gzip_reader<R: BufRead>(compressed: R) -> impl Read {
    GzipReader(flate2::bufread::MultiGzDecoder::new(compressed))
}

/// Names gzip in its error messages, which flate2 does not.
struct GzipReader<R>(R);

impl<R: Read> Read for GzipReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.0.read(out).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => decompress_error(
                io::ErrorKind::UnexpectedEof,
                "the gzip stream is truncated (the file ends before the compressed data does)",
            ),
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => decompress_error(
                io::ErrorKind::InvalidData,
                format!("the gzip stream is corrupt: {e}"),
            ),
            _ => e,
        })
    }
}

/// Decompresses every frame of a zstd stream, one after another, as `zstd -d` does: pzstd,
/// `zstd --long` splitting, and concatenated files all write several frames, and a reader that
/// stops after the first would cut the archive short. Skippable frames are skipped, and each
/// frame's checksum, when it has one, is verified.
struct ZstdReader<R> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    /// A frame has been started and not yet read to its end.
    in_frame: bool,
}

fn zstd_error(what: &str, e: impl std::fmt::Display) -> io::Error {
    decompress_error(
        io::ErrorKind::InvalidData,
        format!("the zstd stream is corrupt or truncated: {what}: {e}"),
    )
}

/// A compressed stream that cannot be decompressed; its message says which format and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Decompress(String);

fn decompress_error(kind: io::ErrorKind, message: impl Into<String>) -> io::Error {
    io::Error::new(kind, Decompress(message.into()))
}

/// Whether `e` (or what it wraps) is a decompression error of ours rather than one of the tar
/// stream inside.
pub(super) fn is_decompress_error(e: &io::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if err.is::<Decompress>() {
            return true;
        }
        cause = match err.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    false
}

impl<R: BufRead> ZstdReader<R> {
    /// Reads the first frame header at once, so a bad one is reported when the file is opened.
    fn new(source: R) -> Result<ZstdReader<R>> {
        let mut r = ZstdReader {
            source,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        };
        if !r.next_frame().context("the zstd frame header is invalid")? {
            bail!("the zstd stream holds no frame");
        }
        Ok(r)
    }

    /// Start the next (non-skippable) frame; false at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            let header = match read_frame_header(&mut self.source)? {
                FrameStart::Skippable(length) => {
                    let skipped =
                        io::copy(&mut (&mut self.source).take(length.into()), &mut io::sink())?;
                    if skipped < u64::from(length) {
                        return Err(zstd_error("a skippable frame", "it is cut short"));
                    }
                    continue;
                }
                FrameStart::Frame { header, window } => {
                    if window > MAX_ZSTD_WINDOW {
                        return Err(zstd_window_error(window));
                    }
                    if window > RUZSTD_REUSE_WINDOW {
                        // ruzstd refuses such a window on a decoder that decoded a frame
                        // before, though not on a new one.
                        self.decoder = ruzstd::decoding::FrameDecoder::new();
                    }
                    header
                }
            };
            self.decoder
                .reset(header.as_slice())
                .map_err(|e| zstd_error("a frame header", e))?;
            self.in_frame = true;
            return Ok(true);
        }
    }
}

/// The largest window a zstd frame may ask for: 128 MiB, what `zstd -d` accepts without
/// `--long=31` or `--memory` (and what `zstd --long` writes). It is memory the decoder holds.
const MAX_ZSTD_WINDOW: u64 = 1 << 27;

/// The largest window ruzstd accepts on a decoder it reuses for a further frame.
const RUZSTD_REUSE_WINDOW: u64 = 100 << 20;

fn zstd_window_error(window: u64) -> io::Error {
    decompress_error(
        io::ErrorKind::InvalidData,
        format!(
            "a zstd frame needs a {} MiB window, over the {} MiB limit (zstd --long=N with N \
             over 27 wrote it, and zstd -d refuses it too without that option): recompress it \
             with zstd --long or without --long",
            window >> 20,
            MAX_ZSTD_WINDOW >> 20
        ),
    )
}

/// What starts at a zstd frame boundary.
enum FrameStart {
    /// A skippable frame of this many bytes after its 8-byte header.
    Skippable(u32),
    /// A frame: its whole header (magic to content size), and the window it needs.
    Frame { header: Vec<u8>, window: u64 },
}

/// Read one frame header (RFC 8878 3.1.1.1) from `source`, so the window is known before a
/// decoder is given the frame.
fn read_frame_header(source: &mut impl Read) -> io::Result<FrameStart> {
    let cut = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => zstd_error("a frame header", "it is cut short"),
        _ => e,
    };
    let mut header = vec![0u8; 5];
    source.read_exact(&mut header[..4]).map_err(cut)?;
    let magic = u32::from_le_bytes(header[..4].try_into().unwrap());
    if magic & 0xffff_fff0 == 0x184d_2a50 {
        let mut length = [0u8; 4];
        source.read_exact(&mut length).map_err(cut)?;
        return Ok(FrameStart::Skippable(u32::from_le_bytes(length)));
    }
    if magic != 0xfd2f_b528 {
        return Err(zstd_error(
            "a frame header",
            "no zstd magic number where a frame starts",
        ));
    }
    source.read_exact(&mut header[4..]).map_err(cut)?;
    let descriptor = header[4];
    let single_segment = descriptor & 0x20 != 0;
    let dictionary = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let content_size = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let rest = usize::from(!single_segment) + dictionary + content_size;
    header.resize(5 + rest, 0);
    source.read_exact(&mut header[5..]).map_err(cut)?;
    let window = if single_segment {
        let mut fcs = [0u8; 8];
        fcs[..content_size].copy_from_slice(&header[5 + dictionary..]);
        u64::from_le_bytes(fcs) + if content_size == 2 { 256 } else { 0 }
    } else {
        let descriptor = header[5];
        let base = 1u64 << (10 + (descriptor >> 3));
        base + base / 8 * u64::from(descriptor & 7)
    };
    Ok(FrameStart::Frame { header, window })
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame && !self.next_frame()? {
                return Ok(0);
            }
            let d = &mut self.decoder;
            while d.can_collect() < buf.len() && !d.is_finished() {
                let more = buf.len() - d.can_collect();
                let before = (d.bytes_read_from_source(), d.can_collect());
                d.decode_blocks(
                    &mut self.source,
                    ruzstd::decoding::BlockDecodingStrategy::UptoBytes(more),
                )
                .map_err(|e| zstd_error("a block", e))?;
                if (d.bytes_read_from_source(), d.can_collect()) == before && !d.is_finished() {
                    break;
                }
            }
            let n = d.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if !(d.is_finished() && d.can_collect() == 0) {
                // No progress and no error: the input ended inside the frame.
                return Err(decompress_error(
                    io::ErrorKind::UnexpectedEof,
                    "the zstd stream is truncated (the file ends inside a frame)",
                ));
            }
            if let (Some(stored), Some(computed)) =
                (d.get_checksum_from_data(), d.get_calculated_checksum())
            {
                if stored != computed {
                    return Err(zstd_error(
                        "a frame's checksum does not match its content",
                        format!("{stored:08x} != {computed:08x}"),
                    ));
                }
            }
            self.in_frame = false;
        }
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

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn unzstd(data: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut r = ZstdReader::new(io::Cursor::new(data)).map_err(io::Error::other)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_zstd_frame_is_read_and_skippable_frames_skipped() {
        let (a, b) = (vec![7u8; 300_000], b"the second frame".repeat(1000));
        let mut data = zstd(&a);
        // A skippable frame: magic 0x184D2A5x, a length, that many bytes.
        data.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        data.extend_from_slice(&5u32.to_le_bytes());
        data.extend_from_slice(b"skip!");
        data.extend_from_slice(&zstd(&b));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(unzstd(data).unwrap(), want);
    }

    #[test]
    fn a_zstd_stream_cut_short_is_an_error_not_a_shorter_archive() {
        let mut data = zstd(&vec![1u8; 100_000]);
        data.extend_from_slice(&zstd(&b"more".repeat(50_000)));
        let cut = data.len() - 20;
        data.truncate(cut);
        let err = unzstd(data).unwrap_err().to_string();
        assert!(err.contains("zstd"), "{err}");
    }
}
