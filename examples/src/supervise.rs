//! Child processes of `mesh-demo`: start a binary with its output going to a
//! log file, wait (bounded) for the one line that says it is up, and stop
//! every child by PID at the end. Reads: the child's announcing stream
//! (stdout for the demo apps, stderr for the sidecar). Writes: everything
//! the child prints, to its log file. Errors: spawn and log-file failures,
//! and a child that exits or stays silent instead of announcing itself (the
//! error carries the tail of its log).
//!
//! [`Children`] is also the guard that keeps children from outliving the
//! runner: dropping it kills whatever is still running.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tracing::Instrument as _;

/// How long a child gets to print its announce line.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(15);
/// How many lines of a failed child's log go into the error.
const LOG_TAIL_LINES: usize = 20;

/// Which of the child's output streams carries the announce line; the other
/// one goes straight to the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceOn {
    Stdout,
    Stderr,
}

/// One child to start.
#[derive(Debug)]
pub struct Spec {
    /// Short name for messages (`web sidecar`, `demo-rest`).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Everything the child prints ends up here (truncated at start).
    pub log: PathBuf,
    pub announce_on: AnnounceOn,
}

/// A started child.
#[derive(Debug)]
struct Running {
    name: String,
    log: PathBuf,
    pid: u32,
    child: Child,
}

/// A child that exited while the runner was waiting.
#[derive(Debug)]
pub struct Exited {
    pub name: String,
    pub log: PathBuf,
    pub status: std::io::Result<ExitStatus>,
}

/// The running children, in start order. Dropping it kills them all.
#[derive(Debug, Default)]
pub struct Children {
    running: Vec<Running>,
}

impl Children {
    /// Starts `spec` and waits up to [`ANNOUNCE_TIMEOUT`] for a line that
    /// `announce` recognises, returning what it parsed. Until then, and
    /// after, the child's output is copied into its log file.
    pub async fn start<T>(
        &mut self,
        spec: Spec,
        announce: impl Fn(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let log = open_log(&spec.log)?;
        let direct = Stdio::from(log.try_clone().context("cloning a log file handle")?);
        let mut command = Command::new(&spec.program);
        // Everything goes to files, so no colour codes (tracing-subscriber honours NO_COLOR).
        command
            .args(&spec.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        match spec.announce_on {
            AnnounceOn::Stdout => command.stdout(Stdio::piped()).stderr(direct),
            AnnounceOn::Stderr => command.stdout(direct).stderr(Stdio::piped()),
        };
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", spec.program.display()))?;
        let pid = child.id().context("a just-started child has no PID")?;
        let stream: Box<dyn AsyncRead + Send + Unpin> = match spec.announce_on {
            AnnounceOn::Stdout => Box::new(child.stdout.take().context("child stdout not piped")?),
            AnnounceOn::Stderr => Box::new(child.stderr.take().context("child stderr not piped")?),
        };
        // From here on the guard owns the child: any early return kills it.
        self.running.push(Running {
            name: spec.name.clone(),
            log: spec.log.clone(),
            pid,
            child,
        });

        let mut reader = BufReader::new(stream);
        let mut log = tokio::fs::File::from_std(log);
        let waited = tokio::time::timeout(ANNOUNCE_TIMEOUT, async {
            let mut line = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line).await? == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                log.write_all(&line).await?;
                if let Some(found) = announce(String::from_utf8_lossy(&line).trim_end()) {
                    return Ok(Some(found));
                }
            }
        })
        .await;
        let _ = log.flush().await;

        let failure = match waited {
            Ok(Ok(Some(found))) => {
                // Keep draining the pipe so the child never blocks on a full one.
                let span = tracing::debug_span!("log_copy", child = %spec.name);
                tokio::spawn(
                    async move {
                        // Ends at EOF, when the child exits.
                        if let Err(error) = tokio::io::copy_buf(&mut reader, &mut log).await {
                            tracing::debug!(%error, "copying child output stopped");
                        }
                    }
                    .instrument(span),
                );
                return Ok(found);
            }
            Ok(Ok(None)) => match self.exit_status(pid).await {
                Some(status) => format!("exited ({status}) before saying it was up"),
                None => "closed its output before saying it was up".to_owned(),
            },
            Ok(Err(error)) => format!("reading its output failed: {error}"),
            Err(_) => format!(
                "did not say it was up within {}s",
                ANNOUNCE_TIMEOUT.as_secs()
            ),
        };
        bail!(
            "{} {failure}; last lines of {}:\n{}",
            spec.name,
            spec.log.display(),
            log_tail(&spec.log)
        )
    }

    /// Resolves when any child exits. Pending forever when there are none.
    pub async fn first_exit(&mut self) -> Exited {
        if self.running.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.running.iter_mut().map(|running| {
            Box::pin(async move {
                Exited {
                    status: running.child.wait().await,
                    name: running.name.clone(),
                    log: running.log.clone(),
                }
            })
        });
        let (exited, _, _) = futures_util::future::select_all(waits).await;
        exited
    }

    /// Sends SIGTERM to every child (newest first), gives each until `grace`
    /// after that to exit, then kills what is left. Prints one line per child.
    pub async fn stop(&mut self, grace: Duration) {
        for running in self.running.iter_mut().rev() {
            // One that already exited has nothing to be told (and its PID may be reused).
            if matches!(running.child.try_wait(), Ok(None)) {
                send_sigterm(running.pid).await;
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while let Some(mut running) = self.running.pop() {
            let name = &running.name;
            match tokio::time::timeout_at(deadline, running.child.wait()).await {
                Ok(Ok(status)) if status.success() => println!("  stopped {name}"),
                Ok(Ok(status)) => println!("  stopped {name} ({status})"),
                Ok(Err(error)) => println!("  stopped {name} (cannot read its status: {error})"),
                Err(_) => {
                    println!(
                        "  {name} still running {}s after SIGTERM; killing it",
                        grace.as_secs()
                    );
                    if let Err(error) = running.child.kill().await {
                        println!("  cannot kill {name} (pid {}): {error}", running.pid);
                    }
                }
            }
        }
    }

    /// The exit status of the child `pid`, if it has exited or does so
    /// within a second (a closed pipe usually means it is on its way out).
    async fn exit_status(&mut self, pid: u32) -> Option<ExitStatus> {
        let running = self.running.iter_mut().find(|running| running.pid == pid)?;
        tokio::time::timeout(Duration::from_secs(1), running.child.wait())
            .await
            .ok()?
            .ok()
    }
}

impl Drop for Children {
    /// The runner failed or panicked before [`Children::stop`]: no graceful
    /// drain, just make sure nothing outlives it.
    fn drop(&mut self) {
        for running in &mut self.running {
            if matches!(running.child.try_wait(), Ok(None)) {
                let _ = running.child.start_kill();
                let _ = running.child.try_wait();
            }
        }
    }
}

/// `kill -TERM <pid>`; a failure is printed, and the kill after the grace
/// period takes care of that child.
async fn send_sigterm(pid: u32) {
    let result = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .status()
        .await;
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => println!("  kill -TERM {pid} failed ({status})"),
        Err(error) => println!("  cannot run kill -TERM {pid}: {error}"),
    }
}

/// Creates or truncates `path`, opened for appending so that the child's
/// direct output and the copied pipe share it without overwriting each other.
fn open_log(path: &Path) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.set_len(0)
        .with_context(|| format!("truncating {}", path.display()))?;
    Ok(file)
}

/// The last lines of a log file, indented, for an error message.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => "    (empty)".to_owned(),
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..]
                .iter()
                .map(|line| format!("    {line}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(error) => format!("    (cannot read it: {error})"),
    }
}
