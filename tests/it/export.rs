//! `offline-images export` against the real registry and dockerd, and the bundle it writes
//! loaded into the real containerd and Docker.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::harness::*;

fn file_for(image: &TestImage, ext: &str) -> String {
    let r = offline_images::reference::Reference::parse(&image.reference).unwrap();
    format!("{}{ext}", r.file_stem())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "export failed ({}):\n{}",
        out.status,
        stderr(out)
    );
}

fn index(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("images.json")).unwrap()).unwrap()
}

/// images.json's entry for a file: (names, config digest).
fn indexed(dir: &Path, file: &str) -> (Vec<String>, String) {
    let v = index(dir);
    let a = v["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["file"] == file)
        .unwrap_or_else(|| panic!("{file} not in images.json: {v}"));
    let img = &a["images"][0];
    (
        img["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect(),
        img["config_digest"].as_str().unwrap().to_string(),
    )
}

fn sha256sum_check(dir: &Path) {
    run(Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir));
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// Import into containerd the way the node would get it: decompressed, through `ctr`.
fn ctr_import(file: &Path, ns: &str) -> Vec<String> {
    let tar = file.with_extension("").with_extension("ctr.tar");
    let out = std::fs::File::create(&tar).unwrap();
    run(Command::new("gzip").arg("-dc").arg(file).stdout(out));
    run(ctr(ns).args(["images", "import"]).arg(&tar));
    stdout_of(ctr(ns).args(["images", "ls", "-q"]))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn export_of_values_and_rendered_manifests_writes_a_bundle_that_checks_lists_and_loads() {
    let reg = &daemons().registry;
    let web = pushed_image("web", "hello from web");
    let db = pushed_image("db", "hello from db");
    let init = pushed_image("init", "hello from init");
    let dir = temp_dir("export-bundle");
    let values = dir.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "web:\n  image: \"{reg}/oi-export/web:1\"\n  pullPolicy: IfNotPresent\n\
             db:\n  image:\n    registry: \"{reg}\"\n    repository: oi-export/db\n    tag: \"1\"\n"
        ),
    )
    .unwrap();
    let manifests = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n\
         \x20     initContainers:\n        - name: init\n          image: {reg}/oi-export/init:1\n\
         \x20     containers:\n        - name: web\n          image: {reg}/oi-export/web:1\n"
    );
    let out_dir = dir.join("images");
    let out = run_with_stdin(
        export_cmd(&out_dir).arg("--values").arg(&values).args([
            "--manifests",
            "-",
            "--engine",
            "docker",
        ]),
        manifests.as_bytes(),
    );
    assert_ok(&out);
    let log = stderr(&out);
    assert!(!log.contains('\r'), "no carriage returns in a log:\n{log}");
    for image in [&web, &db, &init] {
        assert!(
            log.contains(&format!("{}: pulling", image.reference)),
            "{log}"
        );
        assert!(
            log.contains(&format!("written {}", file_for(image, ".tar.gz"))),
            "{log}"
        );
    }

    sha256sum_check(&out_dir);
    assert!(leftovers(&out_dir).is_empty(), "{:?}", leftovers(&out_dir));
    let ns = format!("oi-export-{}", std::process::id());
    for image in [&web, &db, &init] {
        let file = file_for(image, ".tar.gz");
        let path = out_dir.join(&file);
        let (names, config) = indexed(&out_dir, &file);
        assert_eq!(names, vec![image.reference.clone()]);
        assert_eq!(config, image.config_digest, "{file}: config digest");

        let listed: Value = serde_json::from_str(
            stdout_of(offline_images().args(["list", "--json"]).arg(&path))
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(listed["compression"], "gzip");
        assert_eq!(listed["images"][0]["names"][0], image.reference.as_str());
        assert_eq!(
            listed["images"][0]["platforms"][0]["config_digest"],
            image.config_digest.as_str()
        );

        let in_containerd = ctr_import(&path, &ns);
        assert!(
            in_containerd.contains(&image.reference),
            "{} not in containerd after import: {in_containerd:?}",
            image.reference
        );

        // Docker reads the multi-member gzip as it is.
        run(docker().args(["rmi", "--no-prune", &image.tag]));
        run(docker().arg("load").arg("-i").arg(&path));
        let id = stdout_of(docker().args(["image", "inspect", "--format", "{{.Id}}", &image.tag]));
        assert_eq!(id.trim(), image.config_digest);
    }
}

#[test]
fn a_second_export_writes_nothing_and_says_the_bundle_is_up_to_date() {
    let image = pushed_image("again", "hello again");
    let dir = temp_dir("export-again");
    let export = || {
        let out = export_cmd(&dir)
            .args(["--engine", "docker", &image.reference])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_ok(&out);
        stderr(&out)
    };
    export();
    let path = dir.join(file_for(&image, ".tar.gz"));
    let before = std::fs::metadata(&path).unwrap();
    let sums_before = std::fs::read(dir.join("SHA256SUMS")).unwrap();

    let log = export();
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        before.ino(),
        after.ino(),
        "the archive was rewritten:\n{log}"
    );
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    assert_eq!(before.mtime(), after.mtime());
    assert!(log.contains("skipped (up to date"), "{log}");
    assert!(log.contains("nothing new to export"), "{log}");
    assert_eq!(std::fs::read(dir.join("SHA256SUMS")).unwrap(), sums_before);

    // An archive changed on disk no longer matches SHA256SUMS, so it is written again.
    std::fs::write(&path, b"damaged").unwrap();
    let log = export();
    assert!(log.contains("written"), "{log}");
    sha256sum_check(&dir);

    // --no-cache writes it again even when it is up to date.
    let before = std::fs::metadata(&path).unwrap();
    let out = export_cmd(&dir)
        .args(["--engine", "docker", "--no-cache", &image.reference])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_ne!(before.ino(), std::fs::metadata(&path).unwrap().ino());
}

#[test]
fn failures_name_the_reference_or_file_and_the_other_images_are_still_exported() {
    let reg = &daemons().registry;
    let good = pushed_image("good", "hello from good");
    let dir = temp_dir("export-failures");
    let bad_values = dir.join("broken-values.yaml");
    std::fs::write(
        &bad_values,
        "image:\n  repository: [oi-export/x\n  tag: 1\n",
    )
    .unwrap();
    let missing = format!("{reg}/oi-export/missing:1");
    let unreachable = format!("127.0.0.1:{}/oi-export/nowhere:1", closed_port());
    let out_dir = dir.join("images");
    let out = export_cmd(&out_dir)
        .args([
            "--engine",
            "docker",
            &good.reference,
            &missing,
            &unreachable,
        ])
        .arg("--values")
        .arg(&bad_values)
        .output()
        .unwrap();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let yaml_error = log
        .lines()
        .find(|l| l.contains("not valid YAML"))
        .unwrap_or_else(|| panic!("no YAML error:\n{log}"));
    assert!(
        yaml_error.contains(&format!("{}:", bad_values.display())),
        "{yaml_error}"
    );
    for r in [&missing, &unreachable] {
        assert!(
            log.contains(&format!("failed: {r}: docker pull: ")),
            "no failure line naming {r}:\n{log}"
        );
    }
    let written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut written = written;
    written.sort();
    let mut expected = vec![
        "SHA256SUMS".to_string(),
        file_for(&good, ".tar.gz"),
        "images.json".into(),
    ];
    expected.sort();
    assert_eq!(written, expected);
    sha256sum_check(&out_dir);
}

#[test]
fn zstd_and_plain_tar_bundles_hold_the_image_under_their_own_extensions() {
    let image = pushed_image("formats", "hello from formats");
    let dir = temp_dir("export-formats");
    for (compress, ext, name) in [("zstd", ".tar.zst", "zstd"), ("none", ".tar", "none")] {
        let out = export_cmd(&dir)
            .args([
                "--engine",
                "docker",
                "--compress",
                compress,
                &image.reference,
            ])
            .output()
            .unwrap();
        assert_ok(&out);
        let file = file_for(&image, ext);
        let listed = stdout_of(
            offline_images()
                .args(["list", "--json"])
                .arg(dir.join(&file)),
        );
        let v: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
        assert_eq!(v["compression"], name);
        assert_eq!(
            v["images"][0]["platforms"][0]["config_digest"],
            image.config_digest.as_str()
        );
        assert_eq!(indexed(&dir, &file).1, image.config_digest);
    }
    // The second run merged its archive into the bundle the first one wrote.
    assert_eq!(index(&dir)["archives"].as_array().unwrap().len(), 2);
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2, "{sums}");
    sha256sum_check(&dir);
}

#[test]
fn skopeo_exports_without_a_daemon_and_checks_the_registry_on_a_second_run() {
    let image = pushed_image("skopeo", "hello from skopeo");
    let dir = temp_dir("export-skopeo");
    let out_dir: PathBuf = dir.join("images");
    let export = || {
        let out = export_cmd(&out_dir)
            // The test registry speaks plain HTTP.
            .args(["--insecure-registry", &daemons().registry])
            .args(["--engine", "skopeo", &image.reference])
            .output()
            .unwrap();
        assert_ok(&out);
        stderr(&out)
    };
    export();
    let file = file_for(&image, ".tar.gz");
    assert_eq!(
        indexed(&out_dir, &file),
        (vec![image.reference.clone()], image.config_digest.clone())
    );
    assert!(leftovers(&out_dir).is_empty(), "{:?}", leftovers(&out_dir));
    let log = export();
    assert!(log.contains("skipped (up to date"), "{log}");
    sha256sum_check(&out_dir);
}

#[test]
fn dry_run_prints_the_normalised_list_on_stdout_and_pulls_nothing() {
    let dir = temp_dir("export-dry");
    let list = dir.join("images.txt");
    std::fs::write(&list, "# base images\nnginx:1.27\nredis:7 # cache\n").unwrap();
    let out = run(export_cmd(&dir.join("images"))
        .args(["--dry-run", "nginx:1.27", "--images-file"])
        .arg(&list));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "docker.io/library/nginx:1.27\ndocker.io/library/redis:7\n"
    );
    assert!(!dir.join("images").exists());
}

#[test]
fn export_images_sh_exports_a_values_file_into_the_directory_given() {
    let image = pushed_image("script", "hello from the script");
    let dir = temp_dir("export-script");
    let values = dir.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "image:\n  repository: {}/oi-export/script\n  tag: \"1\"\n",
            daemons().registry
        ),
    )
    .unwrap();
    let out_dir = dir.join("bundle");
    let d = daemons();
    let cli_dir = Path::new(&d.docker_cli)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let out = Command::new("scripts/export-images.sh")
        .arg(&values)
        .arg(&out_dir)
        .args(["--jobs", "1", "--engine", "docker"])
        .env("OFFLINE_IMAGES", env!("CARGO_BIN_EXE_offline-images"))
        .env("DOCKER_HOST", &d.docker_host)
        .env(
            "PATH",
            format!("{cli_dir}:{}", std::env::var("PATH").unwrap_or_default()),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&out);
    let file = file_for(&image, ".tar.gz");
    assert_eq!(indexed(&out_dir, &file).1, image.config_digest);
    sha256sum_check(&out_dir);
}

#[test]
fn a_save_that_fails_half_way_leaves_no_archive_and_no_temp_file() {
    let image = pushed_image("broken", "hello from broken");
    // Remove this image's own layer (not the busybox layer other images share) from the
    // registry's storage: the manifest and config are served, the layer download fails.
    let manifest: Value = serde_json::from_str(&stdout_of(
        skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}", image.reference)),
    ))
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let own = layers.last().unwrap()["digest"].as_str().unwrap();
    let hex = own.strip_prefix("sha256:").unwrap();
    let blob = daemons()
        .tmp
        .join("registry/data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    std::fs::remove_dir_all(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));

    let dir = temp_dir("export-broken");
    let out = export_cmd(&dir)
        .args([
            "--engine",
            "skopeo",
            "--insecure-registry",
            &daemons().registry,
        ])
        .arg(&image.reference)
        .output()
        .unwrap();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("failed: {}: skopeo copy: ", image.reference)),
        "{log}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
