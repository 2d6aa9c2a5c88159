//! `offline-images receive --dir DIR` (hidden): a tar stream on stdin written into DIR, what
//! `deliver` sends a host over SSH. Each file is written to a hidden temp name beside its own
//! and renamed when its last byte is on disk, so a connection that drops keeps every file
//! that fully arrived and nothing partial under a real name. `--list` prints the files DIR
//! holds (`SIZE NAME` a line), which a retry asks for to send only what did not arrive.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exit::Code;

pub fn run(dir: &Path, list: bool) -> Result<Code> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if list {
        let mut out = io::BufWriter::new(io::stdout().lock());
        for (name, size) in listed(dir)? {
            writeln!(out, "{size} {name}").context("writing the list to stdout")?;
        }
        out.flush().context("writing the list to stdout")?;
        return Ok(Code::Success);
    }
    let (files, bytes) = receive(io::stdin().lock(), dir)?;
    eprintln!(
        "received {files} files ({bytes} bytes) into {}",
        dir.display()
    );
    Ok(Code::Success)
}

/// Write every regular file of the tar stream `input` under `dir`; (files, bytes).
pub fn receive(input: impl Read, dir: &Path) -> Result<(u64, u64)> {
    let mut archive = tar::Archive::new(input);
    let (mut files, mut bytes) = (0, 0);
    for entry in archive.entries().context("reading the stream on stdin")? {
        let mut entry = entry.context("reading the stream on stdin")?;
        let name = entry.path().context("a name in the stream")?.into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            bail!("{}: only files are received", name.display());
        }
        let path = inside(dir, &name)?;
        let size = entry.size();
        bytes += write_whole(&mut entry, &path, size)?;
        files += 1;
    }
    Ok((files, bytes))
}

/// `name` under `dir`: relative, no `..`, no hidden component (hidden names are ours).
fn inside(dir: &Path, name: &Path) -> Result<PathBuf> {
    let mut path = dir.to_path_buf();
    for c in name.components() {
        match c {
            Component::Normal(p) if !p.to_string_lossy().starts_with('.') => path.push(p),
            Component::CurDir => {}
            _ => bail!("{}: not a plain relative name, refused", name.display()),
        }
    }
    if path == dir {
        bail!("{}: an empty name, refused", name.display());
    }
    Ok(path)
}

/// `data` (`size` bytes) into `path` through `.NAME.partial` beside it, renamed once synced;
/// fewer bytes (the stream cut) leave the partial file alone.
fn write_whole(data: &mut impl Read, path: &Path, size: u64) -> Result<u64> {
    let parent = path.parent().expect("a path under dir has a parent");
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let file_name = path.file_name().expect("a normal last component");
    // The pid in the name: a receive whose connection was cut may linger on the host until
    // sshd notices, beside the one its retry started.
    let tmp = parent.join(format!(
        ".{}.{}.partial",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut out =
        fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let n = io::copy(data, &mut out).with_context(|| format!("receiving {}", path.display()))?;
    if n != size {
        bail!(
            "{}: the stream ended after {n} of its {size} bytes",
            path.display()
        );
    }
    out.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(n)
}

/// Every whole file under `dir` (hidden ones, partial files among them, left out), by its name
/// relative to `dir`, sorted.
pub fn listed(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let entry = entry.with_context(|| format!("cannot read {}", d.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let meta = entry
                .metadata()
                .with_context(|| format!("cannot stat {}", entry.path().display()))?;
            if meta.is_dir() {
                todo.push(entry.path());
            } else if meta.is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_cut_stream_keeps_the_files_that_fully_arrived_and_nothing_partial() {
        let dir = std::env::temp_dir().join(format!("oi-receive-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let whole = tar_of(&[("a.tar", &[1u8; 1000]), ("sub/b.tar", &[2u8; 3000])]);
        // Cut inside b's data: a arrived, b did not.
        let cut = &whole[..512 + 1024 + 512 + 1000];
        assert!(receive(cut, &dir).is_err());
        assert_eq!(listed(&dir).unwrap(), vec![("a.tar".to_string(), 1000)]);
        receive(&tar_of(&[("sub/b.tar", &[2u8; 3000])])[..], &dir).unwrap();
        assert_eq!(
            listed(&dir).unwrap(),
            vec![("a.tar".to_string(), 1000), ("sub/b.tar".to_string(), 3000)]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_that_leave_the_directory_or_hide_are_refused() {
        let dir = Path::new("/d");
        assert!(inside(dir, Path::new("../x")).is_err());
        assert!(inside(dir, Path::new("/etc/x")).is_err());
        assert!(inside(dir, Path::new(".x.partial")).is_err());
        assert_eq!(
            inside(dir, Path::new("a/b.tar")).unwrap(),
            Path::new("/d/a/b.tar")
        );
    }
}
