//! `verify --bundle-only`: the bundle checked on its own, with no runtime. For an OCI layout
//! bundle (`export --format layout`): every blob matches its digest, every blob `index.json`
//! needs is there (each manifest's config and layers; a multi-platform index's manifests
//! where the bundle holds them, and every one `images.json` records), `images.json`
//! describes this `index.json`, and `SHA256SUMS` holds. For a bundle of archives,
//! `SHA256SUMS` alone. Each fault is one line on stdout; exit 0 or 1.
//!
//! The three files a layout export replaces together are read as its last commit made
//! them (`bundle::read_committed`), so a bundle whose export was killed while it put them in
//! place is judged as the next export completes it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use anyhow::Result;
use serde::Deserialize;

use crate::archive::{check_images_path, human_bytes};
use crate::bundle::{self, BundleIndex, INDEX_FILE, SUMS_FILE};
use crate::exit::Code;
use crate::report::{self, prose};

const OCI_LAYOUT_FILE: &str = "oci-layout";
const INDEX_JSON: &str = "index.json";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
}

/// A manifest or an index, as far as the check needs it.
#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// What the check found.
#[derive(Default)]
struct Findings {
    faults: Vec<String>,
    /// Blobs read and their bytes.
    blobs: usize,
    bytes: u64,
    /// Layers `images.json` names as carried by earlier bundles (`export --since`): needed
    /// and not here, as it says.
    carried: BTreeMap<String, u64>,
    earlier: Vec<bundle::BundleId>,
}

pub fn run(dir: &Path, format: report::Format) -> Result<Code> {
    // A pack (`export --pack`), its parts, or a directory of packs: checked in place.
    if let Some(code) = crate::layout::pack_check::run(dir, format)? {
        return Ok(code);
    }
    check_images_path(dir)?;
    let layout = dir.join(OCI_LAYOUT_FILE).exists() || dir.join(INDEX_JSON).exists();
    let mut found = Findings::default();
    if layout {
        check_layout(dir, &mut found);
    } else {
        check_sums(dir, &mut found, &[]);
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    for fault in &found.faults {
        match format {
            report::Format::Text => writeln!(out, "fault: {}", prose(fault))?,
            report::Format::Json => {
                writeln!(out, "{}", serde_json::json!({ "fault": fault }))?;
            }
        }
    }
    out.flush()?;
    let what = if layout && !found.carried.is_empty() {
        let ids: Vec<String> = found.earlier.iter().map(ToString::to_string).collect();
        format!(
            "OCI layout, {} blob(s) ({}); {} layer(s) ({}) carried earlier, by {}",
            found.blobs,
            human_bytes(found.bytes),
            found.carried.len(),
            human_bytes(found.carried.values().sum()),
            ids.join(", ")
        )
    } else if layout {
        format!(
            "OCI layout, {} blob(s) ({})",
            found.blobs,
            human_bytes(found.bytes)
        )
    } else {
        "bundle of archives, SHA256SUMS".to_string()
    };
    if found.faults.is_empty() {
        eprintln!("offline-images: {} ({what}): consistent", dir.display());
        Ok(Code::Success)
    } else {
        eprintln!(
            "offline-images: {} ({what}): {} fault(s), listed on stdout",
            dir.display(),
            found.faults.len()
        );
        Ok(Code::Failure)
    }
}

/// The faults `verify --bundle-only` finds in the bundle directory `dir` (a layout's blobs,
/// the blobs its `index.json` and `images.json` need, `SHA256SUMS`), without printing them:
/// what `import --verify-key` checks before importing anything.
pub(crate) fn faults(dir: &Path) -> Vec<String> {
    let mut found = Findings::default();
    if dir.join(OCI_LAYOUT_FILE).exists() || dir.join(INDEX_JSON).exists() {
        check_layout(dir, &mut found);
    } else {
        check_sums(dir, &mut found, &[]);
    }
    found.faults
}

/// The OCI layout in `dir`, every check in turn.
fn check_layout(dir: &Path, found: &mut Findings) {
    match fs::read(dir.join(OCI_LAYOUT_FILE)) {
        Ok(data) => {
            let v: Option<serde_json::Value> = serde_json::from_slice(&data).ok();
            if v.as_ref()
                .and_then(|v| v["imageLayoutVersion"].as_str())
                .is_none()
            {
                found
                    .faults
                    .push("oci-layout has no imageLayoutVersion".to_string());
            }
        }
        Err(e) => found.faults.push(format!("oci-layout cannot be read: {e}")),
    }
    let present = check_blobs(dir, found);
    let index_json = match bundle::read_committed(dir, INDEX_JSON) {
        Ok(d) => d,
        Err(e) => {
            found.faults.push(format!("index.json cannot be read: {e}"));
            check_sums(dir, found, &[INDEX_JSON, INDEX_FILE, OCI_LAYOUT_FILE]);
            return;
        }
    };
    let recorded = check_images_json(dir, &index_json, found);
    check_needed(dir, &index_json, &recorded, &present, found);
    check_sums(dir, found, &[INDEX_JSON, INDEX_FILE, OCI_LAYOUT_FILE]);
}

/// Every blob under `blobs/sha256/` read and matched against its name; the size of each.
fn check_blobs(dir: &Path, found: &mut Findings) -> BTreeMap<String, u64> {
    let mut present = BTreeMap::new();
    let blobs = dir.join("blobs").join("sha256");
    let entries = match fs::read_dir(&blobs) {
        Ok(e) => e,
        Err(e) => {
            found
                .faults
                .push(format!("blobs/sha256 cannot be read: {e}"));
            return present;
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    for name in names {
        let path = blobs.join(&name);
        let hex_name = name.len() == 64
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_name {
            found.faults.push(format!(
                "blobs/sha256/{name} is not named by a sha256 digest"
            ));
            continue;
        }
        match bundle::sha256_file(&path) {
            Ok(got) if got == name => {
                let size = fs::metadata(&path).map_or(0, |m| m.len());
                found.blobs += 1;
                found.bytes += size;
                present.insert(format!("sha256:{name}"), size);
            }
            Ok(got) => found.faults.push(format!(
                "blobs/sha256/{name} does not match its digest (its content is sha256:{got})"
            )),
            Err(e) => found.faults.push(format!("blobs/sha256/{name}: {e:#}")),
        }
    }
    present
}

/// `images.json` read, its identity matched with `index_json`; the blobs its records name
/// (each with the reference that needs it).
fn check_images_json(dir: &Path, index_json: &[u8], found: &mut Findings) -> Vec<(String, String)> {
    let data = match bundle::read_committed(dir, INDEX_FILE) {
        Ok(d) => d,
        Err(e) => {
            found
                .faults
                .push(format!("images.json cannot be read: {e}"));
            return Vec::new();
        }
    };
    let index: BundleIndex = match serde_json::from_slice(&data) {
        Ok(i) => i,
        Err(e) => {
            found.faults.push(format!("images.json is not valid: {e}"));
            return Vec::new();
        }
    };
    let Some(layout) = index.layout else {
        found
            .faults
            .push("images.json does not describe an OCI layout (no `layout`)".to_string());
        return Vec::new();
    };
    let digest = format!(
        "sha256:{}",
        bundle::sha256_reader(index_json).unwrap_or_default()
    );
    if layout.index_json_digest != digest {
        found.faults.push(format!(
            "images.json describes the index.json {}, but index.json is {digest}",
            layout.index_json_digest
        ));
    }
    found.carried = layout
        .carried_earlier
        .iter()
        .map(|c| (c.digest.clone(), c.size))
        .collect();
    found.earlier = layout.builds_on.clone();
    let mut out = Vec::new();
    for r in &layout.references {
        for blob in r.blobs() {
            out.push((blob.to_string(), r.source.reference.clone()));
        }
    }
    out
}

/// Every blob `index.json` and `images.json` need is there, of the size its descriptor says.
fn check_needed(
    dir: &Path,
    index_json: &[u8],
    recorded: &[(String, String)],
    present: &BTreeMap<String, u64>,
    found: &mut Findings,
) {
    let top: Document = match serde_json::from_slice(index_json) {
        Ok(d) => d,
        Err(e) => {
            found.faults.push(format!("index.json is not valid: {e}"));
            return;
        }
    };
    // (descriptor, who needs it, whether its absence is a fault)
    let mut queue: VecDeque<(Descriptor, String, bool)> = top
        .manifests
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d, "index.json".to_string(), true))
        .collect();
    let mut seen = BTreeSet::new();
    let mut missing = BTreeSet::new();
    while let Some((d, parent, required)) = queue.pop_front() {
        let Some(&size) = present
            .get(&d.digest)
            .or_else(|| found.carried.get(&d.digest))
        else {
            if required && missing.insert(d.digest.clone()) {
                found
                    .faults
                    .push(format!("{} is missing (needed by {parent})", d.digest));
            }
            continue;
        };
        if size != d.size {
            found.faults.push(format!(
                "{} is {size} bytes, but {parent} says {}",
                d.digest, d.size
            ));
        }
        if !seen.insert(d.digest.clone()) || !d.media_type.contains("json") {
            continue;
        }
        let path = dir.join("blobs").join(d.digest.replacen(':', "/", 1));
        let Ok(doc) = fs::read(&path)
            .map_err(drop)
            .and_then(|b| serde_json::from_slice::<Document>(&b).map_err(drop))
        else {
            continue;
        };
        let me = d.digest.clone();
        // An index's other platforms need not be there; what images.json records must.
        for m in doc.manifests.unwrap_or_default() {
            queue.push_back((m, me.clone(), false));
        }
        for c in doc.config.into_iter().chain(doc.layers) {
            queue.push_back((c, me.clone(), true));
        }
    }
    for (digest, reference) in recorded {
        let here = present.contains_key(digest) || found.carried.contains_key(digest);
        if !here && missing.insert(digest.clone()) {
            found.faults.push(format!(
                "{digest} is missing (needed by {reference}, as images.json records it)"
            ));
        }
    }
}

/// `SHA256SUMS` holds: every file it lists has its checksum, and it lists each of `must`.
fn check_sums(dir: &Path, found: &mut Findings, must: &[&str]) {
    let text = match bundle::read_committed(dir, SUMS_FILE) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) => {
            found.faults.push(format!("SHA256SUMS cannot be read: {e}"));
            return;
        }
    };
    let sums = match bundle::parse_sums(&text) {
        Ok(s) => s,
        Err(e) => {
            found.faults.push(format!("SHA256SUMS is not valid: {e:#}"));
            return;
        }
    };
    for name in must {
        if !sums.contains_key(*name) {
            found
                .faults
                .push(format!("SHA256SUMS does not list {name}"));
        }
    }
    for (file, want) in &sums {
        // The files a commit replaces as it made them; any other streamed from disk.
        let got = if [INDEX_JSON, INDEX_FILE].contains(&file.as_str()) {
            bundle::read_committed(dir, file)
                .map_err(anyhow::Error::from)
                .and_then(|d| Ok(bundle::sha256_reader(&d[..])?))
        } else {
            bundle::sha256_file(&dir.join(file))
        };
        match got {
            Ok(got) if &got == want => {}
            Ok(got) => found.faults.push(format!(
                "{file} does not match SHA256SUMS (sha256 {got}, listed {want})"
            )),
            Err(e) => found.faults.push(format!("{file} cannot be read: {e:#}")),
        }
    }
}
