//! The flags of `deliver` and of the hidden `receive` it runs on each host, and their
//! conversion into `deliver::Settings`.

use std::path::PathBuf;

use clap::Args;
#[cfg(feature = "export")]
use clap::ValueEnum;

#[cfg(feature = "export")]
use super::{LogFormat, RuntimeKind};

#[cfg(feature = "export")]
#[derive(Debug, Clone, Args)]
pub struct DeliverArgs {
    /// The bundle to deliver: the directory `export` wrote.
    #[arg(long, env = "IMAGES_PATH", value_name = "DIR")]
    pub images_path: PathBuf,

    /// A host to deliver to, reached with the system's ssh (its ~/.ssh/config, agent and
    /// known_hosts apply); repeat the flag for several.
    #[arg(long = "ssh", value_name = "USER@HOST[:PORT]")]
    pub ssh: Vec<String>,

    /// A file of hosts, one a line: USER@HOST[:PORT] then optional key=value words for that
    /// host (runtime=, socket=, namespace=, storage-root=, run-root=, storage-driver=,
    /// containerd-client=, snapshotter=, dir=, and for its import alone disk-max-used=, jobs=,
    /// release=); `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,

    /// Hosts served at the same time.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub transfer_pool: u16,

    /// Identity file given to ssh (-i).
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// ssh configuration file (ssh -F) [default: ssh's own, ~/.ssh/config]
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// An option passed to ssh as -o OPTION (repeatable), e.g. -o UserKnownHostsFile=FILE.
    #[arg(short = 'o', long = "ssh-option", value_name = "OPTION")]
    pub ssh_option: Vec<String>,

    /// The runtime each host imports into, unless its line in the hosts file says runtime=.
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeKind,

    /// The static importer sent to the hosts [default: the bundle's
    /// .offline-images/linux-<arch>/offline-images for each host's architecture, else this
    /// binary when it is static and matches]
    #[arg(long, value_name = "FILE")]
    pub importer_binary: Option<PathBuf>,

    /// Passed on to each host's import: a failed archive fails that host.
    #[arg(long, conflicts_with = "tolerant")]
    pub strict: bool,

    /// Exit 0 even when a host failed (each is still named and in the report).
    #[arg(long)]
    pub tolerant: bool,

    /// Write what each host was sent and did, as JSON, to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_report: Option<PathBuf>,

    /// Log format, of this run and of each host's import.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[cfg(feature = "export")]
impl DeliverArgs {
    pub fn settings(&self) -> crate::deliver::Settings {
        crate::deliver::Settings {
            images_path: self.images_path.clone(),
            ssh: self.ssh.clone(),
            hosts_file: self.hosts_file.clone(),
            pool: usize::from(self.transfer_pool),
            identity: self.identity.clone(),
            ssh_config: self.ssh_config.clone(),
            ssh_options: self.ssh_option.clone(),
            runtime: self
                .runtime
                .to_possible_value()
                .map_or_else(|| "auto".into(), |v| v.get_name().to_string()),
            importer_binary: self.importer_binary.clone(),
            strict: self.strict,
            tolerant: self.tolerant,
            json_report: self.json_report.clone(),
            log_format: self.log_format.into(),
        }
    }
}

/// `receive` (hidden): where the stream on stdin goes.
#[derive(Debug, Clone, Args)]
pub struct ReceiveArgs {
    /// The directory the files are written into (made when absent).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,

    /// Print the whole files DIR holds (`SIZE NAME` a line) and read nothing.
    #[arg(long)]
    pub list: bool,
}
