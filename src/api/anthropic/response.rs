//! Canonical events -> Anthropic Messages responses.
//!
//! Stream: `message_start` (with usage), then per content block `content_block_start`,
//! deltas (`text_delta`, `thinking_delta`, `input_json_delta`), `content_block_stop`, with
//! strictly increasing indexes and never two blocks open; then `message_delta` (stop reason,
//! usage) and `message_stop`. Kiro may interleave the fragments of parallel tool calls; the
//! Anthropic format cannot, so a tool call that starts while another is open is buffered and
//! sent as soon as the open one closes. `ping` keeps quiet connections alive. An error after
//! the stream began is an `event: error`, never a normal finish.

use crate::api::collect::{collect, Block, Completed};
use crate::api::error::rejection;
use crate::api::sse::{named_event, SseEncoder, SseStream};
use crate::body::ChunkStream;
use crate::chat::web_search::{SearchOutcome, TOOL_NAME};
use crate::chat::{ChatError, ChatEvent, ChatStream, StopReason, Usage};
use aiproxy_layers::ErrorShape;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Quiet time after which a `ping` is sent.
pub const PING_INTERVAL: Duration = crate::api::keep_alive::INTERVAL;

fn stop_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::ToolUse => "tool_use",
        StopReason::StopSequence => "stop_sequence",
        StopReason::MaxTokens | StopReason::ContextWindowExceeded => "max_tokens",
    }
}

#[derive(Serialize)]
struct UsageOut {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

impl From<Usage> for UsageOut {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.input,
            output_tokens: u.output,
            cache_creation_input_tokens: u.cache_write,
            cache_read_input_tokens: u.cache_read,
        }
    }
}

/// Drains the stream into one Messages API `message`.
pub async fn complete(stream: ChatStream, model: &str) -> Result<Completed, ChatError> {
    let collected = collect(stream, model).await?;
    let mut searches = 0u32;
    let content: Vec<Value> = collected
        .blocks
        .into_iter()
        .map(|block| match block {
            Block::Text(text) => json!({"type": "text", "text": text}),
            Block::Thinking { text, signature } => {
                json!({"type": "thinking", "thinking": text, "signature": signature})
            }
            Block::RedactedThinking(data) => json!({"type": "redacted_thinking", "data": data}),
            Block::ToolUse {
                id,
                name,
                arguments,
            } => {
                let input: Value = serde_json::from_str(&arguments).unwrap_or_else(|_| json!({}));
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
            Block::WebSearchCall { id, query } => {
                searches += 1;
                json!({"type": "server_tool_use", "id": id, "name": TOOL_NAME, "input": {"query": query}})
            }
            Block::WebSearchResult { id, outcome } => search_result_block(&id, &outcome),
        })
        .collect();
    let body = json!({
        "id": message_id(&collected.id),
        "type": "message",
        "role": "assistant",
        "model": collected.model,
        "content": content,
        "stop_reason": stop_reason(collected.stop),
        "stop_sequence": collected.stop_sequence,
        "usage": usage_json(collected.usage, searches),
    });
    Ok(Completed {
        body: Bytes::from(body.to_string()),
        usage: collected.usage,
    })
}

/// The usage object, with the server tool count when searches ran.
fn usage_json(usage: Usage, searches: u32) -> Value {
    let mut value = serde_json::to_value(UsageOut::from(usage)).unwrap_or_default();
    crate::api::credits::extend_usage(&mut value, &usage);
    if searches > 0 {
        value["server_tool_use"] = json!({ "web_search_requests": searches });
    }
    value
}

/// A `web_search_tool_result` block: the results (each page's excerpt travels as its
/// `encrypted_content`, base64, and reads back as text when a client replays the block), or
/// a `web_search_tool_result_error`.
fn search_result_block(id: &str, outcome: &SearchOutcome) -> Value {
    let content = match outcome {
        Ok(hits) => Value::Array(
            hits.iter()
                .map(|hit| {
                    json!({
                        "type": "web_search_result",
                        "title": hit.title,
                        "url": hit.url,
                        "encrypted_content": BASE64.encode(&hit.snippet),
                        "page_age": hit.page_age,
                    })
                })
                .collect(),
        ),
        Err(code) => json!({"type": "web_search_tool_result_error", "error_code": code.as_str()}),
    };
    json!({"type": "web_search_tool_result", "tool_use_id": id, "content": content})
}

fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        crate::chat::random_id("msg_")
    }
}

/// Encodes a chat stream as Anthropic SSE.
pub fn sse(stream: ChatStream, model: &str) -> ChunkStream {
    sse_with_ping(stream, model, PING_INTERVAL)
}

/// [`sse`] with a custom keep-alive interval (tests).
pub fn sse_with_ping(stream: ChatStream, model: &str, ping: Duration) -> ChunkStream {
    let encoder = AnthropicSse {
        model: Arc::from(model),
        encoder: BlockEncoder::default(),
        out: VecDeque::with_capacity(4),
    };
    Box::pin(SseStream::new(stream, encoder, ping))
}

fn event(name: &str, data: &impl Serialize) -> Bytes {
    named_event(name, data).unwrap_or_else(|_| {
        Bytes::from(format!(
            "event: {name}\ndata: {}\n\n",
            r#"{"type":"error","error":{"type":"api_error","message":"encoding failed"}}"#
        ))
    })
}

/// `content_block_delta` data, typed: deltas are the hot path of a stream.
#[derive(Serialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: Delta<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Thinking,
    Tool(usize),
    /// Never open: marks a held thinking signature (see [`BlockEncoder::signature`]).
    Signature,
    /// An encrypted reasoning block (opened and closed at once); also marks a held one.
    Redacted,
    /// A server tool's block (a search call or its result), opened and closed by one event.
    Server,
}

#[derive(Debug, Default)]
struct PendingTool {
    id: String,
    name: String,
    buffered: String,
    started: bool,
    ended: bool,
}

/// The content-block state machine, separate from polling so it can be tested alone.
#[derive(Debug)]
struct BlockEncoder {
    open: Open,
    block_index: u32,
    tools: Vec<PendingTool>,
    /// Text or thinking that arrived while a tool block was open.
    held: Vec<(Open, String)>,
    usage: Usage,
    /// The stop sequence that ended the answer, for `message_delta.delta.stop_sequence`.
    stop_sequence: Option<String>,
    /// Web searches run (`usage.server_tool_use.web_search_requests`).
    searches: u32,
}

impl Default for BlockEncoder {
    fn default() -> Self {
        Self {
            open: Open::None,
            block_index: 0,
            tools: Vec::new(),
            held: Vec::new(),
            usage: Usage::default(),
            stop_sequence: None,
            searches: 0,
        }
    }
}

impl BlockEncoder {
    fn start(&mut self, id: &str, model: &str, input_tokens: u64, out: &mut VecDeque<Bytes>) {
        self.usage.input = input_tokens;
        out.push_back(event(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": message_id(id), "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 0,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
                }
            }),
        ));
        out.push_back(event("ping", &json!({"type": "ping"})));
    }

    fn open_block(&mut self, kind: Open, content_block: Value, out: &mut VecDeque<Bytes>) {
        self.close(out);
        out.push_back(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.block_index, "content_block": content_block}),
        ));
        self.open = kind;
    }

    fn close(&mut self, out: &mut VecDeque<Bytes>) {
        if self.open == Open::None {
            return;
        }
        out.push_back(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": self.block_index}),
        ));
        self.block_index += 1;
        self.open = Open::None;
    }

    fn delta(&self, delta: Delta<'_>, out: &mut VecDeque<Bytes>) {
        let data = DeltaEvent {
            kind: "content_block_delta",
            index: self.block_index,
            delta,
        };
        out.push_back(event("content_block_delta", &data));
    }

    fn text(&mut self, kind: Open, text: String, out: &mut VecDeque<Bytes>) {
        if matches!(self.open, Open::Tool(_)) {
            self.held.push((kind, text));
            return;
        }
        if self.open != kind {
            let block = match kind {
                Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
                _ => json!({"type": "text", "text": ""}),
            };
            self.open_block(kind, block, out);
        }
        let delta = match kind {
            Open::Thinking => Delta::Thinking { thinking: &text },
            _ => Delta::Text { text: &text },
        };
        self.delta(delta, out);
    }

    /// Signs and closes the thinking block (native reasoning): a later thinking delta
    /// opens a new block, as Anthropic's own streams do.
    fn signature(&mut self, signature: String, out: &mut VecDeque<Bytes>) {
        if matches!(self.open, Open::Tool(_)) {
            self.held.push((Open::Signature, signature));
            return;
        }
        if self.open != Open::Thinking {
            let block = json!({"type": "thinking", "thinking": "", "signature": ""});
            self.open_block(Open::Thinking, block, out);
        }
        self.delta(
            Delta::Signature {
                signature: &signature,
            },
            out,
        );
        self.close(out);
    }

    /// A `redacted_thinking` block: whole in its start event, closed at once.
    fn redacted(&mut self, data: String, out: &mut VecDeque<Bytes>) {
        if matches!(self.open, Open::Tool(_)) {
            self.held.push((Open::Redacted, data));
            return;
        }
        let block = json!({"type": "redacted_thinking", "data": data});
        self.open_block(Open::Redacted, block, out);
        self.close(out);
    }

    fn tool_start(&mut self, index: usize, id: String, name: String, out: &mut VecDeque<Bytes>) {
        if self.tools.len() <= index {
            self.tools.resize_with(index + 1, PendingTool::default);
        }
        self.tools[index] = PendingTool {
            id,
            name,
            ..PendingTool::default()
        };
        if !matches!(self.open, Open::Tool(_)) {
            self.open_tool(index, out);
        }
    }

    fn open_tool(&mut self, index: usize, out: &mut VecDeque<Bytes>) {
        let tool = &mut self.tools[index];
        tool.started = true;
        let block = json!({"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}});
        let buffered = std::mem::take(&mut tool.buffered);
        self.open_block(Open::Tool(index), block, out);
        if !buffered.is_empty() {
            self.delta(
                Delta::InputJson {
                    partial_json: &buffered,
                },
                out,
            );
        }
    }

    fn tool_delta(&mut self, index: usize, json: String, out: &mut VecDeque<Bytes>) {
        if self.open == Open::Tool(index) {
            self.delta(
                Delta::InputJson {
                    partial_json: &json,
                },
                out,
            );
        } else if let Some(tool) = self.tools.get_mut(index) {
            tool.buffered.push_str(&json);
        }
    }

    fn tool_end(&mut self, index: usize, out: &mut VecDeque<Bytes>) {
        if let Some(tool) = self.tools.get_mut(index) {
            tool.ended = true;
        }
        if self.open == Open::Tool(index) {
            self.close(out);
            self.advance(out);
        }
    }

    /// After a tool block closed: send the next waiting tool calls, then held text.
    fn advance(&mut self, out: &mut VecDeque<Bytes>) {
        while let Some(next) = self
            .tools
            .iter()
            .position(|t| !t.started && !t.id.is_empty())
        {
            self.open_tool(next, out);
            if !self.tools[next].ended {
                return;
            }
            self.close(out);
        }
        for (kind, text) in std::mem::take(&mut self.held) {
            match kind {
                Open::Signature => self.signature(text, out),
                Open::Redacted => self.redacted(text, out),
                kind => self.text(kind, text, out),
            }
        }
    }

    /// A search block, whole: waiting tool calls and held text go first (the search
    /// comes after what the model said before it).
    fn search_block(&mut self, block: Value, input: Option<String>, out: &mut VecDeque<Bytes>) {
        self.close(out);
        self.advance(out);
        self.open_block(Open::Server, block, out);
        if let Some(input) = input {
            self.delta(
                Delta::InputJson {
                    partial_json: &input,
                },
                out,
            );
        }
        self.close(out);
    }

    fn stop(&mut self, reason: StopReason, out: &mut VecDeque<Bytes>) {
        self.close(out);
        self.advance(out);
        self.close(out);
        out.push_back(event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(reason), "stop_sequence": self.stop_sequence},
                "usage": usage_json(self.usage, self.searches),
            }),
        ));
        out.push_back(event("message_stop", &json!({"type": "message_stop"})));
    }

    fn fail(&mut self, error: &ChatError, out: &mut VecDeque<Bytes>) {
        tracing::warn!(error = %error, kind = error.kind(), "stream failed after it began");
        if let Some(body) = rejection(error).body_json(ErrorShape::Anthropic) {
            out.push_back(event("error", &body));
        }
    }

    fn encode(&mut self, event: ChatEvent, model: &str, out: &mut VecDeque<Bytes>) -> bool {
        match event {
            ChatEvent::Start {
                id,
                model: m,
                input_tokens,
            } => {
                let model = if m.is_empty() {
                    model.to_owned()
                } else {
                    m.to_string()
                };
                self.start(&id, &model, input_tokens, out);
            }
            ChatEvent::TextDelta(text) => self.text(Open::Text, text, out),
            ChatEvent::ThinkingDelta(text) => self.text(Open::Thinking, text, out),
            ChatEvent::ThinkingSignature(signature) => self.signature(signature, out),
            ChatEvent::RedactedThinking(data) => self.redacted(data, out),
            ChatEvent::ToolCallStart { index, id, name } => {
                self.tool_start(index as usize, id, name, out)
            }
            ChatEvent::ToolCallDelta { index, json } => self.tool_delta(index as usize, json, out),
            ChatEvent::ToolCallEnd { index } => self.tool_end(index as usize, out),
            ChatEvent::WebSearchCall { id, query } => {
                self.searches += 1;
                let block =
                    json!({"type": "server_tool_use", "id": id, "name": TOOL_NAME, "input": {}});
                let input = json!({ "query": query }).to_string();
                self.search_block(block, Some(input), out);
            }
            ChatEvent::WebSearchResult { id, outcome } => {
                self.search_block(search_result_block(&id, &outcome), None, out);
            }
            ChatEvent::Usage(usage) => self.usage = usage,
            ChatEvent::StopSequence(sequence) => self.stop_sequence = Some(sequence),
            ChatEvent::Stop(reason) => {
                self.stop(reason, out);
                return true;
            }
        }
        false
    }
}

/// The block encoder with what it needs to run as an [`SseEncoder`].
struct AnthropicSse {
    model: Arc<str>,
    encoder: BlockEncoder,
    out: VecDeque<Bytes>,
}

impl SseEncoder for AnthropicSse {
    fn event(&mut self, event: ChatEvent) -> bool {
        self.encoder.encode(event, &self.model, &mut self.out)
    }

    fn fail(&mut self, error: &ChatError) {
        self.encoder.fail(error, &mut self.out);
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    fn keep_alive(&self) -> Bytes {
        event("ping", &json!({"type": "ping"}))
    }
}

#[cfg(test)]
mod tests;
