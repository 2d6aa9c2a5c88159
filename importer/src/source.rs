//! Where an import reads images from: the read side of the copy loop, as
//! [`crate::runtime::Runtime`] is its write side.
//!
//! A source offers units, each imported, skipped or failed on its own: for a directory of
//! archives ([`ArchiveSource`]) one archive file. It says what it refused before reading
//! anything, what it promises each unit holds without reading it (`images.json`), the
//! checksum a unit's bytes must have when it gives one (`SHA256SUMS`), and a cheap stamp that
//! changes whenever a unit does; it opens a unit as the decompressed image tar stream a
//! runtime takes, and reads what a unit holds. The import loop (`import`) asks the target
//! what it has, sends only the rest, verifies every checksum and records and reports each
//! unit's outcome, whatever the source.
//!
//! An images path is read as `images_path::ImagesPath`: its archives ([`ArchiveSource`]) and
//! its OCI layout directories (`layout::LayoutSource`) in one source.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::archive::{self, check_images_path, ArchiveInfo, Opened};
use crate::bundle::{self, BundleArchive, BundleIndex};
use crate::exit;
use crate::report::Reporter;

/// One unit of a source: imported, skipped or failed on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    /// Its identity, for the log, the report and its fingerprint, and the name `SHA256SUMS`
    /// and `images.json` give it: relative to the source, `/`-separated.
    pub(crate) name: String,
    /// Its size in bytes, as stored.
    pub(crate) size: u64,
    /// The file that holds it, which a runtime may read again itself (a second pass over a
    /// plain tar) and whose import the disk preflight weighs ([`Source::file`]); for an image
    /// of a layout, the layout's `index.json`.
    pub(crate) path: PathBuf,
}

/// Something the source names but cannot offer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// As [`Unit::name`].
    pub(crate) name: String,
    pub(crate) reason: String,
}

/// What a unit's bytes must hash to, as the source says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checksum {
    /// The source gives no checksums.
    None,
    /// The source gives checksums, but none for this unit: the warning to log.
    Unlisted(String),
    /// The hex SHA-256 the unit's bytes must have.
    Sha256(String),
}

/// The read side of an import: see the module's documentation.
pub(crate) trait Source: Sync {
    /// The warning when it offers no unit and refused none: what it looked for, and where.
    fn nothing_found(&self) -> String;

    /// Every unit, in the order they are imported.
    fn units(&self) -> &[Unit];

    /// What looked like a unit but was refused before anything of it was read (a FIFO, a
    /// directory named like an archive), each with the reason.
    fn refused(&self) -> &[Refused];

    /// Units the source lists but lacks (a bundle not copied completely), each with the reason.
    fn absent(&self) -> &[Refused];

    /// What the source promises its units hold, without reading them (`images.json`): one
    /// entry per unit it describes, also for units it lacks; empty when it promises nothing.
    fn promised(&self) -> &[BundleArchive];

    /// The promise for `unit`, if the source makes one.
    fn promise(&self, unit: &Unit) -> Option<&BundleArchive> {
        self.promised().iter().find(|a| a.file == unit.name)
    }

    /// What `unit`'s bytes must hash to.
    fn checksum(&self, unit: &Unit) -> Checksum;

    /// `unit`'s bytes as stored, for their checksum.
    fn bytes(&self, unit: &Unit) -> Result<Box<dyn Read + Send>>;

    /// What `unit` holds, read from it (within the archive reader's default limits).
    fn inspect(&self, unit: &Unit) -> Result<ArchiveInfo>;

    /// `unit` as the decompressed image tar stream a runtime takes. Opening reads its first
    /// bytes, so a unit that is empty or no image at all fails here.
    fn open(&self, unit: &Unit) -> Result<Opened>;

    /// A stamp that changes whenever `unit` does, cheap to take; `None` when none can prove
    /// it unchanged. See `import::plan::Fingerprint`.
    fn stamp(&self, unit: &Unit) -> Option<String>;

    /// The file that holds `unit` as the archive [`Source::open`] streams, which a runtime may
    /// read again itself and the disk preflight weighs; `None` when the stream is built from
    /// several files (an image of a layout).
    fn file<'a>(&self, unit: &'a Unit) -> Option<&'a Path> {
        Some(&unit.path)
    }

    /// The layers `unit`'s image uses that the bundle does not hold, because an earlier
    /// bundle carried them (`export --since`): the runtime must have them already.
    fn carried(&self, _unit: &Unit) -> Result<Vec<crate::bundle::CarriedBlob>> {
        Ok(Vec::new())
    }

    /// `unit` as an image of a layout, its blobs each once (what a machine that lacks it is
    /// sent); `None` for an archive, which is sent as stored.
    fn image_blobs(&self, _unit: &Unit) -> Option<Result<ImageBlobs>> {
        None
    }
}

/// An image of a layout as its blobs, each once: what a machine that lacks it is sent
/// (`remote::plan`), rather than the OCI archive built for it, so that a blob several images
/// share crosses once.
pub(crate) struct ImageBlobs {
    /// Its `index.json` entries, as the layout gives them.
    pub(crate) entries: Vec<serde_json::Value>,
    /// Its JSON documents (indexes, manifests, configs), then its layers.
    pub(crate) docs: Vec<BlobRef>,
    pub(crate) layers: Vec<BlobRef>,
    /// The layers its bundle does not hold, because an earlier bundle carried them.
    pub(crate) carried: Vec<crate::bundle::CarriedBlob>,
    /// Each layer's chain ID in each of its manifests: (layer digest, chain ID).
    pub(crate) chains: Vec<(String, String)>,
    /// The bundle it is read from, as that bundle's `images.json` names it (else the digest of
    /// its `index.json`): what a layer left out of a send was carried by.
    pub(crate) bundle: crate::bundle::BundleId,
}

/// One blob of an [`ImageBlobs`], opened only when it is sent.
#[derive(Clone)]
pub(crate) struct BlobRef {
    pub(crate) digest: String,
    pub(crate) size: u64,
    pub(crate) data: std::sync::Arc<dyn OpenBlob>,
}

/// A blob's bytes, checked against its digest as they are read.
pub(crate) trait OpenBlob: Send + Sync {
    fn reader(&self) -> Result<Box<dyn Read + Send>>;
}

/// The archives under an images path (`archive::discover`), with the bundle's `SHA256SUMS`
/// and `images.json` when it has them.
pub(crate) struct ArchiveSource {
    root: PathBuf,
    units: Vec<Unit>,
    refused: Vec<Refused>,
    absent: Vec<Refused>,
    sums: Option<BTreeMap<String, String>>,
    index: Option<BundleIndex>,
}

impl ArchiveSource {
    /// What `root` holds. Checksums that cannot be read are a usage error; an `images.json`
    /// that cannot be read is a warning, and the archives are then read themselves.
    pub(crate) fn open(root: &Path, reporter: &Reporter) -> Result<ArchiveSource> {
        check_images_path(root)?;
        let (found, rejected) = archive::discover(root)?;
        let sums = bundle::read_sums(root)
            .map_err(|e| exit::usage(format!("{e:#}: the bundle's checksums cannot be trusted")))?;
        let index = bundle::read_index(root).unwrap_or_else(|e| {
            reporter.warn(
                None,
                &format!("{e:#}; reading the archives themselves instead"),
            );
            None
        });
        let units: Vec<Unit> = found
            .into_iter()
            .map(|f| Unit {
                name: bundle::relative_name(root, &f.path),
                size: f.size,
                path: f.path,
            })
            .collect();
        let refused = rejected
            .into_iter()
            .map(|r| Refused {
                name: bundle::relative_name(root, &r.path),
                reason: r.reason,
            })
            .collect();
        let absent = listed_but_absent(root, sums.as_ref(), &units);
        Ok(ArchiveSource {
            root: root.to_path_buf(),
            units,
            refused,
            absent,
            sums,
            index,
        })
    }
}

/// SHA256SUMS lines whose file is missing: the bundle is incomplete. A listed file that is
/// there but no archive (a layout's `index.json`, `oci-layout`, `images.json`) is not missing.
fn listed_but_absent(
    root: &Path,
    sums: Option<&BTreeMap<String, String>>,
    units: &[Unit],
) -> Vec<Refused> {
    sums.iter()
        .flat_map(|s| s.keys())
        .filter(|file| !units.iter().any(|u| &u.name == *file))
        .filter(|file| std::fs::symlink_metadata(root.join(file)).is_err())
        .map(|file| Refused {
            name: file.clone(),
            reason: format!(
                "listed in {} but not found in {}: the bundle was not copied completely",
                bundle::SUMS_FILE,
                root.display()
            ),
        })
        .collect()
}

impl Source for ArchiveSource {
    fn nothing_found(&self) -> String {
        format!(
            "no archives (.tar, .tar.gz, .tgz, .tar.zst) in {}: nothing to import",
            self.root.display()
        )
    }

    fn units(&self) -> &[Unit] {
        &self.units
    }

    fn refused(&self) -> &[Refused] {
        &self.refused
    }

    fn absent(&self) -> &[Refused] {
        &self.absent
    }

    fn promised(&self) -> &[BundleArchive] {
        self.index
            .as_ref()
            .map(|i| i.archives.as_slice())
            .unwrap_or_default()
    }

    fn checksum(&self, unit: &Unit) -> Checksum {
        let Some(sums) = &self.sums else {
            return Checksum::None;
        };
        match sums.get(&unit.name) {
            Some(sum) => Checksum::Sha256(sum.clone()),
            None => Checksum::Unlisted(format!(
                "not listed in {}: its checksum cannot be verified",
                bundle::SUMS_FILE
            )),
        }
    }

    fn bytes(&self, unit: &Unit) -> Result<Box<dyn Read + Send>> {
        let f = File::open(&unit.path)
            .with_context(|| format!("cannot open {}", unit.path.display()))?;
        Ok(Box::new(f))
    }

    fn inspect(&self, unit: &Unit) -> Result<ArchiveInfo> {
        archive::inspect_path(&unit.path, archive::Limits::default())
    }

    /// Decompressed on a thread of its own, ahead of what reads it ([`archive::open_ahead`]).
    fn open(&self, unit: &Unit) -> Result<Opened> {
        archive::open_ahead(&unit.path)
    }

    /// Size, inode, and modification and change times in nanoseconds
    /// (`size.inode.mtime_ns.ctime_ns`), once the change time is a clock tick in the past
    /// ([`bundle::FileStamp::settled`]).
    fn stamp(&self, unit: &Unit) -> Option<String> {
        bundle::FileStamp::settled(&unit.path)
            .map(|s| format!("{}.{}.{}.{}", s.size, s.inode, s.mtime_ns, s.ctime_ns))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::archive::{tar_of, Compression, Format, Platform};
    use crate::bundle::BundleImage;
    use crate::exit::UsageError;
    use crate::report;

    static DIRS: AtomicUsize = AtomicUsize::new(0);

    /// An images path of its own, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            let n = DIRS.fetch_add(1, Ordering::SeqCst);
            let dir = std::env::temp_dir().join(format!("oi-source-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn put(&self, name: &str, data: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, data).unwrap();
            path
        }

        fn source(&self) -> ArchiveSource {
            ArchiveSource::open(&self.0, &Reporter::new(report::Format::Json)).unwrap()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A `docker save` archive of one image `name` (its config alone: enough to be read).
    fn image_tar(name: &str) -> Vec<u8> {
        let config = format!(
            r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#,
            Platform::host().architecture
        );
        let manifest = format!(r#"[{{"Config":"c.json","RepoTags":["{name}"],"Layers":[]}}]"#);
        tar_of(&[
            ("c.json", config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
        ])
    }

    fn entry(file: &str, size: u64) -> BundleArchive {
        BundleArchive {
            file: file.into(),
            size,
            sha256: String::new(),
            compression: Compression::None,
            format: Format::DockerArchive,
            images: vec![BundleImage {
                names: vec!["docker.io/library/a:1".into()],
                config_digest: "sha256:c".into(),
                manifest_digest: None,
                platform: None,
                layers: Vec::new(),
            }],
            source: None,
            stamp: None,
        }
    }

    #[test]
    fn the_units_are_the_archives_in_path_order_named_relative_to_the_images_path() {
        let dir = Dir::new();
        dir.put("b.tar", b"bb");
        dir.put("a.tar.gz", b"a");
        dir.put("sub/c.tar.zst", b"ccc");
        dir.put(".hidden.tar", b"h");
        dir.put("d.tar.part", b"p");
        dir.put("notes.txt", b"n");
        let source = dir.source();
        let units: Vec<(&str, u64)> = source
            .units()
            .iter()
            .map(|u| (u.name.as_str(), u.size))
            .collect();
        assert_eq!(units, [("a.tar.gz", 1), ("b.tar", 2), ("sub/c.tar.zst", 3)]);
        assert_eq!(source.units()[2].path, dir.0.join("sub/c.tar.zst"));
        assert!(source.refused().is_empty() && source.absent().is_empty());
        let empty = Dir::new();
        assert_eq!(
            empty.source().nothing_found(),
            format!(
                "no archives (.tar, .tar.gz, .tgz, .tar.zst) in {}: nothing to import",
                empty.0.display()
            )
        );
    }

    #[test]
    fn a_path_named_like_an_archive_that_is_no_file_is_refused_before_reading() {
        let dir = Dir::new();
        dir.put("a.tar", b"a");
        std::fs::create_dir_all(dir.0.join("dir.tar")).unwrap();
        let source = dir.source();
        assert_eq!(source.units().len(), 1);
        let refused = source.refused();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].name, "dir.tar");
        assert!(!refused[0].reason.is_empty());
    }

    #[test]
    fn what_images_json_promises_is_given_per_unit_and_for_units_the_bundle_lacks() {
        let dir = Dir::new();
        dir.put("a.tar", b"a");
        dir.put("b.tar", b"b");
        assert!(dir.source().promised().is_empty(), "no images.json");
        let index = BundleIndex {
            archives: vec![entry("a.tar", 1), entry("gone.tar", 5)],
            ..BundleIndex::new()
        };
        bundle::write_index(&dir.0, &index).unwrap();
        let source = dir.source();
        let files: Vec<&str> = source.promised().iter().map(|a| a.file.as_str()).collect();
        assert_eq!(files, ["a.tar", "gone.tar"]);
        let [a, b] = source.units() else {
            panic!("{:?}", source.units())
        };
        assert_eq!(source.promise(a), Some(&entry("a.tar", 1)));
        assert_eq!(source.promise(b), None);
        // An images.json that cannot be read is a warning: the archives are read instead.
        dir.put(bundle::INDEX_FILE, b"{not json");
        assert!(dir.source().promised().is_empty());
    }

    #[test]
    fn sha256sums_gives_each_units_checksum_and_names_the_files_it_lists_but_lacks() {
        let dir = Dir::new();
        dir.put("a.tar", b"a");
        dir.put("b.tar", b"b");
        let source = dir.source();
        assert_eq!(source.checksum(&source.units()[0]), Checksum::None);
        let sum = bundle::sha256_file(&dir.0.join("a.tar")).unwrap();
        let sums = BTreeMap::from([
            ("a.tar".to_string(), sum.clone()),
            ("gone.tar".to_string(), "0".repeat(64)),
        ]);
        bundle::write_sums(&dir.0, &sums).unwrap();
        let source = dir.source();
        let [a, b] = source.units() else {
            panic!("{:?}", source.units())
        };
        assert_eq!(source.checksum(a), Checksum::Sha256(sum.clone()));
        assert_eq!(
            bundle::sha256_reader(source.bytes(a).unwrap()).unwrap(),
            sum
        );
        assert_eq!(
            source.checksum(b),
            Checksum::Unlisted("not listed in SHA256SUMS: its checksum cannot be verified".into())
        );
        let absent = source.absent();
        assert_eq!(absent.len(), 1);
        assert_eq!(absent[0].name, "gone.tar");
        assert_eq!(
            absent[0].reason,
            format!(
                "listed in SHA256SUMS but not found in {}: the bundle was not copied completely",
                dir.0.display()
            )
        );
        // Checksums that cannot be read cannot be trusted: a usage error.
        dir.put(bundle::SUMS_FILE, b"not a checksum line\n");
        let err = ArchiveSource::open(&dir.0, &Reporter::new(report::Format::Json))
            .err()
            .unwrap();
        assert!(err.is::<UsageError>(), "{err:#}");
        assert!(format!("{err:#}").ends_with("the bundle's checksums cannot be trusted"));
    }

    #[test]
    fn a_unit_opens_as_its_tar_stream_and_reads_as_the_images_it_holds() {
        let dir = Dir::new();
        let tar = image_tar("docker.io/library/a:1");
        dir.put("a.tar", &tar);
        dir.put("empty.tar", b"");
        let source = dir.source();
        let [a, empty] = source.units() else {
            panic!("{:?}", source.units())
        };
        let mut opened = source.open(a).unwrap();
        assert_eq!(opened.compression, Compression::None);
        let mut read = Vec::new();
        opened.reader.read_to_end(&mut read).unwrap();
        assert_eq!(read, tar);
        let info = source.inspect(a).unwrap();
        assert_eq!(info.images.len(), 1);
        assert_eq!(info.images[0].names, ["docker.io/library/a:1"]);
        let err = source.open(empty).err().unwrap();
        assert!(format!("{err:#}").contains("empty"), "{err:#}");
    }

    #[test]
    fn an_images_path_gives_its_archives_then_its_layouts_images_each_read_by_its_own_source() {
        let dir = Dir::new();
        dir.put("a.tar", &image_tar("docker.io/library/a:1"));
        dir.put("oci/oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let digest = format!("sha256:{}", "a".repeat(64));
        let entry = format!(
            r#"{{"manifests":[{{"digest":"{digest}","annotations":{{"org.opencontainers.image.ref.name":"example.com/b:1"}}}}]}}"#
        );
        dir.put("oci/index.json", entry.as_bytes());
        let sum = bundle::sha256_file(&dir.0.join("a.tar")).unwrap();
        bundle::write_sums(
            &dir.0,
            &BTreeMap::from([("a.tar".to_string(), sum.clone())]),
        )
        .unwrap();
        let source =
            crate::images_path::ImagesPath::open(&dir.0, &Reporter::new(report::Format::Json))
                .unwrap();
        let [a, b] = source.units() else {
            panic!("{:?}", source.units())
        };
        assert_eq!(
            (a.name.as_str(), b.name.as_str()),
            ("a.tar", "oci/index.json#example.com/b:1")
        );
        assert_eq!(source.checksum(a), Checksum::Sha256(sum));
        // A layout's blobs are checked against their digests: no SHA256SUMS line is asked for.
        assert_eq!(source.checksum(b), Checksum::None);
        assert_eq!(source.file(a), Some(a.path.as_path()));
        assert_eq!(source.file(b), None);
        assert_eq!(source.stamp(b), Some(digest.clone()));
        let err = format!("{:#}", source.open(b).err().unwrap());
        assert!(
            err.contains(&format!("{digest} is not in the layout")),
            "{err}"
        );
        assert!(source.refused().is_empty() && source.absent().is_empty());
    }

    /// `cp -p` of another archive of the same size over this one keeps its name, size and
    /// modification time; only the change time tells.
    #[test]
    fn a_file_rewritten_in_place_with_its_old_size_and_mtime_gets_a_new_stamp() {
        let dir = Dir::new();
        let path = dir.put("app.tar", b"app:1.0.1");
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let source = dir.source();
        let unit = &source.units()[0];
        let before = source.stamp(unit);
        assert!(before.is_some());
        assert_eq!(source.stamp(unit), before, "unchanged, the same stamp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(b"app:1.0.2").unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(mtime))
            .unwrap();
        drop(f);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.modified().unwrap()), (9, mtime));
        assert_ne!(source.stamp(unit), before);
    }
}
