//! The system's OpenSSH client, one process per remote command: the user's `~/.ssh/config`,
//! agent, `known_hosts` and jump hosts apply. Never a password prompt (`BatchMode=yes`) and
//! never an unchecked host key (`StrictHostKeyChecking=yes`): an unknown host is refused and
//! named with the line that fixes it.
//!
//! A host's commands (the probe, the questions, the stream, the import) share one connection:
//! the first makes it the master (`ControlMaster=auto`), with its socket in a private directory
//! of this run, and it is closed when the host is done (`-O exit`). Over a slow or distant
//! link each command then costs a channel, not a handshake. An operator's own `-o
//! ControlMaster=...` or `-o ControlPath=...` is left alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use super::hosts::Host;

/// How ssh is run for every host.
#[derive(Debug, Clone, Default)]
pub struct Ssh {
    pub config: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    /// `-o` options; ssh keeps the first value of an option, so these come before ours.
    pub options: Vec<String>,
    /// The directory of this run's control sockets ([`ControlDir`]), when it has one.
    pub control: Option<PathBuf>,
}

/// A private directory (mode 0700) for the control sockets of one run, removed when dropped.
pub struct ControlDir(PathBuf);

impl ControlDir {
    /// Under the temporary directory, or `/tmp` when its path is long: a socket's path must
    /// fit in 108 bytes, and ssh's `%C` takes 40.
    pub fn new() -> Result<ControlDir> {
        use std::os::unix::fs::DirBuilderExt;
        let tmp = std::env::temp_dir();
        let base = if tmp.as_os_str().len() > 40 {
            PathBuf::from("/tmp")
        } else {
            tmp
        };
        let dir = base.join(format!("oi-ssh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(ControlDir(dir))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Why a remote command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The host's key is unknown or changed: refused, never retried.
    HostKey(String),
    /// ssh itself failed (exit 255): unreachable, refused, timed out, or cut.
    Connection(String),
    /// The remote command exited with this code.
    Exit(i32, String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::HostKey(s) | Failure::Connection(s) => f.write_str(s),
            Failure::Exit(code, said) if said.is_empty() => write!(f, "exited {code}"),
            Failure::Exit(code, said) => write!(f, "exited {code}: {said}"),
        }
    }
}

impl std::error::Error for Failure {}

impl Ssh {
    /// `ssh ... HOST -- sh -c SCRIPT`.
    pub fn command(&self, host: &Host, script: &str) -> Command {
        let mut c = self.base();
        c.arg("-T");
        if let Some(dir) = self.shared_connection() {
            c.args(["-o", "ControlMaster=auto", "-o", "ControlPersist=60"])
                .arg("-o")
                .arg(format!("ControlPath={}/%C", dir.display()));
        }
        for o in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "ConnectTimeout=10",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=3",
            "LogLevel=ERROR",
        ] {
            c.arg("-o").arg(o);
        }
        Self::to(&mut c, host);
        c.arg("--").arg(format!("sh -c {}", quote(script)));
        c
    }

    /// `ssh` with the operator's `-F`, `-i` and `-o`.
    fn base(&self) -> Command {
        let mut c = Command::new("ssh");
        if let Some(f) = &self.config {
            c.arg("-F").arg(f);
        }
        if let Some(i) = &self.identity {
            c.arg("-i").arg(i);
        }
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        c
    }

    /// The port, the user and the host, last.
    fn to(c: &mut Command, host: &Host) {
        if let Some(p) = host.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &host.user {
            c.arg("-l").arg(u);
        }
        c.arg(&host.host);
    }

    /// The control directory, unless the operator chose their own multiplexing.
    fn shared_connection(&self) -> Option<&PathBuf> {
        let theirs = self.options.iter().any(|o| {
            let key = o
                .split(['=', ' '])
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            key == "controlmaster" || key == "controlpath"
        });
        self.control.as_ref().filter(|_| !theirs)
    }

    /// End the host's shared connection, if one was made (`ssh -O exit`); quiet, and
    /// harmless when there is none.
    pub fn close(&self, host: &Host) {
        let Some(dir) = self.shared_connection() else {
            return;
        };
        let mut c = self.base();
        c.arg("-o")
            .arg(format!("ControlPath={}/%C", dir.display()))
            .args(["-O", "exit"]);
        Self::to(&mut c, host);
        let _ = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Run `script` on `host`, `input` on its stdin; its stdout. Its stderr lines go to `say`.
    pub fn output(
        &self,
        host: &Host,
        script: &str,
        input: Option<&mut dyn Read>,
        say: &dyn Fn(&str),
    ) -> Result<String> {
        let mut child = self.spawn(host, script, input.is_some())?;
        let stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut out);
            out
        });
        let fed = match (input, child.stdin.take()) {
            (Some(data), Some(mut stdin)) => std::io::copy(data, &mut stdin).map(|_| ()),
            _ => Ok(()),
        };
        self.finish(host, child, say)?;
        let out = reader.join().unwrap_or_default();
        fed.with_context(|| format!("{}: sending to ssh", host.name))?;
        Ok(out)
    }

    /// Start `script` on `host`, stdout and stderr piped, stdin piped when `stdin`.
    pub fn spawn(&self, host: &Host, script: &str, stdin: bool) -> Result<Child> {
        self.command(host, script)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run ssh (is OpenSSH's client installed?)")
    }

    /// Wait for `child`; its stderr lines to `say` (ssh's own kept for the failure). Ok when
    /// the remote command exited 0.
    pub fn finish(&self, host: &Host, mut child: Child, say: &dyn Fn(&str)) -> Result<(), Failure> {
        let mut said = Vec::new();
        if let Some(err) = child.stderr.take() {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if !is_ssh_noise(&line) {
                    say(&line);
                }
                said.push(line);
            }
        }
        let status = child
            .wait()
            .map_err(|e| Failure::Connection(format!("waiting for ssh: {e}")))?;
        match status.code() {
            Some(0) => Ok(()),
            Some(255) | None => Err(classify(host, &said)),
            Some(code) => Err(Failure::Exit(code, last(&said))),
        }
    }

    /// Run `script` on `host` with every line of its stdout and stderr given to `say`.
    pub fn stream(&self, host: &Host, script: &str, say: &dyn Fn(&str)) -> Result<(), Failure> {
        let mut child = self
            .spawn(host, script, false)
            .map_err(|e| Failure::Connection(format!("{e:#}")))?;
        let stdout = child.stdout.take().expect("piped");
        // The importer logs on stderr, which `finish` reads as it comes; stdout is said after.
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        let finished = self.finish(host, child, say);
        for line in reader.join().unwrap_or_default() {
            say(&line);
        }
        finished
    }
}

/// ssh's words about the connection, which the failure carries instead of the log.
fn is_ssh_noise(line: &str) -> bool {
    line.starts_with("ssh: ")
        || line.contains("Host key verification failed")
        || line.contains("host key is known")
        || line.starts_with("Connection to ")
        || line.starts_with("client_loop: ")
        || line.starts_with("Connection closed by ")
        || line.starts_with("Connection timed out")
        || line.starts_with("kex_exchange_identification: ")
        || line.starts_with("Timeout, server ")
}

fn last(said: &[String]) -> String {
    said.iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .cloned()
        .unwrap_or_default()
}

/// ssh's exit 255, told apart by what it said.
pub fn classify(host: &Host, said: &[String]) -> Failure {
    if said
        .iter()
        .any(|l| l.contains("Host key verification failed"))
    {
        let port = host.port.map_or(String::new(), |p| format!("-p {p} "));
        let changed = said.iter().any(|l| l.contains("HAS CHANGED"));
        let why = if changed {
            "its host key has changed"
        } else {
            "its host key is not in known_hosts"
        };
        return Failure::HostKey(format!(
            "{}: {why}: refused (StrictHostKeyChecking=yes). Check the key's fingerprint with \
             the host's owner, then add it: ssh-keyscan {port}{} >> ~/.ssh/known_hosts",
            host.host, host.host
        ));
    }
    let why = last(said);
    let why = if why.is_empty() {
        "ssh exited 255 (the connection was refused or dropped)".to_string()
    } else {
        why
    };
    Failure::Connection(format!("ssh to {}: {why}", host.name))
}

/// `text` as one word of a POSIX shell.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A remote path as a shell word: `~/rest` becomes `"$HOME"/'rest'`.
pub fn path_word(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
        None => quote(path),
    }
}

/// A writer that counts what went through it.
pub struct Counted<W> {
    pub inner: W,
    pub bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_commands_share_one_connection_unless_the_operator_chose_their_own() {
        let host = Host::parse("root@10.0.0.5").unwrap();
        let words = |ssh: &Ssh| -> Vec<String> {
            let c = ssh.command(&host, "true");
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let ours = Ssh {
            control: Some(PathBuf::from("/tmp/oi-ssh-1")),
            ..Ssh::default()
        };
        let args = words(&ours);
        assert!(args.contains(&"ControlMaster=auto".to_string()), "{args:?}");
        assert!(
            args.contains(&"ControlPath=/tmp/oi-ssh-1/%C".to_string()),
            "{args:?}"
        );
        let theirs = Ssh {
            options: vec!["controlmaster=no".into()],
            ..ours.clone()
        };
        let args = words(&theirs);
        assert!(
            !args.iter().any(|a| a.starts_with("ControlPath=")),
            "{args:?}"
        );
        assert!(!words(&Ssh::default())
            .iter()
            .any(|a| a.starts_with("Control")));
    }

    #[test]
    fn an_unknown_host_key_is_named_with_the_line_that_fixes_it() {
        let host = Host::parse("root@10.77.3.2:2222").unwrap();
        let said = vec![
            "No ED25519 host key is known for [10.77.3.2]:2222 and you have requested strict checking.".to_string(),
            "Host key verification failed.".to_string(),
        ];
        match classify(&host, &said) {
            Failure::HostKey(m) => assert!(
                m.contains("10.77.3.2: its host key is not in known_hosts")
                    && m.contains("ssh-keyscan -p 2222 10.77.3.2 >> ~/.ssh/known_hosts"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        let said = vec!["ssh: connect to host 10.77.4.2 port 22: Connection refused".to_string()];
        assert!(
            matches!(classify(&host, &said), Failure::Connection(m) if m.contains("Connection refused"))
        );
    }

    #[test]
    fn shell_words_survive_quotes_and_home() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(path_word("~/.cache/oi"), "\"$HOME\"/'.cache/oi'");
        assert_eq!(path_word("/srv/oi"), "'/srv/oi'");
    }
}
