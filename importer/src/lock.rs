//! One importer at a time on a node: two releases installed at once must not interleave their
//! imports into one runtime.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::report::Reporter;
use crate::stop::sleep_unless_stopped;

/// The node lock, held until dropped.
pub type NodeLock = Flock<File>;

/// Hold an exclusive `flock` on the runtime socket's directory, waiting for another importer
/// that holds it. A directory opened read-only can be locked, and that works through a
/// read-only hostPath mount. When the lock cannot be had at all, the run goes on without it,
/// saying so; `None` too when a stop signal came while waiting.
pub fn lock_node(socket: &Path, reporter: &Reporter) -> Option<NodeLock> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let mut file = match File::open(dir) {
        Ok(f) => f,
        Err(e) => {
            reporter.warn(
                None,
                &format!(
                    "cannot open {} to take the import lock ({e}); going on without it",
                    dir.display()
                ),
            );
            return None;
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
                return Some(lock);
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
                return None;
            }
        }
        if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            reporter.info(&format!(
                "waiting for another importer on this node to finish (it holds the lock on {})",
                dir.display()
            ));
            last_said = Some(Instant::now());
        }
        if !sleep_unless_stopped(Duration::from_secs(1)) {
            // Nothing is imported; the run reports every archive as not started.
            return None;
        }
    }
}
