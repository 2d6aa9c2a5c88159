//! `offline-images import`: plan (checksums, what is already present), import the rest a few
//! at a time, and report every archive's outcome.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::archive::{self, check_images_path, ArchiveInfo, Found, Platform, Rejected};
use crate::bundle::{self, BundleArchive, BundleIndex};
use crate::exit::{self, Code};
use crate::failure::{self, Failure, Kind};
use crate::labels::{
    release_label, LABEL_ARCHIVE_PREFIX, LABEL_MANAGED, LABEL_PINNED, LABEL_RELEASE_PREFIX,
};
use crate::lock::lock_node;
use crate::reference;
use crate::report::{self, ArchiveResult, Event, Missing, Replaced, Reporter, Status, Summary};
use crate::runtime::{self, detect, Leftover, Present, Runtime};
use crate::stop::{install_stop_handler, sleep_unless_stopped, stop_signal};

#[cfg(test)]
mod fake_tests;
mod owners;
mod turns;
use owners::Owners;
use turns::{Passage, Pipeline};

/// Retries when the runtime is briefly unreachable (restarting): 1+2+4+8+16 s. The unit
/// tests' fake runtime is retried at once, the same number of times.
const RETRY_DELAYS: &[u64] = if cfg!(test) {
    &[0, 0, 0, 0, 0]
} else {
    &[1, 2, 4, 8, 16]
};
/// A progress line this often while one archive is being imported.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

// ---- planning -----------------------------------------------------------------------------

/// What to do with one archive.
#[derive(Clone)]
struct Planned {
    /// Its place in the plan's order (every archive found, sorted by path).
    index: usize,
    found: Found,
    /// Relative to the images path, `/`-separated (as SHA256SUMS and images.json name it).
    file: String,
    fingerprint: Fingerprint,
    expected_sha256: Option<String>,
}

/// An archive's identity across runs, kept as a label on the images it gave:
/// `io.offline-images.archive.<key>=<images>/<config digest>/<stamp>`.
///
/// A bundle's `images.json` says which images an archive holds, so a re-run can tell what is
/// present without reading the archive. A foreign archive (no `images.json`) would have to be
/// read to learn its contents; instead the images it gave carry this label, and the next run
/// skips the archive without reading it when that many images still carry it, each with the
/// config digest it had, and the file's stamp is the one recorded.
///
/// The stamp must prove the file unchanged, not suggest it: name, size and modification time
/// do not, since `cp -p`, `rsync -a` and tools that normalise timestamps give a replaced file
/// the old ones. So it is [`bundle::FileStamp`]: size, inode, and modification and change
/// times in nanoseconds, once the change time is a clock tick in the past. No user-space tool
/// can set the change time: writing the file in place, or renaming another one over it, gives
/// it a new one or a new inode. Where the stamp differs (the file was replaced, touched,
/// copied again, hard-linked or chmod-ed), the archive is read at planning and skipped only
/// when what it holds is present; the label then takes the new stamp. A file that cannot be
/// stamped (a filesystem without sub-second times) is always read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    /// The archive's path in the bundle, hashed: the label's key.
    key: String,
    /// `size.inode.mtime_ns.ctime_ns`; None when the file cannot be stamped.
    stamp: Option<String>,
}

fn fingerprint(file: &str, path: &Path) -> Fingerprint {
    let stamp = bundle::FileStamp::settled(path)
        .map(|s| format!("{}.{}.{}.{}", s.size, s.inode, s.mtime_ns, s.ctime_ns));
    Fingerprint {
        key: bundle::hex(&Sha256::digest(file.as_bytes()))[..32].to_string(),
        stamp,
    }
}

/// A fingerprint label's value: (images, config digest, stamp); the stamp is None in labels
/// written before stamps were recorded, or for a file that could not be stamped.
fn fingerprint_value(value: &str) -> Option<(usize, &str, Option<&str>)> {
    let mut parts = value.splitn(3, '/');
    let n = parts.next()?.parse().ok()?;
    let config = parts.next()?;
    let stamp = parts.next().filter(|s| *s != "-");
    Some((n, config, stamp))
}

/// Present images by name.
struct PresentSet {
    by_name: HashMap<String, Present>,
    /// Name -> manifest or index digest, for a runtime that knows no config digests
    /// (Docker's containerd image store).
    targets: HashMap<String, String>,
    /// Whether the runtime lists digest names (`Runtime::lists_digest_names`).
    digest_names: bool,
}

impl PresentSet {
    fn new(list: Vec<Present>) -> PresentSet {
        PresentSet {
            by_name: list.into_iter().map(|p| (p.name.clone(), p)).collect(),
            targets: HashMap::new(),
            digest_names: true,
        }
    }

    /// The present images of `rt`, with the digests it knows them by.
    fn of(rt: &dyn Runtime) -> Result<PresentSet> {
        let mut set = PresentSet::new(rt.present()?);
        set.targets = rt.target_digests()?.into_iter().collect();
        set.digest_names = rt.lists_digest_names();
        Ok(set)
    }

    /// Of an image's `names`, those this runtime can be asked for by name.
    fn findable<'n>(&self, names: &'n [String]) -> Vec<&'n String> {
        names
            .iter()
            .filter(|n| findable(n, self.digest_names))
            .collect()
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

    /// Skip by images.json: every image of the archive for `platform` present under each
    /// of its names (the tag and the digest names alike), with the same config digest, but
    /// for the names another archive wins (`lost`).
    fn covers_bundle_entry(
        &self,
        entry: &BundleArchive,
        platform: &Platform,
        lost: &dyn Fn(&str) -> bool,
    ) -> bool {
        let images: Vec<&bundle::BundleImage> = entry
            .images
            .iter()
            .filter(|img| platform_matches(img.platform.as_deref(), platform))
            .collect();
        !images.is_empty()
            && images.iter().all(|img| {
                let digests: Vec<&str> = img.manifest_digest.as_deref().into_iter().collect();
                let names = self.findable(&img.names);
                if names.is_empty() {
                    self.has_config(&img.config_digest, &digests)
                } else {
                    names
                        .iter()
                        .all(|n| lost(n) || self.has_image(n, &img.config_digest, &digests))
                }
            })
    }

    /// Skip by the archive's own reading (a runtime without labels): every image of the
    /// archive present for `platform` under each of its names, as the same image.
    fn covers_archive(
        &self,
        info: &ArchiveInfo,
        platform: &Platform,
        lost: &dyn Fn(&str) -> bool,
    ) -> bool {
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
                let names = self.findable(&img.names);
                if names.is_empty() {
                    self.has_config(config, &digests)
                } else {
                    names
                        .iter()
                        .all(|n| lost(n) || self.has_image(n, config, &digests))
                }
            })
    }

    /// Skip by fingerprint: as many images carry the archive's fingerprint label as it gave,
    /// each still with the config digest it was imported with, but for the names another
    /// archive wins (`lost`).
    /// The second value says whether every label records `stamp`: only then is the file
    /// proven to be the one imported.
    fn by_fingerprint(
        &self,
        fp: &Fingerprint,
        lost: &dyn Fn(&str) -> bool,
    ) -> Option<(Vec<&Present>, bool)> {
        let key = format!("{LABEL_ARCHIVE_PREFIX}{}", fp.key);
        let mut want = None;
        let mut tagged = Vec::new();
        let mut same_file = fp.stamp.is_some();
        for p in self.by_name.values() {
            let Some(value) = p.labels.get(&key) else {
                continue;
            };
            let (n, config, stamp) = fingerprint_value(value)?;
            want = Some(n);
            if p.config_digest.as_deref() != Some(config) && !lost(&p.name) {
                return None;
            }
            same_file &= stamp.is_some() && stamp == fp.stamp.as_deref();
            tagged.push(p);
        }
        let want = want?;
        (want > 0 && tagged.len() >= want).then_some((tagged, same_file))
    }
}

/// Whether a runtime can be asked for `name` by name: a digest name (`repo@sha256:…`) only
/// where it lists digest names.
fn findable(name: &str, digest_names: bool) -> bool {
    digest_names || !name.contains('@')
}

// ---- the run ------------------------------------------------------------------------------

struct Run<'a> {
    args: &'a Settings,
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

    /// Whether archives may finish out of plan order.
    fn unordered(self) -> bool {
        matches!(self, Jobs::Parallel(n) if n > 1)
    }
}

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
    let bundle = Bundle::read(root, reporter)?;

    let rt = detected.runtime.as_ref();
    runtime::check_architecture(rt)?;
    let socket = detected.socket.display().to_string();
    let jobs = Jobs::of(args.jobs, rt);
    announce(args, detected, &socket, &bundle, jobs, reporter);
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

    let present = if bundle.found.is_empty() {
        PresentSet::new(Vec::new())
    } else {
        with_retries(reporter, None, || PresentSet::of(rt))?
    };
    let ctx = Run {
        args,
        runtime: rt,
        reporter,
        platform: Platform::host(),
        jobs,
        present: &present,
    };
    let mut plan = plan(&ctx, &bundle, release_key.as_deref())?;
    let (interrupted, conflicts) = execute(&ctx, &mut plan);
    let missing = if args.dry_run || interrupted {
        Vec::new()
    } else {
        missing_after(&ctx, &plan, &bundle, &required)
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

/// Every image the bundle promises for this node (but under the names another archive wins)
/// and every required one, checked in the runtime after the run.
fn missing_after(ctx: &Run<'_>, plan: &Plan, bundle: &Bundle, required: &[String]) -> Vec<Missing> {
    let index_of: HashMap<&str, usize> = plan
        .all
        .iter()
        .map(|p| (p.file.as_str(), p.index))
        .collect();
    let lost = |file: &str, name: &str| {
        index_of
            .get(file)
            .is_some_and(|&i| plan.owners.loses(name, i))
    };
    let expected = expected_images(
        bundle.index.as_ref(),
        required,
        &ctx.platform,
        &lost,
        ctx.runtime.lists_digest_names(),
    );
    check_presence(ctx.runtime, &expected, ctx.reporter)
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
    /// Every archive the run reports on, as the summary counts them: those found, the paths
    /// refused before reading, and the files SHA256SUMS lists that are not there.
    fn archives(&self) -> usize {
        let names: Vec<String> = self
            .found
            .iter()
            .map(|f| bundle::relative_name(&self.root, &f.path))
            .collect();
        self.found.len() + self.rejected.len() + self.listed_but_absent(&names).len()
    }

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
    args: &Settings,
    detected: &detect::Detected,
    socket: &str,
    bundle: &Bundle,
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
        archives: bundle.archives(),
        bytes: bundle.found.iter().map(|f| f.size).sum(),
        jobs: jobs.workers() as u16,
        pipelined: jobs == Jobs::Pipelined,
        dry_run: args.dry_run,
        force: args.force,
    });
}

/// What planning decided: the results it settled (refused paths, files SHA256SUMS lists but
/// the bundle lacks, archives already present), the archives to import, every archive found
/// (in plan order, by `Planned::index`), and who claims which name.
struct Plan {
    results: Vec<ArchiveResult>,
    todo: Vec<Planned>,
    all: Vec<Planned>,
    owners: Owners,
}

/// Decide for every path of the bundle: refused paths and files SHA256SUMS lists but the
/// bundle lacks fail at once, archives already present are skipped (labelled for this
/// release too), the rest is to import. Results decided here are already in the log.
fn plan(ctx: &Run<'_>, b: &Bundle, release_key: Option<&str>) -> Result<Plan> {
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
    let mut sums = b.sums.clone();
    let all: Vec<Planned> = b
        .found
        .iter()
        .cloned()
        .zip(found_names)
        .enumerate()
        .map(|(index, (found, file))| Planned {
            index,
            fingerprint: fingerprint(&file, &found.path),
            expected_sha256: expected_sha256(&mut sums, &file, reporter),
            found,
            file,
        })
        .collect();
    let (owners, read) = claims(ctx, b, &all);
    let mut todo: Vec<Planned> = Vec::new();
    for p in &all {
        if !args.force {
            let lost = |name: &str| owners.loses(name, p.index);
            let known = Known {
                present: ctx.present,
                index: b.index.as_ref(),
                info: read.get(&p.index),
                lost: &lost,
            };
            if let Some(r) = skip_result(&known, p, reporter) {
                if let (Some(key), false) = (release_key, args.dry_run) {
                    label_for_release(rt, ctx.present, &r.names, key, &p.file, reporter);
                }
                if !args.dry_run {
                    restamp(rt, ctx.present, p, &r.names, reporter);
                }
                emit(r);
                continue;
            }
        }
        todo.push(p.clone());
    }
    Ok(Plan {
        results,
        todo,
        all,
        owners,
    })
}

/// Who claims which name before anything is imported: `images.json` for the archives it
/// describes (listed claims); the fingerprint labels of present images for the archives of
/// another tool that a runtime with labels has seen; and, on a runtime without labels that
/// has images, each such archive's own reading (kept, so the skip check does not read it
/// again).
fn claims(ctx: &Run<'_>, b: &Bundle, all: &[Planned]) -> (Owners, HashMap<usize, ArchiveInfo>) {
    let mut owners = Owners::default();
    let mut read = HashMap::new();
    let described = |p: &Planned| {
        b.index
            .as_ref()
            .and_then(|i| i.archive(&p.file))
            .filter(|e| e.size == p.found.size)
    };
    for p in all {
        let Some(entry) = described(p) else { continue };
        for img in &entry.images {
            if platform_matches(img.platform.as_deref(), &ctx.platform) {
                for name in &img.names {
                    owners.add(name, p.index, Some(&img.config_digest), true);
                }
            }
        }
    }
    let by_fp: HashMap<&str, usize> = all
        .iter()
        .map(|p| (p.fingerprint.key.as_str(), p.index))
        .collect();
    for present in ctx.present.by_name.values() {
        for (key, value) in &present.labels {
            let Some(fp) = key.strip_prefix(LABEL_ARCHIVE_PREFIX) else {
                continue;
            };
            let (Some(&i), Some((_, config, _))) = (by_fp.get(fp), fingerprint_value(value)) else {
                continue;
            };
            owners.add(&present.name, i, Some(config), false);
        }
    }
    if ctx.runtime.keeps_labels() || ctx.present.by_name.is_empty() || ctx.args.force {
        return (owners, read);
    }
    for p in all.iter().filter(|p| described(p).is_none()) {
        let Ok(info) = archive::inspect_path(&p.found.path, archive::Limits::default()) else {
            continue;
        };
        for img in &info.images {
            let config = img
                .for_platform(&ctx.platform)
                .and_then(|pi| pi.config_digest.as_deref());
            for name in &img.names {
                owners.add(name, p.index, config, false);
            }
        }
        read.insert(p.index, info);
    }
    (owners, read)
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

/// Import the planned archives `--jobs` at a time, each result logged as it lands, onto the
/// plan's results in plan order. Returns whether a signal stopped the run (the archives not
/// started then fail as such), and the names several archives give different images.
fn execute(ctx: &Run<'_>, plan: &mut Plan) -> (bool, Vec<String>) {
    let todo = &plan.todo;
    let (mut done, landed) = import_parallel(ctx, todo);
    done.sort_by_key(|(i, _)| *i);
    let mut conflicts = Vec::new();
    if stop_signal().is_none() {
        let again = settle_shared_names(ctx, plan, landed, &mut conflicts);
        for r in again {
            let slot = done.iter_mut().map(|(_, d)| d);
            let slot = slot
                .chain(plan.results.iter_mut())
                .find(|d| d.file == r.file);
            if let Some(slot) = slot {
                *slot = r;
            }
        }
    }
    let interrupted = stop_signal().is_some();
    if interrupted {
        let finished: Vec<usize> = done.iter().map(|(i, _)| *i).collect();
        for (i, p) in plan.todo.iter().enumerate() {
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
    plan.results.extend(done.into_iter().map(|(_, r)| r));
    (interrupted, conflicts)
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
        crate::sync::lock(&done).push((i, r));
        crate::sync::lock(&landed).push((i, names));
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
                    crate::sync::lock(&retry).push(i);
                    continue;
                }
                land(i, r, names);
            });
        }
    });
    let mut retry = crate::sync::into_inner(retry);
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
        crate::sync::into_inner(done),
        crate::sync::into_inner(landed),
    )
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
    if interrupted || strict_fails || !summary.missing.is_empty() {
        return Ok(Code::Failure);
    }
    Ok(Code::Success)
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
pub(crate) fn platform_matches(entry: Option<&str>, platform: &Platform) -> bool {
    let Some(entry) = entry else { return true };
    let mut parts = entry.split('/');
    parts.next() == Some(platform.os.as_str())
        && parts.next() == Some(platform.architecture.as_str())
}

/// Every image of images.json for this node's platform, under each of its names (the tag
/// and the digest names alike), then every required one. A name images.json gives an archive
/// that another archive wins (`lost(file, name)`) is not expected under that archive's image.
/// On a runtime that lists no digest names (`digest_names` false), an image is expected under
/// its other names, or by its config when it has only digest names.
fn expected_images(
    index: Option<&BundleIndex>,
    required: &[String],
    platform: &Platform,
    lost: &dyn Fn(&str, &str) -> bool,
    digest_names: bool,
) -> Vec<Expected> {
    let mut out = Vec::new();
    for archive in index.map(|i| i.archives.as_slice()).unwrap_or_default() {
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

/// An archive that lost a race with a parallel import (the backend says so: see
/// [`Kind::Race`]) is imported again alone once the others are done (and settle_shared_names
/// then gives a shared name to the archive that wins it).
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

/// The result of an archive skipped as present, under `names` with `digests`.
fn skipped_result(p: &Planned, names: Vec<String>, digests: Vec<String>) -> ArchiveResult {
    ArchiveResult {
        file: p.file.clone(),
        status: Status::Skipped,
        names,
        digests,
        seconds: 0.0,
        bytes: p.found.size,
        reason: None,
        failure: None,
        replaced: Vec::new(),
    }
}

/// What the skip check of one archive goes by.
struct Known<'a> {
    present: &'a PresentSet,
    index: Option<&'a BundleIndex>,
    /// The archive's own reading, when planning read it already.
    info: Option<&'a ArchiveInfo>,
    /// Whether another archive wins a name this one gives.
    lost: &'a dyn Fn(&str) -> bool,
}

/// The result for an archive that need not be imported, if it need not.
fn skip_result(k: &Known<'_>, p: &Planned, reporter: &Reporter) -> Option<ArchiveResult> {
    let (file, f) = (p.file.as_str(), &p.found);
    let skipped = |names, digests| skipped_result(p, names, digests);
    if let Some(entry) = k.index.and_then(|i| i.archive(file)) {
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
        } else if k
            .present
            .covers_bundle_entry(entry, &Platform::host(), k.lost)
        {
            let platform = Platform::host();
            // Every name of this node's images, each once: all are labelled for the release.
            let here = || {
                entry
                    .images
                    .iter()
                    .filter(|i| platform_matches(i.platform.as_deref(), &platform))
            };
            let digest_names = k.present.digest_names;
            return Some(skipped(
                unique(
                    here()
                        .flat_map(|i| i.names.clone())
                        .filter(|n| findable(n, digest_names)),
                ),
                unique(here().map(|i| i.config_digest.clone())),
            ));
        } else {
            return None;
        }
    }
    let labelled = k.present.by_fingerprint(&p.fingerprint, k.lost);
    if let Some((tagged, true)) = &labelled {
        let mut names: Vec<String> = tagged.iter().map(|p| p.name.clone()).collect();
        names.sort();
        let mut digests: Vec<String> = tagged
            .iter()
            .filter_map(|p| p.config_digest.clone())
            .collect();
        digests.sort();
        digests.dedup();
        return Some(skipped(names, digests));
    }
    // Not proven to be the file imported before: what the archive holds decides. Planning has
    // read it on a runtime without labels; here it is read when the labels name this path
    // with another stamp (a copy, a touch, a hard link, or another file).
    let read;
    let info = match (k.info, labelled.is_some()) {
        (Some(info), _) => info,
        (None, true) => {
            read = archive::inspect_path(&f.path, archive::Limits::default()).ok()?;
            &read
        }
        (None, false) => return None,
    };
    let platform = Platform::host();
    if !k.present.covers_archive(info, &platform, k.lost) {
        return None;
    }
    Some(skipped(
        unique(info.images.iter().flat_map(|i| i.names.clone())),
        config_digests(info, &platform),
    ))
}

/// The fingerprint labels of an archive skipped by what it holds take its stamp now, so the
/// next run skips it without reading it.
fn restamp(
    rt: &dyn Runtime,
    present: &PresentSet,
    p: &Planned,
    names: &[String],
    reporter: &Reporter,
) {
    let (Some(stamp), true) = (p.fingerprint.stamp.as_deref(), rt.keeps_labels()) else {
        return;
    };
    let key = format!("{LABEL_ARCHIVE_PREFIX}{}", p.fingerprint.key);
    for name in names {
        let Some(value) = present.by_name.get(name).and_then(|p| p.labels.get(&key)) else {
            continue;
        };
        let Some((n, config, old)) = fingerprint_value(value) else {
            continue;
        };
        if old == Some(stamp) {
            continue;
        }
        let labels = BTreeMap::from([(key.clone(), format!("{n}/{config}/{stamp}"))]);
        if let Err(e) = rt.label(std::slice::from_ref(name), &labels) {
            reporter.warn(
                Some(&p.file),
                &format!("{e:#}: the next run reads the archive again"),
            );
        }
    }
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

/// Every name that several archives give different images ends with the archive that wins it
/// (see `owners`), on this run and the next, and the log says so. An archive that set such a
/// name after its winner did (it sorts after a winner images.json lists, or finished after it
/// with `--jobs` above 1), or while the winner was skipped as present, is followed by the
/// winner once more. Returns the results of those imports; `conflicts` gets the names.
fn settle_shared_names(
    ctx: &Run<'_>,
    plan: &mut Plan,
    landed: Vec<(usize, NameConfigs)>,
    conflicts: &mut Vec<String>,
) -> Vec<ArchiveResult> {
    // Name -> (archive, place in the order the archives finished) for every name set here.
    let mut set: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
    for (order, (t, names)) in landed.into_iter().enumerate() {
        let archive = plan.todo[t].index;
        for (name, config) in names {
            plan.owners.add(&name, archive, config.as_deref(), false);
            set.entry(name).or_default().push((archive, order));
        }
    }
    let found = plan.owners.conflicts();
    if found.is_empty() {
        return Vec::new();
    }
    let present = lazy_present(ctx, found.iter().any(|c| set.contains_key(c.name)));
    let mut again: Vec<usize> = Vec::new();
    for c in &found {
        let file = |i: usize| plan.all[i].file.as_str();
        let describe = |cl: &owners::Claim| match &cl.config {
            Some(d) => format!("{} (config {d})", file(cl.archive)),
            None => file(cl.archive).to_string(),
        };
        let losers: Vec<String> = c.losers.iter().map(|l| describe(l)).collect();
        ctx.reporter.warn(
            Some(file(c.winner.archive)),
            &format!(
                "{} is also in {}, with another image: {} wins it ({}), so {} is {}",
                c.name,
                losers.join(", "),
                file(c.winner.archive),
                c.rule(),
                c.name,
                describe(c.winner)
            ),
        );
        conflicts.push(c.name.to_string());
        if winner_set_it_last(c, set.get(c.name), present.as_ref()) == Some(false) {
            again.push(c.winner.archive);
        }
    }
    again.sort_unstable();
    again.dedup();
    let all = plan.all.clone();
    again
        .into_iter()
        .filter_map(|i| import_winner(ctx, &all[i]))
        .collect()
}

/// What the runtime has now, when `needed` (a name was set during the run).
fn lazy_present(ctx: &Run<'_>, needed: bool) -> Option<PresentSet> {
    if !needed {
        return None;
    }
    match with_retries(ctx.reporter, None, || PresentSet::of(ctx.runtime)) {
        Ok(p) => Some(p),
        Err(e) => {
            ctx.reporter.warn(
                None,
                &format!("cannot check names that several archives carry: {e:#}"),
            );
            None
        }
    }
}

/// Whether the winner of a shared name holds it after the run: by the runtime's own word when
/// it reports the name's config digest, else by the order in which the archives set it
/// (`set`: archive and place in the order they finished). None when no archive set the name
/// during the run (it is as the plan found it).
fn winner_set_it_last(
    c: &owners::Conflict<'_>,
    set: Option<&Vec<(usize, usize)>>,
    present: Option<&PresentSet>,
) -> Option<bool> {
    let set = set?;
    let now = present
        .and_then(|p| p.by_name.get(c.name))
        .and_then(|p| p.config_digest.as_deref());
    if let (Some(now), Some(want)) = (now, c.winner.config.as_deref()) {
        return Some(now == want);
    }
    let at = |archive: usize| set.iter().find(|(a, _)| *a == archive).map(|(_, o)| *o);
    let last_loser = c.losers.iter().filter_map(|l| at(l.archive)).max();
    Some(match (at(c.winner.archive), last_loser) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(w), Some(l)) => w > l,
    })
}

/// Import a shared name's winner once more, after an archive that lost the name set it.
fn import_winner(ctx: &Run<'_>, p: &Planned) -> Option<ArchiveResult> {
    if stop_signal().is_some() {
        return None;
    }
    ctx.reporter.info(&format!(
        "importing {} once more: another archive set names that it wins",
        p.file
    ));
    let (r, _) = import_one(ctx, p, &Passage::new(None, 0));
    if r.status == Status::Failed {
        ctx.reporter.emit(&Event::Archive(&r));
    }
    Some(r)
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
            replaced: Vec::new(),
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
            let why = image.not_for(&ctx.platform);
            ctx.reporter
                .warn(Some(file), &format!("{why}, so it was not imported"));
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
        replaced: replaced_names(ctx.present, &names, &configs),
    };
    Ok((result, names.into_iter().zip(configs).collect()))
}

/// The names an archive took from another image: in the runtime before the run as an image
/// of another config digest.
fn replaced_names(
    before: &PresentSet,
    names: &[String],
    configs: &[Option<String>],
) -> Vec<Replaced> {
    names
        .iter()
        .zip(configs)
        .filter_map(|(name, now)| {
            let was = before.by_name.get(name)?.config_digest.as_deref()?;
            (was != now.as_deref()?).then(|| Replaced {
                name: name.clone(),
                was: was.to_string(),
            })
        })
        .collect()
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
        let Some(max_used) = ctx.args.disk_max_used else {
            return Ok(());
        };
        ctx.runtime
            .preflight(&p.found.path, &ctx.platform, max_used)
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
        if stop_signal().is_some() {
            // The next run labels what this one did not: it finds no fingerprint and reads
            // the archive again.
            break;
        }
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
            let stamp = p.fingerprint.stamp.as_deref().unwrap_or("-");
            labels.insert(
                format!("{LABEL_ARCHIVE_PREFIX}{}", p.fingerprint.key),
                format!("{}/{config}/{stamp}", names.len()),
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

/// The config digest of each image, for the node's platform, each once: an archive names one
/// image several times (a tag and digest names), and the log counts images, not names.
pub fn config_digests(info: &ArchiveInfo, platform: &Platform) -> Vec<String> {
    unique(
        info.images
            .iter()
            .filter_map(|i| i.for_platform(platform))
            .filter_map(|p| p.config_digest.clone()),
    )
}

/// Each item once, in the order first seen.
fn unique(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
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

    /// An images.json entry of a registry export: one image per platform, each with the tag
    /// and its digest names.
    fn registry_entry() -> BundleArchive {
        let image = |arch: &str, manifest: &str, config: &str| bundle::BundleImage {
            names: vec![
                "reg/app:1".into(),
                "reg/app@sha256:index".into(),
                format!("reg/app@{manifest}"),
            ],
            config_digest: config.into(),
            manifest_digest: Some(manifest.into()),
            platform: Some(format!("linux/{arch}")),
            layers: Vec::new(),
        };
        BundleArchive {
            file: "app.tar".into(),
            size: 1,
            sha256: String::new(),
            compression: archive::Compression::None,
            format: archive::Format::Oci,
            images: vec![
                image("amd64", "sha256:m-amd", "sha256:c-amd"),
                image("arm64", "sha256:m-arm", "sha256:c-arm"),
            ],
            source: None,
            stamp: None,
        }
    }

    fn amd64() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    #[test]
    fn an_archive_is_skipped_only_when_its_digest_names_are_present_too() {
        let entry = registry_entry();
        let none = |_: &str| false;
        let all = vec![
            present("reg/app:1", "sha256:c-amd"),
            present("reg/app@sha256:index", "sha256:c-amd"),
            present("reg/app@sha256:m-amd", "sha256:c-amd"),
        ];
        // The node's platform alone: the arm64 image's names are not looked for.
        assert!(PresentSet::new(all.clone()).covers_bundle_entry(&entry, &amd64(), &none));
        for gone in 0..all.len() {
            let mut some = all.clone();
            let name = some.remove(gone).name;
            assert!(
                !PresentSet::new(some).covers_bundle_entry(&entry, &amd64(), &none),
                "skipped without {name}"
            );
        }
        // A runtime that lists no digest names (Docker) is asked for the tag alone.
        let mut docker = PresentSet::new(vec![present("reg/app:1", "sha256:c-amd")]);
        docker.digest_names = false;
        assert!(docker.covers_bundle_entry(&entry, &amd64(), &none));
    }

    #[test]
    fn every_name_of_an_image_is_expected_after_the_run_where_the_runtime_lists_it() {
        let index = BundleIndex {
            archives: vec![registry_entry()],
            ..BundleIndex::new()
        };
        let none = |_: &str, _: &str| false;
        let on_containerd = expected_images(Some(&index), &[], &amd64(), &none, true);
        assert_eq!(on_containerd.len(), 1);
        assert_eq!(
            on_containerd[0].names,
            ["reg/app:1", "reg/app@sha256:index", "reg/app@sha256:m-amd"]
        );
        let missing = missing_images(&[present("reg/app:1", "sha256:c-amd")], &on_containerd);
        let names: Vec<&str> = missing.iter().map(|m| m.image.as_str()).collect();
        assert_eq!(names, ["reg/app@sha256:index", "reg/app@sha256:m-amd"]);
        let on_docker = expected_images(Some(&index), &[], &amd64(), &none, false);
        assert_eq!(on_docker[0].names, ["reg/app:1"]);
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
    fn the_fingerprint_key_is_the_path_in_the_bundle_and_the_stamp_the_files() {
        let dir = std::env::temp_dir().join(format!("oi-fp-name-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.tar");
        std::fs::write(&path, b"x").unwrap();
        let a = fingerprint("a.tar", &path);
        assert_eq!(a.key.len(), 32);
        assert!(a.stamp.is_some());
        let b = fingerprint("b.tar", &path);
        assert_ne!(a.key, b.key);
        assert_eq!(a.stamp, b.stamp);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `cp -p` of another archive of the same size over this one keeps its name, size and
    /// modification time; only the change time tells.
    #[test]
    fn a_file_rewritten_in_place_with_its_old_size_and_mtime_gets_a_new_stamp() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("oi-fp-cp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.tar");
        std::fs::write(&path, b"app:1.0.1").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let before = fingerprint("app.tar", &path);
        assert_eq!(fingerprint("app.tar", &path), before);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(b"app:1.0.2").unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(mtime))
            .unwrap();
        drop(f);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.modified().unwrap()), (9, mtime));
        let after = fingerprint("app.tar", &path);
        assert_eq!(after.key, before.key);
        assert_ne!(after.stamp, before.stamp);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_archive_is_skipped_by_fingerprint_only_when_all_its_images_carry_it() {
        let p = |name: &str, fp: &str, value: &str| Present {
            name: name.into(),
            config_digest: Some("sha256:c".into()),
            labels: [(format!("{LABEL_ARCHIVE_PREFIX}{fp}"), value.to_string())].into(),
        };
        let set = PresentSet::new(vec![
            p("a:1", "f1", "2/sha256:c/1.2.3.4"),
            p("b:1", "f1", "2/sha256:c/1.2.3.4"),
            p("c:1", "f2", "2/sha256:c/1.2.3.4"),
            p("d:1", "f4", "1/sha256:other/1.2.3.4"),
            p("e:1", "f5", "1/sha256:c"),
        ]);
        let fp = |key: &str| Fingerprint {
            key: key.into(),
            stamp: Some("1.2.3.4".into()),
        };
        let none = |_: &str| false;
        let (tagged, same) = set.by_fingerprint(&fp("f1"), &none).unwrap();
        assert_eq!((tagged.len(), same), (2, true));
        let other = Fingerprint {
            stamp: Some("1.2.3.5".into()),
            ..fp("f1")
        };
        assert!(
            !set.by_fingerprint(&other, &none).unwrap().1,
            "another stamp is no proof"
        );
        assert!(
            set.by_fingerprint(&fp("f2"), &none).is_none(),
            "one of two images is gone"
        );
        assert!(set.by_fingerprint(&fp("f3"), &none).is_none());
        assert!(
            set.by_fingerprint(&fp("f4"), &none).is_none(),
            "the config changed since"
        );
        assert!(
            !set.by_fingerprint(&fp("f5"), &none).unwrap().1,
            "a label without a stamp is no proof"
        );
    }
}
