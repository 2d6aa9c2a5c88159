//! The import loop on the fake runtime: planning.

#![cfg(test)]

use super::*;

#[test]
fn an_archive_images_json_shows_present_is_skipped_and_never_read() {
    let b = Bench::new();
    // Not an archive at all, and not the checksum SHA256SUMS gives: reading it to import it
    // or to check it would fail it.
    let garbage = b"these bytes are no tar archive";
    b.put("app.tar", garbage);
    b.sums(&[], &["app.tar"]);
    b.index(vec![entry(
        "app.tar",
        garbage.len() as u64,
        vec![listed(APP, "app")],
    )]);
    let fake = FakeRuntime::new().with_image(APP, &digest_of("app"));
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Skipped]);
    assert_eq!(result(&s, "app.tar").digests, [digest_of("app")]);
    assert_eq!(fake.count(Op::Import, None), 0);
    assert!(s.missing.is_empty(), "{:?}", s.missing);
    assert_eq!((code, s.skipped, s.imported), (Code::Success, 1, 0));
}

#[test]
fn an_archive_present_under_another_config_is_imported() {
    let b = bench_of(1);
    b.describe(&["a.tar"]);
    let fake = FakeRuntime::new().with_image(APP, &digest_of("old"));
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(config_in(&fake, APP), Some(digest_of(APP)));
    let was = digest_of("old");
    assert_eq!(
        result(&s, "a.tar").replaced,
        [Replaced {
            name: APP.into(),
            was
        }],
        "the name taken from another image is reported"
    );
    assert_eq!(code, Code::Success);
}

#[test]
fn a_checksum_mismatch_fails_that_archive_only_and_it_never_reaches_the_runtime() {
    let b = bench_of(2);
    b.sums(&["a.tar"], &["b.tar"]);
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    let bad = result(&s, "b.tar");
    assert_eq!(
        (bad.status, bad.failure),
        (Status::Failed, Some(Kind::Archive))
    );
    assert!(bad.reason.as_ref().unwrap().contains("checksum mismatch"));
    assert_eq!(result(&s, "a.tar").status, Status::Imported);
    assert_eq!(fake.trace(), ["reclaim", "import a.tar"]);
    assert_eq!((code, s.failed, s.imported), (Code::Success, 1, 1));
}

#[test]
fn with_strict_a_failed_archive_makes_the_run_exit_1() {
    let b = bench_of(2);
    b.sums(&["a.tar"], &["b.tar"]);
    let settings = Settings {
        strict: true,
        ..b.settings()
    };
    let (code, s) = b.run(&FakeRuntime::new(), &settings);
    assert_eq!((code, s.failed, s.imported), (Code::Failure, 1, 1));
}

#[test]
fn a_refused_path_fails_by_name_and_the_rest_is_imported() {
    let b = bench_of(1);
    std::fs::create_dir(b.images().join("dir.tar")).unwrap();
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    let refused = result(&s, "dir.tar");
    assert_eq!(
        (refused.status, refused.failure),
        (Status::Failed, Some(Kind::Archive))
    );
    assert!(
        refused
            .reason
            .as_ref()
            .unwrap()
            .contains("not a regular file"),
        "{refused:?}"
    );
    assert_eq!(result(&s, "a.tar").status, Status::Imported);
    assert_eq!(fake.trace(), ["reclaim", "import a.tar"]);
    assert_eq!(code, Code::Success);
}

#[test]
fn a_file_sha256sums_lists_that_is_absent_fails_as_an_incomplete_bundle() {
    let b = bench_of(1);
    b.sums(&["a.tar"], &["gone.tar"]);
    let (code, s) = b.run(&FakeRuntime::new(), &b.settings());
    let gone = result(&s, "gone.tar");
    assert_eq!(
        (gone.status, gone.failure),
        (Status::Failed, Some(Kind::Bundle))
    );
    assert!(gone.reason.as_ref().unwrap().contains("not found"));
    assert_eq!((code, s.imported, s.failed), (Code::Success, 1, 1));
}

#[test]
fn a_dry_run_imports_nothing_reclaims_nothing_and_reports_would_import() {
    let b = bench_of(2);
    b.describe(&["a.tar", "b.tar"]);
    let settings = Settings {
        dry_run: true,
        release: Some("shop".into()),
        ..b.settings()
    };
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &settings);
    assert_eq!(statuses(&s), [Status::WouldImport, Status::WouldImport]);
    assert_eq!((s.would_import, s.imported, s.dry_run), (2, 0, true));
    assert_eq!(fake.trace(), Vec::<String>::new());
    assert_eq!(fake.count(Op::Label, None), 0);
    assert!(fake.names().is_empty());
    assert!(
        s.missing.is_empty(),
        "a dry run checks nothing after: {:?}",
        s.missing
    );
    assert_eq!(code, Code::Success);
}

#[test]
fn a_dry_run_still_fails_a_file_that_cannot_be_an_archive() {
    let b = bench_of(1);
    b.put("empty.tar", b"");
    let settings = Settings {
        dry_run: true,
        ..b.settings()
    };
    let (_, s) = b.run(&FakeRuntime::new(), &settings);
    let empty = result(&s, "empty.tar");
    assert_eq!(empty.status, Status::Failed);
    assert!(empty.reason.as_ref().unwrap().contains("the file is empty"));
    assert_eq!(result(&s, "a.tar").status, Status::WouldImport);
}

#[test]
fn force_imports_an_archive_that_is_present() {
    let b = bench_of(1);
    b.describe(&["a.tar"]);
    let fake = FakeRuntime::new().with_image(APP, &digest_of(APP));
    let settings = Settings {
        force: true,
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(fake.count(Op::Import, Some("a.tar")), 1);
}

/// The README's "0 done, 1 some work failed": an images path with no image at all is a
/// bundle that is not where the import looked, unless `--allow-empty` says a node has none
/// on purpose. Either way the runtime is asked nothing.
#[test]
fn an_empty_images_path_fails_unless_allowed_and_asks_the_runtime_nothing() {
    let b = Bench::new();
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(code, Code::Failure);
    assert!(s.archives.is_empty());
    let allowed = Settings {
        allow_empty: true,
        ..b.settings()
    };
    let (code, _) = b.run(&fake, &allowed);
    assert_eq!(code, Code::Success);
    assert_eq!(fake.count(Op::Present, None), 0);
    assert_eq!(fake.count(Op::Import, None), 0);
}

#[test]
fn an_oci_archive_and_a_docker_archive_load_under_their_names_and_configs() {
    let b = Bench::new();
    b.put("a.tar", &one(APP, "app"));
    b.put("b.tar", &oci_archive(WEB, "web"));
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported, Status::Imported]);
    assert_eq!(result(&s, "a.tar").names, [APP]);
    assert_eq!(result(&s, "b.tar").names, [WEB]);
    assert_eq!(result(&s, "b.tar").digests, [digest_of("web")]);
    assert_eq!(config_in(&fake, APP), Some(digest_of("app")));
    assert_eq!(config_in(&fake, WEB), Some(digest_of("web")));
    assert_eq!(code, Code::Success);
}

#[test]
fn a_gzip_archive_reaches_the_runtime_decompressed() {
    use std::io::Write;
    let b = Bench::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&one(APP, "app")).unwrap();
    b.put("a.tar.gz", &gz.finish().unwrap());
    let fake = FakeRuntime::new();
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(config_in(&fake, APP), Some(digest_of("app")));
}
