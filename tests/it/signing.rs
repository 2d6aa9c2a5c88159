//! Signed bundles (`export --sign-key`, `import --verify-key`) with real cosign: Debian
//! trixie's 2.x (`OI_COSIGN2`) and forky's 3.x (`OI_COSIGN3`), fetched by scripts/test.sh.
//! Keys are made in the test, by `cosign generate-key-pair` (cosign's encrypted key, opened
//! with `COSIGN_PASSWORD`) and by openssl; there is no transparency log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::*;
use crate::layout_export::{build, layout_export, noise, push_oci, seed};

const PASSWORD: &str = "bundle signing test";

/// cosign from `var` (`OI_COSIGN2`, `OI_COSIGN3`), or None once a missing precondition said so.
fn cosign(var: &str) -> Option<PathBuf> {
    let bin = std::env::var_os(var).map(PathBuf::from);
    if bin.is_none() {
        missing_precondition(&format!(
            "no cosign in this run ({var}): scripts/test.sh fetches Debian's"
        ));
    }
    bin
}

/// Two small images of their own, pushed to the rig's registry in OCI form.
fn images() -> &'static [String] {
    static R: OnceLock<Vec<String>> = OnceLock::new();
    R.get_or_init(|| {
        (1..=2)
            .map(|i| {
                let tag = unique_tag(&format!("signing-app{i}"));
                build(&tag, None, &[("app.bin", noise(200 << 10, seed()))]);
                let pushed = push_oci(&tag, &format!("signed{i}:{}", std::process::id()));
                docker_rmi(&tag);
                pushed
            })
            .collect()
    })
}

/// The keys of a test: cosign's pair (`cosign.key` encrypted, `cosign.pub`) and openssl's
/// PKCS#8 pair (`other.key`, `other.pub`).
fn keys(dir: &Path, cosign: &Path) {
    run(Command::new(cosign)
        .arg("generate-key-pair")
        .env("COSIGN_PASSWORD", PASSWORD)
        .current_dir(dir));
    let key = dir.join("other.key");
    let pem = run(Command::new("sh")
        .arg("-c")
        .arg("openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt"));
    std::fs::write(&key, pem.stdout).unwrap();
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(dir.join("other.pub")));
}

/// The bundle of [`images`] exported into `out`, signed with `key`.
fn signed_export(out: &Path, cache: &Path, key: &Path) -> String {
    let refs: Vec<&str> = images().iter().map(String::as_str).collect();
    let mut c = layout_export(out, cache, &refs, &["--sign-key", key.to_str().unwrap()]);
    c.env("COSIGN_PASSWORD", PASSWORD);
    let (code, _, log) = outcome(&mut c);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("signed the bundle's identity"), "{log}");
    log
}

fn identity(dir: &Path) -> PathBuf {
    dir.join(".offline-images/bundle.identity")
}

/// `cosign verify-blob` of the bundle in `dir` with `key`: (exit code, output).
fn verify_blob(cosign: &Path, dir: &Path, key: &Path, extra: &[&str]) -> (i32, String) {
    let (code, out, err) = outcome(
        Command::new(cosign)
            .arg("verify-blob")
            .arg("--key")
            .arg(key)
            .arg("--insecure-ignore-tlog")
            .args(extra)
            .arg(identity(dir)),
    );
    (code, format!("{out}{err}"))
}

#[test]
fn a_signed_bundle_verifies_with_cosign_2_and_3() {
    let (Some(cosign2), Some(cosign3)) = (cosign("OI_COSIGN2"), cosign("OI_COSIGN3")) else {
        return;
    };
    let dir = temp_dir("signing-cosign");
    keys(&dir, &cosign2);
    let out = dir.join("images");
    signed_export(&out, &dir.join("cache"), &dir.join("cosign.key"));
    let text = std::fs::read_to_string(identity(&out)).unwrap();
    assert!(
        text.starts_with("offline-images bundle identity 1\n"),
        "{text}"
    );
    for name in ["index.json", "images.json", "SHA256SUMS"] {
        assert!(text.contains(&format!("  {name}\n")), "{name} in {text}");
    }
    let sig = out.join(".offline-images/bundle.identity.sig");
    let sig = sig.to_str().unwrap();
    let bundle = out.join(".offline-images/bundle.identity.sigstore.json");
    let bundle = bundle.to_str().unwrap();
    for (label, cosign) in [("cosign 2", &cosign2), ("cosign 3", &cosign3)] {
        let (code, log) = verify_blob(cosign, &out, &dir.join("cosign.pub"), &["--signature", sig]);
        assert_eq!(code, 0, "{label}: {log}");
        assert!(log.contains("Verified OK"), "{label}: {log}");
        let (code, log) = verify_blob(cosign, &out, &dir.join("other.pub"), &["--signature", sig]);
        assert_ne!(code, 0, "{label} refuses another key: {log}");
    }
    // cosign 3 prefers a Sigstore bundle (--signature is deprecated there); cosign 2.5 fetches
    // the public-good TUF root before reading one, which an air gap does not allow.
    let (code, log) = verify_blob(
        &cosign3,
        &out,
        &dir.join("cosign.pub"),
        &["--bundle", bundle],
    );
    assert_eq!(code, 0, "cosign 3 --bundle: {log}");
    // The bundle exported again, with a key of openssl's: re-signed, cosign reads it too.
    signed_export(&out, &dir.join("cache"), &dir.join("other.key"));
    let (code, log) = verify_blob(
        &cosign2,
        &out,
        &dir.join("other.pub"),
        &["--signature", sig],
    );
    assert_eq!(code, 0, "cosign 2, openssl key: {log}");
}

/// `import --verify-key KEY...` of `dir` into a fresh namespace: (exit code, stderr, names).
fn import_verified(dir: &Path, keys: &[PathBuf], label: &str) -> (i32, String, Vec<String>) {
    let ns = unique_namespace(label);
    let mut c = against_containerd("import", dir, &ns);
    for k in keys {
        c.arg("--verify-key").arg(k);
    }
    let (code, _, log) = outcome(&mut c);
    let names = ctr_images(&ns).into_iter().map(|(n, _)| n).collect();
    (code, log, names)
}

/// A copy of the bundle `from` at `to`, changed by `change`.
fn tampered(from: &Path, to: &Path, change: impl FnOnce(&Path)) -> PathBuf {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
    change(to);
    to.to_path_buf()
}

/// The largest blob of the layout (a layer) and another blob, by name.
fn two_blobs(dir: &Path) -> (PathBuf, PathBuf) {
    let mut blobs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| (e.metadata().unwrap().len(), e.path()))
        .collect();
    blobs.sort();
    let largest = blobs.pop().unwrap().1;
    (largest, blobs.pop().unwrap().1)
}

/// The four bad copies of the signed bundle `good`, each with the reason its refusal gives:
/// `index.json` changed, a blob swapped, signed by openssl's key, the signature removed.
fn bad_bundles(dir: &Path, good: &Path) -> [(PathBuf, &'static str); 4] {
    let index = tampered(good, &dir.join("index-changed"), |d| {
        let p = d.join("index.json");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen('{', "{\"annotations\":{\"x\":\"y\"},", 1)).unwrap();
    });
    let swapped = tampered(good, &dir.join("blob-swapped"), |d| {
        let (layer, other) = two_blobs(d);
        std::fs::copy(other, layer).unwrap();
    });
    let other_key = tampered(good, &dir.join("other-key"), |d| {
        let sig = run(Command::new("sh")
            .arg("-c")
            .arg("openssl dgst -sha256 -sign \"$1\" \"$2\" | base64 -w0")
            .arg("sh")
            .arg(dir.join("other.key"))
            .arg(identity(d)));
        std::fs::write(d.join(".offline-images/bundle.identity.sig"), sig.stdout).unwrap();
    });
    let unsigned = tampered(good, &dir.join("unsigned"), |d| {
        for f in [
            "bundle.identity",
            "bundle.identity.sig",
            "bundle.identity.sigstore.json",
        ] {
            std::fs::remove_file(d.join(".offline-images").join(f)).unwrap();
        }
    });
    [
        (index, "index.json: refused: its sha256 is"),
        (swapped, "does not match its digest"),
        (other_key, "bundle.identity.sig: refused: the signature of"),
        (
            unsigned,
            "bundle.identity: refused: the bundle is not signed",
        ),
    ]
}

/// `verify --bundle-only --verify-key KEY` of `dir`: (exit code, stderr).
fn verify_signed(dir: &Path, key: &Path) -> (i32, String) {
    let (code, _, log) = outcome(
        offline_images()
            .args(["verify", "--bundle-only", "--images-path"])
            .arg(dir)
            .arg("--verify-key")
            .arg(key),
    );
    (code, log)
}

#[test]
fn import_verify_key_refuses_four_bad_bundles_by_name_and_takes_the_signed_one() {
    let Some(cosign2) = cosign("OI_COSIGN2") else {
        return;
    };
    let dir = temp_dir("signing-import");
    keys(&dir, &cosign2);
    let good = dir.join("signed");
    signed_export(&good, &dir.join("cache"), &dir.join("cosign.key"));
    let key = vec![dir.join("cosign.pub")];
    let bad = bad_bundles(&dir, &good);
    for (bundle, reason) in &bad {
        let (code, log, names) = import_verified(bundle, &key, "signing-refused");
        let what = bundle.file_name().unwrap().to_string_lossy();
        assert_eq!(code, 2, "{what}: refused with exit 2: {log}");
        assert!(log.contains(reason), "{what}: {reason:?} in {log}");
        assert!(log.contains(&*what), "{what}: the bundle named: {log}");
        assert!(
            names.is_empty(),
            "{what}: nothing imported, found {names:?}"
        );
        eprintln!("{what}: {}", log.lines().last().unwrap_or(""));
        // verify --bundle-only --verify-key: the same refusal, with no runtime.
        let (code, log) = verify_signed(bundle, &key[0]);
        assert!(code == 2 && log.contains(reason), "verify, {what}: {log}");
    }
    let (code, log) = verify_signed(&good, &key[0]);
    assert!(code == 0 && log.contains("signature verified"), "{log}");
    // import --kind checks on the host, before it looks for a node.
    let (code, _, log) = outcome(
        offline_images()
            .args(["import", "--kind", "no-such-cluster", "--images-path"])
            .arg(&bad[3].0)
            .arg("--verify-key")
            .arg(&key[0]),
    );
    assert!(code == 2 && log.contains(bad[3].1), "--kind: {log}");
    // The refused signature names the key that was tried.
    let (_, log, _) = import_verified(&bad[2].0, &key, "signing-refused");
    assert!(log.contains("cosign.pub"), "{log}");

    // Without a key, the unsigned bundle imports as before.
    let (code, log, names) = import_verified(&bad[3].0, &[], "signing-unsigned");
    assert_eq!(code, 0, "{log}");
    assert!(images().iter().all(|i| names.contains(i)), "{names:?}");
    // The signed one, with another key first: any one key suffices.
    let keys = [dir.join("other.pub"), dir.join("cosign.pub")];
    let (code, log, names) = import_verified(&good, &keys, "signing-good");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("signature verified with"), "{log}");
    for image in images() {
        assert!(names.contains(image), "{image} imported: {names:?}");
    }
}

/// `export --sign-key` refuses, before anything is fetched, cosign's key without its password
/// or with a wrong one.
#[test]
fn export_refuses_a_key_it_cannot_open_before_fetching_anything() {
    let Some(cosign2) = cosign("OI_COSIGN2") else {
        return;
    };
    let dir = temp_dir("signing-refusals");
    keys(&dir, &cosign2);
    let export = |key: &str, password: Option<&str>, extra: &[&str]| {
        let mut c = offline_images();
        c.args(["export", "--output"]).arg(dir.join("out"));
        c.arg("--sign-key").arg(dir.join(key)).args(extra);
        c.arg("127.0.0.1:1/never/fetched:1");
        c.env_remove("COSIGN_PASSWORD");
        if let Some(p) = password {
            c.env("COSIGN_PASSWORD", p);
        }
        outcome(&mut c)
    };
    let cases = [
        (
            "cosign.key",
            None,
            &[][..],
            "set COSIGN_PASSWORD to its password",
        ),
        (
            "cosign.key",
            Some("wrong"),
            &[],
            "cannot be opened with COSIGN_PASSWORD",
        ),
        ("cosign.pub", None, &[], "not a P-256 private key in PEM"),
    ];
    for (key, password, extra, reason) in cases {
        let (code, _, log) = export(key, password, extra);
        assert_eq!(code, 2, "{key} {extra:?}: {log}");
        assert!(log.contains(reason), "{key} {extra:?}: {reason:?} in {log}");
        assert!(!log.contains("never/fetched"), "nothing fetched: {log}");
    }
    assert!(!dir.join("out").join("images.json").exists());
}

/// The bundle of [`images`] exported into `dir/NAME` and packed into `dir/NAME-pack/FILE`
/// with `extra` flags (`--sign-key`, `--split`): the pack's directory.
fn packed(dir: &Path, name: &str, file: &str, extra: &[&str]) -> PathBuf {
    let packs = dir.join(format!("{name}-pack"));
    std::fs::create_dir_all(&packs).unwrap();
    let refs: Vec<&str> = images().iter().map(String::as_str).collect();
    let pack = packs.join(file);
    let mut flags = vec!["--pack", pack.to_str().unwrap()];
    flags.extend_from_slice(extra);
    let mut c = layout_export(&dir.join(name), &dir.join("cache"), &refs, &flags);
    c.env("COSIGN_PASSWORD", PASSWORD);
    let (code, _, log) = outcome(&mut c);
    assert_eq!(code, 0, "{log}");
    packs
}

/// The `.tar` pack `file` of `packs` rewritten by GNU tar after `change` changed its files,
/// its members in the order they were: a pack carried and tampered with.
fn repacked(packs: &Path, file: &str, to: &Path, change: impl FnOnce(&Path)) -> PathBuf {
    let tree = to.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let pack = packs.join(file);
    run(Command::new("tar")
        .arg("-xf")
        .arg(&pack)
        .arg("-C")
        .arg(&tree));
    let list = run(Command::new("tar").arg("-tf").arg(&pack));
    change(&tree);
    let packs = to.join("pack");
    std::fs::create_dir_all(&packs).unwrap();
    let mut c = Command::new("tar");
    c.arg("-cf").arg(packs.join(file)).arg("-C").arg(&tree);
    c.args(String::from_utf8(list.stdout).unwrap().lines());
    run(&mut c);
    packs
}

/// `export --pack --sign-key`: the pack carries the bundle's identity and signatures as
/// members, and cosign verifies the identity taken out of it. `import --verify-key` takes the
/// signed pack (a `.tar.zst`, and a `.tar` cut into parts) and refuses, each by name with
/// nothing imported, a pack exported unsigned, one signed by another key, and signed ones
/// whose `index.json` was changed or whose blob was swapped after packing.
#[test]
fn a_signed_pack_carries_its_signature_and_import_verify_key_checks_it() {
    let Some(cosign2) = cosign("OI_COSIGN2") else {
        return;
    };
    let dir = temp_dir("signing-pack");
    keys(&dir, &cosign2);
    let key = vec![dir.join("cosign.pub")];
    let sign = |k: &str| dir.join(k).to_str().unwrap().to_string();
    let zst = packed(
        &dir,
        "zst",
        "release.tar.zst",
        &["--sign-key", &sign("cosign.key")],
    );
    let taken = dir.join("taken-out");
    std::fs::create_dir_all(&taken).unwrap();
    run(Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$1\" | tar -x -C \"$2\" .offline-images")
        .arg("sh")
        .arg(zst.join("release.tar.zst"))
        .arg(&taken));
    let sig = taken.join(".offline-images/bundle.identity.sig");
    let (code, log) = verify_blob(
        &cosign2,
        &taken,
        &dir.join("cosign.pub"),
        &["--signature", sig.to_str().unwrap()],
    );
    assert!(
        code == 0 && log.contains("Verified OK"),
        "cosign 2 on the pack's identity: {log}"
    );
    let (code, log, names) = import_verified(&zst, &key, "signing-pack-zst");
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("release.tar.zst: signature verified with"),
        "{log}"
    );
    for image in images() {
        assert!(
            names.contains(image),
            "{image} imported from the pack: {names:?}"
        );
    }
    let split = packed(
        &dir,
        "split",
        "release.tar",
        &["--sign-key", &sign("cosign.key"), "--split", "128K"],
    );
    assert!(split.join("release.tar.part-001").exists());
    let (code, log, names) = import_verified(&split, &key, "signing-pack-split");
    assert!(
        code == 0 && log.contains("signature verified with"),
        "{log}"
    );
    assert_eq!(names.len(), images().len() * 2, "{names:?}");

    let plain = packed(
        &dir,
        "plain",
        "release.tar",
        &["--sign-key", &sign("cosign.key")],
    );
    let bad = [
        (
            packed(&dir, "unsigned", "release.tar", &[]),
            "bundle.identity: refused: the pack is not signed",
        ),
        (
            packed(
                &dir,
                "other-key",
                "release.tar",
                &["--sign-key", &sign("other.key")],
            ),
            "bundle.identity.sig: refused: the signature of",
        ),
        (
            repacked(&plain, "release.tar", &dir.join("index-changed"), |t| {
                let p = t.join("index.json");
                let text = std::fs::read_to_string(&p).unwrap();
                std::fs::write(&p, text.replacen('{', "{\"annotations\":{\"x\":\"y\"},", 1))
                    .unwrap();
            }),
            "release.tar/index.json: refused: its sha256 is",
        ),
        (
            repacked(&plain, "release.tar", &dir.join("blob-swapped"), |t| {
                let (layer, other) = two_blobs(t);
                std::fs::copy(other, layer).unwrap();
            }),
            "refused: the pack does not match its signed identity",
        ),
    ];
    for (packs, reason) in &bad {
        let (code, log, names) = import_verified(packs, &key, "signing-pack-refused");
        assert_eq!(code, 2, "{packs:?}: refused with exit 2: {log}");
        assert!(log.contains(reason), "{packs:?}: {reason:?} in {log}");
        assert!(
            names.is_empty(),
            "{packs:?}: nothing imported, found {names:?}"
        );
        let (code, log) = verify_signed(packs, &key[0]);
        assert!(
            code == 2 && log.contains(reason),
            "verify, {packs:?}: {log}"
        );
    }
    // The repacked, untouched, is taken: the tampering, not GNU tar, is what was refused.
    let same = repacked(&plain, "release.tar", &dir.join("repacked"), |_| {});
    let (code, log, _) = import_verified(&same, &key, "signing-pack-repacked");
    assert!(
        code == 0 && log.contains("signature verified with"),
        "{log}"
    );
}
