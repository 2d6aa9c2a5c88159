//! `offline-images list`: what is inside archives, without importing anything.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::archive::{self, human_bytes, ArchiveInfo, Limits};
use crate::exit::Code;
use crate::report::{prose, shown};

#[derive(Serialize)]
struct JsonLine<'a> {
    file: &'a Path,
    file_size: u64,
    #[serde(flatten)]
    info: &'a ArchiveInfo,
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
    let mut failed = 0usize;
    let mut listed = 0usize;
    for root in &args.paths {
        let (found, rejected) = match archive::discover(root) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("offline-images: {e:#}");
                failed += 1;
                continue;
            }
        };
        for r in &rejected {
            eprintln!(
                "offline-images: {}: {}",
                shown_path(&r.path),
                prose(&r.reason)
            );
            failed += 1;
        }
        if found.is_empty() && rejected.is_empty() {
            eprintln!(
                "offline-images: {}: no archives (.tar, .tar.gz, .tgz, .tar.zst) found",
                root.display()
            );
            failed += 1;
        }
        for f in &found {
            match archive::inspect_path(&f.path, Limits::default()) {
                Ok(info) => {
                    listed += 1;
                    if args.json {
                        serde_json::to_writer(
                            &mut out,
                            &JsonLine {
                                file: &f.path,
                                file_size: f.size,
                                info: &info,
                            },
                        )?;
                        writeln!(out)?;
                    } else {
                        write_text(&mut out, &f.path, f.size, &info)?;
                    }
                    for w in &info.warnings {
                        eprintln!(
                            "offline-images: warning: {}: {}",
                            shown_path(&f.path),
                            prose(w)
                        );
                    }
                }
                Err(e) => {
                    // Results so far go out before the error, so the two streams read in order.
                    out.flush()?;
                    eprintln!(
                        "offline-images: {}: {}",
                        shown_path(&f.path),
                        prose(&format!("{e:#}"))
                    );
                    failed += 1;
                }
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        eprintln!("offline-images: {listed} archive(s) listed, {failed} could not be read");
        return Ok(Code::Failure);
    }
    Ok(Code::Success)
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
