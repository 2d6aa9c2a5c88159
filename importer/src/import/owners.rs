//! One name, one winner: when several archives of a run give the same image name, which one
//! the name belongs to, decided the same way on every run.
//!
//! The rule: an archive that the bundle's `images.json` lists with the name comes before any
//! other; among equals, the archive that sorts last (the plan's order) wins. A run that only
//! follows the plan's order would settle a name the same way on a first run, but not on the
//! next: the winner is then skipped as present, the loser is not (its image is no longer
//! under the name), and importing it flips the name. So an archive's skip check leaves out
//! the names it loses, and after the run every shared name is checked against its winner.

use std::collections::BTreeMap;

/// One archive's claim on a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claim {
    /// The archive, by its index in the plan's order.
    pub(super) archive: usize,
    /// The config digest (node platform) the archive gives the name, when known.
    pub(super) config: Option<String>,
    /// `images.json` lists the name for this archive.
    pub(super) listed: bool,
}

/// Every claim on every name of the run.
#[derive(Debug, Default)]
pub(super) struct Owners {
    by_name: BTreeMap<String, Vec<Claim>>,
}

impl Owners {
    /// Record that `archive` gives `name` the image of `config`; a second claim of one archive
    /// on one name keeps the first, but learns a config or a listing it lacked.
    pub(super) fn add(&mut self, name: &str, archive: usize, config: Option<&str>, listed: bool) {
        let claims = self.by_name.entry(name.to_string()).or_default();
        match claims.iter_mut().find(|c| c.archive == archive) {
            Some(c) => {
                c.listed |= listed;
                if c.config.is_none() {
                    c.config = config.map(str::to_string);
                }
            }
            None => claims.push(Claim {
                archive,
                config: config.map(str::to_string),
                listed,
            }),
        }
    }

    /// The claim that wins `name`: listed claims first, then the last in plan order.
    pub(super) fn winner(&self, name: &str) -> Option<&Claim> {
        let claims = self.by_name.get(name)?;
        let listed = claims.iter().filter(|c| c.listed).max_by_key(|c| c.archive);
        listed.or_else(|| claims.iter().max_by_key(|c| c.archive))
    }

    /// Whether `archive` gives `name` other content than the archive that wins it: its image
    /// is not to be under that name after the run.
    pub(super) fn loses(&self, name: &str, archive: usize) -> bool {
        let Some(w) = self.winner(name) else {
            return false;
        };
        if w.archive == archive {
            return false;
        }
        let mine = self
            .by_name
            .get(name)
            .and_then(|cs| cs.iter().find(|c| c.archive == archive))
            .and_then(|c| c.config.as_deref());
        match (mine, w.config.as_deref()) {
            (Some(a), Some(b)) => a != b,
            // An unknown config cannot be shown to be the same image.
            _ => true,
        }
    }

    /// Names that two or more archives give different (or unknown) content, each with the
    /// winning claim and the others in plan order.
    pub(super) fn conflicts(&self) -> Vec<Conflict<'_>> {
        let mut out = Vec::new();
        for (name, claims) in &self.by_name {
            let Some(winner) = self.winner(name) else {
                continue;
            };
            let mut losers: Vec<&Claim> = claims
                .iter()
                .filter(|c| c.archive != winner.archive && self.loses(name, c.archive))
                .collect();
            if losers.is_empty() {
                continue;
            }
            losers.sort_by_key(|c| c.archive);
            out.push(Conflict {
                name,
                winner,
                losers,
            });
        }
        out
    }
}

/// A name that archives of one run give different content.
#[derive(Debug)]
pub(super) struct Conflict<'a> {
    pub(super) name: &'a str,
    pub(super) winner: &'a Claim,
    pub(super) losers: Vec<&'a Claim>,
}

impl Conflict<'_> {
    /// Why the winner wins, for the log.
    pub(super) fn rule(&self) -> &'static str {
        if self.winner.listed {
            "images.json lists it there"
        } else {
            "that archive sorts last"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_sorting_last_wins_a_name_whatever_order_the_claims_came_in() {
        let mut o = Owners::default();
        o.add("app:1", 2, Some("sha256:b"), false);
        o.add("app:1", 0, Some("sha256:a"), false);
        assert_eq!(o.winner("app:1").unwrap().archive, 2);
        assert!(o.loses("app:1", 0));
        assert!(!o.loses("app:1", 2));
    }

    #[test]
    fn an_archive_images_json_lists_with_the_name_wins_over_one_sorting_after_it() {
        let mut o = Owners::default();
        o.add("app:1", 0, Some("sha256:a"), true);
        o.add("app:1", 1, Some("sha256:b"), false);
        assert_eq!(o.winner("app:1").unwrap().archive, 0);
        assert!(o.loses("app:1", 1));
        let c = o.conflicts();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].rule(), "images.json lists it there");
        assert_eq!(c[0].losers[0].archive, 1);
    }

    #[test]
    fn two_archives_giving_a_name_the_same_image_are_no_conflict() {
        let mut o = Owners::default();
        o.add("app:1", 0, Some("sha256:a"), false);
        o.add("app:1", 1, Some("sha256:a"), false);
        assert!(!o.loses("app:1", 0));
        assert!(o.conflicts().is_empty());
    }

    #[test]
    fn an_unknown_config_is_a_conflict_and_a_later_claim_fills_it_in() {
        let mut o = Owners::default();
        o.add("app:1", 0, None, false);
        o.add("app:1", 1, Some("sha256:a"), false);
        assert!(o.loses("app:1", 0));
        o.add("app:1", 0, Some("sha256:a"), false);
        assert!(!o.loses("app:1", 0));
        assert!(o.conflicts().is_empty());
    }

    #[test]
    fn a_name_only_one_archive_gives_is_never_lost() {
        let mut o = Owners::default();
        o.add("app:1", 3, Some("sha256:a"), false);
        assert!(!o.loses("app:1", 3));
        assert!(!o.loses("other:1", 3));
        assert!(o.conflicts().is_empty());
    }
}
