//! Watching `ctr` while it imports: containerd's socket is probed, and ctr killed (through
//! its owner) when containerd has stopped answering, so that the run never hangs with ctr's
//! own calls; and what ctr prints is gathered, within a cap.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::super::socket;
use crate::child::Killer;

/// While an import runs, the socket is probed this often; when containerd has stopped
/// answering for [`GONE_AFTER`], ctr is killed: ctr's own calls may wait for a containerd that
/// never comes back, and the run must not hang with them.
const WATCH_EVERY: Duration = Duration::from_secs(1);
pub const GONE_AFTER: Duration = Duration::from_secs(5);

/// Keep at most this much of what ctr prints on stdout and stderr.
const STDERR_MAX: usize = 16 * 1024;

/// Probes the socket while ctr runs, and kills ctr when containerd has been gone too long.
pub struct SocketWatch {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Option<String>>,
}

impl SocketWatch {
    pub fn start(socket: &Path, ctr: Killer) -> SocketWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let socket = socket.to_path_buf();
        let thread = thread::spawn(move || {
            let mut since: Option<Instant> = None;
            while !flag.load(Ordering::SeqCst) {
                match socket::probe_socket(&socket) {
                    None => since = None,
                    Some(problem) => {
                        let t = *since.get_or_insert_with(Instant::now);
                        if t.elapsed() >= GONE_AFTER {
                            // Through ctr's owner: never a pid that was already reaped.
                            ctr.kill();
                            return Some(problem);
                        }
                    }
                }
                let end = Instant::now() + WATCH_EVERY;
                while Instant::now() < end && !flag.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(50));
                }
            }
            None
        });
        SocketWatch { stop, thread }
    }

    /// Stop watching; what was wrong with the socket if ctr was killed for it.
    pub fn stop(self) -> Option<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or(None)
    }
}

/// All that `r` gives until its end, the first [`STDERR_MAX`] bytes kept.
pub fn read_capped(r: Option<impl Read>) -> Vec<u8> {
    let Some(mut r) = r else { return Vec::new() };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if kept.len() < STDERR_MAX {
                    kept.extend_from_slice(&buf[..n.min(STDERR_MAX - kept.len())]);
                }
            }
        }
    }
    kept
}
