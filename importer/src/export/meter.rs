//! Progress a person can follow on a terminal: one status line, redrawn twice a second, with
//! the bytes downloaded, the rate and the images under way. When stderr is not a terminal
//! (a CI log, a Job log) nothing is drawn: the event lines alone, with no escape codes.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::archive::human_bytes;

pub struct Meter {
    bytes: AtomicU64,
    active: AtomicUsize,
    done: AtomicBool,
    started: Instant,
    /// What the line says is under way: `downloading`, `uploading`.
    verb: &'static str,
}

/// Whether stderr is a terminal (then event lines first clear the status line).
pub fn on_terminal() -> bool {
    static TTY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TTY.get_or_init(|| {
        std::io::stderr().is_terminal() && std::env::var_os("TERM").is_some_and(|t| t != "dumb")
    })
}

/// What an event line starts with: on a terminal, "go to the line start and clear it".
pub fn line_start() -> &'static str {
    if on_terminal() {
        "\r\x1b[K"
    } else {
        ""
    }
}

impl Meter {
    pub fn new() -> Meter {
        Meter::new_for("downloading")
    }

    /// A meter whose line says `verb` (`uploading`).
    pub fn new_for(verb: &'static str) -> Meter {
        Meter {
            bytes: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            started: Instant::now(),
            verb,
        }
    }

    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn begin(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    /// Draw the status line until `finish`, on a terminal only; run it in its own thread.
    pub fn draw(&self) {
        if !on_terminal() {
            return;
        }
        let mut last = 0u64;
        let mut tick = Instant::now();
        while !self.done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if tick.elapsed() < Duration::from_millis(500) {
                continue;
            }
            let bytes = self.bytes.load(Ordering::Relaxed);
            let rate = (bytes - last) as f64 / tick.elapsed().as_secs_f64();
            (last, tick) = (bytes, Instant::now());
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[K  {}: {} image(s) under way, {} in {:.0} s, {}/s",
                self.verb,
                self.active.load(Ordering::Relaxed),
                human_bytes(bytes),
                self.started.elapsed().as_secs_f64(),
                human_bytes(rate as u64)
            );
        }
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}
