//! What containerd's content labels say about an image, read the same way by both containerd
//! backends (`ctr content ls` and the native client's `Content.List`).

use std::collections::HashMap;

use serde::Deserialize;

use crate::archive::Platform;

/// Content labels by digest.
pub type Labels = HashMap<String, HashMap<String, String>>;

/// A manifest's label naming its config (the GC reference containerd keeps).
const GC_CONFIG: &str = "containerd.io/gc.ref.content.config";
/// An index's labels naming its manifests: `gc.ref.content.m.N`.
const GC_CHILD: &str = "containerd.io/gc.ref.content.m.";

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

/// The config digest for `platform` of the image whose target is `target`. A node usually
/// holds only its own platform's manifest of an index; when it holds several, the index is
/// read (`read_blob`, given the target's digest) to choose.
pub fn config_of(
    target: &str,
    content: &Labels,
    platform: &Platform,
    read_blob: impl FnOnce(&str) -> Option<Vec<u8>>,
) -> Option<String> {
    let labels = content.get(target)?;
    if let Some(c) = labels.get(GC_CONFIG) {
        return Some(c.clone());
    }
    let present: Vec<&String> = labels
        .iter()
        .filter(|(k, _)| k.starts_with(GC_CHILD))
        .map(|(_, v)| v)
        .filter(|d| content.get(*d).is_some_and(|l| l.contains_key(GC_CONFIG)))
        .collect();
    let child = match present.as_slice() {
        [] => return None,
        [one] => (*one).clone(),
        _ => {
            let index: IndexDoc = serde_json::from_slice(&read_blob(target)?).ok()?;
            index
                .manifests
                .into_iter()
                .find(|m| {
                    m.platform.as_ref().is_some_and(|p| p.runs_on(platform))
                        && present.contains(&&m.digest)
                })?
                .digest
        }
    };
    content.get(&child)?.get(GC_CONFIG).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_config_is_found_through_a_manifest_or_the_index_for_this_platform() {
        let host = Platform::host();
        let mut content = Labels::new();
        content.insert("m1".into(), labels(&[(GC_CONFIG, "c1")]));
        content.insert(
            "i".into(),
            labels(&[("containerd.io/gc.ref.content.m.0", "m1")]),
        );
        let no_read = |_: &str| -> Option<Vec<u8>> { panic!("one manifest: no index read") };
        assert_eq!(
            config_of("m1", &content, &host, no_read).as_deref(),
            Some("c1")
        );
        assert_eq!(
            config_of("i", &content, &host, no_read).as_deref(),
            Some("c1")
        );
        // Two manifests present: the index says which one is this node's.
        content.insert("m2".into(), labels(&[(GC_CONFIG, "c2")]));
        content
            .get_mut("i")
            .unwrap()
            .insert(format!("{GC_CHILD}1"), "m2".into());
        let index = format!(
            r#"{{"manifests":[{{"digest":"m1","platform":{{"os":"plan9","architecture":"mips"}}}},
                {{"digest":"m2","platform":{{"os":"{}","architecture":"{}"}}}}]}}"#,
            host.os, host.architecture
        );
        let read = |d: &str| (d == "i").then(|| index.clone().into_bytes());
        assert_eq!(config_of("i", &content, &host, read).as_deref(), Some("c2"));
        assert_eq!(config_of("absent", &content, &host, no_read), None);
    }
}
