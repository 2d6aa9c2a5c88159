//! Layouts written by hand in temporary directories: what is found, the archive built for an
//! image, and the hostile cases, each refused by name while the image beside it reads.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::*;
use crate::archive::{inspect_stream, Platform};

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// An images path of its own, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let n = DIRS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("oi-layout-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", crate::digest::hex(&Sha256::digest(data)))
}

/// A layout being written: blobs into `blobs/sha256/`, entries into `index.json`.
struct Writer {
    dir: PathBuf,
    entries: Vec<serde_json::Value>,
}

impl Writer {
    fn new(dir: PathBuf) -> Writer {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(
            dir.join("oci-layout"),
            br#"{"imageLayoutVersion": "1.0.0"}"#,
        )
        .unwrap();
        Writer {
            dir,
            entries: Vec::new(),
        }
    }

    fn blob(&self, data: &[u8]) -> serde_json::Value {
        let digest = digest_of(data);
        let path = self.dir.join(
            blobs::sha256_hex(&digest)
                .map(|h| format!("blobs/sha256/{h}"))
                .unwrap(),
        );
        fs::write(path, data).unwrap();
        serde_json::json!({"digest": digest, "size": data.len()})
    }

    /// An image of one layer holding `text`; returns its manifest's descriptor.
    fn image(&self, text: &str) -> serde_json::Value {
        let host = Platform::host();
        let config = serde_json::json!({
            "architecture": host.architecture, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest_of(text.as_bytes())]},
        });
        let config = self.blob(config.to_string().as_bytes());
        let layer = self.blob(text.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config["digest"], "size": config["size"]},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer["digest"], "size": layer["size"]}],
        });
        let mut desc = self.blob(manifest.to_string().as_bytes());
        desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
        desc
    }

    /// An image of two layers, `base` under `text`; returns its manifest's descriptor.
    fn image_on(&self, base: &str, text: &str) -> serde_json::Value {
        let host = Platform::host();
        let diff_ids = [digest_of(base.as_bytes()), digest_of(text.as_bytes())];
        let config = serde_json::json!({
            "architecture": host.architecture, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = self.blob(config.to_string().as_bytes());
        let layer = |l: serde_json::Value| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": l["digest"], "size": l["size"]})
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config["digest"], "size": config["size"]},
            "layers": [layer(self.blob(base.as_bytes())), layer(self.blob(text.as_bytes()))],
        });
        let mut desc = self.blob(manifest.to_string().as_bytes());
        desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
        desc
    }

    fn entry(&mut self, mut desc: serde_json::Value, annotations: &[(&str, &str)]) {
        let a: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        desc["annotations"] = a.into();
        self.entries.push(desc);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": self.entries});
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }
}

fn names(source: &LayoutSource) -> Vec<&str> {
    source.units().iter().map(|u| u.name.as_str()).collect()
}

fn unit<'a>(source: &'a LayoutSource, name: &str) -> &'a Unit {
    source.units().iter().find(|u| u.name == name).unwrap()
}

fn read_all(source: &LayoutSource, unit: &Unit) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    source.open(unit).unwrap().reader.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn each_image_of_each_layout_is_a_unit_named_by_its_first_reference_with_all_its_names() {
    let dir = Dir::new();
    let mut app = Writer::new(dir.0.join("app"));
    let a = app.image("a");
    let b = app.image("b");
    let c = app.image("c");
    app.entry(a.clone(), &[(ANNOTATION_REF_NAME, "1.0")]);
    app.entry(b.clone(), &[(ANNOTATION_BASE_NAME, "library/zarf:2")]);
    app.entry(
        a.clone(),
        &[(ANNOTATION_REF_NAME, "docker.io/library/app:1.0")],
    );
    app.entry(c.clone(), &[]);
    let source = LayoutSource::find(&dir.0);
    let digest = c["digest"].as_str().unwrap();
    // One unit per image, in the order each first appears, named by its first entry.
    assert_eq!(
        names(&source),
        [
            "app/index.json#1.0".to_string(),
            "app/index.json#library/zarf:2".into(),
            format!("app/index.json#{digest}"),
        ]
    );
    assert!(source.refused().is_empty());
    // A bare tag gives no name; a whole reference does, and so does Zarf's base name.
    let named = |name: &str| {
        let info = source.inspect(unit(&source, name)).unwrap();
        info.images
            .iter()
            .flat_map(|i| i.names.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(named("app/index.json#1.0"), ["docker.io/library/app:1.0"]);
    assert_eq!(
        named("app/index.json#library/zarf:2"),
        ["docker.io/library/zarf:2"]
    );
    // The images path may be the layout itself.
    let inside = LayoutSource::find(&dir.0.join("app"));
    assert_eq!(names(&inside)[0], "index.json#1.0");
    assert!(inside.file(&inside.units()[0]).is_none());
}

#[test]
fn an_image_opens_as_an_oci_archive_that_reads_as_its_inspection_says() {
    let dir = Dir::new();
    let mut app = Writer::new(dir.0.join("app"));
    let a = app.image("layer of a");
    app.entry(a, &[(ANNOTATION_REF_NAME, "docker.io/library/app:1.0")]);
    let source = LayoutSource::find(&dir.0);
    let u = &source.units()[0];
    let tar = read_all(&source, u).unwrap();
    assert_eq!(tar.len() as u64, u.size);
    let streamed = inspect_stream(&tar[..], Compression::None, Limits::default()).unwrap();
    let inspected = source.inspect(u).unwrap();
    assert_eq!(streamed, inspected);
    assert_eq!(streamed.format, archive::Format::Oci);
    assert!(streamed.images[0].for_platform(&Platform::host()).is_some());
    assert_eq!(source.stamp(u), inspected.images[0].digest);
}

#[test]
fn a_layer_that_does_not_match_its_digest_fails_its_image_while_the_other_reads() {
    let dir = Dir::new();
    let mut app = Writer::new(dir.0.join("app"));
    let (a, b) = (app.image("good layer"), app.image("bad layer"));
    app.entry(a, &[(ANNOTATION_REF_NAME, "docker.io/library/a:1")]);
    app.entry(b, &[(ANNOTATION_REF_NAME, "docker.io/library/b:1")]);
    let bad = digest_of(b"bad layer");
    let path = dir
        .0
        .join("app/blobs/sha256")
        .join(blobs::sha256_hex(&bad).unwrap());
    fs::write(&path, b"BAD layer").unwrap();
    let source = LayoutSource::find(&dir.0);
    assert!(read_all(
        &source,
        unit(&source, "app/index.json#docker.io/library/a:1")
    )
    .is_ok());
    let err = read_all(
        &source,
        unit(&source, "app/index.json#docker.io/library/b:1"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(&format!("blob {bad} is corrupt")),
        "{err}"
    );
    // Inspecting reads no layer: it cannot tell, and says what the documents say.
    assert!(source
        .inspect(unit(&source, "app/index.json#docker.io/library/b:1"))
        .is_ok());
}

#[test]
fn a_missing_blob_or_a_symlinked_one_fails_its_image_by_name_while_the_other_reads() {
    let dir = Dir::new();
    let mut app = Writer::new(dir.0.join("app"));
    let (a, b, c) = (app.image("a"), app.image("b"), app.image("c"));
    app.entry(a, &[(ANNOTATION_REF_NAME, "docker.io/library/a:1")]);
    app.entry(b, &[(ANNOTATION_REF_NAME, "docker.io/library/b:1")]);
    app.entry(c, &[(ANNOTATION_REF_NAME, "docker.io/library/c:1")]);
    let blob = |text: &[u8]| {
        dir.0
            .join("app/blobs/sha256")
            .join(blobs::sha256_hex(&digest_of(text)).unwrap())
    };
    fs::remove_file(blob(b"b")).unwrap();
    let outside = dir.0.join("elsewhere");
    fs::write(&outside, b"c").unwrap();
    fs::remove_file(blob(b"c")).unwrap();
    std::os::unix::fs::symlink(&outside, blob(b"c")).unwrap();
    let source = LayoutSource::find(&dir.0);
    assert!(source
        .open(unit(&source, "app/index.json#docker.io/library/a:1"))
        .is_ok());
    let err = |name: &str| format!("{:#}", source.open(unit(&source, name)).err().unwrap());
    let missing = err("app/index.json#docker.io/library/b:1");
    assert!(
        missing.contains(&format!(
            "the layer {} is not in the layout",
            digest_of(b"b")
        )),
        "{missing}"
    );
    let symlink = err("app/index.json#docker.io/library/c:1");
    assert!(
        symlink.contains("is a symlink") && symlink.contains("elsewhere"),
        "{symlink}"
    );
}

/// A document that names its own digest cannot hash to it, so a layout that has one lies: it
/// is refused for what it is, naming it, while the image beside it reads.
#[test]
fn a_document_that_names_itself_is_refused() {
    let dir = Dir::new();
    let mut app = Writer::new(dir.0.join("app"));
    let a = app.image("a");
    app.entry(a, &[(ANNOTATION_REF_NAME, "docker.io/library/a:1")]);
    let hostile = [
        (
            "manifest",
            r#"{"schemaVersion":2,"config":{"digest":"D"},"layers":[]}"#,
            "f",
        ),
        (
            "index",
            r#"{"schemaVersion":2,"manifests":[{"digest":"D"}]}"#,
            "e",
        ),
    ];
    for (what, doc, hex) in hostile {
        let digest = format!("sha256:{}", hex.repeat(64));
        let doc = doc.replace('D', &digest);
        fs::write(dir.0.join("app/blobs/sha256").join(hex.repeat(64)), &doc).unwrap();
        app.entry(
            serde_json::json!({"digest": digest, "size": doc.len()}),
            &[(ANNOTATION_REF_NAME, &format!("docker.io/library/{what}:1"))],
        );
    }
    let source = LayoutSource::find(&dir.0);
    assert!(source
        .open(unit(&source, "app/index.json#docker.io/library/a:1"))
        .is_ok());
    for (what, _, hex) in hostile {
        let u = unit(
            &source,
            &format!("app/index.json#docker.io/library/{what}:1"),
        );
        let err = format!("{:#}", source.open(u).err().unwrap());
        let want = format!("the image {what} sha256:{} names itself", hex.repeat(64));
        assert!(err.contains(&want), "{err}");
    }
}

#[test]
fn an_index_over_the_limit_a_newer_layout_version_and_a_symlinked_index_are_refused_by_name() {
    let dir = Dir::new();
    let mut good = Writer::new(dir.0.join("good"));
    let a = good.image("a");
    good.entry(a.clone(), &[(ANNOTATION_REF_NAME, "docker.io/library/a:1")]);
    // Over the limit on images; and 100,000 entries are over the limit on metadata first.
    for (name, n) in [("big", 10_000), ("huge", 100_000)] {
        let big = Writer::new(dir.0.join(name));
        let entries = vec![serde_json::json!({"digest": a["digest"]}); n];
        let index = serde_json::json!({"schemaVersion": 2, "manifests": entries});
        fs::write(big.dir.join("index.json"), index.to_string()).unwrap();
    }
    let newer = Writer::new(dir.0.join("newer"));
    fs::write(
        newer.dir.join("oci-layout"),
        br#"{"imageLayoutVersion": "2.0.0"}"#,
    )
    .unwrap();
    let linked = Writer::new(dir.0.join("linked"));
    std::os::unix::fs::symlink(dir.0.join("good/index.json"), linked.dir.join("index.json"))
        .unwrap();
    let source = LayoutSource::find(&dir.0);
    assert_eq!(names(&source), ["good/index.json#docker.io/library/a:1"]);
    let refused: Vec<(&str, &str)> = source
        .refused()
        .iter()
        .map(|r| (r.name.as_str(), r.reason.as_str()))
        .collect();
    let want = [
        (
            "big/index.json",
            "gives 10000 images, over the limit of 2000 for one archive",
        ),
        (
            "huge/index.json",
            "over the 8.0 MiB limit for image metadata",
        ),
        ("linked/index.json", "is a symlink"),
        ("newer/index.json", "imageLayoutVersion \"2.0.0\""),
    ];
    assert_eq!(refused.len(), want.len(), "{refused:?}");
    for ((name, reason), (want_name, want_reason)) in refused.iter().zip(want) {
        assert_eq!(*name, want_name);
        assert!(reason.contains(want_reason), "{reason}");
    }
}

/// A signature `export` carried is no unit of the import and no failure; `list` finds it
/// under the image it is about.
#[test]
fn an_artifact_entry_is_no_unit_and_belongs_to_its_subject() {
    let dir = Dir::new();
    let mut app = Writer::new(dir.0.join("app"));
    let a = app.image("a");
    let sig = app.image("signature");
    let subject = a["digest"].as_str().unwrap().to_string();
    let tag = format!("reg.example/app:{}.sig", subject.replace(':', "-"));
    app.entry(a.clone(), &[(ANNOTATION_REF_NAME, "reg.example/app:1")]);
    app.entry(
        sig,
        &[
            (ANNOTATION_REF_NAME, &tag),
            (artifacts::ANNOTATION_SUBJECT, &subject),
            (artifacts::ANNOTATION_KIND, "sig"),
        ],
    );
    let source = LayoutSource::find(&dir.0);
    assert_eq!(names(&source), ["app/index.json#reg.example/app:1"]);
    assert!(source.refused().is_empty());
    let found = source.artifacts_of(unit(&source, "app/index.json#reg.example/app:1"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].reference, tag);
    assert_eq!(found[0].label(), "cosign signature");
}

/// What `deliver` and `import --kind` send for images a machine lacks: one layout, a blob
/// two images share in it once, a layer the machine holds left out and named as carried; the
/// layout received reads as the same images, the left-out layer asked of the runtime.
#[test]
fn a_plan_sends_each_blob_once_and_names_the_layers_left_out_as_carried() {
    use crate::remote::plan::Plan;
    let dir = Dir::new();
    let mut w = Writer::new(dir.0.join("bundle"));
    let base = "a base layer both images share ".repeat(100);
    let (a, b) = (w.image_on(&base, "a's own"), w.image_on(&base, "b's own"));
    w.entry(a, &[(ANNOTATION_CONTAINERD_NAME, "r/a:1")]);
    w.entry(b, &[(ANNOTATION_CONTAINERD_NAME, "r/b:1")]);
    let source = LayoutSource::find(&dir.0);
    let units: Vec<&Unit> = source.units().iter().collect();
    assert_eq!(units.len(), 2);

    // Nothing held: 2 manifests, 2 configs, 3 layers (the base once), and the layout's files.
    let mut asked = Vec::new();
    let plan = Plan::new(&source, &units, &mut |layers| {
        asked.extend(layers.iter().map(|a| (a.digest.clone(), a.chains.clone())));
        Ok(Default::default())
    })
    .unwrap();
    assert_eq!(asked.len(), 3, "{asked:?}");
    // The base is the first layer of both images: one chain ID, its diff ID.
    let base_digest = digest_of(base.as_bytes());
    let (_, base_chains) = asked.iter().find(|(d, _)| *d == base_digest).unwrap();
    assert_eq!(base_chains, &vec![base_digest.clone()]);
    assert!(asked.iter().all(|(_, c)| c.len() == 1), "{asked:?}");
    let blobs = plan
        .files
        .iter()
        .filter(|f| f.name.contains("/blobs/"))
        .count();
    assert_eq!(blobs, 7);
    assert_eq!((plan.held, plan.units.len()), (0, 2));

    // The base held: left out, and named as carried in the layout's images.json.
    let held = base_digest.clone();
    let plan = Plan::new(&source, &units, &mut |_| Ok([held.clone()].into())).unwrap();
    assert_eq!((plan.held, plan.held_bytes), (1, base.len() as u64));
    assert!(plan
        .files
        .iter()
        .all(|f| !f.name.ends_with(&base_digest[7..])));
    let mut tar = tar::Builder::new(Vec::new());
    plan.send(&mut tar, &source, ".", &|_| true).unwrap();
    let stream = tar.into_inner().unwrap();
    let staging = dir.0.join("staging");
    crate::receive::receive(&stream[..], &staging).unwrap();
    let received = LayoutSource::find(&staging);
    assert_eq!(names(&received).len(), 2, "{:?}", received.refused());
    for unit in received.units() {
        let carried = received.carried(unit).unwrap();
        assert_eq!(carried.len(), 1);
        assert_eq!(carried[0].digest, base_digest);
        assert_eq!(carried[0].chain_ids, vec![base_digest.clone()]);
        assert!(received.inspect(unit).unwrap().images[0]
            .names
            .iter()
            .any(|n| n.starts_with("docker.io/r/") || n.starts_with("r/")));
    }
}
