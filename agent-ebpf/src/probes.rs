use agent_common::{
    EventKind, GoroutineKey, HOST_MAX, HttpServerInFlight, HttpServerOffsets, METHOD_MAX, PATH_MAX,
    http_flags, limits,
};
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf,
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
static HTTP_SERVER_OFFSETS: HashMap<u32, HttpServerOffsets> =
    HashMap::with_max_entries(limits::MAX_PROCESSES, 0);

/// Requests whose entry was seen and whose return was not yet. LRU: a request whose return
/// never comes (a handler that panicked) is evicted instead of filling the map.
#[map]
static HTTP_SERVER_IN_FLIGHT: LruHashMap<GoroutineKey, HttpServerInFlight> =
    LruHashMap::with_max_entries(limits::MAX_IN_FLIGHT, 0);

/// Scratch space: an in-flight record is too large for the 512-byte BPF stack.
#[map]
static SCRATCH: PerCpuArray<HttpServerInFlight> = PerCpuArray::with_max_entries(1, 0);

/// Go's amd64 register ABI (ABIInternal): integer arguments in RAX, RBX, RCX, RDI, ...; the
/// current goroutine's `g` in R14.
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

/// Reads a `u64` from the traced process; 0 when the read fails.
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

#[uprobe]
pub fn http_server_entry(ctx: ProbeContext) -> u32 {
    let _ = try_http_server_entry(&ctx);
    0
}

fn try_http_server_entry(ctx: &ProbeContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: the map value is only read here; the agent writes it before attaching.
    let Some(off) = (unsafe { HTTP_SERVER_OFFSETS.get(&pid) }) else {
        return Ok(());
    };
    // serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request):
    // sh (one pointer) in RAX, rw (itab, data) in RBX and RCX, req in RDI.
    let regs = go_regs(ctx);
    let request = regs.args[3];
    let key = GoroutineKey {
        pid,
        _pad: 0,
        g: regs.g,
    };
    // The same call entered again (after morestack or a preemption signal) keeps its first
    // start time; a different request on this goroutine replaces a stale entry.
    // SAFETY: read-only look-up of a map value.
    if let Some(prev) = unsafe { HTTP_SERVER_IN_FLIGHT.get(&key) } {
        if prev.request == request {
            return Ok(());
        }
    }

    let scratch = SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: per-CPU scratch slot; programs on this CPU do not interleave.
    let rec = unsafe { &mut *scratch };
    rec.request = request;
    rec.response = regs.args[2];
    rec.proto_major = if off.status_readable != 0 {
        read_u64(request + off.request_proto_major).unwrap_or(0)
    } else {
        0
    };
    let ev = &mut rec.event;
    ev.kind = EventKind::HttpServerRequest as u32;
    ev.pid = pid;
    ev.tid = pid_tgid as u32;
    ev.status = 0;
    ev.goid = read_u64(regs.g + off.g_goid).unwrap_or(0);
    // SAFETY: no preconditions.
    ev.start_ns = unsafe { bpf_ktime_get_ns() };
    ev.end_ns = 0;
    ev.flags = 0;

    match read_go_string::<METHOD_MAX>(request + off.request_method, &mut ev.method) {
        Ok((n, t)) => {
            ev.method_len = n;
            if t {
                ev.flags |= http_flags::METHOD_TRUNCATED;
            }
        }
        Err(_) => {
            ev.method_len = 0;
            ev.flags |= http_flags::READ_FAILED;
        }
    }
    match read_go_string::<HOST_MAX>(request + off.request_host, &mut ev.host) {
        Ok((n, t)) => {
            ev.host_len = n;
            if t {
                ev.flags |= http_flags::HOST_TRUNCATED;
            }
        }
        Err(_) => {
            ev.host_len = 0;
            ev.flags |= http_flags::READ_FAILED;
        }
    }
    ev.path_len = 0;
    match read_u64(request + off.request_url) {
        Ok(url) if url != 0 => match read_go_string::<PATH_MAX>(url + off.url_path, &mut ev.path) {
            Ok((n, t)) => {
                ev.path_len = n;
                if t {
                    ev.flags |= http_flags::PATH_TRUNCATED;
                }
            }
            Err(_) => ev.flags |= http_flags::READ_FAILED,
        },
        _ => ev.flags |= http_flags::READ_FAILED,
    }
    HTTP_SERVER_IN_FLIGHT
        .insert(&key, rec, 0)
        .map_err(|e| e as i64)?;
    Ok(())
}

#[uprobe(multi)]
pub fn http_server_return(ctx: ProbeContext) -> u32 {
    let _ = try_http_server_return(&ctx);
    0
}

fn try_http_server_return(ctx: &ProbeContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: read-only look-up of a map value.
    let Some(off) = (unsafe { HTTP_SERVER_OFFSETS.get(&pid) }) else {
        return Ok(());
    };
    let regs = go_regs(ctx);
    let key = GoroutineKey {
        pid,
        _pad: 0,
        g: regs.g,
    };
    let Some(rec) = HTTP_SERVER_IN_FLIGHT.get_ptr_mut(&key) else {
        // The entry was not seen (attached mid-request): never report half a request.
        return Ok(());
    };
    // SAFETY: a map value pointer stays valid for the rest of this program run.
    let rec = unsafe { &mut *rec };
    // SAFETY: no preconditions.
    rec.event.end_ns = unsafe { bpf_ktime_get_ns() };
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
    Ok(())
}
