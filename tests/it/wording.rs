//! What the operator reads adds up (issue 30): one regression test per finding of that issue
//! about what the commands print, each named after the finding, against the real daemons.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::harness::*;

/// A bundle the registry engine wrote of one image pushed to the suite's registry: one OCI
/// archive whose `index.json` names the image twice (its tag and its manifest digest).
struct Exported {
    dir: PathBuf,
    file: String,
    image: TestImage,
}

fn exported() -> &'static Exported {
    static E: OnceLock<Exported> = OnceLock::new();
    E.get_or_init(|| {
        let image = pushed_image("wording-two-layers", "two layers, two names");
        let dir = temp_dir("wording-bundle");
        run(registry_export(&dir, &bare_path(&[])).arg(&image.tag));
        let r = offline_images::reference::Reference::parse(&image.tag).unwrap();
        Exported {
            file: format!("{}.tar", r.file_stem()),
            dir,
            image,
        }
    })
}

/// The lines of `log` that start with `prefix`.
fn lines_starting<'a>(log: &'a str, prefix: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn one_line<'a>(log: &'a str, prefix: &str) -> &'a str {
    match lines_starting(log, prefix).as_slice() {
        [one] => one,
        other => panic!("{} line(s) start with {prefix:?}:\n{log}", other.len()),
    }
}

/// `import` with the named containerd client (ctr from the system's PATH).
fn import_with(client: &str, dir: &Path, ns: &str) -> Command {
    let mut c = against_containerd("import", dir, ns);
    c.env("CONTAINERD_CLIENT", client);
    if client == "ctr" {
        c.env("PATH", std::env::var("PATH").unwrap_or_default());
    } else {
        c.env("PATH", empty_path());
    }
    c
}

/// Finding 3: `export --values e.yaml --allow-empty` on values that name no image said
/// "nothing to export: give IMAGE arguments, ... --values ..." and exited 2.
#[test]
fn export_allow_empty_on_values_without_images_exits_0_not_2() {
    let dir = temp_dir("allow-empty");
    let values = dir.join("e.yaml");
    std::fs::write(&values, "replicaCount: 2\n").unwrap();
    let out = dir.join("images");
    let export = |extra: &[&str]| {
        let mut c = registry_export(&out, &bare_path(&[]));
        c.arg("--values").arg(&values).args(extra);
        outcome(&mut c)
    };
    let (code, _, stderr) = export(&["--allow-empty"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("nothing to export: the inputs name no image (--allow-empty)"),
        "{stderr}"
    );
    assert!(!stderr.contains("give IMAGE arguments"), "{stderr}");
    assert!(!out.exists(), "nothing is written");
    let (code, _, stderr) = export(&[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no image reference found"), "{stderr}");
    // No input at all is still a usage error, and says what to give.
    let (code, _, stderr) = outcome(&mut registry_export(&out, &bare_path(&[])));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("nothing to export: give IMAGE arguments"),
        "{stderr}"
    );
}

/// Finding 5: `export REF --platform linux/arm64` of an amd64-only image wrote the amd64
/// image and exited 0 with "0 failed".
#[test]
fn exporting_for_a_platform_the_image_lacks_fails_that_image() {
    let image = &exported().image;
    let out = temp_dir("wrong-platform").join("images");
    let mut c = registry_export(&out, &bare_path(&[]));
    c.args(["--platform", "linux/arm64"]).arg(&image.tag);
    let (code, _, stderr) = outcome(&mut c);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: FAILED: {} has no image for linux/arm64 (it is a single-platform image for \
             linux/amd64",
            image.tag, image.tag
        )),
        "{stderr}"
    );
    assert!(stderr.contains(", 1 failed,"), "{stderr}");
    let archives: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    assert!(archives.is_empty(), "no archive is written: {archives:?}");
}

/// Finding 6: on a directory with bad files the header said "importing 6 archive(s)" and the
/// summary "of 11 archive(s)"; the JSON start event said 6.
#[test]
fn the_header_and_the_summary_count_the_same_archives() {
    let f = fixtures();
    let dir = temp_dir("counted");
    std::fs::copy(f.dir.join("docker.tar"), dir.join("good.tar")).unwrap();
    run(Command::new("mkfifo").arg(dir.join("pipe.tar")));
    std::os::unix::fs::symlink("/nonexistent/gone.tar", dir.join("gone.tar")).unwrap();
    let sum = offline_images::bundle::sha256_file(&dir.join("good.tar")).unwrap();
    std::fs::write(
        dir.join("SHA256SUMS"),
        format!("{sum}  good.tar\n{}  missing.tar.gz\n", "0".repeat(64)),
    )
    .unwrap();
    let ns = unique_namespace("counted");
    let mut json = against_containerd("import", &dir, &ns);
    json.args(["--log-format", "json"]);
    let (_, _, stderr) = outcome(&mut json);
    let events: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let start = events.iter().find(|e| e["event"] == "start").unwrap();
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    let reported = summary["archives"].as_array().unwrap().len();
    assert_eq!(reported, 4, "{stderr}");
    assert_eq!(start["archives"], reported, "{stderr}");
    let (_, _, text) = outcome(&mut against_containerd("import", &dir, &ns));
    assert!(text.contains(": importing 4 archive(s), "), "{text}");
    assert!(text.contains(", of 4 archive(s) in "), "{text}");
}

/// Finding 7: a first import of a one-layer image with a tag and a digest name printed "1
/// layer(s) unpacked, 1 already unpacked" on an empty namespace.
#[test]
fn layers_are_counted_per_image_not_per_name() {
    let e = exported();
    let ns = unique_namespace("per-image");
    let (code, _, stderr) = outcome(&mut import_with("native", &e.dir, &ns));
    assert_eq!(code, 0, "{stderr}");
    // busybox and the image's own file: two layers, none there before.
    let sent = one_line(&stderr, &format!("{}: sent ", e.file));
    assert!(
        sent.ends_with("; 2 layer(s) unpacked, 0 already unpacked"),
        "{sent}"
    );
    let (code, _, stderr) = outcome(import_with("native", &e.dir, &ns).arg("--force"));
    assert_eq!(code, 0, "{stderr}");
    let sent = one_line(&stderr, &format!("{}: sent ", e.file));
    assert!(
        sent.ends_with("; 0 layer(s) unpacked, 2 already unpacked"),
        "{sent}"
    );
}

/// Finding 8: the same config digest was printed once per name ("config sha256:3faa…,
/// sha256:3faa…"), and repeated in the `--report` file too.
#[test]
fn the_config_digest_is_printed_once_per_image_not_once_per_name() {
    let e = exported();
    let config = &e.image.config_digest;
    for client in ["native", "ctr"] {
        let ns = unique_namespace("once");
        let report = temp_dir("once-report").join("report.json");
        let mut c = import_with(client, &e.dir, &ns);
        c.arg("--report").arg(&report);
        let (code, _, stderr) = outcome(&mut c);
        assert_eq!(code, 0, "{client}: {stderr}");
        let line = one_line(&stderr, "imported");
        assert_eq!(line.matches(config.as_str()).count(), 1, "{client}: {line}");
        let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(
            r["archives"][0]["digests"],
            serde_json::json!([config]),
            "{client}"
        );
        let (code, _, stderr) = outcome(&mut import_with(client, &e.dir, &ns));
        assert_eq!(code, 0, "{client}: {stderr}");
        let line = one_line(&stderr, "skipped");
        assert_eq!(line.matches(config.as_str()).count(), 1, "{client}: {line}");
    }
}

/// Finding 9: a failed export read backwards: "FAILED: and podman does not hold it either:
/// http://…/manifests/9: HTTP 404".
#[test]
fn a_failed_export_says_the_registrys_answer_first() {
    let missing = format!("{}/oi-export/never-pushed:9", daemons().registry);
    let out = temp_dir("never-pushed").join("images");
    let mut c = export_cmd(&out);
    c.arg(&missing);
    let (code, _, stderr) = outcome(&mut c);
    assert_eq!(code, 1, "{stderr}");
    let failed = one_line(&stderr, &format!("[1/1] {missing}: FAILED: "));
    let why = failed.split_once(": FAILED: ").unwrap().1;
    assert!(
        why.starts_with(&format!(
            "http://{}/v2/oi-export/never-pushed/manifests/9: HTTP 404",
            daemons().registry
        )),
        "{failed}"
    );
    assert!(
        why.ends_with("; and docker does not hold it either"),
        "{failed}"
    );
}

/// The value clap or the help text gives for `--flag` in `help`: what `[default: …]` says
/// after the flag's name, up to the next flag.
fn stated_default(help: &str, flag: &str) -> String {
    let start = help.find(&format!("--{flag} ")).unwrap();
    let rest = &help[start..];
    let end = rest[2..].find("\n      --").map_or(rest.len(), |i| i + 2);
    let section = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
    let at = section
        .find("[default: ")
        .unwrap_or_else(|| panic!("--{flag} states no default: {section}"));
    section[at + 10..section[at..].find(']').unwrap() + at].to_string()
}

/// Finding 10: `import --help` said `--jobs` "[default: 1]" while the native client runs two
/// archives at a time (the JSON start event said `"jobs":2`).
#[test]
fn import_help_states_the_jobs_default_that_runs() {
    let help = stdout_of(offline_images().args(["import", "--help"]));
    let stated = stated_default(&help, "jobs");
    // "N" alike for every runtime, or "N with the native client, M with ctr and Docker".
    let number = |text: &str| -> u64 { text.trim().parse().unwrap_or_else(|_| panic!("{text}")) };
    let (native, others) = match stated.split_once(" with the native client, ") {
        Some((n, rest)) => (
            number(n),
            number(rest.trim_end_matches(" with ctr and Docker")),
        ),
        None => (number(&stated), number(&stated)),
    };
    let empty = temp_dir("jobs-default");
    let started = |mut c: Command| -> u64 {
        c.args(["--log-format", "json", "--allow-empty"]);
        let (code, _, stderr) = outcome(&mut c);
        assert_eq!(code, 0, "{stderr}");
        let start: Value = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["event"] == "start")
            .unwrap_or_else(|| panic!("{stderr}"));
        start["jobs"].as_u64().unwrap()
    };
    let ns = unique_namespace("jobs");
    assert_eq!(
        started(import_with("native", &empty, &ns)),
        native,
        "{stated}"
    );
    assert_eq!(started(import_with("ctr", &empty, &ns)), others, "{stated}");
    assert_eq!(
        started(daemons().against_docker("import", &empty)),
        others,
        "{stated}"
    );
}

/// Finding 13: a truncated archive was described three ways: "cannot read the archive: …"
/// (native), "the archive cannot be read: …" (Docker), and no prefix (`list`, `verify`).
#[test]
fn a_truncated_archive_is_described_one_way_by_every_backend_list_and_verify() {
    const WHY: &str =
        "the gzip stream is truncated (the file ends before the compressed data does)";
    let f = fixtures();
    let dir = temp_dir("truncated-one-way");
    let whole = std::fs::read(f.dir.join("docker.tar.gz")).unwrap();
    let file = "cut.tar.gz";
    std::fs::write(dir.join(file), &whole[..whole.len() / 2]).unwrap();
    let failed = format!("FAILED    {file}: {WHY}");
    for client in ["native", "ctr"] {
        let ns = unique_namespace("truncated-one-way");
        let (_, _, stderr) = outcome(&mut import_with(client, &dir, &ns));
        assert_eq!(one_line(&stderr, "FAILED"), failed, "{client}");
    }
    let (_, _, stderr) = outcome(&mut daemons().against_docker("import", &dir));
    assert_eq!(one_line(&stderr, "FAILED"), failed, "docker");
    let (code, _, stderr) = outcome(offline_images().arg("list").arg(dir.join(file)));
    assert_eq!(code, 1);
    assert_eq!(
        one_line(&stderr, &format!("offline-images: {}", dir.display())),
        format!("offline-images: {}: {WHY}", dir.join(file).display())
    );
    let ns = unique_namespace("truncated-one-way");
    let (code, stdout, _) = outcome(&mut against_containerd("verify", &dir, &ns));
    assert_eq!(code, 1);
    assert_eq!(stdout.trim_end(), format!("unreadable {file}: {WHY}"));
}

/// Finding 20: `SSL_CERT_FILE` (honoured by export) and `OFFLINE_IMAGES_BINARY_SHA256`
/// appeared in no `--help` and nowhere in the guide.
#[test]
fn ssl_cert_file_and_offline_images_binary_sha256_are_in_the_help_and_the_guide() {
    let top = stdout_of(offline_images().arg("--help"));
    assert!(top.contains("OFFLINE_IMAGES_BINARY_SHA256"), "{top}");
    let export = stdout_of(offline_images().args(["export", "--help"]));
    assert!(export.contains("$SSL_CERT_FILE"), "{export}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for guide in ["OFFLINE-IMAGES.md", "OFFLINE-IMAGES.zh-CN.md"] {
        let text = std::fs::read_to_string(root.join(guide)).unwrap();
        // Outside the troubleshooting table, which only quotes the message.
        let prose: Vec<&str> = text.lines().filter(|l| !l.starts_with("| `")).collect();
        let prose = prose.join("\n");
        for var in ["SSL_CERT_FILE", "OFFLINE_IMAGES_BINARY_SHA256"] {
            assert!(prose.contains(var), "{guide} does not explain {var}");
        }
    }
    // And SSL_CERT_FILE is honoured as the help says: a TLS registry whose CA is only there.
    let reg = PrivateRegistry::start("ssl-cert-file", true, RegistryAuth::Anonymous);
    let image = build_image(
        &unique_tag("ssl-cert-file"),
        "trusted through SSL_CERT_FILE",
    );
    let pushed = reg.push(&image, "oi/ssl-cert-file:1");
    docker_rmi(&image.tag);
    let out = temp_dir("ssl-cert-file").join("images");
    let mut c = registry_export(&out, &bare_path(&[]));
    c.arg(&pushed);
    let (code, _, stderr) = outcome(&mut c);
    assert_eq!(
        code, 1,
        "without the CA the registry is not trusted: {stderr}"
    );
    c.env("SSL_CERT_FILE", reg.ca.as_ref().unwrap());
    let (code, _, stderr) = outcome(&mut c);
    assert_eq!(code, 0, "{stderr}");
}
