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

/// `skyhook inspect PATH`: its exit status, stdout and stderr lines.
fn inspect(path: &std::path::Path, format: &str) -> (bool, String, Vec<String>) {
    let out = std::process::Command::new(skyhook_bin().unwrap())
        .args(["inspect", "--format", format])
        .arg(path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn scratch(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = skyhook_tests::repo_root().unwrap().join("target/bad-input");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn fixture_bytes(opts: &gobuild::BuildOptions) -> Vec<u8> {
    std::fs::read(gobuild::build_with("tests/fixtures/httpserver", opts).unwrap()).unwrap()
}

#[test]
fn inspect_rejects_truncated_and_non_go_files_with_one_line() {
    let truncated = scratch("truncated", &fixture_bytes(&Default::default())[..100]);
    for (path, want) in [
        (truncated.as_path(), "truncated ELF file"),
        (std::path::Path::new("/bin/true"), "not a Go binary"),
        (
            std::path::Path::new("/nonexistent/skyhook"),
            "cannot read /nonexistent/skyhook",
        ),
    ] {
        let (ok, stdout, stderr) = inspect(path, "text");
        assert!(!ok, "{path:?}");
        assert!(stdout.is_empty());
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(
            stderr[0].starts_with("skyhook: error: ") && stderr[0].contains(want),
            "{stderr:?}"
        );
    }
}

#[test]
fn inspect_reports_a_corrupt_function_table_instead_of_guessing() {
    let stripped = gobuild::BuildOptions {
        flags: vec!["-ldflags=-s -w".into()],
        variant: "stripped".into(),
        ..Default::default()
    };
    let exe = gobuild::build_with("tests/fixtures/httpserver", &stripped).unwrap();
    let bin = gobin::GoBinary::open(&exe).unwrap();
    let header = bin.file_offset(bin.pclntab_info().unwrap().vaddr).unwrap() as usize;
    drop(bin);
    let mut bytes = std::fs::read(&exe).unwrap();
    // An unknown magic: the table must be refused, not read with a guessed layout.
    assert_eq!(bytes[header..header + 4], [0xf1, 0xff, 0xff, 0xff]);
    bytes[header] = 0xf7;
    let path = scratch("corrupt-pclntab", &bytes);
    let (ok, stdout, _) = inspect(&path, "json");
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let probe = &v["probes"][0];
    assert_eq!(probe["attachable"], false);
    let reason = probe["reason"].as_str().unwrap();
    assert!(reason.contains("function table is unreadable"), "{reason}");
}

/// Go before 1.17 passed arguments on the stack; the probes read registers. No toolchain that
/// old is published where this machine can fetch it, so the version strings of a current
/// build are rewritten (same length) to an old release.
#[tokio::test]
async fn a_go_older_than_the_register_abi_is_refused() {
    let mut bytes = fixture_bytes(&Default::default());
    let version = go_version_of(&bytes);
    let old = format!(
        "go1.16{}",
        &version[version.find('.').map(|i| i + 3).unwrap()..]
    );
    assert_eq!(old.len(), version.len(), "{version} -> {old}");
    let n = replace_all(&mut bytes, version.as_bytes(), old.as_bytes());
    assert!(n >= 1);
    let path = scratch("go116", &bytes);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let (ok, stdout, _) = inspect(&path, "json");
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["goVersion"], old);
    assert_eq!(v["probes"][0]["attachable"], false);
    assert!(
        v["probes"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("predates the register ABI")
    );

    // The same binary running: `skyhook run` refuses it with one line.
    let mut p = Proc::spawn(&path, &[], &[]).unwrap();
    p.stdout
        .wait_for("the server", |l| l.contains("listening on"), WAIT)
        .await
        .unwrap();
    let lines = run_fails(p.pid()).await;
    assert!(
        lines[0].contains(&format!("Go {old} predates the register ABI")),
        "{}",
        lines[0]
    );
    let _ = p.stop(libc::SIGTERM, WAIT).await;
}

fn go_version_of(bytes: &[u8]) -> String {
    let at = bytes.windows(4).position(|w| w == b"go1.").unwrap();
    let end = bytes[at..]
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'.'))
        .unwrap();
    String::from_utf8(bytes[at..at + end].to_vec()).unwrap()
}

fn replace_all(hay: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= hay.len() {
        if &hay[i..i + from.len()] == from {
            hay[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}
