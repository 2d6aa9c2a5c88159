//! The import loop on the fake runtime: names several archives give.

#![cfg(test)]

use super::*;

/// `a.tar` and `b.tar` both name `APP`, each its own image.
fn shared_name_bench() -> Bench {
    let b = Bench::new();
    b.put("a.tar", &one(APP, "from-a"));
    b.put("b.tar", &one(APP, "from-b"));
    b
}

#[test]
fn two_archives_giving_one_name_different_images_the_last_in_plan_order_wins() {
    let b = shared_name_bench();
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(config_in(&fake, APP), Some(digest_of("from-b")));
    assert_eq!(s.conflicts, [APP]);
    assert_eq!(fake.trace(), ["reclaim", "import a.tar", "import b.tar"]);
    assert_eq!((code, s.imported, s.failed), (Code::Success, 2, 0));
}

#[test]
fn with_strict_a_name_two_archives_give_different_images_makes_the_run_exit_1() {
    let b = shared_name_bench();
    let settings = Settings {
        strict: true,
        ..b.settings()
    };
    let (code, s) = b.run(&FakeRuntime::new(), &settings);
    assert_eq!((code, s.failed), (Code::Failure, 0));
    assert_eq!(s.conflicts, [APP]);
}

#[test]
fn side_by_side_a_winner_that_set_the_name_first_is_imported_once_more() {
    let b = shared_name_bench();
    let fake = FakeRuntime::new();
    // The loser a sets the name after the winner b.
    fake.hold(Op::Import, "a.tar", (Op::Import, "b.tar"));
    let settings = Settings {
        jobs: Some(2),
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(
        fake.trace(),
        ["reclaim", "import b.tar", "import a.tar", "import b.tar"]
    );
    assert_eq!(config_in(&fake, APP), Some(digest_of("from-b")));
    assert_eq!(statuses(&s), [Status::Imported, Status::Imported]);
}

#[test]
fn an_archive_images_json_lists_with_the_name_wins_it_over_one_sorting_later() {
    let b = shared_name_bench();
    b.describe(&["a.tar"]);
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        ["reclaim", "import a.tar", "import b.tar", "import a.tar"]
    );
    assert_eq!(config_in(&fake, APP), Some(digest_of("from-a")));
    assert_eq!(s.conflicts, [APP]);
    assert!(s.missing.is_empty(), "{:?}", s.missing);
    assert_eq!(code, Code::Success);
    // The next run flips nothing back: a is skipped, and b loses the name it would set.
    fake.forget_calls();
    let (_, again) = b.run(&fake, &b.settings());
    assert_eq!(result(&again, "a.tar").status, Status::Skipped);
    assert_eq!(config_in(&fake, APP), Some(digest_of("from-a")));
}
