//! `cargo xtask bench`: the fixture server under a fixed closed-loop load, untraced and
//! traced, alternating in one command. Numbers, not adjectives: throughput and latency ratios
//! against the untraced runs of the same command, agent CPU per span, agent peak RSS, and the
//! fixture server's own CPU per request (the in-process cost of the uprobes).
//!
//! One fixture server lives for the whole command, so the only difference between a traced
//! and an untraced run is the agent. Within a round the order of the two runs is swapped every
//! other round to cancel slow drift (thermal, page cache, other tenants).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use skyhook_tests::{
    Collector, Recorded, gobuild,
    procs::{Agent, GoServer, Lines},
};

/// The scenario name in the JSON report: the `net/http` fixture, a minimal handler.
const SCENARIO: &str = "nethttp-minimal";
/// How long the one-off warm-up of the fresh server lasts (not measured).
const WARMUP: Duration = Duration::from_secs(2);
/// Extra time a load run may take beyond its duration before it is called hung.
const LOADGEN_SLACK: Duration = Duration::from_secs(30);
/// How long to wait for late segments after the agent exited (it flushes before exiting, so
/// this only matters when something was lost).
const LATE_SEGMENTS: Duration = Duration::from_secs(2);
/// How long the server gets to shut down at the end.
const SERVER_STOP: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Rounds to run; each is one untraced and one traced run.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Closed-loop workers in the load generator (one request in flight each).
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Route of the fixture server to request.
    #[arg(long, default_value = "/ok")]
    route: String,
    /// Where traced runs export: `loopback` is a real SkyWalking gRPC collector in this
    /// process (export cost included); `console` makes the agent print JSON segments on its
    /// stdout instead.
    #[arg(long, value_enum, default_value_t = CollectorMode::Loopback)]
    collector: CollectorMode,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum CollectorMode {
    Loopback,
    Console,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Untraced,
    Traced,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Traced => "traced",
        }
    }
}

/// The load generator's one JSON line (`tests/fixtures/loadgen`).
#[derive(Clone, Debug, Deserialize, Serialize)]
struct Load {
    requests: u64,
    errors: u64,
    seconds: f64,
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    #[serde(default)]
    status: BTreeMap<String, u64>,
}

impl Load {
    /// Requests that got a response: each is one server span.
    fn responses(&self) -> u64 {
        self.requests.saturating_sub(self.errors)
    }
}

/// What a traced run measured about the agent.
#[derive(Clone, Debug, Serialize)]
struct AgentStats {
    /// utime+stime of the agent while the load ran.
    cpu_s: f64,
    /// utime+stime over the agent's whole life: attach, the run, and the flush at exit.
    lifetime_cpu_s: f64,
    /// VmHWM just before it was stopped.
    peak_rss_kib: u64,
    segments: u64,
    spans: u64,
    /// Spans by `operation status`.
    operations: BTreeMap<String, u64>,
    /// utime+stime of this process while the load ran: the loopback collector's cost
    /// (it shares the two cores with everything else).
    collector_cpu_s: f64,
    /// The agent's own counters from its last log lines (`received`, `sent`, `dropped`, ...).
    agent_counters: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
struct Run {
    round: u32,
    mode: Mode,
    load: Load,
    /// utime+stime of the fixture server while the load ran.
    server_cpu_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<AgentStats>,
}

impl Run {
    fn server_cpu_us_per_request(&self) -> Option<f64> {
        per(self.server_cpu_s * 1e6, self.load.requests)
    }

    fn agent_cpu_us_per_span(&self) -> Option<f64> {
        self.agent
            .as_ref()
            .and_then(|a| per(a.cpu_s * 1e6, a.spans))
    }
}

/// The JSON report: one scenario for now.
#[derive(Serialize)]
struct Report {
    scenarios: Vec<Scenario>,
}

#[derive(Serialize)]
struct Scenario {
    name: &'static str,
    mode: &'static str,
    rounds: u32,
    throughput_ratio: Option<f64>,
    p50_ratio: Option<f64>,
    p99_ratio: Option<f64>,
    agent_cpu_us_per_span: Option<f64>,
    agent_rss_mib: Option<f64>,
    server_cpu_us_per_request_untraced: Option<f64>,
    server_cpu_us_per_request_traced: Option<f64>,
    requests_traced: u64,
    spans_received: u64,
    // Context for the numbers above.
    route: String,
    concurrency: u32,
    duration_s: u64,
    cpus: usize,
    collector: CollectorMode,
    runs: Vec<Run>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.rounds == 0 || args.duration == 0 || args.concurrency == 0 {
        bail!("--rounds, --duration and --concurrency must all be at least 1");
    }
    if !args.route.starts_with('/') {
        bail!(
            "--route must be a path starting with `/`, got {:?}",
            args.route
        );
    }
    crate::require_root("bench")?;
    crate::build_agent()?;
    let server =
        gobuild::build("tests/fixtures/httpserver").context("building the fixture server")?;
    let loadgen =
        gobuild::build("tests/fixtures/loadgen").context("building the load generator")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let runs = runtime.block_on(bench(&args, &server, &loadgen))?;

    let summary = Summary::of(&runs);
    print_table(&args, &runs, &summary);
    if let Some(path) = &args.json {
        write_json(path, &args, runs, &summary)?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

async fn bench(args: &BenchArgs, server_exe: &Path, loadgen: &Path) -> anyhow::Result<Vec<Run>> {
    let mut server = GoServer::start(server_exe, &[], &[])
        .await
        .context("starting the fixture server")?;
    let url = server.url(&args.route);
    let duration = Duration::from_secs(args.duration);
    eprintln!(
        "bench: fixture server pid {} at {url}; warming up for {WARMUP:?}",
        server.pid()
    );
    let warm = run_loadgen(loadgen, &url, args.concurrency, WARMUP)
        .await
        .context("warm-up run")?;
    check_load(&warm, "warm-up")?;

    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 {
            [Mode::Untraced, Mode::Traced]
        } else {
            [Mode::Traced, Mode::Untraced]
        };
        for mode in order {
            eprintln!(
                "bench: round {round}/{}: {} run of {duration:?}",
                args.rounds,
                mode.name()
            );
            let run = match mode {
                Mode::Untraced => untraced_run(round, &server, loadgen, &url, args, duration).await,
                Mode::Traced => traced_run(round, &server, loadgen, &url, args, duration).await,
            }
            .with_context(|| format!("round {round}, {} run", mode.name()))?;
            eprintln!("bench:   {}", run_line(&run));
            runs.push(run);
        }
    }

    if let Err(e) = server.proc.stop(libc::SIGTERM, SERVER_STOP).await {
        eprintln!("bench: the fixture server did not stop cleanly: {e:#}");
    }
    Ok(runs)
}

async fn untraced_run(
    round: u32,
    server: &GoServer,
    loadgen: &Path,
    url: &str,
    args: &BenchArgs,
    duration: Duration,
) -> anyhow::Result<Run> {
    let server_pid = server.pid();
    let cpu0 = cpu_seconds(server_pid)?;
    let load = run_loadgen(loadgen, url, args.concurrency, duration).await?;
    let cpu1 = cpu_seconds(server_pid)?;
    check_load(&load, "untraced run")?;
    Ok(Run {
        round,
        mode: Mode::Untraced,
        load,
        server_cpu_s: cpu1 - cpu0,
        agent: None,
    })
}

async fn traced_run(
    round: u32,
    server: &GoServer,
    loadgen: &Path,
    url: &str,
    args: &BenchArgs,
    duration: Duration,
) -> anyhow::Result<Run> {
    let server_pid = server.pid();
    let collector = match args.collector {
        CollectorMode::Loopback => Some(
            Collector::start()
                .await
                .context("starting the loopback collector")?,
        ),
        CollectorMode::Console => None,
    };
    let agent_args: Vec<String> = match &collector {
        Some(c) => vec!["--collector".into(), c.addr().to_string()],
        None => vec!["--format".into(), "json".into()],
    };
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let children_cpu0 = children_cpu_seconds()?;
    let agent = Agent::attach(&[server_pid], &agent_args)
        .await
        .context("attaching skyhook to the fixture server")?;
    let agent_pid = agent.proc.pid();
    let (stdout, stderr) = (agent.proc.stdout.clone(), agent.proc.stderr.clone());

    let (agent0, server0, self0) = (
        cpu_seconds(agent_pid)?,
        cpu_seconds(server_pid)?,
        self_cpu_seconds()?,
    );
    let load = run_loadgen(loadgen, url, args.concurrency, duration).await;
    let (agent1, server1, self1) = (
        cpu_seconds(agent_pid)?,
        cpu_seconds(server_pid)?,
        self_cpu_seconds()?,
    );
    let peak_rss_kib = vm_hwm_kib(agent_pid)?;
    let load = load?;
    // The loadgen has been reaped: from here to the agent's exit, the only child reaped is
    // the agent, so the children's CPU counter grows by exactly the agent's lifetime CPU.
    let loadgen_cpu = children_cpu_seconds()? - children_cpu0;

    let status = agent
        .stop()
        .await
        .context("stopping the agent with SIGINT")?;
    let lifetime_cpu_s = children_cpu_seconds()? - children_cpu0 - loadgen_cpu;
    if !status.success() {
        bail!(
            "the agent exited with {status} after SIGINT; its log:\n{}",
            stderr.text()
        );
    }
    check_load(&load, "traced run")?;

    let received = match collector {
        Some(collector) => {
            let expected = load.responses();
            // The agent flushed before exiting; waiting only matters when spans were lost.
            let _ = collector
                .wait_for("every span", |r| span_count(r) >= expected, LATE_SEGMENTS)
                .await;
            let received = {
                let recorded = collector.watch();
                let r = recorded.borrow();
                let mut received = Received::default();
                for seg in &r.segments {
                    received.segment(seg.spans.iter().map(|span| {
                        let status = span.tags.iter().find(|t| t.key == STATUS_TAG);
                        (
                            span.operation_name.as_str(),
                            status.map(|t| t.value.as_str()),
                        )
                    }));
                }
                received
            };
            collector.shutdown().await;
            received
        }
        None => console_received(&stdout)?,
    };

    Ok(Run {
        round,
        mode: Mode::Traced,
        load,
        server_cpu_s: server1 - server0,
        agent: Some(AgentStats {
            cpu_s: agent1 - agent0,
            lifetime_cpu_s,
            peak_rss_kib,
            segments: received.segments,
            spans: received.spans,
            operations: received.operations,
            collector_cpu_s: self1 - self0,
            agent_counters: agent_counters(&stderr),
        }),
    })
}

/// Spans in every segment the collector has recorded.
fn span_count(recorded: &Recorded) -> u64 {
    recorded.segments.iter().map(|s| s.spans.len() as u64).sum()
}

/// The span tag holding the HTTP status code.
const STATUS_TAG: &str = "status_code";
/// Distinct `operation status` keys kept per run; the rest are counted under `<other>`.
const MAX_OPERATIONS: usize = 16;

/// What arrived from the agent in one traced run.
#[derive(Default)]
struct Received {
    segments: u64,
    spans: u64,
    /// Spans by `operation status`, so an unexpected extra span shows what it was.
    operations: BTreeMap<String, u64>,
}

impl Received {
    fn segment<'a>(&mut self, spans: impl Iterator<Item = (&'a str, Option<&'a str>)>) {
        self.segments += 1;
        for (operation, status) in spans {
            self.spans += 1;
            let key = format!("{operation} {}", status.unwrap_or("-"));
            if self.operations.len() < MAX_OPERATIONS || self.operations.contains_key(&key) {
                *self.operations.entry(key).or_insert(0) += 1;
            } else {
                *self.operations.entry("<other>".into()).or_insert(0) += 1;
            }
        }
    }
}

/// Segments and spans in the agent's console JSON output (one segment per line).
fn console_received(stdout: &Lines) -> anyhow::Result<Received> {
    let mut received = Received::default();
    for line in stdout.all() {
        if !line.starts_with('{') {
            continue;
        }
        let seg: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the agent printed a line that is not JSON: {line}"))?;
        let spans = seg
            .get("spans")
            .and_then(|s| s.as_array())
            .map_or(&[][..], |s| s.as_slice());
        received.segment(spans.iter().map(|span| {
            let operation = span
                .get("operationName")
                .and_then(|o| o.as_str())
                .unwrap_or("?");
            let status = span
                .get("tags")
                .and_then(|t| t.as_array())
                .and_then(|tags| {
                    tags.iter()
                        .find(|t| t.get("key").and_then(|k| k.as_str()) == Some(STATUS_TAG))
                })
                .and_then(|t| t.get("value"))
                .and_then(|v| v.as_str());
            (operation, status)
        }));
    }
    Ok(received)
}

/// `key=number` fields from the agent's `reporter finished` and `stopped` log lines.
fn agent_counters(stderr: &Lines) -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    for line in stderr.all() {
        if !(line.contains("reporter finished") || line.contains(" stopped")) {
            continue;
        }
        for token in line.split_whitespace() {
            if let Some((key, value)) = token.split_once('=')
                && let Ok(n) = value.parse::<u64>()
            {
                counters.insert(key.to_string(), n);
            }
        }
    }
    counters
}

async fn run_loadgen(
    loadgen: &Path,
    url: &str,
    concurrency: u32,
    duration: Duration,
) -> anyhow::Result<Load> {
    let mut cmd = tokio::process::Command::new(loadgen);
    // No loadgen warm-up: every request the server sees is counted, so requests and spans
    // can be compared exactly. The server itself was warmed up once at the start.
    cmd.args([
        "-url",
        url,
        "-c",
        &concurrency.to_string(),
        "-d",
        &format!("{}ms", duration.as_millis()),
    ])
    .args(["-warmup", "0s"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let output = tokio::time::timeout(duration + LOADGEN_SLACK, cmd.output())
        .await
        .with_context(|| {
            format!(
                "the load generator did not finish within {:?}",
                duration + LOADGEN_SLACK
            )
        })?
        .with_context(|| format!("running {}", loadgen.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "the load generator failed ({}): {}",
            output.status,
            stderr.trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| {
            format!(
                "the load generator printed no JSON line; stdout: {stdout:?}, stderr: {:?}",
                stderr.trim()
            )
        })?;
    let load: Load = serde_json::from_str(line)
        .with_context(|| format!("parsing the load generator's output: {line}"))?;
    if load.errors > 0 {
        eprintln!("bench:   load generator: {}", stderr.trim());
    }
    Ok(load)
}

/// A run where no request got a response measures nothing: stop there.
fn check_load(load: &Load, what: &str) -> anyhow::Result<()> {
    if load.responses() == 0 {
        bail!(
            "{what}: none of {} requests got a response ({} transport errors)",
            load.requests,
            load.errors
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Process accounting from /proc and getrusage.

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime of every thread of `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    proc_stat_cpu(&format!("/proc/{pid}/stat"))
}

fn self_cpu_seconds() -> anyhow::Result<f64> {
    proc_stat_cpu("/proc/self/stat")
}

fn proc_stat_cpu(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu(&stat).map_err(|e| anyhow::anyhow!("{path}: {e}"))
}

/// Fields 14 and 15 of `/proc/PID/stat` (utime, stime), counted after the `(comm)` field,
/// which may itself contain spaces and parentheses.
fn parse_stat_cpu(stat: &str) -> Result<f64, &'static str> {
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or("no `)` after the command name")?;
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || -> Result<u64, &'static str> {
        fields
            .next()
            .ok_or("too few fields")?
            .parse::<u64>()
            .map_err(|_| "utime/stime is not a number")
    };
    let ticks = next()? + next()?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// Peak resident set size (`VmHWM`) of `pid`, in KiB.
fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM line in {path}"))
}

/// CPU time of every child of this process that has been waited for, in seconds.
fn children_cpu_seconds() -> anyhow::Result<f64> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        bail!(
            "getrusage(RUSAGE_CHILDREN): {}",
            std::io::Error::last_os_error()
        );
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(usage.ru_utime) + secs(usage.ru_stime))
}

// ---------------------------------------------------------------------------------------------
// Summary and output.

fn per(total: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| total / n as f64)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

struct Summary {
    /// Medians of the per-round traced/untraced ratios.
    throughput_ratio: Option<f64>,
    p50_ratio: Option<f64>,
    p99_ratio: Option<f64>,
    rps_untraced: Option<f64>,
    rps_traced: Option<f64>,
    agent_cpu_us_per_span: Option<f64>,
    agent_lifetime_cpu_s: Option<f64>,
    /// The largest VmHWM over all traced runs.
    agent_peak_rss_mib: Option<f64>,
    server_cpu_us_untraced: Option<f64>,
    server_cpu_us_traced: Option<f64>,
    collector_cpu_us_per_span: Option<f64>,
    requests_traced: u64,
    spans_received: u64,
    errors_untraced: u64,
    errors_traced: u64,
}

impl Summary {
    fn of(runs: &[Run]) -> Summary {
        let of_mode = |m: Mode| runs.iter().filter(move |r| r.mode == m);
        let pairs: Vec<(&Run, &Run)> = of_mode(Mode::Traced)
            .filter_map(|t| {
                of_mode(Mode::Untraced)
                    .find(|u| u.round == t.round)
                    .map(|u| (t, u))
            })
            .collect();
        let pair_ratio = |f: fn(&Load) -> f64| {
            median(
                pairs
                    .iter()
                    .filter_map(|(t, u)| ratio(f(&t.load), f(&u.load)))
                    .collect(),
            )
        };
        let agents = || of_mode(Mode::Traced).filter_map(|r| r.agent.as_ref());
        Summary {
            throughput_ratio: pair_ratio(|l| l.rps),
            p50_ratio: pair_ratio(|l| l.p50_us),
            p99_ratio: pair_ratio(|l| l.p99_us),
            rps_untraced: median(of_mode(Mode::Untraced).map(|r| r.load.rps).collect()),
            rps_traced: median(of_mode(Mode::Traced).map(|r| r.load.rps).collect()),
            agent_cpu_us_per_span: median(
                of_mode(Mode::Traced)
                    .filter_map(Run::agent_cpu_us_per_span)
                    .collect(),
            ),
            agent_lifetime_cpu_s: median(agents().map(|a| a.lifetime_cpu_s).collect()),
            agent_peak_rss_mib: agents()
                .map(|a| a.peak_rss_kib)
                .max()
                .map(|k| k as f64 / 1024.0),
            server_cpu_us_untraced: median(
                of_mode(Mode::Untraced)
                    .filter_map(Run::server_cpu_us_per_request)
                    .collect(),
            ),
            server_cpu_us_traced: median(
                of_mode(Mode::Traced)
                    .filter_map(Run::server_cpu_us_per_request)
                    .collect(),
            ),
            collector_cpu_us_per_span: median(
                agents()
                    .filter_map(|a| per(a.collector_cpu_s * 1e6, a.spans))
                    .collect(),
            ),
            requests_traced: of_mode(Mode::Traced).map(|r| r.load.responses()).sum(),
            spans_received: agents().map(|a| a.spans).sum(),
            errors_untraced: of_mode(Mode::Untraced).map(|r| r.load.errors).sum(),
            errors_traced: of_mode(Mode::Traced).map(|r| r.load.errors).sum(),
        }
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.decimals$}"))
}

fn run_line(r: &Run) -> String {
    let mut line = format!(
        "{} requests, {} errors, {:.0} rps, p50 {:.0} us, p99 {:.0} us, server {} us/req",
        r.load.requests,
        r.load.errors,
        r.load.rps,
        r.load.p50_us,
        r.load.p99_us,
        fmt_opt(r.server_cpu_us_per_request(), 1),
    );
    if let Some(a) = &r.agent {
        line += &format!(
            ", agent {} us/span, {} spans, peak RSS {:.1} MiB",
            fmt_opt(r.agent_cpu_us_per_span(), 1),
            a.spans,
            a.peak_rss_kib as f64 / 1024.0
        );
    }
    line
}

fn print_table(args: &BenchArgs, runs: &[Run], s: &Summary) {
    let cpus = cpus();
    let export = match args.collector {
        CollectorMode::Loopback => "a SkyWalking gRPC collector in this process, on loopback",
        CollectorMode::Console => "the agent's stdout (console JSON)",
    };
    println!();
    println!(
        "skyhook bench: {SCENARIO}, GET {} with {} closed-loop workers, {} round(s) of {} s per mode",
        args.route, args.concurrency, args.rounds, args.duration
    );
    println!("traced runs export to {export}");
    println!(
        "machine: {cpus} CPU(s), nothing pinned: load generator, fixture server, agent{} compete for them",
        if args.collector == CollectorMode::Loopback {
            " and collector"
        } else {
            ""
        }
    );
    if cfg!(debug_assertions) && args.collector == CollectorMode::Loopback {
        println!(
            "note: this xtask is a debug build, so the loopback collector (tonic and prost in this \
             process) takes several times the CPU it takes in release \
             (`cargo run --release -p xtask -- bench`)"
        );
    }
    println!();
    println!(
        "{:>5}  {:<8}  {:>9}  {:>6}  {:>9}  {:>8}  {:>8}  {:>13}  {:>14}  {:>9}",
        "round",
        "mode",
        "requests",
        "errors",
        "rps",
        "p50 us",
        "p99 us",
        "server us/req",
        "agent us/span",
        "spans"
    );
    for r in runs {
        let (agent, spans) = match &r.agent {
            Some(a) => (fmt_opt(r.agent_cpu_us_per_span(), 1), a.spans.to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:>5}  {:<8}  {:>9}  {:>6}  {:>9.1}  {:>8.1}  {:>8.1}  {:>13}  {:>14}  {:>9}",
            r.round,
            r.mode.name(),
            r.load.requests,
            r.load.errors,
            r.load.rps,
            r.load.p50_us,
            r.load.p99_us,
            fmt_opt(r.server_cpu_us_per_request(), 1),
            agent,
            spans
        );
    }
    let odd_status: BTreeMap<&str, u64> = runs
        .iter()
        .flat_map(|r| r.load.status.iter())
        .filter(|(code, _)| !code.starts_with('2'))
        .fold(BTreeMap::new(), |mut m, (code, n)| {
            *m.entry(code.as_str()).or_insert(0) += n;
            m
        });

    let loss = match s.spans_received.cmp(&s.requests_traced) {
        std::cmp::Ordering::Equal => "none lost, none extra".to_string(),
        std::cmp::Ordering::Less => format!("{} lost", s.requests_traced - s.spans_received),
        std::cmp::Ordering::Greater => format!(
            "{} extra; loadgen leaves up to {} requests per run uncounted, those its workers \
             start before measuring begins",
            s.spans_received - s.requests_traced,
            args.concurrency
        ),
    };
    let server_delta = s
        .server_cpu_us_traced
        .zip(s.server_cpu_us_untraced)
        .map(|(t, u)| t - u);
    println!();
    println!(
        "summary: medians over {} round(s); ratios are traced / untraced within a round",
        args.rounds
    );
    let row = |name: &str, value: String| println!("  {name:<37} {value}");
    row(
        "throughput ratio",
        format!(
            "{}   (rps untraced {}, traced {})",
            fmt_opt(s.throughput_ratio, 3),
            fmt_opt(s.rps_untraced, 0),
            fmt_opt(s.rps_traced, 0)
        ),
    );
    row("p50 latency ratio", fmt_opt(s.p50_ratio, 3));
    row("p99 latency ratio", fmt_opt(s.p99_ratio, 3));
    row(
        "agent CPU per span",
        format!("{} us", fmt_opt(s.agent_cpu_us_per_span, 1)),
    );
    row(
        "agent CPU per run incl. attach+flush",
        format!("{} s", fmt_opt(s.agent_lifetime_cpu_s, 2)),
    );
    row(
        "agent peak RSS (max over runs)",
        format!("{} MiB", fmt_opt(s.agent_peak_rss_mib, 1)),
    );
    row(
        "server CPU per request",
        format!(
            "untraced {} us, traced {} us (+{} us: uprobe traps in the server)",
            fmt_opt(s.server_cpu_us_untraced, 1),
            fmt_opt(s.server_cpu_us_traced, 1),
            fmt_opt(server_delta, 1)
        ),
    );
    if args.collector == CollectorMode::Loopback {
        row(
            "collector CPU per span (this proc)",
            format!("{} us", fmt_opt(s.collector_cpu_us_per_span, 1)),
        );
    }
    row(
        "spans received / traced responses",
        format!("{} / {} ({loss})", s.spans_received, s.requests_traced),
    );
    row(
        "transport errors",
        format!("untraced {}, traced {}", s.errors_untraced, s.errors_traced),
    );
    if !odd_status.is_empty() {
        row("non-2xx responses", format!("{odd_status:?}"));
    }
    for r in runs {
        if let Some(a) = &r.agent
            && (a.spans < r.load.responses()
                || a.spans > r.load.responses() + u64::from(args.concurrency)
                || a.agent_counters.get("dropped").is_some_and(|d| *d > 0))
        {
            println!(
                "  round {}: {} spans for {} responses; spans by operation and status {:?}; \
                 agent counters {:?}",
                r.round,
                a.spans,
                r.load.responses(),
                a.operations,
                a.agent_counters
            );
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn write_json(path: &Path, args: &BenchArgs, runs: Vec<Run>, s: &Summary) -> anyhow::Result<()> {
    let report = Report {
        scenarios: vec![Scenario {
            name: SCENARIO,
            mode: "ebpf",
            rounds: args.rounds,
            throughput_ratio: s.throughput_ratio,
            p50_ratio: s.p50_ratio,
            p99_ratio: s.p99_ratio,
            agent_cpu_us_per_span: s.agent_cpu_us_per_span,
            agent_rss_mib: s.agent_peak_rss_mib,
            server_cpu_us_per_request_untraced: s.server_cpu_us_untraced,
            server_cpu_us_per_request_traced: s.server_cpu_us_traced,
            requests_traced: s.requests_traced,
            spans_received: s.spans_received,
            route: args.route.clone(),
            concurrency: args.concurrency,
            duration_s: args.duration,
            cpus: cpus(),
            collector: args.collector,
            runs,
        }],
    };
    let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_comm() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 0 0";
        let cpu = parse_stat_cpu(stat).map_err(anyhow::Error::msg);
        let expected = 300.0 / clock_ticks_per_second();
        assert!(
            matches!(cpu, Ok(c) if (c - expected).abs() < 1e-9),
            "{cpu:?}"
        );
    }

    #[test]
    fn median_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
