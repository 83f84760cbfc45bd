//! What Kiro does not do, done by aiproxy: the request fields Kiro has no equivalent for
//! are applied here rather than accepted and ignored (docs/kiro-protocol.md §4.4: Kiro takes no
//! stop list, no `max_tokens`, no tool choice).
//!
//! - `max_tokens` above the model's output limit (`max_output_tokens` in the catalog) is a
//!   400 that names the limit; within it, the answer is cut at the count ([`limits`]).
//! - Stop sequences end the answer at the first match ([`limits`], [`stop`]).
//! - `parallel_tool_calls: false` / `disable_parallel_tool_use` end it after the first
//!   tool call ([`limits`]).
//! - A forced tool choice is told to the model, held back until the call begins, and
//!   asked once more when it is missing ([`forced`]).
//! - A conversation over the model's context window is the overflow error Claude Code
//!   compacts on, before any wait for an account.
//! - Structured output goes through a forced internal tool whose input schema is the
//!   requested schema; its input, validated, becomes the message content ([`structured`]).
//!
//! The layer sits below [`super::resolve`] (it reads the [`ResolvedModel`]) and above retry,
//! so a second ask for a forced tool call goes through retry and the pool like any request.

pub mod forced;
pub mod limits;
pub mod stop;
pub mod structured;

use super::{ModelRequest, ModelResponse, PromptTokens, ResolvedModel};
use crate::chat::web_search::SearchQuery;
use crate::chat::{ChatError, ToolChoice};
use forced::Required;
use futures_util::future::{BoxFuture, TryFutureExt};
use limits::Limits;
use std::sync::Arc;
use std::task::{Context, Poll};
use structured::OutputTool;

/// Adds [`Emulate`] around a model service.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmulateLayer;

impl<S> tower::Layer<S> for EmulateLayer {
    type Service = Emulate<S>;

    fn layer(&self, inner: S) -> Emulate<S> {
        Emulate { inner }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Emulate<S> {
    inner: S,
}

/// What one request needs emulated.
struct Plan {
    limits: Limits,
    /// What the answer must do; [`Required::Output`] carries the internal tool of structured
    /// output (unless the client forced its own tool).
    required: Option<Required>,
}

impl Plan {
    fn of(request: &ModelRequest) -> Result<Self, ChatError> {
        let chat = &request.chat;
        let max_tokens = chat.sampling.max_tokens.map(u64::from);
        if let Some(max) = max_tokens {
            check_max_tokens(max, request.extensions.get::<ResolvedModel>())?;
        }
        if let Some(i) = chat.sampling.stop.iter().position(String::is_empty) {
            return Err(ChatError::invalid(
                "stop",
                format!(
                    "stop sequence {i} is empty; every stop sequence needs at least one character."
                ),
            ));
        }
        let required = match (Required::of(chat)?, &chat.output) {
            (None, Some(format)) => Some(Required::Output(Arc::new(OutputTool::new(
                format,
                &chat.tools,
            )?))),
            (required, _) => required,
        };
        // A model that takes `max_tokens` natively stops itself (the Kiro service sends it).
        let native = request
            .extensions
            .get::<ResolvedModel>()
            .is_some_and(|r| r.entry.capabilities.native_max_tokens);
        Ok(Self {
            limits: Limits {
                stop: chat.sampling.stop.clone(),
                max_tokens: max_tokens.filter(|_| !native),
                single_tool_call: chat.single_tool_call && !chat.tools.is_empty(),
            },
            required,
        })
    }
}

/// The conversation against the model's context window, with the local estimate, before
/// any wait for an account (the leaf checks Kiro's weighted payload limit, which needs the
/// Kiro body). The estimate travels on as [`PromptTokens`] when the request goes down as it
/// is (`unchanged`), so the leaf does not count again.
fn check_window(request: &mut ModelRequest, unchanged: bool) -> Result<(), ChatError> {
    let Some(window) = request
        .extensions
        .get::<ResolvedModel>()
        .map(|r| r.entry.context_window)
    else {
        return Ok(());
    };
    let tokens = crate::token_count::estimate_request(&request.chat);
    if tokens > window {
        return Err(ChatError::ContextOverflow {
            tokens,
            limit: window,
        });
    }
    if unchanged {
        request.extensions.insert(PromptTokens(tokens));
    }
    Ok(())
}

fn check_max_tokens(max: u64, resolved: Option<&ResolvedModel>) -> Result<(), ChatError> {
    if max == 0 {
        return Err(ChatError::invalid(
            "max_tokens",
            "`max_tokens` is 0; it must be at least 1.",
        ));
    }
    let Some(entry) = resolved.map(|r| &r.entry) else {
        return Ok(());
    };
    match entry.max_output_tokens {
        Some(limit) if max > limit => Err(ChatError::invalid(
            "max_tokens",
            format!(
                "`max_tokens` is {max}, above the {limit} output tokens `{}` can produce; send at most {limit}.",
                entry.id
            ),
        )),
        _ => Ok(()),
    }
}

impl<S> tower::Service<ModelRequest> for Emulate<S>
where
    S: tower::Service<ModelRequest, Response = ModelResponse, Error = ChatError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = ModelResponse;
    type Error = ChatError;
    type Future = BoxFuture<'static, Result<ModelResponse, ChatError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChatError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ModelRequest) -> Self::Future {
        // A web search is not a model answer: nothing here applies to it.
        if request.extensions.get::<SearchQuery>().is_some() {
            return Box::pin(self.inner.call(request));
        }
        let mut request = request;
        let plan = match Plan::of(&request).and_then(|plan| {
            check_window(&mut request, plan.required.is_none())?;
            Ok(plan)
        }) {
            Ok(plan) => plan,
            Err(error) => return Box::pin(futures_util::future::ready(Err(error))),
        };
        // The ready service serves this call; the clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Plan { limits, required } = plan;
        let Some(required) = required else {
            // The common case without an async block: its box holds the inner call and the
            // limits, not room for the forced path's copy of the request and second ask.
            return Box::pin(inner.call(request).map_ok(move |mut response| {
                response.events = limits.apply(response.events);
                response
            }));
        };
        Box::pin(async move {
            let output_tool = match &required {
                Required::Output(tool) => Some(tool.name.clone()),
                _ => None,
            };
            // In a block: the edited copy is gone (shared in the request) before the await.
            let request = {
                let mut chat = (*request.chat).clone();
                chat.system.push(required.instruction());
                if let Required::Output(tool) = &required {
                    // The request's own tools stay callable (unless it said `none`); without
                    // them, the output tool is the one to call.
                    chat.tool_choice = match chat.tool_choice {
                        ToolChoice::Auto if !chat.tools.is_empty() => ToolChoice::Any,
                        _ => ToolChoice::Tool(tool.name.clone()),
                    };
                    chat.tools.push(tool.tool());
                }
                ModelRequest {
                    chat: Arc::new(chat),
                    extensions: request.extensions,
                }
            };
            let mut response = forced::call(inner, request, required).await?;
            if let Some(tool_name) = output_tool {
                response.events = structured::as_content(response.events, tool_name);
            }
            response.events = limits.apply(response.events);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::chat::{ChatRequest, Message, Role, Sampling};

    fn request(max_tokens: u32, stop: &[&str]) -> ModelRequest {
        let mut request = ModelRequest::new(ChatRequest {
            model: "claude-sonnet-4-5".into(),
            messages: vec![Message::text(Role::User, "hi")],
            sampling: Sampling {
                max_tokens: Some(max_tokens),
                stop: stop.iter().map(|s| s.to_string()).collect(),
                ..Sampling::default()
            },
            ..ChatRequest::default()
        });
        let catalog = Catalog::builtin().unwrap();
        request.extensions.insert(ResolvedModel {
            entry: catalog.get("claude-sonnet-4-5").unwrap().clone(),
            thinking_suffix: false,
        });
        request
    }

    #[test]
    fn max_tokens_over_the_model_limit_names_the_limit() {
        let error = Plan::of(&request(64_001, &[])).err().unwrap();
        assert_eq!(error.kind(), "invalid_request");
        assert!(
            error.to_string().contains("64000") && error.to_string().contains("claude-sonnet-4-5"),
            "{error}"
        );
        assert!(Plan::of(&request(64_000, &[])).is_ok(), "at the limit");
        assert!(Plan::of(&request(0, &[])).is_err());
    }

    #[test]
    fn an_empty_stop_sequence_is_refused() {
        let error = Plan::of(&request(10, &["ok", ""])).err().unwrap();
        assert!(error.to_string().contains("stop sequence 1"), "{error}");
        let plan = Plan::of(&request(10, &["ok"])).unwrap();
        assert_eq!(plan.limits.stop, vec!["ok"]);
        assert_eq!(plan.limits.max_tokens, Some(10));
        assert!(plan.required.is_none());
    }
}
