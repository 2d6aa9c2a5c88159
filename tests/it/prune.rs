//! `offline-images prune` against the real containerd: only the images of one release go.

use std::path::Path;

use crate::harness::*;

/// A fresh image saved with `docker save` into `dir` as `<file>.tar`.
fn image_in(dir: &Path, label: &str, file: &str) -> TestImage {
    let image = build_image(&unique_tag(label), &format!("{label} for prune"));
    run(docker()
        .args(["save", "-o"])
        .arg(dir.join(format!("{file}.tar")))
        .arg(&image.tag));
    image
}

fn names(ns: &str) -> Vec<String> {
    ctr_images(ns).into_iter().map(|(n, _)| n).collect()
}

fn import_for(release: &str, dir: &Path, ns: &str) {
    let (code, _, stderr) = outcome(
        against_containerd("import", dir, ns)
            .args(["--release", release])
            .env_remove("RELEASE_NAME"),
    );
    assert_eq!(code, 0, "import --release {release}: {stderr}");
}

fn prune(release: &str, ns: &str, extra: &[&str]) -> (i32, String, String) {
    let mut c = offline_images();
    c.env("CONTAINERD_CLIENT", containerd_client())
        .args(["prune", "--release", release, "--containerd-address"])
        .arg(&daemons().containerd_sock)
        .args(["--namespace", ns])
        .args(extra);
    for v in [
        "IMAGE_RUNTIME",
        "CONTAINERD_ADDRESS",
        "HOST_ROOT",
        "RELEASE_NAME",
    ] {
        c.env_remove(v);
    }
    outcome(&mut c)
}

#[test]
fn prune_removes_exactly_the_images_of_one_release_and_keeps_those_in_use_or_shared() {
    let ns = unique_namespace("prune");
    let (dir_a, dir_b, dir_other) = (
        temp_dir("prune-a"),
        temp_dir("prune-b"),
        temp_dir("prune-u"),
    );
    let only_a = image_in(&dir_a, "only-a", "only-a");
    let used_a = image_in(&dir_a, "used-a", "used-a");
    let shared = image_in(&dir_a, "shared", "shared");
    std::fs::copy(dir_a.join("shared.tar"), dir_b.join("shared.tar")).unwrap();
    let only_b = image_in(&dir_b, "only-b", "only-b");
    let unlabelled = image_in(&dir_other, "unlabelled", "unlabelled");

    import_for("shop", &dir_a, &ns);
    // The shared image is already present: release b's import skips it, but labels it.
    import_for("billing", &dir_b, &ns);
    run(ctr(&ns)
        .args(["images", "import"])
        .arg(dir_other.join("unlabelled.tar")));
    let container = format!("{ns}-uses-it");
    run(ctr(&ns).args(["containers", "create", &used_a.reference, &container]));

    let shared_labels = ctr_labels(&ns, &shared.reference);
    assert!(
        shared_labels.contains("io.offline-images.release.shop=true")
            && shared_labels.contains("io.offline-images.release.billing=true"),
        "{shared_labels}"
    );

    // A dry run says what would happen and changes nothing.
    let before = names(&ns);
    let (code, stdout, stderr) = prune("shop", &ns, &["--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("would remove  {}", only_a.reference)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "kept  {}  (in use by container {container})",
            used_a.reference
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "would keep  {}  (also imported for release billing)",
            shared.reference
        )),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert_eq!(names(&ns), before);

    let (code, stdout, stderr) = prune("shop", &ns, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("removed  {}", only_a.reference)),
        "{stdout}"
    );
    assert!(
        stderr.contains("release shop: 1 removed, 2 kept, 0 failed"),
        "{stderr}"
    );
    let after = names(&ns);
    assert!(!after.contains(&only_a.reference), "{after:?}");
    for kept in [&used_a, &shared, &only_b, &unlabelled] {
        assert!(
            after.contains(&kept.reference),
            "{} gone: {after:?}",
            kept.reference
        );
    }
    let shared_labels = ctr_labels(&ns, &shared.reference);
    assert!(
        !shared_labels.contains("io.offline-images.release.shop")
            && shared_labels.contains("io.offline-images.release.billing=true"),
        "{shared_labels}"
    );
    // The container still runs from its image.
    assert!(stdout_of(ctr(&ns).args(["containers", "ls", "-q"])).contains(&container));

    // Pruning the other release now takes the shared image too; the unlabelled one stays.
    let (code, stdout, stderr) = prune("billing", &ns, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let after = names(&ns);
    assert!(!after.contains(&shared.reference) && !after.contains(&only_b.reference));
    assert!(after.contains(&unlabelled.reference) && after.contains(&used_a.reference));

    // Nothing is left to prune for either release but the image in use.
    let (code, stdout, _) = prune("billing", &ns, &[]);
    assert_eq!((code, stdout.as_str()), (0, ""));

    run(ctr(&ns).args(["containers", "rm", &container]));
    for image in [&only_a, &used_a, &shared, &only_b, &unlabelled] {
        docker_rmi(&image.tag);
    }
}

#[test]
fn prune_refuses_docker_whose_images_carry_no_labels() {
    let mut c = offline_images();
    c.args([
        "prune",
        "--release",
        "shop",
        "--runtime",
        "docker",
        "--docker-host",
    ])
    .arg(&daemons().docker_host)
    .env_remove("HOST_ROOT");
    let (code, stdout, stderr) = outcome(&mut c);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(
            "prune is not supported for Docker: images loaded into Docker carry no labels"
        ),
        "{stderr}"
    );
}

#[test]
fn prune_refuses_a_release_name_that_cannot_be_a_label() {
    let (code, _, stderr) = prune("a=b", "unused", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not a release name"), "{stderr}");
}

#[test]
fn prune_waits_bounded_for_the_releases_containers_to_go_then_removes_their_images() {
    let ns = unique_namespace("prune-wait");
    let dir = temp_dir("prune-wait");
    let image = image_in(&dir, "wait", "wait");
    import_for("shop", &dir, &ns);
    let container = format!("{ns}-terminating");
    run(ctr(&ns).args(["containers", "create", &image.reference, &container]));

    // The wait is bounded: a container that stays keeps its image.
    let (code, stdout, stderr) = prune("shop", &ns, &["--wait-for-containers", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("kept  {}", image.reference)),
        "{stdout}"
    );
    assert!(
        stderr.contains("still in use after 1 s, so kept"),
        "{stderr}"
    );

    // A container that goes while prune waits (as a terminating pod's does) frees its image.
    let log = temp_dir("prune-wait-log").join("stderr");
    let mut c = offline_images();
    c.args(["prune", "--release", "shop", "--containerd-address"])
        .arg(&daemons().containerd_sock)
        .args(["--namespace", &ns, "--wait-for-containers", "300"]);
    for v in [
        "IMAGE_RUNTIME",
        "CONTAINERD_ADDRESS",
        "HOST_ROOT",
        "RELEASE_NAME",
    ] {
        c.env_remove(v);
    }
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = wait_for_text(&log, "waiting up to 300 s", 60);
    assert!(said.contains(&container), "{said}");
    run(ctr(&ns).args(["containers", "delete", &container]));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the containers are gone after"), "{stderr}");
    assert!(
        stdout.contains(&format!("removed  {}", image.reference)),
        "{stdout}"
    );
    assert!(!names(&ns).contains(&image.reference), "{:?}", names(&ns));
}
