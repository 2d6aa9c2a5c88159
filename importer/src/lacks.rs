//! Which units of the images path a machine lacks (a kind node, an edge host over SSH): an
//! image the unit holds for the machine's platform that its runtime does not have under each
//! of its names with its config digest. Read from `images.json` when the bundle has one, else
//! from the unit itself. Shared by `import --kind` and `deliver`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::archive::{ArchiveInfo, Platform};
use crate::bundle::BundleArchive;
use crate::present::Held;
use crate::report::Reporter;
use crate::source::{Source, Unit};

/// Each unit of `source` with the images it holds for `platform` (`linux/<arch>`), one winner
/// per name; a unit with none for it is left out, and one that cannot be read is kept with an
/// image no machine has, for the machine's importer to judge and say why.
pub fn for_platform<'a>(
    source: &'a dyn Source,
    platform: &str,
    reporter: &Reporter,
) -> Vec<(&'a Unit, Vec<Want>)> {
    let parsed = Platform::parse(platform).expect("linux/<arch> parses");
    let mut wants = Vec::new();
    let mut other = Vec::new();
    for unit in source.units() {
        match self::wants(source, unit, &parsed) {
            Ok(w) if w.is_empty() => other.push(unit.name.as_str()),
            Ok(w) => wants.push((unit, w)),
            Err(e) => {
                let why = format!("{e:#}: sent for the node to judge");
                reporter.warn(Some(&unit.name), &why);
                let unknown = Want {
                    names: vec![],
                    config_digest: String::new(),
                };
                wants.push((unit, vec![unknown]));
            }
        }
    }
    if !other.is_empty() {
        reporter.warn(None, &left_out(platform, &other));
    }
    let mut claims: Vec<Vec<Want>> = wants.iter().map(|(_, w)| w.clone()).collect();
    drop_lost_names(&mut claims);
    wants
        .into_iter()
        .zip(claims)
        .filter(|(_, claims)| !claims.is_empty())
        .map(|((unit, _), claims)| (unit, claims))
        .collect()
}

/// One line for the units with no image for `platform` (another platform's layout of a
/// delivery spec gives one per image): how many, and the first few by name.
fn left_out(platform: &str, units: &[&str]) -> String {
    const NAMED: usize = 3;
    let named = units[..units.len().min(NAMED)].join(", ");
    let more = match units.len().saturating_sub(NAMED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "{} unit(s) have no image for {platform}, left out for it: {named}{more}",
        units.len()
    )
}

/// One image a unit holds for the node's platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub names: Vec<String>,
    pub config_digest: String,
}

/// The images `unit` holds for `node`, from the bundle's promise or, without one, read from
/// the unit.
pub fn wants(source: &dyn Source, unit: &Unit, node: &Platform) -> Result<Vec<Want>> {
    match source.promise(unit) {
        Some(promise) => Ok(promised(promise, node)),
        None => Ok(held_in(&source.inspect(unit)?, node)),
    }
}

fn promised(archive: &BundleArchive, node: &Platform) -> Vec<Want> {
    archive
        .images
        .iter()
        .filter(|i| {
            i.platform
                .as_deref()
                .and_then(Platform::parse)
                .is_none_or(|p| p.runs_on(node))
        })
        .map(|i| Want {
            names: i.names.clone(),
            config_digest: i.config_digest.clone(),
        })
        .collect()
}

fn held_in(info: &ArchiveInfo, node: &Platform) -> Vec<Want> {
    info.images
        .iter()
        .filter_map(|i| {
            let p = i.for_platform(node)?;
            Some(Want {
                names: i.names.clone(),
                config_digest: p.config_digest.clone()?,
            })
        })
        .collect()
}

/// One name, one winner, as the node's importer decides among the archives it is given: of
/// the units that give a name different images, the last in the bundle's order (the archive
/// sorting last) keeps it; the others' claims on it are dropped, and an image left with none
/// of its names is not looked for (the node's importer would not keep it under them either).
/// Without this, a unit that loses a name would look lacking on every run and be sent again,
/// and, imported alone, would take the name back.
pub fn drop_lost_names(units: &mut [Vec<Want>]) {
    let mut winner: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (i, wants) in units.iter().enumerate() {
        for w in wants {
            for n in &w.names {
                winner.insert(n.as_str(), (i, w.config_digest.as_str()));
            }
        }
    }
    let lost: Vec<(usize, String, String)> = units
        .iter()
        .enumerate()
        .flat_map(|(i, wants)| {
            let winner = &winner;
            wants.iter().flat_map(move |w| {
                w.names.iter().filter_map(move |n| {
                    let (at, config) = winner[n.as_str()];
                    (at != i && config != w.config_digest)
                        .then(|| (i, n.clone(), w.config_digest.clone()))
                })
            })
        })
        .collect();
    for (i, name, config) in lost {
        for w in units[i].iter_mut().filter(|w| w.config_digest == config) {
            w.names.retain(|n| *n != name);
        }
        units[i].retain(|w| !(w.names.is_empty() && w.config_digest == config));
    }
}

/// What a node holds: name -> config digest, and every config digest.
pub struct NodeHas {
    names: BTreeMap<String, Option<String>>,
    configs: BTreeSet<String>,
    /// Whether its runtime lists digest names (`repo@sha256:…`); Docker's store does not.
    digest_names: bool,
}

impl NodeHas {
    pub fn new(held: &[Held]) -> NodeHas {
        NodeHas {
            names: held
                .iter()
                .map(|h| (h.name.clone(), h.config_digest.clone()))
                .collect(),
            configs: held
                .iter()
                .filter_map(|h| h.config_digest.clone())
                .collect(),
            digest_names: true,
        }
    }

    /// What a host holds whose runtime may not list digest names, as the import itself
    /// judges it (`import::plan::findable`): Docker's store never does (its importer loads
    /// an image by tag alone), containerd and podman do; for `auto`, a list with a digest
    /// name in it says its runtime keeps them. Without this, an image of a layout (named by
    /// tag and by digest) would look lacking on a Docker host on every run and be sent again.
    #[cfg(feature = "export")]
    pub fn on_runtime(held: &[Held], runtime: &str) -> NodeHas {
        let digest_names = match runtime {
            "docker" => false,
            "auto" => held.iter().any(|h| h.name.contains('@')),
            _ => true,
        };
        NodeHas {
            digest_names,
            ..NodeHas::new(held)
        }
    }

    /// Whether the node has `want` under each of its names it can list (with none of those,
    /// an untagged one or one named by digest alone on a runtime without digest names: its
    /// config).
    pub fn has(&self, want: &Want) -> bool {
        let mut names = want
            .names
            .iter()
            .filter(|n| self.digest_names || !n.contains('@'))
            .peekable();
        if names.peek().is_none() {
            return self.configs.contains(&want.config_digest);
        }
        names.all(|n| {
            self.names
                .get(n)
                .is_some_and(|c| c.as_deref() == Some(want.config_digest.as_str()))
        })
    }

    /// Whether the node lacks any of `wants`.
    pub fn lacks(&self, wants: &[Want]) -> bool {
        wants.iter().any(|w| !self.has(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_of_another_platform_are_left_out_in_one_line() {
        assert_eq!(
            left_out("linux/arm64", &["a.tar"]),
            "1 unit(s) have no image for linux/arm64, left out for it: a.tar"
        );
        let many = ["a", "b", "c", "d", "e"];
        assert_eq!(
            left_out("linux/amd64", &many),
            "5 unit(s) have no image for linux/amd64, left out for it: a, b, c and 2 more"
        );
    }

    #[test]
    fn a_name_two_units_give_different_images_is_looked_for_in_the_last_alone() {
        let want = |name: &str, config: &str| Want {
            names: vec![name.into()],
            config_digest: config.into(),
        };
        let mut units = vec![
            vec![want("a:1", "sha256:oci")],
            vec![want("a:1", "sha256:docker"), want("b:1", "sha256:b")],
            vec![want("a:1", "sha256:docker")],
        ];
        drop_lost_names(&mut units);
        assert!(units[0].is_empty());
        assert_eq!(units[1].len(), 2);
        assert_eq!(units[2], vec![want("a:1", "sha256:docker")]);
    }

    fn held(name: &str, config: &str) -> Held {
        Held {
            name: name.into(),
            config_digest: Some(config.into()),
        }
    }

    #[test]
    fn a_unit_is_lacking_until_every_name_has_its_config() {
        let want = Want {
            names: vec![
                "docker.io/library/a:1".into(),
                "docker.io/library/a@sha256:m".into(),
            ],
            config_digest: "sha256:c".into(),
        };
        let none = NodeHas::new(&[]);
        assert!(none.lacks(std::slice::from_ref(&want)));
        let one = NodeHas::new(&[held("docker.io/library/a:1", "sha256:c")]);
        assert!(one.lacks(std::slice::from_ref(&want)));
        let other = NodeHas::new(&[
            held("docker.io/library/a:1", "sha256:c"),
            held("docker.io/library/a@sha256:m", "sha256:old"),
        ]);
        assert!(other.lacks(std::slice::from_ref(&want)));
        let all = NodeHas::new(&[
            held("docker.io/library/a:1", "sha256:c"),
            held("docker.io/library/a@sha256:m", "sha256:c"),
        ]);
        assert!(!all.lacks(&[want]));
        let untagged = Want {
            names: vec![],
            config_digest: "sha256:c".into(),
        };
        assert!(!all.lacks(&[untagged]));
    }

    #[cfg(feature = "export")]
    #[test]
    fn a_docker_host_is_not_asked_for_digest_names() {
        let want = Want {
            names: vec!["r/a:1".into(), "r/a@sha256:m".into()],
            config_digest: "sha256:c".into(),
        };
        let listed = [held("r/a:1", "sha256:c")];
        let wants = std::slice::from_ref(&want);
        assert!(!NodeHas::on_runtime(&listed, "docker").lacks(wants));
        assert!(NodeHas::on_runtime(&listed, "docker").lacks(&[Want {
            config_digest: "sha256:new".into(),
            ..want.clone()
        }]));
        assert!(NodeHas::on_runtime(&listed, "containerd").lacks(wants));
        assert!(NodeHas::on_runtime(&listed, "podman").lacks(wants));
        // auto: Docker's list has no digest name; containerd's, once it holds one, does.
        assert!(!NodeHas::on_runtime(&listed, "auto").lacks(wants));
        let with_digest = [held("r/a:1", "sha256:c"), held("r/b@sha256:x", "sha256:b")];
        assert!(NodeHas::on_runtime(&with_digest, "auto").lacks(wants));
        // Named by digest alone, on Docker: found by its config.
        let by_digest = Want {
            names: vec!["r/a@sha256:m".into()],
            config_digest: "sha256:c".into(),
        };
        assert!(!NodeHas::on_runtime(&listed, "docker").lacks(&[by_digest]));
    }
}
