//! The Docker backend against the real dockerd: version negotiation, listing, and loading
//! every archive flavour (OCI layouts are given a manifest.json on the way, for Docker 20.10).
//!
//! Each loading test builds an image of its own under a unique name, saves it in one flavour,
//! removes it from the daemon, and loads it back, so tests run in parallel in any order.

use std::path::Path;

use offline_images::archive::{self, Platform};
use offline_images::runtime::docker::{connect, Docker};
use offline_images::runtime::{Imported, Runtime};

use crate::harness::*;

fn daemon() -> Docker {
    connect(&docker_socket()).expect("the test dockerd answers")
}

fn import_file(docker: &Docker, path: &Path) -> anyhow::Result<Imported> {
    let mut opened = archive::open(path)?;
    docker.import(&mut opened.reader, &Platform::host())
}

/// Build a unique image, save it as `flavour`, remove it from the daemon, load the archive,
/// and check the name, config digest and that it runs.
fn load_flavour_and_run(flavour: &str) {
    let tag = unique_tag("flavour");
    let message = format!("hello from {flavour} as {tag}");
    let built = build_image(&tag, &message);
    let (archive, want) = save_as(flavour, &built);
    docker_rmi(&built.tag);
    assert_eq!(
        docker_image_id(&tag),
        None,
        "{flavour}: removed before the load"
    );

    let imported = import_file(&daemon(), &archive)
        .unwrap_or_else(|e| panic!("{flavour}: the load failed: {e:#}"));

    assert!(
        imported.names.contains(&want.reference),
        "{flavour}: Docker reported {:?}, expected {}",
        imported.names,
        want.reference
    );
    let image = &imported.info.images[0];
    assert!(
        image.names.contains(&want.reference),
        "{flavour}: {image:?}"
    );
    assert_eq!(
        docker_image_id(&tag).as_deref(),
        Some(want.config_digest.as_str()),
        "{flavour}: docker image inspect shows the archive's config digest"
    );
    let out = stdout_of(docker().args(["run", "--rm", "--network", "none", &tag]));
    assert_eq!(out.trim(), message, "{flavour}: the loaded image runs");
    docker_rmi(&tag);
}

#[test]
fn docker_loads_a_docker_save_archive_and_it_runs() {
    load_flavour_and_run("docker save");
}

#[test]
fn docker_loads_a_gzipped_docker_save_archive_and_it_runs() {
    load_flavour_and_run("docker save | gzip");
}

#[test]
fn docker_loads_a_ctr_export_oci_archive_and_it_runs() {
    load_flavour_and_run("ctr export");
}

#[test]
fn docker_loads_a_skopeo_docker_archive_and_it_runs() {
    load_flavour_and_run("skopeo docker-archive");
}

#[test]
fn docker_loads_a_skopeo_oci_archive_with_its_own_config_digest_and_it_runs() {
    load_flavour_and_run("skopeo oci-archive");
}

#[test]
fn docker_loads_an_oci_archive_whose_layers_are_gzipped() {
    load_flavour_and_run("skopeo oci-archive, gzip layers");
}

#[test]
fn docker_loads_both_images_of_a_two_image_archive() {
    let (a, b) = (unique_tag("two-a"), unique_tag("two-b"));
    let built = [
        build_image(&a, "first of two"),
        build_image(&b, "second of two"),
    ];
    let dir = temp_dir("two");
    let tar = dir.join("two.tar");
    run(docker().args(["save", "-o"]).arg(&tar).args([&a, &b]));
    for image in &built {
        docker_rmi(&image.tag);
    }

    let imported = import_file(&daemon(), &tar).unwrap();

    for (image, message) in built.iter().zip(["first of two", "second of two"]) {
        assert!(imported.names.contains(&image.reference), "{imported:?}");
        assert_eq!(
            docker_image_id(&image.tag).as_deref(),
            Some(image.config_digest.as_str())
        );
        let out = stdout_of(docker().args(["run", "--rm", "--network", "none", &image.tag]));
        assert_eq!(out.trim(), message);
        docker_rmi(&image.tag);
    }
}

#[test]
fn every_fixture_archive_loads_and_names_its_image() {
    let f = fixtures();
    let docker = daemon();
    let mut archives: Vec<(&str, &Path)> = f
        .flavours
        .iter()
        .map(|(flavour, path, _)| (*flavour, path.as_path()))
        .collect();
    archives.push(("two images", &f.two_images));
    for (flavour, path) in archives {
        let imported = import_file(&docker, path)
            .unwrap_or_else(|e| panic!("{flavour}: the load failed: {e:#}"));
        assert!(
            imported.names.contains(&f.alpha.reference),
            "{flavour}: {:?}",
            imported.names
        );
    }
}

/// An OCI layout holding a multi-platform index of which only the node's platform has its
/// blobs, as `ctr export --platform` writes for a multi-platform image.
#[test]
fn docker_loads_the_nodes_platform_from_a_multi_platform_index() {
    let tag = unique_tag("multi");
    let built = build_image(&tag, "hello from a multi-platform index");
    let (single, _) = save_as("ctr export", &built);
    docker_rmi(&tag);

    let multi = temp_dir("multi").join("multi.tar");
    multi_platform_oci(&single, &multi, &built.reference);
    let imported = import_file(&daemon(), &multi).unwrap();

    assert_eq!(imported.info.images[0].platforms.len(), 2, "{imported:?}");
    assert!(imported.names.contains(&built.reference), "{imported:?}");
    assert_eq!(
        docker_image_id(&tag).as_deref(),
        Some(built.config_digest.as_str())
    );
    let out = stdout_of(docker().args(["run", "--rm", "--network", "none", &tag]));
    assert_eq!(out.trim(), "hello from a multi-platform index");
    docker_rmi(&tag);
}

#[test]
fn a_load_docker_refuses_returns_dockers_own_error() {
    // A docker-archive whose config has no rootfs: valid JSON, but not an image config.
    let tag = unique_tag("refused");
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello", &b"hello\n"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let config = br#"{"architecture":"amd64","os":"linux","config":{}}"#;
    let manifest =
        format!(r#"[{{"Config":"config.json","RepoTags":["{tag}"],"Layers":["l/layer.tar"]}}]"#);
    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("l/layer.tar", &layer[..]),
            ("config.json", &config[..]),
            ("manifest.json", manifest.as_bytes()),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap()
    };

    let err = daemon()
        .import(&mut &tar[..], &Platform::host())
        .expect_err("Docker refuses a config without rootfs");

    let msg = format!("{err:#}");
    assert!(msg.contains("refused the image archive"), "{msg}");
    assert!(msg.contains("RootFS"), "Docker's own words expected: {msg}");
    assert!(
        msg.contains(&docker_socket().display().to_string()),
        "{msg}"
    );
    assert_eq!(docker_image_id(&tag), None);
}

#[test]
fn a_truncated_archive_is_refused_and_docker_loads_nothing() {
    let tag = unique_tag("truncated");
    let built = build_image(&tag, "never loaded");
    let (tar, _) = save_as("docker save", &built);
    docker_rmi(&tag);
    let bytes = std::fs::read(&tar).unwrap();
    let half = &bytes[..bytes.len() / 2];

    let err = daemon()
        .import(&mut &half[..], &Platform::host())
        .expect_err("a truncated archive fails");

    assert!(format!("{err:#}").contains("truncated"), "{err:#}");
    assert_eq!(docker_image_id(&tag), None, "nothing of it is loaded");
}

#[test]
fn present_lists_a_loaded_image_with_its_config_digest() {
    let tag = unique_tag("present");
    let built = build_image(&tag, "present");
    let (tar, _) = save_as("docker save", &built);
    docker_rmi(&tag);
    let docker = daemon();
    assert!(!docker
        .present()
        .unwrap()
        .iter()
        .any(|p| p.name == built.reference));

    import_file(&docker, &tar).unwrap();

    let present = docker.present().unwrap();
    let found = present
        .iter()
        .find(|p| p.name == built.reference)
        .unwrap_or_else(|| panic!("{} not among {present:?}", built.reference));
    assert_eq!(
        found.config_digest.as_deref(),
        Some(built.config_digest.as_str())
    );
    assert!(
        !present.iter().any(|p| p.name.contains("<none>")),
        "untagged images are not listed by name"
    );
    docker_rmi(&tag);
}

#[test]
fn the_api_version_is_negotiated_with_the_real_daemon() {
    let docker = daemon();
    let server_api = stdout_of(&mut docker_cli_version("{{.Server.APIVersion}}"));
    let server_version = stdout_of(&mut docker_cli_version("{{.Server.Version}}"));
    assert_eq!(server_api.trim(), "1.41", "the test daemon is Docker 20.10");
    assert_eq!(docker.api_version(), "1.41");
    assert_eq!(docker.version(), server_version.trim());
    let line = docker.describe();
    assert!(line.contains(server_version.trim()), "{line}");
    assert!(
        line.contains(&docker_socket().display().to_string()),
        "{line}"
    );
    assert_eq!(docker.kind(), "docker");
}

fn docker_cli_version(format: &str) -> std::process::Command {
    let mut c = docker();
    c.args(["version", "--format", format]);
    c
}

#[test]
fn connecting_to_a_socket_that_is_not_docker_says_so_and_names_it() {
    let sock = &daemons().containerd_sock;
    let err = connect(sock).expect_err("containerd is not a Docker API");
    let msg = format!("{err:#}");
    assert!(msg.contains(&sock.display().to_string()), "{msg}");
    assert!(msg.contains("not a Docker API"), "{msg}");

    let missing = temp_dir("nosock").join("docker.sock");
    let msg = format!("{:#}", connect(&missing).unwrap_err());
    assert!(
        msg.contains("no such socket") && msg.contains("docker.sock"),
        "{msg}"
    );
}
