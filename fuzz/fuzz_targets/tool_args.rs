//! Tool-call arguments through the agent loop: a scripted model asks for a call with the fuzz
//! text as its arguments (parsed as a provider does: JSON, else the raw text as a string),
//! and the agent validates them against the tool's JSON Schema before calling it.
//!
//! Properties: nothing panics; the tool is only ever called with arguments its schema
//! accepts (checked again inside the tool with an independent validator).
//!
//! Input: byte 0 bit 0 = 0: a fixed schema with common constraints, the rest is the
//! arguments; bit 0 = 1: the rest is `SCHEMA \0 ARGUMENTS` (schemas from MCP servers are
//! arbitrary too).
#![no_main]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use libfuzzer_sys::fuzz_target;
use pocket_agent::testing::ScriptedModel;
use pocket_agent::{Agent, Completion, DynTool, ToolCall, ToolContext, ToolError, ToolSpec};
use serde_json::{Value, json};

static INVALID_REACHED_TOOL: AtomicBool = AtomicBool::new(false);

struct Checked {
    spec: ToolSpec,
    validator: jsonschema::Validator,
}

impl DynTool for Checked {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        args: Value,
        _: &'a ToolContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        if !self.validator.is_valid(&args) {
            INVALID_REACHED_TOOL.store(true, Ordering::SeqCst);
        }
        Box::pin(async { Ok(json!("ok")) })
    }
}

fn fixed_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 16, "pattern": "^[a-z]+$"},
            "count": {"type": "integer", "minimum": 0, "maximum": 100},
            "mode": {"enum": ["fast", "slow"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4, "uniqueItems": true},
            "inner": {
                "type": "object",
                "properties": {"flag": {"type": "boolean"}, "ratio": {"type": "number", "exclusiveMaximum": 1}},
                "required": ["flag"],
                "additionalProperties": false
            },
            "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]}
        },
        "required": ["name", "count"],
        "additionalProperties": false
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// As a provider turns raw argument text into a value (pocket-models `parse_arguments`).
fn provider_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (schema, raw) = if mode & 1 == 0 {
        (fixed_schema(), text)
    } else {
        let Some((schema, raw)) = text.split_once('\0') else {
            return;
        };
        let Ok(schema) = serde_json::from_str::<Value>(schema) else {
            return;
        };
        (schema, raw)
    };
    // The tool's own validator; a schema it refuses is refused by the agent too.
    let Ok(validator) = jsonschema::validator_for(&schema) else {
        return;
    };
    let tool = Checked {
        spec: ToolSpec::new("probe", "Probes.", schema),
        validator,
    };
    let call = ToolCall {
        id: "c1".into(),
        name: "probe".into(),
        arguments: provider_arguments(raw),
    };
    let model = ScriptedModel::new([Ok(Completion::tool_calls(vec![call]))])
        .then_always(|| Ok(Completion::text("done")));
    let Ok(agent) = Agent::builder(model)
        .dyn_tool(Arc::new(tool))
        .max_iterations(3)
        .build()
    else {
        return;
    };
    INVALID_REACHED_TOOL.store(false, Ordering::SeqCst);
    let _ = runtime().block_on(agent.run("probe it"));
    assert!(
        !INVALID_REACHED_TOOL.load(Ordering::SeqCst),
        "the tool was called with arguments its schema refuses: {raw:?}"
    );
});
