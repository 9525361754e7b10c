//! Asking the person at the terminal to approve a tool call.

use std::io::{BufRead, IsTerminal, Write};

use futures_util::future::BoxFuture;
use pocket_agent::{Approval, ApprovalError, ApprovalRequest, Approver};

/// Prompts on the terminal; without one (stdin not a TTY), asking fails, so the agent's
/// fail-safe policy denies the call and says why.
#[derive(Debug, Default)]
pub(crate) struct TerminalApprover {
    // One prompt at a time: parallel calls would interleave their questions.
    lock: tokio::sync::Mutex<()>,
}

impl Approver for TerminalApprover {
    fn approve<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        Box::pin(async move {
            if !std::io::stdin().is_terminal() {
                return Err(ApprovalError(
                    "no terminal to ask for approval (stdin is not a TTY); run interactively to approve".into(),
                ));
            }
            let _turn = self.lock.lock().await;
            let tool = request.tool.clone();
            let risk = request.risk.as_str();
            let args = serde_json::to_string_pretty(&request.arguments).unwrap_or_default();
            tokio::task::spawn_blocking(move || prompt(&tool, risk, &args))
                .await
                .map_err(|e| ApprovalError(format!("approval prompt failed: {e}")))?
        })
    }
}

#[allow(clippy::print_stderr)] // the prompt is the CLI's own output
fn prompt(tool: &str, risk: &str, args: &str) -> Result<Approval, ApprovalError> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    eprintln!("\nThe agent wants to call `{tool}` ({risk}) with:\n{args}");
    loop {
        eprint!("Approve? [y]es / [n]o / [e]dit arguments: ");
        let _ = std::io::stderr().flush();
        line.clear();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| ApprovalError(e.to_string()))?
            == 0
        {
            return Err(ApprovalError(
                "stdin closed while asking for approval".into(),
            ));
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Ok(Approval::Approve),
            "n" | "no" | "" => {
                eprint!("Reason (optional): ");
                let _ = std::io::stderr().flush();
                line.clear();
                let _ = stdin.lock().read_line(&mut line);
                let reason = line.trim();
                let reason = if reason.is_empty() {
                    "denied at the terminal"
                } else {
                    reason
                };
                return Ok(Approval::Deny(reason.to_owned()));
            }
            "e" | "edit" => {
                eprint!("New arguments (JSON on one line): ");
                let _ = std::io::stderr().flush();
                line.clear();
                let _ = stdin.lock().read_line(&mut line);
                match serde_json::from_str(line.trim()) {
                    Ok(v) => return Ok(Approval::Edit(v)),
                    Err(e) => eprintln!("That is not JSON ({e}); try again."),
                }
            }
            _ => {}
        }
    }
}
