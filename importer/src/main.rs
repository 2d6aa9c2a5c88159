#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The ctr backend runs this binary again to chroot before it becomes the node's ctr.
    if let Some(err) = offline_images::runtime::chroot::exec_if_asked() {
        eprintln!("offline-images: {err:#}");
        return offline_images::exit::Code::Usage.into();
    }
    // A binary run from a bundle checks itself before anything else.
    if let Err(err) = offline_images::bundled::verify_self() {
        eprintln!("offline-images: {err:#}");
        return offline_images::exit::Code::from_error(&err).into();
    }
    let cli = offline_images::cli::Cli::parse();
    match offline_images::run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            if offline_images::exit::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("offline-images: {err:#}");
            offline_images::exit::Code::from_error(&err).into()
        }
    }
}
