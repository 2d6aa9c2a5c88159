//! The import loop on the fake runtime: the pipeline and jobs.

#![cfg(test)]

use super::*;

#[test]
fn pipelined_the_next_archive_is_stored_while_the_one_before_is_unpacked() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().staging();
    fake.hold(Op::Rest, "a.tar", (Op::Stage, "b.tar"));
    let (_, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "stage a.tar",
            "stage b.tar",
            "rest a.tar",
            "rest b.tar"
        ]
    );
    assert_eq!(statuses(&s), [Status::Imported, Status::Imported]);
}

/// Each archive's unpack is slower than the next one's: a's and b's wait for the next stage,
/// then give the next rest 200 ms to overtake them, which the importer must not allow.
#[test]
fn pipelined_both_steps_and_the_results_go_in_plan_order() {
    let b = bench_of(4);
    let fake = FakeRuntime::new().staging();
    let overtake = Duration::from_millis(200);
    for (this, next) in [("a.tar", "b.tar"), ("b.tar", "c.tar")] {
        fake.hold(Op::Rest, this, (Op::Stage, next));
        fake.hold_at_most(Op::Rest, this, (Op::Rest, next), overtake);
    }
    let (_, s) = b.run(&fake, &b.settings());
    let at = |op, f| fake.position(op, f).unwrap();
    for (x, y) in [("a.tar", "b.tar"), ("b.tar", "c.tar"), ("c.tar", "d.tar")] {
        assert!(at(Op::Stage, x) < at(Op::Stage, y), "{:?}", fake.trace());
        assert!(at(Op::Rest, x) < at(Op::Rest, y), "{:?}", fake.trace());
        assert!(at(Op::Stage, y) < at(Op::Rest, y), "{:?}", fake.trace());
    }
    assert_eq!(files(&s), ["a.tar", "b.tar", "c.tar", "d.tar"]);
    assert_eq!(s.imported, 4);
}

#[test]
fn jobs_1_turns_the_pipeline_off() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().staging();
    let settings = Settings {
        jobs: Some(1),
        ..b.settings()
    };
    b.run(&fake, &settings);
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "stage a.tar",
            "rest a.tar",
            "stage b.tar",
            "rest b.tar"
        ]
    );
}

#[test]
fn a_runtime_that_does_not_stage_imports_jobs_archives_side_by_side_reported_in_plan_order() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    // a finishes only once b has: possible only side by side.
    fake.hold(Op::Import, "a.tar", (Op::Import, "b.tar"));
    let settings = Settings {
        jobs: Some(2),
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(fake.trace(), ["reclaim", "import b.tar", "import a.tar"]);
    assert_eq!(files(&s), ["a.tar", "b.tar"]);
    assert_eq!(s.imported, 2);
}

#[test]
fn a_runtime_that_does_not_stage_imports_one_archive_at_a_time_by_default() {
    let b = bench_of(3);
    let fake = FakeRuntime::new();
    b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        ["reclaim", "import a.tar", "import b.tar", "import c.tar"]
    );
}

/// One at a time too: the race was with another tool, or with containerd's garbage collector
/// (ctr names an image before it unpacks it).
#[test]
fn an_archive_that_lost_a_race_one_at_a_time_is_imported_again_once_at_the_end() {
    let b = bench_of(3);
    let fake = FakeRuntime::new();
    fake.fail_file(Op::Import, "a.tar", 1, Fault::Race);
    fake.fail_file(Op::Import, "b.tar", 2, Fault::Race);
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "import a.tar (failed)",
            "import b.tar (failed)",
            "import c.tar",
            "import a.tar",
            "import b.tar (failed)"
        ]
    );
    assert_eq!(
        statuses(&s),
        [Status::Imported, Status::Failed, Status::Imported]
    );
    // Tolerant: the failure is reported, the run succeeds (--strict would fail it).
    assert_eq!((code, s.failed), (Code::Success, 1));
}

#[test]
fn a_parallel_import_that_lost_a_race_is_imported_again_alone_at_the_end() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    fake.fail_file(Op::Import, "a.tar", 1, Fault::Race);
    // a's race is lost while b is still going.
    fake.hold(Op::Import, "b.tar", (Op::Import, "a.tar"));
    let settings = Settings {
        jobs: Some(2),
        ..b.settings()
    };
    let (code, s) = b.run(&fake, &settings);
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "import a.tar (failed)",
            "import b.tar",
            "import a.tar"
        ]
    );
    assert_eq!(statuses(&s), [Status::Imported, Status::Imported]);
    assert_eq!((code, s.failed), (Code::Success, 0));
}
