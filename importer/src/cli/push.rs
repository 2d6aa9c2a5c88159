//! The flags of `push`, and their conversion into `push::Settings`. The auth and TLS flags
//! are export's, with the same names and meaning.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// The mirror configuration `--print-mirror-config` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MirrorConfig {
    /// One `hosts.toml` per upstream registry, for containerd's `config_path` (certs.d).
    Containerd,
    /// The `mirrors` of k3s's and RKE2's `registries.yaml`, with `rewrite` for the prefix.
    K3s,
    /// An ImageDigestMirrorSet and an ImageTagMirrorSet.
    Openshift,
}

#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// The bundle to push: the directory `export` wrote (an OCI image layout), a directory
    /// holding the file of `export --pack`, or a directory of archives (`export --format
    /// archives`, docker save, podman save, ctr export, skopeo; .tar, .tar.gz, .tar.zst). A
    /// legacy docker-archive carries no manifest: its image gets one with a new digest.
    #[arg(long, env = "IMAGES_PATH", value_name = "DIR")]
    pub images_path: PathBuf,

    /// The site registry, and a path prefix under which every image lands:
    /// `docker.io/library/nginx:1.25` is pushed as REGISTRY/PREFIX/docker.io/library/nginx:1.25
    /// (an upstream registry's port is written with '_': `registry.local_5000`).
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    pub to: String,

    /// Images pushed at the same time.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Root certificates (PEM) trusted for the site registry, besides the system's trust
    /// store (as export's --ca-file).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Registry user name, with the password read from stdin (--password-stdin), in place of
    /// the docker config file's credentials for the site registry.
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,

    /// Read the password for --username from stdin (one line).
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// A registry (host[:port]) reached over plain HTTP or without TLS verification
    /// (repeatable); loopback addresses may always use plain HTTP.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,

    /// After the push, print on stdout what the site applies by hand so that nodes pull these
    /// images from the site registry under their original names.
    #[arg(long, value_enum, value_name = "FLAVOUR")]
    pub print_mirror_config: Option<MirrorConfig>,

    /// Bytes per upload request (a cut request is resumed where the registry says it
    /// stopped).
    #[arg(long, hide = true, default_value_t = crate::push::CHUNK)]
    pub chunk_size: usize,
}

impl PushArgs {
    /// The flags resolved into what `push` works with.
    pub fn settings(&self) -> crate::push::Settings {
        crate::push::Settings {
            images_path: self.images_path.clone(),
            to: self.to.clone(),
            jobs: usize::from(self.jobs),
            ca_file: self.ca_file.clone(),
            insecure: crate::export::insecure_hosts(&self.insecure_registry),
            username: self.username.clone(),
            chunk: self.chunk_size.max(1),
            mirror_config: self.print_mirror_config.map(|m| match m {
                MirrorConfig::Containerd => crate::push::Flavour::Containerd,
                MirrorConfig::K3s => crate::push::Flavour::K3s,
                MirrorConfig::Openshift => crate::push::Flavour::Openshift,
            }),
        }
    }
}
