//! `skyhook inspect` against independent ground truth: Go's own `go tool nm` for symbol
//! addresses and the instruction bytes at every reported RET site, for amd64 and arm64,
//! with and without symbols.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a panic showing the value is the clearest failure"
)]
use std::{path::Path, process::Command};

use serde_json::Value;
use skyhook_tests::{
    gobuild::{self, BuildOptions},
    procs::skyhook_bin,
};

const SYMBOL: &str = "net/http.serverHandler.ServeHTTP";

fn build(arch: &str, stripped: bool) -> std::path::PathBuf {
    let mut opts = BuildOptions {
        env: vec![
            ("GOARCH".into(), arch.into()),
            ("CGO_ENABLED".into(), "0".into()),
        ],
        variant: format!("{arch}{}", if stripped { "-stripped" } else { "" }),
        ..Default::default()
    };
    if stripped {
        opts.flags.push("-ldflags=-s -w".into());
    }
    gobuild::build_with("tests/fixtures/httpserver", &opts).unwrap()
}

fn inspect(path: &Path) -> Value {
    let out = Command::new(skyhook_bin().unwrap())
        .args(["inspect", "--format", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The address `go tool nm` gives for `symbol`.
fn nm_address(path: &Path, symbol: &str) -> u64 {
    let out = Command::new(gobuild::go_command())
        .args(["tool", "nm"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(symbol))
        .unwrap_or_else(|| panic!("{symbol} not in go tool nm output"));
    u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
}

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn check(arch: &str, want_arch: &str, is_ret: fn(&[u8]) -> bool) {
    let full = build(arch, false);
    let stripped = build(arch, true);
    let truth = nm_address(&full, SYMBOL);
    for (path, source) in [(&full, "symtab"), (&stripped, "pclntab")] {
        let v = inspect(path);
        assert_eq!(v["arch"], want_arch);
        let p = &v["probes"][0];
        assert_eq!(p["symbol"], SYMBOL);
        assert_eq!(p["symbolSource"], source, "{path:?}");
        assert_eq!(
            hex(&p["address"]),
            truth,
            "{path:?}: address differs from go tool nm"
        );
        let bytes = std::fs::read(path).unwrap();
        let rets = p["returnOffsets"].as_array().unwrap();
        assert!(!rets.is_empty());
        for r in rets {
            let at = hex(r) as usize;
            assert!(
                is_ret(&bytes[at..]),
                "{path:?}: no RET at file offset {at:#x}"
            );
        }
        for f in p["fields"].as_array().unwrap() {
            assert!(f["offset"].is_u64(), "{path:?}: {f}");
        }
    }
}

#[test]
fn amd64_symbols_and_ret_sites_match_ground_truth() {
    check("amd64", "x86_64", |b| b[0] == 0xc3 || b[0] == 0xc2);
}

#[test]
fn arm64_binaries_are_parsed_too() {
    check("arm64", "aarch64", |b| {
        u32::from_le_bytes(b[..4].try_into().unwrap()) & 0xffff_fc1f == 0xd65f_0000
    });
    // Parsed, but this x86_64 agent cannot trace it, and says so.
    let v = inspect(&build("arm64", false));
    assert_eq!(v["probes"][0]["attachable"], false);
    assert_eq!(
        v["probes"][0]["reason"],
        "built for aarch64; this agent traces x86_64 programs"
    );
}
