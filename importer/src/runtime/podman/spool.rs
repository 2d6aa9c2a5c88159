//! The archive podman stores, written out by the importer first. podman reads a whole archive
//! before it stores anything: `podman load` copies its stdin into a file under /var/tmp, then
//! tries every format in turn, and unpacks a docker-archive whole as if it were an OCI archive
//! before it looks for its `index.json` (about a second per GB of archive here, podman 4.3 and
//! 5 alike). So the importer writes the archive, checked as it is read and with the
//! `index.json` chosen for podman, into a file under the node's /var/tmp (where podman would
//! have copied it), gives that file to podman as its stdin, and removes it once podman is done
//! (or the import failed; a stop by SIGTERM ends podman first): podman opens
//! `/proc/self/fd/0`, a plain file it can read again and seek in, as `pull docker-archive:`
//! (one image of a docker-archive, read as what it is) or with `load --input` (every other
//! archive). The file keeps its name while podman reads it: podman resolves
//! `/proc/self/fd/0` to that name for an OCI archive, and an unlinked file's name leads
//! nowhere (it then takes the archive for a docker-archive, and the image loses its digest).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::archive::Format;
use crate::failure::{Failure, Kind};

/// The spool as podman opens it: its stdin.
pub const AS_PODMAN_SEES_IT: &str = "/proc/self/fd/0";

/// The file being written, removed when dropped.
pub struct Spool {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    /// Why the last write failed, for the message.
    error: Option<io::Error>,
}

impl Spool {
    /// A new file in `dir`, named after this process.
    pub fn create(dir: &Path) -> Result<Spool> {
        for n in 0..1000 {
            let path = dir.join(format!(
                ".offline-images-load-{}-{n}.tar",
                std::process::id()
            ));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Spool {
                        file,
                        path,
                        dir: dir.to_path_buf(),
                        error: None,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => bail!(
                    "cannot make a file in {} to hold an archive for podman (podman itself \
                     would copy it there): {e}",
                    dir.display()
                ),
            }
        }
        bail!(
            "cannot make a file in {} to hold an archive for podman",
            dir.display()
        )
    }

    /// The whole file from its start, for podman to read while this spool lives.
    pub fn reader(&self) -> Result<File> {
        let mut file = self.file.try_clone()?;
        file.rewind()?;
        Ok(file)
    }

    /// Why writing the spool stopped.
    pub fn write_failed(&self) -> anyhow::Error {
        let dir = self.dir.display();
        match &self.error {
            Some(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => Failure::error(
                Kind::Disk,
                format!(
                    "the disk holding {dir} is full: podman reads an archive from a copy there \
                     (free space on the node and run the import again)"
                ),
            ),
            Some(e) => {
                anyhow::anyhow!("cannot write the copy of the archive for podman in {dir}: {e}")
            }
            None => anyhow::anyhow!("cannot write the copy of the archive for podman in {dir}"),
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf).inspect_err(|e| {
            self.error = Some(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            });
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// How podman is given the spooled archive: `pull docker-archive:` for a docker-archive of
/// one image (a pull takes one), `load --input` otherwise. The first word names the command
/// in messages.
pub fn podman_args(format: Format, images: usize) -> Vec<String> {
    if format == Format::DockerArchive && images == 1 {
        vec!["pull".into(), format!("docker-archive:{AS_PODMAN_SEES_IT}")]
    } else {
        vec!["load".into(), "--input".into(), AS_PODMAN_SEES_IT.into()]
    }
}

/// podman's names for the transports that read an archive of `format`, as its messages
/// name them: its attempts at these are the ones that say why a load failed.
pub fn transports(format: Format) -> &'static [&'static str] {
    match format {
        Format::DockerArchive => &["docker-archive"],
        Format::Oci => &["oci-archive"],
        Format::DockerOci => &["oci-archive", "docker-archive"],
    }
}

/// Where podman would copy an archive: the node's /var/tmp under `host_root`, else `TMPDIR`
/// or /var/tmp (containers.conf's default `image_copy_tmp_dir`).
pub fn dir(host_root: Option<&Path>) -> PathBuf {
    match host_root {
        Some(root) => root.join("var/tmp"),
        None => std::env::var_os("TMPDIR")
            .filter(|t| !t.is_empty())
            .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn what_is_written_reads_back_whole_from_the_start_and_the_file_goes_with_the_spool() {
        let dir = std::env::temp_dir().join(format!("oi-spool-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut spool = Spool::create(&dir).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(256 * 1024) {
            spool.write_all(chunk).unwrap();
        }
        let mut back = Vec::new();
        spool.reader().unwrap().read_to_end(&mut back).unwrap();
        assert!(
            back == data,
            "read back {} bytes of {}",
            back.len(),
            data.len()
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "the file is there while podman reads it"
        );
        drop(spool);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            0,
            "the file is removed with the spool"
        );
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_docker_archive_of_one_image_is_pulled_and_anything_else_loaded() {
        let load = ["load", "--input", "/proc/self/fd/0"];
        assert_eq!(
            podman_args(Format::DockerArchive, 1),
            ["pull", "docker-archive:/proc/self/fd/0"]
        );
        assert_eq!(podman_args(Format::DockerArchive, 2), load);
        assert_eq!(podman_args(Format::Oci, 1), load);
        assert_eq!(podman_args(Format::DockerOci, 1), load);
    }
}
