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
//! another key, each by name. `export --verify-trusted-root` takes an image signed by a
//! certificate (cosign's keyless form, from a CA openssl makes here) for the identity and
//! issuer asked for, as cosign's own `verify` does with the same trust, and refuses by name
//! one for another identity, an expired one, one of another issuer and one under another CA.

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

/// A CA as Sigstore's Fulcio is (P-384 root and intermediate, the intermediate for code
/// signing) and three P-256 signing certificates under it, each for an email and a username
/// (Fulcio's other name, `NAME-bot`) with Fulcio's OIDC issuer extensions (v1, the bare string, and v2, a UTF8String): `release` and `ci`
/// valid until 2035, `expired` for one day of 2024. The CA is valid from 2020, so cosign,
/// which checks a chain when the certificate starts, signs with the expired one too. Each key
/// is made by openssl and brought into cosign's encrypted form by cosign 3's
/// `import-key-pair` (cosign 2.5's refuses these keys: "unsupported public key type"); a
/// second root, `other-root.pem`, issued none of them.
const PKI: &str = r#"set -euo pipefail
cosign3=$1
mkdir -p ca && : >ca/index.txt && echo 01 >ca/serial
printf '[ca]\ndefault_ca = t\n[t]\ndatabase = ca/index.txt\nnew_certs_dir = ca\nserial = ca/serial\ndefault_md = sha384\npolicy = p\nunique_subject = no\n[p]\n' >ca.cnf
sign() { # csr issuer-cert (none: self-signed) issuer-key start end extfile out
  local by=(-selfsign)
  if [ -n "$2" ]; then by=(-cert "$2"); fi
  openssl ca -batch -config ca.cnf "${by[@]}" -keyfile "$3" -in "$1" \
    -startdate "$4" -enddate "$5" -extfile "$6" -notext -out "$7" 2>/dev/null
}
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' >root.ext
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nextendedKeyUsage=codeSigning\n' >inter.ext
for root in root other-root; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out $root.key
  openssl req -new -key $root.key -subj "/O=offline-images tests/CN=$root" -out $root.csr
  sign $root.csr "" $root.key 20200101000000Z 20360101000000Z root.ext $root.pem
done
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out inter.key
openssl req -new -key inter.key -subj "/O=offline-images tests/CN=intermediate" -out inter.csr
sign inter.csr root.pem root.key 20200101000000Z 20360101000000Z inter.ext inter.pem
cat inter.pem root.pem >chain.pem
issuer=$(printf https://issuer.example | od -An -tx1 | tr -d ' \n')
for leaf in release:release@example.com:20351231000000Z ci:ci@example.com:20351231000000Z \
  expired:release@example.com:20240102000000Z; do
  IFS=: read -r name email end <<<"$leaf"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $name.p8
  "$cosign3" import-key-pair --key $name.p8 --output-key-prefix $name >/dev/null
  openssl req -new -key $name.p8 -subj "/" -out $name.csr
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\nsubjectAltName=critical,email:%s,otherName:1.3.6.1.4.1.57264.1.7;UTF8:%s-bot\n1.3.6.1.4.1.57264.1.1=DER:%s\n1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:https://issuer.example\n' \
    "$email" "$name" "$issuer" >$name.ext
  sign $name.csr inter.pem inter.key 20240101000000Z $end $name.ext $name.crt
done
"#;

impl Cosign {
    /// The CA and certificates of [`PKI`] in the cosign's directory, and the trust file this
    /// cosign's `verify` takes: cosign 2, the PEM chain (`--certificate-chain`); cosign 3, a
    /// Sigstore trusted root it writes itself (`--trusted-root`). The trust file's name.
    fn make_pki(&self, cosign3: &Path) -> &'static str {
        let (code, out, err) = outcome(
            Command::new("bash")
                .current_dir(&self.dir)
                .env("COSIGN_PASSWORD", "oi-test-password")
                .env("HOME", &self.dir)
                .args(["-c", PKI, "pki"])
                .arg(cosign3),
        );
        assert_eq!(code, 0, "the test CA: {out}\n{err}");
        if self.major < 3 {
            return "chain.pem";
        }
        run(self.cmd().args([
            "trusted-root",
            "create",
            "--fulcio=url=https://fulcio.example,certificate-chain=chain.pem",
            "--no-default-fulcio",
            "--no-default-rekor",
            "--no-default-ctfe",
            "--no-default-tsa",
            "--out",
            "trusted_root.json",
        ]));
        "trusted_root.json"
    }

    /// Sign `image` with the certificate `name` of [`PKI`] and its key, no transparency log.
    fn sign_with_certificate(&self, name: &str, image: &str) {
        let mut flags = self.offline();
        let key = format!("{name}.key");
        let cert = format!("{name}.crt");
        flags[1] = &key;
        run(self
            .cmd()
            .arg("sign")
            .args(flags)
            .args(["--certificate", &cert, "--certificate-chain", "chain.pem"])
            .arg(image));
    }

    /// `cosign verify` of `image` by a certificate for `identity` under `trust`.
    fn verify_certificate(&self, trust: &str, identity: &str, image: &str) -> (bool, String) {
        let mut c = self.cmd();
        c.args(["verify", "--certificate-identity", identity])
            .args(["--certificate-oidc-issuer", "https://issuer.example"])
            .args(["--insecure-ignore-tlog", "--insecure-ignore-sct"])
            .arg("--allow-insecure-registry")
            .arg(match trust {
                "chain.pem" => "--certificate-chain",
                _ => "--trusted-root",
            })
            .arg(trust);
        let (code, out, err) = outcome(c.arg(image));
        (code == 0, format!("{out}\n{err}"))
    }
}

/// `export --verify-trusted-root`: of three images signed by certificates of one CA, the one
/// for the identity asked for is taken, the one for another identity and the expired one are
/// refused by name, each with why; cosign's own `verify`, given the same trust, agrees.
/// Another issuer asked for, or a trust file of another CA, refuses the good one too.
fn certificates_choose(cosign: &Cosign, cosign3: &Path) {
    let d = daemons();
    let trust = cosign.make_pki(cosign3);
    let mut refs = Vec::new();
    for name in ["release", "ci", "expired"] {
        let image = format!("keyless-{name}-cosign{}", cosign.major);
        pushed_image(&image, &format!("signed by {name}'s certificate"));
        let repo = format!("oi-export/{image}");
        let digest = digest_of(&d.registry, &repo, "1");
        let by_digest = format!("{}/{repo}@{digest}", d.registry);
        cosign.sign_with_certificate(name, &by_digest);
        let (ok, said) = cosign.verify_certificate(trust, "release@example.com", &by_digest);
        assert_eq!(ok, name == "release", "cosign verify of {name}'s: {said}");
        refs.push(format!("{}/{repo}:1", d.registry));
    }
    let export_as = |label: &str, trust: &Path, identity: &str, issuer: &str| {
        let out = temp_dir(&format!("keyless-{label}-cosign{}", cosign.major)).join("images");
        let mut c = registry_export_as(&out, &bare_path(&[]), "layout");
        c.args(["--no-importer-binary", "--verify-trusted-root"])
            .arg(trust)
            .args(["--verify-certificate-identity", identity])
            .args(["--verify-certificate-oidc-issuer", issuer])
            .args(&refs);
        let (code, _, log) = outcome(&mut c);
        (code, log, out)
    };
    let export = |label: &str, trust: &Path, issuer: &str| {
        export_as(label, trust, "release@example.com", issuer)
    };
    let (code, log, out) = export("chosen", &cosign.dir.join(trust), "https://issuer.example");
    assert_eq!(code, 1, "{log}");
    let [release, ci, expired] = [&refs[0], &refs[1], &refs[2]];
    assert!(
        log.contains(&format!(
            "{release}: signed by a certificate of release@example.com (issuer https://issuer.example"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("{ci}: FAILED: refused: none of its signatures"))
            && log.contains("its certificate is for ci@example.com, ci-bot (issuer https://issuer.example), not release@example.com"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{expired}: FAILED: refused: none of its signatures"
        )) && log.contains(
                "the certificate of release@example.com is valid from 2024-01-01T00:00:00Z to 2024-01-02T00:00:00Z, not now"
            ),
        "{log}"
    );
    let index = std::fs::read_to_string(out.join("index.json")).unwrap();
    assert!(
        index.contains(release.as_str())
            && !index.contains(ci.as_str())
            && !index.contains(expired.as_str()),
        "{index}"
    );
    // Fulcio's username identity, an other name beside the email, is an identity too.
    let (_, log, _) = export_as(
        "username",
        &cosign.dir.join(trust),
        "release-bot",
        "https://issuer.example",
    );
    assert!(
        log.contains(&format!(
            "{release}: signed by a certificate of release-bot"
        )) && log.contains("its certificate is for ci@example.com, ci-bot"),
        "{log}"
    );
    let (_, log, _) = export("issuer", &cosign.dir.join(trust), "https://other.example");
    assert!(
        log.contains(&format!("{release}: FAILED: refused"))
            && log.contains("was vouched for by https://issuer.example, not https://other.example"),
        "{log}"
    );
    let (_, log, _) = export(
        "other-ca",
        &cosign.dir.join("other-root.pem"),
        "https://issuer.example",
    );
    assert!(
        log.contains(&format!("{release}: FAILED: refused"))
            && log.contains("does not chain to a certificate of"),
        "{log}"
    );
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
        log.contains(&format!("{signed}: signed by the key {}", key.display())),
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

/// cosign 3, for its `import-key-pair` the certificates' keys go through, or None once a
/// [`missing_precondition`] said so.
fn cosign3_bin() -> Option<PathBuf> {
    match std::env::var_os("OI_COSIGN3") {
        Some(bin) => Some(bin.into()),
        None => {
            missing_precondition(
                "no cosign 3.x in this run (OI_COSIGN3): scripts/test.sh fetches it",
            );
            None
        }
    }
}

#[test]
fn cosign_2_signatures_by_a_certificate_are_taken_only_for_the_identity_and_issuer_asked_for() {
    if let (Some(cosign), Some(c3)) = (Cosign::new("OI_COSIGN2", 2), cosign3_bin()) {
        certificates_choose(&cosign, &c3);
    }
}

#[test]
fn cosign_3_signatures_by_a_certificate_are_taken_only_for_the_identity_and_issuer_asked_for() {
    if let Some(cosign) = Cosign::new("OI_COSIGN3", 3) {
        let c3 = cosign.bin.clone();
        certificates_choose(&cosign, &c3);
    }
}
