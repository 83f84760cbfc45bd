//! Forced tool choice (OpenAI `tool_choice: "required"` or a named function, Anthropic
//! `{"type": "any"}` or `{"type": "tool"}`). Kiro has no such field, so aiproxy tells the
//! model in the system prompt, holds the answer back until the required call begins, and
//! asks once more (with a reminder) when the answer ends without it. Nothing reaches the
//! client before the call is there, so the second try and the final error are clean.

use super::super::{ModelRequest, ModelResponse};
use crate::chat::{ChatError, ChatEvent, ChatRequest, ToolChoice};
use futures_util::StreamExt;
use std::sync::Arc;
use tower::{Service, ServiceExt};

/// Which call the answer must make.
#[derive(Clone, Debug, PartialEq)]
pub enum Required {
    /// Any of the request's tools.
    Any,
    /// This tool.
    Named(String),
}

impl Required {
    /// What `chat` requires, checked against its tools.
    pub fn of(chat: &ChatRequest) -> Result<Option<Self>, ChatError> {
        match &chat.tool_choice {
            ToolChoice::Auto | ToolChoice::None => Ok(None),
            ToolChoice::Any if chat.tools.is_empty() => Err(ChatError::invalid(
                "tool_choice",
                "`tool_choice` requires a tool call but the request defines no tools; add `tools` or use `auto`.",
            )),
            ToolChoice::Any => Ok(Some(Self::Any)),
            ToolChoice::Tool(name) if !chat.tools.iter().any(|t| t.name == *name) => {
                Err(ChatError::invalid(
                    "tool_choice",
                    format!(
                        "`tool_choice` names the tool `{name}`, which is not among the request's `tools`; \
                         define it or name one of them."
                    ),
                ))
            }
            ToolChoice::Tool(name) => Ok(Some(Self::Named(name.clone()))),
        }
    }

    /// The system-prompt instruction.
    pub fn instruction(&self) -> String {
        match self {
            Self::Any => "Answer this turn by calling one of the tools provided. Do not answer with text alone.".into(),
            Self::Named(name) => format!(
                "Answer this turn by calling the tool `{name}`. Do not answer with text alone and do not call another tool first."
            ),
        }
    }

    fn reminder(&self) -> String {
        match self {
            Self::Any => {
                "(Your previous reply did not call a tool. Call one of the tools now.)".into()
            }
            Self::Named(name) => {
                format!("(Your previous reply did not call `{name}`. Call `{name}` now.)")
            }
        }
    }

    fn met_by(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Named(required) => required == name,
        }
    }
}

/// Calls `inner` (ready) and, if the answer misses the required call, once more.
pub async fn call<S>(
    mut inner: S,
    request: ModelRequest,
    required: Required,
) -> Result<ModelResponse, ChatError>
where
    S: Service<ModelRequest, Response = ModelResponse, Error = ChatError>,
{
    let retry = ModelRequest {
        chat: Arc::new(request.chat.with_reminder(&required.reminder())),
        extensions: request.extensions.clone(),
    };
    if let Some(response) = held(inner.call(request).await?, &required).await? {
        return Ok(response);
    }
    tracing::info!("the answer did not make the required tool call; asking once more");
    match held(inner.ready().await?.call(retry).await?, &required).await? {
        Some(response) => Ok(response),
        None => Err(ChatError::Unfulfilled {
            message: format!(
                "the model answered twice without the tool call that `tool_choice` requires ({}); \
                 retry, rephrase the request, or use `tool_choice: auto`",
                match &required {
                    Required::Any => "any tool".to_owned(),
                    Required::Named(name) => format!("`{name}`"),
                }
            ),
        }),
    }
}

/// Reads `response` until the required call begins: the response with what was read put
/// back in front, or `None` when the answer ended without it.
async fn held(
    mut response: ModelResponse,
    required: &Required,
) -> Result<Option<ModelResponse>, ChatError> {
    let mut read = Vec::new();
    while let Some(item) = response.events.next().await {
        let event = item?;
        match &event {
            ChatEvent::ToolCallStart { name, .. } if required.met_by(name) => {
                read.push(Ok(event));
                let rest = std::mem::replace(
                    &mut response.events,
                    Box::pin(futures_util::stream::empty()),
                );
                response.events = Box::pin(futures_util::stream::iter(read).chain(rest));
                return Ok(Some(response));
            }
            // Another tool first: the named one was not called as asked.
            ChatEvent::ToolCallStart { .. } | ChatEvent::Stop(_) => return Ok(None),
            _ => read.push(Ok(event)),
        }
    }
    Err(ChatError::Truncated {
        message: "the response ended without a stop reason; retry the request".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Message, Role, StopReason, Tool};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn chat(choice: ToolChoice) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message::text(Role::User, "weather?")],
            tools: vec![Tool {
                name: "get_weather".into(),
                description: String::new(),
                input_schema: serde_json::json!({"type": "object"}),
            }],
            tool_choice: choice,
            ..ChatRequest::default()
        }
    }

    fn answer(events: Vec<ChatEvent>) -> ModelResponse {
        ModelResponse::new(Box::pin(futures_util::stream::iter(
            events.into_iter().map(Ok),
        )))
    }

    fn text_only() -> Vec<ChatEvent> {
        vec![
            ChatEvent::TextDelta("It is sunny.".into()),
            ChatEvent::Stop(StopReason::EndTurn),
        ]
    }

    fn with_call(name: &str) -> Vec<ChatEvent> {
        vec![
            ChatEvent::TextDelta("Checking.".into()),
            ChatEvent::ToolCallStart {
                index: 0,
                id: "t".into(),
                name: name.into(),
            },
            ChatEvent::ToolCallEnd { index: 0 },
            ChatEvent::Stop(StopReason::ToolUse),
        ]
    }

    /// Answers the scripted answers in order and counts the calls; the second request must
    /// carry the reminder.
    fn scripted(
        answers: Vec<Vec<ChatEvent>>,
        calls: Arc<AtomicUsize>,
    ) -> impl Service<
        ModelRequest,
        Response = ModelResponse,
        Error = ChatError,
        Future = futures_util::future::Ready<Result<ModelResponse, ChatError>>,
    > {
        tower::service_fn(move |request: ModelRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n > 0 {
                let last = request.chat.messages.last().unwrap();
                assert_eq!(last.parts.len(), 2, "the retry carries a reminder");
            }
            futures_util::future::ready(Ok(answer(answers[n].clone())))
        })
    }

    async fn run(
        choice: ToolChoice,
        answers: Vec<Vec<ChatEvent>>,
    ) -> (Result<Vec<ChatEvent>, ChatError>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let chat = chat(choice);
        let required = Required::of(&chat).unwrap().unwrap();
        let result = call(
            scripted(answers, Arc::clone(&calls)),
            ModelRequest::new(chat),
            required,
        )
        .await;
        let events = match result {
            Ok(response) => Ok(response
                .events
                .map(|e| e.unwrap())
                .collect::<Vec<_>>()
                .await),
            Err(e) => Err(e),
        };
        (events, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_required_call_passes_with_the_text_before_it() {
        let (events, calls) = run(ToolChoice::Any, vec![with_call("get_weather")]).await;
        assert_eq!(events.unwrap(), with_call("get_weather"));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn an_answer_without_the_call_is_asked_again_then_refused() {
        let (events, calls) = run(
            ToolChoice::Tool("get_weather".into()),
            vec![text_only(), with_call("get_weather")],
        )
        .await;
        assert_eq!(events.unwrap(), with_call("get_weather"));
        assert_eq!(calls, 2);
        let (events, calls) = run(
            ToolChoice::Tool("get_weather".into()),
            vec![with_call("other"), text_only()],
        )
        .await;
        let error = events.unwrap_err();
        assert_eq!(error.kind(), "unfulfilled");
        assert!(error.to_string().contains("`get_weather`"), "{error}");
        assert_eq!(calls, 2);
    }

    #[test]
    fn a_choice_without_its_tool_is_a_clear_400() {
        let mut no_tools = chat(ToolChoice::Any);
        no_tools.tools.clear();
        let error = Required::of(&no_tools).unwrap_err();
        assert!(error.to_string().contains("defines no tools"), "{error}");
        let error = Required::of(&chat(ToolChoice::Tool("nope".into()))).unwrap_err();
        assert!(error.to_string().contains("`nope`"), "{error}");
        assert_eq!(Required::of(&chat(ToolChoice::Auto)).unwrap(), None);
    }
}
