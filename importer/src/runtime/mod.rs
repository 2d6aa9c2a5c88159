//! Container runtimes the importer loads images into: one module per backend, behind one trait.
//!
//! containerd is reached through its gRPC API on the socket (`native`) or through the node's
//! own `ctr` (`containerd`); Docker through its Engine API.

pub mod containerd;
pub mod detect;
pub mod docker;
mod http;
pub mod native;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

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
}

pub trait Runtime: Send + Sync {
    /// `containerd` or `docker`.
    fn kind(&self) -> &'static str;

    /// One line for the log header: version, socket, namespace.
    fn describe(&self) -> String;

    /// Every named image the runtime has (in the configured namespace).
    fn present(&self) -> Result<Vec<Present>>;

    /// Load one archive, given as its decompressed tar stream, for `platform`. The stream is
    /// read to its end; the error, if any, says what the runtime answered.
    fn import(&self, tar: &mut dyn Read, platform: &Platform) -> Result<Imported>;

    /// Before `archive` is imported: an error naming the numbers when importing it would leave
    /// the runtime's disk more than `max_used` percent full. Backends that cannot tell what
    /// an archive would add accept every archive.
    fn preflight(&self, _archive: &Path, _platform: &Platform, _max_used: u8) -> Result<()> {
        Ok(())
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

/// The runtime could not be reached (socket missing, connection refused): worth retrying,
/// unlike an archive the runtime refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// Whether an error (anywhere in its chain) says the runtime was unreachable.
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Unreachable>())
}

/// Helper processes (e.g. `ctr`) running right now, so that a SIGTERM can end them at once.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Remember a running helper process; [`forget_child`] when it has been waited for.
pub fn track_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

pub fn forget_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

/// SIGKILL every helper process still running (the run is being stopped).
pub fn kill_children() {
    for &pid in CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        // Only pids we spawned and have not yet waited for, so the pid cannot have been reused.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
