//! offline-images: export a release's images into a bundle on a connected host, and import
//! that bundle into containerd or Docker on air-gapped nodes.
//!
//! The public API is what the binary, the integration tests and the fuzz target use: `run`,
//! the CLI, the exit codes, archives, the bundle files, references and the runtime backends.
//! The commands themselves (export, import, verify, list, prune) and their reports are
//! private to the crate.

#![forbid(unsafe_code)]

#[cfg(test)]
mod architecture;
pub mod archive;
pub mod bundle;
mod bundle_check;
pub mod bundled;
mod child;
pub mod cli;
#[cfg(feature = "export")]
mod deliver;
mod digest;
pub mod exit;
#[cfg(feature = "export")]
mod export;
mod failure;
mod images_path;
mod import;
mod kind;
mod labels;
mod lacks;
mod layout;
mod list;
mod lock;
mod mirror;
mod present;
mod prune;
#[cfg(feature = "export")]
mod push;
mod receive;
pub mod reference;
mod remote;
mod report;
pub mod runtime;
mod signing;
mod source;
mod stop;
mod sync;
mod toml_lines;
mod units;
mod verify;
mod wait;

use anyhow::Result;

use cli::{Cli, Command};
use exit::Code;

/// Run one command; `main` only parses arguments and prints the error this returns.
pub fn run(cli: Cli) -> Result<Code> {
    match cli.command {
        Command::List(args) => list::run(&args.settings()),
        Command::Import(args) => match args.kind_settings() {
            // --verify-key: the bundle checked here, on the host, before any node gets a byte.
            Some(kind) => {
                signing::check_path(&kind.images_path, &args.verify_keys, kind.log_format)
                    .and_then(|()| kind::run(&kind))
            }
            None => import::run(&args.settings()),
        },
        Command::Verify(args) => match args.kind_settings() {
            Some(kind) => {
                signing::check_path(&kind.images_path, &args.verify_keys, kind.log_format)
                    .and_then(|()| kind::verify(&kind))
            }
            None => verify::run(&args.settings()),
        },
        #[cfg(feature = "export")]
        Command::Export(args) => export::run(&args.settings()?),
        Command::Prune(args) => prune::run(&args.settings()),
        Command::Mirror(args) => mirror::run(&args.settings()?),
        Command::Wait(args) => Ok(wait::run(&args.settings())),
        Command::Present(args) => present::run(&args.runtime.config(), args.holds_from.as_deref()),
        #[cfg(feature = "export")]
        Command::Push(args) => push::run(&args.settings()),
        #[cfg(feature = "export")]
        Command::Deliver(args) => deliver::run(&args.settings()?),
        Command::Receive(args) => receive::run(&args.dir, args.list),
    }
}
