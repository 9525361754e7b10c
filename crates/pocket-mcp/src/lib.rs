//! Model Context Protocol servers as Pocket Agent tools, on the official Rust SDK (`rmcp`).
//!
//! Each `[mcp.NAME]` table ([`McpServerConfig`]) names a stdio server (`command`, `args`,
//! `env`) or a streamable HTTP server (`url`, headers from environment variables). An
//! [`McpHub`] starts them (lazily by default), restarts crashed ones with backoff, follows
//! their tool-list changes, forwards their stderr into `tracing`, and shuts them down. Their
//! tools become [`DynTool`](pocket_agent::DynTool)s named `NAME.tool`, with the server's input
//! schema, a configurable [`Risk`](pocket_agent::Risk) (default `sensitive`) so approval and
//! breakers apply, and the server's call time limit.
//!
//! ```no_run
//! use pocket_agent::Agent;
//! use pocket_mcp::{McpConfig, McpHub};
//! use pocket_models::SimModel;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config: McpConfig = toml::from_str(
//!     r#"
//!     [fs]
//!     command = "npx"
//!     args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/notes"]
//!     tool_risk = { write_file = "dangerous" }
//!     "#,
//! )?;
//! let hub = McpHub::start(config).await?;
//! let tools = hub.tools_matching(&["fs.read_text_file", "fs.list_*"]).await?;
//! let agent = Agent::builder(SimModel::default()).dyn_tools(tools).build()?;
//! let out = agent.run("read_text_file '/srv/notes/todo.md'").await?;
//! println!("{}", out.answer);
//! hub.shutdown().await; // children are gone when this returns
//! # Ok(()) }
//! ```
//!
//! # Logs
//! | target | what |
//! |---|---|
//! | `pocket_mcp::stderr` | each line a stdio server writes to stderr (info), field `server` |
//! | `pocket_mcp::log` | the server's `notifications/message` at their level, field `server` |
//! | `pocket_mcp::server` | starts, crashes, restarts, list changes, shutdown |
//!
//! The crate has no cargo features.

mod config;
mod error;
mod hub;
mod server;
mod tool;

pub use config::{McpConfig, McpServerConfig, StartMode};
pub use error::McpError;
pub use hub::McpHub;
pub use server::{ServerState, ServerStatus};
