//! The [`Model`] trait: the LLM behind an agent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use futures_util::future::BoxFuture;

use crate::error::ModelError;
use crate::message::{Completion, CompletionRequest, StreamEvent};

/// A stream of [`StreamEvent`]s; a successful stream ends with [`StreamEvent::Done`].
pub type CompletionStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ModelError>> + Send>>;

/// A language model: answers a [`CompletionRequest`] with text and/or tool calls.
///
/// Implement [`complete`](Model::complete); [`stream`](Model::stream) defaults to one
/// completion delivered as a stream. Layers (retry, circuit breaker, fallback) wrap a `Model`
/// and are a `Model` again. Store different models behind one type with [`BoxModel`].
///
/// ```
/// use pocket_agent::{Completion, CompletionRequest, Model, ModelError};
///
/// struct Echo;
///
/// impl Model for Echo {
///     fn name(&self) -> &str {
///         "echo"
///     }
///
///     async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
///         let last = request.messages.last().and_then(|m| m.text()).unwrap_or_default();
///         Ok(Completion::text(last))
///     }
/// }
/// ```
pub trait Model: Send + Sync + 'static {
    /// A stable name for logs and metrics, like `openai:gpt-4o-mini` or `sim`.
    fn name(&self) -> &str;

    /// Answers one request.
    ///
    /// # Errors
    /// A [`ModelError`] that classifies the failure (rate limit, timeout, auth, ...).
    fn complete(
        &self,
        request: &CompletionRequest,
    ) -> impl Future<Output = Result<Completion, ModelError>> + Send;

    /// Answers one request as a stream of deltas ending with the assembled completion.
    ///
    /// # Errors
    /// As [`complete`](Model::complete), for failures before the stream starts; later
    /// failures arrive as stream items.
    fn stream(
        &self,
        request: &CompletionRequest,
    ) -> impl Future<Output = Result<CompletionStream, ModelError>> + Send {
        async move {
            let completion = self.complete(request).await?;
            Ok(completion_as_stream(completion))
        }
    }
}

/// Turns a finished completion into the stream a streaming provider would have produced.
pub fn completion_as_stream(completion: Completion) -> CompletionStream {
    let mut events = Vec::with_capacity(2 + 2 * completion.tool_calls.len());
    if let Some(text) = &completion.content {
        events.push(Ok(StreamEvent::TextDelta(text.clone())));
    }
    for (index, call) in completion.tool_calls.iter().enumerate() {
        events.push(Ok(StreamEvent::ToolCallStart {
            index,
            id: call.id.clone(),
            name: call.name.clone(),
        }));
        events.push(Ok(StreamEvent::ToolCallDelta {
            index,
            arguments: call.arguments.to_string(),
        }));
    }
    events.push(Ok(StreamEvent::Done(completion)));
    Box::pin(futures_util::stream::iter(events))
}

impl<M: Model> Model for Arc<M> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn complete(
        &self,
        request: &CompletionRequest,
    ) -> impl Future<Output = Result<Completion, ModelError>> + Send {
        (**self).complete(request)
    }

    fn stream(
        &self,
        request: &CompletionRequest,
    ) -> impl Future<Output = Result<CompletionStream, ModelError>> + Send {
        (**self).stream(request)
    }
}

/// The object-safe twin of [`Model`], used only behind [`BoxModel`].
trait DynModel: Send + Sync {
    fn name(&self) -> &str;
    fn complete<'a>(
        &'a self,
        request: &'a CompletionRequest,
    ) -> BoxFuture<'a, Result<Completion, ModelError>>;
    fn stream<'a>(
        &'a self,
        request: &'a CompletionRequest,
    ) -> BoxFuture<'a, Result<CompletionStream, ModelError>>;
}

impl<M: Model> DynModel for M {
    fn name(&self) -> &str {
        Model::name(self)
    }

    fn complete<'a>(
        &'a self,
        request: &'a CompletionRequest,
    ) -> BoxFuture<'a, Result<Completion, ModelError>> {
        Box::pin(Model::complete(self, request))
    }

    fn stream<'a>(
        &'a self,
        request: &'a CompletionRequest,
    ) -> BoxFuture<'a, Result<CompletionStream, ModelError>> {
        Box::pin(Model::stream(self, request))
    }
}

// Compile-time check that the trait stays object safe.
const _: Option<&dyn DynModel> = None;

/// Any [`Model`] behind one cheap-to-clone type.
#[derive(Clone)]
pub struct BoxModel(Arc<dyn DynModel>);

impl BoxModel {
    /// Boxes a model.
    pub fn new(model: impl Model) -> Self {
        Self(Arc::new(model))
    }
}

impl std::fmt::Debug for BoxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BoxModel").field(&self.0.name()).finish()
    }
}

impl Model for BoxModel {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        self.0.complete(request).await
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<CompletionStream, ModelError> {
        self.0.stream(request).await
    }
}
