//! The blobs of an archive's image into one repository: each looked up first (`HEAD`, or a
//! mount from a repository this push put it in), the configs sent from the bytes the first
//! pass kept, and the layers the registry lacks uploaded in one more pass over the archive,
//! each as its entry streams by (through a channel to the upload, which reads it in chunks). A
//! cut upload resumes from a fresh read of the archive up to that entry and offset.
//!
//! A layer another worker is sending is not waited for while this worker holds blobs of its
//! own (two workers could wait on each other): it is taken up after the pass, on its own.

use std::collections::HashMap;
use std::io::{self, Cursor, Read};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};

use super::image::{Held, Member};
use super::send::{Begin, Counts, Pusher};
use crate::archive::{self, EntryData, EntrySink, Limits};
use crate::export::registry::upload::Dest;

impl Pusher<'_> {
    /// Every blob of `held` into `dest`.
    pub(super) fn archive_blobs(&self, dest: &Dest, held: &Held, counts: &Counts) -> Result<()> {
        let mut wanted = HashMap::new();
        let mut busy = Vec::new();
        let mut first_error = None;
        for m in &held.members {
            let begun = match self.begin(dest, (&m.digest, m.size), counts, false) {
                Ok(b) => b,
                Err(e) => {
                    first_error.get_or_insert(e);
                    break;
                }
            };
            match (begun, held.bytes.get(&m.digest)) {
                (Begin::Done, _) => {}
                (Begin::Busy, _) => busy.push(m),
                (Begin::Upload(location), Some(bytes)) => {
                    let sent = self.upload_bytes(dest, m, location, bytes);
                    if let Err(e) = self.finish(&m.digest, m.size, sent, dest, counts) {
                        first_error.get_or_insert(e);
                        break;
                    }
                }
                (Begin::Upload(location), None) => {
                    wanted.insert(m.name.clone(), (m, location));
                }
            }
        }
        if let Some(e) = first_error {
            for (m, _) in wanted.values() {
                self.settle(&m.digest, None);
            }
            return Err(e);
        }
        self.pass(dest, held, wanted, counts)?;
        for m in busy {
            if let Begin::Upload(location) = self.begin(dest, (&m.digest, m.size), counts, true)? {
                let one = HashMap::from([(m.name.clone(), (m, location))]);
                self.pass(dest, held, one, counts)?;
            }
        }
        Ok(())
    }

    fn upload_bytes(&self, dest: &Dest, m: &Member, location: String, bytes: &[u8]) -> Result<()> {
        let open = |offset: u64| -> Result<Box<dyn Read + Send>> {
            let from = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            Ok(Box::new(Cursor::new(bytes[from..].to_vec())))
        };
        self.upload_from(dest, (&m.digest, m.size), location, &open)
    }

    /// One pass over the archive uploading the `wanted` entries (by entry name), each begun
    /// already; every one of them is settled, sent or not.
    fn pass(
        &self,
        dest: &Dest,
        held: &Held,
        wanted: HashMap<String, (&Member, String)>,
        counts: &Counts,
    ) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let mut sink = Streamer {
            pusher: self,
            dest,
            path: &held.path,
            wanted,
            counts,
        };
        let read = archive::inspect_path_into(&held.path, Limits::default(), &mut sink);
        let left: Vec<&Member> = sink.wanted.values().map(|(m, _)| *m).collect();
        for m in &left {
            self.settle(&m.digest, None);
        }
        read.with_context(|| format!("cannot read {} again", held.path.display()))?;
        if let Some(m) = left.first() {
            return Err(anyhow!(
                "{} no longer holds {} ({})",
                held.path.display(),
                m.digest,
                m.name
            ));
        }
        Ok(())
    }
}

/// The second pass's reader of entries: uploads the ones wanted as they stream by.
struct Streamer<'p, 'm, 't> {
    pusher: &'p Pusher<'t>,
    dest: &'p Dest<'t>,
    path: &'p Path,
    wanted: HashMap<String, (&'m Member, String)>,
    counts: &'p Counts,
}

impl EntrySink for Streamer<'_, '_, '_> {
    fn file(&mut self, name: &str, _size: u64, data: EntryData<'_>) -> Result<()> {
        let Some((m, location)) = self.wanted.remove(name) else {
            return Ok(());
        };
        let sent = match data {
            EntryData::Bytes(b) => self.pusher.upload_bytes(self.dest, m, location, b),
            EntryData::Stream(r) => self.stream(m, location, r),
        };
        self.pusher
            .finish(&m.digest, m.size, sent, self.dest, self.counts)
    }
}

impl Streamer<'_, '_, '_> {
    /// Upload `m` from the entry `r` while it streams by: the entry is sent through a channel
    /// the upload reads on a thread of its own.
    fn stream(&self, m: &Member, location: String, r: &mut dyn Read) -> Result<()> {
        let (writer, reader) = channel();
        let first = Mutex::new(Some(reader));
        std::thread::scope(|s| {
            let up = s.spawn(|| {
                let open = |offset: u64| -> Result<Box<dyn Read + Send>> {
                    if offset == 0 {
                        if let Some(r) = crate::sync::lock(&first).take() {
                            return Ok(Box::new(r));
                        }
                    }
                    reopen(self.path, &m.name, offset)
                };
                let sent = self
                    .pusher
                    .upload_from(self.dest, (&m.digest, m.size), location, &open);
                drop(crate::sync::lock(&first).take());
                sent
            });
            // The upload hangs up when it fails or resumes from a fresh read: then this
            // copy stops, and the pass skips the rest of the entry.
            pump(&mut r.take(m.size), &writer);
            drop(writer);
            up.join()
                .unwrap_or_else(|_| Err(anyhow!("the upload of {} panicked", m.digest)))
        })
    }
}

/// The entry `member` of the archive at `path` from `offset` on, read afresh on a thread of
/// its own (after a cut upload).
fn reopen(path: &Path, member: &str, offset: u64) -> Result<Box<dyn Read + Send>> {
    let (writer, reader) = channel();
    let opened = archive::open(path)?;
    let member = member.to_string();
    std::thread::spawn(move || {
        let mut tar = tar::Archive::new(opened.reader);
        let Ok(entries) = tar.entries() else { return };
        for entry in entries {
            let Ok(mut entry) = entry else { return };
            let raw = entry.path_bytes();
            let name = String::from_utf8_lossy(&raw);
            if name.trim_start_matches("./") == member {
                let _ = io::copy(&mut (&mut entry).take(offset), &mut io::sink());
                pump(&mut entry, &writer);
                return;
            }
        }
    });
    Ok(Box::new(reader))
}

/// The reading end of a channel of byte blocks; the end of the channel reads as the end.
struct Blocks {
    rx: Receiver<Vec<u8>>,
    block: Vec<u8>,
    at: usize,
}

impl Read for Blocks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            match self.rx.recv() {
                Ok(b) => (self.block, self.at) = (b, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.block.len() - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A channel of a few blocks: what a reader on one thread hands one on another.
fn channel() -> (SyncSender<Vec<u8>>, Blocks) {
    let (tx, rx) = sync_channel(4);
    let blocks = Blocks {
        rx,
        block: Vec::new(),
        at: 0,
    };
    (tx, blocks)
}

/// Everything `r` gives into `tx`, until it ends, fails, or the other end hangs up.
fn pump(r: &mut dyn Read, tx: &SyncSender<Vec<u8>>) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        }
    }
}
