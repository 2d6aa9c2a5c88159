//! `offline-images export`: collect a release's image references, fetch each image from its
//! registry (or save it with the host's docker, podman or skopeo), and write the bundle: one
//! archive per image, `SHA256SUMS` and `images.json`; or, with `--format layout`, one OCI
//! image layout holding every image's blobs once (`layout`).
//!
//! Shaped as plan, execute, report: [`Settings`] are the flags resolved once by
//! `cli::ExportArgs::settings` (nothing here knows the command line's types); `inputs`
//! collects the references; `exporter` exports each image, `--jobs` at a time; `write` owns
//! the bundle being written; `run` ties them together and prints the closing lines.
//!
//! Archive names: `Reference::file_stem()` plus the extension, e.g.
//! `docker.io/library/nginx:1.27` becomes `docker.io_library_nginx_1.27.tar` (the registry
//! engine), or `.tar.gz` (gzip), `.tar.zst` (zstd) or `.tar` (none) from the other engines.
//! Each archive is written to a hidden temp file in the bundle directory and renamed only
//! once complete and on disk, so a failure leaves no partial archive behind; `SHA256SUMS` and
//! `images.json` are rewritten atomically after each archive, merged with what an earlier run
//! wrote. With `--pack FILE`, the committed layout bundle is then packed into FILE (`pack`).

mod chart;
mod collect;
mod compress;
mod engine;
mod exporter;
mod indirect;
mod inputs;
mod layout;
pub(crate) mod meter;
mod pack;
pub mod registry;
mod settings;
mod signatures;
mod since;
mod values;
mod write;
pub(crate) mod yaml;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use crate::archive::human_bytes;
use crate::bundle;
use crate::exit::{self, Code};
use crate::reference::Reference;
use engine::Engine;
use exporter::{Exporter, Outcome};
use write::{Bundle, SCRATCH_PREFIX};

pub use engine::{Choice, Kind};
use settings::extension;
pub use settings::{
    insecure_hosts, pack_to, platforms, BundleFormat, CertificatePolicy, Chart, ImporterBinary,
    Inputs, Settings,
};

/// The docker, podman or skopeo engine an export saves images with: the one `--engine` names,
/// found before anything is fetched; with `auto`, the first local engine with a store (docker,
/// podman), looked for only when the registry does not serve an image, so that an export the
/// registry serves whole starts no engine (each answers its version in 30 to 100 ms).
pub(super) struct LocalEngine {
    insecure: Vec<String>,
    found: std::sync::OnceLock<Option<Engine>>,
}

impl LocalEngine {
    fn new(settings: &Settings) -> Result<LocalEngine> {
        let local = LocalEngine {
            insecure: settings.insecure.clone(),
            found: std::sync::OnceLock::new(),
        };
        match settings.engine {
            Choice::Auto => {}
            Choice::Registry => {
                let _ = local.found.set(None);
            }
            Choice::Tool(kind) => {
                let mut engine = Engine::detect(Some(kind))?;
                engine.insecure = local.insecure.clone();
                eprintln!("offline-images: using {}", engine.describe());
                let _ = local.found.set(Some(engine));
            }
        }
        Ok(local)
    }

    /// The engine; with `auto`, looked for (and named in the log) the first time it is asked.
    pub(super) fn get(&self) -> Option<&Engine> {
        self.found
            .get_or_init(|| {
                let mut engine = Engine::detect(None).ok().filter(Engine::has_local_store)?;
                engine.insecure = self.insecure.clone();
                eprintln!(
                    "{}offline-images: images the registry does not serve are looked for in {}",
                    meter::line_start(),
                    engine.describe()
                );
                Some(engine)
            })
            .as_ref()
    }
}

/// The registry engine, configured from the flags; `scratch` holds the blob cache of a
/// `--no-cache` run.
fn registry_engine(settings: &Settings, scratch: &Path) -> Result<registry::Registry> {
    let mirrors = mirrors(&settings.registry_mirrors)?;
    let explicit = match &settings.username {
        Some(user) => Some(password_from_stdin(user)?),
        None => None,
    };
    let cache_dir = if settings.no_cache {
        scratch.join("blobs")
    } else {
        match settings
            .cache_dir
            .clone()
            .or_else(registry::cache::default_dir)
        {
            Some(d) => d,
            None => scratch.join("blobs"),
        }
    };
    let cache = registry::cache::Cache::open(&cache_dir, settings.jobs)
        .map_err(|e| exit::usage(format!("{e:#}")))?;
    let options = registry::transport::Options {
        ca_file: settings.ca_file.clone(),
        insecure: settings.insecure.clone(),
        keychain: registry::auth::Keychain {
            explicit,
            config: settings
                .docker_config
                .clone()
                .or_else(registry::auth::docker_config_path),
        },
    };
    let reg = registry::Registry::new(options, mirrors, cache, settings.platforms.clone())
        .map_err(|e| exit::usage(format!("{e:#}")))?;
    eprintln!(
        "offline-images: using the registry engine (blob cache {})",
        if settings.no_cache {
            "off".to_string()
        } else {
            cache_dir.display().to_string()
        }
    );
    Ok(reg)
}

/// `--registry-mirror SRC=MIRROR` as (source host, mirror host) pairs.
fn mirrors(given: &[String]) -> Result<Vec<(String, String)>> {
    let mut mirrors = Vec::new();
    for m in given {
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
    Ok(mirrors)
}

/// The credential of `--username USER --password-stdin`: the password is stdin's first line.
pub(crate) fn password_from_stdin(user: &str) -> Result<registry::auth::Credential> {
    let mut line = String::new();
    io::stdin()
        .read_line(&mut line)
        .map_err(|e| exit::usage(format!("--password-stdin: cannot read stdin: {e}")))?;
    let secret = line.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(exit::usage("--password-stdin: stdin held no password"));
    }
    Ok(registry::auth::Credential {
        username: user.to_string(),
        secret,
    })
}

pub fn run(settings: &Settings) -> Result<Code> {
    let platforms = &settings.platforms;
    let as_layout = settings.format == BundleFormat::Layout;
    check_format(settings)?;
    let verifier = signatures::verifier(settings)?;
    if let Some(to) = &settings.pack {
        pack::check_place(&settings.output, to)?;
    }
    let signer = signer(settings)?;
    let (refs, problems) = references(settings)?;
    if settings.dry_run {
        return print_references(&refs, problems);
    }
    if refs.is_empty() {
        return nothing_to_export(settings, problems);
    }
    // The importer binary for the chart's bootstrap mode: checked before anything is pulled.
    let importer_binaries = write::importer_binaries(&settings.importer_binary)?;
    let platform_list: Vec<String> = platforms.iter().map(ToString::to_string).collect();
    eprintln!(
        "offline-images: {} image(s) to export to {}, platform {}:",
        refs.len(),
        settings.output.display(),
        platform_list.join(", ")
    );
    for r in &refs {
        eprintln!("  {r}");
    }
    let engine = LocalEngine::new(settings)?;
    let dir = &settings.output;
    layout::refuse_mixed(dir, settings.format)?;
    let shared = Bundle::open(dir, &importer_binaries)?;
    let since = since::Since::asked(settings.since.as_deref(), dir)?;
    let layout = as_layout
        .then(|| layout::Layout::open(dir, since))
        .transpose()?;
    let scratch = dir.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
    write::remove_stale_temps(dir);
    let registry = if settings.uses_registry() {
        Some(registry_engine(settings, &scratch)?)
    } else {
        None
    };
    let jobs = settings.jobs.min(refs.len()).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ctx = Exporter {
        engine: &engine,
        registry: registry.as_ref(),
        platform: &platforms[0],
        platforms,
        bundle: &shared,
        layout: layout.as_ref(),
        scratch: &scratch,
        ext: extension(settings.compression),
        compression: settings.compression,
        no_cache: settings.no_cache,
        threads: (cores / jobs).max(1),
        total: refs.len(),
        meter: meter::Meter::new(),
        signatures: !settings.no_signatures,
        verifier: verifier.as_ref(),
    };
    let started = Instant::now();
    let outcomes = ctx.export_all(&refs, jobs);
    let _ = fs::remove_dir_all(&scratch);
    shared.binaries_placed()?;
    if let Some(layout) = &layout {
        layout
            .commit(&refs, settings.keep_unused)?
            .log(dir, settings.keep_unused);
    }
    let signed = match &signer {
        Some(signer) => sign(signer, dir)?,
        None => false,
    };
    if let (Some(_), Some(to)) = (&layout, &settings.pack) {
        pack::pack(dir, to, signed)?;
    }
    Ok(report(&refs, outcomes, problems, started, dir))
}

/// `--sign-key`: the bundle signed once it is written (and before it is packed: the pack
/// carries the signature); a run that wrote no images.json says so instead. Whether it was
/// signed.
fn sign(signer: &crate::signing::Signer, dir: &std::path::Path) -> Result<bool> {
    if dir.join(bundle::INDEX_FILE).exists() {
        signer.sign_bundle(dir)?;
        Ok(true)
    } else {
        eprintln!(
            "offline-images: the bundle was not signed: {} holds no images.json (nothing was exported)",
            dir.display()
        );
        Ok(false)
    }
}

/// `--sign-key`: the key opened before anything is fetched.
fn signer(settings: &Settings) -> Result<Option<crate::signing::Signer>> {
    let Some(key) = &settings.sign_key else {
        return Ok(None);
    };
    crate::signing::Signer::load(key).map(Some)
}

/// `--dry-run`: the references on stdout, one a line; exit 1 when an input had a problem.
fn print_references(refs: &[Reference], problems: usize) -> Result<Code> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for r in refs {
        writeln!(out, "{r}")?;
    }
    out.flush()?;
    Ok(if problems > 0 {
        Code::Failure
    } else {
        Code::Success
    })
}

/// The references collected and logged, each once, and the number of input problems.
fn references(settings: &Settings) -> Result<(Vec<Reference>, usize)> {
    let collected = inputs::collect(settings)?;
    collected.log();
    let ext = if settings.uses_registry() {
        ".tar"
    } else {
        extension(settings.compression)
    };
    let mut problems = collected.problems.len();
    let refs = if settings.format == BundleFormat::Layout {
        each_once(collected.refs)
    } else {
        one_per_file(collected.refs, ext, &mut problems)
    };
    Ok((refs, problems))
}

/// `--format layout` and `--keep-unused` with the flags they go with, or a usage error.
fn check_format(settings: &Settings) -> Result<()> {
    let as_layout = settings.format == BundleFormat::Layout;
    if as_layout && !settings.uses_registry() {
        return Err(exit::usage(
            "--format layout takes images from registries (--engine auto or registry); the \
             docker, podman and skopeo engines write archives (--format archives)",
        ));
    }
    if settings.keep_unused && !as_layout {
        return Err(exit::usage("--keep-unused applies to --format layout"));
    }
    Ok(())
}

/// The references in order, each once (a layout has no file per image to collide on).
fn each_once(collected: impl IntoIterator<Item = Reference>) -> Vec<Reference> {
    let mut refs: Vec<Reference> = Vec::new();
    for r in collected {
        if !refs.contains(&r) {
            refs.push(r);
        }
    }
    refs
}

/// No reference to export: a usage error when no input was given; else exit 1 (the inputs
/// had errors, or named no image), or 0 with `--allow-empty` when they named none.
fn nothing_to_export(settings: &Settings, problems: usize) -> Result<Code> {
    if !settings.inputs.given() {
        return Err(exit::usage(
            "nothing to export: give IMAGE arguments, --images-file, --chart, --values or \
             --manifests",
        ));
    }
    if problems > 0 {
        eprintln!("offline-images: nothing to export: every input had errors");
        return Ok(Code::Failure);
    }
    if settings.allow_empty {
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
