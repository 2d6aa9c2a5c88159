//! Signed bundles (docs/decisions/0028-signed-bundles.md). What is signed is the bundle's
//! identity: a small canonical text, `.offline-images/bundle.identity`, that names the sha256
//! of `index.json`, `images.json` and `SHA256SUMS`; every blob is bound to it through
//! `index.json` (by digest) and every archive through `SHA256SUMS`. Beside it,
//! `bundle.identity.sig` is cosign's plain signature file (base64 of a DER ECDSA P-256
//! signature over the SHA-256 of the identity's bytes), which `cosign verify-blob --key
//! cosign.pub --signature bundle.identity.sig --insecure-ignore-tlog bundle.identity` accepts,
//! and `bundle.identity.sigstore.json` the same signature as a Sigstore bundle (cosign 3's
//! `--bundle`).
//!
//! `import --verify-key` ([`check`]) refuses, before anything is imported, a bundle that is
//! unsigned, signed by none of the keys, whose three files differ from its identity, whose
//! layout or archives do not match them (every blob read against its digest, every blob
//! `index.json` needs present: `bundle_check`), or that holds images the signature does not
//! cover. Compiled in both builds: the node's importer verifies; signing (`sign`) is the
//! connected side's.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::bundle::{self, INDEX_FILE, SUMS_FILE};
use crate::bundled;
use crate::exit;
use crate::report::Reporter;
use crate::source::Unit;

pub(crate) mod keys;
#[cfg(feature = "export")]
mod sign;

pub(crate) use keys::PublicKey;
#[cfg(feature = "export")]
pub(crate) use sign::Signer;

/// The identity file, under the bundle's `.offline-images/`.
pub const IDENTITY: &str = "bundle.identity";
/// cosign's plain signature file of the identity.
pub const SIGNATURE: &str = "bundle.identity.sig";
/// The same signature as a Sigstore bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`).
#[cfg(feature = "export")]
pub const SIGSTORE_BUNDLE: &str = "bundle.identity.sigstore.json";
/// The identity's first line: what it is and its version.
const HEADER: &str = "offline-images bundle identity 1";
const INDEX_JSON: &str = "index.json";

/// Where `name` lives in the bundle `dir`.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(bundled::DIR).join(name)
}

/// The identity of the bundle in `dir` as it is now: one line per file it binds, `sha256:HEX
/// NAME`, in a fixed order; `index.json` only for a layout bundle.
pub(crate) fn identity_of(dir: &Path) -> Result<Vec<u8>> {
    let mut text = format!("{HEADER}\n");
    let layout = dir.join(INDEX_JSON).exists();
    for name in [INDEX_JSON, INDEX_FILE, SUMS_FILE] {
        if name == INDEX_JSON && !layout {
            continue;
        }
        let data = bundle::read_committed(dir, name)
            .map_err(|e| anyhow::anyhow!("{}: cannot be read: {e}", dir.join(name).display()))?;
        text.push_str(&format!("sha256:{}  {name}\n", hex(&Sha256::digest(&data))));
    }
    Ok(text.into_bytes())
}

/// The `(name, digest)` lines of an identity, or why it is not one.
fn parse_identity(text: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "it is not UTF-8 text".to_string())?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!("its first line is not {HEADER:?}"));
    }
    lines
        .map(|line| {
            let (digest, name) = line
                .split_once("  ")
                .filter(|(d, _)| d.starts_with("sha256:"))
                .ok_or_else(|| format!("the line {line:?} is not \"sha256:HEX  NAME\""))?;
            Ok((name.to_string(), digest.to_string()))
        })
        .collect()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `import --verify-key`: the bundle in `dir` checked against `keys` before anything of it is
/// imported; `units` are what the import would read. Nothing to do without keys. Every
/// refusal is a usage error naming the file and the reason. A directory that is not signed
/// itself but holds packs (`export --pack --sign-key`) has each pack its units come from
/// checked, its identity and signature being members of the pack ([`check_pack`]).
pub(crate) fn check(
    dir: &Path,
    keys: &[PathBuf],
    units: &[Unit],
    reporter: &Reporter,
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys = keys
        .iter()
        .map(|k| PublicKey::load(k))
        .collect::<Result<Vec<_>>>()?;
    let identity_path = path(dir, IDENTITY);
    let packs = packs_of(units);
    if !identity_path.exists() && !packs.is_empty() {
        for pack in &packs {
            check_pack(pack, &keys, units, reporter)?;
        }
        return check_covered_by_packs(dir, &packs, units);
    }
    let sig_path = path(dir, SIGNATURE);
    let identity = read_signed_file(&identity_path)?;
    let signature = read_signed_file(&sig_path)?;
    let by = keys::verify_any(&keys, &identity, &signature).map_err(|reason| {
        exit::usage(format!(
            "{}: refused: the signature of {} {reason}",
            sig_path.display(),
            identity_path.display()
        ))
    })?;
    let now = identity_of(dir).map_err(|e| exit::usage(format!("refused: {e:#}")))?;
    let now = parse_identity(&now).map_err(exit::usage)?;
    check_files(&identity_path, &identity, &now, &|name| dir.join(name))?;
    check_contents(dir)?;
    check_covered(dir, units)?;
    reporter.info(&format!(
        "bundle {}: signature verified with {}; {} unit(s), every blob and archive matches \
         the signed identity (sha256:{})",
        dir.display(),
        by.display(),
        units.len(),
        hex(&Sha256::digest(&identity))
    ));
    Ok(())
}

/// The packs `units` come from: an image of a pack is named after the pack's `index.json`,
/// whose parent is the pack (a file, or the name its parts join into), not a directory.
fn packs_of(units: &[Unit]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = units
        .iter()
        .filter(|u| u.path.file_name().is_some_and(|n| n == INDEX_JSON))
        .filter_map(|u| u.path.parent())
        .filter(|p| !p.is_dir())
        .map(Path::to_path_buf)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The signed pack `at` (see [`check`]): its identity and signature members verified with one
/// of `keys`, the pack's `index.json`, `images.json` and `SHA256SUMS` members the digests the
/// identity names, and every member whole (`verify --bundle-only`'s checks of a pack).
fn check_pack(at: &Path, keys: &[PublicKey], units: &[Unit], reporter: &Reporter) -> Result<()> {
    let shown = |name: &str| at.join(name);
    let refused =
        |name: &str, why: String| exit::usage(format!("{}: refused: {why}", shown(name).display()));
    let pack = crate::layout::pack_check::open(at)
        .map_err(|e| exit::usage(format!("{}: refused: {e:#}", at.display())))?
        .ok_or_else(|| refused("", "it is not a pack".into()))?;
    let identity_name = format!("{}/{IDENTITY}", bundled::DIR);
    let sig_name = format!("{}/{SIGNATURE}", bundled::DIR);
    let member = |name: &str| -> Result<Vec<u8>> {
        match pack.member(name) {
            Ok(Some(_)) => pack
                .read(name, 1 << 20)
                .map_err(|e| refused(name, format!("{e:#}"))),
            Ok(None) => Err(refused(
                name,
                "the pack is not signed (export it with --pack and --sign-key), and \
                 --verify-key asks for a signed one"
                    .into(),
            )),
            Err(e) => Err(refused(name, format!("{e:#}"))),
        }
    };
    let identity = member(&identity_name)?;
    let signature = member(&sig_name)?;
    let by = keys::verify_any(keys, &identity, &signature).map_err(|reason| {
        refused(
            &sig_name,
            format!(
                "the signature of {} {reason}",
                shown(&identity_name).display()
            ),
        )
    })?;
    let mut now = Vec::new();
    for name in [INDEX_JSON, INDEX_FILE, SUMS_FILE] {
        let hex = crate::layout::pack_check::member_sha256(&pack, name)
            .map_err(|e| refused(name, format!("cannot be read: {e}")))?;
        now.push((name.to_string(), format!("sha256:{hex}")));
    }
    check_files(&shown(&identity_name), &identity, &now, &shown)?;
    let faults = crate::layout::pack_check::faults(&pack);
    if !faults.is_empty() {
        return Err(exit::usage(format!(
            "{}: refused: the pack does not match its signed identity: {}",
            at.display(),
            faults.join("; ")
        )));
    }
    let count = units.iter().filter(|u| u.path.parent() == Some(at)).count();
    reporter.info(&format!(
        "bundle {}: signature verified with {}; {count} unit(s), every blob matches the signed \
         identity (sha256:{})",
        at.display(),
        by.display(),
        hex(&Sha256::digest(&identity))
    ));
    Ok(())
}

/// Every unit is an image of one of the signed `packs`.
fn check_covered_by_packs(dir: &Path, packs: &[PathBuf], units: &[Unit]) -> Result<()> {
    for unit in units {
        if !unit
            .path
            .parent()
            .is_some_and(|p| packs.iter().any(|k| k == p))
        {
            return Err(exit::usage(format!(
                "{}: refused: the bundle's signature does not cover it (it is not an image of \
                 a signed pack, and {} is not signed itself)",
                dir.join(&unit.name).display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// `verify --verify-key`: [`check`] on what the images path `dir` holds, importing nothing.
pub(crate) fn check_path(
    dir: &Path,
    keys: &[PathBuf],
    format: crate::report::Format,
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let reporter = Reporter::new(format);
    let images = crate::images_path::ImagesPath::open(dir, &reporter)?;
    check(dir, keys, crate::source::Source::units(&images), &reporter)
}

/// The identity or its signature, or the refusal of an unsigned bundle.
fn read_signed_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "the bundle is not signed (export it with --sign-key), and --verify-key asks for \
             a signed one"
                .to_string()
        } else {
            format!("cannot be read: {e}")
        };
        exit::usage(format!("{}: refused: {why}", path.display()))
    })
}

/// The three files the identity binds, each with the sha256 it names; none left out. `now`:
/// the lines of the bundle as it is; `shown`: where a file of it is, for the refusal.
fn check_files(
    identity_path: &Path,
    identity: &[u8],
    now: &[(String, String)],
    shown: &dyn Fn(&str) -> PathBuf,
) -> Result<()> {
    let named = parse_identity(identity).map_err(|why| {
        exit::usage(format!(
            "{}: refused: not a bundle identity: {why}",
            identity_path.display()
        ))
    })?;
    for (name, digest) in now {
        match named.iter().find(|(n, _)| n == name) {
            Some((_, signed)) if signed == digest => {}
            Some((_, signed)) => {
                return Err(exit::usage(format!(
                    "{}: refused: its sha256 is {digest}, the signed identity says {signed}",
                    shown(name).display()
                )))
            }
            None => {
                return Err(exit::usage(format!(
                    "{}: refused: the signed identity does not name it",
                    shown(name).display()
                )))
            }
        }
    }
    if let Some((name, _)) = named.iter().find(|(n, _)| !now.iter().any(|(m, _)| m == n)) {
        return Err(exit::usage(format!(
            "{}: refused: the signed identity names it, and the bundle lacks it",
            shown(name).display()
        )));
    }
    Ok(())
}

/// What the three files name, checked up front (`verify --bundle-only`'s checks): every blob
/// read against its digest, every blob `index.json` needs present, every file `SHA256SUMS`
/// lists with its checksum.
fn check_contents(dir: &Path) -> Result<()> {
    let faults = crate::bundle_check::faults(dir);
    if faults.is_empty() {
        return Ok(());
    }
    Err(exit::usage(format!(
        "{}: refused: the bundle does not match its signed identity: {}",
        dir.display(),
        faults.join("; ")
    )))
}

/// Every unit the import would read is covered by the signature: an image of the layout at
/// `dir`, or an archive `SHA256SUMS` lists (its checksum then checked before it is sent).
fn check_covered(dir: &Path, units: &[Unit]) -> Result<()> {
    let sums = bundle::read_sums(dir)?.unwrap_or_default();
    let root_index = dir.join(INDEX_JSON);
    for unit in units {
        let covered = if unit.path == root_index {
            true
        } else {
            sums.contains_key(&unit.name)
        };
        if !covered {
            return Err(exit::usage(format!(
                "{}: refused: the bundle's signature does not cover it (it is neither an image \
                 of {} nor listed in its SHA256SUMS)",
                dir.join(&unit.name).display(),
                root_index.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
