//! Small readers of YAML trees and input files, shared by the collectors (collect.rs,
//! indirect.rs, values.rs).

use std::fs;
use std::path::Path;

use anyhow::anyhow;
use yaml_rust2::Yaml;

pub(super) fn last_component_has_tag(reference: &str) -> bool {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    last.contains(':') || last.contains('@')
}

pub(super) fn key(k: &str) -> Yaml {
    Yaml::String(k.to_string())
}

/// A scalar as text (tags like `1.27` or `7` are read as numbers by YAML).
pub(super) fn scalar(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(s) => Some(s.trim().to_string()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        _ => None,
    }
}

/// `Deployment/web` for messages.
pub(super) fn object_name(doc: &Yaml) -> String {
    match (doc["kind"].as_str(), doc["metadata"]["name"].as_str()) {
        (Some(k), Some(n)) => format!("{k}/{n}"),
        (Some(k), None) => k.to_string(),
        _ => "object".to_string(),
    }
}

pub(crate) fn yaml_error(name: &str, e: &yaml_rust2::ScanError) -> String {
    let m = e.marker();
    // The parser counts lines from 1 and columns from 0.
    format!(
        "{name}:{}:{}: not valid YAML: {}",
        m.line(),
        m.col() + 1,
        e.info()
    )
}

pub(super) fn display_input(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    }
}

/// Read a file (or standard input for `-`) as UTF-8, with an error that names it (an input
/// problem: the caller records its message).
pub(super) fn read_input(path: &Path) -> anyhow::Result<String> {
    let bytes = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf)
            .map_err(|e| anyhow!("<stdin>: cannot read: {e}"))?;
        buf
    } else {
        fs::read(path).map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?
    };
    String::from_utf8(bytes).map_err(|_| anyhow!("{}: is not UTF-8 text", display_input(path)))
}
