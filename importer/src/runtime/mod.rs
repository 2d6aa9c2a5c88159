//! Container runtimes the importer loads images into: one module per backend, behind one trait.
//!
//! The containerd backend drives the node's own `ctr`; the trait is kept narrow enough that a
//! native gRPC backend (no host binaries) can take its place later.

pub mod docker;
mod http;

use std::collections::BTreeMap;
use std::io::Read;

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
}
