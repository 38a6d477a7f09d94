//! Collect: drain the event ring on a timer and turn raw records into typed events.
//!
//! The programs submit with `BPF_RB_NO_WAKEUP`, so nothing wakes us: a woken consumer costs
//! about 5 us per event on these machines, a timer drain about 0.5 us.
use std::time::Duration;

use agent_common::{EventKind, HttpRequest, http_flags};
use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How often the ring is drained.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(5);

/// Which side of an HTTP exchange a probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpSide {
    /// `serverHandler.ServeHTTP`: an Entry span.
    Server,
    /// `Transport.roundTrip`: an Exit span.
    Client,
}

/// One HTTP request seen by a probe, decoded from its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpEvent {
    pub side: HttpSide,
    pub pid: u32,
    pub goid: u64,
    /// The server request this belongs to (0: none).
    pub request_id: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub method: String,
    pub path: String,
    /// Server: the `Host` header. Client: the URL's host, i.e. the peer dialled.
    pub host: String,
    /// `None` when the probe could not read the status.
    pub status: Option<u16>,
    /// The call returned an error (client transport errors).
    pub error: bool,
    /// Server: the handler's goroutine ended without returning (a recovered panic).
    pub panicked: bool,
    pub path_truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Http(HttpEvent),
}

/// Counters of the collect stage.
#[derive(Debug, Default, Clone, Copy)]
pub struct CollectStats {
    pub records: u64,
    pub malformed: u64,
    /// Events dropped because the assemble stage was full (drop newest).
    pub dropped_full: u64,
}

/// Decodes one ring record. Records are written by our own programs, but a short or unknown
/// record is still counted and skipped rather than trusted.
pub fn decode(record: &[u8]) -> Option<Event> {
    let kind = u32::from_ne_bytes(record.get(..4)?.try_into().ok()?);
    let side = match EventKind::from_u32(kind)? {
        EventKind::HttpServerRequest => HttpSide::Server,
        EventKind::HttpClientRequest => HttpSide::Client,
    };
    if record.len() < size_of::<HttpRequest>() {
        return None;
    }
    // SAFETY: the length was checked; HttpRequest is plain old data, and read_unaligned
    // copes with the ring's 8-byte alignment.
    let r: HttpRequest = unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<HttpRequest>()) };
    let text = |bytes: &[u8], len: u16| {
        let len = usize::from(len).min(bytes.len());
        String::from_utf8_lossy(&bytes[..len]).into_owned()
    };
    let status = if r.flags & http_flags::STATUS_UNKNOWN != 0 {
        None
    } else if r.status == 0 && side == HttpSide::Server {
        // The handler wrote nothing: net/http answers 200 after ServeHTTP returns.
        Some(200)
    } else {
        u16::try_from(r.status).ok().filter(|s| *s != 0)
    };
    Some(Event::Http(HttpEvent {
        side,
        pid: r.pid,
        goid: r.goid,
        request_id: r.request_id,
        start_ns: r.start_ns,
        end_ns: r.end_ns,
        method: text(&r.method, r.method_len),
        path: text(&r.path, r.path_len),
        host: text(&r.host, r.host_len),
        status,
        error: r.flags & http_flags::ERROR != 0,
        panicked: r.flags & http_flags::PANICKED != 0,
        path_truncated: r.flags & http_flags::PATH_TRUNCATED != 0,
    }))
}

/// Drains everything currently in the ring into `out`. Returns how many records were read.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    out: &mpsc::Sender<Event>,
    stats: &mut CollectStats,
) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        n += 1;
        stats.records += 1;
        match decode(&item) {
            Some(ev) => {
                if out.try_send(ev).is_err() {
                    stats.dropped_full += 1;
                    if stats.dropped_full.is_power_of_two() {
                        warn!(
                            dropped = stats.dropped_full,
                            "assemble stage is full, dropping newest events (route collect→assemble)"
                        );
                    }
                }
            }
            None => {
                stats.malformed += 1;
                debug!(len = item.len(), "malformed ring record");
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: EventKind, status: u32, flags: u16) -> Vec<u8> {
        // SAFETY: all-zero bytes are a valid HttpRequest (integers and byte arrays).
        let mut r: HttpRequest = unsafe { std::mem::zeroed() };
        r.kind = kind as u32;
        r.pid = 7;
        r.status = status;
        r.flags = flags;
        r.request_id = 99;
        r.method[..3].copy_from_slice(b"GET");
        r.method_len = 3;
        r.path[..3].copy_from_slice(b"/ok");
        r.path_len = 3;
        r.start_ns = 10;
        r.end_ns = 20;
        // SAFETY: the slice covers exactly the struct, which lives until the copy below.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&r as *const HttpRequest).cast::<u8>(),
                size_of::<HttpRequest>(),
            )
        };
        bytes.to_vec()
    }

    fn http(bytes: &[u8]) -> HttpEvent {
        match decode(bytes) {
            Some(Event::Http(e)) => e,
            None => panic!("not decoded"),
        }
    }

    #[test]
    fn decodes_server_and_client_requests() {
        let e = http(&record(EventKind::HttpServerRequest, 404, 0));
        assert_eq!(
            (
                e.side,
                e.method.as_str(),
                e.path.as_str(),
                e.status,
                e.request_id
            ),
            (HttpSide::Server, "GET", "/ok", Some(404), 99)
        );
        let e = http(&record(
            EventKind::HttpClientRequest,
            0,
            http_flags::ERROR | http_flags::STATUS_UNKNOWN,
        ));
        assert_eq!((e.side, e.status, e.error), (HttpSide::Client, None, true));
    }

    #[test]
    fn unwritten_server_status_is_200_and_unknown_is_none() {
        assert_eq!(
            http(&record(EventKind::HttpServerRequest, 0, 0)).status,
            Some(200)
        );
        let unknown = record(EventKind::HttpServerRequest, 0, http_flags::STATUS_UNKNOWN);
        assert_eq!(http(&unknown).status, None);
    }

    #[test]
    fn short_and_unknown_records_are_rejected() {
        assert_eq!(decode(&[]), None);
        assert_eq!(
            decode(&record(EventKind::HttpServerRequest, 200, 0)[..100]),
            None
        );
        assert_eq!(decode(&[9, 0, 0, 0, 1, 2, 3]), None);
    }

    #[test]
    fn oversized_lengths_are_clamped() {
        let mut r = record(EventKind::HttpServerRequest, 200, 0);
        let off = std::mem::offset_of!(HttpRequest, method_len);
        r[off..off + 2].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert_eq!(http(&r).method.len(), agent_common::METHOD_MAX);
    }
}
