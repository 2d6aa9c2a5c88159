//! The podman runtime (`--runtime podman`): containers-storage as CRI-O reads it, through the
//! real podman of two versions, Debian 12's 4.3 (`OI_PODMAN4`) and forky's 5 (`OI_PODMAN`),
//! each on a private storage (overlay driver) made by the test. No CRI-O daemon runs here:
//! what is checked is the storage CRI-O would read and podman's reading of a node's
//! `storage.conf` (chrooted into a node-root view).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// One podman under test.
struct Podman {
    label: &'static str,
    bin: PathBuf,
}

/// Both podmans; a missing one fails in CI.
fn podmans() -> Vec<Podman> {
    let mut out = Vec::new();
    for (var, label) in [
        ("OI_PODMAN4", "podman 4.3 (Debian 12)"),
        ("OI_PODMAN", "podman 5 (forky)"),
    ] {
        match std::env::var_os(var) {
            Some(bin) => out.push(Podman {
                label,
                bin: bin.into(),
            }),
            None => missing_precondition(&format!("no {label} in this run ({var})")),
        }
    }
    out
}

/// A private containers-storage: graph root, run root, overlay driver. The run root is a
/// short path of its own: podman 4.3 refuses one longer than 50 characters ("the specified
/// runroot is longer than 50 characters"), which a run root under CI's temp dir is.
struct Store {
    dir: Scratch,
    run: PathBuf,
}

impl Drop for Store {
    fn drop(&mut self) {
        unmount_under(&self.dir);
        unmount_under(&self.run);
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

impl Store {
    fn new(label: &str) -> Store {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let run = PathBuf::from(format!(
            "/tmp/oi-run-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&run).unwrap();
        Store {
            dir: scratch_dir(label),
            run,
        }
    }
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn run_root(&self) -> PathBuf {
        self.run.clone()
    }
}

impl Podman {
    /// The podman CLI on `store`.
    fn cli(&self, store: &Store) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(store.root())
            .arg("--runroot")
            .arg(store.run_root())
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
            ]);
        c
    }

    /// The importer's `command` with this podman first on PATH, on `store`.
    fn importer(&self, command: &str, store: &Store) -> Command {
        let mut c = offline_images();
        let dir = self.bin.parent().unwrap().display().to_string();
        c.env("PATH", format!("{dir}:/usr/sbin:/usr/bin:/sbin:/bin"))
            .env_remove("IMAGE_RUNTIME")
            .args([
                command,
                "--runtime",
                "podman",
                "--storage-driver",
                "overlay",
            ])
            .arg("--storage-root")
            .arg(store.root())
            .arg("--run-root")
            .arg(store.run_root());
        c
    }

    /// (name, image ID, digest) of every name `podman images` lists.
    fn images(&self, store: &Store) -> Vec<(String, String, String)> {
        let out = stdout_of(self.cli(store).args([
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}} {{.Digest}}",
            "--no-trunc",
        ]));
        out.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), f[1].to_string(), f[2].to_string())
            })
            .collect()
    }
}

/// An images path holding `archive` alone.
fn images_path_of(archive: &Path) -> Scratch {
    let dir = scratch_dir("podman-images");
    std::fs::copy(archive, dir.join(archive.file_name().unwrap())).unwrap();
    dir
}

/// What `offline-images list --json` reads in `path`: each image's first name, manifest or
/// index digest (None in a docker-archive) and config digest for this platform.
fn listed(path: &Path) -> Vec<(String, Option<String>, String)> {
    let out = stdout_of(offline_images().args(["list", "--json"]).arg(path));
    let mut images = Vec::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for image in v["images"].as_array().into_iter().flatten() {
            let Some(name) = image["names"].as_array().and_then(|n| {
                n.iter()
                    .filter_map(|x| x.as_str())
                    .find(|x| !x.contains('@'))
            }) else {
                continue;
            };
            let config = image["platforms"][0]["config_digest"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let digest = image["digest"].as_str().map(str::to_string);
            images.push((name.to_string(), digest, config));
        }
    }
    images
}

/// The archives of the corpus podman must load: every fixture flavour, podman 5's own saves
/// where there is a podman 5, and a layout bundle of the registry's bytes.
fn corpus() -> Vec<(String, PathBuf)> {
    let f = fixtures();
    let mut out: Vec<(String, PathBuf)> = f
        .flavours
        .iter()
        .map(|(n, p, _)| (n.to_string(), p.clone()))
        .collect();
    out.push(("docker save, two images".into(), f.two_images.clone()));
    if let Some(s) = crate::corpus::podman_saves() {
        out.push(("podman 5 docker-archive".into(), s.docker_archive.clone()));
        out.push(("podman 5 oci-archive".into(), s.oci_archive.clone()));
        out.push(("podman 5 --multi-image-archive".into(), s.multi.clone()));
    }
    out.push(("ctr export, two images".into(), ctr_export_two()));
    out.push(("layout bundle (export)".into(), layout_bundle()));
    if let Some(index) = crate::corpus::multi_platform_index() {
        out.push((
            "layout bundle of a two-platform index".into(),
            exported("podman-index", &index.tag),
        ));
    }
    out
}

/// `ctr export` of alpha and beta in one OCI archive: two images, which podman loads one at a
/// time.
fn ctr_export_two() -> PathBuf {
    let f = fixtures();
    let ns = unique_namespace("podman-two");
    run(ctr(&ns).args(["images", "import"]).arg(&f.two_images));
    let out = temp_dir("podman-ctr-two").join("two.tar");
    run(ctr(&ns)
        .args(["images", "export", "--platform", "linux/amd64"])
        .arg(&out)
        .args([&f.alpha.reference, &f.beta.reference]));
    for image in [&f.alpha, &f.beta] {
        let _ = ctr(&ns).args(["images", "rm", &image.reference]).output();
    }
    out
}

/// `offline-images export` of an image pushed to the test registry: one OCI layout holding
/// the registry's bytes (a bundle directory, imported as the images path).
fn layout_bundle() -> PathBuf {
    static B: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let image = pushed_image("podman-layout", "hello from the layout");
        exported("podman-layout", &image.tag)
    })
    .clone()
}

/// `offline-images export` of `reference` from the test registry into a bundle directory.
fn exported(label: &str, reference: &str) -> PathBuf {
    let dir = temp_dir(label).join("bundle");
    run(offline_images()
        .args([
            "export",
            "--insecure-registry",
            &daemons().registry,
            "--output",
        ])
        .arg(&dir)
        .arg(reference));
    dir
}

/// An images path for `archive` (a bundle directory is one already).
fn as_images_path(archive: &Path) -> (Option<Scratch>, PathBuf) {
    if archive.is_dir() {
        (None, archive.to_path_buf())
    } else {
        let dir = images_path_of(archive);
        let p = dir.to_path_buf();
        (Some(dir), p)
    }
}

/// One flavour on one podman: imported, its digest kept where the archive has one, named as
/// the archive names it, skipped on a re-run, verified. How many digests were compared.
fn import_one(podman: &Podman, flavour: &str, archive: &Path) -> usize {
    let store = Store::new("podman-store");
    let (_keep, images_path) = as_images_path(archive);
    let what = format!("{} / {flavour}", podman.label);
    let (code, _, stderr) = outcome(
        podman
            .importer("import", &store)
            .args(["--release", "flavour"])
            .arg("--images-path")
            .arg(&images_path),
    );
    assert_eq!(code, 0, "{what}: {stderr}");
    assert!(stderr.contains("imported "), "{what}: {stderr}");
    assert!(stderr.contains("containers-storage "), "{what}: {stderr}");
    let present = podman.images(&store);
    let listed = listed(&images_path);
    assert!(!listed.is_empty(), "{what}: list read no named image");
    let names: Vec<&String> = listed.iter().map(|l| &l.0).collect();
    for (name, _, _) in &present {
        assert!(
            names.contains(&name),
            "{what}: podman lists {name}, a name the archive does not give: {present:?}"
        );
    }
    let mut digests_kept = 0;
    for (name, digest, config) in listed {
        let row = present
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("{what}: {name} not in podman images: {present:?}"));
        assert_eq!(
            format!("sha256:{}", row.1.trim_start_matches("sha256:")),
            config,
            "{what}: {name}"
        );
        if let Some(d) = digest {
            assert_eq!(row.2, d, "{what}: {name} lost its digest");
            digests_kept += 1;
        }
    }
    let (code, _, stderr) = outcome(
        podman
            .importer("import", &store)
            .arg("--images-path")
            .arg(&images_path),
    );
    assert_eq!(code, 0, "{what}: {stderr}");
    assert!(
        stderr.contains("skipped ") && !stderr.contains("imported "),
        "{what}: the re-run must skip: {stderr}"
    );
    let (code, _, stderr) = outcome(
        podman
            .importer("verify", &store)
            .arg("--images-path")
            .arg(&images_path),
    );
    assert_eq!(code, 0, "{what}: verify: {stderr}");
    for (name, _, _) in &present {
        let out = run_image(podman, &store, name);
        assert!(
            out.starts_with("hello from"),
            "{what}: {name} printed {out:?}"
        );
    }
    let (code, _, stderr) = outcome(
        podman
            .importer("prune", &store)
            .args(["--release", "flavour"]),
    );
    assert_eq!(code, 0, "{what}: prune: {stderr}");
    let left = podman.images(&store);
    assert!(left.is_empty(), "{what}: prune left {left:?}: {stderr}");
    digests_kept
}

/// `podman run` of `image` (no network: this machine has no nft for netavark; the open-files
/// limit within what the sandbox allows, where podman 4.3 asks for more and runc is refused);
/// where it is refused all the same, the entry point run chrooted into `podman image mount`,
/// said on stderr. What the image printed.
fn run_image(podman: &Podman, store: &Store, image: &str) -> String {
    let (code, out, err) = outcome(podman.cli(store).args([
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        image,
    ]));
    if code == 0 {
        return out;
    }
    eprintln!(
        "{}: podman run refused here ({}); running the entry point chrooted into `podman image \
         mount`",
        podman.label,
        err.trim()
    );
    run_chrooted(podman, store, image)
}

#[test]
fn every_archive_flavour_and_a_layout_bundle_import_into_containers_storage_keeping_digests() {
    let corpus = corpus();
    for podman in podmans() {
        let mut kept = Vec::new();
        for (flavour, archive) in &corpus {
            if import_one(&podman, flavour, archive) > 0 {
                kept.push(flavour.as_str());
            }
        }
        eprintln!("{}: manifest digests kept for {kept:?}", podman.label);
        let oci = [
            "ctr export",
            "ctr export, two images",
            "skopeo oci-archive",
            "layout bundle (export)",
        ];
        for oci in oci {
            assert!(
                kept.contains(&oci),
                "{}: {oci} has no digest checked",
                podman.label
            );
        }
    }
}

/// The entry point and command of `image` run chrooted into its root as `podman image mount`
/// gives it (where `podman run` is refused); what it printed.
fn run_chrooted(podman: &Podman, store: &Store, image: &str) -> String {
    let mounted = stdout_of(podman.cli(store).args(["image", "mount", image]));
    let root = mounted.trim();
    let argv: serde_json::Value = serde_json::from_str(&stdout_of(podman.cli(store).args([
        "image",
        "inspect",
        "--format",
        "[{{json .Config.Entrypoint}}, {{json .Config.Cmd}}]",
        image,
    ])))
    .unwrap();
    let args: Vec<String> = argv
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a.as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let out = stdout_of(Command::new("chroot").arg(root).args(&args));
    run(podman.cli(store).args(["image", "unmount", image]));
    out
}

#[test]
fn an_imported_image_runs_and_prune_removes_it_but_keeps_what_a_container_uses() {
    let f = fixtures();
    for podman in podmans() {
        let store = Store::new("podman-prune");
        let images_path = images_path_of(&f.two_images);
        let what = podman.label;
        let mut import = podman.importer("import", &store);
        import
            .args(["--release", "rel"])
            .arg("--images-path")
            .arg(&*images_path);
        let (code, _, stderr) = outcome(&mut import);
        assert_eq!(code, 0, "{what}: {stderr}");
        let out = run_image(&podman, &store, &f.alpha.reference);
        assert_eq!(out.trim(), "hello from alpha", "{what}");
        let _ = podman.cli(&store).args(["rm", "--all", "--force"]).output();
        run(podman
            .cli(&store)
            .args(["create", "--name", "uses-beta", &f.beta.reference]));
        let (code, stdout, stderr) =
            outcome(podman.importer("prune", &store).args(["--release", "rel"]));
        assert_eq!(code, 0, "{what}: {stderr}");
        let names: Vec<String> = podman.images(&store).into_iter().map(|i| i.0).collect();
        assert!(
            !names.contains(&f.alpha.reference),
            "{what}: alpha not pruned: {names:?}\n{stdout}{stderr}"
        );
        assert!(
            names.contains(&f.beta.reference),
            "{what}: beta, used by a container, pruned: {stdout}{stderr}"
        );
        assert!(
            format!("{stdout}{stderr}").contains("uses-beta") || stdout.contains(&f.beta.reference),
            "{what}: {stdout}{stderr}"
        );
    }
}

#[test]
fn two_importers_at_once_on_one_storage_both_finish_and_each_image_is_listed_once() {
    // The importers take turns on the node lock (the graph root); podman's plain load beside
    // them takes only the storage's own locks.
    let f = fixtures();
    for podman in podmans() {
        let store = Store::new("podman-two");
        let images_path = images_path_of(&f.two_images);
        std::fs::copy(
            f.dir.join("docker.tar.gz"),
            images_path.join("alpha.tar.gz"),
        )
        .unwrap();
        let spawn = || {
            podman
                .importer("import", &store)
                .arg("--images-path")
                .arg(&*images_path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        // Beside them, another writer of the storage that takes no node lock, as CRI-O would
        // pull: podman's own load of alpha's layers, untagged, on the same storage.
        let other = podman
            .cli(&store)
            .args(["load", "-q", "-i"])
            .arg(&f.untagged)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (a, b) = (spawn(), spawn());
        for child in [a, b, other] {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {stderr}", podman.label);
        }
        let names: Vec<String> = podman.images(&store).into_iter().map(|i| i.0).collect();
        for image in [&f.alpha, &f.beta] {
            let n = names.iter().filter(|n| **n == image.reference).count();
            assert_eq!(
                n, 1,
                "{}: {} listed {n} times: {names:?}",
                podman.label, image.reference
            );
        }
        assert_eq!(names.len(), 2, "{}: {names:?}", podman.label);
    }
}

/// A node-root view for Debian 12's podman: the machine's `/usr` (read-only, with the
/// `/bin`, `/lib`… links of a merged-/usr system), `/proc`, `/sys` (read-only), `/dev/null`,
/// `/dev/shm`, and an `/etc` of its
/// own whose `containers/storage.conf` puts the storage where a node's CRI-O would read it
/// (`/var/lib/containers/storage`, overlay). Unmounted when dropped.
struct NodeView {
    dir: Scratch,
}

impl Drop for NodeView {
    fn drop(&mut self) {
        unmount_under(&self.dir);
        let _ = Command::new("umount").arg("-l").arg(&*self.dir).status();
    }
}

impl NodeView {
    fn new() -> NodeView {
        let dir = scratch_dir("podman-node");
        let p = |s: &str| dir.join(s);
        for d in [
            "usr",
            "proc",
            "sys",
            "dev/shm",
            "etc/containers",
            "var/tmp",
            "tmp",
            "run",
        ] {
            std::fs::create_dir_all(p(d)).unwrap();
        }
        for link in ["bin", "sbin", "lib", "lib64"] {
            std::os::unix::fs::symlink(format!("usr/{link}"), p(link)).unwrap();
        }
        std::fs::write(p("dev/null"), b"").unwrap();
        let view = NodeView { dir };
        let p = |s: &str| view.dir.join(s);
        // A node root is a mount point (the kubelet's hostPath mount): containers-storage makes
        // `/` private in its own mount namespace before it applies a layer, which fails in a
        // chroot whose root is not one ("remount /, flags: 0x44000: invalid argument").
        run(Command::new("mount")
            .arg("--bind")
            .arg(&*view.dir)
            .arg(&*view.dir));
        run(Command::new("mount").args(["--bind", "/usr"]).arg(p("usr")));
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(p("usr")));
        run(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(p("proc")));
        run(Command::new("mount")
            .args(["--bind", "/dev/null"])
            .arg(p("dev/null")));
        // podman's cgroup check and its lock memory.
        run(Command::new("mount")
            .args(["-t", "sysfs", "-o", "ro", "sysfs"])
            .arg(p("sys")));
        run(Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(p("dev/shm")));
        for f in ["passwd", "group", "containers/policy.json"] {
            std::fs::copy(Path::new("/etc").join(f), p(&format!("etc/{f}"))).unwrap();
        }
        std::fs::write(
            p("etc/containers/storage.conf"),
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"/var/lib/containers/storage\"\n\
             runroot = \"/run/containers/storage\"\n",
        )
        .unwrap();
        view
    }
}

#[test]
fn podman_chrooted_into_the_node_root_imports_where_the_nodes_storage_conf_says() {
    let Some(podman) = podmans().into_iter().find(|p| p.label.contains("4.3")) else {
        return;
    };
    if podman.bin != Path::new("/usr/bin/podman") {
        missing_precondition("Debian 12's podman is not /usr/bin/podman");
        return;
    }
    let f = fixtures();
    let view = NodeView::new();
    let images_path = images_path_of(&f.two_images);
    let mut import = offline_images();
    import
        .env("PATH", "/nonexistent")
        .args(["import", "--runtime", "podman", "--host-root"])
        .arg(&*view.dir)
        .arg("--images-path")
        .arg(&*images_path);
    let (code, _, stderr) = outcome(&mut import);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("podman 4.3.1 (/usr/bin/podman, chrooted into ")
            && stderr.contains(
                "containers-storage /var/lib/containers/storage (driver overlay, run root \
                 /run/containers/storage; settings from /etc/containers/storage.conf)"
            ),
        "the log must say which podman and which storage: {stderr}"
    );
    let listed = stdout_of(Command::new("chroot").arg(&*view.dir).args([
        "/usr/bin/podman",
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]));
    for image in [&f.alpha, &f.beta] {
        assert!(listed.contains(&image.reference), "{listed}");
    }
    assert!(view
        .dir
        .join("var/lib/containers/storage/offline-images/labels.json")
        .is_file());
    let mut again = import;
    let (code, _, stderr) = outcome(&mut again);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("skipped ") && !stderr.contains("imported "),
        "{stderr}"
    );
}

#[test]
fn a_bad_archive_fails_alone_and_strict_exits_1() {
    let f = fixtures();
    for podman in podmans() {
        let store = Store::new("podman-bad");
        let images_path = images_path_of(&f.two_images);
        let gz = std::fs::read(f.dir.join("docker.tar.gz")).unwrap();
        std::fs::write(images_path.join("cut.tar.gz"), &gz[..gz.len() / 2]).unwrap();
        let what = podman.label;
        let import = || {
            let mut c = podman.importer("import", &store);
            c.arg("--images-path").arg(&*images_path);
            c
        };
        let (code, _, stderr) = outcome(&mut import());
        assert_eq!(code, 0, "{what}: {stderr}");
        assert!(
            stderr.contains("FAILED    cut.tar.gz: the gzip stream is truncated"),
            "{what}: {stderr}"
        );
        assert!(
            stderr.contains("imported  two-images.tar"),
            "{what}: {stderr}"
        );
        let names: Vec<String> = podman.images(&store).into_iter().map(|i| i.0).collect();
        assert_eq!(names.len(), 2, "{what}: {names:?}");
        let (code, _, stderr) = outcome(import().arg("--strict"));
        assert_eq!(code, 1, "{what}: --strict: {stderr}");
        assert!(
            stderr.contains("skipped   two-images.tar"),
            "{what}: {stderr}"
        );
    }
}
