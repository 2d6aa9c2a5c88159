//! One node's import: the importer in place, the node asked what it has, what it lacks sent
//! into a staging directory, the node's importer run on it with its log streamed back, the
//! staging directory removed.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::engine::{Engine, Node};
use super::send::{self, NODE_DIR};
use super::{Importer, Settings};
use crate::lacks::{NodeHas, Want};
use crate::remote::plan::{Ask, Plan};
use crate::source::{Source, Unit};
use crate::units::human_bytes;

/// How one node's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The node's importer ran (or had nothing to do): what it did, what was sent, and its
    /// exit code (for `verify`, 1 when an image is missing).
    Done { line: String, bytes: u64, exit: i64 },
    /// The node could not be reached, given the importer, or its importer could not run.
    Failed(String),
}

/// Everything the nodes share: the bundle, each unit's images for the node's platform, the
/// importer.
pub struct Shared<'a> {
    pub settings: &'a Settings,
    pub engine: &'a Engine,
    pub source: &'a dyn Source,
    pub wants: &'a [(&'a Unit, Vec<Want>)],
    pub importer: &'a Importer,
}

/// Import into `node`; every line goes through `say`.
pub fn import(shared: &Shared<'_>, node: &Node, say: &dyn Fn(&str)) -> Outcome {
    match run(shared, node, say) {
        Ok(done) => done,
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

fn run(shared: &Shared<'_>, node: &Node, say: &dyn Fn(&str)) -> Result<Outcome> {
    if !node.running {
        bail!("the container {} is not running", node.name);
    }
    let engine = shared.engine;
    let binary = place_importer(shared, node, say)?;
    reclaim(engine, node, say);
    let held = ask(shared, node, &binary, say)?;
    let has = NodeHas::new(&held);
    let lacking: Vec<&Unit> = shared
        .wants
        .iter()
        .filter(|(_, wants)| has.lacks(wants))
        .map(|(unit, _)| *unit)
        .collect();
    if lacking.is_empty() {
        say(&format!(
            "has every image of the {} units for its platform: nothing sent, nothing imported",
            shared.wants.len()
        ));
        let missing = missing_required(&shared.settings.require, &held);
        for name in &missing {
            say(&format!(
                "MISSING   {name}: required (--require), and not in its containerd"
            ));
        }
        return Ok(Outcome::Done {
            line: match missing.len() {
                0 => "0 units sent (0 B), no import started".into(),
                n => {
                    format!("0 units sent (0 B), no import started; {n} required image(s) missing")
                }
            },
            bytes: 0,
            exit: i64::from(!missing.is_empty()),
        });
    }
    if shared.settings.dry_run {
        let bytes: u64 = lacking.iter().map(|u| u.size).sum();
        say(&format!(
            "lacks {} of {} units: would send them ({} as stored); nothing of the bundle sent (--dry-run)",
            lacking.len(),
            shared.wants.len(),
            human_bytes(bytes)
        ));
        return Ok(Outcome::Done {
            line: "0 units sent (0 B), dry run".into(),
            bytes: 0,
            exit: 0,
        });
    }
    let staging = format!("{NODE_DIR}/staging-{}-{}", std::process::id(), nanos());
    say(&format!(
        "lacks {} of {} units: sending them to {staging}",
        lacking.len(),
        shared.wants.len()
    ));
    let outcome = send_and_import(shared, node, &binary, &lacking, &staging, say);
    let removed = engine.exec(
        node,
        &["rm".into(), "-rf".into(), staging.clone()],
        &mut |_, l| say(l),
    );
    match removed {
        Ok(e) if e.0 == 0 => {}
        Ok(e) => say(&format!("could not remove {staging}: rm exited {}", e.0)),
        Err(e) => say(&format!("could not remove {staging}: {e:#}")),
    }
    outcome
}

/// Send what `node` lacks of `lacking` into `staging` and run its importer on it.
fn send_and_import(
    shared: &Shared<'_>,
    node: &Node,
    binary: &str,
    lacking: &[&Unit],
    staging: &str,
    say: &dyn Fn(&str),
) -> Result<Outcome> {
    let engine = shared.engine;
    let plan = Plan::new(shared.source, lacking, &mut |layers| {
        held_layers(shared, node, binary, layers, say)
    })?;
    for (unit, why) in &plan.left_out {
        say(&format!("{}: cannot be sent, {why}", unit.name));
    }
    if plan.units.is_empty() {
        bail!("none of the {} units it lacks can be sent", lacking.len());
    }
    let bytes = send::planned(engine, node, shared.source, &plan, staging)?;
    say(&format!(
        "sent {} units ({} in {} files{})",
        plan.units.len(),
        human_bytes(bytes),
        plan.files.len(),
        plan.held_words("containerd")
    ));
    let mut cmd = vec![binary.to_string(), "import".into()];
    cmd.extend(node_flags(shared.settings));
    cmd.extend(["--images-path".into(), staging.to_string()]);
    cmd.extend(shared.settings.node_args.iter().cloned());
    match engine.exec(node, &cmd, &mut |_, line| say(line)) {
        Ok(exit) if exit.0 == 0 || exit.0 == 1 => {
            let exit = if plan.left_out.is_empty() { exit.0 } else { 1 };
            Ok(Outcome::Done {
                line: format!(
                    "{} units sent ({}), its importer exited {}",
                    plan.units.len(),
                    human_bytes(bytes),
                    exit
                ),
                bytes,
                exit,
            })
        }
        Ok(exit) => bail!("{}its importer exited {}", stopped(engine, node), exit.0),
        Err(e) => bail!("{}{e:#}", stopped(engine, node)),
    }
}

/// Which of `layers` the node's containerd holds, as its importer says: the list is put into
/// the node as a file beside the staging directories, read, and removed.
fn held_layers(
    shared: &Shared<'_>,
    node: &Node,
    binary: &str,
    layers: &[Ask],
    say: &dyn Fn(&str),
) -> Result<BTreeSet<String>> {
    let file = format!("{NODE_DIR}/layers-{}-{}.txt", std::process::id(), nanos());
    let list: String = layers.iter().map(Ask::line).collect();
    send::text(shared.engine, node, &file, &list)?;
    let mut cmd = vec![binary.to_string(), "present".into()];
    cmd.extend(node_flags(shared.settings));
    cmd.extend(["--holds-from".into(), file.clone()]);
    let mut out = Vec::new();
    let exit = shared.engine.exec(node, &cmd, &mut |err, line| {
        if err {
            say(line);
        } else {
            out.push(line.to_string());
        }
    });
    let _ = shared
        .engine
        .exec(node, &["rm".into(), "-f".into(), file], &mut |_, l| say(l));
    let exit = exit?;
    if exit.0 != 0 {
        bail!(
            "its importer could not say which layers its containerd holds (exit {})",
            exit.0
        );
    }
    Ok(crate::remote::plan::held_in(
        out.iter().map(String::as_str),
        layers,
    ))
}

/// The images of `require` (as `--require` names them) that `held` lacks: each normalised as
/// the node's importer names images; one that is no reference is missing by its own name.
fn missing_required(require: &[String], held: &[crate::present::Held]) -> Vec<String> {
    require
        .iter()
        .filter(|r| !r.trim().is_empty())
        .filter(|r| {
            let name = crate::reference::normalize(r.trim()).unwrap_or_else(|_| r.to_string());
            !held.iter().any(|h| h.name == name)
        })
        .cloned()
        .collect()
}

/// `verify --kind` on one node: every image of the bundle for its platform looked for in
/// what its importer says its containerd holds; a `MISSING` line for each one absent.
pub fn verify(shared: &Shared<'_>, node: &Node, say: &dyn Fn(&str)) -> Outcome {
    let checked = (|| {
        if !node.running {
            bail!("the container {} is not running", node.name);
        }
        let binary = place_importer(shared, node, say)?;
        let has = NodeHas::new(&ask(shared, node, &binary, say)?);
        let (mut total, mut missing) = (0, 0);
        for (unit, wants) in shared.wants {
            for want in wants {
                total += 1;
                if !has.has(want) {
                    missing += 1;
                    say(&format!(
                        "MISSING  {}  config {}  ({})",
                        want.names.join(", "),
                        want.config_digest,
                        unit.name
                    ));
                }
            }
        }
        Ok(Outcome::Done {
            line: format!("{} of {total} images present", total - missing),
            bytes: 0,
            exit: i64::from(missing > 0),
        })
    })();
    checked.unwrap_or_else(|e: anyhow::Error| Outcome::Failed(format!("{e:#}")))
}

/// `--runtime containerd --namespace NS`: the node's containerd, where its kubelet looks.
fn node_flags(settings: &Settings) -> Vec<String> {
    vec![
        "--runtime".into(),
        "containerd".into(),
        "--namespace".into(),
        settings.namespace.clone(),
    ]
}

/// The importer's path in the node, copied there unless the same binary already is.
fn place_importer(shared: &Shared<'_>, node: &Node, say: &dyn Fn(&str)) -> Result<String> {
    let imp = shared.importer;
    let path = send::importer_path(&imp.sha256, imp.arch);
    let sums = format!(
        "{}/{}",
        path.rsplit_once('/').map_or("", |(d, _)| d),
        crate::bundled::CHECKSUM
    );
    if shared.engine.exists(node, &sums)? {
        say(&format!(
            "importer {} in place (sha256 {})",
            path,
            &imp.sha256[..12]
        ));
    } else {
        send::importer(shared.engine, node, &imp.path, &imp.sha256, &path)?;
        say(&format!(
            "importer copied to {path} ({}, from {})",
            human_bytes(imp.size),
            imp.path.display()
        ));
    }
    Ok(path)
}

/// What the node's runtime holds, as its importer says.
fn ask(
    shared: &Shared<'_>,
    node: &Node,
    binary: &str,
    say: &dyn Fn(&str),
) -> Result<Vec<crate::present::Held>> {
    let mut cmd = vec![binary.to_string(), "present".into()];
    cmd.extend(node_flags(shared.settings));
    let mut out = Vec::new();
    let exit = shared.engine.exec(node, &cmd, &mut |err, line| {
        if err {
            say(line);
        } else {
            out.push(line.to_string());
        }
    })?;
    if exit.0 != 0 {
        bail!(
            "its importer could not list the images of its containerd (exit {})",
            exit.0
        );
    }
    crate::present::parse(&out).with_context(|| format!("reading what {} holds", node.name))
}

/// Remove the staging directories runs that are gone left in `node` (killed, or their node
/// stopped under them): `staging-PID-…` of a PID that no longer runs here. Docker's socket is
/// local, so every run that reached this node ran on this host. A failure is said and left.
fn reclaim(engine: &Engine, node: &Node, say: &dyn Fn(&str)) {
    let mut listed = Vec::new();
    let ls = ["ls".to_string(), "-1".into(), NODE_DIR.into()];
    if engine
        .exec(node, &ls, &mut |err, l| {
            if !err {
                listed.push(l.to_string())
            }
        })
        .is_err()
    {
        return;
    }
    for name in listed.iter().filter(|n| dead_staging(n)) {
        let dir = format!("{NODE_DIR}/{name}");
        let rm = ["rm".to_string(), "-rf".into(), dir.clone()];
        match engine.exec(node, &rm, &mut |_, l| say(l)) {
            Ok(e) if e.0 == 0 => say(&format!("removed {dir}, which a run that is gone left")),
            Ok(e) => say(&format!("could not remove {dir}: rm exited {}", e.0)),
            Err(e) => say(&format!("could not remove {dir}: {e:#}")),
        }
    }
}

/// Whether `name` is a staging directory of a run whose process is gone.
fn dead_staging(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("staging-") else {
        return false;
    };
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `the container stopped during the import: ` when it is no longer running. Asked a few
/// times over a second: a container being killed ends its execs before Docker says so.
fn stopped(engine: &Engine, node: &Node) -> &'static str {
    for _ in 0..5 {
        if matches!(engine.node(&node.id), Ok(now) if !now.running) {
            return "the container stopped during the import: ";
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    ""
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
    fn a_required_image_is_missing_unless_the_node_holds_it_under_its_full_name() {
        let held = |name: &str| crate::present::Held {
            name: name.into(),
            config_digest: Some("sha256:c".into()),
        };
        let node = [held("docker.io/library/nginx:1.27")];
        let require = [
            "nginx:1.27".to_string(),
            "reg.local/app:2".to_string(),
            " ".into(),
        ];
        assert_eq!(missing_required(&require, &node), vec!["reg.local/app:2"]);
        assert!(missing_required(&[], &node).is_empty());
    }
}
