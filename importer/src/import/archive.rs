//! The reading of one archive file during an import: its checksum checked against
//! SHA256SUMS ([`check_sha256`]), a reader that logs progress on the way to the runtime
//! ([`Watched`]), and what its reading says: the config digest of each name it set
//! ([`name_configs`]) and of each image ([`config_digests`]).

use std::io::{self, Read};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::archive::{self, ArchiveInfo, Platform};
use crate::bundle::{self, CarriedBlob};
use crate::failure::{Failure, Kind};
use crate::report::{Event, Reporter};
use crate::runtime::Runtime;
use crate::source::{Source, Unit};
use crate::stop::{stop_signal, Stoppable};

/// A mismatched archive never reaches the runtime: `unit`'s bytes, as `source` stores them,
/// must hash to `expected`.
/// An image of an upgrade bundle (`export --since`) whose earlier layers the bundle does not
/// carry: the runtime must hold each, or the image fails here, before anything of it is sent,
/// in one line naming the layer, the bundle that carried it, and the fix.
pub(super) fn check_carried(source: &dyn Source, runtime: &dyn Runtime, unit: &Unit) -> Result<()> {
    let carried = source.carried(unit)?;
    if carried.is_empty() {
        return Ok(());
    }
    let asked: Vec<(&str, &[String])> = carried
        .iter()
        .map(|c| (c.digest.as_str(), &c.chain_ids[..]))
        .collect();
    let held = crate::runtime::held_layers(runtime, &asked)?;
    let lacking: Vec<&CarriedBlob> = carried
        .iter()
        .filter(|c| held.as_ref().is_none_or(|h| !h.contains(&c.digest)))
        .collect();
    let Some(first) = lacking.first() else {
        return Ok(());
    };
    let more = match lacking.len() {
        1 => String::new(),
        n => format!(" (and {} more such layer(s))", n - 1),
    };
    let lacks = match held {
        Some(_) => format!("{} does not have it", runtime.kind()),
        None => format!("{} takes an image only whole", runtime.kind()),
    };
    Err(Failure::error(
        Kind::Bundle,
        format!(
            "needs the layer {} ({}), which this bundle does not carry: {} carried it, and \
             {lacks}{more}; import that bundle first, or carry a full bundle (an export \
             without --since)",
            first.digest,
            crate::units::human_bytes(first.size),
            first.carried_by
        ),
    ))
}

pub(super) fn check_sha256(source: &dyn Source, unit: &Unit, expected: &str) -> Result<()> {
    let bytes = source.bytes(unit)?;
    let actual = bundle::sha256_reader(Stoppable::new(bytes))
        .with_context(|| format!("cannot read {}", unit.path.display()))?;
    if actual != expected {
        return Err(Failure::error(
            Kind::Archive,
            format!(
                "checksum mismatch: {} says sha256 {expected}, the file has {actual}; \
                 the file is damaged or was replaced, so it is not imported",
                bundle::SUMS_FILE
            ),
        ));
    }
    Ok(())
}

/// A progress line this often while one archive is being imported.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The decompressed archive on its way to the runtime: progress lines for long archives, and
/// an error as soon as the run is asked to stop.
pub(super) struct Watched<'a> {
    inner: Box<dyn Read + Send>,
    file: &'a str,
    reporter: &'a Reporter,
    started: Instant,
    last: Instant,
    bytes: u64,
}

impl<'a> Watched<'a> {
    /// `inner`, the decompressed stream of `file`, whose import began at `started`.
    pub(super) fn new(
        inner: Box<dyn Read + Send>,
        file: &'a str,
        reporter: &'a Reporter,
        started: Instant,
    ) -> Watched<'a> {
        Watched {
            inner,
            file,
            reporter,
            started,
            last: Instant::now(),
            bytes: 0,
        }
    }
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(sig) = stop_signal() {
            return Err(io::Error::other(format!("aborted by {sig}")));
        }
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            self.reporter.emit(&Event::Progress {
                file: self.file,
                tar_bytes: self.bytes,
                seconds: self.started.elapsed().as_secs_f64(),
            });
        }
        Ok(n)
    }
}

/// The config digest (node platform) each imported name should have: by name for named
/// images; for the digest names ctr gives untagged images, by manifest digest, or the one
/// untagged image's when there is only one.
pub(super) fn name_configs(
    info: &ArchiveInfo,
    names: &[String],
    platform: &Platform,
) -> Vec<Option<String>> {
    let config = |i: &archive::Image| {
        i.for_platform(platform)
            .and_then(|p| p.config_digest.clone())
    };
    let untagged: Vec<&archive::Image> =
        info.images.iter().filter(|i| i.names.is_empty()).collect();
    names
        .iter()
        .map(|name| {
            if let Some(i) = info.images.iter().find(|i| i.names.contains(name)) {
                return config(i);
            }
            let digest = name.split_once('@').map(|(_, d)| d);
            if let Some(i) = info.images.iter().find(|i| {
                digest.is_some()
                    && (i.digest.as_deref() == digest
                        || i.platforms
                            .iter()
                            .any(|p| p.manifest_digest.as_deref() == digest))
            }) {
                return config(i);
            }
            match untagged.as_slice() {
                [one] => config(one),
                _ => None,
            }
        })
        .collect()
}

/// The config digest of each image, for the node's platform, each once: an archive names one
/// image several times (a tag and digest names), and the log counts images, not names.
pub(super) fn config_digests(info: &ArchiveInfo, platform: &Platform) -> Vec<String> {
    unique(
        info.images
            .iter()
            .filter_map(|i| i.for_platform(platform))
            .filter_map(|p| p.config_digest.clone()),
    )
}

/// Each item once, in the order first seen.
pub(super) fn unique(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
