//! Conformance of our `proto` crate with the official SkyWalking stubs.
//!
//! Messages with every field set are sent through a real tonic client to the loopback
//! [`Collector`], re-encoded, and decoded by the official Python stubs from PyPI
//! (`apache-skywalking`, see `tests/conformance/requirements.txt`). Every field must come back
//! under its official camelCase name with the value we sent. Needs the repo's `.venv`; without
//! it the test fails and says how to create it.

use std::time::Duration;

use prost::Message as _;
use proto::sw;
use proto::sw::log_report_service_client::LogReportServiceClient;
use proto::sw::management_service_client::ManagementServiceClient;
use proto::sw::meter_report_service_client::MeterReportServiceClient;
use proto::sw::trace_segment_report_service_client::TraceSegmentReportServiceClient;
use serde_json::{Value, json};
use skyhook_tests::{Collector, decode_with_official_stubs};

const WAIT: Duration = Duration::from_secs(10);

fn kv(key: &str, value: &str) -> sw::KeyStringValuePair {
    sw::KeyStringValuePair {
        key: key.into(),
        value: value.into(),
    }
}

fn reference(ref_type: sw::RefType, n: i32) -> sw::SegmentReference {
    sw::SegmentReference {
        ref_type: ref_type.into(),
        trace_id: "a1b2c3d4e5f6.1.17000000000000001".into(),
        parent_trace_segment_id: format!("f6e5d4c3b2a1.2.1700000000000000{n}"),
        parent_span_id: n,
        parent_service: "frontend".into(),
        parent_service_instance: "frontend-7f9c@10.0.0.5".into(),
        parent_endpoint: "GET:/consumer".into(),
        network_address_used_at_peer: "backend:8080".into(),
    }
}

/// A segment in which every field, and every enum value, is used with a non-default value.
fn full_segment() -> sw::SegmentObject {
    let entry = sw::SpanObject {
        span_id: 0,
        parent_span_id: -1,
        start_time: 1_700_000_000_123,
        end_time: 1_700_000_000_456,
        refs: vec![
            reference(sw::RefType::CrossProcess, 1),
            reference(sw::RefType::CrossThread, 2),
        ],
        operation_name: "GET:/provider".into(),
        peer: "10.0.0.5:41234".into(),
        span_type: sw::SpanType::Entry.into(),
        span_layer: sw::SpanLayer::Http.into(),
        component_id: 5004,
        is_error: true,
        tags: vec![kv("http.method", "GET"), kv("status_code", "500")],
        logs: vec![sw::Log {
            time: 1_700_000_000_400,
            data: vec![kv("event", "error"), kv("message", "boom ✓")],
        }],
        skip_analysis: false,
    };
    let exit = sw::SpanObject {
        span_id: 1,
        parent_span_id: 0,
        start_time: 1_700_000_000_200,
        end_time: 1_700_000_000_300,
        refs: vec![],
        operation_name: "GET:/db".into(),
        peer: "db:8080".into(),
        span_type: sw::SpanType::Exit.into(),
        span_layer: sw::SpanLayer::Http.into(),
        component_id: 5005,
        is_error: false,
        tags: vec![kv("url", "db:8080/db")],
        logs: vec![],
        skip_analysis: true,
    };
    // One local span per remaining layer, so every enum number is checked.
    let layers = [
        sw::SpanLayer::Unknown,
        sw::SpanLayer::Database,
        sw::SpanLayer::RpcFramework,
        sw::SpanLayer::Mq,
        sw::SpanLayer::Cache,
        sw::SpanLayer::Faas,
    ];
    let locals = (2..).zip(layers).map(|(id, layer)| sw::SpanObject {
        span_id: id,
        parent_span_id: 0,
        start_time: 1_700_000_000_300 + i64::from(id),
        end_time: 1_700_000_000_310 + i64::from(id),
        operation_name: format!("local/{}", layer.as_str_name()),
        span_type: sw::SpanType::Local.into(),
        span_layer: layer.into(),
        component_id: 0,
        ..Default::default()
    });
    sw::SegmentObject {
        trace_id: "a1b2c3d4e5f6.1.17000000000000001".into(),
        trace_segment_id: "0123456789ab.3.17000000000000003".into(),
        spans: [entry, exit].into_iter().chain(locals).collect(),
        service: "backend".into(),
        service_instance: "backend-1@10.0.0.6".into(),
        is_size_limited: true,
    }
}

fn full_instance_properties() -> sw::InstanceProperties {
    sw::InstanceProperties {
        service: "backend".into(),
        service_instance: "backend-1@10.0.0.6".into(),
        properties: vec![
            kv("Process No.", "4242"),
            kv("hostname", "host-1"),
            kv("language", "go"),
            kv("ipv4", "10.0.0.6"),
        ],
        layer: "GENERAL".into(),
    }
}

// ---- What the official stubs must print, written with the official field names. ----------

fn kv_json(kvs: &[sw::KeyStringValuePair]) -> Value {
    kvs.iter()
        .map(|p| json!({ "key": p.key, "value": p.value }))
        .collect()
}

/// Official JSON enum names, spelled out rather than taken from our generated code.
fn ref_type_name(v: i32) -> &'static str {
    match sw::RefType::try_from(v) {
        Ok(sw::RefType::CrossProcess) => "CrossProcess",
        Ok(sw::RefType::CrossThread) => "CrossThread",
        Err(_) => panic!("RefType {v} out of range"),
    }
}

fn span_type_name(v: i32) -> &'static str {
    match sw::SpanType::try_from(v) {
        Ok(sw::SpanType::Entry) => "Entry",
        Ok(sw::SpanType::Exit) => "Exit",
        Ok(sw::SpanType::Local) => "Local",
        Err(_) => panic!("SpanType {v} out of range"),
    }
}

fn span_layer_name(v: i32) -> &'static str {
    match sw::SpanLayer::try_from(v) {
        Ok(sw::SpanLayer::Unknown) => "Unknown",
        Ok(sw::SpanLayer::Database) => "Database",
        Ok(sw::SpanLayer::RpcFramework) => "RPCFramework",
        Ok(sw::SpanLayer::Http) => "Http",
        Ok(sw::SpanLayer::Mq) => "MQ",
        Ok(sw::SpanLayer::Cache) => "Cache",
        Ok(sw::SpanLayer::Faas) => "FAAS",
        Err(_) => panic!("SpanLayer {v} out of range"),
    }
}

/// Protobuf's JSON mapping prints int64 as a string.
fn int64(v: i64) -> Value {
    Value::String(v.to_string())
}

fn segment_json(s: &sw::SegmentObject) -> Value {
    let spans: Vec<Value> = s
        .spans
        .iter()
        .map(|span| {
            let refs: Vec<Value> = span
                .refs
                .iter()
                .map(|r| {
                    json!({
                        "refType": ref_type_name(r.ref_type),
                        "traceId": r.trace_id,
                        "parentTraceSegmentId": r.parent_trace_segment_id,
                        "parentSpanId": r.parent_span_id,
                        "parentService": r.parent_service,
                        "parentServiceInstance": r.parent_service_instance,
                        "parentEndpoint": r.parent_endpoint,
                        "networkAddressUsedAtPeer": r.network_address_used_at_peer,
                    })
                })
                .collect();
            let logs: Vec<Value> = span
                .logs
                .iter()
                .map(|l| json!({ "time": int64(l.time), "data": kv_json(&l.data) }))
                .collect();
            json!({
                "spanId": span.span_id,
                "parentSpanId": span.parent_span_id,
                "startTime": int64(span.start_time),
                "endTime": int64(span.end_time),
                "refs": refs,
                "operationName": span.operation_name,
                "peer": span.peer,
                "spanType": span_type_name(span.span_type),
                "spanLayer": span_layer_name(span.span_layer),
                "componentId": span.component_id,
                "isError": span.is_error,
                "tags": kv_json(&span.tags),
                "logs": logs,
                "skipAnalysis": span.skip_analysis,
            })
        })
        .collect();
    json!({
        "traceId": s.trace_id,
        "traceSegmentId": s.trace_segment_id,
        "spans": spans,
        "service": s.service,
        "serviceInstance": s.service_instance,
        "isSizeLimited": s.is_size_limited,
    })
}

fn instance_properties_json(p: &sw::InstanceProperties) -> Value {
    json!({
        "service": p.service,
        "serviceInstance": p.service_instance,
        "properties": kv_json(&p.properties),
        "layer": p.layer,
    })
}

/// Every difference between what we sent and what the official stubs decoded, by JSON path.
fn diff(path: &str, sent: &Value, decoded: &Value, out: &mut Vec<String>) {
    match (sent, decoded) {
        (Value::Object(s), Value::Object(d)) => {
            for (k, sv) in s {
                match d.get(k) {
                    Some(dv) => diff(&format!("{path}.{k}"), sv, dv, out),
                    None => out.push(format!(
                        "{path}.{k}: absent from the official decoding (sent {sv})"
                    )),
                }
            }
            for (k, dv) in d {
                if !s.contains_key(k) {
                    out.push(format!(
                        "{path}.{k}: decoded by the official stubs as {dv}, but not expected"
                    ));
                }
            }
        }
        (Value::Array(s), Value::Array(d)) if s.len() == d.len() => {
            for (i, (sv, dv)) in s.iter().zip(d).enumerate() {
                diff(&format!("{path}[{i}]"), sv, dv, out);
            }
        }
        _ if sent != decoded => out.push(format!(
            "{path}: sent {sent}, official stubs decoded {decoded}"
        )),
        _ => {}
    }
}

fn assert_conforms(what: &str, sent: &Value, decoded: &Value) {
    let mut differences = Vec::new();
    diff(what, sent, decoded, &mut differences);
    assert!(
        differences.is_empty(),
        "{what} does not decode as sent with the official stubs:\n  {}\nsent:    {sent}\ndecoded: {decoded}",
        differences.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_and_instance_properties_decode_with_official_stubs() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let segment = full_segment();
    let properties = full_instance_properties();

    let mut traces = TraceSegmentReportServiceClient::connect(collector.uri()).await?;
    traces
        .collect(tokio_stream::iter(vec![segment.clone()]))
        .await?;
    let mut management = ManagementServiceClient::connect(collector.uri()).await?;
    management
        .report_instance_properties(properties.clone())
        .await?;

    let received = collector.wait_for_segments(1, WAIT).await?;
    assert_eq!(received, vec![segment.clone()]);
    assert_eq!(collector.collect_streams(), 1);
    assert_eq!(collector.instance_properties(), vec![properties.clone()]);

    let decoded = decode_with_official_stubs("segment", &collector.segment_bytes())?;
    assert_eq!(decoded.len(), 1);
    let decoded = &decoded[0];
    assert_conforms("segment", &segment_json(&segment), decoded);
    // Spot checks with literal official names, independent of the mapping above.
    assert_eq!(decoded["traceSegmentId"], segment.trace_segment_id);
    assert_eq!(decoded["isSizeLimited"], true);
    assert_eq!(decoded["spans"][0]["parentSpanId"], -1);
    assert_eq!(decoded["spans"][0]["spanType"], "Entry");
    assert_eq!(decoded["spans"][0]["refs"][0]["refType"], "CrossProcess");
    assert_eq!(decoded["spans"][0]["refs"][1]["refType"], "CrossThread");
    assert_eq!(
        decoded["spans"][0]["refs"][0]["networkAddressUsedAtPeer"],
        "backend:8080"
    );
    assert_eq!(decoded["spans"][0]["startTime"], "1700000000123");
    assert_eq!(decoded["spans"][0]["logs"][0]["data"][1]["value"], "boom ✓");
    assert_eq!(decoded["spans"][1]["spanType"], "Exit");
    assert_eq!(decoded["spans"][1]["spanLayer"], "Http");
    assert_eq!(decoded["spans"][1]["skipAnalysis"], true);
    assert_eq!(decoded["spans"][4]["spanLayer"], "RPCFramework");

    let props_bytes: Vec<Vec<u8>> = collector
        .instance_properties()
        .iter()
        .map(|p| p.encode_to_vec())
        .collect();
    let decoded = decode_with_official_stubs("instance_properties", &props_bytes)?;
    assert_eq!(decoded.len(), 1);
    assert_conforms(
        "instance_properties",
        &instance_properties_json(&properties),
        &decoded[0],
    );
    assert_eq!(decoded[0]["serviceInstance"], "backend-1@10.0.0.6");

    collector.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_records_every_service() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let channel = tonic::transport::Endpoint::from_shared(collector.uri())?
        .connect()
        .await?;
    let segment = |n: i32| sw::SegmentObject {
        trace_segment_id: format!("segment-{n}"),
        ..full_segment()
    };

    // Two segments on one stream, a third on another, a fourth through collectInSync.
    let mut traces = TraceSegmentReportServiceClient::new(channel.clone());
    traces
        .collect(tokio_stream::iter(vec![segment(0), segment(1)]))
        .await?;
    traces.collect(tokio_stream::iter(vec![segment(2)])).await?;
    traces
        .collect_in_sync(sw::SegmentCollection {
            segments: vec![segment(3)],
        })
        .await?;

    let mut request = tonic::Request::new(sw::InstancePingPkg {
        service: "backend".into(),
        service_instance: "backend-1@10.0.0.6".into(),
        layer: "GENERAL".into(),
    });
    request
        .metadata_mut()
        .insert("authentication", "secret-token".parse()?);
    ManagementServiceClient::new(channel.clone())
        .keep_alive(request)
        .await?;

    let single = sw::MeterData {
        metric: Some(sw::meter_data::Metric::SingleValue(sw::MeterSingleValue {
            name: "instance_golang_heap_alloc".into(),
            labels: vec![sw::Label {
                name: "pool".into(),
                value: "heap".into(),
            }],
            value: 1.5,
        })),
        service: "backend".into(),
        service_instance: "backend-1@10.0.0.6".into(),
        timestamp: 1_700_000_000_000,
    };
    let histogram = sw::MeterData {
        metric: Some(sw::meter_data::Metric::Histogram(sw::MeterHistogram {
            name: "latency".into(),
            labels: vec![],
            values: vec![sw::MeterBucketValue {
                bucket: 0.25,
                count: 7,
                is_negative_infinity: true,
            }],
        })),
        ..single.clone()
    };
    let mut meters = MeterReportServiceClient::new(channel.clone());
    meters
        .collect(tokio_stream::iter(vec![single.clone()]))
        .await?;
    meters
        .collect_batch(tokio_stream::iter(vec![sw::MeterDataCollection {
            meter_data: vec![histogram.clone()],
        }]))
        .await?;

    let log = sw::LogData {
        timestamp: 1_700_000_000_001,
        service: "backend".into(),
        service_instance: "backend-1@10.0.0.6".into(),
        endpoint: "GET:/provider".into(),
        body: Some(sw::LogDataBody {
            r#type: "text".into(),
            content: Some(sw::log_data_body::Content::Text(sw::TextLog {
                text: "hello".into(),
            })),
        }),
        trace_context: Some(sw::TraceContext {
            trace_id: "t".into(),
            trace_segment_id: "s".into(),
            span_id: 3,
        }),
        tags: Some(sw::LogTags {
            data: vec![kv("level", "INFO")],
        }),
        layer: "GENERAL".into(),
    };
    LogReportServiceClient::new(channel)
        .collect(tokio_stream::iter(vec![log.clone()]))
        .await?;

    collector
        .wait_for("1 log", |r| !r.logs.is_empty(), WAIT)
        .await?;
    let recorded = collector.recorded();
    let ids: Vec<&str> = recorded
        .segments
        .iter()
        .map(|s| s.trace_segment_id.as_str())
        .collect();
    assert_eq!(ids, ["segment-0", "segment-1", "segment-2", "segment-3"]);
    assert_eq!(recorded.collect_streams, 2);
    assert_eq!(recorded.collect_in_sync_calls, 1);
    assert_eq!(recorded.keep_alives.len(), 1);
    assert_eq!(recorded.meter_data, vec![single, histogram]);
    assert_eq!(recorded.logs, vec![log]);
    let paths: Vec<&str> = recorded.rpcs.iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        [
            "/skywalking.v3.TraceSegmentReportService/collect",
            "/skywalking.v3.TraceSegmentReportService/collect",
            "/skywalking.v3.TraceSegmentReportService/collectInSync",
            "/skywalking.v3.ManagementService/keepAlive",
            "/skywalking.v3.MeterReportService/collect",
            "/skywalking.v3.MeterReportService/collectBatch",
            "/skywalking.v3.LogReportService/collect",
        ]
    );
    assert_eq!(
        recorded.rpcs[3].authentication.as_deref(),
        Some("secret-token")
    );

    // The other kinds decode with the official stubs too.
    let ping =
        decode_with_official_stubs("instance_ping", &[recorded.keep_alives[0].encode_to_vec()])?;
    assert_eq!(
        ping[0],
        json!({ "service": "backend", "serviceInstance": "backend-1@10.0.0.6", "layer": "GENERAL" })
    );
    let meters: Vec<Vec<u8>> = recorded
        .meter_data
        .iter()
        .map(|m| m.encode_to_vec())
        .collect();
    let meters = decode_with_official_stubs("meter_data", &meters)?;
    assert_eq!(meters[0]["singleValue"]["labels"][0]["name"], "pool");
    assert_eq!(meters[0]["singleValue"]["value"], 1.5);
    assert_eq!(meters[0]["timestamp"], "1700000000000");
    assert_eq!(
        meters[1]["histogram"]["values"][0]["isNegativeInfinity"],
        true
    );
    assert_eq!(meters[1]["histogram"]["values"][0]["count"], "7");
    let logs = decode_with_official_stubs("log_data", &[recorded.logs[0].encode_to_vec()])?;
    assert_eq!(logs[0]["body"]["text"]["text"], "hello");
    assert_eq!(logs[0]["traceContext"]["traceSegmentId"], "s");
    assert_eq!(logs[0]["traceContext"]["spanId"], 3);
    assert_eq!(logs[0]["tags"]["data"][0]["key"], "level");

    // A wait that cannot be met says what did arrive.
    let err = collector
        .wait_for_segments(5, Duration::from_millis(100))
        .await
        .expect_err("only 4 segments were sent");
    let message = format!("{err:#}");
    assert!(
        message.contains("waiting for 5 segment(s)") && message.contains("received 4 segment(s)"),
        "unexpected timeout message: {message}"
    );

    collector.shutdown().await;
    Ok(())
}

#[test]
fn official_stubs_reject_fields_they_do_not_know() {
    // Field 7 does not exist in SegmentObject.
    let err = decode_with_official_stubs("segment", &[vec![0x38, 0x01]])
        .expect_err("an unknown field must not decode silently");
    assert!(
        format!("{err:#}").contains("unknown field"),
        "unexpected error: {err:#}"
    );
}
