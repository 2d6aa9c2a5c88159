//! What crosses into a node, as one tar stream built on the fly and put into the container
//! (`PUT /containers/{id}/archive`): the importer with its checksum, or the units the node
//! lacks, each read from the bundle as it is sent. Nothing is staged on the host's disk.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::engine::{Engine, Node};
pub use crate::remote::stream::Sent;
use crate::remote::stream::{append, append_text, unit_into};
use crate::runtime::http::Request;
use crate::source::{Checksum, Source, Unit};

/// Where the node keeps what the host sends: under `/var`, which kind keeps on a volume.
pub const NODE_DIR: &str = "/var/lib/offline-images";

/// The importer's path in the node for a binary of `sha256` and `arch`: a bundle's
/// `.offline-images/linux-<arch>/` folder, so that it checks itself against the `.sha256`
/// beside it before every run.
pub fn importer_path(sha256: &str, arch: crate::bundled::Arch) -> String {
    format!(
        "{NODE_DIR}/importer-{}/{}/{}/{}",
        &sha256[..16.min(sha256.len())],
        crate::bundled::DIR,
        arch.dir(),
        crate::bundled::BINARY
    )
}

/// Put the importer at `binary` (of sha256 `sum`) into `node` at `path`, its checksum file
/// last: a checksum file in place says the binary before it is whole.
pub fn importer(engine: &Engine, node: &Node, binary: &Path, sum: &str, path: &str) -> Result<()> {
    let rel = path.trim_start_matches('/');
    let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
    let mut file = std::fs::File::open(binary)
        .with_context(|| format!("cannot open the importer {}", binary.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("cannot read the size of {}", binary.display()))?
        .len();
    let request = engine.start_put(node, "/")?;
    let mut tar = tar::Builder::new(request);
    dirs(&mut tar, dir)?;
    append(&mut tar, rel, size, 0o755, &mut file)
        .with_context(|| format!("sending {} to {}", binary.display(), node.name))?;
    let sums = format!("{sum}  {}\n", crate::bundled::BINARY);
    append_text(
        &mut tar,
        &format!("{dir}/{}", crate::bundled::CHECKSUM),
        &sums,
    )?;
    finish(engine, node, tar)
}

/// Send `units` into `node`'s staging directory `staging`: an archive as stored, an image of
/// a layout as the OCI archive the source builds for it; with the checksums the bundle gives,
/// as a `SHA256SUMS` the node's importer checks them against.
pub fn units(
    engine: &Engine,
    node: &Node,
    source: &dyn Source,
    units: &[&Unit],
    staging: &str,
) -> Result<Vec<Sent>> {
    let request = engine.start_put(node, "/")?;
    let mut tar = tar::Builder::new(request);
    let dir = staging.trim_start_matches('/');
    dirs(&mut tar, dir)?;
    let mut sent = Vec::new();
    let mut sums = String::new();
    for unit in units {
        if let (Some(_), Some((sub, _))) = (source.file(unit), unit.name.rsplit_once('/')) {
            dirs(&mut tar, &format!("{dir}/{sub}"))?;
        }
        let one = unit_into(&mut tar, source, unit, dir)
            .with_context(|| format!("sending {} to {}", unit.name, node.name))?;
        if let (true, Checksum::Sha256(hex)) = (source.file(unit).is_some(), source.checksum(unit))
        {
            sums.push_str(&format!("{hex}  {}\n", one.file));
        }
        sent.push(one);
    }
    if !sums.is_empty() {
        append_text(&mut tar, &format!("{dir}/SHA256SUMS"), &sums)?;
    }
    finish(engine, node, tar)?;
    Ok(sent)
}

/// Directory entries for `dir` and each of its parents below [`NODE_DIR`]'s own parent.
fn dirs<W: Write>(tar: &mut tar::Builder<W>, dir: &str) -> Result<()> {
    let base = NODE_DIR.trim_start_matches('/');
    let mut path = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        if path.len() < base.len() {
            continue; // /var and /var/lib exist in the node; leave them as they are
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(0);
        tar.append_data(&mut header, format!("{path}/"), io::empty())
            .with_context(|| format!("sending the directory /{path}"))?;
    }
    Ok(())
}

/// End the tar stream of a `PUT /containers/{id}/archive` and wait for Docker's answer.
fn finish(engine: &Engine, node: &Node, tar: tar::Builder<Request>) -> Result<()> {
    let request = tar
        .into_inner()
        .map_err(|e| anyhow!("ending the tar stream to {}: {e}", node.name))?;
    engine.finish_put(node, request)
}
