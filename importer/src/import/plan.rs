//! Planning: what the runtime has ([`PresentSet`]), each unit's checksum and [`Fingerprint`],
//! who claims which name ([`claims`]), and for every unit of the source whether it is skipped
//! as present (then labelled for the release and its fingerprint labels restamped) or
//! imported ([`plan`]).

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::archive::{config_digests, unique};
use super::owners::Owners;
use super::{platform_matches, Run};
use crate::archive::{ArchiveInfo, Platform};
use crate::bundle::{self, BundleArchive};
use crate::failure::Kind;
use crate::labels::LABEL_ARCHIVE_PREFIX;
use crate::report::{ArchiveResult, Event, Reporter};
use crate::runtime::{Present, Runtime};
use crate::source::{Checksum, Source, Unit};

/// What planning decided: the results it settled (refused paths, files SHA256SUMS lists but
/// the bundle lacks, archives already present), the archives to import, every archive found
/// (in plan order, by `Planned::index`), and who claims which name.
pub(super) struct Plan {
    pub(super) results: Vec<ArchiveResult>,
    pub(super) todo: Vec<Planned>,
    pub(super) all: Vec<Planned>,
    pub(super) owners: Owners,
}

/// What to do with one archive.
#[derive(Clone)]
pub(super) struct Planned {
    /// Its place in the plan's order (the source's units, in its order).
    pub(super) index: usize,
    pub(super) unit: Unit,
    pub(super) fingerprint: Fingerprint,
    pub(super) expected_sha256: Option<String>,
}

/// Decide for every unit of the source: what it refused and what it lacks fail at once,
/// units already present are skipped (labelled for this release too), the rest is to import.
/// Results decided here are already in the log.
pub(super) fn plan(ctx: &Run<'_>, release_key: Option<&str>) -> Result<Plan> {
    let (args, rt, reporter, source) = (ctx.args, ctx.runtime, ctx.reporter, ctx.source);
    let mut results: Vec<ArchiveResult> = Vec::new();
    let mut emit = |r: ArchiveResult| {
        reporter.emit(&Event::Archive(&r));
        results.push(r);
    };
    for r in source.refused() {
        emit(ArchiveResult::failed(
            &r.name,
            0,
            Kind::Archive,
            r.reason.clone(),
        ));
    }
    if source.units().is_empty() && source.refused().is_empty() && source.absent().is_empty() {
        let exit = if args.allow_empty {
            "exiting 0 (--allow-empty)"
        } else {
            "exiting 1: put the bundle there, or pass --allow-empty for a node that has none on purpose"
        };
        reporter.warn(None, &format!("{}; {exit}", source.nothing_found()));
    }
    for r in source.absent() {
        emit(ArchiveResult::failed(
            &r.name,
            0,
            Kind::Bundle,
            r.reason.clone(),
        ));
    }
    let all: Vec<Planned> = source
        .units()
        .iter()
        .enumerate()
        .map(|(index, unit)| Planned {
            index,
            fingerprint: fingerprint(&unit.name, source.stamp(unit)),
            expected_sha256: expected_sha256(source, unit, reporter),
            unit: unit.clone(),
        })
        .collect();
    let (owners, read) = claims(ctx, &all);
    let mut todo: Vec<Planned> = Vec::new();
    for p in &all {
        if !args.force {
            let lost = |name: &str| owners.loses(name, p.index);
            let known = Known {
                present: ctx.present,
                source,
                info: read.get(&p.index),
                lost: &lost,
            };
            if let Some(r) = skip_result(&known, p, reporter) {
                if let (Some(key), false) = (release_key, args.dry_run) {
                    label_for_release(rt, ctx.present, &r.names, key, &p.unit.name, reporter);
                }
                if !args.dry_run {
                    restamp(rt, ctx.present, p, &r.names, reporter);
                }
                emit(r);
                continue;
            }
        }
        todo.push(p.clone());
    }
    Ok(Plan {
        results,
        todo,
        all,
        owners,
    })
}

/// The checksum the source gives `unit`, with a warning when it gives checksums but none for
/// this unit.
fn expected_sha256(source: &dyn Source, unit: &Unit, reporter: &Reporter) -> Option<String> {
    match source.checksum(unit) {
        Checksum::Sha256(sum) => Some(sum),
        Checksum::None => None,
        Checksum::Unlisted(why) => {
            reporter.warn(Some(&unit.name), &why);
            None
        }
    }
}

/// Who claims which name before anything is imported: `images.json` for the archives it
/// describes (listed claims); the fingerprint labels of present images for the archives of
/// another tool that a runtime with labels has seen; and, on a runtime without labels that
/// has images, each such archive's own reading (kept, so the skip check does not read it
/// again).
fn claims(ctx: &Run<'_>, all: &[Planned]) -> (Owners, HashMap<usize, ArchiveInfo>) {
    let mut owners = Owners::default();
    let mut read = HashMap::new();
    let described = |p: &Planned| {
        ctx.source
            .promise(&p.unit)
            .filter(|e| e.size == p.unit.size)
    };
    for p in all {
        let Some(entry) = described(p) else { continue };
        for img in &entry.images {
            if platform_matches(img.platform.as_deref(), &ctx.platform) {
                for name in &img.names {
                    owners.add(name, p.index, Some(&img.config_digest), true);
                }
            }
        }
    }
    let by_fp: HashMap<&str, usize> = all
        .iter()
        .map(|p| (p.fingerprint.key.as_str(), p.index))
        .collect();
    for present in ctx.present.by_name.values() {
        for (key, value) in &present.labels {
            let Some(fp) = key.strip_prefix(LABEL_ARCHIVE_PREFIX) else {
                continue;
            };
            let (Some(&i), Some((_, config, _))) = (by_fp.get(fp), fingerprint_value(value)) else {
                continue;
            };
            owners.add(&present.name, i, Some(config), false);
        }
    }
    if ctx.runtime.keeps_labels() || ctx.present.by_name.is_empty() || ctx.args.force {
        return (owners, read);
    }
    for p in all.iter().filter(|p| described(p).is_none()) {
        let Ok(info) = ctx.source.inspect(&p.unit) else {
            continue;
        };
        for img in &info.images {
            let config = img
                .for_platform(&ctx.platform)
                .and_then(|pi| pi.config_digest.as_deref());
            for name in &img.names {
                owners.add(name, p.index, config, false);
            }
        }
        read.insert(p.index, info);
    }
    (owners, read)
}

/// What the skip check of one archive goes by.
struct Known<'a> {
    present: &'a PresentSet,
    /// Where the archive comes from: what it promises the archive holds, and its reading.
    source: &'a dyn Source,
    /// The archive's own reading, when planning read it already.
    info: Option<&'a ArchiveInfo>,
    /// Whether another archive wins a name this one gives.
    lost: &'a dyn Fn(&str) -> bool,
}

/// The result for an archive that need not be imported, if it need not.
fn skip_result(k: &Known<'_>, p: &Planned, reporter: &Reporter) -> Option<ArchiveResult> {
    let (file, f) = (p.unit.name.as_str(), &p.unit);
    let skipped = |names, digests| ArchiveResult::skipped(file, f.size, names, digests);
    if let Some(entry) = k.source.promise(f) {
        if entry.size != f.size {
            reporter.warn(
                Some(file),
                &format!(
                    "{} describes a file of {} bytes, this one has {}: reading the archive itself",
                    bundle::INDEX_FILE,
                    entry.size,
                    f.size
                ),
            );
        } else if k
            .present
            .covers_bundle_entry(entry, &Platform::host(), k.lost)
        {
            let platform = Platform::host();
            // Every name of this node's images, each once: all are labelled for the release.
            let here = || {
                entry
                    .images
                    .iter()
                    .filter(|i| platform_matches(i.platform.as_deref(), &platform))
            };
            let digest_names = k.present.digest_names;
            return Some(skipped(
                unique(
                    here()
                        .flat_map(|i| i.names.clone())
                        .filter(|n| findable(n, digest_names)),
                ),
                unique(here().map(|i| i.config_digest.clone())),
            ));
        } else {
            return None;
        }
    }
    let labelled = k.present.by_fingerprint(&p.fingerprint, k.lost);
    if let Some((tagged, true)) = &labelled {
        let mut names: Vec<String> = tagged.iter().map(|p| p.name.clone()).collect();
        names.sort();
        let mut digests: Vec<String> = tagged
            .iter()
            .filter_map(|p| p.config_digest.clone())
            .collect();
        digests.sort();
        digests.dedup();
        return Some(skipped(names, digests));
    }
    // Not proven to be the file imported before: what the archive holds decides. Planning has
    // read it on a runtime without labels; here it is read when the labels name this path
    // with another stamp (a copy, a touch, a hard link, or another file).
    let read;
    let info = match (k.info, labelled.is_some()) {
        (Some(info), _) => info,
        (None, true) => {
            read = k.source.inspect(f).ok()?;
            &read
        }
        (None, false) => return None,
    };
    let platform = Platform::host();
    if !k.present.covers_archive(info, &platform, k.lost) {
        return None;
    }
    Some(skipped(
        unique(info.images.iter().flat_map(|i| i.names.clone())),
        config_digests(info, &platform),
    ))
}

/// The fingerprint labels of an archive skipped by what it holds take its stamp now, so the
/// next run skips it without reading it.
fn restamp(
    rt: &dyn Runtime,
    present: &PresentSet,
    p: &Planned,
    names: &[String],
    reporter: &Reporter,
) {
    let (Some(stamp), true) = (p.fingerprint.stamp.as_deref(), rt.keeps_labels()) else {
        return;
    };
    let key = format!("{LABEL_ARCHIVE_PREFIX}{}", p.fingerprint.key);
    for name in names {
        let Some(value) = present.by_name.get(name).and_then(|p| p.labels.get(&key)) else {
            continue;
        };
        let Some((n, config, old)) = fingerprint_value(value) else {
            continue;
        };
        if old == Some(stamp) {
            continue;
        }
        let labels = BTreeMap::from([(key.clone(), format!("{n}/{config}/{stamp}"))]);
        if let Err(e) = rt.label(std::slice::from_ref(name), &labels) {
            reporter.warn(
                Some(&p.unit.name),
                &format!("{e:#}: the next run reads the archive again"),
            );
        }
    }
}

/// Images already present that this release uses are labelled with it too: another release
/// may have imported them, and pruning that release must not take them from this one.
fn label_for_release(
    rt: &dyn Runtime,
    present: &PresentSet,
    names: &[String],
    key: &str,
    file: &str,
    reporter: &Reporter,
) {
    let missing: Vec<String> = names
        .iter()
        .filter(|n| {
            present
                .by_name
                .get(*n)
                .is_some_and(|p| !p.labels.contains_key(key))
        })
        .cloned()
        .collect();
    if missing.is_empty() {
        return;
    }
    let labels = BTreeMap::from([(key.to_string(), "true".to_string())]);
    if let Err(e) = rt.label(&missing, &labels) {
        reporter.warn(
            Some(file),
            &format!("{e:#}: `prune` of another release could remove this release's images"),
        );
    }
}

/// An archive's identity across runs, kept as a label on the images it gave:
/// `io.offline-images.archive.<key>=<images>/<config digest>/<stamp>`.
///
/// A bundle's `images.json` says which images an archive holds, so a re-run can tell what is
/// present without reading the archive. A foreign archive (no `images.json`) would have to be
/// read to learn its contents; instead the images it gave carry this label, and the next run
/// skips the archive without reading it when that many images still carry it, each with the
/// config digest it had, and the file's stamp is the one recorded.
///
/// The stamp must prove the file unchanged, not suggest it: name, size and modification time
/// do not, since `cp -p`, `rsync -a` and tools that normalise timestamps give a replaced file
/// the old ones. So an archive's stamp ([`Source::stamp`]) is [`bundle::FileStamp`]: size, inode, and modification and change
/// times in nanoseconds, once the change time is a clock tick in the past. No user-space tool
/// can set the change time: writing the file in place, or renaming another one over it, gives
/// it a new one or a new inode. Where the stamp differs (the file was replaced, touched,
/// copied again, hard-linked or chmod-ed), the archive is read at planning and skipped only
/// when what it holds is present; the label then takes the new stamp. A file that cannot be
/// stamped (a filesystem without sub-second times) is always read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fingerprint {
    /// The archive's path in the bundle, hashed: the label's key.
    pub(super) key: String,
    /// `size.inode.mtime_ns.ctime_ns`; None when the file cannot be stamped.
    pub(super) stamp: Option<String>,
}

/// The fingerprint of the unit named `name` (its path in the bundle) whose stamp is `stamp`
/// ([`Source::stamp`]).
fn fingerprint(name: &str, stamp: Option<String>) -> Fingerprint {
    Fingerprint {
        key: bundle::hex(&Sha256::digest(name.as_bytes()))[..32].to_string(),
        stamp,
    }
}

/// A fingerprint label's value: (images, config digest, stamp); the stamp is None in labels
/// written before stamps were recorded, or for a file that could not be stamped.
fn fingerprint_value(value: &str) -> Option<(usize, &str, Option<&str>)> {
    let mut parts = value.splitn(3, '/');
    let n = parts.next()?.parse().ok()?;
    let config = parts.next()?;
    let stamp = parts.next().filter(|s| *s != "-");
    Some((n, config, stamp))
}

/// Present images by name.
pub(super) struct PresentSet {
    pub(super) by_name: HashMap<String, Present>,
    /// Name -> manifest or index digest, for a runtime that knows no config digests
    /// (Docker's containerd image store).
    targets: HashMap<String, String>,
    /// Whether the runtime lists digest names (`Runtime::lists_digest_names`).
    digest_names: bool,
}

impl PresentSet {
    pub(super) fn new(list: Vec<Present>) -> PresentSet {
        PresentSet {
            by_name: list.into_iter().map(|p| (p.name.clone(), p)).collect(),
            targets: HashMap::new(),
            digest_names: true,
        }
    }

    /// The present images of `rt`, with the digests it knows them by.
    pub(super) fn of(rt: &dyn Runtime) -> Result<PresentSet> {
        let mut set = PresentSet::new(rt.present()?);
        set.targets = rt.target_digests()?.into_iter().collect();
        set.digest_names = rt.lists_digest_names();
        Ok(set)
    }

    /// Of an image's `names`, those this runtime can be asked for by name.
    fn findable<'n>(&self, names: &'n [String]) -> Vec<&'n String> {
        names
            .iter()
            .filter(|n| findable(n, self.digest_names))
            .collect()
    }

    /// `name` is present as the image of config `config`, or, where the runtime knows no
    /// config digest, as the image whose manifest or index digest is one of `digests`.
    fn has_image(&self, name: &str, config: &str, digests: &[&str]) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|p| match &p.config_digest {
                Some(c) => c == config,
                None => self
                    .targets
                    .get(name)
                    .is_some_and(|t| digests.contains(&t.as_str())),
            })
    }

    fn has_config(&self, config: &str, digests: &[&str]) -> bool {
        self.by_name.values().any(|p| {
            p.config_digest.as_deref() == Some(config)
                || (p.config_digest.is_none()
                    && self
                        .targets
                        .get(&p.name)
                        .is_some_and(|t| digests.contains(&t.as_str())))
        })
    }

    /// Skip by images.json: every image of the archive for `platform` present under each
    /// of its names (the tag and the digest names alike), with the same config digest, but
    /// for the names another archive wins (`lost`).
    fn covers_bundle_entry(
        &self,
        entry: &BundleArchive,
        platform: &Platform,
        lost: &dyn Fn(&str) -> bool,
    ) -> bool {
        let images: Vec<&bundle::BundleImage> = entry
            .images
            .iter()
            .filter(|img| platform_matches(img.platform.as_deref(), platform))
            .collect();
        !images.is_empty()
            && images.iter().all(|img| {
                let digests: Vec<&str> = img.manifest_digest.as_deref().into_iter().collect();
                let names = self.findable(&img.names);
                if names.is_empty() {
                    self.has_config(&img.config_digest, &digests)
                } else {
                    names
                        .iter()
                        .all(|n| lost(n) || self.has_image(n, &img.config_digest, &digests))
                }
            })
    }

    /// Skip by the archive's own reading (a runtime without labels): every image of the
    /// archive present for `platform` under each of its names, as the same image.
    fn covers_archive(
        &self,
        info: &ArchiveInfo,
        platform: &Platform,
        lost: &dyn Fn(&str) -> bool,
    ) -> bool {
        !info.images.is_empty()
            && info.images.iter().all(|img| {
                let Some(p) = img.for_platform(platform) else {
                    return false;
                };
                let Some(config) = p.config_digest.as_deref() else {
                    return false;
                };
                let digests: Vec<&str> = [img.digest.as_deref(), p.manifest_digest.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                let names = self.findable(&img.names);
                if names.is_empty() {
                    self.has_config(config, &digests)
                } else {
                    names
                        .iter()
                        .all(|n| lost(n) || self.has_image(n, config, &digests))
                }
            })
    }

    /// Skip by fingerprint: as many images carry the archive's fingerprint label as it gave,
    /// each still with the config digest it was imported with, but for the names another
    /// archive wins (`lost`).
    /// The second value says whether every label records `stamp`: only then is the file
    /// proven to be the one imported.
    fn by_fingerprint(
        &self,
        fp: &Fingerprint,
        lost: &dyn Fn(&str) -> bool,
    ) -> Option<(Vec<&Present>, bool)> {
        let key = format!("{LABEL_ARCHIVE_PREFIX}{}", fp.key);
        let mut want = None;
        let mut tagged = Vec::new();
        let mut same_file = fp.stamp.is_some();
        for p in self.by_name.values() {
            let Some(value) = p.labels.get(&key) else {
                continue;
            };
            let (n, config, stamp) = fingerprint_value(value)?;
            want = Some(n);
            if p.config_digest.as_deref() != Some(config) && !lost(&p.name) {
                return None;
            }
            same_file &= stamp.is_some() && stamp == fp.stamp.as_deref();
            tagged.push(p);
        }
        let want = want?;
        (want > 0 && tagged.len() >= want).then_some((tagged, same_file))
    }
}

/// Whether a runtime can be asked for `name` by name: a digest name (`repo@sha256:…`) only
/// where it lists digest names.
pub(super) fn findable(name: &str, digest_names: bool) -> bool {
    digest_names || !name.contains('@')
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::archive;

    pub(in crate::import) fn present(name: &str, config: &str) -> Present {
        Present {
            name: name.into(),
            config_digest: Some(config.into()),
            labels: BTreeMap::new(),
        }
    }

    /// An images.json entry of a registry export: one image per platform, each with the tag
    /// and its digest names.
    pub(in crate::import) fn registry_entry() -> BundleArchive {
        let image = |arch: &str, manifest: &str, config: &str| bundle::BundleImage {
            names: vec![
                "reg/app:1".into(),
                "reg/app@sha256:index".into(),
                format!("reg/app@{manifest}"),
            ],
            config_digest: config.into(),
            manifest_digest: Some(manifest.into()),
            platform: Some(format!("linux/{arch}")),
            layers: Vec::new(),
        };
        BundleArchive {
            file: "app.tar".into(),
            size: 1,
            sha256: String::new(),
            compression: archive::Compression::None,
            format: archive::Format::Oci,
            images: vec![
                image("amd64", "sha256:m-amd", "sha256:c-amd"),
                image("arm64", "sha256:m-arm", "sha256:c-arm"),
            ],
            source: None,
            stamp: None,
        }
    }

    pub(in crate::import) fn amd64() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    #[test]
    fn an_archive_is_skipped_only_when_its_digest_names_are_present_too() {
        let entry = registry_entry();
        let none = |_: &str| false;
        let all = vec![
            present("reg/app:1", "sha256:c-amd"),
            present("reg/app@sha256:index", "sha256:c-amd"),
            present("reg/app@sha256:m-amd", "sha256:c-amd"),
        ];
        // The node's platform alone: the arm64 image's names are not looked for.
        assert!(PresentSet::new(all.clone()).covers_bundle_entry(&entry, &amd64(), &none));
        for gone in 0..all.len() {
            let mut some = all.clone();
            let name = some.remove(gone).name;
            assert!(
                !PresentSet::new(some).covers_bundle_entry(&entry, &amd64(), &none),
                "skipped without {name}"
            );
        }
        // A runtime that lists no digest names (Docker) is asked for the tag alone.
        let mut docker = PresentSet::new(vec![present("reg/app:1", "sha256:c-amd")]);
        docker.digest_names = false;
        assert!(docker.covers_bundle_entry(&entry, &amd64(), &none));
    }

    #[test]
    fn the_fingerprint_key_is_the_path_in_the_bundle_and_the_stamp_the_sources() {
        let a = fingerprint("a.tar", Some("1.2.3.4".into()));
        assert_eq!(a.key.len(), 32);
        assert_eq!(a.stamp.as_deref(), Some("1.2.3.4"));
        let b = fingerprint("b.tar", Some("1.2.3.4".into()));
        assert_ne!(a.key, b.key);
        assert_eq!(a.stamp, b.stamp);
        assert_eq!(fingerprint("a.tar", None).key, a.key);
    }

    #[test]
    fn an_archive_is_skipped_by_fingerprint_only_when_all_its_images_carry_it() {
        let p = |name: &str, fp: &str, value: &str| Present {
            name: name.into(),
            config_digest: Some("sha256:c".into()),
            labels: [(format!("{LABEL_ARCHIVE_PREFIX}{fp}"), value.to_string())].into(),
        };
        let set = PresentSet::new(vec![
            p("a:1", "f1", "2/sha256:c/1.2.3.4"),
            p("b:1", "f1", "2/sha256:c/1.2.3.4"),
            p("c:1", "f2", "2/sha256:c/1.2.3.4"),
            p("d:1", "f4", "1/sha256:other/1.2.3.4"),
            p("e:1", "f5", "1/sha256:c"),
        ]);
        let fp = |key: &str| Fingerprint {
            key: key.into(),
            stamp: Some("1.2.3.4".into()),
        };
        let none = |_: &str| false;
        let (tagged, same) = set.by_fingerprint(&fp("f1"), &none).unwrap();
        assert_eq!((tagged.len(), same), (2, true));
        let other = Fingerprint {
            stamp: Some("1.2.3.5".into()),
            ..fp("f1")
        };
        assert!(
            !set.by_fingerprint(&other, &none).unwrap().1,
            "another stamp is no proof"
        );
        assert!(
            set.by_fingerprint(&fp("f2"), &none).is_none(),
            "one of two images is gone"
        );
        assert!(set.by_fingerprint(&fp("f3"), &none).is_none());
        assert!(
            set.by_fingerprint(&fp("f4"), &none).is_none(),
            "the config changed since"
        );
        assert!(
            !set.by_fingerprint(&fp("f5"), &none).unwrap().1,
            "a label without a stamp is no proof"
        );
    }
}
