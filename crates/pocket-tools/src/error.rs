//! The error of setting up built-in tools.

use std::io;
use std::path::PathBuf;

use crate::BUILTIN_NAMES;

/// Why a built-in tool could not be set up.
///
/// Errors of a *call* are [`pocket_agent::ToolError`]s; this type only covers construction
/// ([`builtin`](crate::builtin) and the tools' constructors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolsError {
    /// No built-in tool has this name.
    #[error("unknown built-in tool `{name}`; the built-in tools are: {}", BUILTIN_NAMES.join(", "))]
    UnknownTool {
        /// The name asked for.
        name: String,
    },
    /// The workspace directory could not be created or opened.
    #[error("cannot create or open the workspace directory `{}`", path.display())]
    Workspace {
        /// The directory, as configured.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A configuration value is out of range; `key` is its TOML key.
    #[error("invalid `{key}`: {message}")]
    InvalidConfig {
        /// The TOML key, e.g. `tools.http_fetch.timeout_secs`.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client of `http_fetch` could not be built.
    #[error("cannot build the HTTP client of `http_fetch`")]
    HttpClient(#[source] reqwest::Error),
}
