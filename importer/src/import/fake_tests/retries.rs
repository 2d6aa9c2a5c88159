//! The import loop on the fake runtime: retries.

#![cfg(test)]

use super::*;

#[test]
fn a_runtime_unreachable_for_two_imports_is_retried_and_the_archive_imported() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Import, 2, Fault::Unreachable);
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "import a.tar (failed)",
            "import a.tar (failed)",
            "import a.tar"
        ]
    );
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(code, Code::Success);
    let retries = b.said("retrying in 0 s");
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries[0].contains("(attempt 1 of 5)"), "{retries:?}");
}

#[test]
fn a_runtime_unreachable_for_good_fails_the_archive_naming_why_after_every_retry() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Import, 100, Fault::Unreachable);
    let (code, s) = b.run(&fake, &b.settings());
    let a = result(&s, "a.tar");
    assert_eq!(
        (a.status, a.failure),
        (Status::Failed, Some(Kind::Unreachable))
    );
    assert!(a.reason.as_ref().unwrap().contains("connection refused"));
    assert_eq!(
        fake.count(Op::Import, Some("a.tar")),
        1 + crate::import::execute::RETRY_DELAYS.len()
    );
    assert_eq!((code, s.failed), (Code::Success, 1));
}

#[test]
fn listing_the_images_is_retried_while_the_runtime_is_unreachable() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Present, 2, Fault::Unreachable);
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(fake.count(Op::Present, None), 3);
    assert_eq!(
        (code, statuses(&s)),
        (Code::Success, vec![Status::Imported])
    );
}

#[test]
fn a_runtime_that_never_answers_the_first_listing_ends_the_run_as_an_environment_error() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Present, 100, Fault::Unreachable);
    let err = b.try_run(&fake, &b.settings()).unwrap_err();
    assert!(format!("{err:#}").contains("connection refused"), "{err:#}");
    assert_eq!(Code::from_error(&err), Code::Usage);
    assert_eq!(fake.count(Op::Import, None), 0);
}

#[test]
fn an_import_error_naming_a_layer_fails_that_archive_at_once_in_the_runtimes_words() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    let words = "failed to extract layer sha256:5f70bf18: unexpected EOF";
    fake.fail_file(Op::Import, "a.tar", 1, Fault::Refused(words.into()));
    let (code, s) = b.run(&fake, &b.settings());
    let a = result(&s, "a.tar");
    assert_eq!((a.status, a.failure), (Status::Failed, Some(Kind::Import)));
    assert!(a.reason.as_ref().unwrap().contains(words), "{a:?}");
    assert_eq!(fake.count(Op::Import, Some("a.tar")), 1, "not retried");
    assert_eq!(result(&s, "b.tar").status, Status::Imported);
    assert_eq!(code, Code::Success);
}

#[test]
fn a_runtime_lost_between_the_two_steps_has_the_whole_archive_imported_again() {
    let b = bench_of(1);
    let fake = FakeRuntime::new().staging();
    fake.fail(Op::Rest, 1, Fault::Unreachable);
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "stage a.tar",
            "rest a.tar (failed)",
            "stage a.tar",
            "rest a.tar"
        ]
    );
    assert_eq!(statuses(&s), [Status::Imported]);
}

/// Lost before the gate, nothing written: after the retries, it is read once more in its turn.
#[test]
fn a_staging_runtime_lost_while_only_reading_is_read_again_after_the_retries() {
    let b = bench_of(1);
    let fake = FakeRuntime::new().staging();
    let attempts = 1 + crate::import::execute::RETRY_DELAYS.len();
    fake.fail(Op::Stage, attempts, Fault::Unreachable);
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(fake.count(Op::Stage, Some("a.tar")), attempts + 1);
    assert_eq!(statuses(&s), [Status::Imported]);
}

/// A runtime gone for good is tried once out of turn, then once more with the retries in the
/// archive's turn: one round of retry delays, not two (it took two, 62 s an archive).
#[test]
fn a_staging_runtime_gone_for_good_is_retried_one_round_not_two() {
    let b = bench_of(1);
    let fake = FakeRuntime::new().staging();
    fake.fail(Op::Stage, 100, Fault::Unreachable);
    let (_, s) = b.run(&fake, &b.settings());
    let one_round = 1 + crate::import::execute::RETRY_DELAYS.len();
    assert_eq!(fake.count(Op::Stage, Some("a.tar")), 1 + one_round);
    assert_eq!(statuses(&s), [Status::Failed]);
    assert_eq!(b.said("reading it again in its turn").len(), 1);
    assert_eq!(b.said("retrying in 0 s").len(), one_round - 1);
}
