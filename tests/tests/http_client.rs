//! End to end: Exit spans of net/http client calls, made inline and from goroutines a handler
//! starts (at any depth), land in the handler's segment with the Entry span as parent.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a panic showing the value is the clearest failure"
)]
use std::time::Duration;

use proto::sw::{SegmentObject, SpanLayer, SpanObject, SpanType};
use skyhook_tests::{
    Collector, gobuild,
    http::request,
    procs::{Agent, GoServer},
};

const WAIT: Duration = Duration::from_secs(30);

fn tag<'a>(s: &'a SpanObject, key: &str) -> Option<&'a str> {
    s.tags
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value.as_str())
}

/// The fixture server, traced by the agent, reporting to a loopback collector.
async fn traced_fixture() -> (GoServer, Collector, Agent) {
    let exe = gobuild::build("tests/fixtures/httpserver").unwrap();
    let server = GoServer::start(&exe, &[], &[]).await.unwrap();
    let collector = Collector::start().await.unwrap();
    let addr = collector.addr().to_string();
    let agent = Agent::attach(&[server.pid()], &["--collector", &addr])
        .await
        .unwrap();
    (server, collector, agent)
}

fn segment_of<'a>(segments: &'a [SegmentObject], endpoint: &str) -> Vec<&'a SegmentObject> {
    segments
        .iter()
        .filter(|s| s.spans[0].operation_name == endpoint)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_the_handler_and_its_goroutines_are_children_of_its_entry_span() {
    let (server, collector, agent) = traced_fixture().await;

    let path = format!("/fanout?backend={}", server.addr);
    let resp = request(&server.addr, "GET", &path, None).await.unwrap();
    assert_eq!(
        (resp.status, resp.body()),
        (200, &b"fanout 200 404 500\n"[..])
    );
    let resp = request(&server.addr, "GET", "/refused", None)
        .await
        .unwrap();
    assert_eq!(resp.status, 502);

    // /fanout, its three backend requests (served by the same process) and /refused.
    collector.wait_for_segments(5, WAIT).await.unwrap();
    assert!(agent.stop().await.unwrap().success());
    let segments = collector.segments();
    assert_eq!(segments.len(), 5, "{segments:#?}");

    let fanout = segment_of(&segments, "GET:/fanout");
    assert_eq!(fanout.len(), 1);
    let spans = &fanout[0].spans;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let entry = &spans[0];
    assert_eq!(
        (entry.span_id, entry.parent_span_id, entry.span_type),
        (0, -1, SpanType::Entry as i32)
    );
    let mut exits: Vec<(String, String, bool)> = Vec::new();
    for (i, s) in spans[1..].iter().enumerate() {
        assert_eq!(s.span_id, i as i32 + 1);
        assert_eq!(
            s.parent_span_id, 0,
            "every call is a child of the entry span"
        );
        assert_eq!(s.span_type, SpanType::Exit as i32);
        assert_eq!(s.span_layer, SpanLayer::Http as i32);
        assert_eq!(s.component_id, 5005);
        assert_eq!(s.peer, server.addr);
        assert_eq!(tag(s, "http.method"), Some("GET"));
        assert!(entry.start_time <= s.start_time && s.end_time <= entry.end_time);
        exits.push((
            s.operation_name.clone(),
            tag(s, "status_code").unwrap().to_string(),
            s.is_error,
        ));
    }
    exits.sort();
    assert_eq!(
        exits,
        [
            ("GET:/fail".to_string(), "500".to_string(), true),
            ("GET:/items/1".to_string(), "404".to_string(), true),
            ("GET:/ok".to_string(), "200".to_string(), false),
        ]
    );
    // The backend's own requests are traced too, as entries of their own.
    for endpoint in ["GET:/ok", "GET:/items/1", "GET:/fail"] {
        let s = segment_of(&segments, endpoint);
        assert_eq!(s.len(), 1, "{endpoint}");
        assert_eq!(s[0].spans.len(), 1);
    }

    // A refused connection: an error exit with a log saying so, and no status.
    let refused = segment_of(&segments, "GET:/refused");
    assert_eq!(refused.len(), 1);
    let spans = &refused[0].spans;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let exit = &spans[1];
    assert_eq!(exit.operation_name, "GET:/nothing");
    assert_eq!(exit.peer, "127.0.0.1:1");
    assert_eq!(exit.parent_span_id, 0);
    assert!(exit.is_error);
    assert_eq!(tag(exit, "status_code"), None);
    let log = &exit.logs[0];
    assert!(
        log.data
            .iter()
            .any(|kv| kv.key == "error.kind" && kv.value == "transport")
    );
    assert_eq!(tag(&spans[0], "status_code"), Some("502"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_reported_as_failed_and_the_server_survives() {
    let (server, collector, agent) = traced_fixture().await;

    // net/http closes the connection without answering.
    assert!(request(&server.addr, "GET", "/panic", None).await.is_err());
    // The server survives; the next request is traced normally.
    assert_eq!(
        request(&server.addr, "GET", "/ok", None)
            .await
            .unwrap()
            .status,
        200
    );

    collector.wait_for_segments(2, WAIT).await.unwrap();
    assert!(agent.stop().await.unwrap().success());
    let segments = collector.segments();
    let panicked = segment_of(&segments, "GET:/panic");
    assert_eq!(panicked.len(), 1, "{segments:#?}");
    let span = &panicked[0].spans[0];
    assert!(span.is_error);
    assert_eq!(tag(span, "status_code"), None);
    assert!(span.start_time <= span.end_time);
    assert!(
        span.logs[0]
            .data
            .iter()
            .any(|kv| kv.key == "error.kind" && kv.value == "panic")
    );
    assert_eq!(segment_of(&segments, "GET:/ok").len(), 1);
}
