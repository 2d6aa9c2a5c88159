//! The importer binary a bundle carries (the chart's bootstrap mode): `export` writes it with
//! its checksum, import ignores it, and a binary that does not match its checksum refuses to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

fn static_bin() -> PathBuf {
    std::env::var_os("OI_STATIC_BIN")
        .expect("OI_STATIC_BIN is set by scripts/test.sh")
        .into()
}

/// `offline-images import` run from the bundle's own binary, against `d`'s containerd (with
/// `d`'s ctr first on PATH, for the ctr client).
fn bundled_import(d: &Daemons, bundle: &Path, ns: &str) -> Command {
    let mut c = Command::new(bundle.join(".offline-images/offline-images"));
    c.args(["import", "--images-path"])
        .arg(bundle)
        .arg("--containerd-address")
        .arg(&d.containerd_sock)
        .args(["--namespace", ns])
        .env("CONTAINERD_CLIENT", containerd_client())
        // The shared test containerd's disk is the machine's (see `against_containerd`).
        .env("DISK_MAX_USED", "100");
    if let Some(dir) = d.ctr.parent().filter(|p| !p.as_os_str().is_empty()) {
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", dir.display()));
    }
    for v in [
        "IMAGE_RUNTIME",
        "CONTAINERD_ADDRESS",
        "HOST_ROOT",
        "IMAGES_PATH",
    ] {
        c.env_remove(v);
    }
    c
}

/// The bundle's own binary importing into `d`'s dockerd.
fn bundled_import_docker(d: &Daemons, bundle: &Path) -> Command {
    let mut c = d.against_docker("import", bundle);
    let args: Vec<std::ffi::OsString> = c.get_args().map(Into::into).collect();
    let mut own = Command::new(bundle.join(".offline-images/offline-images"));
    own.args(args);
    for (k, v) in c.get_envs() {
        if v.is_none() {
            own.env_remove(k);
        }
    }
    c = own;
    c
}

#[test]
fn export_puts_the_static_importer_and_its_checksum_in_the_bundle_and_it_imports_from_there() {
    let image = pushed_image("bootstrap", "hello from bootstrap");
    let dir = temp_dir("export-bootstrap");
    let out = export_cmd(&dir)
        .arg("--importer-binary")
        .arg(static_bin())
        .arg(&image.reference)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("importer binary written to"), "{stderr}");

    let binary = dir.join(".offline-images/offline-images");
    let sums = std::fs::read_to_string(dir.join(".offline-images/offline-images.sha256")).unwrap();
    let sha = offline_images::bundle::sha256_file(&binary).unwrap();
    assert_eq!(sums, format!("{sha}  offline-images\n"));
    assert_eq!(
        sha,
        offline_images::bundle::sha256_file(&static_bin()).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // `sha256sum -c` in that folder accepts it, as an operator would check it.
    run(Command::new("sha256sum")
        .args(["-c", "offline-images.sha256"])
        .current_dir(dir.join(".offline-images")));
    // Not in SHA256SUMS or images.json: those list archives only.
    let listed = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(listed.lines().count(), 1, "{listed}");

    // The bootstrap import on every version of the matrix, containerd and Docker.
    for d in matrix() {
        let ns = unique_namespace("bootstrap");
        let (code, _, stderr) = outcome(&mut bundled_import(d, &dir, &ns));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        let summary = stderr.lines().last().unwrap_or_default();
        assert!(
            summary.contains("1 imported") && summary.contains("0 failed"),
            "{}: {stderr}",
            d.label
        );
        assert!(
            !stderr.contains(".offline-images"),
            "{}: the binary was taken for an archive:\n{stderr}",
            d.label
        );
        let out = stdout_of(d.ctr(&ns).args([
            "run",
            "--rm",
            &image.reference,
            &format!("{ns}-bootstrap"),
        ]));
        assert_eq!(out.trim(), "hello from bootstrap", "{}", d.label);

        let (code, _, stderr) = outcome(&mut bundled_import_docker(d, &dir));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        assert!(stderr.contains("1 imported"), "{}: {stderr}", d.label);
        let out = stdout_of(
            d.docker()
                .args(["run", "--rm", "--network", "none", &image.tag]),
        );
        assert_eq!(out.trim(), "hello from bootstrap", "{}", d.label);
        let _ = d
            .docker()
            .args(["image", "rm", "--force", "--no-prune", &image.tag])
            .output();
    }
}

#[test]
fn a_bundled_importer_that_does_not_match_its_checksum_refuses_to_run() {
    let dir = temp_dir("tampered");
    let folder = dir.join(".offline-images");
    std::fs::create_dir_all(&folder).unwrap();
    let binary = folder.join("offline-images");
    std::fs::copy(static_bin(), &binary).unwrap();
    let sha = offline_images::bundle::sha256_file(&binary).unwrap();
    std::fs::write(
        folder.join("offline-images.sha256"),
        format!("{sha}  offline-images\n"),
    )
    .unwrap();
    let ns = unique_namespace("tampered");
    let (code, stdout, stderr) = outcome(Command::new(&binary).arg("--version"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("offline-images "));

    // Bytes appended to an ELF file leave it runnable: only the checksum tells.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&binary)
        .unwrap()
        .write_all(b"changed")
        .unwrap();
    let mut version = Command::new(&binary);
    version.arg("--version");
    for cmd in [&mut version, &mut bundled_import(daemons(), &dir, &ns)] {
        let (code, stdout, stderr) = outcome(cmd);
        assert_eq!(code, 2, "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.contains("refusing to run")
                && stderr.contains("offline-images.sha256 says")
                && stderr.contains("damaged or replaced"),
            "{stderr}"
        );
    }

    // A missing checksum is refused too.
    std::fs::remove_file(folder.join("offline-images.sha256")).unwrap();
    let (code, _, stderr) = outcome(Command::new(&binary).arg("--version"));
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot be read"), "{stderr}");
}

#[test]
fn export_refuses_an_importer_binary_that_is_not_static_before_pulling_anything() {
    let dir = temp_dir("export-dynamic");
    let out = export_cmd(&dir)
        .args(["--importer-binary", "/bin/sh", "oi-never/pulled:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--importer-binary /bin/sh is dynamically linked"),
        "{stderr}"
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}

#[test]
fn a_static_exporter_puts_itself_in_the_bundle_and_a_dynamic_one_says_why_it_does_not() {
    let image = pushed_image("self-placed", "hello from self-placed");
    // The static build, run the way `export_cmd` runs the test build.
    let dir = temp_dir("export-self");
    let template = export_cmd(&dir);
    let mut c = Command::new(static_bin());
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.args(template.get_args()).arg(&image.reference);
    let (code, _, stderr) = outcome(&mut c);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        offline_images::bundle::sha256_file(&dir.join(".offline-images/offline-images")).unwrap(),
        offline_images::bundle::sha256_file(&static_bin()).unwrap()
    );

    // The test build is linked dynamically: it leaves the folder out and says so.
    let dir = temp_dir("export-dynamic-self");
    let (code, _, stderr) = outcome(export_cmd(&dir).arg(&image.reference));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("is dynamically linked") && stderr.contains("give --importer-binary"),
        "{stderr}"
    );
    assert!(!dir.join(".offline-images").exists());
}
