//! One importer at a time on a node: two releases installed at once must not interleave their
//! imports into one runtime.
//!
//! The lock is an exclusive `flock` on the directory that holds the runtime's socket, found
//! from the socket's canonical path. A lock file named after the socket would need a directory
//! that every importer on the node can write; the socket's directory is the one place they all
//! see (the node's `/run/containerd` through a hostPath mount, read-only), a directory opened
//! read-only can be locked, and importers of earlier versions lock that same directory, so an
//! old and a new importer exclude each other during an upgrade. A `flock` belongs to the
//! directory itself, not to the path it was opened by; resolving every symlink of the socket's
//! path first means a socket reached through a symlink in another directory takes the lock of
//! the directory where the socket really is.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::report::{shown, Reporter};
use crate::stop::sleep_unless_stopped;

/// The node lock, held until dropped.
pub type NodeLock = Flock<File>;

/// How long an importer waits for the lock by default: Helm's default `--timeout` for hooks,
/// past which the release has failed anyway.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// How often the wait is said again in the log.
const SAY_EVERY: Duration = Duration::from_secs(30);

/// Another importer held the node lock for longer than `--lock-timeout`: an environment
/// error (exit 2), as the run imported nothing.
#[derive(Debug, thiserror::Error)]
pub struct LockTimeout {
    /// The directory whose lock was asked for.
    pub dir: PathBuf,
    pub timeout: Duration,
}

impl fmt::Display for LockTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up waiting for the node lock on {} after {} s (--lock-timeout {}): another \
             importer on this node still holds it; run again once it has finished, or wait \
             longer with --lock-timeout",
            shown(&self.dir.display().to_string()),
            self.timeout.as_secs(),
            self.timeout.as_secs()
        )
    }
}

/// Hold an exclusive `flock` on the directory of the runtime socket's canonical path, waiting
/// up to `timeout` for another importer that holds it. When the lock cannot be had at all, the
/// run goes on without it, saying so; `Ok(None)` too when a stop signal came while waiting.
pub fn lock_node(
    socket: &Path,
    timeout: Duration,
    reporter: &Reporter,
) -> Result<Option<NodeLock>, LockTimeout> {
    let dir = lock_dir(socket, reporter);
    let mut file = match File::open(&dir) {
        Ok(f) => f,
        Err(e) => {
            reporter.warn(
                None,
                &format!(
                    "cannot open {} to take the import lock ({e}); going on without it",
                    dir.display()
                ),
            );
            return Ok(None);
        }
    };
    let started = Instant::now();
    let mut last_said: Option<Instant> = None;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                if last_said.is_some() {
                    reporter.info(&format!(
                        "lock on {} taken after {:.0} s",
                        dir.display(),
                        started.elapsed().as_secs_f64()
                    ));
                }
                return Ok(Some(lock));
            }
            Err((f, Errno::EWOULDBLOCK)) => file = f,
            Err((_, err)) => {
                reporter.warn(
                    None,
                    &format!(
                        "cannot lock {} ({}); going on without the lock",
                        dir.display(),
                        err.desc()
                    ),
                );
                return Ok(None);
            }
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(LockTimeout { dir, timeout });
        }
        if last_said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
            reporter.info(&format!(
                "waiting for another importer on this node to finish (it holds the lock on {}); \
                 giving up after {} s (--lock-timeout)",
                dir.display(),
                timeout.as_secs()
            ));
            last_said = Some(Instant::now());
        }
        if !sleep_unless_stopped((timeout - waited).min(Duration::from_secs(1))) {
            // Nothing is imported; the run reports every archive as not started.
            return Ok(None);
        }
    }
}

/// The directory the socket really is in: every symlink of its path resolved. A socket that
/// cannot be resolved (gone since it answered) is taken as given, and the log says so.
fn lock_dir(socket: &Path, reporter: &Reporter) -> PathBuf {
    let socket = match std::fs::canonicalize(socket) {
        Ok(p) => p,
        Err(e) => {
            reporter.warn(
                None,
                &format!(
                    "cannot resolve {} ({e}); taking the import lock on its directory as given",
                    socket.display()
                ),
            );
            socket.to_path_buf()
        }
    };
    socket.parent().unwrap_or(Path::new("/")).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Format;

    #[test]
    fn a_socket_reached_through_a_symlink_is_locked_in_its_real_directory() {
        let base = std::env::temp_dir().join(format!("oi-lock-dir-{}", std::process::id()));
        let real = base.join("real");
        let other = base.join("other");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let socket = real.join("containerd.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let link = other.join("containerd.sock");
        std::os::unix::fs::symlink(&socket, &link).unwrap();
        let reporter = Reporter::new(Format::Text);
        assert_eq!(
            lock_dir(&link, &reporter),
            std::fs::canonicalize(&real).unwrap()
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_timeout_error_names_the_lock_and_the_timeout() {
        let e = LockTimeout {
            dir: PathBuf::from("/run/containerd"),
            timeout: Duration::from_secs(7),
        };
        let text = e.to_string();
        assert!(
            text.contains("node lock on /run/containerd after 7 s (--lock-timeout 7)"),
            "{text}"
        );
    }
}
