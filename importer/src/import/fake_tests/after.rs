//! The import loop on the fake runtime: after the run, exit codes, the report.

#![cfg(test)]

use super::*;

#[test]
fn an_image_images_json_promises_that_is_absent_after_the_run_fails_the_run() {
    let b = bench_of(1);
    let size = std::fs::metadata(b.images().join("a.tar")).unwrap().len();
    b.index(vec![entry(
        "a.tar",
        size,
        vec![listed(APP, APP), listed(DB, "db")],
    )]);
    let fake = FakeRuntime::new();
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(statuses(&s), [Status::Imported]);
    assert_eq!(s.failed, 0);
    let missing: Vec<&str> = s.missing.iter().map(|m| m.image.as_str()).collect();
    assert_eq!(missing, [DB]);
    assert!(s.missing[0]
        .reason
        .contains("listed in images.json for a.tar"));
    assert_eq!(code, Code::Failure, "even without --strict");
}

#[test]
fn a_required_image_absent_after_the_run_is_missing_and_fails_the_run() {
    let b = bench_of(1);
    let settings = Settings {
        require: vec!["example.com/app:1".into(), "redis:7".into()],
        ..b.settings()
    };
    let (code, s) = b.run(&FakeRuntime::new(), &settings);
    let missing: Vec<&str> = s.missing.iter().map(|m| m.image.as_str()).collect();
    assert_eq!(missing, ["docker.io/library/redis:7"]);
    assert!(s.missing[0].reason.starts_with("required (--require)"));
    assert_eq!(code, Code::Failure);
}

#[test]
fn a_required_image_imported_by_the_run_is_not_missing() {
    let b = bench_of(1);
    let settings = Settings {
        require: vec![APP.into()],
        ..b.settings()
    };
    let (code, s) = b.run(&FakeRuntime::new(), &settings);
    assert!(s.missing.is_empty());
    assert_eq!(code, Code::Success);
}

#[test]
fn the_report_file_and_the_termination_message_hold_the_outcome() {
    let b = bench_of(2);
    b.sums(&["a.tar"], &["b.tar"]);
    std::fs::write(b.dir.join("termination-log"), b"").unwrap();
    let report = b.dir.join("report.json");
    let settings = Settings {
        report: Some(report.clone()),
        ..b.settings()
    };
    b.run(&FakeRuntime::new(), &settings);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        (json["imported"].as_u64(), json["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(json["archives"][0]["file"], "a.tar");
    assert_eq!(json["archives"][0]["names"][0], APP);
    assert_eq!(json["archives"][1]["status"], "failed");
    assert_eq!(json["archives"][1]["failure"], "archive");
    let message = std::fs::read_to_string(b.dir.join("termination-log")).unwrap();
    assert!(message.starts_with("summary: 1 imported"), "{message}");
    assert!(message.contains("\nb.tar: checksum mismatch"), "{message}");
}

#[test]
fn a_report_that_cannot_be_written_fails_the_run_after_the_imports() {
    let b = bench_of(1);
    let settings = Settings {
        report: Some(b.dir.join("no/such/dir/report.json")),
        ..b.settings()
    };
    let fake = FakeRuntime::new();
    let err = b.try_run(&fake, &settings).unwrap_err();
    assert_eq!(Code::from_error(&err), Code::Failure);
    assert!(fake.image(APP).is_some(), "imported before");
}

#[test]
fn what_an_earlier_run_left_is_reclaimed_once_before_the_first_archive() {
    let b = bench_of(2);
    let leftover = crate::runtime::Leftover::Removed("lease 7".into());
    let fake = FakeRuntime::new().with_leftovers(vec![leftover]).staging();
    b.run(&fake, &b.settings());
    let trace = fake.trace();
    assert_eq!(trace[0], "reclaim");
    assert_eq!(fake.count(Op::Reclaim, None), 1);
}

#[test]
fn a_failure_to_reclaim_is_no_failure_of_the_run() {
    let b = bench_of(1);
    let fake = FakeRuntime::new();
    fake.fail(Op::Reclaim, 1, Fault::Refused("permission denied".into()));
    let (code, s) = b.run(&fake, &b.settings());
    assert_eq!(
        (code, statuses(&s)),
        (Code::Success, vec![Status::Imported])
    );
}

#[test]
fn a_runtime_on_a_node_of_another_architecture_is_refused_before_anything_is_done() {
    let b = bench_of(1);
    let fake = FakeRuntime::new().on_architecture("riscv-other");
    let err = b.try_run(&fake, &b.settings()).unwrap_err();
    assert!(
        format!("{err:#}").contains("runs on linux/riscv-other"),
        "{err:#}"
    );
    assert_eq!(Code::from_error(&err), Code::Usage);
    assert!(fake.calls().is_empty());
}

#[test]
fn an_archive_with_no_image_for_this_platform_fails_and_names_what_it_has() {
    let b = Bench::new();
    let other = if Platform::host().architecture == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let config = format!(r#"{{"architecture":"{other}","os":"linux"}}"#);
    let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": [APP], "Layers": []}]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    b.put(
        "a.tar",
        &tar_of(&[("c.json", config.as_bytes()), ("manifest.json", &manifest)]),
    );
    let fake = FakeRuntime::new();
    let (_, s) = b.run(&fake, &b.settings());
    let a = result(&s, "a.tar");
    assert_eq!(a.status, Status::Failed);
    let reason = a.reason.as_deref().unwrap();
    assert!(
        reason.contains(&format!("it has: linux/{other}")),
        "{reason}"
    );
    assert!(fake.names().is_empty());
}

#[test]
fn the_archives_found_in_subdirectories_keep_their_relative_names() {
    let b = Bench::new();
    std::fs::create_dir(b.images().join("extra")).unwrap();
    b.put("extra/web.tar", &one(WEB, "web"));
    b.put("app.tar", &one(APP, "app"));
    b.put("cache.tar", &one(CACHE, "cache"));
    let (_, s) = b.run(&FakeRuntime::new(), &b.settings());
    assert_eq!(files(&s), ["app.tar", "cache.tar", "extra/web.tar"]);
    assert_eq!(s.imported, 3);
}
