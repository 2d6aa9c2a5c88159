//! The delivery spec (`deliver --spec FILE`): one YAML file that says what a site runs and
//! where it goes, in the spirit of the seed's OfflineImage resource. The images per platform,
//! how the connected side reaches their registries, the hosts and the transfer pool:
//!
//! ```yaml
//! imagesPath: ./edge-images        # the bundle, kept between runs (the local cache)
//! images:                          # per platform: the references its hosts run
//!   linux/amd64: [registry.example.com/app/api:1.4.2]
//!   linux/arm64: [registry.example.com/app/api:1.4.2]
//! auth:                            # how the export reaches the registries
//!   dockerConfig: ~/.docker/config.json
//!   caFile: /etc/ssl/site-ca.pem
//!   insecureRegistries: [registry.lan:5000]
//! transferPool: 2
//! runtime: auto
//! hosts:
//!   - ssh: root@10.0.4.5           # USER@HOST[:PORT], then a hosts file line's words
//!     runtime: docker
//! ```
//!
//! Each platform's images are exported, as `export` exports them, into a layout of its own
//! under the images path (`linux-amd64/`, `linux-arm64/`), so a reference listed for one
//! platform only is never asked of the other. Relative paths are read from the spec file's
//! directory, `~/` from `$HOME`. Every key is known or refused by name: a typo must not drop
//! a host silently.

use std::path::{Path, PathBuf};

use anyhow::Result;
use yaml_rust2::{Yaml, YamlLoader};

use super::hosts::Host;
use crate::archive::Platform;
use crate::exit;

/// A delivery spec as read.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The file, for messages.
    pub file: PathBuf,
    pub images_path: Option<PathBuf>,
    /// Each platform with its references, in the file's order.
    pub images: PerPlatform,
    pub docker_config: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub insecure_registries: Vec<String>,
    pub transfer_pool: Option<usize>,
    pub runtime: Option<String>,
    pub hosts: Vec<Host>,
}

/// A fault: the key at fault (`hosts[1].ssh`) and what is wrong with its value.
type Fault = (String, String);

/// Each platform with its references.
type PerPlatform = Vec<(Platform, Vec<String>)>;

const TOP: &[&str] = &[
    "imagesPath",
    "images",
    "auth",
    "transferPool",
    "runtime",
    "hosts",
];
const AUTH: &[&str] = &["dockerConfig", "caFile", "insecureRegistries"];
const RUNTIMES: &[&str] = &["auto", "docker", "podman", "containerd"];

impl Spec {
    /// Read and check the spec at `file`; every fault is a usage error naming the file and
    /// the key.
    pub fn load(file: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            exit::usage(format!("cannot read the spec file {}: {e}", file.display()))
        })?;
        let spec = Spec::parse(file, &text).map_err(exit::usage)?;
        // The export reads a missing docker config as no credentials: a typo here must not.
        if let Some(config) = spec.docker_config.as_ref().filter(|c| !c.is_file()) {
            return Err(exit::usage(format!(
                "{}: auth.dockerConfig: {}: no such file",
                file.display(),
                config.display()
            )));
        }
        Ok(spec)
    }

    /// The spec in `text`, read from `file` (for messages and relative paths).
    pub fn parse(file: &Path, text: &str) -> Result<Spec, String> {
        let name = file.display().to_string();
        let docs = YamlLoader::load_from_str(text)
            .map_err(|e| crate::export::yaml::yaml_error(&name, &e))?;
        let at = |key: &str, what: String| format!("{name}: {key}: {what}");
        let top = match docs.as_slice() {
            [doc @ Yaml::Hash(_)] => doc,
            _ => {
                return Err(format!(
                    "{name}: not a delivery spec (a YAML mapping of {})",
                    TOP.join(", ")
                ))
            }
        };
        known_keys(top, TOP)
            .map_err(|k| at(&k, format!("not a spec key (known: {})", TOP.join(", "))))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut spec = Spec {
            file: file.to_path_buf(),
            ..Spec::default()
        };
        spec.images_path = path(base, &top["imagesPath"]).map_err(|w| at("imagesPath", w))?;
        spec.images = images(&top["images"]).map_err(|(k, w)| at(&k, w))?;
        let auth = &top["auth"];
        if !matches!(auth, Yaml::BadValue | Yaml::Null | Yaml::Hash(_)) {
            return Err(at("auth", "not a mapping".into()));
        }
        known_keys(auth, AUTH).map_err(|k| {
            at(
                &format!("auth.{k}"),
                format!("not an auth key (known: {})", AUTH.join(", ")),
            )
        })?;
        spec.docker_config =
            path(base, &auth["dockerConfig"]).map_err(|w| at("auth.dockerConfig", w))?;
        spec.ca_file = path(base, &auth["caFile"]).map_err(|w| at("auth.caFile", w))?;
        spec.insecure_registries =
            strings(&auth["insecureRegistries"]).map_err(|w| at("auth.insecureRegistries", w))?;
        spec.transfer_pool = match &top["transferPool"] {
            Yaml::BadValue | Yaml::Null => None,
            Yaml::Integer(n) if (1..=64).contains(n) => Some(*n as usize),
            other => {
                return Err(at(
                    "transferPool",
                    format!("{}: not a number from 1 to 64", shown(other)),
                ))
            }
        };
        spec.runtime = runtime(&top["runtime"]).map_err(|w| at("runtime", w))?;
        spec.hosts = hosts(&top["hosts"]).map_err(|(k, w)| at(&k, w))?;
        Ok(spec)
    }

    /// The directory each platform's layout is exported to under `images_path`.
    pub fn platform_dir(images_path: &Path, platform: &Platform) -> PathBuf {
        images_path.join(platform.to_string().replace('/', "-"))
    }
}

/// The first key of `map` not in `known`, as text.
fn known_keys(map: &Yaml, known: &[&str]) -> Result<(), String> {
    let Yaml::Hash(h) = map else { return Ok(()) };
    for k in h.keys() {
        match k.as_str() {
            Some(k) if known.contains(&k) => {}
            _ => return Err(shown(k)),
        }
    }
    Ok(())
}

/// A node as the file wrote it, for messages.
fn shown(node: &Yaml) -> String {
    match node {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Array(_) => "a list".into(),
        Yaml::Hash(_) => "a mapping".into(),
        _ => "nothing".into(),
    }
}

/// A path: `~/` is `$HOME`'s, a relative one is read from the spec's directory.
fn path(base: &Path, node: &Yaml) -> Result<Option<PathBuf>, String> {
    let text = match node {
        Yaml::BadValue | Yaml::Null => return Ok(None),
        Yaml::String(s) if !s.trim().is_empty() => s.trim(),
        other => return Err(format!("{}: not a path", shown(other))),
    };
    let p = match text.strip_prefix("~/") {
        Some(rest) => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .ok_or_else(|| format!("{text}: $HOME is not set"))?;
            PathBuf::from(home).join(rest)
        }
        None => base.join(text),
    };
    Ok(Some(p))
}

/// A list of strings (absent: empty).
fn strings(node: &Yaml) -> Result<Vec<String>, String> {
    match node {
        Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
        Yaml::Array(items) => items
            .iter()
            .map(|i| match i {
                Yaml::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                other => Err(format!("{}: not a string", shown(other))),
            })
            .collect(),
        other => Err(format!("{}: not a list", shown(other))),
    }
}

fn runtime(node: &Yaml) -> Result<Option<String>, String> {
    match node {
        Yaml::BadValue | Yaml::Null => Ok(None),
        Yaml::String(s) if RUNTIMES.contains(&s.as_str()) => Ok(Some(s.clone())),
        other => Err(format!(
            "{}: not auto, docker, podman or containerd",
            shown(other)
        )),
    }
}

/// `images`: each platform (`os/arch[/variant]`) with a list of references, at least one.
fn images(node: &Yaml) -> Result<PerPlatform, Fault> {
    let Yaml::Hash(h) = node else {
        let what = match node {
            Yaml::BadValue | Yaml::Null => {
                "missing: give the references per platform, e.g. linux/amd64: [REF, ...]"
            }
            _ => "not a mapping of platforms (e.g. linux/amd64) to lists of references",
        };
        return Err(("images".into(), what.into()));
    };
    let mut out: PerPlatform = Vec::new();
    for (k, v) in h {
        let key = format!("images.{}", shown(k));
        let platform = k
            .as_str()
            .and_then(Platform::parse)
            .filter(|p| p.variant.as_deref() != Some(""))
            .ok_or_else(|| {
                (
                    key.clone(),
                    "not a platform of the form os/arch[/variant], e.g. linux/arm64".to_string(),
                )
            })?;
        let refs = strings(v).map_err(|w| (key.clone(), w))?;
        if refs.is_empty() {
            return Err((key, "no image listed".into()));
        }
        if out.iter().any(|(p, _)| *p == platform) {
            return Err((key, "given twice".into()));
        }
        out.push((platform, refs));
    }
    if out.is_empty() {
        return Err(("images".into(), "no platform listed".into()));
    }
    Ok(out)
}

/// `hosts`: each a mapping of `ssh: USER@HOST[:PORT]` and the words of a hosts file line.
fn hosts(node: &Yaml) -> Result<Vec<Host>, Fault> {
    let items = match node {
        Yaml::BadValue | Yaml::Null => return Ok(Vec::new()),
        Yaml::Array(items) => items,
        other => return Err(("hosts".into(), format!("{}: not a list", shown(other)))),
    };
    let mut out: Vec<Host> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("hosts[{i}]");
        let Yaml::Hash(h) = item else {
            return Err((key, "not a mapping with ssh: USER@HOST[:PORT]".into()));
        };
        let ssh = match &item["ssh"] {
            Yaml::String(s) => s.trim(),
            _ => {
                return Err((
                    format!("{key}.ssh"),
                    "missing: give USER@HOST[:PORT]".into(),
                ))
            }
        };
        let mut host = Host::parse(ssh).map_err(|w| (format!("{key}.ssh"), w))?;
        for (k, v) in h {
            let word = k.as_str().unwrap_or_default();
            if word == "ssh" {
                continue;
            }
            let value = match v {
                Yaml::String(s) => s.trim().to_string(),
                Yaml::Integer(n) => n.to_string(),
                other => {
                    return Err((
                        format!("{key}.{}", shown(k)),
                        format!("{}: not a value", shown(other)),
                    ))
                }
            };
            host.add_option(word, &value)
                .map_err(|w| (format!("{key}.{}", shown(k)), w))?;
        }
        if out.iter().any(|h| h.name == host.name) {
            return Err((format!("{key}.ssh"), format!("{ssh} is listed twice")));
        }
        out.push(host);
    }
    Ok(out)
}

impl Spec {
    /// One `export` per platform, as `export --platform P --output IMAGES_PATH/os-arch REF...`
    /// runs with its defaults (the registry engine with the local engines' fallback, a layout,
    /// the shared blob cache, this binary and its sibling as the bundle's importers), and the
    /// spec's auth.
    pub fn exports(&self, images_path: &Path) -> Vec<crate::export::Settings> {
        use crate::export::{self, BundleFormat, Choice, ImporterBinary, Inputs};
        self.images
            .iter()
            .map(|(platform, refs)| export::Settings {
                inputs: Inputs {
                    images: refs.clone(),
                    ..Inputs::default()
                },
                output: Spec::platform_dir(images_path, platform),
                platforms: vec![platform.clone()],
                engine: Choice::Auto,
                compression: crate::archive::Compression::Gzip,
                jobs: 2,
                no_cache: false,
                cache_dir: None,
                ca_file: self.ca_file.clone(),
                registry_mirrors: Vec::new(),
                username: None,
                insecure: export::insecure_hosts(&self.insecure_registries),
                dry_run: false,
                importer_binary: ImporterBinary::Running,
                allow_empty: false,
                format: BundleFormat::Layout,
                keep_unused: false,
                since: None,
                pack: None,
                no_signatures: false,
                verify_keys: Vec::new(),
                verify_certificates: None,
                sign_key: None,
                docker_config: self.docker_config.clone(),
            })
            .collect()
    }
}

/// Bring the bundle at `images_path` up to date: each export run in turn (a re-run fetches
/// only what changed, as `export` does), then the importers they placed copied to the images
/// path's own `.offline-images/`, where `deliver` looks for them. Failure when an image
/// failed (the others, and what the bundle held for it, are still delivered).
pub fn refresh(images_path: &Path, exports: &[crate::export::Settings]) -> Result<exit::Code> {
    use crate::bundled::{self, Arch};
    let mut code = exit::Code::Success;
    for settings in exports {
        if crate::export::run(settings)? != exit::Code::Success {
            code = exit::Code::Failure;
        }
    }
    let mut importers: Vec<(Arch, PathBuf)> = Vec::new();
    for arch in Arch::ALL {
        let placed = exports
            .iter()
            .map(|s| bundled::arch_paths(&s.output, arch).0)
            .find(|p| p.is_file());
        if let Some(p) = placed {
            importers.push((arch, p));
        }
    }
    if !importers.is_empty() {
        bundled::place(&importers, images_path)?;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
# the site's spec
imagesPath: ./edge-images
images:
  linux/amd64: [reg.example.com/app/api:1.4.2, reg.example.com/app/web:1.4.2]
  linux/arm64:
    - reg.example.com/app/api:1.4.2
auth:
  dockerConfig: conf/docker.json
  caFile: /etc/ssl/site-ca.pem
  insecureRegistries: [registry.lan:5000]
transferPool: 3
runtime: docker
hosts:
  - ssh: root@10.0.4.5
  - ssh: pi@edge-7.site:2222
    runtime: podman
    dir: /var/lib/offline-images
";

    fn parse(text: &str) -> Result<Spec, String> {
        Spec::parse(Path::new("/site/spec.yaml"), text)
    }

    #[test]
    fn a_full_spec_gives_its_platforms_hosts_and_paths_from_its_directory() {
        let s = parse(FULL).unwrap();
        assert_eq!(s.images_path, Some(PathBuf::from("/site/./edge-images")));
        assert_eq!(
            s.docker_config,
            Some(PathBuf::from("/site/conf/docker.json"))
        );
        assert_eq!(s.ca_file, Some(PathBuf::from("/etc/ssl/site-ca.pem")));
        assert_eq!(s.insecure_registries, ["registry.lan:5000"]);
        assert_eq!(
            (s.transfer_pool, s.runtime.as_deref()),
            (Some(3), Some("docker"))
        );
        assert_eq!(s.hosts.len(), 2);
        assert_eq!(s.hosts[0].name, "root@10.0.4.5");
        let pi = &s.hosts[1];
        assert_eq!((pi.host.as_str(), pi.port), ("edge-7.site", Some(2222)));
        assert_eq!(pi.option("runtime"), Some("podman"));
        assert_eq!(pi.dir(), "/var/lib/offline-images");
    }

    /// Each platform its own list, exported into a layout of its own for that platform only.
    #[test]
    fn each_platform_is_one_export_of_its_own_list_into_its_own_layout() {
        let s = parse(FULL).unwrap();
        let listed: Vec<(String, usize)> = s
            .images
            .iter()
            .map(|(p, r)| (p.to_string(), r.len()))
            .collect();
        assert_eq!(
            listed,
            [
                ("linux/amd64".to_string(), 2),
                ("linux/arm64".to_string(), 1)
            ]
        );
        let exports = s.exports(Path::new("/b"));
        assert_eq!(exports.len(), 2);
        let arm = &exports[1];
        assert_eq!(arm.output, PathBuf::from("/b/linux-arm64"));
        assert_eq!(arm.platforms, [Platform::parse("linux/arm64").unwrap()]);
        assert_eq!(arm.inputs.images, ["reg.example.com/app/api:1.4.2"]);
        assert_eq!(arm.docker_config, s.docker_config);
        assert_eq!(arm.insecure, ["registry.lan:5000"]);
        assert_eq!(arm.format, crate::export::BundleFormat::Layout);
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(
            Spec::platform_dir(Path::new("/b"), &v7),
            PathBuf::from("/b/linux-arm-v7")
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_the_file_wherever_it_is() {
        let e = parse(&FULL.replace("transferPool", "transferpool")).unwrap_err();
        assert!(
            e.starts_with("/site/spec.yaml: transferpool: not a spec key (known: imagesPath,"),
            "{e}"
        );
        let e = parse(&FULL.replace("caFile", "cafile")).unwrap_err();
        assert!(
            e.starts_with("/site/spec.yaml: auth.cafile: not an auth key"),
            "{e}"
        );
        let e = parse(&FULL.replace("    runtime: podman", "    runtme: podman")).unwrap_err();
        assert!(
            e.starts_with("/site/spec.yaml: hosts[1].runtme: \"runtme\": not a host option"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_host_is_named_by_its_place_and_value() {
        let e = parse(&FULL.replace("pi@edge-7.site:2222", "pi@edge-7.site:ssh")).unwrap_err();
        assert_eq!(
            e,
            "/site/spec.yaml: hosts[1].ssh: \"pi@edge-7.site:ssh\": the port is not a number \
             from 1 to 65535"
        );
        let e = parse(&FULL.replace("runtime: podman", "runtime: crio")).unwrap_err();
        assert!(
            e.contains("hosts[1].runtime: runtime=crio: not auto, docker"),
            "{e}"
        );
        let e = parse(&FULL.replace("  - ssh: root@10.0.4.5\n", "  - dir: /x\n")).unwrap_err();
        assert_eq!(
            e,
            "/site/spec.yaml: hosts[0].ssh: missing: give USER@HOST[:PORT]"
        );
        let twice = FULL.replace("pi@edge-7.site:2222", "root@10.0.4.5");
        assert!(parse(&twice).unwrap_err().contains("listed twice"));
    }

    #[test]
    fn images_must_be_there_each_platform_with_a_list() {
        let without: String = FULL
            .lines()
            .filter(|l| {
                !l.contains("linux/") && !l.starts_with("images:") && !l.starts_with("    - ")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let e = parse(&without).unwrap_err();
        assert!(e.starts_with("/site/spec.yaml: images: missing"), "{e}");
        let e = parse(&FULL.replace("linux/amd64:", "amd64:")).unwrap_err();
        assert!(
            e.starts_with("/site/spec.yaml: images.amd64: not a platform"),
            "{e}"
        );
        let e = parse(&FULL.replace(
            "[reg.example.com/app/api:1.4.2, reg.example.com/app/web:1.4.2]",
            "[]",
        ))
        .unwrap_err();
        assert_eq!(e, "/site/spec.yaml: images.linux/amd64: no image listed");
        let e = parse(&FULL.replace("transferPool: 3", "transferPool: 0")).unwrap_err();
        assert_eq!(
            e,
            "/site/spec.yaml: transferPool: 0: not a number from 1 to 64"
        );
        let e = parse("images: [a\n").unwrap_err();
        assert!(e.starts_with("/site/spec.yaml:"), "{e}");
        assert!(e.contains("not valid YAML"), "{e}");
    }
}
