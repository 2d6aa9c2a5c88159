//! All or nothing per archive: an archive that fails leaves no name and no image of its own,
//! on every Docker of the matrix. A name Docker would refuse fails the archive before it is
//! loaded (on containerd too: one rule for every runtime), and a load Docker fails after it
//! has named an image is undone. Regression tests are named after the bug they keep fixed.

use std::path::{Path, PathBuf};

use offline_images::reference::{self, Reference};

use crate::harness::*;

/// A repository name of exactly 256 characters, registry included, with a tag of its own.
fn name_of_256(tag: &str) -> String {
    let registry = "oi-test.local/";
    format!("{registry}{}:{tag}", "r".repeat(256 - registry.len()))
}

/// The FAILED line of `file` in an import's log.
fn failed_line<'a>(stderr: &'a str, file: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.starts_with("FAILED") && l.contains(file))
        .unwrap_or_else(|| panic!("no FAILED line for {file}:\n{stderr}"))
}

/// Whether `d`'s dockerd holds an image whose config is `config`, named or not. The classic
/// store's image IDs are config digests; the containerd image store keeps its images in
/// containerd's `moby` namespace, each a manifest (or index of manifests) naming its config.
fn docker_has_config(d: &Daemons, config: &str) -> bool {
    if !d.docker_containerd_store() {
        return d.docker_image_id(config).is_some();
    }
    let get = |digest: &str| -> serde_json::Value {
        let out = d
            .ctr("moby")
            .args(["content", "get", digest])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let listed = stdout_of(d.ctr("moby").args(["images", "ls"]));
    listed.lines().skip(1).any(|line| {
        let Some(target) = line.split_whitespace().nth(2) else {
            return false;
        };
        let doc = get(target);
        let manifests = match doc["manifests"].as_array() {
            Some(list) => list
                .iter()
                .filter_map(|m| m["digest"].as_str())
                .map(get)
                .collect(),
            None => vec![doc],
        };
        manifests.iter().any(|m| m["config"]["digest"] == config)
    })
}

/// `src` written to `dst` with the file `name` replaced by `data`, every other entry (links and
/// directories too) as it was.
fn with_file_replaced(src: &Path, dst: &Path, name: &str, data: &[u8]) {
    let mut archive = tar::Archive::new(std::fs::File::open(src).unwrap());
    let mut out = tar::Builder::new(std::fs::File::create(dst).unwrap());
    let mut found = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        if entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            == name
        {
            found = true;
            header.set_size(data.len() as u64);
            header.set_cksum();
            out.append(&header, data).unwrap();
        } else {
            out.append(&header, &mut entry).unwrap();
        }
    }
    assert!(found, "{name} not in {}", src.display());
    out.finish().unwrap();
}

/// Where each regular file's data lies in a tar: name -> (offset, size).
fn file_spans(tar: &[u8]) -> Vec<(String, u64, u64)> {
    let mut archive = tar::Archive::new(tar);
    let mut spans = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            spans.push((name, entry.raw_file_position(), entry.size()));
        }
    }
    spans
}

/// `docker save` of two images (Docker 20.10's own archive) with the file `/message` of the
/// second image's last layer upper-cased in place: every tar stays valid and every size the
/// same, but that layer no longer has the diff ID its config gives, as a layer damaged on disk.
/// Docker loads the first image, names it, and fails on the second.
fn second_image_damaged(src: &Path, dst: &Path) {
    let mut bytes = std::fs::read(src).unwrap();
    let spans = file_spans(&bytes);
    let span = |name: &str| {
        let (_, at, size) = spans
            .iter()
            .find(|(n, _, _)| n.trim_start_matches("./") == name)
            .unwrap_or_else(|| panic!("{name} not in {}", src.display()));
        (*at as usize, *size as usize)
    };
    let (at, size) = span("manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(&bytes[at..at + size]).unwrap();
    let layers = |i: usize| -> Vec<String> {
        manifest[i]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    };
    let victim = layers(1).last().unwrap().clone();
    assert!(!layers(0).contains(&victim), "{manifest}");
    let (layer_at, layer_size) = span(&victim);
    let layer = &mut bytes[layer_at..layer_at + layer_size];
    let (_, at, size) = file_spans(layer)
        .into_iter()
        .find(|(n, _, _)| n.ends_with("message"))
        .expect("the message file is in the image's last layer");
    layer[at as usize..(at + size) as usize].make_ascii_uppercase();
    std::fs::write(dst, bytes).unwrap();
}

/// A bundle directory holding `archives` (file name, source).
fn bundle(label: &str, archives: &[(&str, &Path)]) -> PathBuf {
    let dir = temp_dir(label);
    for (name, src) in archives {
        std::fs::copy(src, dir.join(name)).unwrap();
    }
    dir
}

/// The docker save archive of `image` from the default pair's dockerd, which then forgets it.
fn saved_and_removed(image: &TestImage, label: &str) -> PathBuf {
    let tar = temp_dir(label).join("image.tar");
    run(docker().args(["save", "-o"]).arg(&tar).arg(&image.tag));
    docker_rmi(&image.tag);
    tar
}

/// The archive of the finding: one image whose `RepoTags` are a good name, then a name of 256
/// characters. Made by the real `docker tag` and `docker save` of a Docker that takes such a
/// name (27+); when this run has none, docker save's archive of the default pair with its
/// manifest.json edited, which is hostile input by design.
fn archive_with_a_256_character_name(image: &TestImage, first: &str, long: &str) -> PathBuf {
    let saved = saved_and_removed(image, "name-256-saved");
    let out = temp_dir("name-256").join("long.tar");
    for d in every_version().iter().skip(1) {
        // Loads and removes beside other tests' fixtures on this dockerd: one at a time.
        let _lock = d.docker_lock();
        run(d.docker().args(["load", "-q", "-i"]).arg(&saved));
        let tagged = d.docker().args(["tag", &image.tag, long]).output().unwrap();
        if tagged.status.success() {
            run(d.docker().args(["tag", &image.tag, first]));
            run(d
                .docker()
                .args(["save", "-o"])
                .arg(&out)
                .args([first, long]));
        }
        let _ = d
            .docker()
            .args(["image", "rm", first, long, &image.tag])
            .output();
        if tagged.status.success() {
            eprintln!("{}: docker tag and save made {}", d.label, out.display());
            return out;
        }
    }
    let manifest = tar_files(&saved)
        .into_iter()
        .find(|(n, _)| n == "manifest.json")
        .unwrap()
        .1;
    let mut v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    v[0]["RepoTags"] = serde_json::json!([first, long]);
    with_file_replaced(
        &saved,
        &out,
        "manifest.json",
        &serde_json::to_vec(&v).unwrap(),
    );
    out
}

#[test]
fn repository_name_of_256_characters_fails_its_archive_whole_on_every_docker_and_containerd() {
    if std::env::var("CI").as_deref() == Ok("true") {
        assert!(
            every_version()
                .iter()
                .any(|d| d.docker_version.starts_with("28.")),
            "CI must run this on Docker 28 too: start it with OI_VERSIONS"
        );
    }
    let tag = unique_tag("name-256");
    let image = build_image(&tag, &format!("{tag}, named in 256 characters"));
    let first = unique_tag("first-ok");
    let long = name_of_256(&format!("{}", std::process::id()));
    let archive = archive_with_a_256_character_name(&image, &first, &long);
    let dir = bundle("name-256-bundle", &[("long.tar", &archive)]);
    for d in every_version() {
        // Loads and removes beside other tests' fixtures on this dockerd: one at a time.
        let _lock = d.docker_lock();
        assert_eq!(d.docker_image_id(&first), None, "{}", d.label);
        let (code, _, stderr) = outcome(&mut d.against_docker("import", &dir));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        for name in [&first, &long] {
            assert_eq!(
                d.docker_image_id(name),
                None,
                "{}: {name}\n{stderr}",
                d.label
            );
        }
        assert!(!docker_has_config(d, &image.config_digest), "{}", d.label);
        let line = failed_line(&stderr, "long.tar");
        assert!(
            line.contains("\"oi-test.local/rrrr") && line.contains("characters)"),
            "{}: the line names the name, cut: {line}",
            d.label
        );
        assert!(
            line.contains("is 256 characters, more than the 255"),
            "{}: the line names the rule: {line}",
            d.label
        );
        assert!(line.len() < 600, "{}: {line}", d.label);

        let ns = unique_namespace("name-256");
        let (code, _, stderr) = outcome(&mut d.against_containerd("import", &dir, &ns));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        let line = failed_line(&stderr, "long.tar");
        assert!(line.contains("more than the 255"), "{}: {line}", d.label);
        assert_eq!(d.ctr_images(&ns), Vec::<String>::new(), "{}", d.label);
    }
    // `list` refuses it for the same reason.
    let (_, _, listed) = outcome(offline_images().arg("list").arg(dir.join("long.tar")));
    assert!(listed.contains("more than the 255"), "{listed}");
}

/// Two images built for one test, and the archives made of them.
struct Pair {
    a: TestImage,
    b: TestImage,
    /// docker save of both, the second's last layer damaged.
    damaged: PathBuf,
    /// docker save of the first alone, intact.
    first_alone: PathBuf,
}

fn damaged_pair(label: &str) -> Pair {
    // Contents of their own: a layer another image shares is not read from the archive.
    let built = |part: &str| {
        let tag = unique_tag(&format!("{label}-{part}"));
        build_image(&tag, &format!("{tag}, one of a damaged pair"))
    };
    let (a, b) = (built("a"), built("b"));
    let dir = temp_dir(label);
    let both = dir.join("both.tar");
    run(docker()
        .args(["save", "-o"])
        .arg(&both)
        .args([&a.tag, &b.tag]));
    let first_alone = dir.join("first.tar");
    // The first image of the archive is whichever docker save put first.
    let manifest = tar_files(&both)
        .into_iter()
        .find(|(n, _)| n == "manifest.json")
        .unwrap()
        .1;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let (a, b) = if manifest[0]["RepoTags"][0] == a.tag.as_str() {
        (a, b)
    } else {
        (b, a)
    };
    run(docker().args(["save", "-o"]).arg(&first_alone).arg(&a.tag));
    let damaged = dir.join("damaged.tar");
    second_image_damaged(&both, &damaged);
    docker_rmi(&a.tag);
    // With its untagged build parents, which hold the layer damaged in the archive: a Docker
    // that has a layer already does not read it from the archive. Parents that other images
    // share stay.
    run(docker().args(["image", "rm", &b.tag]));
    Pair {
        a,
        b,
        damaged,
        first_alone,
    }
}

/// Neither image of the pair is on `d`, by name or by content.
fn pair_is_gone(d: &Daemons, pair: &Pair, when: &str) {
    for image in [&pair.a, &pair.b] {
        assert_eq!(
            d.docker_image_id(&image.tag),
            None,
            "{}: {when}: {} is left",
            d.label,
            image.tag
        );
        assert!(
            !docker_has_config(d, &image.config_digest),
            "{}: {when}: the image of {} is left",
            d.label,
            image.tag
        );
    }
}

#[test]
fn docker_load_that_fails_after_naming_the_first_of_two_images_leaves_no_name_on_every_docker() {
    let pair = damaged_pair("damaged");
    let dir = bundle("damaged-bundle", &[("damaged.tar", &pair.damaged)]);
    for d in every_version() {
        // Loads and removes beside other tests' fixtures on this dockerd: one at a time.
        let _lock = d.docker_lock();
        pair_is_gone(d, &pair, "before");
        let (code, _, stderr) = outcome(&mut d.against_docker("import", &dir));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        pair_is_gone(d, &pair, &format!("after the failed load\n{stderr}"));
        let line = failed_line(&stderr, "damaged.tar");
        // Docker's own words: the classic store checks the diff ID, the containerd image
        // store fails to unpack the layer.
        assert!(
            line.contains("invalid diffID") || line.contains("Error unpacking image"),
            "{}: {line}",
            d.label
        );
        assert!(
            line.contains(&format!("{} (removed)", pair.a.reference)),
            "{}: Docker named the first image, and the undo says so: {line}",
            d.label
        );
    }
}

#[test]
fn docker_load_that_fails_after_naming_leaves_what_was_there_before_on_every_docker() {
    let pair = damaged_pair("damaged-kept");
    // An image of its own that already holds the first image's name.
    let there_tag = unique_tag("already-there");
    let there = build_image(&there_tag, &format!("{there_tag}, already there"));
    let there_archive = saved_and_removed(&there, "already-there");
    let damaged = bundle("damaged-kept", &[("damaged.tar", &pair.damaged)]);
    // The intact first image sorts before the damaged archive: it loads first, and stays.
    let after_good = bundle(
        "damaged-after-good",
        &[
            ("1-first.tar", &pair.first_alone),
            ("2-damaged.tar", &pair.damaged),
        ],
    );
    for d in every_version() {
        // Loads and removes beside other tests' fixtures on this dockerd: one at a time.
        let _lock = d.docker_lock();
        run(d.docker().args(["load", "-q", "-i"]).arg(&there_archive));
        let there_id = d.docker_image_id(&there.tag).unwrap();
        run(d.docker().args(["tag", &there.tag, &pair.a.tag]));

        let (code, _, stderr) = outcome(&mut d.against_docker("import", &damaged));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        let line = failed_line(&stderr, "damaged.tar");
        assert_eq!(
            d.docker_image_id(&pair.a.tag).as_deref(),
            Some(there_id.as_str()),
            "{}: the name the load moved is put back: {line}",
            d.label
        );
        assert_eq!(
            d.docker_image_id(&there.tag).as_deref(),
            Some(there_id.as_str()),
            "{}",
            d.label
        );
        run(d.docker().args(["image", "rm", &pair.a.tag]));
        pair_is_gone(d, &pair, "after the failed load");

        let (code, _, stderr) = outcome(&mut d.against_docker("import", &after_good));
        assert_eq!(code, 0, "{}: {stderr}", d.label);
        assert!(
            stderr.contains("1 imported") && stderr.contains("1 failed"),
            "{}: {stderr}",
            d.label
        );
        assert!(
            docker_has_config(d, &pair.a.config_digest),
            "{}: the image another archive loaded stays",
            d.label
        );
        assert!(d.docker_image_id(&pair.a.tag).is_some(), "{}", d.label);
        assert_eq!(d.docker_image_id(&pair.b.tag), None, "{}", d.label);
        let _ = d
            .docker()
            .args(["image", "rm", &pair.a.tag, &there.tag])
            .output();
    }
}

/// Names each side of the reference rules, and one of each rule Docker versions disagree on.
fn names_to_try() -> Vec<String> {
    let mut names: Vec<String> = [
        "oi-test/ok:1",
        "a__b/c-----d:v_1.0-X",
        "localhost:5000/a/b:1",
        "10.0.0.1:5000/x:y",
        "REGISTRY.example/app:1",
        "o/a___b:1",
        "o/a_-b:1",
        "o/a..b:1",
        "o/-a:1",
        "o/Upper:1",
        "o/a:.x",
        "a:port/c:1",
        " o/a:1",
        "UPPER/case:1",
        "[::1]:5000/app:1",
        "a.b_c/d:1",
    ]
    .map(String::from)
    .to_vec();
    names.push(format!("o/a:{}", "t".repeat(128)));
    names.push(format!("o/a:{}", "t".repeat(129)));
    names.push(name_of_256("1").replacen("rr", "r", 1));
    names.push(name_of_256("1"));
    names
}

/// Names Docker 20.10 takes that the importer refuses: a first part with a '.' that is not a
/// host name is a registry to Docker's `splitDockerDomain`, and then, being no host, becomes
/// part of the path.
const STRICTER_THAN_DOCKER_20: &[&str] = &["a.b_c/d:1"];

#[test]
fn every_name_the_importer_takes_is_one_every_docker_takes() {
    let tag = unique_tag("names");
    let image = build_image(&tag, &format!("{tag}, under many names"));
    let saved = saved_and_removed(&image, "names");
    for (i, d) in every_version().iter().enumerate() {
        // Loads and removes beside other tests' fixtures on this dockerd: one at a time.
        let _lock = d.docker_lock();
        run(d.docker().args(["load", "-q", "-i"]).arg(&saved));
        for name in names_to_try() {
            let ours = Reference::parse(&name);
            let tagged = d
                .docker()
                .args(["tag", &image.tag, &name])
                .output()
                .unwrap();
            let docker_takes = tagged.status.success();
            if docker_takes {
                run(d.docker().args(["image", "rm", &name]));
            }
            assert!(
                ours.is_err() || docker_takes,
                "{}: we take {name:?}, Docker refuses it: {}",
                d.label,
                String::from_utf8_lossy(&tagged.stderr)
            );
            if i == 0 && !STRICTER_THAN_DOCKER_20.contains(&name.as_str()) {
                assert!(
                    ours.is_ok() || !docker_takes,
                    "{}: Docker takes {name:?}, we refuse it: {}",
                    d.label,
                    ours.unwrap_err()
                );
            }
        }
        run(d.docker().args(["image", "rm", &image.tag]));
    }
    assert!(reference::normalize(&name_of_256("1")).is_err());
}
