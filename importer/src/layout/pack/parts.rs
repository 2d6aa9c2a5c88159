//! A pack's bytes: one file, or the parts `export --split` cut it into (`FILE.part-000`,
//! `FILE.part-001`, ...), read in place as one file by a reader that spans them. A part that
//! is missing is named: a gap in the numbers, or a part `FILE.sha256sums` lists that is not
//! there.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What a part's name ends in, before its number.
pub(crate) const PART_INFIX: &str = ".part-";
/// What the checksums of a pack's parts (or of the pack) are named: `FILE.sha256sums`.
pub(crate) const SUMS_SUFFIX: &str = ".sha256sums";

/// The files of one pack, in order, each with the size it had when it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parts {
    pub(crate) files: Vec<(PathBuf, u64)>,
}

/// The number of a part, when `name` is `STEM.part-NNN`: (STEM, NNN as written).
pub(crate) fn part_of(name: &str) -> Option<(&str, &str)> {
    let (stem, number) = name.rsplit_once(PART_INFIX)?;
    let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    (digits && !stem.is_empty()).then_some((stem, number))
}

/// The name of part `n` of `file` among `count` parts: zero-padded to the same width, at least
/// three digits, so that `cat FILE.part-*` joins them in order.
#[cfg_attr(not(feature = "export"), allow(dead_code))] // written by export only
pub(crate) fn part_name(file: &str, n: usize, count: usize) -> String {
    let width = count.saturating_sub(1).to_string().len().max(3);
    format!("{file}{PART_INFIX}{n:0width$}")
}

impl Parts {
    /// One whole file.
    pub(crate) fn single(path: &Path) -> Result<Parts> {
        let meta = fs::symlink_metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file, refusing it", path.display());
        }
        Ok(Parts {
            files: vec![(path.to_path_buf(), meta.len())],
        })
    }

    /// The parts of `joined` (`DIR/FILE`) found as `numbers` (each as written), checked for
    /// gaps and against `FILE.sha256sums` when it is there.
    pub(crate) fn split(joined: &Path, numbers: &[String]) -> Result<Parts> {
        let shown = joined.display();
        let mut by_n: BTreeMap<usize, &String> = BTreeMap::new();
        for n in numbers {
            let value: usize = n
                .parse()
                .with_context(|| format!("{shown}{PART_INFIX}{n}"))?;
            if by_n.insert(value, n).is_some() {
                bail!("{shown} has two parts numbered {value}: refusing it");
            }
        }
        let count = by_n.keys().next_back().map_or(0, |last| last + 1);
        let width = by_n.values().next().map_or(3, |n| n.len());
        for i in 0..count {
            if !by_n.contains_key(&i) {
                bail!(
                    "{shown}{PART_INFIX}{i:0width$} is missing: the parts of {shown} were not \
                     all copied"
                );
            }
        }
        if let Some(listed) = listed_parts(joined)? {
            for name in listed {
                let path = joined.with_file_name(&name);
                if fs::symlink_metadata(&path).is_err() {
                    bail!(
                        "{} is missing (listed in {}{SUMS_SUFFIX}): the parts of {shown} were \
                         not all copied",
                        path.display(),
                        joined.display()
                    );
                }
            }
        }
        let mut files = Vec::with_capacity(count);
        for n in by_n.values() {
            let path = PathBuf::from(format!("{shown}{PART_INFIX}{n}"));
            files.extend(Parts::single(&path)?.files);
        }
        Ok(Parts { files })
    }

    /// The bytes of every part.
    pub(crate) fn len(&self) -> u64 {
        self.files.iter().map(|(_, size)| size).sum()
    }

    /// A reader over every part as one file, at its start.
    pub(crate) fn reader(&self) -> Spanning {
        Spanning {
            parts: self.clone(),
            pos: 0,
            open: None,
        }
    }
}

/// The part names `FILE.sha256sums` lists, if it is there.
fn listed_parts(joined: &Path) -> Result<Option<Vec<String>>> {
    let sums = PathBuf::from(format!("{}{SUMS_SUFFIX}", joined.display()));
    let text = match fs::read_to_string(&sums) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", sums.display())),
    };
    let names = text
        .lines()
        .filter_map(|l| l.split_once("  ").or_else(|| l.split_once(" *")))
        .map(|(_, name)| name.to_string())
        .filter(|name| !name.contains('/') && part_of(name).is_some())
        .collect();
    Ok(Some(names))
}

/// Every part of a pack read as one file (see [`Parts::reader`]); a part that changed size
/// since it was found is an error naming it.
pub(crate) struct Spanning {
    parts: Parts,
    pos: u64,
    /// The part open, its index and where it starts.
    open: Option<(usize, u64, File)>,
}

impl Spanning {
    /// The part holding byte `pos`, opened at it; None past the end.
    fn at(&mut self) -> io::Result<Option<(&mut File, u64)>> {
        let mut start = 0;
        let mut found = None;
        for (i, (_, size)) in self.parts.files.iter().enumerate() {
            if self.pos < start + size {
                found = Some((i, start, start + size));
                break;
            }
            start += size;
        }
        let Some((i, start, end)) = found else {
            return Ok(None);
        };
        if !matches!(&self.open, Some((j, _, _)) if *j == i) {
            let (path, size) = &self.parts.files[i];
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)?;
            if file.metadata()?.len() != *size {
                return Err(io::Error::other(format!(
                    "{} changed while it was read (it was {size} bytes)",
                    path.display()
                )));
            }
            self.open = Some((i, start, file));
        }
        let (_, start, file) = self.open.as_mut().expect("just opened");
        file.seek(SeekFrom::Start(self.pos - *start))?;
        Ok(Some((file, end - self.pos)))
    }
}

impl Read for Spanning {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let Some((file, left)) = self.at()? else {
            return Ok(0);
        };
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            let (path, _) = &self.parts.files[self.open.as_ref().map_or(0, |o| o.0)];
            return Err(io::Error::other(format!(
                "{} ends short of the size it had",
                path.display()
            )));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Spanning {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.parts.len();
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::other("a seek before the start of the pack"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("oi-parts-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn parts_are_read_as_one_file_and_a_missing_one_is_named() {
        let d = dir("span");
        let whole: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for (i, chunk) in whole.chunks(300).enumerate() {
            fs::write(d.join(part_name("b.tar", i, 4)), chunk).unwrap();
        }
        assert_eq!(part_name("b.tar", 3, 4), "b.tar.part-003");
        assert_eq!(part_name("b.tar", 7, 1234), "b.tar.part-0007");
        assert_eq!(part_of("b.tar.part-012"), Some(("b.tar", "012")));
        assert_eq!(part_of("b.tar.part-"), None);
        let numbers: Vec<String> = ["000", "001", "002", "003"].map(String::from).to_vec();
        let parts = Parts::split(&d.join("b.tar"), &numbers).unwrap();
        assert_eq!(parts.len(), 1000);
        let mut all = Vec::new();
        parts.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all, whole);
        let mut r = parts.reader();
        r.seek(SeekFrom::Start(295)).unwrap();
        let mut ten = [0u8; 10];
        r.read_exact(&mut ten).unwrap();
        assert_eq!(ten, whole[295..305]);
        // A gap is named.
        let gap = ["000", "002", "003"].map(String::from).to_vec();
        let err = format!("{:#}", Parts::split(&d.join("b.tar"), &gap).unwrap_err());
        assert!(err.contains("b.tar.part-001 is missing"), "{err}");
        // So is the last part, when the checksums list it.
        fs::write(
            d.join("b.tar.sha256sums"),
            "aa  b.tar.part-000\nbb  b.tar.part-001\ncc  b.tar.part-002\ndd  b.tar.part-003\n",
        )
        .unwrap();
        fs::remove_file(d.join("b.tar.part-003")).unwrap();
        let three = ["000", "001", "002"].map(String::from).to_vec();
        let err = format!("{:#}", Parts::split(&d.join("b.tar"), &three).unwrap_err());
        assert!(
            err.contains("b.tar.part-003 is missing (listed in"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&d);
    }
}
