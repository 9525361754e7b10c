//! The Anthropic Messages provider against in-process servers: request shape and headers,
//! `tool_use` mapping both ways, streaming over awkwardly split bodies, and error mapping.
//! Plain-http requests go straight through hyper (`direct_http`, the default).

mod support;

const DIRECT_HTTP: bool = true;

include!("anthropic/cases.rs");
