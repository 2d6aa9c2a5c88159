//! Blobs into containerd's content store while the archive streams by: a blob named by its
//! digest is looked up first (`Content.Info`) and sent only when it is missing. A layer whose
//! digest the archive does not state (docker-archive `layer.tar`) is looked up by the diff ID
//! a first look at a plain tar's headers gave it; in a compressed stream, a layer of the size
//! of a blob containerd has is hashed here, unsent, and sent in a second pass only when its
//! digest turns out to be missing; any other is hashed while it is sent.
//!
//! Everything before the first write only reads: the archive, and what containerd has. The
//! first write waits for the gate (the archive's turn to store, and the disk preflight), and
//! what was looked up before it is looked up again after it: an archive before this one may
//! have stored it meanwhile.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use anyhow::Result;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    content_client::ContentClient, AbortRequest, AddResourceRequest, Resource,
};
use sha2::{Digest, Sha256};

use super::client::{CallError, Conn};
use crate::archive::{inspect_stream_into, Compression, EntryData, EntrySink, Limits};
use crate::runtime::Gate;

/// A blob of the archive as it is now in the content store.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    /// The first bytes of the blob, when they were read (compression sniffing).
    pub head: Vec<u8>,
}

/// How a layer whose digest the archive does not state next to it (a docker-archive
/// `layer.tar`) is looked up before it is sent.
pub enum Lookup {
    /// Not looked up: hashed while it is sent.
    Never,
    /// By the diff ID a first look at a plain tar's headers gave it: name -> diff ID.
    DiffIds(HashMap<String, String>),
    /// In a compressed stream: a layer of the size of a blob containerd has is hashed first,
    /// unsent; what then turns out to be missing is sent by a second pass over the archive.
    BySize,
}

/// Which pass over the archive the ingest is in.
enum Pass {
    /// Every file of the archive is stored (or found stored).
    First,
    /// Only the layers the first pass hashed but did not send: name -> (digest, size).
    Second(HashMap<String, (String, u64)>),
}

/// What the pass over the archive stored, and what it kept for assembling the images.
pub struct Ingest<'a> {
    conn: &'a Conn,
    lease: String,
    /// Small files (JSON documents), by archive name.
    docs: HashMap<String, Vec<u8>>,
    /// Every stored file, by archive name.
    blobs: HashMap<String, Blob>,
    links: HashMap<String, String>,
    /// Bytes sent to containerd, and bytes not sent because containerd had them.
    sent: u64,
    skipped: u64,
    seq: usize,
    lookup: Lookup,
    pass: Pass,
    /// Sizes of the blobs containerd has, with their digests, for [`Lookup::BySize`] (`None`:
    /// not looked up yet).
    sizes: Option<HashMap<u64, HashSet<String>>>,
    /// Layers hashed but not sent, containerd lacking them: name -> (digest, size). A second
    /// pass over the archive sends them.
    unsent: HashMap<String, (String, u64)>,
    /// Passed before the first write ([`Ingest::open_gate`]).
    gate: Option<Gate<'a>>,
    gate_passed: bool,
}

const METADATA: &[&str] = &["manifest.json", "index.json", "oci-layout", "repositories"];

impl<'a> Ingest<'a> {
    pub fn new(conn: &'a Conn, lease: &str, gate: Option<Gate<'a>>, lookup: Lookup) -> Ingest<'a> {
        Ingest {
            conn,
            lease: lease.to_string(),
            docs: HashMap::new(),
            blobs: HashMap::new(),
            links: HashMap::new(),
            sent: 0,
            skipped: 0,
            seq: 0,
            lookup,
            pass: Pass::First,
            sizes: None,
            unsent: HashMap::new(),
            gate,
            gate_passed: false,
        }
    }

    /// Bytes sent to containerd so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes not sent because containerd had them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Keep a document made for the archive (a manifest or config written for a
    /// docker-archive image) under `name`, beside those the archive held.
    pub fn keep_doc(&mut self, name: String, data: Vec<u8>) {
        self.docs.insert(name, data);
    }

    /// The layers the first pass hashed but did not send, containerd lacking them, sent now
    /// from the archive at `path` read again. Nothing to do when there are none.
    pub fn send_left_out(&mut self, path: &Path) -> Result<()> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let opened = crate::archive::open_ahead(path)?;
        self.pass = Pass::Second(std::mem::take(&mut self.unsent));
        let read = inspect_stream_into(opened.reader, Compression::None, Limits::default(), self);
        self.pass = Pass::First;
        read.map(|_| ())
    }

    /// Pass the gate, if not yet: whether this call passed it. What was looked up before is
    /// then to be looked up again, and the listing of sizes is taken afresh.
    pub fn open_gate(&mut self) -> Result<bool> {
        if self.gate_passed {
            return Ok(false);
        }
        if let Some(gate) = self.gate {
            gate()?;
        }
        self.gate_passed = true;
        self.sizes = None;
        Ok(true)
    }

    /// What `look` finds; when it finds nothing before the gate, the gate is passed (a write
    /// is coming) and `look` asked again, since the archive before may have stored it meanwhile.
    fn look_across_gate<T>(
        &mut self,
        mut look: impl FnMut(&mut Self) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        match look(self)? {
            None if self.open_gate()? => look(self),
            found => Ok(found),
        }
    }

    /// The stored blob an archive name stands for, following links.
    pub fn blob(&self, name: &str) -> Option<&Blob> {
        let mut name = name;
        for _ in 0..8 {
            if let Some(b) = self.blobs.get(name) {
                return Some(b);
            }
            name = self.links.get(name)?;
        }
        None
    }

    /// The kept document an archive name stands for, following links.
    pub fn doc(&self, name: &str) -> Option<&[u8]> {
        let mut name = name;
        for _ in 0..8 {
            if let Some(d) = self.docs.get(name) {
                return Some(d);
            }
            name = self.links.get(name)?;
        }
        None
    }

    /// Is `digest` in the content store? If so it is held by the lease, so that containerd's
    /// garbage collector cannot take it before the image that needs it is created.
    pub fn present(&self, digest: &str) -> Result<bool> {
        Ok(self.held_size(digest)?.is_some())
    }

    /// The size of blob `digest` in the content store, if it is there, the blob added to the
    /// lease first and looked up after: looked up first, a blob that another archive's
    /// import wrote and its failure is collecting (its lease deleted, a collection run) would
    /// be counted here and be gone before it was held. A digest held and not there is only
    /// a name in the lease.
    pub fn held_size(&self, digest: &str) -> Result<Option<u64>> {
        self.hold(digest, "content")?;
        self.size_of(digest)
    }

    /// Is `digest` in the content store?
    pub fn exists(&self, digest: &str) -> Result<bool> {
        Ok(self.size_of(digest)?.is_some())
    }

    /// The size of blob `digest` in the content store, if it is there.
    pub fn size_of(&self, digest: &str) -> Result<Option<u64>> {
        Ok(self.conn.content_size(digest)?)
    }

    /// Whether containerd has a blob of exactly `size` bytes (one listing per archive).
    fn has_size(&mut self, size: u64) -> Result<bool> {
        if self.sizes.is_none() {
            let infos = self.conn.list_content()?;
            let mut sizes: HashMap<u64, HashSet<String>> = HashMap::new();
            for i in infos {
                sizes
                    .entry(i.size.max(0) as u64)
                    .or_default()
                    .insert(i.digest);
            }
            self.sizes = Some(sizes);
        }
        Ok(self.sizes.as_ref().is_some_and(|s| s.contains_key(&size)))
    }

    /// Add a resource (`content`, or `snapshots/NAME`) to the archive's lease.
    pub fn hold(&self, id: &str, kind: &str) -> Result<()> {
        let mut leases = LeasesClient::new(self.conn.channel.clone());
        let req = self.conn.req(
            AddResourceRequest {
                id: self.lease.to_string(),
                resource: Some(Resource {
                    id: id.to_string(),
                    r#type: kind.to_string(),
                }),
            },
            None,
        );
        self.conn
            .call("adding to the import's lease", leases.add_resource(req))?;
        Ok(())
    }

    fn next_ref(&mut self) -> String {
        self.seq += 1;
        format!("{}-{}", self.lease, self.seq)
    }

    /// Store a blob whose digest is known before its bytes, unless containerd has it.
    pub fn store_known(
        &mut self,
        name: &str,
        digest: &str,
        size: u64,
        data: EntryData<'_>,
    ) -> Result<Blob> {
        let mut head = Vec::new();
        if let EntryData::Bytes(b) = &data {
            head = b[..b.len().min(8)].to_vec();
        }
        let present = self.look_across_gate(|i| Ok(i.present(digest)?.then_some(())))?;
        if present.is_some() {
            self.skipped += size;
            return Ok(Blob {
                digest: digest.to_string(),
                size,
                head,
            });
        }
        let reference = self.next_ref();
        let written = match data {
            EntryData::Bytes(b) => self.conn.write(
                &self.lease,
                (&reference, name),
                Some(digest),
                size,
                &mut std::io::Cursor::new(b),
            ),
            EntryData::Stream(r) => {
                self.conn
                    .write(&self.lease, (&reference, name), Some(digest), size, r)
            }
        };
        let written = self.abandon_on_error(&reference, written)?;
        self.count(&written, size);
        if written.existed {
            // Committed meanwhile by someone else (a parallel import): containerd 2 does not
            // put it in this upload's lease, so it is added here.
            self.hold(digest, "content")?;
        }
        Ok(Blob {
            digest: digest.to_string(),
            size,
            head: written.head,
        })
    }

    /// Store a blob whose digest is learnt while it is sent.
    fn store_unknown(&mut self, name: &str, size: u64, r: &mut dyn Read) -> Result<Blob> {
        self.open_gate()?;
        let reference = self.next_ref();
        let written = self
            .conn
            .write(&self.lease, (&reference, name), None, size, r);
        let written = self.abandon_on_error(&reference, written)?;
        self.count(&written, size);
        if written.existed {
            // Sent for nothing, but now known: keep it through the lease all the same.
            self.hold(&written.digest, "content")?;
        }
        Ok(Blob {
            digest: written.digest,
            size,
            head: written.head,
        })
    }

    /// A failed upload is abandoned at once (`Content.Abort`), so its partial data frees the
    /// disk now rather than at containerd's next garbage collection.
    fn abandon_on_error(
        &self,
        reference: &str,
        written: Result<super::client::Written>,
    ) -> Result<super::client::Written> {
        if written.is_err() {
            let _ = abort_upload(self.conn, reference);
        }
        written
    }

    fn count(&mut self, w: &super::client::Written, size: u64) {
        if w.existed {
            self.skipped += size;
        } else {
            self.sent += size;
        }
    }
}

/// Abandon the upload `reference` (`Content.Abort`): containerd deletes its partial data at
/// once. Whether there was one to abandon. containerd may hold an upload's lock for a moment
/// after its writer has gone, so a refusal is tried again for up to 2 s.
pub fn abort_upload(conn: &Conn, reference: &str) -> Result<bool, CallError> {
    let mut refused = None;
    for _ in 0..20 {
        let mut content = ContentClient::new(conn.channel.clone());
        let req = conn.req(
            AbortRequest {
                r#ref: reference.to_string(),
            },
            None,
        );
        match conn.call("abandoning an upload", content.abort(req)) {
            Ok(_) => return Ok(true),
            Err(CallError::NotFound(_)) => return Ok(false),
            Err(e) => refused = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(refused.unwrap_or_else(|| CallError::Other(anyhow::anyhow!("no answer"))))
}

/// `blobs/sha256/HEX` -> `sha256:HEX`.
pub fn digest_of_blob_name(name: &str) -> Option<String> {
    let hex = name.strip_prefix("blobs/sha256/")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

impl Ingest<'_> {
    /// A docker-archive layer, whose digest the archive does not state next to it.
    fn store_layer(&mut self, name: &str, size: u64, r: &mut dyn Read) -> Result<Blob> {
        let by_size = match &self.lookup {
            Lookup::Never => false,
            Lookup::DiffIds(ids) => match ids.get(name).cloned() {
                Some(diff_id) => return self.store_by_diff_id(name, &diff_id, size, r),
                None => false,
            },
            Lookup::BySize => self
                .look_across_gate(|i| Ok(i.has_size(size)?.then_some(())))?
                .is_some(),
        };
        if !by_size {
            return self.store_unknown(name, size, r);
        }
        let (digest, head) = hash_all(r, size)?;
        let known = self
            .sizes
            .as_ref()
            .is_some_and(|s| s.get(&size).is_some_and(|d| d.contains(&digest)));
        if known && self.present(&digest)? {
            self.skipped += size;
        } else {
            self.unsent.insert(name.to_string(), (digest.clone(), size));
        }
        Ok(Blob { digest, size, head })
    }

    /// A docker-archive layer whose diff ID a first look gave.
    fn store_by_diff_id(
        &mut self,
        name: &str,
        diff_id: &str,
        size: u64,
        r: &mut dyn Read,
    ) -> Result<Blob> {
        // The blob of that digest is the uncompressed layer the image config names,
        // whatever form this archive stores it in: its size is the store's.
        if let Some(stored) = self.look_across_gate(|i| i.held_size(diff_id))? {
            self.skipped += size;
            return Ok(Blob {
                digest: diff_id.to_string(),
                size: stored,
                head: Vec::new(),
            });
        }
        self.store_unknown(name, size, r)
    }

    /// In a second pass: store `name` if it is one the first pass left unsent.
    fn store_left_out(&mut self, name: &str, data: EntryData<'_>) -> Result<()> {
        let Pass::Second(only) = &self.pass else {
            return Ok(());
        };
        let Some((digest, size)) = only.get(name).cloned() else {
            return Ok(());
        };
        let blob = self.store_known(name, &digest, size, data)?;
        self.blobs.entry(name.to_string()).or_insert(blob);
        Ok(())
    }
}

/// Read `size` bytes of `r` to their end: their digest and first bytes.
fn hash_all(r: &mut dyn Read, size: u64) -> Result<(String, Vec<u8>)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; super::client::CHUNK];
    let (mut head, mut read) = (Vec::new(), 0u64);
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The archive reader says what is wrong with the archive, as every backend reports it.
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        if head.is_empty() {
            head = buf[..n.min(8)].to_vec();
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    if read != size {
        anyhow::bail!("the tar stream is truncated: an entry has {read} of its {size} bytes");
    }
    Ok((
        format!("sha256:{}", crate::digest::hex(&hasher.finalize())),
        head,
    ))
}

impl EntrySink for Ingest<'_> {
    fn file(&mut self, name: &str, size: u64, data: EntryData<'_>) -> Result<()> {
        if let Pass::Second(_) = self.pass {
            return self.store_left_out(name, data);
        }
        if METADATA.contains(&name) {
            if let EntryData::Bytes(b) = data {
                self.docs.insert(name.to_string(), b.to_vec());
            }
            return Ok(());
        }
        if let EntryData::Bytes(b) = &data {
            if matches!(
                b.iter().find(|c| !c.is_ascii_whitespace()),
                Some(b'{' | b'[')
            ) {
                self.docs.insert(name.to_string(), b.to_vec());
            }
        }
        let blob = if let Some(digest) = digest_of_blob_name(name) {
            self.store_known(name, &digest, size, data)?
        } else if !name.contains('/') && name.ends_with(".json") {
            // A docker-archive image config: small, so hashed before anything is sent.
            let EntryData::Bytes(b) = data else {
                return Ok(());
            };
            let digest = format!("sha256:{}", crate::digest::hex(&Sha256::digest(b)));
            self.store_known(name, &digest, size, EntryData::Bytes(b))?
        } else if name.ends_with(".tar") {
            // A docker-archive layer (`ID/layer.tar`, `HEX.tar`): its digest is its diff ID when
            // a first look said so, else it comes with its end.
            match data {
                EntryData::Bytes(b) => {
                    self.store_layer(name, size, &mut std::io::Cursor::new(b))?
                }
                EntryData::Stream(r) => self.store_layer(name, size, r)?,
            }
        } else {
            return Ok(());
        };
        self.blobs.insert(name.to_string(), blob);
        Ok(())
    }

    fn link(&mut self, name: &str, target: &str) {
        if let Pass::First = self.pass {
            self.links.insert(name.to_string(), target.to_string());
        }
    }
}
