//! The operator console at `/console`: sign in with the admin key (`--admin-key`), then see
//! the traffic of the last hour, the accounts (state, why one is out and until when,
//! credits, identity, which secrets are set) with their actions, the API keys' use, and the
//! last requests; add accounts by signing in from the page.
//!
//! Front end: one server-rendered page per state (the sign-in form; the console's shell
//! with its CSRF token) plus one small script and one stylesheet, all compiled into the
//! binary (`include_str!`): no library, no build step, no external asset (it works with no
//! internet), and a strict Content-Security-Policy (`script-src 'self'`, no inline code).
//! The script reads the JSON of `/console/api/*` every 2 s and draws the tab in view,
//! writing every value as text. A page this size (about 20 KB in all) needs nothing more,
//! and keeps working for years without dependency upgrades.
//!
//! | route | what |
//! |---|---|
//! | `GET /console` | the console (signed in) or the sign-in form |
//! | `POST /console/login` | form `key=...`: a session cookie, or the form again (throttled) |
//! | `POST /console/logout` | ends the session (CSRF field) |
//! | `GET /console/app.js`, `/console/app.css` | the page's script and style |
//! | `GET /console/api/{overview,accounts,keys,requests}` | what the tabs show |
//! | `POST /console/api/accounts/{name}/{enable,disable,reset,refresh,probe,remove}` | the account actions |
//! | `POST /console/api/add/{device,social,credential}`, `GET /console/api/signin/{id}`, `POST /console/api/signin/{id}/callback` | adding accounts |
//!
//! Every `POST` but the sign-in needs the session's CSRF token (`x-csrf-token`) and is
//! refused from another site. The console adds nothing to the API's hot path but one path
//! check (see [`Mount`]); its journal is kept only when the console is on.

mod actions;
pub mod session;
mod views;

use crate::api::Views;
use crate::body::ResponseBody;
use crate::config::Config;
use crate::kiro::accounts::Accounts;
use crate::secret::Secret;
use crate::telemetry::journal::Journal;
use actions::Failed;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

const LOGIN_PAGE: &str = include_str!("assets/login.html");
const CONSOLE_PAGE: &str = include_str!("assets/console.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The Content-Security-Policy of every console answer: nothing but this origin's own
/// script, style and API; no inline code, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest body a console request may have (a pasted pool file).
const MAX_BODY: usize = 1 << 20;

/// Where the console's sign-ins go: Kiro's own services, or the overrides the accounts use
/// (a fake, a gateway).
#[derive(Clone, Debug, Default)]
struct Endpoints {
    oidc_url: Option<String>,
    auth_url: Option<String>,
    signin_url: Option<String>,
    kiro_base_url: Option<String>,
}

impl Endpoints {
    /// From the accounts' own settings: the OIDC service is where IdC refreshes go, the
    /// auth service where social refreshes go (its sign-in page beside it when overridden).
    fn of(config: &Config) -> Self {
        let base = |url: &Option<String>, suffix: &str| {
            url.as_deref()
                .map(|u| u.trim_end_matches('/').trim_end_matches(suffix).to_owned())
        };
        let auth_url = base(&config.kiro_refresh_url, "/refreshToken");
        Self {
            oidc_url: base(&config.kiro_idc_refresh_url, "/token"),
            signin_url: auth_url.as_ref().map(|a| format!("{a}/signin")),
            auth_url,
            kiro_base_url: config.kiro_base_url.clone(),
        }
    }
}

struct Inner {
    sessions: session::Sessions,
    accounts: Arc<Accounts>,
    views: Views,
    journal: Journal,
    key_count: usize,
    rate_limits: crate::config::rate_limit::RateLimitSettings,
    endpoints: Endpoints,
    http: reqwest::Client,
    flows: Mutex<actions::Flows>,
}

/// The console. Cheap to clone.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

impl Console {
    /// The console of `config`, or `None` when no admin key is configured (then `/console`
    /// says how to turn it on).
    pub fn new(config: &Config, accounts: Arc<Accounts>, views: Views) -> Option<Self> {
        let admin_key: &Secret = config.admin_key.as_ref()?;
        // Its sign-in flows call Kiro's sign-in services: the same authorities as the accounts.
        let http = accounts
            .trust()
            .apply(reqwest::Client::builder())
            .ok()?
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .ok()?;
        Some(Self {
            inner: Arc::new(Inner {
                sessions: session::Sessions::new(admin_key.clone()),
                journal: views.journal.clone().unwrap_or_default(),
                accounts,
                views,
                key_count: config.api_keys.len(),
                rate_limits: config.rate_limit.clone(),
                endpoints: Endpoints::of(config),
                http,
                flows: Mutex::new(actions::Flows::new()),
            }),
        })
    }

    fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    fn flows(&self) -> MutexGuard<'_, actions::Flows> {
        self.inner.flows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one console request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let tls = session::over_tls(&parts.uri, &parts.headers);
        let signed = self.inner.sessions.session(&parts.headers);
        let mut response = match (&parts.method, path.as_str()) {
            (&Method::GET | &Method::HEAD, "/console" | "/console/") => match &signed {
                Some(signed) => html(StatusCode::OK, CONSOLE_PAGE.replace("{{csrf}}", &signed.csrf)),
                None => login_page(StatusCode::OK, ""),
            },
            (&Method::GET | &Method::HEAD, "/console/app.js") => asset(SCRIPT, "text/javascript; charset=utf-8"),
            (&Method::GET | &Method::HEAD, "/console/app.css") => asset(STYLE, "text/css; charset=utf-8"),
            (&Method::POST, "/console/login") => self.login(&parts.headers, body, tls).await,
            (&Method::POST, "/console/logout") => match read_form(body).await {
                Ok(form) => self.logout(&parts.headers, signed.as_ref(), &form, tls),
                Err(failed) => answer(Err(failed)),
            },
            (method, api) if api.starts_with("/console/api/") => match &signed {
                None => error(StatusCode::UNAUTHORIZED, "not signed in to the console (or the session expired): open /console and sign in with the admin key"),
                Some(signed) => {
                    if *method != Method::GET && !csrf_ok(&parts.headers, signed) {
                        error(StatusCode::FORBIDDEN, "refused: console actions need the page's CSRF token (x-csrf-token) and must come from the console itself")
                    } else {
                        self.api(method, &api["/console/api/".len()..], parts.uri.query(), body).await
                    }
                }
            },
            (method, _) => error(StatusCode::NOT_FOUND, &format!("the console has no {method} {path}; open /console")),
        };
        secure_headers(&mut response);
        response
    }

    async fn login<B>(
        &self,
        headers: &http::HeaderMap,
        body: B,
        tls: bool,
    ) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if session::cross_site(headers) {
            return login_page(
                StatusCode::FORBIDDEN,
                "Refused: the sign-in must come from the console's own page.",
            );
        }
        let form = match read_form(body).await {
            Ok(form) => form,
            Err(failed) => return answer(Err(failed)),
        };
        let key = form
            .iter()
            .find(|(k, _)| k == "key")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        match self.inner.sessions.sign_in(key) {
            Ok(token) => {
                tracing::info!("console: operator signed in");
                let mut response = Response::new(ResponseBody::full(Bytes::new()));
                *response.status_mut() = StatusCode::SEE_OTHER;
                response
                    .headers_mut()
                    .insert(LOCATION, HeaderValue::from_static("/console"));
                if let Ok(cookie) = HeaderValue::from_str(&session::set_cookie(&token, tls)) {
                    response.headers_mut().insert(SET_COOKIE, cookie);
                }
                response
            }
            Err(session::Refused::WrongKey) => {
                tracing::warn!("console: sign-in with a wrong key");
                login_page(StatusCode::UNAUTHORIZED, "That is not the admin key.")
            }
            Err(session::Refused::Throttled(wait)) => {
                let mut response = login_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "Too many sign-in attempts; wait {} s and try again.",
                        wait.as_secs()
                    ),
                );
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
                response
            }
        }
    }

    fn logout(
        &self,
        headers: &http::HeaderMap,
        signed: Option<&session::Signed>,
        form: &[(String, String)],
        tls: bool,
    ) -> Response<ResponseBody> {
        if let Some(signed) = signed {
            let token = form
                .iter()
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.as_str());
            if session::cross_site(headers)
                || !token.is_some_and(|t| session::same(t, &signed.csrf))
            {
                return error(
                    StatusCode::FORBIDDEN,
                    "refused: sign out from the console's own page",
                );
            }
            self.inner.sessions.sign_out(signed);
        }
        let mut response = Response::new(ResponseBody::full(Bytes::new()));
        *response.status_mut() = StatusCode::SEE_OTHER;
        response
            .headers_mut()
            .insert(LOCATION, HeaderValue::from_static("/console"));
        if let Ok(cookie) = HeaderValue::from_str(&session::clear_cookie(tls)) {
            response.headers_mut().insert(SET_COOKIE, cookie);
        }
        response
    }

    async fn api<B>(
        &self,
        method: &Method,
        route: &str,
        query: Option<&str>,
        body: B,
    ) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        answer(self.api_result(method, route, query, body).await)
    }

    async fn api_result<B>(
        &self,
        method: &Method,
        route: &str,
        query: Option<&str>,
        body: B,
    ) -> Result<Value, Failed>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let segments: Vec<&str> = route.split('/').collect();
        if *method == Method::GET {
            return match segments.as_slice() {
                ["overview"] => Ok(self.overview()),
                ["accounts"] => Ok(self.accounts_view()),
                ["keys"] => Ok(self.keys_view()),
                ["requests"] => Ok(self.requests_view(query)),
                ["signin", id] => self.signin_state(id),
                _ => Err(Failed(
                    StatusCode::NOT_FOUND,
                    format!("the console API has no GET {route}"),
                )),
            };
        }
        if *method != Method::POST {
            return Err(Failed(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here; the console API takes GET and POST"),
            ));
        }
        let bytes = read_body(body).await?;
        let said = |message: String| json!({ "message": message });
        match segments.as_slice() {
            ["accounts", name, action] => self
                .account_action(&percent_decoded(name), action)
                .await
                .map(said),
            ["add", "device"] => self.add_device(parse(&bytes)?).await,
            ["add", "social"] => self.add_social(parse(&bytes)?),
            ["add", "credential"] => self.add_credential(parse(&bytes)?).await.map(said),
            ["signin", id, "callback"] => self.finish_social(id, parse(&bytes)?).await.map(said),
            _ => Err(Failed(
                StatusCode::NOT_FOUND,
                format!("the console API has no POST {route}"),
            )),
        }
    }
}

fn percent_decoded(text: &str) -> String {
    form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Whether an action carries the session's CSRF token and comes from this site.
fn csrf_ok(headers: &http::HeaderMap, signed: &session::Signed) -> bool {
    let token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    !session::cross_site(headers) && token.is_some_and(|t| session::same(t, &signed.csrf))
}

async fn read_body<B>(body: B) -> Result<Bytes, Failed>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(Failed(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body could not be read or is larger than {MAX_BODY} bytes"),
        )),
    }
}

async fn read_form<B>(body: B) -> Result<Vec<(String, String)>, Failed>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = read_body(body).await?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Failed> {
    serde_json::from_slice(bytes).map_err(|e| {
        Failed(
            StatusCode::BAD_REQUEST,
            format!("the request body is not what this action takes: {e}"),
        )
    })
}

fn answer(result: Result<Value, Failed>) -> Response<ResponseBody> {
    match result {
        Ok(value) => ok(value),
        Err(Failed(status, message)) => error(status, &message),
    }
}

fn ok(value: Value) -> Response<ResponseBody> {
    respond(StatusCode::OK, "application/json", value.to_string())
}

/// An error in aiproxy's OpenAI shape (the same `Rejection` every layer answers with).
fn error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    aiproxy_layers::Rejection::new(status, kind, message)
        .into_response(aiproxy_layers::ErrorShape::OpenAi)
        .map(ResponseBody::full)
}

fn html(status: StatusCode, page: String) -> Response<ResponseBody> {
    respond(status, "text/html; charset=utf-8", page)
}

fn login_page(status: StatusCode, message: &str) -> Response<ResponseBody> {
    html(status, LOGIN_PAGE.replace("{{message}}", &escape(message)))
}

fn asset(text: &'static str, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = respond(StatusCode::OK, content_type, text);
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// HTML-escapes text for the server-rendered pages.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn secure_headers(response: &mut Response<ResponseBody>) {
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: with the latter a browser sends `Origin: null` on the
    // page's own form posts, which the cross-site check refuses.
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// Serves `/console` beside a service (the pipeline, or the metrics port's): a request under
/// `/console` goes to the console, every other one to the service as it came. Without a
/// console, `/console` answers a 404 that says how to turn it on.
#[derive(Clone, Debug)]
pub struct Mount<S> {
    inner: S,
    console: Option<Console>,
}

impl<S> Mount<S> {
    /// `inner` with `console` beside it.
    pub fn new(inner: S, console: Option<Console>) -> Self {
        Self { inner, console }
    }
}

fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

type BoxResponse<R> = Pin<Box<dyn Future<Output = R> + Send>>;

impl<S, B, RB> tower::Service<Request<B>> for Mount<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<http_body_util::Either<RB, ResponseBody>>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        futures_util::future::MapOk<S::Future, fn(Response<RB>) -> Self::Response>,
        BoxResponse<Result<Self::Response, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        use futures_util::TryFutureExt;
        if !is_console(request.uri().path()) {
            let left: fn(Response<RB>) -> Self::Response = |r| r.map(http_body_util::Either::Left);
            return futures_util::future::Either::Left(self.inner.call(request).map_ok(left));
        }
        let console = self.console.clone();
        futures_util::future::Either::Right(Box::pin(async move {
            let response = match console {
                Some(console) => console.handle(request).await,
                None => error(
                    StatusCode::NOT_FOUND,
                    "the console is off: start aiproxy with --admin-key KEY (or AIPROXY_ADMIN_KEY, or `admin_key` under [server] in the config file) to turn it on",
                ),
            };
            Ok(response.map(http_body_util::Either::Right))
        }))
    }
}
