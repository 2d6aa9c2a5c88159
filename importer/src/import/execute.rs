//! Executing the plan: the workers that import the archives to import (side by side, or
//! pipelined in plan order: see `turns`), each archive's import into the runtime in its steps
//! with retries while the runtime is unreachable, the labels its images get, and after the
//! workers the names several archives give settled on their winners (see `owners`).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::archive::{check_carried, check_sha256, config_digests, name_configs, Watched};
use super::owners;
use super::plan::{Plan, Planned, PresentSet};
use super::turns::{Passage, Pipeline};
use super::{Jobs, Run};
use crate::failure::{self, Kind};
use crate::labels::{LABEL_ARCHIVE_PREFIX, LABEL_MANAGED, LABEL_PINNED, LABEL_RELEASE_PREFIX};
use crate::report::{ArchiveResult, Event, Replaced, Reporter, Status};
use crate::runtime;
use crate::stop::{sleep_unless_stopped, stop_signal};

/// Retries when the runtime is briefly unreachable (restarting): 1+2+4+8+16 s. The unit
/// tests' fake runtime is retried at once, the same number of times.
pub(in crate::import) const RETRY_DELAYS: &[u64] = if cfg!(test) {
    &[0, 0, 0, 0, 0]
} else {
    &[1, 2, 4, 8, 16]
};

/// Import the planned archives `--jobs` at a time, each result logged as it lands, onto the
/// plan's results in plan order. Returns whether a signal stopped the run (the archives not
/// started then fail as such), and the names several archives give different images.
pub(super) fn execute(ctx: &Run<'_>, plan: &mut Plan) -> (bool, Vec<String>) {
    let todo = &plan.todo;
    let (mut done, landed) = import_parallel(ctx, todo);
    done.sort_by_key(|(i, _)| *i);
    let mut conflicts = Vec::new();
    if stop_signal().is_none() {
        let again = settle_shared_names(ctx, plan, landed, &mut conflicts);
        for r in again {
            let slot = done.iter_mut().map(|(_, d)| d);
            let slot = slot
                .chain(plan.results.iter_mut())
                .find(|d| d.file == r.file);
            if let Some(slot) = slot {
                *slot = r;
            }
        }
    }
    let interrupted = stop_signal().is_some();
    if interrupted {
        let finished: Vec<usize> = done.iter().map(|(i, _)| *i).collect();
        for (i, p) in plan.todo.iter().enumerate() {
            if !finished.contains(&i) {
                let r = ArchiveResult::failed(
                    &p.unit.name,
                    p.unit.size,
                    Kind::Stopped,
                    "not started: the run was stopped",
                );
                ctx.reporter.emit(&Event::Archive(&r));
                done.push((i, r));
            }
        }
    }
    plan.results.extend(done.into_iter().map(|(_, r)| r));
    (interrupted, conflicts)
}

/// What the workers did, by index in the plan: each archive's result, and the names it set.
type Landed = (Vec<(usize, ArchiveResult)>, Vec<(usize, NameConfigs)>);

/// The workers: each takes the next archive; one that lost a race (see [`lost_a_race`]) is
/// imported again alone once the others are done.
fn import_parallel(ctx: &Run<'_>, todo: &[Planned]) -> Landed {
    let pipeline = (ctx.jobs == Jobs::Pipelined).then(Pipeline::new);
    let done = Mutex::new(Vec::new());
    let landed = Mutex::new(Vec::new());
    let retry = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let land = |i: usize, r: ArchiveResult, names: NameConfigs| {
        ctx.reporter.emit(&Event::Archive(&r));
        crate::sync::lock(&done).push((i, r));
        crate::sync::lock(&landed).push((i, names));
    };
    thread::scope(|s| {
        for _ in 0..ctx.jobs.workers().min(todo.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(p) = todo.get(i) else { break };
                let passage = Passage::new(pipeline.as_ref(), i);
                if stop_signal().is_some() {
                    break;
                }
                let (r, names) = import_one(ctx, p, &passage);
                // Pipelined, the results too land in plan order.
                passage.finish();
                if lost_a_race(&r) {
                    // Tried again alone below, once the other imports are done.
                    crate::sync::lock(&retry).push(i);
                    continue;
                }
                land(i, r, names);
            });
        }
    });
    let mut retry = crate::sync::into_inner(retry);
    retry.sort_unstable();
    for i in retry {
        if stop_signal().is_some() {
            break;
        }
        let p = &todo[i];
        ctx.reporter.info(&format!(
            "{}: importing again on its own: another import, or containerd collecting what no \
             image used any more, changed a layer or an image name it shares meanwhile",
            p.unit.name
        ));
        let (r, names) = import_one(ctx, p, &Passage::new(None, i));
        land(i, r, names);
    }
    (
        crate::sync::into_inner(done),
        crate::sync::into_inner(landed),
    )
}

/// An archive that lost a race (the backend says so: see [`Kind::Race`]) with a parallel
/// import, another tool, or containerd's garbage collector (which can take a shared layer's
/// snapshot while `ctr` names the image before unpacking it) is imported again alone once the
/// others are done (and settle_shared_names then gives a shared name to the archive that
/// wins it). Once: a second loss is the archive's result.
fn lost_a_race(r: &ArchiveResult) -> bool {
    r.status == Status::Failed && r.failure == Some(Kind::Race)
}

/// Run `op`, retrying with backoff while the runtime is unreachable.
pub(super) fn with_retries<T>(
    reporter: &Reporter,
    file: Option<&str>,
    mut op: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if runtime::is_unreachable(&e) && attempt < RETRY_DELAYS.len() => {
                let delay = RETRY_DELAYS[attempt];
                attempt += 1;
                reporter.warn(
                    file,
                    &format!(
                        "{e:#}; retrying in {delay} s (attempt {attempt} of {})",
                        RETRY_DELAYS.len()
                    ),
                );
                if !sleep_unless_stopped(Duration::from_secs(delay)) {
                    return Err(e);
                }
            }
            other => return other,
        }
    }
}

/// Import one archive: its result, and each name it set with the config digest (node
/// platform) that name now has.
fn import_one(ctx: &Run<'_>, p: &Planned, passage: &Passage<'_>) -> (ArchiveResult, NameConfigs) {
    let started = Instant::now();
    let (mut result, names) = match import_archive(ctx, p, passage) {
        Ok(r) => r,
        Err(e) => {
            let (kind, reason) = match stop_signal() {
                Some(sig) => (Kind::Stopped, format!("aborted by {sig}")),
                None => (failure::kind_of(&e), format!("{e:#}")),
            };
            (
                ArchiveResult::failed(&p.unit.name, p.unit.size, kind, reason),
                Vec::new(),
            )
        }
    };
    result.seconds = started.elapsed().as_secs_f64();
    (result, names)
}

/// Image names with the config digest each was given.
pub(super) type NameConfigs = Vec<(String, Option<String>)>;

/// Every name that several archives give different images ends with the archive that wins it
/// (see `owners`), on this run and the next, and the log says so. An archive that set such a
/// name after its winner did (it sorts after a winner images.json lists, or finished after it
/// with `--jobs` above 1), or while the winner was skipped as present, is followed by the
/// winner once more. Returns the results of those imports; `conflicts` gets the names.
fn settle_shared_names(
    ctx: &Run<'_>,
    plan: &mut Plan,
    landed: Vec<(usize, NameConfigs)>,
    conflicts: &mut Vec<String>,
) -> Vec<ArchiveResult> {
    // Name -> (archive, place in the order the archives finished) for every name set here.
    let mut set: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
    for (order, (t, names)) in landed.into_iter().enumerate() {
        let archive = plan.todo[t].index;
        for (name, config) in names {
            plan.owners.add(&name, archive, config.as_deref(), false);
            set.entry(name).or_default().push((archive, order));
        }
    }
    let found = plan.owners.conflicts();
    if found.is_empty() {
        return Vec::new();
    }
    let present = lazy_present(ctx, found.iter().any(|c| set.contains_key(c.name)));
    let mut again: Vec<usize> = Vec::new();
    for c in &found {
        let file = |i: usize| plan.all[i].unit.name.as_str();
        let describe = |cl: &owners::Claim| match &cl.config {
            Some(d) => format!("{} (config {d})", file(cl.archive)),
            None => file(cl.archive).to_string(),
        };
        let losers: Vec<String> = c.losers.iter().map(|l| describe(l)).collect();
        ctx.reporter.warn(
            Some(file(c.winner.archive)),
            &format!(
                "{} is also in {}, with another image: {} wins it ({}), so {} is {}",
                c.name,
                losers.join(", "),
                file(c.winner.archive),
                c.rule(),
                c.name,
                describe(c.winner)
            ),
        );
        conflicts.push(c.name.to_string());
        if winner_set_it_last(c, set.get(c.name), present.as_ref()) == Some(false) {
            again.push(c.winner.archive);
        }
    }
    again.sort_unstable();
    again.dedup();
    let all = plan.all.clone();
    again
        .into_iter()
        .filter_map(|i| import_winner(ctx, &all[i]))
        .collect()
}

/// What the runtime has now, when `needed` (a name was set during the run).
fn lazy_present(ctx: &Run<'_>, needed: bool) -> Option<PresentSet> {
    if !needed {
        return None;
    }
    match with_retries(ctx.reporter, None, || PresentSet::of(ctx.runtime)) {
        Ok(p) => Some(p),
        Err(e) => {
            ctx.reporter.warn(
                None,
                &format!("cannot check names that several archives carry: {e:#}"),
            );
            None
        }
    }
}

/// Whether the winner of a shared name holds it after the run: by the runtime's own word when
/// it reports the name's config digest, else by the order in which the archives set it
/// (`set`: archive and place in the order they finished). None when no archive set the name
/// during the run (it is as the plan found it).
fn winner_set_it_last(
    c: &owners::Conflict<'_>,
    set: Option<&Vec<(usize, usize)>>,
    present: Option<&PresentSet>,
) -> Option<bool> {
    let set = set?;
    let now = present
        .and_then(|p| p.by_name.get(c.name))
        .and_then(|p| p.config_digest.as_deref());
    if let (Some(now), Some(want)) = (now, c.winner.config.as_deref()) {
        return Some(now == want);
    }
    let at = |archive: usize| set.iter().find(|(a, _)| *a == archive).map(|(_, o)| *o);
    let last_loser = c.losers.iter().filter_map(|l| at(l.archive)).max();
    Some(match (at(c.winner.archive), last_loser) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(w), Some(l)) => w > l,
    })
}

/// Import a shared name's winner once more, after an archive that lost the name set it.
fn import_winner(ctx: &Run<'_>, p: &Planned) -> Option<ArchiveResult> {
    if stop_signal().is_some() {
        return None;
    }
    ctx.reporter.info(&format!(
        "importing {} once more: another archive set names that it wins",
        p.unit.name
    ));
    let (r, _) = import_one(ctx, p, &Passage::new(None, 0));
    if r.status == Status::Failed {
        ctx.reporter.emit(&Event::Archive(&r));
    }
    Some(r)
}

fn import_archive(
    ctx: &Run<'_>,
    p: &Planned,
    passage: &Passage<'_>,
) -> Result<(ArchiveResult, NameConfigs)> {
    let file = p.unit.name.as_str();
    if let Some(expected) = &p.expected_sha256 {
        check_sha256(ctx.source, &p.unit, expected)?;
    }
    check_carried(ctx.source, ctx.runtime, &p.unit)?;
    if ctx.args.dry_run {
        // Opening reads the first bytes: an empty or non-archive file already fails here.
        let opened = ctx.source.open(&p.unit)?;
        drop(opened);
        let would = ArchiveResult::would_import(file, p.unit.size);
        return Ok((would, Vec::new()));
    }
    let imported = import_in_steps(ctx, p, passage)?;
    for w in &imported.info.warnings {
        ctx.reporter.warn(Some(file), w);
    }
    if let Some(detail) = &imported.detail {
        ctx.reporter.info(&format!("{file}: {detail}"));
    }
    for image in &imported.info.images {
        if image.for_platform(&ctx.platform).is_none() {
            let why = image.not_for(&ctx.platform);
            ctx.reporter
                .warn(Some(file), &format!("{why}, so it was not imported"));
        }
    }
    let names = if imported.names.is_empty() {
        imported
            .info
            .images
            .iter()
            .flat_map(|i| i.names.clone())
            .collect()
    } else {
        imported.names.clone()
    };
    let configs = name_configs(&imported.info, &names, &ctx.platform);
    label_imported(ctx, p, &names, &configs);
    let result = ArchiveResult::imported(
        file,
        p.unit.size,
        names.clone(),
        config_digests(&imported.info, &ctx.platform),
        replaced_names(ctx.present, &names, &configs),
    );
    Ok((result, names.into_iter().zip(configs).collect()))
}

/// The names an archive took from another image: in the runtime before the run as an image
/// of another config digest.
fn replaced_names(
    before: &PresentSet,
    names: &[String],
    configs: &[Option<String>],
) -> Vec<Replaced> {
    names
        .iter()
        .zip(configs)
        .filter_map(|(name, now)| {
            let was = before.by_name.get(name)?.config_digest.as_deref()?;
            (was != now.as_deref()?).then(|| Replaced {
                name: name.clone(),
                was: was.to_string(),
            })
        })
        .collect()
}

/// The archive into the runtime, each of its two steps in its turn (see `turns`). The
/// archive is read before its turn to store: it waits for the turn, and makes the disk
/// preflight, before the first thing it writes. On a re-run that has nothing to send, two
/// archives are then read and decompressed at once.
fn import_in_steps(ctx: &Run<'_>, p: &Planned, passage: &Passage<'_>) -> Result<runtime::Imported> {
    let file = p.unit.name.as_str();
    let gated = Cell::new(false);
    let gate = || -> Result<()> {
        gated.set(true);
        passage.store();
        // A unit built from several files (a layout's image) has no archive to weigh.
        let (Some(max_used), Some(path)) = (ctx.args.disk_max_used, ctx.source.file(&p.unit))
        else {
            return Ok(());
        };
        ctx.runtime.preflight(path, &ctx.platform, max_used)
    };
    let stage = || {
        with_retries(ctx.reporter, Some(file), || {
            stage_into_runtime(ctx, p, &gate)
        })
    };
    // The first try reads ahead, out of its turn, with no retries of its own: a runtime lost
    // before the gate is tried again, with retries, in the archive's turn (not twice over).
    let rest = match stage_into_runtime(ctx, p, &gate) {
        // Lost while only reading, maybe with the archive before it: read again in its turn.
        Err(e) if !gated.get() && failure::kind_of(&e) == Kind::Unreachable => {
            ctx.reporter.info(&format!(
                "{file}: {e:#}; nothing of it had been written: reading it again in its turn"
            ));
            passage.store();
            stage()?
        }
        Err(e) if passage.overlapped() && failure::kind_of(&e) == Kind::Disk => {
            ctx.reporter.info(&format!(
                "{file}: {e:#}; the archive before it was being unpacked meanwhile: importing \
                 it again once that one is done, and the rest of the bundle one archive at a time"
            ));
            passage.alone();
            stage()?
        }
        // Lost while writing: retried as every call to the runtime is, this try the first.
        Err(e) if runtime::is_unreachable(&e) => {
            let mut first = Some(e);
            with_retries(ctx.reporter, Some(file), || match first.take() {
                Some(e) => Err(e),
                None => stage_into_runtime(ctx, p, &gate),
            })?
        }
        other => other?,
    };
    passage.finish();
    match rest() {
        // containerd went away between the two steps: the whole archive once more.
        Err(e) if runtime::is_unreachable(&e) => {
            ctx.reporter
                .warn(Some(file), &format!("{e:#}; importing the archive again"));
            with_retries(ctx.reporter, Some(file), || {
                stage_into_runtime(ctx, p, &gate)?()
            })
        }
        other => other,
    }
}

/// Open the archive and stream its tar into the runtime, with progress lines on the way: the
/// first step of its import ([`Runtime::stage_file`]), `gate` passed before it writes; the
/// step returned does the rest.
fn stage_into_runtime<'a>(
    ctx: &Run<'a>,
    p: &Planned,
    gate: runtime::Gate<'a>,
) -> Result<runtime::Rest<'a>> {
    let started = Instant::now();
    let opened = ctx.source.open(&p.unit)?;
    let compression = opened.compression;
    let mut reader = Watched::new(opened.reader, &p.unit.name, ctx.reporter, started);
    let rest =
        ctx.runtime
            .stage_file(ctx.source.file(&p.unit), &mut reader, &ctx.platform, gate)?;
    Ok(Box::new(move || {
        let mut imported = rest()?;
        imported.info.compression = compression;
        Ok(imported)
    }))
}

/// Pin and label every name an archive set: managed, the release, and the archive's
/// fingerprint with the config digest, so the next run can skip it without reading it.
fn label_imported(ctx: &Run<'_>, p: &Planned, names: &[String], configs: &[Option<String>]) {
    for (name, config) in names.iter().zip(configs) {
        if stop_signal().is_some() {
            // The next run labels what this one did not: it finds no fingerprint and reads
            // the archive again.
            break;
        }
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_PINNED.to_string(), "pinned".to_string());
        labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
        if let Some(release) = &ctx.args.release {
            labels.insert(
                format!("{LABEL_RELEASE_PREFIX}{release}"),
                "true".to_string(),
            );
        }
        if let Some(config) = config {
            let stamp = p.fingerprint.stamp.as_deref().unwrap_or("-");
            labels.insert(
                format!("{LABEL_ARCHIVE_PREFIX}{}", p.fingerprint.key),
                format!("{}/{config}/{stamp}", names.len()),
            );
        }
        if let Err(e) = ctx.runtime.label(std::slice::from_ref(name), &labels) {
            ctx.reporter.warn(
                Some(&p.unit.name),
                &format!(
                    "imported, but {e:#}: kubelet may garbage-collect this image under disk pressure"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_archive_that_lost_a_race_is_tried_again() {
        let failed = |kind| ArchiveResult::failed("a.tar", 1, kind, "why");
        assert!(lost_a_race(&failed(Kind::Race)));
        assert!(!lost_a_race(&failed(Kind::Archive)));
        assert!(!lost_a_race(&failed(Kind::Import)));
    }
}
