//! A real SkyWalking collector on loopback, for end-to-end tests.
//!
//! [`Collector`] serves the agent-facing gRPC services at their `skywalking.v3.` paths
//! (`TraceSegmentReportService`, `ManagementService`, `MeterReportService`,
//! `LogReportService`) and records everything it receives in memory, in arrival order. Tests
//! wait on it with [`Collector::wait_for_segments`] or [`Collector::wait_for`], which wake on
//! every recorded message instead of polling.
//!
//! [`decode_with_official_stubs`] decodes serialized messages with the official Python stubs
//! (`apache-skywalking` on PyPI), so a test can prove that what skyhook sent is what upstream
//! reads.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use prost::Message as _;
use proto::sw;
use proto::sw::log_report_service_server::{LogReportService, LogReportServiceServer};
use proto::sw::management_service_server::{ManagementService, ManagementServiceServer};
use proto::sw::meter_report_service_server::{MeterReportService, MeterReportServiceServer};
use proto::sw::trace_segment_report_service_server::{
    TraceSegmentReportService, TraceSegmentReportServiceServer,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

/// How long [`Collector::shutdown`] lets open streams finish before aborting the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Metadata key carrying the agent's token when one is configured (skywalking-go sends it on
/// every RPC).
const AUTHENTICATION_KEY: &str = "authentication";

/// Everything the collector has received, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Segments from `TraceSegmentReportService/collect` and `collectInSync`.
    pub segments: Vec<sw::SegmentObject>,
    /// `ManagementService/reportInstanceProperties` requests.
    pub instance_properties: Vec<sw::InstanceProperties>,
    /// `ManagementService/keepAlive` requests.
    pub keep_alives: Vec<sw::InstancePingPkg>,
    /// Meter data from `MeterReportService/collect`, and flattened from `collectBatch`.
    pub meter_data: Vec<sw::MeterData>,
    /// `LogReportService/collect` messages.
    pub logs: Vec<sw::LogData>,
    /// How many `TraceSegmentReportService/collect` streams were opened.
    pub collect_streams: usize,
    /// How many `TraceSegmentReportService/collectInSync` calls were made.
    pub collect_in_sync_calls: usize,
    /// Every RPC (a stream counts once, when it opens), in arrival order.
    pub rpcs: Vec<RpcCall>,
    /// Client streams that ended with an error instead of a clean close.
    pub stream_errors: Vec<String>,
}

/// One RPC as seen by the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcCall {
    /// The gRPC path, e.g. `/skywalking.v3.ManagementService/keepAlive`.
    pub path: &'static str,
    /// The `Authentication` metadata value, if the client sent one.
    pub authentication: Option<String>,
}

impl Recorded {
    /// One line saying what has arrived, for timeout messages.
    fn summary(&self) -> String {
        let segments: Vec<String> = self
            .segments
            .iter()
            .map(|s| {
                let first_op = s
                    .spans
                    .first()
                    .map_or("<no spans>", |span| &span.operation_name);
                format!("{}:{first_op}", s.service)
            })
            .collect();
        format!(
            "{} segment(s) {segments:?} over {} collect stream(s) and {} collectInSync call(s), \
             {} instance properties, {} keepAlive(s), {} meter data, {} log(s), stream errors: {:?}",
            self.segments.len(),
            self.collect_streams,
            self.collect_in_sync_calls,
            self.instance_properties.len(),
            self.keep_alives.len(),
            self.meter_data.len(),
            self.logs.len(),
            self.stream_errors,
        )
    }
}

/// A SkyWalking collector serving on loopback in a background task.
///
/// Dropping it stops the server in the background; [`Collector::shutdown`] waits for that.
pub struct Collector {
    addr: SocketAddr,
    state: Arc<watch::Sender<Recorded>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Collector {
    /// Binds `127.0.0.1:0` and serves in a background tokio task.
    pub async fn start() -> anyhow::Result<Collector> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Binds `addr` and serves in a background tokio task.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Collector> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the collector to {addr}"))?;
        let addr = listener
            .local_addr()
            .context("reading the collector's bound address")?;

        let state = Arc::new(watch::Sender::new(Recorded::default()));
        let handler = Arc::new(Handler {
            state: Arc::clone(&state),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .add_service(TraceSegmentReportServiceServer::from_arc(Arc::clone(
                &handler,
            )))
            .add_service(ManagementServiceServer::from_arc(Arc::clone(&handler)))
            .add_service(MeterReportServiceServer::from_arc(Arc::clone(&handler)))
            .add_service(LogReportServiceServer::from_arc(handler));
        let server = tokio::spawn(router.serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async {
                // A send or a dropped sender both mean stop.
                let _ = stopped.await;
            },
        ));

        Ok(Collector {
            addr,
            state,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// The address the collector listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `http://` URI of the collector, for tonic clients.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of everything received so far.
    pub fn recorded(&self) -> Recorded {
        self.state.borrow().clone()
    }

    /// A receiver that is notified on every recorded message.
    pub fn watch(&self) -> watch::Receiver<Recorded> {
        self.state.subscribe()
    }

    /// Segments in arrival order.
    pub fn segments(&self) -> Vec<sw::SegmentObject> {
        self.state.borrow().segments.clone()
    }

    /// Each segment re-encoded with prost, in arrival order (for
    /// [`decode_with_official_stubs`]). Fields unknown to our proto would not survive this.
    pub fn segment_bytes(&self) -> Vec<Vec<u8>> {
        self.state
            .borrow()
            .segments
            .iter()
            .map(|s| s.encode_to_vec())
            .collect()
    }

    /// `reportInstanceProperties` requests in arrival order.
    pub fn instance_properties(&self) -> Vec<sw::InstanceProperties> {
        self.state.borrow().instance_properties.clone()
    }

    /// `keepAlive` requests in arrival order.
    pub fn keep_alives(&self) -> Vec<sw::InstancePingPkg> {
        self.state.borrow().keep_alives.clone()
    }

    /// How many `TraceSegmentReportService/collect` streams were opened; with batching, fewer
    /// than the number of segments.
    pub fn collect_streams(&self) -> usize {
        self.state.borrow().collect_streams
    }

    /// Waits until at least `n` segments have arrived and returns all of them.
    pub async fn wait_for_segments(
        &self,
        n: usize,
        deadline: Duration,
    ) -> anyhow::Result<Vec<sw::SegmentObject>> {
        self.wait_for(
            &format!("{n} segment(s)"),
            |r| r.segments.len() >= n,
            deadline,
        )
        .await?;
        Ok(self.segments())
    }

    /// Waits until `pred` holds for what has been recorded. `what` names the condition in the
    /// timeout error, which also says what did arrive.
    pub async fn wait_for<F: Fn(&Recorded) -> bool>(
        &self,
        what: &str,
        pred: F,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let mut rx = self.state.subscribe();
        let waited = tokio::time::timeout(deadline, async {
            // `wait_for` checks the current value first, then every change; the sender lives
            // in `self`, so it cannot close while we wait.
            rx.wait_for(|r| pred(r)).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_closed)) => bail!("collector stopped while waiting for {what}"),
            Err(_elapsed) => bail!(
                "timed out after {deadline:?} waiting for {what}; received {}",
                self.state.borrow().summary()
            ),
        }
    }

    /// Stops the server, letting open streams finish for a few seconds.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut server) = self.server.take() else {
            return;
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("collector on {}: server error: {e}", self.addr),
            Ok(Err(e)) => eprintln!("collector on {}: server task failed: {e}", self.addr),
            Err(_) => {
                eprintln!(
                    "collector on {}: streams still open after {SHUTDOWN_GRACE:?}, aborting",
                    self.addr
                );
                server.abort();
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The gRPC service implementations; all record into the shared state.
struct Handler {
    state: Arc<watch::Sender<Recorded>>,
}

impl Handler {
    fn record(&self, f: impl FnOnce(&mut Recorded)) {
        self.state.send_modify(f);
    }

    fn call(&self, path: &'static str, metadata: &MetadataMap, f: impl FnOnce(&mut Recorded)) {
        let authentication = metadata
            .get(AUTHENTICATION_KEY)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        self.record(|r| {
            r.rpcs.push(RpcCall {
                path,
                authentication,
            });
            f(r);
        });
    }

    /// Drains a client stream, recording each message as it arrives.
    async fn drain<T>(
        &self,
        path: &'static str,
        mut stream: Streaming<T>,
        mut each: impl FnMut(&mut Recorded, T),
    ) -> Result<Response<sw::Commands>, Status> {
        loop {
            match stream.message().await {
                Ok(Some(msg)) => self.record(|r| each(r, msg)),
                Ok(None) => return Ok(Response::new(sw::Commands::default())),
                Err(status) => {
                    self.record(|r| r.stream_errors.push(format!("{path}: {status}")));
                    return Err(status);
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TraceSegmentReportService for Handler {
    async fn collect(
        &self,
        request: Request<Streaming<sw::SegmentObject>>,
    ) -> Result<Response<sw::Commands>, Status> {
        const PATH: &str = "/skywalking.v3.TraceSegmentReportService/collect";
        self.call(PATH, request.metadata(), |r| r.collect_streams += 1);
        self.drain(PATH, request.into_inner(), |r, s| r.segments.push(s))
            .await
    }

    async fn collect_in_sync(
        &self,
        request: Request<sw::SegmentCollection>,
    ) -> Result<Response<sw::Commands>, Status> {
        const PATH: &str = "/skywalking.v3.TraceSegmentReportService/collectInSync";
        let (metadata, _, collection) = request.into_parts();
        self.call(PATH, &metadata, |r| {
            r.collect_in_sync_calls += 1;
            r.segments.extend(collection.segments);
        });
        Ok(Response::new(sw::Commands::default()))
    }
}

#[tonic::async_trait]
impl ManagementService for Handler {
    async fn report_instance_properties(
        &self,
        request: Request<sw::InstanceProperties>,
    ) -> Result<Response<sw::Commands>, Status> {
        const PATH: &str = "/skywalking.v3.ManagementService/reportInstanceProperties";
        let (metadata, _, properties) = request.into_parts();
        self.call(PATH, &metadata, |r| r.instance_properties.push(properties));
        Ok(Response::new(sw::Commands::default()))
    }

    async fn keep_alive(
        &self,
        request: Request<sw::InstancePingPkg>,
    ) -> Result<Response<sw::Commands>, Status> {
        const PATH: &str = "/skywalking.v3.ManagementService/keepAlive";
        let (metadata, _, ping) = request.into_parts();
        self.call(PATH, &metadata, |r| r.keep_alives.push(ping));
        Ok(Response::new(sw::Commands::default()))
    }
}

#[tonic::async_trait]
impl MeterReportService for Handler {
    async fn collect(
        &self,
        request: Request<Streaming<sw::MeterData>>,
    ) -> Result<Response<sw::Commands>, Status> {
        const PATH: &str = "/skywalking.v3.MeterReportService/collect";
        self.call(PATH, request.metadata(), |_| {});
        self.drain(PATH, request.into_inner(), |r, m| r.meter_data.push(m))
            .await
    }

    async fn collect_batch(
        &self,
        request: Request<Streaming<sw::MeterDataCollection>>,
    ) -> Result<Response<sw::Commands>, Status> {
        const PATH: &str = "/skywalking.v3.MeterReportService/collectBatch";
        self.call(PATH, request.metadata(), |_| {});
        self.drain(PATH, request.into_inner(), |r, batch| {
            r.meter_data.extend(batch.meter_data);
        })
        .await
    }
}

#[tonic::async_trait]
impl LogReportService for Handler {
    async fn collect(
        &self,
        request: Request<Streaming<sw::LogData>>,
    ) -> Result<Response<sw::Commands>, Status> {
        const PATH: &str = "/skywalking.v3.LogReportService/collect";
        self.call(PATH, request.metadata(), |_| {});
        self.drain(PATH, request.into_inner(), |r, l| r.logs.push(l))
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding with the official stubs.

/// What to run when the official stubs are missing.
pub const CONFORMANCE_SETUP: &str = "python3 -m venv .venv && \
     .venv/bin/pip install -r tests/conformance/requirements.txt";

/// The repository root (the parent of this crate's manifest directory).
pub fn repo_root() -> anyhow::Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("CARGO_MANIFEST_DIR has no parent directory")
}

/// Decodes serialized messages with the official SkyWalking Python stubs
/// (`tests/conformance/decode.py` in the repo's `.venv`).
///
/// `kind` is one of `segment`, `segment_collection`, `instance_properties`, `instance_ping`,
/// `meter_data`, `log_data`. Returns one JSON object per message, in order, as protobuf's
/// JSON mapping makes it: official camelCase names, enums by name, int64 values as strings,
/// and default values included. Fails if the venv is missing, or if a message does not parse
/// or carries fields the official schema does not know.
pub fn decode_with_official_stubs(
    kind: &str,
    messages: &[Vec<u8>],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let root = repo_root()?;
    let python = root.join(".venv/bin/python");
    let script = root.join("tests/conformance/decode.py");
    if !python.exists() {
        bail!(
            "the official SkyWalking stubs are not installed ({} is missing); from {} run: {}",
            python.display(),
            root.display(),
            CONFORMANCE_SETUP
        );
    }
    if messages.is_empty() {
        return Ok(Vec::new());
    }

    let dir = ScratchDir::new()?;
    let mut files = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let file = dir.path.join(format!("{kind}-{i:04}.bin"));
        std::fs::write(&file, message).with_context(|| format!("writing {}", file.display()))?;
        files.push(file);
    }

    let output = Command::new(&python)
        .arg(&script)
        .arg(kind)
        .args(&files)
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        bail!(
            "decode.py {kind} failed ({}): {}\n(if the stubs fail to import, from {} run: {})",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            root.display(),
            CONFORMANCE_SETUP
        );
    }

    let stdout = String::from_utf8(output.stdout).context("decode.py printed non-UTF-8")?;
    let decoded = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .with_context(|| format!("decode.py printed a line that is not JSON: {line}"))
        })
        .collect::<anyhow::Result<Vec<serde_json::Value>>>()?;
    if decoded.len() != messages.len() {
        bail!(
            "decode.py printed {} object(s) for {} message(s)",
            decoded.len(),
            messages.len()
        );
    }
    Ok(decoded)
}

/// A fresh temporary directory, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new() -> anyhow::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "skyhook-decode-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory left by an earlier process with the same pid is stale.
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
