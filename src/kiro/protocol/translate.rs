//! Kiro events -> canonical [`ChatEvent`]s, with the completeness rules of
//! docs/kiro-protocol.md §6.2: a stream is complete when `metadataEvent.stopReason` arrived, or
//! (older streams) a `contextUsageEvent` arrived with every tool call closed. Anything else
//! at EOF is a truncation and becomes an error, never a normal finish; a tool call whose
//! arguments do not parse is never passed on as finished.

use crate::chat::{ChatError, ChatEvent, StopReason, Usage};
use crate::kiro::protocol::eventstream::{KiroEvent, TokenUsage};
use crate::kiro::protocol::request::ToolNameMap;
use crate::kiro::protocol::thinking::{Piece, ThinkingSplitter};
use crate::token_count::TextCounter;
use std::collections::VecDeque;

#[derive(Debug)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
    closed: bool,
}

/// Per-response translation state.
#[derive(Debug)]
pub struct Translator {
    tool_names: ToolNameMap,
    tools: Vec<ToolCall>,
    current_tool: Option<usize>,
    stop_reason: Option<String>,
    token_usage: Option<TokenUsage>,
    context_percentage: Option<f64>,
    /// Credits the `meteringEvent`s reported (docs/kiro-protocol.md §14.4).
    credits: f64,
    context_exceeded: bool,
    output: TextCounter,
    input_estimate: u64,
    context_window: u64,
    unknown_events: u32,
    /// Present when thinking was requested: `<thinking>` text becomes thinking deltas.
    splitter: Option<ThinkingSplitter>,
}

impl Translator {
    /// Starts translating one response.
    pub fn new(tool_names: ToolNameMap, input_estimate: u64, context_window: u64) -> Self {
        Self {
            tool_names,
            tools: Vec::new(),
            current_tool: None,
            stop_reason: None,
            token_usage: None,
            context_percentage: None,
            credits: 0.0,
            context_exceeded: false,
            output: TextCounter::default(),
            input_estimate,
            context_window,
            unknown_events: 0,
            splitter: None,
        }
    }

    /// Splits `<thinking>…</thinking>` out of the text (when thinking was requested).
    pub fn with_thinking(mut self, enabled: bool) -> Self {
        self.splitter = enabled.then(ThinkingSplitter::default);
        self
    }

    fn emit_text(&mut self, text: String, out: &mut VecDeque<ChatEvent>) {
        let Some(splitter) = self.splitter.as_mut() else {
            out.push_back(ChatEvent::TextDelta(text));
            return;
        };
        for piece in splitter.push(&text) {
            out.push_back(piece_event(piece));
        }
    }

    /// Event types seen that we do not know (ignored).
    pub fn unknown_events(&self) -> u32 {
        self.unknown_events
    }

    /// Handles one event, pushing zero or more chat events.
    pub fn on_event(
        &mut self,
        event: KiroEvent,
        out: &mut VecDeque<ChatEvent>,
    ) -> Result<(), ChatError> {
        match event {
            KiroEvent::Text(text) => {
                if !text.is_empty() {
                    self.output.add(&text);
                    self.emit_text(text, out);
                }
            }
            KiroEvent::Reasoning { text, signature } => {
                if !text.is_empty() {
                    self.output.add(&text);
                    out.push_back(ChatEvent::ThinkingDelta(text));
                }
                if let Some(signature) = signature {
                    out.push_back(ChatEvent::ThinkingSignature(signature));
                }
            }
            KiroEvent::RedactedReasoning(data) => out.push_back(ChatEvent::RedactedThinking(data)),
            KiroEvent::ToolUse {
                tool_use_id,
                name,
                input,
                stop,
            } => self.on_tool_use(tool_use_id, name, input, stop, out)?,
            KiroEvent::ContextUsage(percentage) => self.context_percentage = Some(percentage),
            KiroEvent::Metering(credits) if credits.is_finite() && credits > 0.0 => {
                self.credits += credits;
            }
            KiroEvent::Metering(_) => {}
            KiroEvent::Metadata { usage, stop_reason } => {
                if usage.is_some() {
                    self.token_usage = usage;
                }
                if stop_reason.is_some() {
                    self.stop_reason = stop_reason;
                }
            }
            KiroEvent::Exception { kind, message } => {
                if kind == "ContentLengthExceededException" {
                    self.context_exceeded = true;
                } else {
                    return Err(exception_error(&kind, &message));
                }
            }
            KiroEvent::Error { code, message } => {
                return Err(ChatError::Upstream {
                    message: format!("Kiro sent an error frame `{code}` mid-stream: {message}"),
                })
            }
            KiroEvent::Unknown(kind) => {
                self.unknown_events += 1;
                tracing::debug!(event_type = %kind, "ignoring unknown Kiro event");
            }
        }
        Ok(())
    }

    fn on_tool_use(
        &mut self,
        id: Option<String>,
        name: Option<String>,
        input: Option<String>,
        stop: bool,
        out: &mut VecDeque<ChatEvent>,
    ) -> Result<(), ChatError> {
        let position = match id {
            Some(id) => match self.tools.iter().position(|t| t.id == id) {
                Some(position) => position,
                None => self.open_tool(id, name, out),
            },
            // Fragments without an id continue the most recent call (§6.2).
            None => match self.current_tool {
                Some(position) => position,
                None => self.open_tool(
                    format!("tooluse_{}", uuid::Uuid::new_v4().simple()),
                    name,
                    out,
                ),
            },
        };
        self.current_tool = Some(position);
        let index = position as u32;
        let tool = &mut self.tools[position];
        if tool.closed {
            return Ok(());
        }
        if let Some(fragment) = input.filter(|f| !f.is_empty()) {
            tool.arguments.push_str(&fragment);
            self.output.add(&fragment);
            out.push_back(ChatEvent::ToolCallDelta {
                index,
                json: fragment,
            });
        }
        if stop {
            let tool = &mut self.tools[position];
            close_tool(tool, index, out)?;
        }
        Ok(())
    }

    fn open_tool(
        &mut self,
        id: String,
        name: Option<String>,
        out: &mut VecDeque<ChatEvent>,
    ) -> usize {
        let name = self.tool_names.restore(name.as_deref().unwrap_or_default());
        let index = self.tools.len();
        out.push_back(ChatEvent::ToolCallStart {
            index: index as u32,
            id: id.clone(),
            name: name.clone(),
        });
        self.tools.push(ToolCall {
            id,
            name,
            arguments: String::new(),
            closed: false,
        });
        index
    }

    /// Called at EOF: emits usage and the stop, or reports a truncation.
    pub fn finish(&mut self, out: &mut VecDeque<ChatEvent>) -> Result<(), ChatError> {
        if let Some(splitter) = self.splitter.as_mut() {
            out.extend(splitter.finish().into_iter().map(piece_event));
        }
        let complete = self.stop_reason.is_some()
            || self.context_exceeded
            || (self.context_percentage.is_some() && self.tools.iter().all(|t| t.closed));
        if !complete {
            let detail = match self.tools.iter().find(|t| !t.closed) {
                Some(open) => format!(
                    "the upstream stream ended in the middle of tool call `{}` ({} bytes of arguments)",
                    open.name,
                    open.arguments.len()
                ),
                None => "the upstream stream ended without a stop reason".to_owned(),
            };
            return Err(ChatError::Truncated {
                message: format!("{detail}; retry the request"),
            });
        }
        if self.unknown_events > 0 {
            tracing::debug!(
                unknown_events = self.unknown_events,
                "Kiro sent event types aiproxy does not know; they were ignored"
            );
        }
        for (position, tool) in self.tools.iter_mut().enumerate() {
            if !tool.closed {
                close_tool(tool, position as u32, out)?;
            }
        }
        out.push_back(ChatEvent::Usage(self.usage()));
        out.push_back(ChatEvent::Stop(self.stop()));
        Ok(())
    }

    fn stop(&self) -> StopReason {
        if self.context_exceeded {
            return StopReason::MaxTokens;
        }
        if self.context_percentage.is_some_and(|p| p >= 100.0) {
            return StopReason::ContextWindowExceeded;
        }
        match self.stop_reason.as_deref() {
            Some("MAX_TOKENS" | "LENGTH_LIMIT") => StopReason::MaxTokens,
            Some("STOP_SEQUENCE") => StopReason::StopSequence,
            _ if !self.tools.is_empty() => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        }
    }

    /// Upstream figures first, then context percentage x window, then an estimate.
    fn usage(&self) -> Usage {
        if let Some(u) = self.token_usage {
            return Usage {
                input: u.uncached_input_tokens,
                output: u.output_tokens,
                cache_read: u.cache_read_input_tokens,
                cache_write: u.cache_write_input_tokens,
                estimated: false,
                credits: self.credits,
            };
        }
        let output = self.output.tokens();
        let input = match self.context_percentage {
            Some(p) => ((p / 100.0) * self.context_window as f64).round() as u64,
            None => self.input_estimate,
        }
        .saturating_sub(if self.context_percentage.is_some() {
            output
        } else {
            0
        });
        Usage {
            input,
            output,
            cache_read: 0,
            cache_write: 0,
            estimated: true,
            credits: self.credits,
        }
    }
}

fn piece_event(piece: Piece) -> ChatEvent {
    match piece {
        Piece::Thinking(text) => ChatEvent::ThinkingDelta(text),
        Piece::Text(text) => ChatEvent::TextDelta(text),
    }
}

fn close_tool(
    tool: &mut ToolCall,
    index: u32,
    out: &mut VecDeque<ChatEvent>,
) -> Result<(), ChatError> {
    if tool.arguments.trim().is_empty() {
        tool.arguments = "{}".to_owned();
        out.push_back(ChatEvent::ToolCallDelta {
            index,
            json: "{}".to_owned(),
        });
    }
    match serde_json::from_str::<serde_json::Value>(&tool.arguments) {
        Ok(serde_json::Value::Object(_)) => {
            tool.closed = true;
            out.push_back(ChatEvent::ToolCallEnd { index });
            Ok(())
        }
        _ => Err(ChatError::Truncated {
            message: format!(
                "the arguments of tool call `{}` are not a complete JSON object; retry the request",
                tool.name
            ),
        }),
    }
}

fn exception_error(kind: &str, message: &str) -> ChatError {
    let lower = kind.to_ascii_lowercase();
    if lower.contains("throttl") || lower.contains("toomanyrequests") {
        ChatError::RateLimited {
            message: format!("{kind}: {message}"),
            retry_after: None,
        }
    } else {
        ChatError::Upstream {
            message: format!("Kiro raised {kind} mid-stream: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: Vec<KiroEvent>) -> (Vec<ChatEvent>, Result<(), ChatError>) {
        let mut t = Translator::new(ToolNameMap::default(), 10, 200_000);
        let mut out = VecDeque::new();
        for e in events {
            if let Err(err) = t.on_event(e, &mut out) {
                return (out.into(), Err(err));
            }
        }
        let result = t.finish(&mut out);
        (out.into(), result)
    }

    fn tool(id: Option<&str>, name: Option<&str>, input: &str, stop: bool) -> KiroEvent {
        KiroEvent::ToolUse {
            tool_use_id: id.map(Into::into),
            name: name.map(Into::into),
            input: Some(input.into()),
            stop,
        }
    }

    fn end() -> KiroEvent {
        KiroEvent::Metadata {
            usage: None,
            stop_reason: Some("END_TURN".into()),
        }
    }

    #[test]
    fn text_then_stop() {
        let (events, result) = run(vec![KiroEvent::Text("Hi".into()), end()]);
        result.unwrap();
        assert_eq!(events[0], ChatEvent::TextDelta("Hi".into()));
        assert!(matches!(
            events[1],
            ChatEvent::Usage(Usage {
                estimated: true,
                ..
            })
        ));
        assert_eq!(events[2], ChatEvent::Stop(StopReason::EndTurn));
    }

    #[test]
    fn interleaved_tool_calls_keep_their_own_indexes() {
        let (events, result) = run(vec![
            KiroEvent::Text("Let me look.".into()),
            tool(Some("a"), Some("read"), "{\"p\":", false),
            tool(Some("b"), Some("list"), "{}", false),
            tool(Some("a"), Some("read"), "1}", true),
            tool(Some("b"), Some("list"), "", true),
            end(),
        ]);
        result.unwrap();
        assert_eq!(
            events[1],
            ChatEvent::ToolCallStart {
                index: 0,
                id: "a".into(),
                name: "read".into()
            }
        );
        assert_eq!(
            events[3],
            ChatEvent::ToolCallStart {
                index: 1,
                id: "b".into(),
                name: "list".into()
            }
        );
        assert!(events.contains(&ChatEvent::ToolCallEnd { index: 0 }));
        assert!(events.contains(&ChatEvent::ToolCallEnd { index: 1 }));
        assert_eq!(events.last(), Some(&ChatEvent::Stop(StopReason::ToolUse)));
    }

    #[test]
    fn fragments_without_id_continue_the_current_call() {
        let (events, result) = run(vec![
            tool(Some("a"), Some("read"), "{\"p\"", false),
            tool(None, None, ":2}", true),
            end(),
        ]);
        result.unwrap();
        assert!(events.contains(&ChatEvent::ToolCallDelta {
            index: 0,
            json: ":2}".into()
        }));
    }

    #[test]
    fn eof_inside_a_tool_call_is_truncation() {
        let (events, result) = run(vec![tool(
            Some("a"),
            Some("write"),
            "{\"content\": \"lots",
            false,
        )]);
        let err = result.unwrap_err();
        assert!(matches!(err, ChatError::Truncated { .. }));
        assert!(err.to_string().contains("write"));
        assert!(!events
            .iter()
            .any(|e| matches!(e, ChatEvent::ToolCallEnd { .. } | ChatEvent::Stop(_))));
    }

    #[test]
    fn eof_without_stop_reason_is_truncation() {
        let (_, result) = run(vec![KiroEvent::Text("half an ans".into())]);
        assert!(matches!(result, Err(ChatError::Truncated { .. })));
    }

    #[test]
    fn stop_with_unparseable_arguments_is_an_error() {
        let (_, result) = run(vec![tool(Some("a"), Some("f"), "{\"x\": ", true)]);
        assert!(matches!(result, Err(ChatError::Truncated { .. })));
    }

    #[test]
    fn legacy_completion_by_context_usage() {
        let (events, result) = run(vec![
            KiroEvent::Text("ok".into()),
            KiroEvent::ContextUsage(1.0),
        ]);
        result.unwrap();
        match events[1] {
            ChatEvent::Usage(u) => {
                assert_eq!(u.input + u.output, 2000);
                assert!(u.estimated);
            }
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_usage_is_authoritative_and_stop_reasons_map() {
        let usage = TokenUsage {
            output_tokens: 3,
            uncached_input_tokens: 9,
            cache_read_input_tokens: 4,
            cache_write_input_tokens: 1,
        };
        let (events, _) = run(vec![KiroEvent::Metadata {
            usage: Some(usage),
            stop_reason: Some("MAX_TOKENS".into()),
        }]);
        assert_eq!(
            events[0],
            ChatEvent::Usage(Usage {
                input: 9,
                output: 3,
                cache_read: 4,
                cache_write: 1,
                estimated: false,
                credits: 0.0,
            })
        );
        assert_eq!(events[1], ChatEvent::Stop(StopReason::MaxTokens));
        let (events, _) = run(vec![KiroEvent::Exception {
            kind: "ContentLengthExceededException".into(),
            message: "x".into(),
        }]);
        assert_eq!(events.last(), Some(&ChatEvent::Stop(StopReason::MaxTokens)));
        let (_, result) = run(vec![KiroEvent::Exception {
            kind: "ThrottlingException".into(),
            message: "slow".into(),
        }]);
        assert!(matches!(result, Err(ChatError::RateLimited { .. })));
    }

    #[test]
    fn long_tool_names_are_restored() {
        use crate::chat::{ChatRequest, Message, Metadata, Role, Sampling, Tool, ToolChoice};
        use crate::kiro::protocol::request::{build, shorten_tool_name, BuildOptions};
        let long = "x".repeat(80);
        let request = ChatRequest {
            model: "m".into(),
            system: vec![],
            messages: vec![Message::text(Role::User, "hi")],
            tools: vec![Tool {
                name: long.clone(),
                description: "d".into(),
                input_schema: serde_json::json!({}),
            }],
            tool_choice: ToolChoice::Auto,
            single_tool_call: false,
            output: None,
            sampling: Sampling::default(),
            thinking: None,
            stream: false,
            metadata: Metadata::default(),
            cache_marks: Default::default(),
            web_search: None,
        };
        let options = BuildOptions {
            kiro_model_id: "claude-sonnet-4.5",
            profile_arn: None,
            conversation_id: "c".into(),
            thinking: None,
            reasoning: None,
            replay_signatures: true,
            native_max_tokens: None,
            prompt_caching: None,
        };
        let built = build(&request, &options);
        let short = shorten_tool_name(&long);
        let mut t = Translator::new(built.tool_names, 0, 1);
        let mut out = VecDeque::new();
        t.on_event(tool(Some("a"), Some(&short), "{}", true), &mut out)
            .unwrap();
        assert_eq!(
            out[0],
            ChatEvent::ToolCallStart {
                index: 0,
                id: "a".into(),
                name: long
            }
        );
    }
}
