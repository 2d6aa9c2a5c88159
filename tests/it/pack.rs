//! `export --pack FILE` (and `--split SIZE`) against the rig's registry: the layout bundle as
//! one `.tar` or `.tar.zst` (or its parts) that the real `tar` and `zstd` read, and that
//! `list`, `import` (into containerd and Docker), a re-run and `verify --bundle-only` read in
//! place as they read the directory; a missing part is named.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::*;

/// Two images pushed once for these tests (each busybox and a message of its own).
fn images() -> &'static [TestImage] {
    static I: OnceLock<Vec<TestImage>> = OnceLock::new();
    I.get_or_init(|| {
        let pid = std::process::id();
        ["a", "b"]
            .iter()
            .map(|n| pushed_image(&format!("pack-{n}-{pid}"), &format!("hello from pack {n}")))
            .collect()
    })
}

/// `export --pack` of the two images into `out`, packed as `extra` says; the log.
fn packed(out: &Path, extra: &[&str]) -> String {
    let refs: Vec<&str> = images().iter().map(|i| i.reference.as_str()).collect();
    let mut c = registry_export_as(out, &bare_path(&[]), "layout");
    c.arg("--no-importer-binary").args(extra).args(&refs);
    let (code, _, log) = outcome(&mut c);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("offline-images: packed "), "{log}");
    log
}

/// The member names `sh -c SCRIPT` lists (a `tar t` pipeline, the real tools).
fn listed(script: &str, dir: &Path) -> Vec<String> {
    stdout_of(Command::new("sh").args(["-c", script]).current_dir(dir))
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_members(names: &[String]) {
    assert_eq!(
        names[..4],
        ["oci-layout", "index.json", "images.json", "SHA256SUMS"],
        "{names:?}"
    );
    assert!(names[4..].iter().all(|n| n.starts_with("blobs/sha256/")));
    assert!(names.len() > 8, "{names:?}");
}

fn parts_of(dir: &Path, file: &str) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(&format!("{file}.part-")))
        .collect();
    parts.sort();
    parts
}

/// Each image imported (or skipped, as `word` says) from the pack `file`.
fn each_line(stderr: &str, file: &str, word: &str) {
    for i in images() {
        let unit = format!("{file}/index.json#{}", i.reference);
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(word) && l.contains(&unit)),
            "{word} {unit}:\n{stderr}"
        );
    }
}

#[test]
fn a_split_tar_zst_pack_is_read_by_zstd_and_tar_and_imports_into_containerd_in_parts_or_joined() {
    let dir = scratch_dir("pack-zst");
    let carry = dir.join("carry");
    std::fs::create_dir_all(&carry).unwrap();
    let file = carry.join("b.tar.zst");
    packed(
        &dir.join("bundle"),
        &["--pack", file.to_str().unwrap(), "--split", "256K"],
    );
    let parts = parts_of(&carry, "b.tar.zst");
    assert!(parts.len() >= 3, "{parts:?}");
    assert!(!file.exists());
    run(Command::new("sha256sum")
        .args(["-c", "--strict", "b.tar.zst.sha256sums"])
        .current_dir(&carry));
    assert_members(&listed("cat b.tar.zst.part-* | zstd -dc | tar t", &carry));

    let list = stdout_of(offline_images().args(["list"]).arg(&carry));
    for i in images() {
        assert!(list.contains(&i.reference), "{list}");
    }
    let ns = unique_namespace("pack");
    let (code, _, stderr) = outcome(&mut against_containerd("import", &carry, &ns));
    assert_eq!(code, 0, "{stderr}");
    each_line(&stderr, "b.tar.zst", "imported ");
    for i in images() {
        assert_eq!(
            ctr_config_digest(&ns, &i.reference).as_deref(),
            Some(i.config_digest.as_str())
        );
    }
    let (code, _, stderr) = outcome(&mut against_containerd("import", &carry, &ns));
    assert_eq!(code, 0, "{stderr}");
    each_line(&stderr, "b.tar.zst", "skipped ");
    assert!(
        stderr.contains("summary: 0 imported, 2 skipped"),
        "{stderr}"
    );
    let (code, faults, log) = bundle_only(&file);
    assert_eq!(code, 0, "{faults}{log}");
    assert!(log.contains("consistent"), "{log}");

    joined_reads_the_same(&dir, &carry);
    a_missing_part_is_named(&carry, &parts[1], &file);
}

/// `verify --bundle-only --images-path PATH`: (exit code, faults, log).
fn bundle_only(path: &Path) -> (i32, String, String) {
    outcome(
        offline_images()
            .args(["verify", "--bundle-only", "--images-path"])
            .arg(path),
    )
}

/// Joined with cat, the parts in `carry` read the same, as a plain .tar.zst too.
fn joined_reads_the_same(dir: &Path, carry: &Path) {
    let joined = dir.join("joined");
    std::fs::create_dir_all(&joined).unwrap();
    run(Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {}/b.tar.zst.part-* > b.tar.zst",
            carry.display()
        ))
        .current_dir(&joined));
    assert_members(&listed("zstd -dc b.tar.zst | tar t", &joined));
    let ns = unique_namespace("pack-joined");
    let (code, _, stderr) = outcome(&mut against_containerd("import", &joined, &ns));
    assert_eq!(code, 0, "{stderr}");
    each_line(&stderr, "b.tar.zst", "imported ");
    let (code, faults, log) = bundle_only(&joined.join("b.tar.zst"));
    assert_eq!(code, 0, "{faults}{log}");
}

/// A part left behind is named, by the import (a failed unit, as a bad archive is) and by the
/// check.
fn a_missing_part_is_named(carry: &Path, part: &Path, file: &Path) {
    std::fs::remove_file(part).unwrap();
    let ns = unique_namespace("pack-missing");
    let (_, _, stderr) = outcome(&mut against_containerd("import", carry, &ns));
    let missing = part.file_name().unwrap().to_string_lossy().into_owned();
    let failed = stderr
        .lines()
        .find(|l| l.starts_with("FAILED    b.tar.zst: "));
    assert!(
        failed.is_some_and(|l| l.contains(&format!("{missing} is missing"))),
        "{stderr}"
    );
    let (code, faults, _) = bundle_only(file);
    assert_eq!(code, 1);
    assert!(faults.contains(&missing), "{faults}");
}

#[test]
fn a_tar_pack_is_read_by_tar_and_loads_into_docker_and_a_rerun_skips() {
    let dir = scratch_dir("pack-tar");
    let carry = dir.join("carry");
    std::fs::create_dir_all(&carry).unwrap();
    let file = carry.join("b.tar");
    packed(&dir.join("bundle"), &["--pack", file.to_str().unwrap()]);
    assert_members(&listed("tar tf b.tar", &carry));
    run(Command::new("sha256sum")
        .args(["-c", "--strict", "b.tar.sha256sums"])
        .current_dir(&carry));
    let d = daemons();
    let (code, _, stderr) = outcome(&mut d.against_docker("import", &carry));
    assert_eq!(code, 0, "{stderr}");
    each_line(&stderr, "b.tar", "imported ");
    for i in images() {
        assert_eq!(
            d.docker_image_id(&i.reference).as_deref(),
            Some(i.config_digest.as_str())
        );
    }
    let (code, _, stderr) = outcome(&mut d.against_docker("import", &carry));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("summary: 0 imported, 2 skipped"),
        "{stderr}"
    );
    let (code, stdout, stderr) = outcome(&mut d.against_docker("verify", &carry));
    assert_eq!(code, 0, "{stdout}{stderr}");
    for i in images() {
        docker_rmi(&i.reference);
    }
}

#[test]
fn pack_is_refused_with_archives_and_a_name_other_than_tar_or_tar_zst() {
    let dir = scratch_dir("pack-usage");
    for (extra, says) in [
        (
            vec!["--format", "archives", "--pack", "b.tar"],
            "--pack packs a layout bundle: it cannot be given with --format archives",
        ),
        (
            vec!["--pack", "b.tgz"],
            "--pack b.tgz: the file must end in .tar or .tar.zst",
        ),
        (vec!["--split", "1G"], "--split 1G applies to --pack"),
        (
            vec!["--pack", "/nonexistent-dir/b.tar"],
            "--pack /nonexistent-dir/b.tar: the directory /nonexistent-dir does not exist",
        ),
    ] {
        // Archives where asked (the refusal of --pack with them), else the default.
        let format = if extra.contains(&"archives") {
            "archives"
        } else {
            "layout"
        };
        let mut c = registry_export_as(&dir.join("out"), &bare_path(&[]), format);
        let extra: Vec<&str> = extra
            .into_iter()
            .filter(|a| !["--format", "archives"].contains(a))
            .collect();
        let (code, _, log) = outcome(c.args(&extra).arg("x.io/a:1"));
        assert_eq!(code, 2, "{log}");
        assert!(log.contains(says), "{log}");
    }
}
