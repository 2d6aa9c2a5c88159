//! `export --since PREVIOUS`: an upgrade bundle that carries only the layers the site lacks,
//! imported on top of the earlier bundle into every containerd of the matrix (and read by the
//! kubelet's CRI, a container started from the changed image), and refused image by image,
//! by one line naming the layer, the earlier bundle and the fix, where the earlier bundle was
//! never imported or the runtime takes no image in part (Docker).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::harness::*;
use crate::layout_export::{
    build, check, dir_size, exported, layout_export, noise, push_oci, seed,
};
use crate::native::{cri, native_import, pause_archive, run_a_pod};

/// A release and its upgrade: `previous` holds app1 and app2 on one base; the upgrade
/// gives app1 a new layer (and a command that prints its new file), keeps app2, and adds
/// app3, which shares nothing with the earlier images.
struct Upgrade {
    dir: PathBuf,
    previous: PathBuf,
    delta: PathBuf,
    /// app1, app2, app3.
    refs: [String; 3],
    /// The line app1's changed image prints.
    printed: String,
    /// The previous bundle's index.json digest.
    previous_id: String,
}

/// `FROM base`, `files` copied in, and `CMD cat /NAME` of the first file.
fn build_printing(tag: &str, base: &str, files: &[(&str, Vec<u8>)]) {
    let ctx = temp_dir("since-build");
    let mut dockerfile = format!("FROM {base}\n");
    for (name, data) in files {
        std::fs::write(ctx.join(name), data).unwrap();
        dockerfile.push_str(&format!("COPY {name} /{name}\n"));
    }
    dockerfile.push_str(&format!("CMD [\"cat\", \"/{}\"]\n", files[0].0));
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    run(docker().args(["build", "-q", "-t", tag]).arg(&ctx));
}

fn layers_of(bundle: &Path) -> BTreeSet<(String, u64)> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("images.json")).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    for r in index["layout"]["references"].as_array().unwrap() {
        for image in r["images"].as_array().unwrap() {
            for l in image["layers"].as_array().unwrap() {
                out.insert((
                    l["digest"].as_str().unwrap().to_string(),
                    l["size"].as_u64().unwrap(),
                ));
            }
        }
    }
    out
}

fn upgrade() -> &'static Upgrade {
    static U: OnceLock<Upgrade> = OnceLock::new();
    U.get_or_init(|| {
        let dir = temp_dir("since");
        let pid = std::process::id();
        let base = unique_tag("since-base");
        build(&base, None, &[("base.bin", noise(4 << 20, seed()))]);
        let push = |label: &str, files: &[(&str, Vec<u8>)], path: &str| {
            let tag = unique_tag(label);
            build_printing(&tag, &base, files);
            let pushed = push_oci(&tag, &format!("{path}:{pid}"));
            docker_rmi(&tag);
            pushed
        };
        let app1 = push("since-app1", &[("v1", b"app1 v1\n".to_vec())], "since-app1");
        let app2 = push("since-app2", &[("v1", b"app2 v1\n".to_vec())], "since-app2");
        let previous = dir.join("previous");
        let cache = dir.join("cache");
        exported(&previous, &cache, &[&app1, &app2], &[]);
        let printed = format!("app1 v2 of {pid}\n");
        let changed = [
            ("v2", printed.clone().into_bytes()),
            ("v2.bin", noise(2 << 20, seed())),
        ];
        assert_eq!(push("since-app1", &changed, "since-app1"), app1);
        // FROM scratch with a file of its own: nothing of it was carried before.
        let tag = unique_tag("since-app3");
        let ctx = temp_dir("since-app3");
        std::fs::write(ctx.join("app3.bin"), noise(1 << 20, seed())).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY app3.bin /app3.bin\n",
        )
        .unwrap();
        run(docker().args(["build", "-q", "-t", &tag]).arg(&ctx));
        let app3 = push_oci(&tag, &format!("since-app3:{pid}"));
        docker_rmi(&tag);
        let delta = dir.join("delta");
        let since = previous.display().to_string();
        let log = exported(&delta, &cache, &[&app1, &app2, &app3], &["--since", &since]);
        assert!(
            log.contains("left out: earlier bundles carried them"),
            "{log}"
        );
        let previous_id = images_json(&previous)["layout"]["index_json_digest"]
            .as_str()
            .unwrap()
            .to_string();
        Upgrade {
            dir,
            previous,
            delta,
            refs: [app1, app2, app3],
            printed,
            previous_id,
        }
    })
}

fn images_json(bundle: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(bundle.join("images.json")).unwrap()).unwrap()
}

/// The result line of the image `reference` in an import's log.
fn line_for<'a>(stderr: &'a str, reference: &str) -> &'a str {
    let unit = format!("#{reference}");
    stderr
        .lines()
        .find(|l| {
            (l.starts_with("imported ") || l.starts_with("skipped ") || l.starts_with("FAILED "))
                && l.contains(&unit)
        })
        .unwrap_or_else(|| panic!("no result line for {reference}:\n{stderr}"))
}

#[test]
fn an_upgrade_carries_only_the_layers_the_earlier_bundle_did_not_and_names_the_rest() {
    let u = upgrade();
    let previous = layers_of(&u.previous);
    let all = layers_of(&u.delta);
    let new: BTreeSet<_> = all.difference(&previous).cloned().collect();
    assert!(
        !new.is_empty() && new.len() < all.len(),
        "{new:?} of {all:?}"
    );
    let index = images_json(&u.delta);
    let layout = &index["layout"];
    assert_eq!(
        layout["builds_on"][0]["index_json_digest"],
        u.previous_id.as_str()
    );
    let carried: BTreeSet<(String, u64)> = layout["carried_earlier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["carried_by"]["index_json_digest"], u.previous_id.as_str());
            (
                c["digest"].as_str().unwrap().to_string(),
                c["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: BTreeSet<_> = all.intersection(&previous).cloned().collect();
    assert_eq!(
        carried, expected,
        "every layer the earlier bundle carried, and no other"
    );
    // blobs/ holds the new layers and the JSON documents: nothing the earlier bundle carried.
    let blobs = u.delta.join("blobs/sha256");
    for (digest, _) in &carried {
        let file = blobs.join(digest.trim_start_matches("sha256:"));
        assert!(!file.exists(), "{} is in the upgrade", file.display());
    }
    let new_bytes: u64 = new.iter().map(|(_, s)| s).sum();
    let stored = dir_size(&blobs);
    assert!(
        stored as f64 <= new_bytes as f64 * 1.01 + (1 << 20) as f64,
        "the upgrade stores {stored} bytes for {new_bytes} of new layers"
    );
    let (code, faults, log) = check(&u.delta);
    assert_eq!(code, 0, "{faults}{log}");
    assert!(
        log.contains("carried earlier") && log.contains(&u.previous_id),
        "{log}"
    );
    // An upgrade is written beside the earlier bundle, never over it.
    let since = u.previous.display().to_string();
    let mut over = layout_export(
        &u.previous,
        &u.dir.join("cache"),
        &[&u.refs[0]],
        &["--since", &since],
    );
    let (code, _, log) = outcome(&mut over);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("is the output directory"), "{log}");
}

/// On every containerd of the matrix: the upgrade on top of the earlier bundle completes
/// every image (a re-run skips them); on a namespace that never had the earlier bundle, each
/// image that needs one of its layers fails with the line that names it, app3 imports, and
/// `--strict` exits 1. On every Docker of the matrix with the classic store, on top of the
/// earlier bundle, the changed image imports too: its earlier layers are held by chain.
#[test]
fn an_upgrade_imports_on_top_of_the_earlier_bundle_on_every_version_and_fails_by_name_without_it() {
    let u = upgrade();
    let [app1, app2, app3] = &u.refs;
    for d in every_version() {
        let ns = unique_namespace("since-on-top");
        let first = run_bounded(&d.against_containerd("import", &u.previous, &ns), 300);
        assert_eq!(first.code, 0, "{}: {}", d.label, first.stderr);
        let up = run_bounded(&d.against_containerd("import", &u.delta, &ns), 300);
        assert_eq!(up.code, 0, "{}: {}", d.label, up.stderr);
        assert!(
            line_for(&up.stderr, app1).starts_with("imported "),
            "{}",
            up.stderr
        );
        assert!(
            line_for(&up.stderr, app2).starts_with("skipped "),
            "{}",
            up.stderr
        );
        assert!(
            line_for(&up.stderr, app3).starts_with("imported "),
            "{}",
            up.stderr
        );
        let listed = d.ctr_images(&ns);
        for r in &u.refs {
            assert!(listed.contains(r), "{}: {r} in {listed:?}", d.label);
        }
        let again = run_bounded(&d.against_containerd("import", &u.delta, &ns), 300);
        assert!(
            again.stderr.contains("0 imported, 3 skipped"),
            "{}: {}",
            d.label,
            again.stderr
        );

        let fresh = unique_namespace("since-fresh");
        let mut strict = d.against_containerd("import", &u.delta, &fresh);
        strict.arg("--strict");
        let out = run_bounded(&strict, 300);
        assert_eq!(out.code, 1, "{}: {}", d.label, out.stderr);
        let line = line_for(&out.stderr, app1);
        for part in [
            "FAILED ",
            "needs the layer sha256:",
            "which this bundle does not carry",
            &u.previous_id,
            "containerd does not have it",
            "import that bundle first, or carry a full bundle",
        ] {
            assert!(line.contains(part), "{}: {part:?} in {line}", d.label);
        }
        assert!(
            line_for(&out.stderr, app2).starts_with("FAILED "),
            "{}",
            out.stderr
        );
        assert!(
            line_for(&out.stderr, app3).starts_with("imported "),
            "{}",
            out.stderr
        );
    }
    // Docker's classic store keeps layers by chain, and its load never opens a layer it
    // holds: on top of the earlier bundle, the changed image imports without its earlier
    // layers, on every Docker of the matrix. The containerd image store takes an image only
    // whole: there the changed image fails with that line, and the others import.
    for d in every_version() {
        let first = run_bounded(&d.against_docker("import", &u.previous), 300);
        assert_eq!(first.code, 0, "{}: {}", d.label, first.stderr);
        let up = run_bounded(&d.against_docker("import", &u.delta), 300);
        let line = line_for(&up.stderr, app1);
        if d.label.ends_with("containerd-store") {
            assert!(
                line.starts_with("FAILED ") && line.contains("docker takes an image only whole"),
                "{}: {line}",
                d.label
            );
        } else {
            assert_eq!(up.code, 0, "{}: {}", d.label, up.stderr);
            assert!(line.starts_with("imported "), "{}: {}", d.label, up.stderr);
        }
        for (app, word) in [(app2, "skipped "), (app3, "imported ")] {
            assert!(
                line_for(&up.stderr, app).starts_with(word),
                "{}: {app}: {}",
                d.label,
                up.stderr
            );
        }
    }
}

/// What the kubelet sees after the upgrade: the CRI finds every reference, and a container
/// of the changed image starts and prints what only its new layer holds.
#[test]
fn after_an_upgrade_the_kubelet_finds_every_image_and_runs_the_changed_one() {
    use k8s_cri::v1::*;
    let u = upgrade();
    let pause_dir = u.dir.join("pause");
    std::fs::create_dir_all(&pause_dir).unwrap();
    let (_, pause) = pause_archive(&pause_dir);
    let cd = PrivateContainerd::start_cri("since-cri", &pause);
    for bundle in [&pause_dir, &u.previous, &u.delta] {
        let out = run_bounded(&native_import(&cd, bundle, "k8s.io"), 300);
        assert_eq!(out.code, 0, "{}: {}", bundle.display(), out.stderr);
        assert!(!out.stderr.contains("FAILED"), "{}", out.stderr);
    }
    let cri = cri::Cri::connect(&cd.socket);
    for reference in &u.refs {
        let status = cri
            .rt
            .block_on(cri.images().image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
                verbose: false,
            }))
            .unwrap()
            .into_inner();
        assert!(
            status.image.is_some(),
            "ImageStatus does not find {reference}"
        );
    }
    let logs = temp_dir("since-pod-logs");
    let printed = run_a_pod(&cri, &logs, &u.refs[0], &cd.dir.join("containerd.log"));
    assert!(printed.contains(u.printed.trim()), "{printed}");
}
