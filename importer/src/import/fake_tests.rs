//! The import loop driven end to end on a fake runtime (`runtime::fake`): planning, retries,
//! the pipeline's order, shared names, the disk-full retry, labels, the after-run check, exit
//! codes and the report. Archives are small docker-save and OCI layouts written here; what the
//! fake loads it reads from them with the crate's archive reader.

#![cfg(test)]

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
            },
            disk_max_used: None,
            jobs: None,
            strict: false,
            force: false,
            dry_run: false,
            log_format: Format::Json,
            report: None,
            termination_log: self.dir.join("termination-log"),
            lock_timeout: Duration::from_secs(5),
            release: None,
            require: Vec::new(),
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

// ---- planning -----------------------------------------------------------------------------

#[test]
fn an_archive_images_json_shows_present_is_skipped_and_never_read() {
    let b = Bench::new();
    // Not an archive at all, and not the checksum SHA256SUMS gives: reading it to import it
    // or to check it would fail it.
    let garbage = b"these bytes are no tar archive";
    b.put("app.tar", garbage);
    b.sums(&[], &["app.tar"]);
    b.index(vec![entry(
        "app.tar",
        garbage.len() as u64,
        vec![listed(APP, "app")],
    )]);
    let fake = FakeRuntime::new().with_image(APP, &digest_of("app"));
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Skipped]);
    assert_eq!(result(&s, "app.tar").digests, [digest_of("app")]);
    assert_eq!(fake.count(Op::Import, None), 0);
    assert!(s.missing.is_empty(), "{:?}", s.missing);
    assert_eq!((code, s.skipped, s.imported), (Code::Success, 1, 0));
}

#[test]
fn an_archive_present_under_another_config_is_imported() {
    let b = bench_of(1);
    b.describe(&["a.tar"]);
    let fake = FakeRuntime::new().with_image(APP, &digest_of("old"));
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(config_in(&fake, APP), Some(digest_of(APP)));
    let was = digest_of("old");
    assert_eq!(
        result(&s, "a.tar").replaced,
        [Replaced {
            name: APP.into(),
            was
        }],
        "the name taken from another image is reported"
    );
    assert_eq!(code, Code::Success);
}

#[test]
fn a_checksum_mismatch_fails_that_archive_only_and_it_never_reaches_the_runtime() {
    let b = bench_of(2);
    b.sums(&["a.tar"], &["b.tar"]);
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    let bad = result(&s, "b.tar");
    assert_eq!(
        (bad.status, bad.failure),
        (Status::Failed, Some(Kind::Archive))
    );
    assert!(bad.reason.as_ref().unwrap().contains("checksum mismatch"));
    assert_eq!(result(&s, "a.tar").status, Status::Imported);
    assert_eq!(fake.trace(), ["reclaim", "import a.tar"]);
    assert_eq!((code, s.failed, s.imported), (Code::Success, 1, 1));
}

#[test]
fn with_strict_a_failed_archive_makes_the_run_exit_1() {
    let b = bench_of(2);
    b.sums(&["a.tar"], &["b.tar"]);
    let settings = Settings {
        strict: true,
        ..b.settings()
    };
    let (code, s) = b.run(&FakeRuntime::new(), &settings);
    assert_eq!((code, s.failed, s.imported), (Code::Failure, 1, 1));
}

#[test]
fn a_refused_path_fails_by_name_and_the_rest_is_imported() {
    let b = bench_of(1);
    std::fs::create_dir(b.images().join("dir.tar")).unwrap();
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    let refused = result(&s, "dir.tar");
    assert_eq!(
        (refused.status, refused.failure),
        (Status::Failed, Some(Kind::Archive))
    );
    assert!(
        refused
            .reason
            .as_ref()
            .unwrap()
            .contains("not a regular file"),
        "{refused:?}"
    );
    assert_eq!(result(&s, "a.tar").status, Status::Imported);
    assert_eq!(fake.trace(), ["reclaim", "import a.tar"]);
    assert_eq!(code, Code::Success);
}

#[test]
fn a_file_sha256sums_lists_that_is_absent_fails_as_an_incomplete_bundle() {
    let b = bench_of(1);
    b.sums(&["a.tar"], &["gone.tar"]);
    let (code, s) = b.run(&FakeRuntime::new(), &b.settings());
    let gone = result(&s, "gone.tar");
    assert_eq!(
        (gone.status, gone.failure),
        (Status::Failed, Some(Kind::Bundle))
    );
    assert!(gone.reason.as_ref().unwrap().contains("not found"));
    assert_eq!((code, s.imported, s.failed), (Code::Success, 1, 1));
}

#[test]
fn a_dry_run_imports_nothing_reclaims_nothing_and_reports_would_import() {
    let b = bench_of(2);
    b.describe(&["a.tar", "b.tar"]);
    let settings = Settings {
        dry_run: true,
        release: Some("shop".into()),
        ..b.settings()
    };
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &settings);
    assert_eq!(statuses(&s), [Status::WouldImport, Status::WouldImport]);
    assert_eq!((s.would_import, s.imported, s.dry_run), (2, 0, true));
    assert_eq!(fake.trace(), Vec::<String>::new());
    assert_eq!(fake.count(Op::Label, None), 0);
    assert!(fake.names().is_empty());
    assert!(
        s.missing.is_empty(),
        "a dry run checks nothing after: {:?}",
        s.missing
    );
    assert_eq!(code, Code::Success);
}

#[test]
fn a_dry_run_still_fails_a_file_that_cannot_be_an_archive() {
    let b = bench_of(1);
    b.put("empty.tar", b"");
    let settings = Settings {
        dry_run: true,
        ..b.settings()
    };
    let (_, s) = b.run(&FakeRuntime::new(), &settings);
    let empty = result(&s, "empty.tar");
    assert_eq!(empty.status, Status::Failed);
    assert!(empty.reason.as_ref().unwrap().contains("the file is empty"));
    assert_eq!(result(&s, "a.tar").status, Status::WouldImport);
}

#[test]
fn force_imports_an_archive_that_is_present() {
    let b = bench_of(1);
    b.describe(&["a.tar"]);
    let fake = FakeRuntime::new().with_image(APP, &digest_of(APP));
    let settings = Settings {
        force: true,
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(fake.count(Op::Import, Some("a.tar")), 1);
}

#[test]
fn an_empty_images_path_is_a_success_that_asks_the_runtime_nothing() {
    let b = Bench::new();
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(code, Code::Success);
    assert!(s.archives.is_empty());
    assert_eq!(fake.count(Op::Present, None), 0);
    assert_eq!(fake.count(Op::Import, None), 0);
}

#[test]
fn an_oci_archive_and_a_docker_archive_load_under_their_names_and_configs() {
    let b = Bench::new();
    b.put("a.tar", &one(APP, "app"));
    b.put("b.tar", &oci_archive(WEB, "web"));
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported, Status::Imported]);
    assert_eq!(result(&s, "a.tar").names, [APP]);
    assert_eq!(result(&s, "b.tar").names, [WEB]);
    assert_eq!(result(&s, "b.tar").digests, [digest_of("web")]);
    assert_eq!(config_in(&fake, APP), Some(digest_of("app")));
    assert_eq!(config_in(&fake, WEB), Some(digest_of("web")));
    assert_eq!(code, Code::Success);
}

#[test]
fn a_gzip_archive_reaches_the_runtime_decompressed() {
    use std::io::Write;
    let b = Bench::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&one(APP, "app")).unwrap();
    b.put("a.tar.gz", &gz.finish().unwrap());
    let fake = FakeRuntime::new();
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(config_in(&fake, APP), Some(digest_of("app")));
}

// ---- retries ------------------------------------------------------------------------------

#[test]
fn a_runtime_unreachable_for_two_imports_is_retried_and_the_archive_imported() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Import, 2, Fault::Unreachable);
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "import a.tar (failed)",
            "import a.tar (failed)",
            "import a.tar"
        ]
    );
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(code, Code::Success);
    let retries = b.said("retrying in 0 s");
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries[0].contains("(attempt 1 of 5)"), "{retries:?}");
}

#[test]
fn a_runtime_unreachable_for_good_fails_the_archive_naming_why_after_every_retry() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Import, 100, Fault::Unreachable);
    let (code, s) = b.run(&fake, &b.settings());
    let a = result(&s, "a.tar");
    assert_eq!(
        (a.status, a.failure),
        (Status::Failed, Some(Kind::Unreachable))
    );
    assert!(a.reason.as_ref().unwrap().contains("connection refused"));
    assert_eq!(
        fake.count(Op::Import, Some("a.tar")),
        1 + super::execute::RETRY_DELAYS.len()
    );
    assert_eq!((code, s.failed), (Code::Success, 1));
}

#[test]
fn listing_the_images_is_retried_while_the_runtime_is_unreachable() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Present, 2, Fault::Unreachable);
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(fake.count(Op::Present, None), 3);
    assert_eq!(
        (code, statuses(&s)),
        (Code::Success, vec![Status::Imported])
    );
}

#[test]
fn a_runtime_that_never_answers_the_first_listing_ends_the_run_as_an_environment_error() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Present, 100, Fault::Unreachable);
    let err = b.try_run(&fake, &b.settings()).unwrap_err();
    assert!(format!("{err:#}").contains("connection refused"), "{err:#}");
    assert_eq!(Code::from_error(&err), Code::Usage);
    assert_eq!(fake.count(Op::Import, None), 0);
}

#[test]
fn an_import_error_naming_a_layer_fails_that_archive_at_once_in_the_runtimes_words() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    let words = "failed to extract layer sha256:5f70bf18: unexpected EOF";
    fake.fail_file(Op::Import, "a.tar", 1, Fault::Refused(words.into()));
    let (code, s) = b.run(&fake, &b.settings());
    let a = result(&s, "a.tar");
    assert_eq!((a.status, a.failure), (Status::Failed, Some(Kind::Import)));
    assert!(a.reason.as_ref().unwrap().contains(words), "{a:?}");
    assert_eq!(fake.count(Op::Import, Some("a.tar")), 1, "not retried");
    assert_eq!(result(&s, "b.tar").status, Status::Imported);
    assert_eq!(code, Code::Success);
}

#[test]
fn a_runtime_lost_between_the_two_steps_has_the_whole_archive_imported_again() {
    let b = bench_of(1);
    let fake = FakeRuntime::new().staging();
    fake.fail(Op::Rest, 1, Fault::Unreachable);
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "stage a.tar",
            "rest a.tar (failed)",
            "stage a.tar",
            "rest a.tar"
        ]
    );
    assert_eq!(statuses(&s), [Status::Imported]);
}

/// Lost before the gate, nothing written: after the retries, it is read once more in its turn.
#[test]
fn a_staging_runtime_lost_while_only_reading_is_read_again_after_the_retries() {
    let b = bench_of(1);
    let fake = FakeRuntime::new().staging();
    let attempts = 1 + super::execute::RETRY_DELAYS.len();
    fake.fail(Op::Stage, attempts, Fault::Unreachable);
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(fake.count(Op::Stage, Some("a.tar")), attempts + 1);
    assert_eq!(statuses(&s), [Status::Imported]);
}

/// A runtime gone for good is tried once out of turn, then once more with the retries in the
/// archive's turn: one round of retry delays, not two (it took two, 62 s an archive).
#[test]
fn a_staging_runtime_gone_for_good_is_retried_one_round_not_two() {
    let b = bench_of(1);
    let fake = FakeRuntime::new().staging();
    fake.fail(Op::Stage, 100, Fault::Unreachable);
    let (_, s) = b.run(&fake, &b.settings());
    let one_round = 1 + super::execute::RETRY_DELAYS.len();
    assert_eq!(fake.count(Op::Stage, Some("a.tar")), 1 + one_round);
    assert_eq!(statuses(&s), [Status::Failed]);
    assert_eq!(b.said("reading it again in its turn").len(), 1);
    assert_eq!(b.said("retrying in 0 s").len(), one_round - 1);
}

// ---- the pipeline and jobs ----------------------------------------------------------------

#[test]
fn pipelined_the_next_archive_is_stored_while_the_one_before_is_unpacked() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().staging();
    fake.hold(Op::Rest, "a.tar", (Op::Stage, "b.tar"));
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "stage a.tar",
            "stage b.tar",
            "rest a.tar",
            "rest b.tar"
        ]
    );
    assert_eq!(statuses(&s), [Status::Imported, Status::Imported]);
}

/// Each archive's unpack is slower than the next one's: a's and b's wait for the next stage,
/// then give the next rest 200 ms to overtake them, which the importer must not allow.
#[test]
fn pipelined_both_steps_and_the_results_go_in_plan_order() {
    let b = bench_of(4);
    let fake = FakeRuntime::new().staging();
    let overtake = Duration::from_millis(200);
    for (this, next) in [("a.tar", "b.tar"), ("b.tar", "c.tar")] {
        fake.hold(Op::Rest, this, (Op::Stage, next));
        fake.hold_at_most(Op::Rest, this, (Op::Rest, next), overtake);
    }
    let (_, s) = b.run(&fake, &b.settings());
    let at = |op, f| fake.position(op, f).unwrap();
    for (x, y) in [("a.tar", "b.tar"), ("b.tar", "c.tar"), ("c.tar", "d.tar")] {
        assert!(at(Op::Stage, x) < at(Op::Stage, y), "{:?}", fake.trace());
        assert!(at(Op::Rest, x) < at(Op::Rest, y), "{:?}", fake.trace());
        assert!(at(Op::Stage, y) < at(Op::Rest, y), "{:?}", fake.trace());
    }
    assert_eq!(files(&s), ["a.tar", "b.tar", "c.tar", "d.tar"]);
    assert_eq!(s.imported, 4);
}

#[test]
fn jobs_1_turns_the_pipeline_off() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().staging();
    let settings = Settings {
        jobs: Some(1),
        ..b.settings()
    };
    b.run(&fake, &settings);
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "stage a.tar",
            "rest a.tar",
            "stage b.tar",
            "rest b.tar"
        ]
    );
}

#[test]
fn a_runtime_that_does_not_stage_imports_jobs_archives_side_by_side_reported_in_plan_order() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    // a finishes only once b has: possible only side by side.
    fake.hold(Op::Import, "a.tar", (Op::Import, "b.tar"));
    let settings = Settings {
        jobs: Some(2),
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(fake.trace(), ["reclaim", "import b.tar", "import a.tar"]);
    assert_eq!(files(&s), ["a.tar", "b.tar"]);
    assert_eq!(s.imported, 2);
}

#[test]
fn a_runtime_that_does_not_stage_imports_one_archive_at_a_time_by_default() {
    let b = bench_of(3);
    let fake = FakeRuntime::new();
    b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        ["reclaim", "import a.tar", "import b.tar", "import c.tar"]
    );
}

#[test]
fn a_parallel_import_that_lost_a_race_is_imported_again_alone_at_the_end() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    fake.fail_file(Op::Import, "a.tar", 1, Fault::Race);
    // a's race is lost while b is still going.
    fake.hold(Op::Import, "b.tar", (Op::Import, "a.tar"));
    let settings = Settings {
        jobs: Some(2),
        ..b.settings()
    };
    let (code, s) = b.run(&fake, &settings);
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "import a.tar (failed)",
            "import b.tar",
            "import a.tar"
        ]
    );
    assert_eq!(statuses(&s), [Status::Imported, Status::Imported]);
    assert_eq!((code, s.failed), (Code::Success, 0));
}

// ---- a full disk --------------------------------------------------------------------------

/// The upload of b finds the disk full while a is being unpacked: b is tried again once a has
/// finished, and from then on no archive is stored while another one is unpacked.
#[test]
fn pipelined_a_disk_full_upload_beside_an_unpack_is_retried_after_it_and_the_rest_goes_alone() {
    let b = bench_of(3);
    let fake = FakeRuntime::new().staging();
    fake.hold(Op::Rest, "a.tar", (Op::Stage, "b.tar"));
    fake.fail_file(Op::Stage, "b.tar", 1, Fault::DiskFull);
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "stage a.tar",
            "stage b.tar (failed)",
            "rest a.tar",
            "stage b.tar",
            "rest b.tar",
            "stage c.tar",
            "rest c.tar"
        ]
    );
    assert_eq!(s.imported, 3);
    assert_eq!(code, Code::Success);
    let said = b.said("importing it again once that one is done");
    assert!(
        said.len() == 1 && said[0].contains("b.tar"),
        "the retry is said, naming the archive: {:?}",
        b.log.lines()
    );
}

#[test]
fn pipelined_a_disk_full_upload_with_nothing_unpacking_beside_it_fails_the_archive() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().staging();
    fake.fail_file(Op::Stage, "a.tar", 1, Fault::DiskFull);
    let (code, s) = b.run(&fake, &b.settings());
    let a = result(&s, "a.tar");
    assert_eq!((a.status, a.failure), (Status::Failed, Some(Kind::Disk)));
    assert!(a
        .reason
        .as_ref()
        .unwrap()
        .contains("no space left on device"));
    assert_eq!(fake.count(Op::Stage, Some("a.tar")), 1);
    assert_eq!(result(&s, "b.tar").status, Status::Imported);
    assert_eq!(code, Code::Success);
}

#[test]
fn a_disk_full_import_on_a_runtime_that_does_not_stage_fails_the_archive_without_a_retry() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    fake.fail_file(Op::Import, "a.tar", 1, Fault::DiskFull);
    let settings = Settings {
        strict: true,
        ..b.settings()
    };
    let (code, s) = b.run(&fake, &settings);
    let a = result(&s, "a.tar");
    assert_eq!((a.status, a.failure), (Status::Failed, Some(Kind::Disk)));
    assert_eq!(fake.count(Op::Import, Some("a.tar")), 1);
    assert_eq!(result(&s, "b.tar").status, Status::Imported);
    assert_eq!(code, Code::Failure);
}

#[test]
fn a_preflight_refusing_an_archive_fails_it_before_anything_of_it_is_sent() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    fake.fail_file(Op::Preflight, "b.tar", 1, Fault::DiskFull);
    let settings = Settings {
        disk_max_used: Some(85),
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "preflight a.tar",
            "import a.tar",
            "preflight b.tar (failed)"
        ]
    );
    let refused = result(&s, "b.tar");
    assert_eq!(
        (refused.status, refused.failure),
        (Status::Failed, Some(Kind::Disk))
    );
    assert_eq!(result(&s, "a.tar").status, Status::Imported);
}

#[test]
fn without_a_disk_limit_no_preflight_is_made() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().staging();
    b.run(&fake, &b.settings());
    assert_eq!(fake.count(Op::Preflight, None), 0);
}

// ---- labels and fingerprints --------------------------------------------------------------

#[test]
fn every_imported_name_is_pinned_managed_fingerprinted_and_labelled_for_the_release() {
    let b = Bench::new();
    b.put("a.tar", &docker_archive(&[(&[APP, WEB], "two-names")]));
    let fake = FakeRuntime::new();
    let settings = Settings {
        release: Some("shop".into()),
        ..b.settings()
    };
    b.run(&fake, &settings);
    for name in [APP, WEB] {
        let labels = fake.image(name).unwrap().labels;
        assert_eq!(labels[LABEL_PINNED], "pinned");
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[&format!("{LABEL_RELEASE_PREFIX}shop")], "true");
        let (key, value) = labels
            .iter()
            .find(|(k, _)| k.starts_with(LABEL_ARCHIVE_PREFIX))
            .unwrap();
        assert_eq!(key.len(), LABEL_ARCHIVE_PREFIX.len() + 32);
        let prefix = format!("2/{}/", digest_of("two-names"));
        assert!(value.starts_with(&prefix), "{value}");
    }
}

#[test]
fn an_archive_skipped_as_present_is_labelled_for_this_release_once() {
    let b = bench_of(1);
    b.describe(&["a.tar"]);
    let fake = FakeRuntime::new().with_image(APP, &digest_of(APP));
    let settings = Settings {
        release: Some("shop".into()),
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(statuses(&s), [Status::Skipped]);
    let labels = fake.image(APP).unwrap().labels;
    assert_eq!(labels[&format!("{LABEL_RELEASE_PREFIX}shop")], "true");
    fake.forget_calls();
    b.run(&fake, &settings);
    assert_eq!(fake.count(Op::Label, None), 0, "labelled already");
}

#[test]
fn a_foreign_archive_imported_once_is_skipped_by_its_fingerprint_next_time() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    let (_, first) = b.run(&fake, &b.settings());
    assert_eq!(first.imported, 2);
    fake.forget_calls();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Skipped, Status::Skipped]);
    assert_eq!(result(&s, "a.tar").names, [APP]);
    assert_eq!(fake.trace(), ["reclaim"]);
    assert_eq!(fake.count(Op::Label, None), 0, "nothing to restamp");
    assert_eq!(code, Code::Success);
}

#[test]
fn a_foreign_archive_replaced_by_another_image_is_imported_again() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    b.run(&fake, &b.settings());
    b.put("a.tar", &one(APP, "newer"));
    fake.forget_calls();
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(config_in(&fake, APP), Some(digest_of("newer")));
    let was = digest_of(APP);
    assert_eq!(
        result(&s, "a.tar").replaced,
        [Replaced {
            name: APP.into(),
            was
        }]
    );
}

/// Written again with the same bytes (a new change time): read, skipped as present, and its
/// labels take the new stamp, so the run after skips it without reading it.
#[test]
fn a_foreign_archive_copied_again_unchanged_is_skipped_by_what_it_holds_and_restamped() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    b.run(&fake, &b.settings());
    let fp = |fake: &FakeRuntime| {
        let labels = fake.image(APP).unwrap().labels;
        labels
            .into_iter()
            .find(|(k, _)| k.starts_with(LABEL_ARCHIVE_PREFIX))
            .unwrap()
            .1
    };
    let before = fp(&fake);
    std::thread::sleep(Duration::from_millis(30));
    std::fs::remove_file(b.images().join("a.tar")).unwrap();
    b.put("a.tar", &one(APP, APP));
    fake.forget_calls();
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Skipped]);
    assert_eq!(fake.count(Op::Import, None), 0);
    let after = fp(&fake);
    assert_ne!(after, before, "restamped");
    assert_eq!(
        after.rsplit_once('/').unwrap().0,
        before.rsplit_once('/').unwrap().0
    );
    fake.forget_calls();
    b.run(&fake, &b.settings());
    assert_eq!(fake.count(Op::Label, None), 0);
}

#[test]
fn on_a_runtime_without_labels_a_foreign_archive_present_is_skipped_by_what_it_holds() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().without_labels().without_digest_names();
    let (_, first) = b.run(&fake, &b.settings());
    assert_eq!(first.imported, 2);
    assert!(fake.image(APP).unwrap().labels.is_empty());
    fake.forget_calls();
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Skipped, Status::Skipped]);
    assert_eq!(fake.count(Op::Import, None), 0);
}

// ---- names several archives give ----------------------------------------------------------

/// `a.tar` and `b.tar` both name `APP`, each its own image.
fn shared_name_bench() -> Bench {
    let b = Bench::new();
    b.put("a.tar", &one(APP, "from-a"));
    b.put("b.tar", &one(APP, "from-b"));
    b
}

#[test]
fn two_archives_giving_one_name_different_images_the_last_in_plan_order_wins() {
    let b = shared_name_bench();
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(config_in(&fake, APP), Some(digest_of("from-b")));
    assert_eq!(s.conflicts, [APP]);
    assert_eq!(fake.trace(), ["reclaim", "import a.tar", "import b.tar"]);
    assert_eq!((code, s.imported, s.failed), (Code::Success, 2, 0));
}

#[test]
fn with_strict_a_name_two_archives_give_different_images_makes_the_run_exit_1() {
    let b = shared_name_bench();
    let settings = Settings {
        strict: true,
        ..b.settings()
    };
    let (code, s) = b.run(&FakeRuntime::new(), &settings);
    assert_eq!((code, s.failed), (Code::Failure, 0));
    assert_eq!(s.conflicts, [APP]);
}

#[test]
fn side_by_side_a_winner_that_set_the_name_first_is_imported_once_more() {
    let b = shared_name_bench();
    let fake = FakeRuntime::new();
    // The loser a sets the name after the winner b.
    fake.hold(Op::Import, "a.tar", (Op::Import, "b.tar"));
    let settings = Settings {
        jobs: Some(2),
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(
        fake.trace(),
        ["reclaim", "import b.tar", "import a.tar", "import b.tar"]
    );
    assert_eq!(config_in(&fake, APP), Some(digest_of("from-b")));
    assert_eq!(statuses(&s), [Status::Imported, Status::Imported]);
}

#[test]
fn an_archive_images_json_lists_with_the_name_wins_it_over_one_sorting_later() {
    let b = shared_name_bench();
    b.describe(&["a.tar"]);
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        ["reclaim", "import a.tar", "import b.tar", "import a.tar"]
    );
    assert_eq!(config_in(&fake, APP), Some(digest_of("from-a")));
    assert_eq!(s.conflicts, [APP]);
    assert!(s.missing.is_empty(), "{:?}", s.missing);
    assert_eq!(code, Code::Success);
    // The next run flips nothing back: a is skipped, and b loses the name it would set.
    fake.forget_calls();
    let (_, again) = b.run(&fake, &b.settings());
    assert_eq!(result(&again, "a.tar").status, Status::Skipped);
    assert_eq!(config_in(&fake, APP), Some(digest_of("from-a")));
}

// ---- after the run, exit codes, the report ------------------------------------------------

#[test]
fn an_image_images_json_promises_that_is_absent_after_the_run_fails_the_run() {
    let b = bench_of(1);
    let size = std::fs::metadata(b.images().join("a.tar")).unwrap().len();
    b.index(vec![entry(
        "a.tar",
        size,
        vec![listed(APP, APP), listed(DB, "db")],
    )]);
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(s.failed, 0);
    let missing: Vec<&str> = s.missing.iter().map(|m| m.image.as_str()).collect();
    assert_eq!(missing, [DB]);
    assert!(s.missing[0]
        .reason
        .contains("listed in images.json for a.tar"));
    assert_eq!(code, Code::Failure, "even without --strict");
}

#[test]
fn a_required_image_absent_after_the_run_is_missing_and_fails_the_run() {
    let b = bench_of(1);
    let settings = Settings {
        require: vec!["example.com/app:1".into(), "redis:7".into()],
        ..b.settings()
    };
    let (code, s) = b.run(&FakeRuntime::new(), &settings);
    let missing: Vec<&str> = s.missing.iter().map(|m| m.image.as_str()).collect();
    assert_eq!(missing, ["docker.io/library/redis:7"]);
    assert!(s.missing[0].reason.starts_with("required (--require)"));
    assert_eq!(code, Code::Failure);
}

#[test]
fn a_required_image_imported_by_the_run_is_not_missing() {
    let b = bench_of(1);
    let settings = Settings {
        require: vec![APP.into()],
        ..b.settings()
    };
    let (code, s) = b.run(&FakeRuntime::new(), &settings);
    assert!(s.missing.is_empty());
    assert_eq!(code, Code::Success);
}

#[test]
fn the_report_file_and_the_termination_message_hold_the_outcome() {
    let b = bench_of(2);
    b.sums(&["a.tar"], &["b.tar"]);
    std::fs::write(b.dir.join("termination-log"), b"").unwrap();
    let report = b.dir.join("report.json");
    let settings = Settings {
        report: Some(report.clone()),
        ..b.settings()
    };
    b.run(&FakeRuntime::new(), &settings);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        (json["imported"].as_u64(), json["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(json["archives"][0]["file"], "a.tar");
    assert_eq!(json["archives"][0]["names"][0], APP);
    assert_eq!(json["archives"][1]["status"], "failed");
    assert_eq!(json["archives"][1]["failure"], "archive");
    let message = std::fs::read_to_string(b.dir.join("termination-log")).unwrap();
    assert!(message.starts_with("summary: 1 imported"), "{message}");
    assert!(message.contains("\nb.tar: checksum mismatch"), "{message}");
}

#[test]
fn a_report_that_cannot_be_written_fails_the_run_after_the_imports() {
    let b = bench_of(1);
    let settings = Settings {
        report: Some(b.dir.join("no/such/dir/report.json")),
        ..b.settings()
    };
    let fake = FakeRuntime::new();
    let err = b.try_run(&fake, &settings).unwrap_err();
    assert_eq!(Code::from_error(&err), Code::Failure);
    assert!(fake.image(APP).is_some(), "imported before");
}

#[test]
fn what_an_earlier_run_left_is_reclaimed_once_before_the_first_archive() {
    let b = bench_of(2);
    let leftover = crate::runtime::Leftover::Removed("lease 7".into());
    let fake = FakeRuntime::new().with_leftovers(vec![leftover]).staging();
    b.run(&fake, &b.settings());
    let trace = fake.trace();
    assert_eq!(trace[0], "reclaim");
    assert_eq!(fake.count(Op::Reclaim, None), 1);
}

#[test]
fn a_failure_to_reclaim_is_no_failure_of_the_run() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Reclaim, 1, Fault::Refused("permission denied".into()));
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(
        (code, statuses(&s)),
        (Code::Success, vec![Status::Imported])
    );
}

#[test]
fn a_runtime_on_a_node_of_another_architecture_is_refused_before_anything_is_done() {
    let b = bench_of(1);
    let fake = FakeRuntime::new().on_architecture("riscv-other");
    let err = b.try_run(&fake, &b.settings()).unwrap_err();
    assert!(
        format!("{err:#}").contains("runs on linux/riscv-other"),
        "{err:#}"
    );
    assert_eq!(Code::from_error(&err), Code::Usage);
    assert!(fake.calls().is_empty());
}

#[test]
fn an_archive_with_no_image_for_this_platform_fails_and_names_what_it_has() {
    let b = Bench::new();
    let other = if Platform::host().architecture == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let config = format!(r#"{{"architecture":"{other}","os":"linux"}}"#);
    let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": [APP], "Layers": []}]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    b.put(
        "a.tar",
        &tar_of(&[("c.json", config.as_bytes()), ("manifest.json", &manifest)]),
    );
    let fake = FakeRuntime::new();
    let (_, s) = b.run(&fake, &b.settings());
    let a = result(&s, "a.tar");
    assert_eq!(a.status, Status::Failed);
    let reason = a.reason.as_deref().unwrap();
    assert!(
        reason.contains(&format!("it has: linux/{other}")),
        "{reason}"
    );
    assert!(fake.names().is_empty());
}

#[test]
fn the_archives_found_in_subdirectories_keep_their_relative_names() {
    let b = Bench::new();
    std::fs::create_dir(b.images().join("extra")).unwrap();
    b.put("extra/web.tar", &one(WEB, "web"));
    b.put("app.tar", &one(APP, "app"));
    b.put("cache.tar", &one(CACHE, "cache"));
    let (_, s) = b.run(&FakeRuntime::new(), &b.settings());
    assert_eq!(files(&s), ["app.tar", "cache.tar", "extra/web.tar"]);
    assert_eq!(s.imported, 3);
}
