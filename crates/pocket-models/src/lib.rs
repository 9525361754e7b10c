//! Model providers for Pocket Agent.
//!
//! - [`openai`]: any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp,
//!   Ollama, LiteLLM), with tool calls and streaming.
//! - [`anthropic`]: the Anthropic Messages API with `tool_use`.
//! - [`sim`]: a deterministic offline model for demos, tests and chaos drills.
//!
//! Providers never retry on their own: retries belong to one layer (`pocket-resilience`)
//! so attempts are counted once per call path.

pub mod anthropic;
mod direct;
mod http;
pub mod openai;
pub mod sim;
mod transport;

pub use anthropic::{AnthropicConfig, AnthropicModel};
pub use openai::{OpenAiConfig, OpenAiModel};
pub use sim::{Faults, SimConfig, SimModel};
pub use transport::TransportError;

// The README's library quick-start, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
