//! Who made a lease, and whether that importer still runs.
//!
//! Every lease the native client takes is labelled with its maker: the kernel's boot ID, the
//! pid namespace, the pid and the process's start time (in clock ticks since boot), which
//! together name one process of one boot and no other, and the host name, for people. A
//! later run tells a lease whose maker is gone from one whose maker still runs:
//! - another boot ID: the node has restarted since, so the maker is gone;
//! - the same pid namespace: the maker runs if a process of that pid has that start time;
//! - another pid namespace (the previous pod of a Job, another container): its processes
//!   cannot be seen from here. Every importer that takes a lease first holds a shared
//!   `flock` on containerd's content store directory (the "presence lock", below) until it
//!   exits; a run that gets that lock exclusively knows that no importer that could take it
//!   is alive, so a lease whose maker said it held that very lock is a dead run's. Without
//!   the lock (containerd's root not visible here) such a lease is kept: it may be alive.
//!
//! The kernel drops an `flock` when the last descriptor of its open file goes, so a killed
//! importer's presence ends with it, whatever killed it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

pub const LABEL_BOOT_ID: &str = "io.offline-images.owner.boot-id";
pub const LABEL_PID_NS: &str = "io.offline-images.owner.pid-ns";
pub const LABEL_PID: &str = "io.offline-images.owner.pid";
pub const LABEL_START: &str = "io.offline-images.owner.start";
pub const LABEL_HOST: &str = "io.offline-images.owner.host";
pub const LABEL_PRESENCE: &str = "io.offline-images.owner.presence";

/// A file as the kernel knows it: device and inode, the same through any mount of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    fn label(self) -> String {
        format!("{}:{}", self.dev, self.ino)
    }

    fn parse(s: &str) -> Option<FileId> {
        let (dev, ino) = s.split_once(':')?;
        Some(FileId {
            dev: dev.parse().ok()?,
            ino: ino.parse().ok()?,
        })
    }
}

/// The importer process that made a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub boot_id: String,
    pub pid_ns: u64,
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat`, field 22).
    pub start: u64,
    pub host: String,
    /// The presence lock it held, if it could take one.
    pub presence: Option<FileId>,
}

impl Owner {
    /// This process, as `/proc` tells it; `None` when it cannot.
    pub fn this_process() -> Option<Owner> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let pid_ns = pid_ns_of(&std::fs::read_link("/proc/self/ns/pid").ok()?)?;
        let pid = std::process::id();
        let start = proc_stat(pid)?.start;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Some(Owner {
            boot_id: boot_id.trim().to_string(),
            pid_ns,
            pid,
            start,
            host: clean_host(&host),
            presence: None,
        })
    }

    pub fn labels(&self) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_BOOT_ID.to_string(), self.boot_id.clone()),
            (LABEL_PID_NS.to_string(), self.pid_ns.to_string()),
            (LABEL_PID.to_string(), self.pid.to_string()),
            (LABEL_START.to_string(), self.start.to_string()),
            (LABEL_HOST.to_string(), self.host.clone()),
        ]);
        if let Some(p) = self.presence {
            labels.insert(LABEL_PRESENCE.to_string(), p.label());
        }
        labels
    }

    /// The owner a lease's labels name; `None` when they name none (not a lease of ours, or
    /// one of an importer too old to label its leases).
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Owner> {
        let get = |k: &str| labels.get(k).map(|v| v.trim());
        let boot_id = get(LABEL_BOOT_ID)?;
        let uuid_like = !boot_id.is_empty()
            && boot_id.len() <= 64
            && boot_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if !uuid_like {
            return None;
        }
        Some(Owner {
            boot_id: boot_id.to_string(),
            pid_ns: get(LABEL_PID_NS)?.parse().ok()?,
            pid: get(LABEL_PID)?.parse().ok()?,
            start: get(LABEL_START)?.parse().ok()?,
            host: clean_host(get(LABEL_HOST).unwrap_or_default()),
            presence: get(LABEL_PRESENCE).and_then(FileId::parse),
        })
    }

    /// "pid 123 on node-1", for the log.
    pub fn describe(&self) -> String {
        if self.host.is_empty() {
            format!("pid {}", self.pid)
        } else {
            format!("pid {} on {}", self.pid, self.host)
        }
    }
}

/// A host name as a label keeps it and the log shows it: at most 64 characters of
/// `[A-Za-z0-9.-]`, anything else shown as `?`.
fn clean_host(host: &str) -> String {
    host.trim()
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `pid:[4026531836]` -> 4026531836.
fn pid_ns_of(link: &Path) -> Option<u64> {
    let s = link.to_str()?;
    s.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub start: u64,
    /// Exited, not yet reaped: gone for our purposes.
    pub zombie: bool,
}

/// `/proc/PID/stat` of `pid` in this process's `/proc`, if there is such a process.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may hold anything, ')' included.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 (state) on: the start time is field 22.
    Some(ProcStat {
        start: fields.get(19)?.parse().ok()?,
        zombie: matches!(fields.first(), Some(&"Z" | &"X")),
    })
}

/// Whether `/proc` here is this process's pid namespace's (a container may see another's).
pub fn own_proc() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()))
        == Some(std::process::id())
}

/// What a run knows when it judges a lease.
pub struct Viewer<'a> {
    pub me: &'a Owner,
    /// `/proc` shows this process's pid namespace.
    pub own_proc: bool,
    /// The presence lock, when this run holds it exclusively.
    pub exclusive: Option<FileId>,
}

/// Whether a lease's maker still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Alive,
    /// Gone, and why that is known.
    Gone(String),
    /// It cannot be told from here: why.
    Unknown(String),
}

/// Judge `owner` as `viewer` sees it; `stat` looks a pid up in this `/proc`.
pub fn judge(
    owner: &Owner,
    viewer: &Viewer<'_>,
    stat: impl Fn(u32) -> Option<ProcStat>,
) -> Verdict {
    if owner.boot_id != viewer.me.boot_id {
        return Verdict::Gone("the node has restarted since (another boot ID)".into());
    }
    if owner.pid_ns == viewer.me.pid_ns && viewer.own_proc {
        return match stat(owner.pid) {
            Some(s) if s.start == owner.start && !s.zombie => Verdict::Alive,
            _ => Verdict::Gone(format!("process {} has exited", owner.pid)),
        };
    }
    let why = match (viewer.exclusive, owner.presence) {
        (Some(ours), Some(theirs)) if ours == theirs => {
            return Verdict::Gone(
                "it ran in another pid namespace, and no importer holds containerd's content \
                 store open any more"
                    .into(),
            )
        }
        (_, None) => "it held no presence lock (containerd's root was not visible to it)",
        (None, Some(_)) => {
            "another importer holds containerd's content store open, or it is not visible here"
        }
        (Some(_), Some(_)) => "it held its presence lock on another directory",
    };
    Verdict::Unknown(format!(
        "it ran in another pid namespace (another pod or container) and {why}, so whether it \
         still runs cannot be told from here"
    ))
}

/// The presence lock: a `flock` on containerd's content store directory, shared by every
/// importer that holds leases, exclusive for a run that reclaims them (see the module doc).
pub struct Presence {
    lock: Flock<File>,
    pub id: FileId,
}

impl Presence {
    /// Take it on `dir`: exclusively when `exclusive` and no one else holds it (the second
    /// value says whether it was), else shared, waiting while another run holds it
    /// exclusively. `None` when `dir` cannot be opened or locked, or a stop signal came.
    pub fn take(dir: &Path, exclusive: bool) -> Option<(Presence, bool)> {
        let file = File::open(dir).ok()?;
        let meta = file.metadata().ok()?;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let mut file = file;
        if exclusive {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Some((Presence { lock, id }, true)),
                Err((f, Errno::EWOULDBLOCK)) => file = f,
                Err(_) => return None,
            }
        }
        loop {
            match Flock::lock(file, FlockArg::LockSharedNonblock) {
                Ok(lock) => return Some((Presence { lock, id }, false)),
                Err((f, Errno::EWOULDBLOCK)) => file = f,
                Err(_) => return None,
            }
            // Another run reclaims; it holds the lock for a few calls to containerd.
            if !crate::stop::sleep_unless_stopped(Duration::from_millis(100)) {
                return None;
            }
        }
    }

    /// From exclusive to shared (never waits: no one else holds it).
    pub fn share(&self) {
        let _ = self.lock.relock(FlockArg::LockSharedNonblock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(boot: &str, ns: u64, pid: u32, start: u64, presence: Option<FileId>) -> Owner {
        Owner {
            boot_id: boot.into(),
            pid_ns: ns,
            pid,
            start,
            host: "node-1".into(),
            presence,
        }
    }

    const LOCK: FileId = FileId { dev: 8, ino: 42 };

    #[test]
    fn an_owner_survives_its_labels_and_foreign_labels_name_none() {
        let o = owner("0f3c-9a", 4026531836, 17, 9_000, Some(LOCK));
        assert_eq!(Owner::from_labels(&o.labels()), Some(o.clone()));
        let mut bare = o.labels();
        bare.remove(LABEL_PRESENCE);
        assert_eq!(Owner::from_labels(&bare).unwrap().presence, None);
        // ctr's own leases carry only an expiry; a forged boot ID is not one.
        let ctr = HashMap::from([("containerd.io/gc.expire".into(), "x".into())]);
        assert_eq!(Owner::from_labels(&ctr), None);
        let mut forged = o.labels();
        forged.insert(LABEL_BOOT_ID.into(), "x\n".into());
        assert_eq!(Owner::from_labels(&forged), None);
        forged.insert(LABEL_BOOT_ID.into(), "ab".into());
        forged.insert(LABEL_HOST.into(), "a\u{1b}[2Kb".into());
        assert_eq!(Owner::from_labels(&forged).unwrap().host, "a??2Kb");
    }

    #[test]
    fn proc_stat_is_read_past_a_command_name_holding_parentheses() {
        let line = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                start: 777,
                zombie: false
            })
        );
        let me = proc_stat(std::process::id()).unwrap();
        assert_eq!(
            me,
            Owner::this_process()
                .map(|o| ProcStat {
                    start: o.start,
                    zombie: false
                })
                .unwrap()
        );
        assert!(own_proc());
    }

    #[test]
    fn a_lease_is_reclaimed_only_when_its_maker_is_known_to_be_gone() {
        let me = owner("boot", 1, 100, 5, Some(LOCK));
        let stat = |pid: u32| {
            (pid == 7).then_some(ProcStat {
                start: 70,
                zombie: false,
            })
        };
        let view = |exclusive| Viewer {
            me: &me,
            own_proc: true,
            exclusive,
        };
        let gone = |v: Verdict| matches!(v, Verdict::Gone(_));
        let unknown = |v: Verdict| matches!(v, Verdict::Unknown(_));
        // Another boot: gone, whatever else.
        assert!(gone(judge(
            &owner("old", 1, 7, 70, None),
            &view(None),
            stat
        )));
        // This pid namespace: alive only with the same start time.
        assert_eq!(
            judge(&owner("boot", 1, 7, 70, None), &view(Some(LOCK)), stat),
            Verdict::Alive
        );
        assert!(gone(judge(
            &owner("boot", 1, 7, 71, None),
            &view(None),
            stat
        )));
        assert!(gone(judge(
            &owner("boot", 1, 8, 70, None),
            &view(None),
            stat
        )));
        let zombie = |_| {
            Some(ProcStat {
                start: 70,
                zombie: true,
            })
        };
        assert!(gone(judge(
            &owner("boot", 1, 7, 70, None),
            &view(None),
            zombie
        )));
        // Another pid namespace: gone only when this run holds the presence lock alone and
        // the maker held that same lock.
        let other = owner("boot", 2, 7, 70, Some(LOCK));
        assert!(gone(judge(&other, &view(Some(LOCK)), stat)));
        assert!(unknown(judge(&other, &view(None), stat)));
        let elsewhere = FileId { dev: 8, ino: 43 };
        assert!(unknown(judge(&other, &view(Some(elsewhere)), stat)));
        assert!(unknown(judge(
            &owner("boot", 2, 7, 70, None),
            &view(Some(LOCK)),
            stat
        )));
        // A /proc of another namespace proves nothing about pids.
        let blind = Viewer {
            me: &me,
            own_proc: false,
            exclusive: None,
        };
        assert!(unknown(judge(
            &owner("boot", 1, 8, 70, Some(LOCK)),
            &blind,
            stat
        )));
    }
}
