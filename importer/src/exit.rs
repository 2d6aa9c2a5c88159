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
    /// The code the typed marker in an error's chain chooses, under any context: a [`Failed`]
    /// is 1; a [`UsageError`] or an unreachable runtime (`runtime::Unreachable`) is 2. An
    /// error without a marker is a usage or environment error too (2): what fails the work
    /// is marked where it is decided. A marker is an error of its own (made by [`usage`] or
    /// `Failed(..).into()`), never a context; the first one found decides.
    pub fn from_error(err: &anyhow::Error) -> Code {
        err.chain().find_map(Code::marked_by).unwrap_or(Code::Usage)
    }

    /// The code one error of a chain chooses, when it is a marker.
    fn marked_by(cause: &(dyn std::error::Error + 'static)) -> Option<Code> {
        if cause.is::<Failed>() {
            Some(Code::Failure)
        } else if cause.is::<UsageError>() || cause.is::<crate::failure::Unreachable>() {
            Some(Code::Usage)
        } else {
            None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_marker_is_found_under_context_and_an_unmarked_error_is_a_usage_error() {
        let failed: anyhow::Error = Failed("2 image(s) missing".into()).into();
        assert_eq!(
            Code::from_error(&failed.context("verify").context("run")),
            Code::Failure
        );
        let bad_flag = usage("--platform \"x\" is not of the form os/arch");
        assert_eq!(Code::from_error(&bad_flag.context("export")), Code::Usage);
        let gone: anyhow::Error = crate::runtime::Unreachable("no runtime answers".into()).into();
        assert_eq!(Code::from_error(&gone.context("import")), Code::Usage);
        // Unmarked: a usage or environment error.
        assert_eq!(
            Code::from_error(&anyhow::anyhow!("cannot read /images")),
            Code::Usage
        );
    }

    #[test]
    fn the_codes_are_the_numbers_scripts_rely_on() {
        assert_eq!(Code::Success as u8, 0);
        assert_eq!(Code::Failure as u8, 1);
        assert_eq!(Code::Usage as u8, 2);
    }

    #[test]
    fn a_broken_pipe_is_found_under_context() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe)).context("list");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }
}
