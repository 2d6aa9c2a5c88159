//! Running the node's `ctr` chrooted into `--host-root`, without `unsafe`.
//!
//! A `pre_exec` hook between fork and exec would need `unsafe` (only async-signal-safe calls
//! are allowed there). Instead the importer runs itself again (`/proc/self/exe`, the very file
//! that is running) with a hidden first argument; that process, single-threaded and owning
//! nothing, chroots, changes to `/` and replaces itself with `ctr` (same pid, same stdin,
//! stdout and stderr). See docs/ARCHITECTURE.md, "The runtime trait".

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, Error};

/// The hidden first argument: not a subcommand of the CLI, never shown in `--help`.
const ARG: &str = "__chroot-exec";

/// A command that runs `program` (a path inside `root`) chrooted into `root`; add its
/// arguments to it.
pub fn command(root: &Path, program: &Path) -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(ARG).arg(root).arg(program);
    cmd
}

/// In the process [`command`] started: chroot, chdir and exec, and so never return. `None`
/// when this process was not started that way; the error when the chroot or exec failed.
pub fn exec_if_asked() -> Option<Error> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(ARG)) {
        return None;
    }
    let (Some(root), Some(program)) = (args.next(), args.next()) else {
        return Some(anyhow!("{ARG} needs a root and a program"));
    };
    let root = Path::new(&root);
    if let Err(e) = std::os::unix::fs::chroot(root) {
        return Some(anyhow!("cannot chroot into {}: {e}", root.display()));
    }
    if let Err(e) = std::env::set_current_dir("/") {
        return Some(anyhow!("cannot change to / in {}: {e}", root.display()));
    }
    let program = Path::new(&program);
    let e = Command::new(program).args(args).exec();
    Some(anyhow!(
        "cannot run {} under {}: {e}",
        program.display(),
        root.display()
    ))
}
