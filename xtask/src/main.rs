//! Developer and operator tasks: `cargo xtask test | demo | bench | offsets`.
mod bench;
mod demo;
mod offsets;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Lint, build and run every test: unit, eBPF end-to-end and conformance (needs root).
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Build the example shop service, trace it, drive a little traffic, print the traces.
    Demo(demo::DemoArgs),
    /// Measure the traced against the untraced fixture server under closed-loop load.
    Bench(bench::BenchArgs),
    /// Regenerate (or --check) gobin/offsets/go.tsv, the struct offsets of every Go release.
    Offsets(offsets::OffsetsArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Test { no_lint, rest } => test(no_lint, &rest),
        Task::Demo(args) => demo::run(args),
        Task::Bench(args) => bench::run(args),
        Task::Offsets(args) => offsets::run(args),
    }
}

/// Runs a command, failing with its name when it fails.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the agent binary (`target/release/skyhook`), eBPF programs included. Cargo's
/// output is shown only when the build fails: aya-build relays the whole eBPF build log as
/// warnings on every build.
pub fn build_agent() -> anyhow::Result<()> {
    eprintln!("xtask: building skyhook (the first build takes a few minutes)");
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", "agent"]);
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(())
}

pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} loads eBPF programs into the kernel: run it as root");
    }
    Ok(())
}

fn test(no_lint: bool, rest: &[String]) -> anyhow::Result<()> {
    require_root("the test suite")?;
    if !no_lint {
        run_cmd(cargo().args(["fmt", "--all", "--check"]))?;
        run_cmd(cargo().args([
            "clippy",
            "--release",
            "--quiet",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    build_agent()?;
    run_cmd(
        cargo()
            .args(["test", "--release", "--workspace"])
            .arg("--")
            .args(rest),
    )
}
