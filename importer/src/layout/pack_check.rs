//! `verify --bundle-only` on a pack (`--images-path FILE`, FILE being a pack or the file its
//! parts join into, or a directory holding packs and no layout of its own): the checks a
//! layout directory gets, on the pack's members in place. Every blob member matches its
//! digest, `SHA256SUMS` holds for the members it lists, `images.json` describes this
//! `index.json` and every blob it records is there, every image of `index.json` has every
//! blob it needs, no member is refused, and `FILE.sha256sums` holds for the file or each part.
//! Each fault is one line on stdout, as for a directory; exit 0 or 1.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::pack::{candidates, may_be, Candidate, Pack, PART_INFIX, SUMS_SUFFIX};
use crate::archive::{human_bytes, Limits};
use crate::bundle::{self, BundleIndex, INDEX_FILE, SUMS_FILE};
use crate::exit::Code;
use crate::layout::blobs::BlobDirs;
use crate::layout::image::{Descriptor, Graph};
use crate::report::{self, prose};

/// What the check found.
#[derive(Default)]
struct Findings {
    faults: Vec<String>,
    blobs: usize,
    bytes: u64,
}

/// The packs `path` names: itself (a file, or parts `path.part-*`), or those directly in a
/// directory that holds no layout and no `SHA256SUMS`. None: no pack, the directory's check.
fn packs_at(path: &Path) -> Option<Vec<Candidate>> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    if path.is_dir() {
        let own = ["oci-layout", "index.json", SUMS_FILE];
        if own.iter().any(|f| path.join(f).exists()) {
            return None;
        }
        let mut files: Vec<PathBuf> = fs::read_dir(path)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                !n.starts_with('.') && may_be(&n)
            })
            .map(|e| e.path())
            .collect();
        files.sort();
        let found = candidates(files);
        return (!found.is_empty()).then_some(found);
    }
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return Some(candidates(vec![path.to_path_buf()]));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let prefix = format!("{name}{}", PART_INFIX);
    let mut parts: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    parts.sort();
    let found = candidates(parts);
    (!found.is_empty()).then_some(found)
}

/// `verify --bundle-only` when `path` names packs (see [`packs_at`]); None otherwise.
pub(crate) fn run(path: &Path, format: report::Format) -> Result<Option<Code>> {
    let Some(found) = packs_at(path) else {
        return Ok(None);
    };
    let mut f = Findings::default();
    let mut packs = 0;
    for candidate in &found {
        match candidate.open(Limits::default()) {
            Ok(Some(pack)) => {
                packs += 1;
                check_pack(&Arc::new(pack), &mut f);
            }
            Ok(None) => {}
            Err(e) => f
                .faults
                .push(format!("{}: {e:#}", candidate.path.display())),
        }
        check_part_sums(&candidate.path, &mut f);
    }
    if packs == 0 && f.faults.is_empty() {
        return Ok(None);
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    for fault in &f.faults {
        match format {
            report::Format::Text => writeln!(out, "fault: {}", prose(fault))?,
            report::Format::Json => writeln!(out, "{}", serde_json::json!({ "fault": fault }))?,
        }
    }
    out.flush()?;
    let what = format!(
        "{packs} packed OCI layout(s), {} blob(s) ({})",
        f.blobs,
        human_bytes(f.bytes)
    );
    if f.faults.is_empty() {
        eprintln!("offline-images: {} ({what}): consistent", path.display());
        Ok(Some(Code::Success))
    } else {
        eprintln!(
            "offline-images: {} ({what}): {} fault(s), listed on stdout",
            path.display(),
            f.faults.len()
        );
        Ok(Some(Code::Failure))
    }
}

/// The pack at `path` (a file, or the file its parts join into), opened; None when `path`
/// names no pack.
pub(crate) fn open(path: &Path) -> Result<Option<Arc<Pack>>> {
    let Some(candidate) = packs_at(path).and_then(|found| found.into_iter().next()) else {
        return Ok(None);
    };
    Ok(candidate.open(Limits::default())?.map(Arc::new))
}

/// Every fault of the pack (as `verify --bundle-only` lists them), none when it is whole.
pub(crate) fn faults(pack: &Arc<Pack>) -> Vec<String> {
    let mut f = Findings::default();
    check_pack(pack, &mut f);
    f.faults
}

/// The hex SHA-256 of the member `name`, or the fault.
pub(crate) fn member_sha256(pack: &Pack, name: &str) -> Result<String, String> {
    let read = pack.open(name).map_err(|e| format!("{e:#}"))?;
    bundle::sha256_reader(read).map_err(|e| format!("{}/{name}: {e}", pack.path.display()))
}

/// Every check of one pack.
fn check_pack(pack: &Arc<Pack>, f: &mut Findings) {
    let shown = pack.path.display().to_string();
    for (member, why) in pack.refused() {
        f.faults
            .push(format!("{shown}: the member {member:?} is {why}"));
    }
    for (name, size) in pack.blobs() {
        let hex = name.trim_start_matches("blobs/sha256/");
        match member_sha256(pack, name) {
            Ok(actual) if actual == hex => {
                f.blobs += 1;
                f.bytes += size;
            }
            Ok(actual) => f.faults.push(format!(
                "{shown}: blob sha256:{hex} is corrupt: it hashes to sha256:{actual}"
            )),
            Err(e) => f.faults.push(e),
        }
    }
    check_sums(pack, f);
    check_images_json(pack, f);
    check_images(pack, f);
}

/// `SHA256SUMS` in the pack, for the members it lists.
fn check_sums(pack: &Pack, f: &mut Findings) {
    let shown = pack.path.display();
    let Ok(text) = pack.read(SUMS_FILE, Limits::default().metadata_max) else {
        return f
            .faults
            .push(format!("{shown}: no readable {SUMS_FILE} in the pack"));
    };
    let sums = match bundle::parse_sums(&String::from_utf8_lossy(&text)) {
        Ok(s) => s,
        Err(e) => return f.faults.push(format!("{shown}/{SUMS_FILE}: {e:#}")),
    };
    for (file, want) in sums {
        match member_sha256(pack, &file) {
            Ok(got) if got == want => {}
            Ok(got) => f.faults.push(format!(
                "{shown}/{file}: {SUMS_FILE} says sha256 {want}, it hashes to {got}"
            )),
            Err(e) => f.faults.push(e),
        }
    }
}

/// `images.json` describes this `index.json`, and every blob it records is in the pack.
fn check_images_json(pack: &Pack, f: &mut Findings) {
    let shown = pack.path.display();
    let index: Option<BundleIndex> = pack
        .read(INDEX_FILE, 64 << 20)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok());
    let Some(layout) = index.and_then(|i| i.layout) else {
        let why = "is not readable or does not describe an OCI layout (no `layout`)";
        return f.faults.push(format!("{shown}/{INDEX_FILE} {why}"));
    };
    match member_sha256(pack, "index.json") {
        Ok(hex) if format!("sha256:{hex}") == layout.index_json_digest => {}
        Ok(hex) => f.faults.push(format!(
            "{shown}/{INDEX_FILE} describes index.json {}, but index.json is sha256:{hex}",
            layout.index_json_digest
        )),
        Err(e) => f.faults.push(e),
    }
    for r in &layout.references {
        for digest in r.blobs() {
            let name = format!("blobs/{}", digest.replacen(':', "/", 1));
            if !matches!(pack.size(&name), Ok(Some(_))) {
                f.faults.push(format!(
                    "{shown}: {INDEX_FILE} records {digest} for {}, not in the pack",
                    r.source.reference
                ));
            }
        }
    }
}

/// Every image of `index.json` has every blob it needs.
fn check_images(pack: &Arc<Pack>, f: &mut Findings) {
    let limits = Limits::default();
    let shown = pack.path.display();
    let list = match super::entries(&pack.path, Some(pack), limits) {
        Ok(list) => list,
        Err(e) => return f.faults.push(format!("{e:#}")),
    };
    let dirs = BlobDirs {
        layout: pack.path.clone(),
        shared: Vec::new(),
        pack: Some(pack.clone()),
    };
    let carried = super::carried_earlier(&pack.path, Some(pack), limits);
    for (i, entry) in list.into_iter().enumerate() {
        let graph = serde_json::from_value::<Descriptor>(entry)
            .map_err(anyhow::Error::from)
            .and_then(|top| Graph::of(&dirs, &top, limits, &carried));
        if let Err(e) = graph {
            f.faults
                .push(format!("{shown}/index.json entry {i}: {e:#}"));
        }
    }
}

/// `FILE.sha256sums` beside the pack, for the file or each part.
fn check_part_sums(joined: &Path, f: &mut Findings) {
    let sums = PathBuf::from(format!("{}{SUMS_SUFFIX}", joined.display()));
    let Ok(text) = fs::read_to_string(&sums) else {
        return;
    };
    let listed = match bundle::parse_sums(&text) {
        Ok(l) => l,
        Err(e) => return f.faults.push(format!("{}: {e:#}", sums.display())),
    };
    for (file, want) in listed {
        if file.contains('/') {
            f.faults.push(format!(
                "{}: {file:?} is not a name beside it",
                sums.display()
            ));
            continue;
        }
        let path = joined.with_file_name(&file);
        match bundle::sha256_file(&path) {
            Ok(got) if got == want => {}
            Ok(got) => f.faults.push(format!(
                "{}: {} says sha256 {want}, it hashes to {got}",
                path.display(),
                sums.display()
            )),
            Err(e) => f.faults.push(format!("{}: {e:#}", path.display())),
        }
    }
}
