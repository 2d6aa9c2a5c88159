//! Why an archive failed, as a kind that callers branch on: set where the failure is
//! classified (a backend, the archive reader, the plan), carried in the report's
//! `ArchiveResult` to the JSON events, and used by the run (a lost race is imported again
//! alone; see docs/ARCHITECTURE.md, "Data flow: import").

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The file is not a readable image archive, or does not match its checksum.
    Archive,
    /// The bundle is incomplete: SHA256SUMS lists a file that is not there, or an upgrade
    /// bundle's image needs a layer an earlier bundle carried and the runtime lacks.
    Bundle,
    /// Another import running at the same moment wrote the same layer or image name; nothing
    /// is wrong with the archive, and it is imported again on its own.
    Race,
    /// The disk that holds the runtime's root is full, or would be.
    Disk,
    /// The runtime could not be reached, or went away during the import.
    Unreachable,
    /// A signal stopped the run.
    Stopped,
    /// The import failed otherwise: the runtime refused the archive, or its content is bad.
    Import,
}

/// The runtime could not be reached (socket missing, connection refused): worth retrying,
/// unlike an archive the runtime refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// Whether an error (anywhere in its chain) says the runtime was unreachable.
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Unreachable>())
}

/// An error with its kind; the message is the whole story, the kind is for branching.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn error(kind: Kind, message: impl Into<String>) -> anyhow::Error {
        Failure {
            kind,
            message: message.into(),
        }
        .into()
    }
}

/// The kind an error was given where it was classified; an unreachable runtime is
/// [`Kind::Unreachable`]; anything else is [`Kind::Import`].
pub fn kind_of(err: &anyhow::Error) -> Kind {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.kind;
        }
        if cause.is::<Unreachable>() {
            return Kind::Unreachable;
        }
    }
    Kind::Import
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_found_under_context_and_the_default_is_import() {
        let e = Failure::error(Kind::Race, "content written by another import")
            .context("ctr images import");
        assert_eq!(kind_of(&e), Kind::Race);
        assert_eq!(
            format!("{e:#}"),
            "ctr images import: content written by another import"
        );
        let e: anyhow::Error = Unreachable("gone".into()).into();
        assert_eq!(kind_of(&e.context("importing")), Kind::Unreachable);
        assert_eq!(kind_of(&anyhow::anyhow!("refused")), Kind::Import);
    }
}
