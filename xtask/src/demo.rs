//! `cargo xtask demo`: the shop example, traced by skyhook with no change to its code.
use std::time::Duration;

use anyhow::{Context as _, bail};
use skyhook_tests::{
    gobuild,
    procs::{GoServer, Proc, skyhook_bin},
};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// SkyWalking OAP gRPC address (HOST:PORT); without it traces print on the console.
    #[arg(long)]
    collector: Option<String>,
    /// Console format: text or json.
    #[arg(long, default_value = "text")]
    format: String,
    /// Rounds of traffic (each round: six requests over the shop's routes).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::require_root("the demo")?;
    eprintln!("demo: building skyhook and the example services");
    crate::build_agent()?;
    let shop = gobuild::build("examples/shop")?;
    let traffic = gobuild::build("examples/traffic")?;
    let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
    rt.block_on(demo(args, &shop, &traffic))
}

async fn demo(
    args: DemoArgs,
    shop: &std::path::Path,
    traffic: &std::path::Path,
) -> anyhow::Result<()> {
    let server = GoServer::start(
        shop,
        &["-addr", "127.0.0.1:0"],
        &[("SW_AGENT_NAME", "shop")],
    )
    .await?;
    eprintln!(
        "demo: shop is pid {} on {} (no tracing code in it)",
        server.pid(),
        server.addr
    );

    let pid = server.pid().to_string();
    let mut agent_args = vec!["run", "--pid", &pid];
    match &args.collector {
        Some(c) => agent_args.extend(["--collector", c.as_str()]),
        None => agent_args.extend(["--format", args.format.as_str()]),
    }
    let agent = Proc::spawn(&skyhook_bin()?, &agent_args, &[("NO_COLOR", "1")])?;
    agent
        .stderr
        .wait_for(
            "skyhook to attach",
            |l| l.contains(" tracing") || l.contains("error"),
            Duration::from_secs(30),
        )
        .await?;
    if let Some(e) = agent.stderr.all().iter().find(|l| l.contains("error")) {
        bail!("skyhook could not attach: {e}");
    }
    eprintln!("demo: skyhook attached; driving traffic\n");

    let base = format!("http://{}", server.addr);
    let rounds = args.rounds.to_string();
    let mut t = Proc::spawn(
        traffic,
        &["-url", &base, "-n", &rounds, "-interval", "100ms"],
        &[],
    )?;
    let status = t.wait(Duration::from_secs(120)).await?;
    for line in t.stdout.all() {
        eprintln!("  traffic: {line}");
    }
    if !status.success() {
        bail!("traffic generator failed: {}", t.stderr.text());
    }

    // SIGINT makes skyhook flush what it holds, then exit.
    let mut agent = agent;
    let status = agent.stop(libc::SIGINT, Duration::from_secs(20)).await?;
    let mut server = server;
    let _ = server
        .proc
        .stop(libc::SIGTERM, Duration::from_secs(10))
        .await;
    println!();
    for line in agent.stdout.all() {
        println!("{line}");
    }
    if !status.success() {
        bail!("skyhook exited with {status}:\n{}", agent.stderr.text());
    }
    let spans = agent
        .stdout
        .all()
        .iter()
        .filter(|l| l.starts_with("segment ") || l.starts_with('{'))
        .count();
    match &args.collector {
        Some(c) => eprintln!("\ndemo: segments were sent to {c}"),
        None => eprintln!("\ndemo: {spans} traces printed above, one per request"),
    }
    Ok(())
}
