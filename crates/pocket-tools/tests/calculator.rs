//! The `calculator` tool at the JSON level, as the agent sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail the test loudly by design

mod support;

use pocket_agent::{Risk, ToolError};
use pocket_tools::{ToolsConfig, builtin};
use serde_json::{Value, json};
use support::{call, failed};

fn calculator() -> pocket_agent::SharedTool {
    let mut tools = builtin("calculator", &ToolsConfig::default()).unwrap();
    assert_eq!(tools.len(), 1);
    tools.remove(0)
}

#[tokio::test]
async fn integral_results_serialize_as_integers() {
    let out = call(&calculator(), json!({ "expression": "17 * 23" }))
        .await
        .unwrap();
    assert_eq!(out, json!(391));
    assert_eq!(out.to_string(), "391");
}

#[tokio::test]
async fn division_is_not_integer_division() {
    let out = call(&calculator(), json!({ "expression": "7/2" }))
        .await
        .unwrap();
    assert_eq!(out.to_string(), "3.5");
}

#[tokio::test]
async fn syntax_errors_are_invalid_arguments_with_position() {
    let err = call(&calculator(), json!({ "expression": "(1 + 2))" }))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "invalid arguments: unexpected `)` at position 8"
    );
}

#[tokio::test]
async fn division_by_zero_is_a_non_retryable_failure() {
    let (message, retryable) =
        failed(call(&calculator(), json!({ "expression": "1 / (3 - 3)" })).await);
    assert_eq!(message, "division by zero (`/` by 0) at position 3");
    assert!(!retryable);
}

#[tokio::test]
async fn unknown_arguments_are_rejected() {
    let err = call(&calculator(), json!({ "expression": "1", "precision": 2 }))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments { .. }), "{err:?}");
    assert!(
        err.to_string().contains("unknown field `precision`"),
        "{err}"
    );
}

#[test]
fn spec_is_safe_idempotent_and_documents_its_argument() {
    let tool = calculator();
    let spec = tool.spec();
    assert_eq!(spec.name, "calculator");
    assert_eq!(spec.risk, Risk::Safe);
    assert!(spec.idempotent);
    assert_eq!(spec.parameters["additionalProperties"], Value::Bool(false));
    assert_eq!(spec.parameters["required"], json!(["expression"]));
    let description = spec.parameters["properties"]["expression"]["description"]
        .as_str()
        .unwrap();
    assert!(description.contains("17 * 23"), "{description}");
}
