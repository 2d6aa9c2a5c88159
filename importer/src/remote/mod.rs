//! What a run from the operator's host into other machines needs whatever the way in (kind
//! nodes through the Docker socket, edge hosts over SSH): the static importer chosen for the
//! machine's architecture, and each machine's log lines with its name in front.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bundled::{self, Arch};
use crate::exit;
use crate::report::prose;

/// The importer that goes into the machines.
#[derive(Debug, Clone)]
pub struct Importer {
    pub path: PathBuf,
    pub arch: Arch,
    pub sha256: String,
    pub size: u64,
}

/// Where the importer for `arch` comes from: `--importer-binary`, else the bundle's importer
/// for `arch`, else this binary when it is a static importer for `arch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Given(PathBuf),
    Bundled(PathBuf),
    Running,
    /// None fits: why, for the error.
    None(String),
}

/// The choice for a machine of `arch`, given what this binary is (`running`: its architecture
/// when it is a static importer, else why not). Pure, so that the choice is tested for an
/// architecture this host is not.
pub fn choose(
    images_path: &Path,
    given: Option<&Path>,
    arch: Arch,
    running: Result<Arch, String>,
) -> Choice {
    let (bundled_path, _) = bundled::arch_paths(images_path, arch);
    match (given, running) {
        (Some(p), _) => Choice::Given(p.to_path_buf()),
        (None, _) if bundled_path.is_file() => Choice::Bundled(bundled_path),
        (None, Ok(a)) if a == arch => Choice::Running,
        (None, Ok(a)) => Choice::None(format!(
            "the machine is {} and this importer is {}; {} holds no importer: give one with \
             --importer-binary",
            arch.platform(),
            a.platform(),
            images_path.display()
        )),
        (None, Err(e)) => Choice::None(format!(
            "this binary {e}, and {} holds no importer for {}: give a static one with \
             --importer-binary",
            images_path.display(),
            arch.platform()
        )),
    }
}

/// The importer for machines of `arch`, checked to be a static importer for it.
pub fn importer(images_path: &Path, given: Option<&Path>, arch: Arch) -> Result<Importer> {
    let running = bundled::current_static()
        .map(|(a, _)| a)
        .map_err(|e| e.to_string());
    let path = match choose(images_path, given, arch, running) {
        Choice::Given(p) | Choice::Bundled(p) => p,
        Choice::Running => std::fs::read_link("/proc/self/exe")
            .context("cannot tell where this binary is (/proc/self/exe)")?,
        Choice::None(why) => return Err(exit::usage(why)),
    };
    let found = bundled::check_importer(&path)
        .map_err(|e| exit::usage(format!("{} {e}", path.display())))?;
    if found != arch {
        return Err(exit::usage(format!(
            "{} is an importer for {}, the machine is {}",
            path.display(),
            found.platform(),
            arch.platform()
        )));
    }
    let (sha256, size) = sha256_file(&path)?;
    Ok(Importer {
        path,
        arch,
        sha256,
        size,
    })
}

/// The sha256 (hex) and size of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    use sha2::Digest;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let sum: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((sum, size))
}

pub mod plan;
pub mod stream;

/// One line of a machine's log, on stderr.
pub fn say(machine: &str, line: &str, json: bool) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        machine_line(machine, line, json)
    );
}

/// `MACHINE: LINE`; in a JSON log the machine's JSON line given a `node` field, or a line of
/// ours made an `info` event with one.
pub fn machine_line(machine: &str, line: &str, json: bool) -> String {
    if !json {
        return format!("{}: {}", prose(machine), prose(line));
    }
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("node".into(), machine.into());
            serde_json::Value::Object(map).to_string()
        }
        _ => serde_json::json!({ "event": "info", "node": machine, "message": line }).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machines_lines_carry_its_name_in_either_log_format() {
        assert_eq!(machine_line("w", "imported x", false), "w: imported x");
        assert_eq!(machine_line("w", "bad\x1b[0m", false), "w: bad\\u{1b}[0m");
        let j: serde_json::Value = serde_json::from_str(&machine_line(
            "w",
            r#"{"event":"summary","imported":1}"#,
            true,
        ))
        .unwrap();
        assert_eq!(
            (j["node"].as_str(), j["imported"].as_u64()),
            (Some("w"), Some(1))
        );
        let j: serde_json::Value =
            serde_json::from_str(&machine_line("w", "sent 1 units", true)).unwrap();
        assert_eq!(
            (j["event"].as_str(), j["message"].as_str()),
            (Some("info"), Some("sent 1 units"))
        );
    }

    #[test]
    fn the_importer_for_an_aarch64_machine_is_the_bundles_arm64_one() {
        let dir = std::env::temp_dir().join(format!("oi-choose-{}", std::process::id()));
        let (arm, _) = bundled::arch_paths(&dir, Arch::Arm64);
        std::fs::create_dir_all(arm.parent().unwrap()).unwrap();
        std::fs::write(&arm, b"x").unwrap();
        // An amd64 operator host, an arm64 machine: the bundle's arm64 importer.
        let chosen = choose(&dir, None, Arch::Arm64, Ok(Arch::Amd64));
        assert_eq!(chosen, Choice::Bundled(arm.clone()));
        // An amd64 machine: no amd64 importer in the bundle, this static binary fits.
        assert_eq!(
            choose(&dir, None, Arch::Amd64, Ok(Arch::Amd64)),
            Choice::Running
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // No bundled arm64 importer and an amd64 binary: none, saying so.
        match choose(&dir, None, Arch::Arm64, Ok(Arch::Amd64)) {
            Choice::None(why) => assert!(why.contains("linux/arm64"), "{why}"),
            other => panic!("{other:?}"),
        }
        let given = Path::new("/x/offline-images");
        assert_eq!(
            choose(&dir, Some(given), Arch::Arm64, Err("is not static".into())),
            Choice::Given(given.into())
        );
    }
}
