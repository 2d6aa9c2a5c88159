//! Turning the tar stream an engine saves into the bytes of a bundle archive, in one pass:
//! compressed (gzip on every core, zstd, or not at all), hashed, and inspected on the way.
//!
//! gzip is written as a series of independent gzip members, one per 1 MiB block, compressed
//! on worker threads and written in order. RFC 1952 allows any number of members in a file and
//! every gzip reader decodes them as one stream (`gzip -d`, Go's `compress/gzip` used by
//! containerd and Docker, zlib, flate2's `MultiGzDecoder`); the cost is a few bytes per block
//! and a dictionary reset every MiB, well under 1% of the output.
//!
//! zstd is written as one frame by one thread (ruzstd's encoder has no parallel mode, and a
//! single frame is what every zstd reader expects, including ours).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{anyhow, Context, Result};

use super::registry::layout::Hashing;
use crate::archive::{self, ArchiveInfo, Compression, Limits};

/// Uncompressed bytes per gzip member (and per read from the engine).
const BLOCK: usize = 1 << 20;
/// gzip level: zlib's default, the usual balance of size and speed.
const GZIP_LEVEL: u32 = 6;

/// What was written.
pub struct Written {
    /// Bytes written to the output.
    pub size: u64,
    /// Hex SHA-256 of the output.
    pub sha256: String,
    /// The archive as read from the uncompressed stream.
    pub info: ArchiveInfo,
}

/// Compress `source` into `out` and inspect it. `threads` bounds the gzip workers.
pub fn write_archive<R: Read, W: Write + Send>(
    mut source: R,
    out: W,
    compression: Compression,
    threads: usize,
) -> Result<Written> {
    let mut out = Hashing::new(out);
    let info = thread::scope(|s| -> Result<ArchiveInfo> {
        // The inspector reads the same uncompressed blocks as the compressor.
        let (tee_tx, tee_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(8);
        let inspector = s.spawn(move || {
            archive::inspect_stream(ChannelReader::new(tee_rx), compression, Limits::default())
        });
        let written = match compression {
            Compression::None => plain(&mut source, &mut out, &tee_tx),
            Compression::Gzip => gzip_parallel(s, &mut source, &mut out, &tee_tx, threads),
            Compression::Zstd => zstd(s, &mut source, &mut out, &tee_tx),
        };
        drop(tee_tx);
        let inspected = inspector
            .join()
            .map_err(|_| anyhow!("the archive inspector stopped unexpectedly"))?;
        written?;
        inspected.context("the saved image is not a readable image archive")
    })?;
    out.inner.flush().context("cannot write the archive")?;
    Ok(Written {
        size: out.count,
        sha256: out.hex(),
        info,
    })
}

/// Read up to one block; an empty block means the end of the stream.
fn read_block(source: &mut impl Read) -> Result<Vec<u8>> {
    let mut block = Vec::with_capacity(BLOCK);
    source
        .take(BLOCK as u64)
        .read_to_end(&mut block)
        .context("cannot read the image stream from the engine")?;
    Ok(block)
}

/// Hand a block to the inspector; once it has stopped (its error is reported later), skip it.
fn tee(tx: &SyncSender<Arc<Vec<u8>>>, block: &Arc<Vec<u8>>) {
    let _ = tx.send(Arc::clone(block));
}

fn plain(
    source: &mut impl Read,
    out: &mut impl Write,
    tee_tx: &SyncSender<Arc<Vec<u8>>>,
) -> Result<()> {
    loop {
        let block = Arc::new(read_block(source)?);
        if block.is_empty() {
            return Ok(());
        }
        tee(tee_tx, &block);
        out.write_all(&block).context("cannot write the archive")?;
    }
}

fn gzip_member(block: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(block.len() / 2 + 64),
        flate2::Compression::new(GZIP_LEVEL),
    );
    enc.write_all(block)?;
    enc.finish()
}

fn gzip_parallel<'scope, R: Read>(
    s: &'scope thread::Scope<'scope, '_>,
    source: &mut R,
    out: &mut impl Write,
    tee_tx: &SyncSender<Arc<Vec<u8>>>,
    threads: usize,
) -> Result<()> {
    let workers = threads.max(1);
    let max_in_flight = (workers * 2) as u64;
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Arc<Vec<u8>>)>(workers);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<(u64, io::Result<Vec<u8>>)>();
    for _ in 0..workers {
        let job_rx = Arc::clone(&job_rx);
        let done_tx = done_tx.clone();
        s.spawn(move || loop {
            let job = job_rx.lock().map(|rx| rx.recv());
            let Ok(Ok((seq, block))) = job else { return };
            if done_tx.send((seq, gzip_member(&block))).is_err() {
                return;
            }
        });
    }
    drop(done_tx);

    let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut next_out = 0u64;
    let mut next_in = 0u64;
    let mut flush = |pending: &mut BTreeMap<u64, Vec<u8>>,
                     next_out: &mut u64,
                     done: (u64, io::Result<Vec<u8>>)|
     -> Result<()> {
        let (seq, member) = done;
        pending.insert(seq, member.context("gzip compression failed")?);
        while let Some(member) = pending.remove(next_out) {
            out.write_all(&member).context("cannot write the archive")?;
            *next_out += 1;
        }
        Ok(())
    };
    loop {
        let block = Arc::new(read_block(source)?);
        if block.is_empty() {
            break;
        }
        tee(tee_tx, &block);
        job_tx
            .send((next_in, block))
            .map_err(|_| anyhow!("the gzip workers stopped unexpectedly"))?;
        next_in += 1;
        while let Ok(done) = done_rx.try_recv() {
            flush(&mut pending, &mut next_out, done)?;
        }
        // Bound memory: wait for the oldest blocks once enough are in flight.
        while next_in - next_out > max_in_flight {
            let done = done_rx
                .recv()
                .map_err(|_| anyhow!("the gzip workers stopped unexpectedly"))?;
            flush(&mut pending, &mut next_out, done)?;
        }
    }
    drop(job_tx);
    for done in done_rx {
        flush(&mut pending, &mut next_out, done)?;
    }
    if next_out != next_in {
        return Err(anyhow!("the gzip workers stopped unexpectedly"));
    }
    Ok(())
}

fn zstd<'scope, R: Read>(
    s: &'scope thread::Scope<'scope, '_>,
    source: &mut R,
    out: &mut impl Write,
    tee_tx: &SyncSender<Arc<Vec<u8>>>,
) -> Result<()> {
    let (in_tx, in_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(4);
    // Unbounded, so the encoder never waits on us while we wait on it; what piles up is at
    // most what it compresses while we read one block.
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>();
    // The encoder reads and writes through channels that never fail, so it cannot stop half
    // way; errors (a failed read from the engine, a full disk) are handled on this side, and
    // dropping our ends of the channels lets it run out.
    s.spawn(move || {
        ruzstd::encoding::compress(
            ChannelReader::new(in_rx),
            ChannelWriter(out_tx),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
    });
    let write = |out: &mut dyn Write, chunk: Vec<u8>| -> Result<()> {
        out.write_all(&chunk).context("cannot write the archive")
    };
    loop {
        let block = Arc::new(read_block(source)?);
        if block.is_empty() {
            break;
        }
        tee(tee_tx, &block);
        in_tx
            .send(block)
            .map_err(|_| anyhow!("the zstd encoder stopped unexpectedly"))?;
        while let Ok(chunk) = out_rx.try_recv() {
            write(out, chunk)?;
        }
    }
    drop(in_tx);
    for chunk in out_rx {
        write(out, chunk)?;
    }
    Ok(())
}

/// A reader over blocks sent through a channel; the end of the channel is the end of the stream.
struct ChannelReader {
    rx: Receiver<Arc<Vec<u8>>>,
    block: Arc<Vec<u8>>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<Arc<Vec<u8>>>) -> Self {
        ChannelReader {
            rx,
            block: Arc::new(Vec::new()),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.block = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A writer that sends what it is given through a channel; once the other side has gone, it
/// drops the data (that side has already failed and reports why).
struct ChannelWriter(mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A docker-archive with one tiny image, built in memory.
    fn tiny_archive(layer_size: usize) -> Vec<u8> {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_hex = crate::bundle::sha256_reader(&config[..]).unwrap();
        let mut layer_tar = tar::Builder::new(Vec::new());
        let data: Vec<u8> = (0..layer_size).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        layer_tar.append_data(&mut h, "data", &data[..]).unwrap();
        let layer = layer_tar.into_inner().unwrap();
        let manifest = format!(
            r#"[{{"Config":"{config_hex}.json","RepoTags":["example.com/t:1"],"Layers":["l/layer.tar"]}}]"#
        );
        let mut b = tar::Builder::new(Vec::new());
        for (name, bytes) in [
            (format!("{config_hex}.json"), config.to_vec()),
            ("l/layer.tar".to_string(), layer),
            ("manifest.json".to_string(), manifest.into_bytes()),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &bytes[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn decompress(data: &[u8], compression: Compression) -> Vec<u8> {
        let mut out = Vec::new();
        match compression {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Compression::Zstd => {
                ruzstd::decoding::StreamingDecoder::new(data)
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    #[test]
    fn every_compression_round_trips_hashes_what_it_wrote_and_inspects_the_image() {
        // Several blocks, so gzip writes several members out of several workers.
        let tar = tiny_archive(3 * BLOCK + 12345);
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let mut out = Vec::new();
            let w = write_archive(&tar[..], &mut out, compression, 3).unwrap();
            assert_eq!(w.size, out.len() as u64, "{compression}");
            assert_eq!(w.sha256, crate::bundle::sha256_reader(&out[..]).unwrap());
            assert_eq!(decompress(&out, compression), tar, "{compression}");
            assert_eq!(w.info.images[0].names, vec!["example.com/t:1"]);
            assert_eq!(w.info.compression, compression);
            if compression == Compression::Gzip {
                let members = out.windows(3).filter(|w| w == &[0x1f, 0x8b, 8]).count();
                assert!(members >= 4, "{members} gzip members");
            }
        }
    }

    #[test]
    fn a_stream_that_is_not_an_image_archive_is_refused() {
        let err = write_archive(
            &b"Error: No such image"[..],
            Vec::new(),
            Compression::Gzip,
            2,
        )
        .err()
        .unwrap();
        assert!(
            format!("{err:#}").contains("not a readable image archive"),
            "{err:#}"
        );
    }
}
