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

/// What podman printed on a failed command, for one line of the log: its progress lines
/// (`Copying blob …`) and its own warning, info and debug lines (`time="…" level=warning …`)
/// left out. A `podman load` tries each format in turn and, when none takes the archive, says
/// why for each ("payload does not match any of the supported image formats:", then `* oci:
/// …`, `* docker-archive: …`); of those only the attempts at `formats` (the archive's own)
/// are kept, since the others fail for the archive not being in their format. Lines are
/// joined with "; ".
pub fn failure(stderr: &str, formats: &[&str]) -> String {
    let kept: Vec<&str> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && !is_chatter(l))
        .collect();
    let attempts_from = kept
        .iter()
        .position(|l| l.contains("does not match any of the supported image formats"));
    if let Some(from) = attempts_from {
        let mut attempts: Vec<String> = Vec::new();
        for line in &kept[from + 1..] {
            match line.trim_start().strip_prefix("* ") {
                Some(attempt) => attempts.push(attempt.to_string()),
                None => {
                    if let Some(last) = attempts.last_mut() {
                        last.push(' ');
                        last.push_str(line.trim());
                    }
                }
            }
        }
        let chosen: Vec<String> = attempts
            .into_iter()
            .filter(|a| formats.iter().any(|f| a.starts_with(&format!("{f}:"))))
            .collect();
        if !chosen.is_empty() {
            return chosen.join("; ");
        }
    }
    kept.join("; ")
}

/// A line podman prints on the way that says nothing of a failure.
fn is_chatter(line: &str) -> bool {
    const PROGRESS: [&str; 6] = [
        "Getting image source signatures",
        "Copying blob ",
        "Copying config ",
        "Writing manifest to image destination",
        "Storing signatures",
        "Loaded image",
    ];
    let line = line.trim_start();
    PROGRESS.iter().any(|p| line.starts_with(p))
        || (line.starts_with("time=\"")
            && ["level=warning", "level=info", "level=debug"]
                .iter()
                .any(|l| line.contains(l)))
}

#[cfg(test)]
mod tests {
    /// podman 4.3's answer, as a Job without SETFCAP got it for a docker-archive whose layer
    /// holds a file with a capability (tests/chart/test_crio_job.py).
    const LOAD_FAILED_43: &str = "Getting image source signatures
Copying blob sha256:c8fef4f5a05e8d0ec5a0c160730cc16d78fd7bd2f09a69f38de7d068d8181cee
Copying blob sha256:ca7a6d7e3cfe9a307665657a7502580b46e2dae5a1941277ad0560e1f584d64f
Error: payload does not match any of the supported image formats:
 * oci: initializing source oci:/var/tmp/podman1967944547:: open /var/tmp/podman1967944547/index.json: not a directory
 * oci-archive: loading index: open /var/tmp/oci3438530733/index.json: no such file or directory
 * docker-archive: writing blob: adding layer with blob \"sha256:45421d04\": processing tar file(lsetxattr /bin/capped: operation not permitted): exit status 1
 * dir: open /var/tmp/podman1967944547/manifest.json: not a directory
";

    /// podman 5.8's, for the same archive: a warning first, and the reason on a line of its own.
    const LOAD_FAILED_58: &str = "time=\"2026-12-07T23:53:50Z\" level=warning msg=\"Using cgroups-v1 which is deprecated\"
Getting image source signatures
Copying blob sha256:c8fef4f5a05e8d0ec5a0c160730cc16d78fd7bd2f09a69f38de7d068d8181cee
Error: payload does not match any of the supported image formats:
 * oci: open /var/tmp/podman467764767/index.json: not a directory
 * oci-archive: loading index: open /var/tmp/container_images_oci1672584985/index.json: no such file or directory
 * docker-archive: unable to copy from source docker-archive:/var/tmp/podman467764767:x:1: writing blob: unpacking failed (error: exit status 1
 output: lsetxattr /bin/capped: operation not permitted)
 * dir: open /var/tmp/podman467764767/manifest.json: not a directory
";

    #[test]
    fn a_failed_load_is_told_by_its_attempt_at_the_archives_own_format_without_progress_or_warnings(
    ) {
        assert_eq!(
            failure(LOAD_FAILED_43, &["docker-archive"]),
            "docker-archive: writing blob: adding layer with blob \"sha256:45421d04\": processing tar \
             file(lsetxattr /bin/capped: operation not permitted): exit status 1"
        );
        assert_eq!(
            failure(LOAD_FAILED_58, &["docker-archive"]),
            "docker-archive: unable to copy from source docker-archive:/var/tmp/podman467764767:x:1: \
             writing blob: unpacking failed (error: exit status 1 output: lsetxattr /bin/capped: \
             operation not permitted)"
        );
        // No format known (podman stopped reading): every attempt, still without the chatter.
        let all = failure(LOAD_FAILED_43, &[]);
        assert!(all.starts_with("Error: payload does not match"), "{all}");
        assert!(!all.contains("Copying blob"), "{all}");
        // An error that is no list of attempts is kept whole, an error-level line included.
        assert_eq!(
            failure(
                "time=\"x\" level=error msg=\"lock held\"\nError: short\n",
                &["oci-archive"]
            ),
            "time=\"x\" level=error msg=\"lock held\"; Error: short"
        );
    }

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
