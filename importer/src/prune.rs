//! `offline-images prune`: remove the images a release imported on this node.
//!
//! `import --release NAME` labels every image of the bundle `io.offline-images.release.NAME`.
//! Prune looks at each image carrying that label:
//! - another release's label too: only this release's label is removed, the image stays;
//! - a container was created from it (by name, by image ID, or by another name of the same
//!   image): kept, and the container named;
//! - otherwise: removed.
//!
//! Removed and kept images are listed on stdout, one per line; messages go to stderr.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cli::PruneArgs;
use crate::exit::{self, Code};
use crate::labels::{release_label, LABEL_RELEASE_PREFIX};
use crate::report::{self, Reporter};
use crate::runtime::{detect, Container, Present, Runtime, Unsupported};

/// What prune decided for one labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Remove,
    /// Still used by these other releases: only this release's label goes.
    OtherReleases(Vec<String>),
    /// Containers created from the image.
    InUse(Vec<String>),
}

/// The decision for `image`, labelled for the release whose label key is `key`.
pub fn decide(image: &Present, key: &str, all: &[Present], containers: &[Container]) -> Decision {
    let others: Vec<String> = image
        .labels
        .keys()
        .filter(|k| k.as_str() != key)
        .filter_map(|k| k.strip_prefix(LABEL_RELEASE_PREFIX))
        .map(str::to_string)
        .collect();
    if !others.is_empty() {
        return Decision::OtherReleases(others);
    }
    // Names of the same image (same config digest), and its IDs, as a container may
    // record any of them.
    let mut aliases: Vec<&str> = vec![image.name.as_str()];
    if let Some(config) = image.config_digest.as_deref() {
        aliases.push(config);
        aliases.extend(
            all.iter()
                .filter(|p| p.config_digest.as_deref() == Some(config))
                .map(|p| p.name.as_str()),
        );
    }
    let users: Vec<String> = containers
        .iter()
        .filter(|c| !c.image.is_empty() && aliases.contains(&c.image.as_str()))
        .map(|c| c.id.clone())
        .collect();
    if users.is_empty() {
        Decision::Remove
    } else {
        Decision::InUse(users)
    }
}

pub fn run(args: &PruneArgs) -> Result<Code> {
    let key = release_label(&args.release)?;
    let detected = detect::detect(&args.runtime.config())?;
    let rt = detected.runtime.as_ref();
    if rt.kind() == "docker" {
        return Err(exit::usage(
            "prune is not supported for Docker: images loaded into Docker carry no labels, so \
             the images of a release cannot be told from others; remove them with `docker rmi`",
        ));
    }
    eprintln!(
        "offline-images: prune of release {} in {}{}",
        args.release,
        rt.describe(),
        if args.dry_run {
            " (dry run: nothing is removed)"
        } else {
            ""
        }
    );
    // Before the lock: an import must not wait for the release's pods to terminate.
    wait_for_containers(rt, &key, args.wait_for_containers).map_err(unsupported)?;
    // The node lock `import` takes: an import running now (another release's) labels images
    // it finds present, and prune must not decide on a list that import is changing.
    let _lock = if args.dry_run {
        None
    } else {
        let reporter = Reporter::new(report::Format::Text);
        crate::lock::lock_node(&detected.socket, args.lock.timeout(), &reporter)?
    };
    let plan = plan(rt, &key)?;
    if plan.is_empty() {
        eprintln!(
            "offline-images: no image carries the label {key}: nothing to prune (was the \
             bundle imported with --release {}?)",
            args.release
        );
        return Ok(Code::Success);
    }
    let tally = execute(rt, &key, &plan, args.dry_run)?;
    eprintln!(
        "offline-images: release {}: {} {}, {} kept, {} failed",
        args.release,
        tally.removed,
        if args.dry_run {
            "would be removed"
        } else {
            "removed"
        },
        tally.kept,
        tally.failed
    );
    Ok(if tally.failed > 0 {
        Code::Failure
    } else {
        Code::Success
    })
}

/// A backend that cannot prune is the caller's to fix (exit 2), not a failure of one image.
fn unsupported(e: anyhow::Error) -> anyhow::Error {
    if e.chain().any(|c| c.is::<Unsupported>()) {
        exit::usage(format!("prune: {e:#}"))
    } else {
        e
    }
}

/// Every image labelled with the release, by name, with what to do with it.
fn plan(rt: &dyn Runtime, key: &str) -> Result<Vec<(String, Decision)>> {
    let all = rt.present().context("cannot list images")?;
    let containers = rt.containers().map_err(unsupported)?;
    let mut labelled: Vec<&Present> = all.iter().filter(|p| p.labels.contains_key(key)).collect();
    labelled.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(labelled
        .into_iter()
        .map(|image| (image.name.clone(), decide(image, key, &all, &containers)))
        .collect())
}

#[derive(Default)]
struct Tally {
    removed: usize,
    kept: usize,
    failed: usize,
}

/// Carry out the plan, one line per image on stdout; a failed image is said on stderr and
/// the others still go.
fn execute(
    rt: &dyn Runtime,
    key: &str,
    plan: &[(String, Decision)],
    dry_run: bool,
) -> Result<Tally> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut tally = Tally::default();
    for (name, decision) in plan {
        match act(rt, key, name, decision, dry_run).map_err(unsupported) {
            Ok((line, removed)) => {
                if removed {
                    tally.removed += 1;
                } else {
                    tally.kept += 1;
                }
                writeln!(out, "{line}")?;
            }
            Err(e) if e.chain().any(|c| c.is::<exit::UsageError>()) => return Err(e),
            Err(e) => {
                tally.failed += 1;
                eprintln!("offline-images: {name}: {e:#}");
            }
        }
    }
    out.flush()?;
    Ok(tally)
}

/// Do what `decision` says with image `name`: the line to print, and whether the image is
/// (or would be) removed.
fn act(
    rt: &dyn Runtime,
    key: &str,
    name: &str,
    decision: &Decision,
    dry_run: bool,
) -> Result<(String, bool)> {
    Ok(match (decision, dry_run) {
        (Decision::Remove, true) => (format!("would remove  {name}"), true),
        (Decision::Remove, false) => {
            rt.remove(name)?;
            (format!("removed  {name}"), true)
        }
        (Decision::InUse(users), _) => (
            format!("kept  {name}  (in use by container {})", users.join(", ")),
            false,
        ),
        (Decision::OtherReleases(others), true) => (
            format!(
                "would keep  {name}  (also imported for release {})",
                others.join(", ")
            ),
            false,
        ),
        (Decision::OtherReleases(others), false) => {
            rt.unlabel(name, &[key.to_string()])?;
            (
                format!(
                    "kept  {name}  (also imported for release {}; label {key} removed)",
                    others.join(", ")
                ),
                false,
            )
        }
    })
}

/// The release's images that a container still uses, each with its containers.
fn in_use(key: &str, all: &[Present], containers: &[Container]) -> Vec<String> {
    all.iter()
        .filter(|p| p.labels.contains_key(key))
        .filter_map(|p| match decide(p, key, all, containers) {
            Decision::InUse(users) => Some(format!("{} (container {})", p.name, users.join(", "))),
            _ => None,
        })
        .collect()
}

/// Waits, at most `secs` seconds, until no container uses an image only this release
/// imported: after `helm uninstall` the release's pods are still terminating, and their
/// containers would keep the images. Says once what it waits for, and how it ended.
fn wait_for_containers(rt: &dyn Runtime, key: &str, secs: u64) -> Result<()> {
    if secs == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let mut waited = false;
    loop {
        let all = rt.present().context("cannot list images")?;
        let busy = in_use(key, &all, &rt.containers()?);
        if busy.is_empty() {
            if waited {
                eprintln!(
                    "offline-images: the containers are gone after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(());
        }
        if started.elapsed() >= Duration::from_secs(secs) {
            eprintln!(
                "offline-images: still in use after {secs} s, so kept: {}",
                busy.join(", ")
            );
            return Ok(());
        }
        if !waited {
            eprintln!(
                "offline-images: waiting up to {secs} s for the containers of the release's images to go: {}",
                busy.join(", ")
            );
            waited = true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn image(name: &str, config: &str, releases: &[&str]) -> Present {
        Present {
            name: name.into(),
            config_digest: Some(config.into()),
            labels: releases
                .iter()
                .map(|r| (format!("{LABEL_RELEASE_PREFIX}{r}"), "true".to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn container(id: &str, image: &str) -> Container {
        Container {
            id: id.into(),
            image: image.into(),
        }
    }

    #[test]
    fn an_image_used_by_a_container_under_another_name_or_its_id_is_kept() {
        let key = release_label("shop").unwrap();
        let a = image("docker.io/x/app:1", "sha256:aaa", &["shop"]);
        let alias = image("registry.local/app:1", "sha256:aaa", &[]);
        let all = vec![a.clone(), alias];
        assert_eq!(decide(&a, &key, &all, &[]), Decision::Remove);
        for used in ["docker.io/x/app:1", "registry.local/app:1", "sha256:aaa"] {
            assert_eq!(
                decide(&a, &key, &all, &[container("c1", used)]),
                Decision::InUse(vec!["c1".into()]),
                "{used}"
            );
        }
        assert_eq!(
            decide(&a, &key, &all, &[container("c2", "sha256:bbb")]),
            Decision::Remove
        );
    }

    #[test]
    fn an_image_another_release_imported_only_loses_this_release_label() {
        let key = release_label("shop").unwrap();
        let a = image("docker.io/x/app:1", "sha256:aaa", &["shop", "billing"]);
        assert_eq!(
            decide(&a, &key, std::slice::from_ref(&a), &[]),
            Decision::OtherReleases(vec!["billing".into()])
        );
    }

    #[test]
    fn a_release_name_that_cannot_be_a_label_is_refused() {
        assert!(release_label("shop-1.2").is_ok());
        assert!(release_label("").is_err());
        assert!(release_label("a=b").is_err());
        assert!(release_label("a,b").is_err());
    }
}
