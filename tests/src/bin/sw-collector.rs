//! Runs the loopback SkyWalking collector for manual runs and prints what it receives, one
//! line per message.
//!
//! Usage: `sw-collector [--listen ADDR]` (default `127.0.0.1:11800`, the OAP's gRPC port).

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use skyhook_tests::Collector;

const DEFAULT_LISTEN: &str = "127.0.0.1:11800";

fn parse_args() -> anyhow::Result<SocketAddr> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen needs an ADDR")?,
            "-h" | "--help" => {
                println!("usage: sw-collector [--listen ADDR]  (default {DEFAULT_LISTEN})");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; usage: sw-collector [--listen ADDR]"),
        }
    }
    listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an IP:PORT address"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = parse_args()?;
    let collector = Collector::start_on(listen).await?;
    eprintln!("sw-collector listening on {}", collector.addr());

    let mut rx = collector.watch();
    let (mut segments, mut properties, mut pings) = (0, 0, 0);
    // The sender lives in `collector`, so this only ends if the process does.
    while rx.changed().await.is_ok() {
        let recorded = rx.borrow_and_update();
        for segment in &recorded.segments[segments..] {
            println!("segment {segment:?}");
        }
        for props in &recorded.instance_properties[properties..] {
            println!("instance_properties {props:?}");
        }
        for ping in &recorded.keep_alives[pings..] {
            println!("keep_alive {ping:?}");
        }
        segments = recorded.segments.len();
        properties = recorded.instance_properties.len();
        pings = recorded.keep_alives.len();
    }
    Ok(())
}
