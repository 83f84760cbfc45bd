//! Legacy completions (`POST /v1/completions`, llama-index's default, the openai SDK's
//! `completions.create`): a prompt is continued by the chat model, told to answer with the
//! continuation only, and answered as `text_completion` objects.
//!
//! Supported: `prompt` (a string, or a list of strings: one choice each, non-stream),
//! `echo`, `stop`, `max_tokens` (the API's default of 16 applies), `temperature`, `top_p`,
//! `stream` (with `stream_options.include_usage`), `n: 1`, `best_of: 1`, `user`. Refused
//! with a 400 that says why: `suffix` (insertion needs a model trained for it), token-id
//! prompts, `logprobs`, `n`/`best_of` above 1.

use crate::api::json::{parse_object, wrong_type, Obj};
use crate::api::openai::response::{sse_data, DONE, KEEP_ALIVE};
use crate::api::sse::{SseEncoder, SseStream};
use crate::body::ChunkStream;
use crate::chat::{
    ChatError, ChatEvent, ChatRequest, ChatStream, Message, Metadata, Role, Sampling, StopReason,
    Usage,
};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::VecDeque;

const HINT: &str =
    "Send a JSON object like {\"model\": \"claude-sonnet-4-5\", \"prompt\": \"Once upon a time\"}.";

/// The legacy API's default `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 16;

// The system prompt that turns a chat model into a text continuer.
use crate::chat::instructions::CONTINUE_TEXT;

/// A parsed request: one chat request per prompt.
#[derive(Debug)]
pub struct Parsed {
    /// One per prompt, in order.
    pub chats: Vec<ChatRequest>,
    /// The prompts, for `echo`.
    pub prompts: Vec<String>,
    /// Put the prompt in front of each answer.
    pub echo: bool,
    /// Stream the answer.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
}

/// Parses a `/v1/completions` body.
pub fn parse(body: &[u8], metadata: Metadata) -> Result<Parsed, ChatError> {
    let map = parse_object(body, HINT)?;
    let root = Obj {
        map: &map,
        path: String::new(),
    };
    let model = root.required_str("model")?.to_owned();
    for (field, why) in [
        ("suffix", "`suffix` (text insertion) needs a model trained for it; the Claude models served here only continue text. Put the text after the gap in the prompt instead."),
        ("logprobs", "`logprobs` are not available: Kiro does not report token probabilities."),
    ] {
        if root.get(field).is_some() {
            return Err(ChatError::invalid(field, why));
        }
    }
    for field in ["n", "best_of"] {
        crate::api::unsupported::refuse_several(&root, field)?;
    }
    let prompts = match root.required("prompt")? {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(wrong_type(
                    &format!("prompt[{i}]"),
                    "a string (token-id prompts are not supported: send text)",
                    other,
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(wrong_type(
                "prompt",
                "a string or a non-empty array of strings",
                other,
            ))
        }
    };
    let stream = root.bool("stream")?.unwrap_or(false);
    if stream && prompts.len() > 1 {
        return Err(ChatError::invalid(
            "prompt",
            "A stream answers one prompt; send the prompts in separate requests, or without `stream`.",
        ));
    }
    let include_usage = crate::api::openai::request::include_usage(&root)?;
    let stop = crate::api::openai::request::parse_stop(&root)?;
    let sampling = Sampling {
        max_tokens: Some(root.u32("max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS)),
        temperature: root.number("temperature", 0.0, 2.0)?,
        top_p: root.number("top_p", 0.0, 1.0)?,
        stop,
        not_honoured: crate::api::unsupported::sampling_hints(
            &root,
            &crate::api::unsupported::OPENAI_SAMPLING,
        ),
    };
    let chats = prompts
        .iter()
        .map(|prompt| ChatRequest {
            model: model.clone(),
            system: vec![CONTINUE_TEXT.to_owned()],
            messages: vec![Message::text(Role::User, prompt.clone())],
            sampling: sampling.clone(),
            stream,
            metadata: metadata.clone(),
            ..ChatRequest::default()
        })
        .collect();
    Ok(Parsed {
        chats,
        prompts,
        echo: root.bool("echo")?.unwrap_or(false),
        stream,
        include_usage,
    })
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens | StopReason::ContextWindowExceeded => "length",
        _ => "stop",
    }
}

fn usage_json(usage: &Usage) -> Value {
    let prompt = usage.input + usage.cache_read + usage.cache_write;
    let mut value = json!({"prompt_tokens": prompt, "completion_tokens": usage.output, "total_tokens": prompt + usage.output});
    crate::api::credits::extend_usage(&mut value, usage);
    value
}

/// One finished choice.
#[derive(Debug)]
pub struct Choice {
    /// Its text (with the prompt in front when echoing).
    pub text: String,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// Its usage.
    pub usage: Usage,
}

/// Reads one answer to its end.
pub async fn collect_choice(
    events: ChatStream,
    model: &str,
    prompt: Option<&str>,
) -> Result<Choice, ChatError> {
    let collected = crate::api::collect::collect(events, model).await?;
    let mut text = prompt.unwrap_or_default().to_owned();
    for block in collected.blocks {
        if let crate::api::collect::Block::Text(t) = block {
            text.push_str(&t);
        }
    }
    Ok(Choice {
        text,
        finish_reason: finish_reason(collected.stop),
        usage: collected.usage,
    })
}

/// The `text_completion` body of finished choices.
pub fn body(model: &str, choices: &[Choice]) -> Bytes {
    let mut usage = Usage::default();
    for choice in choices {
        usage.input += choice.usage.input + choice.usage.cache_read + choice.usage.cache_write;
        usage.output += choice.usage.output;
    }
    let body = json!({
        "id": crate::chat::random_id("cmpl-"),
        "object": "text_completion",
        "created": crate::api::openai::response::unix_now(),
        "model": model,
        "choices": choices.iter().enumerate().map(|(index, c)| json!({
            "text": c.text, "index": index, "logprobs": null, "finish_reason": c.finish_reason
        })).collect::<Vec<_>>(),
        "usage": usage_json(&usage),
    });
    Bytes::from(body.to_string())
}

/// The SSE body of a streamed completion.
pub fn sse(
    events: ChatStream,
    model: &str,
    echo: Option<String>,
    include_usage: bool,
) -> ChunkStream {
    let mut encoder = CompletionSse {
        id: crate::chat::random_id("cmpl-"),
        created: crate::api::openai::response::unix_now(),
        model: model.to_owned(),
        include_usage,
        usage: Usage::default(),
        out: VecDeque::new(),
    };
    if let Some(prompt) = echo {
        let head = encoder.chunk(&prompt, None);
        encoder.out.push_back(head);
    }
    Box::pin(SseStream::new(
        events,
        encoder,
        crate::api::keep_alive::INTERVAL,
    ))
}

/// `text_completion` chunks, then `[DONE]`; a failure is an error chunk before `[DONE]`.
struct CompletionSse {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    usage: Usage,
    out: VecDeque<Bytes>,
}

impl CompletionSse {
    fn chunk(&self, text: &str, finish: Option<&str>) -> Bytes {
        sse_data(&json!({
            "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]
        }))
    }
}

impl SseEncoder for CompletionSse {
    fn event(&mut self, event: ChatEvent) -> bool {
        match event {
            ChatEvent::TextDelta(text) => {
                let chunk = self.chunk(&text, None);
                self.out.push_back(chunk);
            }
            ChatEvent::Start { input_tokens, .. } => self.usage.input = input_tokens,
            ChatEvent::Usage(usage) => self.usage = usage,
            ChatEvent::Stop(reason) => {
                let chunk = self.chunk("", Some(finish_reason(reason)));
                self.out.push_back(chunk);
                if self.include_usage {
                    self.out.push_back(sse_data(&json!({
                        "object": "text_completion", "choices": [], "usage": usage_json(&self.usage)
                    })));
                }
                self.out.push_back(Bytes::from_static(DONE));
                return true;
            }
            _ => {}
        }
        false
    }

    fn fail(&mut self, error: &ChatError) {
        tracing::warn!(error = %error, kind = error.kind(), "stream failed after it began");
        if let Some(body) =
            crate::api::error::rejection(error).body_json(aiproxy_layers::ErrorShape::OpenAi)
        {
            self.out.push_back(sse_data(&body));
        }
        self.out.push_back(Bytes::from_static(DONE));
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    fn keep_alive(&self) -> Bytes {
        Bytes::from_static(KEEP_ALIVE)
    }
}
