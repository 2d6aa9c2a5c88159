//! The connection to containerd: one HTTP/2 channel on the unix socket, driven by a one-worker
//! tokio runtime, and the few calls the backend makes, each bounded in time.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{anyhow, Result};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    Info, InfoRequest, ListContentRequest, WriteContentRequest, WriteContentResponse,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::failure::{Failure, Kind};
use crate::runtime::{socket, Unreachable};

/// Bytes per `Content.Write` message: large enough that framing costs nothing, well under
/// containerd's 16 MiB message limit.
pub const CHUNK: usize = 1 << 20;

/// How long a short call (info, stat, create, update) may take.
const SHORT: Duration = Duration::from_secs(60);

/// How long a long call (applying a layer, committing a large blob) may take.
const LONG: Duration = Duration::from_secs(3600);

/// A write that makes no progress for this long has stalled.
const STALL: Duration = Duration::from_secs(120);

/// HTTP/2 pings, for a connection left half-open. No more often than containerd's gRPC server
/// allows: it sets no keep-alive policy, so grpc-go's default applies (one ping per 5 minutes
/// while it sends nothing; the third ping sooner ends the connection with GOAWAY
/// `too_many_pings`). Pinging every few seconds cut every layer whose unpack took longer than
/// about 20 s. See docs/ARCHITECTURE.md, "Liveness by asking, not by pinging".
const PING_EVERY: Duration = Duration::from_secs(330);
const PING_WAIT: Duration = Duration::from_secs(20);

/// While a long call runs (a layer applied, a large blob committed), containerd is asked its
/// version this often: its answer shows it is alive, and is data that keeps pings allowed.
const BEAT_EVERY: Duration = Duration::from_secs(15);

/// A version query unanswered for this long: containerd has stopped answering.
const BEAT_WAIT: Duration = Duration::from_secs(60);

/// How a watched wait ended.
enum Waited<T> {
    Done(T),
    /// Past its time limit.
    Late,
    /// containerd stopped answering its version query meanwhile.
    Silent,
}

pub struct Conn {
    rt: tokio::runtime::Runtime,
    pub channel: Channel,
    pub socket: PathBuf,
    pub namespace: String,
    /// containerd's content store as seen from here, when it can be: an upload is abandoned
    /// while the disk still has room for containerd to record that (see [`RESERVE`]).
    pub guard: Option<PathBuf>,
}

/// An upload stops when less than this is left on the disk of containerd's content store: a
/// disk filled to the last byte leaves containerd unable to write its metadata database, so
/// it could not even record that the partial upload is to be removed.
pub const RESERVE: u64 = 8 << 20;

/// What a `Content.Write` ended with.
pub struct Written {
    pub digest: String,
    /// The first bytes of the data (to tell a compressed layer from a plain tar).
    pub head: Vec<u8>,
    /// The blob was already in the content store: nothing was kept of what was sent.
    pub existed: bool,
}

impl Conn {
    pub fn open(socket: &Path, namespace: &str) -> Result<Conn> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("containerd-grpc")
            .enable_all()
            .build()
            .map_err(|e| anyhow!("cannot start the gRPC runtime: {e}"))?;
        let path = socket.to_path_buf();
        let endpoint = Endpoint::from_static("http://[::]")
            .http2_keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(PING_WAIT)
            .keep_alive_while_idle(false)
            .connect_timeout(SHORT);
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }));
        let channel = rt
            .block_on(async { tokio::time::timeout(SHORT, connect).await })
            .map_err(|_| unreachable(socket, "did not accept a connection"))?
            .map_err(|e| unreachable(socket, &format!("refused the connection ({e})")))?;
        Ok(Conn {
            rt,
            channel,
            socket: socket.to_path_buf(),
            namespace: namespace.to_string(),
            guard: None,
        })
    }

    /// A request in this namespace, under `lease` when given.
    pub fn req<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        let md = req.metadata_mut();
        if let Ok(ns) = self.namespace.parse() {
            md.insert("containerd-namespace", ns);
        }
        if let Some(Ok(l)) = lease.map(str::parse) {
            md.insert("containerd-lease", l);
        }
        req
    }

    /// Run one call to its end, bounded by [`SHORT`]; `what` names it in errors.
    pub fn call<T, F>(&self, what: &str, fut: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_within(SHORT, what, fut)
    }

    /// Every blob of the content store (`Content.List`, a stream), with its size and labels.
    pub fn list_content(&self) -> Result<Vec<Info>, CallError> {
        let mut content = ContentClient::new(self.channel.clone());
        let req = self.req(ListContentRequest { filters: vec![] }, None);
        self.call("listing content", async {
            let mut stream = content.list(req).await?.into_inner();
            let mut all = Vec::new();
            while let Some(m) = stream.message().await? {
                all.extend(m.info);
            }
            Ok(tonic::Response::new(all))
        })
    }

    /// The size of blob `digest` in the content store (`Content.Info`), if it is there.
    pub fn content_size(&self, digest: &str) -> Result<Option<u64>, CallError> {
        let mut content = ContentClient::new(self.channel.clone());
        let req = self.req(
            InfoRequest {
                digest: digest.to_string(),
            },
            None,
        );
        match self.call("a content lookup", content.info(req)) {
            Ok(r) => Ok(Some(r.info.map_or(0, |i| i.size.max(0) as u64))),
            Err(CallError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Conn::call`] for a call that may take long (a layer applied).
    pub fn call_long<T, F>(&self, what: &str, fut: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_within(LONG, what, fut)
    }

    fn call_within<T, F>(&self, limit: Duration, what: &str, fut: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match self.rt.block_on(self.watched(limit, fut)) {
            Waited::Late => Err(CallError::Other(self.stopped_answering(what, limit))),
            Waited::Silent => Err(CallError::Other(self.stopped_answering(what, BEAT_WAIT))),
            Waited::Done(Err(status)) => Err(self.classify(what, status)),
            Waited::Done(Ok(resp)) => Ok(resp.into_inner()),
        }
    }

    /// Wait for `fut` for at most `limit`; past [`BEAT_EVERY`], ask containerd for its
    /// version every [`BEAT_EVERY`] and give up when it does not answer within [`BEAT_WAIT`].
    async fn watched<F: Future>(&self, limit: Duration, fut: F) -> Waited<F::Output> {
        let start = tokio::time::Instant::now();
        let deadline = tokio::time::sleep(limit);
        let mut beat = tokio::time::interval_at(start + BEAT_EVERY, BEAT_EVERY);
        tokio::pin!(fut, deadline);
        loop {
            tokio::select! {
                out = &mut fut => return Waited::Done(out),
                _ = &mut deadline => return Waited::Late,
                _ = beat.tick() => {
                    let mut version = VersionClient::new(self.channel.clone());
                    let asked = version.version(self.req((), None));
                    // An error answer is an answer: the call itself reports a lost connection.
                    if tokio::time::timeout(BEAT_WAIT, asked).await.is_err() {
                        return Waited::Silent;
                    }
                }
            }
        }
    }

    fn stopped_answering(&self, what: &str, limit: Duration) -> anyhow::Error {
        anyhow!(
            "containerd at {} did not answer {what} within {} s (is it frozen or overloaded?); \
             nothing of this archive was kept, run the import again",
            self.socket.display(),
            limit.as_secs()
        )
    }

    /// What a failed call means for the import: decided by the gRPC code and by where the
    /// status came from ([`Cause::of`]), the socket probed when that leaves a doubt.
    pub fn classify(&self, what: &str, status: Status) -> CallError {
        let msg = status.message().to_string();
        let lost = match Cause::of(&status) {
            Cause::Missing => return CallError::NotFound(msg),
            Cause::Exists => return CallError::Exists(msg),
            Cause::DiskFull => {
                return CallError::Other(Failure::error(
                    Kind::Disk,
                    format!(
                        "the disk holding containerd's root is full (no space left on device) \
                         during {what}: the upload was abandoned; free space on the node and run \
                         the import again"
                    ),
                ))
            }
            Cause::Lost => true,
            // A call cut short without a word from containerd (a stream that ended without its
            // status): lost if the socket no longer answers.
            Cause::Unsure => socket::probe_socket(&self.socket).is_some(),
            Cause::Refused => false,
        };
        if !lost {
            return CallError::Other(anyhow!("containerd refused {what}: {msg}"));
        }
        // Not worth a retry within this run: containerd went away in the middle of the
        // archive, and what comes back may be a containerd being shut down for good.
        if let Some(problem) = socket::probe_socket(&self.socket) {
            return CallError::Other(Failure::error(
                Kind::Unreachable,
                format!(
                    "containerd at {} went away during {what} (its socket {problem}); nothing of \
                     this archive was kept, run the import again once containerd is back",
                    self.socket.display()
                ),
            ));
        }
        CallError::Other(Failure::error(
            Kind::Unreachable,
            format!(
                "containerd at {} closed the connection during {what} (was it restarted or \
                 killed?); nothing of this archive was kept, run the import again: {msg}",
                self.socket.display()
            ),
        ))
    }

    /// Open a `Content.Write` call: the sender of its messages, the call (its last answer),
    /// and a signal that the call has ended.
    #[allow(clippy::type_complexity)]
    fn start_write(
        &self,
        lease: &str,
    ) -> (
        mpsc::Sender<WriteContentRequest>,
        tokio::task::JoinHandle<Result<Option<WriteContentResponse>, Status>>,
        oneshot::Receiver<()>,
    ) {
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let mut client = ContentClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let req = self.req(Chunks(rx), Some(lease));
        let task = self.rt.spawn(async move {
            let out = async {
                let mut stream = client.write(req).await?.into_inner();
                let mut last = None;
                while let Some(m) = stream.message().await? {
                    last = Some(m);
                }
                Ok::<_, Status>(last)
            }
            .await;
            let _ = done_tx.send(());
            out
        });
        (tx, task, done_rx)
    }

    /// Stream `size` bytes of `src` into the content store with `Content.Write` under
    /// `lease`, as `reference` (`label` names it in errors). With `expected`, containerd checks the digest; without it, the
    /// data is hashed here while it is sent and committed under the digest found.
    pub fn write(
        &self,
        lease: &str,
        (reference, label): (&str, &str),
        expected: Option<&str>,
        size: u64,
        src: &mut dyn Read,
    ) -> Result<Written> {
        let what = format!("the upload of {label}");
        let (tx, task, done_rx) = self.start_write(lease);
        let mut feed = Feed {
            reference,
            label,
            expected,
            size,
            hasher: expected.is_none().then(Sha256::new),
            head: Vec::new(),
            offset: 0,
            digest: String::new(),
        };
        let fed = feed.run(self, src, tx, done_rx);
        if let Err(e) = fed {
            return Err(match e {
                Fed::Read(e) => {
                    // The stream has ended without a commit: let containerd close the upload
                    // (and release its lock) before it is abandoned.
                    let _ = self.rt.block_on(async {
                        tokio::time::timeout(Duration::from_secs(10), task).await
                    });
                    e
                }
                Fed::Stalled => {
                    task.abort();
                    self.stopped_answering(&what, STALL)
                }
            });
        }
        let result = match self.rt.block_on(self.watched(LONG, task)) {
            Waited::Late => return Err(self.stopped_answering(&what, LONG)),
            Waited::Silent => return Err(self.stopped_answering(&what, BEAT_WAIT)),
            Waited::Done(Err(join)) => return Err(anyhow!("{what} was cut short: {join}")),
            Waited::Done(Ok(r)) => r,
        };
        let (offset, head) = (feed.offset, std::mem::take(&mut feed.head));
        match result {
            Ok(Some(last)) if offset == size => Ok(Written {
                digest: last.digest,
                head,
                existed: false,
            }),
            Ok(_) => Err(anyhow!(
                "containerd ended {what} before all of it was sent ({offset} of {size} bytes)"
            )),
            Err(status) => match self.classify(&what, status) {
                CallError::Exists(_) if !feed.digest.is_empty() => Ok(Written {
                    digest: feed.digest,
                    head,
                    existed: true,
                }),
                e => Err(e.into()),
            },
        }
    }
}

/// Where a failed call's status came from, as [`Conn::classify`] needs to know it.
#[derive(Debug, PartialEq, Eq)]
enum Cause {
    /// containerd said NOT_FOUND.
    Missing,
    /// containerd said ALREADY_EXISTS.
    Exists,
    /// containerd's disk is full.
    DiskFull,
    /// The connection failed on our side of the socket, or the call was UNAVAILABLE.
    Lost,
    /// UNKNOWN or CANCELLED with no transport error behind it: containerd's answer, or a
    /// stream that ended without one.
    Unsure,
    /// Any other answer of containerd's.
    Refused,
}

impl Cause {
    fn of(status: &Status) -> Cause {
        match status.code() {
            Code::NotFound => return Cause::Missing,
            Code::AlreadyExists => return Cause::Exists,
            _ => {}
        }
        if containerd_says_disk_full(status) {
            return Cause::DiskFull;
        }
        // tonic makes a status out of a failure of its own transport (hyper, h2, std::io:
        // the connection reset, closed, or its keep-alive ping unanswered) and keeps that
        // error as the status's source; a status containerd sent has no source. UNAVAILABLE
        // is gRPC's code for a service that is not there now (tonic's too, for a failed
        // connect or an expired ping).
        if transport_error(status).is_some() || status.code() == Code::Unavailable {
            return Cause::Lost;
        }
        match status.code() {
            Code::Unknown | Code::Cancelled => Cause::Unsure,
            _ => Cause::Refused,
        }
    }
}

/// The error of tonic's own transport behind a status, if it has one: the status's source
/// chain, walked down to a `std::io::Error` when there is one.
fn transport_error(status: &Status) -> Option<&(dyn std::error::Error + 'static)> {
    let first = std::error::Error::source(status)?;
    let mut deepest = first;
    let mut next = Some(first);
    while let Some(e) = next {
        if e.is::<std::io::Error>() {
            return Some(e);
        }
        deepest = e;
        next = e.source();
    }
    Some(deepest)
}

/// The one place where the native client reads containerd's words, as the ctr reader
/// (`runtime/ctr/said.rs`) is for ctr's. containerd answers a write that hit ENOSPC with
/// gRPC code UNKNOWN and the Go error's text (its errdefs has no code for a full disk), so
/// only the text tells a full disk from any other failure. Everything else is decided by
/// codes and error types (docs/ARCHITECTURE.md, "Decisions and their reasons").
fn containerd_says_disk_full(status: &Status) -> bool {
    transport_error(status).is_none() && status.message().contains("no space left on device")
}

/// Why feeding a write stopped early.
enum Fed {
    Read(anyhow::Error),
    Stalled,
}

impl Feed<'_> {
    fn check_room(&self, conn: &Conn) -> Result<(), Fed> {
        let Some(path) = &conn.guard else {
            return Ok(());
        };
        match super::disk::available(path) {
            Some(left) if left < RESERVE => Err(Fed::Read(Failure::error(
                Kind::Disk,
                format!(
                    "the disk holding containerd's root is nearly full ({} left on the \
                     filesystem of {}) during the upload of {}: the upload was abandoned while \
                     containerd could still record it; free space on the node and run the \
                     import again",
                    crate::archive::human_bytes(left),
                    path.display(),
                    self.label
                ),
            ))),
            _ => Ok(()),
        }
    }
}

/// The sending side of one `Content.Write`.
struct Feed<'a> {
    reference: &'a str,
    label: &'a str,
    expected: Option<&'a str>,
    size: u64,
    hasher: Option<Sha256>,
    head: Vec<u8>,
    offset: u64,
    /// The digest committed under (known once the last message is built).
    digest: String,
}

impl Feed<'_> {
    /// Send `src` in [`CHUNK`]s, the last one with the commit, until containerd stops taking
    /// them (`done`: the call ended, its result says why).
    fn run(
        &mut self,
        conn: &Conn,
        src: &mut dyn Read,
        tx: mpsc::Sender<WriteContentRequest>,
        mut done: oneshot::Receiver<()>,
    ) -> Result<(), Fed> {
        if let Some(e) = self.expected {
            self.digest = e.to_string();
        }
        loop {
            // Before every chunk: a `statvfs` costs next to nothing beside 1 MiB sent.
            self.check_room(conn)?;
            let mut buf = vec![0u8; CHUNK];
            let n = read_full(src, &mut buf).map_err(Fed::Read)?;
            buf.truncate(n);
            if self.head.is_empty() {
                self.head = buf[..n.min(8)].to_vec();
            }
            if let Some(h) = self.hasher.as_mut() {
                h.update(&buf);
            }
            let last = n < CHUNK || self.offset + n as u64 >= self.size;
            let mut msg = WriteContentRequest {
                action: 1,
                offset: self.offset as i64,
                data: buf,
                ..Default::default()
            };
            if self.offset == 0 {
                msg.r#ref = self.reference.to_string();
                msg.total = self.size as i64;
                msg.expected = self.expected.unwrap_or("").to_string();
            }
            self.offset += n as u64;
            if last {
                if self.offset != self.size {
                    return Err(Fed::Read(anyhow!(
                        "the tar stream is truncated: an entry has {} of its {} bytes",
                        self.offset,
                        self.size
                    )));
                }
                if let Some(h) = self.hasher.take() {
                    self.digest = format!("sha256:{}", crate::digest::hex(&h.finalize()));
                }
                msg.action = 2;
                msg.total = self.size as i64;
                msg.expected = self.digest.clone();
            }
            let mut stalled = false;
            let sent = conn.rt.block_on(async {
                tokio::select! {
                    r = tx.send(msg) => r.is_ok(),
                    _ = &mut done => false,
                    _ = tokio::time::sleep(STALL) => { stalled = true; false }
                }
            });
            if stalled {
                return Err(Fed::Stalled);
            }
            if !sent || last {
                return Ok(());
            }
        }
    }
}

/// Fill `buf` as far as the stream goes.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The archive reader says what is wrong with the archive, as every backend reports it.
            Err(e) => return Err(anyhow::Error::new(e)),
        }
    }
    Ok(n)
}

fn unreachable(socket: &Path, problem: &str) -> anyhow::Error {
    let problem = socket::probe_socket(socket).unwrap_or_else(|| problem.to_string());
    Unreachable(format!("containerd socket {} {problem}", socket.display())).into()
}

/// The messages of one `Content.Write`, as a stream for tonic.
struct Chunks(mpsc::Receiver<WriteContentRequest>);

impl futures_core::Stream for Chunks {
    type Item = WriteContentRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A failed call, as the backend branches on it.
#[derive(Debug)]
pub enum CallError {
    NotFound(String),
    Exists(String),
    Other(anyhow::Error),
}

impl From<CallError> for anyhow::Error {
    fn from(e: CallError) -> anyhow::Error {
        match e {
            CallError::NotFound(m) => anyhow!("not found: {m}"),
            CallError::Exists(m) => anyhow!("already exists: {m}"),
            CallError::Other(e) => e,
        }
    }
}

/// Labels as a field mask's paths: `labels.KEY` for each key.
pub fn label_paths(labels: &HashMap<String, String>) -> Vec<String> {
    labels.keys().map(|k| format!("labels.{k}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_classified_by_its_code_and_its_source_not_its_text() {
        assert_eq!(Cause::of(&Status::not_found("x")), Cause::Missing);
        assert_eq!(Cause::of(&Status::already_exists("x")), Cause::Exists);
        // Words that once meant "connection lost" no longer decide anything: containerd's
        // own answer stays containerd's answer.
        let said = Status::new(Code::Unknown, "connection to the transport: broken pipe");
        assert_eq!(Cause::of(&said), Cause::Unsure);
        let said = Status::failed_precondition("transport h2 protocol keep-alive");
        assert_eq!(Cause::of(&said), Cause::Refused);
        assert_eq!(Cause::of(&Status::unavailable("")), Cause::Lost);
    }

    #[test]
    fn a_status_tonic_made_from_a_transport_error_is_a_lost_connection() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe");
        let status = Status::from_error(Box::new(io));
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(Cause::of(&status), Cause::Lost);
        assert!(transport_error(&status).is_some_and(|e| e.is::<std::io::Error>()));
        // ENOSPC text in a local error is not containerd's full disk.
        let io = std::io::Error::other("no space left on device");
        assert_eq!(Cause::of(&Status::from_error(Box::new(io))), Cause::Lost);
    }

    #[test]
    fn containerd_saying_its_disk_is_full_is_a_disk_failure() {
        let status = Status::unknown(
            "failed to copy: write /var/lib/containerd/ingest/x/data: no space left on device",
        );
        assert_eq!(Cause::of(&status), Cause::DiskFull);
    }
}
