//! Docker Engine backend (placeholder on this branch: the real backend lands separately).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Result};

use super::{Imported, Present, Runtime};
use crate::archive::Platform;

pub struct Docker;

/// Connect to the Docker Engine on `socket`.
pub fn connect(socket: &Path) -> Result<Docker> {
    bail!(
        "Docker backend not built yet (Docker answered on {})",
        socket.display()
    )
}

impl Runtime for Docker {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn describe(&self) -> String {
        "docker".to_string()
    }

    fn present(&self) -> Result<Vec<Present>> {
        bail!("Docker backend not built yet")
    }

    fn import(&self, _tar: &mut dyn Read, _platform: &Platform) -> Result<Imported> {
        bail!("Docker backend not built yet")
    }
}
