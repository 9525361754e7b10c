//! The file tools: confinement to the workspace and read/write/list round trips.

#![cfg(unix)] // symlinks
#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail the test loudly by design

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use pocket_agent::{Risk, SharedTool, ToolError};
use pocket_tools::{FilesConfig, ToolsConfig, ToolsError, builtin};
use serde_json::json;
use support::{builtin_err, call, denied_reason, failed, named};
use tempfile::TempDir;

struct Fixture {
    /// Holds the directories until the test ends.
    _dir: TempDir,
    workspace: PathBuf,
    outside: PathBuf,
    read: SharedTool,
    write: SharedTool,
    list: SharedTool,
}

fn fixture_with(max_read_bytes: u64) -> Fixture {
    let dir = TempDir::new().unwrap();
    let workspace = dir.path().join("nested/ws");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "top secret").unwrap();
    let config = ToolsConfig {
        files: FilesConfig {
            workspace: workspace.clone(),
            max_read_bytes,
        },
        ..ToolsConfig::default()
    };
    let tools = builtin("files", &config).unwrap();
    let names: Vec<_> = tools.iter().map(|t| t.spec().name.clone()).collect();
    assert_eq!(names, ["read_file", "write_file", "list_files"]);
    assert!(workspace.is_dir(), "the workspace is created");
    Fixture {
        read: named(&tools, "read_file"),
        write: named(&tools, "write_file"),
        list: named(&tools, "list_files"),
        _dir: dir,
        workspace,
        outside,
    }
}

fn fixture() -> Fixture {
    fixture_with(1024 * 1024)
}

fn outside_message(path: &str) -> String {
    format!("path `{path}` is outside the workspace")
}

#[tokio::test]
async fn traversal_is_refused_for_every_tool() {
    let f = fixture();
    for path in [
        "../x",
        "/etc/passwd",
        "a/../../x",
        "..",
        "./../outside/secret.txt",
    ] {
        let reason = denied_reason(call(&f.read, json!({ "path": path })).await);
        assert_eq!(reason, outside_message(path));
        let reason =
            denied_reason(call(&f.write, json!({ "path": path, "content": "pwned" })).await);
        assert_eq!(reason, outside_message(path));
        let reason = denied_reason(call(&f.list, json!({ "path": path })).await);
        assert_eq!(reason, outside_message(path));
    }
    // Nothing was written next to the workspace.
    assert!(!f.workspace.parent().unwrap().join("x").exists());
    assert_eq!(
        std::fs::read_to_string(f.outside.join("secret.txt")).unwrap(),
        "top secret"
    );
}

#[tokio::test]
async fn symlinks_pointing_outside_are_refused() {
    let f = fixture();
    symlink(&f.outside, f.workspace.join("link")).unwrap();
    symlink(f.outside.join("secret.txt"), f.workspace.join("passwd")).unwrap();

    let reason = denied_reason(call(&f.read, json!({ "path": "link/secret.txt" })).await);
    assert_eq!(reason, outside_message("link/secret.txt"));
    let reason = denied_reason(call(&f.read, json!({ "path": "passwd" })).await);
    assert_eq!(reason, outside_message("passwd"));
    let reason = denied_reason(call(&f.list, json!({ "path": "link" })).await);
    assert_eq!(reason, outside_message("link"));

    // Writing through the link, to a new file or over an existing one, is refused too.
    let reason = denied_reason(
        call(
            &f.write,
            json!({ "path": "link/new/file.txt", "content": "x" }),
        )
        .await,
    );
    assert_eq!(reason, outside_message("link/new/file.txt"));
    let reason = denied_reason(call(&f.write, json!({ "path": "passwd", "content": "x" })).await);
    assert_eq!(reason, outside_message("passwd"));
    assert!(!f.outside.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(f.outside.join("secret.txt")).unwrap(),
        "top secret"
    );
}

#[tokio::test]
async fn broken_symlink_is_not_followed_for_writes() {
    let f = fixture();
    symlink(f.outside.join("planted.txt"), f.workspace.join("dangling")).unwrap();
    let reason = denied_reason(call(&f.write, json!({ "path": "dangling", "content": "x" })).await);
    assert_eq!(reason, "path `dangling` goes through a broken symlink");
    assert!(!f.outside.join("planted.txt").exists());
}

#[tokio::test]
async fn symlinks_inside_the_workspace_are_fine() {
    let f = fixture();
    std::fs::create_dir(f.workspace.join("real")).unwrap();
    std::fs::write(f.workspace.join("real/a.txt"), "hello").unwrap();
    symlink(f.workspace.join("real"), f.workspace.join("alias")).unwrap();
    let out = call(&f.read, json!({ "path": "alias/a.txt" }))
        .await
        .unwrap();
    assert_eq!(out["content"], "hello");
    assert_eq!(out["path"], "real/a.txt");
}

#[tokio::test]
async fn write_read_append_list_round_trip() {
    let f = fixture();
    let out = call(
        &f.write,
        json!({ "path": "notes/todo.txt", "content": "buy milk\n" }),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        json!({ "path": "notes/todo.txt", "bytes_written": 9, "appended": false })
    );
    assert_eq!(
        std::fs::read_to_string(f.workspace.join("notes/todo.txt")).unwrap(),
        "buy milk\n"
    );

    call(
        &f.write,
        json!({ "path": "notes/todo.txt", "content": "call mom\n", "append": true }),
    )
    .await
    .unwrap();
    let out = call(&f.read, json!({ "path": "./notes/../notes/todo.txt" }))
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({ "path": "notes/todo.txt", "size": 18, "content": "buy milk\ncall mom\n" })
    );

    // Replacing truncates.
    call(
        &f.write,
        json!({ "path": "notes/todo.txt", "content": "done" }),
    )
    .await
    .unwrap();
    call(&f.write, json!({ "path": "a.txt", "content": "" }))
        .await
        .unwrap();

    let root = call(&f.list, json!({})).await.unwrap();
    assert_eq!(
        root,
        json!({
            "path": ".",
            "entries": [
                { "name": "a.txt", "kind": "file", "size": 0 },
                { "name": "notes", "kind": "dir", "size": root["entries"][1]["size"] },
            ],
            "truncated": false,
        })
    );
    let notes = call(&f.list, json!({ "path": "notes" })).await.unwrap();
    assert_eq!(
        notes["entries"],
        json!([{ "name": "todo.txt", "kind": "file", "size": 4 }])
    );
}

#[tokio::test]
async fn list_shows_symlinks_without_following_them() {
    let f = fixture();
    symlink(&f.outside, f.workspace.join("link")).unwrap();
    let out = call(&f.list, json!({ "path": "." })).await.unwrap();
    assert_eq!(out["entries"][0]["name"], "link");
    assert_eq!(out["entries"][0]["kind"], "symlink");
}

#[tokio::test]
async fn read_limit_is_a_clear_error() {
    let f = fixture_with(10);
    std::fs::write(f.workspace.join("small.txt"), "0123456789").unwrap();
    std::fs::write(f.workspace.join("big.txt"), "0123456789A").unwrap();
    let out = call(&f.read, json!({ "path": "small.txt" })).await.unwrap();
    assert_eq!(out["content"], "0123456789");
    let (message, retryable) = failed(call(&f.read, json!({ "path": "big.txt" })).await);
    assert_eq!(
        message,
        "`big.txt` is 11 bytes, more than the read limit of 10 bytes"
    );
    assert!(!retryable);
}

#[tokio::test]
async fn missing_files_and_directories_are_clear_errors() {
    let f = fixture();
    let (message, _) = failed(call(&f.read, json!({ "path": "nope.txt" })).await);
    assert_eq!(message, "`nope.txt` does not exist");
    std::fs::create_dir(f.workspace.join("dir")).unwrap();
    let (message, _) = failed(call(&f.read, json!({ "path": "dir" })).await);
    assert_eq!(message, "`dir` is a directory; use list_files");
    std::fs::write(f.workspace.join("file"), "x").unwrap();
    let (message, _) = failed(call(&f.list, json!({ "path": "file" })).await);
    assert_eq!(message, "`file` is a file, not a directory");
    let err = call(&f.write, json!({ "path": ".", "content": "x" }))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments { .. }), "{err:?}");
}

#[tokio::test]
async fn unknown_arguments_are_rejected() {
    let f = fixture();
    let err = call(&f.read, json!({ "path": "a", "max_bytes": 5 }))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments { .. }), "{err:?}");
}

#[test]
fn risks() {
    let f = fixture();
    assert_eq!(f.read.spec().risk, Risk::Safe);
    assert_eq!(f.list.spec().risk, Risk::Safe);
    assert_eq!(f.write.spec().risk, Risk::Sensitive);
    assert!(f.read.spec().idempotent);
    assert!(!f.write.spec().idempotent);
}

#[test]
fn workspace_that_cannot_be_created_is_a_setup_error_naming_it() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let config = ToolsConfig {
        files: FilesConfig {
            workspace: file.join("ws"),
            ..FilesConfig::default()
        },
        ..ToolsConfig::default()
    };
    let err = builtin_err("files", &config);
    assert!(matches!(err, ToolsError::Workspace { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot create or open the workspace directory `{}`",
            Path::new(&file).join("ws").display()
        )
    );
}
