//! The field: archives as the real tools of every containerd and Docker version write them,
//! imported on every version of the matrix (`harness::every_version()`). Regression tests are named
//! after the bug they keep fixed.

use std::collections::BTreeSet;
use std::path::Path;

use crate::harness::*;

fn bundle_of(archive: &Path, name: &str) -> std::path::PathBuf {
    let dir = temp_dir("field-bundle");
    std::fs::copy(archive, dir.join(name)).unwrap();
    dir
}

/// Import `dir` into a fresh namespace of `d`'s containerd twice: the first run imports, the
/// second skips everything. Returns the namespace.
fn import_twice_into_containerd(d: &Daemons, dir: &Path, label: &str) -> String {
    let ns = unique_namespace(label);
    let (code, _, stderr) = outcome(&mut d.against_containerd("import", dir, &ns));
    assert_eq!(code, 0, "{}: {stderr}", d.label);
    assert!(stderr.contains("1 imported"), "{}: {stderr}", d.label);
    let (code, _, again) = outcome(&mut d.against_containerd("import", dir, &ns));
    assert_eq!(code, 0, "{}: {again}", d.label);
    assert!(
        again.contains("0 imported, 1 skipped"),
        "{}: the second run must skip the archive:\n{again}",
        d.label
    );
    ns
}

#[test]
fn shared_layer_symlink_docker_save_of_several_images_imports_and_runs_on_every_version() {
    let saves = shared_layer_saves();
    // Docker 20.10 links the shared layer: the archive really has the link this is about.
    let links = tar_symlinks(&saves[0].archive);
    assert!(
        links
            .iter()
            .any(|(n, t)| n.ends_with("/layer.tar") && t.starts_with("../")),
        "docker save {} wrote no shared-layer link: {links:?}",
        daemons().docker_version
    );
    for (d, save) in every_version().iter().zip(saves) {
        let dir = bundle_of(&save.archive, "release.tar");
        let ns = import_twice_into_containerd(d, &dir, "shared");
        let want: BTreeSet<String> = save
            .images
            .iter()
            .map(|(i, _)| i.reference.clone())
            .collect();
        let have: BTreeSet<String> = d.ctr_images(&ns).into_iter().collect();
        assert_eq!(
            have, want,
            "{}: the records left must be the names the archive holds",
            d.label
        );
        for (image, message) in &save.images {
            let out = stdout_of(d.ctr(&ns).args([
                "run",
                "--rm",
                &image.reference,
                &format!("{ns}-{}", image.tag.replace([':', '/'], "-")),
            ]));
            assert_eq!(out.trim(), *message, "{}: {}", d.label, image.reference);
        }
    }
}

/// `src` written to `dst` with the regular file `name` changed by `edit`: for the one field
/// detail a tool here does not write, on an archive the real tool made.
fn edited_tar(src: &Path, dst: &Path, name: &str, edit: impl FnOnce(&[u8]) -> Vec<u8>) {
    let mut files = tar_files(src);
    let at = files
        .iter()
        .position(|(n, _)| n.trim_start_matches("./") == name)
        .unwrap_or_else(|| panic!("{name} not in {}", src.display()));
    files[at].1 = edit(&files[at].1);
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    std::fs::write(dst, raw_tar(&refs)).unwrap();
}

/// A run of a container from `image` on `d`'s dockerd prints `message`.
fn docker_runs(d: &Daemons, image: &str, message: &str) {
    let out = stdout_of(d.docker().args(["run", "--rm", "--network", "none", image]));
    assert_eq!(out.trim(), message, "{}: {image}", d.label);
}

#[test]
fn bare_repo_tag_that_docker_refuses_as_an_invalid_tag_is_imported_with_latest_on_every_version() {
    let f = fixtures();
    let dir = temp_dir("bare-tag");
    let bare = format!("oi_test_bare_{}", std::process::id());
    // docker save's own archive, its RepoTags entry made bare, as the field has it.
    edited_tar(
        &f.dir.join("docker.tar"),
        &dir.join("bare.tar"),
        "manifest.json",
        |m| {
            let mut v: serde_json::Value = serde_json::from_slice(m).unwrap();
            v[0]["RepoTags"] = serde_json::json!([bare]);
            serde_json::to_vec(&v).unwrap()
        },
    );
    let full = format!("docker.io/library/{bare}:latest");
    for d in every_version() {
        let _docker = d.docker_lock();
        let (code, _, stderr) = outcome(&mut d.against_docker("import", &dir));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        assert!(stderr.contains("1 imported"), "{}: {stderr}", d.label);
        docker_runs(d, &full, "hello from alpha");
        let _ = d.docker().args(["image", "rm", &full]).output();

        let ns = unique_namespace("bare");
        let (code, _, stderr) = outcome(&mut d.against_containerd("import", &dir, &ns));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        assert_eq!(
            d.ctr_images(&ns),
            std::slice::from_ref(&full),
            "{}",
            d.label
        );
    }
}

#[test]
fn manifests_null_in_a_docker_25_index_is_read_through_manifest_json_on_every_version() {
    let versions = every_version();
    let Some(newer) = versions
        .iter()
        .find(|d| !d.docker_version.starts_with("20."))
    else {
        missing_precondition(
            "no Docker 25+ in this run (OI_VERSIONS): nothing to save the archive with",
        );
        return;
    };
    let f = fixtures();
    let dir = temp_dir("null-manifests");
    let saved = dir.join("saved.tar");
    run(newer
        .docker()
        .args(["load", "-q", "-i"])
        .arg(f.dir.join("docker.tar")));
    // A name of its own: the default pair's dockerd keeps alpha for the other tests.
    let tag = unique_tag("null-manifests");
    run(newer.docker().args(["tag", &f.alpha.tag, &tag]));
    run(newer.docker().args(["save", "-o"]).arg(&saved).arg(&tag));
    let reference = offline_images::reference::normalize(&tag).unwrap();
    let bundle = temp_dir("null-manifests-bundle");
    edited_tar(&saved, &bundle.join("alpha.tar"), "index.json", |i| {
        let mut v: serde_json::Value = serde_json::from_slice(i).unwrap();
        v["manifests"] = serde_json::Value::Null;
        serde_json::to_vec(&v).unwrap()
    });
    let listed = stdout_of(
        offline_images()
            .args(["list", "--json"])
            .arg(bundle.join("alpha.tar")),
    );
    assert!(listed.contains(&reference), "{listed}");
    for d in versions {
        let _docker = d.docker_lock();
        let ns = unique_namespace("null");
        let (code, _, stderr) = outcome(&mut d.against_containerd("import", &bundle, &ns));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        assert!(stderr.contains("1 imported"), "{}: {stderr}", d.label);
        assert_eq!(
            ctr_config_digest_on(d, &ns, &reference),
            Some(f.alpha.config_digest.clone()),
            "{}",
            d.label
        );
        docker_rmi_on(d, &tag);
        let (code, _, stderr) = outcome(&mut d.against_docker("import", &bundle));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        assert!(stderr.contains("1 imported"), "{}: {stderr}", d.label);
        docker_runs(d, &tag, "hello from alpha");
        docker_rmi_on(d, &tag);
    }
}

/// The config digest `d`'s containerd holds for `name` (a manifest's), via `ctr content get`.
fn ctr_config_digest_on(d: &Daemons, ns: &str, name: &str) -> Option<String> {
    let ls = stdout_of(d.ctr(ns).args(["images", "ls"]));
    let target = ls
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?
        .split_whitespace()
        .nth(2)?
        .to_string();
    let doc: serde_json::Value =
        serde_json::from_str(&stdout_of(d.ctr(ns).args(["content", "get", &target]))).unwrap();
    doc["config"]["digest"].as_str().map(str::to_string)
}

/// Remove `image` from `d`'s dockerd (absent is fine); on the default pair, keep the untagged
/// parents other tests' builds share.
fn docker_rmi_on(d: &Daemons, image: &str) {
    let _ = d
        .docker()
        .args(["image", "rm", "--force", "--no-prune", image])
        .stdin(std::process::Stdio::null())
        .output();
}

/// Makes a command, again each time.
type MakeCommand<'a> = Box<dyn Fn() -> std::process::Command + 'a>;

/// Import `dir` into a Docker twice (`import` gives the command): the first run imports, the
/// second skips the archive and loads nothing.
fn import_twice_into_docker(label: &str, import: impl Fn() -> std::process::Command) {
    let (code, _, stderr) = outcome(&mut import());
    assert_eq!(code, 0, "{label}: {stderr}");
    assert!(stderr.contains("1 imported"), "{label}: {stderr}");
    let (code, _, again) = outcome(&mut import());
    assert_eq!(code, 0, "{label}: {again}");
    assert!(
        again.contains("0 imported, 1 skipped"),
        "{label}: the second run must skip the archive:\n{again}"
    );
}

#[test]
fn shared_layer_symlink_docker_save_loads_into_every_docker_and_a_rerun_skips_it() {
    let saves = shared_layer_saves();
    for (i, (d, save)) in every_version().iter().zip(saves).enumerate() {
        let _docker = d.docker_lock();
        let dir = bundle_of(&save.archive, "release.tar");
        // The default pair's dockerd holds these images already (they were built there): a
        // private dockerd of the same version starts empty.
        let private = (i == 0).then(|| PrivateDockerd::start("shared-docker"));
        let (import, docker): (MakeCommand<'_>, MakeCommand<'_>) = match &private {
            Some(p) => (Box::new(|| p.import(&dir)), Box::new(|| p.docker())),
            None => (
                Box::new(|| d.against_docker("import", &dir)),
                Box::new(|| d.docker()),
            ),
        };
        import_twice_into_docker(&d.label, &import);
        for (image, message) in &save.images {
            let out = stdout_of(docker().args(["run", "--rm", "--network", "none", &image.tag]));
            assert_eq!(out.trim(), *message, "{}: {}", d.label, image.tag);
        }
        let mut verify = import();
        let args: Vec<std::ffi::OsString> = verify.get_args().skip(1).map(Into::into).collect();
        verify = std::process::Command::new(verify.get_program());
        verify.arg("verify").args(args);
        let (code, out, stderr) = outcome(&mut verify);
        assert_eq!(code, 0, "{}: verify:\n{out}{stderr}", d.label);
        for (image, _) in &save.images {
            docker_rmi_on_cmd(&docker, &image.tag, i == 0);
        }
    }
}

fn docker_rmi_on_cmd(docker: &dyn Fn() -> std::process::Command, tag: &str, private: bool) {
    if !private {
        let _ = docker()
            .args(["image", "rm", "--force", tag])
            .stdin(std::process::Stdio::null())
            .output();
    }
}

#[test]
fn short_ref_name_of_a_skopeo_oci_archive_is_named_in_full_on_ctr_2_and_dockers_containerd_store() {
    let f = fixtures();
    let (_, path, image) = f
        .flavours
        .iter()
        .find(|(name, _, _)| *name == "skopeo oci-archive")
        .unwrap();
    let dir = bundle_of(path, "alpha-oci.tar");
    for (i, d) in every_version().iter().enumerate() {
        let ns = unique_namespace("short-name");
        let (code, _, stderr) = outcome(&mut d.against_containerd("import", &dir, &ns));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        assert_eq!(
            d.ctr_images(&ns),
            std::slice::from_ref(&image.reference),
            "{}: the image must be named as kubelet asks for it",
            d.label
        );
        if i == 0 {
            continue; // the default pair's dockerd built alpha: covered by the versions table
        }
        let _docker = d.docker_lock();
        docker_rmi_on(d, &image.tag);
        let (code, _, stderr) = outcome(&mut d.against_docker("import", &dir));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        docker_runs(d, &image.reference, "hello from alpha");
        docker_rmi_on(d, &image.tag);
    }
}

/// `offline-images prune --release R` against `d`'s containerd in `ns`, with its own ctr.
fn prune_on(d: &Daemons, release: &str, ns: &str) -> (i32, String, String) {
    let mut c = offline_images();
    c.args(["prune", "--release", release, "--containerd-address"])
        .arg(&d.containerd_sock)
        .args(["--namespace", ns]);
    for v in [
        "IMAGE_RUNTIME",
        "CONTAINERD_ADDRESS",
        "HOST_ROOT",
        "RELEASE_NAME",
    ] {
        c.env_remove(v);
    }
    if let Some(dir) = d.ctr.parent().filter(|p| !p.as_os_str().is_empty()) {
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", dir.display()));
    }
    outcome(&mut c)
}

#[test]
fn prune_removes_one_releases_images_and_keeps_a_shared_one_on_every_containerd() {
    let f = fixtures();
    let saves = shared_layer_saves();
    for (d, save) in every_version().iter().zip(saves) {
        let ns = unique_namespace("prune-matrix");
        // Release shop: the shared-layer save (base, alpha, beta); release billing: alpha alone.
        let shop = bundle_of(&save.archive, "shop.tar");
        let billing = bundle_of(&f.dir.join("docker.tar"), "alpha.tar");
        for (release, dir) in [("shop", &shop), ("billing", &billing)] {
            let (code, _, stderr) = outcome(
                d.against_containerd("import", dir, &ns)
                    .args(["--release", release])
                    .env_remove("RELEASE_NAME"),
            );
            assert_eq!(code, 0, "{}: import --release {release}: {stderr}", d.label);
        }
        let (code, _, stderr) = prune_on(d, "shop", &ns);
        assert_eq!(code, 0, "{}: prune: {stderr}", d.label);
        let left: BTreeSet<String> = d.ctr_images(&ns).into_iter().collect();
        assert_eq!(
            left,
            BTreeSet::from([f.alpha.reference.clone()]),
            "{}: prune shop must keep only alpha, which billing shares:\n{stderr}",
            d.label
        );
    }
}

#[test]
fn a_bad_archive_beside_good_ones_fails_alone_on_every_version() {
    let f = fixtures();
    for d in every_version() {
        let dir = bundle_of(&f.dir.join("docker.tar.gz"), "good.tar.gz");
        // The same archive cut in the middle of its gzip stream.
        let good = std::fs::read(dir.join("good.tar.gz")).unwrap();
        std::fs::write(dir.join("cut.tar.gz"), &good[..good.len() / 2]).unwrap();
        let ns = unique_namespace("fault");
        let (code, _, stderr) = outcome(&mut d.against_containerd("import", &dir, &ns));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        assert!(
            stderr.contains("1 imported") && stderr.contains("1 failed"),
            "{}: {stderr}",
            d.label
        );
        assert!(stderr.contains("cut.tar.gz"), "{}: {stderr}", d.label);
        assert_eq!(
            d.ctr_images(&ns),
            std::slice::from_ref(&f.alpha.reference),
            "{}: nothing of the cut archive may be left",
            d.label
        );
        let (code, _, _) = outcome(d.against_containerd("import", &dir, &ns).arg("--strict"));
        assert_eq!(
            code, 1,
            "{}: --strict must fail on the cut archive",
            d.label
        );
    }
}

/// The archive of `compressed()` named `row`.
fn compressed_archive(row: &str) -> std::path::PathBuf {
    crate::corpus::compressed()
        .iter()
        .find(|(name, _)| name.contains(row))
        .unwrap_or_else(|| panic!("no compressed archive {row:?}"))
        .1
        .clone()
}

#[test]
fn pzstd_archive_that_starts_with_a_skippable_frame_is_read_as_zstd_on_every_version() {
    let f = fixtures();
    let dir = bundle_of(&compressed_archive("pzstd"), "alpha.tar.zst");
    let listed = stdout_of(
        offline_images()
            .args(["list", "--json"])
            .arg(dir.join("alpha.tar.zst")),
    );
    assert!(listed.contains(&f.alpha.reference), "{listed}");
    for d in every_version() {
        let ns = import_twice_into_containerd(d, &dir, "pzstd");
        assert_eq!(d.ctr_images(&ns), std::slice::from_ref(&f.alpha.reference));
    }
}

#[test]
fn zstd_long_frame_after_the_first_is_decoded_not_refused_as_too_big_on_every_version() {
    let f = fixtures();
    let dir = bundle_of(&compressed_archive("--long"), "alpha.tar.zst");
    for d in every_version() {
        let ns = import_twice_into_containerd(d, &dir, "zstd-long");
        assert_eq!(d.ctr_images(&ns), std::slice::from_ref(&f.alpha.reference));
    }
    // A window over zstd -d's own limit (`--long=31` on a stream) is refused with the reason,
    // before any memory is taken for it.
    let wide = temp_dir("zstd-long-31").join("alpha.tar.zst");
    let status = std::process::Command::new("zstd")
        .args(["-q", "--long=31", "-c"])
        .stdin(std::fs::File::open(f.dir.join("docker.tar")).unwrap())
        .stdout(std::fs::File::create(&wide).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let (code, _, stderr) = outcome(offline_images().arg("list").arg(&wide));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("needs a 2048 MiB window, over the 128 MiB limit"),
        "{stderr}"
    );
}

#[test]
fn untagged_docker_archive_is_skipped_on_a_rerun_and_verified_on_every_docker() {
    let f = fixtures();
    let dir = bundle_of(&f.untagged, "untagged.tar");
    for (i, d) in every_version().iter().enumerate() {
        let _docker = d.docker_lock();
        // The default pair's dockerd has alpha already (built there): a private one is empty.
        let private = (i == 0).then(|| PrivateDockerd::start("untagged-docker"));
        let import: MakeCommand<'_> = match &private {
            Some(p) => Box::new(|| p.import(&dir)),
            None => Box::new(|| d.against_docker("import", &dir)),
        };
        if d.docker_containerd_store() {
            // Not fixed: the containerd store names a legacy archive's untagged image by a
            // manifest digest it makes up, which the archive does not hold, and reports no
            // config, so neither a re-run nor verify can find it. Import only.
            let (code, _, stderr) = outcome(&mut import());
            assert_eq!(code, 0, "{}: {stderr}", d.label);
            docker_rmi_on(d, &f.alpha.config_digest);
            continue;
        }
        import_twice_into_docker(&d.label, &import);
        let mut verify = import();
        let args: Vec<std::ffi::OsString> = verify.get_args().skip(1).map(Into::into).collect();
        verify = std::process::Command::new(verify.get_program());
        verify.arg("verify").args(args);
        let (code, out, stderr) = outcome(&mut verify);
        assert_eq!(code, 0, "{}: verify:\n{out}{stderr}", d.label);
        if private.is_none() {
            docker_rmi_on(d, &f.alpha.config_digest);
        }
    }
}

#[test]
fn ctr_export_of_one_platform_of_an_index_loads_into_dockers_containerd_store() {
    let stores: Vec<&Daemons> = every_version()
        .iter()
        .filter(|d| d.docker_containerd_store())
        .collect();
    if stores.is_empty() {
        missing_precondition("no Docker with the containerd image store in this run (OI_VERSIONS)");
        return;
    }
    let Some(index) = crate::corpus::multi_platform_index() else {
        missing_precondition(
            "no podman 5 in this run (OI_PODMAN): no multi-platform index to export",
        );
        return;
    };
    for d in stores {
        let _docker = d.docker_lock();
        let exported = crate::corpus::ctr_export_multi_platform(d, false).unwrap();
        let dir = bundle_of(&exported, "multi.tar");
        docker_rmi_on(d, &index.tag);
        import_twice_into_docker(&d.label, || d.against_docker("import", &dir));
        docker_runs(d, &index.tag, "hello from alpha");
        docker_rmi_on(d, &index.tag);
    }
}
