//! Undoing a load that failed half-way: Docker names the images of an archive one after the
//! other, so a load that fails after the first would leave the archive half-loaded. Docker's
//! names and images are listed just before the load; after a failure, every name the load
//! changed is removed or put back on the image it named before, and the images it added that no
//! name holds are removed. Images that were there before are never removed.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Result};
use serde::Deserialize;

use super::answer::{read_load_answer, refusal, LoadAnswer};
use super::{query_escape, Docker, IMAGE_LIST_MAX, SMALL_ANSWER};
use crate::reference;
use crate::runtime::http::{Request, Wait};

/// A named image as `GET /images/json` lists it: (normalised name, image ID, labels).
pub(super) type Listed = (String, String, BTreeMap<String, String>);

impl Docker {
    /// Every image: under each of its names, an untagged one under its ID (`sha256:…`), so
    /// that an untagged archive's image is found by its config (a re-run skips it, verify
    /// finds it).
    pub(super) fn images(&self) -> Result<Vec<Listed>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Summary {
            id: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            #[serde(default)]
            labels: Option<BTreeMap<String, String>>,
        }
        let images: Vec<Summary> = self.get_json("/images/json", IMAGE_LIST_MAX)?;
        let mut out = Vec::new();
        for image in images {
            let named = out.len();
            for tag in image.repo_tags.iter().flatten() {
                if tag == "<none>:<none>" {
                    continue;
                }
                // Docker's own names are valid references; one that is not cannot match
                // anything an archive names, so it is left out.
                let Ok(name) = reference::normalize(tag) else {
                    continue;
                };
                out.push((
                    name,
                    image.id.clone(),
                    image.labels.clone().unwrap_or_default(),
                ));
            }
            if out.len() == named && !image.id.is_empty() {
                out.push((image.id.clone(), image.id, image.labels.unwrap_or_default()));
            }
        }
        Ok(out)
    }
}

/// Docker's names and images at one moment: what a failed load is undone to.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// Every tag Docker lists, normalised, and the image ID it names.
    tags: BTreeMap<String, String>,
    /// Every image ID, named or not.
    ids: BTreeSet<String>,
    /// The archive's digest names (`repo@sha256:…`), on the containerd image store (the classic
    /// store loads none): the image ID each names, or None. The image list shows only tags.
    digests: BTreeMap<String, Option<String>>,
}

impl Listing {
    fn id_of(&self, name: &str) -> Option<&String> {
        match self.digests.get(name) {
            Some(id) => id.as_ref(),
            None => self.tags.get(name),
        }
    }

    /// No tag names `id`.
    fn unnamed(&self, id: &str) -> bool {
        self.ids.contains(id) && !self.tags.values().any(|t| t == id)
    }
}

impl Docker {
    /// What Docker has now, with the image each digest name of `info` stands for.
    pub(super) fn before_load(&self, info: &crate::archive::ArchiveInfo) -> Result<Listing> {
        let digest_names = info.images.iter().flat_map(|i| &i.names);
        let digest_names = digest_names.filter(|n| self.containerd_store && n.contains('@'));
        self.listing(digest_names)
    }

    fn listing<'a>(&self, digest_names: impl IntoIterator<Item = &'a String>) -> Result<Listing> {
        let mut listing = Listing::default();
        for (name, id, _) in self.images()? {
            if name != id {
                listing.tags.insert(name, id.clone());
            }
            listing.ids.insert(id);
        }
        for name in digest_names {
            listing.digests.insert(name.clone(), self.image_id(name)?);
        }
        Ok(listing)
    }

    /// End the archive, wait for Docker's answer, and when the load failed, undo what it did:
    /// Docker names the images of an archive one after the other, and a failure after the first
    /// would leave it half-loaded.
    pub(super) fn await_load(
        &self,
        peer: &str,
        request: Request,
        before: &Listing,
        info: &crate::archive::ArchiveInfo,
    ) -> Result<Vec<String>> {
        let answer = request
            .response(Wait::Unlimited)
            .and_then(|mut resp| read_load_answer(peer, &mut resp));
        let (error, answer) = match answer {
            Ok(a) if a.errors.is_empty() => return Ok(a.names),
            Ok(a) => (a.error(peer), a),
            Err(e) => (e, LoadAnswer::default()),
        };
        let mut claimed: BTreeSet<String> = info
            .images
            .iter()
            .flat_map(|i| i.names.iter().cloned())
            .collect();
        claimed.extend(answer.names.iter().cloned());
        let undo = self.undo_load(before, &claimed, &answer.ids);
        Err(match undo.describe() {
            Some(what) => error.context(what),
            None => error,
        })
    }

    /// Put every name of `claimed` back as it was in `before` (removed when it was not there,
    /// moved back to its image when the load moved it), then remove the images the load added
    /// that no name holds any more. Images that were there before are never removed.
    fn undo_load(&self, before: &Listing, claimed: &BTreeSet<String>, ids: &[String]) -> Undo {
        let mut undo = Undo::default();
        let digests = claimed.iter().filter(|n| before.digests.contains_key(*n));
        let after = match self.listing(digests) {
            Ok(l) => l,
            Err(e) => {
                undo.problems
                    .push(format!("cannot list Docker's images after the load: {e:#}"));
                return undo;
            }
        };
        let mut added: BTreeSet<String> = ids.iter().cloned().collect();
        for name in claimed {
            let Some(now) = after.id_of(name) else {
                continue;
            };
            added.insert(now.clone());
            let done = match before.id_of(name) {
                Some(was) if was == now => continue,
                Some(was) => self
                    .tag_image(was, name)
                    .map(|()| format!("{name} (put back on {was})")),
                None => self
                    .delete_image(name)
                    .map(|()| format!("{name} (removed)")),
            };
            match done {
                Ok(what) => undo.done.push(what),
                Err(e) => undo.problems.push(format!("{e:#}")),
            }
        }
        added.retain(|id| !before.ids.contains(id));
        if added.is_empty() {
            return undo;
        }
        let after = match self.listing([]) {
            Ok(l) => l,
            Err(e) => {
                undo.problems
                    .push(format!("cannot list Docker's images: {e:#}"));
                return undo;
            }
        };
        for id in added.iter().filter(|id| after.unnamed(id)) {
            match self.delete_image(id) {
                Ok(()) => undo.done.push(format!("the unnamed image {id} (removed)")),
                Err(e) => undo.problems.push(format!("{e:#}")),
            }
        }
        undo
    }

    /// `GET /images/NAME/json`: the image ID, or None when Docker has no such image.
    fn image_id(&self, name: &str) -> Result<Option<String>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inspect {
            id: String,
        }
        let p = format!("/images/{name}/json");
        let mut resp = self.client.get(&self.path(&p))?;
        match resp.status {
            200 => {}
            404 => return Ok(None),
            _ => {
                return Err(refusal(
                    &self.client.describe_peer(),
                    &format!("GET {p}"),
                    &mut resp,
                ))
            }
        }
        let body = resp.text(SMALL_ANSWER)?;
        let inspect: Inspect = serde_json::from_str(&body)
            .map_err(|e| anyhow!("GET {p} answered something unexpected ({e})"))?;
        Ok(Some(inspect.id))
    }

    /// `DELETE /images/NAME`: the name goes, and the image with it when no other name holds it
    /// (its parents stay). An image that is already gone is no error.
    fn delete_image(&self, name: &str) -> Result<()> {
        let p = format!("/images/{name}?noprune=1");
        let mut resp = self
            .client
            .start("DELETE", &self.path(&p), &[], Some(0))?
            .response(Wait::Short)?;
        match resp.status {
            200 | 404 => Ok(()),
            _ => Err(refusal(
                &self.client.describe_peer(),
                &format!("DELETE /images/{name}"),
                &mut resp,
            )),
        }
    }

    /// `POST /images/ID/tag`: `name` names the image `id` again.
    fn tag_image(&self, id: &str, name: &str) -> Result<()> {
        let r = reference::Reference::parse(name)?;
        let tag = r.tag.as_deref().unwrap_or("latest");
        let p = format!(
            "/images/{id}/tag?repo={}&tag={}",
            query_escape(&r.repository()),
            query_escape(tag)
        );
        let mut resp = self
            .client
            .start("POST", &self.path(&p), &[], Some(0))?
            .response(Wait::Short)?;
        match resp.status {
            200 | 201 => Ok(()),
            _ => Err(refusal(
                &self.client.describe_peer(),
                &format!("tagging {id} as {name}"),
                &mut resp,
            )),
        }
    }
}

/// What undoing a failed load did, for its error message.
#[derive(Debug, Default)]
struct Undo {
    /// What was put back: `NAME (removed)`, `NAME (put back on ID)`, `ID (removed)`.
    done: Vec<String>,
    problems: Vec<String>,
}

impl Undo {
    /// None when the load had changed nothing.
    fn describe(&self) -> Option<String> {
        let done = self.done.join(", ");
        let problems = self.problems.join("; ");
        match (done.is_empty(), problems.is_empty()) {
            (true, true) => None,
            (false, true) => Some(format!(
                "the load failed after Docker had changed {done}; all undone"
            )),
            (false, false) => Some(format!(
                "the load failed after Docker had changed {done}; undone but for: {problems}"
            )),
            (true, false) => Some(format!(
                "the load failed, and what Docker may have loaded could not be undone: {problems}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undo_says_what_it_removed_and_what_it_could_not() {
        assert_eq!(Undo::default().describe(), None);
        let undo = Undo {
            done: vec!["docker.io/oi-test/a:1 (removed)".into()],
            problems: vec!["conflict".into()],
        };
        let text = undo.describe().unwrap();
        assert!(text.contains("docker.io/oi-test/a:1 (removed)"), "{text}");
        assert!(text.contains("undone but for: conflict"), "{text}");
    }
}
