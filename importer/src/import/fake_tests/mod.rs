//! The import loop driven end to end on a fake runtime (`runtime::fake`): planning, retries,
//! the pipeline's order, shared names, the disk-full retry, labels, the after-run check, exit
//! codes and the report. Archives are small docker-save and OCI layouts written here; what the
//! fake loads it reads from them with the crate's archive reader.

#![cfg(test)]

mod after;
mod disk;
mod labels;
mod names;
mod pipeline;
mod planning;
mod retries;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::{run_on, Settings};
use crate::archive::{self, tar_of, Platform};
use crate::bundle::{self, BundleArchive, BundleImage, BundleIndex};
use crate::digest::hex;
use crate::exit::Code;
use crate::failure::Kind;
use crate::labels::{LABEL_ARCHIVE_PREFIX, LABEL_MANAGED, LABEL_PINNED, LABEL_RELEASE_PREFIX};
use crate::report::{ArchiveResult, Format, Replaced, Reporter, Status, Summary};
use crate::runtime::detect::{Config, ContainerdClient, Detected, RuntimeKind};
use crate::runtime::fake::{FakeRuntime, Fault, Op};

// ---- archives -----------------------------------------------------------------------------

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The one layer of the image `seed`: a tar holding one file.
fn layer(seed: &str) -> Vec<u8> {
    tar_of(&[("etc/seed", seed.as_bytes())])
}

/// The config of the image `seed`, for this machine's platform: each seed its own digest.
fn config(seed: &str) -> Vec<u8> {
    format!(
        r#"{{"architecture":"{}","os":"linux","config":{{"Labels":{{"seed":"{seed}"}}}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
        Platform::host().architecture,
        sha256_hex(&layer(seed))
    )
    .into_bytes()
}

/// The config digest of the image `seed`, as a runtime knows it.
fn digest_of(seed: &str) -> String {
    format!("sha256:{}", sha256_hex(&config(seed)))
}

/// A `docker save` archive (legacy `manifest.json` layout) of one image per `(tags, seed)`.
fn docker_archive(images: &[(&[&str], &str)]) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifest = Vec::new();
    for (tags, seed) in images {
        let layer_name = format!("{}/layer.tar", sha256_hex(&layer(seed)));
        let config_name = format!("{}.json", sha256_hex(&config(seed)));
        files.push((layer_name.clone(), layer(seed)));
        files.push((config_name.clone(), config(seed)));
        manifest.push(serde_json::json!({
            "Config": config_name, "RepoTags": tags, "Layers": [layer_name],
        }));
    }
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    tar_of(&refs)
}

/// An OCI image layout (skopeo, `ctr export`) of the one image `seed` named `name`.
fn oci_archive(name: &str, seed: &str) -> Vec<u8> {
    let (layer, config) = (layer(seed), config(seed));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", sha256_hex(&layer)), "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", sha256_hex(&manifest)), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name},
    }]});
    let blob = |d: &[u8]| (format!("blobs/sha256/{}", sha256_hex(d)), d.to_vec());
    let files = [
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        blob(&layer),
        blob(&config),
        blob(&manifest),
        ("index.json".into(), serde_json::to_vec(&index).unwrap()),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    tar_of(&refs)
}

/// A docker archive of the one image `seed` tagged `name`.
fn one(name: &str, seed: &str) -> Vec<u8> {
    docker_archive(&[(&[name], seed)])
}

// ---- a bundle directory and a run on the fake ---------------------------------------------

static BENCHES: AtomicUsize = AtomicUsize::new(0);

/// A temp dir with the images path and the socket's directory (where the node lock is taken);
/// removed when dropped.
struct Bench {
    dir: PathBuf,
    /// Every log line of every run on this bench, in order.
    log: Reporter,
}

impl Bench {
    fn new() -> Bench {
        let n = BENCHES.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("oi-fake-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::write(dir.join("run/fake.sock"), b"").unwrap();
        Bench {
            dir,
            log: Reporter::kept(Format::Text),
        }
    }

    fn images(&self) -> PathBuf {
        self.dir.join("images")
    }

    /// Write the archive `file` into the images path.
    fn put(&self, file: &str, data: &[u8]) -> PathBuf {
        let path = self.images().join(file);
        std::fs::write(&path, data).unwrap();
        path
    }

    fn settings(&self) -> Settings {
        Settings {
            images_path: self.images(),
            runtime: Config {
                runtime: RuntimeKind::Containerd,
                containerd_address: None,
                namespace: "k8s.io".into(),
                docker_host: None,
                host_root: None,
                containerd_client: ContainerdClient::Native,
                snapshotter: None,
                storage: Default::default(),
            },
            disk_max_used: None,
            jobs: None,
            strict: false,
            allow_empty: false,
            force: false,
            dry_run: false,
            log_format: Format::Json,
            report: None,
            termination_log: self.dir.join("termination-log"),
            lock_timeout: Duration::from_secs(5),
            release: None,
            require: Vec::new(),
            verify_keys: Vec::new(),
            left_out_nodes: Vec::new(),
        }
    }

    /// `run_on` with `fake` as the runtime found.
    fn try_run(&self, fake: &FakeRuntime, settings: &Settings) -> Result<(Code, Summary)> {
        let detected = Detected {
            runtime: Box::new(fake.clone()),
            socket: self.dir.join("run/fake.sock"),
            node_socket: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: Some("k8s.io".into()),
            reason: "the fake runtime of the unit tests".into(),
        };
        run_on(settings, &detected, &self.log)
    }

    /// The log lines of the runs so far that contain `words`.
    fn said(&self, words: &str) -> Vec<String> {
        self.log
            .lines()
            .into_iter()
            .filter(|l| l.contains(words))
            .collect()
    }

    fn run(&self, fake: &FakeRuntime, settings: &Settings) -> (Code, Summary) {
        self.try_run(fake, settings).unwrap()
    }

    /// `images.json` describing `files` as the archives are (read with the archive reader).
    fn describe(&self, files: &[&str]) {
        let entries = files
            .iter()
            .map(|f| {
                let path = self.images().join(f);
                let info = archive::inspect_path(&path, archive::Limits::default()).unwrap();
                let images = info
                    .images
                    .iter()
                    .flat_map(|i| i.platforms.iter().map(move |p| (i, p)))
                    .map(|(i, p)| BundleImage {
                        names: i.names.clone(),
                        config_digest: p.config_digest.clone().unwrap(),
                        manifest_digest: p.manifest_digest.clone(),
                        platform: p.platform.as_ref().map(Platform::to_string),
                        layers: Vec::new(),
                    })
                    .collect();
                let mut e = entry(f, std::fs::metadata(&path).unwrap().len(), images);
                (e.compression, e.format) = (info.compression, info.format);
                e
            })
            .collect();
        self.index(entries);
    }

    fn index(&self, archives: Vec<BundleArchive>) {
        let index = BundleIndex {
            archives,
            ..BundleIndex::new()
        };
        bundle::write_index(&self.images(), &index).unwrap();
    }

    /// `SHA256SUMS` of `files` as they are, and of `wrong` with a checksum they do not have.
    fn sums(&self, files: &[&str], wrong: &[&str]) {
        let mut sums = BTreeMap::new();
        for f in files {
            let sum = bundle::sha256_file(&self.images().join(f)).unwrap();
            sums.insert(f.to_string(), sum);
        }
        for f in wrong {
            sums.insert(f.to_string(), "0".repeat(64));
        }
        bundle::write_sums(&self.images(), &sums).unwrap();
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An `images.json` entry for `file` of `size` bytes holding `images`.
fn entry(file: &str, size: u64, images: Vec<BundleImage>) -> BundleArchive {
    BundleArchive {
        file: file.into(),
        size,
        sha256: String::new(),
        compression: archive::Compression::None,
        format: archive::Format::DockerArchive,
        images,
        source: None,
        stamp: None,
    }
}

/// An `images.json` image named `name` with the config of `seed`, for this platform.
fn listed(name: &str, seed: &str) -> BundleImage {
    BundleImage {
        names: vec![name.into()],
        config_digest: digest_of(seed),
        manifest_digest: None,
        platform: Some(Platform::host().to_string()),
        layers: Vec::new(),
    }
}

/// The result of `file`.
fn result<'a>(s: &'a Summary, file: &str) -> &'a ArchiveResult {
    s.archives
        .iter()
        .find(|a| a.file == file)
        .unwrap_or_else(|| panic!("no result for {file}: {:?}", s.archives))
}

fn files(s: &Summary) -> Vec<&str> {
    s.archives.iter().map(|a| a.file.as_str()).collect()
}

fn statuses(s: &Summary) -> Vec<Status> {
    s.archives.iter().map(|a| a.status).collect()
}

/// The config the fake has under `name`.
fn config_in(fake: &FakeRuntime, name: &str) -> Option<String> {
    fake.image(name).map(|i| i.config)
}

const APP: &str = "example.com/app:1";
const WEB: &str = "example.com/web:1";
const DB: &str = "example.com/db:1";
const CACHE: &str = "example.com/cache:1";

/// A bench with `a.tar`, `b.tar`, ... each holding one image of its own.
fn bench_of(n: usize) -> Bench {
    let b = Bench::new();
    for (i, name) in [APP, WEB, DB, CACHE].iter().take(n).enumerate() {
        let file = format!("{}.tar", (b'a' + i as u8) as char);
        b.put(&file, &one(name, name));
    }
    b
}
