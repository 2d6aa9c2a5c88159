//! The fetcher: manifests and blobs of one repository, over the transport. Manifests are
//! read whole (they are small) and checked against the digest asked for; blobs stream into a
//! file through a [`Verifier`], resumed with `Range` after a cut connection.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::error::RegistryError;
use super::transport::{answer_error, Host, Request, Transport, ATTEMPTS};
use super::verify::{check_algorithm, Verifier};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";
/// Larger manifests are refused: registries cap them at 4 MiB too.
const MANIFEST_MAX: u64 = 4 << 20;

/// A repository at one endpoint.
pub struct Repo<'t> {
    transport: &'t Transport,
    host: Arc<Host>,
    /// The repository path, e.g. `library/nginx`.
    path: String,
    scope: String,
}

/// A manifest or index as the registry served it.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// `sha256:` of `bytes`.
    pub digest: String,
}

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Bytes written to a blob file, reported as they arrive (for progress).
pub type OnBytes<'a> = &'a (dyn Fn(u64) + Sync);

impl<'t> Repo<'t> {
    pub fn new(transport: &'t Transport, host: Arc<Host>, path: &str) -> Repo<'t> {
        Repo {
            transport,
            host,
            path: path.to_string(),
            scope: format!("repository:{path}:pull"),
        }
    }

    pub fn base(&self) -> &str {
        &self.host.base
    }

    /// The manifest or index `reference` (a tag or a digest) names.
    pub fn manifest(&self, reference: &str) -> Result<Fetched> {
        let path = format!("/v2/{}/manifests/{reference}", self.path);
        let url = format!("{}{path}", self.host.base);
        let resp = self.transport.send(
            &self.host,
            &Request {
                method: "GET",
                path: &path,
                scope: &self.scope,
                accept: Some(ACCEPT),
                from: 0,
            },
        )?;
        if !resp.status().is_success() {
            return Err(answer_error(&url, resp));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let (bytes, digest) = read_document(resp, &url, "manifest")?;
        if reference.contains(':') && reference != digest {
            let mismatch = RegistryError::Digest {
                what: "manifest",
                expected: reference.to_string(),
                got: digest,
            };
            return Err(anyhow::Error::new(mismatch).context(url));
        }
        let media_type = media_type_of(&bytes, media_type);
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST | OCI_MANIFEST | DOCKER_MANIFEST => {}
            other => bail!(
                "{url}: the registry served a manifest of type {other:?}, which this tool does not \
                 export (schema 1 manifests are long deprecated: push the image again)"
            ),
        }
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// Whether the registry has the manifest `reference` (a `HEAD`, which registries such as
    /// Docker Hub do not count against a pull limit as they count a `GET`).
    pub fn has_manifest(&self, reference: &str) -> Result<bool> {
        let path = format!("/v2/{}/manifests/{reference}", self.path);
        let resp = self.transport.send(
            &self.host,
            &Request {
                method: "HEAD",
                path: &path,
                scope: &self.scope,
                accept: Some(ACCEPT),
                from: 0,
            },
        )?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(answer_error(&format!("{}{path}", self.host.base), resp)),
        }
    }

    /// The OCI 1.1 referrers of `digest`, as the referrers API gives them (an image index);
    /// `None` when the registry has no such API (it answers 404, as Distribution 2.8 does).
    pub fn referrers(&self, digest: &str) -> Result<Option<Fetched>> {
        check_algorithm(digest)?;
        let path = format!("/v2/{}/referrers/{digest}", self.path);
        let url = format!("{}{path}", self.host.base);
        let resp = self.transport.send(
            &self.host,
            &Request {
                method: "GET",
                path: &path,
                scope: &self.scope,
                accept: Some(OCI_INDEX),
                from: 0,
            },
        )?;
        match resp.status().as_u16() {
            404 => return Ok(None),
            s if !(200..300).contains(&s) => return Err(answer_error(&url, resp)),
            _ => {}
        }
        let (bytes, digest) = read_document(resp, &url, "referrers index")?;
        Ok(Some(Fetched {
            bytes,
            media_type: OCI_INDEX.to_string(),
            digest,
        }))
    }

    /// Download the blob `digest` into `out` (empty), verified; resumed by `Range` when the
    /// connection is cut and the registry allows it, else started again.
    pub fn blob(&self, digest: &str, size: u64, out: &mut File, on_bytes: OnBytes) -> Result<()> {
        check_algorithm(digest)?;
        let path = format!("/v2/{}/blobs/{digest}", self.path);
        let url = format!("{}{path}", self.host.base);
        let mut verifier = Verifier::new(digest, Some(size));
        let mut cuts = 0;
        loop {
            let from = verifier.count();
            let resp = self.transport.send(
                &self.host,
                &Request {
                    method: "GET",
                    path: &path,
                    scope: &self.scope,
                    accept: None,
                    from,
                },
            )?;
            let status = resp.status().as_u16();
            if !(status == 200 || status == 206) {
                return Err(answer_error(&url, resp));
            }
            if from > 0 && status == 200 {
                // No Range support: the whole blob again.
                verifier.reset();
                out.set_len(0)?;
                io::Seek::seek(out, io::SeekFrom::Start(0))?;
            }
            let mut body = resp.into_body().into_reader();
            match copy_verified(&mut body, out, &mut verifier, on_bytes) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(RegistryError::at(&url, e));
                }
                Err(e) if cuts + 1 < ATTEMPTS => {
                    cuts += 1;
                    eprintln!(
                        "offline-images: {url}: the download was cut after {} bytes ({e}); resuming",
                        verifier.count()
                    );
                }
                Err(e) => return Err(anyhow!("{url}: the download failed: {e}")),
            }
        }
        verifier.finish().map_err(|e| RegistryError::at(&url, e))
    }
}

/// A blob's bytes are handed to the disk every this many as they arrive, so that making the
/// layout durable waits for little more than the last of them.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Copy until EOF, verifying; a short body is an `UnexpectedEof` (resumable), a wrong one
/// `InvalidData`.
fn copy_verified(
    body: &mut impl Read,
    out: &mut File,
    verifier: &mut Verifier,
    on_bytes: OnBytes,
) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    // Where the bytes not yet handed to the disk start (`start_writeback`).
    let mut unflushed = verifier.count();
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io::Error::new(
                    if e.kind() == io::ErrorKind::InvalidData {
                        io::ErrorKind::Other
                    } else {
                        e.kind()
                    },
                    e,
                ))
            }
        };
        verifier.update(&buf[..n])?;
        out.write_all(&buf[..n])?;
        on_bytes(n as u64);
        if verifier.count() - unflushed >= WRITEBACK_EVERY {
            crate::export::write::start_writeback(out, unflushed, verifier.count() - unflushed);
            unflushed = verifier.count();
        }
    }
    crate::export::write::start_writeback(out, unflushed, verifier.count() - unflushed);
    if let Some(size) = verifier_size(verifier) {
        if verifier.count() < size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the connection ended after {} bytes", verifier.count()),
            ));
        }
    }
    verifier.finish()
}

fn verifier_size(v: &Verifier) -> Option<u64> {
    v.expected_size()
}

/// The media type of a manifest: the registry's Content-Type, else the document's own.
fn media_type_of(bytes: &[u8], header: String) -> String {
    if !header.is_empty() && header != "application/json" && header != "application/octet-stream" {
        return header;
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Doc>(bytes) {
        Ok(Doc {
            media_type: Some(t),
            ..
        }) => t,
        Ok(Doc {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_string(),
        Ok(_) => OCI_MANIFEST.to_string(),
        Err(_) => header,
    }
}

/// The body of `resp` (from `url`), a manifest or index (`what`), at most [`MANIFEST_MAX`]
/// bytes, and its digest.
fn read_document(
    resp: ureq::http::Response<ureq::Body>,
    url: &str,
    what: &str,
) -> Result<(Vec<u8>, String)> {
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MANIFEST_MAX + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{url}: the answer was cut"))?;
    if bytes.len() as u64 > MANIFEST_MAX {
        bail!("{url}: the {what} is larger than {MANIFEST_MAX} bytes");
    }
    let digest = format!("sha256:{}", crate::bundle::hex(&Sha256::digest(&bytes)));
    Ok((bytes, digest))
}
