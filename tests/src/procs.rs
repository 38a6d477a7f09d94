//! Child processes for end-to-end tests: Go fixture servers and the skyhook agent itself,
//! with their output read line by line so tests wait on what they print, never on sleeps.
use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    sync::watch,
};

use crate::collector::repo_root;

/// The agent binary: `$SKYHOOK_BIN`, else `target/release/skyhook` (built by `cargo xtask
/// test`, or by hand with `cargo build --release`).
pub fn skyhook_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SKYHOOK_BIN") {
        return Ok(p.into());
    }
    let p = repo_root()?.join("target/release/skyhook");
    if !p.exists() {
        bail!(
            "{} is missing: run `cargo build --release` (or `cargo xtask test`) first",
            p.display()
        );
    }
    Ok(p)
}

/// Lines a child printed so far, shared with a waiter.
#[derive(Clone, Default)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    changed: Arc<watch::Sender<usize>>,
}

impl Lines {
    fn push(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
            let n = l.len();
            self.changed.send_replace(n);
        }
    }

    pub fn all(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }

    /// Waits until some line satisfies `pred`, returning it.
    pub async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        deadline: Duration,
    ) -> anyhow::Result<String> {
        let mut rx = self.changed.subscribe();
        let found = tokio::time::timeout(deadline, async {
            loop {
                if let Some(l) = self.all().into_iter().find(|l| pred(l)) {
                    return Some(l);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(l)) => Ok(l),
            _ => bail!(
                "timed out after {deadline:?} waiting for {what}; output so far:\n{}",
                self.text()
            ),
        }
    }
}

fn pump(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static, lines: Lines) {
    tokio::spawn(async move {
        let mut r = BufReader::new(stream).lines();
        while let Ok(Some(line)) = r.next_line().await {
            lines.push(line);
        }
        // Wake waiters one last time so they see the end.
        lines.changed.send_modify(|_| {});
    });
}

/// A running child with its stdout and stderr captured.
pub struct Proc {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Proc {
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = Lines::default();
        let stderr = Lines::default();
        pump(child.stdout.take().context("stdout")?, stdout.clone());
        pump(child.stderr.take().context("stderr")?, stderr.clone());
        Ok(Proc {
            child,
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        let pid = self.pid();
        if pid == 0 {
            bail!("process already reaped");
        }
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid as i32, sig) };
        if rc != 0 {
            bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `sig` and waits for the exit, up to `deadline`.
    pub async fn stop(&mut self, sig: i32, deadline: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(sig)?;
        self.wait(deadline).await
    }

    pub async fn wait(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = self.child.start_kill();
                bail!(
                    "process did not exit within {deadline:?}; stderr:\n{}",
                    self.stderr.text()
                )
            }
        }
    }
}

/// A fixture HTTP server that printed `listening on ADDR`.
pub struct GoServer {
    pub proc: Proc,
    pub addr: String,
}

impl GoServer {
    /// Starts `exe` and waits for its `listening on` line.
    pub async fn start(
        exe: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<GoServer> {
        let proc = Proc::spawn(exe, args, env)?;
        let line = proc
            .stdout
            .wait_for(
                "the server's `listening on` line",
                |l| l.contains("listening on "),
                Duration::from_secs(20),
            )
            .await?;
        let addr = line
            .rsplit("listening on ")
            .next()
            .context("no address after `listening on`")?
            .trim()
            .to_string();
        Ok(GoServer { proc, addr })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A running `skyhook run`, started by [`Agent::attach`] once it has attached.
pub struct Agent {
    pub proc: Proc,
}

impl Agent {
    /// Runs `skyhook run --pid PID ARGS..` and waits until every pid is being traced.
    pub async fn attach(pids: &[u32], args: &[&str]) -> anyhow::Result<Agent> {
        let bin = skyhook_bin()?;
        let mut all: Vec<String> = vec!["run".into()];
        for pid in pids {
            all.push("--pid".into());
            all.push(pid.to_string());
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let proc = Proc::spawn(&bin, &all, &[("SKYHOOK_LOG", "info"), ("NO_COLOR", "1")])?;
        let agent = Agent { proc };
        for pid in pids {
            let needle = format!("pid={pid}");
            agent
                .proc
                .stderr
                .wait_for(
                    &format!("skyhook to trace pid {pid}"),
                    |l| (l.contains(" tracing") && l.contains(&needle)) || l.contains("error"),
                    Duration::from_secs(30),
                )
                .await?;
        }
        if let Some(err) = agent.proc.stderr.all().iter().find(|l| l.contains("error")) {
            bail!("skyhook failed to attach: {err}");
        }
        Ok(agent)
    }

    /// SIGINT, then waits for a clean exit.
    pub async fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.proc.stop(libc::SIGINT, Duration::from_secs(20)).await
    }
}
