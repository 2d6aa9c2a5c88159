//! Container runtimes the importer loads images into: one module per backend, behind one trait.
//!
//! containerd is reached through its gRPC API on the socket (`native`) or through the node's
//! own `ctr` (`ctr`); Docker through its Engine API.

pub mod chroot;
mod content;
pub mod ctr;
pub mod detect;
pub mod docker;
// Test code only (`#![cfg(test)]` inside).
pub(crate) mod fake;
pub(crate) mod http;
pub mod native;
pub mod podman;
pub(crate) mod socket;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use anyhow::Result;

use crate::archive::{ArchiveInfo, Platform};

/// An image the runtime already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    /// Normalised reference, e.g. `docker.io/library/nginx:1.27`.
    pub name: String,
    /// Config digest of the image for the node's platform, when the runtime could tell.
    pub config_digest: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What one import did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The archive as read while it was streamed into the runtime.
    pub info: ArchiveInfo,
    /// Image names the runtime reported as loaded.
    pub names: Vec<String>,
    /// What the runtime was sent and what it already had, for the log, when it tells.
    pub detail: Option<String>,
}

/// Something an earlier import left in the runtime when it was killed, and what this run did
/// with it ([`Runtime::reclaim`]). Each says what it is, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// Removed.
    Removed(String),
    /// Kept: its run may still be alive (the text says why it cannot be told).
    Kept(String),
    /// Ours and dead, but the runtime refused to remove it: what, and its answer.
    Failed(String),
}

/// What is left of a staged import ([`Runtime::stage_file`]); run once.
pub type Rest<'a> = Box<dyn FnOnce() -> Result<Imported> + 'a>;

/// Called by [`Runtime::stage_file`] before the first thing it writes, and at the latest
/// before it returns: the archive's turn to store is taken, and the disk preflight made,
/// there. What comes before it only reads (the archive, and what the runtime has). An error
/// ends the stage with nothing written.
pub type Gate<'a> = &'a dyn Fn() -> Result<()>;

/// The target of an import: the write side of the copy loop whose read side is a
/// `source::Source`. The loop asks the target what it has ([`Runtime::present`]), sends it
/// only the units it lacks, each as a decompressed image tar stream ([`Runtime::import`],
/// or [`Runtime::stage_file`] in two steps), labels what it imported, and asks again after
/// the run that every image promised is there. Each backend (containerd natively or through
/// `ctr`, Docker) is one implementation; a new target is a new implementation, not a new
/// loop.
pub trait Runtime: Send + Sync {
    /// `containerd` or `docker`.
    fn kind(&self) -> &'static str;

    /// One line for the log header: version, socket, namespace.
    fn describe(&self) -> String;

    /// Every named image the runtime has (in the configured namespace).
    fn present(&self) -> Result<Vec<Present>>;

    /// For a runtime that knows its images by the manifest or index a name points to rather
    /// than by their config (Docker's containerd image store, whose image IDs are manifest
    /// digests, and whose [`Present::config_digest`] is therefore `None`): name -> that digest.
    fn target_digests(&self) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }

    /// The machine architecture the runtime reports for its node, in OCI terms (`amd64`,
    /// `arm64`), when it tells.
    fn node_architecture(&self) -> Option<String> {
        None
    }

    /// Whether the runtime keeps the labels [`Runtime::label`] sets, so that an archive can be
    /// recognised by the labels its images carry.
    fn keeps_labels(&self) -> bool {
        true
    }

    /// Whether [`Runtime::present`] lists the digest names an archive gives its images
    /// (`repo@sha256:…`) as names, so that each one can be looked for. Where it does not, an
    /// image is found by its other names, or by its config when it has only digest names.
    fn lists_digest_names(&self) -> bool {
        true
    }

    /// Which of `digests` the runtime's content store holds, for an image of an upgrade
    /// bundle (`export --since`) whose earlier layers the bundle does not carry. `None`: the
    /// runtime takes no image in part (Docker and podman load an image whole).
    fn holds(&self, digests: &[&str]) -> Result<Option<BTreeSet<String>>> {
        let _ = digests;
        Ok(None)
    }

    /// Which of `chains` (layer chain IDs, `digest::chain_ids`) the runtime's layer store
    /// holds, for a runtime that keeps layers by chain and loads an image without the files of
    /// the layers it holds (Docker's classic store). `None`: it cannot say.
    fn holds_chains(&self, chains: &[&str]) -> Result<Option<BTreeSet<String>>> {
        let _ = chains;
        Ok(None)
    }

    /// Load one archive, given as its decompressed tar stream, for `platform`. The stream is
    /// read to its end; the error, if any, says what the runtime answered.
    fn import(&self, tar: &mut dyn Read, platform: &Platform) -> Result<Imported>;

    /// [`Runtime::import`] of the archive file at `path`, whose decompressed stream is `tar`:
    /// a backend that can use the file itself (a first look at a plain tar's headers, a
    /// second pass for what the first left out) does.
    fn import_file(
        &self,
        path: &Path,
        tar: &mut dyn Read,
        platform: &Platform,
    ) -> Result<Imported> {
        let _ = path;
        self.import(tar, platform)
    }

    /// Whether [`Runtime::stage_file`] ends before the archive's import does, so that the
    /// rest of one archive's import can run while the next archive is staged.
    fn stages(&self) -> bool {
        false
    }

    /// [`Runtime::import_file`] in two steps: this call reads the archive and stores what it
    /// holds, passing `gate` before it writes; the step it returns does the rest (for
    /// containerd: unpack and name the images). `path` is `None` for a unit with no file of
    /// its own (an image of an OCI layout, streamed from its blobs), which goes through the
    /// same two steps as [`Runtime::import`] does. A backend that does not stage passes the
    /// gate first and does everything here.
    fn stage_file<'a>(
        &'a self,
        path: Option<&Path>,
        tar: &mut dyn Read,
        platform: &Platform,
        gate: Gate<'a>,
    ) -> Result<Rest<'a>> {
        gate()?;
        let imported = match path {
            Some(path) => self.import_file(path, tar, platform)?,
            None => self.import(tar, platform)?,
        };
        Ok(Box::new(move || Ok(imported)))
    }

    /// Before `archive` is imported: an error naming the numbers when importing it would leave
    /// the runtime's disk more than `max_used` percent full. Backends that cannot tell what
    /// an archive would add accept every archive.
    fn preflight(&self, _archive: &Path, _platform: &Platform, _max_used: u8) -> Result<()> {
        Ok(())
    }

    /// Remove what an earlier import of ours left behind when it was killed (an OOM kill, an
    /// evicted pod): its leases, partial uploads and half-unpacked layers, each named in what
    /// is returned; never what a run still alive holds, nor what another tool made. Called
    /// once by an import before its first archive; never by a dry run, `verify` or `list`.
    /// Backends that leave nothing behind when killed have nothing to do.
    fn reclaim(&self) -> Result<Vec<Leftover>> {
        Ok(Vec::new())
    }

    /// Set `labels` on each named image. Runtimes without image labels ignore this.
    fn label(&self, _names: &[String], _labels: &BTreeMap<String, String>) -> Result<()> {
        Ok(())
    }

    /// Every container (in the configured namespace) and the image it was created from, as
    /// the runtime records it: a name, or an image ID (`sha256:...`).
    fn containers(&self) -> Result<Vec<Container>> {
        Err(Unsupported(self.kind()).into())
    }

    /// Remove `keys` from the labels of image `name`.
    fn unlabel(&self, _name: &str, _keys: &[String]) -> Result<()> {
        Err(Unsupported(self.kind()).into())
    }

    /// Remove the image `name` (its content goes when no other image refers to it).
    fn remove(&self, _name: &str) -> Result<()> {
        Err(Unsupported(self.kind()).into())
    }
}

/// `x86_64` -> `amd64`, `aarch64` -> `arm64`: a kernel's machine name in OCI terms.
pub fn oci_architecture(machine: &str) -> String {
    match machine {
        "x86_64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" => "arm",
        "i686" | "i386" => "386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
    .to_string()
}

/// Which of `layers` (each a digest with its chain IDs in the images at hand) `rt` holds: by
/// digest where it has a content store; else by chain, a layer held when every chain it has
/// is; `None` when it can say neither.
pub fn held_layers(
    rt: &dyn Runtime,
    layers: &[(&str, &[String])],
) -> Result<Option<BTreeSet<String>>> {
    let digests: Vec<&str> = layers.iter().map(|(d, _)| *d).collect();
    if let Some(held) = rt.holds(&digests)? {
        return Ok(Some(held));
    }
    let chains: Vec<&str> = layers
        .iter()
        .flat_map(|(_, c)| c.iter().map(String::as_str))
        .collect();
    if chains.is_empty() {
        return Ok(None);
    }
    let Some(held) = rt.holds_chains(&chains)? else {
        return Ok(None);
    };
    Ok(Some(
        layers
            .iter()
            .filter(|(_, c)| !c.is_empty() && c.iter().all(|c| held.contains(c)))
            .map(|(d, _)| d.to_string())
            .collect(),
    ))
}

/// An importer that runs on a node of another architecture (emulated) would import images for
/// the wrong platform: refused, in one line, when the runtime says what its node runs.
pub fn check_architecture(rt: &dyn Runtime) -> Result<()> {
    let built = Platform::host();
    match rt.node_architecture() {
        Some(node) if node != built.architecture => Err(crate::exit::usage(format!(
            "this importer is built for linux/{}, but {} runs on linux/{node}: \
             use the importer image for linux/{node} (the image's index serves both)",
            built.architecture,
            rt.describe()
        ))),
        _ => Ok(()),
    }
}

/// A container the runtime knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// The image it was created from, as recorded (a name or `sha256:...`); empty if none.
    pub image: String,
}

/// This backend cannot do what was asked (e.g. prune on Docker).
#[derive(Debug, thiserror::Error)]
#[error("not supported by the {0} backend")]
pub struct Unsupported(pub &'static str);

pub use crate::failure::{is_unreachable, Unreachable};
