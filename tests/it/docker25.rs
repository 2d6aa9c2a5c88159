//! The docker save 25+ layout: an OCI image layout that also carries `manifest.json`.
//!
//! The Docker engine on the test machine is older, so the layout is made from the `ctr export`
//! fixture the way docker 25 writes it: the OCI blobs and index, plus a `manifest.json` whose
//! `Config` and `Layers` point at the blob files, and `RepoTags`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::harness::*;

/// Write `dst`: every entry of the OCI archive `src`, plus `manifest.json` and `repositories`.
/// The index keeps only `org.opencontainers.image.ref.name` = tag, as docker 25 writes it when
/// `io.containerd.image.name` is absent, so the docker name must come from `RepoTags`.
pub fn docker25_from_oci(src: &Path, dst: &Path, repo_tag: &str) -> PathBuf {
    let mut entries: Vec<(tar::Header, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(File::open(src).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.push((entry.header().clone(), data));
    }
    let find = |name: &str| {
        entries
            .iter()
            .find(|(h, _)| h.path().unwrap().to_string_lossy().trim_start_matches("./") == name)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("{name} not in {}", src.display()))
    };
    let index: Value = serde_json::from_slice(&find("index.json")).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| format!("blobs/{}", d.replacen(':', "/", 1));
    let manifest: Value = serde_json::from_slice(&find(&blob(&manifest_digest))).unwrap();
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap()))
        .collect();
    let docker_manifest = json!([{
        "Config": blob(manifest["config"]["digest"].as_str().unwrap()),
        "RepoTags": [repo_tag],
        "Layers": layers,
    }]);
    let tag = repo_tag.rsplit_once(':').unwrap().1;
    let new_index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": index["manifests"][0]["mediaType"],
            "digest": manifest_digest,
            "size": index["manifests"][0]["size"],
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });

    let mut builder = tar::Builder::new(File::create(dst).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append_data(&mut h, name, data).unwrap();
    };
    for (h, data) in &entries {
        let name = h
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if h.entry_type().is_file() && name != "index.json" {
            add(&name, data);
        }
    }
    add("index.json", new_index.to_string().as_bytes());
    add("manifest.json", docker_manifest.to_string().as_bytes());
    add("repositories", b"{}");
    builder.finish().unwrap();
    dst.to_path_buf()
}

#[test]
fn list_reads_the_docker_25_layout_with_its_docker_name_and_oci_digest() {
    let f = fixtures();
    let dir = temp_dir("docker25");
    let archive = docker25_from_oci(
        &f.dir.join("ctr-oci.tar"),
        &dir.join("docker25.tar"),
        &f.alpha.tag,
    );
    let out = stdout_of(offline_images().args(["list", "--json"]).arg(&archive));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["format"], "docker-oci", "{v}");
    let image = &v["images"][0];
    assert_eq!(image["names"], json!([f.alpha.reference]), "{v}");
    assert!(
        image["digest"].as_str().unwrap().starts_with("sha256:"),
        "{v}"
    );
    assert_eq!(
        image["platforms"][0]["config_digest"],
        json!(f.alpha.config_digest),
        "{v}"
    );
}
