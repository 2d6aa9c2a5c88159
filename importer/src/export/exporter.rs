//! Exporting each image: `--jobs` workers take the references in order; each image comes
//! from the registry engine, else (auto) from the local engine when the registry does not
//! serve it, and is skipped when the bundle already holds it unchanged (docs/ARCHITECTURE.md,
//! "Data flow: export").

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;

use super::compress;
use super::engine::Engine;
use super::meter;
use super::registry::{self, error::RegistryError, layout::Blob};
use super::write::{Bundle, Intact, TempFile};
use crate::archive::{human_bytes, ArchiveInfo, Compression, Platform};
use crate::bundle::{BundleArchive, BundleImage, BundleLayer, BundleSource, LayoutReference};
use crate::reference::Reference;

/// How one image went.
pub(super) enum Outcome {
    Written { bytes: u64 },
    UpToDate,
    Failed(String),
}

/// One line per event on stderr; a person reads it later, so no carriage returns unless
/// stderr is a terminal (where the line clears the status line first).
pub(super) fn progress(n: usize, total: usize, r: &Reference, event: &str) {
    eprintln!("{}[{n}/{total}] {r}: {event}", meter::line_start());
}

/// Whether an image the registry engine failed is looked for in the local engine: only one
/// the registry does not serve (it answered 404) or a registry out of reach; a refused login
/// or a damaged blob stays a failure.
fn look_locally(err: &anyhow::Error) -> bool {
    RegistryError::find(err).is_some_and(RegistryError::not_served)
}

/// Everything one image's export needs.
pub(super) struct Exporter<'a> {
    /// docker, podman or skopeo: the engine, or (auto) for images the registry does not serve.
    pub engine: &'a super::LocalEngine,
    pub registry: Option<&'a registry::Registry>,
    /// The platform the local engines export: the first asked.
    pub platform: &'a Platform,
    pub platforms: &'a [Platform],
    pub bundle: &'a Bundle,
    /// `--format layout`: the layout every image's blobs go into.
    pub layout: Option<&'a super::layout::Layout>,
    /// Where skopeo writes before the archive is compressed.
    pub scratch: &'a Path,
    /// The extension and compression of the archives the local engines write.
    pub ext: &'static str,
    pub compression: Compression,
    pub no_cache: bool,
    /// Compression threads per image.
    pub threads: usize,
    pub total: usize,
    pub meter: meter::Meter,
    /// Carry each image's signatures, attestations, SBOMs and referrers (a layout only).
    pub signatures: bool,
    /// `--verify-key`, `--verify-trusted-root`: take only images signed by one of these
    /// keys or a certificate the policy takes.
    pub verifier: Option<&'a super::signatures::verify::Verifier>,
}

impl Exporter<'_> {
    /// Export every reference, `jobs` at a time, with the terminal meter drawn meanwhile;
    /// the outcome of each, in order (`None`: not reached).
    pub(super) fn export_all(&self, refs: &[Reference], jobs: usize) -> Vec<Option<Outcome>> {
        let next = AtomicUsize::new(0);
        let outcomes: Mutex<Vec<Option<Outcome>>> =
            Mutex::new((0..refs.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            let drawer = s.spawn(|| self.meter.draw());
            let workers: Vec<_> = (0..jobs)
                .map(|_| {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(r) = refs.get(i) else { return };
                        let outcome = self.export_or_fail(i + 1, r);
                        crate::sync::lock(&outcomes)[i] = Some(outcome);
                    })
                })
                .collect();
            for w in workers {
                let _ = w.join();
            }
            self.meter.finish();
            let _ = drawer.join();
        });
        crate::sync::into_inner(outcomes)
    }

    /// Export one image; a failure is logged and becomes its outcome.
    fn export_or_fail(&self, n: usize, r: &Reference) -> Outcome {
        self.meter.begin();
        let result = self.export_one(n, r);
        self.meter.end();
        result.unwrap_or_else(|e| {
            let msg = format!("{e:#}");
            progress(n, self.total, r, &format!("FAILED: {msg}"));
            Outcome::Failed(msg)
        })
    }

    /// The registry engine, else (auto) the local engine for an image only it holds.
    fn export_one(&self, n: usize, r: &Reference) -> Result<Outcome> {
        let Some(reg) = self.registry else {
            let engine = self.engine.get().expect("an engine was detected");
            return self.export_local(n, r, engine, true);
        };
        let attempt = match self.layout {
            Some(layout) => self.export_to_layout(n, r, reg, layout),
            None => self.export_registry(n, r, reg),
        };
        let err = match attempt {
            Ok(o) => return Ok(o),
            Err(e) => e,
        };
        let Some(engine) = look_locally(&err).then(|| self.engine.get()).flatten() else {
            return Err(err);
        };
        if engine.config_digest(r, self.platform).is_err() {
            return Err(anyhow::anyhow!(
                "{err:#}; and {} does not hold it either",
                engine.kind
            ));
        }
        if self.layout.is_some() {
            return Err(anyhow::anyhow!(
                "{err:#}; {} holds it locally, but --format layout takes images from \
                 registries only (export it with --format archives)",
                engine.kind
            ));
        }
        progress(
            n,
            self.total,
            r,
            &format!(
                "not exported from the registry ({err:#}); {} holds it locally, so it is saved \
                 with {} (its digest is that engine's, not a registry's)",
                engine.kind, engine.kind
            ),
        );
        self.export_local(n, r, engine, false)
    }

    fn export_registry(
        &self,
        n: usize,
        r: &Reference,
        reg: &registry::Registry,
    ) -> Result<Outcome> {
        let file = format!("{}.tar", r.file_stem());
        let recorded = self.bundle.registry_digest(&file, self.platforms);
        if let Some(digest) = recorded.filter(|_| !self.no_cache) {
            progress(n, self.total, r, "checking the registry");
            // The file is looked at only when the registry still serves the digest it holds:
            // a changed image is written again anyway.
            if reg.resolve(r)? == digest {
                let how = self.bundle.intact(&file)?;
                if how != Intact::No {
                    let how = how.shown();
                    progress(
                        n,
                        self.total,
                        r,
                        &format!("skipped (up to date: {file}{how})"),
                    );
                    return Ok(Outcome::UpToDate);
                }
            }
        }
        progress(n, self.total, r, "fetching from the registry");
        let started = Instant::now();
        let dest = self.bundle.dir.join(&file);
        let (temp, out) = TempFile::create(&dest)?;
        let mut writer = registry::layout::Hashing::new(out);
        let exported = reg.export(r, &mut writer, &|b| self.meter.add(b))?;
        let (size, sha256) = (writer.count, writer.hex());
        temp.sync(writer.inner)?;
        let stamp = temp.put_in_place()?;
        let mut record = registry_record(r, &file, size, sha256, &exported);
        record.stamp = stamp;
        self.bundle.record(record)?;
        let secs = started.elapsed().as_secs_f64();
        progress(
            n,
            self.total,
            r,
            &format!(
                "written {file} ({}, {} downloaded at {}, {} from the cache, in {secs:.1} s; \
                 digest {}, from {})",
                human_bytes(size),
                human_bytes(exported.downloaded),
                crate::units::human_rate(exported.downloaded, secs.max(0.001)),
                human_bytes(exported.cached),
                exported.digest,
                exported.source
            ),
        );
        Ok(Outcome::Written { bytes: size })
    }

    /// `--format layout`: the image's documents and the blobs the layout lacks written into
    /// it, each once; its record and `index.json` entries kept for the commit.
    fn export_to_layout(
        &self,
        n: usize,
        r: &Reference,
        reg: &registry::Registry,
        layout: &super::layout::Layout,
    ) -> Result<Outcome> {
        progress(n, self.total, r, "fetching from the registry");
        let started = Instant::now();
        let have = |digest: &str, size: u64| layout.has_or_carried(digest, size);
        let image = reg.fetch(r, &have, &|b| self.meter.add(b))?;
        let e = &image.exported;
        let artifacts = match self.signatures {
            true => super::signatures::fetch(reg, r, e, &|b| self.meter.add(b))?,
            false => Vec::new(),
        };
        if let Some(v) = self.verifier {
            let who = super::signatures::verify::check(v, &e.digest, &artifacts)?;
            progress(n, self.total, r, &format!("signed by {who}"));
        }
        let (mut written, mut bytes) = store(reg, layout, &image)?;
        let carried = super::signatures::store(layout, r, artifacts)?;
        (written, bytes) = (written + carried.written, bytes + carried.bytes);
        let (source, images) = registry_images(r, e);
        let artifacts = carried.records;
        let blobs = LayoutReference {
            source,
            images,
            artifacts,
        };
        let total = blobs.blobs().len();
        let carries = match super::signatures::summary(&blobs.artifacts) {
            s if s.is_empty() => String::new(),
            s => format!("; with {s}"),
        };
        let mut entries = image.index_entries()?;
        entries.extend(carried.entries);
        layout.record(r, blobs, entries);
        let secs = started.elapsed().as_secs_f64();
        if written == 0 {
            let line = format!(
                "skipped (up to date: its {total} blob(s) are in the layout; digest {}{carries})",
                e.digest
            );
            progress(n, self.total, r, &line);
            return Ok(Outcome::UpToDate);
        }
        let line = format!(
            "written into the layout: {written} new blob(s) ({}) of its {total}, {} downloaded \
             at {}, {} from the cache, in {secs:.1} s; digest {}, from {}{carries}",
            human_bytes(bytes),
            human_bytes(e.downloaded),
            crate::units::human_rate(e.downloaded, secs.max(0.001)),
            human_bytes(e.cached),
            e.digest,
            e.source
        );
        progress(n, self.total, r, &line);
        Ok(Outcome::Written { bytes })
    }

    /// Pull (docker, podman) unless told not to, and whether the bundle's `file` still holds
    /// the image the engine has now.
    fn local_up_to_date(
        &self,
        n: usize,
        r: &Reference,
        engine: &Engine,
        pull: bool,
        file: &str,
    ) -> Result<bool> {
        let cached = if self.no_cache {
            None
        } else {
            self.bundle.config_digest(file)?
        };
        if engine.has_local_store() && pull {
            progress(n, self.total, r, "pulling");
            engine.pull(r, self.platform)?;
        }
        let Some((config, how)) = &cached else {
            return Ok(false);
        };
        if !engine.has_local_store() {
            progress(n, self.total, r, "checking the registry");
        }
        let current = engine.config_digest(r, self.platform)?;
        if &current != config {
            return Ok(false);
        }
        let how = how.shown();
        progress(
            n,
            self.total,
            r,
            &format!("skipped (up to date: {file}{how})"),
        );
        Ok(true)
    }

    fn export_local(
        &self,
        n: usize,
        r: &Reference,
        engine: &Engine,
        pull: bool,
    ) -> Result<Outcome> {
        let file = format!("{}{}", r.file_stem(), self.ext);
        if self.local_up_to_date(n, r, engine, pull, &file)? {
            return Ok(Outcome::UpToDate);
        }
        progress(n, self.total, r, "saving");
        let started = Instant::now();
        let dest = self.bundle.dir.join(&file);
        let (temp, mut writer) = TempFile::create(&dest)?;
        let mut saved = engine.save(r, self.platform, self.scratch)?;
        let result =
            compress::write_archive(&mut saved, &mut writer, self.compression, self.threads);
        // The engine's own message explains a failure better than a broken stream does.
        let finished = saved.finish();
        let written = match (result, finished) {
            (_, Err(e)) => return Err(e),
            (Err(e), Ok(())) => return Err(e),
            (Ok(w), Ok(())) => w,
        };
        temp.sync(writer)?;
        let images = self.bundle_images(n, r, &written.info)?;
        let stamp = temp.put_in_place()?;
        self.bundle.record(BundleArchive {
            file: file.clone(),
            size: written.size,
            sha256: written.sha256,
            compression: self.compression,
            format: written.info.format,
            images,
            source: None,
            stamp,
        })?;
        let secs = started.elapsed().as_secs_f64();
        progress(
            n,
            self.total,
            r,
            &format!(
                "written {file} ({} from {} of tar, in {secs:.1} s)",
                human_bytes(written.size),
                human_bytes(written.info.tar_size)
            ),
        );
        Ok(Outcome::Written {
            bytes: written.size,
        })
    }

    /// The bundle's record of what the archive holds, for the exported platform.
    fn bundle_images(
        &self,
        n: usize,
        r: &Reference,
        info: &ArchiveInfo,
    ) -> Result<Vec<BundleImage>> {
        let mut images = Vec::new();
        for image in &info.images {
            let chosen = image
                .for_platform(self.platform)
                .or_else(|| image.platforms.iter().find(|p| p.complete));
            let Some(p) = chosen else { continue };
            let Some(config) = &p.config_digest else {
                continue;
            };
            if let Some(pl) = p.platform.as_ref().filter(|pl| !pl.runs_on(self.platform)) {
                anyhow::bail!(
                    "{r} has no image for {} (the engine saved an image for {pl})",
                    self.platform
                );
            }
            let wanted = r.to_string();
            if !image.names.contains(&wanted) {
                // docker-archive has no place for a digest reference: such an image is
                // imported by its config digest and is found by it, but not by that name.
                progress(
                    n,
                    self.total,
                    r,
                    &format!(
                        "warning: the archive names the image {} rather than {wanted}",
                        image.display_names()
                    ),
                );
            }
            images.push(BundleImage {
                names: image.names.clone(),
                config_digest: config.clone(),
                manifest_digest: p.manifest_digest.clone(),
                platform: p.platform.as_ref().map(ToString::to_string),
                layers: Vec::new(),
            });
        }
        if images.is_empty() {
            anyhow::bail!("the saved archive holds no complete image");
        }
        Ok(images)
    }
}

/// The image's documents and blobs into the layout, each unless it is there: how many were
/// written, and their bytes. A cached blob found damaged is dropped from the cache.
fn store(
    reg: &registry::Registry,
    layout: &super::layout::Layout,
    image: &registry::Image,
) -> Result<(usize, u64)> {
    let (mut written, mut bytes) = (0usize, 0u64);
    for (digest, data) in image.documents() {
        if layout.put(digest, data.len() as u64, data)? {
            written += 1;
            bytes += data.len() as u64;
        }
    }
    for (digest, size, blob) in &image.blobs {
        let put = match blob {
            Blob::Bytes(data) => layout.put(digest, *size, &data[..]),
            Blob::File(path) => layout.put_file(digest, *size, path, false),
            Blob::Verified(path) => layout.put_file(digest, *size, path, true),
        };
        let put = put.inspect_err(|e| {
            // A cached blob found damaged is dropped, so the next run downloads it.
            if RegistryError::find(e).and_then(RegistryError::damaged_blob) == Some(digest.as_str())
            {
                reg.forget(digest);
            }
        })?;
        if put {
            written += 1;
            bytes += size;
        }
    }
    Ok((written, bytes))
}

/// images.json's record of an archive the registry engine wrote.
fn registry_record(
    r: &Reference,
    file: &str,
    size: u64,
    sha256: String,
    e: &registry::Exported,
) -> BundleArchive {
    let (source, images) = registry_images(r, e);
    BundleArchive {
        file: file.to_string(),
        size,
        sha256,
        compression: Compression::None,
        format: crate::archive::Format::Oci,
        images,
        source: Some(source),
        stamp: None,
    }
}

/// Where an image the registry engine exported came from, and its image per platform.
pub(super) fn registry_images(
    r: &Reference,
    e: &registry::Exported,
) -> (BundleSource, Vec<BundleImage>) {
    let source = BundleSource {
        reference: r.to_string(),
        repository: r.repository(),
        tag: r.tag.clone(),
        digest: e.digest.clone(),
        index_digest: e.index_digest.clone(),
        refs: e.names.clone(),
    };
    let images = e
        .images
        .iter()
        .map(|p| BundleImage {
            // Every name the archive gives this image: the tag and the digest names a pod
            // may use, each imported, labelled, verified and pruned like the tag.
            names: source.names_for(Some(&p.manifest_digest)),
            config_digest: p.config_digest.clone(),
            manifest_digest: Some(p.manifest_digest.clone()),
            platform: p.platform.as_ref().map(ToString::to_string),
            layers: p
                .layers
                .iter()
                .map(|(digest, size)| BundleLayer {
                    digest: digest.clone(),
                    size: *size,
                })
                .collect(),
        })
        .collect();
    (source, images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::registry::error::PlainHttp;

    #[test]
    fn images_json_records_every_name_the_archive_gives_each_image() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let r = Reference::parse("reg.example.com/shop/web:1").unwrap();
        let repo = "reg.example.com/shop/web";
        let platform = |arch: &str, m: char, c: char| registry::PlatformExport {
            platform: crate::archive::Platform::parse(&format!("linux/{arch}")),
            manifest_digest: d(m),
            config_digest: d(c),
            layers: Vec::new(),
        };
        // The names index.json gives (registry::names_of): tag, index, each manifest.
        let names = vec![
            format!("{repo}:1"),
            format!("{repo}@{}", d('a')),
            format!("{repo}@{}", d('b')),
            format!("{repo}@{}", d('c')),
        ];
        let e = registry::Exported {
            digest: d('a'),
            index_digest: Some(d('a')),
            images: vec![platform("amd64", 'b', 'd'), platform("arm64", 'c', 'e')],
            names: names.clone(),
            downloaded: 0,
            cached: 0,
            source: "http://reg.example.com".into(),
        };
        let record = registry_record(&r, "web.tar", 1, "0".repeat(64), &e);
        assert_eq!(record.images[0].names, names[..3]);
        assert_eq!(
            record.images[1].names,
            [names[0].clone(), names[1].clone(), names[3].clone()]
        );
    }

    #[test]
    fn only_an_image_the_registry_does_not_serve_is_looked_for_locally() {
        let url = "https://reg.example.com/v2/app/manifests/1";
        let answered = |status| -> anyhow::Error {
            RegistryError::answered(url, status, String::new()).into()
        };
        // Under the context the engine adds, as it reaches the fallback.
        let not_found = answered(404).context("reg.example.com/app:1");
        assert!(look_locally(&not_found));
        let unreachable: anyhow::Error = RegistryError::Unreachable {
            registry: "reg.example.com".into(),
            https: "connection refused".into(),
            http: PlainHttp::NotAllowed,
        }
        .into();
        assert!(look_locally(&unreachable));
        // The ping's 404: no registry there, so not served either.
        assert!(look_locally(
            &answered(404).context("reg.example.com does not answer as an OCI registry")
        ));
        // A refused login, a server error, a damaged blob, or no registry error at all.
        assert!(!look_locally(
            &answered(401).context("the token server refused anonymous access")
        ));
        assert!(!look_locally(&answered(403)));
        assert!(!look_locally(&answered(500)));
        let damaged = RegistryError::Digest {
            what: "content",
            expected: "sha256:a".into(),
            got: "sha256:b".into(),
        };
        assert!(!look_locally(&RegistryError::at(url, damaged.into_io())));
        // Words alone decide nothing: a message that says 404 is no answer of a registry.
        assert!(!look_locally(&anyhow::anyhow!(
            "{url}: HTTP 404 Not Found (cannot reach the registry)"
        )));
    }
}
