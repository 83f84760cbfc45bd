//! The Kiro upstream `Service`, the leaf of the model tier: one account; a model-tier
//! request in, its event stream out.

use super::fake::FakeKiro;
use crate::chat::web_search::SearchQuery;
use crate::chat::{ChatError, ChatEvent, Thinking};
use crate::kiro::auth::account::Account;
use crate::kiro::auth::token_source::TokenSource;
use crate::kiro::protocol::errors;
use crate::kiro::protocol::overflow::Measure;
use crate::kiro::protocol::request::{self, BuildOptions};
use crate::kiro::protocol::stream::{chat_stream, ByteStream};
use crate::kiro::protocol::translate::Translator;
use crate::kiro::protocol::wire::HistoryEntry;
use crate::kiro::transport::http::{HttpUpstream, IdeHeaders, UpstreamResponse};
use crate::model::{AccountId, ModelRequest, ModelResponse, PromptTokens, ResolvedModel};
use crate::token_count;
use aiproxy_layers::metrics::UpstreamClock;
use aiproxy_layers::model::Attempts;
use aiproxy_layers::rate_limit::DeferredAdmission;
use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, Either};
use futures_util::StreamExt;
use http::{HeaderMap, Request, StatusCode};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tower::Service;

/// Error bodies larger than this are cut when read (they are only used for messages).
const MAX_ERROR_BODY: usize = 64 * 1024;
const CHAT_PATH: &str = "/generateAssistantResponse";

/// How requests reach Kiro.
#[derive(Clone, Debug)]
pub enum Transport {
    /// The built-in fake, in-process (mock mode).
    Fake(FakeKiro),
    /// Real HTTPS to Kiro (or to `aiproxy fake-kiro` in tests), with the URLs parsed once.
    /// (Boxed: the pooled client is large and the fake variant small.)
    Http(Box<HttpRoutes>),
}

/// The pooled client and the two URLs an account calls.
#[derive(Clone, Debug)]
pub struct HttpRoutes {
    http: HttpUpstream,
    chat: http::Uri,
    management: http::Uri,
    mcp: http::Uri,
}

/// Which of Kiro's endpoints a call goes to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// `generateAssistantResponse` on the API host.
    Chat,
    /// The AWS JSON 1.0 management endpoint (`ListAvailableModels`).
    Management,
    /// The MCP endpoint on the API host (web search, docs/kiro-protocol.md §14.1).
    Mcp,
}

impl Transport {
    /// One call; the future holds no more than the HTTP client's call (see
    /// `HttpUpstream::post`), and the fake answers before it is made.
    fn post(
        &self,
        target: Target,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl Future<Output = Result<UpstreamResponse, ChatError>> + Send + 'static {
        match self {
            Self::Fake(fake) => Either::Left(std::future::ready(Self::fake_post(
                fake, target, headers, body,
            ))),
            Self::Http(routes) => {
                let url = match target {
                    Target::Chat => &routes.chat,
                    Target::Management => &routes.management,
                    Target::Mcp => &routes.mcp,
                };
                Either::Right(routes.http.post(url.clone(), headers, body))
            }
        }
    }

    /// The in-process fake's answer (mock mode).
    fn fake_post(
        fake: &FakeKiro,
        target: Target,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, ChatError> {
        let path = match target {
            Target::Chat => CHAT_PATH,
            Target::Management => "/",
            Target::Mcp => crate::kiro::search::MCP_PATH,
        };
        let mut request = Request::post(path)
            .body(body)
            .map_err(|e| ChatError::Internal {
                message: format!("building the fake Kiro request failed: {e}"),
            })?;
        *request.headers_mut() = headers;
        let (parts, body) = fake.handle(request).into_parts();
        Ok(UpstreamResponse {
            status: parts.status,
            headers: parts.headers,
            body: Box::pin(body),
        })
    }

    /// `mock` or `live`, for `/health`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Fake(_) => "mock",
            Self::Http(_) => "live",
        }
    }
}

struct Shared {
    transport: Transport,
    tokens: Arc<dyn TokenSource>,
    account_id: AccountId,
    /// The account's IDE headers, built once.
    headers: IdeHeaders,
    /// The Kiro models the account listed last (`None` until it did).
    served: std::sync::RwLock<Option<Arc<std::collections::HashSet<String>>>>,
}

/// An account's concurrency shared with other replicas: a lease per upstream call, held
/// until its stream ends, so an account's `maxConcurrency` holds across all of them
/// (`crate::replicas` keeps the leases in Redis; this is the hook, so the Kiro service does
/// not depend on the replicas).
pub trait LeaseGate: Send + Sync + std::fmt::Debug {
    /// Waits for one of `account`'s `cap` slots, counted across the replicas; the slot is
    /// given back when the returned guard drops. An error when none came free in time, or
    /// when the shared state cannot be reached and the replicas are set to refuse then.
    ///
    /// `admission` is the request's rate-limit decision when it was left to the leaf: a
    /// gate that can decide it in the same round trip claims it (and a refusal is the
    /// error); what it leaves unclaimed the service decides alone.
    fn acquire(
        &self,
        account: Arc<str>,
        cap: usize,
        admission: Option<DeferredAdmission>,
    ) -> BoxFuture<'static, Result<Lease, ChatError>>;
}

/// A slot held through a [`LeaseGate`]: given back when dropped, or through
/// [`stream_ended`](LeaseGuard::stream_ended) when the call's answer ended.
pub trait LeaseGuard: Send + Sync {
    /// The answer streamed to its end: the gate may give the slot back with the request's
    /// last write (the token settlement). Dropping is the default.
    fn stream_ended(self: Box<Self>) {}
}

/// What an open-mode gate gives when the shared state is down: no slot to give back.
impl LeaseGuard for () {}

/// A slot held through a [`LeaseGate`].
pub type Lease = Box<dyn LeaseGuard>;

/// One Kiro account's upstream: the leaf of the model tier (see [`crate::model`]).
///
/// `poll_ready` reserves one of the account's concurrency slots (pending while all are in
/// use, never an error); the call's future resolves after the first upstream event, so its
/// error means nothing reached the client; the slot is held until the response stream ends.
pub struct KiroService {
    shared: Arc<Shared>,
    slots: PollSemaphore,
    reserved: Option<OwnedSemaphorePermit>,
    /// Replicas sharing state: the account's slots across all of them, and how many.
    leases: Option<(Arc<dyn LeaseGate>, usize)>,
}

impl Clone for KiroService {
    fn clone(&self) -> Self {
        // A reserved slot belongs to the clone that was polled ready, not to its copies.
        Self {
            shared: Arc::clone(&self.shared),
            slots: self.slots.clone(),
            reserved: None,
            leases: self.leases.clone(),
        }
    }
}

impl std::fmt::Debug for KiroService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KiroService")
            .field("mode", &self.shared.transport.mode())
            .field("account", &self.shared.tokens.name())
            .finish_non_exhaustive()
    }
}

impl KiroService {
    /// The in-process fake (mock mode), with a mock account.
    pub fn mock(fake: FakeKiro, tokens: Arc<dyn TokenSource>, max_concurrency: usize) -> Self {
        Self::build(Transport::Fake(fake), tokens, max_concurrency)
    }

    /// A real account over `http`. Fails when the account's API base is not a valid URL.
    pub fn live(
        http: HttpUpstream,
        account: Arc<Account>,
        max_concurrency: usize,
    ) -> Result<Self, String> {
        let endpoints = account.endpoints();
        // Parsed once here, not by the client on every request.
        let parse = |url: String| {
            url.parse::<http::Uri>()
                .ok()
                .filter(|uri| uri.host().is_some())
                .ok_or_else(|| format!("`{url}` is not a valid http(s) URL"))
        };
        let chat = parse(format!(
            "{}{CHAT_PATH}",
            endpoints.api_base.trim_end_matches('/')
        ))?;
        let management = parse(format!(
            "{}/",
            endpoints.management_base.trim_end_matches('/')
        ))?;
        let mcp = parse(format!(
            "{}{}",
            endpoints.api_base.trim_end_matches('/'),
            crate::kiro::search::MCP_PATH
        ))?;
        let routes = HttpRoutes {
            http,
            chat,
            management,
            mcp,
        };
        Ok(Self::build(
            Transport::Http(Box::new(routes)),
            account,
            max_concurrency,
        ))
    }

    fn build(transport: Transport, tokens: Arc<dyn TokenSource>, max_concurrency: usize) -> Self {
        let headers = IdeHeaders::new(tokens.machine_id());
        let account_id = AccountId(Arc::from(tokens.name()));
        Self {
            shared: Arc::new(Shared {
                transport,
                tokens,
                account_id,
                headers,
                served: Default::default(),
            }),
            slots: PollSemaphore::new(Arc::new(Semaphore::new(max_concurrency.max(1)))),
            reserved: None,
            leases: None,
        }
    }

    /// Also holds a lease from `gate` for each call: the account's `max_concurrency` then
    /// counts the calls of every replica sharing the gate.
    pub fn with_leases(mut self, gate: Arc<dyn LeaseGate>, max_concurrency: usize) -> Self {
        self.leases = Some((gate, max_concurrency.max(1)));
        self
    }

    /// `mock` or `live`.
    pub fn mode(&self) -> &'static str {
        self.shared.transport.mode()
    }
}

impl Service<ModelRequest> for KiroService {
    type Response = ModelResponse;
    type Error = ChatError;
    type Future = BoxFuture<'static, Result<ModelResponse, ChatError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.reserved.is_none() {
            // The semaphore is never closed, so `None` cannot happen; stay pending rather
            // than report an error from poll_ready.
            match self.slots.poll_acquire(cx) {
                Poll::Ready(Some(permit)) => self.reserved = Some(permit),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ModelRequest) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let slot = self.reserved.take();
        let leases = self.leases.clone();
        Box::pin(async move {
            let slot = slot.ok_or_else(|| ChatError::Internal {
                message: "the Kiro service was called without poll_ready".into(),
            })?;
            // The client's rate limit, when it was left to the leaf: decided before anything
            // goes upstream, in the lease's round trip when the account takes one.
            let admission = request.extensions.get::<DeferredAdmission>().cloned();
            let lease = match leases {
                Some((gate, cap)) => {
                    let account = shared.account_id.0.clone();
                    Some(gate.acquire(account, cap, admission.clone()).await?)
                }
                None => None,
            };
            if let Some(claim) = admission.as_ref().and_then(DeferredAdmission::claim) {
                claim.decide_alone::<ChatError>().await?;
            }
            let response = call(&shared, request).await?;
            let account = shared.account_id.0.clone();
            Ok(response.on_end(move |outcome| {
                drop(slot);
                if let Some(lease) = lease {
                    lease.stream_ended();
                }
                tracing::debug!(
                    account = %account,
                    error = outcome.error_kind,
                    duration_ms = outcome.duration.as_millis() as u64,
                    first_event_ms = outcome.time_to_first_event.map(|d| d.as_millis() as u64),
                    "upstream stream ended"
                );
            }))
        })
    }
}

/// Appended to the current message when Kiro answered an empty turn (docs/kiro-protocol.md
/// §13.2: resending the same request tends to come back empty again; a reminder fixes it).
const EMPTY_TURN_NUDGE: &str =
    "(Your previous reply was empty. Continue: answer the request above, or call a tool.)";

/// How this call differs from the plain request, from what the request's earlier attempts
/// ran into ([`Attempts`]): the retry layer sends the request again, the leaf adapts it.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Append the empty-turn reminder (an earlier attempt got an empty turn).
    nudge: bool,
    /// Replay signed reasoning natively (unless an earlier attempt had it refused).
    replay_signatures: bool,
}

impl Plan {
    fn of(request: &ModelRequest) -> Self {
        let attempts = request.extensions.get::<Attempts>();
        let earlier = |kind| attempts.is_some_and(|a| a.any_failed_with(kind));
        Self {
            nudge: earlier(ChatError::EMPTY_TURN),
            replay_signatures: !earlier(ChatError::SIGNATURE_REFUSED),
        }
    }
}

/// One upstream call. Every way it can fail that calls for another call (a rejected token,
/// an empty turn, a refused signature) is an error the retry layer sees and decides on
/// (docs/kiro-protocol.md §7, §13.1, §13.2), so one client request costs the upstream calls the
/// retry settings allow and no more.
async fn call(shared: &Shared, request: ModelRequest) -> Result<ModelResponse, ChatError> {
    if let Some(query) = request.extensions.get::<SearchQuery>() {
        return search::search(shared, &request, query).await;
    }
    // Checked before anything is sent: nothing goes out for a model the account lacks.
    if let Some(resolved) = request.extensions.get::<ResolvedModel>() {
        let kiro_model_id = &resolved.entry.kiro_model_id;
        if shared.refuses_model(kiro_model_id) {
            return Err(ChatError::NotServedHere {
                message: format!(
                    "Kiro account `{}` does not serve `{kiro_model_id}` (other accounts do)",
                    shared.tokens.name()
                ),
            });
        }
    }
    attempt(shared, &request, Plan::of(&request)).await
}

/// Kiro refused reasoning replayed from an earlier turn: the next attempt sends it inline.
fn signature_refused(account: &str) -> ChatError {
    tracing::info!(
        account,
        "Kiro refused a replayed reasoning signature; the next attempt sends the reasoning inline"
    );
    ChatError::SignatureRefused {
        message: "Kiro refused the signature of reasoning replayed from an earlier turn; \
                  resend the conversation without its signed thinking blocks"
            .into(),
    }
}

/// Kiro ended the turn with no text, tool call or reasoning; `nudged`: even though this call
/// carried the reminder.
fn empty_turn(account: &str, nudged: bool) -> ChatError {
    tracing::info!(account, nudged, "Kiro answered an empty turn");
    ChatError::EmptyTurn {
        message: if nudged {
            "Kiro answered an empty turn (no text, no tool call, no reasoning) even after a \
             continuation reminder; retry the request or rephrase the last message"
                .into()
        } else {
            "Kiro answered an empty turn (no text, no tool call, no reasoning); retry the request"
                .into()
        },
        nudged,
    }
}

async fn attempt(
    shared: &Shared,
    request: &ModelRequest,
    plan: Plan,
) -> Result<ModelResponse, ChatError> {
    let resolved =
        request
            .extensions
            .get::<ResolvedModel>()
            .ok_or_else(|| ChatError::Internal {
                message: "the model tier has no model resolution above the Kiro service".into(),
            })?;
    // Boxed: a request's future keeps room for what it holds across an await, and only a
    // retry after an empty turn has a nudged copy.
    let nudged_chat = plan
        .nudge
        .then(|| Box::new(request.chat.with_reminder(EMPTY_TURN_NUDGE)));
    let chat = nudged_chat.as_deref().unwrap_or(&*request.chat);
    let model = &resolved.entry;
    let thinking = chat
        .thinking
        .or(resolved.thinking_suffix.then_some(Thinking::Enabled {
            budget_tokens: crate::kiro::protocol::thinking::DEFAULT_BUDGET,
        }));
    let tokens = &shared.tokens;
    // Waits on the token endpoint and on Kiro's first event, for the overhead metric.
    let clock = request.extensions.get::<UpstreamClock>();
    let waited = Instant::now();
    let token = tokens.token().await?;
    if let Some(clock) = clock {
        clock.add(waited.elapsed());
    }
    let conversation_id = chat
        .metadata
        .conversation_id
        .clone()
        .unwrap_or_else(crate::chat::random_uuid);
    // The Kiro request in a block of its own: only its bytes and what the answer needs
    // outlive it (its room is not kept across the call).
    let (body, tool_names, native_reasoning, replayed_signatures) = {
        let built = request::build(
            chat,
            &BuildOptions {
                kiro_model_id: &model.kiro_model_id,
                profile_arn: token.profile_arn.as_deref(),
                conversation_id,
                thinking,
                reasoning: model.capabilities.reasoning.as_ref(),
                replay_signatures: plan.replay_signatures,
                native_max_tokens: chat
                    .sampling
                    .max_tokens
                    .filter(|_| model.capabilities.native_max_tokens),
                prompt_caching: model.capabilities.prompt_caching.as_ref(),
            },
        );
        let replayed_signatures = built.body.conversation_state.history.iter().any(|entry| {
        matches!(entry, HistoryEntry::AssistantResponseMessage(m) if m.reasoning_content.is_some())
    });
        let body =
            Bytes::from(
                serde_json::to_vec(&built.body).map_err(|e| ChatError::Internal {
                    message: format!("serialising the Kiro request failed: {e}"),
                })?,
            );
        (
            body,
            built.tool_names,
            built.native_reasoning,
            replayed_signatures,
        )
    };
    // Counted once above (emulate) for the request as it came; a nudged one is counted anew.
    let input_estimate = match request.extensions.get::<PromptTokens>() {
        Some(tokens) if nudged_chat.is_none() => tokens.0,
        _ => token_count::estimate_request(chat),
    };
    let measure = Measure::new(input_estimate, model.context_window, &body);
    measure.check()?;
    let waited = Instant::now();
    let answer = async {
        let response = shared
            .transport
            .post(Target::Chat, shared.headers.for_call(&token), body)
            .await?;
        if matches!(
            response.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(refused(tokens.as_ref(), &token, response).await);
        }
        if !response.status.is_success() {
            let error_body = read_bounded(response.body, MAX_ERROR_BODY).await;
            if errors::is_context_overflow(response.status, &error_body) {
                return Err(measure.upstream_error());
            }
            if replayed_signatures && errors::is_signature_invalid(response.status, &error_body) {
                return Err(signature_refused(tokens.name()));
            }
            return Err(failure(
                tokens.as_ref(),
                &token,
                response.status,
                &response.headers,
                &error_body,
            ));
        }
        let translator = Translator::new(tool_names, input_estimate, model.context_window)
            .with_thinking(thinking.is_some() && !native_reasoning);
        let mut events = chat_stream(response.body, translator);
        // Resolve only once the upstream has said something: a failure before that is the
        // future's error, so nothing reached the client and a retry is safe. Usage figures
        // may come first; a stop before any content is an empty turn.
        let mut prelude = Vec::with_capacity(2);
        loop {
            match events.next().await {
                Some(Ok(usage @ ChatEvent::Usage(_))) => prelude.push(usage),
                Some(Ok(ChatEvent::Stop(_))) => return Err(empty_turn(tokens.name(), plan.nudge)),
                Some(Ok(event)) => {
                    prelude.push(event);
                    break;
                }
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(ChatError::Truncated {
                        message:
                            "the upstream stream ended before its first event; retry the request"
                                .into(),
                    })
                }
            }
        }
        let start = ChatEvent::Start {
            id: Arc::from(crate::chat::random_id("msg_")),
            model: Arc::from(request.chat.model.as_str()),
            input_tokens: input_estimate,
        };
        let head: Vec<Result<ChatEvent, ChatError>> =
            std::iter::once(start).chain(prelude).map(Ok).collect();
        let events = futures_util::stream::iter(head).chain(events);
        let mut response = ModelResponse::new(Box::pin(events));
        response.extensions.insert(shared.account_id.clone());
        Ok(response)
    }
    .await;
    if let Some(clock) = clock {
        clock.add(waited.elapsed());
    }
    answer
}

/// Kiro's 401/403 answer to a call: a rejected access token is refreshed for the next
/// attempt ([`ChatError::TokenRejected`], or the refresh's own failure); anything else is
/// classified by [`failure`].
async fn refused(
    tokens: &dyn TokenSource,
    token: &crate::kiro::auth::account::AccessToken,
    response: UpstreamResponse,
) -> ChatError {
    let error_body = read_bounded(response.body, MAX_ERROR_BODY).await;
    if !errors::is_bearer_invalid(response.status, &error_body) {
        return failure(
            tokens,
            token,
            response.status,
            &response.headers,
            &error_body,
        );
    }
    tracing::info!(
        account = tokens.name(),
        "Kiro rejected the access token; refreshing it for the next attempt"
    );
    // A failed refresh (a revoked refresh token) is the answer; a good one is the next
    // attempt's token, on this account.
    if let Err(error) = tokens.token_after_rejection(&token.token).await {
        return error;
    }
    ChatError::TokenRejected {
        message: format!(
            "Kiro rejected the access token of account `{}`; it has been refreshed. \
             Retry the request.",
            tokens.name()
        ),
    }
}

/// Classifies an upstream failure, naming the account when the account is the problem,
/// with the bearer token cut out of whatever Kiro's message repeats (an upstream that
/// reflects its input must not hand it to a client). A suspension or an unexplained 403 is
/// not made permanent here: the pool's breaker rests the account and re-checks it
/// (docs/kiro-protocol.md §7.1 says "temporarily").
fn failure(
    tokens: &dyn TokenSource,
    token: &crate::kiro::auth::account::AccessToken,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ChatError {
    // Scrubbed before it is read, so no message built from it can carry the token.
    let body =
        crate::kiro::auth::account::scrub(&String::from_utf8_lossy(body), &[token.token.expose()]);
    match errors::classify(status, headers, body.as_bytes()) {
        ChatError::AccountUnavailable { message } => ChatError::AccountUnavailable {
            message: format!("Kiro account `{}`: {message}", tokens.name()),
        },
        other => other,
    }
}

async fn read_bounded(mut body: ByteStream, limit: usize) -> Bytes {
    let mut out = BytesMut::new();
    while let Some(Ok(chunk)) = body.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out.freeze()
}

mod listing;
mod search;
#[cfg(test)]
mod tests;
