//! `[tools]` in TOML, defaults, and `builtin` errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail the test loudly by design

use std::path::PathBuf;

mod support;

use pocket_tools::{BUILTIN_NAMES, ToolsConfig, ToolsError, builtin};
use serde::Deserialize;
use support::builtin_err;

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    tools: ToolsConfig,
}

#[test]
fn empty_config_gives_the_documented_defaults() {
    let file: File = toml::from_str("").unwrap();
    let c = file.tools;
    assert_eq!(c, ToolsConfig::default());
    assert_eq!(c.files.workspace, PathBuf::from("./workspace"));
    assert_eq!(c.files.max_read_bytes, 1024 * 1024);
    assert_eq!(c.http_fetch.timeout_secs, 15);
    assert_eq!(c.http_fetch.max_bytes, 1024 * 1024);
    assert!(!c.http_fetch.allow_private);
    assert!(c.http_fetch.allowed_hosts.is_empty());
    assert_eq!(c.shell.workspace, None);
    assert_eq!(c.shell.timeout_secs, 30);
    assert_eq!(c.shell.max_output_bytes, 64 * 1024);
}

#[test]
fn sections_parse_and_missing_keys_keep_defaults() {
    let file: File = toml::from_str(
        r#"
        [tools.files]
        workspace = "/srv/agent"

        [tools.http_fetch]
        timeout_secs = 5
        allowed_hosts = ["example.com"]

        [tools.shell]
        workspace = "/srv/scratch"
        max_output_bytes = 1000
        "#,
    )
    .unwrap();
    let c = file.tools;
    assert_eq!(c.files.workspace, PathBuf::from("/srv/agent"));
    assert_eq!(c.files.max_read_bytes, 1024 * 1024);
    assert_eq!(c.http_fetch.timeout_secs, 5);
    assert_eq!(c.http_fetch.max_bytes, 1024 * 1024);
    assert_eq!(c.http_fetch.allowed_hosts, ["example.com"]);
    assert_eq!(c.shell.workspace, Some(PathBuf::from("/srv/scratch")));
    assert_eq!(c.shell.timeout_secs, 30);
    assert_eq!(c.shell.max_output_bytes, 1000);
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let err = toml::from_str::<File>("[tools.shell]\ntimeout = 5\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
    let err = toml::from_str::<File>("[tools.browser]\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `browser`"), "{err}");
}

#[test]
fn unknown_tool_lists_the_valid_names() {
    let err = builtin_err("browser", &ToolsConfig::default());
    assert!(matches!(err, ToolsError::UnknownTool { .. }));
    assert_eq!(
        err.to_string(),
        "unknown built-in tool `browser`; the built-in tools are: calculator, time, files, http_fetch, shell"
    );
    assert_eq!(
        BUILTIN_NAMES,
        ["calculator", "time", "files", "http_fetch", "shell"]
    );
}

#[test]
fn zero_limits_are_config_errors_naming_the_key() {
    let mut config = ToolsConfig::default();
    config.shell.timeout_secs = 0;
    let err = builtin_err("shell", &config);
    assert_eq!(
        err.to_string(),
        "invalid `tools.shell.timeout_secs`: must be at least 1 second"
    );
    let mut config = ToolsConfig::default();
    config.files.max_read_bytes = 0;
    let err = builtin_err("files", &config);
    assert_eq!(
        err.to_string(),
        "invalid `tools.files.max_read_bytes`: must be at least 1 byte"
    );
}

#[test]
fn every_builtin_name_builds() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = ToolsConfig::default();
    config.files.workspace = dir.path().join("ws");
    let mut names = Vec::new();
    for name in BUILTIN_NAMES {
        for tool in builtin(name, &config).unwrap() {
            let spec = tool.spec();
            assert_eq!(
                spec.parameters["additionalProperties"],
                serde_json::Value::Bool(false),
                "{} accepts unknown arguments",
                spec.name
            );
            names.push(spec.name.clone());
        }
    }
    assert_eq!(
        names,
        [
            "calculator",
            "time",
            "read_file",
            "write_file",
            "list_files",
            "http_fetch",
            "shell"
        ]
    );
}
