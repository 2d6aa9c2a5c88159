//! The one place podman's output is read: `podman info`, `podman images`, `podman ps` (each
//! as JSON, the same in podman 4 and 5).

use anyhow::{Context, Result};
use serde::Deserialize;

/// What `podman info` says of itself and of the storage it uses (after storage.conf and our
/// flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub version: String,
    pub arch: String,
    pub graph_root: String,
    pub run_root: String,
    pub driver: String,
    /// The storage.conf podman read (`/etc/containers/storage.conf`, or the packaged
    /// defaults in `/usr/share/containers/storage.conf`).
    pub config_file: String,
}

pub fn info(json: &str) -> Result<Info> {
    #[derive(Deserialize)]
    struct Doc {
        host: Host,
        store: Store,
        version: Version,
    }
    #[derive(Deserialize)]
    struct Host {
        #[serde(default)]
        arch: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Store {
        graph_root: String,
        run_root: String,
        graph_driver_name: String,
        #[serde(default)]
        config_file: String,
    }
    #[derive(Deserialize)]
    struct Version {
        #[serde(rename = "Version")]
        version: String,
    }
    let doc: Doc = serde_json::from_str(json).context("cannot read podman info's JSON")?;
    Ok(Info {
        version: doc.version.version,
        arch: doc.host.arch,
        graph_root: doc.store.graph_root,
        run_root: doc.store.run_root,
        driver: doc.store.graph_driver_name,
        config_file: doc.store.config_file,
    })
}

/// One image of `podman images --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Image {
    /// The image ID: its config digest, without `sha256:`.
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Names", default, deserialize_with = "null_as_empty")]
    pub names: Vec<String>,
    /// `repo@digest` for every name's repository and every manifest digest the image was
    /// stored under (the registry's, where the archive kept it).
    #[serde(rename = "RepoDigests", default, deserialize_with = "null_as_empty")]
    pub repo_digests: Vec<String>,
}

impl Image {
    /// `sha256:<id>`.
    pub fn config_digest(&self) -> String {
        if self.id.contains(':') {
            self.id.clone()
        } else {
            format!("sha256:{}", self.id)
        }
    }
}

pub fn images(json: &str) -> Result<Vec<Image>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json).context("cannot read podman images' JSON")
}

/// One container of `podman ps -a --external --format json` (CRI-O's and buildah's too).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Container {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Image", default)]
    pub image: String,
    #[serde(rename = "ImageID", default)]
    pub image_id: String,
}

pub fn containers(json: &str) -> Result<Vec<Container>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json).context("cannot read podman ps' JSON")
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_info_gives_the_storage_it_uses() {
        let json = r#"{"host":{"arch":"amd64","os":"linux"},"store":{"configFile":
            "/etc/containers/storage.conf","graphDriverName":"overlay","graphRoot":
            "/var/lib/containers/storage","runRoot":"/run/containers/storage"},
            "version":{"Version":"4.3.1","OsArch":"linux/amd64"}}"#;
        let i = info(json).unwrap();
        assert_eq!(i.version, "4.3.1");
        assert_eq!(i.driver, "overlay");
        assert_eq!(i.graph_root, "/var/lib/containers/storage");
        assert_eq!(i.config_file, "/etc/containers/storage.conf");
        assert!(info("{}").is_err());
    }

    #[test]
    fn images_without_names_or_digests_are_read() {
        let json = r#"[{"Id":"826b","Names":["docker.io/a/b:1"],"RepoDigests":
            ["docker.io/a/b@sha256:69c2"],"Labels":null},{"Id":"abcd","Names":null,
            "RepoDigests":null}]"#;
        let i = images(json).unwrap();
        assert_eq!(i[0].config_digest(), "sha256:826b");
        assert_eq!(i[0].repo_digests, ["docker.io/a/b@sha256:69c2"]);
        assert!(i[1].names.is_empty() && i[1].repo_digests.is_empty());
        assert!(images("").unwrap().is_empty());
    }
}
