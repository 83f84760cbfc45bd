//! Canonical events -> OpenAI `chat.completion` (non-stream) and `chat.completion.chunk`
//! SSE (stream). One `id` per completion; the first chunk carries the role; tool calls are
//! indexed per call from 0; the last chunk carries `finish_reason`; `[DONE]` ends it. An
//! error after the stream began is sent as an `{"error": ...}` chunk before `[DONE]`.

use super::request::ResponseOptions;
use crate::api::collect::{collect, Block, Completed};
use crate::api::error::rejection;
use crate::api::sse::{SseEncoder, SseStream};
use crate::body::ChunkStream;
use crate::chat::{ChatError, ChatEvent, ChatStream, StopReason, Usage};
use aiproxy_layers::ErrorShape;
use bytes::Bytes;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;

/// `chatcmpl-<32 hex>`.
pub fn completion_id() -> String {
    crate::chat::random_id("chatcmpl-")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens | StopReason::ContextWindowExceeded => "length",
        StopReason::ToolUse => "tool_calls",
    }
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    /// Kiro's credits for the answer, when it said (an extension field).
    #[serde(skip_serializing_if = "Option::is_none")]
    kiro_credits: Option<f64>,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

impl From<Usage> for UsageOut {
    fn from(u: Usage) -> Self {
        let prompt = u.input + u.cache_read + u.cache_write;
        Self {
            prompt_tokens: prompt,
            completion_tokens: u.output,
            total_tokens: prompt + u.output,
            prompt_tokens_details: PromptDetails {
                cached_tokens: u.cache_read,
            },
            kiro_credits: crate::api::credits::of(&u),
        }
    }
}

#[derive(Serialize)]
struct FunctionOut {
    name: String,
    arguments: String,
}

#[derive(Serialize)]
struct ToolCallOut {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut,
}

#[derive(Serialize)]
struct MessageOut {
    role: &'static str,
    content: Option<String>,
    refusal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionOut>,
}

#[derive(Serialize)]
struct ChoiceOut {
    index: u32,
    message: MessageOut,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct CompletionOut {
    id: String,
    object: &'static str,
    created: u64,
    model: Arc<str>,
    choices: [ChoiceOut; 1],
    usage: UsageOut,
}

/// Drains the stream into one `chat.completion`.
pub async fn complete(
    stream: ChatStream,
    model: &str,
    options: ResponseOptions,
) -> Result<Completed, ChatError> {
    let collected = collect(stream, model).await?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls: Vec<ToolCallOut> = Vec::new();
    for block in collected.blocks {
        match block {
            Block::Text(t) => text.push_str(&t),
            Block::Thinking { text, .. } => reasoning.push_str(&text),
            // Encrypted reasoning has no text to show, and Chat Completions no field for it.
            Block::RedactedThinking(_) => {}
            // Chat Completions takes no search tool (`web_search_options` is refused), so
            // no search happens on its requests.
            Block::WebSearchCall { .. } | Block::WebSearchResult { .. } => {}
            Block::ToolUse {
                id,
                name,
                arguments,
            } => calls.push(ToolCallOut {
                id,
                kind: "function",
                function: FunctionOut { name, arguments },
            }),
        }
    }
    let legacy_call = (options.legacy_functions && calls.len() == 1)
        .then(|| calls.pop())
        .flatten()
        .map(|call| call.function);
    let finish = match (&legacy_call, collected.stop) {
        (Some(_), _) => "function_call",
        (None, stop) => finish_reason(stop),
    };
    let completion = CompletionOut {
        id: completion_id(),
        object: "chat.completion",
        created: unix_now(),
        model: collected.model,
        choices: [ChoiceOut {
            index: 0,
            message: MessageOut {
                role: "assistant",
                content: (!text.is_empty() || (calls.is_empty() && legacy_call.is_none()))
                    .then_some(text),
                refusal: None,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: calls,
                function_call: legacy_call,
            },
            logprobs: None,
            finish_reason: finish,
        }],
        usage: collected.usage.into(),
    };
    let body = serde_json::to_vec(&completion).map_err(|e| ChatError::Internal {
        message: format!("encoding the completion failed: {e}"),
    })?;
    Ok(Completed {
        body: Bytes::from(body),
        usage: collected.usage,
    })
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionDelta<'a>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

/// Encodes a chat stream as OpenAI SSE.
pub fn sse(stream: ChatStream, model: &str, options: ResponseOptions) -> ChunkStream {
    sse_with_keep_alive(stream, model, options, crate::api::keep_alive::INTERVAL)
}

/// SSE comment sent after a quiet stretch (clients skip comment lines).
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// [`sse`] with a custom keep-alive interval (tests).
pub fn sse_with_keep_alive(
    stream: ChatStream,
    model: &str,
    options: ResponseOptions,
    keep_alive: std::time::Duration,
) -> ChunkStream {
    let id = completion_id();
    let created = unix_now();
    let encoder = OpenAiSse {
        prefix: chunk_prefix(&id, created, model),
        id,
        created,
        model: Arc::from(model),
        include_usage: options.include_usage,
        legacy_functions: options.legacy_functions,
        usage: None,
        out: VecDeque::with_capacity(3),
        finished: false,
    };
    Box::pin(SseStream::new(stream, encoder, keep_alive))
}

struct OpenAiSse {
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[`: the same on every
    /// chunk, so it is encoded once per stream and copied, not re-serialised per event.
    prefix: Vec<u8>,
    id: String,
    created: u64,
    model: Arc<str>,
    include_usage: bool,
    legacy_functions: bool,
    usage: Option<Usage>,
    out: VecDeque<Bytes>,
    /// Set by the stop (or a failure), after which only `[DONE]` is left to send.
    finished: bool,
}

/// Sent in place of a chunk that could not be serialised (not expected to happen).
const ENCODING_FAILED: &[u8] =
    br#"data: {"error":{"message":"encoding failed","type":"api_error","code":null,"param":null}}

"#;

/// One `data: JSON` event (also the legacy completions' framing).
pub fn sse_data(value: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        return Bytes::from_static(ENCODING_FAILED);
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// The end of an OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The part of every chunk before its one choice (see [`OpenAiSse::prefix`]).
fn chunk_prefix(id: &str, created: u64, model: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(128 + id.len() + model.len());
    prefix.extend_from_slice(b"data: {\"id\":");
    push_json_string(&mut prefix, id);
    prefix.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
    prefix.extend_from_slice(created.to_string().as_bytes());
    prefix.extend_from_slice(b",\"model\":");
    push_json_string(&mut prefix, model);
    prefix.extend_from_slice(b",\"choices\":[");
    prefix
}

fn push_json_string(out: &mut Vec<u8>, text: &str) {
    // Serialising a &str into a Vec cannot fail; on the impossible error keep JSON valid.
    if serde_json::to_writer(&mut *out, text).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

impl OpenAiSse {
    /// One chunk with one choice: the stream's prefix, the choice, `]}`.
    fn chunk(&self, delta: Delta<'_>, finish: Option<&'static str>) -> Bytes {
        let choice = ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish,
        };
        let mut buf = Vec::with_capacity(self.prefix.len() + 128);
        buf.extend_from_slice(&self.prefix);
        if serde_json::to_writer(&mut buf, &choice).is_err() {
            return Bytes::from_static(ENCODING_FAILED);
        }
        buf.extend_from_slice(b"]}\n\n");
        Bytes::from(buf)
    }

    fn encode(&mut self, event: ChatEvent) {
        let bytes = match event {
            ChatEvent::Start { model, .. } => {
                if *model != *self.model {
                    self.prefix = chunk_prefix(&self.id, self.created, &model);
                }
                self.model = model;
                self.chunk(
                    Delta {
                        role: Some("assistant"),
                        content: Some(""),
                        ..Delta::default()
                    },
                    None,
                )
            }
            ChatEvent::TextDelta(text) => self.chunk(
                Delta {
                    content: Some(&text),
                    ..Delta::default()
                },
                None,
            ),
            ChatEvent::ThinkingDelta(text) => self.chunk(
                Delta {
                    reasoning_content: Some(&text),
                    ..Delta::default()
                },
                None,
            ),
            ChatEvent::ToolCallStart { index: 0, name, .. } if self.legacy_functions => self.chunk(
                Delta {
                    function_call: Some(FunctionDelta {
                        name: Some(&name),
                        arguments: "",
                    }),
                    ..Delta::default()
                },
                None,
            ),
            ChatEvent::ToolCallDelta { index: 0, json } if self.legacy_functions => self.chunk(
                Delta {
                    function_call: Some(FunctionDelta {
                        name: None,
                        arguments: &json,
                    }),
                    ..Delta::default()
                },
                None,
            ),
            ChatEvent::ToolCallStart { index, id, name } => self.chunk(
                Delta {
                    tool_calls: Some([ToolCallDelta {
                        index,
                        id: Some(&id),
                        kind: Some("function"),
                        function: FunctionDelta {
                            name: Some(&name),
                            arguments: "",
                        },
                    }]),
                    ..Delta::default()
                },
                None,
            ),
            ChatEvent::ToolCallDelta { index, json } => self.chunk(
                Delta {
                    tool_calls: Some([ToolCallDelta {
                        index,
                        id: None,
                        kind: None,
                        function: FunctionDelta {
                            name: None,
                            arguments: &json,
                        },
                    }]),
                    ..Delta::default()
                },
                None,
            ),
            // Chat Completions has no place for a reasoning signature or encrypted reasoning.
            ChatEvent::ToolCallEnd { .. }
            | ChatEvent::StopSequence(_)
            | ChatEvent::ThinkingSignature(_)
            | ChatEvent::RedactedThinking(_)
            | ChatEvent::WebSearchCall { .. }
            | ChatEvent::WebSearchResult { .. } => return,
            ChatEvent::Usage(usage) => {
                self.usage = Some(usage);
                return;
            }
            ChatEvent::Stop(reason) => {
                let finish = match reason {
                    StopReason::ToolUse if self.legacy_functions => "function_call",
                    other => finish_reason(other),
                };
                let finish = self.chunk(Delta::default(), Some(finish));
                self.out.push_back(finish);
                if self.include_usage {
                    let usage = sse_data(&Chunk {
                        id: &self.id,
                        object: "chat.completion.chunk",
                        created: self.created,
                        model: &self.model,
                        choices: Vec::new(),
                        usage: Some(self.usage.unwrap_or_default().into()),
                    });
                    self.out.push_back(usage);
                }
                self.finish();
                return;
            }
        };
        self.out.push_back(bytes);
    }

    fn fail(&mut self, error: &ChatError) {
        tracing::warn!(error = %error, kind = error.kind(), "stream failed after it began");
        if let Some(body) = rejection(error).body_json(ErrorShape::OpenAi) {
            self.out.push_back(sse_data(&body));
        }
        self.finish();
    }

    fn finish(&mut self) {
        self.out.push_back(Bytes::from_static(DONE));
        self.finished = true;
    }
}

impl SseEncoder for OpenAiSse {
    fn event(&mut self, event: ChatEvent) -> bool {
        self.encode(event);
        self.finished
    }

    fn fail(&mut self, error: &ChatError) {
        OpenAiSse::fail(self, error);
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    fn keep_alive(&self) -> Bytes {
        Bytes::from_static(KEEP_ALIVE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{stream, StreamExt};

    #[tokio::test(start_paused = true)]
    async fn comments_keep_a_quiet_stream_alive_and_stop_when_it_talks() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ChatEvent, ChatError>>(4);
        let mut out = sse_with_keep_alive(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
            "m",
            ResponseOptions::default(),
            std::time::Duration::from_secs(15),
        );
        tx.send(Ok(ChatEvent::Start {
            id: Arc::from("x"),
            model: Arc::from("m"),
            input_tokens: 1,
        }))
        .await
        .unwrap();
        assert!(out.next().await.unwrap().starts_with(b"data: "));
        // Upstream silent for 15 s (a long tool call being generated): a comment line.
        let started = tokio::time::Instant::now();
        assert_eq!(&out.next().await.unwrap()[..], KEEP_ALIVE);
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(15));
        // Talk resets the quiet time: the next comment is 15 s after the last chunk.
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        tx.send(Ok(ChatEvent::TextDelta("hi".into())))
            .await
            .unwrap();
        assert!(out.next().await.unwrap().starts_with(b"data: "));
        let spoke = tokio::time::Instant::now();
        assert_eq!(&out.next().await.unwrap()[..], KEEP_ALIVE);
        assert_eq!(spoke.elapsed(), std::time::Duration::from_secs(15));
        tx.send(Ok(ChatEvent::Stop(StopReason::EndTurn)))
            .await
            .unwrap();
        drop(tx);
        let rest: Vec<_> = out.collect().await;
        assert!(rest.iter().any(|c| c.starts_with(b"data: [DONE]")));
    }

    fn events(items: Vec<Result<ChatEvent, ChatError>>) -> ChatStream {
        Box::pin(stream::iter(items))
    }

    /// Call `t1` of tool `f` with arguments `{}`, then the tool-use stop.
    fn one_tool_call() -> Vec<Result<ChatEvent, ChatError>> {
        vec![
            Ok(ChatEvent::ToolCallStart {
                index: 0,
                id: "t1".into(),
                name: "f".into(),
            }),
            Ok(ChatEvent::ToolCallDelta {
                index: 0,
                json: "{}".into(),
            }),
            Ok(ChatEvent::ToolCallEnd { index: 0 }),
            Ok(ChatEvent::Stop(StopReason::ToolUse)),
        ]
    }

    fn start() -> ChatEvent {
        ChatEvent::Start {
            id: Arc::from("msg_1"),
            model: Arc::from("m"),
            input_tokens: 3,
        }
    }

    async fn sse_lines(
        items: Vec<Result<ChatEvent, ChatError>>,
        include_usage: bool,
    ) -> Vec<serde_json::Value> {
        let options = ResponseOptions {
            include_usage,
            legacy_functions: false,
        };
        let chunks: Vec<Bytes> = sse(events(items), "m", options).collect().await;
        let mut out = Vec::new();
        for chunk in chunks {
            let text = std::str::from_utf8(&chunk).unwrap();
            let data = text
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            out.push(if data == "[DONE]" {
                serde_json::Value::from("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            });
        }
        out
    }

    #[tokio::test]
    async fn stream_shape() {
        let usage = Usage {
            input: 5,
            output: 2,
            ..Usage::default()
        };
        let lines = sse_lines(
            vec![
                Ok(start()),
                Ok(ChatEvent::TextDelta("Hi".into())),
                Ok(ChatEvent::Usage(usage)),
                Ok(ChatEvent::Stop(StopReason::EndTurn)),
            ],
            true,
        )
        .await;
        assert_eq!(lines.len(), 5);
        let id = lines[0]["id"].as_str().unwrap();
        assert!(
            lines[..4].iter().all(|l| l["id"] == id),
            "one id per completion"
        );
        assert_eq!(lines[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(lines[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(lines[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(lines[3]["choices"], serde_json::json!([]));
        assert_eq!(lines[3]["usage"]["total_tokens"], 7);
        assert_eq!(lines[4], "[DONE]");
    }

    #[tokio::test]
    async fn prefix_built_chunks_match_serialised_ones_and_follow_the_model() {
        // The model from Start (here with characters JSON must escape) replaces the
        // requested one in every chunk, and each chunk parses to what serde would write.
        let odd_model = "m\"\\é\n";
        let items = vec![
            Ok(ChatEvent::Start {
                id: Arc::from("msg_1"),
                model: Arc::from(odd_model),
                input_tokens: 3,
            }),
            Ok(ChatEvent::TextDelta("x".into())),
            Ok(ChatEvent::Stop(StopReason::EndTurn)),
        ];
        let lines = sse_lines(items, true).await;
        let first = &lines[0];
        for line in &lines[..4] {
            assert_eq!(line["model"], odd_model);
            assert_eq!(line["object"], "chat.completion.chunk");
            assert_eq!(line["created"], first["created"]);
        }
        let expected = serde_json::to_value(Chunk {
            id: first["id"].as_str().unwrap(),
            object: "chat.completion.chunk",
            created: first["created"].as_u64().unwrap(),
            model: odd_model,
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    content: Some("x"),
                    ..Delta::default()
                },
                logprobs: None,
                finish_reason: None,
            }],
            usage: None,
        })
        .unwrap();
        assert_eq!(lines[1], expected);
    }

    #[tokio::test]
    async fn tool_call_deltas_are_indexed_per_call() {
        let lines = sse_lines(
            [
                vec![
                    Ok(start()),
                    Ok(ChatEvent::TextDelta("Let me check.".into())),
                ],
                one_tool_call(),
            ]
            .concat(),
            false,
        )
        .await;
        let call = &lines[2]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["index"], 0, "not the content-block index");
        assert_eq!(call["id"], "t1");
        assert_eq!(call["function"]["name"], "f");
        assert_eq!(
            lines[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        assert_eq!(lines[4]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[tokio::test]
    async fn legacy_functions_stream_as_function_call() {
        let chunks: Vec<Bytes> = sse(
            events([vec![Ok(start())], one_tool_call()].concat()),
            "m",
            ResponseOptions {
                include_usage: false,
                legacy_functions: true,
            },
        )
        .collect()
        .await;
        let text: String = chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        assert!(
            text.contains(r#""function_call":{"name":"f","arguments":""}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""finish_reason":"function_call""#),
            "{text}"
        );
        assert!(!text.contains("tool_calls"));
    }

    #[tokio::test]
    async fn mid_stream_error_is_an_error_chunk_before_done() {
        let lines = sse_lines(
            vec![
                Ok(start()),
                Ok(ChatEvent::TextDelta("par".into())),
                Err(ChatError::Truncated {
                    message: "cut".into(),
                }),
            ],
            false,
        )
        .await;
        assert_eq!(lines[2]["error"]["code"], "upstream_truncated");
        assert_eq!(lines[3], "[DONE]");
        assert!(
            !lines
                .iter()
                .any(|l| l["choices"][0]["finish_reason"].is_string()),
            "never a normal finish"
        );
    }

    #[tokio::test]
    async fn non_stream_completion() {
        let done = complete(
            events(vec![
                Ok(start()),
                Ok(ChatEvent::TextDelta("Hello".into())),
                Ok(ChatEvent::Stop(StopReason::EndTurn)),
            ]),
            "m",
            ResponseOptions::default(),
        )
        .await
        .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&done.body).unwrap();
        assert_eq!(json["object"], "chat.completion");
        assert_eq!(json["choices"][0]["message"]["content"], "Hello");
        assert_eq!(json["choices"][0]["finish_reason"], "stop");
        assert!(json["choices"][0]["logprobs"].is_null());
        let truncated = complete(
            events(vec![Ok(start()), Ok(ChatEvent::TextDelta("x".into()))]),
            "m",
            ResponseOptions::default(),
        )
        .await;
        assert!(matches!(truncated, Err(ChatError::Truncated { .. })));
    }
}
