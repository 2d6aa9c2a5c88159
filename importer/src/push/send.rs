//! One image into the site registry: what the registry has is asked first, and only the rest
//! is sent. An image whose every name already resolves to its digest is done after one `HEAD`
//! per name. Otherwise each blob is looked up (`HEAD`), mounted from a repository this push
//! already put it in, or uploaded; one worker uploads a blob while the others that need it
//! wait, then mount it. Then the manifests by digest, children first, and the tags last.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{anyhow, Result};

use super::image::{Manifest, Planned};
use crate::export::meter::Meter;
use crate::export::registry::error::RegistryError;
use crate::export::registry::transport::{Host, Transport};
use crate::export::registry::upload::{Dest, Mount, Open};
use crate::layout::Blob;

/// What every Accept of a manifest `HEAD` names.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Where a blob stands across the workers of one push.
enum Claim {
    /// A worker is uploading it.
    Sending,
    /// It is in this repository of the site registry.
    In(String),
}

/// Counts of one push, or of one image.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) sent: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) mounted: AtomicU64,
    pub(crate) present: AtomicU64,
    pub(crate) manifests: AtomicU64,
    /// What a person should know about the image (the fallback from a refused index).
    pub(crate) notes: Notes,
}

/// Lines about an image, added by the worker that pushes it.
#[derive(Default)]
pub(crate) struct Notes(Mutex<Vec<String>>);

impl Notes {
    fn lock_push(&self, note: String) {
        crate::sync::lock(&self.0).push(note);
    }

    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *crate::sync::lock(&self.0))
    }
}

impl Counts {
    fn add(&self, other: &Counts) {
        for (a, b) in [
            (&self.sent, &other.sent),
            (&self.sent_bytes, &other.sent_bytes),
            (&self.mounted, &other.mounted),
            (&self.present, &other.present),
            (&self.manifests, &other.manifests),
        ] {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What the workers of one push share.
pub(crate) struct Pusher<'t> {
    pub(crate) transport: &'t Transport,
    pub(crate) host: Arc<Host>,
    pub(crate) chunk: usize,
    pub(crate) meter: &'t Meter,
    pub(crate) totals: Counts,
    claims: Mutex<HashMap<String, Claim>>,
    changed: Condvar,
}

/// Where a blob stands after [`Pusher::begin`].
pub(super) enum Begin {
    /// In the repository now (present or mounted): nothing to send.
    Done,
    /// Another worker is sending it.
    Busy,
    /// This worker is to upload it, at this location.
    Upload(String),
}

/// How an image went.
pub(crate) enum Pushed {
    /// Every name already resolved to its digest.
    Present,
    /// Sent, with these counts.
    Sent(Counts),
}

/// The bundle's blob from `offset` on, its bytes checked against its digest as they pass
/// (the bytes before `offset` are read again for that).
fn open_at(blob: &Blob, offset: u64) -> Result<Box<dyn Read + Send>> {
    let mut r = blob.reader()?;
    io::copy(&mut (&mut r).take(offset), &mut io::sink())
        .map_err(|e| anyhow!("cannot read {}: {e}", blob.path.display()))?;
    Ok(Box::new(r))
}

impl<'t> Pusher<'t> {
    pub(crate) fn new(
        transport: &'t Transport,
        host: Arc<Host>,
        chunk: usize,
        meter: &'t Meter,
    ) -> Pusher<'t> {
        Pusher {
            transport,
            host,
            chunk,
            meter,
            totals: Counts::default(),
            claims: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
        }
    }

    /// Push `image` into every repository its names are in.
    pub(crate) fn push(&self, image: &Planned) -> Result<Pushed> {
        let counts = Counts::default();
        let mut all_present = true;
        for (repo, refs) in &image.targets {
            let dest = Dest::new(self.transport, self.host.clone(), repo);
            if self.resolves(&dest, image, refs)? {
                continue;
            }
            all_present = false;
            self.send_image(&dest, image, refs, &counts)?;
        }
        self.totals.add(&counts);
        Ok(if all_present {
            Pushed::Present
        } else {
            Pushed::Sent(counts)
        })
    }

    /// Whether every one of `refs` already names the image in `dest`: each tag its digest (or
    /// the fallback manifest's, where the registry refused the index), and its digest.
    fn resolves(&self, dest: &Dest, image: &Planned, refs: &[String]) -> Result<bool> {
        let mut via_fallback = false;
        for r in refs.iter().filter(|r| !r.starts_with("sha256:")) {
            match dest.manifest_digest(r, ACCEPT)? {
                Some(d) if d == image.top.digest => {}
                Some(d) if image.fallback.as_ref().is_some_and(|f| f.digest == d) => {
                    via_fallback = true;
                }
                _ => return Ok(false),
            }
        }
        for r in refs.iter().filter(|r| r.starts_with("sha256:")) {
            if via_fallback && *r == image.top.digest {
                continue;
            }
            if dest.manifest_digest(r, ACCEPT)?.as_deref() != Some(r.as_str()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn send_image(
        &self,
        dest: &Dest,
        image: &Planned,
        refs: &[String],
        counts: &Counts,
    ) -> Result<()> {
        for c in &image.carried {
            if !dest.has_blob(&c.digest, c.size)? && !self.mount_carried(dest, &c.digest)? {
                return Err(anyhow!(
                    "the layer {} is not in this bundle (the bundle {} carried it) and {} does \
                     not have it: push that bundle first",
                    c.digest,
                    c.carried_by,
                    dest.name()
                ));
            }
        }
        for blob in &image.blobs {
            self.blob(dest, blob, counts)?;
        }
        if let Some(held) = &image.archive {
            self.archive_blobs(dest, held, counts)?;
        }
        let mut tagged = &image.top;
        for m in &image.manifests {
            if dest.manifest_digest(&m.digest, ACCEPT)?.is_some() {
                continue;
            }
            match (put(dest, m, &m.digest), &image.fallback) {
                (Ok(()), _) => {
                    counts.manifests.fetch_add(1, Ordering::Relaxed);
                }
                (Err(e), Some(f)) if m.digest == image.top.digest && refused(&e) => {
                    counts.notes.lock_push(format!(
                        "{} takes no index whose platforms the bundle left out: the tags name \
                         the manifest {} and {}@{} does not resolve (export with --platform for \
                         each platform to keep the index)",
                        dest.name(),
                        f.digest,
                        dest.name(),
                        m.digest
                    ));
                    tagged = f;
                }
                (Err(e), _) => return Err(e),
            }
        }
        for r in refs.iter().filter(|r| !r.starts_with("sha256:")) {
            if dest.manifest_digest(r, ACCEPT)?.as_deref() != Some(&tagged.digest) {
                put(dest, tagged, r)?;
            }
        }
        Ok(())
    }

    /// A carried layer, mounted from a repository of the site registry that this push found
    /// holding it.
    fn mount_carried(&self, dest: &Dest, digest: &str) -> Result<bool> {
        let from = match crate::sync::lock(&self.claims).get(digest) {
            Some(Claim::In(repo)) => repo.clone(),
            _ => return Ok(false),
        };
        Ok(matches!(dest.mount(digest, &from)?, Mount::Mounted))
    }

    /// One blob into `dest`: present, mounted, or uploaded.
    fn blob(&self, dest: &Dest, blob: &Blob, counts: &Counts) -> Result<()> {
        match self.begin(dest, (&blob.digest, blob.size), counts, true)? {
            Begin::Upload(location) => {
                let sent = self.upload(dest, blob, location);
                self.finish(&blob.digest, blob.size, sent, dest, counts)
            }
            Begin::Done | Begin::Busy => Ok(()),
        }
    }

    /// The first half of a blob: present, mounted, or an upload started (the blob then
    /// claimed by this worker until [`Pusher::finish`]). With `wait` false, a blob another
    /// worker is sending is left `Busy` rather than waited for.
    pub(super) fn begin(
        &self,
        dest: &Dest,
        (digest, size): (&str, u64),
        counts: &Counts,
        wait: bool,
    ) -> Result<Begin> {
        if dest.has_blob(digest, size)? {
            self.settle(digest, Some(dest.path()));
            counts.present.fetch_add(1, Ordering::Relaxed);
            return Ok(Begin::Done);
        }
        let from = {
            let mut claims = crate::sync::lock(&self.claims);
            loop {
                match claims.get(digest) {
                    Some(Claim::Sending) if !wait => return Ok(Begin::Busy),
                    Some(Claim::Sending) => {
                        claims = self
                            .changed
                            .wait(claims)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    Some(Claim::In(repo)) => break Some(repo.clone()),
                    None => {
                        claims.insert(digest.to_string(), Claim::Sending);
                        break None;
                    }
                }
            }
        };
        let location = match from {
            Some(repo) if repo == dest.path() => {
                counts.present.fetch_add(1, Ordering::Relaxed);
                return Ok(Begin::Done);
            }
            Some(repo) => match dest.mount(digest, &repo)? {
                Mount::Mounted => {
                    counts.mounted.fetch_add(1, Ordering::Relaxed);
                    return Ok(Begin::Done);
                }
                Mount::Started(location) => Ok(location),
            },
            None => dest.start(),
        };
        match location {
            Ok(location) => Ok(Begin::Upload(location)),
            Err(e) => {
                self.settle(digest, None);
                Err(e)
            }
        }
    }

    /// The second half of a blob [`Pusher::begin`] started: where it now is, and the counts.
    pub(super) fn finish(
        &self,
        digest: &str,
        size: u64,
        sent: Result<()>,
        dest: &Dest,
        counts: &Counts,
    ) -> Result<()> {
        self.settle(digest, sent.is_ok().then(|| dest.path()));
        sent?;
        counts.sent.fetch_add(1, Ordering::Relaxed);
        counts.sent_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// A blob's upload from the bytes `open` gives from an offset on.
    pub(super) fn upload_from(
        &self,
        dest: &Dest,
        (digest, size): (&str, u64),
        location: String,
        open: Open,
    ) -> Result<()> {
        let on_bytes = |n| self.meter.add(n);
        dest.upload(location, (digest, size), open, &on_bytes, self.chunk)
    }

    fn upload(&self, dest: &Dest, blob: &Blob, location: String) -> Result<()> {
        let open = |offset| open_at(blob, offset);
        self.upload_from(dest, (&blob.digest, blob.size), location, &open)
    }

    /// Record where a blob now is (None: the upload failed, another worker may try), and
    /// wake the workers waiting for it.
    pub(super) fn settle(&self, digest: &str, repo: Option<&str>) {
        let mut claims = crate::sync::lock(&self.claims);
        match repo {
            Some(repo) => {
                claims.insert(digest.to_string(), Claim::In(repo.to_string()));
            }
            None => {
                if matches!(claims.get(digest), Some(Claim::Sending)) {
                    claims.remove(digest);
                }
            }
        }
        drop(claims);
        self.changed.notify_all();
    }
}

/// Whether the registry refused a manifest (400: a manifest it names is unknown to it).
fn refused(e: &anyhow::Error) -> bool {
    matches!(
        RegistryError::find(e),
        Some(RegistryError::Http { status: 400, .. })
    )
}

/// Put `m` under `reference`.
fn put(dest: &Dest, m: &Manifest, reference: &str) -> Result<()> {
    dest.put_manifest(reference, &m.media_type, &m.bytes)
        .map_err(|e| {
            e.context(format!(
                "{}: cannot put the manifest {}",
                dest.name(),
                m.digest
            ))
        })
}
