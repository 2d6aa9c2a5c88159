//! Sockets on the node: where a node path is seen from the importer, and whether a socket
//! answers. A leaf of the runtime module: detection and every backend use it.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Where a node path is, seen from this process.
pub fn local_path(host_root: Option<&Path>, node_path: &Path) -> PathBuf {
    match host_root {
        Some(root) => root.join(node_path.strip_prefix("/").unwrap_or(node_path)),
        None => node_path.to_path_buf(),
    }
}

/// Is there a unix socket at `path` that accepts a connection? `None` if so, else why not.
pub fn probe_socket(path: &Path) -> Option<String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some("does not exist".into()),
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    if !meta.file_type().is_socket() {
        let what = if meta.is_dir() {
            "a directory"
        } else if meta.is_file() {
            "a regular file"
        } else {
            "not a socket"
        };
        return Some(format!(
            "is {what}, not a socket (a hostPath mount of a socket that did not exist yet creates a directory)"
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Some("is a socket, but nothing is listening (connection refused)".into())
        }
        Err(e) => Some(format!("is a socket, but connecting failed: {e}")),
    }
}
