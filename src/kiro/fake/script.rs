//! Scripted behaviour of the fake: what the next `generateAssistantResponse` does.
//!
//! A step comes from the admin queue (`POST /__fake/script`) or, when the queue is empty,
//! from a `fake-kiro: {json}` line in the current user message (so scripts also work
//! through the proxy in mock mode). Unknown keys are rejected, so a typo cannot silently
//! turn a fault test into a happy-path test.

use crate::kiro::protocol::eventstream::encode_frame;
use crate::token_count::estimate_text;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;

/// Prefix of an in-message directive line.
pub const DIRECTIVE: &str = "fake-kiro:";

/// One scripted answer. All fields are optional; an empty step is the default echo.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Answer with this HTTP error status instead of a stream.
    pub status: Option<u16>,
    /// `Retry-After` seconds (with status 429).
    pub retry_after: Option<u64>,
    /// Error flavour: `bearer` / `suspended` / `forbidden` (403), `MONTHLY_REQUEST_COUNT` (402),
    /// `CONTENT_LENGTH_EXCEEDS_THRESHOLD` (400), `suspicious` / `DAILY_REQUEST_COUNT` (429).
    pub reason: Option<String>,
    /// Reply text instead of the echo.
    pub text: Option<String>,
    /// Reasoning text sent as `reasoningContentEvent`s before the text (empty: no reasoning
    /// at all, even where native reasoning would sign some).
    pub reasoning: Option<String>,
    /// Reasoning sent encrypted, as one `reasoningContentEvent {redactedContent}` before
    /// everything else (sealed by the fake, so a replay of it verifies).
    pub redacted_reasoning: Option<String>,
    /// Tool calls to make after the text.
    #[serde(default)]
    pub tool_calls: Vec<ToolCallScript>,
    /// Interleave the fragments of the tool calls instead of sending them one by one.
    #[serde(default)]
    pub interleave_tools: bool,
    /// `metadataEvent.stopReason` (default `END_TURN`, or `TOOL_USE` with tool calls).
    pub stop_reason: Option<String>,
    /// Send only the first N frames (a cut-off stream: no stop reason).
    pub truncate_after: Option<usize>,
    /// End with an exception frame of this type instead of the metadata.
    pub exception: Option<String>,
    /// Re-chunk the body into writes of this many bytes (frames split across reads).
    pub split_frames: Option<usize>,
    /// Flip a payload byte of frame N (0-based) so its message CRC fails.
    pub corrupt_frame: Option<usize>,
    /// Delay before each write, in milliseconds.
    pub event_delay_ms: Option<u64>,
    /// Expire every access token before handling this call (403 bearer-invalid follows).
    #[serde(default)]
    pub expire_tokens: bool,
    /// Credits the answer's `meteringEvent` reports (default 0.01; 0 sends none).
    pub credits: Option<f64>,
}

/// A tool call the fake makes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolCallScript {
    /// Tool name (as sent to Kiro, i.e. possibly shortened).
    pub name: String,
    /// Arguments object.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Call id (default `tooluse_N`).
    pub id: Option<String>,
}

fn empty_object() -> Value {
    json!({})
}

/// Splits a `fake-kiro: {...}` line out of `content`; returns the rest and the step.
pub fn directive(content: &str) -> (String, Option<Result<Step, String>>) {
    let mut rest = Vec::new();
    let mut step = None;
    for line in content.lines() {
        match line.trim_start().strip_prefix(DIRECTIVE) {
            Some(json) if step.is_none() => {
                step = Some(serde_json::from_str::<Step>(json.trim()).map_err(|e| e.to_string()));
            }
            _ => rest.push(line),
        }
    }
    if step.is_none() {
        return (content.to_owned(), None);
    }
    (rest.join("\n").trim().to_owned(), step)
}

/// The HTTP error a step asks for: (status, JSON body, Retry-After).
pub fn error_response(step: &Step) -> Option<(u16, Value, Option<u64>)> {
    let status = step.status?;
    let reason = step.reason.as_deref().unwrap_or_default();
    let body = match (status, reason) {
        (400, "CONTENT_LENGTH_EXCEEDS_THRESHOLD") => {
            json!({"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"})
        }
        (400, _) => json!({"message": "Improperly formed request.", "reason": null}),
        (401, _) => json!({"message": "Unauthorized"}),
        (402, "OVERAGE_REQUEST_LIMIT_EXCEEDED") => json!({
            "message": "You have reached the limit for overages.",
            "reason": "OVERAGE_REQUEST_LIMIT_EXCEEDED"
        }),
        (402, _) => {
            json!({"message": "You have reached the limit.", "reason": "MONTHLY_REQUEST_COUNT"})
        }
        (403, "suspended") => json!({
            "message": "Your User ID (fake-user) temporarily is suspended. We've locked your account as a security precaution."
        }),
        (403, "forbidden") => json!({
            "__type": "AccessDeniedException",
            "message": "User is not authorized to make this call."
        }),
        (403, _) => json!({
            "__type": "AccessDeniedException",
            "message": "The bearer token included in the request is invalid."
        }),
        // The 2026 texts (docs/kiro-protocol.md §13.4): each is its own cooldown class.
        (429, "suspicious") => json!({
            "message": "Due to suspicious activity, we are imposing temporary limits on your account. Please try again later."
        }),
        (429, "DAILY_REQUEST_COUNT") => {
            json!({"message": "5-minute credit limit exceeded", "reason": "DAILY_REQUEST_COUNT"})
        }
        (429, _) => json!({"message": "Too many requests, please wait before trying again."}),
        (_, _) => json!({"message": "Internal failure"}),
    };
    Some((status, body, step.retry_after))
}

/// What the fake adds to an answer beyond the step.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extra<'a> {
    /// Native reasoning: sent as reasoning events closed by the text's signature (else the
    /// step's reasoning, unsigned).
    pub signed_reasoning: Option<&'a str>,
    /// Prompt tokens read from the prompt cache.
    pub cache_read: u64,
    /// Prompt tokens written to the prompt cache.
    pub cache_write: u64,
}

/// Builds the response body's writes for a step.
pub fn frames(step: &Step, echo: &str, request_bytes: usize, extra: Extra<'_>) -> VecDeque<Bytes> {
    let signed = extra.signed_reasoning;
    let text = step.text.as_deref().unwrap_or(echo);
    let mut frames: Vec<Bytes> = Vec::new();
    let event =
        |kind: &str, payload: Value| encode_frame("event", kind, payload.to_string().as_bytes());
    if let Some(secret) = &step.redacted_reasoning {
        frames.push(event(
            "reasoningContentEvent",
            json!({ "redactedContent": super::reasoning::seal(secret) }),
        ));
    }
    if let Some(reasoning) = signed.or(step.reasoning.as_deref()) {
        for word in reasoning.split_inclusive(' ') {
            frames.push(event("reasoningContentEvent", json!({ "text": word })));
        }
        if signed.is_some() {
            let signature = super::reasoning::sign(reasoning);
            frames.push(event(
                "reasoningContentEvent",
                json!({ "text": "", "signature": signature }),
            ));
        }
    }
    for word in text.split_inclusive(' ') {
        frames.push(event("assistantResponseEvent", json!({ "content": word })));
    }
    frames.extend(tool_frames(step));
    let output = estimate_text(text)
        + step
            .tool_calls
            .iter()
            .map(|t| estimate_text(&t.input.to_string()))
            .sum::<u64>();
    let input = (request_bytes as u64).div_ceil(4);
    match &step.exception {
        Some(kind) => frames.push(encode_frame(
            "exception",
            kind,
            json!({"message": format!("{kind} raised by the fake")})
                .to_string()
                .as_bytes(),
        )),
        None => {
            let stop = step.stop_reason.clone().unwrap_or_else(|| {
                if step.tool_calls.is_empty() {
                    "END_TURN"
                } else {
                    "TOOL_USE"
                }
                .to_owned()
            });
            frames.push(event(
                "contextUsageEvent",
                json!({"contextUsagePercentage": (input + output) as f64 / 2000.0}),
            ));
            let credits = step.credits.unwrap_or(0.01);
            if credits > 0.0 {
                frames.push(event(
                    "meteringEvent",
                    json!({"unit": "credit", "usage": credits}),
                ));
            }
            frames.push(event(
                "metadataEvent",
                json!({
                    "tokenUsage": {"outputTokens": output,
                                   "uncachedInputTokens": input.saturating_sub(extra.cache_read + extra.cache_write),
                                   "cacheReadInputTokens": extra.cache_read,
                                   "cacheWriteInputTokens": extra.cache_write},
                    "stopReason": stop,
                }),
            ));
        }
    }
    if let Some(n) = step.truncate_after {
        frames.truncate(n);
    }
    if let Some(index) = step.corrupt_frame {
        if let Some(frame) = frames.get_mut(index) {
            let mut bytes = BytesMut::from(frame.as_ref());
            let at = bytes.len().saturating_sub(6);
            bytes[at] ^= 0x55;
            *frame = bytes.freeze();
        }
    }
    match step.split_frames {
        Some(size) if size > 0 => {
            let all: Vec<u8> = frames.concat();
            all.chunks(size).map(Bytes::copy_from_slice).collect()
        }
        _ => frames.into(),
    }
}

/// Tool calls as Kiro sends them: fragments of the JSON argument text, then a `stop` frame.
fn tool_frames(step: &Step) -> Vec<Bytes> {
    let calls: Vec<Vec<Bytes>> = step
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let id = call.id.clone().unwrap_or_else(|| format!("tooluse_{i}"));
            let arguments = call.input.to_string();
            let cut = arguments.len() / 2;
            let cut = (cut..=arguments.len())
                .find(|&c| arguments.is_char_boundary(c))
                .unwrap_or(0);
            let (first, second) = arguments.split_at(cut);
            [(first, false), (second, false), ("", true)]
                .into_iter()
                .map(|(input, stop)| {
                    let mut payload = json!({"name": call.name, "toolUseId": id, "input": input});
                    if stop {
                        payload["stop"] = json!(true);
                    }
                    encode_frame("event", "toolUseEvent", payload.to_string().as_bytes())
                })
                .collect()
        })
        .collect();
    if !step.interleave_tools {
        return calls.into_iter().flatten().collect();
    }
    let longest = calls.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| calls.iter().filter_map(move |c| c.get(i).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_is_split_out_and_validated() {
        let (rest, step) =
            directive("hello\nfake-kiro: {\"status\": 429, \"retry_after\": 3}\nworld");
        assert_eq!(rest, "hello\nworld");
        let step = step.unwrap().unwrap();
        assert_eq!((step.status, step.retry_after), (Some(429), Some(3)));
        let (_, step) = directive("fake-kiro: {\"stauts\": 429}");
        assert!(step.unwrap().unwrap_err().contains("stauts"));
        assert_eq!(directive("plain").0, "plain");
    }

    #[test]
    fn split_and_truncate_shape_the_writes() {
        let step = Step {
            split_frames: Some(7),
            ..Step::default()
        };
        let writes = frames(&step, "a b", 10, Extra::default());
        assert!(writes.iter().all(|w| w.len() <= 7));
        let whole = frames(&Step::default(), "a b", 10, Extra::default());
        let joined = |w: &VecDeque<Bytes>| w.iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>();
        assert_eq!(joined(&writes), joined(&whole));
        let cut = frames(
            &Step {
                truncate_after: Some(1),
                ..Step::default()
            },
            "a b",
            10,
            Extra::default(),
        );
        assert_eq!(cut.len(), 1);
    }
}
