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

/// The snapshotter of the CRI plugin, when containerd runs it and says.
pub fn snapshotter(conn: &Conn) -> Option<String> {
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
    let config: serde_json::Value = serde_json::from_str(status.info.get("config")?).ok()?;
    find_snapshotter(&config)
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
}
