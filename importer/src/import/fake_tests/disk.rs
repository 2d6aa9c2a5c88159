//! The import loop on the fake runtime: a full disk.

#![cfg(test)]

use super::*;

/// The upload of b finds the disk full while a is being unpacked: b is tried again once a has
/// finished, and from then on no archive is stored while another one is unpacked.
#[test]
fn pipelined_a_disk_full_upload_beside_an_unpack_is_retried_after_it_and_the_rest_goes_alone() {
    let b = bench_of(3);
    let fake = FakeRuntime::new().staging();
    fake.hold(Op::Rest, "a.tar", (Op::Stage, "b.tar"));
    fake.fail_file(Op::Stage, "b.tar", 1, Fault::DiskFull);
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "stage a.tar",
            "stage b.tar (failed)",
            "rest a.tar",
            "stage b.tar",
            "rest b.tar",
            "stage c.tar",
            "rest c.tar"
        ]
    );
    assert_eq!(s.imported, 3);
    assert_eq!(code, Code::Success);
    let said = b.said("importing it again once that one is done");
    assert!(
        said.len() == 1 && said[0].contains("b.tar"),
        "the retry is said, naming the archive: {:?}",
        b.log.lines()
    );
}

#[test]
fn pipelined_a_disk_full_upload_with_nothing_unpacking_beside_it_fails_the_archive() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().staging();
    fake.fail_file(Op::Stage, "a.tar", 1, Fault::DiskFull);
    let (code, s) = b.run(&fake, &b.settings());
    let a = result(&s, "a.tar");
    assert_eq!((a.status, a.failure), (Status::Failed, Some(Kind::Disk)));
    assert!(a
        .reason
        .as_ref()
        .unwrap()
        .contains("no space left on device"));
    assert_eq!(fake.count(Op::Stage, Some("a.tar")), 1);
    assert_eq!(result(&s, "b.tar").status, Status::Imported);
    assert_eq!(code, Code::Success);
}

#[test]
fn a_disk_full_import_on_a_runtime_that_does_not_stage_fails_the_archive_without_a_retry() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    fake.fail_file(Op::Import, "a.tar", 1, Fault::DiskFull);
    let settings = Settings {
        strict: true,
        ..b.settings()
    };
    let (code, s) = b.run(&fake, &settings);
    let a = result(&s, "a.tar");
    assert_eq!((a.status, a.failure), (Status::Failed, Some(Kind::Disk)));
    assert_eq!(fake.count(Op::Import, Some("a.tar")), 1);
    assert_eq!(result(&s, "b.tar").status, Status::Imported);
    assert_eq!(code, Code::Failure);
}

#[test]
fn a_preflight_refusing_an_archive_fails_it_before_anything_of_it_is_sent() {
    let b = bench_of(2);
    let fake = FakeRuntime::new();
    fake.fail_file(Op::Preflight, "b.tar", 1, Fault::DiskFull);
    let settings = Settings {
        disk_max_used: Some(85),
        ..b.settings()
    };
    let (_, s) = b.run(&fake, &settings);
    assert_eq!(
        fake.trace(),
        [
            "reclaim",
            "preflight a.tar",
            "import a.tar",
            "preflight b.tar (failed)"
        ]
    );
    let refused = result(&s, "b.tar");
    assert_eq!(
        (refused.status, refused.failure),
        (Status::Failed, Some(Kind::Disk))
    );
    assert_eq!(result(&s, "a.tar").status, Status::Imported);
}

#[test]
fn without_a_disk_limit_no_preflight_is_made() {
    let b = bench_of(2);
    let fake = FakeRuntime::new().staging();
    b.run(&fake, &b.settings());
    assert_eq!(fake.count(Op::Preflight, None), 0);
}
