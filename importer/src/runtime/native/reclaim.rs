//! What an importer that was killed (an OOM kill, an evicted pod, SIGKILL) left in containerd,
//! removed by the next import: its leases, which keep for 24 hours whatever it had stored; its
//! partial uploads (ingests), whose data containerd keeps on disk until someone aborts them
//! (deleting their lease drops containerd's record of them at once, but their data at times
//! stays until a garbage collection that removes some content); and the snapshot of the layer it was
//! unpacking, which goes with the lease.
//!
//! Ours, and only ours, by name and label: a lease is ours when its labels name the importer
//! that made it ([`super::owner`]), and is removed only when that importer is known to be
//! gone; an upload is ours when its ref is `LEASE-N` for one of our lease IDs, a snapshot when
//! its key is `offline-images-extract-LEASE CHAIN-ID`, and either goes with its lease, or
//! alone when that lease no longer exists. Uploads are aborted before their lease is deleted.

use anyhow::Result;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{ListSnapshotsRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{Lease, ListRequest, ListStatusesRequest, Status};

use super::client::CallError;
use super::image::snapshot_exists;
use super::ingest::abort_upload;
use super::owner::{self, judge, Owner, Verdict, Viewer};
use super::Native;
use crate::archive::human_bytes;
use crate::runtime::Leftover;

const LEASE_PREFIX: &str = "offline-images-";
const EXTRACT_PREFIX: &str = "offline-images-extract-";

/// Whether `id` is one of our lease IDs: `offline-images-PID-N`.
pub fn is_our_lease_id(id: &str) -> bool {
    id.strip_prefix(LEASE_PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(a, b)| digits(a) && digits(b))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The lease an upload of ours was made under: its ref is `LEASE-N`.
pub fn lease_of_upload(reference: &str) -> Option<&str> {
    let (lease, seq) = reference.rsplit_once('-')?;
    (digits(seq) && is_our_lease_id(lease)).then_some(lease)
}

/// The lease an unpack of ours prepared the snapshot `key` under:
/// `offline-images-extract-LEASE sha256:CHAIN`.
pub fn lease_of_snapshot(key: &str) -> Option<&str> {
    let (lease, chain) = key.strip_prefix(EXTRACT_PREFIX)?.split_once(' ')?;
    let hex = chain.strip_prefix("sha256:")?;
    let chain_ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (chain_ok && is_our_lease_id(lease)).then_some(lease)
}

/// What containerd holds that may be ours, as listed once.
struct Seen {
    leases: Vec<Lease>,
    uploads: Vec<Status>,
    /// Keys of the snapshots of unpacks of ours, in the run's snapshotter.
    snapshots: Vec<String>,
}

impl Native {
    /// [`crate::runtime::Runtime::reclaim`] for containerd: see the module doc.
    pub(super) fn reclaim_leftovers(&self) -> Result<Vec<Leftover>> {
        self.reachable()?;
        let Some(me) = self.owner.clone() else {
            return Ok(vec![Leftover::Kept(
                "whatever earlier runs left: this process cannot read its own identity in \
                 /proc, so no lease can be told to be a dead run's"
                    .into(),
            )]);
        };
        let (_, exclusive) = self.hold_presence(true);
        let found = self.look().map(|seen| {
            let viewer = Viewer {
                me: &me,
                own_proc: owner::own_proc(),
                exclusive,
            };
            self.reclaim_seen(&seen, &viewer)
        });
        self.share_presence();
        found
    }

    fn look(&self) -> Result<Seen> {
        // Uploads and snapshots first: one whose lease is absent from a listing made after
        // it is an orphan (a lease is made before what it holds, and deleted after).
        let uploads = self.uploads()?;
        let snapshots = self.extract_snapshots()?;
        let leases = self.leases(None)?;
        Ok(Seen {
            leases,
            uploads,
            snapshots,
        })
    }

    fn reclaim_seen(&self, seen: &Seen, viewer: &Viewer<'_>) -> Vec<Leftover> {
        let mut out = Vec::new();
        for lease in &seen.leases {
            let Some(owner) = Owner::from_labels(&lease.labels) else {
                continue;
            };
            if !is_our_lease_id(&lease.id) {
                continue;
            }
            let who = who(lease, &owner);
            match judge(&owner, viewer, owner::proc_stat) {
                Verdict::Alive => {}
                Verdict::Unknown(why) => out.push(Leftover::Kept(format!(
                    "lease {who}: {why}; it expires at {}",
                    expiry(lease)
                ))),
                Verdict::Gone(why) => self.remove_lease(seen, &lease.id, &who, &why, &mut out),
            }
        }
        self.remove_orphans(seen, &mut out);
        out
    }

    /// A dead run's lease: its uploads aborted first, then the lease, with what only it held,
    /// then any snapshot of its unpack that containerd did not collect with it.
    fn remove_lease(&self, seen: &Seen, id: &str, who: &str, why: &str, out: &mut Vec<Leftover>) {
        for up in seen
            .uploads
            .iter()
            .filter(|u| lease_of_upload(&u.r#ref) == Some(id))
        {
            out.push(self.abort(up, &format!("made under lease {id}")));
        }
        match self.delete_lease(id, true) {
            Ok(()) => out.push(Leftover::Removed(format!(
                "lease {who}, left by a run that was killed ({why}), and what only it held"
            ))),
            Err(e) => {
                out.push(Leftover::Failed(format!("lease {who}: {e:#}")));
                return;
            }
        }
        for key in seen
            .snapshots
            .iter()
            .filter(|k| lease_of_snapshot(k) == Some(id))
        {
            out.push(self.remove_snapshot(key, true));
        }
    }

    /// Uploads and snapshots of ours whose lease is gone: expired, or deleted while they
    /// stayed.
    fn remove_orphans(&self, seen: &Seen, out: &mut Vec<Leftover>) {
        let listed = |id: &str| seen.leases.iter().any(|l| l.id == id);
        let gone = |id: &str| !listed(id) && matches!(self.leases(Some(id)), Ok(l) if l.is_empty());
        for up in &seen.uploads {
            if let Some(id) = lease_of_upload(&up.r#ref).filter(|id| gone(id)) {
                out.push(self.abort(up, &format!("whose lease {id} is gone")));
            }
        }
        for key in &seen.snapshots {
            if lease_of_snapshot(key).is_some_and(gone) {
                out.push(self.remove_snapshot(key, false));
            }
        }
    }

    fn abort(&self, up: &Status, how: &str) -> Leftover {
        let what = format!(
            "partial upload {} ({} of {} written), {how}",
            up.r#ref,
            human_bytes(up.offset.max(0) as u64),
            human_bytes(up.total.max(0) as u64)
        );
        match abort_upload(&self.conn, &up.r#ref) {
            Ok(_) => Leftover::Removed(what),
            Err(e) => Leftover::Failed(format!("{what}: {:#}", anyhow::Error::from(e))),
        }
    }

    /// Remove the snapshot `key` of an interrupted unpack if it is still there; `with_lease`:
    /// its lease was just deleted, which usually takes it.
    fn remove_snapshot(&self, key: &str, with_lease: bool) -> Leftover {
        let what = format!(
            "snapshot \"{key}\" in {} (a layer an interrupted run was unpacking)",
            self.snapshotter
        );
        match snapshot_exists(&self.conn, &self.snapshotter, key) {
            Ok(false) if with_lease => return Leftover::Removed(format!("{what}, with its lease")),
            Ok(false) => return Leftover::Removed(what),
            Ok(true) => {}
            Err(e) => return Leftover::Failed(format!("{what}: {e:#}")),
        }
        let mut snapshots = SnapshotsClient::new(self.conn.channel.clone());
        let req = self.conn.req(
            RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
            },
            None,
        );
        match self.conn.call("removing a snapshot", snapshots.remove(req)) {
            Ok(_) | Err(CallError::NotFound(_)) => Leftover::Removed(what),
            Err(e) => Leftover::Failed(format!("{what}: {:#}", anyhow::Error::from(e))),
        }
    }

    /// The leases of the namespace; with `id`, that one alone if it exists.
    fn leases(&self, id: Option<&str>) -> Result<Vec<Lease>> {
        let mut leases = LeasesClient::new(self.conn.channel.clone());
        let filters = id.map(|id| vec![format!("id=={id}")]).unwrap_or_default();
        let req = self.conn.req(ListRequest { filters }, None);
        let list = self
            .conn
            .call("listing leases", leases.list(req))
            .map_err(anyhow::Error::from)?;
        Ok(list.leases)
    }

    /// The uploads in progress in the namespace that are ours by name.
    fn uploads(&self) -> Result<Vec<Status>> {
        let mut content = ContentClient::new(self.conn.channel.clone());
        let req = self.conn.req(ListStatusesRequest { filters: vec![] }, None);
        let list = self
            .conn
            .call("listing uploads in progress", content.list_statuses(req))
            .map_err(anyhow::Error::from)?;
        Ok(list
            .statuses
            .into_iter()
            .filter(|s| lease_of_upload(&s.r#ref).is_some())
            .collect())
    }

    /// The keys of the snapshots of unpacks of ours in the run's snapshotter.
    fn extract_snapshots(&self) -> Result<Vec<String>> {
        let mut client = SnapshotsClient::new(self.conn.channel.clone());
        let req = self.conn.req(
            ListSnapshotsRequest {
                snapshotter: self.snapshotter.clone(),
                filters: vec![],
            },
            None,
        );
        let keys = self.conn.call("listing snapshots", async {
            let mut stream = client.list(req).await?.into_inner();
            let mut keys = Vec::new();
            while let Some(m) = stream.message().await? {
                keys.extend(
                    m.info
                        .into_iter()
                        .map(|i| i.name)
                        .filter(|k| lease_of_snapshot(k).is_some()),
                );
            }
            Ok(tonic::Response::new(keys))
        });
        keys.map_err(anyhow::Error::from)
    }
}

/// When containerd drops `lease` on its own: its `containerd.io/gc.expire` label, shown only
/// when it is a plain RFC 3339 time (a label is anyone's to write).
fn expiry(lease: &Lease) -> &str {
    match lease.labels.get("containerd.io/gc.expire") {
        Some(t)
            if t.len() <= 40
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || b"TZ:.+-".contains(&b)) =>
        {
            t
        }
        Some(_) => "a time its label does not say plainly",
        None => "no set time",
    }
}

/// "offline-images-1-2 (made 2026-01-02T03:04:05Z by pid 1 on node-1)", for the log.
fn who(lease: &Lease, owner: &Owner) -> String {
    let made = lease
        .created_at
        .as_ref()
        .map(|t| super::rfc3339(t.seconds.max(0) as u64))
        .unwrap_or_default();
    format!("{} (made {made} by {})", lease.id, owner.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_ours() {
        assert!(is_our_lease_id("offline-images-17840-201831112377"));
        for foreign in [
            "offline-images-17840",
            "offline-images-a-1",
            "offline-images-1-2-3",
            "offline-images--1",
            "offline-images-1-2 ",
            "my-offline-images-1-2",
            "k8s.io-1",
        ] {
            assert!(!is_our_lease_id(foreign), "{foreign}");
        }
        assert_eq!(
            lease_of_upload("offline-images-1-2-3"),
            Some("offline-images-1-2")
        );
        assert_eq!(lease_of_upload("offline-images-1-2"), None);
        assert_eq!(lease_of_upload("offline-images-1-2-x"), None);
        assert_eq!(lease_of_upload("tar-repositories"), None);
        let chain = format!("sha256:{}", "ab".repeat(32));
        let key = format!("offline-images-extract-offline-images-1-2 {chain}");
        assert_eq!(lease_of_snapshot(&key), Some("offline-images-1-2"));
        assert_eq!(lease_of_snapshot(&format!("extract-1-2 {chain}")), None);
        assert_eq!(lease_of_snapshot(&key.replace(' ', "-")), None);
        assert_eq!(lease_of_snapshot(&key[..key.len() - 1]), None);
    }
}
