//! `push`: the bundle into the site's own registry, every image under
//! `REGISTRY/PREFIX/<upstream registry>/<repository>` with its tags and digests (`naming`),
//! every index, manifest, config and layer the bundle's bytes, so every digest holds.
//!
//! The copy loop with the bundle's OCI layouts (directories and packs) and archives
//! (`archive`, `archive_send`) as the source and a registry as the target: plan (each image's names, manifests and blobs, from the JSON
//! documents alone: `image`), execute (`--jobs` images at a time; what the registry has is
//! asked first and never sent: `send`), report (a line per image, a summary; failures per
//! image, the rest go on, exit 1 when any failed).

mod archive;
mod archive_send;
mod image;
mod mirror_config;
mod naming;
mod send;

pub use mirror_config::Flavour;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Result;

use crate::exit::{self, Code};
use crate::export::meter::{self, Meter};
use crate::export::registry::{auth, transport};
use crate::layout::LayoutSource;
use crate::mirror::Site;
use crate::source::Source;
use crate::units::human_bytes;
use image::Planned;
use send::{Pushed, Pusher};

/// Bytes per upload request: a cut request costs at most this much again, and each of the
/// `--jobs` images sending holds one request's bytes (8 MiB: 43 MiB peak RSS at 4 jobs, where
/// 16 MiB took 76 MiB; the time was the same, the registry's own work being most of it).
pub const CHUNK: usize = 8 << 20;

/// What `push` works with, resolved from the flags by `cli`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub images_path: PathBuf,
    /// `REGISTRY[/PREFIX]`.
    pub to: String,
    pub jobs: usize,
    pub ca_file: Option<PathBuf>,
    pub insecure: Vec<String>,
    /// `--username`; the password comes from stdin.
    pub username: Option<String>,
    /// Bytes per upload request.
    pub chunk: usize,
    /// `--print-mirror-config`: printed on stdout after the push.
    pub mirror_config: Option<Flavour>,
}

/// How one image went.
enum Outcome {
    Present,
    /// Notes, and what was sent.
    Sent(Vec<String>, String),
    Failed(String),
}

fn transport_of(settings: &Settings) -> Result<transport::Transport> {
    let explicit = match &settings.username {
        Some(user) => Some(crate::export::password_from_stdin(user)?),
        None => None,
    };
    transport::Transport::new(transport::Options {
        ca_file: settings.ca_file.clone(),
        insecure: settings.insecure.clone(),
        keychain: auth::Keychain {
            explicit,
            config: auth::docker_config_path(),
        },
    })
    .map_err(|e| exit::usage(format!("{e:#}")))
}

/// Every image of the bundle, planned; what cannot be planned fails by name.
fn plan(settings: &Settings, site: &Site) -> Result<(Vec<Planned>, Vec<String>)> {
    if !settings.images_path.is_dir() {
        return Err(exit::usage(format!(
            "--images-path {}: no such directory",
            settings.images_path.display()
        )));
    }
    let source = LayoutSource::find(&settings.images_path);
    let mut failed: Vec<String> = source
        .refused()
        .iter()
        .map(|r| format!("{}: {}", r.name, r.reason))
        .collect();
    let (mut planned, archive_failed, archives) =
        archive::plan_all(&settings.images_path, &source, site, settings.jobs)?;
    failed.extend(archive_failed);
    if source.units().is_empty() && failed.is_empty() && archives == 0 {
        return Err(exit::usage(format!(
            "no OCI image layout and no archives (.tar, .tar.gz, .tgz, .tar.zst) in {}: push \
             reads the bundle export writes (a directory, the file of --pack, or archives)",
            settings.images_path.display()
        )));
    }
    for unit in source.units() {
        let p = source
            .image_blobs(unit)
            .and_then(|(entries, graph)| image::plan(&unit.name, &entries, graph, site));
        match p {
            Ok(p) => planned.push(p),
            Err(e) => failed.push(format!("{}: {e:#}", unit.name)),
        }
    }
    // Signatures, attestations, SBOMs and referrers, after the images they are about, under
    // the tags they had upstream.
    for a in source.artifacts() {
        let p = a
            .blobs(crate::archive::Limits::default())
            .and_then(|(entries, graph)| image::plan(&a.name, &entries, graph, site));
        match p {
            Ok(mut p) => {
                p.name = format!("{} ({})", p.name, a.label());
                p.artifact = true;
                planned.push(p);
            }
            Err(e) => failed.push(format!("{} ({}): {e:#}", a.name, a.label())),
        }
    }
    Ok((planned, failed))
}

pub fn run(settings: &Settings) -> Result<Code> {
    let started = Instant::now();
    let site = Site::parse(&settings.to, false)?;
    let (images, mut failed) = plan(settings, &site)?;
    let transport = transport_of(settings)?;
    let host = transport
        .host(&site.host, &site.host)
        .map_err(|e| exit::usage(format!("{e:#}")))?;
    let artifacts = images.iter().filter(|i| i.artifact).count();
    let and = match artifacts {
        0 => String::new(),
        n => format!(" and {n} signature(s), attestation(s), SBOM(s) or referrers"),
    };
    eprintln!(
        "offline-images: pushing {} image(s){and} from {} to {}",
        images.len() - artifacts,
        settings.images_path.display(),
        settings.to
    );
    let meter = Meter::new_for("uploading");
    let pusher = Pusher::new(&transport, host, settings.chunk, &meter);
    let next = AtomicUsize::new(0);
    let outcomes: Vec<std::sync::Mutex<Option<Outcome>>> =
        images.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        s.spawn(|| meter.draw());
        let workers: Vec<_> = (0..settings.jobs.clamp(1, images.len().max(1)))
            .map(|_| {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(image) = images.get(i) else { break };
                    meter.begin();
                    let outcome = push_one(&pusher, image, i + 1, images.len());
                    meter.end();
                    *crate::sync::lock(&outcomes[i]) = Some(outcome);
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        meter.finish();
    });
    let outcomes: Vec<Option<Outcome>> =
        outcomes.into_iter().map(crate::sync::into_inner).collect();
    let code = report(&images, outcomes, &mut failed, &pusher, started);
    if let Some(flavour) = settings.mirror_config {
        let upstreams = images
            .iter()
            .flat_map(|i| i.upstreams.iter().cloned())
            .collect();
        let mirror = mirror_config::Mirror {
            base: &pusher.host.base,
            site: &site,
            ca_file: settings.ca_file.as_deref(),
        };
        print!("{}", mirror.render(flavour, &upstreams));
    }
    Ok(code)
}

/// One image, its line logged.
fn push_one(pusher: &Pusher, image: &Planned, n: usize, total: usize) -> Outcome {
    let targets: Vec<String> = image.targets.keys().cloned().collect();
    let outcome = match pusher.push(image) {
        Ok(Pushed::Present) => Outcome::Present,
        Ok(Pushed::Sent(c)) => Outcome::Sent(
            c.notes.take(),
            format!(
                "{} blob(s) sent ({}), {} mounted, {} present, {} manifest(s) put",
                c.get(&c.sent),
                human_bytes(c.get(&c.sent_bytes)),
                c.get(&c.mounted),
                c.get(&c.present),
                c.get(&c.manifests),
            ),
        ),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    };
    let planned: String = image.notes.iter().map(|n| format!("; NOTE: {n}")).collect();
    let event = match &outcome {
        Outcome::Present => format!("present, nothing sent{planned}"),
        Outcome::Sent(notes, what) => {
            let notes: String = notes.iter().map(|n| format!("; NOTE: {n}")).collect();
            format!("pushed to {}: {what}{notes}{planned}", targets.join(", "))
        }
        Outcome::Failed(why) => format!("FAILED: {why}"),
    };
    eprintln!(
        "{}[{n}/{total}] {}: {event}",
        meter::line_start(),
        image.name
    );
    outcome
}

/// The summary on stderr, and the exit code: 1 when any image failed.
fn report(
    images: &[Planned],
    outcomes: Vec<Option<Outcome>>,
    failed: &mut Vec<String>,
    pusher: &Pusher,
    started: Instant,
) -> Code {
    let (mut pushed, mut present) = (0, 0);
    for (image, o) in images.iter().zip(outcomes) {
        match o {
            Some(Outcome::Sent(..)) => pushed += 1,
            Some(Outcome::Present) => present += 1,
            Some(Outcome::Failed(why)) => failed.push(format!("{}: {why}", image.name)),
            None => failed.push(format!("{}: not pushed", image.name)),
        }
    }
    let t = &pusher.totals;
    let secs = started.elapsed().as_secs_f64();
    let bytes = t.get(&t.sent_bytes);
    eprintln!(
        "offline-images: pushed {pushed} image(s), {present} already present, {} failed; \
         {} blob(s) sent ({}, {}/s), {} mounted, {} present; {} manifest(s) put; in {secs:.1} s",
        failed.len(),
        t.get(&t.sent),
        human_bytes(bytes),
        human_bytes((bytes as f64 / secs.max(0.001)) as u64),
        t.get(&t.mounted),
        t.get(&t.present),
        t.get(&t.manifests),
    );
    let artifacts = images.iter().filter(|i| i.artifact).count();
    if artifacts > 0 {
        eprintln!(
            "offline-images: {artifacts} of these are signatures, attestations, SBOMs or \
             referrers (not images), pushed under the tags they had upstream"
        );
    }
    for f in failed.iter() {
        eprintln!("offline-images: failed: {f}");
    }
    if failed.is_empty() {
        Code::Success
    } else {
        Code::Failure
    }
}
