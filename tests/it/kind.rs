//! `import --kind`: a bundle imported from the host into the nodes of a kind-shaped cluster.
//! Each node is a container of the node image scripts/test.sh builds offline (a Debian
//! bookworm root file system made by debootstrap, with Debian's containerd and runc:
//! OI_KIND_NODE_IMAGE) on the private dockerd, started as kind starts its nodes where
//! `--privileged` is refused: SYS_ADMIN, NET_ADMIN and MKNOD, no seccomp, `/var` on a volume,
//! kind's labels, containerd as its command. Its cgroup hierarchy is writable (a bind of
//! /sys/fs/cgroup), as a privileged kind node's is, so that `ctr run` can start a container.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Two nodes, a control-plane and a worker, removed with their volumes when dropped.
struct Cluster {
    name: String,
    nodes: Vec<String>,
}

fn node_image() -> Option<String> {
    match std::env::var("OI_KIND_NODE_IMAGE") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            missing_precondition("OI_KIND_NODE_IMAGE (the kind node image scripts/test.sh builds)");
            None
        }
    }
}

fn static_importer() -> Option<PathBuf> {
    match std::env::var_os("OI_STATIC_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            missing_precondition("OI_STATIC_BIN (the static importer copied into the nodes)");
            None
        }
    }
}

impl Cluster {
    fn start(label: &str) -> Option<Cluster> {
        let image = node_image()?;
        let name = format!("oi-{label}-{}", std::process::id());
        let mut cluster = Cluster {
            name: name.clone(),
            nodes: Vec::new(),
        };
        for role in ["control-plane", "worker"] {
            let node = format!("{name}-{role}");
            run(docker()
                .args(["run", "-d", "--name", &node, "--hostname", &node])
                .args([
                    "--cap-add",
                    "SYS_ADMIN",
                    "--cap-add",
                    "NET_ADMIN",
                    "--cap-add",
                    "MKNOD",
                    "--security-opt",
                    "seccomp=unconfined",
                    "--security-opt",
                    "apparmor=unconfined",
                    "-v",
                    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                ])
                .arg("-v")
                .arg(format!("{node}-var:/var"))
                .arg("--label")
                .arg(format!("io.x-k8s.kind.cluster={name}"))
                .arg("--label")
                .arg(format!("io.x-k8s.kind.role={role}"))
                .args([&image, "/usr/bin/containerd"]));
            cluster.nodes.push(node.clone());
            cluster.wait_for_containerd(&node);
        }
        Some(cluster)
    }

    fn wait_for_containerd(&self, node: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = docker()
                .args(["exec", node, "ctr", "version"])
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd in {node} does not answer: {out:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn images(&self, node: &str) -> Vec<String> {
        let out = run(docker().args(["exec", node, "ctr", "-n", "k8s.io", "images", "ls", "-q"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn import(&self, images: &Path, importer: &Path) -> Command {
        let mut c = offline_images();
        c.env("DOCKER_HOST", &daemons().docker_host)
            .args(["import", "--kind", &self.name, "--images-path"])
            .arg(images)
            .arg("--importer-binary")
            .arg(importer)
            // The nodes' /var is a volume on this machine's own disk, however full the other
            // work on it leaves it; the disk preflight has tests of its own on a tmpfs.
            .arg("--no-disk-preflight");
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = docker().args(["rm", "-f", "-v", node]).output();
            let _ = docker()
                .args(["volume", "rm", &format!("{node}-var")])
                .output();
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The corpus: every archive flavour of the fixtures, two images in one archive, and a
/// multi-platform index with one platform's blobs.
fn corpus(label: &str) -> (PathBuf, Vec<String>) {
    let f = fixtures();
    let dir = temp_dir(label);
    for (_, path, _) in &f.flavours {
        std::fs::copy(path, dir.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(&f.two_images, dir.join("two-images.tar")).unwrap();
    let multi = "docker.io/oi-test/multi:1";
    multi_platform_oci(&f.dir.join("ctr-oci.tar"), &dir.join("multi.tar"), multi);
    let names = vec![
        f.alpha.reference.clone(),
        f.beta.reference.clone(),
        multi.to_string(),
    ];
    (dir, names)
}

#[test]
fn every_image_reaches_both_nodes_and_a_rerun_sends_nothing() {
    let (Some(importer), Some(cluster)) = (static_importer(), Cluster::start("kind-all")) else {
        return;
    };
    let (dir, names) = corpus("kind-all");
    let dry = run(cluster.import(&dir, &importer).arg("--dry-run"));
    let log = stderr(&dry);
    for node in &cluster.nodes {
        assert!(log.contains(&format!("{node}: lacks ")), "{log}");
        assert!(
            log.contains("nothing of the bundle sent (--dry-run)"),
            "{log}"
        );
        // The importer goes in even so: it is what answers what the node holds.
        assert!(
            log.contains(&format!("{node}: importer copied to ")),
            "{log}"
        );
        assert!(cluster.images(node).is_empty(), "{log}");
    }
    let out = run(&mut cluster.import(&dir, &importer));
    let log = stderr(&out);
    for node in &cluster.nodes {
        let images = cluster.images(node);
        for name in &names {
            assert!(
                images.contains(name),
                "{node} lacks {name}: {images:?}\n{log}"
            );
        }
        assert!(
            log.contains(&format!("{node}: importer /var/lib/offline-images/")),
            "{log}"
        );
        assert!(log.contains(&format!("{node}: done: ")), "{log}");
        // The image runs in the node, started by the node's containerd and runc.
        let ran = run(docker()
            .args(["exec", node, "ctr", "-n", "k8s.io", "run", "--rm"])
            .args([
                &fixtures().alpha.reference,
                &format!("oi-run-{}", std::process::id()),
            ]));
        assert_eq!(
            String::from_utf8_lossy(&ran.stdout).trim(),
            "hello from alpha"
        );
    }
    assert!(log.contains("summary: 2 nodes, 2 done, 0 FAILED"), "{log}");

    let again = run(&mut cluster.import(&dir, &importer));
    let log = stderr(&again);
    for node in &cluster.nodes {
        assert!(
            log.contains(&format!("{node}: importer /var/lib/offline-images/")),
            "{log}"
        );
        assert!(log.contains(&format!("{node}: has every image")), "{log}");
        assert!(!log.contains(&format!("{node}: sent ")), "{log}");
    }
    assert!(
        log.contains("summary: 2 nodes, 2 done, 0 FAILED, 0 B sent"),
        "{log}"
    );
    // A node that lacks nothing of the bundle still answers for --require: an image it
    // holds passes, one it does not is named on each node and the run exits 1.
    let held = run(cluster
        .import(&dir, &importer)
        .args(["--require", &fixtures().alpha.reference]));
    assert_eq!(held.status.code(), Some(0), "{}", stderr(&held));
    let absent = "oi-test/kind-never-imported:1";
    let out = cluster
        .import(&dir, &importer)
        .args(["--require", absent])
        .output()
        .unwrap();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    for node in &cluster.nodes {
        assert!(
            log.contains(&format!("{node}: MISSING   {absent}")),
            "{log}"
        );
    }
    verify_names_a_node_that_lacks_an_image(&cluster, &dir, &importer);
}

/// verify --kind checks every node from the host; an image removed from one is named.
fn verify_names_a_node_that_lacks_an_image(cluster: &Cluster, dir: &Path, importer: &Path) {
    let verify = || {
        let mut v = offline_images();
        v.env("DOCKER_HOST", &daemons().docker_host)
            .args(["verify", "--kind", &cluster.name, "--images-path"])
            .arg(dir)
            .arg("--importer-binary")
            .arg(importer)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = verify();
    let log = stderr(&ok);
    assert_eq!(ok.status.code(), Some(0), "{log}");
    assert!(log.contains("summary: 2 nodes, 2 done, 0 FAILED"), "{log}");
    let worker = &cluster.nodes[1];
    let beta = &fixtures().beta.reference;
    run(docker().args(["exec", worker, "ctr", "-n", "k8s.io", "images", "rm", beta]));
    let missing = verify();
    let log = stderr(&missing);
    assert_eq!(missing.status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("{worker}: MISSING  {beta}")), "{log}");
    assert!(
        log.contains(&format!("(images missing on: {worker})")),
        "{log}"
    );
}

/// A node stopped while the bundle streams into it is named failed; the other completes, and
/// the next run completes the stopped one once it runs again.
#[test]
fn a_node_stopped_mid_import_fails_alone_and_the_next_run_completes_it() {
    let (Some(importer), Some(cluster)) = (static_importer(), Cluster::start("kind-stop")) else {
        return;
    };
    let dir = temp_dir("kind-stop");
    big_docker_archive(&dir.join("big.tar"), "docker.io/oi-test/kind-big:1", 300);
    let worker = cluster.nodes[1].clone();
    let mut child = cluster
        .import(&dir, &importer)
        .arg("--strict")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        // The node's importer has started on the archive: stop the node under it.
        if line.starts_with(&format!("{worker}: offline-images ")) && line.contains(" importing ") {
            run(docker().args(["kill", &worker]));
        }
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "{worker}: FAILED: the container stopped during the import: "
        )),
        "{log}"
    );
    assert!(
        log.contains("(failed: ") && log.contains(&format!("{worker})")),
        "{log}"
    );
    let control = &cluster.nodes[0];
    assert!(
        cluster
            .images(control)
            .contains(&"docker.io/oi-test/kind-big:1".to_string()),
        "{log}"
    );

    run(docker().args(["start", &worker]));
    cluster.wait_for_containerd(&worker);
    let out = run(cluster.import(&dir, &importer).arg("--strict"));
    let log = stderr(&out);
    assert!(
        cluster
            .images(&worker)
            .contains(&"docker.io/oi-test/kind-big:1".to_string()),
        "{log}"
    );
    assert!(
        log.contains(&format!("{control}: has every image")),
        "{log}"
    );
    // The staging directory the killed import left is removed by the next run.
    let removed = format!("{worker}: removed /var/lib/offline-images/staging-");
    assert!(log.contains(&removed), "{log}");
    assert!(log.contains("summary: 2 nodes, 2 done, 0 FAILED"), "{log}");
}

/// An OCI layout bundle (the default `export` format): each image of the layout is a unit,
/// sent as the OCI archive built from its blobs, and only the images a node lacks are sent.
#[test]
fn the_images_of_a_layout_a_node_lacks_are_sent_and_no_other() {
    let (Some(importer), Some(cluster)) = (static_importer(), Cluster::start("kind-layout")) else {
        return;
    };
    let f = fixtures();
    let dir = temp_dir("kind-layout");
    let layout = dir.join("layout");
    let copy = |src: String, reference: &str| {
        run(skopeo()
            .args(["copy", "--quiet", &src])
            .arg(format!("oci:{}:{reference}", layout.display())));
    };
    let a = format!("docker.io/oi-test/kind-layout-a:{}", std::process::id());
    let b = format!("docker.io/oi-test/kind-layout-b:{}", std::process::id());
    copy(
        format!("docker-archive:{}", f.dir.join("docker.tar").display()),
        &a,
    );
    let out = run(&mut cluster.import(&dir, &importer));
    let log = stderr(&out);
    for node in &cluster.nodes {
        assert!(cluster.images(node).contains(&a), "{node} lacks {a}\n{log}");
        assert!(
            log.contains(&format!("{node}: lacks 1 of 1 units")),
            "{log}"
        );
    }

    let beta = format!("docker-archive:{}:{}", f.two_images.display(), f.beta.tag);
    copy(beta, &b);
    let out = run(&mut cluster.import(&dir, &importer));
    let log = stderr(&out);
    for node in &cluster.nodes {
        let images = cluster.images(node);
        assert!(
            images.contains(&a) && images.contains(&b),
            "{node}: {images:?}\n{log}"
        );
        assert!(
            log.contains(&format!("{node}: lacks 1 of 2 units")),
            "{log}"
        );
        assert!(log.contains(&format!("{node}: sent 1 units")), "{log}");
    }
}

/// A user who is not root, in the group that owns Docker's socket (OI_KIND_USER, made by
/// scripts/test.sh), with nothing of the host mounted into the nodes: the socket is enough.
#[test]
fn a_user_in_the_docker_group_imports_through_the_socket_alone() {
    let Some(user) = std::env::var("OI_KIND_USER").ok().filter(|u| !u.is_empty()) else {
        missing_precondition("OI_KIND_USER (a user in the group of the Docker socket)");
        return;
    };
    let (Some(importer), Some(cluster)) = (static_importer(), Cluster::start("kind-user")) else {
        return;
    };
    let f = fixtures();
    let dir = temp_dir("kind-user");
    std::fs::copy(f.dir.join("docker.tar.gz"), dir.join("alpha.tar.gz")).unwrap();
    let as_root = cluster.import(&dir, &importer);
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        &user,
        "--regid",
        "nogroup",
        "--init-groups",
        "--",
    ])
    .arg(as_root.get_program())
    .args(as_root.get_args())
    .env("DOCKER_HOST", &daemons().docker_host);
    let out = run(&mut cmd);
    let log = stderr(&out);
    let who = run(Command::new("setpriv").args(["--reuid", &user, "--init-groups", "id", "-u"]));
    assert_ne!(String::from_utf8_lossy(&who.stdout).trim(), "0");
    for node in &cluster.nodes {
        assert!(
            cluster.images(node).contains(&f.alpha.reference),
            "{node}\n{log}"
        );
    }
    assert!(log.contains("summary: 2 nodes, 2 done, 0 FAILED"), "{log}");
}
