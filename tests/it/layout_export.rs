//! `export --format layout` against the rig's registry: one OCI image layout holding every
//! blob once, written incrementally and crash-safe, read by the real skopeo; and
//! `verify --bundle-only` naming each fault of a damaged one.
//!
//! The images are pushed with skopeo in OCI form (`--format oci`), so that any skopeo reads
//! the layout (skopeo before 1.10 passes over Docker-typed manifests in a layout's index).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// Four images FROM one base of busybox and 3 MiB of its own, pushed; the base is kept in
/// the test dockerd for images built on it later.
struct Release {
    base: String,
    refs: Vec<String>,
}

/// Build `FROM base` (or FROM scratch with the base's files) with `files` copied in.
pub(crate) fn build(tag: &str, from: Option<&str>, files: &[(&str, Vec<u8>)]) {
    let ctx = temp_dir("layout-build");
    let mut dockerfile = match from {
        Some(base) => format!("FROM {base}\n"),
        None => {
            std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
            "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n".to_string()
        }
    };
    for (name, data) in files {
        std::fs::write(ctx.join(name), data).unwrap();
        dockerfile.push_str(&format!("COPY {name} /{name}\n"));
    }
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    run(docker().args(["build", "-q", "-t", tag]).arg(&ctx));
}

/// Copy the test dockerd's `tag` to the rig's registry as `oi-layout/PATH_TAG`, in OCI form.
pub(crate) fn push_oci(tag: &str, path_tag: &str) -> String {
    let d = daemons();
    let dest = format!("{}/oi-layout/{path_tag}", d.registry);
    run(skopeo()
        .args([
            "copy",
            "--quiet",
            "--format",
            "oci",
            "--dest-tls-verify=false",
        ])
        .args(["--src-daemon-host", &d.docker_host])
        .arg(format!("docker-daemon:{tag}"))
        .arg(format!("docker://{dest}")));
    dest
}

/// Pseudo-random bytes (xorshift), so that no two runs of the suite share a layer.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(crate) fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id())
}

/// The release the tests share (pushed once): four images on one base.
fn release() -> &'static Release {
    static R: OnceLock<Release> = OnceLock::new();
    R.get_or_init(|| {
        let base = unique_tag("layout-base");
        build(&base, None, &[("base.bin", noise(3 << 20, seed()))]);
        let refs = (1..=4)
            .map(|i| {
                let tag = unique_tag(&format!("layout-app{i}"));
                let message = format!("hello from app {i} of {base}\n").into_bytes();
                build(&tag, Some(&base), &[("message", message)]);
                let pushed = push_oci(&tag, &format!("app{i}:{}", std::process::id()));
                docker_rmi(&tag);
                pushed
            })
            .collect();
        Release { base, refs }
    })
}

/// `export --format layout` of `refs` into `out`, blob cache `cache` (none with `--no-cache`
/// among `extra`).
pub(crate) fn layout_export(out: &Path, cache: &Path, refs: &[&str], extra: &[&str]) -> Command {
    let mut c = registry_export_as(out, &bare_path(&[]), "layout");
    c.arg("--no-importer-binary");
    if !extra.contains(&"--no-cache") {
        c.arg("--cache-dir").arg(cache);
    }
    c.args(extra).args(refs);
    c
}

pub(crate) fn exported(out: &Path, cache: &Path, refs: &[&str], extra: &[&str]) -> String {
    let (code, _, log) = outcome(&mut layout_export(out, cache, refs, extra));
    assert_eq!(code, 0, "{log}");
    log
}

/// `verify --bundle-only`: (exit code, faults on stdout, stderr).
pub(crate) fn check(dir: &Path) -> (i32, String, String) {
    outcome(
        offline_images()
            .args(["verify", "--bundle-only", "--images-path"])
            .arg(dir),
    )
}

fn assert_consistent(dir: &Path) {
    let (code, faults, log) = check(dir);
    assert_eq!(code, 0, "{faults}{log}");
    assert!(log.contains("consistent"), "{log}");
}

/// Each blob file: (inode, modification time in ns).
fn blob_stamps(dir: &Path) -> BTreeMap<String, (u64, i64)> {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let m = e.metadata().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
        })
        .collect()
}

/// The blobs the registry serves for `reference` (manifest, config, layers): digest -> size.
fn registry_blobs(reference: &str) -> BTreeMap<String, u64> {
    let (host, rest) = reference.split_once('/').unwrap();
    let (path, tag) = rest.rsplit_once(':').unwrap();
    let resp = ureq::get(&format!("http://{host}/v2/{path}/manifests/{tag}"))
        .header("Accept", crate::registry::ACCEPT)
        .call()
        .unwrap();
    let bytes = resp.into_body().read_to_vec().unwrap();
    let digest = format!(
        "sha256:{}",
        offline_images::bundle::sha256_reader(&bytes[..]).unwrap()
    );
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let mut out = BTreeMap::from([(digest, bytes.len() as u64)]);
    let config = std::iter::once(&doc["config"]);
    for d in config.chain(doc["layers"].as_array().unwrap()) {
        out.insert(
            d["digest"].as_str().unwrap().to_string(),
            d["size"].as_u64().unwrap(),
        );
    }
    out
}

pub(crate) fn dir_size(dir: &Path) -> u64 {
    walk(dir).iter().map(|p| p.metadata().unwrap().len()).sum()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The names `index.json` gives, by its `org.opencontainers.image.ref.name` annotations.
fn index_names(dir: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let a = &m["annotations"];
            assert_eq!(
                a["org.opencontainers.image.ref.name"],
                a["io.containerd.image.name"]
            );
            a["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Every skopeo at hand (the system's, and 1.22 when the rig fetched it) reads `reference`
/// from the layout `dir`, and copies it out as a docker-archive.
fn skopeo_reads(dir: &Path, reference: &str, layers: usize) {
    let mut skopeos = vec![PathBuf::from("skopeo")];
    skopeos.extend(std::env::var_os("OI_SKOPEO_122").map(PathBuf::from));
    for s in skopeos {
        let source = format!("oci:{}:{reference}", dir.display());
        let inspected = stdout_of(Command::new(&s).args(["inspect", &source]));
        let v: Value = serde_json::from_str(&inspected).unwrap();
        assert!(
            v["Layers"].as_array().is_some_and(|l| l.len() == layers),
            "{v}"
        );
        let out = temp_dir("layout-skopeo").join("image.tar");
        run(Command::new(&s)
            .args(["copy", "--quiet", &source])
            .arg(format!("docker-archive:{}", out.display())));
        assert!(out.metadata().unwrap().len() > 3 << 20);
    }
}

#[test]
fn four_images_on_one_base_store_each_blob_once_and_a_new_layer_writes_only_its_blobs() {
    let r = release();
    let dir = scratch_dir("layout-four");
    let (out, cache) = (dir.join("images"), dir.join("cache"));
    // The fourth image under a name of its own, which gains a layer below.
    let grown_tag = unique_tag("layout-grown");
    build(
        &grown_tag,
        Some(&r.base),
        &[("message", b"hello, growing\n".to_vec())],
    );
    let grown = push_oci(&grown_tag, &format!("grown:{}", std::process::id()));
    let refs: Vec<&str> = r.refs[..3]
        .iter()
        .map(String::as_str)
        .chain([grown.as_str()])
        .collect();
    exported(&out, &cache, &refs, &[]);

    let mut unique = BTreeMap::new();
    for reference in &refs {
        unique.extend(registry_blobs(reference));
    }
    let stamps = blob_stamps(&out);
    let want: BTreeSet<String> = unique
        .keys()
        .map(|d| d.trim_start_matches("sha256:").to_string())
        .collect();
    assert_eq!(stamps.keys().cloned().collect::<BTreeSet<_>>(), want);
    let unique_bytes: u64 = unique.values().sum();
    let size = dir_size(&out);
    assert!(
        size as f64 <= 1.01 * unique_bytes as f64 + (1 << 20) as f64,
        "the bundle is {size} bytes for {unique_bytes} bytes of unique blobs"
    );
    // The base (busybox and 3 MiB of noise) is stored once for the four.
    assert!(
        unique_bytes > 4 << 20 && unique_bytes < 5 << 20,
        "{unique_bytes}"
    );
    assert_consistent(&out);
    run(Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&out));
    for reference in &refs {
        assert!(index_names(&out).contains(&reference.to_string()));
    }
    skopeo_reads(&out, refs[0], 3);

    // The fourth image gains a layer: only its new manifest, config and layer are written.
    build(
        &grown_tag,
        Some(&grown_tag),
        &[("extra", b"a new layer\n".to_vec())],
    );
    push_oci(&grown_tag, &format!("grown:{}", std::process::id()));
    docker_rmi(&grown_tag);
    let log = exported(&out, &cache, &refs, &[]);
    assert_eq!(log.matches("skipped (up to date").count(), 3, "{log}");
    let after = blob_stamps(&out);
    let added: Vec<&String> = after.keys().filter(|k| !stamps.contains_key(*k)).collect();
    let removed: Vec<&String> = stamps.keys().filter(|k| !after.contains_key(*k)).collect();
    assert_eq!(added.len(), 3, "{added:?}\n{log}");
    assert_eq!(
        removed.len(),
        2,
        "the old manifest and config: {removed:?}\n{log}"
    );
    for (name, stamp) in &after {
        if let Some(before) = stamps.get(name) {
            assert_eq!(before, stamp, "{name} was written again");
        }
    }
    assert!(
        log.contains("2 blob(s) no image of the layout uses"),
        "{log}"
    );
    assert_consistent(&out);
    skopeo_reads(&out, &grown, 4);
}

#[test]
fn keep_unused_keeps_the_blobs_of_images_left_out_and_without_it_they_go() {
    let r = release();
    let dir = scratch_dir("layout-keep");
    let (out, cache) = (dir.join("images"), dir.join("cache"));
    let (a, b) = (r.refs[0].as_str(), r.refs[1].as_str());
    exported(&out, &cache, &[a, b], &[]);
    let both = blob_stamps(&out);
    let log = exported(&out, &cache, &[a], &["--keep-unused"]);
    assert!(log.contains("kept (--keep-unused)"), "{log}");
    assert!(
        log.contains(&format!("{b} is no longer in the layout")),
        "{log}"
    );
    assert_eq!(blob_stamps(&out), both);
    assert!(!index_names(&out)
        .iter()
        .any(|n| n.starts_with(&b[..b.rfind(':').unwrap()])));
    assert_consistent(&out);
    let log = exported(&out, &cache, &[a], &[]);
    let only_a = blob_stamps(&out);
    // b's manifest, config and message layer go; the base layers stay, a uses them.
    assert_eq!(both.len() - only_a.len(), 3, "{log}");
    assert_consistent(&out);
}

#[test]
fn an_export_killed_at_any_point_leaves_a_consistent_bundle_the_next_run_completes() {
    let r = release();
    let dir = scratch_dir("layout-kill");
    let (out, cache) = (dir.join("images"), dir.join("cache"));
    let refs: Vec<&str> = r.refs.iter().map(String::as_str).collect();
    let sets: [Vec<&str>; 4] = [
        vec![refs[0], refs[1]],
        vec![refs[2], refs[3]],
        vec![refs[0], refs[2], refs[3]],
        vec![refs[1]],
    ];
    exported(&out, &cache, &sets[0], &["--no-cache"]);
    let started = Instant::now();
    exported(&dir.join("timing"), &cache, &refs, &["--no-cache"]);
    let whole = started.elapsed().as_micros() as u64;
    let mut x = seed() | 1;
    let mut delays = Vec::new();
    // Twenty kills at random points, every other one with the blob cache (whose blobs go into
    // the layout as hard links) and the others without (each blob written and checked).
    for i in 0..20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_micros(x % (whole + 1));
        delays.push(delay);
        let cached: &[&str] = if i % 2 == 0 { &["--no-cache"] } else { &[] };
        let running = Running::spawn(&mut layout_export(
            &out,
            &cache,
            &sets[(i + 1) % sets.len()],
            cached,
        ));
        std::thread::sleep(delay);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(running.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let (_, log) = running.finish(60);
        let (code, faults, verified) = check(&out);
        assert_eq!(
            code, 0,
            "killed after {delay:?} (delays so far {delays:?}):\n{faults}{verified}\n{log}"
        );
    }
    let log = exported(&out, &cache, &sets[2], &["--no-cache"]);
    assert_consistent(&out);
    let names = index_names(&out);
    for reference in &sets[2] {
        assert!(names.contains(&reference.to_string()), "{names:?}\n{log}");
    }
    assert!(!names.contains(&refs[1].to_string()), "{names:?}");
    assert!(!out.join(".offline-images-commit").exists());
}

#[test]
fn verify_bundle_only_names_a_corrupted_blob_a_missing_blob_and_a_changed_index_json() {
    let r = release();
    let dir = scratch_dir("layout-faults");
    let (good, cache) = (dir.join("good"), dir.join("cache"));
    exported(&good, &cache, &[r.refs[0].as_str()], &[]);
    assert_consistent(&good);
    let copy = |label: &str| {
        let to = dir.join(label);
        run(Command::new("cp").arg("-a").arg(&good).arg(&to));
        to
    };
    let layer = registry_blobs(&r.refs[0])
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .unwrap()
        .0;
    let hex = layer.trim_start_matches("sha256:").to_string();

    let corrupted = copy("corrupted");
    let path = corrupted.join("blobs/sha256").join(&hex);
    let mut data = std::fs::read(&path).unwrap();
    data[100] ^= 0x01;
    std::fs::write(&path, &data).unwrap();
    let (code, faults, _) = check(&corrupted);
    assert_eq!(code, 1, "{faults}");
    assert!(
        faults.contains(&format!(
            "fault: blobs/sha256/{hex} does not match its digest"
        )),
        "{faults}"
    );

    let missing = copy("missing");
    std::fs::remove_file(missing.join("blobs/sha256").join(&hex)).unwrap();
    let (code, faults, _) = check(&missing);
    assert_eq!(code, 1, "{faults}");
    assert!(
        faults.contains(&format!("fault: {layer} is missing")),
        "{faults}"
    );

    let changed = copy("changed");
    let index = changed.join("index.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    v["manifests"].as_array_mut().unwrap().pop();
    std::fs::write(&index, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let (code, faults, _) = check(&changed);
    assert_eq!(code, 1, "{faults}");
    assert!(
        faults.contains("fault: index.json does not match SHA256SUMS"),
        "{faults}"
    );
    assert!(
        faults.contains("fault: images.json describes the index.json"),
        "{faults}"
    );
}

/// A command of the importer against one target, given the subcommand.
type Runner<'a> = dyn Fn(&str) -> Command + 'a;

/// The layout bundle `export --format layout` writes is what the importer reads, on every
/// version of the matrix, containerd and Docker alike: every image imported with all its
/// names, a re-run skips all, and `verify` finds every image.
#[test]
fn a_layout_bundle_round_trips_through_import_rerun_and_verify_on_every_version() {
    let r = release();
    let dir = temp_dir("layout-roundtrip");
    let out = dir.join("images");
    let refs: Vec<&str> = r.refs.iter().map(String::as_str).collect();
    exported(&out, &dir.join("cache"), &refs, &[]);
    let summary = |o: &Bounded| o.stderr.lines().last().unwrap_or("").to_string();
    for d in every_version() {
        let ns = unique_namespace("layout-roundtrip");
        let runs: [(&str, Box<Runner>); 2] = [
            (
                "containerd",
                Box::new(|c| d.against_containerd(c, &out, &ns)),
            ),
            ("docker", Box::new(|c| d.against_docker(c, &out))),
        ];
        for (target, cmd) in runs {
            let first = run_bounded(&cmd("import"), 300);
            assert_eq!(first.code, 0, "{} {target}: {}", d.label, first.stderr);
            assert!(
                summary(&first).contains(" 0 failed, of 4 archive(s)"),
                "{} {target}: every image of the layout, none failed: {}",
                d.label,
                first.stderr
            );
            let again = run_bounded(&cmd("import"), 300);
            assert!(
                summary(&again).contains("0 imported, 4 skipped"),
                "{} {target}: the re-run skips every image: {}",
                d.label,
                again.stderr
            );
            let verify = run_bounded(&cmd("verify"), 300);
            assert_eq!(
                verify.code, 0,
                "{} {target}: {}{}",
                d.label, verify.stdout, verify.stderr
            );
        }
        for reference in &r.refs {
            let listed = stdout_of(d.ctr(&ns).args(["images", "ls", "-q"]));
            assert!(
                listed.lines().any(|l| l == reference),
                "{}: {reference} in containerd: {listed}",
                d.label
            );
        }
    }
}
