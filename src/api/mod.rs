//! The API adapter: HTTP requests of the OpenAI surface -> canonical [`ChatRequest`]s for the
//! model tier, and its event streams -> JSON or SSE responses.
//!
//! Routes: `GET /v1/models` (OpenAI shape, or Anthropic's when the client sends
//! `anthropic-version`), `POST /v1/chat/completions`, `POST /v1/messages`,
//! `POST /v1/messages/count_tokens` (answered locally), `GET /health`, `GET /metrics`,
//! `GET /loadbalancer/instances`. Anything else is a 404
//! (or 405 for a known path with the wrong method) that lists what is served.

pub mod anthropic;
mod catalog_view;
pub mod collect;
pub mod completions;
pub mod cors;
pub mod credits;
pub mod error;
pub mod image;
pub mod json;
pub mod keep_alive;
pub mod metrics;
pub mod openai;
pub mod responses;
pub mod sse;
pub mod status;
pub mod unsupported;

use crate::body::ResponseBody;
use crate::catalog::Catalog;
use crate::chat::{ChatError, ChatRequest, ChatStream, Metadata};
use crate::model::{AccountId, ModelRequest, ModelResponse};
use crate::telemetry::access::AccessNote;
use aiproxy_layers::cache::{CacheControl, CacheStatus};
use aiproxy_layers::metrics::UpstreamClock;
use aiproxy_layers::model::{Attempts, SessionKey};
use aiproxy_layers::rate_limit::{RateLimitSlot, RateLimitStatus};
use aiproxy_layers::{ClientKey, ErrorShape, ProviderId, Rejection};
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use http::header::{HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ROUTES: &str =
    "GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions, POST /v1/completions, POST /v1/messages, \
     POST /v1/messages/count_tokens, POST /v1/responses, GET|DELETE /v1/responses/{id}, \
     GET /v1/responses/{id}/input_items, POST /v1/responses/input_tokens, GET /health, \
     GET /metrics, GET /loadbalancer/instances";

/// What `/health` reports about one provider.
#[derive(Clone)]
pub struct ProviderStatus {
    /// Provider id (`kiro-api`).
    pub id: String,
    /// `mock` or `live`.
    pub mode: &'static str,
    /// Live accounts (none in mock mode); replaced when the pool file is reloaded.
    pub accounts: crate::kiro::accounts::LiveAccounts,
    /// The pool's members as of now (every account, mock ones too).
    pub pool: PoolViews,
}

impl std::fmt::Debug for ProviderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderStatus")
            .field("id", &self.id)
            .field("mode", &self.mode)
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

/// Reads the pool's state: its members' views and whether it is in panic mode.
pub type PoolViews = Arc<dyn Fn() -> aiproxy_layers::model::pool::PoolStatus + Send + Sync>;

/// Everything the adapter needs besides the model service.
#[derive(Debug)]
pub struct ApiState {
    /// Models served.
    pub catalog: Catalog,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Whether the model tier has the rate-limit layer (which reports its decision in a
    /// `RateLimitSlot` the adapter puts on the request).
    pub rate_limited: bool,
    /// Providers, for `/health`.
    pub providers: Vec<ProviderStatus>,
    /// Process start, for `/health`.
    pub started: Instant,
    /// Stored Responses API responses.
    pub responses: Arc<dyn responses::store::ResponseStore>,
    /// CORS for browser clients, when origins are configured.
    pub cors: Option<cors::Cors>,
    /// The registry `/metrics` renders.
    pub metrics: crate::telemetry::metrics::Metrics,
    /// `aiproxy_kiro_credits_total` on that registry.
    pub credits: credits::CreditsCounter,
    /// The console's record of recent requests (`None` without a console: nothing is kept).
    pub journal: Option<crate::telemetry::journal::Journal>,
    /// Where state is shared when replicas share it (`--redis-url`): its status for
    /// `/health` and `/loadbalancer/instances`, read when they are asked for.
    pub shared_state: Option<SharedStateView>,
}

/// The status of the store replicas share (a JSON object with `backend`), as a closure so
/// this module needs nothing of `crate::replicas`.
#[derive(Clone)]
pub struct SharedStateView(pub Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

impl std::fmt::Debug for SharedStateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStateView")
    }
}

/// What the status views read, for a view outside the pipeline (the console): a cheap copy
/// of the handles in [`ApiState`].
#[derive(Clone, Debug)]
pub struct Views {
    /// Providers and their pools.
    pub providers: Vec<ProviderStatus>,
    /// Models served.
    pub catalog: Catalog,
    /// Process start.
    pub started: Instant,
    /// The console's journal.
    pub journal: Option<crate::telemetry::journal::Journal>,
}

impl ApiState {
    /// The handles the status views read.
    pub fn views(&self) -> Views {
        Views {
            providers: self.providers.clone(),
            catalog: self.catalog.clone(),
            started: self.started,
            journal: self.journal.clone(),
        }
    }
}

/// The model tier as the adapter holds it: boxed, so that the adapter's handlers are
/// compiled once in this crate instead of once per model-tier type in every crate that
/// builds a pipeline (costs a few small allocations per request: the service clone, the
/// call's future, the body; not measurable in `benches/pipeline.rs`).
pub type ModelTier = tower::util::BoxCloneSyncService<ModelRequest, ModelResponse, ChatError>;

/// A request body as the handlers read it (boxed for the same reason).
type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The adapter as a `Service<http::Request<B>>` in front of the model tier.
#[derive(Clone)]
pub struct ApiService {
    model: ModelTier,
    state: Arc<ApiState>,
}

impl std::fmt::Debug for ApiService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiService")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ApiService {
    /// Serves the API on top of `model`.
    pub fn new<M>(model: M, state: ApiState) -> Self
    where
        M: Service<ModelRequest, Response = ModelResponse, Error = ChatError>
            + Clone
            + Send
            + Sync
            + 'static,
        M::Future: Send + 'static,
    {
        Self {
            model: ModelTier::new(model),
            state: Arc::new(state),
        }
    }
}

impl<B> Service<Request<B>> for ApiService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The model tier's readiness is waited for per call (bounded, see `call_model`), so
        // a full account answers 503 instead of stalling the HTTP tier.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let model = self.model.clone();
        let state = Arc::clone(&self.state);
        let request = request.map(|body| {
            body.map_err(|error| -> BoxError { error.into() })
                .boxed_unsync()
        });
        // The route's future is made here rather than awaited in a block that owns the
        // request: such a block kept room for the request in every request's box.
        let Some(cors) = state.cors.clone() else {
            return Box::pin(route(model, state, request).map(Ok));
        };
        if let Some(answer) = cors.preflight(request.method(), request.headers()) {
            return Box::pin(std::future::ready(Ok(answer)));
        }
        let headers = request.headers().clone();
        Box::pin(route(model, state, request).map(move |mut response| {
            cors.decorate(&headers, &mut response);
            Ok(response)
        }))
    }
}

/// The future of one request. Its size is the room every request takes while it waits for
/// its answer (1,000 waiting streams: 1,000 of them), so the head is taken apart before the
/// future is made (an `async fn` keeps its arguments and their moved copies side by side),
/// and the handlers of rare requests with large futures are boxed on their own: a future is
/// as large as its largest arm.
fn route(
    model: ModelTier,
    state: Arc<ApiState>,
    request: Request<RequestBody>,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    let (mut parts, body) = request.into_parts();
    async move {
        let provider = parts.extensions.get::<ProviderId>().cloned();
        let access = AccessNote::for_current_request();
        if let Some(access) = &access {
            if let Some(provider) = &provider {
                access.provider(provider);
            }
            parts.extensions.insert(access.clone());
        }
        let shape = ErrorShape::for_request(&parts);
        // HEAD is answered as GET would be: same status and headers, no body (see `headless`).
        let method = if parts.method == Method::HEAD {
            &Method::GET
        } else {
            &parts.method
        };
        let result = match (method, parts.uri.path()) {
        (&Method::GET, "/v1/models") => Ok(catalog_view::list(
            &state,
            parts.headers.contains_key("anthropic-version"),
        )),
        (&Method::GET, path) if path.starts_with("/v1/models/") => catalog_view::by_id(
            &state,
            &path["/v1/models/".len()..],
            parts.headers.contains_key("anthropic-version"),
        ),
        (&Method::POST, "/v1/chat/completions") => {
            chat::<OpenAiSurface>(model, &state, &parts, body).await
        }
        (&Method::POST, "/v1/messages") => {
            chat::<AnthropicSurface>(model, &state, &parts, body).await
        }
        (&Method::POST, "/v1/messages/count_tokens") => count_tokens(&state, body).await,
        (&Method::POST, "/v1/completions") => {
            Box::pin(legacy_completions(model, &state, &parts, body)).await
        }
        (&Method::POST, "/v1/responses") => {
            Box::pin(responses::create(model, &state, &parts, body)).await
        }
        (&Method::POST, "/v1/responses/input_tokens") => {
            responses::input_tokens(&state, &parts, body).await
        }
        (method, path) if path.starts_with("/v1/responses/") => {
            let rest = &path["/v1/responses/".len()..];
            match (method, rest.strip_suffix("/input_items")) {
                (&Method::GET, Some(id)) => responses::input_items(&state, &parts, id).await,
                (&Method::GET, None) => responses::get(&state, &parts, rest).await,
                (&Method::DELETE, None) => responses::delete(&state, &parts, rest).await,
                _ => Err(unknown_route(&parts.method, path)),
            }
        }
        (_, "/v1/embeddings") => Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "aiproxy serves Claude models through Kiro, and they have no embeddings. Use an embeddings model \
             elsewhere (OpenAI text-embedding-3-small, Voyage AI, or a local sentence-transformers model) and \
             keep chat traffic here.",
        )
        .with_code("embeddings_unavailable")),
        (&Method::GET, "/health") => Ok(status::health(&state)),
        (&Method::GET, "/loadbalancer/instances") => Ok(status::instances(&state)),
        (&Method::GET, "/metrics") => Ok(metrics::render(&state)),
        (_, path) => Err(unknown_route(&parts.method, path)),
    };
        let mut response = result
            .unwrap_or_else(|rejection| rejection.into_response(shape).map(ResponseBody::full));
        if parts.method == Method::HEAD {
            response = headless(response);
        }
        if let Some(provider) = provider {
            // For the HTTP metrics layer above.
            response.extensions_mut().insert(provider);
        }
        if let Some(access) = access {
            // For the access line.
            response.extensions_mut().insert(access);
        }
        response
    }
}

/// A GET answer as the answer to a HEAD: the body dropped here (so an in-process caller gets
/// none either), its length kept as the `Content-Length` the GET would have sent.
fn headless(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    if let Some(length) = body.size_hint().exact() {
        parts
            .headers
            .entry(http::header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(length));
    }
    Response::from_parts(parts, ResponseBody::full(Bytes::new()))
}

/// The routes served, each with its label for metrics (ids replaced by `{id}`) and the
/// methods it takes (the `Allow` of a 405; every GET route takes HEAD): one table for both.
fn served_route(path: &str) -> Option<(&'static str, &'static str)> {
    Some(match path {
        "/v1/chat/completions" => ("/v1/chat/completions", "POST"),
        "/v1/messages" => ("/v1/messages", "POST"),
        "/v1/messages/count_tokens" => ("/v1/messages/count_tokens", "POST"),
        "/v1/completions" => ("/v1/completions", "POST"),
        "/v1/responses" => ("/v1/responses", "POST"),
        "/v1/responses/input_tokens" => ("/v1/responses/input_tokens", "POST"),
        "/v1/models" => ("/v1/models", "GET, HEAD"),
        "/health" => ("/health", "GET, HEAD"),
        "/metrics" => ("/metrics", "GET, HEAD"),
        "/loadbalancer/instances" => ("/loadbalancer/instances", "GET, HEAD"),
        p if p.starts_with("/v1/models/") => ("/v1/models/{id}", "GET, HEAD"),
        p if p.starts_with("/v1/responses/") && p.ends_with("/input_items") => {
            ("/v1/responses/{id}/input_items", "GET, HEAD")
        }
        p if p.starts_with("/v1/responses/") => ("/v1/responses/{id}", "GET, HEAD, DELETE"),
        _ => return None,
    })
}

/// The route label of a path for metrics: one of the served routes (ids replaced by
/// `{id}`), else `other`, so that a client cannot make a label per path it invents.
pub fn route_label(path: &str) -> &'static str {
    // A known `/{provider}/v1/...` prefix chooses the provider (the route layer below strips
    // it); the route is the rest.
    let path = aiproxy_layers::route::path_prefix(path)
        .filter(|provider| crate::config::PROVIDERS.contains(provider))
        .map_or(path, |provider| &path[provider.len() + 1..]);
    served_route(path).map_or("other", |(label, _)| label)
}

fn unknown_route(method: &Method, path: &str) -> Rejection {
    let allow = served_route(path).map(|(_, allow)| allow);
    match allow {
        Some(allow) => Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("{method} is not allowed on {path}; use {allow}."),
        )
        .with_header(ALLOW, HeaderValue::from_static(allow)),
        None => Rejection::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown endpoint {method} {path}. aiproxy serves {ROUTES}."),
        )
        .with_code("unknown_endpoint"),
    }
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Reads the body and parses it with `parse`. The bytes go before the caller goes on: they are
/// usually a slice of the connection's read buffer, and holding them through the model call
/// would keep that whole buffer alive next to the one hyper reads into by then (see
/// `server::own_head`).
async fn parsed_body<T>(
    body: RequestBody,
    state: &ApiState,
    parse: impl FnOnce(&[u8]) -> Result<T, ChatError>,
) -> Result<T, Rejection> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    parse(&bytes).map_err(|e| error::rejection(&e))
}

async fn read_body(body: RequestBody, limit: usize) -> Result<Bytes, Rejection> {
    // A declared length over the limit is refused before a byte of the body is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large(limit));
    }
    match collect_limited(body, limit).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large(limit)),
        Err(error) if error.is::<crate::server::tracked::BodyReadTimeout>() => Err(Rejection::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!("The request body could not be read: {error}."),
        )
        .with_code("request_timeout")),
        Err(error) => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("The request body could not be read: {error}."),
        )),
    }
}

/// The body, read up to `limit` bytes. A named, boxed future: written inline, rustc cannot
/// prove the handler futures `Send` (its higher-ranked check of the error conversion).
fn collect_limited(
    body: RequestBody,
    limit: usize,
) -> BoxFuture<'static, Result<http_body_util::Collected<Bytes>, BoxError>> {
    Box::pin(Limited::new(body, limit).collect())
}

fn too_large(limit: usize) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!(
            "The request body is larger than the limit of {limit} bytes. \
             Send a smaller request or raise --max-body-bytes."
        ),
    )
    .with_code("request_too_large")
}

fn metadata(parts: &http::request::Parts) -> Metadata {
    Metadata {
        client: parts
            .extensions
            .get::<ClientKey>()
            .cloned()
            .unwrap_or_else(ClientKey::anonymous),
        conversation_id: None,
    }
}

/// Sends a parsed request to the model tier. The tier is ready at once: the wait for a free
/// account slot happens inside the call, below the cache and the rate limits (see
/// `aiproxy_layers::model::ready`), bounded by `--request-timeout`, and running out of it is
/// [`ChatError::Busy`], not an upstream timeout: nothing was sent.
///
/// What needs no waiting is done before the future is made (see `route` on why its size
/// matters): the future holds the request once, until the call takes it.
fn call_model<'a>(
    mut model: ModelTier,
    state: &'a ApiState,
    parts: &'a http::request::Parts,
    chat: ChatRequest,
) -> impl Future<Output = Result<ModelResponse, Rejection>> + Send + 'a {
    let access = parts.extensions.get::<AccessNote>().cloned();
    let streaming = chat.stream;
    let (model_label, client): (Arc<str>, _) =
        (Arc::from(chat.model.as_str()), chat.metadata.client.clone());
    if let Some(access) = &access {
        access.model(&model_label);
    }
    let clock = UpstreamClock::default();
    // Only a tier with the rate-limit layer fills a slot; others spend no allocation on it.
    let slot = state.rate_limited.then(RateLimitSlot::default);
    // One record of upstream attempts for the whole request (the retry layer fills it, and a
    // second model call of the same request, a forced tool's second ask, continues it).
    let attempts = Attempts::default();
    // Only with a console: without one, nothing here runs.
    let journal = state.journal.as_ref().map(|journal| JournalNote {
        journal: journal.clone(),
        started: Instant::now(),
        prompt: journal
            .logs_bodies()
            .then(|| last_user_text(&chat))
            .flatten(),
        model: Arc::clone(&model_label),
        client: client.clone(),
        attempts: attempts.clone(),
        stream: streaming,
    });
    async move {
        let result = match model.ready().await {
            Err(error) => Err(error),
            Ok(ready) => {
                // The request in a block of its own, gone before the await.
                let call = {
                    let session = session_key(parts, &chat);
                    let mut request = ModelRequest::new(chat);
                    if let Some(session) = session {
                        request.extensions.insert(session);
                    }
                    if let Some(provider) = parts.extensions.get::<ProviderId>() {
                        request.extensions.insert(provider.clone());
                    }
                    request.extensions.insert(clock.clone());
                    request.extensions.insert(attempts.clone());
                    if let Some(slot) = &slot {
                        request.extensions.insert(slot.clone());
                    }
                    if let Some(control) = parts.headers.get(CACHE_CONTROL) {
                        let control = control.to_str().unwrap_or_default();
                        request.extensions.insert(CacheControl::parse(control));
                    }
                    ready.call(request)
                };
                call.await
            }
        };
        // Every upstream call this request cost, when there was more than the one that
        // answered (the `account` field names that one).
        if let Some(access) = access
            .as_ref()
            .filter(|_| attempts.count() > 1 || (result.is_err() && attempts.count() > 0))
        {
            access.attempts(attempts.summary());
        }
        let limits = slot.and_then(|slot| slot.get());
        let mut response = result.map_err(|e| {
            let rejection = error::rejection(&e);
            if let Some(note) = &journal {
                note.failed(&rejection);
            }
            match limits {
                Some(limits) => rate_limit_headers(&limits)
                    .into_iter()
                    .fold(rejection, |r, (name, value)| r.with_header(name, value)),
                None => rejection,
            }
        })?;
        response.extensions.insert(clock);
        // Streams are what outlast a shutdown's grace; a non-stream answer is cut with its
        // connection, as before (and skips the extra poll).
        if streaming {
            response.events = sse::Ending::wrap(
                response.events,
                parts
                    .extensions
                    .get::<crate::server::tracked::ServedOn>()
                    .map(|served| &served.ending),
            );
        }
        if let Some(limits) = limits {
            response.extensions.insert(limits);
        }
        let account = response.extensions.get::<AccountId>().map(|a| a.0.clone());
        if let (Some(access), Some(account)) = (&access, &account) {
            access.account(account);
        }
        let counter = state.credits.clone();
        let cache = response.extensions.get::<CacheStatus>().map(|c| c.as_str());
        // The usage reaches the note (and the exported span, which lives until the body is
        // sent); the credits are counted when the answer is complete.
        Ok(response.on_end(move |outcome| {
            if let Some(note) = &journal {
                note.ended(outcome, account.clone(), cache);
            }
            let Some(usage) = outcome.usage else {
                return;
            };
            if let (Some(credits), Some(account)) = (credits::of(&usage), &account) {
                counter.add(credits, account, &model_label, client.shared());
                if let Some(access) = &access {
                    access.credits(credits);
                }
            }
            if let Some(access) = &access {
                access.usage(
                    usage.input + usage.cache_read + usage.cache_write,
                    usage.output,
                );
            }
        }))
    }
}

/// What the console's journal needs of a request, taken when it starts.
struct JournalNote {
    journal: crate::telemetry::journal::Journal,
    started: Instant,
    prompt: Option<String>,
    model: Arc<str>,
    client: ClientKey,
    attempts: Attempts,
    stream: bool,
}

impl JournalNote {
    fn entry(&self) -> crate::telemetry::journal::Entry {
        crate::telemetry::journal::Entry {
            at_ms: crate::telemetry::journal::now_ms(),
            key: self.client.shared(),
            model: Arc::clone(&self.model),
            account: None,
            status: 200,
            error: None,
            attempts: u32::try_from(self.attempts.count()).unwrap_or(u32::MAX),
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            input_tokens: 0,
            output_tokens: 0,
            credits: 0.0,
            cache: None,
            stream: self.stream,
            prompt: self.prompt.clone(),
        }
    }

    /// The model tier refused or failed before the answer started.
    fn failed(&self, rejection: &Rejection) {
        self.journal.record(crate::telemetry::journal::Entry {
            status: rejection.status.as_u16(),
            error: Some(rejection.code.unwrap_or(rejection.kind)),
            ..self.entry()
        });
    }

    /// The answer ended (completed, failed mid-stream, or abandoned by the client).
    fn ended(
        &self,
        report: &aiproxy_layers::model::StreamReport,
        account: Option<Arc<str>>,
        cache: Option<&'static str>,
    ) {
        let usage = report.usage.unwrap_or_default();
        self.journal.record(crate::telemetry::journal::Entry {
            account,
            error: report.error_kind,
            input_tokens: usage.input + usage.cache_read + usage.cache_write,
            output_tokens: usage.output,
            credits: usage.credits,
            cache,
            ..self.entry()
        });
    }
}

/// The last user message's text (the console's request log, with `--console-log-bodies`),
/// cut to [`crate::telemetry::journal::PROMPT_CHARS`].
fn last_user_text(chat: &ChatRequest) -> Option<String> {
    let message = chat
        .messages
        .iter()
        .rev()
        .find(|m| m.role == crate::chat::Role::User)?;
    let text: String = message
        .parts
        .iter()
        .filter_map(|part| match part {
            crate::chat::Part::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
        .chars()
        .take(crate::telemetry::journal::PROMPT_CHARS)
        .collect();
    Some(text)
}

/// Drains a non-stream answer: the time it takes is the upstream's (the rest of the
/// generation), so it goes on the request's [`UpstreamClock`].
async fn drained<T>(
    extensions: &crate::model::Extensions,
    drain: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let out = drain.await;
    if let Some(clock) = extensions.get::<UpstreamClock>() {
        clock.add(started.elapsed());
    }
    out
}

// Names as constants: inserting by `&str` copies a non-standard name into a new buffer on
// every response.
const ACCOUNT_HEADER: HeaderName = HeaderName::from_static("x-aiproxy-account");
const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-aiproxy-attempts");
const CACHE_HEADER: HeaderName = HeaderName::from_static("x-aiproxy-cache");

/// Response headers (and, for the metrics layer, the upstream clock) from what the model
/// tier reported.
fn model_headers(response: &mut Response<ResponseBody>, extensions: &crate::model::Extensions) {
    if let Some(clock) = extensions.get::<UpstreamClock>() {
        response.extensions_mut().insert(clock.clone());
    }
    if let Some(AccountId(account)) = extensions.get::<AccountId>() {
        if let Ok(value) = HeaderValue::from_str(account) {
            response.headers_mut().insert(ACCOUNT_HEADER, value);
        }
    }
    if let Some(attempts) = extensions.get::<Attempts>() {
        response
            .headers_mut()
            .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts.count()));
    }
    if let Some(status) = extensions.get::<CacheStatus>() {
        response
            .headers_mut()
            .insert(CACHE_HEADER, HeaderValue::from_static(status.as_str()));
    }
    if let Some(limits) = extensions.get::<RateLimitStatus>() {
        for (name, value) in rate_limit_headers(limits) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// OpenAI's `x-ratelimit-*` headers for the client's buckets (the reset as OpenAI writes it:
/// `1s`, `6m0s`, `250ms`).
fn rate_limit_headers(limits: &RateLimitStatus) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(6);
    for (window, [limit, remaining, reset]) in [
        (limits.requests, RATE_LIMIT_REQUEST_HEADERS),
        (limits.tokens, RATE_LIMIT_TOKEN_HEADERS),
    ] {
        if let Some(window) = window {
            headers.push((
                HeaderName::from_static(limit),
                HeaderValue::from(window.limit),
            ));
            headers.push((
                HeaderName::from_static(remaining),
                HeaderValue::from(window.remaining),
            ));
            if let Ok(value) = HeaderValue::from_str(&reset_text(window.reset)) {
                headers.push((HeaderName::from_static(reset), value));
            }
        }
    }
    headers
}

const RATE_LIMIT_REQUEST_HEADERS: [&str; 3] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
];
const RATE_LIMIT_TOKEN_HEADERS: [&str; 3] = [
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// A reset time as OpenAI writes it: `20ms` under a second, else `1s`, `1m30s`, `1h2m3s`.
fn reset_text(reset: std::time::Duration) -> String {
    let ms = reset.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = reset.as_secs_f64().ceil() as u64;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// A header listing `names` (comma-separated), set only when there are any: the sampling
/// hints Kiro does not apply, the hosted tools left out.
fn list_header(
    response: &mut Response<ResponseBody>,
    header: &'static str,
    names: &[impl AsRef<str>],
) {
    if names.is_empty() {
        return;
    }
    let joined = names
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&joined) {
        response.headers_mut().insert(header, value);
    }
}

/// The conversation a request belongs to, for the pool's session affinity: an explicit
/// `x-aiproxy-session` header, else the session the client's metadata names (Claude Code's
/// `metadata.user_id`). Keyed per client, so two tenants' equal ids stay apart.
fn session_key(parts: &http::request::Parts, chat: &ChatRequest) -> Option<SessionKey> {
    let header = parts
        .headers
        .get("x-aiproxy-session")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let id = header.or(chat.metadata.conversation_id.as_deref())?;
    Some(SessionKey::of(&format!("{}\n{id}", chat.metadata.client)))
}

fn sse_response(chunks: crate::body::ChunkStream) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Stream(chunks));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A finished JSON answer, flagged when its usage figures are estimates, with the credits
/// it cost when the upstream said.
fn completed_response(body: Bytes, usage: &crate::chat::Usage) -> Response<ResponseBody> {
    let mut response = json_response(StatusCode::OK, body);
    if usage.estimated {
        response
            .headers_mut()
            .insert("x-aiproxy-usage", HeaderValue::from_static("estimated"));
    }
    if let Some(credits) = credits::header(usage) {
        response.headers_mut().insert(credits::HEADER, credits);
    }
    response
}

/// An API wire format: how its requests become a [`ChatRequest`] and how answers are encoded.
/// One generic handler ([`chat`]) serves every surface.
trait Surface {
    /// Per-request options that shape the answer, not the model call.
    type Options: Send + 'static;

    /// Parses a request body.
    fn parse(body: &[u8], metadata: Metadata) -> Result<(ChatRequest, Self::Options), ChatError>;

    /// Encodes a streamed answer.
    fn stream(events: ChatStream, model: &str, options: Self::Options) -> crate::body::ChunkStream;

    /// Drains and encodes a non-stream answer.
    fn complete(
        events: ChatStream,
        model: String,
        options: Self::Options,
    ) -> impl std::future::Future<Output = Result<collect::Completed, ChatError>> + Send;
}

/// `/v1/chat/completions`.
struct OpenAiSurface;

impl Surface for OpenAiSurface {
    type Options = openai::request::ResponseOptions;

    fn parse(body: &[u8], metadata: Metadata) -> Result<(ChatRequest, Self::Options), ChatError> {
        openai::request::parse(body, metadata)
    }

    fn stream(events: ChatStream, model: &str, options: Self::Options) -> crate::body::ChunkStream {
        openai::response::sse(events, model, options)
    }

    async fn complete(
        events: ChatStream,
        model: String,
        options: Self::Options,
    ) -> Result<collect::Completed, ChatError> {
        openai::response::complete(events, &model, options).await
    }
}

/// `/v1/messages`.
struct AnthropicSurface;

impl Surface for AnthropicSurface {
    type Options = ();

    fn parse(body: &[u8], metadata: Metadata) -> Result<(ChatRequest, ()), ChatError> {
        anthropic::request::parse(body, metadata, anthropic::request::Endpoint::Messages)
            .map(|chat| (chat, ()))
    }

    fn stream(events: ChatStream, model: &str, _: ()) -> crate::body::ChunkStream {
        anthropic::response::sse(events, model)
    }

    async fn complete(
        events: ChatStream,
        model: String,
        _: (),
    ) -> Result<collect::Completed, ChatError> {
        anthropic::response::complete(events, &model).await
    }
}

/// Read, parse, call the model tier, answer as a stream or as one JSON body.
async fn chat<S: Surface>(
    model: ModelTier,
    state: &ApiState,
    parts: &http::request::Parts,
    body: RequestBody,
) -> Result<Response<ResponseBody>, Rejection> {
    // `chat` in a block of its own: borrowed, it would keep its room in this future across
    // the model call, beside the call's own copy.
    let (called, stream, model_id, not_honoured, options) = {
        let (chat, options) = parsed_body(body, state, |b| S::parse(b, metadata(parts))).await?;
        let (stream, model_id) = (chat.stream, chat.model.clone());
        let not_honoured = chat.sampling.not_honoured.clone();
        let called = call_model(model, state, parts, chat);
        (called, stream, model_id, not_honoured, options)
    };
    let ModelResponse { events, extensions } = called.await?;
    let mut response = if stream {
        sse_response(S::stream(events, &model_id, options))
    } else {
        let done = drained(&extensions, S::complete(events, model_id, options))
            .await
            .map_err(|e| error::rejection(&e))?;
        completed_response(done.body, &done.usage)
    };
    model_headers(&mut response, &extensions);
    list_header(&mut response, "x-aiproxy-not-honoured", &not_honoured);
    Ok(response)
}

/// `POST /v1/completions`: one model call per prompt (see [`completions`]).
async fn legacy_completions(
    model: ModelTier,
    state: &ApiState,
    parts: &http::request::Parts,
    body: RequestBody,
) -> Result<Response<ResponseBody>, Rejection> {
    let parsed = parsed_body(body, state, |b| completions::parse(b, metadata(parts))).await?;
    let mut choices = Vec::with_capacity(parsed.chats.len());
    let mut last = None;
    let not_honoured = parsed
        .chats
        .first()
        .map(|c| c.sampling.not_honoured.clone())
        .unwrap_or_default();
    for (chat, prompt) in parsed.chats.into_iter().zip(&parsed.prompts) {
        let model_id = chat.model.clone();
        let ModelResponse { events, extensions } =
            call_model(model.clone(), state, parts, chat).await?;
        let echo = parsed.echo.then(|| prompt.clone());
        if parsed.stream {
            let mut response = sse_response(completions::sse(
                events,
                &model_id,
                echo,
                parsed.include_usage,
            ));
            model_headers(&mut response, &extensions);
            list_header(&mut response, "x-aiproxy-not-honoured", &not_honoured);
            return Ok(response);
        }
        let choice = drained(
            &extensions,
            completions::collect_choice(events, &model_id, echo.as_deref()),
        )
        .await
        .map_err(|e| error::rejection(&e))?;
        choices.push(choice);
        last = Some((model_id, extensions));
    }
    let Some((model_id, extensions)) = last else {
        return Err(error::rejection(&ChatError::invalid(
            "prompt",
            "`prompt` is empty.",
        )));
    };
    let usage = choices
        .iter()
        .fold(crate::chat::Usage::default(), |mut sum, c| {
            sum.estimated |= c.usage.estimated;
            sum.credits += c.usage.credits;
            sum
        });
    let mut response = completed_response(completions::body(&model_id, &choices), &usage);
    model_headers(&mut response, &extensions);
    list_header(&mut response, "x-aiproxy-not-honoured", &not_honoured);
    Ok(response)
}

/// Answered locally with the same estimator that fills in missing upstream usage.
async fn count_tokens(
    state: &ApiState,
    body: RequestBody,
) -> Result<Response<ResponseBody>, Rejection> {
    let chat = parsed_body(body, state, |b| {
        anthropic::request::parse(
            b,
            Metadata::default(),
            anthropic::request::Endpoint::CountTokens,
        )
    })
    .await?;
    if state.catalog.resolve(&chat.model).is_none() {
        return Err(error::rejection(&state.catalog.not_found(&chat.model)));
    }
    let tokens = crate::token_count::estimate_request(&chat);
    Ok(json_response(
        StatusCode::OK,
        json!({ "input_tokens": tokens }).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn route_labels_come_from_a_fixed_list_with_provider_prefixes_stripped() {
        assert_eq!(route_label("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(
            route_label("/kiro-api/v1/chat/completions"),
            "/v1/chat/completions"
        );
        assert_eq!(
            route_label("/v1/models/claude-sonnet-4-5"),
            "/v1/models/{id}"
        );
        assert_eq!(
            route_label("/v1/responses/resp_1/input_items"),
            "/v1/responses/{id}/input_items"
        );
        assert_eq!(route_label("/v1/responses/resp_1"), "/v1/responses/{id}");
        // Unknown providers and invented paths share one label.
        assert_eq!(route_label("/nope/v1/chat/completions"), "other");
        assert_eq!(route_label("/wp-admin/1"), "other");
    }
}
