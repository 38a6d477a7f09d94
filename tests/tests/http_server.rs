//! End to end: a real Go net/http server, never modified, traced by the real agent with real
//! eBPF uprobes, reporting to a real gRPC collector on loopback.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a panic showing the value is the clearest failure"
)]
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use proto::sw::{SegmentObject, SpanLayer, SpanType};
use skyhook_tests::{
    Collector, decode_with_official_stubs, gobuild,
    http::request,
    procs::{Agent, GoServer, Proc},
};

const FIXTURE: &str = "tests/fixtures/httpserver";
const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn tags(seg: &SegmentObject) -> Vec<(String, String)> {
    seg.spans[0]
        .tags
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

async fn fixture_server() -> GoServer {
    let exe = gobuild::build(FIXTURE).unwrap();
    GoServer::start(&exe, &[], &[("SW_AGENT_NAME", "fixture-svc")])
        .await
        .unwrap()
}

/// The requests of the main scenario: (method, path, body, expected status).
fn scenario() -> Vec<(&'static str, &'static str, Option<&'static str>, u16)> {
    let mut v = Vec::new();
    for _ in 0..5 {
        v.push(("GET", "/ok", None, 200));
    }
    for _ in 0..3 {
        v.push(("POST", "/items", Some(r#"{"name":"widget"}"#), 201));
    }
    for _ in 0..2 {
        v.push(("GET", "/items/42", None, 404));
    }
    for _ in 0..2 {
        v.push(("GET", "/fail", None, 500));
    }
    // Each on a fresh connection (a fresh goroutine with a small stack): the handler grows
    // and so moves its stack between the entry and the RET probes. A uretprobe would kill
    // the program here; probes keyed by goroutine keep the request whole.
    for _ in 0..3 {
        v.push(("GET", "/deep?n=3000", None, 200));
    }
    v.push(("GET", "/health", None, 200));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_becomes_exactly_one_segment() {
    let collector = Collector::start().await.unwrap();
    let server = fixture_server().await;
    let addr = collector.addr().to_string();
    let agent = Agent::attach(&[server.pid()], &["--collector", &addr])
        .await
        .unwrap();

    let requests = scenario();
    let window_start = now_ms();
    for (method, path, body, want) in &requests {
        let resp = request(&server.addr, method, path, *body).await.unwrap();
        assert_eq!(resp.status, *want, "{method} {path}");
    }
    let window_end = now_ms();

    let segments = collector
        .wait_for_segments(requests.len(), WAIT)
        .await
        .unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "agent exit: {status}");
    // After a clean stop nothing more may arrive: exactly one segment per request.
    let segments_after = collector.segments();
    assert_eq!(
        segments_after.len(),
        requests.len(),
        "segments: {segments_after:#?}"
    );

    let hostname = nix_hostname();
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for (method, path, _, status) in &requests {
        let path = path.split('?').next().unwrap();
        *want.entry(format!("{method}:{path} {status}")).or_default() += 1;
    }
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for seg in &segments {
        assert_eq!(
            seg.service, "fixture-svc",
            "service comes from SW_AGENT_NAME"
        );
        assert_eq!(seg.service_instance, format!("{hostname}@{}", server.pid()));
        assert_eq!(seg.trace_id.len(), 32);
        assert_ne!(seg.trace_id, seg.trace_segment_id);
        assert_eq!(seg.spans.len(), 1);
        let span = &seg.spans[0];
        assert_eq!((span.span_id, span.parent_span_id), (0, -1));
        assert_eq!(span.span_type, SpanType::Entry as i32);
        assert_eq!(span.span_layer, SpanLayer::Http as i32);
        assert_eq!(span.component_id, 5004);
        assert!(span.refs.is_empty() && span.peer.is_empty());
        assert!(
            window_start <= span.start_time
                && span.start_time <= span.end_time
                && span.end_time <= window_end,
            "span times {}..{} outside the test's window {window_start}..{window_end}",
            span.start_time,
            span.end_time
        );
        let (method, path) = span.operation_name.split_once(':').unwrap();
        let status: u16 = tags(seg)
            .iter()
            .find(|(k, _)| k == "status_code")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(
            tags(seg),
            vec![
                ("http.method".to_string(), method.to_string()),
                ("url".to_string(), format!("{}{path}", server.addr)),
                ("status_code".to_string(), status.to_string()),
            ]
        );
        assert_eq!(span.is_error, status >= 400, "{}", span.operation_name);
        *got.entry(format!("{} {status}", span.operation_name))
            .or_default() += 1;
    }
    assert_eq!(got, want);

    // Segments are unique.
    let mut ids: Vec<&str> = segments
        .iter()
        .map(|s| s.trace_segment_id.as_str())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), segments.len());

    // The instance was announced with the properties SkyWalking's Go agent reports.
    let props = collector.instance_properties();
    let p = props
        .iter()
        .find(|p| p.service == "fixture-svc")
        .expect("reportInstanceProperties");
    let keys: Vec<&str> = p.properties.iter().map(|kv| kv.key.as_str()).collect();
    for k in ["Process No.", "hostname", "language", "OS Name"] {
        assert!(keys.contains(&k), "missing property {k}: {keys:?}");
    }
    assert!(
        p.properties
            .iter()
            .any(|kv| kv.key == "Process No." && kv.value == server.pid().to_string())
    );
    assert!(
        p.properties
            .iter()
            .any(|kv| kv.key == "language" && kv.value == "go")
    );

    // Conformance: the official stubs decode what the agent sent to the same values.
    let decoded = decode_with_official_stubs("segment", &collector.segment_bytes()).unwrap();
    assert_eq!(decoded.len(), segments.len());
    for (seg, d) in segments.iter().zip(&decoded) {
        let span = &seg.spans[0];
        let ds = &d["spans"][0];
        assert_eq!(d["traceId"], seg.trace_id.as_str());
        assert_eq!(d["traceSegmentId"], seg.trace_segment_id.as_str());
        assert_eq!(d["service"], seg.service.as_str());
        assert_eq!(d["serviceInstance"], seg.service_instance.as_str());
        assert_eq!(ds["operationName"], span.operation_name.as_str());
        assert_eq!(ds["spanType"], "Entry");
        assert_eq!(ds["spanLayer"], "Http");
        assert_eq!(ds["componentId"], 5004);
        assert_eq!(ds["spanId"], 0);
        assert_eq!(ds["parentSpanId"], -1);
        assert_eq!(ds["isError"], span.is_error);
        assert_eq!(ds["startTime"], span.start_time.to_string());
        assert_eq!(ds["endTime"], span.end_time.to_string());
        let dtags: Vec<(String, String)> = ds["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap().to_string(),
                    t["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(dtags, tags(seg));
    }
}

fn nix_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0);
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_byte_identical_with_and_without_the_agent() {
    let server = fixture_server().await;
    let requests = scenario();
    let mut untraced = Vec::new();
    for (method, path, body, _) in &requests {
        untraced.push(
            request(&server.addr, method, path, *body)
                .await
                .unwrap()
                .without_date(),
        );
    }
    let agent = Agent::attach(&[server.pid()], &["--format", "json"])
        .await
        .unwrap();
    let mut traced = Vec::new();
    for (method, path, body, _) in &requests {
        traced.push(
            request(&server.addr, method, path, *body)
                .await
                .unwrap()
                .without_date(),
        );
    }
    agent
        .proc
        .stdout
        .wait_for(
            "the last request's segment",
            |l| l.contains("GET:/health"),
            WAIT,
        )
        .await
        .unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success());
    // POST /items answers with an id that counts up; compare the rest byte for byte.
    for (i, (a, b)) in untraced.iter().zip(&traced).enumerate() {
        if requests[i].1 == "/items" {
            assert_eq!(a.len(), b.len(), "request {i}");
        } else {
            assert_eq!(
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b),
                "request {i}: {:?}",
                requests[i]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_json_has_protocol_field_names_and_sigterm_flushes() {
    let server = fixture_server().await;
    let mut agent = Agent::attach(
        &[server.pid()],
        &["--format", "json", "--service", "cli-name"],
    )
    .await
    .unwrap();
    for _ in 0..3 {
        request(&server.addr, "GET", "/fail", None).await.unwrap();
    }
    // SIGTERM right away: the agent must still print every finished request before exiting.
    let status = agent.proc.stop(libc::SIGTERM, WAIT).await.unwrap();
    assert!(
        status.success(),
        "exit {status}: {}",
        agent.proc.stderr.text()
    );
    let lines: Vec<serde_json::Value> = agent
        .proc
        .stdout
        .all()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for v in &lines {
        assert_eq!(v["service"], "cli-name");
        let span = &v["spans"][0];
        assert_eq!(span["operationName"], "GET:/fail");
        assert_eq!(span["spanType"], "Entry");
        assert_eq!(span["spanLayer"], "Http");
        assert_eq!(span["componentId"], 5004);
        assert_eq!(span["isError"], true);
        assert_eq!(span["parentSpanId"], -1);
        assert!(span["startTime"].as_i64().unwrap() <= span["endTime"].as_i64().unwrap());
        assert_eq!(span["tags"][2]["key"], "status_code");
        assert_eq!(span["tags"][2]["value"], "500");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_and_detach_under_load_report_only_whole_requests() {
    let server = fixture_server().await;
    let loadgen = gobuild::build("tests/fixtures/loadgen").unwrap();
    let collector = Collector::start().await.unwrap();
    let urls = format!("{},{}", server.url("/slow?ms=30"), server.url("/ok"));
    // Load runs before the agent attaches and after it detaches.
    let mut load = Proc::spawn(
        &loadgen,
        &["-url", &urls, "-c", "8", "-d", "8s", "-warmup", "0s"],
        &[],
    )
    .unwrap();
    // The load generator starts at once; the server answering us proves it is serving while
    // load runs, and the request count checked below proves load ran untraced too.
    assert_eq!(
        request(&server.addr, "GET", "/health", None)
            .await
            .unwrap()
            .status,
        200
    );
    let addr = collector.addr().to_string();
    let agent = Agent::attach(&[server.pid()], &["--collector", &addr])
        .await
        .unwrap();
    collector
        .wait_for("some traced requests", |r| r.segments.len() >= 50, WAIT)
        .await
        .unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success());
    let status = load.wait(WAIT).await.unwrap();
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_str(&load.stdout.all()[0]).unwrap();
    assert_eq!(
        report["errors"], 0,
        "the traced server failed requests: {report}"
    );
    let made = report["requests"].as_u64().unwrap();

    // The server is alive and well after the agent left.
    let resp = request(&server.addr, "GET", "/health", None).await.unwrap();
    assert_eq!((resp.status, resp.body()), (200, &b"healthy\n"[..]));

    let segments = collector.segments();
    assert!(
        (segments.len() as u64) < made,
        "{} segments for {made} requests",
        segments.len()
    );
    for seg in &segments {
        let span = &seg.spans[0];
        let status = tags(seg)
            .iter()
            .find(|(k, _)| k == "status_code")
            .map(|(_, v)| v.clone());
        assert_eq!(status.as_deref(), Some("200"), "{span:?}");
        match span.operation_name.as_str() {
            // A half-seen /slow request would have a short or negative duration.
            "GET:/slow" => assert!(
                span.end_time - span.start_time >= 29,
                "half span reported: {span:?}"
            ),
            "GET:/ok" => assert!(span.end_time >= span.start_time),
            other => panic!("unexpected operation {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stops_by_itself_when_the_traced_process_exits() {
    let mut server = fixture_server().await;
    let mut agent = Agent::attach(&[server.pid()], &["--format", "json"])
        .await
        .unwrap();
    request(&server.addr, "GET", "/ok", None).await.unwrap();
    agent
        .proc
        .stdout
        .wait_for("the /ok segment", |l| l.contains("GET:/ok"), WAIT)
        .await
        .unwrap();
    server.proc.stop(libc::SIGTERM, WAIT).await.unwrap();
    let status = agent.proc.wait(WAIT).await.unwrap();
    assert!(status.success(), "{}", agent.proc.stderr.text());
    assert!(
        agent
            .proc
            .stderr
            .text()
            .contains("no traced process is left")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_at_start_loses_nothing() {
    // A port with nothing listening on it (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = fixture_server().await;
    let addr = port.to_string();
    let agent = Agent::attach(&[server.pid()], &["--collector", &addr])
        .await
        .unwrap();
    for _ in 0..4 {
        request(&server.addr, "GET", "/ok", None).await.unwrap();
    }
    agent
        .proc
        .stderr
        .wait_for(
            "the reporter to notice the collector is down",
            |l| l.contains("retrying with backoff"),
            WAIT,
        )
        .await
        .unwrap();
    let collector = Collector::start_on(port).await.unwrap();
    let segments = collector.wait_for_segments(4, WAIT).await.unwrap();
    assert!(
        segments
            .iter()
            .all(|s| s.spans[0].operation_name == "GET:/ok")
    );
    collector
        .wait_for(
            "the instance to be announced",
            |r| !r.instance_properties.is_empty(),
            WAIT,
        )
        .await
        .unwrap();
    assert!(agent.stop().await.unwrap().success());
    assert_eq!(collector.segments().len(), 4);
}
