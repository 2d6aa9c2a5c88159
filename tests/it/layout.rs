//! OCI image layout directories, as the real skopeo writes them (`oci:DIR:REF`, with and
//! without `--dest-shared-blob-dir`), read in place beside archives: listed, imported into
//! containerd (both clients) and Docker, skipped on a re-run, found by `verify`; and the
//! hostile ones refused by name while a good image beside them imports. Then the layouts
//! crane 0.20 (`crane pull --format oci`) and skopeo 1.22 write from images in the test
//! registry, listed, imported into both runtimes and skipped on a re-run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::harness::*;

/// `skopeo copy docker-archive:SRC oci:DEST:REF`, with a shared blob directory when given.
fn skopeo_layout(src: &str, dest: &Path, reference: &str, shared: Option<&Path>) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--quiet"]);
    if let Some(shared) = shared {
        cmd.arg("--dest-shared-blob-dir").arg(shared);
    }
    run(cmd
        .arg(format!("docker-archive:{src}"))
        .arg(format!("oci:{}:{reference}", dest.display())));
}

/// The config digest of the image `reference` names in the layout at `dir`, as skopeo reads
/// it (skopeo gives the image an OCI config of its own).
fn skopeo_config(dir: &Path, reference: &str, shared: Option<&Path>) -> String {
    let mut cmd = skopeo();
    cmd.args(["inspect", "--raw"]);
    if let Some(shared) = shared {
        cmd.arg("--shared-blob-dir").arg(shared);
    }
    let raw = stdout_of(cmd.arg(format!("oci:{}:{reference}", dir.display())));
    let manifest: Value = serde_json::from_str(&raw).unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_string()
}

/// Alpha (`docker save`) and beta (from the two-image save), as `docker-archive:` sources.
fn sources() -> (String, String) {
    let f = fixtures();
    let alpha = f
        .flavours
        .iter()
        .find(|(n, _, _)| *n == "docker save")
        .unwrap();
    let beta = format!("{}:{}", f.two_images.display(), f.beta.tag);
    (alpha.1.display().to_string(), beta)
}

/// A reference no other test uses, in full (skopeo writes it as given).
fn unique_ref(label: &str) -> String {
    offline_images::reference::normalize(&unique_tag(label)).unwrap()
}

/// The result line of a unit in an import's log.
fn line_of<'a>(stderr: &'a str, unit: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| {
            (l.starts_with("imported ") || l.starts_with("skipped ") || l.starts_with("FAILED "))
                && l.contains(unit)
        })
        .unwrap_or_else(|| panic!("no result line for {unit}:\n{stderr}"))
}

/// An images path: alpha as an archive, beta in a layout of its own, and alpha again in a
/// layout whose blobs skopeo put in a shared blob directory. Returns the path, and each
/// layout image's unit name, reference and config digest.
fn mixed_images_path() -> (Scratch, Vec<(String, String, String)>) {
    let dir = scratch_dir("layouts");
    let (alpha, beta) = sources();
    std::fs::copy(&alpha, dir.join("alpha.tar")).unwrap();
    let (beta_ref, shared_ref) = (unique_ref("layout-beta"), unique_ref("layout-shared"));
    skopeo_layout(&beta, &dir.join("beta"), &beta_ref, None);
    let shared = dir.join("shared-blobs");
    skopeo_layout(&alpha, &dir.join("repo"), &shared_ref, Some(&shared));
    let units = vec![
        (
            format!("beta/index.json#{beta_ref}"),
            beta_ref.clone(),
            skopeo_config(&dir.join("beta"), &beta_ref, None),
        ),
        (
            format!("repo/index.json#{shared_ref}"),
            shared_ref.clone(),
            skopeo_config(&dir.join("repo"), &shared_ref, Some(&shared)),
        ),
    ];
    (dir, units)
}

#[test]
fn list_shows_a_layouts_images_as_it_shows_an_archives() {
    let (dir, units) = mixed_images_path();
    let out = stdout_of(offline_images().args(["list", "--json"]).arg(&*dir));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0]["file"],
        dir.join("alpha.tar").display().to_string()
    );
    for ((unit, reference, config), line) in units.iter().zip(&lines[1..]) {
        assert_eq!(line["file"], dir.join(unit).display().to_string());
        assert_eq!(line["format"], "oci");
        assert_eq!(line["images"][0]["names"][0], reference.as_str());
        assert_eq!(
            line["images"][0]["platforms"][0]["config_digest"],
            config.as_str()
        );
    }
}

/// `against_containerd` with the client `client`, whatever the suite runs with.
fn with_client(command: &str, dir: &Path, ns: &str, client: &str) -> Command {
    let mut cmd = against_containerd(command, dir, ns);
    cmd.env("CONTAINERD_CLIENT", client);
    if client == "ctr" {
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    }
    cmd
}

#[test]
fn layouts_beside_an_archive_import_into_containerd_with_either_client_and_a_rerun_skips() {
    let (dir, units) = mixed_images_path();
    for client in ["native", "ctr"] {
        let ns = unique_namespace("layout");
        let (code, _, stderr) = outcome(&mut with_client("import", &dir, &ns, client));
        assert_eq!(code, 0, "{client}: {stderr}");
        assert!(
            line_of(&stderr, "alpha.tar").starts_with("imported "),
            "{stderr}"
        );
        for (unit, reference, config) in &units {
            let line = line_of(&stderr, unit);
            assert!(
                line.starts_with("imported ") && line.contains(reference),
                "{line}"
            );
            assert_eq!(
                ctr_config_digest(&ns, reference).as_deref(),
                Some(config.as_str()),
                "{client}: {reference}"
            );
        }
        let (code, _, stderr) = outcome(&mut with_client("import", &dir, &ns, client));
        assert_eq!(code, 0, "{client}: {stderr}");
        for unit in units.iter().map(|u| &u.0).chain([&"alpha.tar".to_string()]) {
            assert!(
                line_of(&stderr, unit).starts_with("skipped "),
                "{client}: {stderr}"
            );
        }
        assert!(
            stderr.contains("summary: 0 imported, 3 skipped"),
            "{stderr}"
        );
        let (code, stdout, stderr) = outcome(&mut with_client("verify", &dir, &ns, client));
        assert_eq!(code, 0, "{client}: {stdout}{stderr}");
        for (unit, reference, _) in &units {
            assert!(
                stdout.contains(&format!("present    {unit}  {reference}")),
                "{stdout}"
            );
        }
    }
}

#[test]
fn docker_loads_the_images_of_layouts_and_verify_finds_them() {
    let (dir, units) = mixed_images_path();
    std::fs::remove_file(dir.join("alpha.tar")).unwrap();
    let d = daemons();
    let (code, _, stderr) = outcome(&mut d.against_docker("import", &dir));
    assert_eq!(code, 0, "{stderr}");
    for (unit, reference, config) in &units {
        assert!(line_of(&stderr, unit).starts_with("imported "), "{stderr}");
        assert_eq!(
            d.docker_image_id(reference).as_deref(),
            Some(config.as_str())
        );
    }
    let (code, _, stderr) = outcome(&mut d.against_docker("import", &dir));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("summary: 0 imported, 2 skipped"),
        "{stderr}"
    );
    let (code, stdout, stderr) = outcome(&mut d.against_docker("verify", &dir));
    assert_eq!(code, 0, "{stdout}{stderr}");
    for (_, reference, _) in &units {
        docker_rmi(reference);
    }
}

/// The first layer's blob of the image in the skopeo layout at `dir`.
fn layer_of(dir: &Path) -> PathBuf {
    let blob = |digest: &str| dir.join("blobs").join(digest.replacen(':', "/", 1));
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    blob(manifest["layers"][0]["digest"].as_str().unwrap())
}

/// Layouts that lie, each beside the good one: a layer whose bytes are not its digest's, a
/// missing layer, a layer that is a symlink out of the images path, an index of 10,000
/// entries, and a manifest that names itself.
fn hostile_layouts(dir: &Path, alpha: &str, elsewhere: &Path) {
    for name in ["corrupt", "missing", "linked"] {
        skopeo_layout(alpha, &dir.join(name), &unique_ref(name), None);
    }
    let layer = layer_of(&dir.join("corrupt"));
    let mut data = std::fs::read(&layer).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&layer, data).unwrap();
    std::fs::remove_file(layer_of(&dir.join("missing"))).unwrap();
    let layer = layer_of(&dir.join("linked"));
    let outside = elsewhere.join("layer");
    std::fs::copy(&layer, &outside).unwrap();
    std::fs::remove_file(&layer).unwrap();
    std::os::unix::fs::symlink(&outside, &layer).unwrap();
    let write_layout = |name: &str, index: Value| {
        std::fs::create_dir_all(dir.join(name).join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.join(name).join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::write(dir.join(name).join("index.json"), index.to_string()).unwrap();
    };
    let some = serde_json::json!({"digest": format!("sha256:{}", "a".repeat(64))});
    write_layout("big", serde_json::json!({"manifests": vec![some; 10_000]}));
    let digest = format!("sha256:{}", "f".repeat(64));
    let manifest = format!(r#"{{"schemaVersion":2,"config":{{"digest":"{digest}"}},"layers":[]}}"#);
    write_layout(
        "itself",
        serde_json::json!({"manifests": [{"digest": digest, "annotations":
            {"org.opencontainers.image.ref.name": "docker.io/oi-test/itself:1"}}]}),
    );
    std::fs::write(
        dir.join("itself/blobs/sha256").join("f".repeat(64)),
        manifest,
    )
    .unwrap();
}

#[test]
fn hostile_layouts_are_refused_by_name_while_a_good_image_beside_them_imports() {
    let dir = scratch_dir("hostile-layouts");
    let (alpha, beta) = sources();
    let good = unique_ref("layout-good");
    skopeo_layout(&beta, &dir.join("good"), &good, None);
    let elsewhere = scratch_dir("elsewhere");
    hostile_layouts(&dir, &alpha, &elsewhere);
    let ns = unique_namespace("hostile-layout");
    let (code, _, stderr) = outcome(&mut against_containerd("import", &dir, &ns));
    assert_eq!(code, 0, "not --strict: {stderr}");
    assert!(line_of(&stderr, &format!("good/index.json#{good}")).starts_with("imported "));
    assert_eq!(ctr_images(&ns).len(), 1, "the good image alone: {stderr}");
    let failed = |unit: &str, why: &str| {
        let line = line_of(&stderr, unit);
        assert!(
            line.starts_with("FAILED ") && line.contains(why),
            "{unit}: {line}"
        );
    };
    failed("corrupt/index.json#", "is corrupt");
    failed("missing/index.json#", "is not in the layout");
    failed("linked/index.json#", "is a symlink");
    failed(
        "big/index.json",
        "gives 10000 images, over the limit of 2000",
    );
    failed(
        "itself/index.json#docker.io/oi-test/itself:1",
        "names itself",
    );
    assert!(
        stderr.contains("summary: 1 imported, 0 skipped (already present), 5 failed"),
        "{stderr}"
    );
}

// ---- layouts crane 0.20 and skopeo 1.22 write from the test registry -----------------------

/// skopeo 1.22 (Debian forky's, `OI_SKOPEO_122`), or None once a [`missing_precondition`]
/// said so (in CI that fails the test).
fn skopeo_122() -> Option<Command> {
    let Some(bin) = std::env::var_os("OI_SKOPEO_122") else {
        missing_precondition(
            "no skopeo 1.22 in this run (OI_SKOPEO_122): scripts/test.sh fetches it",
        );
        return None;
    };
    Some(Command::new(bin))
}

/// Two images pushed to the test registry (Docker's manifests), once, for the tools to pull.
fn registry_pair() -> &'static [TestImage; 2] {
    static P: OnceLock<[TestImage; 2]> = OnceLock::new();
    P.get_or_init(|| {
        [
            pushed_image("layout-tools-a", "hello from a layout tool's a"),
            pushed_image("layout-tools-b", "hello from a layout tool's b"),
        ]
    })
}

/// One image of a layout a tool wrote: its unit, the name it gives (None: crane without
/// `--annotate-ref`, imported without a name), its manifest and config digests.
struct Written {
    unit: String,
    name: Option<String>,
    manifest: String,
    config: String,
}

/// The images of the layout `images/layout`, read from its files (its blobs, or those of
/// `shared`).
fn written(images: &Path, layout: &str, shared: Option<&Path>) -> Vec<Written> {
    let dir = images.join(layout);
    let json = |path: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    };
    let blob = |digest: &str| {
        let rel = digest.replacen(':', "/", 1);
        let own = dir.join("blobs").join(&rel);
        json(match shared {
            Some(shared) if !own.exists() => shared.join(&rel),
            _ => own,
        })
    };
    let index = json(dir.join("index.json"));
    let entries = index["manifests"].as_array().unwrap();
    entries
        .iter()
        .map(|m| {
            let manifest = m["digest"].as_str().unwrap().to_string();
            let name = m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .map(str::to_string);
            let config = blob(&manifest)["config"]["digest"]
                .as_str()
                .unwrap()
                .to_string();
            Written {
                unit: format!(
                    "{layout}/index.json#{}",
                    name.as_deref().unwrap_or(&manifest)
                ),
                name,
                manifest,
                config,
            }
        })
        .collect()
}

/// An images path of layouts the real tools wrote from the registry pair: crane's `pull
/// --format oci` of both into one directory, without and with `--annotate-ref`; skopeo 1.22's
/// `copy docker://… oci:DIR:REF` of both into one layout, and into another whose blobs are in
/// a shared blob directory (`--dest-shared-blob-dir`). None without either tool.
fn tool_layouts() -> Option<(Scratch, Vec<Written>)> {
    let (has_crane, has_skopeo) = (crane().is_some(), skopeo_122().is_some());
    if !(has_crane && has_skopeo) {
        return None;
    }
    let pair = registry_pair();
    let dir = scratch_dir("tool-layouts");
    for (layout, annotate) in [("crane", None), ("crane-named", Some("--annotate-ref"))] {
        run(crane()
            .unwrap()
            .args(["pull", "--insecure", "--format", "oci"])
            .args(annotate)
            .args(pair.iter().map(|i| &i.tag))
            .arg(dir.join(layout)));
    }
    let shared = dir.join("shared-blobs");
    for (layout, blobs) in [("skopeo", None), ("skopeo-shared", Some(&shared))] {
        for (i, image) in pair.iter().enumerate() {
            let mut cmd = skopeo_122().unwrap();
            cmd.args(["copy", "--quiet", "--src-tls-verify=false"]);
            if let Some(blobs) = blobs {
                cmd.arg("--dest-shared-blob-dir").arg(blobs);
            }
            let name = unique_ref(&format!("{layout}-{i}"));
            run(cmd
                .arg(format!("docker://{}", image.tag))
                .arg(format!("oci:{}:{name}", dir.join(layout).display())));
        }
    }
    let mut units = written(&dir, "crane", None);
    units.extend(written(&dir, "crane-named", None));
    units.extend(written(&dir, "skopeo", None));
    units.extend(written(&dir, "skopeo-shared", Some(&shared)));
    assert_eq!(units.len(), 8);
    Some((dir, units))
}

#[test]
fn list_names_the_images_of_layouts_crane_and_skopeo_122_wrote() {
    let Some((dir, units)) = tool_layouts() else {
        return;
    };
    let out = stdout_of(offline_images().args(["list", "--json"]).arg(&*dir));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), units.len(), "{out}");
    for w in &units {
        let file = dir.join(&w.unit).display().to_string();
        let line = lines
            .iter()
            .find(|l| l["file"] == file.as_str())
            .unwrap_or_else(|| panic!("{file} not listed:\n{out}"));
        assert_eq!(line["format"], "oci");
        let image = &line["images"][0];
        let names: Vec<&str> = image["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(names, w.name.as_slice(), "{line}");
        assert_eq!(image["digest"], w.manifest.as_str());
        assert_eq!(image["platforms"][0]["config_digest"], w.config.as_str());
    }
}

#[test]
fn layouts_crane_and_skopeo_122_wrote_import_into_containerd_with_either_client_and_a_rerun_skips()
{
    let Some((dir, units)) = tool_layouts() else {
        return;
    };
    for client in ["native", "ctr"] {
        let ns = unique_namespace("tool-layout");
        let (code, _, stderr) = outcome(&mut with_client("import", &dir, &ns, client));
        assert_eq!(code, 0, "{client}: {stderr}");
        let images = ctr_images(&ns);
        for w in &units {
            assert!(
                line_of(&stderr, &w.unit).starts_with("imported "),
                "{client}: {stderr}"
            );
            // An image crane gave no name is kept by containerd under its manifest digest.
            let name = w.name.clone().unwrap_or_else(|| {
                let by_digest = format!("@{}", w.manifest);
                let found = images.iter().find(|(n, _)| n.ends_with(&by_digest));
                found
                    .unwrap_or_else(|| panic!("{client}: {images:?}"))
                    .0
                    .clone()
            });
            assert_eq!(
                ctr_config_digest(&ns, &name).as_deref(),
                Some(w.config.as_str()),
                "{client}: {name}"
            );
        }
        let (code, _, stderr) = outcome(&mut with_client("import", &dir, &ns, client));
        assert_eq!(code, 0, "{client}: {stderr}");
        for w in &units {
            let line = line_of(&stderr, &w.unit);
            assert!(line.starts_with("skipped "), "{client}: {line}");
        }
        assert!(
            stderr.contains("summary: 0 imported, 8 skipped"),
            "{client}: {stderr}"
        );
    }
}

#[test]
fn docker_loads_the_images_of_layouts_crane_and_skopeo_122_wrote_and_a_rerun_skips() {
    let Some((dir, units)) = tool_layouts() else {
        return;
    };
    let d = daemons();
    let (code, _, stderr) = outcome(&mut d.against_docker("import", &dir));
    assert_eq!(code, 0, "{stderr}");
    for w in &units {
        // crane's named and unnamed copies are one image to Docker: the second is present.
        let line = line_of(&stderr, &w.unit);
        assert!(
            line.starts_with("imported ") || line.starts_with("skipped "),
            "{line}"
        );
        let image = w.name.as_deref().unwrap_or(&w.config);
        assert_eq!(
            d.docker_image_id(image).as_deref(),
            Some(w.config.as_str()),
            "{image}: {stderr}"
        );
    }
    let (code, _, stderr) = outcome(&mut d.against_docker("import", &dir));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("summary: 0 imported, 8 skipped"),
        "{stderr}"
    );
    for w in &units {
        docker_rmi(w.name.as_deref().unwrap_or(&w.config));
    }
}
