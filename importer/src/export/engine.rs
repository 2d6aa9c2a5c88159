//! The tool on the connected host that pulls and saves images: docker, podman or skopeo.
//!
//! Registry credentials are the engine's own (`docker login`, `podman login`, containers'
//! `auth.json`); nothing here reads, passes or prints them.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};

use crate::archive::Platform;
use crate::exit;
use crate::reference::Reference;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Docker,
    Podman,
    Skopeo,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Docker => "docker",
            Kind::Podman => "podman",
            Kind::Skopeo => "skopeo",
        })
    }
}

/// The engine an export is asked to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The registry; an image the registry does not serve but docker or podman holds locally
    /// is saved with that engine.
    Auto,
    /// The registry alone, over the OCI distribution API.
    Registry,
    /// docker, podman or skopeo pulls and saves every image.
    Tool(Kind),
}

/// An engine found on this host.
#[derive(Debug, Clone)]
pub struct Engine {
    pub kind: Kind,
    pub program: PathBuf,
    /// What the engine said about itself, for the log.
    pub version: String,
    /// Registries (host[:port]) to reach without TLS verification.
    pub insecure: Vec<String>,
}

/// At most this much of an engine's error output goes into a message.
const MESSAGE_MAX: usize = 2000;

impl Engine {
    /// Find the engine to use: the one asked for, or (`None`: auto, for images the registry
    /// does not serve) the first of docker, podman and skopeo that is on PATH and answers. A
    /// docker CLI whose daemon is down is passed over.
    pub fn detect(only: Option<Kind>) -> Result<Engine> {
        let candidates = match only {
            Some(kind) => vec![kind],
            None => vec![Kind::Docker, Kind::Podman, Kind::Skopeo],
        };
        let mut reasons = Vec::new();
        for kind in candidates {
            let Ok(program) = which::which(kind.to_string()) else {
                reasons.push(format!("{kind} is not on PATH"));
                continue;
            };
            let mut engine = Engine {
                kind,
                program,
                version: String::new(),
                insecure: Vec::new(),
            };
            match engine.probe() {
                Ok(v) => {
                    engine.version = v;
                    return Ok(engine);
                }
                Err(e) => reasons.push(format!("{kind} does not work here: {e:#}")),
            }
        }
        Err(exit::usage(format!(
            "no engine to pull images with ({}); install docker, podman or skopeo, or choose one with --engine",
            reasons.join("; ")
        )))
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.stdin(Stdio::null());
        c
    }

    /// Ask the engine for its version; for docker this also checks that the daemon answers.
    fn probe(&self) -> Result<String> {
        let mut c = self.command();
        match self.kind {
            Kind::Docker => c.args(["version", "--format", "{{.Server.Version}}"]),
            Kind::Podman => c.args(["version", "--format", "{{.Client.Version}}"]),
            Kind::Skopeo => c.arg("--version"),
        };
        let out = output(&mut c, &format!("{} version", self.kind))?;
        let v = out.trim();
        Ok(v.strip_prefix("skopeo version ").unwrap_or(v).to_string())
    }

    pub fn describe(&self) -> String {
        format!(
            "{} {} ({})",
            self.kind,
            self.version,
            self.program.display()
        )
    }

    /// Whether `pull` brings the image into a local store (docker, podman) before `save`.
    pub fn has_local_store(&self) -> bool {
        self.kind != Kind::Skopeo
    }

    /// The TLS flag of a podman or skopeo subcommand for a registry marked insecure.
    fn tls_flag(&self, c: &mut Command, r: &Reference, flag: &str) {
        if self.insecure.contains(&r.domain) {
            c.arg(format!("{flag}=false"));
        }
    }

    /// skopeo's platform choice, given before the subcommand.
    fn override_platform(&self, c: &mut Command, platform: &Platform) {
        c.args(["--override-os", &platform.os])
            .args(["--override-arch", &platform.architecture]);
        if let Some(v) = &platform.variant {
            c.args(["--override-variant", v]);
        }
    }

    /// Pull into the local store (docker, podman); skopeo has none, so this does nothing.
    pub fn pull(&self, r: &Reference, platform: &Platform) -> Result<()> {
        if !self.has_local_store() {
            return Ok(());
        }
        let mut c = self.command();
        c.args(["pull", "--quiet", "--platform", &platform.to_string()]);
        if self.kind == Kind::Podman {
            self.tls_flag(&mut c, r, "--tls-verify");
        }
        c.arg(r.to_string());
        output(&mut c, &format!("{} pull", self.kind)).map(drop)
    }

    /// The config digest of the image `save` would write now: the local image ID after `pull`
    /// (docker, podman), or the config at the registry (skopeo).
    pub fn config_digest(&self, r: &Reference, platform: &Platform) -> Result<String> {
        let mut c = self.command();
        match self.kind {
            Kind::Docker | Kind::Podman => {
                c.args(["image", "inspect", "--format", "{{.Id}}"])
                    .arg(r.to_string());
                let id = output(&mut c, &format!("{} image inspect", self.kind))?;
                let id = id.trim();
                Ok(if id.contains(':') {
                    id.to_string()
                } else {
                    format!("sha256:{id}")
                })
            }
            Kind::Skopeo => {
                self.override_platform(&mut c, platform);
                c.args(["inspect", "--raw", "--config"]);
                self.tls_flag(&mut c, r, "--tls-verify");
                c.arg(format!("docker://{r}"));
                let out = c
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .output()
                    .with_context(|| format!("cannot run {}", self.program.display()))?;
                if !out.status.success() {
                    bail!("skopeo inspect: {}", message(&out.stderr));
                }
                Ok(format!(
                    "sha256:{}",
                    crate::bundle::sha256_reader(&out.stdout[..])?
                ))
            }
        }
    }

    /// Start saving the image as a docker-archive tar stream.
    ///
    /// docker and podman write it to their stdout, which is read as it comes. skopeo cannot
    /// write a docker-archive to a pipe (it needs a file it can create), so it writes to a
    /// file in `scratch` that is read once skopeo has finished and removed afterwards.
    pub fn save(&self, r: &Reference, platform: &Platform, scratch: &Path) -> Result<Saved> {
        match self.kind {
            Kind::Docker | Kind::Podman => {
                let mut c = self.command();
                c.arg("save");
                if self.kind == Kind::Podman {
                    c.args(["--format", "docker-archive"]);
                }
                c.arg(r.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = c
                    .spawn()
                    .with_context(|| format!("cannot run {}", self.program.display()))?;
                let stdout = child.stdout.take().expect("stdout is piped");
                let stderr = child.stderr.take().expect("stderr is piped");
                let stderr = std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let _ = BufReader::new(stderr).read_to_end(&mut buf);
                    buf
                });
                Ok(Saved {
                    what: format!("{} save", self.kind),
                    source: Source::Pipe(stdout),
                    child: Some(child),
                    stderr: Some(stderr),
                    temp: None,
                })
            }
            Kind::Skopeo => {
                fs::create_dir_all(scratch)
                    .with_context(|| format!("cannot create {}", scratch.display()))?;
                let temp = scratch.join(format!("{}.tar", r.file_stem()));
                let _ = fs::remove_file(&temp);
                let mut c = self.command();
                self.override_platform(&mut c, platform);
                // A docker-archive cannot name an image by digest; such an image is saved
                // under no name (the bundle's images.json still records its reference).
                let dest = if r.digest.is_some() {
                    format!("docker-archive:{}", temp.display())
                } else {
                    format!("docker-archive:{}:{r}", temp.display())
                };
                c.args(["copy", "--quiet", "--remove-signatures"]);
                self.tls_flag(&mut c, r, "--src-tls-verify");
                c.arg(format!("docker://{r}")).arg(dest);
                let mut saved = Saved {
                    what: "skopeo copy".into(),
                    source: Source::None,
                    child: None,
                    stderr: None,
                    temp: Some(temp.clone()),
                };
                output(&mut c, "skopeo copy")?;
                let file =
                    File::open(&temp).with_context(|| format!("cannot open {}", temp.display()))?;
                saved.source = Source::File(file);
                Ok(saved)
            }
        }
    }
}

enum Source {
    None,
    Pipe(ChildStdout),
    File(File),
}

/// An image being saved: read it, then `finish` to learn whether the engine succeeded.
/// Dropped early, it stops the engine and removes any file it wrote.
pub struct Saved {
    what: String,
    source: Source,
    child: Option<Child>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    temp: Option<PathBuf>,
}

impl Read for Saved {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::None => Ok(0),
            Source::Pipe(p) => p.read(buf),
            Source::File(f) => f.read(buf),
        }
    }
}

impl Saved {
    /// Wait for the engine and report its failure with what it said.
    pub fn finish(mut self) -> Result<()> {
        self.source = Source::None;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child
            .wait()
            .with_context(|| format!("cannot wait for {}", self.what))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            bail!("{}: {}", self.what, message(&stderr));
        }
        Ok(())
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        self.source = Source::None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(temp) = &self.temp {
            let _ = fs::remove_file(temp);
        }
    }
}

/// Run a command to its end; its stdout, or an error with what it printed on stderr.
fn output(c: &mut Command, what: &str) -> Result<String> {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| anyhow!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        bail!("{what}: {}", message(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An engine's error output, made one readable line.
fn message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut line = String::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(l);
    }
    if line.is_empty() {
        return "failed without a message".to_string();
    }
    if line.len() > MESSAGE_MAX {
        let mut cut = line.len() - MESSAGE_MAX;
        while !line.is_char_boundary(cut) {
            cut += 1;
        }
        line = format!("...{}", &line[cut..]);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_messages_become_one_line_and_keep_their_end() {
        assert_eq!(
            message(b"Error response from daemon:\n  manifest unknown\n\n"),
            "Error response from daemon: manifest unknown"
        );
        assert_eq!(message(b"first\nsecond"), "first; second");
        assert_eq!(message(b""), "failed without a message");
        let long = "x".repeat(5000) + "the cause";
        let m = message(long.as_bytes());
        assert!(m.ends_with("the cause") && m.len() <= MESSAGE_MAX + 3);
    }
}
