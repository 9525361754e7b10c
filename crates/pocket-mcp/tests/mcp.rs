//! Against real MCP servers installed from npm (`tests/servers/package.json`):
//! `@modelcontextprotocol/server-everything`, `@modelcontextprotocol/server-filesystem`, and a
//! small server of our own on the official TypeScript SDK whose tool list changes. Every test
//! skips, saying why, when node or the packages are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use pocket_agent::{Agent, Classify, EventKind, Risk, ToolContext, ToolError};
use pocket_mcp::{McpHub, McpServerConfig, ServerState, StartMode};
use pocket_models::SimModel;
use serde_json::json;
use support::{eventually, one, require, stdio};

/// Generous: node starts slowly on a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

fn agent(tools: Vec<pocket_agent::SharedTool>) -> Agent {
    Agent::builder(SimModel::default())
        .dyn_tools(tools)
        .max_iterations(3)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_tools_with_prefixed_names_schemas_and_risk() {
    let Some(bin) = require("lists_tools", "mcp-server-everything") else {
        return;
    };
    let mut server = stdio(&bin, &["stdio"]);
    server.tool_risk.insert("get-env".into(), Risk::Dangerous);
    server.call_timeout_secs = 7;
    let hub = McpHub::start(one("ev", server)).await.unwrap();
    // Lazy: nothing runs before tools are asked for.
    assert_eq!(hub.server_status("ev").unwrap().state, ServerState::Idle);

    let tools = hub.tools_matching(&["ev.*"]).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.spec().name.as_str()).collect();
    assert!(names.contains(&"ev.echo"), "{names:?}");
    assert!(names.contains(&"ev.get-sum"), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("ev.")), "{names:?}");
    let echo = tools
        .iter()
        .find(|t| t.spec().name == "ev.echo")
        .unwrap()
        .spec();
    assert_eq!(echo.parameters["properties"]["message"]["type"], "string");
    assert_eq!(echo.risk, Risk::Sensitive, "the default risk");
    assert_eq!(echo.timeout, Some(Duration::from_secs(7)));
    assert!(!echo.description.is_empty());
    let env = tools
        .iter()
        .find(|t| t.spec().name == "ev.get-env")
        .unwrap();
    assert_eq!(env.spec().risk, Risk::Dangerous, "tool_risk override");

    let status = hub.server_status("ev").unwrap();
    assert_eq!(status.state, ServerState::Running);
    assert_eq!(status.transport, "stdio");
    assert!(status.pid.is_some());
    assert_eq!(status.tools, names.len());

    // Exact names and globs, deduplicated and sorted.
    let some = hub
        .tools_matching(&["ev.echo", "ev.get-*", "ev.echo"])
        .await
        .unwrap();
    let some: Vec<&str> = some.iter().map(|t| t.spec().name.as_str()).collect();
    assert_eq!(some.first(), Some(&"ev.echo"));
    assert!(
        some[1..].iter().all(|n| n.starts_with("ev.get-")),
        "{some:?}"
    );
    let e = hub
        .tools_matching(&["ev.ech"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("MCP server `ev` has no tool `ech` (it offers: "),
        "{e}"
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_run_with_sim_calls_an_mcp_tool() {
    let Some(bin) = require("agent_run", "mcp-server-everything") else {
        return;
    };
    let hub = McpHub::start(one("ev", stdio(&bin, &["stdio"])))
        .await
        .unwrap();
    let agent = agent(
        hub.tools_matching(&["ev.echo", "ev.get-sum"])
            .await
            .unwrap(),
    );

    let out = agent.run("Please echo 'hello pocket'").await.unwrap();
    assert_eq!(out.tool_calls.len(), 1, "{:?}", out.tool_calls);
    assert_eq!(out.tool_calls[0].name, "ev.echo");
    assert_eq!(
        out.tool_calls[0].arguments,
        json!({"message": "hello pocket"})
    );
    assert_eq!(out.answer, "ev.echo returned: Echo: hello pocket");

    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filesystem_server_reads_a_file_through_the_agent() {
    let Some(bin) = require("filesystem", "mcp-server-filesystem") else {
        return;
    };
    let dir = support::tempdir_without_digits("read");
    // The server resolves symlinks (macOS /tmp, say); so do we.
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("notes.txt"), "the answer is 42").unwrap();
    let mut fs = stdio(&bin, &[root.to_str().unwrap()]);
    fs.tool_risk.insert("write_file".into(), Risk::Dangerous);
    let hub = McpHub::start(one("fs", fs)).await.unwrap();
    let tools = hub.tools_matching(&["fs.read_text_file"]).await.unwrap();
    let agent = agent(tools);

    let path = root.join("notes.txt");
    let out = agent
        .run(format!("Read the file '{}'", path.display()))
        .await
        .unwrap();
    assert_eq!(out.tool_calls[0].error, None, "{:?}", out.tool_calls);
    // The server declares an output schema, so its structured content is the result.
    assert_eq!(
        out.answer,
        r#"fs.read_text_file returned: {"content":"the answer is 42"}"#
    );

    let write = hub.tools_matching(&["fs.write_file"]).await.unwrap();
    assert_eq!(write[0].spec().risk, Risk::Dangerous);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_results_become_failed_tool_errors_and_the_run_goes_on() {
    let Some(bin) = require("error_result", "mcp-server-filesystem") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let hub = McpHub::start(one("fs", stdio(&bin, &[root.to_str().unwrap()])))
        .await
        .unwrap();
    let tools = hub.tools_matching(&["fs.read_text_file"]).await.unwrap();

    // Directly: a path outside the allowed directory is an `isError` result.
    let err = tools[0]
        .call(json!({"path": "/etc/hostname"}), &ToolContext::detached())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ToolError::Failed {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Access denied"), "{err}");

    // Through a run: the model sees the error, the run still answers.
    let out = agent(tools)
        .run("Read the file '/etc/hostname'")
        .await
        .unwrap();
    let error = out.tool_calls[0].error.as_deref().unwrap();
    assert!(error.contains("Access denied"), "{error}");
    assert!(
        out.answer.starts_with("fs.read_text_file failed: error: "),
        "{}",
        out.answer
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_times_out_and_the_server_keeps_working() {
    let Some(bin) = require("timeout", "mcp-server-everything") else {
        return;
    };
    let mut server = stdio(&bin, &["stdio"]);
    server.call_timeout_secs = 1;
    let hub = McpHub::start(one("ev", server)).await.unwrap();
    let tools = hub
        .tools_matching(&["ev.trigger-long-running-operation", "ev.echo"])
        .await
        .unwrap();
    let slow = tools
        .iter()
        .find(|t| t.spec().name.contains("long"))
        .unwrap()
        .clone();

    // Directly: our own limit.
    let err = slow
        .call(
            json!({"duration": 10, "steps": 2}),
            &ToolContext::detached(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ToolError::Timeout { after } if after == Duration::from_secs(1)),
        "{err:?}"
    );
    assert!(err.is_retryable());

    // Through a run: the spec carries the limit to the agent.
    let agent = agent(tools);
    let out = agent
        .run("Trigger the long running operation for 10 seconds")
        .await
        .unwrap();
    assert_eq!(
        out.tool_calls[0].error.as_deref(),
        Some("tool timed out after 1.0s")
    );
    let out = agent.run("echo 'still here'").await.unwrap();
    assert_eq!(out.answer, "ev.echo returned: Echo: still here");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_is_restarted_and_works_again() {
    let Some(bin) = require("killed", "mcp-server-everything") else {
        return;
    };
    let mut server = stdio(&bin, &["stdio"]);
    server.restart_max_backoff_secs = 1;
    let hub = McpHub::start(one("ev", server)).await.unwrap();
    let tools = hub
        .tools_matching(&["ev.trigger-long-running-operation", "ev.echo"])
        .await
        .unwrap();
    let agent = agent(tools.clone());
    let pid = hub.server_status("ev").unwrap().pid.unwrap();

    // Kill the server while the run waits on a long call.
    let mut events = agent.subscribe();
    let run = {
        let agent = agent.clone();
        tokio::spawn(async move {
            agent
                .run("Trigger the long running operation for 20 seconds")
                .await
        })
    };
    loop {
        let event = tokio::time::timeout(DEADLINE, events.recv())
            .await
            .expect("the tool call starts")
            .unwrap();
        if matches!(event.kind, EventKind::ToolCallStarted { .. }) {
            break;
        }
    }
    support::kill(pid);
    let out = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the run ends")
        .unwrap()
        .expect("the run goes on after the server died");
    let error = out.tool_calls[0].error.as_deref().unwrap();
    assert!(
        error.contains("broke during the call") || error.contains("is restarting"),
        "{error}"
    );

    // Right after the crash its tools fail fast and retryably, or work again.
    let echo = tools.iter().find(|t| t.spec().name == "ev.echo").unwrap();
    match echo
        .call(json!({"message": "x"}), &ToolContext::detached())
        .await
    {
        Ok(_) => {}
        Err(e) => assert!(e.is_retryable(), "{e:?}"),
    }

    eventually("the server is restarted", DEADLINE, || {
        let s = hub.server_status("ev").unwrap();
        s.state == ServerState::Running && s.pid.is_some_and(|p| p != pid)
    })
    .await;
    let status = hub.server_status("ev").unwrap();
    assert!(status.restarts >= 1, "{status:?}");
    assert!(!support::process_exists(pid), "the killed child was reaped");

    // The same agent, built before the crash, works again.
    let out = agent.run("echo 'back again'").await.unwrap();
    assert_eq!(out.answer, "ev.echo returned: Echo: back again");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_child_and_its_tools_say_so() {
    let Some(bin) = require("shutdown", "mcp-server-everything") else {
        return;
    };
    let mut server = stdio(&bin, &["stdio"]);
    server.start = StartMode::Eager;
    let hub = McpHub::start(one("ev", server)).await.unwrap();
    // Eager: running before anyone asked for tools.
    let status = hub.server_status("ev").unwrap();
    assert_eq!(status.state, ServerState::Running);
    let pid = status.pid.unwrap();
    assert!(support::process_exists(pid));
    let tools = hub.tools_matching(&["ev.echo"]).await.unwrap();

    hub.shutdown().await;
    assert!(!support::process_exists(pid), "child {pid} still exists");
    assert_eq!(hub.server_status("ev").unwrap().state, ServerState::Stopped);
    let err = tools[0]
        .call(json!({"message": "x"}), &ToolContext::detached())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "MCP server `ev` is shut down");
    hub.shutdown().await; // twice is fine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_changed_notification_refreshes_the_tool_list() {
    let Some(script) = require("list_changed", "dynamic.mjs") else {
        return;
    };
    let hub = McpHub::start(one("dyn", stdio(&script, &[])))
        .await
        .unwrap();
    let tools = hub.tools_matching(&["dyn.*"]).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.spec().name.as_str()).collect();
    assert_eq!(names, ["dyn.grow"]);
    assert!(hub.tools_matching(&["dyn.extra"]).await.is_err());

    let grown = tools[0]
        .call(json!({}), &ToolContext::detached())
        .await
        .unwrap();
    assert_eq!(grown, json!("grown"));
    eventually("the tool list is re-read", DEADLINE, || {
        hub.server_status("dyn").unwrap().list_changes >= 1
    })
    .await;
    let extra = hub.tools_matching(&["dyn.extra"]).await.unwrap();
    let out = extra[0]
        .call(json!({}), &ToolContext::detached())
        .await
        .unwrap();
    assert_eq!(out, json!("extra is here"));
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamable_http_server_works_with_headers_from_env() {
    let Some(bin) = require("streamable_http", "mcp-server-everything") else {
        return;
    };
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(&bin)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let until = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < until,
            "the HTTP server listens"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Any variable that is set will do (`set_var` needs `unsafe`, which the workspace forbids).
    let mut server = McpServerConfig::http(format!("http://{addr}/mcp"));
    server
        .headers_from_env
        .insert("x-pocket-test".into(), "PATH".into());
    let hub = McpHub::start(one("web", server)).await.unwrap();
    let tools = hub.tools_matching(&["web.echo"]).await.unwrap();
    let status = hub.server_status("web").unwrap();
    assert_eq!(status.transport, "http");
    assert_eq!(status.state, ServerState::Running);
    let out = agent(tools).run("echo 'over http'").await.unwrap();
    assert_eq!(out.answer, "web.echo returned: Echo: over http");
    hub.shutdown().await;
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_start_failures_and_init_time_outs_name_the_server() {
    let Some(_) = require("start_failures", "mcp-server-everything") else {
        return;
    };
    let mut exits = McpServerConfig::stdio("node", ["-e", "process.exit(3)"]);
    exits.start = StartMode::Eager;
    let e = McpHub::start(one("bad", exits))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("MCP server `bad` failed to start: "), "{e}");

    let mut silent = McpServerConfig::stdio("node", ["-e", "setInterval(() => {}, 1000)"]);
    silent.init_timeout_secs = 1;
    let hub = McpHub::start(one("mute", silent)).await.unwrap();
    let e = hub
        .tools_matching(&["mute.*"])
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "MCP server `mute` failed to start: initialising timed out after 1s (init_timeout_secs)"
    );
    hub.shutdown().await;
}
