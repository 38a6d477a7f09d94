//! The pipeline, wired in one place: discover → attach → collect → assemble → export.
//! Shutdown closes inputs in that order, so every stage drains what it holds.
use std::time::Duration;

use anyhow::Context as _;
use proto::sw::SegmentObject;
use tokio::{signal::unix::SignalKind, sync::mpsc};
use tracing::info;

use crate::{
    assemble::{self, Assembler, ProcessNames, Registry},
    collect::{self, CollectStats, Event},
    discover::{Naming, Target},
    export::{self, console::Format, grpc::GrpcReporter},
    probes::Probes,
};

/// Events waiting for the assemble stage (drop newest when full).
pub const EVENT_QUEUE: usize = 65_536;
/// Segments waiting for the export stage (assemble blocks when full).
pub const SEGMENT_QUEUE: usize = 4_096;
/// How often traced processes are checked for having exited.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Process to trace (repeatable).
    #[arg(long = "pid", required = true)]
    pub pids: Vec<u32>,
    /// SkyWalking OAP (or satellite) gRPC address, HOST:PORT. Without it, segments are
    /// printed on stdout.
    #[arg(long, env = "SW_AGENT_REPORTER_GRPC_BACKEND_SERVICE")]
    pub collector: Option<String>,
    /// Service name (default: the process's SW_AGENT_NAME, else its executable name).
    #[arg(long)]
    pub service: Option<String>,
    /// Instance name (default: HOSTNAME@PID).
    #[arg(long)]
    pub instance: Option<String>,
    /// Console format when no collector is given.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    // Take over SIGINT/SIGTERM before anything is attached, so that a signal at any moment
    // means "detach and flush", never a kill with probes half set up.
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let naming = Naming {
        service: args.service.clone(),
        instance: args.instance.clone(),
    };
    // Resolve every target before attaching anything: bad input stops us with nothing done.
    let targets = args
        .pids
        .iter()
        .map(|&pid| Target::from_pid(pid, &naming))
        .collect::<Result<Vec<_>, _>>()?;

    let mut probes = Probes::load()
        .context("loading eBPF programs (skyhook needs root or CAP_BPF+CAP_PERFMON)")?;
    let mut ring = probes.take_events()?;
    let registry: Registry = Default::default();
    for target in &targets {
        let attached = probes.attach(target)?;
        let names = ProcessNames {
            service: target.service.clone(),
            instance: target.instance.clone(),
            go_version: Some(attached.go_version.clone()),
        };
        info!(
            pid = target.pid,
            service = names.service,
            instance = names.instance,
            status_codes = attached.status_readable,
            probes = %attached.probes.join(", "),
            "tracing"
        );
        registry
            .write()
            .map_err(|_| anyhow::anyhow!("process registry poisoned"))?
            .insert(target.pid, names);
    }

    let (event_tx, event_rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let (segment_tx, segment_rx) = mpsc::channel::<SegmentObject>(SEGMENT_QUEUE);
    let assemble_task = tokio::spawn(assemble::run(
        Assembler::new(registry.clone()),
        event_rx,
        segment_tx,
    ));
    let export_task = match &args.collector {
        Some(addr) => {
            let reporter = GrpcReporter::new(addr, registry.clone())?;
            info!(collector = addr, "reporting to SkyWalking");
            tokio::spawn(async move {
                let s = reporter.run(segment_rx).await;
                info!(
                    received = s.received,
                    sent = s.sent,
                    dropped = s.dropped,
                    "reporter finished"
                );
            })
        }
        None => {
            let format = args.format;
            tokio::spawn(async move {
                export::run_console(segment_rx, format).await;
            })
        }
    };

    let mut drain = tokio::time::interval(collect::DRAIN_INTERVAL);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut liveness = tokio::time::interval(LIVENESS_INTERVAL);
    let mut stats = CollectStats::default();
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("interrupted; flushing"); break; }
            _ = sigterm.recv() => { info!("terminated; flushing"); break; }
            _ = drain.tick() => { collect::drain(&mut ring, &event_tx, &mut stats); }
            _ = liveness.tick() => {
                for target in &targets {
                    if probes.attached_pids().contains(&target.pid) && !target.is_alive() {
                        info!(pid = target.pid, "process exited; detaching");
                        collect::drain(&mut ring, &event_tx, &mut stats);
                        probes.detach(target.pid);
                    }
                }
                if probes.attached_pids().is_empty() {
                    info!("no traced process is left; stopping");
                    break;
                }
            }
        }
    }
    // Detach first, then take what the programs wrote before detaching: only requests
    // whose return was seen are in the ring, so nothing half-done is reported.
    probes.detach_all();
    collect::drain(&mut ring, &event_tx, &mut stats);
    drop(event_tx);
    let assembled = assemble_task.await.context("assemble stage")?;
    info!(
        unknown_process = assembled.unknown_process,
        late_exits = assembled.late_exits,
        orphaned_exits = assembled.orphaned_exits,
        dropped_exits = assembled.dropped_exits,
        "assembled"
    );
    export_task.await.context("export stage")?;
    info!(
        records = stats.records,
        malformed = stats.malformed,
        dropped = stats.dropped_full,
        "stopped"
    );
    Ok(())
}
