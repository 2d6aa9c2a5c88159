//! The one place podman's output is read: `podman info`, `podman version`, `podman images`,
//! `podman ps` (each as JSON, the same in podman 4 and 5), and the storage podman logs as it
//! starts.

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

/// `podman version --format json`: its version and the platform it was built for (the node's).
pub fn version(json: &str) -> Result<(String, String)> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(rename = "Client")]
        client: Client,
    }
    #[derive(Deserialize)]
    struct Client {
        #[serde(rename = "Version")]
        version: String,
        #[serde(rename = "OsArch", default)]
        os_arch: String,
    }
    let doc: Doc = serde_json::from_str(json).context("cannot read podman version's JSON")?;
    let arch = doc
        .client
        .os_arch
        .split_once('/')
        .map(|(_, a)| a.to_string())
        .unwrap_or_default();
    Ok((doc.client.version, arch))
}

/// The storage podman settled on (after storage.conf and the flags), as it logs it at debug
/// level while it starts: `Using graph driver D`, `Using graph root G`, `Using run root R`
/// (podman 4.0 to 5.x, logrus's text lines). `None` when a line is missing.
pub fn started(stderr: &str) -> Option<(String, String, String)> {
    let said = |what: &str| {
        let key = format!("msg=\"Using {what} ");
        stderr.lines().find_map(|line| {
            let rest = &line[line.find(&key)? + key.len()..];
            let end = rest.rfind('"')?;
            let value = rest[..end].replace("\\\"", "\"").replace("\\\\", "\\");
            (!value.is_empty()).then_some(value)
        })
    };
    Some((
        said("graph driver")?,
        said("graph root")?,
        said("run root")?,
    ))
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

    /// As podman 4.3 and 5.8 write them (`--log-level=debug images`, `version --format json`).
    #[test]
    fn the_storage_podman_starts_on_is_read_from_its_debug_lines() {
        let stderr = r#"time="2026-12-07T16:33:07Z" level=debug msg="Using conmon: \"/usr/bin/conmon\""
time="2026-12-07T16:33:07Z" level=info msg="Using boltdb as database backend"
time="2026-12-07T16:33:07Z" level=debug msg="Using graph driver overlay"
time="2026-12-07T16:33:07Z" level=debug msg="Using graph root /var/lib/containers/storage"
time="2026-12-07T16:33:07Z" level=debug msg="Using run root /run/containers/storage"
time="2026-12-07T16:33:07Z" level=debug msg="Using static dir /var/lib/containers/storage/libpod""#;
        assert_eq!(
            started(stderr),
            Some((
                "overlay".to_string(),
                "/var/lib/containers/storage".to_string(),
                "/run/containers/storage".to_string()
            ))
        );
        let no_run_root: String = stderr
            .lines()
            .filter(|l| !l.contains("run root"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(started(&no_run_root), None);
        let v = r#"{"Client":{"APIVersion":"4.3.1","Version":"4.3.1","GoVersion":"go1.19.8",
            "OsArch":"linux/arm64","Os":"linux"}}"#;
        assert_eq!(
            version(v).unwrap(),
            ("4.3.1".to_string(), "arm64".to_string())
        );
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
