//! Answers that must make a call: a forced tool choice (OpenAI `tool_choice: "required"` or
//! a named function, Anthropic `{"type": "any"}` or `{"type": "tool"}`) and structured output
//! ([`super::structured`]). Kiro has no such field, so aiproxy tells the model in the system
//! prompt, holds the answer back until the requirement is met (the required call begins; the
//! output call is complete and its input validates), and asks once more, with a reminder
//! that says what was wrong, when the answer misses it. Nothing reaches the client before
//! the requirement is met, so the second try and the final error are clean.

use super::super::{ModelRequest, ModelResponse};
use super::structured::OutputTool;
use crate::chat::{instructions, ChatError, ChatEvent, ChatRequest, ToolChoice};
use futures_util::StreamExt;
use std::sync::Arc;
use tower::{Service, ServiceExt};

/// What the answer must do.
#[derive(Clone, Debug)]
pub enum Required {
    /// Call any of the request's tools.
    Any,
    /// Call this tool.
    Named(String),
    /// Answer through the output tool, with input that validates (or call one of the
    /// request's own tools).
    Output(Arc<OutputTool>),
}

impl Required {
    /// What `chat`'s tool choice requires, checked against its tools.
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
            Self::Any => instructions::CALL_ANY_TOOL.into(),
            Self::Named(name) => instructions::call_tool(name),
            Self::Output(tool) => instructions::answer_with_tool(&tool.name),
        }
    }

    fn reminder(&self, missed: &str) -> String {
        match self {
            Self::Any => "(Your previous reply did not call a tool. Call one of the tools now.)".into(),
            Self::Named(name) => {
                format!("(Your previous reply did not call `{name}`. Call `{name}` now.)")
            }
            Self::Output(tool) => format!(
                "(Your previous reply was not a valid answer: {missed}. Call `{}` now, with input that matches its schema.)",
                tool.name
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Any => "the tool call that `tool_choice` requires (any tool)".into(),
            Self::Named(name) => format!("the tool call that `tool_choice` requires (`{name}`)"),
            Self::Output(_) => "an answer that matches the requested JSON schema".into(),
        }
    }
}

/// Calls `inner` (ready) and, if the answer misses the requirement, once more.
pub async fn call<S>(
    mut inner: S,
    request: ModelRequest,
    required: Required,
) -> Result<ModelResponse, ChatError>
where
    S: Service<ModelRequest, Response = ModelResponse, Error = ChatError>,
{
    let chat = Arc::clone(&request.chat);
    let extensions = request.extensions.clone();
    let missed = match held(inner.call(request).await?, &required).await? {
        Held::Met(response) => return Ok(response),
        Held::Missed(why) => why,
    };
    tracing::info!(missed = %missed, "the answer missed what the request requires; asking once more");
    let retry = ModelRequest {
        chat: Arc::new(chat.with_reminder(&required.reminder(&missed))),
        extensions,
    };
    match held(inner.ready().await?.call(retry).await?, &required).await? {
        Held::Met(response) => Ok(response),
        Held::Missed(why) => Err(ChatError::Unfulfilled {
            message: format!(
                "the model answered twice without {} (last time: {why}); retry, rephrase the request, or relax the requirement",
                required.describe()
            ),
        }),
    }
}

enum Held {
    /// The requirement is met: the response, with what was read put back in front.
    Met(ModelResponse),
    /// The answer ended without it, for this reason.
    Missed(String),
}

/// Reads `response` until the requirement is met or missed.
async fn held(mut response: ModelResponse, required: &Required) -> Result<Held, ChatError> {
    let mut read = Vec::new();
    let mut output_call: Option<(u32, String)> = None;
    while let Some(item) = response.events.next().await {
        let event = item?;
        let met = match (&event, required) {
            (ChatEvent::ToolCallStart { index, name, .. }, Required::Output(tool))
                if *name == tool.name =>
            {
                output_call = Some((*index, String::new()));
                false
            }
            (ChatEvent::ToolCallStart { .. }, Required::Output(_) | Required::Any) => true,
            (ChatEvent::ToolCallStart { name, .. }, Required::Named(wanted)) => {
                if name != wanted {
                    return Ok(Held::Missed(format!("it called `{name}` first")));
                }
                true
            }
            (ChatEvent::ToolCallDelta { index, json }, Required::Output(_)) => {
                if let Some((call, arguments)) = &mut output_call {
                    if call == index {
                        arguments.push_str(json);
                    }
                }
                false
            }
            (ChatEvent::ToolCallEnd { index }, Required::Output(tool)) => match &output_call {
                Some((call, arguments)) if call == index => {
                    if let Err(why) = tool.check(arguments) {
                        return Ok(Held::Missed(why));
                    }
                    true
                }
                _ => false,
            },
            (ChatEvent::Stop(_), _) => {
                return Ok(Held::Missed("it answered without the required call".into()))
            }
            _ => false,
        };
        read.push(Ok(event));
        if met {
            let rest = std::mem::replace(
                &mut response.events,
                Box::pin(futures_util::stream::empty()),
            );
            response.events = Box::pin(futures_util::stream::iter(read).chain(rest));
            return Ok(Held::Met(response));
        }
    }
    Err(ChatError::ended_without_stop())
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
        assert!(Required::of(&chat(ToolChoice::Auto)).unwrap().is_none());
    }
}
