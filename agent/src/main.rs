//! skyhook: traces Go services with eBPF uprobes and reports SkyWalking segments.
mod assemble;
mod collect;
mod discover;
mod export;
mod inspect;
mod probes;
mod run;

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "skyhook",
    version,
    about = "Zero-code tracing of Go services for Apache SkyWalking"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach to running Go processes and report their requests.
    Run(run::RunArgs),
    /// Show what skyhook knows about a Go binary (version, build mode, probe sites and the
    /// offsets they need) without attaching to anything.
    Inspect(inspect::InspectArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKYHOOK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Inspect(args) => inspect::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes.
            eprintln!("skyhook: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
