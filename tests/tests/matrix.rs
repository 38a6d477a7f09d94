//! The compatibility matrix: the net/http fixture built with every Go minor release from 1.21
//! to 1.27 and in every build mode people ship (default, stripped, PIE, static, cgo). Each
//! cell is inspected (`skyhook inspect`) and traced, and must produce the same spans.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a panic showing the value is the clearest failure"
)]
use std::time::Duration;

use serde_json::Value;
use skyhook_tests::{
    gobuild::{self, BuildOptions},
    http::request,
    procs::{Agent, GoServer, skyhook_bin},
};

const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Default,
    Stripped,
    Pie,
    Static,
    Cgo,
}

const MODES: &[Mode] = &[
    Mode::Default,
    Mode::Stripped,
    Mode::Pie,
    Mode::Static,
    Mode::Cgo,
];

fn options(version: &str, mode: Mode) -> BuildOptions {
    let go = Some(gobuild::go_toolchain(version).unwrap());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let env = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(k, x)| (k.to_string(), x.to_string()))
            .collect::<Vec<_>>()
    };
    let (flags, env) = match mode {
        Mode::Default => (vec![], vec![]),
        Mode::Stripped => (s(&["-ldflags=-s -w"]), vec![]),
        Mode::Pie => (s(&["-buildmode=pie"]), vec![]),
        Mode::Static => (vec![], env(&[("CGO_ENABLED", "0")])),
        Mode::Cgo => (s(&["-tags=cgo_fixture"]), env(&[("CGO_ENABLED", "1")])),
    };
    BuildOptions {
        flags,
        env,
        variant: format!("go{version}-{mode:?}").to_lowercase(),
        go,
    }
}

/// `skyhook inspect --format json` of one binary.
fn inspect(path: &std::path::Path) -> Value {
    let out = std::process::Command::new(skyhook_bin().unwrap())
        .args(["inspect", "--format", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_inspect(v: &Value, version: &str, mode: Mode) {
    let cell = format!("go{version} {mode:?}");
    assert_eq!(v["goVersion"], format!("go{version}"), "{cell}");
    assert_eq!(v["arch"], "x86_64", "{cell}");
    let bm = &v["buildMode"];
    assert_eq!(bm["stripped"], mode == Mode::Stripped, "{cell}: {bm}");
    assert_eq!(bm["dwarf"], mode != Mode::Stripped, "{cell}: {bm}");
    assert_eq!(bm["pie"], mode == Mode::Pie, "{cell}: {bm}");
    if mode == Mode::Static {
        assert_eq!(bm["static"], true, "{cell}: {bm}");
    }
    if mode == Mode::Cgo {
        assert_eq!(bm["static"], false, "{cell}: {bm}");
    }
    let probe = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "net/http server")
        .unwrap_or_else(|| panic!("{cell}: no net/http server probe in {v}"));
    assert_eq!(probe["attachable"], true, "{cell}: {probe}");
    let (symbol_source, offsets_source) = if mode == Mode::Stripped {
        ("pclntab", "offsets-db")
    } else {
        ("symtab", "dwarf")
    };
    assert_eq!(probe["symbolSource"], symbol_source, "{cell}");
    assert!(
        !probe["returnOffsets"].as_array().unwrap().is_empty(),
        "{cell}"
    );
    for f in probe["fields"].as_array().unwrap() {
        assert!(f["offset"].is_u64(), "{cell}: field without offset: {f}");
        assert_eq!(f["source"], offsets_source, "{cell}: {f}");
    }
}

/// Spans reduced to what must be identical in every cell.
async fn traced_spans(exe: &std::path::Path) -> Vec<String> {
    let server = GoServer::start(exe, &[], &[]).await.unwrap();
    let agent = Agent::attach(&[server.pid()], &["--format", "json"])
        .await
        .unwrap();
    let requests = [
        ("GET", "/ok", None, 200),
        ("POST", "/items", Some(r#"{"name":"a"}"#), 201),
        ("GET", "/items/9", None, 404),
        ("GET", "/fail", None, 500),
        ("GET", "/deep?n=1000", None, 200),
    ];
    for (m, p, b, want) in requests {
        assert_eq!(request(&server.addr, m, p, b).await.unwrap().status, want);
    }
    agent
        .proc
        .stdout
        .wait_for("the /deep segment", |l| l.contains("GET:/deep"), WAIT)
        .await
        .unwrap();
    let stdout = agent.proc.stdout.clone();
    assert!(agent.stop().await.unwrap().success());
    let mut spans: Vec<String> = stdout
        .all()
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = &v["spans"][0];
            let tags: Vec<String> = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let k = t["key"].as_str().unwrap();
                    let v = t["value"].as_str().unwrap();
                    // The url tag carries the server's random port.
                    if k == "url" {
                        format!("url=…{}", &v[v.find('/').unwrap()..])
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            format!(
                "{} {} {} {} err={} {}",
                s["spanType"],
                s["spanLayer"],
                s["componentId"],
                s["operationName"],
                s["isError"],
                tags.join(",")
            )
        })
        .collect();
    spans.sort();
    spans
}

async fn cell_matrix(version: &str) {
    let mut reference: Option<Vec<String>> = None;
    for &mode in MODES {
        let exe =
            gobuild::build_with("tests/fixtures/httpserver", &options(version, mode)).unwrap();
        check_inspect(&inspect(&exe), version, mode);
        let spans = traced_spans(&exe).await;
        assert_eq!(spans.len(), 5, "go{version} {mode:?}: {spans:#?}");
        match &reference {
            None => reference = Some(spans),
            Some(r) => assert_eq!(
                &spans, r,
                "go{version} {mode:?} differs from the default build"
            ),
        }
    }
}

macro_rules! go_version_tests {
    ($($name:ident => $version:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                cell_matrix($version).await;
            }
        )*
        #[test]
        fn the_matrix_covers_every_published_minor_release() {
            assert_eq!(vec![$($version),*], gobuild::GO_VERSIONS);
        }
    };
}

go_version_tests! {
    go1_21 => "1.21.13",
    go1_22 => "1.22.10",
    go1_23 => "1.23.9",
    go1_24 => "1.24.11",
    go1_25 => "1.25.5",
    go1_26 => "1.26.6",
    go1_27 => "1.27.3",
}
