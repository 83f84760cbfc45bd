//! The OpenAI Responses API (what Codex CLI, the OpenAI Agents SDK and the SDKs'
//! `responses.*` speak), through the same canonical types and model tier as the other two:
//!
//! - `POST /v1/responses`: stream and non-stream ([`request`] parses, [`encode`] answers);
//!   `previous_response_id` continues a stored response.
//! - `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`,
//!   `GET /v1/responses/{id}/input_items`: the [`store`] (per client key, bounded, with a
//!   time to live).
//! - `POST /v1/responses/input_tokens`: counted locally.

pub mod encode;
pub mod request;
pub mod sealed;
pub mod store;

use super::{
    call_model, completed_response, drained, error, json_response, list_header, metadata,
    model_headers, parsed_body, sse_response, ApiState, ModelTier, RequestBody,
};
use crate::api::sse::{SseEncoder, SseStream};
use crate::body::{ChunkStream, ResponseBody};
use crate::chat::{ChatError, ChatStream};
use crate::model::ModelResponse;
use aiproxy_layers::{ClientKey, Rejection};
use bytes::Bytes;
use encode::{Encoder, Setup};
use futures_util::StreamExt;
use http::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use store::Stored;

/// What a finished response leaves in the store.
struct Keep {
    store: Arc<dyn store::ResponseStore>,
    client: ClientKey,
    conversation: Vec<crate::chat::Message>,
    system: Vec<String>,
    input_items: Vec<Value>,
}

impl Keep {
    /// The store's write of the finished response: at once for the in-memory store; a
    /// shared store's round trip when the future is awaited.
    fn finish(self, response: Value, encoder: &Encoder, id: &str) -> store::Answer<()> {
        let mut conversation = self.conversation;
        conversation.push(encoder.assistant_message());
        self.store.put(
            &self.client,
            id,
            Stored {
                response,
                conversation,
                system: self.system,
                input_items: self.input_items,
            },
        )
    }
}

/// Puts the stored conversation of `previous_response_id` in front of the request's own
/// input (and its system text after the instructions); the chain's system text. A request
/// left without any conversation is refused.
async fn chain(
    state: &ApiState,
    chat: &mut crate::chat::ChatRequest,
    options: &request::Options,
) -> Result<Vec<String>, Rejection> {
    let Some(previous) = &options.previous_response_id else {
        if chat.messages.is_empty() {
            return Err(error::rejection(&ChatError::invalid(
                "input",
                "`input` is required: a string or at least one input item.",
            )));
        }
        return Ok(Vec::new());
    };
    let stored = state
        .responses
        .get(&chat.metadata.client, previous)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            error::rejection(&ChatError::invalid(
                "previous_response_id",
                format!(
                    "`previous_response_id` `{previous}` is not a stored response of this API key: it was made with \
                     `store: false`, deleted, expired (responses are kept for --responses-store-ttl), or never existed."
                ),
            ))
        })?;
    let mut messages = stored.conversation.clone();
    messages.append(&mut chat.messages);
    chat.messages = messages;
    let after_instructions = usize::from(
        options
            .echo
            .get("instructions")
            .is_some_and(Value::is_string),
    );
    for (i, text) in stored.system.iter().enumerate() {
        chat.system.insert(after_instructions + i, text.clone());
    }
    Ok(stored.system.clone())
}

/// `POST /v1/responses`.
pub async fn create(
    model: ModelTier,
    state: &ApiState,
    parts: &http::request::Parts,
    body: RequestBody,
) -> Result<http::Response<ResponseBody>, Rejection> {
    let (mut chat, mut options) =
        parsed_body(body, state, |b| request::parse(b, metadata(parts))).await?;
    let client = chat.metadata.client.clone();
    let mut system_chain = chain(state, &mut chat, &options).await?;
    system_chain.append(&mut options.system_items);
    let keep = options.store.then(|| Keep {
        store: Arc::clone(&state.responses),
        client,
        conversation: chat.messages.clone(),
        system: system_chain,
        input_items: std::mem::take(&mut options.input_items),
    });
    let setup = Arc::new(Setup::new(&chat.model, &options));
    if !options.dropped_tools.is_empty() {
        tracing::info!(tools = ?options.dropped_tools, "hosted tools left out: Kiro cannot run them");
    }
    let stream = chat.stream;
    let not_honoured = chat.sampling.not_honoured.clone();
    let ModelResponse { events, extensions } = call_model(model, state, parts, chat).await?;
    let mut response = if stream {
        sse_response(sse(events, setup, keep))
    } else {
        let (body, usage) = drained(&extensions, complete(events, setup, keep))
            .await
            .map_err(|e| error::rejection(&e))?;
        completed_response(body, &usage)
    };
    model_headers(&mut response, &extensions);
    list_header(&mut response, "x-aiproxy-not-honoured", &not_honoured);
    list_header(
        &mut response,
        "x-aiproxy-dropped-tools",
        &options.dropped_tools,
    );
    Ok(response)
}

async fn complete(
    mut events: ChatStream,
    setup: Arc<Setup>,
    keep: Option<Keep>,
) -> Result<(Bytes, crate::chat::Usage), ChatError> {
    let id = setup.id.clone();
    let mut encoder = Encoder::new(setup, false);
    while let Some(event) = events.next().await {
        if let Some(response) = encoder.on_event(event?) {
            let body = Bytes::from(response.to_string());
            if let Some(keep) = keep {
                // Written before the answer leaves, so a follow-up on any replica finds it
                // (a shared store that fails keeps a local copy; the answer goes out anyway).
                let _ = keep.finish(response, &encoder, &id).await;
            }
            return Ok((body, encoder.usage()));
        }
    }
    Err(ChatError::ended_without_stop())
}

/// The SSE body of a streamed response that is not stored (what the benches measure).
pub fn stream_unstored(events: ChatStream, setup: Arc<Setup>) -> ChunkStream {
    sse(events, setup, None)
}

fn sse(events: ChatStream, setup: Arc<Setup>, keep: Option<Keep>) -> ChunkStream {
    let encoder = ResponsesSse {
        id: setup.id.clone(),
        encoder: Encoder::new(setup, true),
        keep,
        writing: None,
    };
    Box::pin(SseStream::new(
        events,
        encoder,
        crate::api::keep_alive::INTERVAL,
    ))
}

/// SSE comment sent after a quiet stretch (clients skip comment lines).
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The encoder with the store write of a finished response.
struct ResponsesSse {
    id: String,
    encoder: Encoder,
    keep: Option<Keep>,
    /// The store write under way; the last events wait for it.
    writing: Option<tokio::task::JoinHandle<Result<(), store::StoreDown>>>,
}

impl SseEncoder for ResponsesSse {
    fn event(&mut self, event: crate::chat::ChatEvent) -> bool {
        let Some(response) = self.encoder.on_event(event) else {
            return false;
        };
        if let Some(keep) = self.keep.take() {
            // The in-memory store has it already; a shared store's write (one round trip,
            // within --redis-timeout-ms) runs in a task of its own, so a client that goes
            // away does not cancel it, and the last events leave once it is done: a next
            // turn sent to any replica finds the response.
            let written = keep.finish(response, &self.encoder, &self.id);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                self.writing = Some(runtime.spawn(written));
            }
        }
        true
    }

    fn poll_release(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if let Some(writing) = self.writing.as_mut() {
            // Whatever the write's outcome (a store that failed keeps a local copy).
            if std::future::Future::poll(std::pin::Pin::new(writing), cx).is_pending() {
                return std::task::Poll::Pending;
            }
            self.writing = None;
        }
        std::task::Poll::Ready(())
    }

    fn fail(&mut self, error: &ChatError) {
        self.encoder.fail(error);
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        self.encoder.out.pop_front()
    }

    fn keep_alive(&self) -> Bytes {
        Bytes::from_static(KEEP_ALIVE)
    }
}

fn not_found(id: &str) -> Rejection {
    Rejection::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "No stored response with id `{id}` for this API key (it was made with `store: false`, deleted, expired, or never existed)."
        ),
    )
    .with_param("response_id")
}

fn client_of(parts: &http::request::Parts) -> ClientKey {
    metadata(parts).client
}

/// The stored response `id` of the calling key, or the 404.
async fn stored(
    state: &ApiState,
    parts: &http::request::Parts,
    id: &str,
) -> Result<Arc<Stored>, Rejection> {
    state
        .responses
        .get(&client_of(parts), id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| not_found(id))
}

/// A shared store that could not answer (`closed` mode): a 503 that says why.
fn unavailable(down: store::StoreDown) -> Rejection {
    error::rejection(&ChatError::SharedStateUnavailable { message: down.0 })
}

/// `GET /v1/responses/{id}`.
pub async fn get(
    state: &ApiState,
    parts: &http::request::Parts,
    id: &str,
) -> Result<http::Response<ResponseBody>, Rejection> {
    let stored = stored(state, parts, id).await?;
    Ok(json_response(StatusCode::OK, stored.response.to_string()))
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    state: &ApiState,
    parts: &http::request::Parts,
    id: &str,
) -> Result<http::Response<ResponseBody>, Rejection> {
    if !state
        .responses
        .delete(&client_of(parts), id)
        .await
        .map_err(unavailable)?
    {
        return Err(not_found(id));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"id": id, "object": "response", "deleted": true}).to_string(),
    ))
}

/// `GET /v1/responses/{id}/input_items` (`order` `desc` by default, `limit` 1-100, `after`).
pub async fn input_items(
    state: &ApiState,
    parts: &http::request::Parts,
    id: &str,
) -> Result<http::Response<ResponseBody>, Rejection> {
    let stored = stored(state, parts, id).await?;
    let query = parts.uri.query().unwrap_or_default();
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let bad = |name: &str, message: &str| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message.to_owned(),
        )
        .with_param(name.to_owned())
    };
    let limit = match param("limit") {
        None => 20,
        Some(v) => match v.parse::<usize>() {
            Ok(n @ 1..=100) => n,
            _ => return Err(bad("limit", "`limit` must be a number from 1 to 100.")),
        },
    };
    let mut items = stored.input_items.clone();
    match param("order").as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(_) => return Err(bad("order", "`order` must be `asc` or `desc`.")),
    }
    if let Some(after) = param("after") {
        let Some(position) = items.iter().position(|i| i["id"] == after.as_str()) else {
            return Err(bad(
                "after",
                "`after` is not the id of one of this response's input items.",
            ));
        };
        items.drain(..=position);
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    let body = json!({
        "object": "list",
        "data": items,
        "first_id": items.first().map(|i| i["id"].clone()),
        "last_id": items.last().map(|i| i["id"].clone()),
        "has_more": has_more,
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// `POST /v1/responses/input_tokens`: the local estimate of the input.
pub async fn input_tokens(
    state: &ApiState,
    parts: &http::request::Parts,
    body: RequestBody,
) -> Result<http::Response<ResponseBody>, Rejection> {
    let (mut chat, options) =
        parsed_body(body, state, |b| request::parse(b, metadata(parts))).await?;
    chain(state, &mut chat, &options).await?;
    let tokens = crate::token_count::estimate_request(&chat);
    Ok(json_response(
        StatusCode::OK,
        json!({"object": "response.input_tokens", "input_tokens": tokens}).to_string(),
    ))
}
