//! The importer binary carried inside a bundle, for nodes that have no importer image.
//!
//! `export` copies a static importer binary to `<bundle>/.offline-images/offline-images` with
//! its checksum in `offline-images.sha256` beside it (a hidden folder, so `import` never takes
//! it for an archive). The chart's bootstrap mode runs that binary from the mounted bundle in
//! an image every node already has (the pause image). Started from such a path, the binary
//! first checks itself against that checksum and refuses to run on a mismatch: a damaged or
//! partly copied binary must not touch the node's runtime. (The check guards against damage
//! and mix-ups; where the bundle itself cannot be trusted, no self-check can help.)

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bundle;
use crate::exit;

/// The hidden folder of a bundle that holds the importer binary.
pub const DIR: &str = ".offline-images";
/// The binary's file name inside [`DIR`].
pub const BINARY: &str = "offline-images";
/// Its checksum, in `sha256sum` form, beside it.
pub const CHECKSUM: &str = "offline-images.sha256";

/// Where the binary and its checksum go in a bundle.
pub fn paths(bundle_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = bundle_dir.join(DIR);
    (dir.join(BINARY), dir.join(CHECKSUM))
}

/// Why a file cannot be the importer a bundle carries: it is no executable that runs in an
/// empty image. `Display` completes a sentence that starts with the file's name.
#[derive(Debug)]
pub enum NotStatic {
    Unreadable(io::Error),
    TooShort,
    NotElf,
    UnknownClass,
    UnknownByteOrder,
    NotExecutable,
    NoProgramHeaders,
    Truncated,
    /// It has a program interpreter (`PT_INTERP`).
    Dynamic,
}

impl std::fmt::Display for NotStatic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStatic::Unreadable(e) => write!(f, "cannot be read: {e}"),
            NotStatic::TooShort => f.write_str("is not an ELF executable (too short)"),
            NotStatic::NotElf => f.write_str("is not an ELF executable"),
            NotStatic::UnknownClass => f.write_str("is an ELF file of an unknown class"),
            NotStatic::UnknownByteOrder => f.write_str("is an ELF file of an unknown byte order"),
            NotStatic::NotExecutable => f.write_str("is an ELF file but not an executable"),
            NotStatic::NoProgramHeaders => {
                f.write_str("is an ELF executable without program headers")
            }
            NotStatic::Truncated => f.write_str("is a truncated ELF executable"),
            NotStatic::Dynamic => f.write_str(
                "is dynamically linked (it has a program interpreter), so it cannot run in an \
                 image without libraries; build the static musl binary",
            ),
        }
    }
}

impl std::error::Error for NotStatic {}

/// Whether `path` is an ELF executable without a program interpreter (`PT_INTERP`), i.e.
/// one that runs in an empty image. `Err` says what it is instead.
pub fn check_static(path: &Path) -> Result<(), NotStatic> {
    let mut f = File::open(path).map_err(NotStatic::Unreadable)?;
    let mut h = [0u8; 64];
    f.read_exact(&mut h).map_err(|_| NotStatic::TooShort)?;
    if &h[..4] != b"\x7fELF" {
        return Err(NotStatic::NotElf);
    }
    let wide = match h[4] {
        1 => false,
        2 => true,
        _ => return Err(NotStatic::UnknownClass),
    };
    let little = match h[5] {
        1 => true,
        2 => false,
        _ => return Err(NotStatic::UnknownByteOrder),
    };
    let u16_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1]];
        u64::from(if little {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        })
    };
    let u32_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        u64::from(if little {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        })
    };
    let u64_at = |b: &[u8], o: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[o..o + 8]);
        if little {
            u64::from_le_bytes(v)
        } else {
            u64::from_be_bytes(v)
        }
    };
    // ET_EXEC (2) or ET_DYN (3, static-pie).
    if !matches!(u16_at(&h, 16), 2 | 3) {
        return Err(NotStatic::NotExecutable);
    }
    let (phoff, phentsize, phnum) = if wide {
        (u64_at(&h, 32), u16_at(&h, 54), u16_at(&h, 56))
    } else {
        (u32_at(&h, 28), u16_at(&h, 42), u16_at(&h, 44))
    };
    if phentsize < 4 || phnum == 0 || phnum > 4096 {
        return Err(NotStatic::NoProgramHeaders);
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    f.seek(SeekFrom::Start(phoff))
        .and_then(|_| f.read_exact(&mut table))
        .map_err(|_| NotStatic::Truncated)?;
    const PT_INTERP: u64 = 3;
    for entry in table.chunks_exact(phentsize as usize) {
        if u32_at(entry, 0) == PT_INTERP {
            return Err(NotStatic::Dynamic);
        }
    }
    Ok(())
}

/// Copy the static importer binary `src` into the bundle with its checksum; both files are
/// complete or absent. Returns the checksum.
pub fn place(src: &Path, bundle_dir: &Path) -> Result<String> {
    check_static(src).map_err(|why| exit::usage(format!("{} {why}", src.display())))?;
    let (binary, checksum) = paths(bundle_dir);
    let dir = binary.parent().expect("a folder");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = bundle::temp_name(&binary);
    let result = (|| -> Result<String> {
        let mut from = File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
        let mut to =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        io::copy(&mut from, &mut to).with_context(|| format!("cannot write {}", tmp.display()))?;
        to.flush()?;
        to.set_permissions(fs::Permissions::from_mode(0o755))?;
        to.sync_all()?;
        drop(to);
        let sum = bundle::sha256_file(&tmp)?;
        // The checksum first: a bundle whose binary is not yet renamed holds the old pair's
        // binary with a new checksum, which the binary refuses, rather than the reverse.
        bundle::write_atomic(&checksum, format!("{sum}  {BINARY}\n").as_bytes())?;
        fs::rename(&tmp, &binary)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), binary.display()))?;
        Ok(sum)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The running binary, when it is static (so it can be carried in a bundle).
pub fn current_static() -> Result<PathBuf, NotStatic> {
    let exe = Path::new("/proc/self/exe");
    check_static(exe)?;
    Ok(exe.to_path_buf())
}

/// The environment variable (set by the chart's `bootstrap.binarySha256`) that pins the
/// bundled binary to one sha256, whatever the checksum file beside it says.
pub const PIN_ENV: &str = "OFFLINE_IMAGES_BINARY_SHA256";

/// The pinned sha256, lowercased, when [`PIN_ENV`] is set and not empty.
fn pinned_sha256() -> Option<String> {
    std::env::var(PIN_ENV)
        .ok()
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

/// If this process runs a binary from a bundle's [`DIR`], check it against the checksum beside
/// it; a mismatch or a missing checksum is an error (exit 2) and nothing else runs.
pub fn verify_self() -> Result<()> {
    let Ok(exe) = fs::read_link("/proc/self/exe") else {
        return Ok(());
    };
    verify(&exe, Path::new("/proc/self/exe"))
}

/// Check the binary at `path` (read through `contents`, which is `/proc/self/exe` for the
/// running binary: the very file that was executed) when `path` lies in a bundle's [`DIR`].
pub fn verify(path: &Path, contents: &Path) -> Result<()> {
    let in_bundle = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == DIR);
    if !in_bundle {
        return Ok(());
    }
    let sums = path.with_file_name(CHECKSUM);
    let text = match fs::read_to_string(&sums) {
        Ok(t) => t,
        Err(e) => {
            return Err(exit::usage(format!(
                "refusing to run {}: its checksum file {} cannot be read ({e}); copy the \
                 bundle again, with its .offline-images folder",
                path.display(),
                sums.display()
            )))
        }
    };
    let expected = bundle::parse_sums(&text)
        .ok()
        .and_then(|m| m.into_values().next())
        .ok_or_else(|| {
            exit::usage(format!(
                "refusing to run {}: {} holds no sha256 checksum",
                path.display(),
                sums.display()
            ))
        })?;
    let actual = bundle::sha256_file(contents)?;
    if let Some(pinned) = pinned_sha256() {
        if actual != pinned {
            return Err(exit::usage(format!(
                "refusing to run {}: its sha256 is {actual} but {PIN_ENV} pins {pinned}; this \
                 is not the importer binary the release was set up with",
                path.display()
            )));
        }
    }
    if actual != expected {
        return Err(exit::usage(format!(
            "refusing to run {}: its sha256 is {actual} but {} says {expected}; the binary \
             was damaged or replaced. Copy the bundle again (or export it again)",
            path.display(),
            sums.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamically_linked_binary_is_not_static() {
        // The test binary itself is linked against the C library of the build host
        // (gnu target): it has a program interpreter.
        if cfg!(target_env = "gnu") {
            let exe = std::env::current_exe().unwrap();
            let err = check_static(&exe).unwrap_err();
            assert!(matches!(err, NotStatic::Dynamic), "{err}");
            assert!(
                err.to_string().starts_with("is dynamically linked"),
                "{err}"
            );
        }
        let dir = std::env::temp_dir().join(format!("oi-elf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let text = dir.join("script");
        fs::write(&text, format!("#!/bin/sh\n{}\n", "echo hi\n".repeat(10))).unwrap();
        let err = check_static(&text).unwrap_err();
        assert!(matches!(err, NotStatic::NotElf), "{err}");
        assert_eq!(err.to_string(), "is not an ELF executable");
        let err = check_static(&dir.join("absent")).unwrap_err();
        assert!(matches!(err, NotStatic::Unreadable(_)), "{err}");
        assert!(err.to_string().starts_with("cannot be read: "), "{err}");
        fs::write(&text, b"\x7fELF").unwrap();
        assert_eq!(
            check_static(&text).unwrap_err().to_string(),
            "is not an ELF executable (too short)"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_binary_outside_a_bundle_is_not_checked_and_one_inside_must_match() {
        let dir = std::env::temp_dir().join(format!("oi-self-{}", std::process::id()));
        let bin = dir.join(DIR).join(BINARY);
        fs::create_dir_all(bin.parent().unwrap()).unwrap();
        fs::write(&bin, b"binary").unwrap();
        let outside = dir.join("offline-images");
        fs::write(&outside, b"other").unwrap();
        assert!(verify(&outside, &outside).is_ok());

        let err = verify(&bin, &bin).unwrap_err();
        assert!(format!("{err:#}").contains("cannot be read"), "{err:#}");
        let sum = bundle::sha256_file(&bin).unwrap();
        fs::write(bin.with_file_name(CHECKSUM), format!("{sum}  {BINARY}\n")).unwrap();
        assert!(verify(&bin, &bin).is_ok());
        fs::write(&bin, b"binary, changed").unwrap();
        let err = verify(&bin, &bin).unwrap_err();
        assert!(format!("{err:#}").contains("refusing to run"), "{err:#}");
        assert_eq!(exit::Code::from_error(&err), exit::Code::Usage);
        fs::remove_dir_all(&dir).unwrap();
    }
}
