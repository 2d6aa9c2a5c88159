//! Stopping on SIGTERM and SIGINT: the current archive is aborted, no new one starts, and the
//! summary is still printed (the kubelet sends SIGTERM when a Job is deleted or times out).

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::child;
use crate::report::Reporter;

/// After SIGTERM, helper processes still running this long are killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The number of the signal that asked us to stop; 0 while none has.
fn received() -> &'static Arc<AtomicUsize> {
    static SIGNAL: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    SIGNAL.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// The signal that asked us to stop, if one did.
pub fn stop_signal() -> Option<&'static str> {
    match received().load(Ordering::SeqCst) {
        0 => None,
        n if n == SIGINT as usize => Some("SIGINT"),
        _ => Some("SIGTERM"),
    }
}

/// Catch SIGTERM and SIGINT: the current archive is aborted (its helper process killed by a
/// watcher thread after a grace period, even when blocked), no new one starts, and the
/// summary is still printed. Installed once per process.
pub fn install_stop_handler(reporter: std::sync::Arc<Reporter>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [SIGTERM, SIGINT] {
            // The handler only stores the signal's number in an atomic.
            if let Err(e) = signal_hook::flag::register_usize(sig, received().clone(), sig as usize)
            {
                reporter.warn(None, &format!("cannot catch signal {sig}: {e}"));
            }
        }
        thread::spawn(move || {
            let mut since: Option<Instant> = None;
            loop {
                thread::sleep(Duration::from_millis(100));
                let Some(sig) = stop_signal() else { continue };
                match since {
                    None => {
                        reporter.warn(
                            None,
                            &format!("received {sig}: aborting the current import and stopping"),
                        );
                        since = Some(Instant::now());
                    }
                    // The import aborts itself at its next read, and ctr then exits on its
                    // own (cleaning up). Only a helper stuck past a grace period is killed.
                    Some(t) if t.elapsed() >= KILL_GRACE => child::kill_all(),
                    Some(_) => {}
                }
            }
        });
    });
}

/// Sleep, waking early when asked to stop. Returns false if stopped.
pub fn sleep_unless_stopped(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop_signal().is_some() {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop_signal().is_none()
}

/// A reader that fails at its next read once the run is asked to stop, so that a long read (a
/// layer skipped by reading through it, a whole decompression, a checksum) ends there. It
/// counts the bytes it has passed on.
pub struct Stoppable<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Stoppable<R> {
    pub fn new(inner: R) -> Stoppable<R> {
        Stoppable { inner, read: 0 }
    }

    /// The bytes read through it so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl<R: Read> Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(sig) = stop_signal() {
            return Err(io::Error::other(format!("aborted by {sig}")));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Catch SIGTERM and SIGINT into `stop_signal` alone (no watcher thread): for commands that
/// only look at it between steps.
pub fn catch_signals() -> Result<(), String> {
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register_usize(sig, received().clone(), sig as usize)
            .map_err(|e| format!("cannot catch signal {sig}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stoppable_reader_passes_every_byte_on_and_counts_them() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut r = Stoppable::new(&data[..]);
        let mut out = Vec::new();
        let mut buf = [0u8; 333];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, data);
        assert_eq!(r.bytes_read(), data.len() as u64);
    }
}
