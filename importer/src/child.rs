//! Helper processes (the node's `ctr`) that a stop or a vanished containerd may have to kill.
//!
//! A pid may be signalled only until it is reaped: after that the kernel may give the number
//! to another process. So a helper is never signalled by its number. Its `std` [`Child`] lives
//! behind a mutex, and both the reaping (`try_wait`) and the signal (`Child::kill`, which does
//! nothing once the child has been reaped) happen under that mutex: a kill can never land
//! between a reap and the forgetting of the pid (docs/ARCHITECTURE.md, "Decisions and their
//! reasons").

use std::io;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The helpers running right now, so that a SIGTERM can end them at once.
static RUNNING: Mutex<Vec<Arc<Mutex<Child>>>> = Mutex::new(Vec::new());

/// A running helper, owned by the code that started it; [`kill_all`] can reach it until it is
/// dropped. Take its stdin, stdout and stderr before handing the [`Child`] over.
pub struct Helper {
    child: Arc<Mutex<Child>>,
}

/// A handle that can kill a [`Helper`] from another thread, and nothing else.
#[derive(Clone)]
pub struct Killer(Arc<Mutex<Child>>);

impl Killer {
    /// SIGKILL the helper, unless it has already been reaped.
    pub fn kill(&self) {
        let _ = lock(&self.0).kill();
    }
}

impl Helper {
    pub fn new(child: Child) -> Helper {
        let child = Arc::new(Mutex::new(child));
        lock(&RUNNING).push(child.clone());
        Helper { child }
    }

    pub fn killer(&self) -> Killer {
        Killer(self.child.clone())
    }

    /// Wait for the helper; kill it if it has not exited within `limit`. Polls, so that the
    /// mutex is never held across a blocking wait.
    pub fn wait_or_kill(&self, limit: Duration) -> io::Result<ExitStatus> {
        let end = Instant::now() + limit;
        let mut killed = false;
        loop {
            {
                let mut child = lock(&self.child);
                if let Some(status) = child.try_wait()? {
                    return Ok(status);
                }
                if !killed && Instant::now() >= end {
                    let _ = child.kill();
                    killed = true;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        lock(&RUNNING).retain(|c| !Arc::ptr_eq(c, &self.child));
    }
}

/// SIGKILL every helper still running (the run is being stopped).
pub fn kill_all() {
    for child in lock(&RUNNING).iter() {
        let _ = lock(child).kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_helper_past_its_limit_is_killed_and_reaped() {
        let helper = Helper::new(Command::new("sleep").arg("30").spawn().unwrap());
        let started = Instant::now();
        let status = helper.wait_or_kill(Duration::from_millis(100)).unwrap();
        assert!(!status.success());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn kill_all_ends_running_helpers_and_dropped_ones_are_forgotten() {
        let helper = Helper::new(Command::new("sleep").arg("30").spawn().unwrap());
        let child = helper.child.clone();
        kill_all();
        let status = helper.wait_or_kill(Duration::from_secs(10)).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        drop(helper);
        assert!(!lock(&RUNNING).iter().any(|c| Arc::ptr_eq(c, &child)));
    }
}
