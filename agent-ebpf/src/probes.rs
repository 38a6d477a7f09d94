use agent_common::{
    EventKind, GoidKey, GoroutineContext, GoroutineKey, HttpInFlight, HttpOffsets, http_flags,
    limits,
};
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_buf,
    },
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::ProbeContext,
};

/// Completed records for the agent; it drains them on a timer (no wake-ups from here).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(limits::EVENTS_RING_BYTES, 0);

/// Struct offsets per traced process, written by the agent before it attaches.
#[map]
static HTTP_OFFSETS: HashMap<u32, HttpOffsets> =
    HashMap::with_max_entries(limits::MAX_PROCESSES, 0);

/// Server requests whose entry was seen and whose return was not yet. LRU: a request whose
/// return never comes (a handler that panicked) is evicted instead of filling the map.
#[map]
static HTTP_SERVER_IN_FLIGHT: LruHashMap<GoroutineKey, HttpInFlight> =
    LruHashMap::with_max_entries(limits::MAX_IN_FLIGHT, 0);

/// Client round trips in flight, as above.
#[map]
static HTTP_CLIENT_IN_FLIGHT: LruHashMap<GoroutineKey, HttpInFlight> =
    LruHashMap::with_max_entries(limits::MAX_IN_FLIGHT, 0);

/// The request each goroutine works for (handler goroutines and their descendants), by goid.
#[map]
static GOROUTINE_CONTEXT: LruHashMap<GoidKey, GoroutineContext> =
    LruHashMap::with_max_entries(limits::MAX_GOROUTINE_CONTEXTS, 0);

/// Scratch space: an in-flight record is too large for the 512-byte BPF stack.
#[map]
static SCRATCH: PerCpuArray<HttpInFlight> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counter behind request ids.
#[map]
static REQUEST_COUNTER: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Go's amd64 register ABI (ABIInternal): integer arguments and results in RAX, RBX, RCX,
/// RDI, ...; the current goroutine's `g` in R14.
struct GoRegs {
    g: u64,
    args: [u64; 4],
}

fn go_regs(ctx: &ProbeContext) -> GoRegs {
    // SAFETY: `regs` is the pt_regs the kernel hands a uprobe program; reading it is a
    // context access the verifier checks.
    let r = unsafe { &*ctx.regs };
    GoRegs {
        g: r.r14,
        args: [r.rax, r.rbx, r.rcx, r.rdi],
    }
}

fn current_pid() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

/// Reads a `u64` from the traced process.
fn read_u64(addr: u64) -> Result<u64, i64> {
    // SAFETY: bpf_probe_read_user copes with any address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_user(addr as *const u64) }.map_err(|e| e as i64)
}

/// Copies a Go string (pointer, length at `addr`) into `dst`; returns the bytes kept and
/// whether the string was longer than `dst`.
fn read_go_string<const N: usize>(addr: u64, dst: &mut [u8; N]) -> Result<(u16, bool), i64> {
    let ptr = read_u64(addr)?;
    let len = read_u64(addr + 8)?;
    let truncated = len > N as u64;
    let n = if truncated { N } else { len as usize };
    if n == 0 {
        return Ok((0, false));
    }
    // The verifier needs an upper bound it can see on the slice length.
    let n = n & (2 * N - 1);
    if n > N {
        return Err(-1);
    }
    // SAFETY: as for read_u64; `dst[..n]` is in bounds (checked above).
    unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut dst[..n]) }.map_err(|e| e as i64)?;
    Ok((n as u16, truncated))
}

/// Reads a string field into `dst`, setting its length and the flags it earns.
#[inline(always)]
fn read_field<const N: usize>(
    addr: u64,
    dst: &mut [u8; N],
    len: &mut u16,
    flags: &mut u16,
    truncated_flag: u16,
) {
    match read_go_string::<N>(addr, dst) {
        Ok((n, t)) => {
            *len = n;
            if t {
                *flags |= truncated_flag;
            }
        }
        Err(_) => {
            *len = 0;
            *flags |= http_flags::READ_FAILED;
        }
    }
}

/// A new id, unique across CPUs for the life of the maps: the CPU in the top bits.
fn next_request_id() -> u64 {
    let Some(counter) = REQUEST_COUNTER.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU slot; programs on one CPU do not interleave.
    let n = unsafe {
        *counter += 1;
        *counter
    };
    // SAFETY: no preconditions.
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() });
    (cpu << 48) | (n & 0xffff_ffff_ffff)
}

/// Fills the common part of an entry record from a `*http.Request`: method, URL path, and
/// host (the `Host` header on the server, the URL's host on the client). Inlined: BPF calls
/// take at most five arguments.
#[inline(always)]
fn begin(
    regs: &GoRegs,
    pid: u32,
    tid: u32,
    off: &HttpOffsets,
    request: u64,
    kind: EventKind,
    rec: &mut HttpInFlight,
) {
    rec.request = request;
    rec.response = 0;
    rec.proto_major = 0;
    let ev = &mut rec.event;
    ev.kind = kind as u32;
    ev.pid = pid;
    ev.tid = tid;
    ev.status = 0;
    ev.goid = read_u64(regs.g + off.g_goid).unwrap_or(0);
    // SAFETY: no preconditions.
    ev.start_ns = unsafe { bpf_ktime_get_ns() };
    ev.end_ns = 0;
    ev.request_id = 0;
    ev.flags = 0;
    read_field(
        request + off.request_method,
        &mut ev.method,
        &mut ev.method_len,
        &mut ev.flags,
        http_flags::METHOD_TRUNCATED,
    );
    ev.path_len = 0;
    ev.host_len = 0;
    match read_u64(request + off.request_url) {
        Ok(url) if url != 0 => {
            read_field(
                url + off.url_path,
                &mut ev.path,
                &mut ev.path_len,
                &mut ev.flags,
                http_flags::PATH_TRUNCATED,
            );
            if kind == EventKind::HttpClientRequest {
                read_field(
                    url + off.url_host,
                    &mut ev.host,
                    &mut ev.host_len,
                    &mut ev.flags,
                    http_flags::HOST_TRUNCATED,
                );
            }
        }
        _ => ev.flags |= http_flags::READ_FAILED,
    }
    if kind == EventKind::HttpServerRequest {
        read_field(
            request + off.request_host,
            &mut ev.host,
            &mut ev.host_len,
            &mut ev.flags,
            http_flags::HOST_TRUNCATED,
        );
    }
}

/// The scratch record for a new entry of `request` on goroutine `key`, or `None` when this is
/// the same call entered again (after morestack or a preemption signal): that one keeps its
/// first start time. A different request on the goroutine replaces a stale entry.
#[inline(always)]
fn fresh_record(
    in_flight: &LruHashMap<GoroutineKey, HttpInFlight>,
    key: &GoroutineKey,
    request: u64,
) -> Option<&'static mut HttpInFlight> {
    // SAFETY: read-only look-up of a map value.
    if let Some(prev) = unsafe { in_flight.get(key) } {
        if prev.request == request {
            return None;
        }
    }
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch slot; programs on this CPU do not interleave.
    Some(unsafe { &mut *scratch })
}

/// The in-flight record of goroutine `key` with its end time set, or `None` when its entry
/// was not seen (attached mid-call): half a call is never reported.
#[inline(always)]
fn finished_record(
    in_flight: &LruHashMap<GoroutineKey, HttpInFlight>,
    key: &GoroutineKey,
) -> Option<&'static mut HttpInFlight> {
    let rec = in_flight.get_ptr_mut(key)?;
    // SAFETY: a map value pointer stays valid for the rest of this program run.
    let rec = unsafe { &mut *rec };
    // SAFETY: no preconditions.
    rec.event.end_ns = unsafe { bpf_ktime_get_ns() };
    Some(rec)
}

/// What an HTTP entry probe starts from.
struct Entered {
    off: &'static HttpOffsets,
    regs: GoRegs,
    key: GoroutineKey,
    request: u64,
    rec: &'static mut HttpInFlight,
}

/// The common start of the HTTP entry probes: the process's offsets, the goroutine, the
/// `*http.Request` (in argument register `request_arg`) and a fresh record filled by
/// [`begin`]; `None` for an untraced process or a call entered again.
#[inline(always)]
fn enter(
    ctx: &ProbeContext,
    in_flight: &LruHashMap<GoroutineKey, HttpInFlight>,
    kind: EventKind,
    request_arg: usize,
) -> Option<Entered> {
    let (pid, tid) = current_pid();
    // SAFETY: the map value is only read here; the agent writes it before attaching.
    let off = unsafe { HTTP_OFFSETS.get(&pid) }?;
    let regs = go_regs(ctx);
    let request = *regs.args.get(request_arg)?;
    let key = GoroutineKey {
        pid,
        _pad: 0,
        g: regs.g,
    };
    let rec = fresh_record(in_flight, &key, request)?;
    begin(&regs, pid, tid, off, request, kind, rec);
    Some(Entered {
        off,
        regs,
        key,
        request,
        rec,
    })
}

#[uprobe]
pub fn http_server_entry(ctx: ProbeContext) -> u32 {
    let _ = try_http_server_entry(&ctx);
    0
}

fn try_http_server_entry(ctx: &ProbeContext) -> Result<(), i64> {
    // serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request):
    // sh (one pointer) in RAX, rw (itab, data) in RBX and RCX, req in RDI.
    let Some(Entered {
        off,
        regs,
        key,
        request,
        rec,
    }) = enter(ctx, &HTTP_SERVER_IN_FLIGHT, EventKind::HttpServerRequest, 3)
    else {
        return Ok(());
    };
    let pid = key.pid;
    rec.response = regs.args[2];
    if off.status_readable != 0 {
        rec.proto_major = read_u64(request + off.request_proto_major).unwrap_or(0);
    }
    let request_id = next_request_id();
    rec.event.request_id = request_id;
    HTTP_SERVER_IN_FLIGHT
        .insert(&key, rec, 0)
        .map_err(|e| e as i64)?;
    // Everything this goroutine (and the goroutines it starts) calls belongs to this request.
    if rec.event.goid != 0 {
        let ctx_key = GoidKey {
            pid,
            _pad: 0,
            goid: rec.event.goid,
        };
        GOROUTINE_CONTEXT
            .insert(&ctx_key, &GoroutineContext { request_id }, 0)
            .map_err(|e| e as i64)?;
    }
    Ok(())
}

#[uprobe(multi)]
pub fn http_server_return(ctx: ProbeContext) -> u32 {
    let _ = try_http_server_return(&ctx);
    0
}

fn try_http_server_return(ctx: &ProbeContext) -> Result<(), i64> {
    let (pid, _) = current_pid();
    // SAFETY: read-only look-up of a map value.
    let Some(off) = (unsafe { HTTP_OFFSETS.get(&pid) }) else {
        return Ok(());
    };
    let regs = go_regs(ctx);
    let key = GoroutineKey {
        pid,
        _pad: 0,
        g: regs.g,
    };
    let Some(rec) = finished_record(&HTTP_SERVER_IN_FLIGHT, &key) else {
        return Ok(());
    };
    if off.status_readable != 0 && rec.proto_major == 1 {
        match read_u64(rec.response + off.response_status) {
            Ok(status) => rec.event.status = status as u32,
            Err(_) => rec.event.flags |= http_flags::READ_FAILED,
        }
    } else {
        rec.event.flags |= http_flags::STATUS_UNKNOWN;
    }
    let _ = EVENTS.output(&rec.event, BPF_RB_NO_WAKEUP as u64);
    let _ = HTTP_SERVER_IN_FLIGHT.remove(&key);
    // The connection's goroutine serves its next request under a new context.
    let ctx_key = GoidKey {
        pid,
        _pad: 0,
        goid: rec.event.goid,
    };
    let _ = GOROUTINE_CONTEXT.remove(&ctx_key);
    Ok(())
}

#[uprobe]
pub fn http_client_entry(ctx: ProbeContext) -> u32 {
    let _ = try_http_client_entry(&ctx);
    0
}

fn try_http_client_entry(ctx: &ProbeContext) -> Result<(), i64> {
    // (*Transport).roundTrip(req *Request): the receiver in RAX, req in RBX.
    let Some(Entered { key, rec, .. }) =
        enter(ctx, &HTTP_CLIENT_IN_FLIGHT, EventKind::HttpClientRequest, 1)
    else {
        return Ok(());
    };
    let pid = key.pid;
    let ctx_key = GoidKey {
        pid,
        _pad: 0,
        goid: rec.event.goid,
    };
    // SAFETY: read-only look-up of a map value.
    if let Some(c) = unsafe { GOROUTINE_CONTEXT.get(&ctx_key) } {
        rec.event.request_id = c.request_id;
    }
    HTTP_CLIENT_IN_FLIGHT
        .insert(&key, rec, 0)
        .map_err(|e| e as i64)?;
    Ok(())
}

#[uprobe(multi)]
pub fn http_client_return(ctx: ProbeContext) -> u32 {
    let _ = try_http_client_return(&ctx);
    0
}

fn try_http_client_return(ctx: &ProbeContext) -> Result<(), i64> {
    let (pid, _) = current_pid();
    // SAFETY: read-only look-up of a map value.
    let Some(off) = (unsafe { HTTP_OFFSETS.get(&pid) }) else {
        return Ok(());
    };
    // Results: (*Response) in RAX, error (itab, data) in RBX and RCX.
    let regs = go_regs(ctx);
    let key = GoroutineKey {
        pid,
        _pad: 0,
        g: regs.g,
    };
    let Some(rec) = finished_record(&HTTP_CLIENT_IN_FLIGHT, &key) else {
        return Ok(());
    };
    let response = regs.args[0];
    if regs.args[1] != 0 {
        rec.event.flags |= http_flags::ERROR;
    }
    if off.client_status_readable != 0 && response != 0 {
        match read_u64(response + off.client_status_code) {
            Ok(status) => rec.event.status = status as u32,
            Err(_) => rec.event.flags |= http_flags::READ_FAILED | http_flags::STATUS_UNKNOWN,
        }
    } else {
        rec.event.flags |= http_flags::STATUS_UNKNOWN;
    }
    let _ = EVENTS.output(&rec.event, BPF_RB_NO_WAKEUP as u64);
    let _ = HTTP_CLIENT_IN_FLIGHT.remove(&key);
    Ok(())
}

#[uprobe(multi)]
pub fn newproc_return(ctx: ProbeContext) -> u32 {
    let (pid, _) = current_pid();
    // SAFETY: read-only look-up; only processes the agent registered are followed.
    let Some(off) = (unsafe { HTTP_OFFSETS.get(&pid) }) else {
        return 0;
    };
    // newproc1 returns the new goroutine's g in RAX; it records who started it.
    let child = go_regs(&ctx).args[0];
    let (Ok(goid), Ok(parent)) = (
        read_u64(child + off.g_goid),
        read_u64(child + off.g_parent_goid),
    ) else {
        return 0;
    };
    let parent_key = GoidKey {
        pid,
        _pad: 0,
        goid: parent,
    };
    // SAFETY: read-only look-up of a map value.
    if let Some(c) = unsafe { GOROUTINE_CONTEXT.get(&parent_key) } {
        let c = *c;
        let _ = GOROUTINE_CONTEXT.insert(&GoidKey { pid, _pad: 0, goid }, &c, 0);
    }
    0
}

#[uprobe]
pub fn gopanic_entry(ctx: ProbeContext) -> u32 {
    let (pid, _) = current_pid();
    // SAFETY: read-only look-up; only processes the agent registered are followed.
    if unsafe { HTTP_OFFSETS.get(&pid) }.is_none() {
        return 0;
    }
    // gopanic runs on the panicking goroutine: R14 is its g.
    let key = GoroutineKey {
        pid,
        _pad: 0,
        g: go_regs(&ctx).g,
    };
    // A handler that panics may never return from ServeHTTP (net/http recovers the panic and
    // closes the connection): report a copy of its request now, marked; the agent keeps it
    // only if the normal record does not follow.
    if let Some(rec) = HTTP_SERVER_IN_FLIGHT.get_ptr_mut(&key) {
        // SAFETY: a map value pointer stays valid for the rest of this program run.
        let rec = unsafe { &mut *rec };
        let flags = rec.event.flags;
        // SAFETY: no preconditions.
        rec.event.end_ns = unsafe { bpf_ktime_get_ns() };
        rec.event.flags |= http_flags::PANICKED | http_flags::STATUS_UNKNOWN;
        let _ = EVENTS.output(&rec.event, BPF_RB_NO_WAKEUP as u64);
        rec.event.flags = flags;
        rec.event.end_ns = 0;
    }
    0
}
