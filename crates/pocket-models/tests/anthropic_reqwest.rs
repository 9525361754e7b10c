//! The Anthropic Messages provider against in-process servers: request shape and headers,
//! `tool_use` mapping both ways, streaming over awkwardly split bodies, and error mapping.
//! The same cases through reqwest (`direct_http` off), the route of https and proxies.

mod support;

const DIRECT_HTTP: bool = false;

include!("anthropic/cases.rs");
