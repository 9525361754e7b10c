//! The OpenAI-compatible provider against in-process servers: request shape, responses,
//! streaming over awkwardly split bodies, and every error mapping.
//! The same cases through reqwest (`direct_http` off), the route of https and proxies.

mod support;

const DIRECT_HTTP: bool = false;

include!("openai/cases.rs");
