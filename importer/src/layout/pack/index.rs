//! Where each member of a pack is, found once: for a `.tar` from its tar headers (read, the
//! data seeked past), for a `.tar.zst` from the index `export --pack` appends as a zstd
//! skippable frame, which every other zstd reader skips.
//!
//! The frame index: each tar member (its header, data and padding) is a zstd frame of its
//! own, then the end-of-archive blocks, then a skippable frame (magic 0x184D2A5E) holding JSON
//! `{"version":1,"members":[{"name","offset","length","skip","size"}]}` (the frame's offset
//! and compressed length in the file, the bytes of tar header before the data, the data's
//! size), followed by the JSON's length (u64, little endian) and `OIPACKv1`, so that it is
//! found from the end.
//!
//! Hostile input is refused by name: a member path that is absolute or holds `..`, a
//! symlink or hard link member, a device or FIFO, a name given twice, a frame outside the
//! file. Such a member is never read; what needs it fails, naming it.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use super::parts::Parts;

/// The magic of the skippable frame that holds the index.
pub(crate) const INDEX_MAGIC: u32 = 0x184D_2A5E;
/// The last bytes of a packed `.tar.zst`.
pub(crate) const INDEX_TAG: &[u8; 8] = b"OIPACKv1";
/// The largest index read: far above what the limit on entries allows.
const INDEX_MAX: u64 = 64 << 20;

/// Where one member's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its data's size.
    pub(crate) size: u64,
    /// In a tar: where its data starts. In a frame index: its frame.
    pub(crate) at: At,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum At {
    Plain(u64),
    Frame(Frame),
}

/// A member's zstd frame, as the index gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Frame {
    pub(crate) name: String,
    pub(crate) offset: u64,
    pub(crate) length: u64,
    pub(crate) skip: u64,
    pub(crate) size: u64,
}

#[derive(Serialize, Deserialize)]
struct FrameIndex {
    version: u32,
    members: Vec<Frame>,
}

/// Every member found, and the hostile ones with the reason each is refused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Index {
    pub(crate) members: BTreeMap<String, Member>,
    /// Members refused, by name (as written): never read.
    pub(crate) bad: BTreeMap<String, String>,
}

/// A member's name with a leading `./` taken off, or why it is refused.
fn clean(name: &str) -> Result<String, String> {
    let name = name.trim_start_matches("./");
    if name.starts_with('/') {
        return Err("an absolute path".into());
    }
    if name.split('/').any(|c| c == "..") {
        return Err("a path with `..`".into());
    }
    Ok(name.trim_end_matches('/').to_string())
}

impl Index {
    fn add(&mut self, name: &str, member: Member) {
        match clean(name) {
            Err(why) => self.refuse(name, &format!("{why}, refusing it")),
            Ok(name) if self.bad.contains_key(&name) => {}
            Ok(name) => {
                if self.members.remove(&name).is_some() {
                    self.refuse(&name, "given twice in the pack, refusing both");
                } else {
                    self.members.insert(name, member);
                }
            }
        }
    }

    fn refuse(&mut self, name: &str, why: &str) {
        let name = clean(name).unwrap_or_else(|_| name.to_string());
        self.members.remove(&name);
        self.bad.insert(name, why.to_string());
    }

    /// The members of a tar, from its headers (the data seeked past), at most `max` entries.
    pub(crate) fn of_tar(parts: &Parts, max: u64) -> Result<Index> {
        let len = parts.len();
        let mut headers = Headers {
            r: parts.reader(),
            at: 0,
            len,
        };
        let mut index = Index::default();
        let mut count = 0u64;
        while let Some((name, kind, size)) = headers.next()? {
            count += 1;
            if count > max {
                bail!("it holds more than {max} entries, over the limit for one archive");
            }
            let at = headers.at;
            headers.at = at + size.div_ceil(512) * 512;
            if headers.at > len {
                bail!("the member {name:?} runs past the end of the file: is it cut short?");
            }
            use tar::EntryType as T;
            match kind {
                T::Regular | T::Continuous => index.add(
                    &name,
                    Member {
                        size,
                        at: At::Plain(at),
                    },
                ),
                T::Directory => {
                    if let Err(why) = clean(&name) {
                        index.refuse(&name, &format!("{why}, refusing it"));
                    }
                }
                T::Symlink => index.refuse(&name, "a symlink member, refusing it"),
                T::Link => index.refuse(&name, "a hard link member, refusing it"),
                other => index.refuse(&name, &format!("a member of type {other:?}, refusing it")),
            }
        }
        Ok(index)
    }

    /// The members of a packed `.tar.zst`, from its frame index; None when the file has none
    /// (a `.tar.zst` not written by `export --pack`).
    pub(crate) fn of_frames(parts: &Parts, max: u64) -> Result<Option<Index>> {
        let len = parts.len();
        if len < 16 {
            return Ok(None);
        }
        let mut r = parts.reader();
        let mut tail = [0u8; 16];
        r.seek(SeekFrom::Start(len - 16))?;
        r.read_exact(&mut tail)?;
        if &tail[8..] != INDEX_TAG {
            return Ok(None);
        }
        let json_len = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
        if json_len > INDEX_MAX || json_len + 24 > len {
            bail!("its frame index says it is {json_len} bytes, which the file cannot hold");
        }
        let start = len - 24 - json_len;
        let mut head = [0u8; 8];
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(&mut head)?;
        let magic = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let size = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if magic != INDEX_MAGIC || u64::from(size) != json_len + 16 {
            bail!("its frame index is not in a skippable frame of its size");
        }
        let mut json = Vec::new();
        r.take(json_len).read_to_end(&mut json)?;
        let parsed: FrameIndex = serde_json::from_slice(&json)
            .map_err(|e| anyhow!("its frame index is not valid: {e}"))?;
        if parsed.version != 1 {
            bail!(
                "its frame index is version {}; this importer reads version 1",
                parsed.version
            );
        }
        if parsed.members.len() as u64 > max {
            bail!("its frame index lists more than {max} members, over the limit");
        }
        let mut index = Index::default();
        for f in parsed.members {
            let end = f.offset.checked_add(f.length);
            if end.is_none_or(|e| e > start) || f.skip > 64 << 10 {
                let why = "a frame the index places outside the file, refusing it";
                index.refuse(&f.name, why);
                continue;
            }
            let name = f.name.clone();
            let member = Member {
                size: f.size,
                at: At::Frame(f),
            };
            index.add(&name, member);
        }
        Ok(Some(index))
    }
}

/// A tar's headers read one after another, each member's data seeked past: what is needed of
/// a tar to index it. GNU long names (`L`) and pax `path` records give a member its name;
/// pax global headers are passed over.
struct Headers {
    r: super::parts::Spanning,
    /// Where the next header is (after [`Headers::next`]: where its member's data is).
    at: u64,
    len: u64,
}

impl Headers {
    fn block(&mut self) -> Result<[u8; 512]> {
        let mut b = [0u8; 512];
        if self.at + 512 > self.len {
            bail!("it ends without the tar's end-of-archive blocks: is it cut short?");
        }
        self.r.seek(SeekFrom::Start(self.at))?;
        self.r.read_exact(&mut b)?;
        self.at += 512;
        Ok(b)
    }

    /// The data of a long name or pax member of `size` bytes (at most 64 KiB).
    fn data(&mut self, size: u64) -> Result<Vec<u8>> {
        if size > 64 << 10 {
            bail!("a tar long name or pax header of {size} bytes: refusing it");
        }
        let mut data = vec![0u8; size as usize];
        self.r.seek(SeekFrom::Start(self.at))?;
        self.r.read_exact(&mut data)?;
        self.at += size.div_ceil(512) * 512;
        Ok(data)
    }

    /// The next member: its name, type and size; None at the end-of-archive blocks.
    fn next(&mut self) -> Result<Option<(String, tar::EntryType, u64)>> {
        let mut long: Option<String> = None;
        loop {
            let b = self.block()?;
            if b.iter().all(|&x| x == 0) {
                self.block()?;
                return Ok(None);
            }
            let h = tar::Header::from_byte_slice(&b);
            let sum = h.cksum().ok();
            let computed: u32 = b
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(x)
                    }
                })
                .sum();
            if sum != Some(computed) {
                bail!("a tar header at byte {} is not valid", self.at - 512);
            }
            let size = h
                .entry_size()
                .map_err(|e| anyhow!("a tar header at byte {}: {e}", self.at - 512))?;
            match h.entry_type() {
                tar::EntryType::GNULongName => {
                    let data = self.data(size)?;
                    let name = data.split(|&x| x == 0).next().unwrap_or_default();
                    long = Some(String::from_utf8_lossy(name).into_owned());
                }
                tar::EntryType::XHeader => {
                    let data = self.data(size)?;
                    if let Some(path) = pax_path(&data) {
                        long = Some(path);
                    }
                }
                tar::EntryType::XGlobalHeader | tar::EntryType::GNULongLink => {
                    self.data(size)?;
                }
                kind => {
                    let name = long
                        .take()
                        .unwrap_or_else(|| String::from_utf8_lossy(&h.path_bytes()).into_owned());
                    return Ok(Some((name, kind, size)));
                }
            }
        }
    }
}

/// The `path` record of pax extended header data (`LEN path=VALUE\n` records).
fn pax_path(mut data: &[u8]) -> Option<String> {
    let mut path = None;
    while !data.is_empty() {
        let space = data.iter().position(|&x| x == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        let record = data.get(space + 1..len)?;
        if let Some(value) = record.strip_prefix(b"path=") {
            let value = value.strip_suffix(b"\n").unwrap_or(value);
            path = Some(String::from_utf8_lossy(value).into_owned());
        }
        data = &data[len..];
    }
    path
}

/// The frame index of `frames`, as the last bytes of a packed `.tar.zst` (see the module's
/// documentation).
#[cfg_attr(not(feature = "export"), allow(dead_code))] // written by export only
pub(crate) fn encode_frames(frames: Vec<Frame>) -> Vec<u8> {
    let json = serde_json::to_vec(&FrameIndex {
        version: 1,
        members: frames,
    })
    .expect("the index serialises");
    let payload = json.len() as u64 + 16;
    let mut out = Vec::with_capacity(json.len() + 24);
    out.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
    out.extend_from_slice(&u32::try_from(payload).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(INDEX_TAG);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(label: &str, data: &[u8]) -> (PathBuf, Parts) {
        let p = std::env::temp_dir().join(format!("oi-index-{label}-{}", std::process::id()));
        std::fs::write(&p, data).unwrap();
        let parts = Parts::single(&p).unwrap();
        (p, parts)
    }

    fn entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        if kind == tar::EntryType::Symlink || kind == tar::EntryType::Link {
            h.set_link_name("oci-layout").unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn a_tar_is_indexed_from_its_headers_and_hostile_members_are_refused_by_name() {
        use tar::EntryType as T;
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "./oci-layout", T::Regular, b"{}");
        entry(&mut b, "blobs/", T::Directory, b"");
        entry(&mut b, "blobs/sha256/aa", T::Regular, &[7u8; 700]);
        entry(&mut b, "../evil", T::Regular, b"x");
        entry(&mut b, "/etc/passwd", T::Regular, b"x");
        entry(&mut b, "blobs/sha256/link", T::Symlink, b"");
        entry(&mut b, "blobs/sha256/hard", T::Link, b"");
        entry(&mut b, "index.json", T::Regular, b"[1]");
        entry(&mut b, "index.json", T::Regular, b"[2]");
        let data = b.into_inner().unwrap();
        let (p, parts) = file("tar", &data);
        let index = Index::of_tar(&parts, 100).unwrap();
        let names: Vec<&str> = index.members.keys().map(String::as_str).collect();
        assert_eq!(names, ["blobs/sha256/aa", "oci-layout"]);
        let m = &index.members["blobs/sha256/aa"];
        let At::Plain(at) = m.at else { panic!() };
        assert_eq!(
            (m.size, &data[at as usize..at as usize + 700]),
            (700, &[7u8; 700][..])
        );
        let bad: Vec<(&str, &str)> = index
            .bad
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            bad,
            [
                ("../evil", "a path with `..`, refusing it"),
                ("/etc/passwd", "an absolute path, refusing it"),
                ("blobs/sha256/hard", "a hard link member, refusing it"),
                ("blobs/sha256/link", "a symlink member, refusing it"),
                ("index.json", "given twice in the pack, refusing both"),
            ]
        );
        // Cut short: named.
        let (p2, cut) = file("cut", &data[..1536]);
        let err = format!("{:#}", Index::of_tar(&cut, 100).unwrap_err());
        assert!(err.contains("cut short"), "{err}");
        assert!(Index::of_tar(&parts, 3).is_err());
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(p2);
    }

    #[test]
    fn the_frame_index_is_found_from_the_end_and_a_frame_outside_the_file_is_refused() {
        let frame = |name: &str, offset, length| Frame {
            name: name.into(),
            offset,
            length,
            skip: 512,
            size: 3,
        };
        let mut data = vec![0u8; 100];
        data.extend(encode_frames(vec![
            frame("oci-layout", 0, 50),
            frame("index.json", 50, 50),
            frame("blobs/sha256/aa", 90, 500),
            frame("../x", 0, 10),
            frame("dup", 0, 10),
            frame("dup", 10, 10),
        ]));
        let (p, parts) = file("frames", &data);
        let index = Index::of_frames(&parts, 100).unwrap().unwrap();
        let names: Vec<&str> = index.members.keys().map(String::as_str).collect();
        assert_eq!(names, ["index.json", "oci-layout"]);
        let bad: Vec<&str> = index.bad.keys().map(String::as_str).collect();
        assert_eq!(bad, ["../x", "blobs/sha256/aa", "dup"]);
        assert!(index.bad["blobs/sha256/aa"].contains("outside the file"));
        // A file without the index is no pack; a broken index is an error.
        let (p2, plain) = file("plain", &[1u8; 100]);
        assert_eq!(Index::of_frames(&plain, 100).unwrap(), None);
        let mut broken = data.clone();
        let n = broken.len();
        broken[n - 16] = 0xff;
        let (p3, broken) = file("broken", &broken);
        assert!(Index::of_frames(&broken, 100).is_err());
        let _ = [p, p2, p3].map(std::fs::remove_file);
    }

    #[test]
    fn a_long_name_is_read_from_a_gnu_long_name_or_a_pax_path_record() {
        let long = format!("blobs/sha256/{}", "a".repeat(120));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let pax_name = format!("blobs/sha256/{}", "b".repeat(110));
        let record = format!("path={pax_name}\n");
        let record = format!("{} {record}", record.len() + 4);
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(record.len() as u64);
        x.set_path("PaxHeaders/x").unwrap();
        x.set_cksum();
        b.append(&x, record.as_bytes()).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("short-name").unwrap();
        h.set_size(2);
        h.set_cksum();
        b.append(&h, &b"xy"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let (p, parts) = file("long", &data);
        let index = Index::of_tar(&parts, 100).unwrap();
        let names: Vec<&str> = index.members.keys().map(String::as_str).collect();
        assert_eq!(names, [long.as_str(), pax_name.as_str()]);
        assert_eq!(index.members[&pax_name].size, 2);
        let _ = std::fs::remove_file(p);
    }
}
