//! `offline-images export`: collect a release's image references, pull each image with the
//! host's engine, and write the bundle: one compressed archive per image, `SHA256SUMS` and
//! `images.json`.
//!
//! Archive names: `Reference::file_stem()` plus the compression's extension, e.g.
//! `docker.io/library/nginx:1.27` becomes `docker.io_library_nginx_1.27.tar.gz` (gzip),
//! `.tar.zst` (zstd) or `.tar` (none). Each archive is written to a hidden temp file in the
//! bundle directory and renamed only once complete and on disk, so a failure leaves no
//! partial archive behind; `SHA256SUMS` and `images.json` are rewritten atomically after each
//! archive, merged with what an earlier run wrote.

mod chart;
mod collect;
mod compress;
mod engine;
mod indirect;
mod inputs;
mod meter;
pub mod registry;
mod values;
mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::archive::{human_bytes, ArchiveInfo, Compression, Platform};
use crate::bundle::{self, BundleArchive, BundleImage, BundleIndex, BundleLayer, BundleSource};
use crate::cli::{self, ExportArgs};
use crate::exit::{self, Code};
use crate::reference::Reference;

pub use engine::Engine;

/// The file extension for a compression choice.
pub fn extension(c: cli::Compression) -> &'static str {
    match c {
        cli::Compression::Gzip => ".tar.gz",
        cli::Compression::Zstd => ".tar.zst",
        cli::Compression::None => ".tar",
    }
}

fn compression(c: cli::Compression) -> Compression {
    match c {
        cli::Compression::Gzip => Compression::Gzip,
        cli::Compression::Zstd => Compression::Zstd,
        cli::Compression::None => Compression::None,
    }
}

/// How one image went.
enum Outcome {
    Written { bytes: u64 },
    UpToDate,
    Failed(String),
}

/// What the workers share.
struct Bundle {
    dir: PathBuf,
    state: Mutex<(BundleIndex, BTreeMap<String, String>)>,
}

impl Bundle {
    /// Record a written archive and rewrite `SHA256SUMS` and `images.json`.
    fn record(&self, archive: BundleArchive) -> Result<()> {
        let mut state = crate::sync::lock(&self.state);
        let (index, sums) = &mut *state;
        sums.insert(archive.file.clone(), archive.sha256.clone());
        index.generator = bundle::generator();
        index.upsert(archive);
        bundle::write_sums(&self.dir, sums)?;
        bundle::write_index(&self.dir, index)
    }
}

/// One line per event on stderr; a person reads it later, so no carriage returns unless
/// stderr is a terminal (where the line clears the status line first).
fn progress(n: usize, total: usize, r: &Reference, event: &str) {
    eprintln!("{}[{n}/{total}] {r}: {event}", meter::line_start());
}

/// The platforms asked for, the host's when none.
fn parse_platforms(given: &[String]) -> Result<Vec<Platform>> {
    let mut out = Vec::new();
    for p in given {
        let parsed = Platform::parse(p).ok_or_else(|| {
            exit::usage(format!(
                "--platform {p:?} is not of the form os/arch[/variant], e.g. linux/amd64"
            ))
        })?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    if out.is_empty() {
        out.push(Platform::host());
    }
    Ok(out)
}

fn uses_registry(e: cli::Engine) -> bool {
    matches!(e, cli::Engine::Auto | cli::Engine::Registry)
}

fn insecure_hosts(args: &ExportArgs) -> Vec<String> {
    args.insecure_registry
        .iter()
        .map(|h| h.trim_end_matches('/').to_string())
        .collect()
}

/// The docker, podman or skopeo engine asked for; with `auto`, the local engine (docker or
/// podman) for images the registry does not serve, when one is there.
fn local_engine(args: &ExportArgs) -> Result<Option<Engine>> {
    let engine = match args.engine {
        cli::Engine::Auto => Engine::detect(cli::Engine::Auto)
            .ok()
            .filter(Engine::has_local_store),
        cli::Engine::Registry => None,
        other => Some(Engine::detect(other)?),
    };
    let Some(mut engine) = engine else {
        return Ok(None);
    };
    engine.insecure = insecure_hosts(args);
    if args.engine == cli::Engine::Auto {
        eprintln!(
            "offline-images: images the registry does not serve are looked for in {}",
            engine.describe()
        );
    } else {
        eprintln!("offline-images: using {}", engine.describe());
    }
    Ok(Some(engine))
}

/// The registry engine, configured from the flags; `scratch` holds the blob cache of a
/// `--no-cache` run.
fn registry_engine(
    args: &ExportArgs,
    platforms: &[Platform],
    scratch: &Path,
) -> Result<registry::Registry> {
    let insecure = insecure_hosts(args);
    let mut mirrors = Vec::new();
    for m in &args.registry_mirror {
        let (src, mirror) = m
            .split_once('=')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .ok_or_else(|| {
                exit::usage(format!(
                    "--registry-mirror {m:?} is not of the form SRC=MIRROR"
                ))
            })?;
        let clean = |h: &str| {
            h.trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        };
        mirrors.push((clean(src), clean(mirror)));
    }
    let explicit = match &args.username {
        Some(user) => {
            let mut line = String::new();
            io::stdin()
                .read_line(&mut line)
                .map_err(|e| exit::usage(format!("--password-stdin: cannot read stdin: {e}")))?;
            let secret = line.trim_end_matches(['\n', '\r']).to_string();
            if secret.is_empty() {
                return Err(exit::usage("--password-stdin: stdin held no password"));
            }
            Some(registry::auth::Credential {
                username: user.clone(),
                secret,
            })
        }
        None => None,
    };
    let cache_dir = if args.no_cache {
        scratch.join("blobs")
    } else {
        match args.cache_dir.clone().or_else(registry::cache::default_dir) {
            Some(d) => d,
            None => scratch.join("blobs"),
        }
    };
    let cache = registry::cache::Cache::open(&cache_dir, usize::from(args.jobs))
        .map_err(|e| exit::usage(format!("{e:#}")))?;
    let options = registry::transport::Options {
        ca_file: args.ca_file.clone(),
        insecure,
        keychain: registry::auth::Keychain {
            explicit,
            config: registry::auth::docker_config_path(),
        },
    };
    let reg = registry::Registry::new(options, mirrors, cache, platforms.to_vec())
        .map_err(|e| exit::usage(format!("{e:#}")))?;
    eprintln!(
        "offline-images: using the registry engine (blob cache {})",
        if args.no_cache {
            "off".to_string()
        } else {
            cache_dir.display().to_string()
        }
    );
    Ok(reg)
}

pub fn run(args: &ExportArgs) -> Result<Code> {
    let platforms = parse_platforms(&args.platform)?;
    let platform = platforms[0].clone();
    let collected = inputs::from_args(args)?;
    collected.log();
    let ext = if uses_registry(args.engine) {
        ".tar"
    } else {
        extension(args.compress)
    };
    let mut problems = collected.problems.len();
    let refs = one_per_file(collected.refs, ext, &mut problems);
    if args.dry_run {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        for r in &refs {
            writeln!(out, "{r}")?;
        }
        out.flush()?;
        return Ok(if problems > 0 {
            Code::Failure
        } else {
            Code::Success
        });
    }
    if refs.is_empty() {
        return nothing_to_export(args, problems);
    }
    // The importer binary for the chart's bootstrap mode: checked before anything is pulled.
    let importer_binary = importer_binary(args)?;
    let platform_list: Vec<String> = platforms.iter().map(ToString::to_string).collect();
    eprintln!(
        "offline-images: {} image(s) to export to {}, platform {}:",
        refs.len(),
        args.output.display(),
        platform_list.join(", ")
    );
    for r in &refs {
        eprintln!("  {r}");
    }
    let engine = local_engine(args)?;
    let dir = &args.output;
    let shared = Bundle::open(dir, importer_binary.as_deref())?;
    let scratch = dir.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
    remove_stale_temps(dir);
    let registry = if uses_registry(args.engine) {
        Some(registry_engine(args, &platforms, &scratch)?)
    } else {
        None
    };
    let jobs = usize::from(args.jobs).min(refs.len()).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ctx = Exporter {
        engine: engine.as_ref(),
        registry: registry.as_ref(),
        platform: &platform,
        platforms: &platforms,
        bundle: &shared,
        scratch: &scratch,
        ext: extension(args.compress),
        compression: compression(args.compress),
        no_cache: args.no_cache,
        threads: (cores / jobs).max(1),
        total: refs.len(),
        meter: meter::Meter::new(),
    };
    let started = Instant::now();
    let outcomes = ctx.export_all(&refs, jobs);
    let _ = fs::remove_dir_all(&scratch);
    Ok(report(&refs, outcomes, problems, started, dir))
}

/// No reference to export: a usage error when no input was given; else exit 1 (the inputs
/// had errors, or named no image), or 0 with `--allow-empty` when they named none.
fn nothing_to_export(args: &ExportArgs, problems: usize) -> Result<Code> {
    let given = !args.images.is_empty()
        || !args.images_file.is_empty()
        || args.chart.is_some()
        || !args.values.is_empty()
        || !args.manifests.is_empty();
    if !given {
        return Err(exit::usage(
            "nothing to export: give IMAGE arguments, --images-file, --chart, --values or \
             --manifests",
        ));
    }
    if problems > 0 {
        eprintln!("offline-images: nothing to export: every input had errors");
        return Ok(Code::Failure);
    }
    if args.allow_empty {
        eprintln!("offline-images: nothing to export: the inputs name no image (--allow-empty)");
        return Ok(Code::Success);
    }
    eprintln!(
        "offline-images: nothing to export: the inputs name no image (give --allow-empty when \
         that is expected)"
    );
    Ok(Code::Failure)
}

/// The references in order, each once; two that would be written to the same file are an
/// input problem (counted in `problems`), the second left out.
fn one_per_file(
    collected: impl IntoIterator<Item = Reference>,
    ext: &str,
    problems: &mut usize,
) -> Vec<Reference> {
    let mut refs = Vec::new();
    let mut names: HashMap<String, Reference> = HashMap::new();
    for r in collected {
        let file = format!("{}{ext}", r.file_stem());
        if let Some(other) = names.get(&file) {
            eprintln!(
                "offline-images: error: {r} and {other} would both be written to {file}; export {r} on its own"
            );
            *problems += 1;
            continue;
        }
        names.insert(file, r.clone());
        refs.push(r);
    }
    refs
}

/// The static importer the bundle carries for the chart's bootstrap mode, if any.
fn importer_binary(args: &ExportArgs) -> Result<Option<PathBuf>> {
    if args.no_importer_binary {
        return Ok(None);
    }
    if let Some(path) = &args.importer_binary {
        crate::bundled::check_static(path)
            .map_err(|why| exit::usage(format!("--importer-binary {} {why}", path.display())))?;
        return Ok(Some(path.clone()));
    }
    match crate::bundled::current_static() {
        Ok(p) => Ok(Some(p)),
        Err(why) => {
            eprintln!(
                "offline-images: note: this binary {why}; the bundle gets no importer \
                 binary (the chart's bootstrap mode needs one: give --importer-binary)"
            );
            Ok(None)
        }
    }
}

impl Bundle {
    /// The bundle directory, created if need be, with what an earlier run wrote there; the
    /// importer binary placed in it when given.
    fn open(dir: &Path, importer_binary: Option<&Path>) -> Result<Bundle> {
        fs::create_dir_all(dir).map_err(|e| {
            exit::usage(format!(
                "cannot create the bundle directory {}: {e}",
                dir.display()
            ))
        })?;
        // An unreadable images.json is not overwritten: it may be an operator's only record.
        let index = bundle::read_index(dir)
            .map_err(|e| exit::usage(format!("{e:#}; move it away to start a new bundle")))?
            .unwrap_or_else(BundleIndex::new);
        let sums = bundle::read_sums(dir)
            .map_err(|e| exit::usage(format!("{e:#}; move it away to start a new bundle")))?
            .unwrap_or_default();
        if let Some(src) = importer_binary {
            let sum = crate::bundled::place(src, dir)?;
            eprintln!(
                "offline-images: importer binary written to {}/{}/{} (sha256 {sum})",
                dir.display(),
                crate::bundled::DIR,
                crate::bundled::BINARY
            );
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            state: Mutex::new((index, sums)),
        })
    }
}

impl Exporter<'_> {
    /// Export every reference, `jobs` at a time, with the terminal meter drawn meanwhile;
    /// the outcome of each, in order (`None`: not reached).
    fn export_all(&self, refs: &[Reference], jobs: usize) -> Vec<Option<Outcome>> {
        let next = AtomicUsize::new(0);
        let outcomes: Mutex<Vec<Option<Outcome>>> =
            Mutex::new((0..refs.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            let drawer = s.spawn(|| self.meter.draw());
            let workers: Vec<_> = (0..jobs)
                .map(|_| {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(r) = refs.get(i) else { return };
                        let outcome = self.export_or_fail(i + 1, r);
                        crate::sync::lock(&outcomes)[i] = Some(outcome);
                    })
                })
                .collect();
            for w in workers {
                let _ = w.join();
            }
            self.meter.finish();
            let _ = drawer.join();
        });
        crate::sync::into_inner(outcomes)
    }
}

/// The closing lines on stderr, and the exit code.
fn report(
    refs: &[Reference],
    outcomes: Vec<Option<Outcome>>,
    problems: usize,
    started: Instant,
    dir: &Path,
) -> Code {
    let (mut written, mut bytes, mut up_to_date, mut failed) = (0, 0u64, 0, Vec::new());
    for (r, o) in refs.iter().zip(outcomes) {
        match o {
            Some(Outcome::Written { bytes: b }) => {
                written += 1;
                bytes += b;
            }
            Some(Outcome::UpToDate) => up_to_date += 1,
            Some(Outcome::Failed(msg)) => failed.push(format!("{r}: {msg}")),
            None => failed.push(format!("{r}: not exported")),
        }
    }
    if written == 0 && failed.is_empty() {
        eprintln!(
            "offline-images: nothing new to export: all {up_to_date} image(s) in {} are up to date",
            dir.display()
        );
    } else {
        eprintln!(
            "offline-images: exported {written} image(s) ({}), {up_to_date} up to date, {} failed, in {:.1} s, to {}",
            human_bytes(bytes),
            failed.len(),
            started.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    for f in &failed {
        eprintln!("offline-images: failed: {f}");
    }
    if problems > 0 {
        eprintln!("offline-images: {problems} input problem(s), listed above");
    }
    if failed.is_empty() && problems == 0 {
        Code::Success
    } else {
        Code::Failure
    }
}

/// skopeo writes its docker-archive here before it is compressed into the bundle.
const SCRATCH_PREFIX: &str = ".offline-images-export.";

/// Remove what an interrupted run left in the bundle directory: hidden `.NAME.PID.tmp` files
/// and scratch directories of a process that is gone, untouched for ten minutes (so a run on
/// another host sharing the directory is left alone while it writes).
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = if let Some(pid) = name.strip_prefix(SCRATCH_PREFIX) {
            pid
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            name.trim_end_matches(".tmp")
                .rsplit('.')
                .next()
                .unwrap_or("")
        } else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 600);
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() || !idle {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if removed.is_ok() {
            eprintln!("offline-images: removed {name}, left by an interrupted run");
        }
    }
}

/// Everything one image's export needs.
struct Exporter<'a> {
    engine: Option<&'a Engine>,
    registry: Option<&'a registry::Registry>,
    platform: &'a Platform,
    platforms: &'a [Platform],
    bundle: &'a Bundle,
    scratch: &'a Path,
    ext: &'static str,
    compression: Compression,
    no_cache: bool,
    threads: usize,
    total: usize,
    meter: meter::Meter,
}

/// An archive being written: a hidden temp file beside its destination, removed unless it
/// is put in place complete (docs/ARCHITECTURE.md, "Data flow: export").
struct TempFile {
    path: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempFile {
    /// Create the temp file for `dest`, and a buffered writer to it.
    fn create(dest: &Path) -> Result<(TempFile, BufWriter<File>)> {
        let path = bundle::temp_name(dest);
        let out =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let temp = TempFile {
            path,
            dest: dest.to_path_buf(),
            done: false,
        };
        Ok((temp, BufWriter::with_capacity(1 << 20, out)))
    }

    /// Flush `writer` and get its bytes onto the disk.
    fn sync(&self, writer: BufWriter<File>) -> Result<()> {
        let what = || format!("cannot write {}", self.path.display());
        let out = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(what)?;
        out.sync_all().with_context(what)
    }

    /// Rename it onto its destination, then sync the directory so the name lasts; the stamp
    /// of the file in place (see `bundle::FileStamp`).
    fn put_in_place(mut self) -> Result<Option<bundle::FileStamp>> {
        fs::rename(&self.path, &self.dest).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                self.dest.display()
            )
        })?;
        self.done = true;
        if let Some(d) = self.dest.parent().and_then(|d| File::open(d).ok()) {
            let _ = d.sync_all();
        }
        Ok(bundle::FileStamp::settled(&self.dest))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Exporter<'_> {
    /// The config digest the bundle holds for `file`, when the file is there and still the
    /// archive `SHA256SUMS` lists (see [`Exporter::intact`]).
    fn cached_config(&self, file: &str) -> Result<Option<(String, &'static str)>> {
        let config = {
            let state = crate::sync::lock(&self.bundle.state);
            let (index, _) = &*state;
            index
                .archive(file)
                .and_then(|a| a.images.first())
                .map(|i| i.config_digest.clone())
        };
        let Some(config) = config else {
            return Ok(None);
        };
        Ok(self.intact(file)?.map(|how| (config, how)))
    }

    /// Whether the bundle's `file` is still the archive `SHA256SUMS` lists, and how that was
    /// told: by its stamp in images.json (the file is not read), else by its checksum; an
    /// archive found intact by its checksum is stamped again, so that the next run need not
    /// read it. The stamp is taken before the file is read and must still match after.
    fn intact(&self, file: &str) -> Result<Option<&'static str>> {
        let path = self.bundle.dir.join(file);
        let (sum, entry) = {
            let state = crate::sync::lock(&self.bundle.state);
            let (index, sums) = &*state;
            (sums.get(file).cloned(), index.archive(file).cloned())
        };
        let (Some(sum), Some(mut entry)) = (sum, entry) else {
            return Ok(None);
        };
        let stamped = entry
            .stamp
            .is_some_and(|s| s.size == entry.size && s.matches(&path));
        if entry.sha256 == sum && stamped {
            return Ok(Some(""));
        }
        if !path.is_file() {
            return Ok(None);
        }
        let before = bundle::FileStamp::settled(&path);
        if bundle::sha256_file(&path)? != sum {
            return Ok(None);
        }
        entry.stamp = before.filter(|s| s.matches(&path));
        entry.sha256 = sum;
        entry.size = fs::metadata(&path).map(|m| m.len()).unwrap_or(entry.size);
        self.bundle.record(entry)?;
        Ok(Some("; its checksum verified"))
    }

    /// Export one image; a failure is logged and becomes its outcome.
    fn export_or_fail(&self, n: usize, r: &Reference) -> Outcome {
        self.meter.begin();
        let result = self.export_one(n, r);
        self.meter.end();
        result.unwrap_or_else(|e| {
            let msg = format!("{e:#}");
            progress(n, self.total, r, &format!("FAILED: {msg}"));
            Outcome::Failed(msg)
        })
    }

    /// The registry engine, else (auto) the local engine for an image only it holds.
    fn export_one(&self, n: usize, r: &Reference) -> Result<Outcome> {
        let (Some(reg), engine) = (self.registry, self.engine) else {
            let engine = self.engine.expect("an engine was detected");
            return self.export_local(n, r, engine, true);
        };
        let err = match self.export_registry(n, r, reg) {
            Ok(o) => return Ok(o),
            Err(e) => e,
        };
        // Only an image the registry does not have (or a registry out of reach) is looked
        // for locally: a refused login or a damaged blob stays a failure.
        let not_served = registry::error::RegistryError::find(&err)
            .is_some_and(registry::error::RegistryError::not_served);
        let Some(engine) = engine.filter(|_| not_served) else {
            return Err(err);
        };
        if engine.config_digest(r, self.platform).is_err() {
            return Err(anyhow::anyhow!(
                "{err:#}; and {} does not hold it either",
                engine.kind
            ));
        }
        progress(
            n,
            self.total,
            r,
            &format!(
                "not exported from the registry ({err:#}); {} holds it locally, so it is saved \
                 with {} (its digest is that engine's, not a registry's)",
                engine.kind, engine.kind
            ),
        );
        self.export_local(n, r, engine, false)
    }

    /// The digest images.json holds for the registry engine's `file`, when it holds the
    /// platforms asked for.
    fn cached_digest(&self, file: &str) -> Option<String> {
        let state = crate::sync::lock(&self.bundle.state);
        let (index, _) = &*state;
        index.archive(file).and_then(|a| {
            let have: Vec<&str> = a
                .images
                .iter()
                .filter_map(|i| i.platform.as_deref())
                .collect();
            let all = self
                .platforms
                .iter()
                .all(|p| have.contains(&p.to_string().as_str()));
            a.source.as_ref().filter(|_| all).map(|s| s.digest.clone())
        })
    }

    fn export_registry(
        &self,
        n: usize,
        r: &Reference,
        reg: &registry::Registry,
    ) -> Result<Outcome> {
        let file = format!("{}.tar", r.file_stem());
        if let Some(digest) = self.cached_digest(&file).filter(|_| !self.no_cache) {
            progress(n, self.total, r, "checking the registry");
            // The file is looked at only when the registry still serves the digest it holds:
            // a changed image is written again anyway.
            if reg.resolve(r)? == digest {
                if let Some(how) = self.intact(&file)? {
                    progress(
                        n,
                        self.total,
                        r,
                        &format!("skipped (up to date: {file}{how})"),
                    );
                    return Ok(Outcome::UpToDate);
                }
            }
        }
        progress(n, self.total, r, "fetching from the registry");
        let started = Instant::now();
        let dest = self.bundle.dir.join(&file);
        let (temp, out) = TempFile::create(&dest)?;
        let mut writer = registry::layout::Hashing::new(out);
        let exported = reg.export(r, &mut writer, &|b| self.meter.add(b))?;
        let (size, sha256) = (writer.count, writer.hex());
        temp.sync(writer.inner)?;
        let stamp = temp.put_in_place()?;
        let mut record = registry_record(r, &file, size, sha256, &exported);
        record.stamp = stamp;
        self.bundle.record(record)?;
        let secs = started.elapsed().as_secs_f64();
        progress(
            n,
            self.total,
            r,
            &format!(
                "written {file} ({}, {} downloaded at {}, {} from the cache, in {secs:.1} s; \
                 digest {}, from {})",
                human_bytes(size),
                human_bytes(exported.downloaded),
                crate::units::human_rate(exported.downloaded, secs.max(0.001)),
                human_bytes(exported.cached),
                exported.digest,
                exported.source
            ),
        );
        Ok(Outcome::Written { bytes: size })
    }

    /// Pull (docker, podman) unless told not to, and whether the bundle's `file` still holds
    /// the image the engine has now.
    fn local_up_to_date(
        &self,
        n: usize,
        r: &Reference,
        engine: &Engine,
        pull: bool,
        file: &str,
    ) -> Result<bool> {
        let cached = if self.no_cache {
            None
        } else {
            self.cached_config(file)?
        };
        if engine.has_local_store() && pull {
            progress(n, self.total, r, "pulling");
            engine.pull(r, self.platform)?;
        }
        let Some((config, how)) = &cached else {
            return Ok(false);
        };
        if !engine.has_local_store() {
            progress(n, self.total, r, "checking the registry");
        }
        let current = engine.config_digest(r, self.platform)?;
        if &current != config {
            return Ok(false);
        }
        progress(
            n,
            self.total,
            r,
            &format!("skipped (up to date: {file}{how})"),
        );
        Ok(true)
    }

    fn export_local(
        &self,
        n: usize,
        r: &Reference,
        engine: &Engine,
        pull: bool,
    ) -> Result<Outcome> {
        let file = format!("{}{}", r.file_stem(), self.ext);
        if self.local_up_to_date(n, r, engine, pull, &file)? {
            return Ok(Outcome::UpToDate);
        }
        progress(n, self.total, r, "saving");
        let started = Instant::now();
        let dest = self.bundle.dir.join(&file);
        let (temp, mut writer) = TempFile::create(&dest)?;
        let mut saved = engine.save(r, self.platform, self.scratch)?;
        let result =
            compress::write_archive(&mut saved, &mut writer, self.compression, self.threads);
        // The engine's own message explains a failure better than a broken stream does.
        let finished = saved.finish();
        let written = match (result, finished) {
            (_, Err(e)) => return Err(e),
            (Err(e), Ok(())) => return Err(e),
            (Ok(w), Ok(())) => w,
        };
        temp.sync(writer)?;
        let images = self.bundle_images(n, r, &written.info)?;
        let stamp = temp.put_in_place()?;
        self.bundle.record(BundleArchive {
            file: file.clone(),
            size: written.size,
            sha256: written.sha256,
            compression: self.compression,
            format: written.info.format,
            images,
            source: None,
            stamp,
        })?;
        let secs = started.elapsed().as_secs_f64();
        progress(
            n,
            self.total,
            r,
            &format!(
                "written {file} ({} from {} of tar, in {secs:.1} s)",
                human_bytes(written.size),
                human_bytes(written.info.tar_size)
            ),
        );
        Ok(Outcome::Written {
            bytes: written.size,
        })
    }

    /// The bundle's record of what the archive holds, for the exported platform.
    fn bundle_images(
        &self,
        n: usize,
        r: &Reference,
        info: &ArchiveInfo,
    ) -> Result<Vec<BundleImage>> {
        let mut images = Vec::new();
        for image in &info.images {
            let chosen = image
                .for_platform(self.platform)
                .or_else(|| image.platforms.iter().find(|p| p.complete));
            let Some(p) = chosen else { continue };
            let Some(config) = &p.config_digest else {
                continue;
            };
            if let Some(pl) = p.platform.as_ref().filter(|pl| !pl.runs_on(self.platform)) {
                anyhow::bail!(
                    "{r} has no image for {} (the engine saved an image for {pl})",
                    self.platform
                );
            }
            let wanted = r.to_string();
            if !image.names.contains(&wanted) {
                // docker-archive has no place for a digest reference: such an image is
                // imported by its config digest and is found by it, but not by that name.
                progress(
                    n,
                    self.total,
                    r,
                    &format!(
                        "warning: the archive names the image {} rather than {wanted}",
                        image.display_names()
                    ),
                );
            }
            images.push(BundleImage {
                names: image.names.clone(),
                config_digest: config.clone(),
                manifest_digest: p.manifest_digest.clone(),
                platform: p.platform.as_ref().map(ToString::to_string),
                layers: Vec::new(),
            });
        }
        if images.is_empty() {
            anyhow::bail!("the saved archive holds no complete image");
        }
        Ok(images)
    }
}

/// images.json's record of an archive the registry engine wrote.
fn registry_record(
    r: &Reference,
    file: &str,
    size: u64,
    sha256: String,
    e: &registry::Exported,
) -> BundleArchive {
    let source = BundleSource {
        reference: r.to_string(),
        repository: r.repository(),
        tag: r.tag.clone(),
        digest: e.digest.clone(),
        index_digest: e.index_digest.clone(),
        refs: e.names.clone(),
    };
    BundleArchive {
        file: file.to_string(),
        size,
        sha256,
        compression: Compression::None,
        format: crate::archive::Format::Oci,
        images: e
            .images
            .iter()
            .map(|p| BundleImage {
                // Every name the archive gives this image: the tag and the digest names a pod
                // may use, each imported, labelled, verified and pruned like the tag.
                names: source.names_for(Some(&p.manifest_digest)),
                config_digest: p.config_digest.clone(),
                manifest_digest: Some(p.manifest_digest.clone()),
                platform: p.platform.as_ref().map(ToString::to_string),
                layers: p
                    .layers
                    .iter()
                    .map(|(digest, size)| BundleLayer {
                        digest: digest.clone(),
                        size: *size,
                    })
                    .collect(),
            })
            .collect(),
        source: Some(source),
        stamp: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn images_json_records_every_name_the_archive_gives_each_image() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let r = Reference::parse("reg.example.com/shop/web:1").unwrap();
        let repo = "reg.example.com/shop/web";
        let platform = |arch: &str, m: char, c: char| registry::PlatformExport {
            platform: crate::archive::Platform::parse(&format!("linux/{arch}")),
            manifest_digest: d(m),
            config_digest: d(c),
            layers: Vec::new(),
        };
        // The names index.json gives (registry::names_of): tag, index, each manifest.
        let names = vec![
            format!("{repo}:1"),
            format!("{repo}@{}", d('a')),
            format!("{repo}@{}", d('b')),
            format!("{repo}@{}", d('c')),
        ];
        let e = registry::Exported {
            digest: d('a'),
            index_digest: Some(d('a')),
            images: vec![platform("amd64", 'b', 'd'), platform("arm64", 'c', 'e')],
            names: names.clone(),
            downloaded: 0,
            cached: 0,
            source: "http://reg.example.com".into(),
        };
        let record = registry_record(&r, "web.tar", 1, "0".repeat(64), &e);
        assert_eq!(record.images[0].names, names[..3]);
        assert_eq!(
            record.images[1].names,
            [names[0].clone(), names[1].clone(), names[3].clone()]
        );
    }

    #[test]
    fn leftovers_of_a_dead_run_are_removed_and_live_or_recent_ones_kept() {
        let dir = std::env::temp_dir().join(format!("oi-stale-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // pid_max on Linux is at most 4194304, so this process cannot exist.
        let dead = 4_194_305u32;
        let old = SystemTime::now() - Duration::from_secs(3600);
        let make = |name: &str, age: SystemTime| {
            let f = File::create(dir.join(name)).unwrap();
            f.set_modified(age).unwrap();
        };
        make(&format!(".a.tar.gz.{dead}.tmp"), old);
        make(&format!(".b.tar.gz.{dead}.tmp"), SystemTime::now());
        make(&format!(".c.tar.gz.{}.tmp", std::process::id()), old);
        make(".notes.tmp", old);
        make("a.tar.gz", old);
        let scratch = dir.join(format!("{SCRATCH_PREFIX}{dead}"));
        fs::create_dir_all(&scratch).unwrap();
        File::open(&scratch).unwrap().set_modified(old).unwrap();

        remove_stale_temps(&dir);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            format!(".b.tar.gz.{dead}.tmp"),
            format!(".c.tar.gz.{}.tmp", std::process::id()),
            ".notes.tmp".to_string(),
            "a.tar.gz".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        fs::remove_dir_all(&dir).unwrap();
    }
}
