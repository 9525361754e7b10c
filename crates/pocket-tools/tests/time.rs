//! The `time` tool against the real clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail the test loudly by design

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use pocket_agent::ToolError;
use pocket_tools::{ToolsConfig, builtin};
use serde_json::json;
use support::call;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn returns_utc_and_unix_now() {
    let tool = builtin("time", &ToolsConfig::default()).unwrap().remove(0);
    let before = now_unix();
    let out = call(&tool, json!({})).await.unwrap();
    let after = now_unix();
    let unix = out["unix"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&unix),
        "{unix} not in {before}..={after}"
    );
    let utc = OffsetDateTime::parse(out["utc"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(utc.unix_timestamp(), unix);
    assert!(out["utc"].as_str().unwrap().ends_with('Z'));
    assert!(out.get("local").is_none(), "{out}");
}

#[tokio::test]
async fn local_time_at_an_offset() {
    let tool = builtin("time", &ToolsConfig::default()).unwrap().remove(0);
    let out = call(&tool, json!({ "timezone_offset": "+02:00" }))
        .await
        .unwrap();
    let local = out["local"].as_str().unwrap();
    assert!(local.ends_with("+02:00"), "{local}");
    let parsed = OffsetDateTime::parse(local, &Rfc3339).unwrap();
    assert_eq!(parsed.unix_timestamp(), out["unix"].as_i64().unwrap());
    assert_eq!(out["weekday"], json!(parsed.weekday().to_string()));
}

#[tokio::test]
async fn bad_offset_is_invalid_arguments() {
    let tool = builtin("time", &ToolsConfig::default()).unwrap().remove(0);
    let err = call(&tool, json!({ "timezone_offset": "CEST" }))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "invalid arguments: timezone_offset `CEST` is not an offset like `+02:00`, `-05:30` or `Z`"
    );
}
