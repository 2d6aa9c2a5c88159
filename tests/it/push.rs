//! `push` against real registries: a docker-registry over TLS (a CA made here) with htpasswd,
//! and one behind the token server of the export tests, reached through a proxy of this file
//! that logs every request and can cut an upload. The bundles are layouts `export` wrote from
//! the rig's registry; what the site registry holds is read back over HTTP, from its storage,
//! and pulled by digest with containerd's own `ctr`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::harness::*;

/// A layout bundle of `refs`, exported from the rig's registry.
fn layout_bundle(label: &str, refs: &[String]) -> PathBuf {
    let out = temp_dir(label).join("images");
    let mut c = registry_export_as(&out, &bare_path(&[]), "layout");
    c.arg("--no-importer-binary").args(refs);
    let (code, _, log) = outcome(&mut c);
    assert_eq!(code, 0, "{log}");
    out
}

/// The bytes of the bundle's blob `digest`.
fn bundle_blob(bundle: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(bundle.join("blobs/sha256").join(hex)).unwrap()
}

/// `offline-images push` of `bundle` to `to`, with a docker config of its own.
pub(crate) fn push(bundle: &Path, to: &str, config: &Path) -> Command {
    let mut c = offline_images();
    c.env("DOCKER_CONFIG", config)
        .env_remove("SSL_CERT_FILE")
        .args(["push", "--images-path"])
        .arg(bundle)
        .args(["--to", to]);
    c
}

/// GET `url` with Basic auth, trusting `ca`: (status, Docker-Content-Digest, body). Python's
/// urllib, an HTTP client that is not ours.
fn get(url: &str, ca: &Path, user: &str, password: &str, accept: &str) -> (u16, String, Vec<u8>) {
    let script = r#"
import base64, ssl, sys, urllib.request, urllib.error
url, ca, user, pw, accept = sys.argv[1:6]
req = urllib.request.Request(url, headers={
    "Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode(),
    "Accept": accept})
try:
    r = urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca))
except urllib.error.HTTPError as e:
    r = e
sys.stderr.write(f"{r.status} {r.headers.get('Docker-Content-Digest', '')}\n")
sys.stdout.buffer.write(r.read())
"#;
    let out = Command::new("python3")
        .args(["-c", script, url])
        .arg(ca)
        .args([user, password, accept])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let (status, digest) = head.split_once(' ').unwrap_or((&head, ""));
    let status = status.parse().unwrap_or_else(|_| panic!("python: {head}"));
    (status, digest.to_string(), out.stdout)
}

/// Every JSON document and layer of the image `top` names in `bundle`: (manifests, blobs).
fn bundle_graph(bundle: &Path, top: &str) -> (Vec<String>, Vec<String>) {
    let (mut manifests, mut blobs) = (Vec::new(), Vec::new());
    let mut todo = vec![top.to_string()];
    while let Some(d) = todo.pop() {
        let hex = d.strip_prefix("sha256:").unwrap();
        if !bundle.join("blobs/sha256").join(hex).exists() {
            continue; // another platform's manifest, left out at export
        }
        let doc: Value = serde_json::from_slice(&bundle_blob(bundle, &d)).unwrap();
        manifests.push(d);
        for m in doc["manifests"].as_array().into_iter().flatten() {
            todo.push(m["digest"].as_str().unwrap().to_string());
        }
        if let Some(c) = doc["config"]["digest"].as_str() {
            blobs.push(c.to_string());
            for l in doc["layers"].as_array().unwrap() {
                blobs.push(l["digest"].as_str().unwrap().to_string());
            }
        }
    }
    (manifests, blobs)
}

fn docker_config_for(addr: &str, user: &str, password: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    docker_config(&serde_json::json!({"auths": {addr: {"auth": auth}}}))
}

/// The top digest `index.json` of `bundle` gives `reference`.
fn top_of(bundle: &Path, reference: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["io.containerd.image.name"] == reference)
        .unwrap_or_else(|| panic!("{reference} not in {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every manifest (by tag and by digest), config and layer of `reference`'s image in the
/// TLS registry `reg`, read back over HTTP, is the bundle's bytes.
fn assert_read_back(reg: &PrivateRegistry, bundle: &Path, repo: &str, reference: &str) {
    let ca = reg.ca.as_ref().unwrap();
    let fetch = |path: &str, accept: &str| {
        let url = format!("https://{}/v2/{repo}/{path}", reg.addr);
        get(&url, ca, reg.user, reg.password, accept)
    };
    let top = top_of(bundle, reference);
    let (manifests, blobs) = bundle_graph(bundle, &top);
    let by_tag = fetch("manifests/1", ACCEPT_ALL);
    assert_eq!((by_tag.0, &by_tag.1), (200, &top), "{repo}:1");
    assert_eq!(
        by_tag.2,
        bundle_blob(bundle, &top),
        "{repo}:1 is not the bundle's bytes"
    );
    for m in &manifests {
        let got = fetch(&format!("manifests/{m}"), ACCEPT_ALL);
        assert_eq!(got.0, 200, "{repo}@{m}");
        assert_eq!(got.2, bundle_blob(bundle, m), "{repo}@{m}");
    }
    for b in &blobs {
        let got = fetch(&format!("blobs/{b}"), "*/*");
        assert_eq!(got.0, 200, "{repo} blob {b}");
        assert!(
            got.2 == bundle_blob(bundle, b),
            "{repo}: blob {b} differs from the bundle's"
        );
    }
}

/// containerd's ctr pulls `pinned` (a digest reference) from the TLS registry `reg`.
fn assert_ctr_pulls(reg: &PrivateRegistry, pinned: &str) {
    let ca = reg.ca.as_ref().unwrap();
    // ctr takes a loopback registry for plain HTTP unless a hosts.toml says otherwise.
    let hosts = temp_dir("push-hosts");
    std::fs::create_dir_all(hosts.join(&reg.addr)).unwrap();
    std::fs::write(
        hosts.join(&reg.addr).join("hosts.toml"),
        format!(
            "server = \"https://{0}\"\n[host.\"https://{0}\"]\n  ca = {1:?}\n  \
             capabilities = [\"pull\", \"resolve\"]\n",
            reg.addr,
            ca.display().to_string()
        ),
    )
    .unwrap();
    let pulled = run(ctr("oi-push-test")
        .args(["images", "pull", "--hosts-dir"])
        .arg(&hosts)
        .args(["--user", &format!("{}:{}", reg.user, reg.password), pinned]));
    assert!(pulled.status.success());
    let listed = stdout_of(ctr("oi-push-test").args(["images", "ls", "-q"]));
    assert!(listed.lines().any(|l| l == pinned), "{listed}");
    run(ctr("oi-push-test").args(["images", "rm", pinned]));
}

#[test]
fn a_bundle_pushed_over_tls_with_htpasswd_keeps_every_digest_and_a_re_push_sends_nothing() {
    let d = daemons();
    let reg = PrivateRegistry::start("push-tls", true, RegistryAuth::Htpasswd);
    let ca = reg.ca.clone().unwrap();
    // Two images of two repositories that share the busybox layer: it is sent once, and
    // mounted into the second repository.
    pushed_image("push-a", "hello from push a");
    pushed_image("push-b", "hello from push b");
    let refs: Vec<String> = ["push-a", "push-b"]
        .iter()
        .map(|n| format!("{}/oi-export/{n}:1", d.registry))
        .collect();
    let bundle = layout_bundle("push-tls-bundle", &refs);
    let config = docker_config_for(&reg.addr, reg.user, reg.password);
    let to = format!("{}/site", reg.addr);
    let mut c = push(&bundle, &to, &config);
    c.arg("--ca-file").arg(&ca).args(["--jobs", "1"]);
    let (code, _, log) = outcome(&mut c);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("1 mounted"),
        "the shared layer was not mounted: {log}"
    );
    let upstream = d.registry.replace(':', "_");
    for (name, reference) in ["push-a", "push-b"].iter().zip(&refs) {
        let repo = format!("site/{upstream}/oi-export/{name}");
        assert_read_back(&reg, &bundle, &repo, reference);
    }
    // The second run asks and sends nothing.
    let mut again = push(&bundle, &to, &config);
    again.arg("--ca-file").arg(&ca);
    let (code, _, log) = outcome(&mut again);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("pushed 0 image(s), 2 already present, 0 failed; 0 blob(s) sent"),
        "{log}"
    );
    // A digest-pinned reference resolves from the site registry by that digest, as
    // containerd pulls it.
    let top = top_of(&bundle, &refs[0]);
    let pinned = format!("{}/site/{upstream}/oi-export/push-a@{top}", reg.addr);
    assert_ctr_pulls(&reg, &pinned);
}

/// A wrong password fails the push before anything is sent (exit 2, naming the registry), and
/// a bundle that names no repository is refused by name.
#[test]
fn a_refused_login_and_a_prefix_that_breaks_the_grammar_are_named() {
    let d = daemons();
    let reg = PrivateRegistry::start("push-refused", true, RegistryAuth::Htpasswd);
    pushed_image("push-refused", "hello from a refused push");
    let bundle = layout_bundle(
        "push-refused-bundle",
        &[format!("{}/oi-export/push-refused:1", d.registry)],
    );
    let config = docker_config_for(&reg.addr, reg.user, "not-the-password");
    let mut c = push(&bundle, &format!("{}/site", reg.addr), &config);
    c.arg("--ca-file").arg(reg.ca.as_ref().unwrap());
    let (code, _, log) = outcome(&mut c);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("FAILED") && log.contains(&reg.addr), "{log}");
    let (code, _, log) = outcome(&mut push(&bundle, &format!("{}/Site", reg.addr), &config));
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains(
            "has a path prefix that is not a repository path: \"Site\" is not a component"
        ),
        "{log}"
    );
}

const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// An HTTP proxy on 127.0.0.1 in front of a plain-HTTP registry: one request per connection
/// (it asks the registry to close after its answer), every request line logged, and one
/// chosen upload request cut once armed.
pub(crate) struct UploadProxy {
    pub(crate) addr: String,
    log: Arc<Mutex<Vec<String>>>,
    cut: Arc<Cut>,
    stop: Arc<AtomicBool>,
}

/// Which PATCH to cut: the `nth` from now (1 = the next), after `after` bytes of its body
/// reached the registry (0: before the registry sees the request at all).
#[derive(Default)]
struct Cut {
    nth: AtomicUsize,
    after: AtomicUsize,
}

impl UploadProxy {
    pub(crate) fn start(upstream: &str) -> UploadProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (log, cut, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Cut::default()),
            Arc::new(AtomicBool::new(false)),
        );
        let (upstream, log2, cut2, stop2) =
            (upstream.to_string(), log.clone(), cut.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                let (upstream, log, cut) = (upstream.clone(), log2.clone(), cut2.clone());
                std::thread::spawn(move || proxy_one(client, &upstream, &log, &cut));
            }
        });
        UploadProxy {
            addr,
            log,
            cut,
            stop,
        }
    }

    /// Cut the `nth` PATCH from now after `after` bytes of its body.
    pub(crate) fn cut_patch(&self, nth: usize, after: usize) {
        self.cut.after.store(after, Ordering::SeqCst);
        self.cut.nth.store(nth, Ordering::SeqCst);
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for UploadProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One connection: the request head (and its Content-Length body) to the registry with
/// `Connection: close`, then its answer back until the registry closes.
fn proxy_one(mut client: TcpStream, upstream: &str, log: &Mutex<Vec<String>>, cut: &Cut) {
    client.set_nonblocking(false).unwrap();
    let Some(text) = request_head(&mut client) else {
        return;
    };
    let line = text.lines().next().unwrap_or("").to_string();
    log.lock().unwrap().push(line.clone());
    let mut length = 0usize;
    let mut out = String::new();
    for l in text.trim_end().lines() {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("content-length:") {
            length = l[15..].trim().parse().unwrap();
        }
        if !lower.starts_with("connection:") {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let this_one = line.starts_with("PATCH")
        && cut
            .nth
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            == Ok(1);
    let limit = this_one.then(|| cut.after.load(Ordering::SeqCst));
    let mut body = vec![0u8; length];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    if limit == Some(0) {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    up.write_all(out.as_bytes()).unwrap();
    if let Some(n) = limit {
        let _ = up.write_all(&body[..n]);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let _ = up.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    up.write_all(&body).unwrap();
    let _ = std::io::copy(&mut up, &mut client);
}

/// An image with a layer of `mib` MiB of random bytes (it does not compress), pushed to the
/// rig's registry as `oi-export/NAME:1`.
fn pushed_big_image(name: &str, mib: usize) -> String {
    let tag = format!("{}/oi-export/{name}:1", daemons().registry);
    build_random_image(&tag, mib);
    run(docker().args(["push", "-q", &tag]));
    run(docker().args(["rmi", "--no-prune", &tag]));
    tag
}

/// The requests of `proxy` from the `from`th on whose line starts with `method`.
fn count(proxy: &UploadProxy, from: usize, method: &str) -> usize {
    proxy.requests()[from..]
        .iter()
        .filter(|r| r.starts_with(method))
        .count()
}

#[test]
fn a_push_to_a_token_registry_cut_mid_layer_resumes_and_a_re_push_sends_no_blob() {
    let reg = PrivateRegistry::start("push-token", false, RegistryAuth::Token);
    let reference = pushed_big_image("push-big", 12);
    let bundle = layout_bundle("push-token-bundle", std::slice::from_ref(&reference));
    let proxy = UploadProxy::start(&reg.addr);
    let config = docker_config(&serde_json::json!({}));
    let push_to = |prefix: &str| {
        let mut c = push(&bundle, &format!("{}/{prefix}", proxy.addr), &config);
        c.args(["--username", reg.user, "--password-stdin", "--chunk-size"])
            .arg((4 << 20).to_string());
        let out = run_with_stdin(&mut c, format!("{}\n", reg.password).as_bytes());
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        log
    };
    // The connection of the layer's second 4 MiB chunk is lost before the registry sees it:
    // the registry says it holds the first chunk, and the upload goes on from there.
    proxy.cut_patch(2, 0);
    let log = push_to("site");
    assert!(
        log.contains("the registry holds 4194304 bytes of it: going on from there"),
        "{log}"
    );
    // 12 MiB in 4 MiB chunks: two PATCHes and the PUT of the last chunk, and the cut PATCH
    // (which the proxy logged) once more; the config in one PUT. No upload started over.
    assert_eq!(
        count(&proxy, 0, "PATCH"),
        4,
        "{:#?}\n{log}",
        proxy.requests()
    );
    assert_eq!(
        count(&proxy, 0, "POST"),
        2,
        "{:#?}\n{log}",
        proxy.requests()
    );
    // Cut inside its body, the upload is one distribution forgets: it starts again, and
    // the push still ends with the bundle's bytes.
    let before = proxy.requests().len();
    proxy.cut_patch(2, 1 << 20);
    let log = push_to("again");
    assert!(log.contains("starting it again"), "{log}");
    assert_eq!(
        count(&proxy, before, "POST"),
        3,
        "{:#?}\n{log}",
        proxy.requests()
    );
    let top = top_of(&bundle, &reference);
    let (_, blobs) = bundle_graph(&bundle, &top);
    for b in &blobs {
        let stored = std::fs::read(reg.blob_file(b)).unwrap();
        assert!(
            stored == bundle_blob(&bundle, b),
            "blob {b} differs from the bundle's"
        );
    }
    // A second run: lookups only.
    let before = proxy.requests().len();
    let log = push_to("site");
    let again: Vec<String> = proxy.requests()[before..].to_vec();
    assert!(
        !again.is_empty()
            && again
                .iter()
                .all(|r| r.starts_with("HEAD ") || r.starts_with("GET /v2/ ")),
        "the re-push sent more than lookups: {again:#?}"
    );
    assert!(log.contains("1 already present"), "{log}");
}

/// A two-platform index in the rig's registry as `oi-export/push-multi:1`: (index digest,
/// amd64 manifest digest).
fn multi_platform_index() -> (String, String) {
    let reg = &daemons().registry;
    let repo = "oi-export/push-multi";
    let mut descriptors = Vec::new();
    for arch in ["amd64", "arm64"] {
        let tag = format!("{reg}/{repo}:{arch}");
        crate::registry::build_for(&tag, &format!("linux/{arch}"), &format!("push {arch}"));
        run(docker().args(["push", "-q", &tag]));
        run(docker().args(["rmi", "--no-prune", &tag]));
        let resp = ureq::get(&format!("http://{reg}/v2/{repo}/manifests/{arch}"))
            .header("Accept", ACCEPT_ALL)
            .call()
            .unwrap();
        let media_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        let body = resp.into_body().read_to_vec().unwrap();
        let digest = format!("sha256:{}", sha256_hex(&body));
        descriptors.push(serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": body.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let list = "application/vnd.docker.distribution.manifest.list.v2+json";
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": list, "manifests": descriptors,
    }))
    .unwrap();
    ureq::put(&format!("http://{reg}/v2/{repo}/manifests/1"))
        .header("Content-Type", list)
        .send(&index[..])
        .unwrap();
    let amd64 = descriptors[0]["digest"].as_str().unwrap().to_string();
    (format!("sha256:{}", sha256_hex(&index)), amd64)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest `addr` (plain HTTP, anonymous) serves for `repo:reference`, if any.
pub(crate) fn served(addr: &str, repo: &str, reference: &str) -> Option<String> {
    let resp = ureq::head(&format!("http://{addr}/v2/{repo}/manifests/{reference}"))
        .header("Accept", ACCEPT_ALL)
        .call()
        .ok()?;
    (resp.status() == 200).then(|| {
        resp.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string()
    })
}

#[test]
fn an_index_whose_other_platforms_were_left_out_is_tagged_by_its_platform_manifest_and_a_whole_one_keeps_its_digest(
) {
    let d = daemons();
    let reg = PrivateRegistry::start("push-multi", false, RegistryAuth::Anonymous);
    let (index, amd64) = multi_platform_index();
    let reference = format!("{}/oi-export/push-multi:1", d.registry);
    let config = docker_config(&serde_json::json!({}));
    let repo_in = |prefix: &str| {
        format!(
            "{prefix}/{}/oi-export/push-multi",
            d.registry.replace(':', "_")
        )
    };
    // Exported for amd64 alone: distribution takes no index whose arm64 manifest it lacks.
    let one = layout_bundle("push-multi-amd64", std::slice::from_ref(&reference));
    let (code, _, log) = outcome(&mut push(&one, &format!("{}/one", reg.addr), &config));
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("takes no index whose platforms the bundle left out"),
        "{log}"
    );
    let repo = repo_in("one");
    assert_eq!(served(&reg.addr, &repo, "1"), Some(amd64.clone()));
    assert_eq!(served(&reg.addr, &repo, &amd64), Some(amd64.clone()));
    assert_eq!(served(&reg.addr, &repo, &index), None);
    let (code, _, log) = outcome(&mut push(&one, &format!("{}/one", reg.addr), &config));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("0 image(s), 2 already present"), "{log}");
    // Exported for both platforms: the index keeps its digest, by tag and by digest.
    let out = temp_dir("push-multi-both").join("images");
    let mut c = registry_export_as(&out, &bare_path(&[]), "layout");
    c.args(["--no-importer-binary", "--platform", "linux/amd64"])
        .args(["--platform", "linux/arm64", &reference]);
    let (code, _, log) = outcome(&mut c);
    assert_eq!(code, 0, "{log}");
    let (code, _, log) = outcome(&mut push(&out, &format!("{}/both", reg.addr), &config));
    assert_eq!(code, 0, "{log}");
    let repo = repo_in("both");
    assert_eq!(served(&reg.addr, &repo, "1"), Some(index.clone()));
    assert_eq!(served(&reg.addr, &repo, &index), Some(index.clone()));
}

#[test]
fn a_packed_bundle_pushes_as_its_directory_does() {
    let d = daemons();
    let reg = PrivateRegistry::start("push-pack", false, RegistryAuth::Anonymous);
    pushed_image("push-pack", "hello from a pack");
    let reference = format!("{}/oi-export/push-pack:1", d.registry);
    let out = temp_dir("push-pack-bundle");
    let carried = out.join("carried");
    std::fs::create_dir_all(&carried).unwrap();
    let mut c = registry_export_as(&out.join("images"), &bare_path(&[]), "layout");
    c.args(["--no-importer-binary", "--pack"])
        .arg(carried.join("bundle.tar.zst"))
        .arg(&reference);
    let (code, _, log) = outcome(&mut c);
    assert_eq!(code, 0, "{log}");
    let config = docker_config(&serde_json::json!({}));
    let (code, _, log) = outcome(&mut push(&carried, &format!("{}/p", reg.addr), &config));
    assert_eq!(code, 0, "{log}");
    let top = top_of(&out.join("images"), &reference);
    let repo = format!("p/{}/oi-export/push-pack", d.registry.replace(':', "_"));
    assert_eq!(served(&reg.addr, &repo, "1"), Some(top.clone()));
    for b in bundle_graph(&out.join("images"), &top).1 {
        let stored = std::fs::read(reg.blob_file(&b)).unwrap();
        assert!(stored == bundle_blob(&out.join("images"), &b), "blob {b}");
    }
}

/// The hosts.toml files `--print-mirror-config containerd` printed, written under `dir` as
/// containerd's certs.d holds them.
fn write_hosts_dir(printed: &str, dir: &Path) {
    let mut file: Option<PathBuf> = None;
    let mut text = String::new();
    let flush = |file: &Option<PathBuf>, text: &mut String| {
        if let Some(f) = file {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, std::mem::take(text)).unwrap();
        }
    };
    for line in printed.lines() {
        if let Some(path) = line.strip_prefix("# /etc/containerd/certs.d/") {
            flush(&file, &mut text);
            file = Some(dir.join(path));
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    flush(&file, &mut text);
}

#[test]
fn the_printed_containerd_mirror_config_has_ctr_pull_the_original_name_from_the_site_registry() {
    let d = daemons();
    let reg = PrivateRegistry::start("push-mirror", false, RegistryAuth::Anonymous);
    let proxy = UploadProxy::start(&reg.addr);
    pushed_image("push-mirror", "hello through the mirror");
    let reference = format!("{}/oi-export/push-mirror:1", d.registry);
    let bundle = layout_bundle("push-mirror-bundle", std::slice::from_ref(&reference));
    let config = docker_config(&serde_json::json!({}));
    let mut c = push(&bundle, &format!("{}/site", proxy.addr), &config);
    c.args(["--print-mirror-config", "containerd"]);
    let (code, printed, log) = outcome(&mut c);
    assert_eq!(code, 0, "{log}");
    let hosts = temp_dir("push-mirror-hosts");
    write_hosts_dir(&printed, &hosts);
    let toml = std::fs::read_to_string(hosts.join(&d.registry).join("hosts.toml"))
        .unwrap_or_else(|e| panic!("{e}: {printed}"));
    let upstream = d.registry.replace(':', "_");
    assert!(
        toml.contains(&format!(
            "[host.\"http://{}/v2/site/{upstream}\"]",
            proxy.addr
        )),
        "{toml}"
    );
    let before = proxy.requests().len();
    // containerd asks the mirror first (adding `?ns=<upstream>`); the upstream would answer
    // too, so what the proxy saw is the proof.
    run(ctr("oi-push-mirror")
        .args(["images", "pull", "--hosts-dir"])
        .arg(&hosts)
        .arg(&reference));
    let served: Vec<String> = proxy.requests()[before..].to_vec();
    let path = format!("/v2/site/{upstream}/oi-export/push-mirror/");
    assert!(
        served
            .iter()
            .any(|r| r.starts_with(&format!("HEAD {path}manifests/1?"))
                || r.starts_with(&format!("GET {path}manifests/1?"))),
        "the site registry did not resolve the tag: {served:#?}"
    );
    assert!(
        served
            .iter()
            .any(|r| r.starts_with(&format!("GET {path}blobs/sha256:"))),
        "the site registry served no blob: {served:#?}"
    );
    run(ctr("oi-push-mirror").args(["images", "rm", &reference]));
}
