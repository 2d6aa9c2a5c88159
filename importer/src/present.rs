//! `offline-images present` (hidden): every named image the runtime holds, one JSON object a
//! line on stdout (`name`, `config_digest`). What `import --kind` asks each node's importer
//! before it sends anything, so that only what the node lacks crosses into it.
//!
//! `--holds-from FILE` asks instead which of the layers listed in FILE (a digest, then its
//! chain IDs, a line) the runtime holds: containerd by digest in its content store, Docker's
//! classic store by chain in its layer store. An image the node lacks is then sent without
//! them (`remote::plan`).

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::exit::Code;
use crate::runtime::detect;

/// One image name the runtime holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
}

/// Most bytes of a `--holds-from` list: a line is 72 bytes, so over 900,000 layers.
const HOLDS_LIST_MAX: u64 = 64 << 20;

pub fn run(runtime: &detect::Config, holds_from: Option<&Path>) -> Result<Code> {
    let detected = detect::detect(runtime)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if let Some(file) = holds_from {
        let list = read_list(file)?;
        let asked: Vec<(&str, &[String])> =
            list.iter().map(|(d, c)| (d.as_str(), &c[..])).collect();
        let held = crate::runtime::held_layers(detected.runtime.as_ref(), &asked)?;
        for digest in held.unwrap_or_default() {
            writeln!(out, "{digest}").context("writing the list to stdout")?;
        }
        out.flush().context("writing the list to stdout")?;
        return Ok(Code::Success);
    }
    let present = detected.runtime.present()?;
    for p in present {
        let line = serde_json::to_string(&Held {
            name: p.name,
            config_digest: p.config_digest,
        })?;
        writeln!(out, "{line}").context("writing the image list to stdout")?;
    }
    out.flush().context("writing the image list to stdout")?;
    Ok(Code::Success)
}

/// The layers listed in `file` (`-`: standard input), one a line: its digest, then the chain
/// IDs it has in the images at hand; a word that is no sha256 digest is an error naming it.
fn read_list(file: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let mut text = String::new();
    let what = if file == Path::new("-") {
        io::stdin()
            .lock()
            .take(HOLDS_LIST_MAX)
            .read_to_string(&mut text)
            .context("reading the layer list on standard input")?;
        "standard input".to_string()
    } else {
        fs::File::open(file)
            .with_context(|| format!("cannot open {}", file.display()))?
            .take(HOLDS_LIST_MAX)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", file.display()))?;
        file.display().to_string()
    };
    let digest = |w: &str| {
        crate::layout::sha256_hex(w)
            .map(|_| w.to_string())
            .with_context(|| format!("{what}: not a layer digest or chain ID"))
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut words = l.split_whitespace();
            let layer = digest(words.next().expect("a line with a word"))?;
            Ok((layer, words.map(digest).collect::<Result<_>>()?))
        })
        .collect()
}

/// The lines [`run`] printed, read back; a line that is no such object is an error naming it.
pub fn parse(lines: &[String]) -> Result<Vec<Held>> {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).with_context(|| {
                format!(
                    "not an image of the node's list: {:?}",
                    crate::runtime::http::truncate(l, 200)
                )
            })
        })
        .collect()
}
