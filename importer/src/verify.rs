//! `offline-images verify`: is every image of every archive present in the runtime, under its
//! name and with its config digest? Results on stdout, one line per image; exit 1 if not.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::archive::check_images_path;
use crate::archive::{self, ArchiveInfo, Found, Limits, Platform};
use crate::bundle::{self, BundleIndex};
use crate::exit::Code;
use crate::layout::LayoutSource;
use crate::report::{self, prose, shown, summary_names};
use crate::runtime::{detect, Present};
use crate::source::Source;

#[derive(Serialize)]
struct Line<'a> {
    file: &'a str,
    /// `present`, `missing`, or `unreadable` (the archive could not be read).
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// One image an archive should have put in the runtime.
struct Expected {
    names: Vec<String>,
    /// None when the archive has no image for the node's platform (`absent` says so).
    config_digest: Option<String>,
    /// Its manifest and index digests, for a runtime that knows no config digests.
    digests: Vec<String>,
    absent: Option<String>,
}

/// What `verify` works with, resolved from the flags and environment by the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The directory holding the archives.
    pub images_path: PathBuf,
    /// Which runtime, on which socket, and how it is reached.
    pub runtime: detect::Config,
    /// Text or JSON lines on stdout.
    pub log_format: report::Format,
    /// Check the bundle alone, with no runtime (`crate::bundle_check`).
    pub bundle_only: bool,
    /// `--verify-key`: the bundle's signature checked first (`signing::check_path`).
    pub verify_keys: Vec<PathBuf>,
}

pub fn run(args: &Settings) -> Result<Code> {
    crate::signing::check_path(&args.images_path, &args.verify_keys, args.log_format)?;
    if args.bundle_only {
        return crate::bundle_check::run(&args.images_path, args.log_format);
    }
    let root = &args.images_path;
    check_images_path(root)?;
    let (found, rejected) = archive::discover(root)?;
    let index = bundle::read_index(root).unwrap_or_else(|e| {
        eprintln!(
            "offline-images: warning: {}; reading the archives themselves instead",
            prose(&format!("{e:#}"))
        );
        None
    });
    let detected = detect::detect(&args.runtime)?;
    eprintln!(
        "offline-images: verifying against {}",
        detected.runtime.describe()
    );
    crate::runtime::check_architecture(detected.runtime.as_ref())?;
    let runtime = InRuntime {
        present: detected.runtime.present()?,
        targets: detected.runtime.target_digests()?,
        digest_names: detected.runtime.lists_digest_names(),
    };
    let platform = Platform::host();

    let stdout = io::stdout();
    let mut out = Out {
        format: args.log_format,
        w: io::BufWriter::new(stdout.lock()),
        tally: Tally::default(),
        tags: Vec::new(),
    };
    for r in &rejected {
        let file = bundle::relative_name(root, &r.path);
        out.unreadable(&file, r.reason.clone())?;
    }
    // The images of the OCI layouts beside the archives (and of packs), each read as an
    // archive is.
    let layouts = LayoutSource::find(root);
    let found: Vec<_> = found
        .into_iter()
        .filter(|f| !layouts.holds(&f.path))
        .collect();
    for f in &found {
        let file = bundle::relative_name(root, &f.path);
        match expected_images(index.as_ref(), &file, f, &platform) {
            Ok(expected) => {
                for img in &expected {
                    check_image(&mut out, &file, img, &runtime)?;
                }
            }
            Err(e) => out.unreadable(&file, format!("{e:#}"))?,
        }
    }
    for r in layouts.refused() {
        out.unreadable(&r.name, r.reason.clone())?;
    }
    for unit in layouts.units() {
        match layouts.inspect(unit) {
            Ok(info) => {
                for img in &expected_of(&info, &platform) {
                    check_image(&mut out, &unit.name, img, &runtime)?;
                }
            }
            Err(e) => out.unreadable(&unit.name, format!("{e:#}"))?,
        }
    }
    out.w.flush()?;
    if detected.runtime.kind() == "podman" {
        crate::runtime::podman::pinned::report(args.runtime.host_root.as_deref(), &out.tags);
    }
    Ok(report(&out.tally, found.len() + layouts.units().len()))
}

/// What the runtime has: every named image, and (Docker's containerd store) the manifest or
/// index digest each name points to.
struct InRuntime {
    present: Vec<Present>,
    targets: BTreeMap<String, String>,
    /// Whether the runtime lists digest names (`Runtime::lists_digest_names`): where it does
    /// not, an image is looked for under its other names, or by its config.
    digest_names: bool,
}

/// Counted per image (one image may have several names); the names missing are listed.
#[derive(Default)]
struct Tally {
    /// Images present under every name.
    ok: usize,
    /// Images absent under one name or more.
    missing_images: usize,
    /// Every name (or config digest) missing.
    missing: Vec<String>,
    /// Names checked.
    names: usize,
    unreadable: usize,
}

/// Result lines on stdout, text or JSON, counted as they are written.
struct Out<W: Write> {
    format: report::Format,
    w: W,
    tally: Tally,
    /// Every tag name checked (no digest names), for CRI-O's pinned_images.
    tags: Vec<String>,
}

impl<W: Write> Out<W> {
    fn line(&mut self, line: &Line<'_>) -> io::Result<()> {
        let out = &mut self.w;
        match self.format {
            report::Format::Json => {
                serde_json::to_writer(&mut *out, line)?;
                writeln!(out)
            }
            // Every field comes from the bundle: escaped and bounded as in import's log.
            report::Format::Text => {
                write!(out, "{:<10} {}", line.status, shown(line.file))?;
                if let Some(n) = line.name {
                    write!(out, "  {}", shown(n))?;
                }
                if let Some(c) = line.config_digest {
                    write!(out, "  config {}", shown(c))?;
                }
                if let Some(r) = &line.reason {
                    write!(out, ": {}", prose(r))?;
                }
                writeln!(out)
            }
        }
    }

    fn unreadable(&mut self, file: &str, reason: String) -> io::Result<()> {
        self.tally.unreadable += 1;
        self.line(&Line {
            file,
            status: "unreadable",
            name: None,
            config_digest: None,
            reason: Some(reason),
        })
    }
}

/// The images an archive should have put in the runtime for `platform`, each with every
/// name it has (the tag and the digest names alike): from images.json when it describes this
/// file (same size), else from reading the archive.
fn expected_images(
    index: Option<&BundleIndex>,
    file: &str,
    f: &Found,
    platform: &Platform,
) -> Result<Vec<Expected>> {
    if let Some(entry) = index
        .and_then(|i| i.archive(file))
        .filter(|a| a.size == f.size)
    {
        let mine: Vec<Expected> = entry
            .images
            .iter()
            .filter(|i| crate::import::platform_matches(i.platform.as_deref(), platform))
            .map(|i| Expected {
                names: i.names.clone(),
                config_digest: Some(i.config_digest.clone()),
                digests: i.manifest_digest.iter().cloned().collect(),
                absent: None,
            })
            .collect();
        // An archive with no image for this node is one missing image, not none.
        return Ok(match (mine.is_empty(), entry.images.first()) {
            (true, Some(other)) => vec![Expected {
                names: other.names.clone(),
                config_digest: None,
                digests: Vec::new(),
                absent: Some(format!(
                    "{} has no complete image for this node's platform {platform} in this archive",
                    other.names.first().map_or("the image", String::as_str)
                )),
            }],
            _ => mine,
        });
    }
    let info = archive::inspect_path(&f.path, Limits::default())?;
    Ok(expected_of(&info, platform))
}

/// The images an archive read holds, for `platform`.
fn expected_of(info: &ArchiveInfo, platform: &Platform) -> Vec<Expected> {
    info.images
        .iter()
        .map(|i| {
            let p = i.for_platform(platform);
            Expected {
                names: i.names.clone(),
                config_digest: p.and_then(|p| p.config_digest.clone()),
                digests: [i.digest.clone(), p.and_then(|p| p.manifest_digest.clone())]
                    .into_iter()
                    .flatten()
                    .collect(),
                absent: p.is_none().then(|| i.not_for(platform)),
            }
        })
        .collect()
}

/// One line per name of `img` (one line when it has none): present or missing, and why.
fn check_image<W: Write>(
    out: &mut Out<W>,
    file: &str,
    img: &Expected,
    rt: &InRuntime,
) -> io::Result<()> {
    let Some(config) = img.config_digest.as_deref() else {
        out.tally.missing_images += 1;
        out.tally.missing.push(img.names.join(", "));
        return out.line(&Line {
            file,
            status: "missing",
            name: img.names.first().map(String::as_str),
            config_digest: None,
            reason: img.absent.clone(),
        });
    };
    let mut all_here = true;
    out.tags
        .extend(img.names.iter().filter(|n| !n.contains('@')).cloned());
    let findable: Vec<&String> = img
        .names
        .iter()
        .filter(|n| rt.digest_names || !n.contains('@'))
        .collect();
    let names: Vec<Option<&str>> = if findable.is_empty() {
        vec![None]
    } else {
        findable.into_iter().map(|n| Some(n.as_str())).collect()
    };
    for name in names {
        let same = |p: &Present| match &p.config_digest {
            Some(c) => c == config,
            // Docker's containerd image store knows the manifest, not the config.
            None => rt
                .targets
                .get(&p.name)
                .is_some_and(|t| img.digests.contains(t)),
        };
        let here = rt
            .present
            .iter()
            .any(|p| same(p) && name.is_none_or(|n| p.name == n));
        let reason = (!here).then(|| match name {
            Some(n) => match rt.present.iter().find(|p| p.name == n) {
                Some(p) => format!(
                    "{n} is present with config {}, not {config}",
                    p.config_digest.as_deref().unwrap_or("unknown")
                ),
                None => format!("{n} is not in the runtime"),
            },
            None => "no image with this config is in the runtime".to_string(),
        });
        out.tally.names += 1;
        if !here {
            all_here = false;
            out.tally.missing.push(name.unwrap_or(config).to_string());
        }
        out.line(&Line {
            file,
            status: if here { "present" } else { "missing" },
            name,
            config_digest: Some(config),
            reason,
        })?;
    }
    if all_here {
        out.tally.ok += 1;
    } else {
        out.tally.missing_images += 1;
    }
    Ok(())
}

/// The closing line on stderr, and the exit code.
fn report(t: &Tally, archives: usize) -> Code {
    if t.missing.is_empty() && t.unreadable == 0 {
        eprintln!(
            "offline-images: all {} image(s) of {archives} archive(s) are present, under {} \
             name(s)",
            t.ok, t.names
        );
        return Code::Success;
    }
    let mut msg = format!(
        "offline-images: {} image(s) present, {} missing",
        t.ok, t.missing_images
    );
    if !t.missing.is_empty() {
        let missing = t.missing.iter().map(String::as_str);
        msg.push_str(&format!(": {}", summary_names(missing, "image", "missing")));
    }
    if t.unreadable > 0 {
        msg.push_str(&format!("; {} archive(s) could not be read", t.unreadable));
    }
    eprintln!("{msg}");
    Code::Failure
}
