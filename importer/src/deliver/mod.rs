//! `deliver`: a bundle delivered from the operator's host to edge hosts over SSH, each sent
//! only the units its runtime lacks (docs/decisions/0027-ssh-deliver.md). The same shape as
//! `import --kind` (the importer sent once by checksum, the host's importer asked with
//! `present`, what is lacking streamed, imported there, its log prefixed), over the system's
//! OpenSSH client instead of the Docker Engine API. Operator side only: compiled with the
//! `export` feature.

mod host;
mod hosts;
pub mod spec;
mod ssh;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};

use self::host::Outcome;
use self::hosts::Host;
use self::ssh::Ssh;
use crate::bundled::Arch;
use crate::exit::Code;
use crate::images_path::ImagesPath;
use crate::lacks::{self, Want};
use crate::remote::Importer;
use crate::report::{self, Reporter};
use crate::source::{Source, Unit};
use crate::units::human_bytes;

/// What `deliver` works with, resolved from the flags by the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    pub images_path: PathBuf,
    pub ssh: Vec<String>,
    pub hosts_file: Option<PathBuf>,
    /// Hosts served at the same time.
    pub pool: usize,
    pub identity: Option<PathBuf>,
    pub ssh_config: Option<PathBuf>,
    pub ssh_options: Vec<String>,
    /// auto, docker, podman or containerd: each host's unless its line says.
    pub runtime: String,
    pub importer_binary: Option<PathBuf>,
    pub strict: bool,
    pub tolerant: bool,
    pub json_report: Option<PathBuf>,
    pub log_format: report::Format,
    /// A spec file's hosts, served when neither `--ssh` nor `--hosts-file` is given.
    pub spec_hosts: Vec<Host>,
    /// A spec file's exports, run first into the images path.
    pub exports: Vec<crate::export::Settings>,
}

/// The importer and the units' images for one architecture, found once for all its hosts.
pub struct ForArch<'a> {
    pub importer: Importer,
    pub wants: Vec<(&'a Unit, Vec<Want>)>,
}

/// An architecture's importer and wants, or why there are none.
type PerArch<'a> = (Arch, Result<Arc<ForArch<'a>>, String>);

/// What every host's run shares.
pub struct Shared<'a> {
    pub settings: &'a Settings,
    pub ssh: Ssh,
    pub source: &'a dyn Source,
    reporter: &'a Reporter,
    per_arch: Mutex<Vec<PerArch<'a>>>,
}

impl<'a> Shared<'a> {
    /// The importer and wants for `arch`, found the first time a host of it asks.
    fn for_arch(&self, arch: Arch) -> Result<Arc<ForArch<'a>>> {
        let mut cache = crate::sync::lock(&self.per_arch);
        let found = match cache.iter().find(|(a, _)| *a == arch) {
            Some((_, f)) => f.clone(),
            None => {
                let made = self
                    .make_for_arch(arch)
                    .map(Arc::new)
                    .map_err(|e| format!("{e:#}"));
                cache.push((arch, made.clone()));
                made
            }
        };
        found.map_err(|e| anyhow!("{e}"))
    }

    fn make_for_arch(&self, arch: Arch) -> Result<ForArch<'a>> {
        let importer = crate::remote::importer(
            &self.settings.images_path,
            self.settings.importer_binary.as_deref(),
            arch,
        )?;
        let wants = lacks::for_platform(self.source, &arch.platform(), self.reporter);
        Ok(ForArch { importer, wants })
    }

    fn say(&self, host: &Host, line: &str) {
        crate::remote::say(&host.name, line, self.json());
    }

    fn json(&self) -> bool {
        matches!(self.settings.log_format, report::Format::Json)
    }

    fn log_format_name(&self) -> &'static str {
        if self.json() {
            "json"
        } else {
            "text"
        }
    }
}

pub fn run(settings: &Settings) -> Result<Code> {
    let hosts = if settings.ssh.is_empty() && settings.hosts_file.is_none() {
        match &settings.spec_hosts[..] {
            [] => hosts::all(&[], None)?,
            given => given.to_vec(),
        }
    } else {
        hosts::all(&settings.ssh, settings.hosts_file.as_deref())?
    };
    let exported = spec::refresh(&settings.images_path, &settings.exports)?;
    let reporter = Reporter::new(settings.log_format);
    let source = ImagesPath::open(&settings.images_path, &reporter)?;
    let control = ssh::ControlDir::new()?;
    let shared = Shared {
        settings,
        ssh: Ssh {
            config: settings.ssh_config.clone(),
            identity: settings.identity.clone(),
            options: settings.ssh_options.clone(),
            control: Some(control.path().to_path_buf()),
        },
        source: &source,
        reporter: &reporter,
        per_arch: Mutex::new(Vec::new()),
    };
    reporter.info(&format!(
        "delivering {} units of {} to {} hosts, {} at a time",
        source.units().len(),
        settings.images_path.display(),
        hosts.len(),
        settings.pool
    ));
    let outcomes = each_host(&shared, &hosts);
    table(&reporter, &outcomes);
    if let Some(path) = &settings.json_report {
        let data = serde_json::to_vec_pretty(&serde_json::json!({ "hosts": outcomes }))?;
        std::fs::write(path, data)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    Ok(
        if (failed > 0 && !settings.tolerant) || exported != Code::Success {
            Code::Failure
        } else {
            Code::Success
        },
    )
}

/// Every host served, at most `pool` at a time; outcomes in `hosts`' order.
fn each_host(shared: &Shared<'_>, hosts: &[Host]) -> Vec<Outcome> {
    let next = Mutex::new(0usize);
    let outcomes = Mutex::new(vec![None; hosts.len()]);
    std::thread::scope(|scope| {
        for _ in 0..shared.settings.pool.min(hosts.len()) {
            scope.spawn(|| loop {
                let i = {
                    let mut n = crate::sync::lock(&next);
                    *n += 1;
                    *n - 1
                };
                let Some(host) = hosts.get(i) else { break };
                let say = |line: &str| shared.say(host, line);
                let outcome = host::deliver(shared, host, &say);
                say(&line(&outcome));
                crate::sync::lock(&outcomes)[i] = Some(outcome);
            });
        }
    });
    crate::sync::into_inner(outcomes)
        .into_iter()
        .zip(hosts)
        .map(|(o, h)| {
            o.unwrap_or_else(|| Outcome {
                host: h.name.clone(),
                error: Some("not started".into()),
                ..Outcome::default()
            })
        })
        .collect()
}

/// A host's last line.
fn line(o: &Outcome) -> String {
    let head = match &o.error {
        None => "done".to_string(),
        Some(e) => format!("FAILED: {e}"),
    };
    format!(
        "{head}; sent {}, skipped {}, imported {}, skipped {} (already there), failed {}, {:.1}s",
        human_bytes(o.bytes_sent),
        human_bytes(o.bytes_skipped),
        o.imported,
        o.skipped,
        o.failed,
        o.seconds
    )
}

/// The final table, and the summary line.
fn table(reporter: &Reporter, outcomes: &[Outcome]) {
    let mut rows = vec![format!(
        "{:<28} {:<7} {:>10} {:>10} {:>8} {:>7} {:>6} {:>6} {:>8}",
        "HOST", "STATUS", "SENT", "SKIPPED", "IMPORTED", "PRESENT", "FAILED", "TRIES", "TIME"
    )];
    for o in outcomes {
        rows.push(format!(
            "{:<28} {:<7} {:>10} {:>10} {:>8} {:>7} {:>6} {:>6} {:>7.1}s",
            crate::report::prose(&o.host),
            if o.ok { "ok" } else { "FAILED" },
            human_bytes(o.bytes_sent),
            human_bytes(o.bytes_skipped),
            o.imported,
            o.skipped,
            o.failed,
            o.tries,
            o.seconds
        ));
    }
    for row in rows {
        reporter.info(&row);
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.host.as_str())
        .collect();
    let sent: u64 = outcomes.iter().map(|o| o.bytes_sent).sum();
    let mut summary = format!(
        "summary: {} hosts, {} done, {} FAILED, {} sent",
        outcomes.len(),
        outcomes.len() - failed.len(),
        failed.len(),
        human_bytes(sent)
    );
    if !failed.is_empty() {
        summary.push_str(&format!(" (failed: {})", failed.join(", ")));
    }
    reporter.info(&summary);
}
