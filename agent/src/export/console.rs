//! The console exporter, used when no collector is given: one readable tree per segment
//! (`text`) or one JSON object per line with the SegmentObject field names (`json`).
use std::io::Write;

use proto::sw::{RefType, SegmentObject, SpanLayer, SpanObject, SpanType};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn write_segment(
    out: &mut impl Write,
    seg: &SegmentObject,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, &segment_json(seg))?;
            out.write_all(b"\n")
        }
        Format::Text => write_text(out, seg),
    }
}

fn span_type_name(v: i32) -> &'static str {
    SpanType::try_from(v)
        .map(|t| t.as_str_name())
        .unwrap_or("Unknown")
}

fn span_layer_name(v: i32) -> &'static str {
    SpanLayer::try_from(v)
        .map(|t| t.as_str_name())
        .unwrap_or("Unknown")
}

/// A SegmentObject as JSON with the protocol's camelCase names and enums by name.
pub fn segment_json(seg: &SegmentObject) -> Value {
    json!({
        "traceId": seg.trace_id,
        "traceSegmentId": seg.trace_segment_id,
        "service": seg.service,
        "serviceInstance": seg.service_instance,
        "isSizeLimited": seg.is_size_limited,
        "spans": seg.spans.iter().map(span_json).collect::<Vec<_>>(),
    })
}

fn span_json(s: &SpanObject) -> Value {
    json!({
        "spanId": s.span_id,
        "parentSpanId": s.parent_span_id,
        "startTime": s.start_time,
        "endTime": s.end_time,
        "refs": s.refs.iter().map(|r| json!({
            "refType": RefType::try_from(r.ref_type).map(|t| t.as_str_name()).unwrap_or("CrossProcess"),
            "traceId": r.trace_id,
            "parentTraceSegmentId": r.parent_trace_segment_id,
            "parentSpanId": r.parent_span_id,
            "parentService": r.parent_service,
            "parentServiceInstance": r.parent_service_instance,
            "parentEndpoint": r.parent_endpoint,
            "networkAddressUsedAtPeer": r.network_address_used_at_peer,
        })).collect::<Vec<_>>(),
        "operationName": s.operation_name,
        "peer": s.peer,
        "spanType": span_type_name(s.span_type),
        "spanLayer": span_layer_name(s.span_layer),
        "componentId": s.component_id,
        "isError": s.is_error,
        "tags": s.tags.iter().map(|t| json!({"key": t.key, "value": t.value})).collect::<Vec<_>>(),
        "logs": s.logs.iter().map(|l| json!({
            "time": l.time,
            "data": l.data.iter().map(|t| json!({"key": t.key, "value": t.value})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "skipAnalysis": s.skip_analysis,
    })
}

fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

fn write_text(out: &mut impl Write, seg: &SegmentObject) -> std::io::Result<()> {
    writeln!(
        out,
        "segment {}  trace {}  {} ({})",
        seg.trace_segment_id, seg.trace_id, seg.service, seg.service_instance
    )?;
    let n = seg.spans.len();
    for (i, s) in seg.spans.iter().enumerate() {
        let branch = if i + 1 == n { "└─" } else { "├─" };
        let status = s
            .tags
            .iter()
            .find(|t| t.key == "status_code")
            .map(|t| t.value.as_str())
            .unwrap_or("-");
        writeln!(
            out,
            "  {branch} #{} {} {}  {}  {} ms  at {}{}{}",
            s.span_id,
            span_type_name(s.span_type),
            s.operation_name,
            status,
            s.end_time - s.start_time,
            format_ms(s.start_time),
            if s.peer.is_empty() {
                String::new()
            } else {
                format!("  peer {}", s.peer)
            },
            if s.is_error { "  ERROR" } else { "" },
        )?;
        let pad = if i + 1 == n { "     " } else { "  │  " };
        let tags: Vec<String> = s
            .tags
            .iter()
            .map(|t| format!("{}={}", t.key, t.value))
            .collect();
        writeln!(
            out,
            "  {pad}{} component {}  {}",
            span_layer_name(s.span_layer),
            s.component_id,
            tags.join(" ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::sw::KeyStringValuePair;

    fn segment() -> SegmentObject {
        SegmentObject {
            trace_id: "t1".into(),
            trace_segment_id: "s1".into(),
            service: "shop".into(),
            service_instance: "h@1".into(),
            is_size_limited: false,
            spans: vec![SpanObject {
                span_id: 0,
                parent_span_id: -1,
                start_time: 1_700_000_000_123,
                end_time: 1_700_000_000_130,
                operation_name: "GET:/fail".into(),
                span_type: SpanType::Entry as i32,
                span_layer: SpanLayer::Http as i32,
                component_id: 5004,
                is_error: true,
                tags: vec![KeyStringValuePair {
                    key: "status_code".into(),
                    value: "500".into(),
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn json_uses_protocol_names_and_enum_names() {
        let v = segment_json(&segment());
        assert_eq!(v["traceSegmentId"], "s1");
        assert_eq!(v["spans"][0]["spanType"], "Entry");
        assert_eq!(v["spans"][0]["spanLayer"], "Http");
        assert_eq!(v["spans"][0]["parentSpanId"], -1);
        assert_eq!(v["spans"][0]["isError"], true);
    }

    #[test]
    fn text_is_a_readable_tree() {
        let mut out = Vec::new();
        write_segment(&mut out, &segment(), Format::Text).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("segment s1  trace t1  shop (h@1)\n"),
            "{text}"
        );
        assert!(
            text.contains("└─ #0 Entry GET:/fail  500  7 ms  at 22:13:20.123Z  ERROR"),
            "{text}"
        );
    }
}
