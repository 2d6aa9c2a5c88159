//! What `ctr` prints on stdout, read: its tables (`images ls`, `content ls`, `content active`,
//! `containers ls`), `ctr version`, and the `unpacking NAME (sha256:...)` lines of an import.

use std::collections::{BTreeMap, HashSet};

use super::super::{content, Container};

/// A row of `ctr images ls`: REF TYPE DIGEST SIZE PLATFORMS LABELS.
pub struct ImageRow<'a> {
    pub name: &'a str,
    /// The digest the name points to.
    pub target: &'a str,
    pub labels: BTreeMap<String, String>,
}

/// The rows of `ctr images ls`. SIZE has a space in it (`1.9 MiB`), so LABELS is the last
/// field.
pub fn image_rows(out: &str) -> Vec<ImageRow<'_>> {
    out.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 4).then(|| ImageRow {
                name: fields[0],
                target: fields[2],
                labels: parse_labels(fields[fields.len() - 1]),
            })
        })
        .collect()
}

/// Content labels by digest (`ctr content ls`): manifests carry their config's digest.
pub fn content_labels(out: &str) -> content::Labels {
    out.lines()
        .skip(1)
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let digest = it.next()?;
            let labels = it.next_back()?;
            Some((
                digest.to_string(),
                parse_labels(labels).into_iter().collect(),
            ))
        })
        .collect()
}

/// The partial uploads ctr made for an archive's entries (`ctr content active`: refs `tar-…`).
pub fn archive_ingests(out: &str) -> Vec<String> {
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|r| r.starts_with("tar-"))
        .map(str::to_string)
        .collect()
}

/// In a `ctr images ls` listing, the `import-…@sha256:D` records whose image is also listed
/// under one of `named`, that were not there `before` and carry no labels (an untagged
/// archive imported earlier keeps its digest record: it is labelled with that archive).
pub fn digest_records_to_drop(
    listing: &str,
    named: &[String],
    before: &HashSet<String>,
) -> Vec<String> {
    // (name, target, added by this import and unlabelled)
    let records: Vec<(&str, &str, bool)> = listing
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0], f[2], !before.contains(f[0]) && f.last() == Some(&"-")))
        })
        .collect();
    let named_targets: Vec<&str> = records
        .iter()
        .filter(|(name, _, _)| named.iter().any(|n| n == name))
        .map(|(_, target, _)| *target)
        .collect();
    records
        .iter()
        .filter(|(name, target, new)| {
            *new && name.starts_with("import-")
                && name.split_once('@').map(|(_, d)| d) == Some(*target)
                && named_targets.contains(target)
        })
        .map(|(name, _, _)| name.to_string())
        .collect()
}

/// `k=v,k=v` (or `-`) as `ctr` prints labels.
pub fn parse_labels(s: &str) -> BTreeMap<String, String> {
    if s == "-" {
        return BTreeMap::new();
    }
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The server version from `ctr version`.
pub fn server_version(out: &str) -> Option<String> {
    let server = out.split("Server:").nth(1)?;
    let line = server
        .lines()
        .find(|l| l.trim_start().starts_with("Version:"))?;
    Some(format!(
        "containerd {}",
        line.trim_start().trim_start_matches("Version:").trim()
    ))
}

/// `ctr containers ls`: CONTAINER IMAGE RUNTIME, with `-` for a container without image.
pub fn parse_containers(out: &str) -> Vec<Container> {
    out.lines()
        .skip(1)
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let id = it.next()?.to_string();
            let image = match it.next() {
                Some("-") | None => String::new(),
                Some(i) => i.to_string(),
            };
            Some(Container { id, image })
        })
        .collect()
}

/// The names `ctr images import` said it was unpacking (`unpacking NAME (sha256:...)...`).
pub fn unpacking_names(stdout: &[u8]) -> Vec<&str> {
    std::str::from_utf8(stdout)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.strip_prefix("unpacking ")?.split_once(" ("))
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_as_ctr_prints_them() {
        let l = parse_labels("io.cri-containerd.pinned=pinned,a=b=c");
        assert_eq!(l["io.cri-containerd.pinned"], "pinned");
        assert_eq!(l["a"], "b=c");
        assert!(parse_labels("-").is_empty());
    }

    #[test]
    fn containers_are_read_as_ctr_lists_them() {
        let out = "CONTAINER    IMAGE                              RUNTIME\n\
                   app          docker.io/library/nginx:1.27       io.containerd.runc.v2\n\
                   bare         -                                  io.containerd.runc.v2\n";
        let c = parse_containers(out);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].id, "app");
        assert_eq!(c[0].image, "docker.io/library/nginx:1.27");
        assert_eq!(c[1].image, "");
    }

    #[test]
    fn only_the_digest_records_of_named_images_are_dropped() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let t = "application/vnd.docker.distribution.manifest.v2+json";
        let listing = format!(
            "REF TYPE DIGEST SIZE PLATFORMS LABELS\n\
             docker.io/oi/app:1 {t} {a} 1.9 MiB linux/amd64 -\n\
             import-2026-12-01@{a} {t} {a} 1.9 MiB linux/amd64 -\n\
             import-2026-12-01@{b} {t} {b} 1.9 MiB linux/amd64 -\n"
        );
        let named = ["docker.io/oi/app:1".to_string()];
        let none = HashSet::new();
        let dropped = digest_records_to_drop(&listing, &named, &none);
        assert_eq!(dropped, [format!("import-2026-12-01@{a}")]);
        assert!(digest_records_to_drop(&listing, &[], &none).is_empty());
        // One there before this import, or labelled by an earlier one, stays.
        let before = HashSet::from([format!("import-2026-12-01@{a}")]);
        assert!(digest_records_to_drop(&listing, &named, &before).is_empty());
        let labelled = listing.replace(
            &format!("import-2026-12-01@{a} {t} {a} 1.9 MiB linux/amd64 -"),
            &format!(
                "import-2026-12-01@{a} {t} {a} 1.9 MiB linux/amd64 io.offline-images.archive.f=1/x"
            ),
        );
        assert!(digest_records_to_drop(&labelled, &named, &none).is_empty());
    }

    #[test]
    fn the_server_version_is_read_from_ctr_version() {
        let out = "Client:\n  Version:  1.6.20~ds1\n\nServer:\n  Version:  1.6.21\n  UUID: x\n";
        assert_eq!(server_version(out).unwrap(), "containerd 1.6.21");
    }

    #[test]
    fn images_and_uploads_are_read_as_ctr_lists_them() {
        let a = format!("sha256:{}", "a".repeat(64));
        let t = "application/vnd.docker.distribution.manifest.v2+json";
        let listing = format!(
            "REF TYPE DIGEST SIZE PLATFORMS LABELS\n\
             docker.io/oi/app:1 {t} {a} 1.9 MiB linux/amd64 io.cri-containerd.pinned=pinned\n\
             short\n"
        );
        let rows = image_rows(&listing);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "docker.io/oi/app:1");
        assert_eq!(rows[0].target, a);
        assert_eq!(rows[0].labels["io.cri-containerd.pinned"], "pinned");
        let active = "REF SIZE UPDATED\ntar-repositories 0B 1s\nother-1 1KiB 2s\n";
        assert_eq!(archive_ingests(active), ["tar-repositories"]);
        let stdout = b"unpacking docker.io/oi/app:1 (sha256:ab)...done\nother line\n";
        assert_eq!(unpacking_names(stdout), ["docker.io/oi/app:1"]);
    }
}
