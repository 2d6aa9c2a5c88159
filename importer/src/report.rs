//! What a run tells its reader: one line per event on stderr (text for a person reading
//! `kubectl logs`, or JSON lines for a log pipeline), a JSON summary file on request, and a
//! short summary in the Kubernetes termination message.
//!
//! Much of what the text log and the termination message show comes from input that someone
//! else wrote: file names, paths, image names, digests, annotations, the error texts of
//! daemons. None of it may forge a line or move a terminal's cursor, and none may fill a line
//! on its own, so every such string passes through [`shown`] (a name) or [`prose`] (a message)
//! on its way into a text line, and [`Reporter::emit`] escapes whatever control character is
//! still left. The JSON log keeps every value whole: a JSON encoder escapes them already.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use crate::failure::Kind;
use crate::units::{human_bytes, human_rate};

/// Where Kubernetes reads a container's termination message from, unless the pod says
/// otherwise (`terminationMessagePath`; the importer's `--termination-log`).
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Kubernetes keeps at most 4096 bytes of it.
const TERMINATION_MAX: usize = 4000;
/// The most of a name (file, path, image name, digest) a text line shows, in bytes of input.
const NAME_MAX: usize = 300;
/// The most of a message or a reason (often a daemon's error text) a text line shows.
const PROSE_MAX: usize = 2000;
/// The most names of one list (an archive's images, their digests) a text line shows.
const LIST_MAX: usize = 10;
/// The summary repeats the names of failed archives and missing images only while they fit
/// in this many bytes; the others are counted, each named in its own line.
const SUMMARY_NAMES_MAX: usize = 400;

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
    /// An archive imported, its `names` set to the images of config `digests`; `replaced`
    /// are the names that were another image's before.
    pub fn imported(
        file: &str,
        bytes: u64,
        names: Vec<String>,
        digests: Vec<String>,
        replaced: Vec<Replaced>,
    ) -> ArchiveResult {
        ArchiveResult {
            names,
            digests,
            replaced,
            ..ArchiveResult::outcome(file, bytes, Status::Imported)
        }
    }

    /// An archive skipped because its images, `names` of config `digests`, are present.
    pub fn skipped(
        file: &str,
        bytes: u64,
        names: Vec<String>,
        digests: Vec<String>,
    ) -> ArchiveResult {
        ArchiveResult {
            names,
            digests,
            ..ArchiveResult::outcome(file, bytes, Status::Skipped)
        }
    }

    /// An archive a dry run would import.
    pub fn would_import(file: &str, bytes: u64) -> ArchiveResult {
        ArchiveResult::outcome(file, bytes, Status::WouldImport)
    }

    /// An archive with `status` and nothing else yet: no names, no time, no reason.
    fn outcome(file: &str, bytes: u64, status: Status) -> ArchiveResult {
        ArchiveResult {
            file: file.to_string(),
            status,
            names: Vec::new(),
            digests: Vec::new(),
            seconds: 0.0,
            bytes,
            reason: None,
            failure: None,
            replaced: Vec::new(),
        }
    }

    pub fn failed(file: &str, bytes: u64, kind: Kind, reason: impl Into<String>) -> ArchiveResult {
        ArchiveResult {
            reason: Some(reason.into()),
            failure: Some(kind),
            ..ArchiveResult::outcome(file, bytes, Status::Failed)
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
    /// Where the lines go: stderr, or (unit tests) kept to be read.
    sink: Mutex<Sink>,
}

enum Sink {
    Stderr,
    #[cfg(test)]
    Kept(Vec<String>),
}

impl Reporter {
    pub fn new(format: Format) -> Reporter {
        Reporter {
            format,
            sink: Mutex::new(Sink::Stderr),
        }
    }

    /// A reporter whose lines are kept for [`Reporter::lines`] instead of printed.
    #[cfg(test)]
    pub fn kept(format: Format) -> Reporter {
        Reporter {
            format,
            sink: Mutex::new(Sink::Kept(Vec::new())),
        }
    }

    /// The lines a [`Reporter::kept`] was given, in order.
    #[cfg(test)]
    pub fn lines(&self) -> Vec<String> {
        match &*crate::sync::lock(&self.sink) {
            Sink::Kept(lines) => lines.clone(),
            Sink::Stderr => Vec::new(),
        }
    }

    pub fn emit(&self, event: &Event<'_>) {
        let line = match self.format {
            Format::Json => serde_json::to_string(event).unwrap_or_default(),
            // Every field is escaped where the line is made; this catches what a new field
            // might have let through, so no raw control character ever reaches the log.
            Format::Text => escape_controls(&text(event), false).into_owned(),
        };
        match &mut *crate::sync::lock(&self.sink) {
            // A log line that cannot be written has nowhere else to go.
            Sink::Stderr => {
                let _ = writeln!(io::stderr().lock(), "{line}");
            }
            #[cfg(test)]
            Sink::Kept(lines) => lines.push(line),
        }
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
        } => format!(
            "runtime: {}; chosen because the {}",
            prose(description),
            prose(reason)
        ),
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
                "offline-images {version}: {} {archives} archive(s), {}, from {} into {}",
                if *dry_run { "planning" } else { "importing" },
                human_bytes(*bytes),
                shown(images_path),
                prose(runtime)
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
        Event::Info { message } => prose(message).into_owned(),
        Event::Warning {
            file: Some(f),
            message,
        } => format!("warning: {}: {}", shown(f), prose(message)),
        Event::Warning {
            file: None,
            message,
        } => format!("warning: {}", prose(message)),
        Event::Progress {
            file,
            tar_bytes,
            seconds,
        } => format!(
            "progress: {}: {} read in {:.0} s ({})",
            shown(file),
            human_bytes(*tar_bytes),
            seconds,
            rate(*tar_bytes, *seconds)
        ),
        Event::Archive(a) => archive_line(a),
        Event::Missing(m) => format!("{:<9} {}: {}", "MISSING", shown(&m.image), prose(&m.reason)),
        Event::Summary(s) => summary_line(s),
    }
}

fn archive_line(a: &ArchiveResult) -> String {
    let mut s = format!("{:<9} {}", a.status.word(), shown(&a.file));
    if !a.names.is_empty() {
        let _ = write!(s, "  {}", shown_list(&a.names));
    }
    if !a.digests.is_empty() {
        let _ = write!(s, "  config {}", shown_list(&a.digests));
    }
    if !a.replaced.is_empty() {
        let list: Vec<String> = a
            .replaced
            .iter()
            .map(|r| format!("{} (was config {})", shown(&r.name), shown(&r.was)))
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
        let _ = write!(s, ": {}", prose(r));
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
        let failed = s
            .archives
            .iter()
            .filter(|a| a.status == Status::Failed)
            .map(|a| a.file.as_str());
        let _ = write!(
            line,
            "; failed: {}",
            summary_names(failed, "archive", "FAILED")
        );
    }
    if !s.conflicts.is_empty() {
        let _ = write!(
            line,
            "; {} name(s) given different images by several archives: {}",
            s.conflicts.len(),
            summary_names(s.conflicts.iter().map(String::as_str), "name", "warning")
        );
    }
    if !s.missing.is_empty() {
        let missing = s.missing.iter().map(|m| m.image.as_str());
        let _ = write!(
            line,
            "; {} image(s) MISSING from the runtime: {}",
            s.missing.len(),
            summary_names(missing, "image", "MISSING")
        );
    }
    line
}

/// The names the summary repeats: each escaped, only those the log showed whole, and only
/// while they fit in [`SUMMARY_NAMES_MAX`]; the others are counted. So a long or hostile name
/// is shown once, in its own line, and the summary stays short.
pub fn summary_names<'a>(names: impl Iterator<Item = &'a str>, what: &str, line: &str) -> String {
    let mut listed: Vec<Cow<str>> = Vec::new();
    let mut used = 0;
    let mut others = 0;
    for name in names {
        let s = shown(name);
        if others == 0 && name.len() <= NAME_MAX && used + s.len() <= SUMMARY_NAMES_MAX {
            used += s.len() + 2;
            listed.push(s);
        } else {
            others += 1;
        }
    }
    match (listed.is_empty(), others) {
        (_, 0) => listed.join(", "),
        (true, n) => format!("{n} {what}(s), each named in its {line} line"),
        (false, n) => format!(
            "{} and {n} more, each named in its {line} line",
            listed.join(", ")
        ),
    }
}

/// A few lines for the Kubernetes termination message, when `path` exists and is writable:
/// the summary line, then one line per failed archive and per missing image, every name and
/// reason escaped and cut as in the text log.
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
            shown(&a.file),
            prose(a.reason.as_deref().unwrap_or("failed"))
        );
    }
    for m in &s.missing {
        let _ = write!(msg, "\nmissing {}: {}", shown(&m.image), prose(&m.reason));
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

// ---- input shown in a text line ---------------------------------------------------------

/// A name that came from input (a file name, a path, an image name, a digest) as a text line
/// shows it: every control character escaped (`\n`, `\u{1b}`), a backslash doubled so that an
/// escape cannot be faked, and cut in the middle past [`NAME_MAX`] bytes with a visible marker,
/// so both ends (a path's directory and its file name) stay readable.
pub fn shown(s: &str) -> Cow<'_, str> {
    let (head, cut, tail) = cut_middle(s, NAME_MAX);
    if cut == 0 && !s.chars().any(|c| c == '\\' || needs_escape(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = escape_controls(head, true).into_owned();
    if cut > 0 {
        let _ = write!(out, "…({} bytes cut)…", grouped(cut));
        out.push_str(&escape_controls(tail, true));
    }
    Cow::Owned(out)
}

/// A message or a reason as a text line shows it: one line (the lines of a multi-line error
/// joined with "; ", as ctr's and containerd's errors may span lines), any control character
/// left escaped, and cut in the middle past [`PROSE_MAX`] bytes.
pub fn prose(s: &str) -> Cow<'_, str> {
    let folded: Cow<str> = if s.contains(['\n', '\r']) {
        let lines: Vec<&str> = s
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Cow::Owned(lines.join("; "))
    } else {
        Cow::Borrowed(s)
    };
    let (head, cut, tail) = cut_middle(&folded, PROSE_MAX);
    if cut == 0 {
        if let Cow::Owned(escaped) = escape_controls(head, false) {
            return Cow::Owned(escaped);
        }
        return folded;
    }
    Cow::Owned(format!(
        "{}…({} bytes cut)…{}",
        escape_controls(head, false),
        grouped(cut),
        escape_controls(tail, false)
    ))
}

/// A list of names, each [`shown`], at most [`LIST_MAX`] of them and then how many more.
fn shown_list(names: &[String]) -> String {
    let mut out: Vec<Cow<str>> = names.iter().take(LIST_MAX).map(|n| shown(n)).collect();
    if names.len() > LIST_MAX {
        out.push(Cow::Owned(format!(
            "and {} more",
            grouped(names.len() - LIST_MAX)
        )));
    }
    out.join(", ")
}

/// Characters that must never reach a text line raw: the C0 and C1 controls and DEL (newline,
/// carriage return, the escape that starts a terminal's control sequences), the Unicode line
/// and paragraph separators, and the invisible marks that reorder or hide text (bidirectional
/// overrides and isolates, zero-width spaces, the byte order mark).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `s` with every character of [`needs_escape`] written as an escape (`\n`, `\r`, `\t`, else
/// `\u{..}`), and with `backslash`, every backslash doubled.
fn escape_controls(s: &str, backslash: bool) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| needs_escape(c) || (backslash && c == '\\'))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' if backslash => out.push_str("\\\\"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` cut to about `max` bytes, in the middle: (head, bytes left out, tail). Cut on
/// character boundaries; nothing is left out when `s` fits.
fn cut_middle(s: &str, max: usize) -> (&str, usize, &str) {
    if s.len() <= max {
        return (s, 0, "");
    }
    let mut head = max / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - max / 2;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    (&s[..head], tail - head, &s[tail..])
}

/// 4873 -> "4,873".
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
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

    /// The file name of issue 31: it forged an "imported" line and a summary, and erased a
    /// line on a terminal.
    const FORGING: &str = "a.tar\nsummary: 2 imported, 0 skipped (already present), 0 failed, \
         of 2 archive(s) in 0.1 s\n\x1b[1A\x1b[2Kx.tar";

    fn summary_of(archives: Vec<ArchiveResult>, missing: Vec<Missing>) -> Summary {
        Summary {
            version: "0".into(),
            runtime: "containerd".into(),
            socket: "/s".into(),
            namespace: None,
            images_path: "/images".into(),
            dry_run: false,
            interrupted: false,
            seconds: 1.0,
            imported: Summary::count(&archives, Status::Imported),
            skipped: 0,
            failed: Summary::count(&archives, Status::Failed),
            would_import: 0,
            archives,
            missing,
            conflicts: Vec::new(),
        }
    }

    fn raw_controls(s: &str) -> Vec<char> {
        s.chars().filter(|c| needs_escape(*c)).collect()
    }

    #[test]
    fn a_forging_file_name_is_escaped_in_every_text_line_and_the_termination_message() {
        let failed = ArchiveResult::failed(
            FORGING,
            1,
            Kind::Archive,
            format!("cannot open /images/{FORGING}\u{2028}\u{202e}: no"),
        );
        let summary = summary_of(vec![failed.clone()], Vec::new());
        let warning = Event::Warning {
            file: Some(FORGING),
            message: FORGING,
        };
        for line in [
            text(&Event::Archive(&failed)),
            text(&warning),
            text(&Event::Summary(&summary)),
        ] {
            assert!(raw_controls(&line).is_empty(), "{line:?}");
        }
        let line = text(&Event::Archive(&failed));
        assert!(
            line.starts_with("FAILED    a.tar\\nsummary: 2 imported"),
            "{line}"
        );
        assert!(
            line.contains("\\u{1b}[1A\\u{1b}[2Kx.tar: cannot open"),
            "{line}"
        );
        let summary_line = text(&Event::Summary(&summary));
        assert!(
            summary_line.starts_with("summary: 0 imported, 0 skipped (already present), 1 failed"),
            "{summary_line}"
        );
        let path = std::env::temp_dir().join(format!("oi-termination-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        write_termination_message(&path, &summary);
        let message = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = message.split('\n').collect();
        assert_eq!(lines.len(), 2, "the summary and one failure: {message:?}");
        assert_eq!(lines[0], summary_line);
        assert!(
            raw_controls(&message.replace('\n', "")).is_empty(),
            "{message:?}"
        );
    }

    #[test]
    fn a_backslash_is_doubled_so_that_an_escape_cannot_be_faked() {
        assert_eq!(shown("a\\nb.tar"), "a\\\\nb.tar");
        assert_eq!(shown("a\nb.tar"), "a\\nb.tar");
        assert_eq!(shown("plain.tar"), "plain.tar");
        assert!(matches!(shown("plain.tar"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_long_name_is_cut_in_the_middle_with_a_marker_naming_what_was_cut() {
        let long = format!("{}/x.tar", "d".repeat(5000));
        let s = shown(&long);
        assert!(s.len() < NAME_MAX + 40, "{}", s.len());
        assert!(s.starts_with("ddd"), "{s}");
        assert!(s.ends_with("ddd/x.tar"), "{s}");
        let cut = long.len() - NAME_MAX;
        assert!(
            s.contains(&format!("…({} bytes cut)…", grouped(cut))),
            "{s}"
        );
        assert_eq!(grouped(4873), "4,873");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(grouped(999), "999");
        // Cut on character boundaries.
        let wide = "é".repeat(1000);
        assert!(shown(&wide).contains("bytes cut"));
    }

    #[test]
    fn a_multi_line_daemon_error_is_folded_into_one_line() {
        let r = "ctr: failed to import\n  unexpected EOF\r\n\nsecond cause";
        assert_eq!(
            prose(r),
            "ctr: failed to import; unexpected EOF; second cause"
        );
        assert_eq!(
            prose("tab\there, esc \x1b[2K"),
            "tab\\there, esc \\u{1b}[2K"
        );
    }

    #[test]
    fn an_archive_line_shows_at_most_ten_names_and_counts_the_rest() {
        let mut a = ArchiveResult::failed("many.tar", 1, Kind::Import, "no");
        a.status = Status::Imported;
        a.reason = None;
        a.names = (0..200_000).map(|i| format!("r/n:{i}")).collect();
        let line = archive_line(&a);
        assert!(line.contains("r/n:9, and 199,990 more"), "{line}");
        assert!(line.len() < 400, "{}", line.len());
    }

    #[test]
    fn the_summary_repeats_no_name_the_log_had_to_cut() {
        let long = format!("{}/x.tar", "d".repeat(5000));
        let archives = vec![
            ArchiveResult::failed("a.tar", 1, Kind::Archive, "no"),
            ArchiveResult::failed(&long, 1, Kind::Archive, "no"),
            ArchiveResult::failed("z.tar", 1, Kind::Archive, "no"),
        ];
        let line = summary_line(&summary_of(archives, Vec::new()));
        assert!(
            line.ends_with("; failed: a.tar and 2 more, each named in its FAILED line"),
            "{line}"
        );
        let only_long = vec![ArchiveResult::failed(&long, 1, Kind::Archive, "no")];
        let line = summary_line(&summary_of(only_long, Vec::new()));
        assert!(
            line.ends_with("; failed: 1 archive(s), each named in its FAILED line"),
            "{line}"
        );
    }

    #[test]
    fn json_events_keep_input_whole() {
        let long = format!("{FORGING}{}", "d".repeat(5000));
        let a = ArchiveResult::failed(&long, 1, Kind::Import, FORGING);
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&Event::Archive(&a)).unwrap()).unwrap();
        assert_eq!(v["file"], long.as_str());
        assert_eq!(v["reason"], FORGING);
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
