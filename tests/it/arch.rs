//! The importer for aarch64 nodes: the static aarch64 build (scripts/test.sh builds it as
//! OI_AARCH64_BIN) run under qemu-user, the importer image for both architectures as one
//! OCI index (scripts/build-image.sh), and the bundle carrying the importer of each
//! architecture for the chart's bootstrap mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

fn aarch64_bin() -> PathBuf {
    std::env::var_os("OI_AARCH64_BIN")
        .expect("OI_AARCH64_BIN is set by scripts/test.sh")
        .into()
}

fn static_bin() -> PathBuf {
    std::env::var_os("OI_STATIC_BIN")
        .expect("OI_STATIC_BIN is set by scripts/test.sh")
        .into()
}

/// The aarch64 importer, run by qemu-user.
fn aarch64() -> Command {
    let mut c = Command::new("qemu-aarch64");
    c.arg(aarch64_bin());
    c
}

#[test]
fn the_aarch64_importer_lists_every_archive_flavour_as_the_x86_64_one_does() {
    let f = fixtures();
    for (flavour, path, _) in &f.flavours {
        let native = stdout_of(offline_images().args(["list", "--json"]).arg(path));
        let emulated = stdout_of(aarch64().args(["list", "--json"]).arg(path));
        assert_eq!(emulated, native, "{flavour}");
    }
}

#[test]
fn an_importer_on_a_node_of_another_architecture_says_so_in_one_line_and_exits_2() {
    let f = fixtures();
    let dir = temp_dir("other-arch");
    std::fs::copy(f.dir.join("docker.tar"), dir.join("alpha.tar")).unwrap();
    let mut c = aarch64();
    c.args(["import", "--images-path"])
        .arg(&dir)
        .args([
            "--runtime",
            "docker",
            "--docker-host",
            &daemons().docker_host,
        ])
        .env_remove("DOCKER_HOST");
    let (code, _, stderr) = outcome(&mut c);
    assert_eq!(code, 2, "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("runtime:"))
        .collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("built for linux/arm64") && lines[0].contains("runs on linux/amd64"),
        "{stderr}"
    );
}

#[test]
fn the_importer_image_is_one_oci_index_for_amd64_and_arm64_and_runs_from_containerd() {
    let dir = temp_dir("image-index");
    let image = format!("oi-test.local/offline-images:{}", std::process::id());
    let d = daemons();
    run(Command::new("scripts/build-image.sh")
        .env("DOCKER_HOST", &d.docker_host)
        .env("DOCKER", &d.docker_cli)
        .env(
            "BINARY",
            std::env::var("OI_NODE_BIN").expect("set by scripts/test.sh"),
        )
        .env("BINARY_ARM64", aarch64_bin())
        .env("IMAGE", &image)
        .env("OUTPUT_DIR", &dir));
    let _ = docker().args(["rmi", "--force", &image]).output();
    let tar = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".oci.tar"))
        .expect("build-image.sh wrote the OCI index");
    // skopeo reads it as an index of both platforms.
    let raw: serde_json::Value = serde_json::from_str(&stdout_of(
        skopeo()
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", tar.display())),
    ))
    .unwrap();
    let arches: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"], "{raw}");
    // Our own reading agrees, and containerd imports both platforms and runs this one.
    let listed = stdout_of(offline_images().args(["list", "--json"]).arg(&tar));
    assert!(
        listed.contains(r#""architecture":"arm64""#)
            && listed.contains(r#""architecture":"amd64""#)
            && !listed.contains(r#""complete":false"#),
        "{listed}"
    );
    let ns = unique_namespace("image-index");
    run(ctr(&ns)
        .args(["images", "import", "--all-platforms"])
        .arg(&tar));
    let reference = offline_images::reference::normalize(&image).unwrap();
    let out = stdout_of(ctr(&ns).args([
        "run",
        "--rm",
        &reference,
        &format!("{ns}-run"),
        "/offline-images",
        "--version",
    ]));
    assert!(out.contains("offline-images"), "{out}");
}

/// The ELF header's class, byte order and machine (`e_machine`), as `file` reads them.
fn elf_machine(path: &Path) -> (u8, u8, u16) {
    let header = std::fs::read(path).unwrap();
    assert_eq!(&header[..4], b"\x7fELF", "{}", path.display());
    let machine = u16::from_le_bytes([header[18], header[19]]);
    (header[4], header[5], machine)
}

/// The static importer `bin` running `export` as `export_cmd` runs the test build.
fn export_with(bin: &Path, dir: &Path) -> Command {
    let template = export_cmd(dir);
    let mut c = Command::new(bin);
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.args(template.get_args());
    c
}

#[test]
fn export_carries_the_importer_of_each_architecture_and_the_aarch64_one_runs_from_the_bundle() {
    let image = pushed_image("per-arch", "hello per arch");
    let dir = temp_dir("export-per-arch");
    // Given in either order: each file's architecture is read from it.
    let (code, _, stderr) = outcome(
        export_cmd(&dir)
            .arg("--importer-binary")
            .arg(aarch64_bin())
            .arg("--importer-binary")
            .arg(static_bin())
            .arg(&image.reference),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    for (arch, src, machine) in [("amd64", static_bin(), 62), ("arm64", aarch64_bin(), 183)] {
        let folder = dir.join(format!(".offline-images/linux-{arch}"));
        let binary = folder.join("offline-images");
        let sha = offline_images::bundle::sha256_file(&binary).unwrap();
        assert_eq!(
            sha,
            offline_images::bundle::sha256_file(&src).unwrap(),
            "{arch}"
        );
        assert_eq!(
            std::fs::read_to_string(folder.join("offline-images.sha256")).unwrap(),
            format!("{sha}  offline-images\n")
        );
        // 64-bit, little-endian, of the architecture's machine.
        assert_eq!(elf_machine(&binary), (2, 1, machine), "{arch}");
        assert!(
            stderr.contains(&format!(
                "importer binary written to {}/.offline-images/linux-{arch}/offline-images (sha256 {sha})",
                dir.display()
            )),
            "{stderr}"
        );
        run(Command::new("sha256sum")
            .args(["-c", "offline-images.sha256"])
            .current_dir(&folder));
    }
    // The path charts without bootstrap.architectures run holds the amd64 one.
    let default = dir.join(".offline-images/offline-images");
    assert_eq!(elf_machine(&default), (2, 1, 62));
    run(Command::new("sha256sum")
        .args(["-c", "offline-images.sha256"])
        .current_dir(dir.join(".offline-images")));
    let listed = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(listed.lines().count(), 1, "{listed}");

    // The bundle's aarch64 importer runs (under qemu-user here), checking itself first.
    let arm = dir.join(".offline-images/linux-arm64/offline-images");
    let out = stdout_of(Command::new("qemu-aarch64").arg(&arm).arg("--version"));
    assert!(out.starts_with("offline-images "), "{out}");
    let sums = arm.with_file_name("offline-images.sha256");
    std::fs::write(&sums, format!("{}  offline-images\n", "0".repeat(64))).unwrap();
    let (code, _, stderr) = outcome(Command::new("qemu-aarch64").arg(&arm).arg("--version"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("refusing to run") && stderr.contains("damaged or replaced"),
        "{stderr}"
    );
}

#[test]
fn the_running_importer_carries_its_aarch64_sibling_and_without_one_warns_for_arm64_nodes() {
    let image = pushed_image("per-arch-default", "hello per arch default");
    let bin_dir = temp_dir("per-arch-bin");
    let exporter = bin_dir.join("offline-images");
    std::fs::copy(static_bin(), &exporter).unwrap();
    std::fs::copy(aarch64_bin(), bin_dir.join("offline-images-aarch64")).unwrap();

    let dir = temp_dir("export-per-arch-default");
    let (code, _, stderr) = outcome(export_with(&exporter, &dir).arg(&image.reference));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(
        elf_machine(&dir.join(".offline-images/linux-arm64/offline-images")).2,
        183
    );
    assert_eq!(
        elf_machine(&dir.join(".offline-images/linux-amd64/offline-images")).2,
        62
    );

    // No sibling: the amd64 importer alone, and a warning naming the nodes that lack one.
    std::fs::remove_file(bin_dir.join("offline-images-aarch64")).unwrap();
    let dir = temp_dir("export-per-arch-alone");
    let (code, _, stderr) = outcome(export_with(&exporter, &dir).arg(&image.reference));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: no importer binary for linux/arm64")
            && stderr.contains("offline-images-aarch64")
            && stderr.contains("linux/arm64 nodes cannot import from this bundle"),
        "{stderr}"
    );
    assert!(dir
        .join(".offline-images/linux-amd64/offline-images")
        .is_file());
    assert!(!dir.join(".offline-images/linux-arm64").exists());

    // A sibling that is not what its name says is refused by name, before anything is pulled.
    std::fs::copy(static_bin(), bin_dir.join("offline-images-aarch64")).unwrap();
    let dir = temp_dir("export-per-arch-wrong");
    let (code, _, stderr) = outcome(export_with(&exporter, &dir).arg(&image.reference));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("offline-images-aarch64 (beside this binary) is an importer for x86_64"),
        "{stderr}"
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}

#[test]
fn two_importers_for_one_architecture_are_refused_by_name() {
    let dir = temp_dir("export-per-arch-twice");
    let (code, _, stderr) = outcome(
        export_cmd(&dir)
            .arg("--importer-binary")
            .arg(static_bin())
            .arg("--importer-binary")
            .arg(static_bin())
            .arg("oi-never/pulled:1"),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("are both for x86_64 (linux/amd64); give one per architecture"),
        "{stderr}"
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}

/// The node's importer (the image's binary, the bundled aarch64 one) is built without the
/// `export` feature: it has no export, and the image stays under its 3 MiB compressed goal.
#[test]
fn the_node_importer_has_no_export_and_is_under_3_mib_gzipped() {
    let node = PathBuf::from(
        std::env::var_os("OI_NODE_BIN").expect("OI_NODE_BIN is set by scripts/test.sh"),
    );
    let (code, _, stderr) = outcome(Command::new(&node).args(["export", "r/a:1"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unrecognized subcommand 'export'"),
        "{stderr}"
    );
    let (code, stdout, stderr) = outcome(Command::new(&node).args(["import", "--help"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("--images-path"), "{stdout}");
    let gzipped = Command::new("gzip").arg("-9c").arg(&node).output().unwrap();
    assert!(gzipped.status.success());
    let size = gzipped.stdout.len();
    assert!(
        size < 3 * 1024 * 1024,
        "{} is {size} bytes gzipped",
        node.display()
    );
}
