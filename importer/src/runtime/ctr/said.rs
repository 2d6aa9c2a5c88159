//! What ctr and containerd say on ctr's stderr, as far as the importer acts on it: the one
//! place their words are read. Everything else about a failed `ctr` run is decided by its
//! exit status and by probing the socket.
//!
//! ctr prints one error (`ctr: ...`), often with containerd's own words inside it (gRPC's
//! `rpc error: code = ...`). A text is given one [`CtrSaid`], the first of these that its
//! words match, in the order of the variants.

/// What a failed `ctr` said, as far as the importer acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrSaid {
    /// `failed to resolve layers ... not found`: ctr 1.6 resumed a partial upload of the same
    /// layer that an import cut short had left in containerd, and lost the layer. `race` when
    /// the words are also those of [`CtrSaid::LostRace`].
    PartialUploadLost { race: bool },
    /// containerd closed the connection in the middle of the call (killed, crashed,
    /// restarted): `transport is closing`, `error reading from server`, `connection reset`,
    /// `code = Unavailable`, without words of [`CtrSaid::Unreachable`].
    ConnectionClosed,
    /// `no space left on device`: the disk holding containerd's root is full.
    DiskFull,
    /// ctr could not reach containerd: `failed to dial`, `error while dialing`,
    /// `connection refused`.
    Unreachable,
    /// Two imports at once tripped over each other (see [`Race`]). Nothing is wrong with the
    /// archive.
    LostRace(Race),
    /// `already exists` in another form: something another import created at the same moment.
    AlreadyExists,
    /// Nothing the importer recognises: ctr's words are reported as they are.
    Other,
}

/// How one import lost to another that ran at the same moment (ctr 1.6's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Race {
    /// Writing the same layer, one took the other's upload (ctr names an upload after the
    /// archive's entry): `content digest ...: not found`.
    Layer,
    /// Creating the same image name, both found it absent and the second create failed:
    /// `image "...": already exists`.
    Name,
    /// Unpacking onto a layer's snapshot that containerd's garbage collector removed in the
    /// meantime: `parent snapshot ... does not exist`. ctr names the image before it unpacks
    /// it, so an image that takes a name from another one sharing its lower layers can leave
    /// those layers unreferenced for a moment, and the collector takes them.
    Snapshot,
}

impl CtrSaid {
    /// Whether what ctr failed on was made by another import at the same moment: the name
    /// is that import's image, not a half-imported one of this archive, and stays.
    pub fn made_by_another(self) -> bool {
        matches!(self, CtrSaid::LostRace(Race::Name) | CtrSaid::AlreadyExists)
    }
}

/// The one reading of ctr's stderr (a line or the whole text).
pub fn classify(text: &str) -> CtrSaid {
    let has = |s: &str| text.contains(s);
    let unreachable = [
        "failed to dial",
        "error while dialing",
        "connection refused",
    ]
    .iter()
    .any(|s| has(s));
    let closed = [
        "transport is closing",
        "error reading from server",
        "connection reset",
        "code = Unavailable",
    ]
    .iter()
    .any(|s| has(s));
    let race = if has("content digest") && has("not found") {
        Some(Race::Layer)
    } else if has("image \"") && has("\": already exists") {
        Some(Race::Name)
    } else if has("parent snapshot") && has("does not exist") {
        Some(Race::Snapshot)
    } else {
        None
    };
    if has("failed to resolve layers") && has("not found") {
        CtrSaid::PartialUploadLost {
            race: race.is_some(),
        }
    } else if closed && !unreachable {
        CtrSaid::ConnectionClosed
    } else if has("no space left on device") {
        CtrSaid::DiskFull
    } else if unreachable {
        CtrSaid::Unreachable
    } else if let Some(race) = race {
        CtrSaid::LostRace(race)
    } else if has("already exists") {
        CtrSaid::AlreadyExists
    } else {
        CtrSaid::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_ctr_and_containerd_say_is_classified() {
        let sock = "/run/containerd/containerd.sock";
        let digest = format!("sha256:{}", "ab".repeat(32));
        let table: Vec<(String, CtrSaid)> = vec![
            (
                format!("failed to resolve layers: content digest {digest}: not found"),
                CtrSaid::PartialUploadLost { race: true },
            ),
            (
                format!("failed to resolve layers: layer {digest}: not found"),
                CtrSaid::PartialUploadLost { race: false },
            ),
            (
                "rpc error: code = Unavailable desc = error reading from server: EOF".into(),
                CtrSaid::ConnectionClosed,
            ),
            (
                "rpc error: code = Unavailable desc = transport is closing".into(),
                CtrSaid::ConnectionClosed,
            ),
            (
                "read unix @->/run/containerd/containerd.sock: read: connection reset by peer"
                    .into(),
                CtrSaid::ConnectionClosed,
            ),
            (
                format!(
                    "failed to extract layer {digest}: write /var/lib/containerd/tmpmounts/x: \
                     no space left on device: unknown"
                ),
                CtrSaid::DiskFull,
            ),
            (
                format!("failed to dial \"{sock}\": context deadline exceeded"),
                CtrSaid::Unreachable,
            ),
            (
                format!(
                    "rpc error: code = Unavailable desc = connection error: desc = \"transport: \
                     error while dialing: dial unix {sock}: connect: connection refused\""
                ),
                CtrSaid::Unreachable,
            ),
            (
                "content digest sha256:ab: not found".into(),
                CtrSaid::LostRace(Race::Layer),
            ),
            (
                "image \"docker.io/oi-test/dup:1\": already exists".into(),
                CtrSaid::LostRace(Race::Name),
            ),
            (
                format!(
                    "failed to prepare extraction snapshot \"extract-1-x {digest}\": parent \
                     snapshot {digest} does not exist: not found"
                ),
                CtrSaid::LostRace(Race::Snapshot),
            ),
            (
                format!("failed to commit {digest}: content {digest}: already exists"),
                CtrSaid::AlreadyExists,
            ),
            ("failed to read: unexpected EOF".into(), CtrSaid::Other),
            ("image \"x\": not found".into(), CtrSaid::Other),
            (String::new(), CtrSaid::Other),
        ];
        for (text, said) in table {
            assert_eq!(classify(&text), said, "{text}");
        }
    }

    #[test]
    fn only_a_name_or_content_another_import_made_is_left_in_place() {
        assert!(classify("image \"docker.io/oi-test/dup:1\": already exists").made_by_another());
        assert!(classify("content sha256:ab: already exists").made_by_another());
        assert!(!classify("content digest sha256:ab: not found").made_by_another());
        assert!(!classify("failed to read: unexpected EOF").made_by_another());
    }
}
