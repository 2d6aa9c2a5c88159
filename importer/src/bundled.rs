//! The importer binary carried inside a bundle, for nodes that have no importer image.
//!
//! `export` copies a static importer binary per architecture to
//! `<bundle>/.offline-images/linux-<arch>/offline-images` with its checksum in
//! `offline-images.sha256` beside it (a hidden folder, so `import` never takes it for an
//! archive), and the amd64 one (else the arm64 one) also to `.offline-images/offline-images`,
//! the path charts without `bootstrap.architectures` run (decision 21). The chart's bootstrap
//! mode runs the node's binary from the mounted bundle in an image every node already has (the
//! pause image). Started from such a path, the binary
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

/// Where the binary of `arch` and its checksum go in a bundle.
pub fn arch_paths(bundle_dir: &Path, arch: Arch) -> (PathBuf, PathBuf) {
    let dir = bundle_dir.join(DIR).join(arch.dir());
    (dir.join(BINARY), dir.join(CHECKSUM))
}

/// A node architecture the bundle carries an importer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Every architecture, in the order the bundle prefers for its default binary.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The architecture of an ELF header's `e_machine` (x86_64 62, aarch64 183), for a
    /// 64-bit little-endian file.
    pub fn from_elf(machine: u16, wide: bool, little: bool) -> Option<Arch> {
        match (machine, wide, little) {
            (62, true, true) => Some(Arch::Amd64),
            (183, true, true) => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// As Kubernetes names it (`kubernetes.io/arch`) and the chart's values do.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// As the kernel and the compiler name it (`uname -m`, the Rust target).
    pub fn machine(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// `linux/<arch>`, as a log line names a platform.
    pub fn platform(self) -> String {
        format!("linux/{}", self.name())
    }

    /// Its folder under [`DIR`]: `linux-<arch>`.
    pub fn dir(self) -> String {
        format!("linux-{}", self.name())
    }

    /// The file beside the running importer that `export` takes as this architecture's
    /// importer by default: `offline-images-<machine>` (e.g. `offline-images-aarch64`).
    pub fn sibling(self) -> String {
        format!("{BINARY}-{}", self.machine())
    }
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
    /// Its OS/ABI byte names another system than Linux (or none).
    ForeignOs(u8),
    /// A machine, class or byte order the bundle carries no importer for.
    OtherMachine {
        machine: u16,
        wide: bool,
        little: bool,
    },
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
            NotStatic::ForeignOs(abi) => write!(
                f,
                "is an ELF executable for another operating system (OS/ABI {abi}), not Linux"
            ),
            NotStatic::OtherMachine {
                machine,
                wide,
                little,
            } => write!(
                f,
                "is an ELF executable for machine {machine} ({}-bit, {}-endian); a bundle \
                 carries importers for x86_64 (linux/amd64) and aarch64 (linux/arm64) only",
                if *wide { 64 } else { 32 },
                if *little { "little" } else { "big" }
            ),
        }
    }
}

impl std::error::Error for NotStatic {}

/// What the ELF header of a static executable says.
struct Elf {
    wide: bool,
    little: bool,
    os_abi: u8,
    machine: u16,
}

/// The importer `path` is for: an ELF executable for Linux without a program interpreter
/// (`PT_INTERP`), i.e. one that runs in an empty image, for x86_64 or aarch64 (its
/// `e_machine`). `Err` says what it is instead.
pub fn check_importer(path: &Path) -> Result<Arch, NotStatic> {
    let elf = read_static(path)?;
    // 0 is System V, which static Linux executables (musl's among them) declare; 3 is Linux.
    if !matches!(elf.os_abi, 0 | 3) {
        return Err(NotStatic::ForeignOs(elf.os_abi));
    }
    Arch::from_elf(elf.machine, elf.wide, elf.little).ok_or(NotStatic::OtherMachine {
        machine: elf.machine,
        wide: elf.wide,
        little: elf.little,
    })
}

/// The header of `path` when it is an ELF executable without a program interpreter.
fn read_static(path: &Path) -> Result<Elf, NotStatic> {
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
    Ok(Elf {
        wide,
        little,
        os_abi: h[7],
        machine: u16_at(&h, 18) as u16,
    })
}

/// Copy each static importer binary of `binaries` (checked with [`check_importer`]: one per
/// architecture) into the bundle under `linux-<arch>/` with its checksum, and the amd64 one
/// (else the first) also to [`paths`], as a hard link where the file system has them; every
/// pair is complete or absent. Returns each architecture's checksum, in `binaries`' order.
pub fn place(binaries: &[(Arch, PathBuf)], bundle_dir: &Path) -> Result<Vec<(Arch, String)>> {
    let mut sums = Vec::new();
    for (arch, src) in binaries {
        let (binary, checksum) = arch_paths(bundle_dir, *arch);
        let sum = install(&binary, &checksum, &sum_of(src)?, |to| {
            let mut from =
                File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
            io::copy(&mut from, to)?;
            Ok(())
        })?;
        sums.push((*arch, sum));
    }
    let default = Arch::ALL
        .iter()
        .find_map(|a| sums.iter().find(|(b, _)| b == a))
        .cloned();
    if let Some((arch, sum)) = default {
        let (from, _) = arch_paths(bundle_dir, arch);
        let (binary, checksum) = paths(bundle_dir);
        install_linked(&from, &binary, &checksum, &sum)?;
    }
    Ok(sums)
}

/// The sha256 of `src`, checked again once it is copied.
fn sum_of(src: &Path) -> Result<String> {
    check_importer(src).map_err(|why| exit::usage(format!("{} {why}", src.display())))?;
    bundle::sha256_file(src)
}

/// Write `binary` through `fill` (to a temp file, renamed once complete and on disk) with its
/// `checksum` file, which must say `sum`.
fn install(
    binary: &Path,
    checksum: &Path,
    sum: &str,
    fill: impl FnOnce(&mut File) -> Result<()>,
) -> Result<String> {
    if already_placed(binary, checksum, sum) {
        return Ok(sum.to_string());
    }
    let dir = binary.parent().expect("a folder");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = bundle::temp_name(binary);
    let result = (|| -> Result<String> {
        let mut to =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        fill(&mut to).with_context(|| format!("cannot write {}", tmp.display()))?;
        to.flush()?;
        to.set_permissions(fs::Permissions::from_mode(0o755))?;
        to.sync_all()?;
        drop(to);
        let written = bundle::sha256_file(&tmp)?;
        if written != sum {
            anyhow::bail!(
                "{} changed while it was copied (sha256 {written}, was {sum})",
                tmp.display()
            );
        }
        commit(&tmp, binary, checksum, sum)?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The binary `from`, already in the bundle, also at `binary` with its `checksum`: a hard link,
/// or a copy where the file system has no hard links.
fn install_linked(from: &Path, binary: &Path, checksum: &Path, sum: &str) -> Result<()> {
    if already_placed(binary, checksum, sum) {
        return Ok(());
    }
    let tmp = bundle::temp_name(binary);
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(from, &tmp).is_err() {
        return install(binary, checksum, sum, |to| {
            io::copy(&mut File::open(from)?, to)?;
            Ok(())
        })
        .map(drop);
    }
    let result = commit(&tmp, binary, checksum, sum);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether the bundle holds `binary` with the checksum `sum` already, and its checksum file
/// says so: a re-export then writes neither again.
fn already_placed(binary: &Path, checksum: &Path, sum: &str) -> bool {
    fs::read_to_string(checksum).is_ok_and(|c| c.split_whitespace().next() == Some(sum))
        && bundle::sha256_file(binary).is_ok_and(|s| s == sum)
}

/// Put the complete `tmp` in place as `binary`, its checksum file first: a bundle whose binary
/// is not yet renamed holds the old pair's binary with a new checksum, which the binary
/// refuses, rather than the reverse.
fn commit(tmp: &Path, binary: &Path, checksum: &Path, sum: &str) -> Result<()> {
    bundle::write_atomic(checksum, format!("{sum}  {BINARY}\n").as_bytes())?;
    fs::rename(tmp, binary)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), binary.display()))
}

/// The running binary and its architecture, when it is a static Linux importer (so it can be
/// carried in a bundle).
pub fn current_static() -> Result<(Arch, PathBuf), NotStatic> {
    let exe = Path::new("/proc/self/exe");
    Ok((check_importer(exe)?, exe.to_path_buf()))
}

/// The file beside the running binary that holds the importer for `arch`
/// ([`Arch::sibling`]), when there is one.
pub fn sibling(arch: Arch) -> Option<PathBuf> {
    let exe = fs::read_link("/proc/self/exe").ok()?;
    let path = exe.with_file_name(arch.sibling());
    path.exists().then_some(path)
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
    // `.offline-images/offline-images` or `.offline-images/linux-<arch>/offline-images`.
    let parent = path.parent();
    let named = |p: Option<&Path>, f: &dyn Fn(&str) -> bool| {
        p.and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .is_some_and(f)
    };
    let in_bundle = named(parent, &|d| d == DIR)
        || (named(parent, &|d| d.starts_with("linux-"))
            && named(parent.and_then(Path::parent), &|d| d == DIR));
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
            let err = check_importer(&exe).unwrap_err();
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
        let err = check_importer(&text).unwrap_err();
        assert!(matches!(err, NotStatic::NotElf), "{err}");
        assert_eq!(err.to_string(), "is not an ELF executable");
        let err = check_importer(&dir.join("absent")).unwrap_err();
        assert!(matches!(err, NotStatic::Unreadable(_)), "{err}");
        assert!(err.to_string().starts_with("cannot be read: "), "{err}");
        fs::write(&text, b"\x7fELF").unwrap();
        assert_eq!(
            check_importer(&text).unwrap_err().to_string(),
            "is not an ELF executable (too short)"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A minimal ELF executable: the header and one program header, `PT_INTERP` (3) when
    /// `dynamic`, else `PT_LOAD` (1).
    fn elf(machine: u16, os_abi: u8, wide: bool, little: bool, dynamic: bool) -> Vec<u8> {
        let (ehsize, phentsize) = if wide { (64u16, 56u16) } else { (52, 32) };
        let mut h = vec![0u8; usize::from(ehsize)];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = if wide { 2 } else { 1 };
        h[5] = if little { 1 } else { 2 };
        h[6] = 1;
        h[7] = os_abi;
        let put16 = |b: &mut Vec<u8>, o: usize, v: u16| {
            let v = if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            b[o..o + 2].copy_from_slice(&v);
        };
        put16(&mut h, 16, 2);
        put16(&mut h, 18, machine);
        if wide {
            h[32..40].copy_from_slice(&if little {
                64u64.to_le_bytes()
            } else {
                64u64.to_be_bytes()
            });
            put16(&mut h, 54, phentsize);
            put16(&mut h, 56, 1);
        } else {
            h[28..32].copy_from_slice(&if little {
                52u32.to_le_bytes()
            } else {
                52u32.to_be_bytes()
            });
            put16(&mut h, 42, phentsize);
            put16(&mut h, 44, 1);
        }
        let mut ph = vec![0u8; usize::from(phentsize)];
        let kind: u32 = if dynamic { 3 } else { 1 };
        ph[..4].copy_from_slice(&if little {
            kind.to_le_bytes()
        } else {
            kind.to_be_bytes()
        });
        h.extend(ph);
        h
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oi-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_architecture_is_read_from_the_elf_header() {
        let dir = temp("elf-arch");
        let file = dir.join("bin");
        let arch_of = |bytes: Vec<u8>| {
            fs::write(&file, bytes).unwrap();
            check_importer(&file)
        };
        assert_eq!(arch_of(elf(62, 0, true, true, false)).unwrap(), Arch::Amd64);
        assert_eq!(
            arch_of(elf(183, 0, true, true, false)).unwrap(),
            Arch::Arm64
        );
        assert_eq!(
            arch_of(elf(183, 3, true, true, false)).unwrap(),
            Arch::Arm64
        );
        // A dynamic binary is refused as such, whatever its machine.
        let err = arch_of(elf(183, 0, true, true, true)).unwrap_err();
        assert!(matches!(err, NotStatic::Dynamic), "{err}");
        // Another system (9: FreeBSD), another machine (3: i386; 243: RISC-V), big-endian
        // aarch64: refused by name.
        let err = arch_of(elf(62, 9, true, true, false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "is an ELF executable for another operating system (OS/ABI 9), not Linux"
        );
        let err = arch_of(elf(3, 0, false, true, false)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("is an ELF executable for machine 3 (32-bit, little-endian); "),
            "{err}"
        );
        assert!(err.to_string().ends_with("(linux/arm64) only"), "{err}");
        let err = arch_of(elf(243, 0, true, true, false)).unwrap_err();
        assert!(matches!(err, NotStatic::OtherMachine { machine: 243, .. }));
        let err = arch_of(elf(183, 0, true, false, false)).unwrap_err();
        assert!(err.to_string().contains("(64-bit, big-endian)"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_names_of_each_architecture() {
        assert_eq!(Arch::Amd64.dir(), "linux-amd64");
        assert_eq!(Arch::Arm64.platform(), "linux/arm64");
        assert_eq!(Arch::Arm64.sibling(), "offline-images-aarch64");
        assert_eq!(Arch::Amd64.sibling(), "offline-images-x86_64");
        assert_eq!(Arch::ALL[0], Arch::Amd64);
    }

    #[test]
    fn each_architecture_is_placed_in_its_folder_and_amd64_also_as_the_default() {
        let dir = temp("place");
        let (amd, arm) = (dir.join("amd"), dir.join("arm"));
        fs::write(&amd, elf(62, 0, true, true, false)).unwrap();
        fs::write(&arm, elf(183, 0, true, true, false)).unwrap();
        let bundle_dir = dir.join("bundle");
        let sums = place(
            &[(Arch::Amd64, amd.clone()), (Arch::Arm64, arm.clone())],
            &bundle_dir,
        )
        .unwrap();
        assert_eq!(sums.len(), 2);
        for ((arch, sum), src) in sums.iter().zip([&amd, &arm]) {
            let (binary, checksum) = arch_paths(&bundle_dir, *arch);
            assert_eq!(fs::read(&binary).unwrap(), fs::read(src).unwrap());
            assert_eq!(*sum, bundle::sha256_file(src).unwrap());
            let text = fs::read_to_string(&checksum).unwrap();
            assert_eq!(text, format!("{sum}  {BINARY}\n"));
            assert_eq!(
                fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
                0o755
            );
            verify(&binary, &binary).unwrap();
        }
        let (default, default_sum) = paths(&bundle_dir);
        assert_eq!(fs::read(&default).unwrap(), fs::read(&amd).unwrap());
        assert_eq!(
            fs::read_to_string(&default_sum).unwrap(),
            format!("{}  {BINARY}\n", sums[0].1)
        );
        verify(&default, &default).unwrap();

        // arm64 alone: it becomes the default, and the amd64 pair an earlier run wrote stays.
        place(&[(Arch::Arm64, arm.clone())], &bundle_dir).unwrap();
        assert_eq!(fs::read(&default).unwrap(), fs::read(&arm).unwrap());
        verify(&default, &default).unwrap();
        assert!(arch_paths(&bundle_dir, Arch::Amd64).0.exists());

        // A source that is not an importer is refused by name, and nothing is left of it.
        let err = place(&[(Arch::Amd64, dir.join("absent"))], &bundle_dir).unwrap_err();
        assert!(
            format!("{err:#}").contains("absent cannot be read"),
            "{err:#}"
        );
        let left: Vec<_> = fs::read_dir(bundle_dir.join(DIR).join("linux-amd64"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_binary_in_an_architectures_folder_is_checked_too() {
        let dir = temp("self-arch");
        let bin = dir.join(DIR).join("linux-arm64").join(BINARY);
        fs::create_dir_all(bin.parent().unwrap()).unwrap();
        fs::write(&bin, b"binary").unwrap();
        let err = verify(&bin, &bin).unwrap_err();
        assert!(format!("{err:#}").contains("cannot be read"), "{err:#}");
        // Not under the bundle's folder: not checked.
        let elsewhere = dir.join("linux-arm64").join(BINARY);
        fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
        fs::write(&elsewhere, b"binary").unwrap();
        assert!(verify(&elsewhere, &elsewhere).is_ok());
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
