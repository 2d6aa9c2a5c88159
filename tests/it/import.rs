//! `offline-images import` and `verify` against the real containerd.

use std::path::{Path, PathBuf};

use crate::harness::*;

fn copy_into(dir: &Path, src: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

fn line_for<'a>(stderr: &'a str, file: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| {
            l.contains(file)
                && !l.starts_with("summary")
                && !l.starts_with("warning")
                // What the native client sent for the archive: not its result.
                && !l.starts_with(&format!("{file}: sent "))
        })
        .unwrap_or_else(|| panic!("no line for {file}:\n{stderr}"))
}

#[test]
fn import_loads_every_archive_flavour_into_containerd_and_a_container_runs_from_it() {
    let f = fixtures();
    // One namespace per flavour: the flavours carry the same name, and skopeo's OCI copy
    // has a config digest of its own.
    for (i, (flavour, path, image)) in f.flavours.iter().enumerate() {
        let ns = unique_namespace("flavour");
        let dir = temp_dir("flavour");
        let name = path.file_name().unwrap().to_str().unwrap();
        copy_into(&dir, path, name);
        let (code, _, stderr) = outcome(&mut against_containerd("import", &dir, &ns));
        assert_eq!(code, 0, "{flavour}: {stderr}");
        let line = line_for(&stderr, name);
        assert!(line.starts_with("imported"), "{flavour}: {line}");
        assert!(line.contains(&image.config_digest), "{flavour}: {line}");
        assert_eq!(
            ctr_config_digest(&ns, &image.reference).as_deref(),
            Some(image.config_digest.as_str()),
            "{flavour}: {} in containerd namespace {ns}; images: {:?}",
            image.reference,
            ctr_images(&ns)
        );
        let labels = ctr_labels(&ns, &image.reference);
        assert!(
            labels.contains("io.cri-containerd.pinned=pinned"),
            "{flavour}: {labels}"
        );
        if i == 0 {
            let out =
                stdout_of(ctr(&ns).args(["run", "--rm", &image.reference, &format!("{ns}-run")]));
            assert_eq!(out.trim(), "hello from alpha");
        }
    }

    let ns = unique_namespace("two");
    let dir = temp_dir("two");
    copy_into(&dir, &f.two_images, "two-images.tar");
    copy_into(&dir, &f.untagged, "untagged.tar");
    let (code, _, stderr) = outcome(&mut against_containerd("import", &dir, &ns));
    assert_eq!(code, 0, "{stderr}");
    for image in [&f.alpha, &f.beta] {
        assert_eq!(
            ctr_config_digest(&ns, &image.reference).as_deref(),
            Some(image.config_digest.as_str()),
            "{stderr}"
        );
    }
    let out = stdout_of(ctr(&ns).args(["run", "--rm", &f.beta.reference, &format!("{ns}-run")]));
    assert_eq!(out.trim(), "hello from beta");
    // The untagged image is kept under a digest name, so containerd does not collect it.
    assert!(
        ctr_images(&ns).iter().any(|(n, _)| n.contains("@sha256:")),
        "{:?}",
        ctr_images(&ns)
    );
}

/// A bundle as `export` writes it: SHA256SUMS and images.json, from our own reading.
fn write_bundle_files(dir: &Path, files: &[&str]) {
    use offline_images::archive::{inspect_path, Limits, Platform};
    use offline_images::bundle::*;
    let mut index = BundleIndex::new();
    let mut sums = std::collections::BTreeMap::new();
    for file in files {
        let path = dir.join(file);
        let info = inspect_path(&path, Limits::default()).unwrap();
        let sha = sha256_file(&path).unwrap();
        sums.insert(file.to_string(), sha.clone());
        index.upsert(BundleArchive {
            file: file.to_string(),
            size: std::fs::metadata(&path).unwrap().len(),
            sha256: sha,
            compression: info.compression,
            format: info.format,
            images: info
                .images
                .iter()
                .map(|i| {
                    let p = i.for_platform(&Platform::host()).unwrap();
                    BundleImage {
                        names: i.names.clone(),
                        config_digest: p.config_digest.clone().unwrap(),
                        manifest_digest: p.manifest_digest.clone(),
                        platform: Some("linux/amd64".into()),
                        layers: Vec::new(),
                    }
                })
                .collect(),
            source: None,
            stamp: None,
        });
    }
    write_index(dir, &index).unwrap();
    write_sums(dir, &sums).unwrap();
}

#[test]
fn a_second_import_skips_every_archive_without_running_an_import() {
    let f = fixtures();
    let ns = unique_namespace("rerun");
    let dir = temp_dir("rerun");
    // Two archives described by images.json, two foreign ones that are not.
    copy_into(&dir, &f.dir.join("docker.tar.gz"), "alpha.tar.gz");
    copy_into(&dir, &f.two_images, "two.tar");
    write_bundle_files(&dir, &["alpha.tar.gz", "two.tar"]);
    std::fs::create_dir_all(dir.join("foreign")).unwrap();
    copy_into(&dir, &f.dir.join("ctr-oci.tar"), "foreign/ctr.tar");
    copy_into(&dir, &f.untagged, "foreign/untagged.tar");

    let (code, _, stderr) = outcome(&mut against_containerd("import", &dir, &ns));
    assert_eq!(code, 0, "{stderr}");
    // The event stream is marked by relabelling an image the first run imported.
    let watch = EventWatch::start(&ns, &f.alpha.reference);

    // The watch does see an import: --force imports again, and containerd says so.
    let (code, _, stderr) = outcome(against_containerd("import", &dir, &ns).arg("--force"));
    assert_eq!(code, 0, "{stderr}");
    watch.mark(&ns, &f.alpha.reference, "forced");
    let forced = watch.image_events_between(&ns, "start", "forced");
    assert!(
        forced
            .iter()
            .any(|l| l.contains("/images/update") || l.contains("/images/create")),
        "a forced import must show in the events:\n{}",
        watch.text()
    );

    let (code, _, stderr) = outcome(&mut against_containerd("import", &dir, &ns));
    watch.mark(&ns, &f.alpha.reference, "rerun");
    assert_eq!(code, 0, "{stderr}");
    for file in [
        "alpha.tar.gz",
        "two.tar",
        "foreign/ctr.tar",
        "foreign/untagged.tar",
    ] {
        let line = line_for(&stderr, file);
        assert!(line.starts_with("skipped"), "{file}: {line}\n{stderr}");
    }
    assert!(stderr.contains("4 skipped"), "{stderr}");
    let events = watch.image_events_between(&ns, "forced", "rerun");
    assert!(
        events.is_empty(),
        "the second run changed images or content:\n{}",
        events.join("\n")
    );
}

#[test]
fn bad_archives_are_reported_by_name_and_the_good_ones_imported() {
    let f = fixtures();
    let dir = temp_dir("mixed");
    copy_into(&dir, &f.dir.join("docker.tar.gz"), "good-alpha.tar.gz");
    let beta_tar = dir.join("mismatch-beta.tar");
    run(docker()
        .args(["save", "-o"])
        .arg(&beta_tar)
        .arg(&f.beta.tag));
    let gz = std::fs::read(f.dir.join("docker.tar.gz")).unwrap();
    // The corrupt and truncated copies share alpha's layer and sort before the good archive:
    // ctr must leave no half-written layer behind that breaks the good import after them.
    let mut corrupt = gz.clone();
    let mid = corrupt.len() / 3;
    corrupt[mid..mid + 64].fill(0xAA);
    std::fs::write(dir.join("corrupt.tar.gz"), &corrupt).unwrap();
    let tar = std::fs::read(f.dir.join("docker.tar")).unwrap();
    std::fs::write(dir.join("truncated.tar"), &tar[..tar.len() / 2]).unwrap();
    run(std::process::Command::new("tar")
        .arg("-cf")
        .arg(dir.join("not-an-image.tar"))
        .arg("-C")
        .arg("/etc")
        .arg("hostname"));
    std::fs::write(dir.join("empty.tar"), b"").unwrap();
    let good_sum = offline_images::bundle::sha256_file(&dir.join("good-alpha.tar.gz")).unwrap();
    std::fs::write(
        dir.join("SHA256SUMS"),
        format!(
            "{good_sum}  good-alpha.tar.gz\n{}  mismatch-beta.tar\n{}  gone.tar.gz\n",
            "0".repeat(64),
            "1".repeat(64)
        ),
    )
    .unwrap();

    let ns = unique_namespace("mixed");
    let report = dir.join("..").join(format!("{ns}-report.json"));
    let (code, stdout, stderr) = outcome(
        against_containerd("import", &dir, &ns)
            .arg("--report")
            .arg(&report),
    );
    assert_eq!(code, 0, "tolerant by default:\n{stderr}");
    assert!(stdout.is_empty(), "logs go to stderr: {stdout}");
    assert_eq!(
        ctr_config_digest(&ns, &f.alpha.reference).as_deref(),
        Some(f.alpha.config_digest.as_str())
    );
    assert!(
        !ctr_images(&ns).iter().any(|(n, _)| n == &f.beta.reference),
        "an archive failing its checksum is never imported: {:?}",
        ctr_images(&ns)
    );
    for (file, why) in [
        ("corrupt.tar.gz", "corrupt"),
        ("truncated.tar", "truncated"),
        ("not-an-image.tar", "not a docker-archive or OCI"),
        ("empty.tar", "empty"),
        ("mismatch-beta.tar", "checksum mismatch"),
        ("gone.tar.gz", "not found"),
    ] {
        let line = line_for(&stderr, file);
        assert!(line.starts_with("FAILED"), "{file}: {line}");
        assert!(line.contains(why), "{file}: expected {why:?} in {line:?}");
        assert!(!line.to_lowercase().contains("broken pipe"), "{line}");
    }
    assert!(stderr.contains("6 failed"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(summary["imported"], 1, "{summary}");
    assert_eq!(summary["failed"], 6, "{summary}");
    let empty = summary["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["file"] == "empty.tar")
        .unwrap();
    assert_eq!(empty["status"], "failed");
    assert!(empty["reason"].as_str().unwrap().contains("empty"));

    let ns = unique_namespace("strict");
    let (code, _, stderr) =
        outcome(against_containerd("import", &dir, &ns).args(["--strict", "--log-format", "json"]));
    assert_eq!(code, 1, "--strict fails when an archive failed:\n{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = events
        .iter()
        .filter(|e| e["event"] == "archive" && e["status"] == "failed")
        .count();
    assert_eq!(failed, 6, "{stderr}");
    assert!(events.iter().any(|e| e["event"] == "summary"), "{stderr}");
}

#[test]
fn a_multi_platform_oci_archive_with_only_amd64_blobs_imports_on_amd64() {
    let f = fixtures();
    let dir = temp_dir("multi");
    multi_platform_oci(
        &f.dir.join("ctr-oci.tar"),
        &dir.join("multi.tar"),
        &f.alpha.reference,
    );
    let ns = unique_namespace("multi");
    let (code, _, stderr) = outcome(&mut against_containerd("import", &dir, &ns));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        line_for(&stderr, "multi.tar").starts_with("imported"),
        "{stderr}"
    );
    let images = ctr_images(&ns);
    let listed = stdout_of(ctr(&ns).args(["images", "ls"]));
    assert!(
        listed.contains("application/vnd.oci.image.index.v1+json"),
        "the name points to the index: {listed}"
    );
    assert_eq!(
        ctr_config_digest(&ns, &f.alpha.reference).as_deref(),
        Some(f.alpha.config_digest.as_str()),
        "{images:?}"
    );
    // verify resolves the config digest through the index.
    let (code, stdout, stderr) = outcome(&mut against_containerd("verify", &dir, &ns));
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn verify_passes_after_import_and_names_the_image_removed_since() {
    let f = fixtures();
    let dir = temp_dir("verify");
    copy_into(&dir, &f.two_images, "two.tar");
    let ns = unique_namespace("verify");
    let (code, stdout, stderr) = outcome(&mut against_containerd("verify", &dir, &ns));
    assert_eq!(code, 1, "nothing imported yet: {stdout}{stderr}");
    run(&mut against_containerd("import", &dir, &ns));
    let (code, stdout, stderr) = outcome(&mut against_containerd("verify", &dir, &ns));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("present")).count(),
        2,
        "{stdout}"
    );

    run(ctr(&ns).args(["images", "rm", &f.beta.reference]));
    let (code, stdout, stderr) = outcome(&mut against_containerd("verify", &dir, &ns));
    assert_eq!(code, 1, "{stdout}{stderr}");
    let missing: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("missing"))
        .collect();
    assert_eq!(missing.len(), 1, "{stdout}");
    assert!(missing[0].contains(&f.beta.reference), "{stdout}");
    assert!(stderr.contains(&f.beta.reference), "{stderr}");
    assert!(!stderr.contains(&f.alpha.reference), "{stderr}");
}

#[test]
fn import_into_the_default_k8s_io_namespace_pins_the_images() {
    let f = fixtures();
    let dir = temp_dir("k8s");
    copy_into(&dir, &f.dir.join("docker.tar.gz"), "alpha.tar.gz");
    // No --namespace: the default is kubelet's namespace.
    let mut cmd = offline_images();
    cmd.arg("import")
        .arg("--images-path")
        .arg(&dir)
        .arg("--containerd-address")
        .arg(&daemons().containerd_sock)
        .env("CONTAINERD_CLIENT", containerd_client())
        .env("DISK_MAX_USED", "100")
        .env_remove("CONTAINERD_NAMESPACE");
    let (code, _, stderr) = outcome(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("namespace k8s.io"), "{stderr}");
    assert_eq!(
        ctr_config_digest("k8s.io", &f.alpha.reference).as_deref(),
        Some(f.alpha.config_digest.as_str())
    );
    let labels = ctr_labels("k8s.io", &f.alpha.reference);
    assert!(
        labels.contains("io.cri-containerd.pinned=pinned"),
        "{labels}"
    );
    assert!(
        labels.contains("io.offline-images.managed=true"),
        "{labels}"
    );
}

#[test]
fn a_dry_run_plans_and_imports_nothing() {
    let f = fixtures();
    let dir = temp_dir("dry");
    copy_into(&dir, &f.dir.join("docker.tar.gz"), "alpha.tar.gz");
    let ns = unique_namespace("dry");
    let (code, _, stderr) = outcome(against_containerd("import", &dir, &ns).arg("--dry-run"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        line_for(&stderr, "alpha.tar.gz").starts_with("would import"),
        "{stderr}"
    );
    assert!(ctr_images(&ns).is_empty(), "{:?}", ctr_images(&ns));
}

#[test]
fn no_runtime_found_exits_2_naming_every_path_probed() {
    let dir = temp_dir("noruntime-images");
    let host = temp_dir("noruntime-host");
    let mut cmd = offline_images();
    cmd.arg("import")
        .arg("--images-path")
        .arg(&dir)
        .arg("--host-root")
        .arg(&host);
    for v in [
        "CONTAINERD_ADDRESS",
        "DOCKER_HOST",
        "IMAGE_RUNTIME",
        "HOST_ROOT",
    ] {
        cmd.env_remove(v);
    }
    let (code, _, stderr) = outcome(&mut cmd);
    assert_eq!(code, 2, "{stderr}");
    for p in [
        "run/containerd/containerd.sock",
        "run/k3s/containerd/containerd.sock",
        "var/snap/microk8s/common/run/containerd.sock",
        "run/k0s/containerd.sock",
        "var/run/docker.sock",
        "run/docker.sock",
    ] {
        let shown = host.join(p);
        assert!(
            stderr.contains(&format!("{}", shown.display())),
            "{p} not named:\n{stderr}"
        );
    }
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn a_missing_images_path_exits_2_asking_whether_the_volume_is_mounted() {
    let dir = temp_dir("nopath").join("not-here");
    let (code, _, stderr) = outcome(&mut against_containerd("import", &dir, "x"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&dir.display().to_string()), "{stderr}");
    assert!(stderr.contains("is the volume mounted?"), "{stderr}");
}

#[test]
fn a_second_importer_waits_for_the_lock_held_on_the_socket_directory() {
    let f = fixtures();
    let dir = temp_dir("lock");
    copy_into(&dir, &f.dir.join("docker.tar.gz"), "alpha.tar.gz");
    let ns = unique_namespace("lock");
    let socket_dir = daemons().containerd_sock.parent().unwrap().to_path_buf();
    let held = std::time::Instant::now();
    let mut holder = std::process::Command::new("flock")
        .arg(&socket_dir)
        .args(["sleep", "3"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, _, stderr) = outcome(&mut against_containerd("import", &dir, &ns));
    holder.wait().unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("waiting for another importer"),
        "the wait is logged:\n{stderr}"
    );
    assert!(held.elapsed() >= std::time::Duration::from_secs(3));
    assert!(
        line_for(&stderr, "alpha.tar.gz").starts_with("imported"),
        "{stderr}"
    );
}

#[test]
fn with_a_host_root_the_nodes_ctr_runs_chrooted_there() {
    let f = fixtures();
    let dir = temp_dir("hostroot");
    copy_into(&dir, &f.two_images, "two.tar");
    let ns = unique_namespace("hostroot");
    // The test machine is its own "node": its root is the host root.
    let (code, _, stderr) = outcome(
        against_containerd("import", &dir, &ns)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args([
                "--containerd-client",
                "ctr",
                "--host-root",
                "/",
                "--jobs",
                "2",
            ]),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("via /usr/bin/ctr"), "{stderr}");
    assert_eq!(
        ctr_config_digest(&ns, &f.beta.reference).as_deref(),
        Some(f.beta.config_digest.as_str())
    );
}

#[test]
fn sigterm_aborts_the_current_archive_prints_the_summary_exits_non_zero_and_the_next_run_finishes()
{
    use std::io::BufRead;
    let dir = scratch_dir("sigterm");
    big_docker_archive(&dir.join("big.tar"), "oi-test/big:1", 768);
    let ns = unique_namespace("sigterm");
    let mut child = against_containerd("import", &dir, &ns)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ended early:\n{log}"
        );
        log.push_str(&line);
        if line.starts_with("offline-images") {
            break;
        }
    }
    // Another test's importer may hold the node lock: signal only once containerd is receiving.
    let receiving = std::time::Instant::now();
    while !stdout_of(ctr(&ns).args(["content", "active"]))
        .lines()
        .any(is_import_ingest)
    {
        assert!(
            receiving.elapsed() < std::time::Duration::from_secs(120),
            "the import never started:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sent = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(10),
        "stopping took {:?}",
        sent.elapsed()
    );
    let line = line_for(&log, "big.tar");
    assert!(
        line.starts_with("FAILED") && line.contains("aborted by SIGTERM"),
        "{log}"
    );
    assert!(log.contains("INTERRUPTED"), "{log}");
    assert!(ctr_images(&ns).is_empty(), "{:?}", ctr_images(&ns));

    // The next run finishes what the stopped one began.
    let again = run_bounded(&against_containerd("import", &dir, &ns), 180);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stderr
            .lines()
            .any(|l| l.starts_with("imported") && l.contains("big.tar")),
        "{}",
        again.stderr
    );
    assert!(
        ctr_images(&ns)
            .iter()
            .any(|(n, _)| n == "docker.io/oi-test/big:1"),
        "{:?}",
        ctr_images(&ns)
    );
}

#[test]
fn an_unreachable_runtime_is_retried_until_it_is_back() {
    let f = fixtures();
    let dir = temp_dir("retry");
    copy_into(&dir, &f.dir.join("docker.tar.gz"), "alpha.tar.gz");
    let ns = unique_namespace("retry");
    let proxy_dir = temp_dir("retry-socket");
    let socket = proxy_dir.join("containerd.sock");
    let mut proxy = SocketProxy::start(&socket);
    // The importer finds the runtime, then waits for the lock while the runtime goes away.
    let mut holder = std::process::Command::new("flock")
        .arg(&proxy_dir)
        .args(["sleep", "2"])
        .spawn()
        .unwrap();
    let log = proxy_dir.join("import.log");
    let mut cmd = offline_images();
    cmd.env("CONTAINERD_CLIENT", containerd_client())
        .env("DISK_MAX_USED", "100")
        .arg("import")
        .arg("--images-path")
        .arg(&dir)
        .arg("--containerd-address")
        .arg(&socket)
        .arg("--namespace")
        .arg(&ns)
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    wait_for_text(&log, "waiting for another importer", 20);
    proxy.stop();
    holder.wait().unwrap();
    wait_for_text(&log, "retrying in", 20);
    let _back = SocketProxy::start(&socket);
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("unreachable") || stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(
        line_for(&stderr, "alpha.tar.gz").starts_with("imported"),
        "{stderr}"
    );
    assert_eq!(
        ctr_config_digest(&ns, &f.alpha.reference).as_deref(),
        Some(f.alpha.config_digest.as_str())
    );
}

/// Six images on one 24 MiB base layer, each saved alone (so every archive carries the shared
/// layer under the same entry name), imported three at a time: parallel `ctr import`s then
/// write the same layer at once. Every archive must end imported, whether or not a run lost
/// that race and imported an archive again on its own, and every image must run.
#[test]
fn jobs_3_imports_every_archive_of_images_that_share_a_layer() {
    let base = unique_tag("shared-base");
    let ctx = temp_dir("shared-base");
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    let mut data = vec![0u8; 24 << 20];
    // Incompressible and distinct from any other test's layer.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(ctx.join("base.bin"), data).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY base.bin /base.bin\n",
    )
    .unwrap();
    run(docker().args(["build", "-q", "-t", &base]).arg(&ctx));

    let dir = scratch_dir("jobs3");
    let mut images = Vec::new();
    for i in 0..6 {
        let ctx = temp_dir("shared-child");
        std::fs::write(ctx.join("message"), format!("hello from child {i}\n")).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM {base}\nCOPY message /message\nENTRYPOINT [\"/bin/busybox\"]\n\
                 CMD [\"cat\", \"/message\"]\n"
            ),
        )
        .unwrap();
        let tag = unique_tag(&format!("shared-child-{i}"));
        run(docker().args(["build", "-q", "-t", &tag]).arg(&ctx));
        run(docker()
            .args(["save", "-o"])
            .arg(dir.join(format!("child-{i}.tar")))
            .arg(&tag));
        images.push(offline_images::reference::normalize(&tag).unwrap());
    }

    let ns = unique_namespace("jobs3");
    let (code, _, stderr) = outcome(against_containerd("import", &dir, &ns).args(["--jobs", "3"]));
    assert_eq!(code, 0, "{stderr}");
    for i in 0..6 {
        // The last word on each archive: a lost race is said first, the outcome after it.
        let file = format!("child-{i}.tar");
        let last = stderr
            .lines()
            .rfind(|l| l.contains(&file) && !l.starts_with("summary"))
            .unwrap_or_else(|| panic!("no line for {file}:\n{stderr}"));
        assert!(last.starts_with("imported"), "{file}: {last}\n{stderr}");
    }
    let races = stderr.matches("importing again on its own").count();
    eprintln!("archives imported again after a lost shared-layer race: {races}");
    assert!(stderr.contains("6 imported"), "{stderr}");
    let (code, stdout, stderr) = outcome(&mut against_containerd("verify", &dir, &ns));
    assert_eq!(code, 0, "{stdout}{stderr}");
    for (i, image) in images.iter().enumerate() {
        let out = stdout_of(ctr(&ns).args(["run", "--rm", image, &format!("{ns}-run-{i}")]));
        assert_eq!(out.trim(), format!("hello from child {i}"));
    }
}

#[test]
fn a_bad_archive_the_bundle_promises_fails_the_tolerant_import_naming_the_missing_image() {
    let f = fixtures();
    let dir = temp_dir("promised");
    copy_into(&dir, &f.dir.join("docker.tar.gz"), "alpha.tar.gz");
    let beta_tar = dir.join("beta.tar");
    run(docker()
        .args(["save", "-o"])
        .arg(&beta_tar)
        .arg(&f.beta.tag));
    write_bundle_files(&dir, &["alpha.tar.gz", "beta.tar"]);
    // Damaged after export: the checksum no longer matches, so beta is never imported.
    let mut bytes = std::fs::read(&beta_tar).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 16].fill(0x55);
    std::fs::write(&beta_tar, &bytes).unwrap();

    let ns = unique_namespace("promised");
    let report = dir.join("..").join(format!("{ns}-report.json"));
    let (code, _, stderr) = outcome(
        against_containerd("import", &dir, &ns)
            .arg("--report")
            .arg(&report),
    );
    assert_eq!(
        code, 1,
        "an image the bundle promises is missing:\n{stderr}"
    );
    // Tolerant still: the good archive went in.
    assert_eq!(
        ctr_config_digest(&ns, &f.alpha.reference).as_deref(),
        Some(f.alpha.config_digest.as_str())
    );
    let missing = stderr
        .lines()
        .find(|l| l.starts_with("MISSING"))
        .unwrap_or_else(|| panic!("no MISSING line:\n{stderr}"));
    assert!(missing.contains(&f.beta.reference), "{missing}");
    assert!(
        missing.contains("listed in images.json for beta.tar"),
        "{missing}"
    );
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("summary: 1 imported"), "{last}");
    assert!(
        last.ends_with(&format!(
            "1 image(s) MISSING from the runtime: {}",
            f.beta.reference
        )),
        "{last}"
    );
    assert!(!stderr.contains("exiting 0"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        summary["missing"][0]["image"],
        f.beta.reference.as_str(),
        "{summary}"
    );

    // Once the bundle is repaired, the same run succeeds.
    run(docker()
        .args(["save", "-o"])
        .arg(&beta_tar)
        .arg(&f.beta.tag));
    write_bundle_files(&dir, &["alpha.tar.gz", "beta.tar"]);
    let (code, _, stderr) = outcome(&mut against_containerd("import", &dir, &ns));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("MISSING"), "{stderr}");
}

#[test]
fn an_image_a_value_requires_that_no_archive_brings_fails_the_import_and_ends_its_log() {
    let f = fixtures();
    let dir = temp_dir("required");
    copy_into(&dir, &f.dir.join("docker.tar.gz"), "alpha.tar.gz");
    let ns = unique_namespace("required");
    let absent = "registry.site.local/shop/web:4.5.6";

    let (code, _, stderr) = outcome(
        against_containerd("import", &dir, &ns)
            .arg("--require")
            .arg(&f.alpha.tag)
            .env("REQUIRED_IMAGES", "ignored-because-the-flag-wins:1")
            .env(
                "LEFT_OUT_NODES",
                "w-2: NotReady (its Ready condition is False);w-3: unschedulable (cordoned)",
            ),
    );
    assert_eq!(code, 0, "the required image is there:\n{stderr}");
    // The nodes the chart left out are named in every node's log.
    assert!(
        stderr.contains("left out by the chart: w-2: NotReady (its Ready condition is False)\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("left out by the chart: w-3: unschedulable (cordoned)\n"),
        "{stderr}"
    );

    let (code, _, stderr) = outcome(
        against_containerd("import", &dir, &ns)
            .env("REQUIRED_IMAGES", format!("{},{absent}", f.alpha.tag)),
    );
    assert_eq!(code, 1, "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("summary: "), "{last}");
    assert!(
        last.ends_with(&format!("MISSING from the runtime: {absent}")),
        "{last}"
    );
    assert!(
        stderr.contains(&format!(
            "MISSING   {absent}: required (--require); not in the runtime"
        )),
        "{stderr}"
    );

    // A dry run imports nothing, so it checks nothing either.
    let (code, _, stderr) = outcome(
        against_containerd("import", &dir, &unique_namespace("required-dry")).args([
            "--dry-run",
            "--require",
            absent,
        ]),
    );
    assert_eq!(code, 0, "{stderr}");

    let (code, _, stderr) =
        outcome(against_containerd("import", &dir, &ns).args(["--require", "Not A Reference"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--require \"Not A Reference\" is not an image reference"),
        "{stderr}"
    );
}

#[test]
fn a_report_that_cannot_be_written_fails_the_run_with_exit_1_naming_the_file() {
    let dir = temp_dir("report-fail");
    let ns = unique_namespace("report-fail");
    let report = dir.join("no-such-dir").join("report.json");
    let (code, _, stderr) = outcome(
        against_containerd("import", &dir, &ns)
            .arg("--report")
            .arg(&report),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot write the report {}", report.display())),
        "{stderr}"
    );
}
