//! Registry credentials and the `WWW-Authenticate` challenge.
//!
//! Credentials come from `--username` with `--password-stdin` when given, else from the docker
//! config file (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`): a `credHelpers` entry
//! for the registry, else `credsStore`, else `auths`. Helpers speak the `docker-credential-*`
//! protocol: the server URL on stdin of `docker-credential-NAME get`, a JSON answer on stdout.
//! Nothing here prints a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

/// A user name and its password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, <secret>)", self.username)
    }
}

impl Credential {
    /// The value of an `Authorization: Basic` header.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub struct Keychain {
    /// `--username` with `--password-stdin`: used for every registry.
    pub explicit: Option<Credential>,
    /// The docker config file, when there is one.
    pub config: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

/// The docker config file of this user: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(Path::new(&dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".docker").join("config.json"))
}

/// The server name docker uses for a registry host in its config and with its helpers.
fn server_url(host: &str) -> String {
    if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

/// A config key (`https://host/v1/`, `host`, `http://host`) reduced to its host.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

impl Keychain {
    /// The credential for `host` (as in a reference: `docker.io`, `reg.example.com:5000`), or
    /// None for anonymous access.
    pub fn resolve(&self, host: &str) -> Result<Option<Credential>> {
        if let Some(c) = &self.explicit {
            return Ok(Some(c.clone()));
        }
        let Some(path) = &self.config else {
            return Ok(None);
        };
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let config: DockerConfig = serde_json::from_slice(&data)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let helper = config
            .cred_helpers
            .iter()
            .find(|(k, _)| key_host(k) == host)
            .map(|(_, v)| v.clone())
            .or_else(|| config.creds_store.clone().filter(|s| !s.is_empty()));
        if let Some(helper) = helper {
            let found = run_helper(&helper, &server_url(host))?;
            if found.is_some() || config.cred_helpers.keys().any(|k| key_host(k) == host) {
                return Ok(found);
            }
        }
        let Some(entry) = config
            .auths
            .iter()
            .find(|(k, _)| key_host(k) == host)
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        entry_credential(entry)
            .with_context(|| format!("{}: the auths entry for {host}", path.display()))
    }
}

fn entry_credential(entry: &AuthEntry) -> Result<Option<Credential>> {
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Credential {
            username: u.clone(),
            secret: p.clone(),
        }));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| anyhow!("its auth field is not base64"))?;
    let raw = String::from_utf8(raw).map_err(|_| anyhow!("its auth field is not UTF-8"))?;
    let (u, p) = raw
        .split_once(':')
        .ok_or_else(|| anyhow!("its auth field is not user:password"))?;
    Ok(Some(Credential {
        username: u.to_string(),
        secret: p.to_string(),
    }))
}

/// `docker-credential-NAME get` for `server`; None when the helper has nothing for it.
fn run_helper(name: &str, server: &str) -> Result<Option<Credential>> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the credential helper {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("cannot run the credential helper {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The protocol's answer for "no credentials": not an error, anonymous access.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let said = String::from_utf8_lossy(&out.stderr);
        bail!(
            "the credential helper {program} failed for {server}: {}",
            first_line(if said.trim().is_empty() {
                &stdout
            } else {
                &said
            })
        );
    }
    let answer: HelperAnswer = serde_json::from_str(stdout.trim())
        .map_err(|e| anyhow!("the credential helper {program} answered no valid JSON: {e}"))?;
    if answer.username == "<token>" {
        bail!(
            "the credential helper {program} gave an identity token for {server}; \
             use --username and --password-stdin for this registry"
        );
    }
    Ok(Some(Credential {
        username: answer.username,
        secret: answer.secret,
    }))
}

fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parse `Bearer realm="https://auth.docker.io/token",service="registry.docker.io"` or
/// `Basic realm="Registry"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_of_docker_hub_and_registry_2_are_read() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://q/t", scope="repository:a/b:pull""#),
            Some(Challenge::Bearer {
                realm: "https://q/t".into(),
                service: None
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn config_keys_of_every_form_name_their_host() {
        assert_eq!(key_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(key_host("reg.example.com:5000"), "reg.example.com:5000");
        assert_eq!(key_host("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        let e = AuthEntry {
            auth: Some(base64::engine::general_purpose::STANDARD.encode("u:p:q")),
            ..Default::default()
        };
        let c = entry_credential(&e).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("u", "p:q"));
        assert!(!format!("{c:?}").contains("p:q"));
    }
}
