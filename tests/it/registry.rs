//! The registry engine against real registries: the rig's plain-HTTP docker-registry, and
//! docker-registry instances started here over TLS (a CA made with openssl), with htpasswd
//! auth and behind a token server. Export runs with no docker, podman or skopeo on PATH; the
//! bundles are imported into the real containerd and dockerd.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The digest the plain-HTTP registry `addr` serves for `path:reference`, from its
/// `Docker-Content-Digest` header.
pub fn registry_digest(addr: &str, path: &str, reference: &str) -> String {
    let resp = ureq::get(&format!("http://{addr}/v2/{path}/manifests/{reference}"))
        .header("Accept", ACCEPT)
        .call()
        .unwrap();
    resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

fn file_of(reference: &str) -> String {
    let r = offline_images::reference::Reference::parse(reference).unwrap();
    format!("{}.tar", r.file_stem())
}

fn entry(dir: &Path, reference: &str) -> Value {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("images.json")).unwrap()).unwrap();
    let file = file_of(reference);
    v["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["file"] == file.as_str())
        .unwrap_or_else(|| panic!("{file} not in images.json: {v}"))
        .clone()
}

fn sha256sum_check(dir: &Path) {
    run(Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir));
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Import `bundle` into `d`'s containerd (a fresh namespace, with the client the suite runs
/// with and `d`'s own ctr) and check that every name in `expect` (name, target digest) exists
/// with that target; run `run_from` and return what it printed.
pub fn check_containerd_import(
    d: &Daemons,
    bundle: &Path,
    expect: &[(String, String)],
    run_from: &str,
) -> String {
    let ns = unique_namespace("registry-import");
    let (code, _, stderr) = outcome(&mut d.against_containerd("import", bundle, &ns));
    assert_eq!(code, 0, "{}: {stderr}", d.label);
    let listed: Vec<(String, String)> = stdout_of(d.ctr(&ns).args(["images", "ls"]))
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect();
    for (name, target) in expect {
        assert!(
            listed.iter().any(|(n, t)| n == name && t == target),
            "{}: {name} -> {target} not in containerd after import: {listed:?}\n{stderr}",
            d.label
        );
    }
    stdout_of(
        d.ctr(&ns)
            .args(["run", "--rm", run_from, &format!("{ns}-run")]),
    )
}

/// What a Docker must hold after loading a registry bundle.
pub struct DockerExpect<'a> {
    /// The tag references, each with its image's config digest.
    pub tags: &'a [(String, String)],
    /// Every name a pod may use (tags and digest references), with its target digest.
    pub names: &'a [(String, String)],
    /// A digest reference to run, and what it prints.
    pub run: (&'a str, &'a str),
}

/// Load `bundle` into `d`'s dockerd with the importer. On the classic store each tag's image
/// ID is its config digest and one line per archive says the digest references cannot be
/// served; on the containerd image store every name in `expect.names` resolves to its target
/// and a container runs from a digest name. Returns the import's log.
pub fn check_docker_import(d: &Daemons, bundle: &Path, expect: &DockerExpect) -> String {
    let rmi = |name: &str| {
        let _ = d
            .docker()
            .args(["image", "rm", "--force", "--no-prune", name])
            .stdin(std::process::Stdio::null())
            .output();
    };
    expect.names.iter().for_each(|(n, _)| rmi(n));
    let (code, _, log) = outcome(&mut d.against_docker("import", bundle));
    assert_eq!(code, 0, "{}: {log}", d.label);
    let notes = log
        .lines()
        .filter(|l| l.contains("classic image store cannot serve digest references"))
        .count();
    if d.docker_containerd_store() {
        assert_eq!(notes, 0, "{}: {log}", d.label);
        for (name, target) in expect.names {
            assert_eq!(
                d.docker_image_id(name).as_deref(),
                Some(target.as_str()),
                "{}: {name} after the import:\n{log}",
                d.label
            );
        }
        let (name, message) = expect.run;
        let out = stdout_of(d.docker().args(["run", "--rm", "--network", "none", name]));
        assert_eq!(out.trim(), message, "{}: {name}", d.label);
    } else {
        for (tag, config) in expect.tags {
            assert_eq!(
                d.docker_image_id(tag).as_deref(),
                Some(config.as_str()),
                "{}: {tag}:\n{log}",
                d.label
            );
        }
        assert_eq!(notes, archives_in(bundle), "{}: {log}", d.label);
    }
    expect.names.iter().for_each(|(n, _)| rmi(n));
    log
}

/// The number of archives `images.json` lists.
fn archives_in(bundle: &Path) -> usize {
    let v: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("images.json")).unwrap()).unwrap();
    v["archives"].as_array().unwrap().len()
}

/// Each containerd version of the matrix once (the first pair that has it).
pub fn containerd_versions() -> Vec<&'static Daemons> {
    let mut seen: Vec<&'static Daemons> = Vec::new();
    for d in every_version() {
        if !seen
            .iter()
            .any(|s| s.containerd_version == d.containerd_version)
        {
            seen.push(d);
        }
    }
    seen
}

#[test]
fn an_image_exported_by_tag_and_one_by_digest_keep_the_registry_digest_on_every_runtime_version() {
    let d = daemons();
    let reg = &d.registry;
    let tagged = pushed_image("reg-tag", "hello from the registry by tag");
    let pinned = pushed_image("reg-digest", "hello from the registry by digest");
    let tag_digest = registry_digest(reg, "oi-export/reg-tag", "1");
    let pin_digest = registry_digest(reg, "oi-export/reg-digest", "1");
    let pinned_ref = format!("{reg}/oi-export/reg-digest:1@{pin_digest}");

    let out_dir = temp_dir("registry-export").join("images");
    let (code, _, log) =
        outcome(registry_export(&out_dir, &bare_path(&[])).args([&tagged.reference, &pinned_ref]));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains('\r') && !log.contains('\x1b'), "{log}");
    sha256sum_check(&out_dir);
    assert!(!names_in(&out_dir).iter().any(|n| n.starts_with('.')));

    for (reference, image, digest) in [
        (&tagged.reference, &tagged, &tag_digest),
        (&pinned_ref, &pinned, &pin_digest),
    ] {
        let e = entry(&out_dir, reference);
        assert_eq!(e["format"], "oci");
        assert_eq!(e["source"]["reference"], reference.as_str());
        assert_eq!(e["source"]["digest"], digest.as_str());
        assert_eq!(e["images"][0]["manifest_digest"], digest.as_str());
        assert_eq!(
            e["images"][0]["config_digest"],
            image.config_digest.as_str()
        );
        assert_eq!(e["images"][0]["platform"], "linux/amd64");
        let layers = e["images"][0]["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "{e}");
        assert!(layers.iter().all(|l| l["size"].as_u64().unwrap() > 0));
        // The registry's bytes: the archive holds the manifest under its registry digest.
        let files = tar_files(&out_dir.join(file_of(reference)));
        let manifest = files
            .iter()
            .find(|(n, _)| *n == format!("blobs/sha256/{}", &digest[7..]))
            .unwrap_or_else(|| panic!("the manifest {digest} is not in the archive"));
        let resp = ureq::get(&format!(
            "http://{reg}/v2/{}/manifests/{digest}",
            if image.tag.contains("reg-tag") {
                "oi-export/reg-tag"
            } else {
                "oi-export/reg-digest"
            }
        ))
        .header("Accept", ACCEPT)
        .call()
        .unwrap();
        assert_eq!(resp.into_body().read_to_vec().unwrap(), manifest.1);
    }

    let repo_tag = |i: &TestImage| i.reference.clone();
    let repo_at = |i: &TestImage, dg: &str| format!("{}@{dg}", i.reference.trim_end_matches(":1"));
    let expect = vec![
        (repo_tag(&tagged), tag_digest.clone()),
        (repo_at(&tagged, &tag_digest), tag_digest.clone()),
        (repo_tag(&pinned), pin_digest.clone()),
        (repo_at(&pinned, &pin_digest), pin_digest.clone()),
    ];
    for c in containerd_versions() {
        let said = check_containerd_import(c, &out_dir, &expect, &repo_at(&pinned, &pin_digest));
        assert_eq!(
            said.trim(),
            "hello from the registry by digest",
            "{}",
            c.label
        );
    }

    // The classic store: loaded by tag, and one line per archive says the digest names cannot
    // be served there, naming them. The containerd image store holds every name.
    let tags = [
        (tagged.tag.clone(), tagged.config_digest.clone()),
        (pinned.tag.clone(), pinned.config_digest.clone()),
    ];
    let pinned_at = repo_at(&pinned, &pin_digest);
    let want = DockerExpect {
        tags: &tags,
        names: &expect,
        run: (&pinned_at, "hello from the registry by digest"),
    };
    for d in every_version() {
        let log = check_docker_import(d, &out_dir, &want);
        if !d.docker_containerd_store() {
            let note = log
                .lines()
                .find(|l| l.contains(&repo_at(&tagged, &tag_digest)))
                .unwrap_or_else(|| panic!("{}: no line names the digest name:\n{log}", d.label));
            assert!(note.contains("cannot serve digest references"), "{note}");
        }
    }
}

/// Build an image for `platform` FROM scratch around the static busybox.
pub fn build_for(tag: &str, platform: &str, message: &str) {
    let ctx = temp_dir("build-platform");
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    std::fs::write(ctx.join("message"), format!("{message}\n")).unwrap();
    // A first layer of its own: the classic builder's cache ignores the platform, so the
    // busybox step of this image must never be the cached step of another image's build.
    std::fs::write(ctx.join("platform"), format!("{platform} {tag}\n")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY platform /platform\nCOPY busybox /bin/busybox\n\
         COPY message /message\nENTRYPOINT [\"/bin/busybox\"]\nCMD [\"cat\", \"/message\"]\n",
    )
    .unwrap();
    run(docker()
        .args(["build", "-q", "--platform", platform, "-t", tag])
        .arg(&ctx));
}

#[test]
fn a_multi_platform_index_exported_for_amd64_keeps_the_index_digest_and_imports_by_it_everywhere() {
    let d = daemons();
    let reg = &d.registry;
    let repo = "oi-export/multi";
    let (mut descriptors, mut configs) = (Vec::new(), Vec::new());
    for arch in ["amd64", "arm64"] {
        let tag = format!("{reg}/{repo}:{arch}");
        build_for(
            &tag,
            &format!("linux/{arch}"),
            &format!("hello from {arch}"),
        );
        run(docker().args(["push", "-q", &tag]));
        docker_rmi(&tag);
        let resp = ureq::get(&format!("http://{reg}/v2/{repo}/manifests/{arch}"))
            .header("Accept", ACCEPT)
            .call()
            .unwrap();
        let media_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        let digest = resp.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string();
        let body = resp.into_body().read_to_vec().unwrap();
        let size = body.len();
        let manifest: Value = serde_json::from_slice(&body).unwrap();
        configs.push(manifest["config"]["digest"].as_str().unwrap().to_string());
        descriptors.push(serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": size,
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": descriptors,
    }))
    .unwrap();
    ureq::put(&format!("http://{reg}/v2/{repo}/manifests/1"))
        .header(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send(&index[..])
        .unwrap();
    let index_digest = registry_digest(reg, repo, "1");
    let amd64 = descriptors[0]["digest"].as_str().unwrap().to_string();
    let arm64 = descriptors[1]["digest"].as_str().unwrap().to_string();

    let reference = format!("{reg}/{repo}:1");
    let out_dir = temp_dir("registry-multi").join("images");
    let (code, _, log) = outcome(registry_export(&out_dir, &bare_path(&[])).args([
        "--platform",
        "linux/amd64",
        &reference,
    ]));
    assert_eq!(code, 0, "{log}");
    let e = entry(&out_dir, &reference);
    assert_eq!(e["source"]["index_digest"], index_digest.as_str());
    assert_eq!(e["images"].as_array().unwrap().len(), 1, "{e}");
    assert_eq!(e["images"][0]["manifest_digest"], amd64.as_str());
    let blobs: Vec<String> = tar_files(&out_dir.join(file_of(&reference)))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        blobs.contains(&format!("blobs/sha256/{}", &index_digest[7..])),
        "{blobs:?}"
    );
    assert!(
        !blobs.contains(&format!("blobs/sha256/{}", &arm64[7..])),
        "{blobs:?}"
    );

    let base = format!("{reg}/{repo}");
    let expect = vec![
        (reference.clone(), index_digest.clone()),
        (format!("{base}@{index_digest}"), index_digest.clone()),
        (format!("{base}@{amd64}"), amd64.clone()),
    ];
    let at_index = format!("{base}@{index_digest}");
    for c in containerd_versions() {
        let said = check_containerd_import(c, &out_dir, &expect, &at_index);
        assert_eq!(said.trim(), "hello from amd64", "{}", c.label);
    }
    let tags = [(reference.clone(), configs[0].clone())];
    let want = DockerExpect {
        tags: &tags,
        names: &expect,
        run: (&at_index, "hello from amd64"),
    };
    for d in every_version() {
        check_docker_import(d, &out_dir, &want);
    }
}

#[test]
fn a_layer_corrupted_in_the_registry_is_refused_by_its_digest_and_nothing_half_written_stays() {
    let reg = PrivateRegistry::start("registry-corrupt", false, RegistryAuth::Anonymous);
    let bad_image = build_image(&unique_tag("corrupt"), "hello from a corrupt layer");
    let good_image = build_image(&unique_tag("intact"), "hello from an intact image");
    let bad = reg.push(&bad_image, "oi/corrupt:1");
    let good = reg.push(&good_image, "oi/intact:1");
    let manifest: Value = serde_json::from_slice(
        &ureq::get(&format!("http://{}/v2/oi/corrupt/manifests/1", reg.addr))
            .header("Accept", ACCEPT)
            .call()
            .unwrap()
            .into_body()
            .read_to_vec()
            .unwrap(),
    )
    .unwrap();
    // The image's own layer (its message), not the busybox layer the other image shares.
    let layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let file = reg.blob_file(&layer);
    let mut data = std::fs::read(&file).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&file, data).unwrap();

    let dir = temp_dir("registry-corrupt-out");
    let cache = dir.join("cache");
    let out_dir = dir.join("images");
    let (code, _, log) = outcome(
        registry_export(&out_dir, &bare_path(&[]))
            .arg("--cache-dir")
            .arg(&cache)
            .args([&bad, &good]),
    );
    assert_eq!(code, 1, "{log}");
    let failed = log
        .lines()
        .find(|l| l.starts_with(&format!("offline-images: failed: {bad}: ")))
        .unwrap_or_else(|| panic!("no failure line for {bad}:\n{log}"));
    assert!(
        failed.contains(&format!("should have the digest {layer}")),
        "{failed}"
    );
    assert_eq!(
        names_in(&out_dir),
        sorted(vec![
            "SHA256SUMS".into(),
            file_of(&good),
            "images.json".into()
        ])
    );
    sha256sum_check(&out_dir);
    let hex = &layer[7..];
    assert!(!cache.join("blobs/sha256").join(hex).exists());
    assert!(std::fs::read_dir(cache.join("tmp"))
        .unwrap()
        .next()
        .is_none());
}

fn auth_config(addr: &str, user: &str, password: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    docker_config(&serde_json::json!({"auths": {addr: {"auth": auth}}}))
}

#[test]
fn htpasswd_over_tls_exports_with_the_docker_config_and_a_wrong_password_fails_that_image_only() {
    let reg = PrivateRegistry::start("registry-htpasswd", true, RegistryAuth::Htpasswd);
    let image = build_image(&unique_tag("htpasswd"), "hello from behind htpasswd");
    let reference = reg.push(&image, "oi/private:1");
    let ca = reg.ca.clone().unwrap();
    let open = pushed_image("reg-open", "hello from the open registry");

    let out_dir = temp_dir("registry-htpasswd").join("images");
    let good = auth_config(&reg.addr, reg.user, reg.password);
    let (code, _, log) = outcome(
        registry_export(&out_dir, &bare_path(&[]))
            .env("DOCKER_CONFIG", &good)
            .arg("--ca-file")
            .arg(&ca)
            .arg(&reference),
    );
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        entry(&out_dir, &reference)["images"][0]["config_digest"],
        image.config_digest.as_str()
    );

    // Without the CA the certificate is not trusted, and plain HTTP is no fallback for TLS.
    let (code, _, log) = outcome(
        registry_export(&temp_dir("registry-no-ca"), &bare_path(&[]))
            .env("DOCKER_CONFIG", &good)
            .arg(&reference),
    );
    assert_eq!(code, 1, "{log}");
    assert!(log.to_lowercase().contains("certificate"), "{log}");

    let wrong = auth_config(&reg.addr, reg.user, "not-the-password");
    let out_dir = temp_dir("registry-wrong").join("images");
    let (code, _, log) = outcome(
        registry_export(&out_dir, &bare_path(&[]))
            .env("DOCKER_CONFIG", &wrong)
            .arg("--ca-file")
            .arg(&ca)
            .args([&reference, &open.reference]),
    );
    assert_eq!(code, 1, "{log}");
    let failed = log
        .lines()
        .find(|l| l.starts_with(&format!("offline-images: failed: {reference}: ")))
        .unwrap_or_else(|| panic!("no failure line for {reference}:\n{log}"));
    assert!(failed.contains("401 Unauthorized"), "{failed}");
    assert!(!log.contains("not-the-password"), "{log}");
    assert_eq!(
        names_in(&out_dir),
        sorted(vec![
            "SHA256SUMS".into(),
            file_of(&open.reference),
            "images.json".into()
        ])
    );
}

#[test]
fn a_token_registry_exports_with_a_credential_helper_a_config_file_and_password_stdin() {
    let reg = PrivateRegistry::start("registry-token", false, RegistryAuth::Token);
    let image = build_image(&unique_tag("token"), "hello from behind a token server");
    let reference = reg.push(&image, "oi/tokened:1");
    let helper = format!(
        "#!/bin/sh\nread server\nif [ \"$server\" != \"{}\" ]; then echo 'credentials not found in native keychain'; exit 1; fi\n\
         echo '{{\"ServerURL\":\"{}\",\"Username\":\"{}\",\"Secret\":\"{}\"}}'\n",
        reg.addr, reg.addr, reg.user, reg.password
    );
    let path = bare_path(&[("docker-credential-oitest", &helper)]);
    let helper_config =
        docker_config(&serde_json::json!({"credHelpers": {reg.addr.as_str(): "oitest"}}));
    let file_config = auth_config(&reg.addr, reg.user, reg.password);
    let anonymous = docker_config(&serde_json::json!({}));

    for (how, config) in [("helper", &helper_config), ("config file", &file_config)] {
        let out_dir = temp_dir("registry-token-out").join("images");
        let (code, _, log) = outcome(
            registry_export(&out_dir, &path)
                .env("DOCKER_CONFIG", config)
                .arg(&reference),
        );
        assert_eq!(code, 0, "{how}: {log}");
        assert_eq!(
            entry(&out_dir, &reference)["images"][0]["config_digest"],
            image.config_digest.as_str(),
            "{how}"
        );
    }

    let out_dir = temp_dir("registry-token-stdin").join("images");
    let out = run_with_stdin(
        registry_export(&out_dir, &path)
            .env("DOCKER_CONFIG", &anonymous)
            .args(["--username", reg.user, "--password-stdin", &reference]),
        format!("{}\n", reg.password).as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, _, log) = outcome(
        registry_export(&temp_dir("registry-token-anon"), &path)
            .env("DOCKER_CONFIG", &anonymous)
            .arg(&reference),
    );
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("401"), "{log}");
}

/// Export `reference` into `out` with the blob cache `cache`; the log, the export having
/// succeeded.
fn cached_export(out: &Path, cache: &Path, reference: &str) -> String {
    let (code, _, log) = outcome(
        registry_export(out, &bare_path(&[]))
            .arg("--cache-dir")
            .arg(cache)
            .arg(reference),
    );
    assert_eq!(code, 0, "{log}");
    log
}

#[test]
fn the_blob_cache_is_shared_across_bundles_and_a_second_run_downloads_nothing() {
    let image = pushed_image("reg-cache", "hello from the cache");
    let dir = temp_dir("registry-cache");
    let cache = dir.join("cache");
    let export = |out: &Path| cached_export(out, &cache, &image.reference);
    let first = export(&dir.join("one"));
    assert!(!first.contains(", 0 B downloaded"), "{first}");
    let second = export(&dir.join("two"));
    assert!(second.contains(", 0 B downloaded"), "{second}");
    assert_eq!(
        std::fs::read(dir.join("one").join(file_of(&image.reference))).unwrap(),
        std::fs::read(dir.join("two").join(file_of(&image.reference))).unwrap()
    );
    // The same bundle again: the registry still serves that digest, so nothing is written.
    let again = export(&dir.join("two"));
    assert!(again.contains("skipped (up to date"), "{again}");
}

#[test]
fn a_re_export_reuses_an_unchanged_archive_unread_and_rewrites_one_changed_in_place() {
    let image = pushed_image("reg-reuse", "hello from a reused archive");
    let dir = temp_dir("registry-reuse");
    let cache = dir.join("cache");
    let export = |out: &Path| cached_export(out, &cache, &image.reference);
    let bundle = dir.join("images");
    let file = file_of(&image.reference);
    let first = export(&bundle);
    assert!(first.contains(&format!("written {file}")), "{first}");
    let stamp = &entry(&bundle, &image.reference)["stamp"];
    assert!(stamp["ctime_ns"].as_i64().is_some(), "{stamp}");

    // Unchanged since it was written: reused by its stamp, not read for its checksum.
    let again = export(&bundle);
    assert!(
        again.contains(&format!("skipped (up to date: {file})\n")),
        "{again}"
    );

    // One byte changed in place, the size and the modification time as they were: the
    // change time differs, so the file is read, found changed, and written again.
    let path = bundle.join(&file);
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&path, &data).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let changed = export(&bundle);
    assert!(changed.contains(&format!("written {file}")), "{changed}");
    sha256sum_check(&bundle);

    // A copy of the bundle (new inodes): read once for its checksum, then reused unread.
    let copy = dir.join("copy");
    run(Command::new("cp").arg("-a").arg(&bundle).arg(&copy));
    let copied = export(&copy);
    assert!(
        copied.contains(&format!(
            "skipped (up to date: {file}; its checksum verified)"
        )),
        "{copied}"
    );
    let next = export(&copy);
    assert!(
        next.contains(&format!("skipped (up to date: {file})\n")),
        "{next}"
    );
    sha256sum_check(&copy);
}

#[test]
fn auto_saves_an_image_the_registry_does_not_serve_with_the_local_engine_and_says_so() {
    let d = daemons();
    // Built here and never pushed: the registry does not have it, the test dockerd does.
    let tag = format!("{}/oi-export/local-only:1", d.registry);
    let local = build_image(&tag, "hello from a local-only image");
    let pushed = pushed_image("reg-auto", "hello from the registry, in auto mode");
    let looked = "images the registry does not serve are looked for in docker";
    // The registry serves it whole: no local engine is asked, none is named.
    let served = temp_dir("registry-auto-served").join("images");
    let (code, _, log) = outcome(export_cmd(&served).arg(&pushed.reference));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("looked for in"), "{log}");
    let out_dir = temp_dir("registry-auto").join("images");
    let (code, _, log) = outcome(export_cmd(&out_dir).args([&local.reference, &pushed.reference]));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains(looked), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains(&local.reference) && l.contains("holds it locally"))
        .unwrap_or_else(|| panic!("no fallback line:\n{log}"));
    assert!(line.contains("HTTP 404"), "{line}");
    let names = names_in(&out_dir);
    let local_file = file_of(&local.reference).replace(".tar", ".tar.gz");
    assert!(names.contains(&local_file), "{names:?}");
    assert!(names.contains(&file_of(&pushed.reference)), "{names:?}");
    sha256sum_check(&out_dir);
    docker_rmi(&tag);
}

#[test]
fn a_503_is_retried_and_a_cut_layer_download_resumes_by_range() {
    let d = daemons();
    let image = pushed_image("reg-flaky", "hello through a flaky proxy");
    let proxy = FlakyProxy::start(&d.registry, 1, 1, 64 * 1024);
    let reference = format!("{}/oi-export/reg-flaky:1", proxy.addr);
    let out_dir = temp_dir("registry-flaky").join("images");
    let (code, _, log) = outcome(registry_export(&out_dir, &bare_path(&[])).arg(&reference));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("resuming"), "{log}");
    let requests = proxy.requests();
    let manifests = requests
        .iter()
        .filter(|r| r.contains("/manifests/1 "))
        .count();
    assert!(manifests >= 2, "the 503 was not retried: {requests:?}");
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/blobs/sha256:") && r.contains("bytes=65536-")),
        "no download resumed at the cut: {requests:?}"
    );
    assert_eq!(
        entry(&out_dir, &reference)["images"][0]["config_digest"],
        image.config_digest.as_str()
    );
    sha256sum_check(&out_dir);
}

#[test]
fn a_registry_mirror_is_used_first_and_a_failing_one_falls_back_to_the_source() {
    let d = daemons();
    let mirror = PrivateRegistry::start("registry-mirror", false, RegistryAuth::Anonymous);
    let image = build_image(&unique_tag("mirrored"), "hello from the mirror");
    mirror.push(&image, "oi/mirrored:1");
    // The source does not answer at all: only the mirror can serve the image.
    let source = format!("127.0.0.1:{}", closed_port());
    let reference = format!("{source}/oi/mirrored:1");
    let out_dir = temp_dir("registry-mirror-out").join("images");
    let (code, _, log) = outcome(
        registry_export(&out_dir, &bare_path(&[]))
            .arg("--registry-mirror")
            .arg(format!("{source}={}", mirror.addr))
            .arg(&reference),
    );
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        entry(&out_dir, &reference)["images"][0]["config_digest"],
        image.config_digest.as_str()
    );

    let pushed = pushed_image("reg-unmirrored", "hello from the source");
    let dead = format!("127.0.0.1:{}", closed_port());
    let out_dir = temp_dir("registry-mirror-dead").join("images");
    let (code, _, log) = outcome(
        registry_export(&out_dir, &bare_path(&[]))
            .arg("--registry-mirror")
            .arg(format!("{}={dead}", d.registry))
            .arg(&pushed.reference),
    );
    assert_eq!(code, 0, "{log}");
    assert!(log.contains(&format!("the mirror {dead} failed")), "{log}");
}

#[test]
fn a_blob_two_images_share_is_downloaded_once_per_run() {
    let d = daemons();
    let one = pushed_image("reg-share-1", "hello from the first sharer");
    let two = pushed_image("reg-share-2", "hello from the second sharer");
    let proxy = FlakyProxy::start(&d.registry, 0, 0, 0);
    let refs: Vec<String> = [&one, &two]
        .iter()
        .map(|i| i.reference.replace(&d.registry, &proxy.addr))
        .collect();
    let out_dir = temp_dir("registry-share").join("images");
    let (code, _, log) = outcome(
        registry_export(&out_dir, &bare_path(&[]))
            .args(["--jobs", "2"])
            .args(&refs),
    );
    assert_eq!(code, 0, "{log}");
    let blobs: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.contains("/blobs/sha256:"))
        .map(|r| {
            r.split("/blobs/")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut unique = blobs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        blobs.len(),
        unique.len(),
        "a blob was downloaded twice: {blobs:?}"
    );
    // Two configs, two own layers and the busybox layer they share.
    assert_eq!(unique.len(), 5, "{blobs:?}");
}

#[test]
fn on_a_terminal_event_lines_clear_the_status_line_first() {
    let image = pushed_image("reg-tty", "hello on a terminal");
    let dir = temp_dir("registry-tty");
    let typescript = dir.join("typescript");
    let mut inner = registry_export(&dir.join("images"), &bare_path(&[]));
    inner.arg(&image.reference);
    // `script` runs the export with a pseudo-terminal as its stderr.
    let line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    // By its path: PATH is the bare one, for the export.
    let mut c = Command::new("/usr/bin/script");
    c.args(["-qefc", &line])
        .arg(&typescript)
        .env("TERM", "xterm")
        .env("SHELL", "/bin/sh");
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let (code, _, _) = outcome(&mut c);
    let shown = std::fs::read_to_string(&typescript).unwrap();
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("\r\x1b[K[1/1] "), "{shown:?}");
    assert!(shown.contains("written "), "{shown:?}");
}
