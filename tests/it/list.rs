//! `offline-images list` against archives written by the real tools.

use serde_json::Value;

use crate::harness::*;

fn list_json(path: &std::path::Path) -> Value {
    let out = stdout_of(offline_images().args(["list", "--json"]).arg(path));
    serde_json::from_str(out.lines().next().expect("one line per archive")).unwrap()
}

fn names_and_configs(v: &Value) -> Vec<(Vec<String>, Vec<String>)> {
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|img| {
            let names = img["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect();
            let configs = img["platforms"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["config_digest"].as_str().map(str::to_string))
                .collect();
            (names, configs)
        })
        .collect()
}

#[test]
fn list_reports_the_daemons_reference_and_config_digest_for_every_flavour() {
    let f = fixtures();
    for (flavour, path, image) in &f.flavours {
        let v = list_json(path);
        let images = names_and_configs(&v);
        assert_eq!(images.len(), 1, "{flavour}: one image expected in {v}");
        assert!(
            images[0].0.contains(&image.reference),
            "{flavour}: {} not among {:?}",
            image.reference,
            images[0].0
        );
        assert_eq!(
            images[0].1,
            vec![image.config_digest.clone()],
            "{flavour}: config digest"
        );
    }
}

#[test]
fn list_reads_compression_from_the_bytes_not_the_name() {
    let f = fixtures();
    let dir = temp_dir("misnamed");
    let misnamed = dir.join("really-gzip.tar");
    std::fs::copy(f.dir.join("docker.tar.gz"), &misnamed).unwrap();
    let v = list_json(&misnamed);
    assert_eq!(v["compression"], "gzip");
    assert_eq!(
        names_and_configs(&v)[0].1,
        vec![f.alpha.config_digest.clone()]
    );
}

#[test]
fn list_reports_both_images_of_a_two_image_archive() {
    let f = fixtures();
    let images = names_and_configs(&list_json(&f.two_images));
    let mut got: Vec<_> = images
        .iter()
        .map(|(n, c)| (n[0].clone(), c[0].clone()))
        .collect();
    got.sort();
    let mut want = vec![
        (f.alpha.reference.clone(), f.alpha.config_digest.clone()),
        (f.beta.reference.clone(), f.beta.config_digest.clone()),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn list_reports_an_untagged_image_as_such() {
    let f = fixtures();
    let v = list_json(&f.untagged);
    let images = names_and_configs(&v);
    assert!(images[0].0.is_empty(), "no names expected: {v}");
    assert_eq!(images[0].1, vec![f.alpha.config_digest.clone()]);
    let text = stdout_of(offline_images().arg("list").arg(&f.untagged));
    assert!(text.contains("<untagged>"), "{text}");
}

#[test]
fn list_names_each_bad_file_and_goes_on_to_the_next() {
    let f = fixtures();
    let dir = temp_dir("bad");
    std::fs::copy(f.dir.join("docker.tar.gz"), dir.join("b-good.tar.gz")).unwrap();
    std::fs::write(dir.join("a-empty.tar"), b"").unwrap();
    let gz = std::fs::read(f.dir.join("docker.tar.gz")).unwrap();
    std::fs::write(dir.join("c-truncated.tar.gz"), &gz[..gz.len() / 2]).unwrap();
    let mut corrupt = gz.clone();
    let mid = corrupt.len() / 3;
    corrupt[mid..mid + 64].fill(0xAA);
    std::fs::write(dir.join("d-corrupt.tar.gz"), &corrupt).unwrap();
    let tar = std::fs::read(f.dir.join("docker.tar")).unwrap();
    std::fs::write(dir.join("e-truncated.tar"), &tar[..tar.len() / 2]).unwrap();
    std::fs::write(
        dir.join("f-random.tar"),
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let plain = dir.join("g-not-an-image.tar");
    run(std::process::Command::new("tar")
        .arg("-cf")
        .arg(&plain)
        .arg("-C")
        .arg("/etc")
        .arg("hostname"));

    let out = offline_images().arg("list").arg(&dir).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1 when any archive could not be read"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&f.alpha.reference),
        "the good archive is listed: {stdout}"
    );
    for (file, why) in [
        ("a-empty.tar", "empty"),
        ("c-truncated.tar.gz", "truncated"),
        ("d-corrupt.tar.gz", "corrupt"),
        ("e-truncated.tar", "truncated"),
        ("f-random.tar", "neither a tar archive"),
        ("g-not-an-image.tar", "not a docker-archive or OCI"),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("no error line for {file}:\n{stderr}"));
        assert!(line.contains(why), "{file}: expected {why:?} in {line:?}");
    }
}
