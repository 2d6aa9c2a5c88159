//! What dockerd answers, read: the one place its words are read. A load's answer (`Loaded
//! image`, `Loaded image ID`, `{"error": …}` lines, and the containerd image store's
//! `Error unpacking image`), the `message` of an error answer, and what `GET /info` says of the
//! image store.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::SMALL_ANSWER;
use crate::reference;
use crate::runtime::http::{truncate, Response};

/// `GET /info`'s `DriverStatus` of the containerd image store names its snapshotter as
/// `["driver-type", "io.containerd.snapshotter.v1"]`.
pub fn uses_containerd_store(driver_status: &[Vec<String>]) -> bool {
    driver_status.iter().any(|kv| {
        kv.len() == 2 && kv[0] == "driver-type" && kv[1].starts_with("io.containerd.snapshotter")
    })
}

/// The error for a non-200 answer: the daemon's own `message`.
pub fn refusal(peer: &str, what: &str, resp: &mut Response) -> anyhow::Error {
    let body = resp.text(SMALL_ANSWER).unwrap_or_default();
    anyhow!(
        "{peer} refused {what} (HTTP {} {}): {}",
        resp.status,
        resp.reason,
        message_of(&body)
    )
}

/// Docker's error bodies are `{"message": "..."}`; anything else is shown as it came.
pub fn message_of(body: &str) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_str::<Message>(body) {
        Ok(m) => m.message,
        Err(_) if body.trim().is_empty() => "(no message)".into(),
        Err(_) => truncate(body.trim(), 500),
    }
}

/// What Docker's answer to a load said, line by line.
#[derive(Debug, Default)]
pub struct LoadAnswer {
    /// `Loaded image: NAME`, normalised.
    pub names: Vec<String>,
    /// `Loaded image ID: sha256:…`, for an image the archive does not name.
    pub ids: Vec<String>,
    /// `{"error": …}` lines, and the containerd image store's `Error unpacking image …`
    /// (it names the image, then fails to unpack it, and still answers as if all went well).
    pub errors: Vec<String>,
}

impl LoadAnswer {
    /// The names Docker loaded, or the error its answer holds.
    pub fn result(self, peer: &str) -> Result<Vec<String>> {
        if self.errors.is_empty() {
            Ok(self.names)
        } else {
            Err(self.error(peer))
        }
    }

    pub fn error(&self, peer: &str) -> anyhow::Error {
        anyhow!(
            "{peer} refused the image archive: {}",
            self.errors.join("; ")
        )
    }

    /// One line of the answer's `stream` text.
    fn stream_line(&mut self, text: &str) {
        let text = text.trim();
        if let Some(id) = text.strip_prefix("Loaded image ID: ") {
            self.ids.push(id.trim().to_string());
        } else if let Some(name) = text.strip_prefix("Loaded image: ") {
            let name =
                reference::normalize(name.trim()).unwrap_or_else(|_| name.trim().to_string());
            if !self.names.contains(&name) {
                self.names.push(name);
            }
        } else if text.starts_with("Error unpacking image ")
            && !self.errors.iter().any(|e| e == text)
        {
            self.errors.push(text.to_string());
        }
    }
}

/// Read every line of a load's answer. A failed load still answers HTTP 200, with an
/// `{"error": ...}` line; [`LoadAnswer::result`] makes it the error.
pub fn read_load_answer(peer: &str, resp: &mut Response) -> Result<LoadAnswer> {
    if resp.status != 200 {
        return Err(refusal(peer, "the image archive", resp));
    }
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        stream: Option<String>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default, rename = "errorDetail")]
        error_detail: Option<ErrorDetail>,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        #[serde(default)]
        message: Option<String>,
    }
    let mut answer = LoadAnswer::default();
    let mut odd: Vec<String> = Vec::new();
    let read = resp.body.for_each_line(1 << 20, |line| {
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        match serde_json::from_str::<Line>(line) {
            Ok(l) => {
                let detail = l.error_detail.and_then(|d| d.message);
                if let Some(msg) = detail.or(l.error) {
                    if !answer.errors.contains(&msg) {
                        answer.errors.push(msg);
                    }
                }
                for text in l.stream.iter().flat_map(|s| s.lines()) {
                    answer.stream_line(text);
                }
            }
            Err(_) => {
                if odd.len() < 5 {
                    odd.push(truncate(line, 200));
                }
            }
        }
        Ok(())
    });
    let read = read.map_err(|e| anyhow!("{peer}: reading the answer to the load: {e}"))?;
    read?;
    if !odd.is_empty() && answer.errors.is_empty() {
        bail!(
            "{peer}: not a Docker API: the answer to the load has lines that are not JSON: {}",
            odd.join(" | ")
        );
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::runtime::http::{Client, Wait};

    #[test]
    fn docker_error_bodies_give_their_message() {
        assert_eq!(
            message_of(r#"{"message":"no such image"}"#),
            "no such image"
        );
        assert_eq!(message_of("plain text\n"), "plain text");
        assert_eq!(message_of(""), "(no message)");
    }

    /// A one-shot server on a unix socket that answers a load with `answer`.
    fn answer_load(answer: &'static str) -> Result<Vec<String>> {
        use std::os::unix::net::UnixListener;
        let dir = crate::runtime::http::tests::SocketDir::new("docker");
        let path = dir.0.join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"0\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer.as_bytes()).unwrap();
        });
        let client = Client::new(&path, "Docker");
        let mut req = client
            .start("POST", "/v1.41/images/load", &[], None)
            .unwrap();
        req.write_all(b"tar").unwrap();
        let mut resp = req.response(Wait::Short).unwrap();
        let result =
            read_load_answer("Docker at test.sock", &mut resp).and_then(|a| a.result("Docker"));
        server.join().unwrap();
        result
    }

    #[test]
    fn a_load_answered_with_200_and_an_error_line_is_an_error_with_dockers_words() {
        let err = answer_load(concat!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
            "{\"stream\":\"Loaded image: a:1\\n\"}\r\n",
            "{\"errorDetail\":{\"message\":\"open /var/lib/docker/tmp/x: no space left on device\"},",
            "\"error\":\"open /var/lib/docker/tmp/x: no space left on device\"}\r\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("refused the image archive"), "{err}");
        assert!(err.contains("no space left on device"), "{err}");
    }

    #[test]
    fn every_loaded_name_is_read_from_a_chunked_answer() {
        let names = answer_load(concat!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2e\r\n{\"stream\":\"Loaded image: oi-test/alpha:1\\n\"}\r\n\r\n",
            "30\r\n{\"stream\":\"Loaded image: quay.io/o/beta:2\\n\"}\r\n\r\n",
            "0\r\n\r\n"
        ))
        .unwrap();
        assert_eq!(names, ["docker.io/oi-test/alpha:1", "quay.io/o/beta:2"]);
    }

    #[test]
    fn an_image_the_containerd_store_named_but_could_not_unpack_fails_the_load() {
        // Docker 28's containerd image store answers a load whose layer does not apply with
        // stream lines only: the image is named, yet no container can run from it.
        let err = answer_load(concat!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
            "{\"stream\":\"Loaded image: oi-test/a:1\\n\"}\r\n",
            "{\"stream\":\"Loaded image: oi-test/b:1\\n\"}\r\n",
            "{\"stream\":\"Error unpacking image oi-test/b:1: wrong diff id calculated on extraction\\n\"}\r\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("refused the image archive"), "{err}");
        assert!(err.contains("Error unpacking image oi-test/b:1"), "{err}");
    }

    #[test]
    fn what_a_failed_load_left_is_read_from_its_answer() {
        let mut answer = LoadAnswer::default();
        answer.stream_line("Loaded image: oi-test/a:1\n");
        answer.stream_line("The image oi-test/a:1 already exists, renaming the old one with ID sha256:00 to empty string");
        answer.stream_line("Loaded image ID: sha256:0123\n");
        assert_eq!(answer.names, ["docker.io/oi-test/a:1"]);
        assert_eq!(answer.ids, ["sha256:0123"]);
        assert!(answer.errors.is_empty());
    }

    #[test]
    fn a_load_refused_with_an_http_error_gives_dockers_message() {
        let err = answer_load(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 29\r\n\r\n{\"message\":\"disk on fire\"}\n\r\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("HTTP 500") && err.contains("disk on fire"),
            "{err}"
        );
    }
}
