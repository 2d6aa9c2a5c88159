//! `export --pack FILE`: the layout bundle, once committed, packed into one file to carry: a
//! tar of `oci-layout`, `index.json`, `images.json`, `SHA256SUMS`, with `--sign-key` the
//! bundle's identity and signatures under `.offline-images/`, then every blob under
//! `blobs/sha256/`. A `.tar` is plain; a `.tar.zst` stays a normal `.tar.zst` (`zstd -dc FILE
//! | tar t` reads it) but writes each tar member as a zstd frame of its own and appends an
//! index of the frames in a zstd skippable frame (`layout::pack`), so the importer
//! decompresses only the frames an image needs.
//!
//! The pack is written to hidden temp files beside FILE, synced, and renamed only when
//! complete, so a killed export never leaves a half file under FILE's name. With `--split
//! SIZE` it is cut into `FILE.part-000`, `FILE.part-001`, ... of at most SIZE each (`cat
//! FILE.part-* > FILE` joins them); `FILE.sha256sums` lists the SHA-256 of FILE, or of each
//! part, for `sha256sum -c`. Parts or a whole FILE an earlier run left are removed, so the
//! importer never finds the bundle twice.

use std::fs::{self, File};
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::settings::PackTo;
use crate::archive::human_bytes;
use crate::bundle::{self, SUMS_FILE};
use crate::layout::pack::{encode_frames, part_name, Frame, ROOT, SUMS_SUFFIX};
use crate::signing;

/// The members of the layout bundle in `dir`, in the order they are packed: the root files,
/// the signature files when this run `signed` it (`.offline-images/bundle.identity` and its
/// signatures: an identity an earlier run left would name other files), then the blobs in
/// name order.
fn members(dir: &Path, signed: bool) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for name in ROOT.iter().copied().chain([SUMS_FILE]) {
        let path = dir.join(name);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            out.push((name.to_string(), path));
        } else if name != SUMS_FILE {
            bail!(
                "{} is not there: the layout bundle cannot be packed",
                path.display()
            );
        }
    }
    if signed {
        for name in [
            signing::IDENTITY,
            signing::SIGNATURE,
            signing::SIGSTORE_BUNDLE,
        ] {
            let path = signing::path(dir, name);
            if !path.is_file() {
                bail!(
                    "{} is not there: the signed bundle cannot be packed",
                    path.display()
                );
            }
            out.push((format!("{}/{name}", crate::bundled::DIR), path));
        }
    }
    let blobs = dir.join("blobs/sha256");
    let mut names: Vec<String> = fs::read_dir(&blobs)
        .with_context(|| format!("cannot read {}", blobs.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    out.extend(
        names
            .into_iter()
            .map(|n| (format!("blobs/sha256/{n}"), blobs.join(n))),
    );
    Ok(out)
}

/// The ustar header of the member `name` of `size` bytes (every name is short).
fn header(name: &str, size: u64) -> Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .with_context(|| format!("{name} cannot be a tar member name"))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// Where the pack's bytes go: one temp file, or a temp file per part of at most `split`
/// bytes, each hashed as it is written. The first error is kept (the zstd encoder cannot
/// take one) and returned by [`Out::finish`].
struct Out {
    file: PathBuf,
    split: Option<u64>,
    temps: Vec<(PathBuf, String)>,
    current: Option<(File, Sha256, u64)>,
    written: u64,
    error: Option<io::Error>,
}

impl Out {
    fn new(file: &Path, split: Option<u64>) -> Out {
        Out {
            file: file.to_path_buf(),
            split,
            temps: Vec::new(),
            current: None,
            written: 0,
            error: None,
        }
    }

    fn temp(&self, n: usize) -> PathBuf {
        let name = self.file.file_name().unwrap_or_default().to_string_lossy();
        let id = std::process::id();
        self.file
            .with_file_name(format!(".{name}.partial-{id}-{n}"))
    }

    /// Closes the part being written: synced, its hash kept.
    fn close(&mut self) -> io::Result<()> {
        if let Some((file, hasher, _)) = self.current.take() {
            file.sync_all()?;
            let n = self.temps.len();
            self.temps
                .push((self.temp(n), crate::digest::hex(&hasher.finalize())));
        }
        Ok(())
    }

    fn put(&mut self, buf: &[u8]) -> io::Result<usize> {
        let full = |c: &Option<(File, Sha256, u64)>| {
            c.as_ref().is_some_and(|(_, _, n)| Some(*n) == self.split)
        };
        if full(&self.current) {
            self.close()?;
        }
        if self.current.is_none() {
            let file = File::create(self.temp(self.temps.len()))?;
            self.current = Some((file, Sha256::new(), 0));
        }
        let (file, hasher, n) = self.current.as_mut().expect("just opened");
        let room = self.split.map_or(u64::MAX, |s| s - *n);
        let take = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let wrote = file.write(&buf[..take])?;
        hasher.update(&buf[..wrote]);
        *n += wrote as u64;
        self.written += wrote as u64;
        Ok(wrote)
    }

    /// The temp files and their hashes, once all is on disk.
    fn finish(mut self) -> Result<Vec<(PathBuf, String)>> {
        if let Some(e) = self.error.take() {
            self.discard();
            return Err(anyhow!(e))
                .with_context(|| format!("cannot write {}", self.file.display()));
        }
        if let Err(e) = self.close() {
            self.discard();
            return Err(anyhow!(e))
                .with_context(|| format!("cannot write {}", self.file.display()));
        }
        Ok(std::mem::take(&mut self.temps))
    }

    fn discard(&mut self) {
        self.current = None;
        for n in 0..=self.temps.len() {
            let _ = fs::remove_file(self.temp(n));
        }
    }
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_some() || buf.is_empty() {
            return Ok(buf.len());
        }
        match self.put(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.error = Some(e);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader whose first error is kept rather than given to the zstd encoder (which cannot
/// take one): it then ends, and the error is returned after the frame.
struct Kept<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: Read> Read for Kept<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        self.inner.read(buf).or_else(|e| {
            self.error = Some(e);
            Ok(0)
        })
    }
}

/// `src` as one zstd frame into `out`. The one place the encoder is called, with these two
/// types alone, so that it is compiled once into the binary.
fn zstd_frame(src: &mut dyn Read, out: &mut dyn Write) {
    ruzstd::encoding::compress(src, out, ruzstd::encoding::CompressionLevel::Fastest);
}

/// One member into `out`: its header, data and padding, as a zstd frame of its own when
/// `zstd`; the frame it became.
fn member(out: &mut Out, name: &str, path: &Path, zstd: bool) -> Result<Option<Frame>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let bytes = Cursor::new(header(name, size)?)
        .chain(file.take(size))
        .chain(Cursor::new(vec![0u8; padding(size)]));
    let offset = out.written;
    let mut kept = Kept {
        inner: bytes,
        error: None,
    };
    if zstd {
        zstd_frame(&mut kept, out);
    } else {
        io::copy(&mut kept, out)?;
    }
    if let Some(e) = kept.error {
        return Err(anyhow!(e)).with_context(|| format!("cannot read {}", path.display()));
    }
    let frame = zstd.then(|| Frame {
        name: name.to_string(),
        offset,
        length: out.written - offset,
        skip: 512,
        size,
    });
    Ok(frame)
}

/// Before anything is exported: FILE must go to a directory that exists, outside the bundle
/// directory `dir` (where the import would find the bundle twice), or it is a usage error.
pub fn check_place(dir: &Path, to: &PackTo) -> Result<()> {
    let file = std::path::absolute(&to.file).unwrap_or_else(|_| to.file.clone());
    let parent = file.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(crate::exit::usage(format!(
            "--pack {}: the directory {} does not exist",
            to.file.display(),
            parent.display()
        )));
    }
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let real = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if real(parent).starts_with(real(&dir)) {
        return Err(crate::exit::usage(format!(
            "--pack {} is inside the bundle directory {}: write it elsewhere",
            to.file.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Pack the layout bundle in `dir` as `to` says (see the module's documentation), with its
/// signature when this run `signed` it.
pub fn pack(dir: &Path, to: &PackTo, signed: bool) -> Result<()> {
    let members = members(dir, signed)?;
    let mut out = Out::new(&to.file, to.split);
    let mut frames = Vec::new();
    let written = (|| -> Result<()> {
        for (name, path) in &members {
            frames.extend(member(&mut out, name, path, to.zstd)?);
        }
        let end = vec![0u8; 1024];
        if to.zstd {
            zstd_frame(&mut end.as_slice(), &mut out);
            out.write_all(&encode_frames(std::mem::take(&mut frames)))?;
        } else {
            out.write_all(&end)?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        out.discard();
        return Err(e);
    }
    let size = out.written;
    let temps = out.finish()?;
    let names = put_in_place(&to.file, temps, to.split.is_some())?;
    log(dir, to, &names, size, members.len());
    Ok(())
}

/// The temp files renamed to FILE, or to its parts; what an earlier run left under the other
/// names removed; `FILE.sha256sums` written. The names written, each with its hash.
fn put_in_place(
    file: &Path,
    temps: Vec<(PathBuf, String)>,
    split: bool,
) -> Result<Vec<(String, String)>> {
    let name = file
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let count = temps.len();
    let mut names = Vec::with_capacity(count);
    for (i, (temp, hash)) in temps.into_iter().enumerate() {
        let final_name = if split {
            part_name(&name, i, count)
        } else {
            name.clone()
        };
        let dest = file.with_file_name(&final_name);
        fs::rename(&temp, &dest)
            .with_context(|| format!("cannot rename {} to {}", temp.display(), dest.display()))?;
        names.push((final_name, hash));
    }
    remove_stale(file, &name, &names);
    let text: String = names.iter().map(|(n, h)| format!("{h}  {n}\n")).collect();
    let sums = file.with_file_name(format!("{name}{SUMS_SUFFIX}"));
    bundle::write_atomic(&sums, text.as_bytes())?;
    Ok(names)
}

/// FILE or its parts from an earlier run that this one did not write.
fn remove_stale(file: &Path, name: &str, written: &[(String, String)]) {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let ours = n == name || crate::layout::pack::part_of(&n).is_some_and(|(s, _)| s == name);
        if ours && !written.iter().any(|(w, _)| *w == n) {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn log(dir: &Path, to: &PackTo, names: &[(String, String)], size: u64, members: usize) {
    let sums = format!("{}{SUMS_SUFFIX}", to.file.display());
    if let Some(split) = to.split {
        let first = to.file.with_file_name(&names[0].0);
        eprintln!(
            "offline-images: packed {} ({members} files, {}) into {} part(s) of at most {}, {} \
             to {}; checksums in {sums}",
            dir.display(),
            human_bytes(size),
            names.len(),
            human_bytes(split),
            first.display(),
            names.last().map_or("", |(n, _)| n.as_str()),
        );
    } else {
        eprintln!(
            "offline-images: packed {} ({members} files) into {} ({}); checksum in {sums}",
            dir.display(),
            to.file.display(),
            human_bytes(size)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::LayoutSource;
    use crate::source::{Source, Unit};

    fn temp(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("oi-pack-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("bundle/blobs/sha256")).unwrap();
        fs::create_dir_all(d.join("carry")).unwrap();
        d
    }

    /// A layout bundle of two one-layer images in `dir` (images.json's content is not read).
    fn layout(dir: &Path) {
        let blob = |data: &[u8]| {
            let hex = crate::digest::hex(&Sha256::digest(data));
            fs::write(dir.join("blobs/sha256").join(&hex), data).unwrap();
            serde_json::json!({"digest": format!("sha256:{hex}"), "size": data.len()})
        };
        let mut entries = Vec::new();
        for (name, text) in [("a", "A"), ("b", "B")] {
            let host = crate::archive::Platform::host();
            let config = serde_json::json!({"architecture": host.architecture, "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []}});
            let config = blob(config.to_string().as_bytes());
            let layer = blob(text.repeat(300_000).as_bytes());
            let manifest = serde_json::json!({"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config, "layers": [layer]});
            let mut desc = blob(manifest.to_string().as_bytes());
            desc["annotations"] =
                serde_json::json!({"org.opencontainers.image.ref.name": format!("x.io/{name}:1")});
            entries.push(desc);
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": entries});
        fs::write(dir.join("index.json"), index.to_string()).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        fs::write(dir.join("images.json"), b"{}").unwrap();
        fs::write(dir.join("SHA256SUMS"), b"").unwrap();
    }

    fn streams(source: &LayoutSource) -> Vec<(String, Vec<u8>)> {
        let read = |u: &Unit| {
            let mut out = Vec::new();
            let read = source.open(u).and_then(|o| {
                let mut r = o.reader;
                r.read_to_end(&mut out).map_err(Into::into)
            });
            read.map(|_| out).map_err(|e| format!("{e:#}"))
        };
        source
            .units()
            .iter()
            .map(|u| {
                (
                    u.name.split_once("index.json").unwrap().1.to_string(),
                    read(u),
                )
            })
            .map(|(n, r)| (n, r.unwrap_or_else(|e| e.into_bytes())))
            .collect()
    }

    #[test]
    fn a_pack_reads_as_its_directory_whole_compressed_or_in_parts() {
        let d = temp("round");
        layout(&d.join("bundle"));
        let from_dir = streams(&LayoutSource::find(&d.join("bundle")));
        assert_eq!(from_dir.len(), 2);
        for (file, zstd, split) in [
            ("b.tar", false, None),
            ("b.tar.zst", true, None),
            ("s.tar", false, Some(200_000)),
            ("s.tar.zst", true, Some(65_536)),
        ] {
            let to = PackTo {
                file: d.join("carry").join(file),
                zstd,
                split,
            };
            pack(&d.join("bundle"), &to, false).unwrap();
            let source = LayoutSource::find(&d.join("carry"));
            assert!(source.refused().is_empty(), "{:?}", source.refused());
            let got = streams(&source);
            let ours = source
                .units()
                .iter()
                .filter(|u| u.name.starts_with(&format!("{file}/")))
                .count();
            assert_eq!(ours, 2, "{file}");
            for item in &from_dir {
                assert!(got.contains(item), "{file}: {}", item.0);
            }
            assert!(source.holds(&to.file) || split.is_some());
        }
        // The parts are named so that `cat` joins them in order, with their checksums.
        let sums = fs::read_to_string(d.join("carry/s.tar.sha256sums")).unwrap();
        assert!(sums.contains("  s.tar.part-000\n") && sums.contains("  s.tar.part-002\n"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_part_and_a_corrupt_blob_are_named_and_the_other_image_reads() {
        let d = temp("hostile");
        layout(&d.join("bundle"));
        let to = PackTo {
            file: d.join("carry/s.tar"),
            zstd: false,
            split: Some(100_000),
        };
        pack(&d.join("bundle"), &to, false).unwrap();
        fs::remove_file(d.join("carry/s.tar.part-003")).unwrap();
        let source = LayoutSource::find(&d.join("carry"));
        assert!(source.units().is_empty());
        let why = &source.refused()[0].reason;
        assert!(why.contains("s.tar.part-003 is missing"), "{why}");
        // One layer's bytes changed in a whole pack: that image fails, the other reads.
        let to = PackTo {
            file: d.join("carry/s.tar"),
            zstd: false,
            split: None,
        };
        pack(&d.join("bundle"), &to, false).unwrap();
        let mut data = fs::read(&to.file).unwrap();
        let at = data.windows(1000).position(|w| w == [b'A'; 1000]).unwrap();
        data[at] = b'Z';
        fs::write(&to.file, &data).unwrap();
        let source = LayoutSource::find(&d.join("carry"));
        let got = streams(&source);
        let texts: Vec<String> = got
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
            .collect();
        assert!(texts.iter().any(|t| t.contains("is corrupt")), "{texts:?}");
        assert_eq!(texts.iter().filter(|t| t.contains("is corrupt")).count(), 1);
        let _ = fs::remove_dir_all(&d);
    }

    /// The packed `.tar` at `file` rebuilt with hostile members: `../evil`, image b's layer as
    /// a symlink, a name given twice.
    fn hostile(file: &Path, b_layer: &str) {
        let data = fs::read(file).unwrap();
        let mut out = tar::Builder::new(Vec::new());
        let mut archive = tar::Archive::new(data.as_slice());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name == b_layer {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                out.append_link(&mut h, &name, "/etc/passwd").unwrap();
                continue;
            }
            let mut body = Vec::new();
            entry.read_to_end(&mut body).unwrap();
            out.append_data(&mut entry.header().clone(), &name, body.as_slice())
                .unwrap();
        }
        for name in ["extra", "extra"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            out.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.as_gnu_mut().unwrap().name[..7].copy_from_slice(b"../evil");
        h.set_cksum();
        out.append(&h, &b"x"[..]).unwrap();
        fs::write(file, out.into_inner().unwrap()).unwrap();
    }

    #[test]
    fn hostile_members_are_refused_by_name_and_the_image_that_needs_none_reads() {
        let d = temp("members");
        layout(&d.join("bundle"));
        let to = PackTo {
            file: d.join("carry/h.tar"),
            zstd: false,
            split: None,
        };
        pack(&d.join("bundle"), &to, false).unwrap();
        let hex = crate::digest::hex(&Sha256::digest("B".repeat(300_000).as_bytes()));
        hostile(&to.file, &format!("blobs/sha256/{hex}"));
        let source = LayoutSource::find(&d.join("carry"));
        let mut refused: Vec<String> = source.refused().iter().map(|r| r.reason.clone()).collect();
        refused.sort();
        assert_eq!(
            refused,
            [
                "the member \"../evil\" is a path with `..`, refusing it".to_string(),
                format!("the member \"blobs/sha256/{hex}\" is a symlink member, refusing it"),
                "the member \"extra\" is given twice in the pack, refusing both".to_string(),
            ]
        );
        assert!(source.refused().iter().all(|r| r.name == "h.tar"));
        let got = streams(&source);
        assert_eq!(got.len(), 2);
        let a = got.iter().find(|(n, _)| n == "#x.io/a:1").unwrap();
        assert!(a.1.len() > 300_000);
        let b = got.iter().find(|(n, _)| n == "#x.io/b:1").unwrap();
        let why = String::from_utf8_lossy(&b.1);
        assert!(why.contains("is a symlink member, refusing it"), "{why}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_frame_that_holds_another_member_than_the_index_says_is_refused_by_name() {
        let d = temp("frames");
        layout(&d.join("bundle"));
        let to = PackTo {
            file: d.join("carry/f.tar.zst"),
            zstd: true,
            split: None,
        };
        pack(&d.join("bundle"), &to, false).unwrap();
        let data = fs::read(&to.file).unwrap();
        let n = data.len();
        let json_len = u64::from_le_bytes(data[n - 16..n - 8].try_into().unwrap()) as usize;
        let start = n - 24 - json_len;
        let mut index: serde_json::Value =
            serde_json::from_slice(&data[start + 8..n - 16]).unwrap();
        // `oci-layout` pointed at the frame of `index.json`.
        let second = index["members"][1].clone();
        index["members"][0]["offset"] = second["offset"].clone();
        index["members"][0]["length"] = second["length"].clone();
        let frames: Vec<Frame> = serde_json::from_value(index["members"].clone()).unwrap();
        let mut forged = data[..start].to_vec();
        forged.extend(encode_frames(frames));
        fs::write(&to.file, forged).unwrap();
        let source = LayoutSource::find(&d.join("carry"));
        assert!(source.units().is_empty());
        let why = &source.refused()[0].reason;
        assert!(
            why.contains("oci-layout: its frame holds another tar member than the index says"),
            "{why}"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_pack_goes_to_a_directory_that_exists_outside_the_bundle() {
        let d = temp("place");
        let to = |file: PathBuf| PackTo {
            file,
            zstd: false,
            split: None,
        };
        let bundle = d.join("bundle");
        check_place(&bundle, &to(d.join("carry/b.tar"))).unwrap();
        let e = check_place(&bundle, &to(bundle.join("b.tar"))).unwrap_err();
        assert!(
            e.to_string().contains("is inside the bundle directory"),
            "{e}"
        );
        let e = check_place(&bundle, &to(d.join("nowhere/b.tar"))).unwrap_err();
        assert!(e.to_string().ends_with("nowhere does not exist"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }
}
