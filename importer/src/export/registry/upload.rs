//! The writer: blobs and manifests into one repository of a registry, over the transport.
//! The fetcher's other half, as go-containerregistry's `remote.Write` is `remote.Image`'s:
//! a blob is looked up (`HEAD`) before anything is sent, mounted from another repository of
//! the same registry where it is already, and otherwise uploaded in chunks (`POST`, `PATCH`
//! with `Content-Range`, `PUT ?digest=`). A cut chunk asks the registry how much it holds
//! (`GET` on the upload) and goes on from there; an upload the registry no longer knows is
//! started again. Manifests are `PUT` as the bundle holds them, byte for byte.

use std::io::Read;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::Digest as _;
use ureq::http::Response;
use ureq::Body;

use super::error::RegistryError;
use super::transport::{answer_error, Host, Payload, Request, Transport, ATTEMPTS};

/// A blob's bytes from `offset` on, for its upload (and again after a cut).
pub type Open<'a> = &'a dyn Fn(u64) -> Result<Box<dyn Read + Send>>;

/// Bytes the registry took, reported as each chunk is accepted (for progress).
pub type OnBytes<'a> = &'a (dyn Fn(u64) + Sync);

/// A repository at one endpoint, written to.
pub struct Dest<'t> {
    transport: &'t Transport,
    host: Arc<Host>,
    /// The repository path, e.g. `site/docker.io/library/nginx`.
    path: String,
    scope: String,
}

/// What a mount request gave.
pub enum Mount {
    /// The registry linked the blob into this repository: nothing to send.
    Mounted,
    /// It did not (the blob is not in the other repository, or the registry does not mount):
    /// an upload was started instead, at this location.
    Started(String),
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The upload URL with `key=value` added to its query.
fn with_query(location: &str, key: &str, value: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{key}={}", value.replace(':', "%3A"))
}

/// The offset after the `Range: 0-N` of an upload's status (N is the last byte held;
/// distribution says `0-0` for an empty upload too, taken as empty).
fn held(range: Option<&str>) -> u64 {
    range
        .and_then(|r| r.trim().strip_prefix("0-"))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .map_or(0, |n| n + 1)
}

/// A `POST` with `Content-Length: 0`, not a chunked empty body, which some proxies and
/// registries wait on.
fn empty_body() -> Payload<'static> {
    Payload {
        body: Some(&[]),
        ..Payload::default()
    }
}

/// Whether a failed chunk is worth asking the registry where the upload stands: a cut
/// connection, a 5xx, or a range the registry did not expect (416); not a refusal.
fn resumable(e: &anyhow::Error) -> bool {
    match RegistryError::find(e) {
        Some(RegistryError::Http { status, .. }) => *status == 416 || *status >= 500,
        Some(_) => false,
        None => true,
    }
}

impl<'t> Dest<'t> {
    pub fn new(transport: &'t Transport, host: Arc<Host>, path: &str) -> Dest<'t> {
        Dest {
            transport,
            host,
            path: path.to_string(),
            scope: format!("repository:{path}:pull,push"),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host/path`, for messages.
    pub fn name(&self) -> String {
        let host = self
            .host
            .base
            .split("://")
            .nth(1)
            .unwrap_or(&self.host.base);
        format!("{host}/{}", self.path)
    }

    fn send(&self, method: &str, path: &str, payload: &Payload) -> Result<Response<Body>> {
        self.send_scoped(method, path, &self.scope, payload)
    }

    fn send_scoped(
        &self,
        method: &str,
        path: &str,
        scope: &str,
        payload: &Payload,
    ) -> Result<Response<Body>> {
        let req = Request {
            method,
            path,
            scope,
            accept: None,
            from: 0,
        };
        self.transport.send_with(&self.host, &req, payload)
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.host.base)
        } else {
            path.to_string()
        }
    }

    /// Whether the repository has the blob `digest` (of `size` bytes).
    pub fn has_blob(&self, digest: &str, size: u64) -> Result<bool> {
        let path = format!("/v2/{}/blobs/{digest}", self.path);
        let resp = self.send("HEAD", &path, &Payload::default())?;
        match resp.status().as_u16() {
            200..=299 => {
                let len = header(&resp, "content-length").and_then(|l| l.parse::<u64>().ok());
                // A registry that says another size holds another blob under that name: it
                // is sent again, and the registry's own check has the last word.
                Ok(len.is_none_or(|l| l == size))
            }
            404 => Ok(false),
            _ => Err(answer_error(&self.url(&path), resp)),
        }
    }

    /// Mount the blob `digest` from the repository `from` of the same registry.
    pub fn mount(&self, digest: &str, from: &str) -> Result<Mount> {
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={}&from={}",
            self.path,
            digest.replace(':', "%3A"),
            from
        );
        let scope = format!("{} repository:{from}:pull", self.scope);
        let resp = self.send_scoped("POST", &path, &scope, &empty_body())?;
        match resp.status().as_u16() {
            201 => Ok(Mount::Mounted),
            202 => Ok(Mount::Started(self.location(&path, &resp)?)),
            _ => Err(answer_error(&self.url(&path), resp)),
        }
    }

    fn location(&self, path: &str, resp: &Response<Body>) -> Result<String> {
        header(resp, "location")
            .filter(|l| !l.is_empty())
            .ok_or_else(|| anyhow!("{}: the registry gave no upload location", self.url(path)))
    }

    /// Start an upload: its location.
    pub fn start(&self) -> Result<String> {
        let path = format!("/v2/{}/blobs/uploads/", self.path);
        let resp = self.send("POST", &path, &empty_body())?;
        if resp.status().as_u16() != 202 {
            return Err(answer_error(&self.url(&path), resp));
        }
        self.location(&path, &resp)
    }

    /// Upload the blob `digest` of `size` bytes at `location` (from [`Dest::start`] or a
    /// mount that did not mount), `chunk` bytes per request. A cut request asks the registry
    /// what it holds and goes on from there, up to [`ATTEMPTS`] times.
    pub fn upload(
        &self,
        location: String,
        (digest, size): (&str, u64),
        open: Open,
        on_bytes: OnBytes,
        chunk: usize,
    ) -> Result<()> {
        let mut location = location;
        let mut offset = 0u64;
        let mut reader = open(0)?;
        let mut cuts = 0;
        let mut buf = Vec::new();
        loop {
            let n = usize::try_from(size - offset).map_or(chunk, |left| left.min(chunk));
            buf.resize(n, 0);
            reader
                .read_exact(&mut buf)
                .with_context(|| format!("cannot read blob {digest} of the bundle"))?;
            let last = offset + n as u64 == size;
            match self.chunk(&location, (digest, offset, last), &buf) {
                Ok(next) => {
                    on_bytes(n as u64);
                    if last {
                        return Ok(());
                    }
                    (location, offset) = (next, offset + n as u64);
                }
                // The commit was cut after the registry took it: done.
                Err(_) if last && self.has_blob(digest, size).unwrap_or(false) => {
                    on_bytes(n as u64);
                    return Ok(());
                }
                Err(e) if cuts + 1 < ATTEMPTS && resumable(&e) => {
                    cuts += 1;
                    let restarted;
                    (location, offset, restarted) = self.resume(&location)?;
                    let next = if restarted {
                        "the registry no longer knows the upload: starting it again".to_string()
                    } else {
                        format!("the registry holds {offset} bytes of it: going on from there")
                    };
                    eprintln!(
                        "offline-images: {}: the upload of {digest} was cut ({e:#}); {next}",
                        self.name()
                    );
                    reader = open(offset)?;
                }
                Err(e) => return Err(e.context(format!("the upload of {digest} failed"))),
            }
        }
    }

    /// One chunk at `offset`; the last one commits the blob (`PUT ?digest=`). The next
    /// location.
    fn chunk(
        &self,
        location: &str,
        (digest, offset, last): (&str, u64, bool),
        buf: &[u8],
    ) -> Result<String> {
        let mut headers = vec![("Content-Type", "application/octet-stream".to_string())];
        let (method, target) = if last {
            ("PUT", with_query(location, "digest", digest))
        } else {
            let end = offset + buf.len() as u64 - 1;
            headers.push(("Content-Range", format!("{offset}-{end}")));
            ("PATCH", location.to_string())
        };
        let payload = Payload {
            headers,
            body: Some(buf),
            no_retry: true,
        };
        let resp = self.send(method, &target, &payload)?;
        match (resp.status().as_u16(), last) {
            (201, true) => Ok(String::new()),
            (202, false) => self.location(&target, &resp),
            _ => Err(answer_error(&self.url(&target), resp)),
        }
    }

    /// After a cut: where the upload at `location` stands (its location and the bytes the
    /// registry holds), or a new upload (true) when the registry no longer knows that one, as
    /// distribution does once a request was cut inside its body.
    fn resume(&self, location: &str) -> Result<(String, u64, bool)> {
        if let Ok(resp) = self.send("GET", location, &Payload::default()) {
            if resp.status().as_u16() == 204 {
                let at = held(header(&resp, "range").as_deref());
                let next = header(&resp, "location").unwrap_or_else(|| location.to_string());
                return Ok((next, at, false));
            }
        }
        Ok((self.start()?, 0, true))
    }

    /// The digest the manifest `reference` (a tag or a digest) names here, or None when the
    /// repository has no such manifest.
    pub fn manifest_digest(&self, reference: &str, accept: &str) -> Result<Option<String>> {
        let path = format!("/v2/{}/manifests/{reference}", self.path);
        let req = Request {
            method: "HEAD",
            path: &path,
            scope: &self.scope,
            accept: Some(accept),
            from: 0,
        };
        let resp = self.transport.send(&self.host, &req)?;
        match resp.status().as_u16() {
            200..=299 => Ok(Some(
                header(&resp, "docker-content-digest").unwrap_or_default(),
            )),
            404 => Ok(None),
            _ => Err(answer_error(&self.url(&path), resp)),
        }
    }

    /// Put the manifest `bytes` (of `media_type`) under `reference`, a digest or a tag.
    pub fn put_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<()> {
        let path = format!("/v2/{}/manifests/{reference}", self.path);
        let payload = Payload {
            headers: vec![("Content-Type", media_type.to_string())],
            body: Some(bytes),
            no_retry: false,
        };
        let resp = self.send("PUT", &path, &payload)?;
        if resp.status().as_u16() != 201 {
            return Err(answer_error(&self.url(&path), resp));
        }
        if let Some(got) = header(&resp, "docker-content-digest") {
            let want = format!(
                "sha256:{}",
                crate::digest::hex(&sha2::Sha256::digest(bytes))
            );
            if got != want {
                bail!(RegistryError::Digest {
                    what: "manifest",
                    expected: want,
                    got,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_status_range_gives_the_offset_to_go_on_from() {
        assert_eq!(held(Some("0-1048575")), 1 << 20);
        assert_eq!(held(Some("0-0")), 0);
        assert_eq!(held(None), 0);
        assert_eq!(held(Some("bytes=0-9")), 0);
    }

    #[test]
    fn the_digest_is_added_to_the_upload_query() {
        assert_eq!(
            with_query("/v2/a/blobs/uploads/u?_state=x", "digest", "sha256:ab"),
            "/v2/a/blobs/uploads/u?_state=x&digest=sha256%3Aab"
        );
        assert_eq!(
            with_query("http://h/v2/a/blobs/uploads/u", "digest", "sha256:ab"),
            "http://h/v2/a/blobs/uploads/u?digest=sha256%3Aab"
        );
    }
}
