//! `shell`: runs a command with `sh -c` in a workspace directory.
//!
//! The command runs in its own process group with a cleared environment (only `PATH`,
//! `HOME` and `LANG` are passed on, so secrets in the agent's environment do not leak), no
//! standard input, and a time limit. When the command exits, times out or the call is
//! dropped, its whole process group is killed, so background processes it started do not
//! outlive it. The workspace is only the working directory: the shell is not confined,
//! which is why the tool is [`Risk::Dangerous`] and needs approval by default.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pocket_agent::{Risk, Tool, ToolContext, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::config::{DEFAULT_SHELL_MAX_OUTPUT_BYTES, DEFAULT_SHELL_TIMEOUT_SECS};
use crate::files::Workspace;
use crate::text::lossy_text;

/// Environment variables passed on to commands; all others are cleared.
pub const PASSED_ENV: &[&str] = &["PATH", "HOME", "LANG"];

/// Arguments of [`Shell`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellArgs {
    /// The command line, run with `sh -c` in the workspace directory.
    pub command: String,
}

/// What [`Shell`] returns. A non-zero exit code is a result too, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellOutput {
    /// The exit code; `None` when the command was ended by a signal.
    pub exit_code: Option<i32>,
    /// The signal that ended the command, if any (Unix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Standard output; invalid UTF-8 is replaced by U+FFFD.
    pub stdout: String,
    /// Standard error; invalid UTF-8 is replaced by U+FFFD.
    pub stderr: String,
    /// Whether stdout or stderr was cut at the output limit.
    pub truncated: bool,
}

/// The `shell` tool: runs `sh -c COMMAND` in the workspace with a time limit.
///
/// [`Risk::Dangerous`], not idempotent. Passing the time limit kills the command and is
/// [`ToolError::Timeout`]; cancelling the run kills it and is [`ToolError::Cancelled`].
#[derive(Debug, Clone)]
pub struct Shell {
    workspace: Workspace,
    timeout: Duration,
    max_output_bytes: usize,
}

impl Shell {
    /// Runs commands in `workspace`, with the defaults: a 30 s time limit and 64 KiB of
    /// stdout and of stderr.
    pub fn new(workspace: Workspace) -> Self {
        Self {
            workspace,
            timeout: Duration::from_secs(DEFAULT_SHELL_TIMEOUT_SECS),
            max_output_bytes: usize::try_from(DEFAULT_SHELL_MAX_OUTPUT_BYTES).unwrap_or(usize::MAX),
        }
    }

    /// Sets the time limit of one command.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest stdout, and separately stderr, returned, in bytes.
    #[must_use]
    pub fn with_max_output_bytes(mut self, max_output_bytes: usize) -> Self {
        self.max_output_bytes = max_output_bytes;
        self
    }

    async fn run(&self, command: &str) -> Result<ShellOutput, ToolError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(self.workspace.root())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in PASSED_ENV {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| ToolError::failed(format!("cannot start `sh`: {e}")))?;
        let group = GroupKiller::new(child.id());
        let stdout = read_capped(child.stdout.take(), self.max_output_bytes);
        let stderr = read_capped(child.stderr.take(), self.max_output_bytes);
        let wait = async {
            let status = child.wait().await;
            // Background processes still holding the pipes would keep the reads open.
            group.kill();
            status
        };
        let (status, stdout, stderr) = tokio::join!(wait, stdout, stderr);
        let status =
            status.map_err(|e| ToolError::failed(format!("waiting for `sh` failed: {e}")))?;
        let read_failed =
            |e: std::io::Error| ToolError::failed(format!("reading output failed: {e}"));
        let (stdout, out_cut) = stdout.map_err(read_failed)?;
        let (stderr, err_cut) = stderr.map_err(read_failed)?;
        #[cfg(unix)]
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        #[cfg(not(unix))]
        let signal = None;
        Ok(ShellOutput {
            exit_code: status.code(),
            signal,
            stdout: lossy_text(stdout, out_cut),
            stderr: lossy_text(stderr, err_cut),
            truncated: out_cut || err_cut,
        })
    }
}

impl Tool for Shell {
    type Args = ShellArgs;
    type Output = ShellOutput;

    fn name(&self) -> &str {
        "shell"
    }

    fn description(&self) -> &str {
        "Runs a shell command with `sh -c` in the workspace directory and returns its exit \
         code, stdout and stderr (each cut at a size limit). The command is killed if it runs \
         too long. The environment is minimal (PATH, HOME, LANG); there is no stdin."
    }

    fn risk(&self) -> Risk {
        Risk::Dangerous
    }

    fn timeout(&self) -> Option<Duration> {
        // A little beyond our own limit, so ours fires first with its clearer error.
        Some(self.timeout + Duration::from_secs(5))
    }

    async fn call(&self, args: ShellArgs, ctx: &ToolContext) -> Result<ShellOutput, ToolError> {
        tracing::debug!(command = %args.command, "shell command starting");
        // Dropping `run` drops the child (kill_on_drop) and the group killer.
        tokio::select! {
            result = tokio::time::timeout(self.timeout, self.run(&args.command)) => {
                let result = result.unwrap_or_else(|_| {
                    tracing::warn!(
                        timeout_secs = self.timeout.as_secs_f64(),
                        "shell command timed out; killed"
                    );
                    Err(ToolError::Timeout { after: self.timeout })
                });
                if let Ok(out) = &result {
                    tracing::debug!(exit_code = ?out.exit_code, truncated = out.truncated, "shell command finished");
                }
                result
            }
            () = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
        }
    }
}

/// Kills a child's process group, once: when asked or when dropped.
struct GroupKiller {
    pgid: Option<u32>,
    done: AtomicBool,
}

impl GroupKiller {
    fn new(pgid: Option<u32>) -> Self {
        Self {
            pgid,
            done: AtomicBool::new(false),
        }
    }

    fn kill(&self) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(pgid) = self.pgid else { return };
        kill_group(pgid);
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGKILL to process group `pgid`.
///
/// std has no `killpg` and this crate takes no libc dependency, so this asks the `kill`
/// builtin of `sh`, which the tool needs anyway. It takes a millisecond or two, and an
/// already empty group is not an error worth reporting.
#[cfg(unix)]
fn kill_group(pgid: u32) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -KILL -{pgid} 2>/dev/null"))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = status {
        tracing::warn!(pgid, error = %e, "cannot kill the shell command's process group");
    }
}

#[cfg(not(unix))]
fn kill_group(_pgid: u32) {}

/// Reads all of `reader`, keeping the first `limit` bytes; says whether any were dropped.
/// It keeps reading past the limit so the child never blocks on a full pipe.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    limit: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(mut reader) = reader else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = limit - kept.len();
        if n > room {
            kept.extend_from_slice(&chunk[..room]);
            truncated = true;
        } else {
            kept.extend_from_slice(&chunk[..n]);
        }
    }
}
