//! Image archives written in memory for the archive reader's unit tests.

#![cfg(test)]

use super::scan::hex_sha256;
use super::tar_of;

/// An OCI archive of one image named `example.com/multi:1`, an index of two platforms whose
/// linux/amd64 manifest alone is in the archive; with that manifest's config digest.
pub(super) fn multi_platform_oci() -> (Vec<u8>, String) {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cfg_d = hex_sha256(config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cfg_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{}","size":2}}]}}"#,
        config.len(),
        hex_sha256(b"xx")
    );
    let man_d = hex_sha256(manifest.as_bytes());
    let other = "0".repeat(64);
    let idx = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{man_d}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{other}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
        manifest.len()
    );
    let idx_d = hex_sha256(idx.as_bytes());
    let top = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{idx_d}","size":{},"annotations":{{"io.containerd.image.name":"example.com/multi:1","org.opencontainers.image.ref.name":"1"}}}}]}}"#,
        idx.len()
    );
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (
            format!("blobs/sha256/{}", hex_sha256(b"xx")),
            b"xx".to_vec(),
        ),
        (format!("blobs/sha256/{cfg_d}"), config.to_vec()),
        (format!("blobs/sha256/{man_d}"), manifest.into_bytes()),
        (format!("blobs/sha256/{idx_d}"), idx.into_bytes()),
        ("index.json".into(), top.into_bytes()),
    ];
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    (tar_of(&refs), format!("sha256:{cfg_d}"))
}

/// A one-layer OCI archive whose `index.json` has the one entry `entry` (with `{man}`,
/// `{man_size}` and `{layer}` replaced by the manifest's and layer's digests and size).
pub(super) fn oci_archive_with_entry(entry: &str) -> Vec<u8> {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer_d = hex_sha256(b"xx");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_d}","size":2}}]}}"#,
        hex_sha256(config),
        config.len()
    );
    let man_d = hex_sha256(manifest.as_bytes());
    let entry = entry
        .replace("{man}", &format!("sha256:{man_d}"))
        .replace("{man_size}", &manifest.len().to_string())
        .replace("{layer}", &format!("sha256:{layer_d}"));
    let index = format!(r#"{{"schemaVersion":2,"manifests":[{entry}]}}"#);
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (format!("blobs/sha256/{layer_d}"), b"xx".to_vec()),
        (
            format!("blobs/sha256/{}", hex_sha256(config)),
            config.to_vec(),
        ),
        (format!("blobs/sha256/{man_d}"), manifest.into_bytes()),
        ("index.json".into(), index.into_bytes()),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    tar_of(&refs)
}
