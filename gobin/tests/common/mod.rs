//! Real Go binaries, built once per test binary with the machine's `go`.
//!
//! Tests fail (never skip) when `go` is missing or a build fails.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The module path written into go.mod; `BuildInfo::main_path` must report it.
pub const MODULE: &str = "example.com/skyhook/hello";

/// A net/http hello server: the program every gobin test builds.
pub const PROGRAM: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s", r.Method, r.URL.Path)
	})
	if len(os.Args) > 1 {
		_ = http.ListenAndServe(os.Args[1], nil)
	}
}
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Default,
    Stripped,
    Pie,
    Static,
    Arm64,
    /// DWARF written without SHF_COMPRESSED.
    UncompressedDwarf,
    /// 32-bit ELF, an architecture without RET decoding.
    I386,
}

impl Variant {
    const ALL: [Variant; 7] = [
        Variant::Default,
        Variant::Stripped,
        Variant::Pie,
        Variant::Static,
        Variant::Arm64,
        Variant::UncompressedDwarf,
        Variant::I386,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|v| *v == self).unwrap()
    }

    fn file_name(self) -> &'static str {
        match self {
            Variant::Default => "hello-default",
            Variant::Stripped => "hello-stripped",
            Variant::Pie => "hello-pie",
            Variant::Static => "hello-static",
            Variant::Arm64 => "hello-arm64",
            Variant::UncompressedDwarf => "hello-uncompressed",
            Variant::I386 => "hello-386",
        }
    }
}

/// The `go` to use: `$GO`, else `/usr/local/go/bin/go` if present, else `go` on PATH.
pub fn go_bin() -> PathBuf {
    if let Some(go) = std::env::var_os("GO") {
        return go.into();
    }
    let local = Path::new("/usr/local/go/bin/go");
    if local.exists() {
        local.to_owned()
    } else {
        PathBuf::from("go")
    }
}

/// Scratch space inside cargo's target dir, one per test binary.
pub fn scratch() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gobin-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `go` command with an environment that works as root and in CI: no toolchain
/// download, no workspace, caches under the target dir unless the caller set them.
pub fn go_command() -> Command {
    let mut cmd = Command::new(go_bin());
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", tmp);
    }
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", tmp.join("gocache"));
    }
    if std::env::var_os("GOMODCACHE").is_none() && std::env::var_os("GOPATH").is_none() {
        cmd.env("GOPATH", tmp.join("gopath"));
    }
    cmd.env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("GOPROXY", "off")
        .env_remove("GOOS")
        .env_remove("GOARCH")
        .env_remove("CGO_ENABLED");
    cmd
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is Go installed? set $GO)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `go env <var>` in the build environment.
pub fn go_env(var: &str) -> String {
    run(go_command().args(["env", var])).trim().to_owned()
}

fn module_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("hello");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.go"), PROGRAM).unwrap();
        run(go_command().current_dir(&dir).args(["mod", "init", MODULE]));
        dir
    })
}

/// The binary for `variant`, built on first use.
pub fn fixture(variant: Variant) -> &'static Path {
    static BUILT: [OnceLock<PathBuf>; Variant::ALL.len()] =
        [const { OnceLock::new() }; Variant::ALL.len()];
    BUILT[variant.index()].get_or_init(|| {
        let dir = module_dir();
        let out = dir.join(variant.file_name());
        let mut cmd = go_command();
        cmd.current_dir(dir).args(["build", "-o"]).arg(&out);
        match variant {
            Variant::Default => {}
            Variant::Stripped => {
                cmd.arg("-ldflags=-s -w");
            }
            Variant::Pie => {
                cmd.arg("-buildmode=pie");
            }
            Variant::Static => {
                cmd.env("CGO_ENABLED", "0");
            }
            Variant::Arm64 => {
                cmd.env("GOARCH", "arm64");
            }
            Variant::UncompressedDwarf => {
                cmd.arg("-ldflags=-compressdwarf=false");
            }
            Variant::I386 => {
                cmd.env("GOARCH", "386").env("CGO_ENABLED", "0");
            }
        }
        cmd.arg(".");
        run(&mut cmd);
        out
    })
}
