//! One image of a layout as an OCI archive, built while it is read and never written: an
//! `oci-layout`, an `index.json` holding that image's entry alone, and every blob it reaches
//! (documents first, then layers), each a plain tar entry. Layers stream from their files,
//! checked against their digests on the way (see `blobs`).

use std::collections::VecDeque;
use std::io::{self, Cursor, Read};

use super::blobs::Blob;
use super::image::Graph;

const BLOCK: u64 = 512;

/// `oci-layout` as the archive holds it.
pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A piece of the tar: bytes made here, or a blob's data read from its file.
enum Piece {
    Bytes(Vec<u8>),
    Blob(Blob),
}

/// The archive of one image (see the module's documentation).
pub(crate) struct TarStream {
    pieces: VecDeque<Piece>,
    current: Option<Box<dyn Read + Send>>,
}

/// The tar header of a plain file `name` of `size` bytes, as the archive reader takes one.
fn header(name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    // Every name here is short (`blobs/sha256/<64 hex>` is 77 bytes), so set_path cannot fail.
    h.set_path(name).expect("a short ASCII name");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn padding(size: u64) -> Vec<u8> {
    vec![0; ((BLOCK - size % BLOCK) % BLOCK) as usize]
}

/// The archive name of a blob.
pub(crate) fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

impl TarStream {
    /// The archive of the image whose entry is `index` (the `index.json` to put in) and
    /// whose blobs are `graph`.
    pub(crate) fn new(index: Vec<u8>, graph: &Graph) -> TarStream {
        let mut pieces = VecDeque::new();
        let mut small = |name: &str, data: Vec<u8>| {
            pieces.push_back(Piece::Bytes(header(name, data.len() as u64)));
            let pad = padding(data.len() as u64);
            pieces.push_back(Piece::Bytes(data));
            pieces.push_back(Piece::Bytes(pad));
        };
        small("oci-layout", OCI_LAYOUT.to_vec());
        small("index.json", index);
        for (blob, data) in &graph.docs {
            small(&blob_name(&blob.digest), data.clone());
        }
        for blob in &graph.layers {
            pieces.push_back(Piece::Bytes(header(&blob_name(&blob.digest), blob.size)));
            pieces.push_back(Piece::Blob(blob.clone()));
            pieces.push_back(Piece::Bytes(padding(blob.size)));
        }
        pieces.push_back(Piece::Bytes(vec![0; 2 * BLOCK as usize]));
        TarStream {
            pieces,
            current: None,
        }
    }

    /// Bytes the archive will have.
    pub(crate) fn size(&self) -> u64 {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len() as u64,
                Piece::Blob(b) => b.size,
            })
            .sum()
    }
}

impl Read for TarStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(r) = &mut self.current {
                let n = r.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            self.current = match self.pieces.pop_front() {
                None => return Ok(0),
                Some(Piece::Bytes(b)) => Some(Box::new(Cursor::new(b))),
                Some(Piece::Blob(b)) => Some(Box::new(
                    b.reader().map_err(|e| io::Error::other(format!("{e:#}")))?,
                )),
            };
        }
    }
}
