//! CRI-O's `pinned_images` (CRI-O 1.29 and later): images the kubelet's image garbage
//! collection must leave alone, set in `[crio.image]` of the node's `/etc/crio/crio.conf` and
//! of the drop-ins `/etc/crio/crio.conf.d/*.conf`, read in that order (the drop-ins by name), a
//! later file's setting replacing an earlier one's. A pattern is an exact name, a glob with
//! `*` at its end, or a keyword with `*` at both ends, as crio.conf(5) describes them.
//!
//! A line scanner, not a TOML parser (the node's importer carries no TOML crate): it follows
//! the table headers, and reads the one key, whose array may span lines. CRI-O itself was not
//! run here; the tests read configuration text shaped as CRI-O's own files are.

use std::path::{Path, PathBuf};

use super::super::socket;
use crate::toml_lines::{uncommented, Tables};

/// CRI-O's main configuration file and its drop-in directory, as node paths.
pub const CRIO_CONF: &str = "/etc/crio/crio.conf";
pub const CRIO_CONF_D: &str = "/etc/crio/crio.conf.d";

/// What the node's CRI-O configuration pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// The patterns in effect (empty: nothing is pinned).
    pub patterns: Vec<String>,
    /// The node path of the file whose setting is in effect; `None` when no file sets it.
    pub from: Option<String>,
    /// The files read, as node paths.
    pub read: Vec<String>,
}

impl Pinned {
    /// Whether CRI-O pins an image of this name (a full name, `registry/repo:tag`).
    pub fn pins(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| matches(p, name))
    }
}

/// Whether the pattern `pattern` of `pinned_images` matches `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(_), Some(_)) if pattern.len() >= 2 => name.contains(&pattern[1..pattern.len() - 1]),
        (_, Some(prefix)) => name.starts_with(prefix),
        _ => name == pattern,
    }
}

/// The node's CRI-O configuration files under `host_root`, in the order CRI-O reads them:
/// crio.conf, then the drop-ins by name. Only the files that exist.
pub fn config_files(host_root: Option<&Path>) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let main = socket::local_path(host_root, Path::new(CRIO_CONF));
    if main.is_file() {
        files.push((CRIO_CONF.to_string(), main));
    }
    let dir = socket::local_path(host_root, Path::new(CRIO_CONF_D));
    let mut dropins: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".conf"))
                .collect()
        })
        .unwrap_or_default();
    dropins.sort();
    for name in dropins {
        files.push((format!("{CRIO_CONF_D}/{name}"), dir.join(&name)));
    }
    files
}

/// What the node's CRI-O configuration pins; `None` when it has no configuration to read.
/// A file that cannot be read is an error naming it.
pub fn read(host_root: Option<&Path>) -> anyhow::Result<Option<Pinned>> {
    let main = socket::local_path(host_root, Path::new(CRIO_CONF));
    let dir = socket::local_path(host_root, Path::new(CRIO_CONF_D));
    if !main.exists() && !dir.is_dir() {
        return Ok(None);
    }
    let files = config_files(host_root);
    let mut texts = Vec::new();
    for (node_path, local) in files {
        let text = std::fs::read_to_string(&local)
            .map_err(|e| anyhow::anyhow!("cannot read CRI-O's {}: {e}", local.display()))?;
        texts.push((node_path, text));
    }
    Ok(Some(from_texts(&texts)))
}

/// What `(node path, text)` files read in order pin.
pub fn from_texts(files: &[(String, String)]) -> Pinned {
    let mut pinned = Pinned {
        patterns: Vec::new(),
        from: None,
        read: Vec::new(),
    };
    for (path, text) in files {
        pinned.read.push(path.clone());
        if let Some(patterns) = pinned_images(text) {
            pinned.patterns = patterns;
            pinned.from = Some(path.clone());
        }
    }
    pinned
}

/// `[crio.image] pinned_images` of one file, when it sets it.
pub fn pinned_images(text: &str) -> Option<Vec<String>> {
    let mut tables = Tables::default();
    let mut found = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((full, value)) = tables.key_value(line) else {
            continue;
        };
        if full != "crio.image.pinned_images" {
            continue;
        }
        let mut array = value.trim().to_string();
        // An array may span lines: read on to its closing bracket.
        while !closed(&array) {
            let Some(next) = lines.next() else { break };
            array.push(' ');
            array.push_str(uncommented(next).trim());
        }
        found = Some(strings(&array));
    }
    found
}

/// Whether an array's text has its closing `]` (outside quotes).
fn closed(array: &str) -> bool {
    let mut quote = None;
    for c in array.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ']') => return true,
            _ => {}
        }
    }
    false
}

/// The quoted strings of an array's text.
fn strings(array: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut quote = None;
    let mut current = String::new();
    for c in array.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => {
                out.push(std::mem::take(&mut current));
                quote = None;
            }
            (Some(_), c) => current.push(c),
            _ => {}
        }
    }
    out
}

/// For `verify` on podman: say on stderr which of `names` (the bundle's tag names) CRI-O's
/// configuration under `host_root` does not pin, and the drop-in that would; nothing when the
/// node has no CRI-O configuration. Never changes the outcome: pinning is the node's choice.
pub fn report(host_root: Option<&Path>, names: &[String]) {
    let pinned = match read(host_root) {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!(
                "offline-images: no CRI-O configuration ({CRIO_CONF}, {CRIO_CONF_D}/*.conf) on \
                 this node: pinned_images not checked"
            );
            return;
        }
        Err(e) => {
            eprintln!("offline-images: warning: {e:#}: pinned_images not checked");
            return;
        }
    };
    let loose: Vec<String> = names
        .iter()
        .map(|n| crate::reference::normalize(n).unwrap_or_else(|_| n.clone()))
        .filter(|n| !pinned.pins(n))
        .collect();
    let whence = pinned.from.as_deref().unwrap_or("no file sets it");
    if loose.is_empty() {
        eprintln!(
            "offline-images: CRI-O pins all {} image name(s) (pinned_images, {whence})",
            names.len()
        );
        return;
    }
    eprintln!(
        "offline-images: {} of {} image name(s) are not in CRI-O's pinned_images ({whence}; \
         read {}): the kubelet's image garbage collection may remove them. CRI-O 1.29 and \
         later pin them with a drop-in such as {CRIO_CONF_D}/50-offline-images.conf (a later \
         file's pinned_images replaces an earlier one's: keep the patterns already in effect):\n{}",
        loose.len(),
        names.len(),
        pinned.read.join(", "),
        dropin(&loose).trim_end()
    );
}

/// The drop-in that pins `names`, for the log and the guide.
pub fn dropin(names: &[String]) -> String {
    let mut text = String::from("[crio.image]\npinned_images = [\n");
    for n in names {
        text.push_str(&format!("  \"{n}\",\n"));
    }
    text.push_str("]\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of CRI-O's own crio.conf (`crio config` prints it so): tables, comments,
    /// commented-out keys, arrays over several lines.
    const CRIO_CONF_TEXT: &str = r#"# The CRI-O configuration file specifies all of the available configuration
# options and command-line flags for the crio(8) OCI Kubernetes Container Runtime
[crio]
root = "/var/lib/containers/storage"
runroot = "/run/containers/storage"
storage_driver = "overlay"

[crio.runtime]
default_runtime = "crun"
# pinned_images = [ "not/this:1" ]

[crio.image]
default_transport = "docker://"
pause_image = "registry.k8s.io/pause:3.9"
# A list of images to be excluded from the kubelet's garbage collection.
pinned_images = [
	"registry.k8s.io/pause:3.9", # the sandbox
	"quay.io/openshift-release-dev/*",
]
signature_policy = ""

[crio.network]
network_dir = "/etc/cni/net.d/"
"#;

    #[test]
    fn pinned_images_is_read_from_crio_image_over_several_lines_with_comments() {
        assert_eq!(
            pinned_images(CRIO_CONF_TEXT).unwrap(),
            [
                "registry.k8s.io/pause:3.9",
                "quay.io/openshift-release-dev/*"
            ]
        );
        let one_line = "[crio.image]\npinned_images = [\"docker.io/oi/app:1\", 'x#y:2']\n";
        assert_eq!(
            pinned_images(one_line).unwrap(),
            ["docker.io/oi/app:1", "x#y:2"]
        );
        let dotted = "[crio]\nimage.pinned_images = [\"a:1\"]\n";
        assert_eq!(pinned_images(dotted).unwrap(), ["a:1"]);
        assert_eq!(
            pinned_images("[crio.image]\npinned_images = []\n").unwrap(),
            Vec::<String>::new()
        );
        let elsewhere =
            "[crio.runtime]\npinned_images = [\"a:1\"]\n[crio.image]\npause_image = \"p\"\n";
        assert_eq!(pinned_images(elsewhere), None);
        assert_eq!(pinned_images(""), None);
    }

    #[test]
    fn a_later_drop_in_replaces_the_setting_and_a_file_without_it_keeps_it() {
        let files = [
            (CRIO_CONF.to_string(), CRIO_CONF_TEXT.to_string()),
            (
                format!("{CRIO_CONF_D}/10-offline-images.conf"),
                "[crio.image]\npinned_images = [\n  \"docker.io/oi-test/alpha:1\",\n]\n"
                    .to_string(),
            ),
            (
                format!("{CRIO_CONF_D}/20-log.conf"),
                "[crio.runtime]\nlog_level = \"info\"\n".to_string(),
            ),
        ];
        let p = from_texts(&files);
        assert_eq!(p.patterns, ["docker.io/oi-test/alpha:1"]);
        assert_eq!(
            p.from.as_deref(),
            Some("/etc/crio/crio.conf.d/10-offline-images.conf")
        );
        assert_eq!(p.read.len(), 3);
        assert!(p.pins("docker.io/oi-test/alpha:1"));
        assert!(!p.pins("registry.k8s.io/pause:3.9"));
    }

    #[test]
    fn patterns_are_exact_glob_or_keyword() {
        assert!(matches("docker.io/oi/app:1", "docker.io/oi/app:1"));
        assert!(!matches("docker.io/oi/app:1", "docker.io/oi/app:10"));
        assert!(matches("docker.io/oi/*", "docker.io/oi/app:1"));
        assert!(!matches("docker.io/oi/*", "quay.io/oi/app:1"));
        assert!(matches("*pause*", "registry.k8s.io/pause:3.9"));
        assert!(!matches("*pause*", "docker.io/oi/app:1"));
        assert!(matches("*", "anything:1"));
    }

    #[test]
    fn the_dropin_pins_exactly_the_names_given_and_reads_back() {
        let names = vec![
            "docker.io/oi/app:1".to_string(),
            "quay.io/x/y:2".to_string(),
        ];
        let text = dropin(&names);
        assert_eq!(pinned_images(&text).unwrap(), names);
    }

    #[test]
    fn the_files_are_read_from_the_node_root_in_crios_order() {
        let root = std::env::temp_dir().join(format!("oi-pinned-{}", std::process::id()));
        let d = root.join("etc/crio/crio.conf.d");
        std::fs::create_dir_all(&d).unwrap();
        let none = read(Some(&root)).unwrap().unwrap();
        assert_eq!((none.from, none.patterns.len()), (None, 0));
        std::fs::write(root.join("etc/crio/crio.conf"), CRIO_CONF_TEXT).unwrap();
        std::fs::write(
            d.join("99-last.conf"),
            "[crio.image]\npinned_images = [\"b:1\"]\n",
        )
        .unwrap();
        std::fs::write(
            d.join("50-mid.conf"),
            "[crio.image]\npinned_images = [\"a:1\"]\n",
        )
        .unwrap();
        std::fs::write(
            d.join("README"),
            "[crio.image]\npinned_images = [\"no:1\"]\n",
        )
        .unwrap();
        let p = read(Some(&root)).unwrap().unwrap();
        assert_eq!(p.patterns, ["b:1"]);
        assert_eq!(
            p.read,
            [
                "/etc/crio/crio.conf",
                "/etc/crio/crio.conf.d/50-mid.conf",
                "/etc/crio/crio.conf.d/99-last.conf"
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(read(Some(&root)).unwrap(), None);
    }
}
