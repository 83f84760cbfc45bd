//! A wire-level fake of Kiro, in-process (mock mode) or on a socket (`aiproxy fake-kiro`).
//!
//! It checks request bodies the way the real service does (docs/kiro-protocol.md §4.3), answers
//! with real event-stream bytes, issues and rotates tokens like the three refresh endpoints,
//! and can be scripted to fail in every way Kiro does (see [`script::Step`]). The default
//! answer is deterministic: the current user message echoed back, one event per word (a turn
//! carrying tool results is answered `Received tool results: id=text (status); ...`; a
//! request with thinking tags gets `<thinking>Thinking about: …</thinking>` first).
//!
//! | route | what it does |
//! |---|---|
//! | `POST /generateAssistantResponse` | the chat call (bearer checked when tokens are checked) |
//! | `POST /refreshToken` | social refresh: `{refreshToken}` -> `{accessToken, refreshToken, expiresIn, profileArn}` |
//! | `POST /token` | IdC refresh: `{clientId, clientSecret, refreshToken, grantType}` -> camelCase; with the device-code grant, the device flow's poll ([`signin`]) |
//! | `POST /client/register`, `POST /device_authorization` | the SSO-OIDC device flow's first two steps (§14.3) |
//! | `POST /__fake/device` | `{"answers": ["pending", "slow_down", "denied", "expired"], "interval": s}`: the next device-code polls' answers |
//! | `GET /signin` | the social sign-in page: checks the PKCE request, redirects to the local callback with a code |
//! | `POST /oauth/token` | OAuth2 refresh (form) -> `{access_token, refresh_token, expires_in}`; as JSON `{code, code_verifier, redirect_uri}`, the social sign-in's code exchange |
//! | `POST /idp/token` | an external identity provider's refresh (form, public client: `client_id`, no secret) -> snake_case; its access tokens need `TokenType: EXTERNAL_IDP` |
//! | `GET /getUsageLimits`, `GET /ListAvailableModels` | the shapes of §8.2 / §8.3 |
//! | `POST /` with `x-amz-target: …ListAvailableModels` | §13.3: needs `profileArn`, pages of 4 with `nextToken` |
//! | `POST /` with `x-amz-target: …ListAvailableProfiles` | §14.2: the profiles the bearer may use (one by default) |
//! | `POST /__fake/profiles` | a JSON array: what `ListAvailableProfiles` lists from now on |
//! | `POST /__fake/revoke-api-key` | `{"key": "ksk_..."}`: Kiro refuses that API key from now on |
//! | `POST /__fake/models` | `{"add": entry}` or `{"remove": "id"}`: change what the fake serves (a chat call for a model it does not serve gets `Invalid model ID`) |
//! | `POST /__fake/script` | queue steps (a JSON object or array) for the next chat calls |
//! | `POST /mcp` | web search (§14.1): JSON-RPC `tools/call` of `web_search`, checked like the chat call; three results per query |
//! | `POST /__fake/search` | queue [`search::SearchStep`]s (a JSON object or array) for the next searches |
//! | `GET /__fake/stats` | call counters, the last IDE headers seen, peak concurrency |
//! | `POST /__fake/expire-tokens` | invalidate every issued access token |
//! | `POST /__fake/refresh-delay` | `{"ms": n}`: every token refresh is held this long before it is processed (a client that goes away meanwhile never reaches it: the refresh token is not consumed) |
//! | `POST /__fake/usage` | `{currentUsage, usageLimit}` that `getUsageLimits` reports from now on |

pub mod models;
pub mod reasoning;
mod required;
pub mod script;
pub mod search;
pub mod server;
pub mod signin;
pub mod tokens;
mod validate;

pub use validate::validate;

use crate::kiro::protocol::wire::{
    weighted_payload_size, HistoryEntry, KiroRequest, MAX_WEIGHTED_PAYLOAD,
};
use bytes::Bytes;
use futures_util::Stream;
use http::{header, Method, Request, Response, StatusCode};
use script::Step;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

/// Profile ARN the fake hands out with social refreshes.
pub const FAKE_PROFILE_ARN: &str =
    "arn:aws:codewhisperer:us-east-1:000000000000:profile/FAKEPROFILE";

/// Counters and last-seen values, served at `/__fake/stats`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Successful and failed refresh calls, all flavours.
    pub refresh_calls: u64,
    /// `invalid_grant` answers.
    pub invalid_grants: u64,
    /// When the last successful refresh was answered (the old refresh token consumed), in
    /// microseconds since the Unix epoch: lets a crash test tell whether a process it killed
    /// could have had the answer.
    pub last_refresh_answered_us: Option<u64>,
    /// Chat calls.
    pub generate_calls: u64,
    /// Chat calls refused for a bad or expired bearer token.
    pub rejected_tokens: u64,
    /// Chat calls refused because the body broke one of Kiro's rules (§4.3, §13.1): a
    /// client test that must stay within them asserts this stays 0.
    pub rejected_requests: u64,
    /// Which rule the last refused body broke.
    pub last_violation: Option<String>,
    /// `getUsageLimits` calls (the health probe's).
    pub usage_calls: u64,
    /// `ListAvailableModels` pages served (the catalog refresh's).
    pub list_models_calls: u64,
    /// Most chat calls streaming at once.
    pub peak_concurrent_generates: usize,
    /// Chat streams the client closed before their last frame (aiproxy ending an answer
    /// early at a stop sequence or `max_tokens` closes the upstream this way).
    pub abandoned_streams: u64,
    /// `user-agent` of the last chat call.
    pub last_user_agent: Option<String>,
    /// `x-amz-user-agent` of the last chat call.
    pub last_x_amz_user_agent: Option<String>,
    /// The HTTP version of the last chat call (`HTTP/2.0` over TLS when ALPN chose h2).
    pub last_http_version: Option<String>,
    /// Most accounts (distinct machine ids of `x-amz-user-agent`) whose calls came on one
    /// connection: Kiro can link accounts that share a connection.
    pub most_accounts_on_one_connection: usize,
    /// `profileArn` of the last chat call.
    pub last_profile_arn: Option<String>,
    /// `modelId` of the last chat call.
    pub last_model_id: Option<String>,
    /// `additionalModelRequestFields` of the last chat call (native reasoning, §13.1).
    pub last_additional_fields: Option<Value>,
    /// `cachePoint` entries of the last chat call's tools.
    pub last_cache_points: usize,
    /// Replayed reasoning blocks whose signature verified.
    pub signatures_verified: u64,
    /// Chat calls refused for a replayed reasoning signature that did not verify.
    pub signatures_refused: u64,
    /// Web searches answered (`/mcp`), failures included.
    pub search_calls: u64,
    /// The query of the last web search.
    pub last_search_query: Option<String>,
    /// `ListAvailableProfiles` calls.
    pub list_profiles_calls: u64,
    /// Calls made with a Kiro API key (`tokentype: API_KEY`).
    pub api_key_calls: u64,
    /// Device-code polls (`POST /token` with the device-code grant), answered or not.
    pub device_polls: u64,
    /// Sign-ins completed (device flow approvals and social code exchanges).
    pub signins: u64,
}

#[derive(Debug)]
struct State {
    tokens: tokens::Tokens,
    script: VecDeque<Step>,
    search_script: VecDeque<search::SearchStep>,
    /// What `ListAvailableProfiles` lists.
    profiles: Vec<Value>,
    /// API keys Kiro refuses.
    revoked_keys: std::collections::HashSet<String>,
    /// Prompt prefixes cached so far (their hashes).
    cached_prefixes: std::collections::HashSet<[u8; 32]>,
    stats: Stats,
    /// Credits used and the limit `getUsageLimits` reports (default 12.5 of 1000).
    usage: Option<(f64, f64)>,
    /// The `ListAvailableModels` entries: what the fake serves.
    models: Vec<Value>,
    /// Sign-in flows in progress.
    signin: signin::SignIn,
    /// How long a token refresh is held before it is processed.
    refresh_delay: Duration,
    /// The accounts (machine ids in `x-amz-user-agent`) seen on each connection.
    accounts_by_connection: std::collections::HashMap<u64, std::collections::HashSet<String>>,
}

impl State {
    /// Counts the account of machine id `machine` on `connection`.
    fn note_account_on(&mut self, connection: u64, machine: String) {
        // Bounded: a long run opens many connections; the peak is kept in the stats.
        if self.accounts_by_connection.len() >= 10_000 {
            self.accounts_by_connection.clear();
        }
        let seen = self.accounts_by_connection.entry(connection).or_default();
        seen.insert(machine);
        let most = &mut self.stats.most_accounts_on_one_connection;
        *most = (*most).max(seen.len());
    }
}

impl Default for State {
    fn default() -> Self {
        Self {
            tokens: Default::default(),
            script: Default::default(),
            search_script: Default::default(),
            profiles: vec![json!({"arn": FAKE_PROFILE_ARN, "profileName": "fake-profile"})],
            revoked_keys: Default::default(),
            cached_prefixes: Default::default(),
            stats: Default::default(),
            accounts_by_connection: Default::default(),
            usage: None,
            models: models::default_models(),
            refresh_delay: Duration::ZERO,
            signin: signin::SignIn::default(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    event_delay: Duration,
    check_tokens: bool,
    token_ttl: Duration,
    state: Mutex<State>,
    streaming: AtomicUsize,
}

/// The fake service. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct FakeKiro {
    inner: Arc<Inner>,
}

impl Default for FakeKiro {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeKiro {
    /// The in-process fake of mock mode: no token checks, no delays.
    pub fn new() -> Self {
        Self::build(Duration::ZERO, false, Duration::from_secs(3600))
    }

    /// The fake as a server: tokens are issued and checked.
    pub fn server(token_ttl: Duration, event_delay: Duration) -> Self {
        Self::build(event_delay, true, token_ttl)
    }

    fn build(event_delay: Duration, check_tokens: bool, token_ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                event_delay,
                check_tokens,
                token_ttl,
                state: Mutex::new(State::default()),
                streaming: AtomicUsize::new(0),
            }),
        }
    }

    /// Waits this long before each write (slow-stream tests, benchmarks).
    pub fn with_event_delay(self, delay: Duration) -> Self {
        Self::build(delay, self.inner.check_tokens, self.inner.token_ttl)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the account of a call that names one (the machine id ending the IDE's
    /// `x-amz-user-agent`: chat, REST and usage calls) on the connection it came on.
    fn note_account(&self, request: &Request<Bytes>) {
        let Some(served) = request
            .extensions()
            .get::<crate::server::tracked::ServedOn>()
        else {
            return;
        };
        let machine = request
            .headers()
            .get("x-amz-user-agent")
            .and_then(|v| v.to_str().ok())
            .and_then(|agent| agent.rsplit_once('-'))
            .map(|(_, machine)| machine)
            .filter(|machine| machine.len() == 64);
        if let Some(machine) = machine {
            self.lock()
                .note_account_on(served.connection, machine.to_owned());
        }
    }

    /// A copy of the counters.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Queues steps for the next chat calls.
    pub fn push_script(&self, steps: impl IntoIterator<Item = Step>) {
        self.lock().script.extend(steps);
    }

    /// Answers one HTTP request.
    pub fn handle(&self, request: Request<Bytes>) -> Response<FrameStream> {
        self.note_account(&request);
        if let Some(flavour) = refresh_flavour(&request) {
            return self.refresh(request.body(), flavour);
        }
        let path = request.uri().path().to_owned();
        match (request.method(), path.as_str()) {
            (&Method::POST, "/generateAssistantResponse") => self.generate(&request),
            (&Method::POST, "/token") if signin::is_device_poll(request.body()) => {
                let answer = {
                    let mut state = self.lock();
                    state.stats.device_polls += 1;
                    state.signin.poll(request.body())
                };
                self.signed_in(answer, Flavour::Idc)
            }
            (&Method::POST, "/client/register") => {
                let answer = self.lock().signin.register(request.body());
                self.signed_in(answer, Flavour::Idc)
            }
            (&Method::POST, "/device_authorization") => {
                let base = own_url(&request);
                let answer = self.lock().signin.authorize(request.body(), &base);
                self.signed_in(answer, Flavour::Idc)
            }
            (&Method::POST, "/__fake/device") => {
                match serde_json::from_slice::<signin::DeviceScript>(request.body()) {
                    Ok(script) => {
                        self.lock().signin.script(script);
                        json_response(StatusCode::OK, json!({"scripted": true}))
                    }
                    Err(error) => json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"message": format!("bad device script: {error}")}),
                    ),
                }
            }
            (&Method::GET, "/signin") => {
                let answer = self
                    .lock()
                    .signin
                    .signin(request.uri().query().unwrap_or_default());
                self.signed_in(answer, Flavour::Social)
            }
            (&Method::POST, "/oauth/token") if request.body().starts_with(b"{") => {
                let agent = request
                    .headers()
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok());
                let answer = self.lock().signin.exchange(request.body(), agent);
                self.signed_in(answer, Flavour::Social)
            }
            (&Method::GET, "/getUsageLimits") => self.usage_limits(&request),
            (&Method::POST, "/__fake/usage") => self.set_usage(request.body()),
            (&Method::POST, "/") => self.management(&request),
            (&Method::GET, "/ListAvailableModels") => self.ide_model_list(&request),
            (&Method::POST, "/__fake/models") => self.change_models(request.body()),
            (&Method::POST, "/__fake/script") => self.script(request.body()),
            (&Method::POST, crate::kiro::search::MCP_PATH) => self.search(&request),
            (&Method::POST, "/__fake/search") => self.search_script(request.body()),
            (&Method::POST, "/__fake/profiles") => self.set_profiles(request.body()),
            (&Method::POST, "/__fake/revoke-api-key") => self.revoke_api_key(request.body()),
            (&Method::GET, "/__fake/stats") => json_response(
                StatusCode::OK,
                serde_json::to_value(self.stats()).unwrap_or_default(),
            ),
            (&Method::POST, "/__fake/refresh-delay") => {
                match serde_json::from_slice::<Value>(request.body())
                    .ok()
                    .and_then(|v| v["ms"].as_u64())
                {
                    Some(ms) => {
                        self.lock().refresh_delay = Duration::from_millis(ms);
                        json_response(StatusCode::OK, json!({"refresh_delay_ms": ms}))
                    }
                    None => json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"message": "send {\"ms\": n}: how long to hold each token refresh"}),
                    ),
                }
            }
            (&Method::POST, "/__fake/expire-tokens") => {
                self.lock().tokens.expire_all();
                json_response(StatusCode::OK, json!({"expired": true}))
            }
            (method, path) => json_response(
                StatusCode::NOT_FOUND,
                json!({"message": format!("fake Kiro has no route {method} {path}")}),
            ),
        }
    }

    /// How long to hold `request` before [`FakeKiro::handle`] answers it: the scripted
    /// refresh delay for a token refresh, nothing for the rest.
    pub fn hold(&self, request: &Request<Bytes>) -> Duration {
        if refresh_flavour(request).is_some() {
            self.lock().refresh_delay
        } else {
            Duration::ZERO
        }
    }

    /// Whether the request's bearer token is one this fake issued (always, when tokens are
    /// not checked).
    fn bearer_valid(&self, request: &Request<Bytes>) -> bool {
        if !self.inner.check_tokens {
            return true;
        }
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let token_type = request
            .headers()
            .get("tokentype")
            .map(|v| v.to_str().unwrap_or_default().to_ascii_uppercase());
        let api_key = token_type.as_deref() == Some("API_KEY");
        let external = token_type.as_deref() == Some("EXTERNAL_IDP");
        let mut state = self.lock();
        match bearer {
            // A Kiro API key (§14.2): valid with its header, until revoked.
            Some(key) if key.starts_with("ksk_") => {
                state.stats.api_key_calls += u64::from(api_key);
                api_key && !state.revoked_keys.contains(key)
            }
            // An external identity provider's token goes with its header, and only it.
            Some(token) => {
                !api_key
                    && external == state.tokens.is_external(token)
                    && state.tokens.is_valid(token)
            }
            None => false,
        }
    }

    /// Kiro's bearer-invalid 403 when the request's token is not one this fake issued
    /// (counted in `rejected_tokens`).
    fn refuse_stale_bearer(&self, request: &Request<Bytes>) -> Option<Response<FrameStream>> {
        if self.bearer_valid(request) {
            return None;
        }
        self.lock().stats.rejected_tokens += 1;
        Some(error_response(&Step {
            status: Some(403),
            ..Step::default()
        }))
    }

    /// Kiro's web search (§14.1): a scripted step, else the query's three results.
    fn search(&self, request: &Request<Bytes>) -> Response<FrameStream> {
        let step = {
            let mut state = self.lock();
            state.stats.search_calls += 1;
            state.search_script.pop_front().unwrap_or_default()
        };
        if let Some(refused) = self.refuse_stale_bearer(request) {
            return refused;
        }
        let (id, query) = match search::check(request.headers(), request.body()) {
            Ok(call) => call,
            Err(violation) => {
                let mut state = self.lock();
                state.stats.rejected_requests += 1;
                state.stats.last_violation = Some(violation.clone());
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"message": violation, "reason": "INVALID_REQUEST"}),
                );
            }
        };
        self.lock().stats.last_search_query = Some(query.clone());
        if let Some(status) = step.status {
            return error_response(&Step {
                status: Some(status),
                retry_after: (status == 429).then_some(1),
                ..Step::default()
            });
        }
        let delay = Duration::from_millis(step.delay_ms.unwrap_or(0));
        let body = search::answer(id, &query, &step);
        let frames = VecDeque::from([Bytes::from(body.to_string())]);
        let mut response = Response::new(FrameStream::new(frames, delay));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        response
    }

    fn set_profiles(&self, body: &[u8]) -> Response<FrameStream> {
        match serde_json::from_slice::<Vec<Value>>(body) {
            Ok(profiles) => {
                self.lock().profiles = profiles;
                json_response(StatusCode::OK, json!({"set": true}))
            }
            Err(error) => json_response(
                StatusCode::BAD_REQUEST,
                json!({"message": format!("expected a JSON array of profiles: {error}")}),
            ),
        }
    }

    fn revoke_api_key(&self, body: &[u8]) -> Response<FrameStream> {
        let key = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("key").and_then(Value::as_str).map(str::to_owned));
        match key {
            Some(key) => {
                self.lock().revoked_keys.insert(key);
                json_response(StatusCode::OK, json!({"revoked": true}))
            }
            None => json_response(
                StatusCode::BAD_REQUEST,
                json!({"message": "send {\"key\": \"ksk_...\"}"}),
            ),
        }
    }

    fn search_script(&self, body: &[u8]) -> Response<FrameStream> {
        queue(body, "invalid search step", |steps| {
            self.lock().search_script.extend(steps)
        })
    }

    fn usage_limits(&self, request: &Request<Bytes>) -> Response<FrameStream> {
        if let Some(refused) = self.refuse_stale_bearer(request) {
            return refused;
        }
        let mut state = self.lock();
        state.stats.usage_calls += 1;
        let (used, limit) = state.usage.unwrap_or((12.5, 1000.0));
        json_response(StatusCode::OK, usage_limits(used, limit))
    }

    /// The AWS JSON 1.0 management endpoint: `ListAvailableModels` (§13.3), paged.
    fn management(&self, request: &Request<Bytes>) -> Response<FrameStream> {
        let target = request
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok());
        if target == Some(crate::kiro::auth::account::LIST_PROFILES_TARGET) {
            if let Some(refused) = self.refuse_stale_bearer(request) {
                return refused;
            }
            let mut state = self.lock();
            state.stats.list_profiles_calls += 1;
            return json_response(
                StatusCode::OK,
                json!({ "profiles": state.profiles.clone() }),
            );
        }
        if target != Some(models::TARGET) {
            let message = format!("fake Kiro has no operation {target:?} (x-amz-target)");
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"__type": "UnknownOperationException", "message": message}),
            );
        }
        if let Some(refused) = self.refuse_stale_bearer(request) {
            return refused;
        }
        let mut state = self.lock();
        state.stats.list_models_calls += 1;
        match models::page(&state.models, request.body()) {
            Ok(page) => json_response(StatusCode::OK, page),
            Err(error) => json_response(StatusCode::BAD_REQUEST, error),
        }
    }

    /// The IDE persona's unpaged `GET /ListAvailableModels` (§8.3).
    fn ide_model_list(&self, request: &Request<Bytes>) -> Response<FrameStream> {
        if let Some(refused) = self.refuse_stale_bearer(request) {
            return refused;
        }
        let models = self.lock().models.clone();
        json_response(StatusCode::OK, json!({ "models": models }))
    }

    fn change_models(&self, body: &[u8]) -> Response<FrameStream> {
        let mut state = self.lock();
        match models::change(&mut state.models, body) {
            Ok(()) => {
                let ids: Vec<&Value> = state.models.iter().map(|m| &m["modelId"]).collect();
                json_response(StatusCode::OK, json!({ "models": ids }))
            }
            Err(message) => json_response(StatusCode::BAD_REQUEST, json!({ "message": message })),
        }
    }

    fn set_usage(&self, body: &[u8]) -> Response<FrameStream> {
        let parsed: Result<Value, _> = serde_json::from_slice(body);
        let field = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64);
        match parsed {
            Ok(v) => match (field(&v, "currentUsage"), field(&v, "usageLimit")) {
                (Some(used), Some(limit)) => {
                    self.lock().usage = Some((used, limit));
                    json_response(
                        StatusCode::OK,
                        json!({"currentUsage": used, "usageLimit": limit}),
                    )
                }
                _ => json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "send {\"currentUsage\": N, \"usageLimit\": M}"}),
                ),
            },
            Err(e) => json_response(StatusCode::BAD_REQUEST, json!({"message": e.to_string()})),
        }
    }

    /// The prompt cache (§13.1): the prefix up to the last `cachePoint` (the tools before
    /// it and the first user turn, which carries the system prompt) is written the first
    /// time and read after that. Returns (read, written) tokens.
    fn prompt_cache(&self, request: &KiroRequest) -> (u64, u64) {
        let tools = request
            .conversation_state
            .current_message
            .user_input_message
            .tools();
        let Some(last) = tools.iter().rposition(|t| t.spec().is_none()) else {
            return (0, 0);
        };
        let prefix =
            serde_json::to_vec(&(&tools[..last], request.first_user_content())).unwrap_or_default();
        let tokens = (prefix.len() as u64).div_ceil(4);
        let key = *blake3::hash(&prefix).as_bytes();
        let mut state = self.lock();
        if state.cached_prefixes.insert(key) {
            (0, tokens)
        } else {
            (tokens, 0)
        }
    }

    /// Native reasoning's checks (§13.1): the fields against the model's schema, then the
    /// signatures of replayed reasoning. `Err`: Kiro's 400.
    fn check_reasoning(
        &self,
        request: &KiroRequest,
        model_id: &str,
    ) -> Result<Option<reasoning::Native>, Box<Response<FrameStream>>> {
        let mut state = self.lock();
        if let Err(message) = check_cache_points(request, &state.models, model_id) {
            state.stats.rejected_requests += 1;
            state.stats.last_violation = Some(message.clone());
            return Err(Box::new(json_response(
                StatusCode::BAD_REQUEST,
                json!({"message": message, "reason": "INVALID_CACHE_POINT"}),
            )));
        }
        let native = match &request.additional_model_request_fields {
            None => None,
            Some(fields) => {
                let model = models::served(&state.models, model_id)
                    .cloned()
                    .unwrap_or_default();
                match reasoning::check(fields, &model) {
                    Ok(native) => native,
                    Err(message) => {
                        state.stats.rejected_requests += 1;
                        state.stats.last_violation = Some(message.clone());
                        return Err(Box::new(json_response(
                            StatusCode::BAD_REQUEST,
                            reasoning::refused(message),
                        )));
                    }
                }
            }
        };
        match reasoning::check_signatures(request) {
            Ok(verified) => state.stats.signatures_verified += verified as u64,
            Err(body) => {
                state.stats.signatures_refused += 1;
                return Err(Box::new(json_response(StatusCode::BAD_REQUEST, body)));
            }
        }
        Ok(native)
    }

    fn script(&self, body: &[u8]) -> Response<FrameStream> {
        queue(body, "bad script", |steps: Vec<Step>| {
            self.push_script(steps)
        })
    }

    /// A sign-in endpoint's answer; an approval issues a fresh pair of tokens, answered in
    /// the shape of `flavour`'s refresh.
    fn signed_in(&self, answer: signin::Answer, flavour: Flavour) -> Response<FrameStream> {
        match answer {
            signin::Answer::Json(status, body) => json_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                body,
            ),
            signin::Answer::Redirect(location) => {
                let mut response = json_response(StatusCode::FOUND, json!({}));
                if let Ok(value) = header::HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                response
            }
            signin::Answer::Approved => {
                let issued = {
                    let mut state = self.lock();
                    state.stats.signins += 1;
                    state.tokens.issue(self.inner.token_ttl)
                };
                json_response(StatusCode::OK, self.token_answer(&issued, flavour))
            }
        }
    }

    /// A token endpoint's answer for `issued`, in `flavour`'s shape.
    fn token_answer(&self, issued: &tokens::Issued, flavour: Flavour) -> Value {
        let ttl = self.inner.token_ttl.as_secs();
        match flavour {
            Flavour::Social => json!({"accessToken": issued.access, "refreshToken": issued.refresh,
                                      "expiresIn": ttl, "profileArn": FAKE_PROFILE_ARN}),
            Flavour::Idc => json!({"accessToken": issued.access, "refreshToken": issued.refresh,
                                   "expiresIn": ttl, "tokenType": "Bearer"}),
            Flavour::OAuth2 | Flavour::ExternalIdp => {
                json!({"access_token": issued.access, "refresh_token": issued.refresh,
                       "expires_in": ttl, "token_type": "Bearer"})
            }
        }
    }

    fn refresh(&self, body: &[u8], flavour: Flavour) -> Response<FrameStream> {
        let refresh_token = flavour.refresh_token(body);
        let mut state = self.lock();
        state.stats.refresh_calls += 1;
        let issued = match refresh_token {
            Some(token) if flavour == Flavour::ExternalIdp => {
                state.tokens.refresh_external(&token, self.inner.token_ttl)
            }
            Some(token) => state.tokens.refresh(&token, self.inner.token_ttl),
            None => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_request", "error_description": flavour.shape_hint()}),
                )
            }
        };
        let Some(issued) = issued else {
            state.stats.invalid_grants += 1;
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": "Invalid refresh token provided"}),
            );
        };
        state.stats.last_refresh_answered_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_micros()).ok());
        drop(state);
        json_response(StatusCode::OK, self.token_answer(&issued, flavour))
    }

    fn generate(&self, request: &Request<Bytes>) -> Response<FrameStream> {
        let body = request.body();
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut step = {
            let mut state = self.lock();
            state.stats.generate_calls += 1;
            state.stats.last_user_agent = header("user-agent");
            state.stats.last_x_amz_user_agent = header("x-amz-user-agent");
            state.stats.last_http_version = Some(format!("{:?}", request.version()));
            state.script.pop_front()
        };
        if step.as_ref().is_some_and(|s| s.expire_tokens) {
            self.lock().tokens.expire_all();
        }
        if let Some(refused) = self.refuse_stale_bearer(request) {
            return refused;
        }
        let parsed = match check_body(body) {
            Ok(parsed) => parsed,
            Err(rejection) => {
                let (violation, response) = *rejection;
                let mut state = self.lock();
                state.stats.rejected_requests += 1;
                state.stats.last_violation = Some(violation);
                return response;
            }
        };
        // Kiro requires a real profile on every chat since 2026-06 (§14.2); the in-process
        // fake of mock mode always has one.
        if self.inner.check_tokens {
            match parsed.profile_arn.as_deref() {
                None => {
                    let mut state = self.lock();
                    state.stats.rejected_requests += 1;
                    state.stats.last_violation = Some("the chat call has no profileArn".into());
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"message": "profileArn is required for this request."}),
                    );
                }
                Some(crate::kiro::auth::account::PLACEHOLDER_PROFILE_ARN) => {
                    return json_response(
                        StatusCode::FORBIDDEN,
                        json!({"__type": "AccessDeniedException", "message": "User is not authorized to make this call."}),
                    );
                }
                Some(_) => {}
            }
        }
        let current = &parsed.conversation_state.current_message.user_input_message;
        {
            let mut state = self.lock();
            if !models::serves(&state.models, &current.model_id) {
                state.stats.rejected_requests += 1;
                state.stats.last_violation =
                    Some(format!("unknown modelId `{}`", current.model_id));
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"message": format!("Invalid model ID: {}", current.model_id), "reason": "INVALID_MODEL_ID"}),
                );
            }
            state.stats.last_profile_arn = parsed.profile_arn.clone();
            state.stats.last_model_id = Some(current.model_id.clone());
            state.stats.last_additional_fields = parsed.additional_model_request_fields.clone();
            state.stats.last_cache_points = current.cache_points();
        }
        let native = match self.check_reasoning(&parsed, &current.model_id) {
            Ok(native) => native,
            Err(response) => return *response,
        };
        let thinking = asks_for_thinking(&parsed);
        // The echo is the client's text: the instructions aiproxy adds are not part of it.
        let (echo, directive) = script::directive(&crate::chat::instructions::without_added(
            strip_thinking_tags(&current.content),
        ));
        let results: Vec<String> = current
            .user_input_message_context
            .iter()
            .flat_map(|c| &c.tool_results)
            .map(|r| {
                let text: Vec<&str> = r.content.iter().map(|b| b.text.as_str()).collect();
                format!("{}={} ({})", r.tool_use_id, text.join(" "), r.status)
            })
            .collect();
        // A tool-results turn is answered with the results, so a round trip shows they arrived.
        let echo = if results.is_empty() {
            echo
        } else {
            format!("Received tool results: {}", results.join("; "))
        };
        let echo = if thinking {
            format!("<thinking>Thinking about: {echo}</thinking>\n\n{echo}")
        } else {
            echo
        };
        if step.is_none() {
            match directive {
                Some(Ok(from_message)) => step = Some(from_message),
                Some(Err(error)) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"message": format!("fake-kiro directive is invalid: {error}"), "reason": "FAKE_SCRIPT"}),
                    )
                }
                None => {}
            }
        }
        let mut step = step.unwrap_or_default();
        if step.status.is_some() {
            return error_response(&step);
        }
        // Told to call a tool (in the system prompt, which leads the first user turn), the
        // fake calls it, as a model would; a scripted answer still wins, and a turn that
        // brings the tool's results is answered with them.
        let tools = current
            .user_input_message_context
            .as_ref()
            .map_or(&[][..], |context| &context.tools);
        if step.text.is_none()
            && step.tool_calls.is_empty()
            && !tools.is_empty()
            && results.is_empty()
        {
            let first_user = parsed
                .conversation_state
                .history
                .iter()
                .find_map(|entry| match entry {
                    HistoryEntry::UserInputMessage(user) => Some(user.content.as_str()),
                    _ => None,
                })
                .unwrap_or(&current.content);
            if let Some(call) = required::call(first_user, tools) {
                step.text = Some(String::new());
                step.tool_calls.push(call);
            }
        }
        // `max_tokens` sent natively (a model whose schema takes it): the answer stops at
        // that many words, as a model stops at its limit.
        let native_max = parsed
            .additional_model_request_fields
            .as_ref()
            .and_then(|fields| fields.get("max_tokens"))
            .and_then(Value::as_u64)
            .and_then(|max| usize::try_from(max).ok());
        if let Some(max) = native_max {
            let text = step.text.clone().unwrap_or_else(|| echo.clone());
            let words: Vec<&str> = text.split_inclusive(' ').collect();
            if words.len() > max {
                step.text = Some(words[..max].concat());
                step.stop_reason = Some("MAX_TOKENS".into());
            }
        }
        let delay = step
            .event_delay_ms
            .map(Duration::from_millis)
            .unwrap_or(self.inner.event_delay);
        // Native reasoning is answered natively: signed reasoning events, no tags.
        // An empty scripted reasoning is none at all (an empty turn under native reasoning).
        let signed = native
            .map(|_| {
                step.reasoning
                    .clone()
                    .unwrap_or_else(|| format!("Thinking about: {echo}"))
            })
            .filter(|reasoning| !reasoning.is_empty());
        let (cache_read, cache_write) = self.prompt_cache(&parsed);
        let extra = script::Extra {
            signed_reasoning: signed.as_deref(),
            cache_read,
            cache_write,
        };
        let frames = script::frames(&step, &echo, body.len(), extra);
        let stream = FrameStream::new(frames, delay).counted(Arc::clone(&self.inner));
        let mut response = Response::new(stream);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        response
    }
}

/// Kiro's checks of a chat body: its weighted size, its shape, the §4.3 rules.
fn check_body(body: &[u8]) -> Result<KiroRequest, Box<(String, Response<FrameStream>)>> {
    let size = weighted_payload_size(body);
    if size > MAX_WEIGHTED_PAYLOAD {
        let violation = format!("weighted payload {size} > {MAX_WEIGHTED_PAYLOAD}");
        let response = json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"}),
        );
        return Err(Box::new((violation, response)));
    }
    let parsed: KiroRequest = serde_json::from_slice(body).map_err(|e| {
        let violation = format!("body does not parse: {e}");
        let response = body_invalid(&violation);
        (violation, response)
    })?;
    validate(&parsed).map_err(|violation| {
        let response = improperly_formed(&violation);
        (violation, response)
    })?;
    Ok(parsed)
}

/// The `cachePoint`s of a request against the model's `promptCaching` (§13.1, §13.3): none
/// for a model that does not cache, at most `maximumCacheCheckpointsPerRequest`.
fn check_cache_points(
    request: &KiroRequest,
    models: &[Value],
    model_id: &str,
) -> Result<(), String> {
    let points = request
        .conversation_state
        .current_message
        .user_input_message
        .cache_points();
    if points == 0 {
        return Ok(());
    }
    let caching = models::served(models, model_id).and_then(|m| m.get("promptCaching"));
    if caching.and_then(|c| c["supportsPromptCaching"].as_bool()) != Some(true) {
        return Err(format!(
            "Prompt caching is not supported for model {model_id}"
        ));
    }
    let max = caching
        .and_then(|c| c["maximumCacheCheckpointsPerRequest"].as_u64())
        .unwrap_or(u64::MAX);
    if points as u64 > max {
        return Err(format!(
            "Too many cache points: {points}, at most {max} for model {model_id}"
        ));
    }
    Ok(())
}

/// Thinking is requested with tags in front of the first user turn (§4.4).
fn asks_for_thinking(request: &KiroRequest) -> bool {
    request.first_user_content().starts_with("<thinking_mode>")
}

/// The current message without leading thinking tags (so the echo is the user's text).
fn strip_thinking_tags(content: &str) -> &str {
    if !content.starts_with("<thinking_mode>") {
        return content;
    }
    match content.split_once("\n\n") {
        Some((_, rest)) => rest,
        None => content,
    }
}

/// The refresh endpoint `request` is for, if it is a token refresh (`/token` also takes the
/// device-code polls, `/oauth/token` the sign-in's JSON code exchange: those are not).
fn refresh_flavour(request: &Request<Bytes>) -> Option<Flavour> {
    if request.method() != Method::POST {
        return None;
    }
    let body = request.body();
    match request.uri().path() {
        "/refreshToken" => Some(Flavour::Social),
        "/token" if !signin::is_device_poll(body) => Some(Flavour::Idc),
        "/oauth/token" if !body.starts_with(b"{") => Some(Flavour::OAuth2),
        "/idp/token" => Some(Flavour::ExternalIdp),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Social,
    Idc,
    OAuth2,
    /// An external identity provider's token endpoint: a public client (§14.2).
    ExternalIdp,
}

impl Flavour {
    fn refresh_token(self, body: &[u8]) -> Option<String> {
        match self {
            Self::Social | Self::Idc => serde_json::from_slice::<Value>(body)
                .ok()?
                .get("refreshToken")?
                .as_str()
                .map(str::to_owned),
            Self::OAuth2 => {
                let text = std::str::from_utf8(body).ok()?;
                let grant = form_value(text, "grant_type")?;
                (grant == "refresh_token").then(|| form_value(text, "refresh_token"))?
            }
            Self::ExternalIdp => {
                let text = std::str::from_utf8(body).ok()?;
                let public_client = form_value(text, "client_id").is_some_and(|id| !id.is_empty())
                    && form_value(text, "client_secret").is_none();
                let grant = form_value(text, "grant_type")?;
                (public_client && grant == "refresh_token")
                    .then(|| form_value(text, "refresh_token"))?
            }
        }
    }

    fn shape_hint(self) -> &'static str {
        match self {
            Self::Social => "send JSON {\"refreshToken\": ...}",
            Self::Idc => "send JSON {\"clientId\", \"clientSecret\", \"refreshToken\", \"grantType\": \"refresh_token\"}",
            Self::OAuth2 => "send a form with grant_type=refresh_token and refresh_token",
            Self::ExternalIdp => "send a form with grant_type=refresh_token, client_id and refresh_token (a public client: no client_secret)",
        }
    }
}

fn form_value(form: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(form.as_bytes())
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.into_owned())
}

fn usage_limits(used: f64, limit: f64) -> Value {
    json!({
        "nextDateReset": 1_798_761_600.0,
        "subscriptionInfo": {"subscriptionTitle": "KIRO PRO", "subscriptionName": "PRO", "subscriptionType": "Q_DEVELOPER_STANDALONE_PRO", "status": "ACTIVE"},
        "userInfo": {"email": "fake@example.com", "userId": "fake-user"},
        "usageBreakdownList": [{
            "resourceType": "CREDIT", "currentUsage": used.floor(), "currentUsageWithPrecision": used,
            "usageLimit": limit.floor(), "usageLimitWithPrecision": limit, "nextDateReset": 1_798_761_600.0,
            "currency": "USD", "unit": "INVOCATIONS", "overageRate": 0.04
        }]
    })
}

fn error_response(step: &Step) -> Response<FrameStream> {
    let Some((status, body, retry_after)) = script::error_response(step) else {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": "Internal failure"}),
        );
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, body);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    }
    response
}

fn improperly_formed(violation: &str) -> Response<FrameStream> {
    rejected(violation, Value::Null)
}

/// A body that is not Kiro's shape at all (unknown fields, wrong types): §7.1, §13.1.
fn body_invalid(violation: &str) -> Response<FrameStream> {
    rejected(violation, Value::from("REQUEST_BODY_INVALID"))
}

fn rejected(violation: &str, reason: Value) -> Response<FrameStream> {
    tracing::debug!(violation, "fake Kiro rejected a request");
    let mut response = json_response(
        StatusCode::BAD_REQUEST,
        json!({"message": "Improperly formed request.", "reason": reason}),
    );
    if let Ok(value) = header::HeaderValue::from_str(&violation.replace(['\r', '\n'], " ")) {
        // Not part of Kiro's protocol: tells a developer which rule was broken.
        response
            .headers_mut()
            .insert("x-fake-kiro-violation", value);
    }
    response
}

/// Queues the steps a script endpoint got (one JSON object, or an array of them) with `push`,
/// answering how many; a step that does not parse is a 400 that says so after `problem`.
fn queue<T: serde::de::DeserializeOwned>(
    body: &[u8],
    problem: &str,
    push: impl FnOnce(Vec<T>),
) -> Response<FrameStream> {
    let steps = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items.into_iter().map(serde_json::from_value).collect(),
        Ok(item) => serde_json::from_value(item).map(|step| vec![step]),
        Err(error) => Err(error),
    };
    match steps {
        Ok(steps) => {
            let queued = steps.len();
            push(steps);
            json_response(StatusCode::OK, json!({"queued": queued}))
        }
        Err(error) => json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": format!("{problem}: {error}")}),
        ),
    }
}

/// The fake's own URL as the client reached it (for the links it hands out).
fn own_url(request: &Request<Bytes>) -> String {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn json_response(status: StatusCode, body: Value) -> Response<FrameStream> {
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

/// The fake's response body: writes released one by one, each after the configured delay.
pub struct FrameStream {
    frames: VecDeque<Bytes>,
    delay: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set while a chat stream is open, for the peak-concurrency counter.
    counted: Option<Arc<Inner>>,
}

impl FrameStream {
    fn new(frames: VecDeque<Bytes>, delay: Duration) -> Self {
        Self {
            frames,
            delay,
            sleep: None,
            counted: None,
        }
    }

    fn counted(mut self, inner: Arc<Inner>) -> Self {
        let now = inner.streaming.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            state.stats.peak_concurrent_generates = state.stats.peak_concurrent_generates.max(now);
        }
        self.counted = Some(inner);
        self
    }
}

impl Drop for FrameStream {
    fn drop(&mut self) {
        if let Some(inner) = &self.counted {
            inner.streaming.fetch_sub(1, Ordering::SeqCst);
            if !self.frames.is_empty() {
                let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
                state.stats.abandoned_streams += 1;
            }
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
    use crate::kiro::protocol::eventstream::{FrameDecoder, KiroEvent};
    use futures_util::StreamExt;

    #[test]
    fn form_values_are_percent_decoded_without_panicking() {
        let form = "grant_type=refresh_token&refresh_token=a%2Bb+c%E2%82%AC";
        assert_eq!(form_value(form, "refresh_token").as_deref(), Some("a+b c€"));
        // A `%` before a multi-byte character is not an escape (it used to be sliced mid-char).
        assert_eq!(
            form_value("refresh_token=%é1", "refresh_token").as_deref(),
            Some("%é1")
        );
        assert_eq!(form_value(form, "missing"), None);
    }

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
