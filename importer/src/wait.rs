//! `wait`: the main container of the chart's DaemonSets, whose work is done by their init
//! containers. It idles until SIGTERM or SIGINT. With `--listen PORT` it also accepts
//! connections on that port, which says "my init container is done" to whoever asks; with
//! `--peers HOST:PORT` it is that asker: it waits until every address HOST resolves to accepts
//! a connection on PORT (the chart's post-delete hook waits so for the restore DaemonSet's pod
//! on every node before Helm deletes it).

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use crate::exit::Code;
use crate::stop;

/// What `wait` does, resolved from the flags by `cli`.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Accept connections on this port until stopped.
    pub listen: Option<u16>,
    /// `HOST:PORT`: wait for every address of HOST to accept a connection on PORT, then exit.
    pub peers: Option<String>,
    /// With `peers`: give up after this long, naming the addresses that never answered.
    pub timeout: Duration,
    /// With `peers`: the set of addresses must stay the same, every one answering, this long.
    pub settle: Duration,
}

/// How long one connection attempt may take.
const CONNECT: Duration = Duration::from_secs(2);
/// Between two rounds of asking.
const ROUND: Duration = Duration::from_secs(2);

pub fn run(settings: &Settings) -> Code {
    if let Err(e) = stop::catch_signals() {
        eprintln!("offline-images: {e}");
        return Code::Usage;
    }
    if let Some(peers) = &settings.peers {
        return wait_for_peers(peers, settings.timeout, settings.settle);
    }
    if let Some(port) = settings.listen {
        match TcpListener::bind(("0.0.0.0", port)) {
            Ok(listener) => {
                eprintln!("offline-images: listening on port {port} until stopped");
                thread::spawn(move || {
                    // Accepted and closed at once: the connection alone is the answer.
                    for conn in listener.incoming() {
                        drop(conn);
                    }
                });
            }
            Err(e) => {
                eprintln!("offline-images: cannot listen on port {port}: {e}");
                return Code::Usage;
            }
        }
    }
    while stop::stop_signal().is_none() {
        thread::sleep(Duration::from_millis(100));
    }
    Code::Success
}

/// Every address `target` (HOST:PORT) resolves to, sorted; empty when it resolves to none.
fn resolve(target: &str) -> Result<BTreeSet<SocketAddr>, String> {
    target
        .to_socket_addrs()
        .map(|addrs| addrs.collect())
        .map_err(|e| format!("{target}: {e}"))
}

/// The addresses of `all` that do not accept a connection.
fn silent(all: &BTreeSet<SocketAddr>) -> Vec<SocketAddr> {
    let handles: Vec<_> = all
        .iter()
        .map(|&addr| thread::spawn(move || (addr, TcpStream::connect_timeout(&addr, CONNECT))))
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().ok())
        .filter(|(_, r)| r.is_err())
        .map(|(addr, _)| addr)
        .collect()
}

fn addresses(set: &[SocketAddr]) -> String {
    set.iter()
        .map(|a| a.ip().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wait until the addresses of `target` are a stable, non-empty set that all answer for
/// `settle`; exit 1 naming what did not answer (or that there was nothing) after `timeout`.
fn wait_for_peers(target: &str, timeout: Duration, settle: Duration) -> Code {
    let started = Instant::now();
    let mut stable_since: Option<(Instant, BTreeSet<SocketAddr>)> = None;
    let mut said = String::new();
    loop {
        let (line, done) = match resolve(target) {
            Err(e) => (format!("cannot resolve {e}; asking again"), false),
            Ok(all) if all.is_empty() => (format!("{target}: no address yet"), false),
            Ok(all) => {
                let left = silent(&all);
                if left.is_empty() {
                    let since = match stable_since.take() {
                        Some((t, set)) if set == all => t,
                        _ => Instant::now(),
                    };
                    let done = since.elapsed() >= settle;
                    stable_since = Some((since, all.clone()));
                    (
                        format!("all {} pods behind {target} answer", all.len()),
                        done,
                    )
                } else {
                    stable_since = None;
                    let line = format!(
                        "{} of {} pods behind {target} answer; waiting for {}",
                        all.len() - left.len(),
                        all.len(),
                        addresses(&left)
                    );
                    (line, false)
                }
            }
        };
        if line != said {
            eprintln!("offline-images: {line}");
            said = line;
        }
        if done {
            eprintln!("summary: every pod behind {target} answered");
            return Code::Success;
        }
        if started.elapsed() >= timeout {
            eprintln!("summary: FAILED: after {} s, {said}", timeout.as_secs());
            return Code::Failure;
        }
        if !stop::sleep_unless_stopped(ROUND) {
            eprintln!(
                "summary: stopped by {} while waiting for {target}",
                stop::stop_signal().unwrap_or("a signal")
            );
            return Code::Failure;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_that_all_answer_for_the_settle_time_end_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for c in listener.incoming() {
                drop(c)
            }
        });
        let code = wait_for_peers(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(20),
            Duration::ZERO,
        );
        assert_eq!(code, Code::Success);
    }

    #[test]
    fn a_peer_that_never_answers_fails_the_wait_after_the_timeout() {
        // A port just freed: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Instant::now();
        let code = wait_for_peers(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        assert_eq!(code, Code::Failure);
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
