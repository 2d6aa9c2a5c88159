//! What crosses into a node, as one tar stream built on the fly and put into the container
//! (`PUT /containers/{id}/archive`): the importer with its checksum, or what the node lacks
//! (`remote::plan`), each file read from the bundle as it is sent. Nothing is staged on the
//! host's disk.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::engine::{Engine, Node};
use crate::remote::plan::Plan;
use crate::remote::stream::{append, append_text};
use crate::runtime::http::Request;
use crate::source::Source;

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

/// Send what `plan` holds into `node`'s staging directory `staging`: archives as stored, the
/// images of layouts as one layout of their blobs (`remote::plan`); bytes of file data.
pub fn planned(
    engine: &Engine,
    node: &Node,
    source: &dyn Source,
    plan: &Plan<'_>,
    staging: &str,
) -> Result<u64> {
    let request = engine.start_put(node, "/")?;
    let mut tar = tar::Builder::new(request);
    let dir = staging.trim_start_matches('/');
    dirs(&mut tar, dir)?;
    for sub in plan.dirs() {
        dirs(&mut tar, &format!("{dir}/{sub}"))?;
    }
    let bytes = plan
        .send(&mut tar, source, dir, &|_| true)
        .with_context(|| format!("sending to {}", node.name))?;
    finish(engine, node, tar)?;
    Ok(bytes)
}

/// Put the text file `path` (under [`NODE_DIR`]) into `node`.
pub fn text(engine: &Engine, node: &Node, path: &str, text: &str) -> Result<()> {
    let rel = path.trim_start_matches('/');
    let request = engine.start_put(node, "/")?;
    let mut tar = tar::Builder::new(request);
    if let Some((dir, _)) = rel.rsplit_once('/') {
        dirs(&mut tar, dir)?;
    }
    append_text(&mut tar, rel, text)?;
    finish(engine, node, tar)
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
