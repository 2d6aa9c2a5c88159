//! `deliver`: a bundle delivered over SSH to real hosts. Each host is a network namespace
//! made here (a veth pair, 10.77.N.1 on this side, 10.77.N.2 inside) running Debian's
//! OpenSSH `sshd` with its own host key, key authentication only, and a client key and
//! `known_hosts` of the test's own. The hosts share this machine's file system, so each is
//! given its runtime by the hosts file: the private dockerd on one, the private containerd on
//! one, podman 4.3 on a storage of its own on the third. The operator side reaches them only
//! over their veth addresses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn tool(path: &str, what: &str) -> bool {
    let there = Path::new(path).exists();
    if !there {
        missing_precondition(&format!("{path} ({what}; scripts/test.sh installs it)"));
    }
    there
}

fn env_path(var: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            missing_precondition(&format!("{var} ({what})"));
            None
        }
    }
}

/// One host: a namespace, its veth pair and its sshd.
struct Host {
    ns: String,
    veth: String,
    addr: String,
    host_key: String,
    sshd: Option<Child>,
}

impl Host {
    fn start(n: u8, dir: &Path, client_pub: &Path) -> Host {
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let (ns, veth, peer) = (
            format!("oi-dl-{tag}"),
            format!("oidl{tag}"),
            format!("oidp{tag}"),
        );
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("10.77.{n}.1/24"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        let inside = |args: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &ns, "ip"])
                .args(args))
        };
        inside(&["addr", "add", &format!("10.77.{n}.2/24"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        let addr = format!("10.77.{n}.2");
        let key = dir.join(format!("host{n}_key"));
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
        let config = dir.join(format!("sshd{n}.conf"));
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}\nPort 22\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 ClientAliveInterval 2\nClientAliveCountMax 2\n\
                 PidFile {}\n",
                key.display(),
                client_pub.display(),
                dir.join(format!("sshd{n}.pid")).display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let sshd = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let mut host = Host {
            ns,
            veth,
            addr,
            host_key: public
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            sshd: Some(sshd),
        };
        host.wait_listening();
        host
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = Command::new("ip")
                .args(["netns", "exec", &self.ns, "ss", "-ltn"])
                .output()
                .is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout).contains(&format!("{}:22", self.addr))
                });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sshd in {} does not listen on {}:22", self.ns, self.addr);
    }

    /// Bytes this side sent towards the host.
    fn sent(&self) -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{}/statistics/tx_bytes", self.veth))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

struct Site {
    dir: Scratch,
    hosts: Vec<Host>,
    client: PathBuf,
    podman: PathBuf,
    namespace: String,
    run_root: PathBuf,
}

impl Drop for Site {
    fn drop(&mut self) {
        unmount_under(&self.dir);
        unmount_under(&self.run_root);
        let _ = std::fs::remove_dir_all(&self.run_root);
    }
}

impl Site {
    /// `count` hosts on the subnets 10.77.FIRST.0/24 onwards (each test its own).
    fn start(first: u8, count: u8) -> Option<Site> {
        let ok = tool("/usr/sbin/sshd", "openssh-server")
            & tool("/usr/bin/ssh", "openssh-client")
            & tool("/usr/sbin/ip", "iproute2");
        let podman = env_path("OI_PODMAN4", "podman 4.3")?;
        if !ok {
            return None;
        }
        let dir = scratch_dir("deliver");
        let client = dir.join("client");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&client));
        let hosts = (first..first + count)
            .map(|n| Host::start(n, &dir, &client.with_extension("pub")))
            .collect();
        let run_root = PathBuf::from(format!("/tmp/oi-dl-run-{}-{first}", std::process::id()));
        Some(Site {
            dir,
            hosts,
            client,
            podman,
            namespace: format!("oi-deliver-{}-{first}", std::process::id()),
            run_root,
        })
    }

    /// `known_hosts` with the keys of the hosts `known`.
    fn known_hosts(&self, known: &[usize]) -> PathBuf {
        let names: Vec<String> = known.iter().map(usize::to_string).collect();
        // One word: ssh reads UserKnownHostsFile as a list split on spaces.
        let path = self.dir.join(format!("known_hosts-{}", names.join("-")));
        let lines: String = known
            .iter()
            .map(|&i| format!("{} {}\n", self.hosts[i].addr, self.hosts[i].host_key))
            .collect();
        std::fs::write(&path, lines).unwrap();
        path
    }

    /// podman 4.3 on the third host's storage.
    fn podman_cli(&self) -> Command {
        let mut c = Command::new(&self.podman);
        c.arg("--root")
            .arg(self.dir.join("podman"))
            .arg("--runroot")
            .arg(&self.run_root)
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
            ]);
        c
    }

    /// The hosts file: the first host on the private dockerd, the second on the private
    /// containerd, the third on podman 4.3; each keeps its importer under a directory of its
    /// own (they share this machine's disk). `extra` is appended.
    fn hosts_file(&self, extra: &str) -> PathBuf {
        let d = daemons();
        let dir = self.dir.display();
        let runtimes = [
            format!("runtime=docker socket={}", d.docker_host),
            format!(
                "runtime=containerd socket={} namespace={} disk-max-used=100",
                d.containerd_sock.display(),
                self.namespace
            ),
            format!(
                "runtime=podman storage-root={dir}/podman storage-driver=overlay run-root={}",
                self.run_root.display()
            ),
        ];
        let mut text = String::from("# the test's hosts\n");
        for (i, (h, words)) in self.hosts.iter().zip(&runtimes).enumerate() {
            text.push_str(&format!("root@{} {words} dir={dir}/h{}\n", h.addr, i + 1));
        }
        text.push_str(extra);
        let path = self.dir.join("hosts");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn deliver(
        &self,
        bundle: &Path,
        importer: &Path,
        known: &[usize],
        extra: &str,
    ) -> (Output, serde_json::Value) {
        let out = self
            .deliver_with(bundle, importer, known, extra, &[])
            .wait_with_output();
        self.finished(out.unwrap())
    }

    fn finished(&self, out: Output) -> (Output, serde_json::Value) {
        let json = std::fs::read(self.dir.join("report.json"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(serde_json::Value::Null);
        (out, json)
    }

    /// `deliver` started with `args` added, its output piped.
    fn deliver_with(
        &self,
        bundle: &Path,
        importer: &Path,
        known: &[usize],
        extra: &str,
        args: &[&str],
    ) -> Child {
        let report = self.dir.join("report.json");
        let _ = std::fs::remove_file(&report);
        let out = offline_images()
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.podman.parent().unwrap().display()
                ),
            )
            .args([
                "deliver",
                "--transfer-pool",
                "2",
                "--ssh-config",
                "/dev/null",
                "--images-path",
            ])
            .arg(bundle)
            .arg("--hosts-file")
            .arg(self.hosts_file(extra))
            .arg("-i")
            .arg(&self.client)
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts(known).display()
            ))
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "--importer-binary"])
            .arg(importer)
            .arg("--json-report")
            .arg(&report)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        out
    }
}

fn log(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Two images of this run's own names, saved into a bundle and removed from dockerd.
fn bundle(dir: &Path) -> (PathBuf, Vec<TestImage>) {
    bundle_of(dir, "all", &["a", "b"])
}

/// Images `oi-test/deliver-PID-LABEL-NAME:1` (each printing `hello from NAME`), saved into
/// DIR/bundle as NAME.tar and removed from dockerd.
fn bundle_of(dir: &Path, label: &str, names: &[&str]) -> (PathBuf, Vec<TestImage>) {
    let _lock = daemons().docker_lock();
    let pid = std::process::id();
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let mut images = Vec::new();
    for name in names {
        let tag = format!("oi-test/deliver-{pid}-{label}-{name}:1");
        let image = build_image(&tag, &format!("hello from {name}"));
        run(docker()
            .args(["save", "-o"])
            .arg(bundle.join(format!("{name}.tar")))
            .arg(&image.tag));
        run(docker().args(["rmi", "--no-prune", &image.tag]));
        images.push(image);
    }
    (bundle, images)
}

#[test]
fn every_host_gets_every_image_and_a_rerun_sends_no_image_bytes() {
    let (Some(importer), Some(site)) = (
        env_path("OI_NODE_BIN", "the static node importer"),
        Site::start(1, 3),
    ) else {
        return;
    };
    let (bundle, images) = bundle(&site.dir);
    first_run_imports_everywhere(&site, &bundle, &importer, &images);
    second_run_sends_no_image_bytes(&site, &bundle, &importer);
    let d = daemons();
    for image in &images {
        let _lock = d.docker_lock();
        let _ = docker().args(["rmi", "--no-prune", &image.tag]).output();
    }
    let _ = d
        .ctr(&site.namespace)
        .args(["images", "rm"])
        .args(images.iter().map(|i| i.reference.clone()))
        .output();
    unknown_key_and_down_host_named_the_others_served(&site, &bundle, &importer);
}

/// Three hosts, two at a time: every image in every runtime, and it runs there.
fn first_run_imports_everywhere(site: &Site, bundle: &Path, importer: &Path, images: &[TestImage]) {
    let (out, report) = site.deliver(bundle, importer, &[0, 1, 2], "");
    let text = log(&out);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    for h in &site.hosts {
        assert!(text.contains(&format!("root@{}: done", h.addr)), "{text}");
    }
    assert!(
        text.contains("summary: 3 hosts, 3 done, 0 FAILED"),
        "{text}"
    );
    for host in report["hosts"].as_array().unwrap() {
        assert_eq!(host["ok"], true, "{host}");
        assert_eq!(host["importer_sent"], true, "{host}");
        assert_eq!(host["units_sent"], 2, "{host}");
        assert_eq!(host["imported"], 2, "{host}\n{text}");
    }
    let d = daemons();
    for image in images {
        run(docker().args(["image", "inspect", &image.tag]));
        let listed = stdout_of(d.ctr(&site.namespace).args(["images", "ls", "-q"]));
        assert!(listed.contains(&image.reference), "{listed}\n{text}");
        let listed =
            stdout_of(
                site.podman_cli()
                    .args(["images", "--format", "{{.Repository}}:{{.Tag}}"]),
            );
        let short = image.reference.trim_start_matches("docker.io/");
        assert!(listed.contains(short), "{listed}\n{text}");
    }
    // A container started from the first image on each host's runtime.
    let a = &images[0];
    let said = stdout_of(docker().args(["run", "--rm", "--network", "none", &a.tag]));
    assert_eq!(said.trim(), "hello from a");
    let id = format!("oi-deliver-run-{}", std::process::id());
    let said = stdout_of(
        d.ctr(&site.namespace)
            .args(["run", "--rm", &a.reference, &id]),
    );
    assert_eq!(said.trim(), "hello from a");
    let ran = site
        .podman_cli()
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
        ])
        .args(["--ulimit", "nproc=1024:1024", &a.reference])
        .output()
        .unwrap();
    if ran.status.success() {
        assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "hello from a");
    } else {
        // As tests/it/podman.rs: runc may be refused in this sandbox; the image is listed.
        eprintln!("podman run refused here: {}", log(&ran));
    }
}

/// Nothing lacking: no image byte crosses, in the report and on each veth.
fn second_run_sends_no_image_bytes(site: &Site, bundle: &Path, importer: &Path) {
    let before: Vec<u64> = site.hosts.iter().map(Host::sent).collect();
    let (again, report) = site.deliver(bundle, importer, &[0, 1, 2], "");
    let text = log(&again);
    assert_eq!(again.status.code(), Some(0), "{text}");
    for (i, host) in report["hosts"].as_array().unwrap().iter().enumerate() {
        assert_eq!(host["bytes_sent"], 0, "{host}\n{text}");
        assert_eq!(host["importer_sent"], false, "{host}");
        assert_eq!(host["units_skipped"], 2, "{host}");
        let on_wire = site.hosts[i].sent() - before[i];
        eprintln!("second run: {on_wire} bytes on the veth to host {}", i + 1);
        // The SSH handshakes, the probe, present's question: far below one image.
        assert!(
            on_wire < 64 * 1024,
            "{on_wire} bytes to host {}\n{text}",
            i + 1
        );
    }
}

/// An unknown host key and a host whose sshd does not run: both named, the others served.
fn unknown_key_and_down_host_named_the_others_served(site: &Site, bundle: &Path, importer: &Path) {
    let down = format!(
        "root@{}:2222 runtime=docker dir={}/h4\n",
        site.hosts[1].addr,
        site.dir.display()
    );
    let (out, report) = site.deliver(bundle, importer, &[1, 2], &down);
    let text = log(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let first = &site.hosts[0].addr;
    assert!(
        text.contains(&format!("{first}: its host key is not in known_hosts")),
        "{text}"
    );
    assert!(
        text.contains(&format!("ssh-keyscan {first} >> ~/.ssh/known_hosts")),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
    let ok: Vec<bool> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ok"] == true)
        .collect();
    assert_eq!(ok, vec![false, true, true, false], "{text}");
    assert!(
        text.contains("summary: 4 hosts, 2 done, 2 FAILED"),
        "{text}"
    );

    // --tolerant: the same failures, exit 0; a JSON log, each host's line carrying its name.
    let args = ["--tolerant", "--log-format", "json"];
    let child = site.deliver_with(bundle, importer, &[1, 2], &down, &args);
    let (out, _) = site.finished(child.wait_with_output().unwrap());
    let text = log(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{text}")))
        .collect();
    let refused = format!("root@{first}");
    assert!(
        lines.iter().any(|l| l["node"] == refused.as_str()
            && l["message"].as_str().is_some_and(|m| m.contains("FAILED"))),
        "{text}"
    );
}

/// The link to a host cut mid-transfer (its veth down for 5 s): ssh notices, the stream is
/// tried again, and what fully arrived before the cut is not sent again.
#[test]
fn a_link_cut_mid_transfer_completes_on_retry_without_resending_what_arrived() {
    let (Some(importer), Some(site)) = (
        env_path("OI_NODE_BIN", "the static node importer"),
        Site::start(11, 1),
    ) else {
        return;
    };
    let bundle = site.dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let pid = std::process::id();
    let names: Vec<String> = (1..=4)
        .map(|n| format!("docker.io/oi-test/deliver-cut-{pid}-{n}:1"))
        .collect();
    for (n, name) in names.iter().enumerate() {
        big_docker_archive(&bundle.join(format!("cut-{n}.tar")), name, 8);
    }
    let total: u64 = (0..4)
        .map(|n| {
            std::fs::metadata(bundle.join(format!("cut-{n}.tar")))
                .unwrap()
                .len()
        })
        .sum();
    let veth = &site.hosts[0].veth;
    // 40 Mbit/s towards the host: the units take seconds, so the cut lands between them.
    run(Command::new("tc")
        .args(["qdisc", "add", "dev", veth, "root", "tbf"])
        .args(["rate", "40mbit", "burst", "32kbit", "latency", "400ms"]));
    let before = site.hosts[0].sent();
    let keepalive = ["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"];
    let child = site.deliver_with(&bundle, &importer, &[0], "", &keepalive);
    wait_for_a_whole_unit(&site.dir.join("h1"));
    run(Command::new("ip").args(["link", "set", veth, "down"]));
    std::thread::sleep(Duration::from_secs(5));
    run(Command::new("ip").args(["link", "set", veth, "up"]));
    let (out, report) = site.finished(child.wait_with_output().unwrap());
    let text = log(&out);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    let host = &report["hosts"][0];
    assert!(host["tries"].as_u64().unwrap() >= 2, "{host}\n{text}");
    assert!(
        host["files_resumed"].as_u64().unwrap() >= 1,
        "{host}\n{text}"
    );
    assert_eq!(host["imported"], 4, "{host}\n{text}");
    let importer_size = std::fs::metadata(&importer).unwrap().len();
    let unit = total / 4;
    let sent = host["bytes_sent"].as_u64().unwrap();
    // Each unit whole once, at most one cut short: never a unit that had arrived again.
    assert!(sent < importer_size + total + unit, "{sent}\n{text}");
    let on_wire = site.hosts[0].sent() - before;
    eprintln!("link cut: {sent} bytes in the report, {on_wire} on the veth, {total} of units");
    assert!(
        on_wire < importer_size + total + unit + (1 << 20),
        "{on_wire}\n{text}"
    );
    let _lock = daemons().docker_lock();
    for name in &names {
        run(docker().args(["image", "inspect", name]));
        let _ = docker().args(["rmi", "--no-prune", name]).output();
    }
}

/// Until a whole unit is in the host's staging directory (a file not hidden).
fn wait_for_a_whole_unit(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let whole = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with("staging-")
                    && std::fs::read_dir(e.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|f| {
                            let n = f.file_name().to_string_lossy().into_owned();
                            n.ends_with(".tar") && !n.starts_with('.')
                        })
            });
        if whole {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no unit arrived in {} within 120 s", dir.display());
}

/// An upgrade where one of four images gained a 50 MiB layer: every host is sent that image
/// alone, and the containerd host at most 1.05 times the layer.
#[test]
fn an_upgrade_sends_the_changed_image_only() {
    let (Some(importer), Some(site)) = (
        env_path("OI_NODE_BIN", "the static node importer"),
        Site::start(21, 3),
    ) else {
        return;
    };
    let (bundle, images) = bundle_of(&site.dir, "upgrade", &["a", "b", "c", "d"]);
    let (out, _) = site.deliver(&bundle, &importer, &[0, 1, 2], "");
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    let layer: u64 = 50 << 20;
    grow(&images[3], &bundle.join("d.tar"), layer, &site.dir);
    let before: Vec<u64> = site.hosts.iter().map(Host::sent).collect();
    let (out, report) = site.deliver(&bundle, &importer, &[0, 1, 2], "");
    let text = log(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for (i, host) in report["hosts"].as_array().unwrap().iter().enumerate() {
        assert_eq!(host["units_sent"], 1, "{host}\n{text}");
        assert_eq!(host["units_skipped"], 3, "{host}");
        assert_eq!(host["imported"], 1, "{host}\n{text}");
        let sent = host["bytes_sent"].as_u64().unwrap();
        let on_wire = site.hosts[i].sent() - before[i];
        eprintln!(
            "upgrade: host {} sent {sent} bytes ({:.3} of the layer), {on_wire} on the veth",
            i + 1,
            sent as f64 / layer as f64
        );
    }
    let containerd = report["hosts"][1]["bytes_sent"].as_u64().unwrap();
    assert!(
        containerd as f64 <= 1.05 * layer as f64,
        "{containerd} bytes for a {layer}-byte layer\n{text}"
    );
    let d = daemons();
    let listed = stdout_of(d.ctr(&site.namespace).args(["images", "ls"]));
    assert!(listed.contains(&images[3].reference), "{listed}");
    let _lock = d.docker_lock();
    for image in &images {
        let _ = docker().args(["rmi", "--no-prune", &image.tag]).output();
    }
    let _ = d
        .ctr(&site.namespace)
        .args(["images", "rm"])
        .args(images.iter().map(|i| i.reference.clone()))
        .output();
}

/// `image` (in dockerd) rebuilt under the same name with a layer of `size` bytes that do not
/// compress (xorshift from `seed`) on top.
fn build_grown(image: &TestImage, size: u64, seed: u64, dir: &Path) {
    let ctx = dir.join("grow");
    std::fs::create_dir_all(&ctx).unwrap();
    let mut data = Vec::with_capacity(size as usize);
    let mut x = seed;
    while (data.len() as u64) < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size as usize);
    std::fs::write(ctx.join("big"), data).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nCOPY big /big\n", image.tag),
    )
    .unwrap();
    run(docker().args(["build", "-q", "-t", &image.tag]).arg(&ctx));
}

/// `image` given a layer of `size` random bytes under the same name, saved to `archive`.
fn grow(image: &TestImage, archive: &Path, size: u64, dir: &Path) {
    let _lock = daemons().docker_lock();
    run(docker().args(["load", "-q", "-i"]).arg(archive));
    build_grown(image, size, 0x9e37_79b9_7f4a_7c15, dir);
    run(docker().args(["save", "-o"]).arg(archive).arg(&image.tag));
    run(docker().args(["rmi", "--no-prune", &image.tag]));
}

/// A layout bundle (the default `export` format) to a Docker host: its images are named by tag
/// and by digest, and Docker's store lists no digest names; a second run finds every image
/// by its tag and sends none.
#[test]
fn a_layout_delivered_to_a_docker_host_is_not_sent_again() {
    let (Some(importer), Some(site)) = (
        env_path("OI_NODE_BIN", "the static node importer"),
        Site::start(31, 1),
    ) else {
        return;
    };
    let refs = pushed_refs("deliver-layout", &["a", "b"], "hello from");
    let bundle = site.dir.join("layout");
    let mut export = registry_export_as(&bundle, &bare_path(&[]), "layout");
    let (code, _, exported) = outcome(export.arg("--no-importer-binary").args(&refs));
    assert_eq!(code, 0, "{exported}");
    let (out, report) = site.deliver(&bundle, &importer, &[0], "");
    let text = log(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(report["hosts"][0]["units_sent"], 2, "{report}\n{text}");
    assert_eq!(report["hosts"][0]["imported"], 2, "{report}\n{text}");
    let (out, report) = site.deliver(&bundle, &importer, &[0], "");
    let text = log(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let host = &report["hosts"][0];
    assert_eq!(host["units_sent"], 0, "{host}\n{text}");
    assert_eq!(host["units_skipped"], 2, "{host}\n{text}");
    assert_eq!(host["bytes_sent"], 0, "{host}\n{text}");
    let _lock = daemons().docker_lock();
    for r in &refs {
        run(docker().args(["image", "inspect", r]));
        let _ = docker().args(["rmi", "--no-prune", r]).output();
    }
}

/// A layout bundle (the default `export` format) delivered, then re-exported after one of four
/// images gained a 50 MiB layer. The first delivery sends each blob once: the busybox layer
/// the four images share crosses once per host at most, not once per image. The upgrade sends
/// each host the new layer and the image's documents alone, at most 1.05 times the layer: the
/// containerd host holds the image's other layers in its content store (by digest), the Docker
/// host in its layer store (by chain ID, and its load never opens a layer it holds). Both
/// are named in the staged layout as carried, and checked again by the host's import.
#[test]
fn a_layout_upgrade_sends_each_host_the_new_layer_alone() {
    let (Some(importer), Some(site)) = (
        env_path("OI_NODE_BIN", "the static node importer"),
        Site::start(41, 2),
    ) else {
        return;
    };
    let pid = std::process::id();
    let images: Vec<TestImage> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| pushed_image(&format!("deliver-up-{pid}-{n}"), &format!("hello from {n}")))
        .collect();
    let refs: Vec<String> = images.iter().map(|i| i.tag.clone()).collect();
    let bundle = site.dir.join("layout");
    let export = || {
        let mut export = registry_export_as(&bundle, &bare_path(&[]), "layout");
        let (code, _, exported) = outcome(export.arg("--no-importer-binary").args(&refs));
        assert_eq!(code, 0, "{exported}");
    };
    export();
    let blobs: u64 = std::fs::read_dir(bundle.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let (out, report) = site.deliver(&bundle, &importer, &[0, 1], "");
    let text = log(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let importer_size = std::fs::metadata(&importer).unwrap().len();
    for host in report["hosts"].as_array().unwrap() {
        assert_eq!(host["units_sent"], 4, "{host}\n{text}");
        assert_eq!(host["imported"], 4, "{host}\n{text}");
        let sent = host["bytes_sent"].as_u64().unwrap() - importer_size;
        // Every blob once, in a tar stream (a 512-byte header and padding per file).
        assert!(
            sent <= blobs + 64 * 1024,
            "{sent} sent, the layout's blobs are {blobs}\n{text}"
        );
    }

    let layer: u64 = 50 << 20;
    grow_pushed(&images[3], layer, &site.dir);
    export();
    let (out, report) = site.deliver(&bundle, &importer, &[0, 1], "");
    let text = log(&out);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    for host in report["hosts"].as_array().unwrap() {
        assert_eq!(host["units_sent"], 1, "{host}\n{text}");
        assert_eq!(host["units_skipped"], 3, "{host}\n{text}");
        assert_eq!(host["imported"], 1, "{host}\n{text}");
    }
    for (host, runtime) in report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["Docker", "containerd"])
    {
        assert!(host["layers_held"].as_u64().unwrap() >= 2, "{host}\n{text}");
        let sent = host["bytes_sent"].as_u64().unwrap();
        eprintln!(
            "layout upgrade: the {runtime} host was sent {sent} bytes, {:.4} of the layer",
            sent as f64 / layer as f64
        );
        assert!(
            sent as f64 <= 1.05 * layer as f64,
            "{runtime}: {sent} bytes for a {layer}-byte layer\n{text}"
        );
    }
    let d = daemons();
    let listed = stdout_of(d.ctr(&site.namespace).args(["images", "ls", "-q"]));
    assert!(listed.contains(&images[3].tag), "{listed}");
    let _lock = d.docker_lock();
    // Docker loaded the changed image without the layers it held, and it runs.
    let said = stdout_of(docker().args(["run", "--rm", "--network", "none", &images[3].tag]));
    assert!(said.contains("hello from d"), "{said}");
    for r in &refs {
        run(docker().args(["image", "inspect", r]));
        let _ = docker().args(["rmi", "--no-prune", r]).output();
    }
    let _ = d
        .ctr(&site.namespace)
        .args(["images", "rm"])
        .args(&refs)
        .output();
}

/// The pushed `image` given a layer of `size` random bytes under the same name, pushed again.
fn grow_pushed(image: &TestImage, size: u64, dir: &Path) {
    let _lock = daemons().docker_lock();
    run(docker().args(["pull", "-q", &image.tag]));
    build_grown(image, size, 0x2545_f491_4f6c_dd1d, dir);
    run(docker().args(["push", "-q", &image.tag]));
    run(docker().args(["rmi", "--no-prune", &image.tag]));
}

/// `deliver --spec`: one file names the images per platform and the host; the run exports the
/// images into the spec's images path (a layout for the platform) and delivers them. The image
/// arrives on the Docker host; a second run exports nothing new and sends no byte.
#[test]
fn a_spec_exports_then_delivers_and_a_second_run_sends_nothing() {
    let (Some(importer), Some(site)) = (
        env_path("OI_NODE_BIN", "the static node importer"),
        Site::start(51, 1),
    ) else {
        return;
    };
    let refs = pushed_refs("deliver-spec", &["a", "b"], "spec image");
    let spec = site.dir.join("site.yaml");
    std::fs::write(
        &spec,
        format!(
            "imagesPath: edge-images\nimages:\n  linux/amd64: [{}]\ntransferPool: 1\n\
             hosts:\n  - ssh: root@{}\n    runtime: docker\n    socket: {}\n    dir: {}/h1\n",
            refs.join(", "),
            site.hosts[0].addr,
            daemons().docker_host,
            site.dir.display()
        ),
    )
    .unwrap();
    let home = temp_dir("spec-home");
    let (out, report) = deliver_spec(&site, &spec, &importer, &home);
    let text = log(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        site.dir
            .join("edge-images/linux-amd64/oci-layout")
            .is_file(),
        "{text}"
    );
    assert_eq!(report["hosts"][0]["units_sent"], 2, "{report}\n{text}");
    assert_eq!(report["hosts"][0]["imported"], 2, "{report}\n{text}");
    let (out, report) = deliver_spec(&site, &spec, &importer, &home);
    let text = log(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("nothing new to export"), "{text}");
    let host = &report["hosts"][0];
    assert_eq!(host["units_sent"], 0, "{host}\n{text}");
    assert_eq!(host["bytes_sent"], 0, "{host}\n{text}");
    let _lock = daemons().docker_lock();
    for r in &refs {
        run(docker().args(["image", "inspect", r]));
        let _ = docker().args(["rmi", "--no-prune", r]).output();
    }
}

/// `deliver --spec SPEC` with the test's ssh client settings, its blob cache under `home`.
fn deliver_spec(
    site: &Site,
    spec: &Path,
    importer: &Path,
    home: &Path,
) -> (Output, serde_json::Value) {
    let report = site.dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let out = offline_images()
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("DOCKER_HOST")
        .env_remove("IMAGES_PATH")
        .arg("deliver")
        .arg("--spec")
        .arg(spec)
        .args(["--ssh-config", "/dev/null", "-i"])
        .arg(&site.client)
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            site.known_hosts(&[0]).display()
        ))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "--importer-binary"])
        .arg(importer)
        .arg("--json-report")
        .arg(&report)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    site.finished(out)
}

/// Images `oi-export/LABEL-PID-NAME:1` pushed to the rig's registry, each printing
/// `MESSAGE NAME`: their references.
fn pushed_refs(label: &str, names: &[&str], message: &str) -> Vec<String> {
    let pid = std::process::id();
    names
        .iter()
        .map(|n| pushed_image(&format!("{label}-{pid}-{n}"), &format!("{message} {n}")).tag)
        .collect()
}
