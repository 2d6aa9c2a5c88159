//! The files `mirror` writes on a node: `<certs-dir>/<upstream>/hosts.toml` and the site's CA
//! beside it, nothing else and nowhere else. A `hosts.toml` that was there is kept as
//! [`BACKUP`] and put back by `--remove`; a file is replaced by rename, never half-written.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::site::valid_host;

/// The first line of every `hosts.toml` this tool writes: `--remove` touches no other.
pub const MARK: &str = "# Written by offline-images.";
/// The site's own `hosts.toml`, kept while ours is in place.
pub const BACKUP: &str = "hosts.toml.offline-images-backup";
/// The site registry's CA, beside the `hosts.toml` that names it.
pub const CA_FILE: &str = "offline-images-ca.crt";
const HOSTS: &str = "hosts.toml";

/// What writing one upstream's file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// No file was there.
    Created,
    /// The site's own file was there and is kept as [`BACKUP`].
    KeptBackup,
    /// Ours was there and said something else.
    Updated,
    /// Ours was there, the same.
    Unchanged,
}

/// What removing one upstream's file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The backup is `hosts.toml` again.
    Restored,
    /// Ours is gone, and there was nothing to restore.
    Deleted,
}

/// `<certs>/<upstream>`, refused when the upstream is no registry host or the directory is a
/// symbolic link (either could lead a write elsewhere).
fn upstream_dir(certs: &Path, upstream: &str) -> Result<PathBuf> {
    if !valid_host(upstream) {
        bail!("{upstream:?} is not a registry host: no hosts.toml is written for it");
    }
    let dir = certs.join(upstream);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symbolic link: offline-images writes only into real directories under {}",
            dir.display(),
            certs.display()
        ),
        Ok(m) if !m.is_dir() => bail!("{} is not a directory", dir.display()),
        _ => Ok(dir),
    }
}

/// Is the file at `path` one this tool wrote? `None` when there is no file.
fn is_ours(path: &Path) -> Result<Option<bool>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.starts_with(MARK))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // Not UTF-8 or unreadable: certainly not ours.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Some(false)),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Write `data` to `path` by way of a file beside it and a rename.
fn replace(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("offline-images-new");
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow!("cannot write {}: {e}", path.display())
    })
}

/// Put `hosts` (and the CA, when given) in place for `upstream` under `certs`.
pub fn write_upstream(
    certs: &Path,
    upstream: &str,
    hosts: &str,
    ca: Option<&[u8]>,
) -> Result<Wrote> {
    let dir = upstream_dir(certs, upstream)?;
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(HOSTS);
    let backup = dir.join(BACKUP);
    let wrote = match is_ours(&path)? {
        None => Wrote::Created,
        Some(true) if fs::read_to_string(&path).ok().as_deref() == Some(hosts) => Wrote::Unchanged,
        Some(true) => Wrote::Updated,
        Some(false) => {
            if backup.exists() {
                bail!(
                    "{} is not ours and {} is there too: move one of them away, then run again",
                    path.display(),
                    backup.display()
                );
            }
            fs::rename(&path, &backup).with_context(|| {
                format!("cannot keep {} as {}", path.display(), backup.display())
            })?;
            Wrote::KeptBackup
        }
    };
    if let Some(ca) = ca {
        replace(&dir.join(CA_FILE), ca, 0o644)?;
    }
    if wrote != Wrote::Unchanged {
        replace(&path, hosts.as_bytes(), 0o644)?;
    }
    Ok(wrote)
}

/// Undo [`write_upstream`] for `upstream`: `None` when its `hosts.toml` is not ours.
pub fn remove_upstream(certs: &Path, upstream: &str) -> Result<Option<Removed>> {
    let dir = upstream_dir(certs, upstream)?;
    let path = dir.join(HOSTS);
    if is_ours(&path)? != Some(true) {
        return Ok(None);
    }
    let backup = dir.join(BACKUP);
    let _ = fs::remove_file(dir.join(CA_FILE));
    let removed = if backup.exists() {
        fs::rename(&backup, &path).with_context(|| {
            format!("cannot restore {} as {}", backup.display(), path.display())
        })?;
        Removed::Restored
    } else {
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        // The directory goes too when it held nothing else (it was ours).
        let _ = fs::remove_dir(&dir);
        Removed::Deleted
    };
    Ok(Some(removed))
}

/// The upstreams under `certs` whose `hosts.toml` this tool wrote.
pub fn ours(certs: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(certs) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", certs.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", certs.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if valid_host(&name) && is_ours(&entry.path().join(HOSTS))? == Some(true) {
            found.push(name);
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("oi-mirror-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_sites_own_file_is_kept_and_put_back_byte_for_byte() {
        let certs = scratch("backup");
        fs::create_dir_all(certs.join("docker.io")).unwrap();
        let theirs = b"server = \"https://mirror.corp\"\n\xff";
        fs::write(certs.join("docker.io/hosts.toml"), theirs).unwrap();
        let mine = format!("{MARK}\nserver = \"x\"\n");
        assert_eq!(
            write_upstream(&certs, "docker.io", &mine, Some(b"CA")).unwrap(),
            Wrote::KeptBackup
        );
        assert_eq!(
            fs::read(certs.join("docker.io").join(BACKUP)).unwrap(),
            theirs
        );
        assert_eq!(
            write_upstream(&certs, "docker.io", &mine, None).unwrap(),
            Wrote::Unchanged
        );
        assert_eq!(super::ours(&certs).unwrap(), ["docker.io"]);
        assert_eq!(
            remove_upstream(&certs, "docker.io").unwrap(),
            Some(Removed::Restored)
        );
        assert_eq!(
            fs::read(certs.join("docker.io/hosts.toml")).unwrap(),
            theirs
        );
        assert!(!certs.join("docker.io").join(CA_FILE).exists());
        assert_eq!(remove_upstream(&certs, "docker.io").unwrap(), None);
        fs::remove_dir_all(&certs).unwrap();
    }

    #[test]
    fn a_new_directory_goes_with_the_file_and_nothing_is_written_outside() {
        let certs = scratch("new");
        let mine = format!("{MARK}\n");
        assert_eq!(
            write_upstream(&certs, "quay.io", &mine, None).unwrap(),
            Wrote::Created
        );
        assert_eq!(
            remove_upstream(&certs, "quay.io").unwrap(),
            Some(Removed::Deleted)
        );
        assert!(!certs.join("quay.io").exists());
        for bad in ["..", "../etc", "a/b"] {
            assert!(write_upstream(&certs, bad, &mine, None).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/tmp", certs.join("evil.io")).unwrap();
        let e = write_upstream(&certs, "evil.io", &mine, None).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        fs::remove_dir_all(&certs).unwrap();
    }
}
