//! The native containerd client: what it alone does (disk preflight, blobs and snapshots
//! skipped when present), on real containerd daemons. The import, verify, prune and fault
//! suites run with it too (see `harness::containerd_client`).

use std::path::Path;
use std::process::Command;

use crate::harness::*;

const BOUND: u64 = 120;

/// `cd.import`, with the native client whatever the suite's client is.
fn native_import(cd: &PrivateContainerd, dir: &Path, ns: &str) -> Command {
    let mut c = cd.import(dir, ns);
    c.env("CONTAINERD_CLIENT", "native")
        .env("PATH", empty_path());
    c
}

fn line_of<'a>(log: &'a str, file: &str) -> &'a str {
    log.lines()
        .find(|l| {
            (l.starts_with("imported") || l.starts_with("FAILED") || l.starts_with("skipped"))
                && l.contains(file)
        })
        .unwrap_or_else(|| panic!("no result line for {file}:\n{log}"))
}

/// Bytes under `dir`, as the files there hold them.
fn bytes_under(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn the_disk_preflight_refuses_an_archive_that_would_not_fit_before_sending_a_byte_and_the_others_import(
) {
    let f = fixtures();
    // 44 MiB of layer, stored and unpacked: 88 MiB of a 120 MiB disk, over 70%, under 85%.
    let cd = PrivateContainerd::start("preflight", Some(120));
    let dir = temp_dir("preflight-images");
    big_docker_archive(&dir.join("a-big.tar"), "oi-test/preflight-big:1", 44);
    std::fs::copy(f.dir.join("docker.tar.gz"), dir.join("b-alpha.tar.gz")).unwrap();
    let ns = "preflight";
    let content = cd.root.join("io.containerd.content.v1.content");

    let out = run_bounded(
        native_import(&cd, &dir, ns).args(["--disk-max-used", "70"]),
        BOUND,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = line_of(&out.stderr, "a-big.tar");
    assert!(line.starts_with("FAILED"), "{}", out.stderr);
    for words in [
        "not enough disk space",
        "88.0 MiB",
        "70%",
        "nothing of it was sent",
    ] {
        assert!(line.contains(words), "{words:?} in {line}");
    }
    assert!(
        line_of(&out.stderr, "b-alpha.tar.gz").starts_with("imported"),
        "{}",
        out.stderr
    );
    // Not a byte of the big layer reached containerd: its store holds alpha alone.
    let stored = bytes_under(&content);
    assert!(stored < 8 << 20, "{stored} bytes in {}", content.display());
    assert!(!cd.images(ns).iter().any(|n| n.contains("preflight-big")));

    // At the default limit (85%) it fits, and goes in.
    let out = run_bounded(&native_import(&cd, &dir, ns), BOUND);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        line_of(&out.stderr, "a-big.tar").starts_with("imported"),
        "{}",
        out.stderr
    );
    assert!(cd
        .images(ns)
        .contains(&"docker.io/oi-test/preflight-big:1".to_string()));
}
