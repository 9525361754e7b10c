//! `read_file`, `write_file` and `list_files`: file tools confined to a [`Workspace`].
//!
//! Confinement: a path from the model must be relative; `..` may not climb above the
//! workspace; and the path, resolved by the OS (symlinks included), must stay inside the
//! canonical workspace directory. A refusal is [`ToolError::Denied`] naming the path.
//!
//! Limits: the check and the open are two system calls, so a process that swaps a directory
//! for a symlink between them could escape; the workspace is meant to be written by the agent
//! alone. Hard links to outside files cannot be told apart from ordinary files.

use std::io::{self, ErrorKind};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use pocket_agent::{Risk, Tool, ToolContext, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::DEFAULT_MAX_READ_BYTES;
use crate::error::ToolsError;

/// Most entries `list_files` returns.
pub const MAX_LIST_ENTRIES: usize = 1000;

/// A directory the file tools (and the shell's working directory) are confined to.
///
/// A cheap-clone handle over its canonical path.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: Arc<Path>,
}

impl Workspace {
    /// Opens `dir`, creating it and its parents if missing.
    ///
    /// # Errors
    /// [`ToolsError::Workspace`] naming `dir` when it cannot be created or is not a directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ToolsError> {
        let dir = dir.as_ref();
        let fail = |source| ToolsError::Workspace {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        let root = std::fs::canonicalize(dir).map_err(fail)?;
        if !root.is_dir() {
            return Err(fail(io::Error::new(
                ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        tracing::debug!(workspace = %root.display(), "workspace opened");
        Ok(Self { root: root.into() })
    }

    /// The canonical path of the workspace directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a path from the model to a canonical path inside the workspace.
    ///
    /// Returns the canonical path of the deepest existing ancestor (the path itself when it
    /// exists) and the components below it that do not exist yet.
    async fn resolve(&self, raw: &str) -> Result<(PathBuf, PathBuf), ToolError> {
        let relative = lexical(raw)?;
        let mut existing = self.root.join(&relative);
        let mut missing = Vec::new();
        loop {
            match tokio::fs::symlink_metadata(&existing).await {
                Ok(_) => break,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    // `lexical` left only normal components, so each step up is one of them.
                    let (Some(name), Some(parent)) = (existing.file_name(), existing.parent())
                    else {
                        return Err(io_failed("resolve", raw, &e));
                    };
                    missing.push(name.to_owned());
                    existing = parent.to_owned();
                }
                Err(e) => return Err(io_failed("resolve", raw, &e)),
            }
        }
        let canonical = match tokio::fs::canonicalize(&existing).await {
            Ok(c) => c,
            // It exists as an entry but cannot be resolved: a symlink to nowhere. Following
            // it to create a file could land anywhere.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(ToolError::denied(format!(
                    "path `{raw}` goes through a broken symlink"
                )));
            }
            Err(e) => return Err(io_failed("resolve", raw, &e)),
        };
        if !canonical.starts_with(&self.root) {
            tracing::warn!(
                path = raw,
                "refused a path that resolves outside the workspace"
            );
            return Err(outside(raw));
        }
        let rest: PathBuf = missing.iter().rev().collect();
        Ok((canonical, rest))
    }

    /// An existing path inside the workspace.
    async fn existing(&self, raw: &str) -> Result<PathBuf, ToolError> {
        let (path, rest) = self.resolve(raw).await?;
        if rest.as_os_str().is_empty() {
            Ok(path)
        } else {
            Err(ToolError::failed(format!("`{raw}` does not exist")))
        }
    }

    /// The path relative to the workspace, for results.
    fn display(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        if rel.as_os_str().is_empty() {
            ".".into()
        } else {
            rel.display().to_string()
        }
    }
}

/// Normalizes a relative path lexically: refuses absolute paths and `..` above the start.
fn lexical(raw: &str) -> Result<PathBuf, ToolError> {
    if raw.contains('\0') {
        return Err(ToolError::invalid_arguments(
            "path contains a NUL character",
        ));
    }
    let mut out = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err(outside(raw)),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(outside(raw));
                }
            }
            Component::Normal(name) => out.push(name),
        }
    }
    Ok(out)
}

fn outside(raw: &str) -> ToolError {
    ToolError::denied(format!("path `{raw}` is outside the workspace"))
}

/// An I/O failure, with its cause in the message: the model sees only the message.
fn io_failed(action: &str, raw: &str, err: &io::Error) -> ToolError {
    let retryable = matches!(
        err.kind(),
        ErrorKind::Interrupted | ErrorKind::TimedOut | ErrorKind::WouldBlock
    );
    ToolError::Failed {
        message: format!("cannot {action} `{raw}`: {err}"),
        retryable,
        source: None,
    }
}

// ---------------------------------------------------------------------------------------------

/// Arguments of [`ReadFile`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileArgs {
    /// Path of the file, relative to the workspace (e.g. `notes/todo.txt`).
    pub path: String,
}

/// What [`ReadFile`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileOutput {
    /// The path, relative to the workspace.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The content as text; invalid UTF-8 is replaced by U+FFFD.
    pub content: String,
}

/// The `read_file` tool: reads a text file inside the workspace.
///
/// [`Risk::Safe`], idempotent. Files bigger than the limit (default 1 MiB) are an error.
#[derive(Debug, Clone)]
pub struct ReadFile {
    workspace: Workspace,
    max_bytes: u64,
}

impl ReadFile {
    /// Reads files in `workspace`, up to [`DEFAULT_MAX_READ_BYTES`] (1 MiB).
    pub fn new(workspace: Workspace) -> Self {
        Self {
            workspace,
            max_bytes: DEFAULT_MAX_READ_BYTES,
        }
    }

    /// Sets the largest file returned, in bytes.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

impl Tool for ReadFile {
    type Args = ReadFileArgs;
    type Output = ReadFileOutput;

    fn name(&self) -> &str {
        "read_file"
    }

    fn description(&self) -> &str {
        "Reads a text file in the workspace. The path is relative to the workspace."
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn call(
        &self,
        args: ReadFileArgs,
        _ctx: &ToolContext,
    ) -> Result<ReadFileOutput, ToolError> {
        let raw = args.path.as_str();
        let path = self.workspace.existing(raw).await?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| io_failed("read", raw, &e))?;
        if meta.is_dir() {
            return Err(ToolError::failed(format!(
                "`{raw}` is a directory; use list_files"
            )));
        }
        if meta.len() > self.max_bytes {
            return Err(ToolError::failed(format!(
                "`{raw}` is {} bytes, more than the read limit of {} bytes",
                meta.len(),
                self.max_bytes
            )));
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_failed("read", raw, &e))?;
        // Bounded even if the file grows after the size check.
        let mut bytes = Vec::new();
        file.take(self.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| io_failed("read", raw, &e))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(ToolError::failed(format!(
                "`{raw}` is more than the read limit of {} bytes",
                self.max_bytes
            )));
        }
        Ok(ReadFileOutput {
            path: self.workspace.display(&path),
            size: bytes.len() as u64,
            content: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// Arguments of [`WriteFile`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    /// Path of the file, relative to the workspace; missing parent directories are created.
    pub path: String,
    /// The text to write.
    pub content: String,
    /// Append to the file instead of replacing it. Default: false.
    #[serde(default)]
    pub append: bool,
}

/// What [`WriteFile`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileOutput {
    /// The path, relative to the workspace.
    pub path: String,
    /// Bytes written by this call.
    pub bytes_written: u64,
    /// Whether the content was appended.
    pub appended: bool,
}

/// The `write_file` tool: writes or appends a text file inside the workspace.
///
/// [`Risk::Sensitive`], not idempotent (appending twice differs from once).
#[derive(Debug, Clone)]
pub struct WriteFile {
    workspace: Workspace,
}

impl WriteFile {
    /// Writes files in `workspace`.
    pub fn new(workspace: Workspace) -> Self {
        Self { workspace }
    }
}

impl Tool for WriteFile {
    type Args = WriteFileArgs;
    type Output = WriteFileOutput;

    fn name(&self) -> &str {
        "write_file"
    }

    fn description(&self) -> &str {
        "Writes text to a file in the workspace, replacing it (or appending with `append`). \
         The path is relative to the workspace; parent directories are created."
    }

    fn risk(&self) -> Risk {
        Risk::Sensitive
    }

    async fn call(
        &self,
        args: WriteFileArgs,
        _ctx: &ToolContext,
    ) -> Result<WriteFileOutput, ToolError> {
        let raw = args.path.as_str();
        let (existing, rest) = self.workspace.resolve(raw).await?;
        // `join("")` would add a trailing slash, which `open` reads as a directory.
        let target = if rest.as_os_str().is_empty() {
            existing
        } else {
            existing.join(&rest)
        };
        if target == *self.workspace.root() {
            return Err(ToolError::invalid_arguments(
                "path names the workspace itself, not a file",
            ));
        }
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_failed("create the parent directories of", raw, &e))?;
        }
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true);
        if args.append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        let mut file = options.open(&target).await.map_err(|e| {
            if target.is_dir() {
                ToolError::failed(format!("`{raw}` is a directory"))
            } else {
                io_failed("write", raw, &e)
            }
        })?;
        file.write_all(args.content.as_bytes())
            .await
            .map_err(|e| io_failed("write", raw, &e))?;
        file.flush()
            .await
            .map_err(|e| io_failed("write", raw, &e))?;
        tracing::debug!(
            path = raw,
            bytes = args.content.len(),
            append = args.append,
            "file written"
        );
        Ok(WriteFileOutput {
            path: self.workspace.display(&target),
            bytes_written: args.content.len() as u64,
            appended: args.append,
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// Arguments of [`ListFiles`].
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFilesArgs {
    /// Directory to list, relative to the workspace. Default: the workspace itself.
    #[serde(default)]
    pub path: Option<String>,
}

/// What kind of entry a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else (socket, device, FIFO).
    Other,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The file name.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (of the link itself for symlinks).
    pub size: u64,
}

/// What [`ListFiles`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilesOutput {
    /// The directory, relative to the workspace (`.` for the workspace).
    pub path: String,
    /// Its entries, sorted by name.
    pub entries: Vec<Entry>,
    /// Whether entries were left out (more than [`MAX_LIST_ENTRIES`]).
    pub truncated: bool,
}

/// The `list_files` tool: lists a directory inside the workspace.
///
/// [`Risk::Safe`], idempotent. Not recursive; at most [`MAX_LIST_ENTRIES`] entries.
#[derive(Debug, Clone)]
pub struct ListFiles {
    workspace: Workspace,
}

impl ListFiles {
    /// Lists directories in `workspace`.
    pub fn new(workspace: Workspace) -> Self {
        Self { workspace }
    }
}

impl Tool for ListFiles {
    type Args = ListFilesArgs;
    type Output = ListFilesOutput;

    fn name(&self) -> &str {
        "list_files"
    }

    fn description(&self) -> &str {
        "Lists a directory in the workspace (not recursive): each entry's name, kind \
         (file, dir, symlink, other) and size in bytes. Without `path`, lists the workspace."
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn call(
        &self,
        args: ListFilesArgs,
        _ctx: &ToolContext,
    ) -> Result<ListFilesOutput, ToolError> {
        let raw = args.path.as_deref().unwrap_or(".");
        let dir = self.workspace.existing(raw).await?;
        let mut reader = tokio::fs::read_dir(&dir).await.map_err(|e| {
            if e.kind() == ErrorKind::NotADirectory {
                ToolError::failed(format!("`{raw}` is a file, not a directory"))
            } else {
                io_failed("list", raw, &e)
            }
        })?;
        let mut entries = Vec::new();
        let mut truncated = false;
        while let Some(entry) = reader
            .next_entry()
            .await
            .map_err(|e| io_failed("list", raw, &e))?
        {
            if entries.len() == MAX_LIST_ENTRIES {
                truncated = true;
                break;
            }
            // `DirEntry::metadata` does not follow symlinks.
            let meta = entry
                .metadata()
                .await
                .map_err(|e| io_failed("list", raw, &e))?;
            let file_type = meta.file_type();
            let kind = if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_dir() {
                EntryKind::Dir
            } else if file_type.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            };
            entries.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind,
                size: meta.len(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ListFilesOutput {
            path: self.workspace.display(&dir),
            entries,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_normalizes_and_refuses_escapes() {
        assert_eq!(lexical("a/./b/../c").unwrap(), PathBuf::from("a/c"));
        assert_eq!(lexical("").unwrap(), PathBuf::new());
        assert_eq!(lexical("a/..").unwrap(), PathBuf::new());
        for bad in ["..", "../x", "a/../../x", "/etc/passwd", "./../x"] {
            let err = lexical(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("denied: path `{bad}` is outside the workspace")
            );
        }
        assert!(matches!(
            lexical("a\0b"),
            Err(ToolError::InvalidArguments { .. })
        ));
    }
}
