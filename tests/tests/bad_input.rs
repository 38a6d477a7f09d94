//! Bad input gets one clear line on stderr and a non-zero exit, with nothing attached.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a panic showing the value is the clearest failure"
)]
use std::time::Duration;

use skyhook_tests::{
    gobuild,
    procs::{Proc, skyhook_bin},
};

const WAIT: Duration = Duration::from_secs(30);

/// Runs `skyhook run --pid PID` and returns its stderr lines, asserting a failed exit.
async fn run_fails(pid: u32) -> Vec<String> {
    let pid = pid.to_string();
    let mut p = Proc::spawn(
        &skyhook_bin().unwrap(),
        &["run", "--pid", &pid],
        &[("NO_COLOR", "1")],
    )
    .unwrap();
    let status = p.wait(WAIT).await.unwrap();
    assert!(!status.success(), "skyhook should fail for pid {pid}");
    // Let the output pumps finish.
    p.stderr
        .wait_for("the error line", |l| l.contains("error"), WAIT)
        .await
        .unwrap();
    let lines: Vec<String> = p
        .stderr
        .all()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one clear line expected, got: {lines:#?}");
    assert!(p.stdout.all().is_empty());
    lines
}

#[tokio::test]
async fn a_pid_that_does_not_exist() {
    let lines = run_fails(99_999_999).await;
    assert_eq!(lines[0], "skyhook: error: process 99999999 does not exist");
}

#[tokio::test]
async fn a_process_that_is_not_go() {
    let mut sleeper = Proc::spawn(std::path::Path::new("/bin/sleep"), &["60"], &[]).unwrap();
    let lines = run_fails(sleeper.pid()).await;
    let l = &lines[0];
    assert!(
        l.starts_with(&format!("skyhook: error: process {} (", sleeper.pid())),
        "{l}"
    );
    assert!(l.contains("is not a Go program"), "{l}");
    let _ = sleeper.stop(libc::SIGKILL, WAIT).await;
}

#[tokio::test]
async fn a_go_program_without_net_http() {
    let exe = gobuild::build("tests/fixtures/notnethttp").unwrap();
    let mut p = Proc::spawn(&exe, &[], &[]).unwrap();
    p.stdout
        .wait_for("the fixture to start", |l| l.contains("running"), WAIT)
        .await
        .unwrap();
    let lines = run_fails(p.pid()).await;
    assert!(
        lines[0].contains(
            "does not use net/http server: symbol net/http.serverHandler.ServeHTTP not found"
        ),
        "{}",
        lines[0]
    );
    let _ = p.stop(libc::SIGTERM, WAIT).await;
}
