//! The SkyWalking gRPC reporter: segments are batched and streamed to
//! `TraceSegmentReportService/collect` (one client stream per batch, like SkyWalking's own
//! agents), and every traced instance is announced and kept alive over `ManagementService`.
//!
//! Bounded: at most [`MAX_PENDING`] segments wait while the collector is unreachable; past
//! that the oldest are dropped and counted.
use std::{collections::VecDeque, time::Duration};

use bytes::{Buf as _, BufMut as _, Bytes};
use prost::Message as _;
use proto::sw::{
    Commands, InstancePingPkg, InstanceProperties, KeyStringValuePair, SegmentObject,
    management_service_client::ManagementServiceClient,
};
use tokio::{sync::mpsc, time::Instant};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint},
};
use tracing::{info, warn};

use crate::assemble::{ProcessNames, Registry};

/// Segments per `collect` stream.
pub const MAX_BATCH: usize = 500;
/// How long a partial batch may wait before it is sent.
pub const BATCH_DELAY: Duration = Duration::from_millis(200);
/// Segments kept while the collector is unreachable (drop oldest past this).
pub const MAX_PENDING: usize = 20_000;
/// Encoded bytes kept while the collector is unreachable (drop oldest past this).
pub const MAX_PENDING_BYTES: usize = 32 << 20;
const COLLECT_PATH: &str = "/skywalking.v3.TraceSegmentReportService/collect";
/// `keepAlive` period, as SkyWalking's Go agent (`check_interval`).
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// How long shutdown waits for the last segments to be delivered.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(5);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone, Copy)]
pub struct ReporterStats {
    pub received: u64,
    pub sent: u64,
    pub dropped: u64,
}

pub struct GrpcReporter {
    /// Segments are encoded once when they arrive; retries resend the same bytes.
    segments: tonic::client::Grpc<Channel>,
    management: ManagementServiceClient<Channel>,
    registry: Registry,
    target: String,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    stats: ReporterStats,
    /// Instances announced on the current connection.
    announced: Vec<u32>,
    healthy: bool,
    backoff: Duration,
    retry_at: Instant,
}

impl GrpcReporter {
    /// Connects lazily: a collector that is down at start is retried, not fatal.
    pub fn new(collector: &str, registry: Registry) -> anyhow::Result<GrpcReporter> {
        let uri = if collector.contains("://") {
            collector.to_string()
        } else {
            format!("http://{collector}")
        };
        let channel = Endpoint::from_shared(uri.clone())
            .map_err(|e| anyhow::anyhow!("invalid collector address {collector:?}: {e}"))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(RPC_TIMEOUT)
            .connect_lazy();
        Ok(GrpcReporter {
            segments: tonic::client::Grpc::new(channel.clone()),
            management: ManagementServiceClient::new(channel),
            registry,
            target: uri,
            pending: VecDeque::new(),
            pending_bytes: 0,
            stats: ReporterStats::default(),
            announced: Vec::new(),
            healthy: true,
            backoff: BACKOFF_MIN,
            retry_at: Instant::now(),
        })
    }

    fn push(&mut self, seg: SegmentObject) {
        self.stats.received += 1;
        let encoded = Bytes::from(seg.encode_to_vec());
        while !self.pending.is_empty()
            && (self.pending.len() >= MAX_PENDING
                || self.pending_bytes + encoded.len() > MAX_PENDING_BYTES)
        {
            if let Some(old) = self.pending.pop_front() {
                self.pending_bytes -= old.len();
            }
            self.stats.dropped += 1;
            if self.stats.dropped.is_power_of_two() {
                warn!(
                    dropped = self.stats.dropped,
                    max_pending = MAX_PENDING,
                    max_pending_bytes = MAX_PENDING_BYTES,
                    "collector is behind: dropping oldest segments"
                );
            }
        }
        self.pending_bytes += encoded.len();
        self.pending.push_back(encoded);
    }

    fn failed(&mut self, what: &str, err: &tonic::Status) {
        if self.healthy {
            warn!(collector = %self.target, code = ?err.code(), error = %err.message(), "{what} failed; retrying with backoff");
        }
        self.healthy = false;
        self.announced.clear();
        // Jitter keeps a fleet of agents from reconnecting in step.
        let jitter = rand::random_range(0.5..1.0);
        self.retry_at = Instant::now() + self.backoff.mul_f64(jitter);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn recovered(&mut self) {
        if !self.healthy {
            info!(collector = %self.target, "collector reachable again");
        }
        self.healthy = true;
        self.backoff = BACKOFF_MIN;
    }

    /// Announces instances not yet announced on this connection. False when the collector
    /// failed.
    async fn announce(&mut self) -> bool {
        let names: Vec<(u32, ProcessNames)> = match self.registry.read() {
            Ok(r) => r.iter().map(|(p, n)| (*p, n.clone())).collect(),
            Err(_) => return true,
        };
        for (pid, n) in names {
            if self.announced.contains(&pid) {
                continue;
            }
            let req = instance_properties(pid, &n);
            match self.management.report_instance_properties(req).await {
                Ok(_) => self.announced.push(pid),
                Err(e) => {
                    self.failed("reportInstanceProperties", &e);
                    return false;
                }
            }
        }
        self.announced
            .retain(|pid| names_contains(&self.registry, *pid));
        true
    }

    async fn keep_alive(&mut self) {
        let names: Vec<ProcessNames> = match self.registry.read() {
            Ok(r) => r.values().cloned().collect(),
            Err(_) => return,
        };
        for n in names {
            let ping = InstancePingPkg {
                service: n.service,
                service_instance: n.instance,
                layer: String::new(),
            };
            if let Err(e) = self.management.keep_alive(ping).await {
                self.failed("keepAlive", &e);
                return;
            }
        }
    }

    /// Sends up to one batch. Returns false when the collector failed.
    async fn send_batch(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let n = self.pending.len().min(MAX_BATCH);
        // Cloning `Bytes` only counts references: a failed batch is still pending as it was.
        let batch: Vec<Bytes> = self.pending.iter().take(n).cloned().collect();
        match self.collect(batch).await {
            Ok(()) => {
                for b in self.pending.drain(..n) {
                    self.pending_bytes -= b.len();
                }
                self.stats.sent += n as u64;
                self.recovered();
                true
            }
            Err(e) => {
                self.failed("collect", &e);
                false
            }
        }
    }

    /// One `collect` client stream carrying already-encoded SegmentObjects.
    async fn collect(&mut self, batch: Vec<Bytes>) -> Result<(), Status> {
        self.segments
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("collector not ready: {e}")))?;
        let request = tonic::Request::new(tokio_stream::iter(batch));
        self.segments
            .client_streaming(
                request,
                PathAndQuery::from_static(COLLECT_PATH),
                EncodedCodec,
            )
            .await
            .map(|_| ())
    }

    async fn flush(&mut self) {
        if Instant::now() < self.retry_at {
            return;
        }
        if !self.announce().await {
            return;
        }
        while !self.pending.is_empty() {
            if !self.send_batch().await {
                break;
            }
        }
    }

    /// The export loop: ends when the input closes and the last segments are delivered or
    /// the flush deadline passes.
    pub async fn run(mut self, mut input: mpsc::Receiver<SegmentObject>) -> ReporterStats {
        let mut tick = tokio::time::interval(BATCH_DELAY);
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        loop {
            tokio::select! {
                seg = input.recv() => match seg {
                    Some(seg) => {
                        self.push(seg);
                        if self.pending.len() >= MAX_BATCH {
                            self.flush().await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.flush().await,
                _ = keep_alive.tick() => {
                    if Instant::now() >= self.retry_at {
                        self.keep_alive().await;
                    }
                }
            }
        }
        // Shutdown: one more try regardless of backoff, bounded by the deadline.
        let deadline = Instant::now() + FLUSH_DEADLINE;
        self.retry_at = Instant::now();
        while !self.pending.is_empty() && Instant::now() < deadline {
            let left = deadline - Instant::now();
            match tokio::time::timeout(left, self.send_batch()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
        self.stats.dropped += self.pending.len() as u64;
        self.pending_bytes = 0;
        if !self.pending.is_empty() {
            warn!(
                lost = self.pending.len(),
                "collector unreachable at shutdown: segments not delivered"
            );
        }
        self.stats
    }
}

fn names_contains(registry: &Registry, pid: u32) -> bool {
    registry
        .read()
        .map(|r| r.contains_key(&pid))
        .unwrap_or(false)
}

fn kv(key: &str, value: impl Into<String>) -> KeyStringValuePair {
    KeyStringValuePair {
        key: key.to_string(),
        value: value.into(),
    }
}

/// The properties SkyWalking's Go agent reports, for the traced process (not the agent).
fn instance_properties(pid: u32, n: &ProcessNames) -> InstanceProperties {
    let mut properties = vec![
        kv("Process No.", pid.to_string()),
        kv("hostname", crate::discover::hostname()),
        kv("language", "go"),
        kv("OS Name", std::env::consts::OS),
        kv("skyhook version", env!("CARGO_PKG_VERSION")),
        kv("probe mode", "ebpf"),
    ];
    if let Some(go) = &n.go_version {
        properties.push(kv("Go version", go.clone()));
    }
    for ip in local_ipv4s() {
        properties.push(kv("ipv4", ip));
    }
    InstanceProperties {
        service: n.service.clone(),
        service_instance: n.instance.clone(),
        properties,
        layer: String::new(),
    }
}

fn local_ipv4s() -> Vec<String> {
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip().to_string()))
                .filter(|ip| ip != "127.0.0.1")
                .collect()
        })
        .unwrap_or_default()
}

/// A gRPC codec whose requests are messages encoded beforehand and whose response is
/// SkyWalking's `Commands`.
#[derive(Clone, Copy, Debug, Default)]
struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = Commands;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for EncodedCodec {
    type Item = Commands;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Commands>, Status> {
        let commands = Commands::decode(src.copy_to_bytes(src.remaining()))
            .map_err(|e| Status::internal(format!("decoding Commands: {e}")))?;
        Ok(Some(commands))
    }
}
