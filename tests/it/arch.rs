//! The importer for aarch64 nodes: the static aarch64 build (scripts/test.sh builds it as
//! OI_AARCH64_BIN) run under qemu-user, and the importer image for both architectures as one
//! OCI index (scripts/build-image.sh).

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;

fn aarch64_bin() -> PathBuf {
    std::env::var_os("OI_AARCH64_BIN")
        .expect("OI_AARCH64_BIN is set by scripts/test.sh")
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
            std::env::var("OI_STATIC_BIN").expect("set by scripts/test.sh"),
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
