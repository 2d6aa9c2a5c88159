//! A runtime in memory for the unit tests of the import loop: it keeps images (name -> config
//! digest and labels), records every call in order, and can be told what to answer.
//!
//! What it loads comes from the archive it is given: the tar stream is read with the crate's
//! own reader (`crate::archive`), as a real runtime reads it, so the names and config digests
//! it then lists are the archive's.
//!
//! Scripting: [`FakeRuntime::fail`] makes the next calls of one kind fail (an unreachable
//! runtime, a full disk, a refused archive, a lost race); [`FakeRuntime::hold`] makes a call
//! wait until another one has been recorded, so a test can force an interleaving (and see,
//! from the record, whether the importer allowed it); the builder methods choose whether it
//! imports in two steps, keeps labels, lists digest names, and which architecture its node has.

#![cfg(test)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::{Gate, Imported, Leftover, Present, Rest, Runtime};
use crate::archive::{self, ArchiveInfo, Compression, Limits, Platform};
use crate::failure::{Failure, Kind, Unreachable};

/// The longest a held call waits for what it waits for: a test whose interleaving the importer
/// does not allow then goes on, and its assertion on the record fails.
const HOLD_MAX: Duration = Duration::from_secs(3);

/// A kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Present,
    /// `import` or `import_file`: the whole archive in one step.
    Import,
    /// The first step of `stage_file` (a staging fake): the archive read and stored.
    Stage,
    /// The step `stage_file` returned: the images unpacked and named.
    Rest,
    Preflight,
    Label,
    Reclaim,
    Containers,
    Unlabel,
    Remove,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Present => "present",
            Op::Import => "import",
            Op::Stage => "stage",
            Op::Rest => "rest",
            Op::Preflight => "preflight",
            Op::Label => "label",
            Op::Reclaim => "reclaim",
            Op::Containers => "containers",
            Op::Unlabel => "unlabel",
            Op::Remove => "remove",
        })
    }
}

/// What a scripted call fails with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The runtime cannot be reached ([`Unreachable`]): the importer retries.
    Unreachable,
    /// The disk holding the runtime's root is full ([`Kind::Disk`]).
    DiskFull,
    /// The runtime refused the archive with these words (an error of no particular kind).
    Refused(String),
    /// Another import wrote the same layer or name at the same moment ([`Kind::Race`]).
    Race,
}

impl Fault {
    fn error(&self) -> anyhow::Error {
        match self {
            Fault::Unreachable => {
                Unreachable("cannot connect to the fake runtime: connection refused".into()).into()
            }
            Fault::DiskFull => Failure::error(
                Kind::Disk,
                "the disk holding the fake runtime's root is full (no space left on device)",
            ),
            Fault::Refused(words) => anyhow!("the fake runtime refused the archive: {words}"),
            Fault::Race => Failure::error(
                Kind::Race,
                "content written by another import at the same moment",
            ),
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub op: Op,
    /// The archive's file name, for the calls given one.
    pub file: Option<String>,
    /// The image names the call was about (labelled, unlabelled, removed, or loaded).
    pub names: Vec<String>,
    /// What the call answered when it failed.
    pub error: Option<String>,
}

impl Call {
    /// `op file`, with ` (failed)` when it failed: one step of [`FakeRuntime::trace`].
    fn line(&self) -> String {
        let mut line = self.op.to_string();
        if let Some(file) = &self.file {
            line = format!("{line} {file}");
        }
        if self.error.is_some() {
            line.push_str(" (failed)");
        }
        line
    }
}

/// An image the fake has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub config: String,
    pub labels: BTreeMap<String, String>,
}

struct Scripted {
    op: Op,
    file: Option<String>,
    left: usize,
    fault: Fault,
}

struct Hold {
    op: Op,
    file: String,
    until: (Op, String),
    max: Duration,
}

struct Options {
    stages: bool,
    keeps_labels: bool,
    digest_names: bool,
    architecture: Option<String>,
    leftovers: Vec<Leftover>,
}

struct Shared {
    options: Mutex<Options>,
    images: Mutex<BTreeMap<String, Stored>>,
    calls: Mutex<Vec<Call>>,
    recorded: Condvar,
    faults: Mutex<Vec<Scripted>>,
    holds: Mutex<Vec<Hold>>,
}

/// The fake runtime. Clones share everything: the test keeps one and gives the run another.
#[derive(Clone)]
pub(crate) struct FakeRuntime {
    shared: Arc<Shared>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime::new()
    }
}

impl FakeRuntime {
    /// A fake that imports in one step, keeps labels and lists digest names, and does not say
    /// what its node's architecture is.
    pub fn new() -> FakeRuntime {
        FakeRuntime {
            shared: Arc::new(Shared {
                options: Mutex::new(Options {
                    stages: false,
                    keeps_labels: true,
                    digest_names: true,
                    architecture: None,
                    leftovers: Vec::new(),
                }),
                images: Mutex::new(BTreeMap::new()),
                calls: Mutex::new(Vec::new()),
                recorded: Condvar::new(),
                faults: Mutex::new(Vec::new()),
                holds: Mutex::new(Vec::new()),
            }),
        }
    }

    fn options(&self) -> std::sync::MutexGuard<'_, Options> {
        crate::sync::lock(&self.shared.options)
    }

    /// Imports in two steps ([`Runtime::stages`]): the importer pipelines it.
    pub fn staging(self) -> Self {
        self.options().stages = true;
        self
    }

    /// Keeps no labels ([`Runtime::keeps_labels`], as Docker).
    pub fn without_labels(self) -> Self {
        self.options().keeps_labels = false;
        self
    }

    /// Lists no digest names ([`Runtime::lists_digest_names`], as Docker).
    pub fn without_digest_names(self) -> Self {
        self.options().digest_names = false;
        self
    }

    /// Says its node runs `architecture` (OCI terms).
    pub fn on_architecture(self, architecture: &str) -> Self {
        self.options().architecture = Some(architecture.to_string());
        self
    }

    /// Finds `leftovers` of an earlier run when asked to reclaim.
    pub fn with_leftovers(self, leftovers: Vec<Leftover>) -> Self {
        self.options().leftovers = leftovers;
        self
    }

    /// Has the image `name` of config `config` (and no labels) already.
    pub fn with_image(self, name: &str, config: &str) -> Self {
        crate::sync::lock(&self.shared.images).insert(
            name.to_string(),
            Stored {
                config: config.to_string(),
                labels: BTreeMap::new(),
            },
        );
        self
    }

    /// The next `times` calls of `op` fail with `fault`.
    pub fn fail(&self, op: Op, times: usize, fault: Fault) {
        self.script(op, None, times, fault);
    }

    /// The next `times` calls of `op` for the archive `file` fail with `fault`.
    pub fn fail_file(&self, op: Op, file: &str, times: usize, fault: Fault) {
        self.script(op, Some(file.to_string()), times, fault);
    }

    fn script(&self, op: Op, file: Option<String>, left: usize, fault: Fault) {
        crate::sync::lock(&self.shared.faults).push(Scripted {
            op,
            file,
            left,
            fault,
        });
    }

    /// A call of `op` for `file` waits, before it answers, until a call of `until.0` for the
    /// archive `until.1` has been recorded (failed or not), or [`HOLD_MAX`] has passed.
    pub fn hold(&self, op: Op, file: &str, until: (Op, &str)) {
        self.hold_at_most(op, file, until, HOLD_MAX);
    }

    /// [`FakeRuntime::hold`] for `max` at most: gives a call the importer must not allow
    /// meanwhile the time to happen. Several holds of one call are waited for in turn.
    pub fn hold_at_most(&self, op: Op, file: &str, until: (Op, &str), max: Duration) {
        crate::sync::lock(&self.shared.holds).push(Hold {
            op,
            file: file.to_string(),
            until: (until.0, until.1.to_string()),
            max,
        });
    }

    /// Every call so far, in the order they answered.
    pub fn calls(&self) -> Vec<Call> {
        crate::sync::lock(&self.shared.calls).clone()
    }

    /// The calls as lines (`stage b.tar`, `import a.tar (failed)`), leaving out `present` and
    /// `label`, which come between the others at many places.
    pub fn trace(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| !matches!(c.op, Op::Present | Op::Label))
            .map(Call::line)
            .collect()
    }

    /// How many calls of `op` there were, for `file` when given.
    pub fn count(&self, op: Op, file: Option<&str>) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.op == op && (file.is_none() || c.file.as_deref() == file))
            .count()
    }

    /// Where in the record the first call of `op` for `file` is.
    pub fn position(&self, op: Op, file: &str) -> Option<usize> {
        self.calls()
            .iter()
            .position(|c| c.op == op && c.file.as_deref() == Some(file))
    }

    /// Forget the calls so far (between two runs of one test).
    pub fn forget_calls(&self) {
        crate::sync::lock(&self.shared.calls).clear();
    }

    /// The image `name`, if the fake has it.
    pub fn image(&self, name: &str) -> Option<Stored> {
        crate::sync::lock(&self.shared.images).get(name).cloned()
    }

    /// Every image name the fake has.
    pub fn names(&self) -> Vec<String> {
        crate::sync::lock(&self.shared.images)
            .keys()
            .cloned()
            .collect()
    }

    fn record(&self, op: Op, file: Option<&str>, names: Vec<String>, error: Option<String>) {
        crate::sync::lock(&self.shared.calls).push(Call {
            op,
            file: file.map(str::to_string),
            names,
            error,
        });
        self.shared.recorded.notify_all();
    }

    /// The scripted failure of this call, if there is one left; it is used up.
    fn fault(&self, op: Op, file: Option<&str>) -> Option<Fault> {
        let mut faults = crate::sync::lock(&self.shared.faults);
        let s = faults.iter_mut().find(|s| {
            s.op == op && s.left > 0 && (s.file.is_none() || s.file.as_deref() == file)
        })?;
        s.left -= 1;
        Some(s.fault.clone())
    }

    /// Answer a call: its scripted failure (recorded) or `Ok`, recorded by the caller.
    fn check(&self, op: Op, file: Option<&str>) -> Result<()> {
        match self.fault(op, file) {
            Some(fault) => {
                let e = fault.error();
                self.record(op, file, Vec::new(), Some(format!("{e:#}")));
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Wait as a hold on this call says.
    fn wait_if_held(&self, op: Op, file: &str) {
        let until: Vec<(Op, String, Duration)> = crate::sync::lock(&self.shared.holds)
            .iter()
            .filter(|h| h.op == op && h.file == file)
            .map(|h| (h.until.0, h.until.1.clone(), h.max))
            .collect();
        let mut calls = crate::sync::lock(&self.shared.calls);
        for (op, file, max) in until {
            let end = Instant::now() + max;
            while !calls
                .iter()
                .any(|c| c.op == op && c.file.as_deref() == Some(file.as_str()))
            {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                calls = self
                    .shared
                    .recorded
                    .wait_timeout(calls, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
    }

    /// Read the whole tar stream as a runtime does: what it holds, or why it is no archive.
    fn read(&self, op: Op, file: Option<&str>, tar: &mut dyn Read) -> Result<ArchiveInfo> {
        archive::inspect_stream(tar, Compression::None, Limits::default()).inspect_err(|e| {
            self.record(op, file, Vec::new(), Some(format!("{e:#}")));
        })
    }

    /// Name every image of `info` that has a complete image for `platform`, keeping the labels
    /// a name had; an archive with none for it is refused, as the real backends refuse it.
    fn load(&self, info: ArchiveInfo, platform: &Platform) -> Result<Imported> {
        if !info
            .images
            .iter()
            .any(|i| i.for_platform(platform).is_some())
        {
            return Err(anyhow!("{}", info.no_image_for(platform)));
        }
        let mut names = Vec::new();
        let mut images = crate::sync::lock(&self.shared.images);
        for image in &info.images {
            let Some(config) = image
                .for_platform(platform)
                .and_then(|p| p.config_digest.clone())
            else {
                continue;
            };
            for name in &image.names {
                let labels = images
                    .get(name)
                    .map(|s| s.labels.clone())
                    .unwrap_or_default();
                let config = config.clone();
                images.insert(name.clone(), Stored { config, labels });
                names.push(name.clone());
            }
        }
        Ok(Imported {
            info,
            names,
            detail: None,
        })
    }

    /// One step that ends with the images named: `op` (import or rest) for `file`.
    fn finish(
        &self,
        op: Op,
        file: Option<&str>,
        info: ArchiveInfo,
        platform: &Platform,
    ) -> Result<Imported> {
        if let Some(f) = file {
            self.wait_if_held(op, f);
        }
        self.check(op, file)?;
        match self.load(info, platform) {
            Ok(imported) => {
                self.record(op, file, imported.names.clone(), None);
                Ok(imported)
            }
            Err(e) => {
                self.record(op, file, Vec::new(), Some(format!("{e:#}")));
                Err(e)
            }
        }
    }

    fn import_named(
        &self,
        file: Option<&str>,
        tar: &mut dyn Read,
        platform: &Platform,
    ) -> Result<Imported> {
        let info = self.read(Op::Import, file, tar)?;
        self.finish(Op::Import, file, info, platform)
    }
}

/// The file name of an archive's path, as the fake records it.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl Runtime for FakeRuntime {
    fn kind(&self) -> &'static str {
        "containerd"
    }

    fn describe(&self) -> String {
        "fake runtime (unit tests)".to_string()
    }

    fn present(&self) -> Result<Vec<Present>> {
        self.check(Op::Present, None)?;
        let (labels, digest_names) = {
            let o = self.options();
            (o.keeps_labels, o.digest_names)
        };
        let list: Vec<Present> = crate::sync::lock(&self.shared.images)
            .iter()
            .filter(|(name, _)| digest_names || !name.contains('@'))
            .map(|(name, s)| Present {
                name: name.clone(),
                config_digest: Some(s.config.clone()),
                labels: if labels {
                    s.labels.clone()
                } else {
                    BTreeMap::new()
                },
            })
            .collect();
        self.record(Op::Present, None, Vec::new(), None);
        Ok(list)
    }

    fn node_architecture(&self) -> Option<String> {
        self.options().architecture.clone()
    }

    fn keeps_labels(&self) -> bool {
        self.options().keeps_labels
    }

    fn lists_digest_names(&self) -> bool {
        self.options().digest_names
    }

    fn import(&self, tar: &mut dyn Read, platform: &Platform) -> Result<Imported> {
        self.import_named(None, tar, platform)
    }

    fn import_file(
        &self,
        path: &Path,
        tar: &mut dyn Read,
        platform: &Platform,
    ) -> Result<Imported> {
        self.import_named(Some(&file_name(path)), tar, platform)
    }

    fn stages(&self) -> bool {
        self.options().stages
    }

    /// A staging fake reads the archive, then (an unreachable runtime scripted for `Stage`)
    /// fails before the gate, as a lookup of what the runtime has would; passes the gate; then
    /// fails as a scripted upload would (any other fault), or returns the step that names
    /// the images. A fake that does not stage does all in one step, as the trait's default.
    fn stage_file<'a>(
        &'a self,
        path: Option<&Path>,
        tar: &mut dyn Read,
        platform: &Platform,
        gate: Gate<'a>,
    ) -> Result<Rest<'a>> {
        if !self.stages() {
            gate()?;
            let imported = match path {
                Some(path) => self.import_file(path, tar, platform)?,
                None => self.import(tar, platform)?,
            };
            return Ok(Box::new(move || Ok(imported)));
        }
        let file = path.map(file_name);
        let info = self.read(Op::Stage, file.as_deref(), tar)?;
        if let Some(fault) = self.fault(Op::Stage, file.as_deref()) {
            if fault != Fault::Unreachable {
                gate()?;
            }
            let e = fault.error();
            self.record(
                Op::Stage,
                file.as_deref(),
                Vec::new(),
                Some(format!("{e:#}")),
            );
            return Err(e);
        }
        gate()?;
        self.record(Op::Stage, file.as_deref(), Vec::new(), None);
        let platform = platform.clone();
        Ok(Box::new(move || {
            self.finish(Op::Rest, file.as_deref(), info, &platform)
        }))
    }

    fn preflight(&self, archive: &Path, _platform: &Platform, _max_used: u8) -> Result<()> {
        let file = file_name(archive);
        self.check(Op::Preflight, Some(&file))?;
        self.record(Op::Preflight, Some(&file), Vec::new(), None);
        Ok(())
    }

    fn reclaim(&self) -> Result<Vec<Leftover>> {
        self.check(Op::Reclaim, None)?;
        self.record(Op::Reclaim, None, Vec::new(), None);
        Ok(self.options().leftovers.clone())
    }

    fn label(&self, names: &[String], labels: &BTreeMap<String, String>) -> Result<()> {
        self.check(Op::Label, None)?;
        let keep = self.keeps_labels();
        let mut images = crate::sync::lock(&self.shared.images);
        for name in names {
            let Some(image) = images.get_mut(name) else {
                drop(images);
                let e = anyhow!("cannot label {name}: image not found");
                self.record(Op::Label, None, names.to_vec(), Some(format!("{e:#}")));
                return Err(e);
            };
            if keep {
                image.labels.extend(labels.clone());
            }
        }
        drop(images);
        self.record(Op::Label, None, names.to_vec(), None);
        Ok(())
    }

    fn containers(&self) -> Result<Vec<super::Container>> {
        self.check(Op::Containers, None)?;
        self.record(Op::Containers, None, Vec::new(), None);
        Ok(Vec::new())
    }

    fn unlabel(&self, name: &str, keys: &[String]) -> Result<()> {
        self.check(Op::Unlabel, None)?;
        if let Some(image) = crate::sync::lock(&self.shared.images).get_mut(name) {
            for key in keys {
                image.labels.remove(key);
            }
        }
        self.record(Op::Unlabel, None, vec![name.to_string()], None);
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.check(Op::Remove, None)?;
        crate::sync::lock(&self.shared.images).remove(name);
        self.record(Op::Remove, None, vec![name.to_string()], None);
        Ok(())
    }
}
