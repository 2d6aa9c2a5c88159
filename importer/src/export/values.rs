//! `export --values`: image references read from Helm values files, for when the chart itself
//! cannot be rendered. The values are combined the way Helm combines them, and every reference
//! that depends on what the chart's templates would do is logged as a guess with the value path
//! it came from.
//!
//! - Several files are merged as Helm merges them: maps deeply, later files win, and `null`
//!   deletes what an earlier file set. Files beside the same `Chart.yaml` (or beside none) are
//!   one chart's values; a file beside another chart's `Chart.yaml` starts that chart's own set.
//!   The chart's own `values.yaml` is read first when it was not given.
//! - With a `charts/` directory beside the files, each subchart's `values.yaml` (directory or
//!   `.tgz`) is read under its key (its alias, if the parent's `Chart.yaml` gives one), with the
//!   parent's values over it and the parent's `global` over the subchart's; a subchart
//!   directory's own `charts/` in turn. A subchart whose `condition` is false is left out, as
//!   Helm leaves it out.
//! - Shapes: `image:` strings; `registry`/`repository`/`tag`/`digest` maps (`sha:` too, and the
//!   `name` of an image under the chart's top-level `imageRegistry`/`imageNamespace`); a bare
//!   `image:` string beside a sibling `tag:`; ingress-nginx's `image:`+`chroot`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use yaml_rust2::{Yaml, YamlLoader};

use super::collect::Collected;
use super::yaml::{key, last_component_has_tag, read_input, scalar, yaml_error};
use crate::reference::Reference;

/// One chart's values files, in the order given.
struct Group {
    files: Vec<PathBuf>,
    chart_dir: Option<PathBuf>,
}

/// What a chart's `Chart.yaml` tells the values walk.
#[derive(Default, Clone)]
struct ChartMeta {
    name: String,
    app_version: Option<String>,
    dependencies: Vec<Dependency>,
}

/// A dependency of `Chart.yaml`, as far as the values walk cares.
#[derive(Default, Clone)]
struct Dependency {
    name: String,
    alias: Option<String>,
    /// e.g. `grafana.enabled` (comma-separated paths; the first that is set counts).
    condition: Option<String>,
    /// Switched on by `tags.NAME: true` in the parent's values, when no condition is set.
    tags: Vec<String>,
}

/// A subchart found under `charts/`.
#[derive(Clone)]
struct Subchart {
    meta: ChartMeta,
    values: Yaml,
    /// The parent's `condition` and `tags` for it.
    switch: Dependency,
    /// Its own subcharts (of a subchart directory; a packaged one's are not read).
    children: BTreeMap<String, Subchart>,
}

/// Read every values file, group them by chart, and collect each group's images.
pub fn add_values_files(c: &mut Collected, files: &[PathBuf], allow_empty: bool) {
    for group in groups(files) {
        add_group(c, &group, allow_empty);
    }
}

fn chart_dir_of(file: &Path) -> Option<PathBuf> {
    let dir = match file.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return None,
    };
    if file == Path::new("-") || !dir.join("Chart.yaml").is_file() {
        return None;
    }
    Some(fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

fn groups(files: &[PathBuf]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for f in files {
        let dir = chart_dir_of(f);
        match out.last_mut() {
            Some(g) if dir.is_none() || g.chart_dir.is_none() || g.chart_dir == dir => {
                if g.chart_dir.is_none() {
                    g.chart_dir = dir;
                }
                g.files.push(f.clone());
            }
            _ => out.push(Group {
                files: vec![f.clone()],
                chart_dir: dir,
            }),
        }
    }
    out
}

fn add_group(c: &mut Collected, group: &Group, allow_empty: bool) {
    let mut files = group.files.clone();
    let meta = group.chart_dir.as_deref().map(read_chart_meta);
    if let Some(dir) = &group.chart_dir {
        let defaults = dir.join("values.yaml");
        let given = files
            .iter()
            .any(|f| fs::canonicalize(f).ok().as_deref() == Some(defaults.as_path()));
        if defaults.is_file() && !given {
            c.notes.push(format!(
                "values: reading {} first: the defaults of the chart beside {}",
                defaults.display(),
                files[0].display()
            ));
            files.insert(0, defaults);
        }
    }
    let name = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    let mut tree = Yaml::Hash(Default::default());
    let problems = c.problems.len();
    for f in &files {
        let text = match read_input(f) {
            Ok(t) => t,
            Err(e) => {
                c.problems.push(format!("{e:#}"));
                continue;
            }
        };
        match YamlLoader::load_from_str(&text) {
            Ok(docs) => docs.iter().for_each(|d| coalesce(&mut tree, d)),
            Err(e) => c.problems.push(yaml_error(&f.display().to_string(), &e)),
        }
    }
    // A file that could not be read is already the problem; "no image" would only repeat it.
    let allow_empty = allow_empty || c.problems.len() > problems;
    let meta = meta.unwrap_or_default();
    let subcharts = group
        .chart_dir
        .as_deref()
        .map(|d| read_subcharts(c, d, &meta))
        .unwrap_or_default();
    walk_tree(c, &name, &tree, &meta, &subcharts, allow_empty);
}

/// Collect the images of one chart's merged values.
fn walk_tree(
    c: &mut Collected,
    name: &str,
    tree: &Yaml,
    meta: &ChartMeta,
    subcharts: &BTreeMap<String, Subchart>,
    allow_empty: bool,
) {
    let mut walk = ValuesWalk {
        name,
        out: c,
        found: 0,
        scope: Scope {
            chart: meta.name.clone(),
            app_version: meta.app_version.clone(),
            root: tree.clone(),
            prefix: String::new(),
            global: tree["global"].clone(),
        },
    };
    walk.root(tree, subcharts);
    if walk.found == 0 && !allow_empty {
        c.problems.push(format!(
            "{name}: no image reference found in these values (give --allow-empty when that is \
             expected, or render the chart with --chart to see what its pods run)"
        ));
    }
}

/// Helm's coalescing of a values tree over another: maps merge key by key, `over` wins, and a
/// `null` in `over` deletes the key.
pub fn coalesce(base: &mut Yaml, over: &Yaml) {
    let (Yaml::Hash(b), Yaml::Hash(o)) = (&mut *base, over) else {
        if !matches!(over, Yaml::BadValue) {
            *base = over.clone();
        }
        return;
    };
    for (k, v) in o {
        if v.is_null() {
            b.remove(k);
        } else if let (Some(existing @ Yaml::Hash(_)), Yaml::Hash(_)) = (b.get_mut(k), v) {
            coalesce(existing, v);
        } else if let Yaml::Hash(_) = v {
            // A new map: its own nulls delete nothing, and are dropped as Helm drops them.
            let mut fresh = Yaml::Hash(Default::default());
            coalesce(&mut fresh, v);
            b.insert(k.clone(), fresh);
        } else {
            b.insert(k.clone(), v.clone());
        }
    }
}

fn parse_chart_yaml(text: &str) -> ChartMeta {
    let Some(doc) = YamlLoader::load_from_str(text)
        .ok()
        .and_then(|d| d.into_iter().next())
    else {
        return ChartMeta::default();
    };
    let dependencies = doc["dependencies"]
        .as_vec()
        .map(|deps| {
            deps.iter()
                .filter_map(|d| {
                    Some(Dependency {
                        name: scalar(&d["name"])?,
                        alias: scalar(&d["alias"]).filter(|a| !a.is_empty()),
                        condition: scalar(&d["condition"]).filter(|c| !c.is_empty()),
                        tags: d["tags"]
                            .as_vec()
                            .map(|t| t.iter().filter_map(scalar).collect())
                            .unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    ChartMeta {
        name: scalar(&doc["name"]).unwrap_or_default(),
        app_version: scalar(&doc["appVersion"]).filter(|v| !v.is_empty()),
        dependencies,
    }
}

fn read_chart_meta(dir: &Path) -> ChartMeta {
    fs::read_to_string(dir.join("Chart.yaml"))
        .map(|t| parse_chart_yaml(&t))
        .unwrap_or_default()
}

/// `Chart.yaml` and `values.yaml` of a packaged subchart, read from the `.tgz` in memory.
fn read_packaged(path: &Path) -> anyhow::Result<(String, String)> {
    let file = fs::File::open(path).map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let (mut chart, mut values) = (String::new(), String::new());
    let entries = archive
        .entries()
        .map_err(|e| anyhow!("{}: not a chart archive: {e}", path.display()))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| anyhow!("{}: not a chart archive: {e}", path.display()))?;
        let name = entry.path().map(|p| p.to_path_buf()).unwrap_or_default();
        let parts: Vec<_> = name.components().collect();
        if parts.len() != 2 {
            continue;
        }
        let target = match parts[1].as_os_str().to_str() {
            Some("Chart.yaml") => &mut chart,
            Some("values.yaml") => &mut values,
            _ => continue,
        };
        entry
            .read_to_string(target)
            .map_err(|e| anyhow!("{}: {}: {e}", path.display(), name.display()))?;
    }
    Ok((chart, values))
}

/// The subcharts under `charts/`, by the key their values live under in the parent's values.
fn read_subcharts(c: &mut Collected, dir: &Path, parent: &ChartMeta) -> BTreeMap<String, Subchart> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir.join("charts")) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let read = if path.is_dir() && path.join("Chart.yaml").is_file() {
            let chart = fs::read_to_string(path.join("Chart.yaml")).unwrap_or_default();
            Ok((
                chart,
                fs::read_to_string(path.join("values.yaml")).unwrap_or_default(),
            ))
        } else if path.extension().is_some_and(|e| e == "tgz") {
            read_packaged(&path)
        } else {
            continue;
        };
        let (chart, values) = match read {
            Ok(pair) => pair,
            Err(e) => {
                c.warnings.push(format!("{e:#}; its images are left out"));
                continue;
            }
        };
        let meta = parse_chart_yaml(&chart);
        let children = if path.is_dir() {
            read_subcharts(c, &path, &meta)
        } else {
            BTreeMap::new()
        };
        let values = match YamlLoader::load_from_str(&values) {
            Ok(docs) => docs.into_iter().next().unwrap_or(Yaml::Null),
            Err(e) => {
                c.problems.push(yaml_error(
                    &path.join("values.yaml").display().to_string(),
                    &e,
                ));
                continue;
            }
        };
        let mut keys: Vec<(String, Dependency)> = parent
            .dependencies
            .iter()
            .filter(|d| d.name == meta.name)
            .map(|d| (d.alias.clone().unwrap_or_else(|| d.name.clone()), d.clone()))
            .collect();
        if keys.is_empty() {
            keys.push((meta.name.clone(), Dependency::default()));
        }
        for (k, switch) in keys {
            let sub = Subchart {
                meta: ChartMeta {
                    name: meta.name.clone(),
                    app_version: meta.app_version.clone(),
                    dependencies: Vec::new(),
                },
                values: values.clone(),
                switch,
                children: children.clone(),
            };
            out.insert(k, sub);
        }
    }
    out
}

/// The chart whose values are being walked.
struct Scope {
    chart: String,
    app_version: Option<String>,
    /// The chart's own values (for its top-level `imageRegistry` and `imageNamespace`).
    root: Yaml,
    /// The key path of `root` in the parent's values: "" or ".sub".
    prefix: String,
    global: Yaml,
}

/// Walks a values tree, keeping the key path for messages.
struct ValuesWalk<'a> {
    name: &'a str,
    out: &'a mut Collected,
    scope: Scope,
    /// References collected.
    found: usize,
}

/// Why the parent's values switch a dependency off, if they do: as Helm decides, the first
/// path of its `condition` that is set counts; without one, a `tags.NAME: true` switches it on
/// and a `tags.NAME: false` off.
fn switched_off(tree: &Yaml, dep: &Dependency) -> Option<String> {
    for path in dep
        .condition
        .iter()
        .flat_map(|c| c.split(','))
        .map(str::trim)
    {
        let mut node = tree;
        for part in path.split('.') {
            node = &node[part];
        }
        if let Yaml::Boolean(b) = node {
            return (!b).then(|| format!("its condition {path} is false"));
        }
    }
    let tag = |t: &String| match tree["tags"][t.as_str()] {
        Yaml::Boolean(b) => Some(b),
        _ => None,
    };
    if dep.tags.iter().any(|t| tag(t) == Some(true)) {
        return None;
    }
    let off = dep.tags.iter().find(|t| tag(t) == Some(false))?;
    Some(format!("its tag tags.{off} is false"))
}

impl ValuesWalk<'_> {
    /// The top level of one chart's values: subcharts' keys are walked with the subchart's
    /// own values under the parent's, and its own subcharts in turn.
    fn root(&mut self, tree: &Yaml, subcharts: &BTreeMap<String, Subchart>) {
        self.chart_level(tree, subcharts, &mut Vec::new());
    }

    fn chart_level(
        &mut self,
        tree: &Yaml,
        subcharts: &BTreeMap<String, Subchart>,
        path: &mut Vec<String>,
    ) {
        let Yaml::Hash(h) = tree else { return };
        for (k, sub) in subcharts {
            if !h.contains_key(&key(k)) {
                self.subchart(k, sub, &Yaml::Null, tree, path);
            }
        }
        for (k, v) in h {
            let Some(k) = k.as_str().map(str::to_string).or_else(|| scalar(k)) else {
                continue;
            };
            match subcharts.get(&k) {
                Some(sub) => self.subchart(&k, sub, v, tree, path),
                None => {
                    path.push(k.clone());
                    self.entry(&k, v, path);
                    path.pop();
                }
            }
        }
    }

    fn subchart(
        &mut self,
        k: &str,
        sub: &Subchart,
        given: &Yaml,
        tree: &Yaml,
        path: &mut Vec<String>,
    ) {
        let parent_meta = (self.scope.chart.clone(), self.scope.prefix.clone());
        if let Some(why) = switched_off(tree, &sub.switch) {
            self.out.guesses.push(format!(
                "{}: {}.{k}: subchart {} left out: {why}",
                self.name, parent_meta.1, sub.meta.name
            ));
            return;
        }
        let mut values = sub.values.clone();
        coalesce(&mut values, given);
        // Helm copies the parent's globals into the subchart's, the parent's winning.
        let mut global = values["global"].clone();
        coalesce(&mut global, &self.scope.global);
        let outer = std::mem::replace(
            &mut self.scope,
            Scope {
                chart: format!("{}/charts/{}", parent_meta.0, sub.meta.name),
                app_version: sub.meta.app_version.clone(),
                root: values.clone(),
                prefix: format!("{}.{k}", parent_meta.1),
                global,
            },
        );
        path.push(k.to_string());
        if matches!(values["enabled"], Yaml::Boolean(false)) {
            self.out.guesses.push(format!(
                "{}: left out, because it has enabled: false",
                self.origin(path)
            ));
        } else {
            self.chart_level(&values, &sub.children, path);
        }
        path.pop();
        self.scope = outer;
    }

    fn node(&mut self, node: &Yaml, path: &mut Vec<String>) {
        match node {
            Yaml::Hash(h) => {
                if !path.is_empty() && matches!(h.get(&key("enabled")), Some(Yaml::Boolean(false)))
                {
                    self.out.guesses.push(format!(
                        "{}: left out, because it has enabled: false",
                        self.origin(path)
                    ));
                    return;
                }
                let sibling = sibling_image(h);
                if sibling {
                    self.image_map(node, "image", path, true);
                }
                for (k, v) in h {
                    let Some(k) = k.as_str().map(str::to_string).or_else(|| scalar(k)) else {
                        continue;
                    };
                    if sibling && k == "image" {
                        continue;
                    }
                    path.push(k.clone());
                    self.entry(&k, v, path);
                    path.pop();
                }
            }
            Yaml::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(format!("[{i}]"));
                    self.node(item, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    fn origin(&self, path: &[String]) -> String {
        format!("{}: {}", self.name, dotted(path))
    }

    fn add(&mut self, origin: &str, value: &str) -> bool {
        let before = self.out.problems.len();
        self.out.add(origin, value);
        let ok = self.out.problems.len() == before;
        if ok {
            self.found += 1;
        }
        ok
    }

    fn entry(&mut self, key: &str, value: &Yaml, path: &mut Vec<String>) {
        let image_key = is_image_key(key);
        match value {
            Yaml::String(s) if image_key => {
                let s = s.trim();
                // `image: ""` switches a component off in many charts; a key such as
                // `sidecarImage: true` or a non-reference string is someone else's setting.
                if s.is_empty() {
                    return;
                }
                if key == "image" || Reference::parse(s).is_ok() {
                    let origin = self.origin(path);
                    self.add(&origin, s);
                }
            }
            Yaml::Hash(h) => {
                let repo_key = ["repository", "image", "name"].into_iter().find(|k| {
                    (*k == "repository" || image_key)
                        && scalar(h.get(&self::key(k)).unwrap_or(&Yaml::Null))
                            .is_some_and(|s| !s.is_empty())
                });
                let switched_off =
                    matches!(h.get(&self::key("enabled")), Some(Yaml::Boolean(false)));
                match repo_key {
                    Some(rk) if image_key && !switched_off => self.image_map(value, rk, path, true),
                    Some(rk) if looks_like_image_map(value) && !switched_off => {
                        self.image_map(value, rk, path, false)
                    }
                    _ => self.node(value, path),
                }
            }
            _ => self.node(value, path),
        }
    }

    /// The registry of an image map, and why, when it is not the map's own.
    fn registry(
        &self,
        map: &Yaml,
        repository: &str,
        path: &[String],
        notes: &mut Vec<String>,
    ) -> Option<String> {
        let has_key = !matches!(map["registry"], Yaml::BadValue);
        let own = scalar(&map["registry"]).filter(|r| !r.is_empty());
        let global = [("imageRegistry", None), ("image", Some("registry"))]
            .into_iter()
            .find_map(|(k, sub)| {
                let node = match sub {
                    Some(s) => &self.scope.global[k][s],
                    None => &self.scope.global[k],
                };
                let text = format!(
                    ".global.{k}{}",
                    sub.map(|s| format!(".{s}")).unwrap_or_default()
                );
                scalar(node).filter(|r| !r.is_empty()).map(|r| (r, text))
            });
        let explicit_domain = has_domain(repository);
        match (own, global) {
            (Some(own), Some((g, gpath))) if own != g => {
                notes.push(format!(
                    "registry {g} from {gpath} over {}.registry {own} (chart families disagree on which wins)",
                    dotted(path)
                ));
                Some(g)
            }
            (Some(own), _) => Some(own),
            (None, Some((g, gpath))) if has_key || !explicit_domain => {
                notes.push(format!("registry {g} from {gpath}"));
                Some(g)
            }
            _ => None,
        }
    }

    /// cert-manager's shape: `name` under the chart's `imageRegistry` and `imageNamespace`.
    fn named_repository(&self, map: &Yaml, name: &str, notes: &mut Vec<String>) -> String {
        let mut parts = Vec::new();
        for (own, top) in [
            ("registry", "imageRegistry"),
            ("namespace", "imageNamespace"),
        ] {
            if let Some(v) = scalar(&map[own]).filter(|v| !v.is_empty()) {
                parts.push(v);
            } else if let Some(v) = scalar(&self.scope.root[top]).filter(|v| !v.is_empty()) {
                notes.push(format!("{own} {v} from {}.{top}", self.scope.prefix));
                parts.push(v);
            }
        }
        parts.push(name.to_string());
        parts.join("/")
    }

    /// `{registry, repository, tag, digest}` and the `name`/`image` variants. Under a key that
    /// is not an image key (`strict` false), a map that does not make a reference is ignored.
    fn image_map(&mut self, map: &Yaml, repo_key: &str, path: &[String], strict: bool) {
        let origin = self.origin(path);
        let mut notes = Vec::new();
        let raw = scalar(&map[repo_key]).unwrap_or_default();
        if raw.is_empty() {
            return;
        }
        let mut repository = if repo_key == "name" {
            self.named_repository(map, &raw, &mut notes)
        } else {
            match self.registry(map, &raw, path, &mut notes) {
                Some(r) => format!("{}/{raw}", r.trim_end_matches('/')),
                None => raw,
            }
        };
        let mut digest_key = "digest";
        if matches!(map["chroot"], Yaml::Boolean(true)) {
            repository.push_str("-chroot");
            digest_key = "digestChroot";
            notes.push(
                "the chroot variant (-chroot, and .digestChroot), as ingress-nginx names it".into(),
            );
        }
        let mut tag = scalar(&map["tag"]).filter(|t| !t.is_empty());
        let digest = digest_of(map, digest_key);
        if tag.is_none() && digest.is_none() && !last_component_has_tag(&repository) {
            match &self.scope.app_version {
                Some(v) => {
                    notes.push(format!(
                        "tag {v} from the appVersion of chart {}, because {}.tag is empty \
                         (templates may add a prefix or suffix, or use the Kubernetes version)",
                        self.scope.chart,
                        dotted(path)
                    ));
                    tag = Some(v.clone());
                }
                None if strict => {
                    self.out.warnings.push(format!(
                        "{origin}: no tag and no Chart.yaml appVersion beside the values file; \
                         skipped (pass the chart with --chart to get the tag the chart uses)"
                    ));
                    return;
                }
                None => return,
            }
        }
        let mut reference = repository;
        if let Some(t) = &tag {
            if !last_component_has_tag(&reference) {
                reference = format!("{reference}:{t}");
            }
        }
        if let Some(d) = &digest {
            if tag.is_some() {
                notes.push(
                    "tag and digest both given, kept as repo:tag@digest (charts that drop the \
                     tag run the same image by its digest)"
                        .into(),
                );
            }
            reference = format!("{reference}@{d}");
        }
        if !strict && Reference::parse(&reference).is_err() {
            return;
        }
        if self.add(&origin, &reference) && !notes.is_empty() {
            let r = Reference::parse(&reference).map_or(reference, |r| r.to_string());
            self.out
                .guesses
                .push(format!("{origin}: {r}: {}", notes.join("; ")));
        }
    }
}

/// The map's digest, or its `sha:` (kube-prometheus-stack gives the hex alone).
fn digest_of(map: &Yaml, digest_key: &str) -> Option<String> {
    let sha = || {
        let s = scalar(&map["sha"]).filter(|s| !s.is_empty())?;
        Some(if s.contains(':') {
            s
        } else {
            format!("sha256:{s}")
        })
    };
    scalar(&map[digest_key])
        .filter(|d| !d.is_empty())
        .or_else(sha)
}

/// `.a.b[0].c` for messages.
fn dotted(path: &[String]) -> String {
    let mut p = String::new();
    for part in path {
        if !part.starts_with('[') {
            p.push('.');
        }
        p.push_str(part);
    }
    p
}

fn has_domain(repository: &str) -> bool {
    repository.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    })
}

/// A map with a bare `image:` string (without a tag) beside a `tag:`, `digest:` or `sha:`.
fn sibling_image(h: &yaml_rust2::yaml::Hash) -> bool {
    let Some(Yaml::String(image)) = h.get(&key("image")) else {
        return false;
    };
    let set = |k: &str| {
        h.get(&key(k))
            .and_then(scalar)
            .is_some_and(|v| !v.is_empty())
    };
    !image.trim().is_empty()
        && !last_component_has_tag(image.trim())
        && (set("tag") || set("digest") || set("sha"))
}

/// `image`, and keys that name one: `initImage`, `sidecarImage`, `kubectl_image`.
fn is_image_key(key: &str) -> bool {
    key == "image" || key.ends_with("Image") || key.ends_with("_image")
}

/// A map under some other key that is still clearly an image: `repository` plus a tag, digest
/// or registry (`controller: {repository: ..., tag: ...}` is rare, but `repository` alone is
/// also how charts name git repositories and Helm repositories).
fn looks_like_image_map(map: &Yaml) -> bool {
    let has = |k: &str| !matches!(map[k], Yaml::BadValue | Yaml::Null);
    matches!(map["repository"], Yaml::String(_))
        && (has("tag") || has("digest") || has("registry") || has("sha"))
}

/// One values text on its own, as the unit tests give it.
#[cfg(test)]
pub(super) fn add_values_text(
    c: &mut Collected,
    name: &str,
    text: &str,
    app_version: Option<&str>,
    allow_empty: bool,
) {
    let mut tree = Yaml::Hash(Default::default());
    match YamlLoader::load_from_str(text) {
        Ok(docs) => docs.iter().for_each(|d| coalesce(&mut tree, d)),
        Err(e) => return c.problems.push(yaml_error(name, &e)),
    }
    let meta = ChartMeta {
        name: "chart".into(),
        app_version: app_version.map(str::to_string),
        dependencies: Vec::new(),
    };
    walk_tree(c, name, &tree, &meta, &BTreeMap::new(), allow_empty);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn values(text: &str, app_version: Option<&str>) -> Collected {
        let mut c = Collected::default();
        add_values_text(&mut c, "values.yaml", text, app_version, false);
        c
    }

    fn refs(c: &Collected) -> Vec<String> {
        c.refs.iter().map(ToString::to_string).collect()
    }

    /// The guess line that names `reference`, if any.
    fn guess<'a>(c: &'a Collected, reference: &str) -> Option<&'a String> {
        c.guesses
            .iter()
            .find(|g| g.contains(&format!(": {reference}: ")))
    }

    #[test]
    fn an_empty_global_registry_leaves_each_image_its_own_registry() {
        let c = values(
            "global:\n  imageRegistry: \"\"\nprometheus:\n  image:\n    registry: quay.io\n    \
             repository: prometheus/prometheus\n    tag: v2.54.1\n",
            None,
        );
        assert_eq!(refs(&c), vec!["quay.io/prometheus/prometheus:v2.54.1"]);
        assert!(c.guesses.is_empty(), "{:?}", c.guesses);
    }

    #[test]
    fn a_global_registry_over_a_different_own_registry_is_logged_as_a_guess() {
        let c = values(
            "global:\n  imageRegistry: mirror.local:5000\ndb:\n  image:\n    registry: docker.io\n    \
             repository: bitnami/postgresql\n    tag: \"16\"\n",
            None,
        );
        let r = "mirror.local:5000/bitnami/postgresql:16";
        assert_eq!(refs(&c), vec![r]);
        let g = guess(&c, r).expect("a guess line");
        assert!(
            g.contains(".global.imageRegistry over .db.image.registry docker.io"),
            "{g}"
        );
    }

    #[test]
    fn the_cert_manager_shape_takes_image_registry_namespace_and_name() {
        let c = values(
            "imageRegistry: quay.io\nimageNamespace: jetstack\nimage:\n  repository: \"\"\n  \
             name: cert-manager-controller\n  tag: \"\"\nwebhook:\n  image:\n    repository: \"\"\n    \
             name: cert-manager-webhook\n    digest: {DIGEST}\n"
                .replace("{DIGEST}", DIGEST)
                .as_str(),
            Some("v1.17.0"),
        );
        let controller = "quay.io/jetstack/cert-manager-controller:v1.17.0";
        let webhook = format!("quay.io/jetstack/cert-manager-webhook@{DIGEST}");
        assert_eq!(refs(&c), vec![controller.to_string(), webhook.clone()]);
        let g = guess(&c, controller).unwrap();
        assert!(g.contains("registry quay.io from .imageRegistry"), "{g}");
        assert!(g.contains("tag v1.17.0 from the appVersion"), "{g}");
        assert!(g.contains(".image.tag is empty"), "{g}");
        assert!(guess(&c, &webhook).is_some(), "{:?}", c.guesses);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
    }

    #[test]
    fn a_bare_image_string_beside_a_sibling_tag_takes_that_tag() {
        let c = values(
            "migrate:\n  image: registry.example.com/org/migrate\n  tag: \"2.1\"\n",
            None,
        );
        assert_eq!(refs(&c), vec!["registry.example.com/org/migrate:2.1"]);
    }

    #[test]
    fn a_sha_field_pins_the_digest_and_the_tag_is_kept_beside_it() {
        let hex = &DIGEST["sha256:".len()..];
        let c = values(
            &format!("image:\n  repository: quay.io/prometheus/prometheus\n  tag: v2.54.1\n  sha: {hex}\n"),
            None,
        );
        let r = format!("quay.io/prometheus/prometheus:v2.54.1@{DIGEST}");
        assert_eq!(refs(&c), vec![r.clone()]);
        assert!(guess(&c, &r).unwrap().contains("repo:tag@digest"));
    }

    #[test]
    fn the_ingress_nginx_chroot_variant_takes_its_own_name_and_digest() {
        let c = values(
            &format!(
                "controller:\n  image:\n    chroot: true\n    registry: registry.k8s.io\n    \
                 image: ingress-nginx/controller\n    tag: v1.11.2\n    digest: sha256:{}\n    \
                 digestChroot: {DIGEST}\n",
                "f".repeat(64)
            ),
            None,
        );
        let r = format!("registry.k8s.io/ingress-nginx/controller-chroot:v1.11.2@{DIGEST}");
        assert_eq!(refs(&c), vec![r.clone()]);
        assert!(guess(&c, &r).unwrap().contains("chroot variant"));
    }

    #[test]
    fn later_files_win_and_null_deletes_as_helm_merges() {
        let mut tree = Yaml::Hash(Default::default());
        for text in [
            "a:\n  image:\n    repository: org/a\n    tag: \"1\"\nb:\n  image: org/b:1\nc: {keep: 1}\n",
            "a:\n  image:\n    tag: \"2\"\nb: null\nc: {add: 2}\n",
        ] {
            coalesce(&mut tree, &YamlLoader::load_from_str(text).unwrap()[0]);
        }
        assert_eq!(tree["a"]["image"]["repository"].as_str(), Some("org/a"));
        assert_eq!(tree["a"]["image"]["tag"].as_str(), Some("2"));
        assert!(matches!(tree["b"], Yaml::BadValue), "b was deleted");
        assert_eq!(tree["c"]["keep"].as_i64(), Some(1));
        assert_eq!(tree["c"]["add"].as_i64(), Some(2));
    }

    #[test]
    fn a_component_switched_off_is_left_out_and_said_so() {
        let c = values(
            "web:\n  image: nginx:1.27\ncheck:\n  enabled: false\n  image:\n    repository: org/check\n    tag: \"1\"\n",
            None,
        );
        assert_eq!(refs(&c), vec!["docker.io/library/nginx:1.27"]);
        assert!(
            c.guesses
                .iter()
                .any(|g| g.contains(".check: left out") && g.contains("enabled: false")),
            "{:?}",
            c.guesses
        );
    }

    #[test]
    fn values_without_any_image_are_a_problem_unless_allowed() {
        let c = values("replicaCount: 2\n", None);
        assert!(c.refs.is_empty());
        assert_eq!(c.problems.len(), 1);
        assert!(
            c.problems[0].contains("no image reference found"),
            "{:?}",
            c.problems
        );
        let mut c = Collected::default();
        add_values_text(&mut c, "values.yaml", "replicaCount: 2\n", None, true);
        assert!(c.problems.is_empty());
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn a_subchart_of_a_subchart_is_read_under_both_keys_with_the_top_global() {
        let dir = std::env::temp_dir().join(format!("oi-values-nested-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write(
            &dir.join("Chart.yaml"),
            "apiVersion: v2\nname: top\nversion: 1.0.0\n",
        );
        write(
            &dir.join("values.yaml"),
            "global:\n  imageRegistry: mirror.local\nmid:\n  inner:\n    image:\n      tag: \"2\"\n",
        );
        write(
            &dir.join("charts/mid/Chart.yaml"),
            "apiVersion: v2\nname: mid\nversion: 1.0.0\n",
        );
        write(
            &dir.join("charts/mid/charts/inner/Chart.yaml"),
            "apiVersion: v2\nname: inner\nversion: 1.0.0\n",
        );
        write(
            &dir.join("charts/mid/charts/inner/values.yaml"),
            "image:\n  registry: docker.io\n  repository: org/inner\n  tag: \"1\"\n",
        );
        let mut c = Collected::default();
        add_values_files(&mut c, &[dir.join("values.yaml")], false);
        let r = "mirror.local/org/inner:2";
        assert_eq!(refs(&c), vec![r]);
        assert!(
            guess(&c, r).unwrap().contains(".mid.inner.image: "),
            "{:?}",
            c.guesses
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn subcharts_values_are_read_under_their_key_with_their_own_app_version_condition_and_tags() {
        let dir = std::env::temp_dir().join(format!("oi-values-sub-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write(
            &dir.join("Chart.yaml"),
            "apiVersion: v2\nname: top\nversion: 1.0.0\nappVersion: 9.9.9\ndependencies:\n  \
             - {name: metrics, version: 1.0.0, alias: kubeStateMetrics}\n  \
             - {name: dash, version: 1.0.0, condition: dash.enabled}\n  \
             - {name: extras, version: 1.0.0, tags: [extras]}\n",
        );
        write(
            &dir.join("values.yaml"),
            "global:\n  imageRegistry: \"\"\ndash:\n  enabled: false\ntags:\n  extras: false\n",
        );
        write(
            &dir.join("mirror.yaml"),
            "kubeStateMetrics:\n  image:\n    tag: v2.13.1\n",
        );
        write(
            &dir.join("charts/metrics/Chart.yaml"),
            "apiVersion: v2\nname: metrics\nversion: 1.0.0\nappVersion: 2.13.0\n",
        );
        write(
            &dir.join("charts/metrics/values.yaml"),
            "image:\n  registry: registry.k8s.io\n  repository: kube-state-metrics/kube-state-metrics\n  tag: \"\"\n\
             extra:\n  image:\n    registry: registry.k8s.io\n    repository: org/extra\n    tag: \"\"\n",
        );
        write(
            &dir.join("charts/dash/Chart.yaml"),
            "apiVersion: v2\nname: dash\nversion: 1.0.0\nappVersion: 11.0.0\n",
        );
        write(
            &dir.join("charts/extras/Chart.yaml"),
            "apiVersion: v2\nname: extras\nversion: 1.0.0\n",
        );
        write(
            &dir.join("charts/extras/values.yaml"),
            "image: org/extras:1\n",
        );
        write(
            &dir.join("charts/dash/values.yaml"),
            "image:\n  repository: grafana/grafana\n  tag: \"\"\n",
        );
        let mut c = Collected::default();
        add_values_files(
            &mut c,
            &[dir.join("values.yaml"), dir.join("mirror.yaml")],
            false,
        );
        assert_eq!(
            refs(&c),
            vec![
                "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.13.1",
                "registry.k8s.io/org/extra:2.13.0",
            ]
        );
        let g = guess(&c, "registry.k8s.io/org/extra:2.13.0").unwrap();
        assert!(g.contains("appVersion of chart top/charts/metrics"), "{g}");
        assert!(
            g.contains(".kubeStateMetrics.extra.image.tag is empty"),
            "{g}"
        );
        assert!(
            c.guesses
                .iter()
                .any(|g| g.contains("subchart dash left out: its condition dash.enabled is false")),
            "{:?}",
            c.guesses
        );
        assert!(
            c.guesses
                .iter()
                .any(|g| g.contains("subchart extras left out: its tag tags.extras is false")),
            "{:?}",
            c.guesses
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        fs::remove_dir_all(&dir).unwrap();
    }
}
