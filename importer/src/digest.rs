//! Digests as text: a leaf that the archive reader and the bundle both use.

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// The chain ID of each layer of an image whose config lists `diff_ids` (its uncompressed
/// layers' digests, bottom first), as Docker's layer store names a layer with every layer
/// under it: the first layer's is its diff ID, each next one the sha256 of the chain ID
/// under it, a space, and its diff ID (`layer.CreateChainID` in moby).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let chain = match out.last() {
            None => diff.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex(&Sha256::digest(format!("{parent} {diff}").as_bytes()))
            ),
        };
        out.push(chain);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_id_is_the_diff_id_then_the_hash_of_the_chain_below_and_the_diff_id() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        // printf '%s %s' sha256:aaa… sha256:bbb… | sha256sum
        let expected = "ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c";
        assert_eq!(chains[1], format!("sha256:{expected}"));
        assert!(chain_ids(&[]).is_empty());
    }
}
