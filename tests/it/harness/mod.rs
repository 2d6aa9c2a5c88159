//! The test harness: the daemons scripts/test.sh started, and fixture archives built on them.
//!
//! Fixtures are generated, never committed: tiny images are built FROM scratch around the
//! static busybox on the real dockerd, then saved in every archive flavour the importer reads.
//! The tests take everything through `use crate::harness::*`; each part lives in a module of
//! its own:
//!
//! - `daemons`: the shared daemons and the version matrix, `missing_precondition`;
//! - `run`: the binary under test, the daemons' CLIs, bounded and background runs;
//! - `fixtures`: test images and the archive flavours saved from them;
//! - `archives`: tars written or read byte by byte;
//! - `containerd`: the shared containerd as the containerd tests use it;
//! - `private`: a containerd or dockerd of a test's own;
//! - `registry`: registries of a test's own and the registry engine's command.

mod archives;
mod containerd;
mod daemons;
mod fixtures;
mod private;
mod registry;
mod run;

pub use archives::*;
pub use containerd::*;
pub use daemons::*;
pub use fixtures::*;
pub use private::*;
pub use registry::*;
pub use run::*;
