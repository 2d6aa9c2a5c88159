//! The shared test containerd: namespaces, the client under test, its images and events, and a
//! proxy to take its socket away.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::daemons::daemons;
use super::run::{ctr, offline_images, run, stdout_of, temp_dir};

/// A containerd namespace of its own for one test, so tests can run in parallel.
pub fn unique_namespace(label: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "oi-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The containerd client the containerd tests run with: `OI_CONTAINERD_CLIENT` (`native`,
/// the default, or `ctr`), so one suite covers both backends.
pub fn containerd_client() -> &'static str {
    static C: OnceLock<String> = OnceLock::new();
    C.get_or_init(|| {
        let c = std::env::var("OI_CONTAINERD_CLIENT").unwrap_or_else(|_| "native".into());
        assert!(
            c == "native" || c == "ctr",
            "OI_CONTAINERD_CLIENT={c}: native or ctr"
        );
        c
    })
}

/// A PATH with no program on it: the native client must need none (no `ctr`).
pub fn empty_path() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| temp_dir("empty-path"))
}

/// Whether a line of `ctr content active` is an upload of an importer (either client).
pub fn is_import_ingest(line: &str) -> bool {
    line.starts_with("tar-") || line.starts_with("offline-images-")
}

/// `offline-images <command> --images-path DIR` against the test containerd in `ns`, with no
/// runtime settings inherited from the environment, through [`containerd_client`].
pub fn against_containerd(command: &str, images: &Path, ns: &str) -> Command {
    let mut c = offline_images();
    c.env("CONTAINERD_CLIENT", containerd_client());
    if containerd_client() == "native" {
        c.env("PATH", empty_path());
    }
    // The test daemons' roots are on the machine's disk, however full it is: the disk
    // preflight refuses only what would overfill it (its own tests use a tmpfs and the
    // default limit).
    c.env("DISK_MAX_USED", "100");
    c.arg(command)
        .arg("--images-path")
        .arg(images)
        .arg("--containerd-address")
        .arg(&daemons().containerd_sock)
        .arg("--namespace")
        .arg(ns);
    for v in [
        "IMAGE_RUNTIME",
        "CONTAINERD_ADDRESS",
        "CONTAINERD_NAMESPACE",
        "DOCKER_HOST",
        "HOST_ROOT",
        "IMAGES_PATH",
        "LOG_FORMAT",
        "IMPORT_STRICT",
    ] {
        c.env_remove(v);
    }
    c
}

/// Image names in a containerd namespace, with their target digests.
pub fn ctr_images(ns: &str) -> Vec<(String, String)> {
    stdout_of(ctr(ns).args(["images", "ls"]))
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect()
}

/// The config digest containerd holds for `name` (the linux/amd64 one, for an index), read
/// from the stored manifest with `ctr content get`.
pub fn ctr_config_digest(ns: &str, name: &str) -> Option<String> {
    let (_, target) = ctr_images(ns).into_iter().find(|(n, _)| n == name)?;
    let mut digest = target;
    for _ in 0..3 {
        let doc: serde_json::Value =
            serde_json::from_str(&stdout_of(ctr(ns).args(["content", "get", &digest]))).unwrap();
        if let Some(config) = doc["config"]["digest"].as_str() {
            return Some(config.to_string());
        }
        digest = doc["manifests"]
            .as_array()?
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")?["digest"]
            .as_str()?
            .to_string();
    }
    None
}

/// Labels of `name` in `ns`, as `ctr images ls` prints them (`k=v,k=v`).
pub fn ctr_labels(ns: &str, name: &str) -> String {
    stdout_of(ctr(ns).args(["images", "ls"]))
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last().map(str::to_string))
        .unwrap_or_default()
}

/// `ctr events` running in the background, its output collected in a file.
pub struct EventWatch {
    child: std::process::Child,
    file: PathBuf,
}

impl EventWatch {
    /// Start watching, and return once the watcher is seen to receive events.
    pub fn start(ns: &str, sentinel_image: &str) -> EventWatch {
        let file = temp_dir("events").join("events.txt");
        let child = Command::new("ctr")
            .arg("-a")
            .arg(&daemons().containerd_sock)
            .arg("events")
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let w = EventWatch { child, file };
        w.mark(ns, sentinel_image, "start");
        w
    }

    /// Change a label on `image` and wait until the watcher has seen it: everything the
    /// daemon published before is in the file by then.
    pub fn mark(&self, ns: &str, image: &str, value: &str) {
        let label = format!("oi-test.mark={value}");
        // Until `ctr events` has subscribed, events are not delivered to it: label again
        // until the mark shows.
        let seen = format!("\"oi-test.mark\":\"{value}\"");
        for _ in 0..30 {
            run(ctr(ns).args(["images", "label", image, &label]));
            for _ in 0..10 {
                if self.text().contains(&seen) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        panic!("ctr events never showed the mark {value}:\n{}", self.text());
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }

    /// Image and content events in `ns` between the marks `from` and `to`, marks excluded.
    pub fn image_events_between(&self, ns: &str, from: &str, to: &str) -> Vec<String> {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        let pos = |v: &str| {
            lines
                .iter()
                .position(|l| l.contains(&format!("\"oi-test.mark\":\"{v}\"")))
                .unwrap_or_else(|| panic!("mark {v} not in events:\n{text}"))
        };
        let (a, b) = (pos(from), pos(to));
        lines[a + 1..b]
            .iter()
            .filter(|l| {
                l.contains(&format!(" {ns} /images/")) || l.contains(&format!(" {ns} /content/"))
            })
            .map(|l| l.to_string())
            .collect()
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unix-socket proxy in front of the test containerd, to take the "runtime" away and bring
/// it back while an importer runs.
pub struct SocketProxy {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SocketProxy {
    pub fn start(path: &Path) -> SocketProxy {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let upstream = daemons().containerd_sock.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = UnixStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        SocketProxy {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        }
    }

    /// Stop accepting and remove the socket (connections already made carry on).
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop();
    }
}
