//! A wire-level fake of Kiro.
//!
//! It checks request bodies the way the real service does (kiro-protocol.md §4.3) and
//! answers with real event-stream bytes, so everything downstream (decoder, translator,
//! encoders) runs exactly as against the real service. Mock mode (`KIRO_MOCK_MODE=true`)
//! calls it in-process; the reply is deterministic: the text of the current user message,
//! echoed back in word-sized events.

use super::eventstream::encode_frame;
use super::wire::{HistoryEntry, KiroRequest, UserInputMessage};
use crate::tokens::estimate_text;
use bytes::Bytes;
use futures_util::Stream;
use http::{header, Method, Request, Response, StatusCode};
use serde_json::json;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Model ids the fake accepts (§5.1, current dotted ids).
pub const KNOWN_MODEL_IDS: &[&str] = &[
    "auto",
    "claude-sonnet-4",
    "claude-sonnet-4.5",
    "claude-sonnet-4.6",
    "claude-haiku-4.5",
    "claude-opus-4.5",
    "claude-opus-4.6",
    "claude-opus-4.7",
    "claude-opus-4.8",
];

/// Kiro rejects bodies over about this size (§4.3 rule 11).
pub const MAX_PAYLOAD_BYTES: usize = 600_000;
/// Context window the fake reports usage against.
const CONTEXT_WINDOW: f64 = 200_000.0;

/// The fake service. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct FakeKiro {
    event_delay: Duration,
}

impl FakeKiro {
    /// A fake that answers as fast as it can.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits this long before each event frame (slow-stream tests, benchmarks).
    pub fn with_event_delay(mut self, delay: Duration) -> Self {
        self.event_delay = delay;
        self
    }

    /// Answers one HTTP request.
    pub fn handle(&self, request: Request<Bytes>) -> Response<FrameStream> {
        match (request.method(), request.uri().path()) {
            (&Method::POST, "/generateAssistantResponse") => self.generate(request.body()),
            (_, path) => json_response(
                StatusCode::NOT_FOUND,
                json!({"message": format!("fake Kiro has no route {path}")}),
            ),
        }
    }

    fn generate(&self, body: &[u8]) -> Response<FrameStream> {
        if body.len() > MAX_PAYLOAD_BYTES {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"}),
            );
        }
        let parsed: KiroRequest = match serde_json::from_slice(body) {
            Ok(parsed) => parsed,
            Err(e) => return improperly_formed(&format!("body does not parse: {e}")),
        };
        if let Err(violation) = validate(&parsed) {
            return improperly_formed(&violation);
        }
        let current = &parsed.conversation_state.current_message.user_input_message;
        let frames = echo_frames(&current.content, body.len());
        let mut response = Response::new(FrameStream::new(frames, self.event_delay));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        response
    }
}

/// The frames of a deterministic echo reply.
fn echo_frames(text: &str, body_len: usize) -> VecDeque<Bytes> {
    let mut frames: VecDeque<Bytes> = text
        .split_inclusive(' ')
        .map(|word| {
            let payload = json!({ "content": word }).to_string();
            encode_frame("event", "assistantResponseEvent", payload.as_bytes())
        })
        .collect();
    let input_tokens = (body_len as u64).div_ceil(4);
    let output_tokens = estimate_text(text);
    let percentage = (input_tokens + output_tokens) as f64 / CONTEXT_WINDOW * 100.0;
    let tail = [
        (
            "contextUsageEvent",
            json!({ "contextUsagePercentage": percentage }),
        ),
        ("meteringEvent", json!({ "unit": "credit", "usage": 0.01 })),
        (
            "metadataEvent",
            json!({
                "tokenUsage": {
                    "outputTokens": output_tokens,
                    "uncachedInputTokens": input_tokens,
                    "cacheReadInputTokens": 0,
                    "cacheWriteInputTokens": 0,
                },
                "stopReason": "END_TURN",
            }),
        ),
    ];
    for (kind, payload) in tail {
        frames.push_back(encode_frame("event", kind, payload.to_string().as_bytes()));
    }
    frames
}

fn improperly_formed(violation: &str) -> Response<FrameStream> {
    tracing::debug!(violation, "fake Kiro rejected a request");
    let mut response = json_response(
        StatusCode::BAD_REQUEST,
        json!({"message": "Improperly formed request.", "reason": null}),
    );
    if let Ok(value) = header::HeaderValue::from_str(&violation.replace(['\r', '\n'], " ")) {
        // Not part of Kiro's protocol: tells a developer which rule was broken.
        response
            .headers_mut()
            .insert("x-fake-kiro-violation", value);
    }
    response
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<FrameStream> {
    let mut frames = VecDeque::new();
    frames.push_back(Bytes::from(body.to_string()));
    let mut response = Response::new(FrameStream::new(frames, Duration::ZERO));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The §4.3 rules, as the real service enforces them.
pub fn validate(request: &KiroRequest) -> Result<(), String> {
    let state = &request.conversation_state;
    let current = &state.current_message.user_input_message;
    check_user(current, "currentMessage")?;

    let mut expect_user = true;
    let mut previous_uses: Option<HashSet<&str>> = None;
    let mut used_names: HashSet<String> = HashSet::new();
    let mut traffic = false;
    for (index, entry) in state.history.iter().enumerate() {
        match entry {
            HistoryEntry::UserInputMessage(user) => {
                if !expect_user {
                    return Err(format!("history[{index}]: two user messages in a row"));
                }
                check_user(user, &format!("history[{index}]"))?;
                let results = result_ids(user);
                traffic |= !results.is_empty();
                check_pairing(previous_uses.take(), results, index)?;
            }
            HistoryEntry::AssistantResponseMessage(assistant) => {
                if expect_user {
                    return Err(format!(
                        "history[{index}]: expected a user message (history must start with user and alternate)"
                    ));
                }
                if assistant.content.is_empty() {
                    return Err(format!("history[{index}]: empty assistant content"));
                }
                let mut uses = HashSet::new();
                for tool_use in &assistant.tool_uses {
                    if !uses.insert(tool_use.tool_use_id.as_str()) {
                        return Err(format!(
                            "history[{index}]: duplicate toolUseId {}",
                            tool_use.tool_use_id
                        ));
                    }
                    used_names.insert(tool_use.name.to_ascii_lowercase());
                    traffic = true;
                }
                previous_uses = Some(uses);
            }
        }
        expect_user = !expect_user;
    }
    if !expect_user {
        return Err("history must end with an assistant message".into());
    }
    let current_results = result_ids(current);
    traffic |= !current_results.is_empty();
    check_pairing(previous_uses, current_results, state.history.len())?;

    let tools = current
        .user_input_message_context
        .as_ref()
        .map(|c| c.tools.as_slice())
        .unwrap_or_default();
    let mut defined = HashSet::new();
    for tool in tools {
        let spec = &tool.tool_specification;
        if spec.name.is_empty() || spec.name.len() > 64 {
            return Err(format!(
                "tool name `{}` must be 1..=64 characters",
                spec.name
            ));
        }
        if spec.description.is_empty() {
            return Err(format!("tool `{}` has an empty description", spec.name));
        }
        defined.insert(spec.name.to_ascii_lowercase());
    }
    if traffic && tools.is_empty() {
        return Err("tool uses/results present but currentMessage defines no tools".into());
    }
    if let Some(missing) = used_names.iter().find(|name| !defined.contains(*name)) {
        return Err(format!(
            "tool `{missing}` is used in history but not defined"
        ));
    }
    Ok(())
}

fn check_user(message: &UserInputMessage, at: &str) -> Result<(), String> {
    if message.content.is_empty() {
        return Err(format!("{at}: empty content"));
    }
    if !KNOWN_MODEL_IDS.contains(&message.model_id.as_str()) {
        return Err(format!("{at}: unknown modelId `{}`", message.model_id));
    }
    if message.origin.is_empty() {
        return Err(format!("{at}: missing origin"));
    }
    Ok(())
}

fn result_ids(message: &UserInputMessage) -> Vec<&str> {
    message
        .user_input_message_context
        .as_ref()
        .map(|c| {
            c.tool_results
                .iter()
                .map(|r| r.tool_use_id.as_str())
                .collect()
        })
        .unwrap_or_default()
}

fn check_pairing(
    uses: Option<HashSet<&str>>,
    results: Vec<&str>,
    index: usize,
) -> Result<(), String> {
    let uses = uses.unwrap_or_default();
    let mut answered = HashSet::new();
    for id in results {
        if !uses.contains(id) {
            return Err(format!("turn {index}: toolResult {id} answers no tool use"));
        }
        if !answered.insert(id) {
            return Err(format!("turn {index}: duplicate toolResult {id}"));
        }
    }
    if answered.len() != uses.len() {
        return Err(format!(
            "turn {index}: a tool use of the previous turn has no result"
        ));
    }
    Ok(())
}

/// The fake's response body: frames released one by one, each after the configured delay.
pub struct FrameStream {
    frames: VecDeque<Bytes>,
    delay: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl FrameStream {
    fn new(frames: VecDeque<Bytes>, delay: Duration) -> Self {
        Self {
            frames,
            delay,
            sleep: None,
        }
    }
}

impl Stream for FrameStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.frames.is_empty() {
            return Poll::Ready(None);
        }
        if !self.delay.is_zero() {
            let delay = self.delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        Poll::Ready(self.frames.pop_front().map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiro::eventstream::{FrameDecoder, KiroEvent};
    use futures_util::StreamExt;

    fn body(history: serde_json::Value, current: &str) -> Bytes {
        Bytes::from(
            json!({
                "conversationState": {
                    "chatTriggerType": "MANUAL",
                    "conversationId": "c",
                    "currentMessage": {"userInputMessage": {"content": current, "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}},
                    "history": history,
                }
            })
            .to_string(),
        )
    }

    fn post(body: Bytes) -> Request<Bytes> {
        Request::post("/generateAssistantResponse")
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn echoes_the_current_message_as_event_frames() {
        let response = FakeKiro::new().handle(post(body(json!([]), "Hello there Claude")));
        assert_eq!(response.status(), StatusCode::OK);
        let mut decoder = FrameDecoder::new();
        let mut stream = response.into_body();
        let mut text = String::new();
        let mut saw_stop = false;
        while let Some(chunk) = stream.next().await {
            decoder.push(&chunk.unwrap());
            while let Some(frame) = decoder.next_frame().unwrap() {
                match KiroEvent::from_frame(&frame).unwrap() {
                    KiroEvent::Text(t) => text.push_str(&t),
                    KiroEvent::Metadata { stop_reason, .. } => {
                        saw_stop = stop_reason.as_deref() == Some("END_TURN")
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(text, "Hello there Claude");
        assert!(saw_stop);
    }

    #[test]
    fn rejects_what_kiro_rejects() {
        let user = |c: &str| json!({"userInputMessage": {"content": c, "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}});
        let assistant = |c: &str| json!({"assistantResponseMessage": {"content": c}});
        let cases = [
            (body(json!([]), ""), "empty content"),
            (body(json!([assistant("a")]), "x"), "expected a user"),
            (body(json!([user("a"), user("b")]), "x"), "two user"),
            (body(json!([user("a")]), "x"), "end with an assistant"),
            (
                body(json!([user("a"), assistant("")]), "x"),
                "empty assistant",
            ),
            (Bytes::from_static(b"{}"), "does not parse"),
        ];
        for (body, expected) in cases {
            let response = FakeKiro::new().handle(post(body));
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            let violation = response.headers()["x-fake-kiro-violation"]
                .to_str()
                .unwrap();
            assert!(
                violation.contains(expected),
                "{violation} should mention {expected}"
            );
        }
        let ok = FakeKiro::new().handle(post(body(json!([user("a"), assistant("b")]), "x")));
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[test]
    fn tool_traffic_needs_pairing_and_definitions() {
        let with_tools = |tools: serde_json::Value, results: serde_json::Value| {
            Bytes::from(json!({
                "conversationState": {
                    "chatTriggerType": "MANUAL", "conversationId": "c",
                    "history": [
                        {"userInputMessage": {"content": "go", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}},
                        {"assistantResponseMessage": {"content": " ", "toolUses": [{"toolUseId": "t1", "name": "read", "input": {}}]}}
                    ],
                    "currentMessage": {"userInputMessage": {"content": "r", "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR",
                        "userInputMessageContext": {"tools": tools, "toolResults": results}}}
                }
            }).to_string())
        };
        let tool = json!([{"toolSpecification": {"name": "read", "description": "d", "inputSchema": {"json": {}}}}]);
        let result = json!([{"toolUseId": "t1", "content": [{"text": "x"}], "status": "success"}]);
        assert_eq!(
            FakeKiro::new()
                .handle(post(with_tools(tool.clone(), result.clone())))
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            FakeKiro::new()
                .handle(post(with_tools(json!([]), result)))
                .status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            FakeKiro::new()
                .handle(post(with_tools(tool, json!([]))))
                .status(),
            StatusCode::BAD_REQUEST
        );
    }
}
