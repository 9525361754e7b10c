//! Built-in tools for Pocket Agent: calculator, time, confined files, HTTP fetch and shell.
//!
//! Each tool implements the typed [`pocket_agent::Tool`] trait, so its argument schema
//! (with descriptions the model reads) is derived from a Rust type that rejects unknown
//! fields. [`builtin`] builds them by name from a [`ToolsConfig`], the `[tools]` table of
//! `pocket.toml`:
//!
//! ```
//! use pocket_agent::ToolContext;
//! use pocket_tools::{ToolsConfig, builtin};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ToolsConfig::default();
//! let tools = builtin("calculator", &config)?;
//! let calculator = &tools[0];
//! assert_eq!(calculator.spec().name, "calculator");
//!
//! let out = calculator
//!     .call(json!({ "expression": "17 * 23" }), &ToolContext::detached())
//!     .await?;
//! assert_eq!(out, json!(391));
//! assert_eq!(out.to_string(), "391");
//! # Ok(()) }
//! ```
//!
//! | name | tools | risk | notes |
//! |---|---|---|---|
//! | `calculator` | [`Calculator`] | safe | `f64` arithmetic, functions, `pi`, `e` |
//! | `time` | [`CurrentTime`] | safe | UTC, Unix seconds, local time at an offset |
//! | `files` | [`ReadFile`], [`WriteFile`], [`ListFiles`] | safe / sensitive / safe | confined to a [`Workspace`] |
//! | `http_fetch` | [`HttpFetch`] | sensitive | GET; size and time limits; private hosts refused by default |
//! | `shell` | [`Shell`] | dangerous | `sh -c` in the workspace; time limit; cleared environment |
//!
//! This crate has no cargo features.

pub mod calculator;
pub mod clock;
pub mod config;
pub mod error;
pub mod files;
pub mod http_fetch;
pub mod shell;
mod text;

use pocket_agent::{SharedTool, Tool};

pub use calculator::Calculator;
pub use clock::CurrentTime;
pub use config::{FilesConfig, HttpFetchConfig, ShellConfig, ToolsConfig};
pub use error::ToolsError;
pub use files::{ListFiles, ReadFile, Workspace, WriteFile};
pub use http_fetch::HttpFetch;
pub use shell::Shell;

/// The names [`builtin`] knows, in the order of the table above.
pub const BUILTIN_NAMES: &[&str] = &["calculator", "time", "files", "http_fetch", "shell"];

/// Builds the built-in tool(s) named `name` with `config`.
///
/// `files` gives three tools (`read_file`, `write_file`, `list_files`); every other name
/// gives one. `files` and `shell` create their workspace directory if it is missing.
///
/// # Errors
/// [`ToolsError::UnknownTool`] listing the valid names; [`ToolsError::Workspace`] naming the
/// directory that could not be created; [`ToolsError::InvalidConfig`] naming the TOML key of
/// a value out of range; [`ToolsError::HttpClient`].
pub fn builtin(name: &str, config: &ToolsConfig) -> Result<Vec<SharedTool>, ToolsError> {
    let tools = match name {
        "calculator" => vec![Calculator::new().into_dyn()],
        "time" => vec![CurrentTime::new().into_dyn()],
        "files" => {
            let files = &config.files;
            if files.max_read_bytes == 0 {
                return Err(ToolsError::InvalidConfig {
                    key: "tools.files.max_read_bytes",
                    message: "must be at least 1 byte".into(),
                });
            }
            let workspace = Workspace::open(&files.workspace)?;
            vec![
                ReadFile::new(workspace.clone())
                    .with_max_bytes(files.max_read_bytes)
                    .into_dyn(),
                WriteFile::new(workspace.clone()).into_dyn(),
                ListFiles::new(workspace).into_dyn(),
            ]
        }
        "http_fetch" => vec![HttpFetch::new(&config.http_fetch)?.into_dyn()],
        "shell" => {
            let shell = &config.shell;
            let timeout = config::positive_secs("tools.shell.timeout_secs", shell.timeout_secs)?;
            let max_output =
                config::positive_bytes("tools.shell.max_output_bytes", shell.max_output_bytes)?;
            let dir = shell.workspace.as_ref().unwrap_or(&config.files.workspace);
            vec![
                Shell::new(Workspace::open(dir)?)
                    .with_timeout(timeout)
                    .with_max_output_bytes(max_output)
                    .into_dyn(),
            ]
        }
        _ => {
            return Err(ToolsError::UnknownTool {
                name: name.to_owned(),
            });
        }
    };
    tracing::debug!(name, count = tools.len(), "built-in tool ready");
    Ok(tools)
}
