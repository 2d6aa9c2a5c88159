//! `import --kind CLUSTER` and `import --docker-node NAME`: a bundle imported from the host into
//! every node of a kind cluster (or any Docker-hosted node), through the Docker socket alone.
//!
//! Each node gets the static importer for its architecture once (kept under `/var`, reused
//! while its sha256 matches), is asked what its containerd already holds, and is sent only the
//! units it lacks, as one tar stream into a staging directory; its own importer then imports
//! them into its containerd, its log streamed back with the node's name in front, and the
//! staging directory is removed. Nodes run in parallel; a node that fails is named and the
//! others complete (docs/decisions/0026-kind-nodes.md).

mod engine;
mod frames;
mod node;
mod send;

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Result};

use self::engine::{Engine, Node};
use self::node::{Outcome, Shared};
use crate::bundled::Arch;
use crate::exit::{self, Code};
use crate::images_path::ImagesPath;
use crate::lacks;
pub use crate::remote::Importer;
use crate::report::{self, Reporter};
use crate::source::Unit;
use crate::units::human_bytes;

/// Nodes imported at the same time.
const PARALLEL: usize = 4;

/// What `import --kind` works with, resolved from the flags by the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The kind cluster whose nodes are found by label.
    pub cluster: Option<String>,
    /// Node containers named one by one (`--docker-node`).
    pub nodes: Vec<String>,
    pub images_path: PathBuf,
    /// `DOCKER_HOST`, when set.
    pub docker_host: Option<String>,
    /// The importer to copy into the nodes, when given.
    pub importer_binary: Option<PathBuf>,
    /// containerd namespace in the node.
    pub namespace: String,
    /// Flags passed on to the node's `import` (`--strict`, `--force`, `--jobs` ...).
    pub node_args: Vec<String>,
    /// Images that must be in each node after the run (`--require`), also checked on a node
    /// that lacks nothing of the bundle, whose importer is then not run.
    pub require: Vec<String>,
    pub strict: bool,
    /// Ask each node what it lacks and say it; send and import nothing.
    pub dry_run: bool,
    pub log_format: report::Format,
}

pub fn run(settings: &Settings) -> Result<Code> {
    let prepared = Prepared::new(settings)?;
    let wants = prepared.wants();
    let shared = prepared.shared(&wants);
    let outcomes = each_node(&shared, &prepared.nodes, &node::import);
    Ok(summary(settings, &prepared.nodes, &outcomes, false))
}

/// `verify --kind`: every node asked what it holds, each image of the bundle for its
/// platform looked for under each of its names with its config digest; nothing is sent but
/// the importer.
pub fn verify(settings: &Settings) -> Result<Code> {
    let prepared = Prepared::new(settings)?;
    let wants = prepared.wants();
    let shared = prepared.shared(&wants);
    let outcomes = each_node(&shared, &prepared.nodes, &node::verify);
    Ok(summary(settings, &prepared.nodes, &outcomes, true))
}

/// What every node's run needs, found once.
struct Prepared<'a> {
    settings: &'a Settings,
    engine: Engine,
    nodes: Vec<Node>,
    arch: Arch,
    importer: Importer,
    reporter: Reporter,
    source: ImagesPath,
}

impl<'a> Prepared<'a> {
    fn new(settings: &'a Settings) -> Result<Prepared<'a>> {
        let socket = engine::socket(settings.docker_host.as_deref())?;
        let engine = Engine::connect(&socket)?;
        let nodes = find_nodes(&engine, settings)?;
        let arch = match engine.architecture.as_str() {
            "x86_64" | "amd64" => Arch::Amd64,
            "aarch64" | "arm64" => Arch::Arm64,
            other => bail!(
                "{}: nodes of architecture {other:?} have no importer",
                engine.describe()
            ),
        };
        let importer = crate::remote::importer(
            &settings.images_path,
            settings.importer_binary.as_deref(),
            arch,
        )?;
        let reporter = Reporter::new(settings.log_format);
        let source = ImagesPath::open(&settings.images_path, &reporter)?;
        Ok(Prepared {
            settings,
            engine,
            nodes,
            arch,
            importer,
            reporter,
            source,
        })
    }

    /// Each unit with the images it holds for the nodes' platform, one winner per name.
    fn wants(&self) -> Vec<(&Unit, Vec<lacks::Want>)> {
        lacks::for_platform(&self.source, &self.arch.platform(), &self.reporter)
    }

    fn shared<'b>(&'b self, wants: &'b [(&'b Unit, Vec<lacks::Want>)]) -> Shared<'b> {
        self.reporter.info(&format!(
            "{} nodes ({}), {} units for {}, importer {} ({})",
            self.nodes.len(),
            names(&self.nodes),
            wants.len(),
            self.arch.platform(),
            self.importer.path.display(),
            human_bytes(self.importer.size)
        ));
        Shared {
            settings: self.settings,
            engine: &self.engine,
            source: &self.source,
            wants,
            importer: &self.importer,
        }
    }
}

/// The cluster's nodes by label, and the nodes named, each once.
fn find_nodes(engine: &Engine, settings: &Settings) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    if let Some(cluster) = &settings.cluster {
        let found = engine.cluster_nodes(cluster)?;
        if found.is_empty() {
            return Err(exit::usage(format!(
                "{}: no container carries the label {}={cluster}: is the kind cluster {cluster:?} \
                 there (kind get clusters)?",
                engine.describe(),
                engine::CLUSTER_LABEL
            )));
        }
        nodes.extend(found);
    }
    for name in &settings.nodes {
        let node = engine
            .node(name)
            .map_err(|e| exit::usage(format!("the node container {name:?}: {e:#}")))?;
        if !nodes.iter().any(|n: &Node| n.id == node.id) {
            nodes.push(node);
        }
    }
    Ok(nodes)
}

/// Every node imported, at most [`PARALLEL`] at a time; outcomes in `nodes`' order.
type Work = dyn Fn(&Shared<'_>, &Node, &dyn Fn(&str)) -> Outcome + Sync;

fn each_node(shared: &Shared<'_>, nodes: &[Node], work: &Work) -> Vec<Outcome> {
    let next = Mutex::new(0usize);
    let outcomes = Mutex::new(vec![None; nodes.len()]);
    let json = matches!(shared.settings.log_format, report::Format::Json);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(nodes.len()) {
            scope.spawn(|| loop {
                let i = {
                    let mut n = crate::sync::lock(&next);
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(node) = nodes.get(i) else { break };
                let say = |line: &str| crate::remote::say(&node.name, line, json);
                let outcome = work(shared, node, &say);
                match &outcome {
                    Outcome::Done { line, .. } => say(&format!("done: {line}")),
                    Outcome::Failed(why) => say(&format!("FAILED: {why}")),
                }
                crate::sync::lock(&outcomes)[i] = Some(outcome);
            });
        }
    });
    crate::sync::into_inner(outcomes)
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed("not started".into())))
        .collect()
}

fn names(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| match &n.role {
            Some(r) => format!("{} {}", n.name, r),
            None => n.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The run's last line, and its exit code. Import: a failed node fails the run with
/// `--strict`; a node whose importer exited 1 (a failure under `--strict`, or a promised image
/// missing) fails it always. Verify: a node that could not be checked or lacks an image fails
/// it.
fn summary(settings: &Settings, nodes: &[Node], outcomes: &[Outcome], verify: bool) -> Code {
    let named = |keep: &dyn Fn(&Outcome) -> bool| -> Vec<&str> {
        nodes
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| keep(o))
            .map(|(n, _)| n.name.as_str())
            .collect()
    };
    let failed = named(&|o| !matches!(o, Outcome::Done { exit: 0 | 1, .. }));
    let exit_one = named(&|o| matches!(o, Outcome::Done { exit: 1, .. }));
    let sent: u64 = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Done { bytes, .. } => *bytes,
            Outcome::Failed(_) => 0,
        })
        .sum();
    let mut line = format!(
        "summary: {} nodes, {} done, {} FAILED",
        nodes.len(),
        nodes.len() - failed.len(),
        failed.len(),
    );
    if !verify {
        line.push_str(&format!(", {} sent", human_bytes(sent)));
    }
    if !failed.is_empty() {
        line.push_str(&format!(" (failed: {})", failed.join(", ")));
    }
    if !exit_one.is_empty() {
        let what = if verify {
            "images missing on"
        } else {
            "importer exited 1"
        };
        line.push_str(&format!(" ({what}: {})", exit_one.join(", ")));
    }
    Reporter::new(settings.log_format).info(&line);
    let strict = settings.strict || verify;
    if !exit_one.is_empty() || (strict && !failed.is_empty()) {
        Code::Failure
    } else {
        Code::Success
    }
}
