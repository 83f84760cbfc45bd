//! Canonical events -> the Responses API: one encoder builds the `Response` object's output
//! items from the events and, for streams, the documented events with `sequence_number`:
//! `response.created`, `response.in_progress`, then per item `response.output_item.added`,
//! its content events (`response.content_part.added`, `response.output_text.delta` /
//! `.done`, `response.content_part.done`; `response.function_call_arguments.delta` /
//! `.done`; `response.custom_tool_call_input.delta` / `.done`;
//! `response.reasoning_summary_part.added`, `response.reasoning_summary_text.delta` /
//! `.done`, `response.reasoning_summary_part.done`), `response.output_item.done`; and last
//! `response.completed` (or `response.incomplete` at `max_output_tokens`), or `error` and
//! `response.failed` when the stream fails after it began. The non-stream answer is the
//! same encoder run without the events.

use super::request::{item_id, Options, ToolOrigin};
use super::sealed;
use crate::api::error::rejection;
use crate::api::sse::named_event;
use crate::chat::web_search::SearchOutcome;
use crate::chat::{ChatError, ChatEvent, Message, Part, Role, StopReason, Usage};
use aiproxy_layers::ErrorShape;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

#[derive(Debug)]
enum Item {
    Message {
        id: String,
        text: String,
    },
    Reasoning {
        id: String,
        text: String,
        /// Kiro's signature of the text (native reasoning), or empty.
        signature: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        done: bool,
    },
    /// A web search aiproxy ran (`web_search_call`).
    WebSearch {
        id: String,
        /// The canonical search id its result names.
        search: String,
        query: String,
        /// `searching`, then `completed` or `failed`.
        status: &'static str,
        sources: Vec<String>,
    },
}

/// What the encoder knows of the request.
#[derive(Debug)]
pub struct Setup {
    /// `resp_...`.
    pub id: String,
    /// The model id to report.
    pub model: String,
    /// Request fields echoed on the `Response`.
    pub echo: Map<String, Value>,
    /// Namespaced and custom tools, by their flattened name.
    pub origins: HashMap<String, ToolOrigin>,
    /// Send reasoning summaries.
    pub summary: bool,
    /// Send reasoning `encrypted_content`.
    pub encrypted: bool,
    /// Send the sources of web searches (`include: ["web_search_call.action.sources"]`).
    pub search_sources: bool,
}

impl Setup {
    /// From the parsed options.
    pub fn new(model: &str, options: &Options) -> Self {
        Self {
            id: item_id("resp"),
            model: model.to_owned(),
            echo: options.echo.clone(),
            origins: options.tools.clone(),
            summary: options.summary,
            encrypted: options.encrypted_reasoning,
            search_sources: options.search_sources,
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Encoder {
    setup: Arc<Setup>,
    created_at: u64,
    streaming: bool,
    seq: u64,
    items: Vec<Item>,
    open_text: Option<usize>,
    open_reasoning: Option<usize>,
    calls: HashMap<u32, usize>,
    usage: Usage,
    status: &'static str,
    /// SSE bytes ready to send (streams only).
    pub out: VecDeque<Bytes>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Encoder {
    /// An encoder; `streaming` decides whether events are produced.
    pub fn new(setup: Arc<Setup>, streaming: bool) -> Self {
        Self {
            setup,
            created_at: now(),
            streaming,
            seq: 0,
            items: Vec::new(),
            open_text: None,
            open_reasoning: None,
            calls: HashMap::new(),
            usage: Usage::default(),
            status: "in_progress",
            out: VecDeque::new(),
        }
    }

    fn emit(&mut self, kind: &str, mut body: Value) {
        if !self.streaming {
            return;
        }
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        // A `Value` always serialises.
        if let Ok(bytes) = named_event(kind, &body) {
            self.out.push_back(bytes);
        }
    }

    /// The hot path (one text or arguments fragment): serialised from a borrowed struct,
    /// without building a JSON tree.
    fn emit_delta(&mut self, kind: &'static str, index: usize, delta: &str) {
        #[derive(serde::Serialize)]
        struct Delta<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            item_id: &'a str,
            output_index: usize,
            #[serde(skip_serializing_if = "Option::is_none")]
            content_index: Option<u32>,
            delta: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            logprobs: Option<[u8; 0]>,
            sequence_number: u64,
        }
        if !self.streaming {
            return;
        }
        let text = kind == "response.output_text.delta";
        let body = Delta {
            kind,
            item_id: self.id_of(index),
            output_index: index,
            content_index: text.then_some(0),
            delta,
            logprobs: text.then_some([]),
            sequence_number: self.seq,
        };
        if let Ok(bytes) = named_event(kind, &body) {
            self.seq += 1;
            self.out.push_back(bytes);
        }
    }

    /// Takes one event; the final `Response` object when it finished the response (the one
    /// the last stream event carried, so a store or a non-stream answer shows the same).
    pub fn on_event(&mut self, event: ChatEvent) -> Option<Value> {
        match event {
            ChatEvent::Start { input_tokens, .. } => {
                self.usage.input = input_tokens;
                self.usage.estimated = true;
                let response = self.response();
                self.emit("response.created", json!({ "response": response }));
                self.emit("response.in_progress", json!({ "response": response }));
            }
            ChatEvent::TextDelta(text) => self.text(text),
            ChatEvent::ThinkingDelta(text) => self.thinking(text),
            ChatEvent::ThinkingSignature(signature) => self.signature(signature),
            ChatEvent::ToolCallStart { index, id, name } => self.call_start(index, id, name),
            ChatEvent::ToolCallDelta { index, json } => self.call_delta(index, json),
            ChatEvent::ToolCallEnd { index } => self.call_end(index),
            ChatEvent::WebSearchCall { id, query } => self.search_start(id, query),
            ChatEvent::WebSearchResult { id, outcome } => self.search_end(&id, &outcome),
            ChatEvent::Usage(usage) => self.usage = usage,
            // Encrypted reasoning is not carried in the Responses shape (its reasoning items
            // hold text and aiproxy's own encrypted_content); it is not replayed from there.
            ChatEvent::StopSequence(_) | ChatEvent::RedactedThinking(_) => {}
            ChatEvent::Stop(reason) => {
                self.close_open();
                self.status = match reason {
                    StopReason::MaxTokens | StopReason::ContextWindowExceeded => "incomplete",
                    _ => "completed",
                };
                let response = self.response();
                let kind = if self.status == "incomplete" {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                if self.streaming {
                    self.emit(kind, json!({ "response": response.clone() }));
                }
                return Some(response);
            }
        }
        None
    }

    /// The stream failed after it began: `error`, then `response.failed`.
    pub fn fail(&mut self, error: &ChatError) {
        tracing::warn!(error = %error, kind = error.kind(), "stream failed after it began");
        self.status = "failed";
        let body = rejection(error).body_json(ErrorShape::OpenAi);
        let detail = body
            .as_ref()
            .map(|b| b["error"].clone())
            .unwrap_or_default();
        self.emit(
            "error",
            json!({"code": detail["code"], "message": error.to_string(), "param": detail["param"]}),
        );
        let mut response = self.response();
        let code = match error {
            ChatError::RateLimited { .. }
            | ChatError::Throttled { .. }
            | ChatError::QuotaExhausted { .. } => "rate_limit_exceeded",
            _ => "server_error",
        };
        response["error"] = json!({"code": code, "message": error.to_string()});
        self.emit("response.failed", json!({ "response": response }));
    }

    fn text(&mut self, text: String) {
        self.close_reasoning();
        let index = match self.open_text {
            Some(index) => index,
            None => {
                let index = self.add_item(Item::Message {
                    id: item_id("msg"),
                    text: String::new(),
                });
                self.open_text = Some(index);
                let id = self.item_id(index);
                self.emit(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                );
                index
            }
        };
        self.emit_delta("response.output_text.delta", index, &text);
        if let Some(Item::Message { text: all, .. }) = self.items.get_mut(index) {
            all.push_str(&text);
        }
    }

    fn thinking(&mut self, text: String) {
        if !self.setup.summary && !self.setup.encrypted {
            return;
        }
        self.close_text();
        let index = match self.open_reasoning {
            Some(index) => index,
            None => {
                let index = self.items.len();
                self.items.push(Item::Reasoning {
                    id: item_id("rs"),
                    text: String::new(),
                    signature: String::new(),
                });
                self.open_reasoning = Some(index);
                let id = self.item_id(index);
                self.emit(
                    "response.output_item.added",
                    json!({"output_index": index, "item": {"id": id, "type": "reasoning", "summary": []}}),
                );
                if self.setup.summary {
                    self.emit(
                        "response.reasoning_summary_part.added",
                        json!({"item_id": id, "output_index": index, "summary_index": 0,
                               "part": {"type": "summary_text", "text": ""}}),
                    );
                }
                index
            }
        };
        if self.setup.summary {
            let id = self.item_id(index);
            self.emit(
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": text}),
            );
        }
        if let Some(Item::Reasoning { text: all, .. }) = self.items.get_mut(index) {
            all.push_str(&text);
        }
    }

    /// Signs the open reasoning item (native reasoning); it closes, and later thinking
    /// starts another item.
    fn signature(&mut self, signed: String) {
        let Some(index) = self.open_reasoning else {
            return;
        };
        if let Some(Item::Reasoning { signature, .. }) = self.items.get_mut(index) {
            *signature = signed;
        }
        self.close_reasoning();
    }

    fn call_start(&mut self, event_index: u32, call_id: String, name: String) {
        self.close_open();
        let index = self.add_item(Item::Call {
            id: item_id(if self.is_custom(&name) { "ctc" } else { "fc" }),
            call_id,
            name,
            arguments: String::new(),
            done: false,
        });
        self.calls.insert(event_index, index);
    }

    fn call_delta(&mut self, event_index: u32, fragment: String) {
        let Some(&index) = self.calls.get(&event_index) else {
            return;
        };
        let custom = match self.items.get(index) {
            Some(Item::Call { name, .. }) => self.is_custom(name),
            _ => return,
        };
        if !custom {
            self.emit_delta("response.function_call_arguments.delta", index, &fragment);
        }
        if let Some(Item::Call { arguments, .. }) = self.items.get_mut(index) {
            arguments.push_str(&fragment);
        }
    }

    fn call_end(&mut self, event_index: u32) {
        let Some(index) = self.calls.remove(&event_index) else {
            return;
        };
        let (arguments, name) = match self.items.get_mut(index) {
            Some(Item::Call {
                done,
                arguments,
                name,
                ..
            }) => {
                *done = true;
                (arguments.clone(), name.clone())
            }
            _ => return,
        };
        let custom = self.is_custom(&name);
        let id = self.item_id(index);
        if custom {
            let input = custom_input(&arguments);
            self.emit(
                "response.custom_tool_call_input.delta",
                json!({"item_id": id, "output_index": index, "delta": input}),
            );
            self.emit(
                "response.custom_tool_call_input.done",
                json!({"item_id": id, "output_index": index, "input": input}),
            );
        } else {
            let origin = self.origin(&name);
            self.emit(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "name": origin.name, "arguments": arguments}),
            );
        }
        let item = self.item_json(index, "completed");
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }

    /// Adds an output item, announced in progress; its index.
    fn add_item(&mut self, item: Item) -> usize {
        let index = self.items.len();
        self.items.push(item);
        let item = self.item_json(index, "in_progress");
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        index
    }

    /// A search begins: its item is added, in progress and searching.
    fn search_start(&mut self, search: String, query: String) {
        self.close_open();
        let index = self.add_item(Item::WebSearch {
            id: item_id("ws"),
            search,
            query,
            status: "in_progress",
            sources: Vec::new(),
        });
        let id = self.item_id(index);
        self.emit(
            "response.web_search_call.in_progress",
            json!({"output_index": index, "item_id": id}),
        );
        self.emit(
            "response.web_search_call.searching",
            json!({"output_index": index, "item_id": id}),
        );
    }

    /// A search ended: its item completes (or fails) with its sources.
    fn search_end(&mut self, search_id: &str, outcome: &SearchOutcome) {
        let found = self
            .items
            .iter()
            .position(|item| matches!(item, Item::WebSearch { search, .. } if search == search_id));
        let Some(index) = found else {
            return;
        };
        if let Some(Item::WebSearch {
            status, sources, ..
        }) = self.items.get_mut(index)
        {
            match outcome {
                Ok(hits) => {
                    *status = "completed";
                    *sources = hits.iter().map(|hit| hit.url.clone()).collect();
                }
                Err(_) => *status = "failed",
            }
        }
        let id = self.item_id(index);
        self.emit(
            "response.web_search_call.completed",
            json!({"output_index": index, "item_id": id}),
        );
        let item = self.item_json(index, "completed");
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }

    fn close_open(&mut self) {
        self.close_text();
        self.close_reasoning();
    }

    fn close_text(&mut self) {
        let Some(index) = self.open_text.take() else {
            return;
        };
        if self.streaming {
            let id = self.item_id(index);
            let text = match self.items.get(index) {
                Some(Item::Message { text, .. }) => text.clone(),
                _ => String::new(),
            };
            self.emit(
                "response.output_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
            );
            self.emit(
                "response.content_part.done",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
            );
            let item = self.item_json(index, "completed");
            self.emit(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            );
        }
    }

    fn close_reasoning(&mut self) {
        let Some(index) = self.open_reasoning.take() else {
            return;
        };
        if self.streaming {
            let id = self.item_id(index);
            if self.setup.summary {
                let text = match self.items.get(index) {
                    Some(Item::Reasoning { text, .. }) => text.clone(),
                    _ => String::new(),
                };
                self.emit(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                self.emit(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": text}}),
                );
            }
            let item = self.item_json(index, "completed");
            self.emit(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            );
        }
    }

    fn is_custom(&self, name: &str) -> bool {
        self.setup.origins.get(name).is_some_and(|o| o.custom)
    }

    fn origin(&self, name: &str) -> ToolOrigin {
        self.setup
            .origins
            .get(name)
            .cloned()
            .unwrap_or_else(|| ToolOrigin {
                name: name.to_owned(),
                ..ToolOrigin::default()
            })
    }

    fn item_id(&self, index: usize) -> String {
        self.id_of(index).to_owned()
    }

    fn id_of(&self, index: usize) -> &str {
        match self.items.get(index) {
            Some(
                Item::Message { id, .. }
                | Item::Reasoning { id, .. }
                | Item::Call { id, .. }
                | Item::WebSearch { id, .. },
            ) => id,
            None => "",
        }
    }

    fn item_json(&self, index: usize, status: &str) -> Value {
        match self.items.get(index) {
            Some(Item::Message { id, text }) => {
                let content = if status == "in_progress" {
                    json!([])
                } else {
                    json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
                };
                json!({"id": id, "type": "message", "role": "assistant", "status": status, "content": content})
            }
            Some(Item::Reasoning {
                id,
                text,
                signature,
            }) => {
                let mut item = json!({"id": id, "type": "reasoning", "summary": []});
                if status != "in_progress" {
                    if self.setup.summary {
                        item["summary"] = json!([{"type": "summary_text", "text": text}]);
                    }
                    if self.setup.encrypted {
                        item["encrypted_content"] = json!(sealed::seal(text, signature));
                    }
                }
                item
            }
            Some(Item::Call {
                id,
                call_id,
                name,
                arguments,
                done,
            }) => {
                let origin = self.origin(name);
                let status = if *done { "completed" } else { status };
                let mut item = if origin.custom {
                    let input = if *done {
                        custom_input(arguments)
                    } else {
                        String::new()
                    };
                    json!({"id": id, "type": "custom_tool_call", "call_id": call_id, "name": origin.name,
                           "input": input, "status": status})
                } else {
                    let arguments = if *done { arguments.as_str() } else { "" };
                    json!({"id": id, "type": "function_call", "call_id": call_id, "name": origin.name,
                           "arguments": arguments, "status": status})
                };
                if let Some(namespace) = origin.namespace {
                    item["namespace"] = json!(namespace);
                }
                item
            }
            Some(Item::WebSearch {
                id,
                query,
                status: own,
                sources,
                ..
            }) => {
                let status = if *own == "in_progress" { status } else { own };
                let mut action = json!({"type": "search", "query": query, "queries": [query]});
                if self.setup.search_sources {
                    action["sources"] = sources
                        .iter()
                        .map(|url| json!({"type": "url", "url": url}))
                        .collect();
                }
                json!({"id": id, "type": "web_search_call", "status": status, "action": action})
            }
            None => Value::Null,
        }
    }

    /// The `Response` object as of now.
    pub fn response(&self) -> Value {
        let finished = self.status != "in_progress";
        let output: Vec<Value> = if finished {
            (0..self.items.len())
                .map(|i| self.item_json(i, "completed"))
                .collect()
        } else {
            Vec::new()
        };
        let text: String = self
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Message { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let mut response = Map::new();
        response.insert("id".into(), json!(self.setup.id));
        response.insert("object".into(), json!("response"));
        response.insert("created_at".into(), json!(self.created_at));
        response.insert("status".into(), json!(self.status));
        response.insert(
            "completed_at".into(),
            if self.status == "completed" {
                json!(now())
            } else {
                Value::Null
            },
        );
        response.insert("error".into(), Value::Null);
        response.insert(
            "incomplete_details".into(),
            if self.status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
        );
        response.insert("model".into(), json!(self.setup.model));
        response.insert("output".into(), Value::Array(output));
        response.insert("output_text".into(), json!(text));
        if finished {
            // Not nullable in the schema: absent until known.
            response.insert("usage".into(), usage_json(self.usage));
        }
        for (key, value) in &self.setup.echo {
            response.insert(key.clone(), value.clone());
        }
        Value::Object(response)
    }

    /// The usage so far (the answer's, once it finished).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The response's output as one canonical assistant message (for the store).
    pub fn assistant_message(&self) -> Message {
        let parts = self
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Message { text, .. } => Some(Part::Text(text.clone())),
                Item::Reasoning {
                    text, signature, ..
                } if !signature.is_empty() => Some(Part::SignedThinking {
                    text: text.clone(),
                    signature: signature.clone(),
                }),
                Item::Reasoning { text, .. } => Some(Part::Thinking(text.clone())),
                Item::Call {
                    call_id,
                    name,
                    arguments,
                    done: true,
                    ..
                } => Some(Part::ToolUse {
                    id: call_id.clone(),
                    name: name.clone(),
                    input: serde_json::from_str(arguments).unwrap_or_else(|_| json!({})),
                }),
                Item::Call { .. } => None,
                Item::WebSearch { query, .. } => {
                    Some(Part::Text(format!("(Searched the web for \"{query}\".)")))
                }
            })
            .collect();
        Message {
            role: Role::Assistant,
            parts,
        }
    }
}

/// A custom tool's free-text input, from the JSON arguments Kiro produced.
fn custom_input(arguments: &str) -> String {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .and_then(|v| v.get("input").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

fn usage_json(usage: Usage) -> Value {
    let input = usage.input + usage.cache_read + usage.cache_write;
    let mut value = json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": usage.cache_read, "cache_write_tokens": usage.cache_write},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + usage.output,
    });
    crate::api::credits::extend_usage(&mut value, &usage);
    value
}
