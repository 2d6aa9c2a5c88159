//! One host's delivery: one probe (architecture, runtimes, the importer it keeps), the
//! importer sent when its checksum differs, the host's importer asked what its runtime holds,
//! the units it lacks sent as one stream into a staging directory (a cut stream retried with
//! backoff, what fully arrived not sent again), imported there, the staging directory removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::hosts::Host;
use super::ssh::{path_word, quote, Counted, Failure};
use super::{ForArch, Shared};
use crate::bundled::{Arch, BINARY, CHECKSUM, DIR};
use crate::lacks::NodeHas;
use crate::remote::plan::{Ask, File, Plan};
use crate::source::Unit;
use crate::units::human_bytes;

/// A staging directory older than this (a run killed on the operator's side left it) is
/// removed by the next probe of its host.
const STALE_MINUTES: u32 = 24 * 60;

/// Sends of one stream, the first included.
pub const TRIES: u32 = 3;

/// What one host was sent and did; a line of the table and of the JSON report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub host: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub arch: Option<String>,
    pub runtime: String,
    pub importer_sent: bool,
    /// Every byte written into ssh: the importer, the units' tar stream, its retries.
    pub bytes_sent: u64,
    /// What was not sent, as stored: the units whose images the host had, and the layers of
    /// the others its runtime held.
    pub bytes_skipped: u64,
    pub units_sent: usize,
    pub units_skipped: usize,
    /// Layers of the images sent that the host's runtime held, so were left out.
    pub layers_held: usize,
    pub bytes_held: u64,
    /// Files (archives, blobs) that had fully arrived before a retry, and were not sent again.
    pub files_resumed: usize,
    pub bytes_resumed: u64,
    /// The host's import summary: archives imported, skipped, failed.
    pub imported: u64,
    pub skipped: u64,
    pub failed: u64,
    pub tries: u32,
    pub seconds: f64,
}

/// Deliver to `host`; every line goes through `say`.
pub fn deliver(shared: &Shared<'_>, host: &Host, say: &dyn Fn(&str)) -> Outcome {
    let started = Instant::now();
    let runtime = host
        .option("runtime")
        .unwrap_or(&shared.settings.runtime)
        .to_string();
    let mut out = Outcome {
        host: host.name.clone(),
        runtime,
        ..Outcome::default()
    };
    if let Err(e) = run(shared, host, &mut out, say) {
        out.error = Some(format!("{e:#}"));
    } else {
        out.ok = true;
    }
    shared.ssh.close(host);
    out.seconds = started.elapsed().as_secs_f64();
    out
}

fn run(shared: &Shared<'_>, host: &Host, out: &mut Outcome, say: &dyn Fn(&str)) -> Result<()> {
    let probe = probe(shared, host, say)?;
    out.arch = Some(probe.arch.platform());
    let found = probe.found.join(", ");
    say(&format!(
        "{} ({}), {}",
        probe.arch.platform(),
        if found.is_empty() {
            "no runtime socket or command found"
        } else {
            &found
        },
        out.runtime
    ));
    let for_arch = shared.for_arch(probe.arch)?;
    let binary = importer_path(host, probe.arch);
    if probe.importer.as_deref() == Some(for_arch.importer.sha256.as_str()) {
        say(&format!(
            "importer in place (sha256 {})",
            &for_arch.importer.sha256[..12]
        ));
    } else {
        out.bytes_sent += place_importer(shared, host, probe.arch, &for_arch)?;
        out.importer_sent = true;
        say(&format!(
            "importer sent ({}, from {})",
            human_bytes(for_arch.importer.size),
            for_arch.importer.path.display()
        ));
    }
    let flags: Vec<String> = host
        .runtime_flags(&out.runtime)
        .iter()
        .map(|f| quote(f))
        .collect();
    let flags = flags.join(" ");
    let lacking = lacking(shared, host, &for_arch, &binary, &flags, out, say)?;
    if lacking.is_empty() {
        say(&format!(
            "has every image of the {} units for its platform: nothing sent",
            for_arch.wants.len()
        ));
        return Ok(());
    }
    send_lacking(
        shared,
        host,
        &binary,
        &flags,
        &lacking,
        for_arch.wants.len(),
        out,
        say,
    )
}

/// The units of `for_arch` the host's runtime lacks, as its importer says; the others are
/// counted as skipped.
fn lacking<'s>(
    shared: &Shared<'s>,
    host: &Host,
    for_arch: &ForArch<'s>,
    binary: &str,
    flags: &str,
    out: &mut Outcome,
    say: &dyn Fn(&str),
) -> Result<Vec<&'s Unit>> {
    let listed = shared
        .ssh
        .output(host, &format!("{binary} present {flags}"), None, say)
        .map_err(|e| anyhow!("{e:#}"))
        .context("asking its importer what its runtime holds")?;
    let lines: Vec<String> = listed.lines().map(str::to_string).collect();
    let has = NodeHas::on_runtime(&crate::present::parse(&lines)?, &out.runtime);
    let (lacking, had): (Vec<_>, Vec<_>) = for_arch.wants.iter().partition(|(_, w)| has.lacks(w));
    out.units_skipped = had.len();
    out.bytes_skipped = had.iter().map(|(u, _)| u.size).sum();
    out.skipped = had.len() as u64;
    Ok(lacking.into_iter().map(|(u, _)| *u).collect())
}

/// The plan for `lacking` (the host asked which of their layers it holds), sent into a
/// staging directory and imported there; the staging directory removed.
#[allow(clippy::too_many_arguments)]
fn send_lacking(
    shared: &Shared<'_>,
    host: &Host,
    binary: &str,
    flags: &str,
    lacking: &[&Unit],
    wanted: usize,
    out: &mut Outcome,
    say: &dyn Fn(&str),
) -> Result<()> {
    let ask = format!("{binary} present {flags} --holds-from -");
    let plan = Plan::new(shared.source, lacking, &mut |layers| {
        held_layers(shared, host, &ask, layers, say)
    })?;
    for (unit, why) in &plan.left_out {
        say(&format!("{}: cannot be sent, {why}", unit.name));
        out.failed += 1;
    }
    out.layers_held = plan.held;
    out.bytes_held = plan.held_bytes;
    out.bytes_skipped += plan.held_bytes;
    if plan.units.is_empty() {
        bail!("none of the {} units it lacks can be sent", lacking.len());
    }
    let staging = format!("{}/staging-{}-{}", host.dir(), std::process::id(), nanos());
    say(&format!(
        "lacks {} of {wanted} units: sending them to {staging} ({} in {} files{})",
        plan.units.len(),
        human_bytes(plan.size()),
        plan.files.len(),
        plan.held_words("runtime")
    ));
    let result = send_and_import(shared, host, binary, &plan, &staging, flags, out, say);
    if result.is_err() {
        let rm = format!("rm -rf {}", path_word(&staging));
        if let Err(e) = shared.ssh.stream(host, &rm, say) {
            say(&format!("could not remove {staging}: {e}"));
        }
    }
    result
}

/// Which of `layers` the host's runtime holds, as its importer says (none, for a runtime
/// that takes an image only whole).
fn held_layers(
    shared: &Shared<'_>,
    host: &Host,
    ask: &str,
    layers: &[Ask],
    say: &dyn Fn(&str),
) -> Result<BTreeSet<String>> {
    let list: String = layers.iter().map(Ask::line).collect();
    let text = shared
        .ssh
        .output(host, ask, Some(&mut list.as_bytes()), say)
        .map_err(|e| anyhow!("{e:#}"))
        .context("asking its importer which layers its runtime holds")?;
    Ok(crate::remote::plan::held_in(text.lines(), layers))
}

/// What the probe learnt.
#[derive(Debug)]
struct Probe {
    arch: Arch,
    /// The sha256 of the importer the host keeps for its architecture.
    importer: Option<String>,
    /// Runtime sockets and commands found.
    found: Vec<String>,
}

fn probe(shared: &Shared<'_>, host: &Host, say: &dyn Fn(&str)) -> Result<Probe> {
    let script = format!(
        r#"d={dir}; m=$(uname -m); echo "arch $m"
case $m in x86_64|amd64) a=amd64;; aarch64|arm64) a=arm64;; *) a=$m;; esac
f="$d/{DIR}/linux-$a/{BINARY}"
if [ -x "$f" ]; then s=$(sha256sum "$f" 2>/dev/null || cat "${{f%/*}}/{CHECKSUM}"); echo "importer ${{s%% *}}"; fi
for p in /run/containerd/containerd.sock /run/k3s/containerd/containerd.sock /var/run/docker.sock /run/docker.sock; do [ -S "$p" ] && echo "socket $p"; done
for c in docker podman ctr; do command -v $c >/dev/null 2>&1 && echo "command $c"; done
[ -d "$d" ] && find "$d" -maxdepth 1 -name 'staging-*' -mmin +{STALE_MINUTES} -exec rm -rf {{}} + 2>/dev/null; true"#,
        dir = path_word(host.dir())
    );
    let text = shared.ssh.output(host, &script, None, say)?;
    parse_probe(&text)
}

fn parse_probe(text: &str) -> Result<Probe> {
    let (mut arch, mut importer, mut found) = (None, None, Vec::new());
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("arch", m)) => arch = Some(m.trim().to_string()),
            Some(("importer", s)) if s.len() == 64 => importer = Some(s.to_string()),
            Some(("socket" | "command", what)) => found.push(what.to_string()),
            _ => {}
        }
    }
    let machine = arch.ok_or_else(|| anyhow!("the probe said no architecture (uname -m)"))?;
    let arch = match machine.as_str() {
        "x86_64" | "amd64" => Arch::Amd64,
        "aarch64" | "arm64" => Arch::Arm64,
        other => bail!("its architecture {other:?} has no importer (x86_64 and aarch64 have)"),
    };
    Ok(Probe {
        arch,
        importer,
        found,
    })
}

/// Where the host keeps its importer: a bundle's `.offline-images/linux-<arch>/` folder
/// under its directory, so the importer checks itself against the `.sha256` beside it.
fn importer_path(host: &Host, arch: Arch) -> String {
    format!("{}/{DIR}/{}/{BINARY}", path_word(host.dir()), arch.dir())
}

/// The importer into its place: a temp name, then renamed with its checksum file; bytes sent.
fn place_importer(shared: &Shared<'_>, host: &Host, arch: Arch, it: &ForArch<'_>) -> Result<u64> {
    let dir = format!("{}/{DIR}/{}", path_word(host.dir()), arch.dir());
    let script = format!(
        r#"set -e; d={dir}; mkdir -p "$d"; t="$d/.{BINARY}.$$"; cat > "$t"; chmod 755 "$t"
printf '%s  {BINARY}\n' {sum} > "$t.sha256"; mv "$t.sha256" "$d/{CHECKSUM}"; mv "$t" "$d/{BINARY}""#,
        sum = quote(&it.importer.sha256)
    );
    let mut file = std::fs::File::open(&it.importer.path)
        .with_context(|| format!("cannot open {}", it.importer.path.display()))?;
    shared
        .ssh
        .output(host, &script, Some(&mut file), &|l| shared.say(host, l))
        .context("sending the importer")?;
    Ok(it.importer.size)
}

#[allow(clippy::too_many_arguments)]
fn send_and_import(
    shared: &Shared<'_>,
    host: &Host,
    binary: &str,
    plan: &Plan<'_>,
    staging: &str,
    flags: &str,
    out: &mut Outcome,
    say: &dyn Fn(&str),
) -> Result<()> {
    send_with_retries(shared, host, binary, plan, staging, out, say)?;
    let mut args = vec![format!("--log-format={}", shared.log_format_name())];
    args.extend(host.import_flags().iter().map(|f| quote(f)));
    if shared.settings.strict {
        args.push("--strict".into());
    }
    // The staging directory goes with the import's end, in the same command: one round
    // trip fewer. A command cut short leaves it to the removal after a failure.
    let import = format!(
        "{binary} import --images-path {dir} {flags} {}; s=$?; rm -rf {dir}; exit $s",
        args.join(" "),
        dir = path_word(staging),
    );
    let summary = std::sync::Mutex::new(None);
    let result = shared.ssh.stream(host, &import, &|line: &str| {
        if let Some(s) = parse_summary(line) {
            *crate::sync::lock(&summary) = Some(s);
        }
        say(line)
    });
    if let Some((imported, skipped, failed)) = crate::sync::into_inner(summary) {
        out.imported += imported;
        out.skipped += skipped;
        out.failed += failed;
    }
    result.map_err(|e| anyhow!("its import {e}"))
}

/// The stream sent, up to [`TRIES`] times with backoff when the connection drops; each retry
/// first asks what fully arrived and sends the rest.
fn send_with_retries(
    shared: &Shared<'_>,
    host: &Host,
    binary: &str,
    plan: &Plan<'_>,
    staging: &str,
    out: &mut Outcome,
    say: &dyn Fn(&str),
) -> Result<()> {
    let mut arrived: BTreeMap<String, u64> = BTreeMap::new();
    for attempt in 1..=TRIES {
        out.tries = attempt;
        if attempt > 1 {
            let wait = Duration::from_secs(2u64.pow(attempt - 1));
            say(&format!(
                "the connection dropped: trying again in {}s",
                wait.as_secs()
            ));
            std::thread::sleep(wait);
            match list(shared, host, binary, staging, say) {
                Ok(l) => arrived = l,
                Err(Failure::Connection(why)) if attempt < TRIES => {
                    say(&why);
                    continue;
                }
                Err(e) => bail!("{e}"),
            }
        }
        let came = |f: &File| arrived.get(&f.name) == Some(&f.size);
        let kept: Vec<&File> = plan.files.iter().filter(|f| came(f)).collect();
        if !kept.is_empty() {
            let bytes: u64 = kept.iter().map(|f| f.size).sum();
            out.files_resumed = kept.len();
            out.bytes_resumed = bytes;
            say(&format!(
                "{} files had arrived ({}): not sent again",
                kept.len(),
                human_bytes(bytes)
            ));
        }
        let (sent, result) = send_once(shared, host, binary, plan, &|f| !came(f), staging, say);
        out.bytes_sent += sent;
        match result {
            Ok(()) => {
                out.units_sent = plan.units.len();
                say(&format!(
                    "sent {} units ({} on this try)",
                    plan.units.len(),
                    human_bytes(sent)
                ));
                return Ok(());
            }
            Err(Failure::Connection(why)) if attempt < TRIES => say(&why),
            Err(e) => bail!("sending the units: {e}"),
        }
    }
    unreachable!("the last try returns")
}

/// What the staging directory holds, as the host's `receive --list` says.
fn list(
    shared: &Shared<'_>,
    host: &Host,
    binary: &str,
    staging: &str,
    say: &dyn Fn(&str),
) -> Result<BTreeMap<String, u64>, Failure> {
    let script = format!("{binary} receive --list --dir {}", path_word(staging));
    let text = match shared.ssh.output(host, &script, None, say) {
        Ok(t) => t,
        Err(e) => {
            return Err(e
                .downcast::<Failure>()
                .unwrap_or_else(|e| Failure::Connection(format!("{e:#}"))))
        }
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let (size, name) = l.split_once(' ')?;
            Some((name.to_string(), size.parse().ok()?))
        })
        .collect())
}

/// One stream of the files of `plan` that `send` picks into `receive`: bytes written, result.
fn send_once(
    shared: &Shared<'_>,
    host: &Host,
    binary: &str,
    plan: &Plan<'_>,
    send: &dyn Fn(&File) -> bool,
    staging: &str,
    say: &dyn Fn(&str),
) -> (u64, Result<(), Failure>) {
    let script = format!("{binary} receive --dir {}", path_word(staging));
    let mut child = match shared.ssh.spawn(host, &script, true) {
        Ok(c) => c,
        Err(e) => return (0, Err(Failure::Connection(format!("{e:#}")))),
    };
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let drain = std::thread::spawn(move || std::io::copy(&mut { stdout }, &mut std::io::sink()));
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tar = tar::Builder::new(Counted {
        inner: stdin,
        bytes: counter.clone(),
    });
    let mut written = plan.send(&mut tar, shared.source, ".", send).map(|_| ());
    if let Err(e) = tar.into_inner() {
        written = written.and(Err(anyhow!("ending the stream: {e}")));
    }
    let bytes = counter.load(std::sync::atomic::Ordering::Relaxed);
    let finished = shared.ssh.finish(host, child, say);
    let _ = drain.join();
    match (finished, written) {
        (Err(f), _) => (bytes, Err(f)),
        (Ok(()), Ok(())) => (bytes, Ok(())),
        (Ok(()), Err(e)) => (bytes, Err(Failure::Connection(format!("{e:#}")))),
    }
}

/// `(imported, skipped, failed)` of the host's summary line, text or JSON.
fn parse_summary(line: &str) -> Option<(u64, u64, u64)> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        if v["event"] == "summary" {
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            return Some((n("imported"), n("skipped"), n("failed")));
        }
        return None;
    }
    let rest = line.strip_prefix("summary: ")?;
    let mut counts = (0, 0, 0);
    for part in rest.split(", ") {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse() else { continue };
        match what {
            "imported" => counts.0 = n,
            "skipped" => counts.1 = n,
            "failed" => counts.2 = n,
            _ => {}
        }
    }
    Some(counts)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_gives_the_arch_the_importer_and_the_runtimes() {
        let sum = "a".repeat(64);
        let p = parse_probe(&format!(
            "arch aarch64\nimporter {sum}\nsocket /run/containerd/containerd.sock\ncommand podman\n"
        ))
        .unwrap();
        assert_eq!(p.arch, Arch::Arm64);
        assert_eq!(p.importer, Some(sum));
        assert_eq!(p.found, vec!["/run/containerd/containerd.sock", "podman"]);
        assert!(parse_probe("arch riscv64\n")
            .unwrap_err()
            .to_string()
            .contains("riscv64"));
        assert!(parse_probe("").is_err());
    }

    #[test]
    fn the_hosts_summary_line_is_read() {
        assert_eq!(
            parse_summary("summary: 3 imported, 1 skipped (already present), 0 failed"),
            Some((3, 1, 0))
        );
        assert_eq!(
            parse_summary(r#"{"event":"summary","imported":2,"skipped":0,"failed":1}"#),
            Some((2, 0, 1))
        );
        assert_eq!(parse_summary("imported a.tar"), None);
    }
}
