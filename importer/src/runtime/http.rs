//! A small HTTP/1.1 client over a unix socket, enough for a daemon's local API.
//!
//! One request per connection (`Connection: close`), request bodies sent with
//! `Content-Length` or `Transfer-Encoding: chunked`, response bodies read by `Content-Length`,
//! chunked encoding, or until the daemon closes. The status line, headers, chunk sizes and
//! trailers are parsed by `httparse` (hyper's parser, already in the binary through the gRPC
//! client); connections, timeouts and bounds are ours, on std.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::Unreachable;

/// Longest status or header line accepted from the daemon.
const MAX_LINE: usize = 16 * 1024;
/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 200;

/// Where a daemon listens, and how long to wait for it.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    /// What to call the daemon in messages, e.g. `Docker`.
    peer: &'static str,
    pub connect_timeout: Duration,
    /// For the status line and headers of a response (unless a request says otherwise), and
    /// for each read of a small response's body.
    pub header_timeout: Duration,
}

/// What to wait for the answer to a request.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// The client's header timeout, for the headers and each read of the body.
    Short,
    /// No limit: the daemon answers only when a long job (a load) is done.
    Unlimited,
}

/// A response whose headers have been read; the body is read from `body`.
pub struct Response {
    pub status: u16,
    pub reason: String,
    headers: Vec<(String, String)>,
    pub body: Body,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.reason)
    }
}

impl Response {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole body, up to `max` bytes (the rest is not read), as text for a message.
    pub fn text(&mut self, max: u64) -> Result<String> {
        let mut buf = Vec::new();
        (&mut self.body)
            .take(max)
            .read_to_end(&mut buf)
            .map_err(|e| anyhow!("reading the answer's body: {e}"))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

impl Client {
    pub fn new(socket: &Path, peer: &'static str) -> Client {
        Client {
            socket: socket.to_path_buf(),
            peer,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(60),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `what` for messages: `Docker at /run/docker.sock`.
    pub fn describe_peer(&self) -> String {
        format!("{} at {}", self.peer, self.socket.display())
    }

    /// Connect, within the connect timeout, with errors that say what is wrong with the socket.
    /// A daemon that cannot be reached is [`Unreachable`], which the import retries.
    pub fn connect(&self) -> Result<UnixStream> {
        let path = self.socket.clone();
        let (tx, rx) = mpsc::channel();
        // A unix socket connect does not take a timeout; a thread stands in for one (a daemon
        // whose accept backlog is full leaves connect hanging).
        std::thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let _ = tx.send(UnixStream::connect(&path));
            })
            .context("cannot start a thread to connect")?;
        let peer = self.describe_peer();
        match rx.recv_timeout(self.connect_timeout) {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(Unreachable(format!(
                "cannot connect to {peer}: {}",
                connect_error(&e, self.peer)
            ))
            .into()),
            Err(_) => Err(Unreachable(format!(
                "cannot connect to {peer}: no answer within {}s",
                self.connect_timeout.as_secs()
            ))
            .into()),
        }
    }

    /// A request without a body.
    pub fn get(&self, path: &str) -> Result<Response> {
        let mut conn = self.start("GET", path, &[], None)?;
        conn.flush()?;
        conn.response(Wait::Short)
    }

    /// Start a request; its body (if any) is written to the returned [`Request`], then
    /// [`Request::response`] reads the answer. `body_len`: `Some(n)` for a body of exactly `n`
    /// bytes, `None` for a chunked body (or none at all, for `GET`).
    pub fn start(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_len: Option<u64>,
    ) -> Result<Request> {
        let stream = self.connect()?;
        stream
            .set_write_timeout(Some(self.header_timeout))
            .with_context(|| format!("cannot set a timeout on {}", self.socket.display()))?;
        let chunked = method != "GET" && method != "HEAD" && body_len.is_none();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        head.push_str(concat!(
            "User-Agent: offline-images/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
        head.push_str("Connection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        } else if let Some(n) = body_len {
            head.push_str(&format!("Content-Length: {n}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = Request {
            client: self.clone(),
            stream,
            what: format!("{method} {}", path_only(path)),
            chunked,
            buf: Vec::with_capacity(CHUNK),
        };
        request.send_raw(head.as_bytes())?;
        Ok(request)
    }
}

/// Bytes gathered before one chunk is sent.
const CHUNK: usize = 64 * 1024;

/// A request being sent: write its body, then read the response.
pub struct Request {
    client: Client,
    stream: UnixStream,
    what: String,
    chunked: bool,
    buf: Vec<u8>,
}

impl Request {
    fn send_raw(&mut self, data: &[u8]) -> io::Result<()> {
        send_all(&self.stream, data)
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.chunked {
            let size = format!("{:x}\r\n", self.buf.len());
            send_all(&self.stream, size.as_bytes())?;
            send_all(&self.stream, &self.buf)?;
            send_all(&self.stream, b"\r\n")?;
        } else {
            send_all(&self.stream, &self.buf)?;
        }
        self.buf.clear();
        Ok(())
    }

    /// Wait as long as it takes for the daemon to take the body (a large load is read slowly).
    pub fn no_write_timeout(&self) -> Result<()> {
        self.stream
            .set_write_timeout(None)
            .with_context(|| format!("cannot clear the timeout on {}", self.what))
    }

    /// End the body (the last chunk) and read the response.
    pub fn response(mut self, wait: Wait) -> Result<Response> {
        let what = self.what.clone();
        let peer = self.client.describe_peer();
        let sent = self.send_chunk().and_then(|()| {
            if self.chunked {
                send_all(&self.stream, b"0\r\n\r\n")
            } else {
                Ok(())
            }
        });
        match sent {
            Ok(()) => self.read_response(wait),
            // The daemon stopped reading: what it said, if anything, or else the write error.
            Err(e) => self
                .read_response(Wait::Short)
                .map_err(|_| anyhow!("{peer} stopped reading the request ({what}): {e}")),
        }
    }

    /// The daemon stopped taking the body: read what it said, if anything.
    pub fn response_after_failed_write(self) -> Result<Response> {
        self.read_response(Wait::Short)
    }

    fn read_response(self, wait: Wait) -> Result<Response> {
        let peer = self.client.describe_peer();
        let header_timeout = match wait {
            Wait::Short => Some(self.client.header_timeout),
            Wait::Unlimited => None,
        };
        self.stream
            .set_read_timeout(header_timeout)
            .with_context(|| format!("cannot set a timeout on {}", self.client.socket.display()))?;
        let mut reader = BufReader::with_capacity(16 * 1024, self.stream);
        let (status, reason, headers) = loop {
            let head = read_head(&mut reader, &self.client, &self.what)?;
            // An interim answer ("100 Continue", "102 Processing", "103 Early Hints") precedes
            // the real one, on the same connection and maybe in the same read.
            if !(100..200).contains(&head.0) || head.0 == 101 {
                break head;
            }
        };
        let (api, what) = (self.client.peer, self.what);
        // Reading a small body keeps the short timeout; a long job's answer may trickle.
        let find = |n: &str| {
            headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let kind = if status == 204 || status == 304 {
            BodyKind::Length(0)
        } else if find("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            BodyKind::Chunked {
                left: 0,
                done: false,
            }
        } else if let Some(len) = find("Content-Length") {
            let n: u64 = len.parse().map_err(|_| {
                anyhow!("{peer}: not a {api} API: Content-Length {len:?} in the answer to {what}")
            })?;
            BodyKind::Length(n)
        } else {
            BodyKind::Close
        };
        Ok(Response {
            status,
            reason,
            headers,
            body: Body { reader, kind, peer },
        })
    }
}

impl Write for Request {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_chunk()
    }
}

enum BodyKind {
    Length(u64),
    Chunked { left: u64, done: bool },
    Close,
}

/// A response body, decoded from its framing.
pub struct Body {
    reader: BufReader<UnixStream>,
    kind: BodyKind,
    peer: String,
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        match &mut self.kind {
            BodyKind::Close => self.reader.read(out),
            BodyKind::Length(left) => {
                if *left == 0 {
                    return Ok(0);
                }
                let max = (*left).min(out.len() as u64) as usize;
                let n = self.reader.read(&mut out[..max])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} closed the connection before the end of its answer",
                            self.peer
                        ),
                    ));
                }
                *left -= n as u64;
                Ok(n)
            }
            BodyKind::Chunked { left, done } => {
                read_chunked(&mut self.reader, left, done, &self.peer, out)
            }
        }
    }
}

/// Read from a chunked body: the chunk under way (`left` bytes of it to go), the next chunk's
/// size line, and at the end the trailers.
fn read_chunked(
    reader: &mut BufReader<UnixStream>,
    left: &mut u64,
    done: &mut bool,
    peer: &str,
    out: &mut [u8],
) -> io::Result<usize> {
    if *done {
        return Ok(0);
    }
    if *left == 0 {
        let size = chunk_size(reader, peer)?;
        if size == 0 {
            read_trailers(reader, peer)?;
            *done = true;
            return Ok(0);
        }
        *left = size;
    }
    let max = (*left).min(out.len() as u64) as usize;
    let n = reader.read(&mut out[..max])?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} closed the connection in the middle of its answer", peer),
        ));
    }
    *left -= n as u64;
    if *left == 0 {
        let end = read_raw_line(reader)?;
        if !is_blank(&end) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} sent a chunk longer than it announced", peer),
            ));
        }
    }
    Ok(n)
}

fn bad_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The size line of the next chunk (extensions ignored), parsed by `httparse`.
fn chunk_size(reader: &mut BufReader<UnixStream>, peer: &str) -> io::Result<u64> {
    let line = read_raw_line(reader)?;
    match httparse::parse_chunk_size(&line) {
        Ok(httparse::Status::Complete((_, size))) => Ok(size),
        _ => Err(bad_data(format!(
            "{peer} sent a bad chunk size {:?}",
            truncate(String::from_utf8_lossy(&line).trim_end(), 60)
        ))),
    }
}

/// The trailers after the last chunk, up to the blank line: read with the bounds of a head
/// (lines of at most [`MAX_LINE`] bytes, at most [`MAX_HEADERS`] of them), checked by
/// `httparse` and dropped (no answer of a daemon's API carries one we need).
fn read_trailers(reader: &mut BufReader<UnixStream>, peer: &str) -> io::Result<()> {
    let mut raw = Vec::new();
    if !read_field_lines(reader, &mut raw)? {
        return Err(bad_data(format!(
            "{peer} sent more than {MAX_HEADERS} trailer lines"
        )));
    }
    let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(&raw, &mut trailers) {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(bad_data(format!("{peer} sent partial trailers"))),
        Err(e) => Err(bad_data(format!("{peer} sent bad trailers: {e}"))),
    }
}

impl Body {
    /// Read the rest of the body line by line (lines up to `max_line` bytes; longer ones are
    /// cut), calling `f` on each line without its line ending.
    pub fn for_each_line(
        &mut self,
        max_line: usize,
        mut f: impl FnMut(&str) -> Result<()>,
    ) -> io::Result<Result<()>> {
        let mut line = Vec::new();
        let mut byte_buf = [0u8; 8192];
        loop {
            let n = self.read(&mut byte_buf)?;
            if n == 0 {
                break;
            }
            for &b in &byte_buf[..n] {
                if b == b'\n' {
                    let text = String::from_utf8_lossy(&line);
                    if let Err(e) = f(text.trim_end_matches('\r')) {
                        return Ok(Err(e));
                    }
                    line.clear();
                } else if line.len() < max_line {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            let text = String::from_utf8_lossy(&line);
            return Ok(f(text.trim_end_matches('\r')));
        }
        Ok(Ok(()))
    }
}

/// The status line and headers of one answer: (status, reason, headers).
type Head = (u16, String, Vec<(String, String)>);

/// Read one answer's head line by line (each line bounded, at most [`MAX_HEADERS`] headers)
/// and parse it with `httparse`, which owns the HTTP/1.1 grammar.
fn read_head(reader: &mut BufReader<UnixStream>, client: &Client, what: &str) -> Result<Head> {
    let peer = client.describe_peer();
    let api = client.peer;
    let mut raw = read_raw_line(reader).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => anyhow!(
            "{peer} did not answer {what} within {}s",
            client.header_timeout.as_secs()
        ),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => anyhow!(
            "{peer}: not a {api} API: it {} the connection without an HTTP answer to {what}",
            if e.kind() == io::ErrorKind::ConnectionReset {
                "reset"
            } else {
                "closed"
            }
        ),
        _ => anyhow!("{peer}: reading the answer to {what}: {e}"),
    })?;
    let status_line = String::from_utf8_lossy(&raw).trim_end().to_string();
    let not_http = || {
        anyhow!(
            "{peer}: not a {api} API: it answered {what} with {:?}",
            truncate(&status_line, 120)
        )
    };
    // The status line alone is a partial head to httparse, or an error if it is not HTTP:
    // a socket that speaks something else is named before any further read.
    let mut none = [];
    if httparse::Response::new(&mut none).parse(&raw).is_err() {
        return Err(not_http());
    }
    let complete = read_field_lines(reader, &mut raw)
        .map_err(|e| anyhow!("{peer}: reading the headers of the answer to {what}: {e}"))?;
    if !complete {
        bail!(
            "{peer}: not a {api} API: more than {MAX_HEADERS} header lines in the answer to {what}"
        );
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    match head.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(not_http()),
        Err(e) => bail!("{peer}: not a {api} API: {e} in the answer to {what}"),
    }
    let status = head
        .code
        .filter(|s| (100..600).contains(s))
        .ok_or_else(not_http)?;
    let reason = head.reason.unwrap_or("").to_string();
    let headers = head
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).trim().to_string();
            (h.name.to_string(), value)
        })
        .collect();
    Ok((status, reason, headers))
}

/// Header (or trailer) lines up to and including the blank line, appended to `raw`; false
/// when there are more than [`MAX_HEADERS`] of them (reading stops there).
fn read_field_lines<R: BufRead>(r: &mut R, raw: &mut Vec<u8>) -> io::Result<bool> {
    for _ in 0..=MAX_HEADERS {
        let line = read_raw_line(r)?;
        raw.extend_from_slice(&line);
        if is_blank(&line) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\r\n" || line == b"\n"
}

/// One line with its ending (LF or CRLF); at most [`MAX_LINE`] bytes.
fn read_raw_line<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed",
        ));
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE} bytes"),
            ));
        }
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed in the middle of a line",
        ));
    }
    Ok(buf)
}

/// Write everything. A daemon that hangs up gives an error (EPIPE), not a SIGPIPE that ends
/// the process: Rust's runtime ignores SIGPIPE before `main` (and restores it for children).
fn send_all(mut stream: &UnixStream, data: &[u8]) -> io::Result<()> {
    stream.write_all(data)
}

fn connect_error(e: &io::Error, peer: &str) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => {
            format!("no such socket (is {peer} running, and is this its socket?)")
        }
        io::ErrorKind::ConnectionRefused => {
            format!("connection refused (nothing listens on the socket: is {peer} running?)")
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied (the importer must run as root or in the socket's group)".into()
        }
        _ if e.raw_os_error() == Some(libc::ENOTSOCK) => "it is not a socket".into(),
        _ => e.to_string(),
    }
}

fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fresh directory for test sockets, removed when dropped.
    pub(crate) struct SocketDir(pub PathBuf);

    impl SocketDir {
        pub(crate) fn new(label: &str) -> SocketDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "oi-{label}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            SocketDir(dir)
        }
    }

    impl Drop for SocketDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A listener that answers every connection with `answer`, after reading the request.
    fn serve(
        answer: impl AsRef<[u8]> + Send + 'static,
    ) -> (SocketDir, PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        let dir = SocketDir::new("http");
        let path = dir.0.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the end of the head and, when chunked, the last chunk.
            loop {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req);
                let head_done = text.contains("\r\n\r\n");
                let chunked = text.contains("Transfer-Encoding: chunked");
                if n == 0 || (head_done && (!chunked || text.ends_with("0\r\n\r\n"))) {
                    break;
                }
            }
            s.write_all(answer.as_ref()).unwrap();
            req
        });
        (dir, path, handle)
    }

    #[test]
    fn a_daemon_that_is_not_listening_is_unreachable_so_the_import_retries() {
        let dir = SocketDir::new("gone");
        // A socket file nobody listens on: connection refused.
        let path = dir.0.join("docker.sock");
        drop(UnixListener::bind(&path).unwrap());
        let err = Client::new(&path, "Docker").get("/_ping").unwrap_err();
        assert!(super::super::is_unreachable(&err), "{err:#}");
        assert!(
            format!("{err:#}").contains(&path.display().to_string()),
            "{err:#}"
        );
        // No socket at all.
        let err = Client::new(&dir.0.join("none.sock"), "Docker")
            .get("/_ping")
            .unwrap_err();
        assert!(super::super::is_unreachable(&err), "{err:#}");
    }

    #[test]
    fn interim_answers_before_the_real_one_are_passed_over() {
        let (_dir, path, _server) = serve(
            b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        let mut resp = Client::new(&path, "Docker").get("/_ping").unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(16).unwrap(), "ok");
    }

    #[test]
    fn endless_trailers_are_refused_not_read_forever() {
        let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            answer.extend_from_slice(format!("X-Trailer-{i}: y\r\n").as_bytes());
        }
        answer.extend_from_slice(b"\r\n");
        let (_dir, path, _server) = serve(answer);
        let mut resp = Client::new(&path, "Docker").get("/_ping").unwrap();
        let err = resp.text(16).unwrap_err();
        assert!(format!("{err:#}").contains("trailer"), "{err:#}");
    }

    #[test]
    fn a_trailer_line_longer_than_a_header_line_may_be_is_refused() {
        let mut answer =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n".to_vec();
        answer.extend_from_slice(b"X-Long: ");
        answer.extend(std::iter::repeat_n(b'y', MAX_LINE + 1));
        answer.extend_from_slice(b"\r\n\r\n");
        let (_dir, path, _server) = serve(answer);
        let mut resp = Client::new(&path, "Docker").get("/_ping").unwrap();
        let err = resp.text(16).unwrap_err();
        assert!(format!("{err:#}").contains("longer than"), "{err:#}");
    }

    #[test]
    fn trailers_after_the_last_chunk_are_read_and_the_body_ends() {
        let (_dir, path, _server) = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n",
        );
        let mut resp = Client::new(&path, "Docker").get("/_ping").unwrap();
        assert_eq!(resp.text(16).unwrap(), "ok");
    }

    #[test]
    fn a_head_that_breaks_the_http_grammar_is_refused() {
        let (_dir, path, _s) = serve(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n");
        let err = Client::new(&path, "Docker").get("/_ping").unwrap_err();
        assert!(format!("{err:#}").contains("not a Docker API"), "{err:#}");
        let (_dir, path, _s) = serve(b"HTTP/1.1 2000 OK\r\n\r\n");
        let err = Client::new(&path, "Docker").get("/_ping").unwrap_err();
        assert!(format!("{err:#}").contains("not a Docker API"), "{err:#}");
        let (_dir, path, _s) =
            serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n");
        let mut resp = Client::new(&path, "Docker").get("/_ping").unwrap();
        let err = resp.text(16).unwrap_err();
        assert!(format!("{err:#}").contains("bad chunk size"), "{err:#}");
    }

    #[test]
    fn too_many_headers_are_refused_not_read_forever() {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            answer.extend_from_slice(format!("X-H-{i}: y\r\n").as_bytes());
        }
        answer.extend_from_slice(b"\r\n");
        let (_dir, path, _s) = serve(answer);
        let err = Client::new(&path, "Docker").get("/_ping").unwrap_err();
        assert!(format!("{err:#}").contains("header lines"), "{err:#}");
    }

    #[test]
    fn a_chunked_answer_is_decoded_and_a_chunked_body_is_sent() {
        let (_dir, path, server) = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n",
        );
        let client = Client::new(&path, "Docker");
        let mut req = client.start("POST", "/load", &[], None).unwrap();
        req.write_all(b"abc").unwrap();
        let mut resp = req.response(Wait::Short).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(1024).unwrap(), "hello, world");
        let sent = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(sent.starts_with("POST /load HTTP/1.1\r\n"), "{sent}");
        assert!(sent.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{sent}");
    }

    #[test]
    fn content_length_and_close_delimited_answers_are_read_to_their_end() {
        let (_dir, path, _s) =
            serve(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nApi-Version: 1.41\r\n\r\nOKOKtrailing");
        let mut resp = Client::new(&path, "Docker").get("/_ping").unwrap();
        assert_eq!(resp.header("api-version"), Some("1.41"));
        assert_eq!(resp.text(1024).unwrap(), "OKOK");
        let (_dir, path, _s) = serve(b"HTTP/1.0 200 OK\r\n\r\nuntil close");
        let mut resp = Client::new(&path, "Docker").get("/x").unwrap();
        assert_eq!(resp.text(1024).unwrap(), "until close");
    }

    #[test]
    fn a_socket_that_does_not_speak_http_is_named_as_not_a_docker_api() {
        let (_dir, path, _s) = serve(b"SSH-2.0-OpenSSH_9.2\r\n");
        let err = Client::new(&path, "Docker").get("/_ping").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not a Docker API"), "{msg}");
        assert!(msg.contains("SSH-2.0"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn connecting_to_a_missing_or_dead_socket_says_so() {
        let guard = SocketDir::new("http-dead");
        let dir = &guard.0;
        let missing = dir.join("missing.sock");
        let msg = Client::new(&missing, "Docker")
            .get("/_ping")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("no such socket") && msg.contains("missing.sock"),
            "{msg}"
        );
        let dead = dir.join("dead.sock");
        let _ = std::fs::remove_file(&dead);
        drop(UnixListener::bind(&dead).unwrap());
        let msg = Client::new(&dead, "Docker")
            .get("/_ping")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("connection refused"), "{msg}");
    }

    #[test]
    fn a_daemon_that_never_answers_times_out_naming_the_request() {
        let dir = SocketDir::new("http-mute");
        let path = dir.0.join("mute.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut client = Client::new(&path, "Docker");
        client.header_timeout = Duration::from_millis(200);
        let err = client.get("/_ping").unwrap_err().to_string();
        drop(listener);
        assert!(err.contains("did not answer GET /_ping"), "{err}");
    }
}
