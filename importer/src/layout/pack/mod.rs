//! A layout bundle packed into one file (`export --pack FILE`), read in place as its
//! directory is: a `.tar` whose root holds `oci-layout`, `index.json` and `images.json`, or
//! a `.tar.zst` with the frame index `export --pack` appends (`index`), or the parts
//! `--split` cut either into (`parts`). A pack is known by what it holds, never by its name
//! alone: a `.tar` without `images.json` stays an archive, read as archives are.
//!
//! A `.tar` is indexed once from its headers, each member then read at its offset; in a
//! `.tar.zst` only the frames an image needs are decompressed, each checked to hold the tar
//! member the index says. Every blob is still checked against its digest (`blobs`).

mod index;
mod parts;

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::archive::{self, Compression, Limits};
#[cfg(feature = "export")]
pub(crate) use index::encode_frames;
pub(crate) use index::Frame;
use index::{At, Index, Member};
#[cfg(feature = "export")]
pub(crate) use parts::part_name;
pub(crate) use parts::{part_of, Parts, PART_INFIX, SUMS_SUFFIX};

/// The files at a pack's root that make a tar a pack.
pub(crate) const ROOT: [&str; 3] = ["oci-layout", "index.json", "images.json"];

/// One pack, its members found (see the module's documentation).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pack {
    /// The pack as the log names it: the file, or the file its parts join into.
    pub(crate) path: PathBuf,
    parts: Parts,
    index: Index,
}

/// A file or a set of parts that may be a pack, found under an images path.
#[derive(Debug)]
pub(crate) struct Candidate {
    /// The file, or the file the parts join into.
    pub(crate) path: PathBuf,
    /// The parts' numbers as written; empty for one file.
    pub(crate) numbers: Vec<String>,
}

/// Whether the file `name` may be a pack (or a part of one): what it holds decides.
pub(crate) fn may_be(name: &str) -> bool {
    let name = part_of(name).map_or(name, |(stem, _)| stem);
    name.ends_with(".tar") || name.ends_with(".tar.zst")
}

/// `files` (regular files named as [`may_be`] allows) as candidates: parts grouped.
pub(crate) fn candidates(files: Vec<PathBuf>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for path in files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match part_of(&name) {
            None => out.push(Candidate {
                path: path.clone(),
                numbers: Vec::new(),
            }),
            Some((stem, number)) => {
                let joined = path.with_file_name(stem);
                match out
                    .iter_mut()
                    .find(|c| c.path == joined && !c.numbers.is_empty())
                {
                    Some(c) => c.numbers.push(number.to_string()),
                    None => out.push(Candidate {
                        path: joined,
                        numbers: vec![number.to_string()],
                    }),
                }
            }
        }
    }
    out
}

impl Candidate {
    /// The files it is made of.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        if self.numbers.is_empty() {
            return vec![self.path.clone()];
        }
        let shown = self.path.display();
        let file = |n: &String| PathBuf::from(format!("{shown}{}{n}", parts::PART_INFIX));
        self.numbers.iter().map(file).collect()
    }

    /// The pack, None when it is a single file that is not one (an archive); parts that do
    /// not join into a pack are an error.
    pub(crate) fn open(&self, limits: Limits) -> Result<Option<Pack>> {
        if self.numbers.is_empty() {
            let parts = Parts::single(&self.path)?;
            return Pack::load(self.path.clone(), parts, limits, false);
        }
        let parts = Parts::split(&self.path, &self.numbers)?;
        match Pack::load(self.path.clone(), parts, limits, true)? {
            Some(pack) => Ok(Some(pack)),
            None => bail!(
                "the parts of {} do not join into a pack (a tar whose root holds oci-layout, \
                 index.json and images.json): is a part missing?",
                self.path.display()
            ),
        }
    }
}

impl Pack {
    /// The pack made of `parts`, None when it is no pack. A packed `.tar.zst` whose index is
    /// broken, or a pack whose root files are refused, is an error; so is a tar whose headers
    /// cannot be read when `parts` can be nothing else (`strict`), else it is left to the
    /// archive reader, which says why.
    fn load(path: PathBuf, parts: Parts, limits: Limits, strict: bool) -> Result<Option<Pack>> {
        let index = match Index::of_frames(&parts, limits.entries_max)? {
            Some(index) => index,
            None => {
                let mut head = Vec::with_capacity(512);
                parts.reader().take(512).read_to_end(&mut head)?;
                if archive::sniff(&head).ok() != Some(Compression::None) {
                    return Ok(None);
                }
                match Index::of_tar(&parts, limits.entries_max) {
                    Ok(index) => index,
                    Err(_) if !strict => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        };
        let pack = Pack { path, parts, index };
        for name in ROOT {
            if let Some(why) = pack.index.bad.get(name) {
                bail!("its {name} is {why}");
            }
            if !pack.index.members.contains_key(name) {
                return Ok(None);
            }
        }
        Ok(Some(pack))
    }

    /// The files the pack is made of.
    pub(crate) fn files(&self) -> impl Iterator<Item = &Path> {
        self.parts.files.iter().map(|(p, _)| p.as_path())
    }

    /// Every member refused, and why.
    pub(crate) fn refused(&self) -> impl Iterator<Item = (&String, &String)> {
        self.index.bad.iter()
    }

    /// The blob members (`blobs/sha256/...`), each with its size.
    pub(crate) fn blobs(&self) -> impl Iterator<Item = (&String, u64)> {
        let blobs = self.index.members.iter();
        blobs
            .filter(|(n, _)| n.starts_with("blobs/sha256/"))
            .map(|(n, m)| (n, m.size))
    }

    /// The member `name`, None when the pack has none; an error when it was refused.
    pub(crate) fn member(&self, name: &str) -> Result<Option<&Member>> {
        if let Some(why) = self.index.bad.get(name) {
            bail!("{}: the member {name} is {why}", self.path.display());
        }
        Ok(self.index.members.get(name))
    }

    /// The size of the member `name` (see [`Pack::member`]).
    pub(crate) fn size(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.member(name)?.map(|m| m.size))
    }

    /// A small member (`oci-layout`, `index.json`), at most `max` bytes.
    pub(crate) fn read(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let shown = self.path.join(name);
        let size = self
            .size(name)?
            .ok_or_else(|| anyhow!("cannot read {}: it is not in the pack", shown.display()))?;
        if size > max {
            bail!(
                "{} is {}, over the {} limit for image metadata: refusing it",
                shown.display(),
                crate::units::human_bytes(size),
                crate::units::human_bytes(max)
            );
        }
        let mut data = Vec::new();
        self.open(name)?
            .read_to_end(&mut data)
            .with_context(|| format!("cannot read {}", shown.display()))?;
        Ok(data)
    }

    /// The member `name`'s data, exactly its size (an error when it ends short).
    pub(crate) fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        let member = self
            .member(name)?
            .ok_or_else(|| anyhow!("{} holds no {name}", self.path.display()))?;
        let mut r = self.parts.reader();
        match &member.at {
            At::Plain(at) => {
                r.seek(SeekFrom::Start(*at))?;
                Ok(Box::new(r.take(member.size)))
            }
            At::Frame(frame) => self.frame(r, name, frame),
        }
    }

    /// A member's zstd frame decompressed, its tar header checked to be the member's.
    fn frame(&self, mut r: parts::Spanning, name: &str, f: &Frame) -> Result<Box<dyn Read + Send>> {
        r.seek(SeekFrom::Start(f.offset))?;
        let shown = self.path.join(name);
        let what = || format!("{}: the frame of the member", shown.display());
        let (compression, mut data) =
            archive::decompress(BufReader::with_capacity(1 << 18, r.take(f.length)))
                .with_context(what)?;
        if compression != Compression::Zstd {
            bail!("{}: the frame of the member is not zstd", shown.display());
        }
        let mut header = vec![0u8; usize::try_from(f.skip)?];
        data.read_exact(&mut header).with_context(what)?;
        let at = header.len().saturating_sub(512);
        let h = tar::Header::from_byte_slice(&header[at..]);
        let path = h.path_bytes();
        let holds = String::from_utf8_lossy(&path);
        if f.skip < 512
            || holds.trim_start_matches("./") != name
            || h.size().ok() != Some(f.size)
            || !h.entry_type().is_file()
        {
            bail!(
                "{}: its frame holds another tar member than the index says ({holds:?}), \
                 refusing it",
                shown.display()
            );
        }
        Ok(Box::new(data.take(f.size)))
    }
}
