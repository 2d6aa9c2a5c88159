//! offline-images: export a release's images into a bundle on a connected host, and import
//! that bundle into containerd or Docker on air-gapped nodes.

pub mod archive;
pub mod bundle;
pub mod bundled;
pub mod cli;
mod digest;
pub mod exit;
pub mod export;
pub mod failure;
pub mod import;
pub mod labels;
pub mod list;
mod lock;
pub mod prune;
pub mod reference;
pub mod report;
pub mod runtime;
mod stop;
pub mod verify;

use anyhow::Result;

use cli::{Cli, Command};
use exit::Code;

/// Run one command; `main` only parses arguments and prints the error this returns.
pub fn run(cli: Cli) -> Result<Code> {
    match cli.command {
        Command::List(args) => list::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Prune(args) => prune::run(&args),
    }
}
