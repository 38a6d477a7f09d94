//! Export: finished segments leave the agent, to a SkyWalking collector over gRPC or, when
//! none is given, to the console.
pub mod console;
pub mod grpc;

use std::io::Write as _;

use proto::sw::SegmentObject;
use tokio::sync::mpsc;
use tracing::warn;

/// The console exporter loop: one segment per write, flushed so a reader sees it at once.
pub async fn run_console(mut input: mpsc::Receiver<SegmentObject>, format: console::Format) -> u64 {
    let mut written = 0;
    while let Some(seg) = input.recv().await {
        let mut out = std::io::stdout().lock();
        if let Err(e) = console::write_segment(&mut out, &seg, format).and_then(|_| out.flush()) {
            warn!(error = %e, "writing to stdout failed; stopping console output");
            break;
        }
        written += 1;
    }
    written
}
