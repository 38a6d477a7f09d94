//! Assemble: typed events become SkyWalking spans and segments, following skywalking-go's
//! conventions so that the OAP analyses them like SDK-made ones.
pub mod clock;
pub mod ids;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use proto::sw::{KeyStringValuePair, SegmentObject, SpanLayer, SpanObject, SpanType};
use tokio::sync::mpsc;
use tracing::warn;

use crate::collect::{Event, HttpServerEvent};
use clock::WallClock;
use ids::IdGenerator;

/// Component ids from the OAP's `component-libraries.yml`.
pub mod component {
    pub const GO_HTTP_SERVER: i32 = 5004;
}

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

pub struct Assembler {
    registry: Registry,
    clock: WallClock,
    ids: IdGenerator,
    /// Events whose process is not (or no longer) registered.
    pub unknown_process: u64,
}

impl Assembler {
    pub fn new(registry: Registry) -> Assembler {
        Assembler {
            registry,
            clock: WallClock::new(),
            ids: IdGenerator::new(),
            unknown_process: 0,
        }
    }

    /// Turns one event into a finished segment, or `None` when it belongs to no traced
    /// process.
    pub fn assemble(&mut self, event: Event) -> Option<SegmentObject> {
        match event {
            Event::HttpServer(e) => self.http_server(e),
        }
    }

    fn names(&self, pid: u32) -> Option<ProcessNames> {
        self.registry.read().ok()?.get(&pid).cloned()
    }

    fn http_server(&mut self, e: HttpServerEvent) -> Option<SegmentObject> {
        let Some(names) = self.names(e.pid) else {
            self.unknown_process += 1;
            return None;
        };
        let mut tags = vec![
            tag("http.method", &e.method),
            tag("url", &format!("{}{}", e.host, e.path)),
        ];
        if let Some(status) = e.status {
            tags.push(tag("status_code", &status.to_string()));
        }
        let span = SpanObject {
            span_id: 0,
            parent_span_id: -1,
            start_time: self.clock.unix_ms(e.start_ns),
            end_time: self.clock.unix_ms(e.end_ns.max(e.start_ns)),
            refs: vec![],
            operation_name: format!("{}:{}", e.method, e.path),
            peer: String::new(),
            span_type: SpanType::Entry as i32,
            span_layer: SpanLayer::Http as i32,
            component_id: component::GO_HTTP_SERVER,
            is_error: e.status.is_some_and(|s| s >= 400),
            tags,
            logs: vec![],
            skip_analysis: false,
        };
        Some(SegmentObject {
            trace_id: self.ids.next(),
            trace_segment_id: self.ids.next(),
            spans: vec![span],
            service: names.service,
            service_instance: names.instance,
            is_size_limited: false,
        })
    }
}

fn tag(key: &str, value: &str) -> KeyStringValuePair {
    KeyStringValuePair {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// The assemble stage: events in, segments out. Ends when its input closes.
pub async fn run(
    mut assembler: Assembler,
    mut input: mpsc::Receiver<Event>,
    output: mpsc::Sender<SegmentObject>,
) {
    while let Some(event) = input.recv().await {
        if let Some(segment) = assembler.assemble(event) {
            // Block when the exporter is behind: it owns the memory bound and drop policy.
            if output.send(segment).await.is_err() {
                warn!("export stage has stopped; dropping segments");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: Option<u16>) -> Event {
        Event::HttpServer(HttpServerEvent {
            pid: 42,
            goid: 9,
            start_ns: 1_000_000_000,
            end_ns: 1_005_000_000,
            method: "GET".into(),
            path: "/items/7".into(),
            host: "127.0.0.1:8080".into(),
            status,
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

    #[test]
    fn entry_span_follows_skywalking_go() {
        let seg = assembler().assemble(event(Some(404))).unwrap();
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
        let tags: Vec<(&str, &str)> = s
            .tags
            .iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect();
        assert_eq!(
            tags,
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
    fn unknown_status_has_no_tag_and_no_error() {
        let seg = assembler().assemble(event(None)).unwrap();
        assert!(!seg.spans[0].is_error);
        assert!(seg.spans[0].tags.iter().all(|t| t.key != "status_code"));
    }

    #[test]
    fn events_of_untraced_processes_are_counted_not_reported() {
        let mut a = Assembler::new(Default::default());
        assert!(a.assemble(event(Some(200))).is_none());
        assert_eq!(a.unknown_process, 1);
    }
}
