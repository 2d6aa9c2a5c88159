//! Feeding an archive to `ctr images import -` on its stdin while the same bytes are
//! inspected (one pass). The last bytes are held back until the whole archive has been read and
//! checked, so that an archive that is bad or has nothing for the node's platform makes ctr
//! fail on its own (cleaning up after itself) before it creates any image; an `index.json` that
//! names the images as this reading does is put in before the end when ctr would name them
//! short.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::process::ChildStdin;

use anyhow::anyhow;

use crate::archive::{
    inspect_stream_detailed, ArchiveInfo, Compression, Inspected, Limits, Platform,
};

/// The last bytes of an archive are held back from `ctr` until the whole archive has been
/// read and checked: `ctr` cannot finish an import before it has seen the end of the tar,
/// so a bad or unsuitable archive is stopped (ctr killed) before it creates any image.
const HOLD_BACK: usize = 64 * 1024;

/// Bytes are written to ctr's stdin in chunks at least this large.
const CHUNK: usize = 256 * 1024;

/// Why feeding an archive to ctr stopped.
pub enum Fed {
    /// The archive is bad or unsuitable (our reading of it failed).
    Archive(anyhow::Error),
    /// ctr stopped reading its stdin.
    CtrStopped,
}

/// Stream `tar` into ctr's stdin while inspecting it; release the held-back tail (and so let
/// ctr finish) only when the archive read cleanly and has an image for `platform`.
pub fn feed(
    stdin: ChildStdin,
    tar: &mut dyn Read,
    platform: &Platform,
    held: &dyn Fn(&str) -> bool,
) -> Result<ArchiveInfo, Fed> {
    feed_with(stdin, tar, platform, held, &|i| {
        i.oci_index_for_containerd()
    })
}

/// [`feed`] with the `index.json` put in before the end chosen by `index` (None: the
/// archive's own): another loader reads the index in its own way (podman).
pub fn feed_with(
    stdin: ChildStdin,
    tar: &mut dyn Read,
    platform: &Platform,
    held: &dyn Fn(&str) -> bool,
    index: &dyn Fn(&Inspected) -> anyhow::Result<Option<Vec<u8>>>,
) -> Result<ArchiveInfo, Fed> {
    grow_pipe(&stdin);
    feed_into(stdin, tar, platform, held, index)
}

/// [`feed_with`] into any writer (a file the loader reads once it is whole); a failed write
/// is [`Fed::CtrStopped`].
pub fn feed_into<W: Write>(
    sink: W,
    tar: &mut dyn Read,
    platform: &Platform,
    held: &dyn Fn(&str) -> bool,
    index: &dyn Fn(&Inspected) -> anyhow::Result<Option<Vec<u8>>>,
) -> Result<ArchiveInfo, Fed> {
    let mut tee = Tee {
        src: tar,
        sink: HoldBack::new(sink),
        sink_failed: false,
    };
    // On failure ctr is made to fail on its own (see `HoldBack::abort`), so that it
    // cleans up after itself: a killed ctr leaves a half-written ingest behind that
    // makes the next import of the same layer fail.
    let inspected = inspect_stream_detailed(&mut tee, Compression::None, Limits::default());
    if tee.sink_failed {
        return Err(Fed::CtrStopped);
    }
    let inspected = inspected.map(|mut i| {
        i.complete_with(held);
        i
    });
    let (info, index) = match inspected.and_then(|i| {
        let index = index(&i)?.map(|x| (i.end_of_entries, x));
        Ok((i.info, index))
    }) {
        Ok(i) => i,
        Err(e) => {
            tee.sink.abort();
            return Err(Fed::Archive(e));
        }
    };
    if !info
        .images
        .iter()
        .any(|i| i.for_platform(platform).is_some())
    {
        tee.sink.abort();
        return Err(Fed::Archive(anyhow!("{}", info.no_image_for(platform))));
    }
    let committed = match index {
        Some((end, index)) => tee.sink.commit_with_entry(end, "index.json", &index),
        None => tee.sink.commit(),
    };
    match committed {
        Ok(()) => Ok(info),
        Err(_) => Err(Fed::CtrStopped),
    }
}

/// Passes what it reads from `src` on to `sink`.
struct Tee<'a, W: Write> {
    src: &'a mut dyn Read,
    sink: HoldBack<W>,
    sink_failed: bool,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        if n > 0 {
            if let Err(e) = self.sink.write(&buf[..n]) {
                self.sink_failed = true;
                return Err(io::Error::new(e.kind(), "ctr stopped reading the archive"));
            }
        }
        Ok(n)
    }
}

/// Writes through to `inner` all but the last [`HOLD_BACK`] bytes, until [`HoldBack::commit`].
/// Bytes are passed on in chunks of at least [`CHUNK`], so the pipe sees few large writes
/// whatever size the reads are.
struct HoldBack<W: Write> {
    inner: Option<W>,
    tail: VecDeque<u8>,
    /// Bytes passed on to `inner` so far.
    delivered: u64,
}

impl<W: Write> HoldBack<W> {
    fn new(inner: W) -> HoldBack<W> {
        HoldBack {
            inner: Some(inner),
            tail: VecDeque::with_capacity(HOLD_BACK + CHUNK * 2),
            delivered: 0,
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let total = self.tail.len() + data.len();
        if total < HOLD_BACK + CHUNK {
            self.tail.extend(data);
            return Ok(());
        }
        let inner = self.inner.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let out = total - HOLD_BACK;
        let from_tail = out.min(self.tail.len());
        let (a, b) = self.tail.as_slices();
        let from_a = from_tail.min(a.len());
        inner.write_all(&a[..from_a])?;
        inner.write_all(&b[..from_tail - from_a])?;
        self.tail.drain(..from_tail);
        inner.write_all(&data[..out - from_tail])?;
        self.tail.extend(&data[out - from_tail..]);
        self.delivered += out as u64;
        Ok(())
    }

    /// Send the held-back bytes and close the stream.
    fn commit(&mut self) -> io::Result<()> {
        let mut inner = self.inner.take().ok_or(io::ErrorKind::BrokenPipe)?;
        let (a, b) = self.tail.as_slices();
        inner.write_all(a)?;
        inner.write_all(b)?;
        self.tail.clear();
        inner.flush()
    }

    /// Send the held-back bytes up to `end` (where the archive's last entry ends), then an
    /// entry `name` holding `data`, then the end-of-archive blocks, and close the stream.
    fn commit_with_entry(&mut self, end: u64, name: &str, data: &[u8]) -> io::Result<()> {
        let held = self.tail.len() as u64;
        if end < self.delivered || end > self.delivered + held {
            self.abort();
            return Err(io::Error::other(
                "the archive's last entry ends outside the bytes held back",
            ));
        }
        self.tail.truncate((end - self.delivered) as usize);
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.tail.extend(header.as_bytes());
        self.tail.extend(data);
        let pad = (512 - data.len() % 512) % 512 + 1024;
        self.tail.extend(std::iter::repeat_n(0u8, pad));
        self.commit()
    }

    /// End the stream so that the reader fails: tar entries and headers are 512-byte blocks,
    /// so a stream that stops short of a block boundary is always a truncated archive (an
    /// end exactly on a boundary could pass for a shorter, complete one). The held-back tail,
    /// which holds the archive's end, is never sent.
    fn abort(&mut self) {
        if let Some(mut inner) = self.inner.take() {
            if self.delivered % 512 == 0 {
                let _ = inner.write_all(&[0xff]);
            }
        }
        self.tail.clear();
    }
}

/// Ask for a 1 MiB pipe to ctr instead of the default 64 KiB: fewer wake-ups of both sides
/// per archive (switching back in after each blocked write is a large share of the
/// importer's own time). Best effort: the kernel may cap it (`/proc/sys/fs/pipe-max-size`).
fn grow_pipe(pipe: &ChildStdin) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::fcntl(
        pipe.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can look into after the HoldBack has consumed it.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_end_of_the_stream_is_held_back_until_commit() {
        let out = Shared::default();
        let mut h = HoldBack::new(out.clone());
        let data: Vec<u8> = (0..HOLD_BACK * 5 + 123).map(|i| i as u8).collect();
        for chunk in data.chunks(10_000) {
            h.write(chunk).unwrap();
        }
        let passed = out.0.lock().unwrap().len();
        assert!(passed <= data.len() - HOLD_BACK, "{passed}");
        assert_eq!(&out.0.lock().unwrap()[..], &data[..passed]);
        h.commit().unwrap();
        assert_eq!(&out.0.lock().unwrap()[..], &data[..]);
    }

    #[test]
    fn an_aborted_stream_never_ends_on_a_tar_block_boundary() {
        for len in [
            HOLD_BACK + CHUNK,
            HOLD_BACK + CHUNK + 512 * 3,
            HOLD_BACK * 3 + 1,
        ] {
            let out = Shared::default();
            let mut h = HoldBack::new(out.clone());
            h.write(&vec![0u8; len]).unwrap();
            h.abort();
            let sent = out.0.lock().unwrap().len();
            assert!(sent < len, "the tail is never sent");
            assert_ne!(sent % 512, 0, "{len}: {sent} bytes end on a block boundary");
        }
    }
}
