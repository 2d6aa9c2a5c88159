//! Registries of a test's own (TLS, htpasswd, token auth), the registry engine's command, and a
//! proxy that misbehaves.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::daemons::daemons;
use super::fixtures::TestImage;
use super::private::wait_until_up;
use super::run::{closed_port, offline_images, run, skopeo, stdout_of, temp_dir};

/// How a private registry authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    /// htpasswd (bcrypt, from `htpasswd -B`), Basic auth.
    Htpasswd,
    /// Bearer tokens from tests/registry/token_server.py.
    Token,
}

/// A docker-registry started by a test (and its token server), stopped on drop.
pub struct PrivateRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: PathBuf,
    /// The CA that signed its certificate, when it speaks TLS.
    pub ca: Option<PathBuf>,
    pub user: &'static str,
    pub password: &'static str,
    children: Vec<std::process::Child>,
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl in `dir`.
/// Returns (ca.crt, server.crt, server.key).
pub fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=offline-images test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.crt")));
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

fn free_port() -> u16 {
    closed_port()
}

/// The `auth` section of a registry's config for `auth`, added to `config`, with the files it
/// names written in `dir`; the token server it needs, started.
fn auth_config(
    config: &mut String,
    dir: &Path,
    auth: RegistryAuth,
    user: &str,
    password: &str,
) -> Option<std::process::Child> {
    match auth {
        RegistryAuth::Anonymous => None,
        RegistryAuth::Htpasswd => {
            let out = stdout_of(Command::new("htpasswd").args(["-Bbn", user, password]));
            std::fs::write(dir.join("htpasswd"), out).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: offline-images-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
            None
        }
        RegistryAuth::Token => {
            let (realm, child) = start_token_server(dir, user, password);
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: oi-registry\n\
                 \x20   issuer: oi-token-issuer\n    rootcertbundle: {}\n",
                dir.join("token.crt").display()
            ));
            Some(child)
        }
    }
}

impl PrivateRegistry {
    pub fn start(label: &str, tls: bool, auth: RegistryAuth) -> PrivateRegistry {
        let dir = temp_dir(label);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let (user, password) = ("oi-user", "oi-secret-pw");
        let mut children = Vec::new();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             \x20 delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        let mut ca = None;
        if tls {
            let (ca_crt, crt, key) = make_tls(&dir);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                crt.display(),
                key.display()
            ));
            ca = Some(ca_crt);
        }
        children.extend(auth_config(&mut config, &dir, auth, user, password));
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        children.push(
            Command::new("docker-registry")
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry is installed"),
        );
        let reg = PrivateRegistry {
            addr,
            dir,
            ca,
            user,
            password,
            children,
        };
        wait_until_up("registry", 30, &reg.dir.join("registry.log"), || {
            let mut c = Command::new("openssl");
            c.args(["s_client", "-connect"]).arg(&reg.addr);
            if !tls {
                // A plain TCP connect is enough: python is always there.
                c = Command::new("python3");
                c.args([
                    "-c",
                    &format!("import socket; socket.create_connection(('127.0.0.1', {port}))"),
                ]);
            }
            c
        });
        reg
    }

    /// A directory holding only `ca.crt`, as skopeo's `--dest-cert-dir` wants it (a `.key`
    /// there would be taken for a client key).
    pub fn cert_dir(&self) -> Option<PathBuf> {
        let ca = self.ca.as_ref()?;
        let dir = self.dir.join("skopeo-certs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
        Some(dir)
    }

    /// Copy `image` (a tag in the test dockerd) into this registry as `path:tag`, with skopeo
    /// and this registry's credentials and CA. Returns the reference in this registry.
    pub fn push(&self, image: &TestImage, path_tag: &str) -> String {
        let dest = format!("{}/{path_tag}", self.addr);
        let mut c = skopeo();
        c.args([
            "copy",
            "--quiet",
            "--src-daemon-host",
            &daemons().docker_host,
        ]);
        match self.cert_dir() {
            Some(d) => c.arg("--dest-cert-dir").arg(d),
            None => c.arg("--dest-tls-verify=false"),
        };
        c.arg(format!("--dest-creds={}:{}", self.user, self.password))
            .arg(format!("docker-daemon:{}", image.tag))
            .arg(format!("docker://{dest}"));
        run(&mut c);
        dest
    }

    /// The blob file of `digest` in this registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        blob_file(&self.dir.join("data"), digest)
    }
}

/// The data file of a blob in a docker-registry's filesystem storage rooted at `root`.
pub fn blob_file(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    root.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

fn start_token_server(dir: &Path, user: &str, password: &str) -> (String, std::process::Child) {
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=offline-images test token issuer"])
        .arg("-keyout")
        .arg(dir.join("token.key"))
        .arg("-out")
        .arg(dir.join("token.crt")));
    let port_file = dir.join("token.port");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/token_server.py");
    let log = std::fs::File::create(dir.join("token.log")).unwrap();
    let child = Command::new("python3")
        .arg(script)
        .arg(&port_file)
        .arg(dir.join("token.key"))
        .arg(dir.join("token.crt"))
        .args(["oi-token-issuer", "oi-registry", user, password])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if port_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let port = std::fs::read_to_string(&port_file).expect("the token server did not start");
    (format!("http://127.0.0.1:{}/token", port.trim()), child)
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A docker config directory whose config.json is `json`, for `DOCKER_CONFIG`.
pub fn docker_config(json: &serde_json::Value) -> PathBuf {
    let dir = temp_dir("docker-config");
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    dir
}

/// A directory with only the programs `export` may need from PATH for the registry engine:
/// none of docker, podman or skopeo. `extra` are (name, script) pairs written into it.
pub fn bare_path(extra: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("bare-path");
    for (name, script) in extra {
        let p = dir.join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// `offline-images export --engine registry --format archives` with PATH holding only `path`
/// (no docker, podman or skopeo) and a private, empty blob cache unless the caller sets one:
/// the tests of the bundle of archives.
pub fn registry_export(output: &Path, path: &Path) -> Command {
    registry_export_as(output, path, "archives")
}

/// [`registry_export`] writing `format` (`archives` or `layout`).
pub fn registry_export_as(output: &Path, path: &Path, format: &str) -> Command {
    let mut c = offline_images();
    c.env("PATH", path)
        .env("HOME", temp_dir("home"))
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("DOCKER_HOST")
        .args([
            "export", "--engine", "registry", "--format", format, "--output",
        ])
        .arg(output);
    c
}

/// An HTTP proxy on 127.0.0.1 in front of a plain-HTTP registry that misbehaves a set number
/// of times: the first `fail_manifests` manifest requests get `503`, and the first
/// `cut_blobs` blob downloads asked without `Range` are cut after `cut_after` body bytes.
/// Every request line (with its Range header, if any) is logged.
pub struct FlakyProxy {
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FlakyProxy {
    pub fn start(
        upstream: &str,
        fail_manifests: usize,
        cut_blobs: usize,
        cut_after: usize,
    ) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (fails, cuts) = (
            Arc::new(AtomicUsize::new(fail_manifests)),
            Arc::new(AtomicUsize::new(cut_blobs)),
        );
        let (upstream, log2, stop2) = (upstream.to_string(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let (upstream, log, fails, cuts) =
                    (upstream.clone(), log2.clone(), fails.clone(), cuts.clone());
                std::thread::spawn(move || {
                    flaky_connection(client, &upstream, &log, &fails, &cuts, cut_after)
                });
            }
        });
        FlakyProxy { addr, log, stop }
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// The head of the request `client` sends (up to its blank line), read a byte at a time so
/// that nothing of its body is taken; `None` when the client closed first, or opened with a
/// TLS handshake (answered as a plain HTTP server answers one, as the registry behind does).
pub fn request_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut b).unwrap_or(0) == 0 {
            return None;
        }
        if head.is_empty() && b[0] == 0x16 {
            let _ = client.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
            return None;
        }
        head.push(b[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// One connection to a [`FlakyProxy`]: the request passed to `upstream` and its answer back,
/// unless a manifest request is to fail (`fails` left) or a blob download to be cut (`cuts`
/// left, after `cut_after` body bytes). The request line is logged.
fn flaky_connection(
    mut client: TcpStream,
    upstream: &str,
    log: &Mutex<Vec<String>>,
    fails: &AtomicUsize,
    cuts: &AtomicUsize,
    cut_after: usize,
) {
    client.set_nonblocking(false).unwrap();
    // The request head (GET and HEAD requests only: no body).
    let Some(text) = request_head(&mut client) else {
        return;
    };
    let line = text.lines().next().unwrap_or("").to_string();
    let range = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))
        .map(str::to_string);
    log.lock()
        .unwrap()
        .push(format!("{line} {}", range.clone().unwrap_or_default()));
    let take = |n: &AtomicUsize| {
        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
    };
    if line.contains("/manifests/") && take(fails) {
        let _ = client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let blob = line.contains("/blobs/sha256:") && range.is_none();
    // One request per connection: the client opens a new one for the next.
    let head = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    server.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = server.read_to_end(&mut answer);
    // Only a body longer than the cut is cut (a small config passes whole).
    let body_at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    if blob && answer.len() > body_at + cut_after && take(cuts) {
        answer.truncate(body_at + cut_after);
    }
    let _ = client.write_all(&answer);
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
