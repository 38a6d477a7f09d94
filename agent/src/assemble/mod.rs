//! Assemble: typed events become SkyWalking spans and segments, following skywalking-go's
//! conventions so that the OAP analyses them like SDK-made ones.
//!
//! A server request is one segment: its Entry span and the Exit spans of every call made
//! while serving it, from the handler goroutine or any goroutine it started. Exits usually
//! finish before their request does and wait here for it; an exit that finishes after its
//! request was reported joins the same trace as a segment of its own, referring to the
//! request's segment (CrossThread), the way SkyWalking's agents report async work.
pub mod clock;
pub mod ids;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use proto::sw::{
    KeyStringValuePair, Log, RefType, SegmentObject, SegmentReference, SpanLayer, SpanObject,
    SpanType,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::collect::{Event, HttpEvent, HttpSide};
use clock::WallClock;
use ids::IdGenerator;

/// Component ids from the OAP's `component-libraries.yml`.
pub mod component {
    pub const GO_HTTP_SERVER: i32 = 5004;
    pub const GO_HTTP_CLIENT: i32 = 5005;
}

/// Requests whose exits wait for their entry span at once; past this the oldest is flushed.
pub const MAX_OPEN_REQUESTS: usize = 10_000;
/// Exit spans kept for one request; more are counted and dropped.
pub const MAX_EXITS_PER_REQUEST: usize = 256;
/// How long exits wait for their request to finish before they are reported on their own.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Reported requests remembered for late exits.
pub const MAX_DONE: usize = 10_000;
/// How long a request that panicked waits for its normal record (the handler recovered)
/// before it is reported as failed.
pub const PANIC_GRACE: Duration = Duration::from_secs(5);
/// Panicked requests held at once; past this the oldest is reported.
pub const MAX_HELD_PANICS: usize = 1_000;

/// The names a traced process reports under.
#[derive(Clone, Debug)]
pub struct ProcessNames {
    pub service: String,
    pub instance: String,
    /// The Go release the process was built with, when known.
    pub go_version: Option<String>,
}

/// pid → names, written by the attach side, read here.
pub type Registry = Arc<RwLock<HashMap<u32, ProcessNames>>>;

type RequestKey = (u32, u64);

struct OpenRequest {
    exits: Vec<HttpEvent>,
    since: Instant,
}

/// A reported request, for exits that finish after it.
#[derive(Clone)]
struct Reported {
    trace_id: String,
    segment_id: String,
    endpoint: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct AssembleStats {
    /// Events whose process is not (or no longer) registered.
    pub unknown_process: u64,
    /// Exit spans dropped because their request had too many.
    pub dropped_exits: u64,
    /// Exits reported without their request (it never finished, or was evicted).
    pub orphaned_exits: u64,
    /// Exits that finished after their request and were reported as a linked segment.
    pub late_exits: u64,
}

pub struct Assembler {
    registry: Registry,
    clock: WallClock,
    ids: IdGenerator,
    open: HashMap<RequestKey, OpenRequest>,
    open_order: VecDeque<RequestKey>,
    done: HashMap<RequestKey, Reported>,
    done_order: VecDeque<RequestKey>,
    /// Copies of requests taken when their handler panicked, waiting for the normal record.
    panics: HashMap<RequestKey, (HttpEvent, Instant)>,
    pub stats: AssembleStats,
}

impl Assembler {
    pub fn new(registry: Registry) -> Assembler {
        Assembler {
            registry,
            clock: WallClock::new(),
            ids: IdGenerator::new(),
            open: HashMap::new(),
            open_order: VecDeque::new(),
            done: HashMap::new(),
            done_order: VecDeque::new(),
            panics: HashMap::new(),
            stats: AssembleStats::default(),
        }
    }

    /// Takes one event; returns the segments it completes (often none or one).
    pub fn assemble(&mut self, event: Event) -> Vec<SegmentObject> {
        match event {
            Event::Http(e) => match e.side {
                HttpSide::Server if e.panicked => self.hold_panic(e),
                HttpSide::Server => {
                    // The handler recovered from its panic: the normal record wins.
                    self.panics.remove(&(e.pid, e.request_id));
                    self.server(e).into_iter().collect()
                }
                HttpSide::Client => self.client(e),
            },
        }
    }

    fn names(&self, pid: u32) -> Option<ProcessNames> {
        self.registry.read().ok()?.get(&pid).cloned()
    }

    fn server(&mut self, e: HttpEvent) -> Option<SegmentObject> {
        let key = (e.pid, e.request_id);
        let exits = self.open.remove(&key).map(|o| o.exits).unwrap_or_default();
        let Some(names) = self.names(e.pid) else {
            self.stats.unknown_process += 1;
            return None;
        };
        let mut spans = vec![self.entry_span(&e)];
        let mut exits = exits;
        exits.sort_by_key(|x| x.start_ns);
        for (i, x) in exits.iter().enumerate() {
            let mut span = self.exit_span(x, i32::try_from(i + 1).unwrap_or(i32::MAX));
            span.parent_span_id = 0;
            spans.push(span);
        }
        let segment = SegmentObject {
            trace_id: self.ids.next(),
            trace_segment_id: self.ids.next(),
            spans,
            service: names.service,
            service_instance: names.instance,
            is_size_limited: false,
        };
        if e.request_id != 0 {
            self.remember(
                key,
                Reported {
                    trace_id: segment.trace_id.clone(),
                    segment_id: segment.trace_segment_id.clone(),
                    endpoint: segment.spans[0].operation_name.clone(),
                },
            );
        }
        Some(segment)
    }

    fn client(&mut self, e: HttpEvent) -> Vec<SegmentObject> {
        if e.request_id == 0 {
            // A call outside any traced request: a segment of its own.
            return self.exit_segment(&e, None).into_iter().collect();
        }
        let key = (e.pid, e.request_id);
        if let Some(parent) = self.done.get(&key).cloned() {
            self.stats.late_exits += 1;
            return self.exit_segment(&e, Some(&parent)).into_iter().collect();
        }
        let mut flushed = Vec::new();
        if !self.open.contains_key(&key) {
            while self.open.len() >= MAX_OPEN_REQUESTS {
                match self.open_order.pop_front() {
                    Some(old) => flushed.extend(self.flush_open(old)),
                    None => break,
                }
            }
            self.open_order.push_back(key);
        }
        let open = self.open.entry(key).or_insert_with(|| OpenRequest {
            exits: Vec::new(),
            since: Instant::now(),
        });
        if open.exits.len() < MAX_EXITS_PER_REQUEST {
            open.exits.push(e);
        } else {
            self.stats.dropped_exits += 1;
        }
        flushed
    }

    fn hold_panic(&mut self, e: HttpEvent) -> Vec<SegmentObject> {
        let mut out = Vec::new();
        if self.panics.len() >= MAX_HELD_PANICS {
            let oldest = self
                .panics
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k);
            if let Some((e, _)) = oldest.and_then(|k| self.panics.remove(&k)) {
                out.extend(self.server(e));
            }
        }
        self.panics
            .insert((e.pid, e.request_id), (e, Instant::now()));
        out
    }

    /// Reports the exits of requests that have waited longer than [`OPEN_TIMEOUT`], and the
    /// panicked requests that did not return within [`PANIC_GRACE`].
    pub fn expire(&mut self, now: Instant) -> Vec<SegmentObject> {
        let mut out = Vec::new();
        let due: Vec<RequestKey> = self
            .panics
            .iter()
            .filter(|(_, (_, t))| now.duration_since(*t) >= PANIC_GRACE)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some((e, _)) = self.panics.remove(&k) {
                out.extend(self.server(e));
            }
        }
        while let Some(key) = self.open_order.front().copied() {
            match self.open.get(&key) {
                Some(o) if now.duration_since(o.since) < OPEN_TIMEOUT => break,
                _ => {
                    self.open_order.pop_front();
                    out.extend(self.flush_open(key));
                }
            }
        }
        out
    }

    /// Reports every held panic and waiting exit (at shutdown).
    pub fn flush_all(&mut self) -> Vec<SegmentObject> {
        let panics: Vec<HttpEvent> = self.panics.drain().map(|(_, (e, _))| e).collect();
        let mut out: Vec<SegmentObject> =
            panics.into_iter().filter_map(|e| self.server(e)).collect();
        let keys: Vec<RequestKey> = self.open_order.drain(..).collect();
        out.extend(keys.into_iter().flat_map(|k| self.flush_open(k)));
        out
    }

    fn flush_open(&mut self, key: RequestKey) -> Vec<SegmentObject> {
        let Some(open) = self.open.remove(&key) else {
            return Vec::new();
        };
        self.stats.orphaned_exits += open.exits.len() as u64;
        debug!(
            pid = key.0,
            request = key.1,
            exits = open.exits.len(),
            "request never finished; reporting its calls alone"
        );
        open.exits
            .iter()
            .filter_map(|e| {
                let mut seg = self.exit_segment(e, None)?;
                let end_time = seg.spans[0].end_time;
                seg.spans[0].logs.push(log(
                    end_time,
                    &[
                        ("event", "orphaned"),
                        ("message", "the request that made this call was not seen to finish (a panic, or the agent detached)"),
                    ],
                ));
                Some(seg)
            })
            .collect()
    }

    fn remember(&mut self, key: RequestKey, r: Reported) {
        while self.done.len() >= MAX_DONE {
            match self.done_order.pop_front() {
                Some(old) => {
                    self.done.remove(&old);
                }
                None => break,
            }
        }
        if self.done.insert(key, r).is_none() {
            self.done_order.push_back(key);
        }
    }

    /// A segment holding one Exit span; with `parent`, in the parent's trace and referring
    /// to its segment.
    fn exit_segment(&mut self, e: &HttpEvent, parent: Option<&Reported>) -> Option<SegmentObject> {
        let Some(names) = self.names(e.pid) else {
            self.stats.unknown_process += 1;
            return None;
        };
        let mut span = self.exit_span(e, 0);
        let trace_id = match parent {
            Some(p) => {
                span.refs.push(SegmentReference {
                    ref_type: RefType::CrossThread as i32,
                    trace_id: p.trace_id.clone(),
                    parent_trace_segment_id: p.segment_id.clone(),
                    parent_span_id: 0,
                    parent_service: names.service.clone(),
                    parent_service_instance: names.instance.clone(),
                    parent_endpoint: p.endpoint.clone(),
                    network_address_used_at_peer: String::new(),
                });
                p.trace_id.clone()
            }
            None => self.ids.next(),
        };
        Some(SegmentObject {
            trace_id,
            trace_segment_id: self.ids.next(),
            spans: vec![span],
            service: names.service,
            service_instance: names.instance,
            is_size_limited: false,
        })
    }

    fn entry_span(&mut self, e: &HttpEvent) -> SpanObject {
        let tags = http_tags(e);
        let end_time = self.clock.unix_ms(e.end_ns.max(e.start_ns));
        let mut logs = Vec::new();
        if e.panicked {
            logs.push(log(
                end_time,
                &[
                    ("event", "error"),
                    ("error.kind", "panic"),
                    ("message", "the handler panicked and did not recover; net/http closed the connection without a response"),
                ],
            ));
        }
        SpanObject {
            span_id: 0,
            parent_span_id: -1,
            start_time: self.clock.unix_ms(e.start_ns),
            end_time,
            refs: vec![],
            operation_name: format!("{}:{}", e.method, e.path),
            peer: String::new(),
            span_type: SpanType::Entry as i32,
            span_layer: SpanLayer::Http as i32,
            component_id: component::GO_HTTP_SERVER,
            is_error: e.panicked || e.status.is_some_and(|s| s >= 400),
            tags,
            logs,
            skip_analysis: false,
        }
    }

    fn exit_span(&mut self, e: &HttpEvent, span_id: i32) -> SpanObject {
        let tags = http_tags(e);
        let end_time = self.clock.unix_ms(e.end_ns.max(e.start_ns));
        let mut logs = Vec::new();
        if e.error {
            logs.push(log(
                end_time,
                &[
                    ("event", "error"),
                    ("error.kind", "transport"),
                    ("message", "the round trip failed before a response (refused, reset, timed out or cancelled)"),
                ],
            ));
        }
        SpanObject {
            span_id,
            parent_span_id: -1,
            start_time: self.clock.unix_ms(e.start_ns),
            end_time,
            refs: vec![],
            operation_name: format!("{}:{}", e.method, e.path),
            peer: e.host.clone(),
            span_type: SpanType::Exit as i32,
            span_layer: SpanLayer::Http as i32,
            component_id: component::GO_HTTP_CLIENT,
            is_error: e.error || e.status.is_some_and(|s| s >= 400),
            tags,
            logs,
            skip_analysis: false,
        }
    }
}

/// skywalking-go's HTTP tags: `http.method`, `url` (host and path), `status_code` when known.
fn http_tags(e: &HttpEvent) -> Vec<KeyStringValuePair> {
    let mut tags = vec![
        tag("http.method", &e.method),
        tag("url", &format!("{}{}", e.host, e.path)),
    ];
    if let Some(status) = e.status {
        tags.push(tag("status_code", &status.to_string()));
    }
    tags
}

fn tag(key: &str, value: &str) -> KeyStringValuePair {
    KeyStringValuePair {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn log(time: i64, data: &[(&str, &str)]) -> Log {
    Log {
        time,
        data: data.iter().map(|(k, v)| tag(k, v)).collect(),
    }
}

/// How often waiting exits are checked for expiry.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);

/// The assemble stage: events in, segments out. Ends when its input closes, reporting every
/// exit still waiting for its request.
pub async fn run(
    mut assembler: Assembler,
    mut input: mpsc::Receiver<Event>,
    output: mpsc::Sender<SegmentObject>,
) -> AssembleStats {
    let mut expire = tokio::time::interval(EXPIRE_INTERVAL);
    loop {
        let segments = tokio::select! {
            event = input.recv() => match event {
                Some(event) => assembler.assemble(event),
                None => break,
            },
            _ = expire.tick() => assembler.expire(Instant::now()),
        };
        for segment in segments {
            // Block when the exporter is behind: it owns the memory bound and drop policy.
            if output.send(segment).await.is_err() {
                warn!("export stage has stopped; dropping segments");
                return assembler.stats;
            }
        }
    }
    for segment in assembler.flush_all() {
        if output.send(segment).await.is_err() {
            break;
        }
    }
    assembler.stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(
        side: HttpSide,
        request_id: u64,
        start_ms: u64,
        end_ms: u64,
        status: Option<u16>,
    ) -> Event {
        Event::Http(HttpEvent {
            side,
            pid: 42,
            goid: 9,
            request_id,
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
            method: "GET".into(),
            path: if side == HttpSide::Server {
                "/items/7".into()
            } else {
                "/backend".into()
            },
            host: if side == HttpSide::Server {
                "127.0.0.1:8080".into()
            } else {
                "backend:9000".into()
            },
            status,
            error: false,
            panicked: false,
            path_truncated: false,
        })
    }

    fn assembler() -> Assembler {
        let registry: Registry = Default::default();
        registry.write().unwrap().insert(
            42,
            ProcessNames {
                service: "shop".into(),
                instance: "host@42".into(),
                go_version: None,
            },
        );
        Assembler::new(registry)
    }

    fn tags(s: &SpanObject) -> Vec<(&str, &str)> {
        s.tags
            .iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect()
    }

    #[test]
    fn entry_span_follows_skywalking_go() {
        let seg = assembler()
            .assemble(http(HttpSide::Server, 1, 1000, 1005, Some(404)))
            .remove(0);
        assert_eq!(
            (seg.service.as_str(), seg.service_instance.as_str()),
            ("shop", "host@42")
        );
        let s = &seg.spans[0];
        assert_eq!(s.operation_name, "GET:/items/7");
        assert_eq!((s.span_id, s.parent_span_id), (0, -1));
        assert_eq!(s.component_id, 5004);
        assert_eq!(s.span_type, SpanType::Entry as i32);
        assert_eq!(s.span_layer, SpanLayer::Http as i32);
        assert!(s.is_error);
        assert_eq!(
            tags(s),
            [
                ("http.method", "GET"),
                ("url", "127.0.0.1:8080/items/7"),
                ("status_code", "404")
            ]
        );
        assert_eq!(s.end_time - s.start_time, 5);
        assert_ne!(seg.trace_id, seg.trace_segment_id);
    }

    #[test]
    fn exits_wait_for_their_request_and_become_its_children() {
        let mut a = assembler();
        assert!(
            a.assemble(http(HttpSide::Client, 7, 1003, 1004, Some(500)))
                .is_empty()
        );
        assert!(
            a.assemble(http(HttpSide::Client, 7, 1001, 1002, Some(200)))
                .is_empty()
        );
        let seg = a
            .assemble(http(HttpSide::Server, 7, 1000, 1005, Some(200)))
            .remove(0);
        let ids: Vec<(i32, i32)> = seg
            .spans
            .iter()
            .map(|s| (s.span_id, s.parent_span_id))
            .collect();
        assert_eq!(ids, [(0, -1), (1, 0), (2, 0)]);
        // Ordered by start time.
        let first = &seg.spans[1];
        assert_eq!(first.span_type, SpanType::Exit as i32);
        assert_eq!(first.component_id, 5005);
        assert_eq!(first.peer, "backend:9000");
        assert_eq!(first.operation_name, "GET:/backend");
        assert!(!first.is_error);
        assert!(seg.spans[2].is_error);
    }

    #[test]
    fn a_late_exit_joins_the_trace_by_reference() {
        let mut a = assembler();
        let seg = a
            .assemble(http(HttpSide::Server, 7, 1000, 1005, Some(200)))
            .remove(0);
        let late = a
            .assemble(http(HttpSide::Client, 7, 1004, 1010, Some(200)))
            .remove(0);
        assert_eq!(late.trace_id, seg.trace_id);
        let r = &late.spans[0].refs[0];
        assert_eq!(r.ref_type, RefType::CrossThread as i32);
        assert_eq!(r.parent_trace_segment_id, seg.trace_segment_id);
        assert_eq!(
            (r.parent_span_id, r.parent_endpoint.as_str()),
            (0, "GET:/items/7")
        );
        assert_eq!(a.stats.late_exits, 1);
    }

    #[test]
    fn calls_outside_requests_and_orphans_are_reported_alone() {
        let mut a = assembler();
        let alone = a.assemble(http(HttpSide::Client, 0, 1, 2, Some(200)));
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].spans[0].parent_span_id, -1);
        assert!(a.assemble(http(HttpSide::Client, 9, 1, 2, None)).is_empty());
        assert!(a.expire(Instant::now()).is_empty());
        let orphans = a.expire(Instant::now() + OPEN_TIMEOUT);
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].spans[0].logs[0].data[0].value, "orphaned");
        assert!(a.flush_all().is_empty());
    }

    #[test]
    fn a_panic_is_reported_only_if_the_request_does_not_return() {
        let mut a = assembler();
        let panicked = |e: Event| match e {
            Event::Http(mut h) => {
                h.panicked = true;
                h.status = None;
                Event::Http(h)
            }
        };
        // Recovered inside the handler: the normal record replaces the panic copy.
        assert!(
            a.assemble(panicked(http(HttpSide::Server, 3, 1000, 1001, None)))
                .is_empty()
        );
        let normal = a.assemble(http(HttpSide::Server, 3, 1000, 1003, Some(500)));
        assert_eq!(normal.len(), 1);
        assert!(a.expire(Instant::now() + PANIC_GRACE).is_empty());
        // Not recovered: reported as failed once the grace has passed.
        assert!(
            a.assemble(panicked(http(HttpSide::Server, 4, 1000, 1001, None)))
                .is_empty()
        );
        assert!(a.expire(Instant::now()).is_empty());
        let failed = a.expire(Instant::now() + PANIC_GRACE);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].spans[0].is_error);
        assert_eq!(failed[0].spans[0].logs[0].data[1].value, "panic");
    }

    #[test]
    fn events_of_untraced_processes_are_counted_not_reported() {
        let mut a = Assembler::new(Default::default());
        assert!(
            a.assemble(http(HttpSide::Server, 1, 1, 2, Some(200)))
                .is_empty()
        );
        assert_eq!(a.stats.unknown_process, 1);
    }
}
