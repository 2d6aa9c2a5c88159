//! `offline-images import`: plan (checksums, what is already present), import the rest a few
//! at a time, and report every archive's outcome.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::archive::{self, ArchiveInfo, Found, Platform};
use crate::bundle::{self, BundleArchive, BundleIndex};
use crate::cli::ImportArgs;
use crate::exit::{self, Code};
use crate::report::{self, ArchiveResult, Event, Reporter, Status, Summary};
use crate::runtime::{self, detect, Present, Runtime};

/// Labels set on every imported image (containerd). Pinned images are never removed by
/// kubelet's image garbage collection, so a node under disk pressure keeps what the air-gapped
/// cluster cannot pull again.
pub const LABEL_PINNED: &str = "io.cri-containerd.pinned";
pub const LABEL_MANAGED: &str = "io.offline-images.managed";
/// Prefix of a label naming an archive (by fingerprint) that gave this image:
/// `io.offline-images.archive.<fingerprint>=<images in that archive>/<config digest>`.
/// One label per archive, so an image that several archives carry keeps them all.
pub const LABEL_ARCHIVE_PREFIX: &str = "io.offline-images.archive.";
/// Prefix of a label naming a Helm release that uses this image:
/// `io.offline-images.release.<release>=true`. One label per release, so an image that two
/// releases imported keeps both, and `prune` of one release leaves it to the other.
pub const LABEL_RELEASE_PREFIX: &str = "io.offline-images.release.";

/// The release label key for `release`, or a usage error when the name cannot be one.
/// Helm release names are lowercase DNS labels of at most 53 characters; anything made of
/// letters, digits, `.`, `_` and `-` is accepted here.
pub fn release_label(release: &str) -> Result<String> {
    let ok = !release.is_empty()
        && release.len() <= 200
        && release
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(exit::usage(format!(
            "--release {release:?} is not a release name: use letters, digits, '.', '_' and '-' \
             (at most 200 characters), as Helm release names do"
        )));
    }
    Ok(format!("{LABEL_RELEASE_PREFIX}{release}"))
}

/// Retries when the runtime is briefly unreachable (restarting): 1+2+4+8+16 s.
const RETRY_DELAYS: &[u64] = &[1, 2, 4, 8, 16];
/// After SIGTERM, helper processes still running this long are killed.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// A progress line this often while one archive is being imported.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

// ---- stopping on SIGTERM / SIGINT ---------------------------------------------------------

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// The signal that asked us to stop, if one did.
pub fn stop_signal() -> Option<&'static str> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGINT => Some("SIGINT"),
        _ => Some("SIGTERM"),
    }
}

/// Catch SIGTERM and SIGINT: the current archive is aborted (its ctr killed at once by a
/// watcher thread, even when blocked), no new one starts, and the summary is still printed.
fn install_stop_handler(reporter: &'static Reporter) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for sig in [Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the handler only stores to an atomic.
            let _ = unsafe { sigaction(sig, &action) };
        }
        thread::spawn(move || {
            let mut since: Option<Instant> = None;
            loop {
                thread::sleep(Duration::from_millis(100));
                let Some(sig) = stop_signal() else { continue };
                match since {
                    None => {
                        reporter.warn(
                            None,
                            &format!("received {sig}: aborting the current import and stopping"),
                        );
                        since = Some(Instant::now());
                    }
                    // The import aborts itself at its next read, and ctr then exits on its
                    // own (cleaning up). Only a helper stuck past a grace period is killed.
                    Some(t) if t.elapsed() >= KILL_GRACE => runtime::kill_children(),
                    Some(_) => {}
                }
            }
        });
    });
}

/// Sleep, waking early when asked to stop. Returns false if stopped.
fn sleep_unless_stopped(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop_signal().is_some() {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop_signal().is_none()
}

// ---- the images path ----------------------------------------------------------------------

/// The images path must be a readable directory; otherwise an environment error naming it.
pub fn check_images_path(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(exit::usage(format!(
            "images path {} does not exist: is the volume mounted?",
            path.display()
        ))),
        Err(e) => Err(exit::usage(format!(
            "images path {} cannot be read ({e}): is the volume mounted?",
            path.display()
        ))),
        Ok(m) if !m.is_dir() => Err(exit::usage(format!(
            "images path {} is not a directory: is the volume mounted?",
            path.display()
        ))),
        Ok(_) => std::fs::read_dir(path).map(|_| ()).map_err(|e| {
            exit::usage(format!(
                "images path {} cannot be read ({e}): is the volume mounted?",
                path.display()
            ))
        }),
    }
}

// ---- one lock per node --------------------------------------------------------------------

/// Hold an exclusive `flock` on the runtime socket's directory, so two importers on one node
/// (two releases installed at once) do not interleave. A directory opened read-only can be
/// locked, and that works through a read-only hostPath mount.
pub(crate) fn lock_node(socket: &Path, reporter: &Reporter) -> Result<Option<File>> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let file = match File::open(dir) {
        Ok(f) => f,
        Err(e) => {
            reporter.warn(
                None,
                &format!(
                    "cannot open {} to take the import lock ({e}); going on without it",
                    dir.display()
                ),
            );
            return Ok(None);
        }
    };
    let started = Instant::now();
    let mut last_said: Option<Instant> = None;
    loop {
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            if last_said.is_some() {
                reporter.info(&format!(
                    "lock on {} taken after {:.0} s",
                    dir.display(),
                    started.elapsed().as_secs_f64()
                ));
            }
            return Ok(Some(file));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            reporter.warn(
                None,
                &format!(
                    "cannot lock {} ({err}); going on without the lock",
                    dir.display()
                ),
            );
            return Ok(None);
        }
        if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            reporter.info(&format!(
                "waiting for another importer on this node to finish (it holds the lock on {})",
                dir.display()
            ));
            last_said = Some(Instant::now());
        }
        if !sleep_unless_stopped(Duration::from_secs(1)) {
            // Nothing is imported; the run reports every archive as not started.
            return Ok(None);
        }
    }
}

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
}

impl PresentSet {
    fn new(list: Vec<Present>) -> PresentSet {
        PresentSet {
            by_name: list.into_iter().map(|p| (p.name.clone(), p)).collect(),
        }
    }

    fn has(&self, name: &str, config: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|p| p.config_digest.as_deref() == Some(config))
    }

    fn has_config(&self, config: &str) -> bool {
        self.by_name
            .values()
            .any(|p| p.config_digest.as_deref() == Some(config))
    }

    /// Skip by images.json: every image of the archive present under each of its names,
    /// with the same config digest.
    fn covers_bundle_entry(&self, entry: &BundleArchive) -> bool {
        !entry.images.is_empty()
            && entry.images.iter().all(|img| {
                if img.names.is_empty() {
                    self.has_config(&img.config_digest)
                } else {
                    img.names.iter().all(|n| self.has(n, &img.config_digest))
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
}

pub fn run(args: &ImportArgs) -> Result<Code> {
    let started = Instant::now();
    let reporter: &'static Reporter = Box::leak(Box::new(Reporter::new(args.log_format)));
    install_stop_handler(reporter);
    let root = &args.images_path;
    let release_key = args.release.as_deref().map(release_label).transpose()?;
    check_images_path(root)?;
    let (found, rejected) = archive::discover(root)?;
    let sums = bundle::read_sums(root)
        .map_err(|e| exit::usage(format!("{e:#}: the bundle's checksums cannot be trusted")))?;
    let index = match bundle::read_index(root) {
        Ok(i) => i,
        Err(e) => {
            reporter.warn(
                None,
                &format!("{e:#}; reading the archives themselves instead"),
            );
            None
        }
    };

    let detected = detect::detect(&args.runtime)?;
    let rt = detected.runtime.as_ref();
    let socket = detected.socket.display().to_string();
    let description = rt.describe();
    reporter.emit(&Event::Runtime {
        runtime: rt.kind(),
        socket: &socket,
        namespace: detected.namespace.as_deref(),
        description: &description,
        reason: &detected.reason,
    });
    let total_bytes: u64 = found.iter().map(|f| f.size).sum();
    let images_path = root.display().to_string();
    reporter.emit(&Event::Start {
        version: env!("CARGO_PKG_VERSION"),
        runtime: &description,
        socket: &socket,
        namespace: detected.namespace.as_deref(),
        images_path: &images_path,
        archives: found.len(),
        bytes: total_bytes,
        jobs: args.jobs,
        dry_run: args.dry_run,
        force: args.force,
    });

    let _lock = if args.dry_run {
        None
    } else {
        lock_node(&detected.socket, reporter)?
    };

    let mut results: Vec<ArchiveResult> = Vec::new();
    let emit = |r: ArchiveResult, results: &mut Vec<ArchiveResult>| {
        reporter.emit(&Event::Archive(&r));
        results.push(r);
    };
    for r in &rejected {
        let file = bundle::relative_name(root, &r.path);
        emit(
            ArchiveResult::failed(&file, 0, r.reason.clone()),
            &mut results,
        );
    }
    if found.is_empty() && rejected.is_empty() {
        reporter.warn(
            None,
            &format!(
                "no archives (.tar, .tar.gz, .tgz, .tar.zst) in {}: nothing to import",
                root.display()
            ),
        );
    }

    // SHA256SUMS lines whose file is missing: the bundle is incomplete.
    let mut sums = sums;
    let found_names: Vec<String> = found
        .iter()
        .map(|f| bundle::relative_name(root, &f.path))
        .collect();
    if let Some(s) = &sums {
        for file in s.keys() {
            if !found_names.contains(file) {
                emit(
                    ArchiveResult::failed(
                        file,
                        0,
                        format!(
                            "listed in {} but not found in {}: the bundle was not copied completely",
                            bundle::SUMS_FILE,
                            root.display()
                        ),
                    ),
                    &mut results,
                );
            }
        }
    }

    let present = if found.is_empty() {
        PresentSet::new(Vec::new())
    } else {
        PresentSet::new(with_retries(reporter, None, || rt.present())?)
    };

    let mut todo: Vec<Planned> = Vec::new();
    for (f, file) in found.into_iter().zip(found_names) {
        let meta = std::fs::metadata(&f.path).ok();
        let fingerprint = fingerprint(&file, meta.as_ref());
        let expected_sha256 = sums.as_mut().and_then(|s| s.remove(&file));
        if sums.is_some() && expected_sha256.is_none() {
            reporter.warn(
                Some(&file),
                &format!(
                    "not listed in {}: its checksum cannot be verified",
                    bundle::SUMS_FILE
                ),
            );
        }
        if !args.force {
            if let Some(r) =
                skip_result(&present, index.as_ref(), &file, &f, &fingerprint, reporter)
            {
                if let (Some(key), false) = (&release_key, args.dry_run) {
                    label_for_release(rt, &present, &r.names, key, &file, reporter);
                }
                emit(r, &mut results);
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

    let ctx = Run {
        args,
        runtime: rt,
        reporter,
        platform: Platform::host(),
    };
    let mut done = Mutex::new(Vec::new());
    let mut landed = Mutex::new(Vec::new());
    let retry = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..usize::from(args.jobs).min(todo.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(p) = todo.get(i) else { break };
                if stop_signal().is_some() {
                    break;
                }
                let (r, names) = import_one(&ctx, p);
                if args.jobs > 1 && lost_a_shared_layer_race(&r) {
                    // Tried again alone below, once the other imports are done.
                    retry.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                    continue;
                }
                reporter.emit(&Event::Archive(&r));
                done.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
                landed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, names));
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
        reporter.info(&format!(
            "{}: importing again on its own: a parallel import was writing a layer it shares",
            p.file
        ));
        let (r, names) = import_one(&ctx, p);
        reporter.emit(&Event::Archive(&r));
        done.get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push((i, r));
        landed
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push((i, names));
    }
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    if stop_signal().is_none() {
        let landed = landed.into_inner().unwrap_or_else(|e| e.into_inner());
        settle_shared_names(&ctx, &todo, landed, &mut done);
    }
    let interrupted = stop_signal().is_some();
    if interrupted {
        let finished: Vec<usize> = done.iter().map(|(i, _)| *i).collect();
        for (i, p) in todo.iter().enumerate() {
            if !finished.contains(&i) {
                let r = ArchiveResult::failed(
                    &p.file,
                    p.found.size,
                    "not started: the run was stopped",
                );
                reporter.emit(&Event::Archive(&r));
                done.push((i, r));
            }
        }
    }
    results.extend(done.into_iter().map(|(_, r)| r));

    let summary = Summary {
        version: env!("CARGO_PKG_VERSION").to_string(),
        runtime: rt.kind().to_string(),
        socket,
        namespace: detected.namespace.clone(),
        images_path,
        dry_run: args.dry_run,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
        imported: Summary::count(&results, Status::Imported),
        skipped: Summary::count(&results, Status::Skipped),
        failed: Summary::count(&results, Status::Failed),
        would_import: Summary::count(&results, Status::WouldImport),
        archives: results,
    };
    // Said before the summary, so the summary stays the log's last line.
    if summary.failed > 0 && !args.strict && !interrupted {
        reporter.info(&format!(
            "{} archive(s) failed; exiting 0 because --strict is not set",
            summary.failed
        ));
    }
    reporter.emit(&Event::Summary(&summary));
    report::write_termination_message(Path::new(report::TERMINATION_LOG), &summary);
    if let Some(path) = &args.report {
        let mut data = serde_json::to_vec_pretty(&summary)?;
        data.push(b'\n');
        bundle::write_atomic(path, &data)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    if interrupted || (summary.failed > 0 && args.strict) {
        return Ok(Code::Failure);
    }
    Ok(Code::Success)
}

/// ctr 1.6 names an upload after the archive's entry, so two imports writing the same layer at
/// once can take each other's upload: the loser fails with "content digest ...: not found".
/// Nothing is wrong with its archive; imported again alone, it goes in.
fn lost_a_shared_layer_race(r: &ArchiveResult) -> bool {
    r.status == Status::Failed
        && r.reason
            .as_deref()
            .is_some_and(|m| m.contains("content digest") && m.contains("not found"))
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
    let tagged = present.by_fingerprint(fp)?;
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
fn import_one(ctx: &Run<'_>, p: &Planned) -> (ArchiveResult, NameConfigs) {
    let started = Instant::now();
    let (mut result, names) = match import_archive(ctx, p) {
        Ok(r) => r,
        Err(e) => {
            let reason = match stop_signal() {
                Some(sig) => format!("aborted by {sig}"),
                None => format!("{e:#}"),
            };
            (
                ArchiveResult::failed(&p.file, p.found.size, reason),
                Vec::new(),
            )
        }
    };
    result.seconds = started.elapsed().as_secs_f64();
    (result, names)
}

/// Image names with the config digest each was given.
type NameConfigs = Vec<(String, Option<String>)>;

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
    type Sources = Vec<(usize, Option<String>)>;
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
    if ctx.args.jobs > 1 {
        let present = match with_retries(ctx.reporter, None, || ctx.runtime.present()) {
            Ok(p) => PresentSet::new(p),
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
            let (r, _) = import_one(ctx, p);
            if r.status == Status::Failed {
                ctx.reporter.emit(&Event::Archive(&r));
            }
            if let Some(slot) = done.iter_mut().find(|(j, _)| *j == i) {
                slot.1 = r;
            }
        }
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

fn import_archive(ctx: &Run<'_>, p: &Planned) -> Result<(ArchiveResult, NameConfigs)> {
    let file = p.file.as_str();
    if let Some(expected) = &p.expected_sha256 {
        let f = File::open(&p.found.path)
            .with_context(|| format!("cannot open {}", p.found.path.display()))?;
        let actual = bundle::sha256_reader(Stoppable(f))
            .with_context(|| format!("cannot read {}", p.found.path.display()))?;
        if &actual != expected {
            anyhow::bail!(
                "checksum mismatch: {} says sha256 {expected}, the file has {actual}; \
                 the file is damaged or was replaced, so it is not imported",
                bundle::SUMS_FILE
            );
        }
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
        };
        return Ok((would, Vec::new()));
    }
    if !ctx.args.no_disk_preflight {
        with_retries(ctx.reporter, Some(file), || {
            ctx.runtime
                .preflight(&p.found.path, &ctx.platform, ctx.args.disk_max_used)
        })?;
    }
    let started = Instant::now();
    let imported = with_retries(ctx.reporter, Some(file), || {
        let opened = archive::open(&p.found.path)?;
        let compression = opened.compression;
        let mut reader = Watched {
            inner: opened.reader,
            file,
            reporter: ctx.reporter,
            started,
            last: Instant::now(),
            bytes: 0,
        };
        let mut imported = ctx.runtime.import(&mut reader, &ctx.platform)?;
        imported.info.compression = compression;
        Ok(imported)
    })?;
    for w in &imported.info.warnings {
        ctx.reporter.warn(Some(file), w);
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
    for (name, config) in names.iter().zip(&configs) {
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
                Some(file),
                &format!(
                    "imported, but {e:#}: kubelet may garbage-collect this image under disk pressure"
                ),
            );
        }
    }
    let result = ArchiveResult {
        file: file.to_string(),
        status: Status::Imported,
        names: names.clone(),
        digests: config_digests(&imported.info, &ctx.platform),
        seconds: 0.0,
        bytes: p.found.size,
        reason: None,
    };
    Ok((result, names.into_iter().zip(configs).collect()))
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
