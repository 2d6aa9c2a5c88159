//! The import loop on the fake runtime: labels and fingerprints.

#![cfg(test)]

use super::*;

#[test]
fn every_imported_name_is_pinned_managed_fingerprinted_and_labelled_for_the_release() {
    let b = Bench::new();
    b.put("a.tar", &docker_archive(&[(&[APP, WEB], "two-names")]));
    let fake = FakeRuntime::new();
    let settings = Settings {
        release: Some("shop".into()),
        ..b.settings()
    };
    b.run(&fake, &settings);
    for name in [APP, WEB] {
        let labels = fake.image(name).unwrap().labels;
        assert_eq!(labels[LABEL_PINNED], "pinned");
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[&format!("{LABEL_RELEASE_PREFIX}shop")], "true");
        let (key, value) = labels
            .iter()
            .find(|(k, _)| k.starts_with(LABEL_ARCHIVE_PREFIX))
            .unwrap();
        assert_eq!(key.len(), LABEL_ARCHIVE_PREFIX.len() + 32);
        let prefix = format!("2/{}/", digest_of("two-names"));
        assert!(value.starts_with(&prefix), "{value}");
    }
}

#[test]
fn an_archive_skipped_as_present_is_labelled_for_this_release_once() {
    let b = bench_of(1);
    b.describe(&["a.tar"]);
    let fake = FakeRuntime::new().with_image(APP, &digest_of(APP));
    let settings = Settings {
        release: Some("shop".into()),
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(statuses(&s), [Status::Skipped]);
    let labels = fake.image(APP).unwrap().labels;
    assert_eq!(labels[&format!("{LABEL_RELEASE_PREFIX}shop")], "true");
    fake.forget_calls();
    b.run(&fake, &settings);
    assert_eq!(fake.count(Op::Label, None), 0, "labelled already");
}

#[test]
fn a_foreign_archive_imported_once_is_skipped_by_its_fingerprint_next_time() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    let (_, first) = b.run(&fake, &b.settings());
    assert_eq!(first.imported, 2);
    fake.forget_calls();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Skipped, Status::Skipped]);
    assert_eq!(result(&s, "a.tar").names, [APP]);
    assert_eq!(fake.trace(), ["reclaim"]);
    assert_eq!(fake.count(Op::Label, None), 0, "nothing to restamp");
    assert_eq!(code, Code::Success);
}

#[test]
fn a_foreign_archive_replaced_by_another_image_is_imported_again() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    b.run(&fake, &b.settings());
    b.put("a.tar", &one(APP, "newer"));
    fake.forget_calls();
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(config_in(&fake, APP), Some(digest_of("newer")));
    let was = digest_of(APP);
    assert_eq!(
        result(&s, "a.tar").replaced,
        [Replaced {
            name: APP.into(),
            was
        }]
    );
}

/// Written again with the same bytes (a new change time): read, skipped as present, and its
/// labels take the new stamp, so the run after skips it without reading it.
#[test]
fn a_foreign_archive_copied_again_unchanged_is_skipped_by_what_it_holds_and_restamped() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    b.run(&fake, &b.settings());
    let fp = |fake: &FakeRuntime| {
        let labels = fake.image(APP).unwrap().labels;
        labels
            .into_iter()
            .find(|(k, _)| k.starts_with(LABEL_ARCHIVE_PREFIX))
            .unwrap()
            .1
    };
    let before = fp(&fake);
    std::thread::sleep(Duration::from_millis(30));
    std::fs::remove_file(b.images().join("a.tar")).unwrap();
    b.put("a.tar", &one(APP, APP));
    fake.forget_calls();
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Skipped]);
    assert_eq!(fake.count(Op::Import, None), 0);
    let after = fp(&fake);
    assert_ne!(after, before, "restamped");
    assert_eq!(
        after.rsplit_once('/').unwrap().0,
        before.rsplit_once('/').unwrap().0
    );
    fake.forget_calls();
    b.run(&fake, &b.settings());
    assert_eq!(fake.count(Op::Label, None), 0);
}

#[test]
fn on_a_runtime_without_labels_a_foreign_archive_present_is_skipped_by_what_it_holds() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().without_labels().without_digest_names();
    let (_, first) = b.run(&fake, &b.settings());
    assert_eq!(first.imported, 2);
    assert!(fake.image(APP).unwrap().labels.is_empty());
    fake.forget_calls();
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Skipped, Status::Skipped]);
    assert_eq!(fake.count(Op::Import, None), 0);
}
