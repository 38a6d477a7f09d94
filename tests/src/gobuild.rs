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

/// How to build a program.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BuildOptions {
    /// Extra `go build` flags, e.g. `-ldflags=-s -w` or `-buildmode=pie`.
    pub flags: Vec<String>,
    /// Extra environment, e.g. `CGO_ENABLED=0`.
    pub env: Vec<(String, String)>,
    /// Suffix for the output file name so variants do not overwrite each other.
    pub variant: String,
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
    let go = go_command();
    let mut cmd = Command::new(&go);
    cmd.current_dir(&src)
        .arg("build")
        .arg("-o")
        .arg(&out)
        .args(&opts.flags)
        .arg(".")
        .env("GOTOOLCHAIN", "local")
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
