//! `offline-images prune`: remove the images a release imported on this node.
//!
//! `import --release NAME` labels every name of every image of the bundle (the tag and the
//! digest names alike) `io.offline-images.release.NAME`. Prune looks at each name carrying
//! that label:
//! - another release's label, on this name or on another name of the same image (same config
//!   digest): only this release's label is removed and the name stays; where only another
//!   name carried the other release's label (a node labelled by an older importer), this name
//!   is labelled for that release too, so it goes when that release is pruned;
//! - a container was created from it (by name, by image ID, or by another name of the same
//!   image): kept, and the container named;
//! - otherwise: removed.
//!
//! Removed and kept names are listed on stdout, one per line (text, or one JSON object per
//! line with `--log-format json`); messages go to stderr in the same format.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::exit::{self, Code};
use crate::labels::{release_label, LABEL_RELEASE_PREFIX};
use crate::report::{self, Reporter};
use crate::runtime::{detect, Container, Present, Runtime, Unsupported};

/// What prune decided for one labelled name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Remove,
    /// Its image is still used by these other releases: only this release's label goes.
    OtherReleases {
        releases: Vec<String>,
        /// Those of `releases` whose label this name lacks (another name of the image has
        /// it): set on this name, so that it goes with them.
        adopt: Vec<String>,
    },
    /// Containers created from the image.
    InUse(Vec<String>),
}

/// The other releases (than the one whose label key is `key`) that label `image`.
fn releases_of(image: &Present, key: &str) -> Vec<String> {
    image
        .labels
        .keys()
        .filter(|k| k.as_str() != key)
        .filter_map(|k| k.strip_prefix(LABEL_RELEASE_PREFIX))
        .map(str::to_string)
        .collect()
}

/// The decision for `image`, labelled for the release whose label key is `key`.
pub fn decide(image: &Present, key: &str, all: &[Present], containers: &[Container]) -> Decision {
    // Names of the same image (same config digest), as a container may record any of them
    // and another release may have labelled any of them.
    let same: Vec<&Present> = match image.config_digest.as_deref() {
        Some(config) => all
            .iter()
            .filter(|p| p.config_digest.as_deref() == Some(config))
            .collect(),
        None => Vec::new(),
    };
    let own = releases_of(image, key);
    let mut releases = own.clone();
    for other in same.iter().flat_map(|p| releases_of(p, key)) {
        if !releases.contains(&other) {
            releases.push(other);
        }
    }
    if !releases.is_empty() {
        releases.sort();
        let adopt = releases
            .iter()
            .filter(|r| !own.contains(r))
            .cloned()
            .collect();
        return Decision::OtherReleases { releases, adopt };
    }
    let mut aliases: Vec<&str> = vec![image.name.as_str()];
    aliases.extend(image.config_digest.as_deref());
    aliases.extend(same.iter().map(|p| p.name.as_str()));
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

/// Where prune's lines go, in the format asked: results on stdout, messages on stderr.
struct Log {
    format: report::Format,
    reporter: Reporter,
}

impl Log {
    fn new(format: report::Format) -> Log {
        Log {
            format,
            reporter: Reporter::new(format),
        }
    }

    fn say(&self, message: &str) {
        match self.format {
            report::Format::Text => eprintln!("offline-images: {message}"),
            report::Format::Json => self.reporter.info(message),
        }
    }

    fn warn(&self, name: &str, message: &str) {
        match self.format {
            report::Format::Text => eprintln!("offline-images: {name}: {message}"),
            report::Format::Json => self.reporter.warn(Some(name), message),
        }
    }
}

/// The last line on stderr.
#[derive(Serialize)]
struct Summary<'a> {
    event: &'static str,
    release: &'a str,
    dry_run: bool,
    removed: usize,
    kept: usize,
    failed: usize,
}

/// What `prune` works with, resolved from the flags and environment by the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The release whose images are removed.
    pub release: String,
    /// Which runtime, on which socket, and how it is reached.
    pub runtime: detect::Config,
    /// List what would be removed and kept, removing nothing.
    pub dry_run: bool,
    /// Seconds to wait for the containers using the release's images to go; 0 decides at once.
    pub wait_for_containers: u64,
    /// Result lines on stdout and messages on stderr, text or JSON.
    pub log_format: report::Format,
    /// How long to wait for another importer on this node.
    pub lock_timeout: Duration,
}

pub fn run(args: &Settings) -> Result<Code> {
    let key = release_label(&args.release)?;
    let log = Log::new(args.log_format);
    let detected = detect::detect(&args.runtime)?;
    let rt = detected.runtime.as_ref();
    if rt.kind() == "docker" {
        return Err(exit::usage(
            "prune is not supported for Docker: images loaded into Docker carry no labels, so \
             the images of a release cannot be told from others; remove them with `docker rmi`",
        ));
    }
    log.say(&format!(
        "prune of release {} in {}{}",
        args.release,
        rt.describe(),
        if args.dry_run {
            " (dry run: nothing is removed)"
        } else {
            ""
        }
    ));
    // Before the lock: an import must not wait for the release's pods to terminate.
    wait_for_containers(rt, &key, args.wait_for_containers, &log).map_err(unsupported)?;
    // The node lock `import` takes: an import running now (another release's) labels images
    // it finds present, and prune must not decide on a list that import is changing.
    let _lock = if args.dry_run {
        None
    } else {
        crate::lock::lock_node(&detected.socket, args.lock_timeout, &log.reporter)?
    };
    let plan = plan(rt, &key)?;
    if plan.is_empty() {
        log.say(&format!(
            "no image carries the label {key}: nothing to prune (was the bundle imported with \
             --release {}?)",
            args.release
        ));
        return Ok(Code::Success);
    }
    let tally = execute(rt, &key, &plan, args.dry_run, &log)?;
    say_summary(&log, &args.release, args.dry_run, &tally);
    Ok(if tally.failed > 0 {
        Code::Failure
    } else {
        Code::Success
    })
}

fn say_summary(log: &Log, release: &str, dry_run: bool, tally: &Tally) {
    match log.format {
        report::Format::Text => eprintln!(
            "offline-images: release {release}: {} {}, {} kept, {} failed",
            tally.removed,
            if dry_run {
                "would be removed"
            } else {
                "removed"
            },
            tally.kept,
            tally.failed
        ),
        report::Format::Json => {
            let summary = Summary {
                event: "summary",
                release,
                dry_run,
                removed: tally.removed,
                kept: tally.kept,
                failed: tally.failed,
            };
            eprintln!("{}", serde_json::to_string(&summary).unwrap_or_default());
        }
    }
}

/// A backend that cannot prune is the caller's to fix (exit 2), not a failure of one image.
fn unsupported(e: anyhow::Error) -> anyhow::Error {
    if e.chain().any(|c| c.is::<Unsupported>()) {
        exit::usage(format!("prune: {e:#}"))
    } else {
        e
    }
}

/// Every name labelled with the release, with what to do with it.
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

/// One result line: what became of a name, and why.
#[derive(Serialize)]
struct Line<'a> {
    name: &'a str,
    /// `removed`, `would-remove`, `kept` or `would-keep`.
    action: &'static str,
    /// Other releases that use its image.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    releases: &'a [String],
    /// Of `releases`, those whose label it gets (in a dry run: would get), only another
    /// name of its image having carried it.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    adopted: &'a [String],
    /// Containers created from it.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    containers: &'a [String],
    /// The release label removed from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    unlabelled: Option<&'a str>,
}

impl Line<'_> {
    fn text(&self) -> String {
        let mut s = format!("{}  {}", self.action.replace('-', " "), self.name);
        let mut why: Vec<String> = Vec::new();
        let releases = self.releases.join(", ");
        if !self.containers.is_empty() {
            why.push(format!(
                "in use by container {}",
                self.containers.join(", ")
            ));
        } else if !self.adopted.is_empty() {
            why.push(format!(
                "its image is also imported for release {releases} under another name"
            ));
            if self.unlabelled.is_some() {
                why.push(format!("labelled for {} too", self.adopted.join(", ")));
            }
        } else if !self.releases.is_empty() {
            why.push(format!("also imported for release {releases}"));
        }
        if let Some(key) = self.unlabelled {
            why.push(format!("label {key} removed"));
        }
        if !why.is_empty() {
            s.push_str(&format!("  ({})", why.join("; ")));
        }
        s
    }
}

/// Carry out the plan, one line per name on stdout; a failed name is said on stderr and
/// the others still go.
fn execute(
    rt: &dyn Runtime,
    key: &str,
    plan: &[(String, Decision)],
    dry_run: bool,
    log: &Log,
) -> Result<Tally> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut tally = Tally::default();
    for (name, decision) in plan {
        match act(rt, key, name, decision, dry_run).map_err(unsupported) {
            Ok(removed) => {
                if removed {
                    tally.removed += 1;
                } else {
                    tally.kept += 1;
                }
                let line = line_of(key, name, decision, dry_run);
                match log.format {
                    report::Format::Text => writeln!(out, "{}", line.text())?,
                    report::Format::Json => writeln!(out, "{}", serde_json::to_string(&line)?)?,
                }
            }
            Err(e) if e.chain().any(|c| c.is::<exit::UsageError>()) => return Err(e),
            Err(e) => {
                tally.failed += 1;
                log.warn(name, &format!("{e:#}"));
            }
        }
    }
    out.flush()?;
    Ok(tally)
}

/// The result line for `name`, once `decision` is carried out (or would be).
fn line_of<'a>(key: &'a str, name: &'a str, decision: &'a Decision, dry_run: bool) -> Line<'a> {
    let mut line = Line {
        name,
        action: if dry_run { "would-keep" } else { "kept" },
        releases: &[],
        adopted: &[],
        containers: &[],
        unlabelled: None,
    };
    match decision {
        Decision::Remove => {
            line.action = if dry_run { "would-remove" } else { "removed" };
        }
        Decision::InUse(users) => {
            line.action = "kept";
            line.containers = users;
        }
        Decision::OtherReleases { releases, adopt } => {
            line.releases = releases;
            line.adopted = adopt;
            if !dry_run {
                line.unlabelled = Some(key);
            }
        }
    }
    line
}

/// Do what `decision` says with the name: whether it is (or would be) removed.
fn act(
    rt: &dyn Runtime,
    key: &str,
    name: &str,
    decision: &Decision,
    dry_run: bool,
) -> Result<bool> {
    match (decision, dry_run) {
        (Decision::Remove, true) => Ok(true),
        (Decision::Remove, false) => {
            rt.remove(name)?;
            Ok(true)
        }
        (Decision::InUse(_), _) | (Decision::OtherReleases { .. }, true) => Ok(false),
        (Decision::OtherReleases { adopt, .. }, false) => {
            if !adopt.is_empty() {
                let labels = adopt
                    .iter()
                    .map(|r| (format!("{LABEL_RELEASE_PREFIX}{r}"), "true".to_string()))
                    .collect();
                rt.label(&[name.to_string()], &labels)?;
            }
            rt.unlabel(name, &[key.to_string()])?;
            Ok(false)
        }
    }
}

/// The release's names that a container still uses, each with its containers.
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
fn wait_for_containers(rt: &dyn Runtime, key: &str, secs: u64, log: &Log) -> Result<()> {
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
                log.say(&format!(
                    "the containers are gone after {:.0} s",
                    started.elapsed().as_secs_f64()
                ));
            }
            return Ok(());
        }
        if started.elapsed() >= Duration::from_secs(secs) {
            log.say(&format!(
                "still in use after {secs} s, so kept: {}",
                busy.join(", ")
            ));
            return Ok(());
        }
        if !waited {
            log.say(&format!(
                "waiting up to {secs} s for the containers of the release's images to go: {}",
                busy.join(", ")
            ));
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
            Decision::OtherReleases {
                releases: vec!["billing".into()],
                adopt: Vec::new()
            }
        );
    }

    /// Finding 1 on a node an older importer labelled: release b labelled the tag alone,
    /// release a every name. Pruning a keeps the digest name for b, and labels it for b.
    #[test]
    fn a_digest_name_whose_image_another_release_labels_under_its_tag_is_kept_for_it() {
        let key = release_label("a").unwrap();
        let tag = image("reg/app:1", "sha256:aaa", &["a", "b"]);
        let digest = image("reg/app@sha256:mmm", "sha256:aaa", &["a"]);
        let other = image("reg/other:1", "sha256:bbb", &["a"]);
        let all = vec![tag.clone(), digest.clone(), other.clone()];
        assert_eq!(
            decide(&digest, &key, &all, &[]),
            Decision::OtherReleases {
                releases: vec!["b".into()],
                adopt: vec!["b".into()]
            }
        );
        assert_eq!(
            decide(&tag, &key, &all, &[]),
            Decision::OtherReleases {
                releases: vec!["b".into()],
                adopt: Vec::new()
            }
        );
        assert_eq!(decide(&other, &key, &all, &[]), Decision::Remove);
        let d = decide(&digest, &key, &all, &[]);
        assert_eq!(
            line_of(&key, &digest.name, &d, false).text(),
            "kept  reg/app@sha256:mmm  (its image is also imported for release b under another \
             name; labelled for b too; label io.offline-images.release.a removed)"
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
