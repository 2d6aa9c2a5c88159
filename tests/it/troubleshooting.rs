//! The guide's troubleshooting table and the code say each failure the same way (issue 30,
//! "settle the wording"). The sources are read as text: every string literal of
//! `importer/src` and the chart's templates, compared with the messages the table quotes
//! (`…` there stands for any text). In a literal, a placeholder (`{}`, `{e:#}`, a template's
//! `%s`) stands for any text too, but a quoted message must take at least half of its
//! characters from the literal's own text; a placeholder naming a constant of the sources
//! (`{PIN_ENV}`) is that constant's value.
//!
//! - Every message the table quotes is one the code prints: each clause of it (between `…`,
//!   `: ` and `; `, where messages are put together) is found in a literal.
//! - Every failure the code classifies (a usage error, a failed archive's kind, an unreachable
//!   runtime, a compressed stream or an archive the reader refuses) is quoted in the table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A message as a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// Any text.
    Any,
}

/// A placeholder of a literal.
const ANY: char = '\u{1}';

/// A table's message: `…` is any text, and it may be part of a longer one.
fn quoted(text: &str) -> Vec<Tok> {
    let mut out = vec![Tok::Any];
    out.extend(
        text.chars()
            .map(|c| if c == '…' { Tok::Any } else { Tok::Lit(c) }),
    );
    out.push(Tok::Any);
    out
}

/// When some text is a message of `literal` (whole) and holds a message of `table`: how many
/// characters of `table` the literal's own text gives, at best (the rest is placeholders').
fn overlap(table: &[Tok], literal: &[Tok]) -> Option<usize> {
    let (n, m) = (table.len(), literal.len());
    let at = |i: usize, j: usize| i * (m + 1) + j;
    let mut best: Vec<Option<usize>> = vec![None; (n + 1) * (m + 1)];
    best[0] = Some(0);
    for i in 0..=n {
        for j in 0..=m {
            let Some(here) = best[at(i, j)] else { continue };
            let mut reach = |i2: usize, j2: usize, gain: usize| {
                let slot = &mut best[at(i2, j2)];
                *slot = Some(slot.map_or(here + gain, |s| s.max(here + gain)));
            };
            let (a, b) = (table.get(i), literal.get(j));
            if a == Some(&Tok::Any) {
                reach(i + 1, j, 0);
                if j < m {
                    reach(i, j + 1, 0);
                }
            }
            if b == Some(&Tok::Any) {
                reach(i, j + 1, 0);
                if i < n {
                    reach(i + 1, j, 0);
                }
            }
            if let (Some(Tok::Lit(x)), Some(Tok::Lit(y))) = (a, b) {
                if x == y {
                    reach(i + 1, j + 1, 1);
                }
            }
        }
    }
    best[at(n, m)]
}

/// Whether `literal` prints text that holds `table`, at least half of whose characters are
/// the literal's own, not a placeholder's.
fn prints(table: &str, literal: &Literal) -> bool {
    let own = table.chars().filter(|c| *c != '…').count();
    overlap(&quoted(table), &literal.pattern()).is_some_and(|n| n >= 4 && n * 2 >= own)
}

/// A string literal of the sources, its placeholders made [`ANY`].
#[derive(Debug, Clone)]
struct Literal {
    text: String,
    file: PathBuf,
}

impl Literal {
    fn pieces(&self) -> impl Iterator<Item = &str> {
        self.text.split(ANY)
    }

    fn pattern(&self) -> Vec<Tok> {
        self.text
            .chars()
            .map(|c| if c == ANY { Tok::Any } else { Tok::Lit(c) })
            .collect()
    }

    /// Whether `run` (literal text) occurs inside one piece of this literal.
    fn holds(&self, run: &str) -> bool {
        self.pieces().any(|p| p.contains(run))
    }

    /// For a message: the placeholders shown as `…`.
    fn shown(&self) -> String {
        self.text.replace(ANY, "…")
    }
}

/// The string literals of a Rust source (with where each starts), comments and character
/// literals left out, escapes and line continuations resolved.
fn rust_literals(text: &str) -> Vec<(usize, String)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(b.len(), |n| i + n);
        } else if text[i..].starts_with("/*") {
            i = text[i..].find("*/").map_or(b.len(), |n| i + n + 2);
        } else if let Some(len) = raw_string_start(text, i) {
            // r"…" or r#"…"#: no escapes, ends at the quote and as many hashes.
            let hashes = len - 2;
            let end = format!("\"{}", "#".repeat(hashes));
            let body = i + len;
            let stop = text[body..].find(&end).map_or(b.len(), |n| body + n);
            out.push((i, text[body..stop].to_string()));
            i = stop + end.len();
        } else if b[i] == b'\'' {
            // A character literal ('"', '\'') or a lifetime.
            let rest = &text[i + 1..];
            let mut chars = rest.char_indices();
            match chars.next() {
                Some((_, '\\')) => i += 1 + rest[2..].find('\'').map_or(1, |n| n + 3),
                Some((_, c)) if rest[c.len_utf8()..].starts_with('\'') => {
                    i += 2 + c.len_utf8();
                }
                _ => i += 1,
            }
        } else if b[i] == b'"' {
            let start = i;
            let mut s = String::new();
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    let next = text[i + 1..].chars().next().unwrap_or(' ');
                    i += 1 + next.len_utf8();
                    match next {
                        '\n' => {
                            while i < b.len() && b[i].is_ascii_whitespace() {
                                i += 1;
                            }
                        }
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        other => s.push(other),
                    }
                } else {
                    let c = text[i..].chars().next().unwrap();
                    s.push(c);
                    i += c.len_utf8();
                }
            }
            i += 1;
            out.push((start, s));
        } else {
            i += 1;
        }
    }
    out
}

/// The length of `r"` or `r#"` (with its hashes) when a raw string starts at `i`.
fn raw_string_start(text: &str, i: usize) -> Option<usize> {
    let b = text.as_bytes();
    let word_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    if b[i] != b'r' || (word_before && b[i - 1] != b'b') {
        return None;
    }
    let hashes = text[i + 1..].bytes().take_while(|c| *c == b'#').count();
    (text.as_bytes().get(i + 1 + hashes) == Some(&b'"')).then_some(hashes + 2)
}

/// A format string's placeholders made [`ANY`], but those naming a constant of `consts`
/// replaced by its value; `{{` and `}}` are braces.
fn placeholders(format: &str, consts: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('{', Some('{')) | ('}', Some('}')) => {
                out.push(c);
                chars.next();
            }
            ('{', _) => {
                let mut inner = String::new();
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                    inner.push(d);
                }
                match consts.get(&inner) {
                    Some(value) => out.push_str(value),
                    None => out.push(ANY),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// `const NAME: &str = "value";` of every source.
fn constants() -> HashMap<String, String> {
    let mut out = HashMap::new();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let line = line.trim_start().trim_start_matches("pub ");
            let Some(rest) = line.strip_prefix("const ") else {
                continue;
            };
            let Some((name, value)) = rest.split_once(": &str = \"") else {
                continue;
            };
            if let Some(value) = value.strip_suffix("\";") {
                out.insert(name.to_string(), value.to_string());
            }
        }
    }
    out
}

/// A template's printf verbs (`%s`, `%q`, `%v`, `%d`) made [`ANY`].
fn printf_placeholders(format: &str) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('%')) => {
                out.push('%');
                chars.next();
            }
            ('%', Some(_)) => {
                chars.next();
                out.push(ANY);
            }
            _ => out.push(c),
        }
    }
    out
}

fn rust_files() -> Vec<PathBuf> {
    walkdir::WalkDir::new(root().join("importer/src"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        // Modules of the unit tests alone (a fake runtime, test archives) print nothing to
        // an operator.
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .any(|l| l == "#![cfg(test)]")
        })
        .collect()
}

/// A source without its unit tests.
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
}

/// Every literal of the importer's sources and the chart's templates.
fn every_literal() -> Vec<Literal> {
    let consts = constants();
    let mut out = Vec::new();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (_, s) in rust_literals(without_tests(&text)) {
            for line in s.split('\n') {
                out.push(Literal {
                    text: placeholders(line, &consts),
                    file: file.clone(),
                });
            }
        }
    }
    for entry in std::fs::read_dir(root().join("chart/templates")).unwrap() {
        let file = entry.unwrap().path();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut flat = String::new();
        let mut rest = text.as_str();
        while let Some(open) = rest.find("{{") {
            flat.push_str(&rest[..open]);
            flat.push(ANY);
            let close = rest[open..].find("}}").map_or(rest.len(), |n| open + n + 2);
            // The strings of the action itself: `fail`, `printf` messages.
            for (_, s) in rust_literals(&rest[open..close]) {
                out.push(Literal {
                    text: printf_placeholders(&s),
                    file: file.clone(),
                });
            }
            rest = &rest[close..];
        }
        flat.push_str(rest);
        for line in flat.lines() {
            out.push(Literal {
                text: line.to_string(),
                file: file.clone(),
            });
        }
    }
    out
}

/// The calls whose message is a failure the operator must find in the table.
const CLASSIFIED: &[&str] = &[
    "exit::usage(",
    "Failure::error(",
    "Unreachable(",
    "decompress_error(",
];

/// The messages of classified failures: the literals inside those calls (and, in the archive
/// reader, inside every `bail!` and `anyhow!`), with the file they are in.
fn classified_messages() -> Vec<Literal> {
    let consts = constants();
    let mut out = Vec::new();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let text = without_tests(&text);
        let reader = file.starts_with(root().join("importer/src/archive"));
        let literals = rust_literals(text);
        let mut calls: Vec<usize> = Vec::new();
        for name in CLASSIFIED.iter().chain(if reader {
            &["bail!(", "anyhow!("][..]
        } else {
            &[]
        }) {
            calls.extend(text.match_indices(name).map(|(at, n)| at + n.len()));
        }
        for open in calls {
            let close = closing_paren(text, open);
            let inside = literals.iter().find(|(at, _)| *at >= open && *at < close);
            if let Some((_, s)) = inside {
                let message = placeholders(&s.replace('\n', " "), &consts);
                let literal_chars = message.chars().filter(|c| *c != ANY).count();
                if literal_chars >= 16 {
                    out.push(Literal {
                        text: message,
                        file: file.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The index of the `)` that closes the call whose arguments start at `open`.
fn closing_paren(text: &str, open: usize) -> usize {
    let mut depth = 1;
    let mut in_string = false;
    let b = text.as_bytes();
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'(' if !in_string => depth += 1,
            b')' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// The messages the troubleshooting table of `guide` quotes in its first column.
fn table_messages(guide: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(guide)).unwrap();
    let start = text
        .find("\n## Troubleshooting\n")
        .or_else(|| text.find("\n## 故障排查\n"))
        .expect("a troubleshooting section");
    let section = &text[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |n| n + 3)];
    let mut out = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cell = row[2..].split(" | ").next().unwrap();
        out.extend(cell.split('`').skip(1).step_by(2).map(str::to_string));
    }
    assert!(
        out.len() > 40,
        "{guide}: only {} messages in the table",
        out.len()
    );
    out
}

/// Whether `part` and `literal` share `k` characters in a row (all of `part` when shorter),
/// or `part` holds a whole piece of the literal (of four characters or more) between its
/// placeholders.
fn shares(part: &str, literal: &Literal, k: usize) -> bool {
    let chars: Vec<char> = part.chars().collect();
    let k = k.min(chars.len()).max(1);
    let whole_piece = literal
        .pieces()
        .map(str::trim)
        .any(|p| p.chars().count() >= 4 && part.contains(p));
    whole_piece
        || chars.windows(k).any(|w| {
            let run: String = w.iter().collect();
            literal.holds(&run)
        })
}

/// The clauses of a message the table quotes: its parts between `…`, `: ` and `; `, where the
/// code puts messages together (an error's context, a reason added), each with letters.
fn clauses(message: &str) -> Vec<&str> {
    message
        .split('…')
        .flat_map(|p| p.split("; "))
        .flat_map(|p| p.split(": "))
        .map(str::trim)
        .filter(|p| p.chars().filter(|c| c.is_alphanumeric()).count() >= 4)
        .collect()
}

/// A clause of a message the table quotes is one the code prints: a literal prints it; or it
/// is one name (`IMPORT_STRICT="`) that a literal is; or its first word starts a literal
/// whose placeholder the rest fills, printed by another (`ctr ` and `images import`).
fn printed_by_code(clause: &str, literals: &[Literal]) -> bool {
    if literals.iter().any(|l| prints(clause, l)) {
        return true;
    }
    let name = clause.trim_matches(|c: char| !c.is_alphanumeric() && c != '_');
    if !clause.contains(' ') && literals.iter().any(|l| l.text == name) {
        return true;
    }
    let Some((first, rest)) = clause.split_once(' ') else {
        return false;
    };
    let starts = |l: &Literal| {
        l.pieces().next() == Some(&format!("{first} "))
            && l.text[first.len() + 1..].starts_with(ANY)
    };
    literals.iter().any(starts) && literals.iter().any(|l| prints(rest, l))
}

/// A classified failure is quoted by a table message: the failure's text holds it, the
/// message gives at least half of the failure's own text (the rest may be `…`), and they
/// share twelve characters in a row (all of the failure's longest piece, when shorter).
fn quoted_by_table(message: &Literal, table: &[String]) -> bool {
    let longest = message
        .pieces()
        .map(|p| p.trim().chars().count())
        .max()
        .unwrap_or(0);
    let own = message.pieces().map(|p| p.chars().count()).sum::<usize>();
    let m = message.pattern();
    table.iter().any(|row| {
        row.split('…')
            .any(|part| shares(part.trim(), message, longest.min(12)))
            && overlap(&quoted(row), &m).is_some_and(|n| n * 2 >= own)
    })
}

#[test]
fn every_message_the_troubleshooting_table_quotes_is_one_the_code_prints() {
    let literals = every_literal();
    let mut stale = Vec::new();
    for message in table_messages("OFFLINE-IMAGES.md") {
        for clause in clauses(&message) {
            if !printed_by_code(clause, &literals) {
                stale.push(format!("{clause:?} (of `{message}`)"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "the troubleshooting table quotes words the code no longer prints:\n{}",
        stale.join("\n")
    );
}

#[test]
fn every_failure_the_code_classifies_is_in_the_troubleshooting_table() {
    for guide in ["OFFLINE-IMAGES.md", "OFFLINE-IMAGES.zh-CN.md"] {
        let table = table_messages(guide);
        let mut missing: Vec<String> = classified_messages()
            .iter()
            .filter(|m| !quoted_by_table(m, &table))
            .map(|m| {
                format!(
                    "{}: {}",
                    m.file.strip_prefix(root()).unwrap().display(),
                    m.shown()
                )
            })
            .collect();
        missing.sort();
        missing.dedup();
        assert!(
            missing.is_empty(),
            "{guide}: failures the troubleshooting table does not list:\n{}",
            missing.join("\n")
        );
    }
}

/// The checks above can fail: words the code does not print are found stale, and a
/// classified failure that no row quotes is found missing.
#[test]
fn the_wording_checks_notice_a_stale_row_and_a_missing_one() {
    let literals = every_literal();
    // What the table said before the wording was settled, and words never printed.
    assert!(!printed_by_code("the archive is unreadable", &literals));
    assert!(!printed_by_code("the bundle is upside down", &literals));
    assert!(printed_by_code("the gzip stream is truncated", &literals));
    assert!(printed_by_code("IMPORT_STRICT=\"", &literals));
    let usage = classified_messages()
        .into_iter()
        .find(|m| m.shown().starts_with("images path … does not exist"))
        .expect("the usage error of a missing images path is classified");
    let row = |text: &str| vec![text.to_string()];
    assert!(quoted_by_table(
        &usage,
        &row("images path … does not exist: is the volume mounted?")
    ));
    assert!(!quoted_by_table(&usage, &row("images path … is missing")));
    assert!(!quoted_by_table(&usage, &row("… is not mounted")));
}
