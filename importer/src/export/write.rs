//! The bundle being written: its directory with `SHA256SUMS` and `images.json` (rewritten
//! atomically after each archive, merged with what an earlier run wrote), each archive
//! written to a hidden temp file and renamed only once complete and on disk, what an
//! interrupted run left removed, and whether an archive an earlier run wrote is still intact
//! (docs/ARCHITECTURE.md, "Data flow: export", step 3).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::archive::Platform;
use crate::bundle::{self, BundleArchive, BundleIndex};
use crate::bundled::{self, Arch};
use crate::exit;

use super::ImporterBinary;

/// The bundle directory and its two files as they stand, shared by the workers.
pub struct Bundle {
    pub dir: PathBuf,
    state: Mutex<(BundleIndex, BTreeMap<String, String>)>,
    /// The importer binaries being placed, on a thread of their own beside the downloads.
    placing: Mutex<Option<Placing>>,
}

/// The thread placing the importer binaries: each one's architecture and sha256.
type Placing = std::thread::JoinHandle<Result<Vec<(Arch, String)>>>;

/// Whether an archive of the bundle is still the one `SHA256SUMS` lists, and how that was
/// told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intact {
    /// By its stamp in images.json: the file was not read.
    ByStamp,
    /// By its checksum: the file was read, and stamped again so the next run need not.
    ByChecksum,
    /// Not listed, absent, or changed: it is written again.
    No,
}

impl Intact {
    /// What the `skipped (up to date: FILE…)` line adds after the file's name.
    pub fn shown(self) -> &'static str {
        match self {
            Intact::ByStamp | Intact::No => "",
            Intact::ByChecksum => "; its checksum verified",
        }
    }
}

impl Bundle {
    /// The bundle directory, created if need be, with what an earlier run wrote there; the
    /// importer binaries (see [`importer_binaries`]) being placed in it meanwhile ([`Bundle::binaries_placed`]).
    pub fn open(dir: &Path, importer_binaries: &[(Arch, PathBuf)]) -> Result<Bundle> {
        fs::create_dir_all(dir).map_err(|e| {
            exit::usage(format!(
                "cannot create the bundle directory {}: {e}",
                dir.display()
            ))
        })?;
        // An unreadable images.json is not overwritten: it may be an operator's only record.
        let index = bundle::read_index(dir)
            .map_err(|e| exit::usage(format!("{e:#}; move it away to start a new bundle")))?
            .unwrap_or_else(BundleIndex::new);
        let sums = bundle::read_sums(dir)
            .map_err(|e| exit::usage(format!("{e:#}; move it away to start a new bundle")))?
            .unwrap_or_default();
        let (binaries, to) = (importer_binaries.to_vec(), dir.to_path_buf());
        let placing = std::thread::Builder::new()
            .name("importer-binaries".into())
            .spawn(move || bundled::place(&binaries, &to))
            .context("cannot start a thread")?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            state: Mutex::new((index, sums)),
            placing: Mutex::new(Some(placing)),
        })
    }

    /// Wait for the importer binaries, which are placed while the images are fetched, and
    /// say where they went.
    pub fn binaries_placed(&self) -> Result<()> {
        let Some(placing) = crate::sync::lock(&self.placing).take() else {
            return Ok(());
        };
        let placed = placing
            .join()
            .map_err(|_| anyhow::anyhow!("placing the importer binaries failed"))??;
        for (i, (arch, sum)) in placed.iter().enumerate() {
            // The first is also the bundle's default binary (amd64 when it has one).
            let also = if i == 0 {
                format!(", also as {}/{}", bundled::DIR, bundled::BINARY)
            } else {
                String::new()
            };
            eprintln!(
                "offline-images: importer binary written to {}/{}/{}/{} (sha256 {sum}){also}",
                self.dir.display(),
                bundled::DIR,
                arch.dir(),
                bundled::BINARY
            );
        }
        Ok(())
    }

    /// Record a written archive and rewrite `SHA256SUMS` and `images.json`.
    pub fn record(&self, archive: BundleArchive) -> Result<()> {
        let mut state = crate::sync::lock(&self.state);
        let (index, sums) = &mut *state;
        sums.insert(archive.file.clone(), archive.sha256.clone());
        index.generator = bundle::generator();
        index.upsert(archive);
        bundle::write_sums(&self.dir, sums)?;
        bundle::write_index(&self.dir, index)
    }

    /// The digest images.json holds for the registry engine's `file`, when it holds every
    /// platform of `platforms`.
    pub fn registry_digest(&self, file: &str, platforms: &[Platform]) -> Option<String> {
        let state = crate::sync::lock(&self.state);
        let (index, _) = &*state;
        index.archive(file).and_then(|a| {
            let have: Vec<&str> = a
                .images
                .iter()
                .filter_map(|i| i.platform.as_deref())
                .collect();
            let all = platforms
                .iter()
                .all(|p| have.contains(&p.to_string().as_str()));
            a.source.as_ref().filter(|_| all).map(|s| s.digest.clone())
        })
    }

    /// The config digest the bundle holds for `file`, when the file is there and still the
    /// archive `SHA256SUMS` lists (see [`Bundle::intact`]), with how that was told.
    pub fn config_digest(&self, file: &str) -> Result<Option<(String, Intact)>> {
        let config = {
            let state = crate::sync::lock(&self.state);
            let (index, _) = &*state;
            index
                .archive(file)
                .and_then(|a| a.images.first())
                .map(|i| i.config_digest.clone())
        };
        let Some(config) = config else {
            return Ok(None);
        };
        Ok(match self.intact(file)? {
            Intact::No => None,
            how => Some((config, how)),
        })
    }

    /// Whether the bundle's `file` is still the archive `SHA256SUMS` lists, and how that was
    /// told: by its stamp in images.json (the file is not read), else by its checksum; an
    /// archive found intact by its checksum is stamped again, so that the next run need not
    /// read it. The stamp is taken before the file is read and must still match after.
    pub fn intact(&self, file: &str) -> Result<Intact> {
        let path = self.dir.join(file);
        let (sum, entry) = {
            let state = crate::sync::lock(&self.state);
            let (index, sums) = &*state;
            (sums.get(file).cloned(), index.archive(file).cloned())
        };
        let (Some(sum), Some(mut entry)) = (sum, entry) else {
            return Ok(Intact::No);
        };
        let stamped = entry
            .stamp
            .is_some_and(|s| s.size == entry.size && s.matches(&path));
        if entry.sha256 == sum && stamped {
            return Ok(Intact::ByStamp);
        }
        if !path.is_file() {
            return Ok(Intact::No);
        }
        let before = bundle::FileStamp::settled(&path);
        if bundle::sha256_file(&path)? != sum {
            return Ok(Intact::No);
        }
        entry.stamp = before.filter(|s| s.matches(&path));
        entry.sha256 = sum;
        entry.size = fs::metadata(&path).map(|m| m.len()).unwrap_or(entry.size);
        self.record(entry)?;
        Ok(Intact::ByChecksum)
    }
}

/// The static importers the bundle carries for the chart's bootstrap mode, one per
/// architecture, amd64 first: checked before anything is pulled. By default the running binary
/// and, for the other architecture, `offline-images-<machine>` beside it
/// ([`Arch::sibling`]). An architecture without one is a warning naming the nodes that will
/// lack it, not a failure.
pub fn importer_binaries(asked: &ImporterBinary) -> Result<Vec<(Arch, PathBuf)>> {
    let mut found: Vec<(Arch, PathBuf)> = Vec::new();
    match asked {
        ImporterBinary::Omitted => return Ok(found),
        ImporterBinary::Given(paths) => {
            for path in paths {
                let arch = bundled::check_importer(path).map_err(|why| {
                    exit::usage(format!("--importer-binary {} {why}", path.display()))
                })?;
                if let Some((_, other)) = found.iter().find(|(a, _)| *a == arch) {
                    return Err(exit::usage(format!(
                        "--importer-binary {} and {} are both for {} ({}); give one per \
                         architecture",
                        other.display(),
                        path.display(),
                        arch.machine(),
                        arch.platform()
                    )));
                }
                found.push((arch, path.clone()));
            }
        }
        ImporterBinary::Running => match bundled::current_static() {
            Ok(running) => {
                let own = running.0;
                found.push(running);
                for arch in Arch::ALL.into_iter().filter(|a| *a != own) {
                    if let Some(path) = bundled::sibling(arch) {
                        found.push((checked_sibling(arch, &path)?, path));
                    }
                }
            }
            Err(why) => {
                eprintln!(
                    "offline-images: note: this binary {why}; the bundle gets no importer \
                     binary (the chart's bootstrap mode needs one: give --importer-binary)"
                );
                return Ok(found);
            }
        },
    }
    found.sort_by_key(|(a, _)| *a);
    for arch in Arch::ALL
        .into_iter()
        .filter(|a| found.iter().all(|(b, _)| b != a))
    {
        eprintln!(
            "offline-images: warning: no importer binary for {platform} (give \
             --importer-binary FILE, or put it beside this binary as {sibling}); {platform} \
             nodes cannot import from this bundle in the chart's bootstrap mode",
            platform = arch.platform(),
            sibling = arch.sibling()
        );
    }
    Ok(found)
}

/// The importer for `arch` found beside the running binary, refused (exit 2) unless it is a
/// static importer of that architecture.
fn checked_sibling(arch: Arch, path: &Path) -> Result<Arch> {
    let is = bundled::check_importer(path)
        .map_err(|why| exit::usage(format!("{} (beside this binary) {why}", path.display())))?;
    if is != arch {
        return Err(exit::usage(format!(
            "{} (beside this binary) is an importer for {}, not {} as its name says",
            path.display(),
            is.machine(),
            arch.machine()
        )));
    }
    Ok(is)
}

/// An archive being written: a hidden temp file beside its destination, removed unless it
/// is put in place complete (docs/ARCHITECTURE.md, "Data flow: export").
pub struct TempFile {
    path: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempFile {
    /// Create the temp file for `dest`, and a buffered writer to it.
    pub fn create(dest: &Path) -> Result<(TempFile, BufWriter<File>)> {
        let path = bundle::temp_name(dest);
        let out =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let temp = TempFile {
            path,
            dest: dest.to_path_buf(),
            done: false,
        };
        Ok((temp, BufWriter::with_capacity(1 << 20, out)))
    }

    /// Flush `writer` and get its bytes onto the disk.
    pub fn sync(&self, writer: BufWriter<File>) -> Result<()> {
        let what = || format!("cannot write {}", self.path.display());
        let out = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(what)?;
        out.sync_all().with_context(what)
    }

    /// Rename it onto its destination, then sync the directory so the name lasts; the stamp
    /// of the file in place (see `bundle::FileStamp`).
    pub fn put_in_place(mut self) -> Result<Option<bundle::FileStamp>> {
        fs::rename(&self.path, &self.dest).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                self.dest.display()
            )
        })?;
        self.done = true;
        if let Some(d) = self.dest.parent().and_then(|d| File::open(d).ok()) {
            let _ = d.sync_all();
        }
        Ok(bundle::FileStamp::settled(&self.dest))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// skopeo writes its docker-archive here before it is compressed into the bundle.
pub const SCRATCH_PREFIX: &str = ".offline-images-export.";

/// Remove what an interrupted run left in the bundle directory: hidden `.NAME.PID.tmp` files
/// and scratch directories of a process that is gone, untouched for ten minutes (so a run on
/// another host sharing the directory is left alone while it writes).
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = if let Some(pid) = name.strip_prefix(SCRATCH_PREFIX) {
            pid
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            name.trim_end_matches(".tmp")
                .rsplit('.')
                .next()
                .unwrap_or("")
        } else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 600);
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() || !idle {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if removed.is_ok() {
            eprintln!("offline-images: removed {name}, left by an interrupted run");
        }
    }
}

impl Drop for Bundle {
    /// A run that ends early still lets the binaries it began to place be written whole.
    fn drop(&mut self) {
        if let Some(placing) = crate::sync::lock(&self.placing).take() {
            let _ = placing.join();
        }
    }
}

/// Start writing the `len` bytes of `file` from `offset` to disk, without waiting, so that the
/// fsync that later makes the file durable finds most of it already written: downloading and
/// the disk then work side by side. On Linux, `posix_fadvise(DONTNEED)` starts write-back of
/// the range's dirty pages and drops only its clean ones (as `sync_file_range(WRITE)` would,
/// which has no safe binding); where a file system ignores it, the fsync does all the work, as
/// before.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    let _ = posix_fadvise(
        file.as_raw_fd(),
        offset,
        len,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oi-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Write `data` as `file` of the bundle, the way an export does, and record it.
    fn written(bundle: &Bundle, file: &str, data: &[u8]) {
        let (temp, mut out) = TempFile::create(&bundle.dir.join(file)).unwrap();
        std::io::Write::write_all(&mut out, data).unwrap();
        temp.sync(out).unwrap();
        let stamp = temp.put_in_place().unwrap();
        bundle
            .record(BundleArchive {
                file: file.to_string(),
                size: data.len() as u64,
                sha256: bundle::sha256_reader(data).unwrap(),
                compression: crate::archive::Compression::None,
                format: crate::archive::Format::Oci,
                images: Vec::new(),
                source: None,
                stamp,
            })
            .unwrap();
    }

    #[test]
    fn an_archive_is_intact_by_its_stamp_else_by_its_checksum_else_not() {
        let dir = temp_dir("intact");
        let bundle = Bundle::open(&dir, &[]).unwrap();
        assert_eq!(bundle.intact("a.tar").unwrap(), Intact::No);
        written(&bundle, "a.tar", b"archive");
        assert_eq!(bundle.intact("a.tar").unwrap(), Intact::ByStamp);
        assert_eq!(Intact::ByStamp.shown(), "");

        // The same bytes written again: a new change time, so read, and stamped again.
        fs::write(dir.join("a.tar"), b"archive").unwrap();
        assert_eq!(bundle.intact("a.tar").unwrap(), Intact::ByChecksum);
        assert_eq!(Intact::ByChecksum.shown(), "; its checksum verified");
        assert_eq!(bundle.intact("a.tar").unwrap(), Intact::ByStamp);

        // Other bytes, or no file: written again.
        fs::write(dir.join("a.tar"), b"changed").unwrap();
        assert_eq!(bundle.intact("a.tar").unwrap(), Intact::No);
        fs::remove_file(dir.join("a.tar")).unwrap();
        assert_eq!(bundle.intact("a.tar").unwrap(), Intact::No);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_temp_file_dropped_before_it_is_in_place_leaves_nothing() {
        let dir = temp_dir("temp-drop");
        let (temp, out) = TempFile::create(&dir.join("a.tar.gz")).unwrap();
        drop(out);
        drop(temp);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leftovers_of_a_dead_run_are_removed_and_live_or_recent_ones_kept() {
        let dir = temp_dir("stale");
        // pid_max on Linux is at most 4194304, so this process cannot exist.
        let dead = 4_194_305u32;
        let old = SystemTime::now() - Duration::from_secs(3600);
        let make = |name: &str, age: SystemTime| {
            let f = File::create(dir.join(name)).unwrap();
            f.set_modified(age).unwrap();
        };
        make(&format!(".a.tar.gz.{dead}.tmp"), old);
        make(&format!(".b.tar.gz.{dead}.tmp"), SystemTime::now());
        make(&format!(".c.tar.gz.{}.tmp", std::process::id()), old);
        make(".notes.tmp", old);
        make("a.tar.gz", old);
        let scratch = dir.join(format!("{SCRATCH_PREFIX}{dead}"));
        fs::create_dir_all(&scratch).unwrap();
        File::open(&scratch).unwrap().set_modified(old).unwrap();

        remove_stale_temps(&dir);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            format!(".b.tar.gz.{dead}.tmp"),
            format!(".c.tar.gz.{}.tmp", std::process::id()),
            ".notes.tmp".to_string(),
            "a.tar.gz".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        fs::remove_dir_all(&dir).unwrap();
    }
}
