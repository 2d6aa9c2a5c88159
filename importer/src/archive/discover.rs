//! Finding archives under a directory.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use walkdir::WalkDir;

use crate::exit;

/// An archive to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// Size of the file (of its target, for a symlink).
    pub size: u64,
}

/// A path that looks like an archive but cannot be one; reported, never opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub path: PathBuf,
    pub reason: String,
}

const ARCHIVE_SUFFIXES: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"];
const PARTIAL_SUFFIXES: &[&str] = &[".tmp", ".part", ".partial", ".download", ".crdownload"];

/// Whether a file name is one of the archive names we read.
pub fn is_archive_name(name: &str) -> bool {
    !name.starts_with('.')
        && !PARTIAL_SUFFIXES.iter().any(|s| name.ends_with(s))
        && ARCHIVE_SUFFIXES
            .iter()
            .any(|s| name.len() > s.len() && name.ends_with(s))
}

/// Every archive under `root` (or `root` itself when it is a file), sorted by path.
///
/// Hidden files and directories and partial downloads are skipped. Symlinks are followed
/// only when they stay inside `root`. Anything named like an archive that is not a regular
/// file (a directory, a FIFO, a device, a dangling link) is returned as rejected, never opened,
/// so a FIFO cannot block the run.
pub fn discover(root: &Path) -> Result<(Vec<Found>, Vec<Rejected>)> {
    let meta = fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if meta.is_file() {
        return Ok((
            vec![Found {
                path: root.to_path_buf(),
                size: meta.len(),
            }],
            vec![],
        ));
    }
    if !meta.is_dir() {
        anyhow::bail!(
            "{} is {}, neither a directory nor a regular file",
            root.display(),
            describe(&meta.file_type())
        );
    }
    let canonical_root =
        fs::canonicalize(root).with_context(|| format!("cannot resolve {}", root.display()))?;
    let mut found = Vec::new();
    let mut rejected = Vec::new();
    let walker = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(err) => {
                let path = err.path().unwrap_or(root).to_path_buf();
                let reason = err
                    .io_error()
                    .map_or_else(|| err.to_string(), |e| format!("cannot read: {e}"));
                rejected.push(Rejected { path, reason });
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if !is_archive_name(&name) {
            continue;
        }
        let path = entry.path().to_path_buf();
        let ft = entry.file_type();
        if ft.is_file() {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            found.push(Found { path, size });
        } else if ft.is_symlink() {
            match check_link(&path, &canonical_root) {
                Ok(size) => found.push(Found { path, size }),
                Err(refused) => rejected.push(Rejected {
                    path,
                    reason: refused.to_string(),
                }),
            }
        } else {
            let kind = describe(&ft);
            rejected.push(Rejected {
                path,
                reason: format!("is {kind}, not a regular file"),
            });
        }
    }
    Ok((found, rejected))
}

/// Why a symlink named like an archive is not used.
#[derive(Debug)]
enum LinkRefused {
    Loop,
    Dangling,
    Unresolved(io::Error),
    Outside(PathBuf),
    TargetUnreadable(io::Error),
    NotAFile(&'static str),
}

impl fmt::Display for LinkRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRefused::Loop => write!(f, "is a symlink loop"),
            LinkRefused::Dangling => write!(f, "is a symlink to a file that does not exist"),
            LinkRefused::Unresolved(e) => write!(f, "cannot resolve symlink: {e}"),
            LinkRefused::Outside(target) => write!(
                f,
                "is a symlink to {}, outside the images path; copy the file in instead",
                target.display()
            ),
            LinkRefused::TargetUnreadable(e) => write!(f, "cannot read symlink target: {e}"),
            LinkRefused::NotAFile(kind) => write!(f, "is a symlink to {kind}, not a regular file"),
        }
    }
}

/// A symlink is used when it resolves to a regular file inside the images directory.
fn check_link(path: &Path, root: &Path) -> Result<u64, LinkRefused> {
    let target = match fs::canonicalize(path) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(LinkRefused::Loop),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LinkRefused::Dangling),
        Err(e) => return Err(LinkRefused::Unresolved(e)),
    };
    if !target.starts_with(root) {
        return Err(LinkRefused::Outside(target));
    }
    let meta = fs::metadata(&target).map_err(LinkRefused::TargetUnreadable)?;
    if !meta.is_file() {
        return Err(LinkRefused::NotAFile(describe(&meta.file_type())));
    }
    Ok(meta.len())
}

fn describe(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_recognised_and_partials_skipped() {
        for ok in ["a.tar", "a.tar.gz", "a.tgz", "a.tar.zst", "my image.tar"] {
            assert!(is_archive_name(ok), "{ok}");
        }
        for no in [
            ".a.tar",
            "a.tar.gz.tmp",
            "a.tar.part",
            "SHA256SUMS",
            "images.json",
            ".tar",
            "a.gz",
        ] {
            assert!(!is_archive_name(no), "{no}");
        }
    }

    #[test]
    fn symlinks_that_cannot_be_archives_are_rejected_with_their_reason() {
        use std::os::unix::fs::symlink;
        let base = std::env::temp_dir().join(format!("oi-discover-{}", std::process::id()));
        let images = base.join("images");
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(images.join("dir")).unwrap();
        fs::write(base.join("outside.tar"), b"x").unwrap();
        fs::write(images.join("real.tar"), b"xy").unwrap();
        symlink("real.tar", images.join("good.tar")).unwrap();
        symlink("loop.tar", images.join("loop.tar")).unwrap();
        symlink("gone", images.join("dangling.tar")).unwrap();
        symlink("../outside.tar", images.join("outside.tar")).unwrap();
        symlink("dir", images.join("dir.tar")).unwrap();
        let (found, rejected) = discover(&images).unwrap();
        let found: Vec<(String, u64)> = found
            .iter()
            .map(|f| (f.path.file_name().unwrap().to_string_lossy().into(), f.size))
            .collect();
        assert_eq!(found, [("good.tar".into(), 2), ("real.tar".into(), 2)]);
        let reasons: Vec<(String, String)> = rejected
            .iter()
            .map(|r| {
                let name = r.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, r.reason.clone())
            })
            .collect();
        let outside = fs::canonicalize(base.join("outside.tar")).unwrap();
        assert_eq!(
            reasons,
            [
                (
                    "dangling.tar".into(),
                    "is a symlink to a file that does not exist".into()
                ),
                (
                    "dir.tar".into(),
                    "is a symlink to a directory, not a regular file".into()
                ),
                ("loop.tar".into(), "is a symlink loop".into()),
                (
                    "outside.tar".into(),
                    format!(
                        "is a symlink to {}, outside the images path; copy the file in instead",
                        outside.display()
                    )
                ),
            ]
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
