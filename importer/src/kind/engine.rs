//! The Docker Engine API calls that reach a node container from the host: containers found by
//! label or name, a tar stream put into a container (`PUT /containers/{id}/archive`), a path
//! looked up in it, and a command run in it (`exec`) with its output streamed back and its
//! exit code. Over the same HTTP-over-unix-socket client as the Docker backend.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::frames::Frames;
use crate::runtime::http::{truncate, Client, Request, Wait};

/// The oldest API version with everything used here (exec inspect's `ExitCode`, label filters).
const API_OLDEST: (u32, u32) = (1, 25);
/// The newest API version these calls have been tested against (Docker 20.10).
const API_TESTED: (u32, u32) = (1, 41);
/// Most bytes read from a small answer (a container list, an exec's inspect).
const SMALL: u64 = 16 << 20;

/// kind's label that names a node's cluster.
pub const CLUSTER_LABEL: &str = "io.x-k8s.kind.cluster";
/// kind's label that names a node's role (`control-plane`, `worker`).
pub const ROLE_LABEL: &str = "io.x-k8s.kind.role";

/// The Docker daemon on the host, reached through its socket.
#[derive(Debug, Clone)]
pub struct Engine {
    client: Client,
    /// `/v1.41`: the prefix of every path.
    prefix: String,
    /// The daemon's machine (`GET /info` `Architecture`, e.g. `x86_64`).
    pub architecture: String,
}

/// A node container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    /// Its name without the leading `/`.
    pub name: String,
    /// kind's role label, when it has one.
    pub role: Option<String>,
    pub running: bool,
}

/// How a command run in a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i64);

impl Engine {
    /// Connect to the daemon at `socket` and agree on an API version.
    pub fn connect(socket: &Path) -> Result<Engine> {
        let client = Client::new(socket, "Docker");
        let peer = client.describe_peer();
        let mut ping = client.get("/_ping")?;
        let offered = ping.header("Api-Version").map(str::to_string);
        let body = ping.text(1024).unwrap_or_default();
        if ping.status != 200 {
            bail!(
                "{peer}: GET /_ping answered HTTP {}: {}",
                ping.status,
                truncate(body.trim(), 200)
            );
        }
        let offered = offered
            .ok_or_else(|| anyhow!("{peer}: not a Docker API: GET /_ping gave no Api-Version"))?;
        let version = parse_version(&offered)
            .ok_or_else(|| anyhow!("{peer}: GET /_ping gave the API version {offered:?}"))?;
        if version < API_OLDEST {
            bail!(
                "{peer} speaks API {offered}; {}.{} or newer is needed",
                API_OLDEST.0,
                API_OLDEST.1
            );
        }
        let api = version.min(API_TESTED);
        let mut engine = Engine {
            client,
            prefix: format!("/v{}.{}", api.0, api.1),
            architecture: String::new(),
        };
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Info {
            #[serde(default)]
            architecture: String,
        }
        let info: Info = engine.get_json("/info")?;
        engine.architecture = info.architecture;
        Ok(engine)
    }

    pub fn describe(&self) -> String {
        self.client.describe_peer()
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T> {
        let peer = self.client.describe_peer();
        let mut resp = self.client.get(&format!("{}{path}", self.prefix))?;
        let text = resp.text(SMALL)?;
        if resp.status != 200 {
            bail!(
                "{peer}: GET {} answered HTTP {}: {}",
                path_only(path),
                resp.status,
                message_of(&text)
            );
        }
        serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "{peer}: GET {} answered something unexpected ({e}): {:?}",
                path_only(path),
                truncate(&text, 200)
            )
        })
    }

    /// The containers of kind cluster `cluster`, running or not, sorted by name.
    pub fn cluster_nodes(&self, cluster: &str) -> Result<Vec<Node>> {
        let filters = serde_json::json!({ "label": [format!("{CLUSTER_LABEL}={cluster}")] });
        let path = format!(
            "/containers/json?all=1&filters={}",
            escape(&filters.to_string())
        );
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Listed {
            id: String,
            #[serde(default)]
            names: Vec<String>,
            #[serde(default)]
            labels: Option<BTreeMap<String, String>>,
            #[serde(default)]
            state: String,
        }
        let listed: Vec<Listed> = self.get_json(&path)?;
        let mut nodes: Vec<Node> = listed
            .into_iter()
            .map(|c| Node {
                name: c
                    .names
                    .first()
                    .map_or(c.id.clone(), |n| n.trim_start_matches('/').to_string()),
                role: c.labels.and_then(|mut l| l.remove(ROLE_LABEL)),
                running: c.state == "running",
                id: c.id,
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    /// The container named (or with the ID) `name`.
    pub fn node(&self, name: &str) -> Result<Node> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct State {
            #[serde(default)]
            running: bool,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Config {
            #[serde(default)]
            labels: Option<BTreeMap<String, String>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inspected {
            id: String,
            name: String,
            state: State,
            config: Config,
        }
        let c: Inspected = self.get_json(&format!("/containers/{}/json", escape(name)))?;
        Ok(Node {
            id: c.id,
            name: c.name.trim_start_matches('/').to_string(),
            role: c.config.labels.and_then(|mut l| l.remove(ROLE_LABEL)),
            running: c.state.running,
        })
    }

    /// Whether `path` exists in container `node` (`HEAD /containers/{id}/archive`).
    pub fn exists(&self, node: &Node, path: &str) -> Result<bool> {
        let p = format!(
            "{}/containers/{}/archive?path={}",
            self.prefix,
            node.id,
            escape(path)
        );
        let mut resp = self
            .client
            .start("HEAD", &p, &[], None)?
            .response(Wait::Short)?;
        match resp.status {
            200 => Ok(true),
            404 => Ok(false),
            s => {
                let text = resp.text(SMALL).unwrap_or_default();
                bail!(
                    "{}: HEAD the path {path} of {}: HTTP {s}: {}",
                    self.describe(),
                    node.name,
                    message_of(&text)
                )
            }
        }
    }

    /// Start putting a tar stream into container `node` at directory `dir` (which must exist
    /// there); the tar is written to the returned request, then [`Engine::finish_put`].
    pub fn start_put(&self, node: &Node, dir: &str) -> Result<Request> {
        let p = format!(
            "{}/containers/{}/archive?path={}",
            self.prefix,
            node.id,
            escape(dir)
        );
        let request =
            self.client
                .start("PUT", &p, &[("Content-Type", "application/x-tar")], None)?;
        request.no_write_timeout()?;
        Ok(request)
    }

    /// The daemon's answer to a put: an error unless it took the whole stream.
    pub fn finish_put(&self, node: &Node, mut request: Request) -> Result<()> {
        request.flush()?;
        let mut resp = request.response(Wait::Unlimited)?;
        let text = resp.text(SMALL).unwrap_or_default();
        if resp.status != 200 {
            bail!(
                "{}: PUT a tar stream into {}: HTTP {}: {}",
                self.describe(),
                node.name,
                resp.status,
                message_of(&text)
            );
        }
        Ok(())
    }

    /// Run `cmd` in container `node`; each line of its stdout and stderr is given to `line`
    /// as it comes (`true` for stderr). Returns its exit code.
    pub fn exec(
        &self,
        node: &Node,
        cmd: &[String],
        line: &mut dyn FnMut(bool, &str),
    ) -> Result<Exit> {
        let peer = self.describe();
        let body = serde_json::json!({
            "AttachStdout": true, "AttachStderr": true, "AttachStdin": false, "Tty": false,
            "Cmd": cmd,
        })
        .to_string();
        let created: Created = self.post_json(&format!("/containers/{}/exec", node.id), &body)?;
        let p = format!("{}/exec/{}/start", self.prefix, created.id);
        let start = br#"{"Detach":false,"Tty":false}"#;
        let mut request = self.client.start(
            "POST",
            &p,
            &[("Content-Type", "application/json")],
            Some(start.len() as u64),
        )?;
        request.write_all(start)?;
        request.flush()?;
        let mut resp = request.response(Wait::Unlimited)?;
        if resp.status != 200 {
            let text = resp.text(SMALL).unwrap_or_default();
            bail!(
                "{peer}: starting {:?} in {}: HTTP {}: {}",
                cmd.join(" "),
                node.name,
                resp.status,
                message_of(&text)
            );
        }
        relay(&mut resp.body, line).map_err(|e| {
            anyhow!(
                "{peer}: reading the output of {:?} in {}: {e}",
                cmd.join(" "),
                node.name
            )
        })?;
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inspected {
            #[serde(default)]
            running: bool,
            exit_code: Option<i64>,
        }
        let done: Inspected = self.get_json(&format!("/exec/{}/json", created.id))?;
        match (done.running, done.exit_code) {
            (false, Some(code)) => Ok(Exit(code)),
            _ => bail!(
                "{peer}: {:?} in {} ended its output but gave no exit code",
                cmd.join(" "),
                node.name
            ),
        }
    }

    fn post_json<T: for<'de> Deserialize<'de>>(&self, path: &str, body: &str) -> Result<T> {
        let peer = self.describe();
        let mut request = self.client.start(
            "POST",
            &format!("{}{path}", self.prefix),
            &[("Content-Type", "application/json")],
            Some(body.len() as u64),
        )?;
        request.write_all(body.as_bytes())?;
        request.flush()?;
        let mut resp = request.response(Wait::Short)?;
        let text = resp.text(SMALL)?;
        if resp.status != 200 && resp.status != 201 {
            bail!(
                "{peer}: POST {path} answered HTTP {}: {}",
                resp.status,
                message_of(&text)
            );
        }
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("{peer}: POST {path} answered something unexpected ({e})"))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    id: String,
}

/// Docker's multiplexed output, given line by line; a last line without its newline too.
fn relay(body: &mut dyn Read, line: &mut dyn FnMut(bool, &str)) -> std::io::Result<()> {
    let mut frames = Frames::new(body);
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    while let Some((stream, data)) = frames.next_frame()? {
        let err = stream == 2;
        let buf = &mut pending[usize::from(err)];
        buf.extend_from_slice(&data);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let text: Vec<u8> = buf.drain(..=end).collect();
            line(
                err,
                String::from_utf8_lossy(&text[..end]).trim_end_matches('\r'),
            );
        }
    }
    for (i, rest) in pending.iter().enumerate() {
        if !rest.is_empty() {
            line(i == 1, &String::from_utf8_lossy(rest));
        }
    }
    Ok(())
}

/// `1.41` -> `(1, 41)`.
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `s` as a URL path or query value: every byte but the unreserved ones percent-encoded.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path without its query, for a message.
fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// The `message` of a Docker error answer, or the text itself.
fn message_of(text: &str) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_str::<Message>(text) {
        Ok(m) => truncate(m.message.trim(), 300).to_string(),
        Err(_) => truncate(text.trim(), 300).to_string(),
    }
}

/// The socket `DOCKER_HOST` names, or the first of Docker's usual sockets that exists.
pub fn socket(docker_host: Option<&str>) -> Result<PathBuf> {
    match docker_host {
        Some(h) if !h.is_empty() => crate::runtime::detect::docker_socket_path(h),
        _ => Ok(crate::runtime::detect::DOCKER_SOCKETS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(crate::runtime::detect::DOCKER_SOCKETS[0]))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frames_become_lines_per_stream() {
        let mut data = Vec::new();
        for (stream, text) in [(1u8, "out one\nout "), (2, "err\n"), (1, "two\npartial")] {
            data.extend_from_slice(&[stream, 0, 0, 0]);
            data.extend_from_slice(&(text.len() as u32).to_be_bytes());
            data.extend_from_slice(text.as_bytes());
        }
        let mut got = Vec::new();
        relay(&mut &data[..], &mut |err, l| got.push((err, l.to_string()))).unwrap();
        assert_eq!(
            got,
            vec![
                (false, "out one".to_string()),
                (true, "err".to_string()),
                (false, "out two".to_string()),
                (false, "partial".to_string()),
            ]
        );
    }

    #[test]
    fn values_are_escaped_for_a_url() {
        assert_eq!(escape("a=b c/{}"), "a%3Db%20c%2F%7B%7D");
        assert_eq!(parse_version("1.41"), Some((1, 41)));
    }
}
