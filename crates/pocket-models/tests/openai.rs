//! The OpenAI-compatible provider against in-process servers: request shape, responses,
//! streaming over awkwardly split bodies, and every error mapping.
//! Plain-http requests go straight through hyper (`direct_http`, the default).

mod support;

const DIRECT_HTTP: bool = true;

include!("openai/cases.rs");
