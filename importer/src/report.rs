//! What a run tells its reader: one line per event on stderr (text for a person reading
//! `kubectl logs`, or JSON lines for a log pipeline), a JSON summary file on request, and a
//! short summary in the Kubernetes termination message.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use crate::failure::Kind;
use crate::units::{human_bytes, human_rate};

/// Where Kubernetes reads a container's termination message from.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Kubernetes keeps at most 4096 bytes of it.
const TERMINATION_MAX: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Imported,
    Skipped,
    Failed,
    /// `--dry-run`: would be imported.
    WouldImport,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Imported => "imported",
            Status::Skipped => "skipped",
            Status::Failed => "FAILED",
            Status::WouldImport => "would import",
        }
    }
}

/// The outcome for one archive.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveResult {
    /// Path relative to the images path.
    pub file: String,
    pub status: Status,
    /// Image references.
    pub names: Vec<String>,
    /// Config digests for the node's platform.
    pub digests: Vec<String>,
    pub seconds: f64,
    /// Size of the archive file.
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it failed, for a program to branch on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Kind>,
    /// Names that were in the runtime as another image before this archive gave them its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<Replaced>,
}

/// A name an archive took from another image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replaced {
    pub name: String,
    /// The config digest the name had before.
    pub was: String,
}

impl ArchiveResult {
    pub fn failed(file: &str, bytes: u64, kind: Kind, reason: impl Into<String>) -> ArchiveResult {
        ArchiveResult {
            file: file.to_string(),
            status: Status::Failed,
            names: Vec::new(),
            digests: Vec::new(),
            seconds: 0.0,
            bytes,
            reason: Some(reason.into()),
            failure: Some(kind),
            replaced: Vec::new(),
        }
    }
}

/// The run as a whole (`--report FILE`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub version: String,
    pub runtime: String,
    pub socket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub images_path: String,
    pub dry_run: bool,
    pub interrupted: bool,
    pub seconds: f64,
    pub imported: usize,
    pub skipped: usize,
    pub failed: usize,
    pub would_import: usize,
    pub archives: Vec<ArchiveResult>,
    /// Images the bundle promises (images.json) or `--require` names that are not in the
    /// runtime after the run: any makes the run fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Missing>,
    /// Names that several archives of the bundle give different images (one wins, by a rule
    /// the log names); `--strict` fails the run on any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
}

/// An image that should be in the runtime after the run and is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// The reference (or the config digest of an image without a name).
    pub image: String,
    /// Who wants it and what the runtime has instead, e.g. "listed in images.json for
    /// nginx.tar; not in the runtime".
    pub reason: String,
}

impl Summary {
    pub fn count(archives: &[ArchiveResult], status: Status) -> usize {
        archives.iter().filter(|a| a.status == status).count()
    }
}

/// One thing that happened.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// Which runtime was chosen, and why.
    Runtime {
        runtime: &'a str,
        socket: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<&'a str>,
        description: &'a str,
        reason: &'a str,
    },
    /// The header: what is about to happen.
    Start {
        version: &'a str,
        runtime: &'a str,
        socket: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<&'a str>,
        images_path: &'a str,
        /// Every archive the summary will count: found, refused before reading, or listed in
        /// SHA256SUMS and absent.
        archives: usize,
        /// Size of the archives found.
        bytes: u64,
        jobs: u16,
        /// Two archives in flight, one unpacked while the next is sent.
        pipelined: bool,
        dry_run: bool,
        force: bool,
    },
    Info {
        message: &'a str,
    },
    Warning {
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<&'a str>,
        message: &'a str,
    },
    /// A long archive is still going.
    Progress {
        file: &'a str,
        /// Uncompressed tar bytes passed to the runtime so far.
        tar_bytes: u64,
        seconds: f64,
    },
    Archive(&'a ArchiveResult),
    /// An image the bundle promises or `--require` names is absent after the run.
    Missing(&'a Missing),
    Summary(&'a Summary),
}

/// How events are written on stderr; the CLI's `--log-format` converts into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per event, for a person.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

pub struct Reporter {
    format: Format,
    lock: Mutex<()>,
}

impl Reporter {
    pub fn new(format: Format) -> Reporter {
        Reporter {
            format,
            lock: Mutex::new(()),
        }
    }

    pub fn emit(&self, event: &Event<'_>) {
        let line = match self.format {
            Format::Json => serde_json::to_string(event).unwrap_or_default(),
            Format::Text => text(event),
        };
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // A log line that cannot be written has nowhere else to go.
        let _ = writeln!(io::stderr().lock(), "{line}");
    }

    pub fn info(&self, message: &str) {
        self.emit(&Event::Info { message });
    }

    pub fn warn(&self, file: Option<&str>, message: &str) {
        self.emit(&Event::Warning { file, message });
    }
}

/// A rate in the units of the sizes beside it (see `units`).
pub fn rate(bytes: u64, seconds: f64) -> String {
    human_rate(bytes, seconds)
}

fn text(event: &Event<'_>) -> String {
    match event {
        Event::Runtime {
            description,
            reason,
            ..
        } => format!("runtime: {description}; chosen because the {reason}"),
        Event::Start {
            version,
            runtime,
            images_path,
            archives,
            bytes,
            jobs,
            pipelined,
            dry_run,
            force,
            ..
        } => {
            let mut s = format!(
                "offline-images {version}: {} {archives} archive(s), {}, from {images_path} into {runtime}",
                if *dry_run { "planning" } else { "importing" },
                human_bytes(*bytes)
            );
            if *pipelined {
                s.push_str(", one unpacked while the next is sent");
            } else if *jobs > 1 {
                let _ = write!(s, ", {jobs} at a time");
            }
            if *force {
                s.push_str(", re-importing images already present (--force)");
            }
            if *dry_run {
                s.push_str(" (dry run: nothing will be imported)");
            }
            s
        }
        Event::Info { message } => message.to_string(),
        Event::Warning {
            file: Some(f),
            message,
        } => format!("warning: {f}: {message}"),
        Event::Warning {
            file: None,
            message,
        } => format!("warning: {message}"),
        Event::Progress {
            file,
            tar_bytes,
            seconds,
        } => format!(
            "progress: {file}: {} read in {:.0} s ({})",
            human_bytes(*tar_bytes),
            seconds,
            rate(*tar_bytes, *seconds)
        ),
        Event::Archive(a) => archive_line(a),
        Event::Missing(m) => format!("{:<9} {}: {}", "MISSING", m.image, m.reason),
        Event::Summary(s) => summary_line(s),
    }
}

fn archive_line(a: &ArchiveResult) -> String {
    let mut s = format!("{:<9} {}", a.status.word(), a.file);
    if !a.names.is_empty() {
        let _ = write!(s, "  {}", a.names.join(", "));
    }
    if !a.digests.is_empty() {
        let _ = write!(s, "  config {}", a.digests.join(", "));
    }
    if !a.replaced.is_empty() {
        let list: Vec<String> = a
            .replaced
            .iter()
            .map(|r| format!("{} (was config {})", r.name, r.was))
            .collect();
        let _ = write!(s, "  replaced {}", list.join(", "));
    }
    match a.status {
        // What was read of the archive, as the progress lines say it: how much of it reached
        // the runtime is the backend's to say (the native client's "sent" line).
        Status::Imported => {
            let _ = write!(
                s,
                "  {} read in {:.1} s ({})",
                human_bytes(a.bytes),
                a.seconds,
                rate(a.bytes, a.seconds)
            );
        }
        Status::Skipped => s.push_str("  (already present)"),
        Status::WouldImport => {
            let _ = write!(s, "  {}", human_bytes(a.bytes));
        }
        Status::Failed => {}
    }
    if let Some(r) = &a.reason {
        // One line per archive, whatever a helper printed (ctr's errors may span lines).
        let one_line: Vec<&str> = r.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let _ = write!(s, ": {}", one_line.join("; "));
    }
    s
}

fn summary_line(s: &Summary) -> String {
    let total = s.archives.len();
    let mut line = if s.dry_run {
        format!(
            "summary (dry run): {} to import, {} already present, {} failed, of {total} archive(s)",
            s.would_import, s.skipped, s.failed
        )
    } else {
        format!(
            "summary: {} imported, {} skipped (already present), {} failed, of {total} archive(s) in {:.1} s",
            s.imported, s.skipped, s.failed, s.seconds
        )
    };
    if s.interrupted {
        line.push_str("; INTERRUPTED before the end");
    }
    if s.failed > 0 {
        let failed: Vec<&str> = s
            .archives
            .iter()
            .filter(|a| a.status == Status::Failed)
            .map(|a| a.file.as_str())
            .collect();
        let _ = write!(line, "; failed: {}", failed.join(", "));
    }
    if !s.conflicts.is_empty() {
        let _ = write!(
            line,
            "; {} name(s) given different images by several archives: {}",
            s.conflicts.len(),
            s.conflicts.join(", ")
        );
    }
    if !s.missing.is_empty() {
        let missing: Vec<&str> = s.missing.iter().map(|m| m.image.as_str()).collect();
        let _ = write!(
            line,
            "; {} image(s) MISSING from the runtime: {}",
            missing.len(),
            missing.join(", ")
        );
    }
    line
}

/// A few lines for the Kubernetes termination message, when `path` is writable.
pub fn write_termination_message(path: &Path, s: &Summary) {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
    else {
        return;
    };
    let mut msg = summary_line(s);
    for a in s.archives.iter().filter(|a| a.status == Status::Failed) {
        let _ = write!(
            msg,
            "\n{}: {}",
            a.file,
            a.reason.as_deref().unwrap_or("failed")
        );
    }
    for m in &s.missing {
        let _ = write!(msg, "\nmissing {}: {}", m.image, m.reason);
    }
    if msg.len() > TERMINATION_MAX {
        let mut cut = TERMINATION_MAX;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
    }
    let _ = f.write_all(msg.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_archive_line_names_the_file_and_the_reason() {
        let a = ArchiveResult::failed(
            "bad.tar.gz",
            10,
            Kind::Archive,
            "the gzip stream is truncated",
        );
        let line = archive_line(&a);
        assert!(line.starts_with("FAILED"), "{line}");
        assert!(
            line.contains("bad.tar.gz: the gzip stream is truncated"),
            "{line}"
        );
    }

    /// Issue 30, finding 17: "0.5 MB/s" (decimal) beside "1.0 MiB", and a rate that read as
    /// what was sent even when the runtime was sent nothing.
    #[test]
    fn import_rates_are_mib_per_second_of_the_archive_read() {
        let a = ArchiveResult {
            status: Status::Imported,
            seconds: 2.0,
            bytes: 7 << 20,
            names: vec!["docker.io/library/app:1".into()],
            reason: None,
            failure: None,
            ..ArchiveResult::failed("app.tar", 0, Kind::Import, "")
        };
        let line = archive_line(&a);
        assert!(
            line.ends_with("  docker.io/library/app:1  7.0 MiB read in 2.0 s (3.5 MiB/s)"),
            "{line}"
        );
        let progress = text(&Event::Progress {
            file: "app.tar",
            tar_bytes: 7 << 20,
            seconds: 2.0,
        });
        assert_eq!(
            progress,
            "progress: app.tar: 7.0 MiB read in 2 s (3.5 MiB/s)"
        );
    }

    #[test]
    fn a_missing_image_is_named_in_its_line_and_in_the_summary() {
        let m = Missing {
            image: "docker.io/library/app:1".into(),
            reason: "listed in images.json for app.tar; not in the runtime".into(),
        };
        let line = text(&Event::Missing(&m));
        assert!(line.starts_with("MISSING"), "{line}");
        assert!(line.contains("docker.io/library/app:1: listed in images.json"));
        let summary = Summary {
            version: "0".into(),
            runtime: "containerd".into(),
            socket: "/s".into(),
            namespace: None,
            images_path: "/images".into(),
            dry_run: false,
            interrupted: false,
            seconds: 1.0,
            imported: 0,
            skipped: 0,
            failed: 0,
            would_import: 0,
            archives: Vec::new(),
            missing: vec![m],
            conflicts: Vec::new(),
        };
        let line = summary_line(&summary);
        assert!(line.starts_with("summary: "), "{line}");
        assert!(
            line.ends_with("; 1 image(s) MISSING from the runtime: docker.io/library/app:1"),
            "{line}"
        );
    }

    #[test]
    fn json_events_carry_their_kind() {
        let a = ArchiveResult::failed("x.tar", 1, Kind::Import, "no");
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&Event::Archive(&a)).unwrap()).unwrap();
        assert_eq!(v["event"], "archive");
        assert_eq!(v["status"], "failed");
        assert_eq!(v["file"], "x.tar");
        let m = Missing {
            image: "docker.io/library/app:1".into(),
            reason: "required (--require); not in the runtime".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&Event::Missing(&m)).unwrap()).unwrap();
        assert_eq!(v["event"], "missing");
        assert_eq!(v["image"], "docker.io/library/app:1");
        assert_eq!(v["reason"], "required (--require); not in the runtime");
    }
}
