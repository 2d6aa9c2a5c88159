//! The hosts of a delivery: `--ssh USER@HOST[:PORT]` and the lines of `--hosts-file`, each
//! `USER@HOST[:PORT]` with optional `key=value` words that this host's importer is given.

use std::path::Path;

use anyhow::{Context, Result};

use crate::exit;

/// The per-host words a hosts file line may carry, and the importer flag each becomes
/// (`socket` is the runtime's own: resolved once the runtime is known).
const KEYS: &[(&str, &str)] = &[
    ("runtime", "--runtime"),
    ("socket", ""),
    ("namespace", "--namespace"),
    ("storage-root", "--storage-root"),
    ("run-root", "--run-root"),
    ("storage-driver", "--storage-driver"),
    ("containerd-client", "--containerd-client"),
    ("snapshotter", "--snapshotter"),
    ("dir", ""),
    ("disk-max-used", "--disk-max-used"),
    ("jobs", "--jobs"),
    ("release", "--release"),
];

/// The words that are the import's alone (`present` takes the runtime's).
const IMPORT_ONLY: &[&str] = &["disk-max-used", "jobs", "release"];

/// Where a host keeps the importer and what it is sent, unless its line says `dir=`.
pub const DEFAULT_DIR: &str = "~/.cache/offline-images";

/// One host to deliver to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// As given: `USER@HOST[:PORT]`, the name in every line about it.
    pub name: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The `key=value` words of its line, in order.
    pub options: Vec<(String, String)>,
}

impl Host {
    /// `USER@HOST[:PORT]` (`[ADDR]:PORT` for an IPv6 address).
    pub fn parse(text: &str) -> Result<Host, String> {
        let (user, rest) = match text.rsplit_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
            Some(_) => return Err(format!("{text:?}: an empty user before '@'")),
            None => (None, text),
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: '[' without ']'"))?;
            (addr, after.strip_prefix(':'))
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) {
            return Err(format!("{text:?}: not a host name or address"));
        }
        let port = port
            .map(|p| p.parse::<u16>().ok().filter(|p| *p > 0))
            .map(|p| p.ok_or_else(|| format!("{text:?}: the port is not a number from 1 to 65535")))
            .transpose()?;
        Ok(Host {
            name: text.to_string(),
            user,
            host: host.to_string(),
            port,
            options: Vec::new(),
        })
    }

    /// The value of `key` on this host's line.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The directory the host keeps the importer and the staging directories in.
    pub fn dir(&self) -> &str {
        self.option("dir").unwrap_or(DEFAULT_DIR)
    }

    /// The importer flags of this host's words (`runtime` is the caller's, `socket` becomes
    /// the flag of `runtime`).
    pub fn runtime_flags(&self, runtime: &str) -> Vec<String> {
        let mut flags = vec![format!("--runtime={runtime}")];
        for (key, value) in &self.options {
            let flag = KEYS.iter().find(|(k, _)| k == key).map_or("", |(_, f)| *f);
            match key.as_str() {
                "runtime" | "dir" => {}
                k if IMPORT_ONLY.contains(&k) => {}
                "socket" if runtime == "docker" => {
                    let v = value.trim_start_matches("unix://");
                    flags.push(format!("--docker-host=unix://{v}"));
                }
                "socket" => flags.push(format!("--containerd-address={value}")),
                _ => flags.push(format!("{flag}={value}")),
            }
        }
        flags
    }
}

impl Host {
    /// The flags of this host's words that only its import takes.
    pub fn import_flags(&self) -> Vec<String> {
        self.options
            .iter()
            .filter(|(k, _)| IMPORT_ONLY.contains(&k.as_str()))
            .map(|(k, v)| format!("--{k}={v}"))
            .collect()
    }
}

/// One line of a hosts file (`#` starts a comment); `None` for a blank one.
pub fn parse_line(line: &str) -> Result<Option<Host>, String> {
    let line = line.split('#').next().unwrap_or("");
    let mut words = line.split_whitespace();
    let Some(first) = words.next() else {
        return Ok(None);
    };
    let mut host = Host::parse(first)?;
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?}: not key=value"))?;
        host.add_option(key, value)?;
    }
    Ok(Some(host))
}

impl Host {
    /// One `key=value` word of this host (a hosts file line's, a spec file host's), checked:
    /// a key that is not a host option, or a runtime that is not one, is refused by name.
    pub fn add_option(&mut self, key: &str, value: &str) -> Result<(), String> {
        if !KEYS.iter().any(|(k, _)| *k == key) {
            let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "{key:?}: not a host option (known: {})",
                known.join(", ")
            ));
        }
        if key == "runtime" && !["auto", "docker", "podman", "containerd"].contains(&value) {
            return Err(format!(
                "runtime={value}: not auto, docker, podman or containerd"
            ));
        }
        self.options.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

/// The hosts of `--ssh` then of the hosts file, each name once (a later line wins).
pub fn all(ssh: &[String], file: Option<&Path>) -> Result<Vec<Host>> {
    let mut hosts: Vec<Host> = Vec::new();
    for text in ssh {
        let host = Host::parse(text).map_err(|e| exit::usage(format!("--ssh {e}")))?;
        add(&mut hosts, host);
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the hosts file {}", file.display()))
            .map_err(|e| exit::usage(format!("{e:#}")))?;
        for (n, line) in text.lines().enumerate() {
            match parse_line(line) {
                Ok(Some(host)) => add(&mut hosts, host),
                Ok(None) => {}
                Err(e) => return Err(exit::usage(format!("{}:{}: {e}", file.display(), n + 1))),
            }
        }
    }
    if hosts.is_empty() {
        return Err(exit::usage(
            "no host to deliver to: give --ssh USER@HOST[:PORT] or --hosts-file FILE",
        ));
    }
    Ok(hosts)
}

fn add(hosts: &mut Vec<Host>, host: Host) {
    match hosts.iter_mut().find(|h| h.name == host.name) {
        Some(h) => *h = host,
        None => hosts.push(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_user_at_host_and_an_optional_port() {
        let h = Host::parse("root@10.77.1.2:2222").unwrap();
        assert_eq!(
            (h.user.as_deref(), h.host.as_str(), h.port),
            (Some("root"), "10.77.1.2", Some(2222))
        );
        let h = Host::parse("edge-1").unwrap();
        assert_eq!((h.user, h.host.as_str(), h.port), (None, "edge-1", None));
        let h = Host::parse("ops@[fd00::2]:22").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("fd00::2", Some(22)));
        assert!(Host::parse("root@h:0").is_err());
        assert!(Host::parse("root@h:ssh").is_err());
        assert!(Host::parse("@h").is_err());
        assert!(Host::parse("-oProxyCommand=x").is_err());
    }

    #[test]
    fn a_hosts_file_line_gives_its_words_to_the_hosts_importer() {
        assert_eq!(parse_line("  # a comment").unwrap(), None);
        let h = parse_line("root@a runtime=docker socket=/run/d.sock dir=/srv/oi # edge")
            .unwrap()
            .unwrap();
        assert_eq!(h.option("runtime"), Some("docker"));
        assert_eq!(h.dir(), "/srv/oi");
        assert_eq!(
            h.runtime_flags("docker"),
            vec!["--runtime=docker", "--docker-host=unix:///run/d.sock"]
        );
        let h = parse_line("root@b socket=/c.sock namespace=default")
            .unwrap()
            .unwrap();
        assert_eq!(
            h.runtime_flags("containerd"),
            vec![
                "--runtime=containerd",
                "--containerd-address=/c.sock",
                "--namespace=default"
            ]
        );
        assert_eq!(h.dir(), DEFAULT_DIR);
        let h = parse_line("root@d disk-max-used=95 runtime=podman")
            .unwrap()
            .unwrap();
        assert_eq!(h.runtime_flags("podman"), vec!["--runtime=podman"]);
        assert_eq!(h.import_flags(), vec!["--disk-max-used=95"]);
        assert!(parse_line("root@c colour=red")
            .unwrap_err()
            .contains("not a host option"));
        assert!(parse_line("root@c runtime=crio").is_err());
        assert!(parse_line("root@c stray").is_err());
    }
}
