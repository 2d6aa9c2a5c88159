//! `offline-images list`: what is inside archives and OCI layout directories, without
//! importing anything.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::archive::{self, human_bytes, ArchiveInfo, Limits};
use crate::exit::Code;
use crate::layout::LayoutSource;
use crate::report::{prose, shown};
use crate::source::Source;

#[derive(Serialize)]
struct JsonLine<'a> {
    file: &'a Path,
    file_size: u64,
    #[serde(flatten)]
    info: &'a ArchiveInfo,
    /// A layout image's signatures, attestations, SBOMs and referrers.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    artifacts: &'a [ArtifactLine<'a>],
}

/// One artifact a layout carries for an image, as `list` shows it under the image.
#[derive(Serialize)]
struct ArtifactLine<'a> {
    kind: &'a str,
    reference: &'a str,
    subject: &'a str,
    #[serde(skip)]
    label: &'a str,
}

/// What `list` works with, resolved from the arguments by the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Archives, or directories to search for archives.
    pub paths: Vec<PathBuf>,
    /// One JSON object per archive on stdout, in place of text.
    pub json: bool,
}

pub fn run(args: &Settings) -> Result<Code> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    for root in &args.paths {
        list_root(root, args.json, &mut out, &mut tally)?;
    }
    out.flush()?;
    if tally.failed > 0 {
        eprintln!(
            "offline-images: {} archive(s) listed, {} could not be read",
            tally.listed, tally.failed
        );
        return Ok(Code::Failure);
    }
    Ok(Code::Success)
}

/// Archives listed, and archives (or paths) that could not be read.
#[derive(Default)]
struct Tally {
    listed: usize,
    failed: usize,
}

/// The archives under `root` and the images of its OCI layouts (each listed as an archive,
/// named `DIR/index.json#REF`).
fn list_root(root: &Path, json: bool, out: &mut impl Write, tally: &mut Tally) -> Result<()> {
    let (found, rejected) = match archive::discover(root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("offline-images: {e:#}");
            tally.failed += 1;
            return Ok(());
        }
    };
    let layouts = LayoutSource::find(root);
    let found: Vec<_> = found
        .into_iter()
        .filter(|f| !layouts.holds(&f.path))
        .collect();
    let refused = rejected.iter().map(|r| (r.path.clone(), &r.reason));
    let refused = refused.chain(
        layouts
            .refused()
            .iter()
            .map(|r| (root.join(&r.name), &r.reason)),
    );
    for (path, reason) in refused {
        eprintln!("offline-images: {}: {}", shown_path(&path), prose(reason));
        tally.failed += 1;
    }
    if found.is_empty() && rejected.is_empty() && layouts.units().is_empty() {
        if layouts.refused().is_empty() {
            eprintln!(
                "offline-images: {}: no archives (.tar, .tar.gz, .tgz, .tar.zst) and no OCI layout found",
                root.display()
            );
            tally.failed += 1;
        }
        return Ok(());
    }
    for f in &found {
        let info = archive::inspect_path(&f.path, Limits::default());
        show(out, json, (&f.path, f.size), info, &[], tally)?;
    }
    for unit in layouts.units() {
        let info = layouts.inspect(unit);
        let found = layouts.artifacts_of(unit);
        let artifacts: Vec<ArtifactLine> = found
            .iter()
            .map(|a| ArtifactLine {
                kind: &a.kind,
                reference: &a.reference,
                subject: &a.subject,
                label: a.label(),
            })
            .collect();
        let file = (&root.join(&unit.name), unit.size);
        show(out, json, (file.0, file.1), info, &artifacts, tally)?;
    }
    Ok(())
}

/// One archive's listing on `out`, or why it could not be read on stderr.
fn show(
    out: &mut impl Write,
    json: bool,
    (path, size): (&Path, u64),
    info: Result<ArchiveInfo>,
    artifacts: &[ArtifactLine],
    tally: &mut Tally,
) -> Result<()> {
    match info {
        Ok(info) => {
            tally.listed += 1;
            if json {
                let line = JsonLine {
                    file: path,
                    file_size: size,
                    info: &info,
                    artifacts,
                };
                serde_json::to_writer(&mut *out, &line)?;
                writeln!(out)?;
            } else {
                write_text(out, path, size, &info)?;
                for a in artifacts {
                    writeln!(out, "  {:<19} {}", a.label, shown(a.reference))?;
                }
            }
            for w in &info.warnings {
                eprintln!(
                    "offline-images: warning: {}: {}",
                    shown_path(path),
                    prose(w)
                );
            }
        }
        Err(e) => {
            // Results so far go out before the error, so the two streams read in order.
            out.flush()?;
            eprintln!(
                "offline-images: {}: {}",
                shown_path(path),
                prose(&format!("{e:#}"))
            );
            tally.failed += 1;
        }
    }
    Ok(())
}

/// A path as the text output shows it: escaped and bounded, as every name from the bundle.
fn shown_path(path: &Path) -> String {
    shown(&path.display().to_string()).into_owned()
}

fn write_text(out: &mut impl Write, path: &Path, size: u64, info: &ArchiveInfo) -> io::Result<()> {
    writeln!(
        out,
        "{}  ({}, {}, {})",
        shown_path(path),
        info.format,
        info.compression,
        human_bytes(size)
    )?;
    for image in &info.images {
        writeln!(out, "  {}", shown(&image.display_names()))?;
        if let Some(d) = &image.digest {
            writeln!(out, "    digest   {}", shown(d))?;
        }
        for p in &image.platforms {
            let platform = p.platform.as_ref().map_or_else(
                || "unknown".to_string(),
                |p| shown(&p.to_string()).into_owned(),
            );
            if p.complete {
                writeln!(
                    out,
                    "    {platform:<14} config {}  {} layer(s), {}",
                    shown(p.config_digest.as_deref().unwrap_or("-")),
                    p.layers,
                    human_bytes(p.size)
                )?;
            } else {
                writeln!(out, "    {platform:<14} not in this archive")?;
            }
        }
    }
    Ok(())
}
