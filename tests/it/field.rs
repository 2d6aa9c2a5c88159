//! The field: archives as the real tools of every containerd and Docker version write them,
//! imported on every version of the matrix (`harness::matrix()`). Regression tests are named
//! after the bug they keep fixed.

use std::collections::BTreeSet;
use std::path::Path;

use crate::harness::*;

fn bundle_of(archive: &Path, name: &str) -> std::path::PathBuf {
    let dir = temp_dir("field-bundle");
    std::fs::copy(archive, dir.join(name)).unwrap();
    dir
}

/// Import `dir` into a fresh namespace of `d`'s containerd twice: the first run imports, the
/// second skips everything. Returns the namespace.
fn import_twice_into_containerd(d: &Daemons, dir: &Path, label: &str) -> String {
    let ns = unique_namespace(label);
    let (code, _, stderr) = outcome(&mut d.against_containerd("import", dir, &ns));
    assert_eq!(code, 0, "{}: {stderr}", d.label);
    assert!(stderr.contains("1 imported"), "{}: {stderr}", d.label);
    let (code, _, again) = outcome(&mut d.against_containerd("import", dir, &ns));
    assert_eq!(code, 0, "{}: {again}", d.label);
    assert!(
        again.contains("0 imported, 1 skipped"),
        "{}: the second run must skip the archive:\n{again}",
        d.label
    );
    ns
}

#[test]
fn shared_layer_symlink_docker_save_of_several_images_imports_and_runs_on_every_version() {
    let saves = shared_layer_saves();
    // Docker 20.10 links the shared layer: the archive really has the link this is about.
    let links = tar_symlinks(&saves[0].archive);
    assert!(
        links
            .iter()
            .any(|(n, t)| n.ends_with("/layer.tar") && t.starts_with("../")),
        "docker save {} wrote no shared-layer link: {links:?}",
        daemons().docker_version
    );
    for (d, save) in matrix().iter().zip(saves) {
        let dir = bundle_of(&save.archive, "release.tar");
        let ns = import_twice_into_containerd(d, &dir, "shared");
        let want: BTreeSet<String> = save
            .images
            .iter()
            .map(|(i, _)| i.reference.clone())
            .collect();
        let have: BTreeSet<String> = d.ctr_images(&ns).into_iter().collect();
        assert_eq!(
            have, want,
            "{}: the records left must be the names the archive holds",
            d.label
        );
        for (image, message) in &save.images {
            let out = stdout_of(d.ctr(&ns).args([
                "run",
                "--rm",
                &image.reference,
                &format!("{ns}-{}", image.tag.replace([':', '/'], "-")),
            ]));
            assert_eq!(out.trim(), *message, "{}: {}", d.label, image.reference);
        }
    }
}
