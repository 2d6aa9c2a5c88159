//! After the run: is every promised and required image there? Every image `images.json`
//! promises for the node's platform (but under the names another archive wins) and every
//! `--require` reference ([`Expected`]) is looked for in the runtime; each one absent is a
//! `MISSING` line and fails the run.

use std::collections::HashMap;

use anyhow::Result;

use super::execute::with_retries;
use super::plan::{findable, Plan};
use super::{platform_matches, Run};
use crate::archive::Platform;
use crate::bundle::{self, BundleArchive};
use crate::exit;
use crate::reference;
use crate::report::{Event, Missing, Reporter};
use crate::runtime::{Present, Runtime};

/// Every image the bundle promises for this node (but under the names another archive wins)
/// and every required one, checked in the runtime after the run.
pub(super) fn missing_after(ctx: &Run<'_>, plan: &Plan, required: &[String]) -> Vec<Missing> {
    let index_of: HashMap<&str, usize> = plan
        .all
        .iter()
        .map(|p| (p.unit.name.as_str(), p.index))
        .collect();
    let lost = |file: &str, name: &str| {
        index_of
            .get(file)
            .is_some_and(|&i| plan.owners.loses(name, i))
    };
    let expected = expected_images(
        ctx.source.promised(),
        required,
        &ctx.platform,
        &lost,
        ctx.runtime.lists_digest_names(),
    );
    check_presence(ctx.runtime, &expected, ctx.reporter)
}

/// An image the run must leave in the runtime, and who asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    /// References; empty for an image the bundle lists without a name (found by config).
    names: Vec<String>,
    config_digest: Option<String>,
    manifest_digest: Option<String>,
    /// "listed in images.json for <file>" or "required (--require)".
    source: String,
}

/// The `--require` references, normalised; a usage error names the one that is not a reference.
pub(super) fn required_images(values: &[String]) -> Result<Vec<String>> {
    values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| {
            reference::normalize(v)
                .map_err(|e| exit::usage(format!("--require {v:?} is not an image reference: {e}")))
        })
        .collect()
}

/// Every image of images.json for this node's platform, under each of its names (the tag
/// and the digest names alike), then every required one. A name images.json gives an archive
/// that another archive wins (`lost(file, name)`) is not expected under that archive's image.
/// On a runtime that lists no digest names (`digest_names` false), an image is expected under
/// its other names, or by its config when it has only digest names.
fn expected_images(
    promised: &[BundleArchive],
    required: &[String],
    platform: &Platform,
    lost: &dyn Fn(&str, &str) -> bool,
    digest_names: bool,
) -> Vec<Expected> {
    let mut out = Vec::new();
    for archive in promised {
        for img in &archive.images {
            if platform_matches(img.platform.as_deref(), platform) {
                let names: Vec<String> = img
                    .names
                    .iter()
                    .filter(|n| !lost(&archive.file, n))
                    .cloned()
                    .collect();
                if names.is_empty() && !img.names.is_empty() {
                    continue;
                }
                out.push(Expected {
                    names: names
                        .into_iter()
                        .filter(|n| findable(n, digest_names))
                        .collect(),
                    config_digest: Some(img.config_digest.clone()),
                    manifest_digest: img.manifest_digest.clone(),
                    source: format!("listed in {} for {}", bundle::INDEX_FILE, archive.file),
                });
            }
        }
    }
    for name in required {
        out.push(Expected {
            names: vec![name.clone()],
            config_digest: None,
            manifest_digest: None,
            source: "required (--require)".to_string(),
        });
    }
    out
}

/// What of `expected` is not in `present`, each with the reason.
fn missing_images(present: &[Present], expected: &[Expected]) -> Vec<Missing> {
    let mut out: Vec<Missing> = Vec::new();
    let mut add = |image: &str, reason: String| {
        if !out.iter().any(|m| m.image == image) {
            out.push(Missing {
                image: image.to_string(),
                reason,
            });
        }
    };
    for e in expected {
        // The runtime may report the config digest, or (a containerd-backed store) the
        // manifest's; an unknown digest counts as a match on the name.
        let same = |p: &Present| match p.config_digest.as_deref() {
            None => true,
            Some(d) => {
                e.config_digest.is_none()
                    || e.config_digest.as_deref() == Some(d)
                    || e.manifest_digest.as_deref() == Some(d)
            }
        };
        if e.names.is_empty() {
            let config = e.config_digest.as_deref().unwrap_or_default();
            if !present
                .iter()
                .any(|p| p.config_digest.as_deref() == Some(config))
            {
                add(
                    config,
                    format!("{}; no image with this config is in the runtime", e.source),
                );
            }
            continue;
        }
        for name in &e.names {
            let by_name: Vec<&Present> = present.iter().filter(|p| &p.name == name).collect();
            if by_name.iter().any(|p| same(p)) {
                continue;
            }
            let reason = match by_name.first().and_then(|p| p.config_digest.as_deref()) {
                Some(other) => format!(
                    "{}; the runtime has it with config {other}, not {}",
                    e.source,
                    e.config_digest.as_deref().unwrap_or("?")
                ),
                None => format!("{}; not in the runtime", e.source),
            };
            add(name, reason);
        }
    }
    out
}

/// Asks the runtime what it has after the run and reports each expected image that is absent.
fn check_presence(rt: &dyn Runtime, expected: &[Expected], reporter: &Reporter) -> Vec<Missing> {
    if expected.is_empty() {
        return Vec::new();
    }
    let missing = match with_retries(reporter, None, || rt.present()) {
        Ok(present) => missing_images(&present, expected),
        Err(e) => expected
            .iter()
            .map(|x| Missing {
                image: x.names.first().cloned().unwrap_or_default(),
                reason: format!(
                    "{}; not confirmed: the runtime's images could not be listed: {e:#}",
                    x.source
                ),
            })
            .collect(),
    };
    for m in &missing {
        reporter.emit(&Event::Missing(m));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::plan::tests::{amd64, present, registry_entry};

    #[test]
    fn an_image_the_bundle_promises_or_a_value_requires_is_missing_unless_present_by_name_and_digest(
    ) {
        let promised = |names: &[&str], config: &str| Expected {
            names: names.iter().map(|n| n.to_string()).collect(),
            config_digest: Some(config.into()),
            manifest_digest: Some("sha256:m".into()),
            source: "listed in images.json for a.tar".into(),
        };
        let expected = vec![
            promised(&["docker.io/library/a:1"], "sha256:a"),
            promised(&["docker.io/library/b:1"], "sha256:b"),
            promised(&["docker.io/library/c:1"], "sha256:c"),
            promised(&["docker.io/library/d:1"], "sha256:d"),
            promised(&[], "sha256:e"),
            Expected {
                names: vec!["docker.io/library/f:1".into()],
                config_digest: None,
                manifest_digest: None,
                source: "required (--require)".into(),
            },
        ];
        let runtime = vec![
            present("docker.io/library/a:1", "sha256:a"),
            present("docker.io/library/b:1", "sha256:old"),
            present("docker.io/library/d:1", "sha256:m"),
        ];
        let missing = missing_images(&runtime, &expected);
        let names: Vec<&str> = missing.iter().map(|m| m.image.as_str()).collect();
        assert_eq!(
            names,
            [
                "docker.io/library/b:1",
                "docker.io/library/c:1",
                "sha256:e",
                "docker.io/library/f:1"
            ]
        );
        assert!(missing[0]
            .reason
            .contains("with config sha256:old, not sha256:b"));
        assert!(missing[1].reason.ends_with("not in the runtime"));
        assert!(missing[3].reason.starts_with("required (--require)"));
    }

    #[test]
    fn every_name_of_an_image_is_expected_after_the_run_where_the_runtime_lists_it() {
        let promised = [registry_entry()];
        let none = |_: &str, _: &str| false;
        let on_containerd = expected_images(&promised, &[], &amd64(), &none, true);
        assert_eq!(on_containerd.len(), 1);
        assert_eq!(
            on_containerd[0].names,
            ["reg/app:1", "reg/app@sha256:index", "reg/app@sha256:m-amd"]
        );
        let missing = missing_images(&[present("reg/app:1", "sha256:c-amd")], &on_containerd);
        let names: Vec<&str> = missing.iter().map(|m| m.image.as_str()).collect();
        assert_eq!(names, ["reg/app@sha256:index", "reg/app@sha256:m-amd"]);
        let on_docker = expected_images(&promised, &[], &amd64(), &none, false);
        assert_eq!(on_docker[0].names, ["reg/app:1"]);
    }

    #[test]
    fn a_required_image_that_is_not_a_reference_is_a_usage_error_naming_it() {
        let err = required_images(&["nginx:1.27".into(), "Bad Name".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("\"Bad Name\""), "{err:#}");
        assert_eq!(
            required_images(&["nginx:1.27".into(), " ".into()]).unwrap(),
            ["docker.io/library/nginx:1.27"]
        );
    }
}
