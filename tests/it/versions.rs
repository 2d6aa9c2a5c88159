//! The "Versions tested" table: every archive flavour on every containerd and Docker version
//! of the matrix, imported, skipped on a re-run, verified, and a container started from each
//! of its images. The table is written (Markdown) to `OI_VERSIONS_TABLE`, or under the test
//! temp dir, before the test asserts that every cell passed; OFFLINE-IMAGES.md carries a copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::corpus;
use crate::harness::*;

/// One archive, and each image it holds with the message its container prints (an image
/// with an empty tag is untagged: it is run by what the import added).
struct Flavour {
    name: String,
    /// None: this version has no tool that writes it (`Note` says why).
    archive: Option<PathBuf>,
    images: Vec<(TestImage, &'static str)>,
    /// The columns it runs in, when not all (the archive over 2 GiB).
    only: Option<fn(&str) -> bool>,
    /// Run by the release build (gigabytes, where a debug build's hashing is the bottleneck).
    release: bool,
}

impl Flavour {
    fn new(
        name: impl Into<String>,
        archive: PathBuf,
        images: Vec<(TestImage, &'static str)>,
    ) -> Self {
        Flavour {
            name: name.into(),
            archive: Some(archive),
            images,
            only: None,
            release: false,
        }
    }

    fn runs_in(&self, column: &str) -> bool {
        self.archive.is_some() && self.only.is_none_or(|only| only(column))
    }
}

/// The outcome of the four checks of one flavour on one runtime; None where not run.
#[derive(Default, Clone, Copy)]
struct Cell {
    imported: bool,
    skipped: bool,
    verified: bool,
    started: bool,
    run: bool,
}

impl Cell {
    fn ok(&self) -> bool {
        !self.run || (self.imported && self.skipped && self.verified && self.started)
    }

    fn text(&self) -> String {
        if !self.run {
            return "—".into();
        }
        let mark = |b: bool| if b { "✓" } else { "✗" };
        format!(
            "{} {} {} {}",
            mark(self.imported),
            mark(self.skipped),
            mark(self.verified),
            mark(self.started)
        )
    }
}

/// The flavours every version gets: the archives of the default pair's tools (and skopeo
/// 1.22's and podman 5's), and those the version's own docker save and ctr export write.
/// Every version gets the same rows in the same order.
fn flavours(i: usize, d: &Daemons) -> Vec<Flavour> {
    let f = fixtures();
    let alpha = |image: &TestImage| vec![(image.clone(), "hello from alpha")];
    let mut out: Vec<Flavour> = f
        .flavours
        .iter()
        .filter(|(name, _, _)| *name != "ctr export")
        .map(|(name, path, image)| {
            Flavour::new(
                format!("{name} (default pair's tools)"),
                path.clone(),
                alpha(image),
            )
        })
        .collect();
    let dir = temp_dir("versions");
    let zst = dir.join("docker.tar.zst");
    run(Command::new("zstd")
        .args(["-q", "-f", "-o"])
        .arg(&zst)
        .arg(f.dir.join("docker.tar")));
    out.push(Flavour::new("docker save | zstd", zst, alpha(&f.alpha)));
    for (name, path) in corpus::compressed() {
        out.push(Flavour::new(*name, path.clone(), alpha(&f.alpha)));
    }
    if let Some(zstd_layers) = skopeo_zstd_layers() {
        out.push(Flavour::new(
            "skopeo 1.22 oci-archive, zstd layers",
            zstd_layers.clone(),
            alpha(&f.alpha),
        ));
    }
    if let Some(tar) = corpus::skopeo_122_docker_archive() {
        out.push(Flavour::new(
            "skopeo 1.22 docker-archive",
            tar.clone(),
            alpha(&f.alpha),
        ));
    }
    out.extend(podman_flavours());
    out.extend(special_flavours());
    out.extend(layout_flavours().iter().map(|(name, dir, image)| {
        Flavour::new(
            name.clone(),
            dir.clone(),
            vec![(image.clone(), "hello from a layout")],
        )
    }));
    out.extend(own_flavours(i, d));
    out
}

/// OCI image layout directories, as the tools write them from one image of the test registry:
/// `offline-images export` (the default format), `crane pull --format oci --annotate-ref`
/// (0.20), and skopeo's `copy docker://… oci:DIR:REF` (1.9, and 1.22 where it is fetched).
/// Built once; each is a directory the bundle holds as it is.
fn layout_flavours() -> &'static [(String, PathBuf, TestImage)] {
    static L: std::sync::OnceLock<Vec<(String, PathBuf, TestImage)>> = std::sync::OnceLock::new();
    L.get_or_init(|| {
        let image = pushed_image("versions-layout", "hello from a layout");
        let dir = temp_dir("versions-layouts");
        let mut out = Vec::new();
        let export = dir.join("export");
        let mut cmd = registry_export_as(&export, &bare_path(&[]), "layout");
        let (code, _, log) = outcome(cmd.args(["--no-importer-binary", &image.tag]));
        assert_eq!(code, 0, "{log}");
        out.push(("OCI layout: offline-images export".to_string(), export));
        if let Some(mut crane) = crane() {
            let to = dir.join("crane");
            run(crane
                .args([
                    "pull",
                    "--insecure",
                    "--format",
                    "oci",
                    "--annotate-ref",
                    &image.tag,
                ])
                .arg(&to));
            out.push(("OCI layout: crane 0.20 pull --format oci".to_string(), to));
        }
        let skopeos = [
            ("skopeo 1.9", Some(skopeo())),
            (
                "skopeo 1.22",
                std::env::var_os("OI_SKOPEO_122").map(Command::new),
            ),
        ];
        for (name, tool) in skopeos {
            let Some(mut tool) = tool else {
                missing_precondition("no skopeo 1.22 in this run (OI_SKOPEO_122)");
                continue;
            };
            let to = dir.join(name.replace(' ', "-"));
            run(tool
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{}", image.tag))
                .arg(format!("oci:{}:{}", to.display(), image.tag)));
            out.push((format!("OCI layout: {name} oci:"), to));
        }
        out.into_iter()
            .map(|(name, path)| (name, path, image.clone()))
            .collect()
    })
}

/// podman 5's docker-archive, oci-archive and --multi-image-archive (none without podman).
fn podman_flavours() -> Vec<Flavour> {
    let Some(p) = corpus::podman_saves() else {
        return Vec::new();
    };
    let alpha = vec![(p.alpha.clone(), "hello from alpha")];
    vec![
        Flavour::new(
            "podman 5 save (docker-archive)",
            p.docker_archive.clone(),
            alpha.clone(),
        ),
        Flavour::new(
            "podman 5 save --format oci-archive",
            p.oci_archive.clone(),
            alpha,
        ),
        Flavour::new(
            "podman 5 save --multi-image-archive (2 images)",
            p.multi.clone(),
            vec![
                (p.alpha.clone(), "hello from alpha"),
                (p.beta.clone(), "hello from beta"),
            ],
        ),
    ]
}

/// Two identical layers, untagged images, and the archive over 2 GiB (default pair's tools).
fn special_flavours() -> Vec<Flavour> {
    let f = fixtures();
    let untagged = |config: &str| TestImage {
        tag: String::new(),
        reference: String::new(),
        config_digest: config.to_string(),
    };
    let (twin, twin_image) = corpus::twin_layers();
    let (oci, oci_config) = corpus::untagged_oci();
    let (big, big_image) = corpus::big_archive();
    vec![
        Flavour::new(
            "docker save of an image with two identical layers",
            twin.clone(),
            vec![(twin_image.clone(), "hello from twin")],
        ),
        Flavour::new(
            "docker save by image ID (untagged)",
            f.untagged.clone(),
            vec![(untagged(&f.alpha.config_digest), "hello from alpha")],
        ),
        Flavour::new(
            "skopeo oci-archive without a reference (untagged)",
            oci.clone(),
            vec![(untagged(oci_config), "hello from alpha")],
        ),
        Flavour {
            only: Some(big_columns),
            release: true,
            ..Flavour::new(
                "docker save of a 2.1 GiB image, plain tar (b)",
                big.clone(),
                vec![(big_image.clone(), "hello from big")],
            )
        },
    ]
}

/// Where the archive over 2 GiB is imported: the default pair and containerd 2.1 (each
/// import writes the 2 GiB twice: blobs and snapshot; see OFFLINE-IMAGES.md for the cost).
fn big_columns(column: &str) -> bool {
    ["containerd 1.6", "Docker 20.10", "containerd 2.1"]
        .iter()
        .any(|c| column.starts_with(c))
}

/// The archives `d`'s own docker and ctr write. Made holding `d`'s dockerd lock: the field
/// tests load and remove the same images there, and on Docker's containerd store that is the
/// containerd ctr exports from.
fn own_flavours(i: usize, d: &Daemons) -> Vec<Flavour> {
    let _docker = d.docker_lock();
    let f = fixtures();
    let alpha = |image: &TestImage| vec![(image.clone(), "hello from alpha")];
    let dir = temp_dir("versions-own");
    let mut out = Vec::new();
    let own = dir.join("own-docker-save.tar");
    if i == 0 {
        std::fs::copy(f.dir.join("docker.tar"), &own).unwrap();
    } else {
        run(d
            .docker()
            .args(["load", "-q", "-i"])
            .arg(f.dir.join("docker.tar")));
        run(d.docker().args(["save", "-o"]).arg(&own).arg(&f.alpha.tag));
        let _ = d
            .docker()
            .args(["image", "rm", "--force", &f.alpha.tag])
            .output();
    }
    let docker = short(&d.docker_version);
    let containerd = short(&d.containerd_version);
    out.push(Flavour::new(
        format!("docker save (Docker {docker})"),
        own,
        alpha(&f.alpha),
    ));
    out.push(Flavour {
        archive: corpus::docker_save_platform(d),
        ..Flavour::new(
            format!("docker save --platform linux/amd64 (c) (Docker {docker})"),
            PathBuf::new(),
            alpha(&f.alpha),
        )
    });
    let save = &shared_layer_saves()[i];
    out.push(Flavour::new(
        format!("docker save of 3 images sharing a layer (Docker {docker})"),
        save.archive.clone(),
        save.images.clone(),
    ));
    let ns = unique_namespace("versions-export");
    let exported = dir.join("ctr-export.tar");
    run(d
        .ctr(&ns)
        .args(["images", "import"])
        .arg(f.dir.join("docker.tar")));
    ctr_export(
        || {
            let mut c = d.ctr(&ns);
            c.args(["images", "export", "--platform", "linux/amd64"])
                .arg(&exported)
                .arg(&f.alpha.reference);
            c
        },
        &exported,
        &d.label,
    );
    out.push(Flavour::new(
        format!("ctr export (containerd {containerd})"),
        exported,
        alpha(&f.alpha),
    ));
    if let Some(index) = corpus::multi_platform_index() {
        for (all, what) in [
            (
                false,
                "ctr export of a 2-platform index, this platform's blobs",
            ),
            (true, "ctr export --all-platforms of a 2-platform index"),
        ] {
            out.push(Flavour::new(
                format!("{what} (containerd {containerd})"),
                corpus::ctr_export_multi_platform(d, all).unwrap(),
                alpha(index),
            ));
        }
    }
    out
}

/// An OCI archive of alpha whose layers skopeo 1.22 compressed with zstd
/// (`--dest-compress-format zstd`), made once; None when scripts/test.sh gave no skopeo 1.22
/// (`OI_SKOPEO_122`).
fn skopeo_zstd_layers() -> Option<&'static PathBuf> {
    static A: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    A.get_or_init(|| {
        let skopeo = std::env::var_os("OI_SKOPEO_122")?;
        let f = fixtures();
        let tar = temp_dir("skopeo-zstd").join("alpha-zstd.tar");
        run(Command::new(&skopeo)
            .args(["copy", "--quiet", "--dest-compress-format", "zstd"])
            .args(["--src-daemon-host", &daemons().docker_host])
            .arg(format!("docker-daemon:{}", f.alpha.tag))
            .arg(format!("oci-archive:{}:{}", tar.display(), f.alpha.tag)));
        let raw: serde_json::Value = serde_json::from_str(&stdout_of(
            Command::new(&skopeo)
                .args(["inspect", "--raw"])
                .arg(format!("oci-archive:{}", tar.display())),
        ))
        .unwrap();
        let zstd = raw["layers"].as_array().unwrap().iter().all(|l| {
            l["mediaType"]
                .as_str()
                .is_some_and(|t| t.ends_with("+zstd"))
        });
        assert!(zstd, "skopeo did not compress the layers with zstd: {raw}");
        Some(tar)
    })
    .as_ref()
}

/// `1.6.20~ds1` -> `1.6.20`.
fn short(version: &str) -> &str {
    version.split(['~', '+']).next().unwrap_or(version)
}

fn ran(cmd: &mut Command, want: &str) -> bool {
    let (code, _, stderr) = outcome(cmd);
    let ok = code == 0 && stderr.contains(want);
    if !ok {
        // The table shows only ✗: the reason goes to the test's output.
        eprintln!("{cmd:?} exited {code}, wanted {want:?}:\n{stderr}");
    }
    ok
}

/// A bundle directory holding `flavour`'s archive (a hard link: no copy of gigabytes).
fn bundle_of(flavour: &Flavour, label: &str) -> PathBuf {
    let archive = flavour.archive.as_ref().unwrap();
    let dir = temp_dir(label);
    let to = dir.join(archive_name(archive));
    if archive.is_dir() {
        run(Command::new("cp").arg("-a").arg(archive).arg(&to));
    } else if std::fs::hard_link(archive, &to).is_err() {
        std::fs::copy(archive, &to).unwrap();
    }
    dir
}

/// `cmd` as the flavour wants it run: by the release build for gigabytes.
fn build_for(flavour: &Flavour, cmd: Command) -> Command {
    if flavour.release {
        in_release(&cmd)
    } else {
        cmd
    }
}

fn containerd_cell(d: &Daemons, flavour: &Flavour) -> Cell {
    let dir = bundle_of(flavour, "versions-ctr");
    let ns = unique_namespace("versions");
    let cmd = |c: &str| build_for(flavour, d.against_containerd(c, &dir, &ns));
    let imported = ran(&mut cmd("import"), "1 imported");
    let skipped = ran(&mut cmd("import"), "0 imported, 1 skipped");
    let verified = outcome(&mut cmd("verify")).0 == 0;
    let records = d.ctr_images(&ns);
    let started = flavour.images.iter().enumerate().all(|(k, (image, msg))| {
        // An untagged image is run by the one record its import made.
        let name = match (image.reference.is_empty(), records.as_slice()) {
            (false, _) => &image.reference,
            (true, [only]) => only,
            (true, _) => return false,
        };
        // ctr can lose the output of a task that exits at once (a race of its stdout FIFO):
        // a run that succeeded and printed nothing is run once more.
        for attempt in 0..2 {
            let out = d
                .ctr(&ns)
                .args(["run", "--rm", name, &format!("{ns}-{k}-{attempt}")])
                .output()
                .unwrap();
            let printed = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && printed.trim() == *msg {
                return true;
            }
            eprintln!("ctr run {name} in {ns}: {out:?}");
            if !(out.status.success() && printed.is_empty()) {
                return false;
            }
        }
        false
    });
    if flavour.release {
        for name in &records {
            let _ = d.ctr(&ns).args(["images", "rm", "--sync", name]).output();
        }
    }
    Cell {
        imported,
        skipped,
        verified,
        started,
        run: true,
    }
}

fn archive_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every image ID of a dockerd.
fn docker_ids(docker: &dyn Fn() -> Command) -> Vec<String> {
    let out = docker()
        .args(["image", "ls", "--all", "--no-trunc", "--quiet"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The same four checks on a dockerd: `import` and `docker` make commands against it.
fn docker_cell(
    flavour: &Flavour,
    import: &dyn Fn(&str, &Path) -> Command,
    docker: &dyn Fn() -> Command,
) -> Cell {
    let dir = bundle_of(flavour, "versions-docker");
    let before = docker_ids(docker);
    let cmd = |c: &str| build_for(flavour, import(c, &dir));
    let imported = ran(&mut cmd("import"), "1 imported");
    // An untagged image is run by the image ID its import added.
    let added: Vec<String> = docker_ids(docker)
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    let skipped = ran(&mut cmd("import"), "0 imported, 1 skipped");
    let verified = outcome(&mut cmd("verify")).0 == 0;
    let started = flavour.images.iter().all(|(image, msg)| {
        let name = match (image.tag.is_empty(), added.as_slice()) {
            (false, _) => &image.tag,
            (true, [only]) => only,
            (true, _) => return false,
        };
        let out = docker()
            .args(["run", "--rm", "--network", "none", name])
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == *msg
    });
    for (image, _) in &flavour.images {
        let _ = docker()
            .args(["image", "rm", "--force", &image.tag])
            .output();
    }
    for id in &added {
        let _ = docker().args(["image", "rm", "--force", id]).output();
    }
    Cell {
        imported,
        skipped,
        verified,
        started,
        run: true,
    }
}

/// One version's columns: its containerd's (unless an earlier version has that containerd)
/// and its Docker's.
fn version_columns(i: usize, d: &Daemons, with_containerd: bool) -> Vec<Column> {
    let flavours = flavours(i, d);
    let mut columns = Vec::new();
    let not_run = Cell::default();
    if with_containerd {
        let column = format!("containerd {}", short(&d.containerd_version));
        let cells = flavours
            .iter()
            .map(|f| {
                let cell = if f.runs_in(&column) {
                    containerd_cell(d, f)
                } else {
                    not_run
                };
                (f.name.clone(), cell)
            })
            .collect();
        columns.push((column, cells));
    }
    let store = if d.docker_containerd_store() {
        ", containerd store"
    } else {
        ""
    };
    let column = format!("Docker {}{store}", short(&d.docker_version));
    // The default pair's dockerd holds the fixtures it built: a private one of the same
    // version starts empty.
    let private = (i == 0).then(|| PrivateDockerd::start("versions-docker"));
    let cells = flavours
        .iter()
        .map(|f| {
            let cell = match &private {
                _ if !f.runs_in(&column) => not_run,
                Some(p) => docker_cell(f, &|cmd, dir| with_command(p.import(dir), cmd), &|| {
                    p.docker()
                }),
                None => {
                    let _docker = d.docker_lock();
                    docker_cell(f, &|cmd, dir| d.against_docker(cmd, dir), &|| d.docker())
                }
            };
            (f.name.clone(), cell)
        })
        .collect();
    columns.push((column, cells));
    columns
}

/// A column of the table: its title and (flavour, cell) rows.
type Column = (String, Vec<(String, Cell)>);

#[test]
fn every_archive_flavour_imports_skips_verifies_and_runs_on_every_version() {
    let started = std::time::Instant::now();
    // Made once before the versions run side by side.
    let _ = (
        corpus::compressed(),
        corpus::podman_saves(),
        corpus::twin_layers(),
    );
    let _ = (
        corpus::untagged_oci(),
        corpus::big_archive(),
        shared_layer_saves(),
    );
    let _ = (corpus::multi_platform_index(), skopeo_zstd_layers());
    let _ = corpus::skopeo_122_docker_archive();
    let m = every_version();
    let with_containerd: Vec<bool> = (0..m.len())
        .map(|i| {
            !m[..i]
                .iter()
                .any(|e| e.containerd_version == m[i].containerd_version)
        })
        .collect();
    // Each version has daemons of its own: they run side by side.
    let columns: Vec<Column> = std::thread::scope(|s| {
        let handles: Vec<_> = m
            .iter()
            .enumerate()
            .map(|(i, d)| {
                s.spawn({
                    let with = with_containerd[i];
                    move || version_columns(i, d, with)
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let table = render(&columns);
    let path = std::env::var_os("OI_VERSIONS_TABLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp_dir("versions-table").join("versions-tested.md"));
    std::fs::write(&path, &table).unwrap();
    eprintln!(
        "versions tested ({:.0}s): {}\n{table}",
        started.elapsed().as_secs_f64(),
        path.display()
    );
    let failed: Vec<String> = columns
        .iter()
        .flat_map(|(col, cells)| {
            cells.iter().filter_map(move |(f, c)| {
                let wrong = match known_limit(col, f) {
                    // A limit of the runtime: the archive is refused, nothing is half-loaded.
                    Some(_) => c.imported || c.verified,
                    None => !c.ok(),
                };
                wrong.then(|| format!("{col} / {f}: {}", c.text()))
            })
        })
        .collect();
    assert!(failed.is_empty(), "{}\n{table}", failed.join("\n"));
}

/// What a runtime itself cannot load, as the table's note says.
fn known_limit(column: &str, flavour: &str) -> Option<&'static str> {
    (column.starts_with("Docker 20.") && flavour.contains("zstd layers")).then_some(
        "Docker 20.10 cannot read zstd-compressed layers (`archive/tar: invalid tar header`); \
         Docker 23 and later can",
    )
}

/// `import` of the private dockerd, turned into `verify` when asked.
fn with_command(import: Command, command: &str) -> Command {
    let mut c = Command::new(import.get_program());
    c.arg(command).args(import.get_args().skip(1));
    for (k, v) in import.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

fn render(columns: &[(String, Vec<(String, Cell)>)]) -> String {
    let mut t = String::from("| archive flavour |");
    for (col, _) in columns {
        t.push_str(&format!(" {col} |"));
    }
    t.push_str("\n| --- |");
    for _ in columns {
        t.push_str(" --- |");
    }
    t.push('\n');
    let rows: Vec<&String> = columns[0].1.iter().map(|(f, _)| f).collect();
    for (r, _) in rows.iter().enumerate() {
        // Rows named after a version (its own docker save, ctr export) line up by position.
        let name = generic(&columns[0].1[r].0).replace('|', "\\|");
        t.push_str(&format!("| {name} |"));
        for (col, cells) in columns {
            let note = known_limit(col, &cells[r].0).map_or("", |_| " (a)");
            t.push_str(&format!(" {}{note} |", cells[r].1.text()));
        }
        t.push('\n');
    }
    let notes: Vec<&str> = columns
        .iter()
        .flat_map(|(col, cells)| cells.iter().filter_map(|(f, _)| known_limit(col, f)))
        .collect();
    if let Some(note) = notes.first() {
        t.push_str(&format!("\n(a) {note}.\n"));
    }
    let has = |mark: &str| rows.iter().any(|r| r.contains(mark));
    if has("(b)") {
        t.push_str(
            "\n(b) Made once per run (`docker import` of a tar stream, then `docker save`) and \
             imported on the default pair and containerd 2.1 only, to keep the run short; — \
             elsewhere.\n",
        );
    }
    if has("(c)") {
        t.push_str(
            "\n(c) Only Docker 28's CLI has `docker save --platform`; — where the version has \
             no such flag.\n",
        );
    }
    t
}

/// `docker save (Docker 20.10.24)` -> `docker save (each version's own)`.
fn generic(name: &str) -> String {
    match name
        .split_once(" (Docker ")
        .or_else(|| name.split_once(" (containerd "))
    {
        Some((head, _)) => format!("{head} (each version's own)"),
        None => name.to_string(),
    }
}
