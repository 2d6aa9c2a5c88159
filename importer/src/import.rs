//! `offline-images import`: plan (checksums, what is already present), import the rest a few
//! at a time, and report every archive's outcome.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::archive::{self, check_images_path, ArchiveInfo, Found, Platform, Rejected};
use crate::bundle::{self, BundleArchive, BundleIndex};
use crate::cli::ImportArgs;
use crate::exit::{self, Code};
use crate::failure::{self, Failure, Kind};
use crate::labels::{
    release_label, LABEL_ARCHIVE_PREFIX, LABEL_MANAGED, LABEL_PINNED, LABEL_RELEASE_PREFIX,
};
use crate::lock::lock_node;
use crate::reference;
use crate::report::{self, ArchiveResult, Event, Missing, Reporter, Status, Summary};
use crate::runtime::{self, detect, Leftover, Present, Runtime};
use crate::stop::{install_stop_handler, sleep_unless_stopped, stop_signal};

mod turns;
use turns::{Passage, Pipeline};

/// Retries when the runtime is briefly unreachable (restarting): 1+2+4+8+16 s.
const RETRY_DELAYS: &[u64] = &[1, 2, 4, 8, 16];
/// A progress line this often while one archive is being imported.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

// ---- planning -----------------------------------------------------------------------------

/// What to do with one archive.
struct Planned {
    found: Found,
    /// Relative to the images path, `/`-separated (as SHA256SUMS and images.json name it).
    file: String,
    fingerprint: String,
    expected_sha256: Option<String>,
}

/// A cheap identity for an archive, kept as a label on the images it gave.
///
/// A bundle's `images.json` says which images an archive holds, so a re-run can tell what is
/// present without reading the archive. A foreign archive (no `images.json`) would have to be
/// decompressed to learn its contents; instead the images it gave are labelled with this
/// fingerprint (name, size and modification time of the file: all from one `stat`) and the
/// number of images and their config digests, so the next run skips it when that many images
/// still carry the label, each with the config digest it had when imported.
/// A file that is replaced or touched gets a new fingerprint and is imported again: at worst
/// some extra work, never a skipped change.
fn fingerprint(file: &str, meta: Option<&std::fs::Metadata>) -> String {
    let mut h = Sha256::new();
    h.update(file.as_bytes());
    if let Some(m) = meta {
        h.update(format!("\0{}\0{}.{}", m.size(), m.mtime(), m.mtime_nsec()).as_bytes());
    }
    bundle::hex(&h.finalize())[..32].to_string()
}

/// Present images by name.
struct PresentSet {
    by_name: HashMap<String, Present>,
    /// Name -> manifest or index digest, for a runtime that knows no config digests
    /// (Docker's containerd image store).
    targets: HashMap<String, String>,
}

impl PresentSet {
    fn new(list: Vec<Present>) -> PresentSet {
        PresentSet {
            by_name: list.into_iter().map(|p| (p.name.clone(), p)).collect(),
            targets: HashMap::new(),
        }
    }

    /// The present images of `rt`, with the digests it knows them by.
    fn of(rt: &dyn Runtime) -> Result<PresentSet> {
        let mut set = PresentSet::new(rt.present()?);
        set.targets = rt.target_digests()?.into_iter().collect();
        Ok(set)
    }

    fn has(&self, name: &str, config: &str) -> bool {
        self.has_image(name, config, &[])
    }

    /// `name` is present as the image of config `config`, or, where the runtime knows no
    /// config digest, as the image whose manifest or index digest is one of `digests`.
    fn has_image(&self, name: &str, config: &str, digests: &[&str]) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|p| match &p.config_digest {
                Some(c) => c == config,
                None => self
                    .targets
                    .get(name)
                    .is_some_and(|t| digests.contains(&t.as_str())),
            })
    }

    fn has_config(&self, config: &str, digests: &[&str]) -> bool {
        self.by_name.values().any(|p| {
            p.config_digest.as_deref() == Some(config)
                || (p.config_digest.is_none()
                    && self
                        .targets
                        .get(&p.name)
                        .is_some_and(|t| digests.contains(&t.as_str())))
        })
    }

    /// Skip by images.json: every image of the archive present under each of its names,
    /// with the same config digest.
    fn covers_bundle_entry(&self, entry: &BundleArchive) -> bool {
        !entry.images.is_empty()
            && entry.images.iter().all(|img| {
                let digests: Vec<&str> = img.manifest_digest.as_deref().into_iter().collect();
                if img.names.is_empty() {
                    self.has_config(&img.config_digest, &digests)
                } else {
                    img.names
                        .iter()
                        .all(|n| self.has_image(n, &img.config_digest, &digests))
                }
            })
    }

    /// Skip by the archive's own reading (a runtime without labels): every image of the
    /// archive present for `platform` under each of its names, as the same image.
    fn covers_archive(&self, info: &ArchiveInfo, platform: &Platform) -> bool {
        !info.images.is_empty()
            && info.images.iter().all(|img| {
                let Some(p) = img.for_platform(platform) else {
                    return false;
                };
                let Some(config) = p.config_digest.as_deref() else {
                    return false;
                };
                let digests: Vec<&str> = [img.digest.as_deref(), p.manifest_digest.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                if img.names.is_empty() {
                    self.has_config(config, &digests)
                } else {
                    img.names
                        .iter()
                        .all(|n| self.has_image(n, config, &digests))
                }
            })
    }

    /// Skip by fingerprint: as many images carry the archive's fingerprint label as it gave,
    /// each still with the config digest it was imported with.
    fn by_fingerprint(&self, fp: &str) -> Option<Vec<&Present>> {
        let key = format!("{LABEL_ARCHIVE_PREFIX}{fp}");
        let mut want = None;
        let mut tagged = Vec::new();
        for p in self.by_name.values() {
            let Some(value) = p.labels.get(&key) else {
                continue;
            };
            let (n, config) = value.split_once('/')?;
            want = Some(n.parse::<usize>().ok()?);
            if p.config_digest.as_deref() != Some(config) {
                return None;
            }
            tagged.push(p);
        }
        let want = want?;
        (want > 0 && tagged.len() >= want).then_some(tagged)
    }
}

// ---- the run ------------------------------------------------------------------------------

struct Run<'a> {
    args: &'a ImportArgs,
    runtime: &'a dyn Runtime,
    reporter: &'a Reporter,
    platform: Platform,
    jobs: Jobs,
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

    /// Whether archives may finish out of plan order.
    fn unordered(self) -> bool {
        matches!(self, Jobs::Parallel(n) if n > 1)
    }
}

pub fn run(args: &ImportArgs) -> Result<Code> {
    let started = Instant::now();
    let reporter: &'static Reporter = Box::leak(Box::new(Reporter::new(args.log_format.into())));
    install_stop_handler(reporter);
    let root = &args.images_path;
    let release_key = args.release.as_deref().map(release_label).transpose()?;
    let required = required_images(&args.require)?;
    let bundle = Bundle::read(root, reporter)?;

    let detected = detect::detect(&args.runtime.config())?;
    let rt = detected.runtime.as_ref();
    runtime::check_architecture(rt)?;
    let socket = detected.socket.display().to_string();
    let jobs = Jobs::of(args.jobs, rt);
    announce(args, &detected, &socket, &bundle.found, jobs, reporter);
    say_left_out_nodes(&args.left_out_nodes, reporter);
    let _lock = if args.dry_run {
        None
    } else {
        lock_node(&detected.socket, reporter)
    };
    if !args.dry_run && stop_signal().is_none() {
        reclaim_leftovers(rt, reporter);
    }

    let ctx = Run {
        args,
        runtime: rt,
        reporter,
        platform: Platform::host(),
        jobs,
    };
    let (mut results, todo) = plan(&ctx, &bundle, release_key.as_deref())?;
    let interrupted = execute(&ctx, &todo, &mut results);
    let missing = if args.dry_run || interrupted {
        Vec::new()
    } else {
        check_presence(
            rt,
            &expected_images(bundle.index.as_ref(), &required, &ctx.platform),
            reporter,
        )
    };
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
    };
    finish(args, &summary, reporter)
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

/// What the images path holds: the archives found (and the paths refused), with the names
/// SHA256SUMS and images.json give them.
struct Bundle {
    root: PathBuf,
    found: Vec<Found>,
    rejected: Vec<Rejected>,
    sums: Option<BTreeMap<String, String>>,
    index: Option<BundleIndex>,
}

impl Bundle {
    fn read(root: &Path, reporter: &Reporter) -> Result<Bundle> {
        check_images_path(root)?;
        let (found, rejected) = archive::discover(root)?;
        let sums = bundle::read_sums(root)
            .map_err(|e| exit::usage(format!("{e:#}: the bundle's checksums cannot be trusted")))?;
        let index = bundle::read_index(root).unwrap_or_else(|e| {
            reporter.warn(
                None,
                &format!("{e:#}; reading the archives themselves instead"),
            );
            None
        });
        Ok(Bundle {
            root: root.to_path_buf(),
            found,
            rejected,
            sums,
            index,
        })
    }
}

impl Bundle {
    /// SHA256SUMS lines whose file is missing: the bundle is incomplete.
    fn listed_but_absent(&self, found_names: &[String]) -> Vec<ArchiveResult> {
        self.sums
            .iter()
            .flat_map(|s| s.keys())
            .filter(|file| !found_names.contains(file))
            .map(|file| {
                ArchiveResult::failed(
                    file,
                    0,
                    Kind::Bundle,
                    format!(
                        "listed in {} but not found in {}: the bundle was not copied completely",
                        bundle::SUMS_FILE,
                        self.root.display()
                    ),
                )
            })
            .collect()
    }
}

/// The log's header: which runtime, on which socket, and what the run will look at.
fn announce(
    args: &ImportArgs,
    detected: &detect::Detected,
    socket: &str,
    found: &[Found],
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
        archives: found.len(),
        bytes: found.iter().map(|f| f.size).sum(),
        jobs: jobs.workers() as u16,
        pipelined: jobs == Jobs::Pipelined,
        dry_run: args.dry_run,
        force: args.force,
    });
}

/// Decide for every path of the bundle: refused paths and files SHA256SUMS lists but the
/// bundle lacks fail at once, archives already present are skipped (labelled for this
/// release too), the rest is to import. Results decided here are already in the log.
fn plan(
    ctx: &Run<'_>,
    b: &Bundle,
    release_key: Option<&str>,
) -> Result<(Vec<ArchiveResult>, Vec<Planned>)> {
    let (args, rt, reporter) = (ctx.args, ctx.runtime, ctx.reporter);
    let root = &b.root;
    let mut results: Vec<ArchiveResult> = Vec::new();
    let mut emit = |r: ArchiveResult| {
        reporter.emit(&Event::Archive(&r));
        results.push(r);
    };
    for r in &b.rejected {
        let file = bundle::relative_name(root, &r.path);
        emit(ArchiveResult::failed(
            &file,
            0,
            Kind::Archive,
            r.reason.clone(),
        ));
    }
    if b.found.is_empty() && b.rejected.is_empty() {
        reporter.warn(
            None,
            &format!(
                "no archives (.tar, .tar.gz, .tgz, .tar.zst) in {}: nothing to import",
                root.display()
            ),
        );
    }
    let found_names: Vec<String> = b
        .found
        .iter()
        .map(|f| bundle::relative_name(root, &f.path))
        .collect();
    for r in b.listed_but_absent(&found_names) {
        emit(r);
    }
    let present = if b.found.is_empty() {
        PresentSet::new(Vec::new())
    } else {
        with_retries(reporter, None, || PresentSet::of(rt))?
    };
    let mut sums = b.sums.clone();
    let mut todo: Vec<Planned> = Vec::new();
    for (f, file) in b.found.iter().cloned().zip(found_names) {
        let meta = std::fs::metadata(&f.path).ok();
        let fingerprint = fingerprint(&file, meta.as_ref());
        let expected_sha256 = expected_sha256(&mut sums, &file, reporter);
        if !args.force {
            let read = !rt.keeps_labels();
            let skipped = skip_result(
                &present,
                b.index.as_ref(),
                &file,
                &f,
                &fingerprint,
                read,
                reporter,
            );
            if let Some(r) = skipped {
                if let (Some(key), false) = (release_key, args.dry_run) {
                    label_for_release(rt, &present, &r.names, key, &file, reporter);
                }
                emit(r);
                continue;
            }
        }
        todo.push(Planned {
            found: f,
            file,
            fingerprint,
            expected_sha256,
        });
    }
    Ok((results, todo))
}

/// The checksum SHA256SUMS gives `file` (taken out of `sums`), with a warning when the bundle
/// has SHA256SUMS but it does not list the file.
fn expected_sha256(
    sums: &mut Option<BTreeMap<String, String>>,
    file: &str,
    reporter: &Reporter,
) -> Option<String> {
    let sums = sums.as_mut()?;
    let found = sums.remove(file);
    if found.is_none() {
        reporter.warn(
            Some(file),
            &format!(
                "not listed in {}: its checksum cannot be verified",
                bundle::SUMS_FILE
            ),
        );
    }
    found
}

/// Import the planned archives `--jobs` at a time, each result logged as it lands, onto
/// `results` in plan order. Returns whether a signal stopped the run (the archives not
/// started then fail as such).
fn execute(ctx: &Run<'_>, todo: &[Planned], results: &mut Vec<ArchiveResult>) -> bool {
    let (mut done, landed) = import_parallel(ctx, todo);
    done.sort_by_key(|(i, _)| *i);
    if stop_signal().is_none() {
        settle_shared_names(ctx, todo, landed, &mut done);
    }
    let interrupted = stop_signal().is_some();
    if interrupted {
        let finished: Vec<usize> = done.iter().map(|(i, _)| *i).collect();
        for (i, p) in todo.iter().enumerate() {
            if !finished.contains(&i) {
                let r = ArchiveResult::failed(
                    &p.file,
                    p.found.size,
                    Kind::Stopped,
                    "not started: the run was stopped",
                );
                ctx.reporter.emit(&Event::Archive(&r));
                done.push((i, r));
            }
        }
    }
    results.extend(done.into_iter().map(|(_, r)| r));
    interrupted
}

/// What the workers did, by index in the plan: each archive's result, and the names it set.
type Landed = (Vec<(usize, ArchiveResult)>, Vec<(usize, NameConfigs)>);

/// The workers: each takes the next archive; one that lost a race with a parallel import is
/// imported again alone once the others are done.
fn import_parallel(ctx: &Run<'_>, todo: &[Planned]) -> Landed {
    let pipeline = (ctx.jobs == Jobs::Pipelined).then(Pipeline::new);
    let done = Mutex::new(Vec::new());
    let landed = Mutex::new(Vec::new());
    let retry = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let land = |i: usize, r: ArchiveResult, names: NameConfigs| {
        ctx.reporter.emit(&Event::Archive(&r));
        done.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
        landed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((i, names));
    };
    thread::scope(|s| {
        for _ in 0..ctx.jobs.workers().min(todo.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(p) = todo.get(i) else { break };
                let passage = Passage::new(pipeline.as_ref(), i);
                if stop_signal().is_some() {
                    break;
                }
                let (r, names) = import_one(ctx, p, &passage);
                // Pipelined, the results too land in plan order.
                passage.finish();
                if ctx.jobs.unordered() && lost_a_parallel_race(&r) {
                    // Tried again alone below, once the other imports are done.
                    retry.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                    continue;
                }
                land(i, r, names);
            });
        }
    });
    let mut retry = retry.into_inner().unwrap_or_else(|e| e.into_inner());
    retry.sort_unstable();
    for i in retry {
        if stop_signal().is_some() {
            break;
        }
        let p = &todo[i];
        ctx.reporter.info(&format!(
            "{}: importing again on its own: a parallel import was writing a layer or an image name it shares",
            p.file
        ));
        let (r, names) = import_one(ctx, p, &Passage::new(None, i));
        land(i, r, names);
    }
    (
        done.into_inner().unwrap_or_else(|e| e.into_inner()),
        landed.into_inner().unwrap_or_else(|e| e.into_inner()),
    )
}

/// The summary (the log's last line), the termination message, `--report`, and the exit code.
fn finish(args: &ImportArgs, summary: &Summary, reporter: &Reporter) -> Result<Code> {
    let interrupted = summary.interrupted;
    // Said before the summary, so the summary stays the log's last line.
    if summary.failed > 0 && !args.strict && !interrupted && summary.missing.is_empty() {
        reporter.info(&format!(
            "{} archive(s) failed; exiting 0 because --strict is not set",
            summary.failed
        ));
    }
    reporter.emit(&Event::Summary(summary));
    report::write_termination_message(Path::new(report::TERMINATION_LOG), summary);
    if let Some(path) = &args.report {
        let mut data = serde_json::to_vec_pretty(summary)?;
        data.push(b'\n');
        // The imports are done; a report that cannot be written fails the run (exit 1), it
        // is no usage error.
        bundle::write_atomic(path, &data).map_err(|e| {
            exit::Failed(format!("cannot write the report {}: {e:#}", path.display()))
        })?;
    }
    if interrupted || (summary.failed > 0 && args.strict) || !summary.missing.is_empty() {
        return Ok(Code::Failure);
    }
    Ok(Code::Success)
}

/// One line per node the chart left out of the import (`--left-out-node`), with the reason.
fn say_left_out_nodes(nodes: &[String], reporter: &Reporter) {
    for node in nodes.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        reporter.info(&format!("left out by the chart: {node}"));
    }
}

// ---- after the run: is every promised and required image there? ---------------------------

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
fn required_images(values: &[String]) -> Result<Vec<String>> {
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

/// Whether an images.json platform (`os/arch[/variant]`, or none) is the node's.
fn platform_matches(entry: Option<&str>, platform: &Platform) -> bool {
    let Some(entry) = entry else { return true };
    let mut parts = entry.split('/');
    parts.next() == Some(platform.os.as_str())
        && parts.next() == Some(platform.architecture.as_str())
}

/// Every image of images.json for this node's platform, then every required one.
fn expected_images(
    index: Option<&BundleIndex>,
    required: &[String],
    platform: &Platform,
) -> Vec<Expected> {
    let mut out = Vec::new();
    for archive in index.map(|i| i.archives.as_slice()).unwrap_or_default() {
        for img in &archive.images {
            if platform_matches(img.platform.as_deref(), platform) {
                out.push(Expected {
                    names: img.names.clone(),
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

/// An archive that lost a race with a parallel import (the backend says so: see
/// [`Kind::Race`]) is imported again alone once the others are done (and settle_shared_names
/// then lets the archive that sorts last win the name).
fn lost_a_parallel_race(r: &ArchiveResult) -> bool {
    r.status == Status::Failed && r.failure == Some(Kind::Race)
}

/// Images already present that this release uses are labelled with it too: another release
/// may have imported them, and pruning that release must not take them from this one.
fn label_for_release(
    rt: &dyn Runtime,
    present: &PresentSet,
    names: &[String],
    key: &str,
    file: &str,
    reporter: &Reporter,
) {
    let missing: Vec<String> = names
        .iter()
        .filter(|n| {
            present
                .by_name
                .get(*n)
                .is_some_and(|p| !p.labels.contains_key(key))
        })
        .cloned()
        .collect();
    if missing.is_empty() {
        return;
    }
    let labels = BTreeMap::from([(key.to_string(), "true".to_string())]);
    if let Err(e) = rt.label(&missing, &labels) {
        reporter.warn(
            Some(file),
            &format!("{e:#}: `prune` of another release could remove this release's images"),
        );
    }
}

/// The result for an archive that need not be imported, if it need not.
fn skip_result(
    present: &PresentSet,
    index: Option<&BundleIndex>,
    file: &str,
    f: &Found,
    fp: &str,
    read_archive: bool,
    reporter: &Reporter,
) -> Option<ArchiveResult> {
    let skipped = |names: Vec<String>, digests: Vec<String>| ArchiveResult {
        file: file.to_string(),
        status: Status::Skipped,
        names,
        digests,
        seconds: 0.0,
        bytes: f.size,
        reason: None,
        failure: None,
    };
    if let Some(entry) = index.and_then(|i| i.archive(file)) {
        if entry.size != f.size {
            reporter.warn(
                Some(file),
                &format!(
                    "{} describes a file of {} bytes, this one has {}: reading the archive itself",
                    bundle::INDEX_FILE,
                    entry.size,
                    f.size
                ),
            );
        } else if present.covers_bundle_entry(entry) {
            return Some(skipped(
                entry.images.iter().flat_map(|i| i.names.clone()).collect(),
                entry
                    .images
                    .iter()
                    .map(|i| i.config_digest.clone())
                    .collect(),
            ));
        } else {
            return None;
        }
    }
    let Some(tagged) = present.by_fingerprint(fp) else {
        // A runtime without labels cannot say which archive its images came from: the archive
        // itself says what it holds.
        if !read_archive || present.by_name.is_empty() {
            return None;
        }
        let info = archive::inspect_path(&f.path, archive::Limits::default()).ok()?;
        let platform = Platform::host();
        if !present.covers_archive(&info, &platform) {
            return None;
        }
        return Some(skipped(
            info.images.iter().flat_map(|i| i.names.clone()).collect(),
            config_digests(&info, &platform),
        ));
    };
    let mut names: Vec<String> = tagged.iter().map(|p| p.name.clone()).collect();
    names.sort();
    let mut digests: Vec<String> = tagged
        .iter()
        .filter_map(|p| p.config_digest.clone())
        .collect();
    digests.sort();
    digests.dedup();
    Some(skipped(names, digests))
}

/// Run `op`, retrying with backoff while the runtime is unreachable.
fn with_retries<T>(
    reporter: &Reporter,
    file: Option<&str>,
    mut op: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if runtime::is_unreachable(&e) && attempt < RETRY_DELAYS.len() => {
                let delay = RETRY_DELAYS[attempt];
                attempt += 1;
                reporter.warn(
                    file,
                    &format!(
                        "{e:#}; retrying in {delay} s (attempt {attempt} of {})",
                        RETRY_DELAYS.len()
                    ),
                );
                if !sleep_unless_stopped(Duration::from_secs(delay)) {
                    return Err(e);
                }
            }
            other => return other,
        }
    }
}

/// Import one archive: its result, and each name it set with the config digest (node
/// platform) that name now has.
fn import_one(ctx: &Run<'_>, p: &Planned, passage: &Passage<'_>) -> (ArchiveResult, NameConfigs) {
    let started = Instant::now();
    let (mut result, names) = match import_archive(ctx, p, passage) {
        Ok(r) => r,
        Err(e) => {
            let (kind, reason) = match stop_signal() {
                Some(sig) => (Kind::Stopped, format!("aborted by {sig}")),
                None => (failure::kind_of(&e), format!("{e:#}")),
            };
            (
                ArchiveResult::failed(&p.file, p.found.size, kind, reason),
                Vec::new(),
            )
        }
    };
    result.seconds = started.elapsed().as_secs_f64();
    (result, names)
}

/// Image names with the config digest each was given.
type NameConfigs = Vec<(String, Option<String>)>;

/// The archives (by index in the plan) that set one name, each with the config digest it gave.
type Sources = Vec<(usize, Option<String>)>;

/// When several archives carry the same name, the archive that sorts last (by path) wins, as
/// it does in a one-at-a-time run, and the log says so. With `--jobs` above 1 those archives
/// may have finished in another order: the name is then checked, and the last archive
/// imported once more if the name points elsewhere.
fn settle_shared_names(
    ctx: &Run<'_>,
    todo: &[Planned],
    landed: Vec<(usize, NameConfigs)>,
    done: &mut [(usize, ArchiveResult)],
) {
    // Name -> (archive, config digest) for every archive that set it.
    let mut by_name: BTreeMap<String, Sources> = BTreeMap::new();
    for (i, names) in landed {
        for (name, config) in names {
            by_name.entry(name).or_default().push((i, config));
        }
    }
    let mut shared: Vec<(String, Sources)> = by_name
        .into_iter()
        .filter(|(_, from)| from.len() > 1)
        .collect();
    if shared.is_empty() {
        return;
    }
    for (_, from) in &mut shared {
        from.sort_by_key(|(i, _)| *i);
    }
    if ctx.jobs.unordered() {
        reimport_last_of_shared(ctx, todo, &shared, done);
    }
    for (name, from) in &shared {
        let describe = |(i, config): &(usize, Option<String>)| match config {
            Some(c) => format!("{} (config {c})", todo[*i].file),
            None => todo[*i].file.clone(),
        };
        let Some((last, earlier)) = from.split_last() else {
            continue;
        };
        let earlier: Vec<String> = earlier.iter().map(describe).collect();
        ctx.reporter.warn(
            Some(&todo[last.0].file),
            &format!(
                "{name} is also in {}: the archive sorting last wins, so {name} is {}",
                earlier.join(", "),
                describe(last)
            ),
        );
    }
}

/// With parallel imports, an archive that sorts last for a shared name may have finished
/// before an earlier one: import it once more so that the archive sorting last wins.
fn reimport_last_of_shared(
    ctx: &Run<'_>,
    todo: &[Planned],
    shared: &[(String, Sources)],
    done: &mut [(usize, ArchiveResult)],
) {
    let present = match with_retries(ctx.reporter, None, || PresentSet::of(ctx.runtime)) {
        Ok(p) => p,
        Err(e) => {
            ctx.reporter.warn(
                None,
                &format!("cannot check names that several archives carry: {e:#}"),
            );
            PresentSet::new(Vec::new())
        }
    };
    let mut again: Vec<usize> = shared
        .iter()
        .filter_map(|(name, from)| {
            let (last, config) = from.last()?;
            let config = config.as_deref()?;
            (!present.by_name.is_empty() && !present.has(name, config)).then_some(*last)
        })
        .collect();
    again.sort_unstable();
    again.dedup();
    for i in again {
        if stop_signal().is_some() {
            return;
        }
        let p = &todo[i];
        ctx.reporter.info(&format!(
            "importing {} once more: it sorts after other archives carrying the same names, \
             which finished after it",
            p.file
        ));
        let (r, _) = import_one(ctx, p, &Passage::new(None, 0));
        if r.status == Status::Failed {
            ctx.reporter.emit(&Event::Archive(&r));
        }
        if let Some(slot) = done.iter_mut().find(|(j, _)| *j == i) {
            slot.1 = r;
        }
    }
}

fn import_archive(
    ctx: &Run<'_>,
    p: &Planned,
    passage: &Passage<'_>,
) -> Result<(ArchiveResult, NameConfigs)> {
    let file = p.file.as_str();
    if let Some(expected) = &p.expected_sha256 {
        check_sha256(p, expected)?;
    }
    if ctx.args.dry_run {
        // Opening reads the first bytes: an empty or non-archive file already fails here.
        let opened = archive::open(&p.found.path)?;
        drop(opened);
        let would = ArchiveResult {
            file: file.to_string(),
            status: Status::WouldImport,
            names: Vec::new(),
            digests: Vec::new(),
            seconds: 0.0,
            bytes: p.found.size,
            reason: None,
            failure: None,
        };
        return Ok((would, Vec::new()));
    }
    let imported = import_in_steps(ctx, p, passage)?;
    for w in &imported.info.warnings {
        ctx.reporter.warn(Some(file), w);
    }
    if let Some(detail) = &imported.detail {
        ctx.reporter.info(&format!("{file}: {detail}"));
    }
    for image in &imported.info.images {
        if image.for_platform(&ctx.platform).is_none() {
            ctx.reporter.warn(
                Some(file),
                &format!(
                    "{} has no {} image in this archive, so it was not imported",
                    image.display_names(),
                    ctx.platform
                ),
            );
        }
    }
    let names = if imported.names.is_empty() {
        imported
            .info
            .images
            .iter()
            .flat_map(|i| i.names.clone())
            .collect()
    } else {
        imported.names.clone()
    };
    let configs = name_configs(&imported.info, &names, &ctx.platform);
    label_imported(ctx, p, &names, &configs);
    let result = ArchiveResult {
        file: file.to_string(),
        status: Status::Imported,
        names: names.clone(),
        digests: config_digests(&imported.info, &ctx.platform),
        seconds: 0.0,
        bytes: p.found.size,
        reason: None,
        failure: None,
    };
    Ok((result, names.into_iter().zip(configs).collect()))
}

/// A mismatched archive never reaches the runtime.
fn check_sha256(p: &Planned, expected: &str) -> Result<()> {
    let f = File::open(&p.found.path)
        .with_context(|| format!("cannot open {}", p.found.path.display()))?;
    let actual = bundle::sha256_reader(Stoppable(f))
        .with_context(|| format!("cannot read {}", p.found.path.display()))?;
    if actual != expected {
        return Err(Failure::error(
            Kind::Archive,
            format!(
                "checksum mismatch: {} says sha256 {expected}, the file has {actual}; \
                 the file is damaged or was replaced, so it is not imported",
                bundle::SUMS_FILE
            ),
        ));
    }
    Ok(())
}

/// The archive into the runtime, each of its two steps in its turn (see `turns`). The
/// archive is read before its turn to store: it waits for the turn, and makes the disk
/// preflight, before the first thing it writes. On a re-run that has nothing to send, two
/// archives are then read and decompressed at once.
fn import_in_steps(ctx: &Run<'_>, p: &Planned, passage: &Passage<'_>) -> Result<runtime::Imported> {
    let file = p.file.as_str();
    let gated = Cell::new(false);
    let gate = || -> Result<()> {
        gated.set(true);
        passage.store();
        if ctx.args.no_disk_preflight {
            return Ok(());
        }
        ctx.runtime
            .preflight(&p.found.path, &ctx.platform, ctx.args.disk_max_used)
    };
    let stage = || {
        with_retries(ctx.reporter, Some(file), || {
            stage_into_runtime(ctx, p, &gate)
        })
    };
    let rest = match stage() {
        // Lost while only reading, maybe with the archive before it: read again in its turn.
        Err(e) if !gated.get() && failure::kind_of(&e) == Kind::Unreachable => {
            ctx.reporter.info(&format!(
                "{file}: {e:#}; nothing of it had been written: reading it again in its turn"
            ));
            passage.store();
            stage()?
        }
        Err(e) if passage.overlapped() && failure::kind_of(&e) == Kind::Disk => {
            ctx.reporter.info(&format!(
                "{file}: {e:#}; the archive before it was being unpacked meanwhile: importing \
                 it again once that one is done, and the rest of the bundle one archive at a time"
            ));
            passage.alone();
            stage()?
        }
        other => other?,
    };
    passage.finish();
    match rest() {
        // containerd went away between the two steps: the whole archive once more.
        Err(e) if runtime::is_unreachable(&e) => {
            ctx.reporter
                .warn(Some(file), &format!("{e:#}; importing the archive again"));
            with_retries(ctx.reporter, Some(file), || {
                stage_into_runtime(ctx, p, &gate)?()
            })
        }
        other => other,
    }
}

/// Open the archive and stream its tar into the runtime, with progress lines on the way: the
/// first step of its import ([`Runtime::stage_file`]), `gate` passed before it writes; the
/// step returned does the rest.
fn stage_into_runtime<'a>(
    ctx: &Run<'a>,
    p: &Planned,
    gate: runtime::Gate<'a>,
) -> Result<runtime::Rest<'a>> {
    let started = Instant::now();
    let opened = archive::open_ahead(&p.found.path)?;
    let compression = opened.compression;
    let mut reader = Watched {
        inner: opened.reader,
        file: &p.file,
        reporter: ctx.reporter,
        started,
        last: Instant::now(),
        bytes: 0,
    };
    let rest = ctx
        .runtime
        .stage_file(&p.found.path, &mut reader, &ctx.platform, gate)?;
    Ok(Box::new(move || {
        let mut imported = rest()?;
        imported.info.compression = compression;
        Ok(imported)
    }))
}

/// Pin and label every name an archive set: managed, the release, and the archive's
/// fingerprint with the config digest, so the next run can skip it without reading it.
fn label_imported(ctx: &Run<'_>, p: &Planned, names: &[String], configs: &[Option<String>]) {
    for (name, config) in names.iter().zip(configs) {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_PINNED.to_string(), "pinned".to_string());
        labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
        if let Some(release) = &ctx.args.release {
            labels.insert(
                format!("{LABEL_RELEASE_PREFIX}{release}"),
                "true".to_string(),
            );
        }
        if let Some(config) = config {
            labels.insert(
                format!("{LABEL_ARCHIVE_PREFIX}{}", p.fingerprint),
                format!("{}/{config}", names.len()),
            );
        }
        if let Err(e) = ctx.runtime.label(std::slice::from_ref(name), &labels) {
            ctx.reporter.warn(
                Some(&p.file),
                &format!(
                    "imported, but {e:#}: kubelet may garbage-collect this image under disk pressure"
                ),
            );
        }
    }
}

/// The config digest (node platform) each imported name should have: by name for named
/// images; for the digest names ctr gives untagged images, by manifest digest, or the one
/// untagged image's when there is only one.
fn name_configs(info: &ArchiveInfo, names: &[String], platform: &Platform) -> Vec<Option<String>> {
    let config = |i: &archive::Image| {
        i.for_platform(platform)
            .and_then(|p| p.config_digest.clone())
    };
    let untagged: Vec<&archive::Image> =
        info.images.iter().filter(|i| i.names.is_empty()).collect();
    names
        .iter()
        .map(|name| {
            if let Some(i) = info.images.iter().find(|i| i.names.contains(name)) {
                return config(i);
            }
            let digest = name.split_once('@').map(|(_, d)| d);
            if let Some(i) = info.images.iter().find(|i| {
                digest.is_some()
                    && (i.digest.as_deref() == digest
                        || i.platforms
                            .iter()
                            .any(|p| p.manifest_digest.as_deref() == digest))
            }) {
                return config(i);
            }
            match untagged.as_slice() {
                [one] => config(one),
                _ => None,
            }
        })
        .collect()
}

/// The config digest of each image, for the node's platform.
pub fn config_digests(info: &ArchiveInfo, platform: &Platform) -> Vec<String> {
    info.images
        .iter()
        .filter_map(|i| i.for_platform(platform))
        .filter_map(|p| p.config_digest.clone())
        .collect()
}

/// A file read that ends with an error as soon as the run is asked to stop.
struct Stoppable(File);

impl Read for Stoppable {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(sig) = stop_signal() {
            return Err(io::Error::other(format!("aborted by {sig}")));
        }
        self.0.read(buf)
    }
}

/// The decompressed archive on its way to the runtime: progress lines for long archives, and
/// an error as soon as the run is asked to stop.
struct Watched<'a> {
    inner: Box<dyn Read + Send>,
    file: &'a str,
    reporter: &'a Reporter,
    started: Instant,
    last: Instant,
    bytes: u64,
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(sig) = stop_signal() {
            return Err(io::Error::other(format!("aborted by {sig}")));
        }
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            self.reporter.emit(&Event::Progress {
                file: self.file,
                tar_bytes: self.bytes,
                seconds: self.started.elapsed().as_secs_f64(),
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(name: &str, config: &str) -> Present {
        Present {
            name: name.into(),
            config_digest: Some(config.into()),
            labels: BTreeMap::new(),
        }
    }

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

    #[test]
    fn a_required_image_that_is_not_a_reference_is_a_usage_error_naming_it() {
        let err = required_images(&["nginx:1.27".into(), "Bad Name".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("\"Bad Name\""), "{err:#}");
        assert_eq!(
            required_images(&["nginx:1.27".into(), " ".into()]).unwrap(),
            ["docker.io/library/nginx:1.27"]
        );
    }

    #[test]
    fn only_an_archive_that_lost_a_race_to_a_parallel_import_is_tried_again() {
        let failed = |kind| ArchiveResult::failed("a.tar", 1, kind, "why");
        assert!(lost_a_parallel_race(&failed(Kind::Race)));
        assert!(!lost_a_parallel_race(&failed(Kind::Archive)));
        assert!(!lost_a_parallel_race(&failed(Kind::Import)));
    }

    #[test]
    fn the_fingerprint_changes_with_the_file_name() {
        assert_ne!(fingerprint("a.tar", None), fingerprint("b.tar", None));
        assert_eq!(fingerprint("a.tar", None).len(), 32);
    }

    #[test]
    fn an_archive_is_skipped_by_fingerprint_only_when_all_its_images_carry_it() {
        let p = |name: &str, fp: &str, value: &str| Present {
            name: name.into(),
            config_digest: Some("sha256:c".into()),
            labels: [(format!("{LABEL_ARCHIVE_PREFIX}{fp}"), value.to_string())].into(),
        };
        let set = PresentSet::new(vec![
            p("a:1", "f1", "2/sha256:c"),
            p("b:1", "f1", "2/sha256:c"),
            p("c:1", "f2", "2/sha256:c"),
            p("d:1", "f4", "1/sha256:other"),
        ]);
        assert_eq!(set.by_fingerprint("f1").unwrap().len(), 2);
        assert!(
            set.by_fingerprint("f2").is_none(),
            "one of two images is gone"
        );
        assert!(set.by_fingerprint("f3").is_none());
        assert!(
            set.by_fingerprint("f4").is_none(),
            "the config changed since"
        );
    }
}
