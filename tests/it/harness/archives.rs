//! Archives written or read byte by byte: raw tars, multi-platform and big layouts.

use std::path::Path;
use std::process::Command;

use super::run::{stdout_of, temp_dir};

/// Rewrite the single-image OCI archive `src` (as `ctr export` writes it) into `dst`, whose
/// index.json names `name` and points to an index of two platforms: the archive's own
/// manifest (linux/amd64, every blob present) and a linux/arm64 manifest whose blobs are
/// absent, as `ctr export --platform linux/amd64` writes a multi-platform image.
pub fn multi_platform_oci(src: &Path, dst: &Path, name: &str) {
    use sha2::{Digest, Sha256};
    let hex = |d: &[u8]| offline_images::bundle::hex(&Sha256::digest(d));
    let mut files = tar_files(src);
    let index_at = files.iter().position(|(n, _)| n == "index.json").unwrap();
    let old: serde_json::Value = serde_json::from_slice(&files[index_at].1).unwrap();
    let mut amd64 = old["manifests"][0].clone();
    amd64.as_object_mut().unwrap().remove("annotations");
    amd64["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            amd64,
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", hex(b"an arm64 manifest that is not in this archive")),
                "size": 500,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}
            }
        ]
    }))
    .unwrap();
    let inner_hex = hex(&inner);
    files[index_at].1 = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{inner_hex}"),
            "size": inner.len(),
            "annotations": {"io.containerd.image.name": name}
        }]
    }))
    .unwrap();
    files.insert(index_at, (format!("blobs/sha256/{inner_hex}"), inner));
    let mut b = tar::Builder::new(std::fs::File::create(dst).unwrap());
    for (path, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

/// A docker-archive holding one image whose single layer is `layer_mib` MiB of zeros: big
/// enough that importing it takes a while.
pub fn big_docker_archive(dst: &Path, name: &str, layer_mib: u64) {
    let dir = temp_dir("big");
    let layer = dir.join("layer.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&layer).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(layer_mib << 20);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), layer_mib << 20),
        )
        .unwrap();
        b.finish().unwrap();
    }
    let layer_sha = stdout_of(Command::new("sha256sum").arg(&layer));
    let layer_sha = layer_sha.split_whitespace().next().unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_sha}"]}}}}"#
    );
    let manifest = format!(
        r#"[{{"Config":"config.json","RepoTags":["{name}"],"Layers":["{layer_sha}/layer.tar"]}}]"#
    );
    let mut b = tar::Builder::new(std::fs::File::create(dst).unwrap());
    b.append_path_with_name(&layer, format!("{layer_sha}/layer.tar"))
        .unwrap();
    for (n, data) in [("config.json", config), ("manifest.json", manifest)] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, n, data.as_bytes()).unwrap();
    }
    b.finish().unwrap();
    std::fs::remove_file(&layer).unwrap();
}

/// Bytes of a tar archive holding `files`, names written as given (even `../x` or `/x`, which
/// the tar crate's own path setters refuse).
pub fn raw_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_old();
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Every regular file of a tar archive, in order.
pub fn tar_files(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        files.push((name, data));
    }
    files
}

/// Symlinks in a tar archive: (name, target).
pub fn tar_symlinks(path: &Path) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            if !e.header().entry_type().is_symlink() {
                return None;
            }
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let target = e.link_name().unwrap()?.to_string_lossy().into_owned();
            Some((name, target))
        })
        .collect()
}
