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
    /// The bundle to deliver: the directory `export` wrote. With --spec, the spec's
    /// imagesPath unless given.
    #[arg(
        long,
        env = "IMAGES_PATH",
        value_name = "DIR",
        required_unless_present = "spec"
    )]
    pub images_path: Option<PathBuf>,

    /// A delivery spec (YAML): the images per platform, exported first into the images path
    /// (a re-run fetches only what changed), the registry auth, the hosts, the transfer pool
    /// and the runtime. A flag given wins over the spec's value; --ssh or --hosts-file
    /// replaces the spec's hosts (to serve only those this time).
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,

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

    /// Hosts served at the same time [default: the spec's transferPool, else 2]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub transfer_pool: Option<u16>,

    /// Identity file given to ssh (-i).
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// ssh configuration file (ssh -F) [default: ssh's own, ~/.ssh/config]
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// An option passed to ssh as -o OPTION (repeatable), e.g. -o UserKnownHostsFile=FILE.
    #[arg(short = 'o', long = "ssh-option", value_name = "OPTION")]
    pub ssh_option: Vec<String>,

    /// The runtime each host imports into, unless its line in the hosts file (or its entry
    /// in the spec) says runtime= [default: the spec's runtime, else auto]
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,

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
    /// The flags resolved, over the spec file's values when --spec is given.
    pub fn settings(&self) -> anyhow::Result<crate::deliver::Settings> {
        use crate::deliver::spec::Spec;
        let spec = match &self.spec {
            Some(file) => Spec::load(file)?,
            None => Spec::default(),
        };
        let images_path = match (&self.images_path, &spec.images_path) {
            (Some(p), _) | (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(crate::exit::usage(format!(
                    "{}: imagesPath: missing: give it, or --images-path DIR",
                    spec.file.display()
                )))
            }
        };
        let no_hosts = self.ssh.is_empty() && self.hosts_file.is_none();
        if self.spec.is_some() && no_hosts && spec.hosts.is_empty() {
            return Err(crate::exit::usage(format!(
                "{}: hosts: missing: list them (each ssh: USER@HOST[:PORT]), or give --ssh or \
                 --hosts-file",
                spec.file.display()
            )));
        }
        let runtime = self
            .runtime
            .and_then(|r| r.to_possible_value())
            .map(|v| v.get_name().to_string());
        Ok(crate::deliver::Settings {
            exports: spec.exports(&images_path),
            images_path,
            ssh: self.ssh.clone(),
            hosts_file: self.hosts_file.clone(),
            pool: self
                .transfer_pool
                .map(usize::from)
                .or(spec.transfer_pool)
                .unwrap_or(2),
            identity: self.identity.clone(),
            ssh_config: self.ssh_config.clone(),
            ssh_options: self.ssh_option.clone(),
            runtime: runtime.or(spec.runtime).unwrap_or_else(|| "auto".into()),
            spec_hosts: spec.hosts,
            importer_binary: self.importer_binary.clone(),
            strict: self.strict,
            tolerant: self.tolerant,
            json_report: self.json_report.clone(),
            log_format: self.log_format.into(),
        })
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

#[cfg(all(test, feature = "export"))]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn settings(extra: &[&str]) -> anyhow::Result<crate::deliver::Settings> {
        let dir = std::env::temp_dir().join(format!("oi-spec-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = dir.join("site.yaml");
        std::fs::write(
            &spec,
            "imagesPath: edge\nimages:\n  linux/amd64: [r/a:1]\ntransferPool: 3\n\
             runtime: podman\nhosts:\n  - ssh: root@10.0.4.5\n",
        )
        .unwrap();
        let mut argv = vec![
            "offline-images",
            "deliver",
            "--spec",
            spec.to_str().unwrap(),
        ];
        argv.extend(extra);
        let Command::Deliver(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not deliver")
        };
        let settings = args.settings();
        std::fs::remove_dir_all(&dir).unwrap();
        settings.map(|mut s| {
            s.images_path = s
                .images_path
                .strip_prefix(&dir)
                .unwrap_or(&s.images_path)
                .into();
            s
        })
    }

    /// The spec gives what no flag gives; a flag given wins; --ssh replaces the spec's hosts.
    #[test]
    fn a_flag_given_wins_over_the_spec() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.images_path, std::path::PathBuf::from("edge"));
        assert_eq!((s.pool, s.runtime.as_str()), (3, "podman"));
        assert_eq!(s.spec_hosts.len(), 1);
        assert!(s.ssh.is_empty());
        assert_eq!(s.exports.len(), 1);
        let s = settings(&[
            "--transfer-pool",
            "5",
            "--runtime",
            "docker",
            "--images-path",
            "/b",
            "--ssh",
            "ops@edge-9",
        ])
        .unwrap();
        assert_eq!((s.pool, s.runtime.as_str()), (5, "docker"));
        assert_eq!(s.images_path, std::path::PathBuf::from("/b"));
        assert_eq!(
            s.exports[0].output,
            std::path::PathBuf::from("/b/linux-amd64")
        );
        assert_eq!(s.ssh, ["ops@edge-9"]);
    }
}
