//! The event ABI shared by the eBPF programs (`agent-ebpf`), the in-process hook engine and
//! the agent. Everything here is `#[repr(C)]` with explicit padding and a compile-time size
//! check, so that the kernel side and the user side cannot drift apart.
#![no_std]

/// Kinds of records written into the event ring.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// One whole net/http server request: entry and return were both seen.
    HttpServerRequest = 1,
    /// One whole net/http client round trip (`Transport.roundTrip`).
    HttpClientRequest = 2,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::HttpServerRequest),
            2 => Some(EventKind::HttpClientRequest),
            _ => None,
        }
    }
}

/// Bytes kept of the request method (`GET`, `OPTIONS`, ... fit easily).
pub const METHOD_MAX: usize = 16;
/// Bytes kept of the URL path; longer paths are truncated and flagged.
pub const PATH_MAX: usize = 256;
/// Bytes kept of the host (the `Host` header on the server, the URL's host on the client).
pub const HOST_MAX: usize = 64;

/// Flag bits of [`HttpRequest::flags`].
pub mod http_flags {
    /// The method did not fit in [`super::METHOD_MAX`] bytes.
    pub const METHOD_TRUNCATED: u16 = 1 << 0;
    /// The path did not fit in [`super::PATH_MAX`] bytes.
    pub const PATH_TRUNCATED: u16 = 1 << 1;
    /// The host did not fit in [`super::HOST_MAX`] bytes.
    pub const HOST_TRUNCATED: u16 = 1 << 2;
    /// The status could not be read (server: not net/http's HTTP/1 `response`; client: no
    /// response, or its offsets are unknown).
    pub const STATUS_UNKNOWN: u16 = 1 << 3;
    /// Reading some of the request from the traced process failed.
    pub const READ_FAILED: u16 = 1 << 4;
    /// The call returned a non-nil error (client: transport error, refused, timed out).
    pub const ERROR: u16 = 1 << 5;
    /// Server: the handler panicked. Written at the panic, as a copy of the in-flight record;
    /// if the panic is recovered inside the handler, the normal record follows at return.
    pub const PANICKED: u16 = 1 << 6;
}

/// One net/http request, written when the instrumented function returns: a server request
/// (`serverHandler.ServeHTTP`) or a client round trip (`Transport.roundTrip`).
///
/// Times are `CLOCK_MONOTONIC` nanoseconds (the kernel's `bpf_ktime_get_ns`); the agent turns
/// them into wall-clock milliseconds.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HttpRequest {
    /// An [`EventKind`] as u32: the first word of every record is its kind.
    pub kind: u32,
    /// Process id (thread group id) in the agent's pid namespace.
    pub pid: u32,
    /// Thread that ran the entry probe.
    pub tid: u32,
    /// HTTP status (0 when unknown).
    pub status: u32,
    /// Go goroutine id of the caller.
    pub goid: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The server request this belongs to: for a server request its own id, for a client
    /// call the id of the request whose goroutine (or an ancestor of it) made the call; 0 when
    /// the call happened outside any traced request.
    pub request_id: u64,
    pub method_len: u16,
    pub path_len: u16,
    pub host_len: u16,
    /// See [`http_flags`].
    pub flags: u16,
    pub method: [u8; METHOD_MAX],
    pub path: [u8; PATH_MAX],
    pub host: [u8; HOST_MAX],
}

const _: () = assert!(core::mem::size_of::<HttpRequest>() == 392);

/// Where one process keeps the fields the net/http probes read. Offsets are in bytes; the
/// agent fills one per traced process (keyed by pid) from DWARF or the offsets table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpOffsets {
    /// `runtime.g.goid`.
    pub g_goid: u64,
    /// `net/http.Request.Method` (a Go string: pointer, length).
    pub request_method: u64,
    /// `net/http.Request.URL` (a `*net/url.URL`).
    pub request_url: u64,
    /// `net/http.Request.Host` (a Go string).
    pub request_host: u64,
    /// `net/url.URL.Path` (a Go string).
    pub url_path: u64,
    /// `net/url.URL.Host` (a Go string).
    pub url_host: u64,
    /// `net/http.Request.ProtoMajor` (an int). net/http hands `serverHandler.ServeHTTP` its
    /// HTTP/1 `*response` exactly when the request is HTTP/1.x; HTTP/2 requests come with
    /// another writer type, whose fields are elsewhere.
    pub request_proto_major: u64,
    /// `net/http.response.status` (an int).
    pub response_status: u64,
    /// Non-zero when `response_status` and `request_proto_major` are known, so the server's
    /// return probe may read the status.
    pub status_readable: u64,
    /// `net/http.Response.StatusCode` (an int), for the client.
    pub client_status_code: u64,
    /// Non-zero when `client_status_code` is known.
    pub client_status_readable: u64,
    /// `runtime.g.parentGoid`: the goroutine that started this one.
    pub g_parent_goid: u64,
}

const _: () = assert!(core::mem::size_of::<HttpOffsets>() == 96);

/// Key of per-goroutine state: the goroutine (its `g` pointer) inside one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoroutineKey {
    pub pid: u32,
    pub _pad: u32,
    pub g: u64,
}

const _: () = assert!(core::mem::size_of::<GoroutineKey>() == 16);

/// Key of per-goroutine context: the goroutine's id inside one process. Go never reuses a
/// goroutine id, so a context can never be inherited by mistake from an earlier goroutine.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoidKey {
    pub pid: u32,
    pub _pad: u32,
    pub goid: u64,
}

const _: () = assert!(core::mem::size_of::<GoidKey>() == 16);

/// The traced request a goroutine works for. Set for the handler goroutine at the server
/// entry, copied to every goroutine it (or its descendants) start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineContext {
    pub request_id: u64,
}

const _: () = assert!(core::mem::size_of::<GoroutineContext>() == 8);

/// What an entry probe keeps until the return probe of the same goroutine fires.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HttpInFlight {
    /// The `*http.Request` argument: a second entry with the same request is the same call
    /// fired again (after `morestack` or a preemption signal), not a new request.
    pub request: u64,
    /// Server: the data word of the `ResponseWriter` interface argument, a
    /// `*net/http.response` when `proto_major` is 1.
    pub response: u64,
    /// Server: `Request.ProtoMajor` read at entry.
    pub proto_major: u64,
    pub event: HttpRequest,
}

const _: () = assert!(core::mem::size_of::<HttpInFlight>() == 416);

/// Map names, shared so that the agent looks up exactly what the programs define.
pub mod maps {
    pub const EVENTS: &str = "EVENTS";
    pub const HTTP_OFFSETS: &str = "HTTP_OFFSETS";
    pub const HTTP_SERVER_IN_FLIGHT: &str = "HTTP_SERVER_IN_FLIGHT";
    pub const HTTP_CLIENT_IN_FLIGHT: &str = "HTTP_CLIENT_IN_FLIGHT";
    pub const GOROUTINE_CONTEXT: &str = "GOROUTINE_CONTEXT";
}

/// Program names, shared so that the probe catalog names what the object file contains.
pub mod programs {
    pub const HTTP_SERVER_ENTRY: &str = "http_server_entry";
    pub const HTTP_SERVER_RETURN: &str = "http_server_return";
    pub const HTTP_CLIENT_ENTRY: &str = "http_client_entry";
    pub const HTTP_CLIENT_RETURN: &str = "http_client_return";
    pub const NEWPROC_RETURN: &str = "newproc_return";
    pub const GOPANIC_ENTRY: &str = "gopanic_entry";
}

/// Bounds of the kernel-side maps.
pub mod limits {
    /// Size of the event ring in bytes (a power of two, page-aligned).
    pub const EVENTS_RING_BYTES: u32 = 8 << 20;
    /// Processes whose offsets can be registered at once.
    pub const MAX_PROCESSES: u32 = 4096;
    /// Requests in flight across all traced processes; the oldest is evicted past this.
    pub const MAX_IN_FLIGHT: u32 = 16384;
    /// Goroutines carrying a request context; least recently used are evicted past this.
    pub const MAX_GOROUTINE_CONTEXTS: u32 = 65536;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: repr(C), no padding holes that carry meaning, every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::HttpOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GoroutineKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GoidKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GoroutineContext {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HttpInFlight {}
}
