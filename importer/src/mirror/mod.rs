//! `offline-images mirror`: point a node's containerd at the site registry, one
//! `<certs-dir>/<upstream>/hosts.toml` per registry the bundle's images come from, so that
//! pods keep their image names and pull them from the site. The certs directory is the one
//! containerd itself reports (its CRI `Status`), never a guess; `--remove` puts back what was
//! there.

pub mod config;
mod containerd_config;
mod files;
pub mod site;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::archive::{self, Limits};
use crate::bundle;
use crate::exit::{self, Code};
use crate::layout::LayoutSource;
use crate::reference::Reference;
use crate::runtime::detect::{self, RuntimeKind};
use crate::runtime::native::{self, CertsDir};
use crate::runtime::socket::{local_path, probe_socket};
use crate::source::Source;
use files::{Removed, Wrote};
pub use site::Site;

/// What `mirror` works with, resolved from the arguments by the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    pub site: Site,
    /// The bundle whose images' registries are mirrored.
    pub images_path: PathBuf,
    /// The registries to mirror, given; when empty, those the bundle names.
    pub upstreams: Vec<String>,
    /// The certs directory as the node names it; by default the one containerd reports.
    pub certs_dir: Option<PathBuf>,
    /// The site registry's CA (a PEM file here), copied beside each `hosts.toml`.
    pub ca_file: Option<PathBuf>,
    /// Undo: put back every file that was there before.
    pub remove: bool,
    /// containerd's configuration file as the node names it, read where containerd does not
    /// report its `config_path` (containerd 2).
    pub containerd_config: PathBuf,
    /// The containerd to ask, and the node root.
    pub runtime: detect::Config,
}

/// The certs directory: as the node's containerd reads it, and as this process reaches it.
struct Certs {
    node: PathBuf,
    here: PathBuf,
}

pub fn run(s: &Settings) -> Result<Code> {
    let certs = certs_dir(s)?;
    if s.remove {
        return remove(&certs);
    }
    let upstreams = upstreams(s)?;
    let ca = match &s.ca_file {
        Some(f) => Some(
            std::fs::read(f).with_context(|| format!("cannot read --ca-file {}", f.display()))?,
        ),
        None => None,
    };
    let mut failed = 0;
    let mut tally: Vec<(Wrote, usize)> = Vec::new();
    for upstream in &upstreams {
        let ca_node = ca.as_ref().map(|_| {
            certs
                .node
                .join(upstream)
                .join(files::CA_FILE)
                .display()
                .to_string()
        });
        let hosts = config::hosts_toml(&s.site, upstream, ca_node.as_deref());
        let file = certs.node.join(upstream).join("hosts.toml");
        match files::write_upstream(&certs.here, upstream, &hosts, ca.as_deref()) {
            Ok(wrote) => {
                println!(
                    "{upstream}  -> {}  {}  ({})",
                    s.site.endpoint(upstream),
                    file.display(),
                    said(wrote)
                );
                match tally.iter_mut().find(|(w, _)| *w == wrote) {
                    Some((_, n)) => *n += 1,
                    None => tally.push((wrote, 1)),
                }
            }
            Err(e) => {
                println!("{upstream}  failed: {e:#}");
                failed += 1;
            }
        }
    }
    let done: Vec<String> = tally
        .iter()
        .map(|(w, n)| format!("{n} {}", said(*w)))
        .collect();
    println!(
        "summary: {} upstream registr{} pointed at {} under {} ({}), {failed} failed; containerd reads \
         them at its next pull, no restart needed",
        upstreams.len() - failed,
        if upstreams.len() - failed == 1 { "y" } else { "ies" },
        s.site,
        certs.node.display(),
        if done.is_empty() { "none".to_string() } else { done.join(", ") },
    );
    Ok(if failed > 0 {
        Code::Failure
    } else {
        Code::Success
    })
}

fn said(wrote: Wrote) -> &'static str {
    match wrote {
        Wrote::Created => "written",
        Wrote::KeptBackup => "written, the site's own kept as hosts.toml.offline-images-backup",
        Wrote::Updated => "updated",
        Wrote::Unchanged => "unchanged",
    }
}

/// `--remove`: every `hosts.toml` this tool wrote under the certs directory.
fn remove(certs: &Certs) -> Result<Code> {
    let mut failed = 0;
    let ours = files::ours(&certs.here)?;
    for upstream in &ours {
        let file = certs.node.join(upstream).join("hosts.toml");
        match files::remove_upstream(&certs.here, upstream) {
            Ok(Some(Removed::Restored)) => {
                println!("{upstream}  restored the site's own {}", file.display())
            }
            Ok(Some(Removed::Deleted)) => println!("{upstream}  removed {}", file.display()),
            Ok(None) => {}
            Err(e) => {
                println!("{upstream}  failed: {e:#}");
                failed += 1;
            }
        }
    }
    println!(
        "summary: {} upstream registr{} no longer mirrored under {}, {failed} failed",
        ours.len() - failed,
        if ours.len() - failed == 1 { "y" } else { "ies" },
        certs.node.display()
    );
    Ok(if failed > 0 {
        Code::Failure
    } else {
        Code::Success
    })
}

/// The registries given, each checked, or those of the bundle.
fn upstreams(s: &Settings) -> Result<Vec<String>> {
    if s.upstreams.is_empty() {
        return bundle_upstreams(&s.images_path);
    }
    let mut given: Vec<String> = s.upstreams.iter().map(|u| u.trim().to_string()).collect();
    if let Some(bad) = given.iter().find(|u| !site::valid_host(u)) {
        return Err(exit::usage(format!(
            "--upstream {bad:?} is not a registry host[:port] (such as docker.io or registry.local:5000)"
        )));
    }
    given.sort();
    given.dedup();
    Ok(given)
}

/// The registries the bundle's images come from: from `images.json`, else from the names in
/// its archives and OCI layouts.
fn bundle_upstreams(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    if let Some(index) = bundle::read_index(dir)? {
        for a in index.archives {
            names.extend(a.source.map(|s| s.repository));
            names.extend(a.images.into_iter().flat_map(|i| i.names));
        }
        for r in index.layout.into_iter().flat_map(|l| l.references) {
            names.push(r.source.repository);
            names.extend(r.images.into_iter().flat_map(|i| i.names));
        }
    } else {
        let (found, _) = archive::discover(dir)?;
        let layouts = LayoutSource::find(dir);
        for f in found.iter().filter(|f| !layouts.holds(&f.path)) {
            if let Ok(info) = archive::inspect_path(&f.path, Limits::default()) {
                names.extend(info.images.into_iter().flat_map(|i| i.names));
            }
        }
        for unit in layouts.units() {
            if let Ok(info) = layouts.inspect(unit) {
                names.extend(info.images.into_iter().flat_map(|i| i.names));
            }
        }
    }
    let domains: BTreeSet<String> = names
        .iter()
        .filter_map(|n| Reference::parse(n).ok())
        .map(|r| r.domain)
        .collect();
    if domains.is_empty() {
        return Err(exit::usage(format!(
            "{}: no image names found (no images.json, and no named image in its archives or OCI \
             layouts), so there is no registry to mirror",
            dir.display()
        )));
    }
    Ok(domains.into_iter().collect())
}

/// Where containerd reads `hosts.toml` files: asked of containerd, through its CRI `Status`.
fn certs_dir(s: &Settings) -> Result<Certs> {
    let root = s.runtime.host_root.as_deref();
    let here = |node: &Path| Certs {
        node: node.to_path_buf(),
        here: local_path(root, node),
    };
    let config = detect::Config {
        runtime: RuntimeKind::Containerd,
        ..s.runtime.clone()
    };
    let sockets = detect::candidates(&config)?;
    let answered = sockets
        .iter()
        .find(|(_, node, _)| probe_socket(&local_path(root, node)).is_none());
    let Some((_, node_socket, _)) = answered else {
        if let Some(dir) = &s.certs_dir {
            eprintln!(
                "offline-images: warning: no containerd socket answered; writing into --certs-dir \
                 {} without asking containerd whether it reads it",
                dir.display()
            );
            return Ok(here(dir));
        }
        let tried: Vec<String> = sockets
            .iter()
            .map(|(_, p, _)| local_path(root, p).display().to_string())
            .collect();
        return Err(exit::usage(format!(
            "no containerd socket answered (tried {}): give --containerd-address, or --certs-dir \
             to write without asking containerd",
            tried.join(", ")
        )));
    };
    let socket = local_path(root, node_socket);
    let reported = match native::certs_dir(&socket)? {
        CertsDir::Reported(path) => Some(path),
        CertsDir::NotReported { version } => Some(from_config_file(s, &version)?),
        CertsDir::NoCri => None,
    };
    let k3s = node_socket.starts_with("/run/k3s")
        || reported.as_deref().is_some_and(|p| p.contains("/rancher/"));
    if k3s {
        return Err(k3s_refusal(s, &socket, &reported.unwrap_or_default())?);
    }
    match reported.as_deref() {
        None => match &s.certs_dir {
            Some(dir) => {
                eprintln!(
                    "offline-images: warning: containerd at {} did not answer the CRI status call; \
                     writing into --certs-dir {} as given",
                    socket.display(),
                    dir.display()
                );
                Ok(here(dir))
            }
            None => Err(exit::usage(format!(
                "containerd at {} did not answer the CRI status call (is its CRI plugin disabled?), \
                 so where it reads hosts.toml is unknown: give --certs-dir",
                socket.display()
            ))),
        },
        Some("") => Err(exit::usage(no_config_path(&socket))),
        Some(paths) => {
            let first = PathBuf::from(paths.split(':').next().unwrap_or(paths));
            match &s.certs_dir {
                Some(dir) if *dir != first => Err(exit::usage(format!(
                    "containerd at {} reads hosts.toml from {} (its registry config_path), not \
                     --certs-dir {}: leave --certs-dir out, or set config_path to it",
                    socket.display(),
                    first.display(),
                    dir.display()
                ))),
                _ => Ok(here(&first)),
            }
        }
    }
}

/// containerd 2's `config_path`, from its configuration file (`--containerd-config`, a path
/// on the node), or containerd 2's default when the file sets none or there is no file.
fn from_config_file(s: &Settings, version: &str) -> Result<String> {
    let node = &s.containerd_config;
    let here = local_path(s.runtime.host_root.as_deref(), node);
    let text = match std::fs::read_to_string(&here) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read containerd's configuration {}", here.display())
            })
        }
    };
    let found = text.as_deref().and_then(containerd_config::config_path);
    let (path, why) = match (&found, &text) {
        (Some(p), _) => (
            p.clone(),
            format!("its registry config_path in {}", node.display()),
        ),
        (None, Some(_)) => (
            containerd_config::DEFAULT_V2.to_string(),
            format!(
                "{} sets no registry config_path: containerd 2's default",
                node.display()
            ),
        ),
        (None, None) => (
            containerd_config::DEFAULT_V2.to_string(),
            format!("no {}: containerd 2's default", node.display()),
        ),
    };
    if version.trim_start_matches('v').starts_with("1.") {
        // A 1.x that answers the CRI without reporting config_path: never seen; say so.
        eprintln!("offline-images: warning: containerd {version} did not report its registry config_path; using {path} ({why})");
    } else {
        eprintln!("offline-images: containerd {version} reads hosts.toml from {path} ({why}; containerd 2 does not report it through the CRI)");
    }
    Ok(path)
}

/// The one line for a containerd that reads no `hosts.toml` at all.
fn no_config_path(socket: &Path) -> String {
    format!(
        "containerd at {} has no registry config_path, so it reads no hosts.toml: add \
         `[plugins.\"io.containerd.grpc.v1.cri\".registry]` with `config_path = \
         \"/etc/containerd/certs.d\"` to /etc/containerd/config.toml (containerd 2 with a \
         version 3 config: `[plugins.\"io.containerd.cri.v1.images\".registry]`), restart \
         containerd (systemctl restart containerd), then run mirror again",
        socket.display()
    )
}

/// k3s and RKE2 rewrite their `certs.d` from `registries.yaml` at start and delete what they
/// did not write: nothing is written, and the `registries.yaml` to use is printed.
fn k3s_refusal(s: &Settings, socket: &Path, certs: &str) -> Result<anyhow::Error> {
    let upstreams = upstreams(s)?;
    let ca = s
        .ca_file
        .as_ref()
        .map(|_| "/etc/rancher/k3s/offline-images-ca.crt");
    print!("{}", config::registries_yaml(&s.site, &upstreams, ca));
    Ok(exit::usage(format!(
        "containerd at {} is k3s's or RKE2's{}: they rewrite certs.d from registries.yaml at \
         every start and delete files they did not write, so nothing was written; put the \
         registries.yaml printed above on every node{} and restart k3s or RKE2",
        socket.display(),
        if certs.is_empty() {
            String::new()
        } else {
            format!(" (certs.d at {certs})")
        },
        if ca.is_some() {
            ", with the --ca-file at /etc/rancher/k3s/offline-images-ca.crt"
        } else {
            ""
        },
    )))
}
