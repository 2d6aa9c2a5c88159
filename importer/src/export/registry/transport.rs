//! The transport: HTTP(S) to one registry, owning the scheme choice, authentication (the
//! `/v2/` ping, the `WWW-Authenticate` challenge, Basic, Bearer tokens per scope) and retries
//! (429, 5xx and cut connections, with backoff). What it carries is the fetcher's business.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use ureq::http::Response;
use ureq::tls::{RootCerts, TlsConfig};
use ureq::Body;

/// ureq's connection pool and settings.
type Client = ureq::Agent;

use super::auth::{parse_challenge, Challenge, Credential, Keychain};
use super::error::{PlainHttp, RegistryError};

/// Attempts per request: the first and four retries, 0.5, 1, 2 and 4 s apart.
pub const ATTEMPTS: u32 = 5;
const BACKOFF: Duration = Duration::from_millis(500);
/// The longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);
/// At most this much of an error answer's body is read into a message.
const ERROR_BODY_MAX: u64 = 16 * 1024;

/// How the engine reaches registries.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra root certificates (PEM), on top of the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Hosts (host[:port]) reached over plain HTTP, or over TLS without verification.
    pub insecure: Vec<String>,
    pub keychain: Keychain,
}

pub struct Transport {
    verified: Client,
    unverified: Client,
    options: Options,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

/// One registry endpoint, once pinged.
pub struct Host {
    /// `https://host[:port]` or `http://host[:port]`.
    pub base: String,
    challenge: Option<Challenge>,
    credential: Option<Credential>,
    /// The host credentials were looked up for, for messages.
    auth_host: String,
    tokens: Mutex<HashMap<String, String>>,
    insecure: bool,
}

/// One request of the fetcher.
pub struct Request<'a> {
    pub method: &'a str,
    /// From `/v2/...` on.
    pub path: &'a str,
    /// The token scope, e.g. `repository:library/nginx:pull`.
    pub scope: &'a str,
    pub accept: Option<&'a str>,
    /// `Range: bytes=N-` when N > 0.
    pub from: u64,
}

/// What a write request carries besides a [`Request`]: its headers and body, and whether a
/// cut connection may be retried (not for a chunk of an upload, whose offset the registry
/// must be asked again).
#[derive(Default)]
pub struct Payload<'a> {
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<&'a [u8]>,
    pub no_retry: bool,
}

/// The system's trust store: the file OpenSSL would use, else the usual bundles.
fn system_roots() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        files.push(PathBuf::from(f));
    }
    for f in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ] {
        files.push(PathBuf::from(f));
    }
    files
}

fn read_pem(
    path: &std::path::Path,
    out: &mut Vec<ureq::tls::Certificate<'static>>,
) -> Result<usize> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let before = out.len();
    for item in ureq::tls::parse_pem(&data) {
        if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
            out.push(c);
        }
    }
    Ok(out.len() - before)
}

fn install_provider() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client(roots: Vec<ureq::tls::Certificate<'static>>, verify: bool) -> Client {
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .disable_verification(!verify)
        .build();
    ureq::config::Config::builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .user_agent(format!("offline-images/{}", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .build()
        .new_agent()
}

fn is_loopback(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a failed call is worth another try.
/// A TLS failure (an untrusted certificate, a server that speaks plain HTTP) is not: it
/// would fail the same way again.
fn transient(e: &ureq::Error) -> bool {
    match e {
        // A refused connection is a registry that is down, not one that cut a transfer.
        ureq::Error::Io(io) => !matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::ConnectionRefused
        ),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed => true,
        _ => false,
    }
}

fn retryable(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

fn pause(attempt: u32, resp: Option<&Response<Body>>) {
    let after = resp
        .and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .map(|d| d.min(RETRY_AFTER_MAX));
    std::thread::sleep(after.unwrap_or(BACKOFF * 2u32.pow(attempt)));
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// A registry's error answer, made one line: `HTTP 401 Unauthorized: UNAUTHORIZED: ...`, as
/// the [`RegistryError`] its status makes.
pub fn answer_error(url: &str, resp: Response<Body>) -> anyhow::Error {
    let status = resp.status().as_u16();
    let mut body = String::new();
    let _ = std::io::Read::read_to_string(
        &mut std::io::Read::take(resp.into_body().into_reader(), ERROR_BODY_MAX),
        &mut body,
    );
    RegistryError::answered(url, status, registry_message(&body)).into()
}

/// The `errors` of an OCI distribution error body, or the body's first line.
fn registry_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_str::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|i| format!("{}: {}", i.code, i.message))
            .collect();
        return parts.join("; ");
    }
    let line = body.lines().map(str::trim).find(|l| !l.is_empty());
    line.unwrap_or("").chars().take(300).collect()
}

impl Transport {
    pub fn new(options: Options) -> Result<Transport> {
        install_provider();
        let mut roots = Vec::new();
        for f in system_roots() {
            if f.is_file() && read_pem(&f, &mut roots).unwrap_or(0) > 0 {
                break;
            }
        }
        if let Some(ca) = &options.ca_file {
            let n = read_pem(ca, &mut roots).context("--ca-file")?;
            if n == 0 {
                bail!("--ca-file {}: no PEM certificate in it", ca.display());
            }
        }
        Ok(Transport {
            verified: client(roots.clone(), true),
            unverified: client(roots, false),
            options,
            hosts: Mutex::new(HashMap::new()),
        })
    }

    fn is_insecure(&self, endpoint: &str) -> bool {
        self.options.insecure.iter().any(|h| h == endpoint)
    }

    /// The endpoint `endpoint` (host[:port]), pinged once per run; `auth_host` names the
    /// registry whose credentials it takes.
    pub fn host(&self, endpoint: &str, auth_host: &str) -> Result<Arc<Host>> {
        let key = format!("{endpoint} {auth_host}");
        if let Some(h) = crate::sync::lock(&self.hosts).get(&key) {
            return Ok(h.clone());
        }
        let host = Arc::new(self.ping(endpoint, auth_host)?);
        crate::sync::lock(&self.hosts).insert(key, host.clone());
        Ok(host)
    }

    /// The base URL that answers `/v2/` at `endpoint`, and its answer: HTTPS, else plain
    /// HTTP when `plain_ok`; [`RegistryError::Unreachable`] when neither does.
    fn first_answer(
        &self,
        http: &Client,
        endpoint: &str,
        plain_ok: bool,
    ) -> Result<(String, Response<Body>)> {
        let https = format!("https://{endpoint}");
        let e = match self.call_retrying(http, "GET", &format!("{https}/v2/"), &[]) {
            Ok(r) => return Ok((https, r)),
            Err(e) => e,
        };
        let plain = if plain_ok {
            let base = format!("http://{endpoint}");
            match self.call_retrying(http, "GET", &format!("{base}/v2/"), &[]) {
                Ok(r) if r.status().is_success() || r.status().as_u16() == 401 => {
                    return Ok((base, r))
                }
                Ok(_) => PlainHttp::NotRegistry,
                Err(e2) => PlainHttp::Failed(format!("{e2:#}")),
            }
        } else {
            PlainHttp::NotAllowed
        };
        Err(RegistryError::Unreachable {
            registry: endpoint.to_string(),
            https: format!("{e:#}"),
            http: plain,
        }
        .into())
    }

    fn ping(&self, endpoint: &str, auth_host: &str) -> Result<Host> {
        let insecure = self.is_insecure(endpoint);
        let plain_ok = insecure || is_loopback(endpoint);
        let http = if insecure {
            &self.unverified
        } else {
            &self.verified
        };
        let (base, resp) = self.first_answer(http, endpoint, plain_ok)?;
        let challenge = match resp.status().as_u16() {
            200..=299 => None,
            401 => {
                let header = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                Some(parse_challenge(header).ok_or_else(|| {
                    anyhow!(
                        "{base}/v2/ asks for authentication this tool does not speak: {header:?}"
                    )
                })?)
            }
            _ => {
                return Err(answer_error(&format!("{base}/v2/"), resp)
                    .context(format!("{endpoint} does not answer as an OCI registry")))
            }
        };
        let credential = match &challenge {
            Some(_) => self.options.keychain.resolve(auth_host)?,
            None => None,
        };
        Ok(Host {
            base,
            challenge,
            credential,
            auth_host: auth_host.to_string(),
            tokens: Mutex::new(HashMap::new()),
            insecure,
        })
    }

    fn call_with(
        &self,
        http: &Client,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Response<Body>, ureq::Error> {
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        match body {
            None => http.run(b.body(()).map_err(|e| ureq::Error::BadUri(e.to_string()))?),
            Some(body) => http.run(
                b.body(body)
                    .map_err(|e| ureq::Error::BadUri(e.to_string()))?,
            ),
        }
    }

    /// A call retried on 429, 5xx and cut connections; the last answer, whatever its status.
    fn call_retrying(
        &self,
        http: &Client,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>> {
        self.call_retrying_with(http, method, url, headers, &Payload::default())
    }

    /// [`Transport::call_retrying`] with a body; `payload.no_retry` tries once.
    fn call_retrying_with(
        &self,
        http: &Client,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        payload: &Payload,
    ) -> Result<Response<Body>> {
        let attempts = if payload.no_retry { 1 } else { ATTEMPTS };
        let mut attempt = 0;
        loop {
            match self.call_with(http, method, url, headers, payload.body) {
                Ok(r) if retryable(r.status().as_u16()) && attempt + 1 < attempts => {
                    pause(attempt, Some(&r));
                }
                Ok(r) => return Ok(r),
                Err(e) if transient(&e) && attempt + 1 < attempts => pause(attempt, None),
                Err(e) => return Err(anyhow!("{url}: {e}")),
            }
            attempt += 1;
        }
    }

    /// A Bearer token for `scope` from the challenge's realm.
    fn token(&self, host: &Host, scope: &str, fresh: bool) -> Result<String> {
        let Some(Challenge::Bearer { realm, service }) = &host.challenge else {
            bail!("no token realm");
        };
        if !fresh {
            if let Some(t) = crate::sync::lock(&host.tokens).get(scope) {
                return Ok(t.clone());
            }
        }
        let mut url = format!("{realm}{}", if realm.contains('?') { '&' } else { '?' });
        if let Some(s) = service {
            url.push_str(&format!("service={}&", encode(s)));
        }
        // Several scopes (a cross-repository mount pulls from one and pushes to another) are
        // one `scope` parameter each.
        let scopes: Vec<String> = scope
            .split(' ')
            .map(|s| format!("scope={}", encode(s)))
            .collect();
        url.push_str(&scopes.join("&"));
        let mut headers = Vec::new();
        if let Some(c) = &host.credential {
            headers.push(("Authorization", c.basic()));
        }
        let http = if host.insecure {
            &self.unverified
        } else {
            &self.verified
        };
        let resp = self.call_retrying(http, "GET", &url, &headers)?;
        if !resp.status().is_success() {
            let who = match &host.credential {
                Some(c) => format!("the credentials of {} for {}", c.username, host.auth_host),
                None => format!("anonymous access to {}", host.auth_host),
            };
            return Err(
                answer_error(realm, resp).context(format!("the token server refused {who}"))
            );
        }
        let body = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| anyhow!("the token server {realm} answered no token: {e}"))?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| anyhow!("the token server {realm} answered no token: {e}"))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("the token server {realm} answered no token"))?;
        crate::sync::lock(&host.tokens).insert(scope.to_string(), token.clone());
        Ok(token)
    }

    fn authorization(&self, host: &Host, scope: &str, fresh: bool) -> Result<Option<String>> {
        Ok(match &host.challenge {
            None => None,
            Some(Challenge::Basic) => host.credential.as_ref().map(Credential::basic),
            Some(Challenge::Bearer { .. }) => {
                Some(format!("Bearer {}", self.token(host, scope, fresh)?))
            }
        })
    }

    /// Send a request, authenticated; a 401 with a cached token gets a fresh one, once.
    /// The answer is returned whatever its status, after the retries.
    pub fn send(&self, host: &Host, req: &Request) -> Result<Response<Body>> {
        self.send_with(host, req, &Payload::default())
    }

    /// [`Transport::send`] with headers and a body. `req.path` may be a whole URL (an
    /// upload's `Location`), but only on this host: credentials never go elsewhere.
    pub fn send_with(
        &self,
        host: &Host,
        req: &Request,
        payload: &Payload,
    ) -> Result<Response<Body>> {
        let url = if req.path.starts_with('/') {
            format!("{}{}", host.base, req.path)
        } else if req.path.starts_with(&format!("{}/", host.base)) {
            req.path.to_string()
        } else {
            bail!(
                "{} sent the upload to {:?}, another host: refusing to send credentials there",
                host.base,
                req.path
            );
        };
        let http = if host.insecure {
            &self.unverified
        } else {
            &self.verified
        };
        let mut fresh = false;
        loop {
            let mut headers = Vec::new();
            if let Some(a) = self.authorization(host, req.scope, fresh)? {
                headers.push(("Authorization", a));
            }
            if let Some(a) = req.accept {
                headers.push(("Accept", a.to_string()));
            }
            if req.from > 0 {
                headers.push(("Range", format!("bytes={}-", req.from)));
            }
            headers.extend(payload.headers.iter().map(|(k, v)| (*k, v.clone())));
            let resp = self.call_retrying_with(http, req.method, &url, &headers, payload)?;
            let bearer = matches!(host.challenge, Some(Challenge::Bearer { .. }));
            if resp.status().as_u16() == 401 && bearer && !fresh {
                fresh = true;
                continue;
            }
            return Ok(resp);
        }
    }
}

/// Percent-encoding of a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_known_with_and_without_ports() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:443"));
        assert!(!is_loopback("registry.example.com:5000"));
        assert!(!is_loopback("10.0.0.1"));
    }

    #[test]
    fn registry_error_bodies_become_one_line() {
        assert_eq!(
            registry_message(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#
            ),
            "UNAUTHORIZED: authentication required"
        );
        assert_eq!(registry_message("\n  plain words\nmore"), "plain words");
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
