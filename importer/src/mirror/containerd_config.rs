//! containerd 2 does not report its registry `config_path` through the CRI status, so it is
//! read from containerd's configuration file: the CRI images plugin's `registry` table
//! (`[plugins."io.containerd.cri.v1.images".registry]` in a version 3 file, or
//! `[plugins."io.containerd.grpc.v1.cri".registry]` in a version 2 file, which containerd 2
//! migrates). Unset, containerd 2 reads [`DEFAULT_V2`]. A line scanner, not a TOML parser: the
//! one key is all that is needed, and the node's importer carries no TOML crate.

use crate::toml_lines::Tables;

/// containerd 2's `config_path` when its configuration sets none.
pub const DEFAULT_V2: &str = "/etc/containerd/certs.d:/etc/docker/certs.d";

/// The CRI images plugin's registry `config_path` in `text`, if the file sets one.
pub fn config_path(text: &str) -> Option<String> {
    let mut tables = Tables::default();
    for line in text.lines() {
        let Some((full, value)) = tables.key_value(line) else {
            continue;
        };
        let cri = [
            "plugins.io.containerd.cri.v1.images.",
            "plugins.io.containerd.grpc.v1.cri.",
        ];
        if cri
            .iter()
            .any(|p| full.strip_prefix(p) == Some("registry.config_path"))
        {
            let v = value.trim_matches(|c| c == '"' || c == '\'');
            return Some(v.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_is_read_from_a_version_3_and_a_version_2_file() {
        let v3 = "version = 3\n[plugins]\n  [plugins.'io.containerd.cri.v1.images']\n    snapshotter = 'overlayfs'\n    [plugins.'io.containerd.cri.v1.images'.registry]\n      config_path = '/etc/containerd/certs.d'  # hosts.toml\n";
        assert_eq!(config_path(v3).as_deref(), Some("/etc/containerd/certs.d"));
        let v2 = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/x/certs.d\"\n";
        assert_eq!(config_path(v2).as_deref(), Some("/x/certs.d"));
        let dotted = "[plugins.\"io.containerd.cri.v1.images\"]\nregistry.config_path = \"/y\"\n";
        assert_eq!(config_path(dotted).as_deref(), Some("/y"));
        let other = "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors]\nconfig_path = \"/z\"\n[plugins.x.registry]\nconfig_path = \"/w\"\n";
        assert_eq!(config_path(other), None);
        assert_eq!(config_path(""), None);
    }
}
