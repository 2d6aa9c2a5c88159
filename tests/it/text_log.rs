//! The text log (the chart's default) and the termination message can be trusted whatever
//! the bundle holds: file names, paths, digests and daemons' errors come from input, and none
//! may forge a line, move a terminal's cursor or fill a line on its own (issue 31, finding 3).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// The file name of issue 31: it printed a forged summary after its own line, split the real
/// summary (which repeated the name), and erased a line on a terminal.
const FORGING_NAME: &str = "a.tar\nsummary: 2 imported, 0 skipped (already present), 0 failed, \
     of 2 archive(s) in 0.1 s\n\x1b[1A\x1b[2Kx.tar";

/// A name that would forge an "imported" line, with a line separator and a bidi override.
const FORGING_IMPORTED: &str = "b.tar\nimported  payments.tar\u{2028}\u{202e}x.tar";

/// Any run here that takes longer than this is a hang.
const BOUND: u64 = 120;

/// The characters that must never reach the log raw (a newline only between lines).
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}'..='\u{200f}')
        })
        .collect()
}

/// An empty file for the importer's termination message, as the kubelet provides one.
fn termination_file(dir: &Path) -> PathBuf {
    let path = dir.with_extension("termination-log");
    std::fs::write(&path, b"").unwrap();
    path
}

/// What every run here must show: no raw control character in the log or the termination
/// message, exactly one summary line, the log's last, which is the true one (as many imported
/// and skipped as the archive lines say, `failed` failed, of `archives`), and the termination
/// message's first line.
fn assert_trusted(stderr: &str, termination: &Path, failed: usize, archives: usize) {
    assert!(
        raw_controls(stderr).is_empty(),
        "raw {:?} in the log:\n{stderr}",
        raw_controls(stderr)
    );
    let message = std::fs::read_to_string(termination).unwrap();
    assert!(
        raw_controls(&message).is_empty(),
        "raw {:?} in the termination message:\n{message}",
        raw_controls(&message)
    );
    let starting = |w: &str| stderr.lines().filter(|l| l.starts_with(w)).count();
    let (imported, skipped) = (starting("imported "), starting("skipped "));
    assert_eq!(imported + skipped + failed, archives, "{stderr}");
    assert_eq!(starting("FAILED "), failed, "{stderr}");
    let summary = format!(
        "summary: {imported} imported, {skipped} skipped (already present), {failed} failed, \
         of {archives} archive(s)"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&summary),
        "the last line is not the true summary {summary:?}:\n{stderr}"
    );
    assert_eq!(starting("summary"), 1, "one summary line:\n{stderr}");
    assert_eq!(message.lines().next(), Some(last), "{message}");
}

/// The importer's command for one runtime: containerd in a namespace of its own, or Docker.
fn import_into(runtime: &str, dir: &Path, label: &str) -> Command {
    match runtime {
        "containerd" => against_containerd("import", dir, &unique_namespace(label)),
        _ => daemons().against_docker("import", dir),
    }
}

fn forging_file_names_on(runtime: &str) {
    let f = fixtures();
    let dir = temp_dir("forging-names");
    std::fs::copy(f.dir.join("docker.tar.gz"), dir.join("a-good-alpha.tar.gz")).unwrap();
    std::fs::write(dir.join(FORGING_NAME), b"not an archive at all").unwrap();
    std::fs::copy(&f.two_images, dir.join(FORGING_IMPORTED)).unwrap();
    let termination = termination_file(&dir);
    let _docker = (runtime == "docker").then(|| daemons().docker_lock());
    let mut cmd = import_into(runtime, &dir, "forging-names");
    cmd.arg("--termination-log").arg(&termination);
    let out = run_bounded(&cmd, BOUND);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_trusted(&out.stderr, &termination, 1, 3);
    assert!(
        out.stderr
            .contains("FAILED    a.tar\\nsummary: 2 imported, 0 skipped (already present)"),
        "the name is shown escaped:\n{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("  b.tar\\nimported  payments.tar\\u{2028}\\u{202e}x.tar  "),
        "{}",
        out.stderr
    );
    // The JSON log keeps every value whole.
    let mut cmd = import_into(runtime, &dir, "forging-names-json");
    cmd.args(["--log-format", "json", "--dry-run"]);
    let out = run_bounded(&cmd, BOUND);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let files: Vec<String> = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "archive")
        .filter_map(|v| v["file"].as_str().map(str::to_string))
        .collect();
    for name in [FORGING_NAME, FORGING_IMPORTED] {
        assert!(files.iter().any(|f| f == name), "{name:?} in {files:?}");
    }
}

#[test]
fn a_file_name_that_forges_log_lines_is_escaped_and_the_true_summary_stays_last() {
    forging_file_names_on("containerd");
}

#[test]
fn a_file_name_that_forges_log_lines_is_escaped_and_the_true_summary_stays_last_on_docker() {
    forging_file_names_on("docker");
}

/// skopeo's OCI archive of alpha, its index.json's descriptor digest given a newline, a
/// forged summary and a terminal's erase-line sequence.
fn forging_digest_archive(dst: &Path) {
    let src = &fixtures()
        .flavours
        .iter()
        .find(|(flavour, ..)| *flavour == "skopeo oci-archive")
        .unwrap()
        .1;
    let mut files = tar_files(src);
    let (_, index) = files.iter_mut().find(|(n, _)| n == "index.json").unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(index).unwrap();
    let digest = json["manifests"][0]["digest"].as_str().unwrap().to_string();
    json["manifests"][0]["digest"] = format!(
        "{digest}\nsummary: 9 imported, 0 skipped (already present), 0 failed, of 9 archive(s) \
         in 0.1 s\n\x1b[1A\x1b[2K"
    )
    .into();
    *index = serde_json::to_vec(&json).unwrap();
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    std::fs::write(dst, raw_tar(&borrowed)).unwrap();
}

fn forging_digest_on(runtime: &str) {
    let f = fixtures();
    let dir = temp_dir("forging-digest");
    std::fs::copy(f.dir.join("docker.tar.gz"), dir.join("a-good-alpha.tar.gz")).unwrap();
    forging_digest_archive(&dir.join("m-digest.tar"));
    let termination = termination_file(&dir);
    let _docker = (runtime == "docker").then(|| daemons().docker_lock());
    let mut cmd = import_into(runtime, &dir, "forging-digest");
    cmd.arg("--termination-log").arg(&termination);
    let out = run_bounded(&cmd, BOUND);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_trusted(&out.stderr, &termination, 1, 2);
    let failed: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("FAILED"))
        .collect();
    assert!(
        matches!(failed.as_slice(), [line] if line.starts_with("FAILED    m-digest.tar: ")),
        "{}",
        out.stderr
    );
}

#[test]
fn a_descriptor_digest_holding_a_newline_forges_no_log_line() {
    forging_digest_on("containerd");
}

#[test]
fn a_descriptor_digest_holding_a_newline_forges_no_log_line_on_docker() {
    forging_digest_on("docker");
}

/// `depth` directories of 200 bytes each under `dir`, with `archive` copied into the deepest
/// as x.tar. The whole path is longer than PATH_MAX, so each directory is made through the one
/// above it, opened (`/proc/self/fd/N/NAME` is a short path to it). Returns the path below
/// `dir`, and its first directory.
fn deep_path(dir: &Path, depth: usize, archive: &Path) -> (String, String) {
    let parts: Vec<String> = (0..depth)
        .map(|i| format!("{i:02}{}", "p".repeat(198)))
        .collect();
    let mut at = std::fs::File::open(dir).unwrap();
    let under = |at: &std::fs::File, name: &str| {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}/{name}", at.as_raw_fd()))
    };
    for p in &parts {
        std::fs::create_dir(under(&at, p)).unwrap();
        at = std::fs::File::open(under(&at, p)).unwrap();
    }
    std::fs::copy(archive, under(&at, "x.tar")).unwrap();
    (format!("{}/x.tar", parts.join("/")), parts[0].clone())
}

#[test]
fn a_5_kb_path_is_shown_cut_once() {
    let f = fixtures();
    let dir = temp_dir("long-path");
    std::fs::copy(f.dir.join("docker.tar.gz"), dir.join("a-good-alpha.tar.gz")).unwrap();
    let (path, first) = deep_path(&dir, 25, &f.dir.join("docker.tar"));
    assert!(path.len() > 5000, "{}", path.len());
    let termination = termination_file(&dir);
    let mut cmd = against_containerd("import", &dir, &unique_namespace("long-path"));
    cmd.arg("--termination-log").arg(&termination);
    let out = run_bounded(&cmd, BOUND);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Its first 100 bytes: a cut path keeps that much of its head.
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(&first[..100]))
        .collect();
    assert!(
        matches!(lines.as_slice(), [line] if line.starts_with("FAILED") && line.contains(" bytes cut)…")),
        "the path is shown once, cut:\n{}",
        out.stderr
    );
    for line in out.stderr.lines() {
        assert!(line.len() < 1000, "a line of {} bytes:\n{line}", line.len());
    }
    assert!(
        out.stderr.lines().last().unwrap_or_default().starts_with(
            "summary: 1 imported, 0 skipped (already present), 1 failed, of 2 archive(s)"
        ),
        "{}",
        out.stderr
    );
    let message = std::fs::read_to_string(&termination).unwrap();
    assert!(message.len() < 1000, "{message}");
}

#[test]
fn list_and_verify_show_a_forging_file_name_escaped() {
    let f = fixtures();
    let dir = temp_dir("forging-list");
    std::fs::copy(&f.two_images, dir.join(FORGING_IMPORTED)).unwrap();
    std::fs::write(dir.join(FORGING_NAME), b"not an archive at all").unwrap();
    let ns = unique_namespace("forging-verify");
    for (what, mut cmd) in [
        ("list", offline_images()),
        ("verify", against_containerd("verify", &dir, &ns)),
    ] {
        if what == "list" {
            cmd.arg("list").arg(&dir);
        }
        let (code, stdout, stderr) = outcome(&mut cmd);
        // The file that is no archive fails both; verify also misses every image.
        assert_eq!(code, 1, "{what}:\n{stdout}\n{stderr}");
        for text in [&stdout, &stderr] {
            assert!(
                raw_controls(text).is_empty(),
                "{what}: raw {:?} in:\n{text}",
                raw_controls(text)
            );
        }
        assert!(
            stdout.contains("b.tar\\nimported  payments.tar\\u{2028}\\u{202e}x.tar"),
            "{what}:\n{stdout}"
        );
    }
}
