//! Exit codes, kept in one place (docs/ARCHITECTURE.md, "Data flow: import", step 4).

use std::io;

/// What the process tells its caller. Scripts and the Helm hook rely on these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Done. In tolerant mode also when some archives failed: the summary says so.
    Success = 0,
    /// `--strict` and at least one archive failed, an image the bundle promises or
    /// `--require` names is missing after `import`, `verify` found missing images,
    /// or `list`/`export` could not process every input.
    Failure = 1,
    /// Usage or environment error: bad flag, no runtime found, images path unreadable.
    Usage = 2,
}

impl From<Code> for std::process::ExitCode {
    fn from(code: Code) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// An error that is the caller's to fix (a bad value, a missing path, no runtime): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand for returning a [`UsageError`] as an `anyhow::Error`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

impl Code {
    /// Errors that reach `main` are environment or usage errors unless they say otherwise.
    pub fn from_error(err: &anyhow::Error) -> Code {
        if err.chain().any(|e| e.is::<Failed>()) {
            Code::Failure
        } else {
            Code::Usage
        }
    }
}

/// An error that means "the work ran but did not all succeed": exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

/// A reader of our output went away (`offline-images list | head`): not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
