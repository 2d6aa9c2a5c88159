//! `offline-images present` (hidden): every named image the runtime holds, one JSON object a
//! line on stdout (`name`, `config_digest`). What `import --kind` asks each node's importer
//! before it sends anything, so that only what the node lacks crosses into it.

use std::io::{self, Write};

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

pub fn run(runtime: &detect::Config) -> Result<Code> {
    let detected = detect::detect(runtime)?;
    let present = detected.runtime.present()?;
    let mut out = io::BufWriter::new(io::stdout().lock());
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
