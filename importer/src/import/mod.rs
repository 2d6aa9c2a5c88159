//! `offline-images import`: plan (checksums, what is already present), import the rest a few
//! at a time, check that every promised image is there, and report every archive's outcome.
//!
//! The run copies images from a source (`source::Source`: the archives and OCI layouts under
//! the images path, `images_path::ImagesPath`) to a target (`runtime::Runtime`), one loop for every pair:
//! ask the target what it has, send only the rest, verify every checksum, record and report.
//!
//! This module holds the run as a whole: its [`Settings`], [`run`] and the [`run_on`] seam,
//! the run's shared context ([`Run`], [`Jobs`]), the log's header and the summary with the
//! exit code ([`finish`]). The steps are its submodules:
//! - `plan`: what is present, who claims which name, which of the source's archives are
//!   skipped (labelled and restamped) and which are to import;
//! - `execute`: the workers that import the rest, retries, shared names settled after the run,
//!   and the labels an imported archive's images get;
//! - `archive`: the reading of one archive file (checksum, stop-aware and progress-watching
//!   readers) and what its reading says of names and config digests;
//! - `check`: after the run, every promised and required image looked for in the runtime;
//! - `owners` decides which archive a name that several archives give belongs to, `turns`
//!   orders the pipeline's steps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::archive::Platform;
use crate::bundle;
use crate::exit::{self, Code};
use crate::images_path::ImagesPath;
use crate::labels::release_label;
use crate::lock::lock_node;
use crate::report::{self, Event, Reporter, Status, Summary};
use crate::runtime::{self, detect, Leftover, Runtime};
use crate::source::Source;
use crate::stop::{install_stop_handler, stop_signal};

mod archive;
mod check;
mod execute;
// Test code only (`#![cfg(test)]` inside).
mod fake_tests;
mod owners;
mod plan;
mod turns;

use check::{missing_after, required_images};
use execute::{execute, with_retries};
use plan::{plan, PresentSet};

/// What `import` was asked to do, resolved from its flags and environment at the edge.
#[derive(Debug, Clone)]
pub struct Settings {
    pub images_path: PathBuf,
    /// Which runtime, on which socket, and how it is reached.
    pub runtime: detect::Config,
    /// Refuse an archive when importing it would leave the runtime's disk fuller than this
    /// many percent; `None`: no disk preflight.
    pub disk_max_used: Option<u8>,
    /// `--jobs` as asked (see [`Jobs::of`]).
    pub jobs: Option<u16>,
    pub strict: bool,
    /// Exit 0 when the images path holds no image at all.
    pub allow_empty: bool,
    pub force: bool,
    pub dry_run: bool,
    pub log_format: report::Format,
    /// Where the summary is written as JSON, when asked.
    pub report: Option<PathBuf>,
    /// Where the kubelet reads a container's termination message.
    pub termination_log: PathBuf,
    /// How long to wait for another importer on this node.
    pub lock_timeout: Duration,
    /// The Helm release whose label the images get.
    pub release: Option<String>,
    /// References that must be present after the run.
    pub require: Vec<String>,
    /// Nodes the chart left out, named in the log.
    pub left_out_nodes: Vec<String>,
    /// `--verify-key`: the bundle must be signed by one of these cosign public keys, checked
    /// before anything is imported (`signing::check`); empty: not checked.
    pub verify_keys: Vec<PathBuf>,
}

pub fn run(settings: &Settings) -> Result<Code> {
    let reporter = Arc::new(Reporter::new(settings.log_format));
    install_stop_handler(Arc::clone(&reporter));
    let detected = detect::detect(&settings.runtime)?;
    run_on(settings, &detected, &reporter).map(|(code, _)| code)
}

/// [`run`] on a runtime already found: the seam the unit tests drive with a fake runtime.
pub(crate) fn run_on(
    args: &Settings,
    detected: &detect::Detected,
    reporter: &Reporter,
) -> Result<(Code, Summary)> {
    let started = Instant::now();
    let root = &args.images_path;
    let release_key = args.release.as_deref().map(release_label).transpose()?;
    let required = required_images(&args.require)?;
    let images = ImagesPath::open(root, reporter)?;
    let source: &dyn Source = &images;
    crate::signing::check(root, &args.verify_keys, source.units(), reporter)?;

    let rt = detected.runtime.as_ref();
    runtime::check_architecture(rt)?;
    let socket = detected.socket.display().to_string();
    let jobs = Jobs::of(args.jobs, rt);
    announce(args, detected, &socket, source, jobs, reporter);
    warn_unprunable(args.release.as_deref(), rt, reporter);
    say_left_out_nodes(&args.left_out_nodes, reporter);
    let _lock = if args.dry_run {
        None
    } else {
        lock_node(&detected.socket, args.lock_timeout, reporter)?
    };
    if !args.dry_run && stop_signal().is_none() {
        reclaim_leftovers(rt, reporter);
    }

    let present = if source.units().is_empty() {
        PresentSet::new(Vec::new())
    } else {
        with_retries(reporter, None, || PresentSet::of(rt))?
    };
    let ctx = Run {
        args,
        source,
        runtime: rt,
        reporter,
        platform: Platform::host(),
        jobs,
        present: &present,
    };
    let mut plan = plan(&ctx, release_key.as_deref())?;
    let (interrupted, conflicts) = execute(&ctx, &mut plan);
    let missing = if args.dry_run || interrupted {
        Vec::new()
    } else {
        missing_after(&ctx, &plan, &required)
    };
    let results = plan.results;
    let summary = Summary {
        version: env!("CARGO_PKG_VERSION").to_string(),
        runtime: rt.kind().to_string(),
        socket,
        namespace: detected.namespace.clone(),
        images_path: root.display().to_string(),
        dry_run: args.dry_run,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
        imported: Summary::count(&results, Status::Imported),
        skipped: Summary::count(&results, Status::Skipped),
        failed: Summary::count(&results, Status::Failed),
        would_import: Summary::count(&results, Status::WouldImport),
        archives: results,
        missing,
        conflicts,
    };
    let code = finish(args, &summary, reporter)?;
    Ok((code, summary))
}

/// What every step of a run shares: the settings, where the images come from and where they
/// go, the log, the node's platform, how many archives are in flight, and what the runtime had
/// before the run.
struct Run<'a> {
    args: &'a Settings,
    /// The read side: the archives and layouts under the images path.
    source: &'a dyn Source,
    /// The write side.
    runtime: &'a dyn Runtime,
    reporter: &'a Reporter,
    platform: Platform,
    jobs: Jobs,
    /// What the runtime had before the run.
    present: &'a PresentSet,
}

/// How many archives are in flight, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// Side by side, each whole, in any order.
    Parallel(u16),
    /// Two at most, each step in plan order (see `turns`).
    Pipelined,
}

impl Jobs {
    /// `--jobs` as asked, for `rt`: a runtime that imports in two steps pipelines unless
    /// asked for one at a time; the others import `--jobs` archives side by side (default 1).
    fn of(asked: Option<u16>, rt: &dyn Runtime) -> Jobs {
        match asked {
            Some(1) => Jobs::Parallel(1),
            _ if rt.stages() => Jobs::Pipelined,
            asked => Jobs::Parallel(asked.unwrap_or(1)),
        }
    }

    fn workers(self) -> usize {
        match self {
            Jobs::Parallel(n) => usize::from(n),
            Jobs::Pipelined => 2,
        }
    }
}

/// The log's header: which runtime, on which socket, and what the run will look at.
fn announce(
    args: &Settings,
    detected: &detect::Detected,
    socket: &str,
    source: &dyn Source,
    jobs: Jobs,
    reporter: &Reporter,
) {
    let rt = detected.runtime.as_ref();
    let description = rt.describe();
    reporter.emit(&Event::Runtime {
        runtime: rt.kind(),
        socket,
        namespace: detected.namespace.as_deref(),
        description: &description,
        reason: &detected.reason,
    });
    let images_path = args.images_path.display().to_string();
    reporter.emit(&Event::Start {
        version: env!("CARGO_PKG_VERSION"),
        runtime: &description,
        socket,
        namespace: detected.namespace.as_deref(),
        images_path: &images_path,
        archives: source.units().len() + source.refused().len() + source.absent().len(),
        bytes: source.units().iter().map(|u| u.size).sum(),
        jobs: jobs.workers() as u16,
        pipelined: jobs == Jobs::Pipelined,
        dry_run: args.dry_run,
        force: args.force,
    });
}

/// `--release` on a runtime that keeps no labels: said at the start, since `prune` of that
/// release will refuse later.
fn warn_unprunable(release: Option<&str>, rt: &dyn Runtime, reporter: &Reporter) {
    let Some(release) = release else { return };
    if rt.keeps_labels() {
        return;
    }
    reporter.warn(
        None,
        &format!(
            "--release {release}: images loaded into {} carry no labels, so `offline-images \
             prune --release {release}` cannot remove them later; remove them with `docker rmi`",
            if rt.kind() == "docker" {
                "Docker"
            } else {
                rt.kind()
            }
        ),
    );
}

/// One line per node the chart left out of the import (`--left-out-node`), with the reason.
fn say_left_out_nodes(nodes: &[String], reporter: &Reporter) {
    for node in nodes.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        reporter.info(&format!("left out by the chart: {node}"));
    }
}

/// What an earlier import that was killed left in the runtime goes before anything is
/// imported, each thing named (`Runtime::reclaim`); a failure to look is a warning.
fn reclaim_leftovers(rt: &dyn Runtime, reporter: &Reporter) {
    let found = match rt.reclaim() {
        Ok(found) => found,
        Err(e) => {
            let e = format!("cannot look for what an earlier interrupted import left: {e:#}");
            return reporter.warn(None, &e);
        }
    };
    for leftover in found {
        match leftover {
            Leftover::Removed(what) => reporter.info(&format!("removed {what}")),
            Leftover::Kept(what) => reporter.info(&format!("kept {what}")),
            Leftover::Failed(what) => reporter.warn(None, &format!("cannot remove {what}")),
        }
    }
}

/// The summary (the log's last line), the termination message, `--report`, and the exit code.
fn finish(args: &Settings, summary: &Summary, reporter: &Reporter) -> Result<Code> {
    let interrupted = summary.interrupted;
    // Said before the summary, so the summary stays the log's last line.
    if summary.failed > 0 && !args.strict && !interrupted && summary.missing.is_empty() {
        reporter.info(&format!(
            "{} archive(s) failed; exiting 0 because --strict is not set",
            summary.failed
        ));
    }
    reporter.emit(&Event::Summary(summary));
    report::write_termination_message(&args.termination_log, summary);
    if let Some(path) = &args.report {
        let mut data = serde_json::to_vec_pretty(summary)?;
        data.push(b'\n');
        // The imports are done; a report that cannot be written fails the run (exit 1), it
        // is no usage error.
        bundle::write_atomic(path, &data).map_err(|e| {
            exit::Failed(format!("cannot write the report {}: {e:#}", path.display()))
        })?;
    }
    let strict_fails = args.strict && (summary.failed > 0 || !summary.conflicts.is_empty());
    // No archive and no layout: the bundle is not where the import looked (said above).
    let empty = summary.archives.is_empty() && !args.allow_empty;
    if interrupted || strict_fails || empty || !summary.missing.is_empty() {
        return Ok(Code::Failure);
    }
    Ok(Code::Success)
}

/// Whether an images.json platform (`os/arch[/variant]`, or none) is the node's.
pub(crate) fn platform_matches(entry: Option<&str>, platform: &Platform) -> bool {
    let Some(entry) = entry else { return true };
    let mut parts = entry.split('/');
    parts.next() == Some(platform.os.as_str())
        && parts.next() == Some(platform.architecture.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nodes_platform_of_the_bundle_is_expected() {
        let linux_amd64 = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert!(platform_matches(None, &linux_amd64));
        assert!(platform_matches(Some("linux/amd64"), &linux_amd64));
        assert!(platform_matches(Some("linux/amd64/v2"), &linux_amd64));
        assert!(!platform_matches(Some("linux/arm64"), &linux_amd64));
    }
}
