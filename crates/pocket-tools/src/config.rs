//! Configuration of the built-in tools: the `[tools]` table of `pocket.toml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ToolsError;

/// Default workspace directory of the file tools and the shell: `./workspace`.
pub const DEFAULT_WORKSPACE: &str = "./workspace";
/// Default largest file `read_file` returns: 1 MiB.
pub const DEFAULT_MAX_READ_BYTES: u64 = 1024 * 1024;
/// Default time limit of one `http_fetch` call: 15 seconds.
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 15;
/// Default largest body `http_fetch` returns before truncating: 1 MiB.
pub const DEFAULT_HTTP_MAX_BYTES: u64 = 1024 * 1024;
/// Default time limit of one `shell` command: 30 seconds.
pub const DEFAULT_SHELL_TIMEOUT_SECS: u64 = 30;
/// Default largest stdout (and, separately, stderr) `shell` returns: 64 KiB.
pub const DEFAULT_SHELL_MAX_OUTPUT_BYTES: u64 = 64 * 1024;

/// Settings of all built-in tools; every field has a default, so an empty table is valid.
///
/// ```toml
/// [tools.files]
/// workspace = "./workspace"   # default
/// max_read_bytes = 1048576    # default: 1 MiB
///
/// [tools.http_fetch]
/// timeout_secs = 15           # default
/// max_bytes = 1048576         # default: 1 MiB
/// allow_private = false       # default: loopback, private and link-local hosts are refused
/// allowed_hosts = []          # default: any public host
///
/// [tools.shell]
/// # workspace = "./scratch"   # default: the files workspace
/// timeout_secs = 30           # default
/// max_output_bytes = 65536    # default: 64 KiB, for stdout and stderr each
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// `[tools.files]`: `read_file`, `write_file` and `list_files`.
    pub files: FilesConfig,
    /// `[tools.http_fetch]`.
    pub http_fetch: HttpFetchConfig,
    /// `[tools.shell]`.
    pub shell: ShellConfig,
}

/// `[tools.files]`: the workspace the file tools are confined to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// The directory the file tools may touch; created if missing.
    /// Default: [`DEFAULT_WORKSPACE`] (`./workspace`, relative to the working directory).
    pub workspace: PathBuf,
    /// Largest file `read_file` returns; bigger files are an error.
    /// Default: [`DEFAULT_MAX_READ_BYTES`] (1 MiB).
    pub max_read_bytes: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            workspace: PathBuf::from(DEFAULT_WORKSPACE),
            max_read_bytes: DEFAULT_MAX_READ_BYTES,
        }
    }
}

/// `[tools.http_fetch]`: limits and the address policy of `http_fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpFetchConfig {
    /// Time limit of one fetch, connecting and reading the body included.
    /// Default: [`DEFAULT_HTTP_TIMEOUT_SECS`] (15).
    pub timeout_secs: u64,
    /// Largest body returned; the rest is not read and the result says `truncated`.
    /// Default: [`DEFAULT_HTTP_MAX_BYTES`] (1 MiB).
    pub max_bytes: u64,
    /// Allow hosts that are or resolve to loopback, private, link-local or other non-public
    /// addresses. Default: `false`, so a model cannot reach the machine's own services or the
    /// local network (cloud metadata endpoints, admin panels).
    pub allow_private: bool,
    /// If not empty, only these hosts and their subdomains may be fetched (`example.com`
    /// allows `example.com` and `api.example.com`). Default: empty, any host.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpFetchConfig {
    fn default() -> Self {
        Self {
            timeout_secs: DEFAULT_HTTP_TIMEOUT_SECS,
            max_bytes: DEFAULT_HTTP_MAX_BYTES,
            allow_private: false,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[tools.shell]`: where and how long `shell` commands run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShellConfig {
    /// Working directory of commands; created if missing.
    /// Default: `None`, the files workspace (`[tools.files] workspace`).
    pub workspace: Option<PathBuf>,
    /// Time limit of one command; the command and its process group are killed when it passes.
    /// Default: [`DEFAULT_SHELL_TIMEOUT_SECS`] (30).
    pub timeout_secs: u64,
    /// Largest stdout, and separately stderr, returned; the rest is discarded.
    /// Default: [`DEFAULT_SHELL_MAX_OUTPUT_BYTES`] (64 KiB).
    pub max_output_bytes: u64,
}

impl Default for ShellConfig {
    fn default() -> Self {
        Self {
            workspace: None,
            timeout_secs: DEFAULT_SHELL_TIMEOUT_SECS,
            max_output_bytes: DEFAULT_SHELL_MAX_OUTPUT_BYTES,
        }
    }
}

/// A positive number of seconds as a [`Duration`], or an error naming the key.
pub(crate) fn positive_secs(key: &'static str, secs: u64) -> Result<Duration, ToolsError> {
    if secs == 0 {
        return Err(ToolsError::InvalidConfig {
            key,
            message: "must be at least 1 second".into(),
        });
    }
    Ok(Duration::from_secs(secs))
}

/// A positive byte count as `usize`, or an error naming the key.
pub(crate) fn positive_bytes(key: &'static str, bytes: u64) -> Result<usize, ToolsError> {
    if bytes == 0 {
        return Err(ToolsError::InvalidConfig {
            key,
            message: "must be at least 1 byte".into(),
        });
    }
    // Saturate: a limit above the address space is no limit.
    Ok(usize::try_from(bytes).unwrap_or(usize::MAX))
}
