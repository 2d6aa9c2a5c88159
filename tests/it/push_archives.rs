//! `push` from a bundle of archives made by the real tools: `docker save` of the rig's dockerd
//! (20.10: the legacy docker-archive), `skopeo copy` to `oci-archive:` (gzip'd) and to
//! `docker-archive:`, and one damaged archive. What the site registry (a private
//! docker-registry) serves is read back over HTTP; a re-push goes through the request-logging
//! proxy of the push tests.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::push::{push, served, UploadProxy};
use crate::harness::*;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// What `addr` (plain HTTP, anonymous) answers for `GET /v2/REPO/WHAT`: status and body.
fn get(addr: &str, repo: &str, what: &str) -> (u16, Vec<u8>) {
    let resp = ureq::get(&format!("http://{addr}/v2/{repo}/{what}"))
        .header("Accept", ACCEPT)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().read_to_vec().unwrap())
}

/// Every file of the plain tar at `path`, by name.
fn tar_files(path: &Path) -> HashMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut files = HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(name.trim_start_matches("./").to_string(), data);
    }
    files
}

/// The manifest digest an OCI archive's `index.json` names, and that manifest's bytes.
fn archive_top(path: &Path) -> (String, Vec<u8>) {
    let files = tar_files(path);
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = digest.strip_prefix("sha256:").unwrap();
    (
        digest.clone(),
        files[&format!("blobs/sha256/{hex}")].clone(),
    )
}

/// What the archives of [`archives`] hold: the two legacy images (docker save, skopeo
/// docker-archive) and the OCI archive's manifest digest and bytes.
struct Made {
    legacy: TestImage,
    docker_archive: TestImage,
    oci_top: String,
    oci_manifest: Vec<u8>,
}

/// The archives the real tools write, in `dir`, and one damaged.
fn archives(dir: &Path) -> Made {
    std::fs::create_dir_all(dir).unwrap();
    // docker save of dockerd 20.10: the legacy docker-archive, no manifest.
    let legacy = build_image("oi-pusharch/legacy:1", "hello from docker save");
    run(docker()
        .args(["save", "-o"])
        .arg(dir.join("legacy.tar"))
        .arg(&legacy.tag));
    // skopeo to an oci-archive whose ref.name is a whole reference, then gzip'd.
    let oci = build_image("oi-pusharch/oci:1", "hello from an oci-archive");
    let oci_tar = dir.join("oci.tar");
    let dest = format!(
        "oci-archive:{}:docker.io/oi-pusharch/oci:1",
        oci_tar.display()
    );
    skopeo_from_daemon(skopeo(), &[], &oci.tag, dest);
    let (oci_top, oci_manifest) = archive_top(&oci_tar);
    run(Command::new("gzip").arg(&oci_tar));
    // skopeo to a docker-archive: manifest.json with RepoTags, layers uncompressed.
    let docker_archive = build_image("oi-pusharch/skopeo:1", "hello from a docker-archive");
    let dest = format!(
        "docker-archive:{}:docker.io/oi-pusharch/skopeo:1",
        dir.join("skopeo.tar").display()
    );
    skopeo_from_daemon(skopeo(), &[], &docker_archive.tag, dest);
    // A save cut in half.
    let whole = std::fs::read(dir.join("legacy.tar")).unwrap();
    std::fs::write(dir.join("damaged.tar"), &whole[..whole.len() / 2]).unwrap();
    Made {
        legacy,
        docker_archive,
        oci_top,
        oci_manifest,
    }
}

/// A legacy image pulls back from `repo`: a manifest push made, of the image's config and
/// its layers (each named by its diff_id), every blob served.
fn assert_legacy_pulls_back(addr: &str, repo: &str, image: &TestImage) {
    let (status, body) = get(addr, repo, "manifests/1");
    assert_eq!(status, 200, "{repo}");
    let m: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        m["config"]["digest"],
        image.config_digest.as_str(),
        "{repo}"
    );
    let (_, config) = get(addr, repo, &format!("blobs/{}", image.config_digest));
    let config: Value = serde_json::from_slice(&config).unwrap();
    let layers: Vec<&Value> = m["layers"].as_array().unwrap().iter().collect();
    let diff_ids: Vec<&Value> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(
        layers.iter().map(|l| &l["digest"]).collect::<Vec<_>>(),
        diff_ids,
        "{repo}"
    );
    for l in layers {
        let digest = l["digest"].as_str().unwrap();
        let (status, _) = get(addr, repo, &format!("blobs/{digest}"));
        assert_eq!(status, 200, "{repo}: {digest}");
    }
}

#[test]
fn archives_of_docker_save_and_skopeo_push_and_pull_back_a_damaged_one_fails_by_name_and_a_re_push_sends_no_blob(
) {
    let reg = PrivateRegistry::start("push-arch", false, RegistryAuth::Anonymous);
    let dir = temp_dir("push-arch").join("images");
    let made = archives(&dir);
    let config = docker_config(&serde_json::json!({}));
    let (code, _, log) = outcome(&mut push(&dir, &format!("{}/site", reg.addr), &config));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("failed: damaged.tar: "), "{log}");
    assert!(
        log.contains("pushed 3 image(s), 0 already present"),
        "{log}"
    );
    assert_eq!(log.matches("carries no manifest").count(), 2, "{log}");
    let repo = |name: &str| format!("site/docker.io/oi-pusharch/{name}");

    // The OCI archive: its manifest, byte for byte, by tag and by digest.
    let top = Some(made.oci_top.clone());
    assert_eq!(served(&reg.addr, &repo("oci"), "1"), top);
    assert_eq!(served(&reg.addr, &repo("oci"), &made.oci_top), top);
    assert!(get(&reg.addr, &repo("oci"), "manifests/1").1 == made.oci_manifest);
    assert_legacy_pulls_back(&reg.addr, &repo("legacy"), &made.legacy);
    assert_legacy_pulls_back(&reg.addr, &repo("skopeo"), &made.docker_archive);

    // Again, through the logging proxy: lookups only, and the damaged one named again.
    let proxy = UploadProxy::start(&reg.addr);
    let (code, _, log) = outcome(&mut push(&dir, &format!("{}/site", proxy.addr), &config));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("failed: damaged.tar: "), "{log}");
    assert!(
        log.contains("pushed 0 image(s), 3 already present"),
        "{log}"
    );
    let requests = proxy.requests();
    assert!(
        !requests.is_empty()
            && requests
                .iter()
                .all(|r| r.starts_with("HEAD ") || r.starts_with("GET /v2/ ")),
        "the re-push sent more than lookups: {requests:#?}"
    );
}

/// A `docker save` of an image whose one layer is `mib` MiB of random bytes (it does not
/// compress), gzip'd in `dir`: the layer's diff_id.
fn big_saved_image(dir: &Path, mib: usize) -> String {
    let tag = "oi-pusharch/big:1";
    build_random_image(tag, mib);
    std::fs::create_dir_all(dir).unwrap();
    run(docker()
        .args(["save", "-o"])
        .arg(dir.join("big.tar"))
        .arg(tag));
    run(Command::new("gzip").args(["-1"]).arg(dir.join("big.tar")));
    let config = stdout_of(docker().args([
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        tag,
    ]));
    let layers: Vec<String> = serde_json::from_str(config.trim()).unwrap();
    layers[0].clone()
}

#[test]
fn a_cut_upload_of_a_layer_of_a_compressed_archive_resumes_from_a_fresh_read() {
    let reg = PrivateRegistry::start("push-arch-cut", false, RegistryAuth::Anonymous);
    let dir = temp_dir("push-arch-cut").join("images");
    let layer = big_saved_image(&dir, 12);
    let proxy = UploadProxy::start(&reg.addr);
    let config = docker_config(&serde_json::json!({}));
    let push_to = |prefix: &str| {
        let mut c = push(&dir, &format!("{}/{prefix}", proxy.addr), &config);
        c.arg("--chunk-size").arg((4 << 20).to_string());
        let (code, _, log) = outcome(&mut c);
        assert_eq!(code, 0, "{log}");
        log
    };
    // Cut before the registry sees the second 4 MiB: it goes on from 4 MiB into the layer,
    // read afresh from the archive.
    proxy.cut_patch(2, 0);
    let log = push_to("resumed");
    assert!(
        log.contains("the registry holds 4194304 bytes of it: going on from there"),
        "{log}"
    );
    // Cut inside its body: distribution forgets the upload, which starts again from a fresh
    // read of the archive.
    proxy.cut_patch(2, 1 << 20);
    let log = push_to("restarted");
    assert!(log.contains("starting it again"), "{log}");
    for prefix in ["resumed", "restarted"] {
        let repo = format!("{prefix}/docker.io/oi-pusharch/big");
        let (status, body) = get(&reg.addr, &repo, "manifests/1");
        assert_eq!(status, 200, "{repo}");
        let m: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(m["layers"][0]["digest"], layer.as_str(), "{repo}");
    }
    let stored = std::fs::read(reg.blob_file(&layer)).unwrap();
    use sha2::Digest as _;
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&stored));
    assert_eq!(digest, layer, "the stored layer is the archive's");
}

#[test]
fn a_ctr_export_compressed_with_zstd_keeps_its_manifest_digest() {
    let d = daemons();
    let reg = PrivateRegistry::start("push-arch-ctr", false, RegistryAuth::Anonymous);
    pushed_image("push-arch-ctr", "hello from ctr export");
    let reference = format!("{}/oi-export/push-arch-ctr:1", d.registry);
    let ns = "oi-push-archives";
    run(ctr(ns).args(["images", "pull", "--plain-http", &reference]));
    let dir = temp_dir("push-arch-ctr").join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join("ctr.tar");
    run(ctr(ns).args(["images", "export"]).arg(&tar).arg(&reference));
    let _ = ctr(ns).args(["images", "rm", &reference]).output();
    let (top, manifest) = archive_top(&tar);
    run(Command::new("zstd").args(["-q", "--rm"]).arg(&tar));
    let config = docker_config(&serde_json::json!({}));
    let (code, _, log) = outcome(&mut push(&dir, &format!("{}/site", reg.addr), &config));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("(in ctr.tar.zst): pushed to"), "{log}");
    let repo = format!(
        "site/{}/oi-export/push-arch-ctr",
        d.registry.replace(':', "_")
    );
    assert_eq!(served(&reg.addr, &repo, "1"), Some(top.clone()));
    assert!(get(&reg.addr, &repo, "manifests/1").1 == manifest);
    // The digest the rig's registry gives the image upstream.
    assert_eq!(
        served(&d.registry, "oi-export/push-arch-ctr", "1"),
        Some(top)
    );
}
