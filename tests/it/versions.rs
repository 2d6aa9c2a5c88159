//! The "Versions tested" table: every archive flavour on every containerd and Docker version
//! of the matrix, imported, skipped on a re-run, verified, and a container started from each
//! of its images. The table is written (Markdown) to `OI_VERSIONS_TABLE`, or under the test
//! temp dir, before the test asserts that every cell passed; OFFLINE-IMAGES.md carries a copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// One archive, and each image it holds with the message its container prints.
struct Flavour {
    name: String,
    archive: PathBuf,
    images: Vec<(TestImage, &'static str)>,
}

/// The outcome of the four checks of one flavour on one runtime.
#[derive(Default, Clone, Copy)]
struct Cell {
    imported: bool,
    skipped: bool,
    verified: bool,
    started: bool,
}

impl Cell {
    fn ok(&self) -> bool {
        self.imported && self.skipped && self.verified && self.started
    }

    fn text(&self) -> String {
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

/// The flavours every version gets: the archives of the default pair's tools, and those the
/// version's own docker save and ctr export write.
fn flavours(i: usize, d: &Daemons) -> Vec<Flavour> {
    let f = fixtures();
    let alpha = |image: &TestImage| vec![(image.clone(), "hello from alpha")];
    let mut out: Vec<Flavour> = f
        .flavours
        .iter()
        .filter(|(name, _, _)| *name != "ctr export")
        .map(|(name, path, image)| Flavour {
            name: format!("{name} (default pair's tools)"),
            archive: path.clone(),
            images: alpha(image),
        })
        .collect();
    let dir = temp_dir("versions");
    let zst = dir.join("docker.tar.zst");
    run(Command::new("zstd")
        .args(["-q", "-f", "-o"])
        .arg(&zst)
        .arg(f.dir.join("docker.tar")));
    out.push(Flavour {
        name: "docker save | zstd".into(),
        archive: zst,
        images: alpha(&f.alpha),
    });
    if let Some(zstd_layers) = skopeo_zstd_layers() {
        out.push(Flavour {
            name: "skopeo 1.22 oci-archive, zstd layers".into(),
            archive: zstd_layers.clone(),
            images: alpha(&f.alpha),
        });
    }
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
    out.push(Flavour {
        name: format!("docker save (Docker {})", short(&d.docker_version)),
        archive: own,
        images: alpha(&f.alpha),
    });
    let save = &shared_layer_saves()[i];
    out.push(Flavour {
        name: format!(
            "docker save of 3 images sharing a layer (Docker {})",
            short(&d.docker_version)
        ),
        archive: save.archive.clone(),
        images: save.images.clone(),
    });
    let ns = unique_namespace("versions-export");
    let exported = dir.join("ctr-export.tar");
    run(d
        .ctr(&ns)
        .args(["images", "import"])
        .arg(f.dir.join("docker.tar")));
    run(d
        .ctr(&ns)
        .args(["images", "export", "--platform", "linux/amd64"])
        .arg(&exported)
        .arg(&f.alpha.reference));
    out.push(Flavour {
        name: format!("ctr export (containerd {})", short(&d.containerd_version)),
        archive: exported,
        images: alpha(&f.alpha),
    });
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
    code == 0 && stderr.contains(want)
}

fn containerd_cell(d: &Daemons, flavour: &Flavour) -> Cell {
    let dir = temp_dir("versions-ctr");
    std::fs::copy(&flavour.archive, dir.join(archive_name(&flavour.archive))).unwrap();
    let ns = unique_namespace("versions");
    let imported = ran(&mut d.against_containerd("import", &dir, &ns), "1 imported");
    let skipped = ran(
        &mut d.against_containerd("import", &dir, &ns),
        "0 imported, 1 skipped",
    );
    let verified = outcome(&mut d.against_containerd("verify", &dir, &ns)).0 == 0;
    let started = flavour.images.iter().enumerate().all(|(k, (image, msg))| {
        let out = d
            .ctr(&ns)
            .args(["run", "--rm", &image.reference, &format!("{ns}-{k}")])
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == *msg
    });
    Cell {
        imported,
        skipped,
        verified,
        started,
    }
}

fn archive_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The same four checks on a dockerd: `import` and `docker` make commands against it.
fn docker_cell(
    flavour: &Flavour,
    import: &dyn Fn(&str, &Path) -> Command,
    docker: &dyn Fn() -> Command,
) -> Cell {
    let dir = temp_dir("versions-docker");
    std::fs::copy(&flavour.archive, dir.join(archive_name(&flavour.archive))).unwrap();
    let imported = ran(&mut import("import", &dir), "1 imported");
    let skipped = ran(&mut import("import", &dir), "0 imported, 1 skipped");
    let verified = outcome(&mut import("verify", &dir)).0 == 0;
    let started = flavour.images.iter().all(|(image, msg)| {
        let out = docker()
            .args(["run", "--rm", "--network", "none", &image.tag])
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == *msg
    });
    for (image, _) in &flavour.images {
        let _ = docker()
            .args(["image", "rm", "--force", &image.tag])
            .output();
    }
    Cell {
        imported,
        skipped,
        verified,
        started,
    }
}

#[test]
fn every_archive_flavour_imports_skips_verifies_and_runs_on_every_version() {
    // (column, rows of (flavour, cell))
    let mut columns: Vec<(String, Vec<(String, Cell)>)> = Vec::new();
    let mut seen_containerd = Vec::new();
    for (i, d) in matrix().iter().enumerate() {
        let flavours = flavours(i, d);
        if !seen_containerd.contains(&d.containerd_version) {
            seen_containerd.push(d.containerd_version.clone());
            let cells = flavours
                .iter()
                .map(|f| (f.name.clone(), containerd_cell(d, f)))
                .collect();
            columns.push((
                format!("containerd {}", short(&d.containerd_version)),
                cells,
            ));
        }
        // The default pair's dockerd holds the fixtures it built: a private one of the same
        // version starts empty.
        let private = (i == 0).then(|| PrivateDockerd::start("versions-docker"));
        let cells = flavours
            .iter()
            .map(|f| {
                let cell = match &private {
                    Some(p) => {
                        docker_cell(f, &|cmd, dir| with_command(p.import(dir), cmd), &|| {
                            p.docker()
                        })
                    }
                    None => docker_cell(f, &|cmd, dir| d.against_docker(cmd, dir), &|| d.docker()),
                };
                (f.name.clone(), cell)
            })
            .collect();
        let store = if d.docker_containerd_store() {
            ", containerd store"
        } else {
            ""
        };
        columns.push((format!("Docker {}{store}", short(&d.docker_version)), cells));
    }
    let table = render(&columns);
    let path = std::env::var_os("OI_VERSIONS_TABLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp_dir("versions-table").join("versions-tested.md"));
    std::fs::write(&path, &table).unwrap();
    eprintln!("versions tested: {}\n{table}", path.display());
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
