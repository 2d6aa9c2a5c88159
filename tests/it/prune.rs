//! `offline-images prune` against the real containerd: only the images of one release go.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::*;
use crate::registry::{build_for, containerd_versions, registry_digest, ACCEPT};

/// A fresh image saved with `docker save` into `dir` as `<file>.tar`.
fn image_in(dir: &Path, label: &str, file: &str) -> TestImage {
    let image = build_image(&unique_tag(label), &format!("{label} for prune"));
    run(docker()
        .args(["save", "-o"])
        .arg(dir.join(format!("{file}.tar")))
        .arg(&image.tag));
    image
}

fn names(ns: &str) -> Vec<String> {
    ctr_images(ns).into_iter().map(|(n, _)| n).collect()
}

fn import_for(release: &str, dir: &Path, ns: &str) {
    let (code, _, stderr) = outcome(
        against_containerd("import", dir, ns)
            .args(["--release", release])
            .env_remove("RELEASE_NAME"),
    );
    assert_eq!(code, 0, "import --release {release}: {stderr}");
}

fn prune(release: &str, ns: &str, extra: &[&str]) -> (i32, String, String) {
    outcome(prune_on(daemons(), release, ns).args(extra))
}

/// `offline-images prune --release RELEASE` against `d`'s containerd in `ns`, with the client
/// the suite runs with (and `d`'s own ctr first on PATH for the ctr client).
fn prune_on(d: &Daemons, release: &str, ns: &str) -> Command {
    let mut c = offline_images();
    c.env("CONTAINERD_CLIENT", containerd_client())
        .args(["prune", "--release", release, "--containerd-address"])
        .arg(&d.containerd_sock)
        .args(["--namespace", ns]);
    match d.ctr.parent().filter(|p| !p.as_os_str().is_empty()) {
        _ if containerd_client() == "native" => {
            c.env("PATH", empty_path());
        }
        Some(dir) => {
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", dir.display()));
        }
        None => {}
    }
    for v in [
        "IMAGE_RUNTIME",
        "CONTAINERD_ADDRESS",
        "HOST_ROOT",
        "RELEASE_NAME",
        "LOG_FORMAT",
    ] {
        c.env_remove(v);
    }
    c
}

#[test]
fn prune_removes_exactly_the_images_of_one_release_and_keeps_those_in_use_or_shared() {
    let ns = unique_namespace("prune");
    let (dir_a, dir_b, dir_other) = (
        temp_dir("prune-a"),
        temp_dir("prune-b"),
        temp_dir("prune-u"),
    );
    let only_a = image_in(&dir_a, "only-a", "only-a");
    let used_a = image_in(&dir_a, "used-a", "used-a");
    let shared = image_in(&dir_a, "shared", "shared");
    std::fs::copy(dir_a.join("shared.tar"), dir_b.join("shared.tar")).unwrap();
    let only_b = image_in(&dir_b, "only-b", "only-b");
    let unlabelled = image_in(&dir_other, "unlabelled", "unlabelled");

    import_for("shop", &dir_a, &ns);
    // The shared image is already present: release b's import skips it, but labels it.
    import_for("billing", &dir_b, &ns);
    run(ctr(&ns)
        .args(["images", "import"])
        .arg(dir_other.join("unlabelled.tar")));
    let container = format!("{ns}-uses-it");
    run(ctr(&ns).args(["containers", "create", &used_a.reference, &container]));

    let shared_labels = ctr_labels(&ns, &shared.reference);
    assert!(
        shared_labels.contains("io.offline-images.release.shop=true")
            && shared_labels.contains("io.offline-images.release.billing=true"),
        "{shared_labels}"
    );

    // A dry run says what would happen and changes nothing.
    let before = names(&ns);
    let (code, stdout, stderr) = prune("shop", &ns, &["--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("would remove  {}", only_a.reference)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "kept  {}  (in use by container {container})",
            used_a.reference
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "would keep  {}  (also imported for release billing)",
            shared.reference
        )),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert_eq!(names(&ns), before);

    let (code, stdout, stderr) = prune("shop", &ns, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("removed  {}", only_a.reference)),
        "{stdout}"
    );
    assert!(
        stderr.contains("release shop: 1 removed, 2 kept, 0 failed"),
        "{stderr}"
    );
    let after = names(&ns);
    assert!(!after.contains(&only_a.reference), "{after:?}");
    for kept in [&used_a, &shared, &only_b, &unlabelled] {
        assert!(
            after.contains(&kept.reference),
            "{} gone: {after:?}",
            kept.reference
        );
    }
    let shared_labels = ctr_labels(&ns, &shared.reference);
    assert!(
        !shared_labels.contains("io.offline-images.release.shop")
            && shared_labels.contains("io.offline-images.release.billing=true"),
        "{shared_labels}"
    );
    // The container still runs from its image.
    assert!(stdout_of(ctr(&ns).args(["containers", "ls", "-q"])).contains(&container));

    // Pruning the other release now takes the shared image too; the unlabelled one stays.
    let (code, stdout, stderr) = prune("billing", &ns, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let after = names(&ns);
    assert!(!after.contains(&shared.reference) && !after.contains(&only_b.reference));
    assert!(after.contains(&unlabelled.reference) && after.contains(&used_a.reference));

    // Nothing is left to prune for either release but the image in use.
    let (code, stdout, _) = prune("billing", &ns, &[]);
    assert_eq!((code, stdout.as_str()), (0, ""));

    run(ctr(&ns).args(["containers", "rm", &container]));
    for image in [&only_a, &used_a, &shared, &only_b, &unlabelled] {
        docker_rmi(&image.tag);
    }
}

#[test]
fn prune_refuses_docker_whose_images_carry_no_labels() {
    let mut c = offline_images();
    c.args([
        "prune",
        "--release",
        "shop",
        "--runtime",
        "docker",
        "--docker-host",
    ])
    .arg(&daemons().docker_host)
    .env_remove("HOST_ROOT");
    let (code, stdout, stderr) = outcome(&mut c);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(
            "prune is not supported for Docker: images loaded into Docker carry no labels"
        ),
        "{stderr}"
    );
}

#[test]
fn prune_refuses_a_release_name_that_cannot_be_a_label() {
    let (code, _, stderr) = prune("a=b", "unused", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not a release name"), "{stderr}");
}

#[test]
fn prune_waits_bounded_for_the_releases_containers_to_go_then_removes_their_images() {
    let ns = unique_namespace("prune-wait");
    let dir = temp_dir("prune-wait");
    let image = image_in(&dir, "wait", "wait");
    import_for("shop", &dir, &ns);
    let container = format!("{ns}-terminating");
    run(ctr(&ns).args(["containers", "create", &image.reference, &container]));

    // The wait is bounded: a container that stays keeps its image.
    let (code, stdout, stderr) = prune("shop", &ns, &["--wait-for-containers", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("kept  {}", image.reference)),
        "{stdout}"
    );
    assert!(
        stderr.contains("still in use after 1 s, so kept"),
        "{stderr}"
    );

    // A container that goes while prune waits (as a terminating pod's does) frees its image.
    let log = temp_dir("prune-wait-log").join("stderr");
    let mut c = offline_images();
    c.args(["prune", "--release", "shop", "--containerd-address"])
        .arg(&daemons().containerd_sock)
        .args(["--namespace", &ns, "--wait-for-containers", "300"]);
    for v in [
        "IMAGE_RUNTIME",
        "CONTAINERD_ADDRESS",
        "HOST_ROOT",
        "RELEASE_NAME",
    ] {
        c.env_remove(v);
    }
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = wait_for_text(&log, "waiting up to 300 s", 60);
    assert!(said.contains(&container), "{said}");
    run(ctr(&ns).args(["containers", "delete", &container]));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the containers are gone after"), "{stderr}");
    assert!(
        stdout.contains(&format!("removed  {}", image.reference)),
        "{stdout}"
    );
    assert!(!names(&ns).contains(&image.reference), "{:?}", names(&ns));
}

// ---- every name of an image: the tag and the digest names alike ------------------------------

/// A bundle the registry engine wrote of a multi-platform image exported for linux/amd64:
/// its archive names the image by its tag, `repo@<index digest>` and `repo@<amd64 manifest>`.
struct Exported {
    dir: PathBuf,
    /// Every name the archive gives the image, sorted.
    names: Vec<String>,
    /// The index, the manifest, the config and the layers: what containerd stores.
    blobs: Vec<String>,
}

/// `REGISTRY/oi-prune/NAME:1`, an index of an amd64 and an arm64 image, pushed to the test
/// registry and exported for linux/amd64 by the registry engine.
fn exported_index(name: &str) -> Exported {
    let reg = &daemons().registry;
    let repo = format!("oi-prune/{name}");
    let mut descriptors = Vec::new();
    for arch in ["amd64", "arm64"] {
        let tag = format!("{reg}/{repo}:{arch}");
        build_for(
            &tag,
            &format!("linux/{arch}"),
            &format!("{name} for {arch}"),
        );
        run(docker().args(["push", "-q", &tag]));
        docker_rmi(&tag);
        let resp = ureq::get(&format!("http://{reg}/v2/{repo}/manifests/{arch}"))
            .header("Accept", ACCEPT)
            .call()
            .unwrap();
        let media_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        let body = resp.into_body().read_to_vec().unwrap();
        descriptors.push(serde_json::json!({
            "mediaType": media_type, "size": body.len(),
            "digest": registry_digest(reg, &repo, arch),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let list = "application/vnd.docker.distribution.manifest.list.v2+json";
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": list, "manifests": descriptors});
    ureq::put(&format!("http://{reg}/v2/{repo}/manifests/1"))
        .header("Content-Type", list)
        .send(&serde_json::to_vec(&index).unwrap()[..])
        .unwrap();
    let reference = format!("{reg}/{repo}:1");
    let dir = temp_dir("prune-names").join("images");
    let (code, _, log) = outcome(registry_export(&dir, &bare_path(&[])).args([
        "--platform",
        "linux/amd64",
        &reference,
    ]));
    assert_eq!(code, 0, "{log}");
    let index_digest = registry_digest(reg, &repo, "1");
    let amd64 = descriptors[0]["digest"].as_str().unwrap().to_string();
    let mut names = vec![
        reference.clone(),
        format!("{reg}/{repo}@{index_digest}"),
        format!("{reg}/{repo}@{amd64}"),
    ];
    names.sort();
    let entry = &images_json(&dir)["archives"][0];
    let image = &entry["images"][0];
    let mut blobs = vec![index_digest, amd64];
    blobs.push(image["config_digest"].as_str().unwrap().to_string());
    for layer in image["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_string());
    }
    Exported { dir, names, blobs }
}

fn images_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("images.json")).unwrap()).unwrap()
}

/// `images.json` as export wrote it before it recorded the digest names: each image named by
/// the first name the archive gives it (its tag) alone, the others only in `source.refs`.
fn as_written_before_digest_names(dir: &Path) {
    let mut v = images_json(dir);
    for archive in v["archives"].as_array_mut().unwrap() {
        let first = archive["source"]["refs"][0].clone();
        for image in archive["images"].as_array_mut().unwrap() {
            image["names"] = serde_json::json!([first]);
        }
    }
    std::fs::write(dir.join("images.json"), v.to_string()).unwrap();
}

/// `import` of `dir` into `d`'s containerd in `ns`, for `release` when given: its stderr.
fn import_on(d: &Daemons, dir: &Path, ns: &str, release: Option<&str>) -> String {
    let mut c = d.against_containerd("import", dir, ns);
    c.env_remove("RELEASE_NAME");
    if let Some(r) = release {
        c.args(["--release", r]);
    }
    let (code, _, stderr) = outcome(&mut c);
    assert_eq!(
        code, 0,
        "{}: import --release {release:?}: {stderr}",
        d.label
    );
    stderr
}

/// Every image name in `ns` of `d`'s containerd with its labels (`k=v,k=v`), sorted.
fn names_on(d: &Daemons, ns: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = stdout_of(d.ctr(ns).args(["images", "ls"]))
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 2).then(|| (f[0].to_string(), f[f.len() - 1].to_string()))
        })
        .collect();
    v.sort();
    v
}

fn only_names(v: &[(String, String)]) -> Vec<String> {
    v.iter().map(|(n, _)| n.clone()).collect()
}

/// Have `d`'s containerd collect its garbage now (a lease deleted with --sync), and return
/// what of `blobs` the content store of `ns` still holds.
fn content_left_after_gc(d: &Daemons, ns: &str, blobs: &[String]) -> Vec<String> {
    let id = format!("{ns}-gc");
    run(d.ctr(ns).args(["leases", "create", "--id", &id]));
    run(d.ctr(ns).args(["leases", "delete", "--sync", &id]));
    let held = stdout_of(d.ctr(ns).args(["content", "ls", "-q"]));
    blobs
        .iter()
        .filter(|b| held.lines().any(|l| l.trim() == b.as_str()))
        .cloned()
        .collect()
}

/// Finding: `prune` removed digest names that another release still needed. Release b's
/// import skipped the image as present and labelled its tag alone, so `prune --release a`
/// removed `repo@sha256:…`, and `verify` and a re-run did not notice.
fn two_releases_then_prune_both(d: &Daemons, bundle: &Exported) {
    let ns = unique_namespace("prune-names");
    import_on(d, &bundle.dir, &ns, Some("a"));
    let second = import_on(d, &bundle.dir, &ns, Some("b"));
    assert!(
        second.lines().any(|l| l.starts_with("skipped  ")),
        "{}: {second}",
        d.label
    );
    let listed = names_on(d, &ns);
    assert_eq!(only_names(&listed), bundle.names, "{}", d.label);
    for (name, labels) in &listed {
        for release in ["a", "b"] {
            let label = format!("io.offline-images.release.{release}=true");
            assert!(labels.contains(&label), "{}: {name}: {labels}", d.label);
        }
    }

    let (code, stdout, stderr) = outcome(&mut prune_on(d, "a", &ns));
    assert_eq!(code, 0, "{}: {stderr}", d.label);
    assert!(!stdout.contains("removed  "), "{}: {stdout}", d.label);
    for name in &bundle.names {
        let kept = format!("kept  {name}  (also imported for release b; label");
        assert!(stdout.contains(&kept), "{}: {stdout}", d.label);
    }
    let listed = names_on(d, &ns);
    assert_eq!(only_names(&listed), bundle.names, "{}: {stdout}", d.label);
    assert!(
        listed.iter().all(|(_, l)| !l.contains("release.a")),
        "{listed:?}"
    );

    let (code, stdout, stderr) = outcome(&mut d.against_containerd("verify", &bundle.dir, &ns));
    assert_eq!(code, 0, "{}: {stdout}{stderr}", d.label);
    for name in &bundle.names {
        let present = stdout
            .lines()
            .any(|l| l.starts_with("present") && l.contains(&format!("  {name}  ")));
        assert!(present, "{}: {name} not verified:\n{stdout}", d.label);
    }

    let (code, stdout, stderr) = outcome(&mut prune_on(d, "b", &ns));
    assert_eq!(code, 0, "{}: {stderr}", d.label);
    for name in &bundle.names {
        assert!(
            stdout.contains(&format!("removed  {name}\n")),
            "{}: {stdout}",
            d.label
        );
    }
    assert_eq!(names_on(d, &ns), Vec::new(), "{}", d.label);
    let left = content_left_after_gc(d, &ns, &bundle.blobs);
    assert!(left.is_empty(), "{}: still stored: {left:?}", d.label);
}

#[test]
fn prune_keeps_the_digest_names_another_release_still_needs_on_every_containerd_version() {
    let bundle = exported_index("two-releases");
    for d in containerd_versions() {
        two_releases_then_prune_both(d, &bundle);
    }
}

#[test]
fn prune_keeps_the_digest_names_another_release_needs_with_an_images_json_written_before_them() {
    let bundle = exported_index("old-index");
    as_written_before_digest_names(&bundle.dir);
    let names = images_json(&bundle.dir)["archives"][0]["images"][0]["names"].clone();
    assert_eq!(names.as_array().unwrap().len(), 1, "{names}");
    two_releases_then_prune_both(daemons(), &bundle);
}

/// Finding: `import --release shop` over images already present labelled their tags alone,
/// so `prune --release shop` left every `@sha256:` name pinned and freed no disk.
#[test]
fn prune_of_a_release_imported_over_present_images_frees_their_digest_names_too() {
    let d = daemons();
    let bundle = exported_index("over-present");
    let ns = unique_namespace("prune-present");
    import_on(d, &bundle.dir, &ns, None);
    let second = import_on(d, &bundle.dir, &ns, Some("shop"));
    assert!(
        second.lines().any(|l| l.starts_with("skipped  ")),
        "{second}"
    );
    let (code, stdout, stderr) = outcome(&mut prune_on(d, "shop", &ns));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "release shop: {} removed, 0 kept",
            bundle.names.len()
        )),
        "{stdout}{stderr}"
    );
    assert_eq!(names_on(d, &ns), Vec::new());
    let left = content_left_after_gc(d, &ns, &bundle.blobs);
    assert!(left.is_empty(), "still stored: {left:?}");
}

/// Finding: with a digest name gone, `verify` still said every image was present and a
/// re-run skipped the archive as present, so the name was never restored.
#[test]
fn a_digest_name_removed_from_the_runtime_is_missing_for_verify_and_imported_again() {
    let d = daemons();
    let bundle = exported_index("name-gone");
    let ns = unique_namespace("prune-gone");
    import_on(d, &bundle.dir, &ns, Some("shop"));
    let gone = bundle.names.iter().find(|n| n.contains('@')).unwrap();
    run(d.ctr(&ns).args(["images", "rm", gone]));

    let (code, stdout, stderr) = outcome(&mut d.against_containerd("verify", &bundle.dir, &ns));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{gone} is not in the runtime")),
        "{stdout}"
    );

    let again = import_on(d, &bundle.dir, &ns, Some("shop"));
    assert!(
        again.lines().any(|l| l.starts_with("imported  ")),
        "not imported again: {again}"
    );
    assert!(again.contains("summary: 1 imported"), "{again}");
    let listed = names_on(d, &ns);
    assert_eq!(only_names(&listed), bundle.names);
    assert!(listed
        .iter()
        .all(|(_, l)| l.contains("io.offline-images.release.shop=true")));
}

/// Finding: `logFormat: json` did not reach the prune Job: prune had no `--log-format` and
/// printed text whatever LOG_FORMAT (which the chart sets) said.
#[test]
fn prune_with_log_format_json_writes_one_json_object_per_line_on_both_streams() {
    let ns = unique_namespace("prune-json");
    let dir = temp_dir("prune-json");
    let image = image_in(&dir, "json", "json");
    import_for("shop", &dir, &ns);
    let (code, stdout, stderr) =
        outcome(prune_on(daemons(), "shop", &ns).env("LOG_FORMAT", "json"));
    assert_eq!(code, 0, "{stderr}");
    let parse = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    };
    let results = parse(&stdout);
    assert_eq!(results.len(), 1, "{stdout}");
    assert_eq!(results[0]["name"], image.reference.as_str());
    assert_eq!(results[0]["action"], "removed");
    let log = parse(&stderr);
    assert!(log.len() >= 2, "{stderr}");
    assert_eq!(log[0]["event"], "info", "{stderr}");
    let last = log.last().unwrap();
    assert_eq!(last["event"], "summary", "{stderr}");
    assert_eq!(
        (last["removed"].as_u64(), last["kept"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(!names(&ns).contains(&image.reference));
    docker_rmi(&image.tag);
}

/// Finding: `import --release` on Docker said nothing, though `prune` of that release refuses
/// later (Docker keeps no labels).
#[test]
fn import_release_on_docker_says_at_the_start_that_prune_cannot_remove_the_images() {
    let d = daemons();
    let dir = temp_dir("prune-docker");
    let image = image_in(&dir, "docker-release", "docker-release");
    let (code, _, stderr) = outcome(
        d.against_docker("import", &dir)
            .args(["--release", "shop"])
            .env_remove("RELEASE_NAME"),
    );
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let warning = lines
        .iter()
        .position(|l| {
            l.starts_with("warning: --release shop: images loaded into Docker carry no labels")
                && l.contains("`offline-images prune --release shop` cannot remove them later")
        })
        .unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    let first_archive = lines
        .iter()
        .position(|l| l.starts_with("imported") || l.starts_with("skipped"))
        .unwrap_or_else(|| panic!("no archive line:\n{stderr}"));
    assert!(warning < first_archive, "{stderr}");
    assert!(lines[0].starts_with("runtime: docker"), "{stderr}");
    docker_rmi(&image.tag);
}
