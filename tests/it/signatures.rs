//! Signatures, attestations and SBOMs travel with the images: real cosign (Debian trixie's
//! 2.x, `OI_COSIGN2`, and forky's 3.x, `OI_COSIGN3`: scripts/test.sh fetches both) signs an
//! image in the rig's registry with a key made here and no transparency log, attests an SPDX
//! SBOM and attaches the SBOM. cosign 2 keeps them under its tags (`sha256-<hex>.sig`, `.att`,
//! `.sbom`); cosign 3 writes Sigstore bundles as OCI 1.1 referrers, which Distribution 2.8 (no
//! referrers API) keeps under the fallback tag `sha256-<hex>`. `export` carries them in the
//! layout, `list` shows them, `push` delivers them to a second registry, where cosign's own
//! `verify` and `verify-attestation` succeed (and fail with another key); `--no-signatures`
//! carries none, and `import` imports the images and skips the artifacts without a failure.
//! `export --verify-key` takes the signed image and refuses an unsigned one and one signed by
//! another key, each by name.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

/// An SPDX 2.3 document, the SBOM attested and attached.
const SBOM: &str = r#"{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"signed","documentNamespace":"https://example.org/offline-images/signed","creationInfo":{"created":"2026-01-01T00:00:00Z","creators":["Tool: offline-images-tests"]},"packages":[]}"#;

/// One cosign, with its keys (made here) in `dir`.
struct Cosign {
    bin: PathBuf,
    dir: PathBuf,
    major: u8,
}

impl Cosign {
    /// cosign `major` from `var`, or None once a [`missing_precondition`] said so.
    fn new(var: &str, major: u8) -> Option<Cosign> {
        let Some(bin) = std::env::var_os(var) else {
            missing_precondition(&format!(
                "no cosign {major}.x in this run ({var}): scripts/test.sh fetches it"
            ));
            return None;
        };
        let c = Cosign {
            bin: bin.into(),
            dir: temp_dir(&format!("cosign{major}")),
            major,
        };
        std::fs::write(c.dir.join("sbom.spdx.json"), SBOM).unwrap();
        for prefix in ["cosign", "other"] {
            run(c
                .cmd()
                .args(["generate-key-pair", "--output-key-prefix", prefix]));
        }
        Some(c)
    }

    /// cosign in its directory, with the keys' password and a home of its own.
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir(&self.dir)
            .env("COSIGN_PASSWORD", "oi-test-password")
            .env("HOME", &self.dir)
            .env_remove("COSIGN_REPOSITORY");
        c
    }

    /// The flags that sign with the key alone: no transparency log (3.x also no signing
    /// config fetched through TUF), plain HTTP to the test registries.
    fn offline(&self) -> Vec<&'static str> {
        let mut flags = vec![
            "--key",
            "cosign.key",
            "--tlog-upload=false",
            "--allow-insecure-registry",
            "--allow-http-registry",
            "-y",
        ];
        if self.major >= 3 {
            flags.push("--use-signing-config=false");
        }
        flags
    }

    /// Sign `image` (by digest), attest the SBOM, and attach it.
    fn sign_attest_attach(&self, image: &str) {
        run(self.cmd().arg("sign").args(self.offline()).arg(image));
        run(self
            .cmd()
            .arg("attest")
            .args(self.offline())
            .args(["--type", "spdxjson", "--predicate", "sbom.spdx.json"])
            .arg(image));
        run(self
            .cmd()
            .args([
                "attach",
                "sbom",
                "--sbom",
                "sbom.spdx.json",
                "--type",
                "spdx",
            ])
            .args(["--allow-insecure-registry", image]));
    }

    /// `cosign verify` (or `verify-attestation` of the SPDX SBOM) of `image` with `key`:
    /// (success, what it said).
    fn verify(&self, what: &str, key: &str, image: &str) -> (bool, String) {
        let mut c = self.cmd();
        c.args([
            what,
            "--key",
            key,
            "--insecure-ignore-tlog",
            "--allow-insecure-registry",
        ]);
        if what == "verify-attestation" {
            c.args(["--type", "spdxjson"]);
        }
        let (code, out, err) = outcome(c.arg(image));
        (code == 0, format!("{out}\n{err}"))
    }
}

/// The digest `registry` serves for `repo:reference` (Docker-Content-Digest of a HEAD).
fn digest_of(registry: &str, repo: &str, reference: &str) -> String {
    let script = r#"
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], method="HEAD", headers={"Accept": ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])})
print(urllib.request.urlopen(req).headers["Docker-Content-Digest"])
"#;
    let url = format!("http://{registry}/v2/{repo}/manifests/{reference}");
    stdout_of(Command::new("python3").args(["-c", script, &url]))
        .trim()
        .to_string()
}

/// The tags of `repo` in `registry`.
fn tags(registry: &str, repo: &str) -> Vec<String> {
    let script = "import json, sys, urllib.request\n\
                  print('\\n'.join(json.load(urllib.request.urlopen(sys.argv[1]))['tags']))";
    let url = format!("http://{registry}/v2/{repo}/tags/list");
    stdout_of(Command::new("python3").args(["-c", script, &url]))
        .lines()
        .map(str::to_string)
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The artifact entries of a layout's `index.json`: (kind, ref name, digest).
fn artifact_entries(bundle: &Path) -> Vec<(String, String, String)> {
    let index = read_json(&bundle.join("index.json"));
    let mut out: Vec<(String, String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let a = &e["annotations"];
            Some((
                a["io.offline-images.artifact.kind"].as_str()?.to_string(),
                a["org.opencontainers.image.ref.name"].as_str()?.to_string(),
                e["digest"].as_str()?.to_string(),
            ))
        })
        .collect();
    out.sort();
    out
}

/// A layout bundle of `reference`, exported with `extra` flags.
fn export(label: &str, reference: &str, extra: &[&str]) -> PathBuf {
    let out = temp_dir(label).join("images");
    let mut c = registry_export_as(&out, &bare_path(&[]), "layout");
    c.arg("--no-importer-binary").args(extra).arg(reference);
    let (code, _, log) = outcome(&mut c);
    assert_eq!(code, 0, "{log}");
    out
}

/// What each cosign leaves in the registry for the image `hex`: the tags.
fn expected_tags(major: u8, hex: &str) -> Vec<String> {
    let mut tags = vec![format!("sha256-{hex}.sbom")];
    if major >= 3 {
        // Sigstore bundles as referrers, under the fallback tag on Distribution 2.8.
        tags.push(format!("sha256-{hex}"));
    } else {
        tags.push(format!("sha256-{hex}.sig"));
        tags.push(format!("sha256-{hex}.att"));
    }
    tags.sort();
    tags
}

/// The export carried what cosign wrote: each artifact an entry of `index.json` and a record
/// under its image in `images.json`, every blob it uses in the layout; `list` shows them.
fn check_carried(bundle: &Path, cosign: &Cosign, repository: &str, hex: &str) {
    let entries = artifact_entries(bundle);
    let names: Vec<String> = entries.iter().map(|(_, n, _)| n.clone()).collect();
    let want: Vec<String> = expected_tags(cosign.major, hex)
        .iter()
        .map(|t| format!("{repository}:{t}"))
        .collect();
    assert_eq!(names, want, "{entries:?}");
    let images = read_json(&bundle.join("images.json"));
    let records = images["layout"]["references"][0]["artifacts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(records.len(), entries.len(), "{records:?}");
    for r in &records {
        assert_eq!(r["subject"], format!("sha256:{hex}"));
        for blob in r["blobs"].as_array().unwrap() {
            let file = blob.as_str().unwrap().replacen(':', "/", 1);
            assert!(bundle.join("blobs").join(file).is_file(), "{blob} missing");
        }
    }
    if cosign.major >= 3 {
        // The referrers' index lists the signature's and the attestation's bundles.
        let referrers = records.iter().find(|r| r["kind"] == "referrers").unwrap();
        let blobs = referrers["blobs"].as_array().unwrap();
        assert!(blobs.len() >= 5, "{referrers}");
    }
    let listing = stdout_of(offline_images().arg("list").arg(bundle));
    let label = if cosign.major >= 3 {
        "OCI referrers"
    } else {
        "cosign signature"
    };
    assert!(listing.contains(label), "{listing}");
    assert!(
        listing.contains(&format!("{repository}:sha256-{hex}.sbom")),
        "{listing}"
    );
    let (code, _, log) = outcome(
        offline_images()
            .args(["verify", "--bundle-only", "--images-path"])
            .arg(bundle),
    );
    assert_eq!(code, 0, "{log}");
}

/// Signed, attested and SBOM'd by `cosign`, exported, pushed into a second registry where
/// cosign verifies them; `--no-signatures` carries none; the import skips them.
fn signatures_travel(cosign: &Cosign) {
    let d = daemons();
    let name = format!("signed-cosign{}", cosign.major);
    pushed_image(&name, &format!("signed by cosign {}", cosign.major));
    let repo = format!("oi-export/{name}");
    let reference = format!("{}/{repo}:1", d.registry);
    let digest = digest_of(&d.registry, &repo, "1");
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();
    cosign.sign_attest_attach(&format!("{}/{repo}@{digest}", d.registry));
    // Earlier runs' images (other digests) may have left their tags in the rig's registry.
    let mut upstream = tags(&d.registry, &repo);
    upstream.retain(|t| t.starts_with(&format!("sha256-{hex}")));
    upstream.sort();
    assert_eq!(upstream, expected_tags(cosign.major, &hex));

    verify_keys_choose(cosign, &reference);

    let bundle = export(&format!("{name}-bundle"), &reference, &[]);
    check_carried(&bundle, cosign, &format!("{}/{repo}", d.registry), &hex);

    let site = PrivateRegistry::start(&format!("{name}-site"), false, RegistryAuth::Anonymous);
    let config = docker_config(&serde_json::json!({}));
    let (code, _, log) = outcome(
        offline_images()
            .env("DOCKER_CONFIG", &config)
            .args(["push", "--images-path"])
            .arg(&bundle)
            .args(["--to", &format!("{}/site", site.addr)]),
    );
    assert_eq!(code, 0, "{log}");
    let site_repo = format!("site/{}/{repo}", d.registry.replace(':', "_"));
    let mut pushed = tags(&site.addr, &site_repo);
    pushed.retain(|t| t != "1");
    pushed.sort();
    assert_eq!(pushed, expected_tags(cosign.major, &hex), "{log}");
    let image = format!("{}/{site_repo}@{digest}", site.addr);
    for what in ["verify", "verify-attestation"] {
        let (ok, said) = cosign.verify(what, "cosign.pub", &image);
        assert!(
            ok,
            "cosign {what} in the site registry: {said}\npush: {log}"
        );
        let (ok, said) = cosign.verify(what, "other.pub", &image);
        assert!(!ok, "cosign {what} with another key succeeded: {said}");
    }

    let bare = export(&format!("{name}-bare"), &reference, &["--no-signatures"]);
    assert_eq!(artifact_entries(&bare), Vec::new());
    let images = read_json(&bare.join("images.json"));
    assert!(images["layout"]["references"][0]["artifacts"].is_null());

    let ns = format!("oi-{name}-{}", std::process::id());
    let (code, _, log) = outcome(&mut against_containerd("import", &bundle, &ns));
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("1 imported, 0 skipped (already present), 0 failed"),
        "{log}"
    );
    let listed = stdout_of(ctr(&ns).args(["images", "ls", "-q"]));
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            format!("{}/{repo}:1", d.registry),
            format!("{}/{repo}@{digest}", d.registry)
        ]
    );
}

/// `export --verify-key`: the image `signed` is taken with the key that signed it, an
/// unsigned one is refused by name beside it, and another key refuses the signed one.
fn verify_keys_choose(cosign: &Cosign, signed: &str) {
    let name = format!("unsigned-cosign{}", cosign.major);
    pushed_image(&name, "signed by nobody");
    let unsigned = format!("{}/oi-export/{name}:1", daemons().registry);
    let key = cosign.dir.join("cosign.pub");
    let out = temp_dir(&format!("{name}-verified")).join("images");
    let mut c = registry_export_as(&out, &bare_path(&[]), "layout");
    c.args(["--no-importer-binary", "--verify-key"])
        .arg(&key)
        .args([signed, &unsigned]);
    let (_, _, log) = outcome(&mut c);
    assert!(
        log.contains(&format!("{signed}: signed by {}", key.display())),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{unsigned}: FAILED: refused: it has no cosign signature"
        )),
        "{log}"
    );
    let index = std::fs::read_to_string(out.join("index.json")).unwrap();
    assert!(
        index.contains(signed) && !index.contains(&unsigned),
        "{index}"
    );
    let out = temp_dir(&format!("{name}-other")).join("images");
    let mut c = registry_export_as(&out, &bare_path(&[]), "layout");
    c.args(["--no-importer-binary", "--verify-key"])
        .arg(cosign.dir.join("other.pub"))
        .arg(signed);
    let (_, _, log) = outcome(&mut c);
    assert!(
        log.contains(&format!(
            "{signed}: FAILED: refused: none of its signatures"
        )),
        "{log}"
    );
}

#[test]
fn cosign_2_signatures_attestations_and_sboms_travel_and_verify_in_the_site_registry() {
    if let Some(cosign) = Cosign::new("OI_COSIGN2", 2) {
        signatures_travel(&cosign);
    }
}

#[test]
fn cosign_3_referrers_and_sboms_travel_and_verify_in_the_site_registry() {
    if let Some(cosign) = Cosign::new("OI_COSIGN3", 3) {
        signatures_travel(&cosign);
    }
}
