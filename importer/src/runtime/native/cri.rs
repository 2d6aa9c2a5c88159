//! Which snapshotter the node's kubelet reads images from: the CRI plugin's, as its `Status`
//! call (verbose) reports its configuration on containerd's own socket. Two messages of the
//! CRI API are declared here by hand; nothing else of it is needed.

use std::collections::HashMap;

use tonic::codegen::http::uri::PathAndQuery;

use super::client::Conn;

#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {
    #[prost(bool, tag = "1")]
    verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(map = "string, string", tag = "2")]
    info: HashMap<String, String>,
}

/// The CRI plugin's configuration as its verbose `Status` reports it: one JSON document per
/// key of the `info` map (`config` on every version; more keys on containerd 2). `None` when
/// containerd runs no CRI plugin or does not answer.
pub fn status_info(conn: &Conn) -> Option<HashMap<String, serde_json::Value>> {
    let mut grpc = tonic::client::Grpc::new(conn.channel.clone());
    let req = conn.req(StatusRequest { verbose: true }, None);
    let status = conn
        .call("the CRI status query", async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            grpc.unary(
                req,
                PathAndQuery::from_static("/runtime.v1.RuntimeService/Status"),
                tonic_prost::ProstCodec::<StatusRequest, StatusResponse>::default(),
            )
            .await
        })
        .ok()?;
    let parsed = status
        .info
        .into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?)))
        .collect();
    Some(parsed)
}

/// The snapshotter of the CRI plugin, when containerd runs it and says.
pub fn snapshotter(conn: &Conn) -> Option<String> {
    find_snapshotter(status_info(conn)?.get("config")?)
}

/// Where the containerd at a socket says it reads `hosts.toml` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertsDir {
    /// Its CRI status reports the registry `config_path` (containerd 1.x); empty when unset.
    Reported(String),
    /// Its CRI answers but does not report it (containerd 2 keeps the image service's
    /// configuration out of the status); `version` is containerd's, e.g. `v2.1.4`.
    NotReported { version: String },
    /// No CRI plugin answered the status call.
    NoCri,
}

/// Ask the containerd at `socket` (its CRI status, and its version).
pub fn certs_dir(socket: &std::path::Path) -> anyhow::Result<CertsDir> {
    use containerd_client::services::v1::version_client::VersionClient;
    let conn = Conn::open(socket, "k8s.io")?;
    let Some(info) = status_info(&conn) else {
        return Ok(CertsDir::NoCri);
    };
    if let Some(path) = info.values().find_map(find_config_path) {
        return Ok(CertsDir::Reported(path));
    }
    let mut client = VersionClient::new(conn.channel.clone());
    let version = conn
        .call("the version query", client.version(conn.req((), None)))
        .map_err(anyhow::Error::from)?
        .version;
    Ok(CertsDir::NotReported { version })
}

/// `registry.configPath` at any depth (containerd 1.6 and 1.7 keep it in `config.registry`,
/// containerd 2 in the image service's configuration).
fn find_config_path(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => m.iter().find_map(|(k, v)| match v.as_str() {
            Some(s) if k == "configPath" || k == "config_path" => Some(s.to_string()),
            _ => find_config_path(v),
        }),
        serde_json::Value::Array(a) => a.iter().find_map(find_config_path),
        _ => None,
    }
}

/// `containerd.snapshotter` (containerd 1.6, 1.7), else the first `snapshotter` anywhere.
fn find_snapshotter(v: &serde_json::Value) -> Option<String> {
    if let Some(s) = v["containerd"]["snapshotter"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        return Some(s.to_string());
    }
    match v {
        serde_json::Value::Object(m) => m.iter().find_map(|(k, v)| match v.as_str() {
            Some(s) if k == "snapshotter" && !s.is_empty() => Some(s.to_string()),
            _ => find_snapshotter(v),
        }),
        serde_json::Value::Array(a) => a.iter().find_map(find_snapshotter),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshotter_is_found_in_the_cri_configuration() {
        let v16 = serde_json::json!({"containerd": {"snapshotter": "native", "runtimes": {}}});
        assert_eq!(find_snapshotter(&v16).as_deref(), Some("native"));
        let other = serde_json::json!({"imageConfig": {"snapshotter": "zfs"}, "containerd": {}});
        assert_eq!(find_snapshotter(&other).as_deref(), Some("zfs"));
        assert_eq!(find_snapshotter(&serde_json::json!({"x": 1})), None);
    }

    #[test]
    fn the_registry_config_path_is_found_at_any_depth() {
        let v17 = serde_json::json!({"registry": {"configPath": "/etc/containerd/certs.d", "mirrors": {}}});
        assert_eq!(
            find_config_path(&v17).as_deref(),
            Some("/etc/containerd/certs.d")
        );
        let unset = serde_json::json!({"registry": {"configPath": "", "mirrors": {}}});
        assert_eq!(find_config_path(&unset).as_deref(), Some(""));
        assert_eq!(find_config_path(&serde_json::json!({"registry": {}})), None);
    }
}
