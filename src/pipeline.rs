//! THE place the aiproxy stack is assembled. The server, the library API and the tests all
//! run what [`build`] returns.
//!
//! Layers, outermost first, with the request extensions each adds (+) or needs (?):
//!
//! | # | layer | crate | does | extensions |
//! |---|---|---|---|---|
//! | 1 | [`BoundRequestId`] | aiproxy-layers | drops a client `x-request-id` over 128 characters or not visible ASCII | |
//! | 1 | `SetRequestId` | tower-http | `x-request-id` (kept if the client sent a sane one, else a UUID) | + header `x-request-id` |
//! | 2 | `PropagateRequestId` | tower-http | copies `x-request-id` onto the response | ? `x-request-id` |
//! | 3 | `SetSensitiveRequestHeaders` | tower-http | marks `authorization`, `x-api-key`, `x-goog-api-key`, `cookie` sensitive so no `Debug`/trace output shows them | |
//! | 4 | `Trace` | tower-http | one `request` span per request (method, path without query, request id; `provider`, `model` recorded later), a log line per response | ? `x-request-id` |
//! | 5 | `CatchPanic` | tower-http | a panic becomes a 500 in the OpenAI error shape (release builds unwind for this) | |
//! | 6 | [`auth`](aiproxy_layers::auth) | aiproxy-layers | API key check; `/health` is public | + [`ClientKey`](aiproxy_layers::ClientKey) |
//! | 7 | [`route`](aiproxy_layers::route) | aiproxy-layers | provider from headers / path prefix / default | + [`ProviderId`](aiproxy_layers::ProviderId) |
//! | 8 | [`ApiService`] | aiproxy | OpenAI and Anthropic wire formats <-> [`ModelRequest`](crate::model::ModelRequest) / [`ChatEvent`](crate::chat::ChatEvent) streams; waits (bounded) for the model tier to be ready | ? `ClientKey`, ? `ProviderId`; from the model tier's response: `AccountId` -> `x-aiproxy-account` header, `account` span field |
//! | 9 | [`ModelService`] | aiproxy | the model tier: its own table of layers is in [`crate::model`] | |
//!
//! Every service of the HTTP tier has `Error = Infallible`: failures are API-shaped
//! responses. The model tier's services fail with [`ChatError`](crate::chat::ChatError),
//! which the adapter turns into those responses.
//!
//! Layers 1-7 can be switched off with `--disable-layers` (config key `disable_layers`):
//! `request-id` (1 and 2), `trace` (3 and 4), `catch-panic`, `auth`, `route`. Each sits in a
//! [`ToggleLayer`]: off, requests go straight to the inner service (an enum match, no
//! boxing), which is how `benches/pipeline.rs` measures what each layer costs.

use crate::api::{ApiService, ApiState, ProviderStatus};
use crate::body::ResponseBody;
use crate::config::{Config, PipelineLayer};
use crate::kiro::account::{Account, Endpoints, TokenSettings};
use crate::kiro::credentials::{self, Credentials};
use crate::kiro::fake::FakeKiro;
use crate::kiro::http::HttpUpstream;
use crate::kiro::token_source::FixedToken;
use crate::kiro::{Catalog, KiroService};
use crate::model::resolve::{Resolve, ResolveLayer};
use crate::secret::Secret;
use aiproxy_layers::auth::{Auth, AuthLayer};
use aiproxy_layers::request_id::{BoundRequestId, BoundRequestIdLayer};
use aiproxy_layers::route::{Route, RouteLayer};
use aiproxy_layers::toggle::{Toggle, ToggleLayer};
use aiproxy_layers::{ErrorShape, Rejection};
use http::header::{HeaderName, AUTHORIZATION, COOKIE};
use http::{Request, Response, StatusCode};
use std::any::Any;
use std::sync::Arc;
use std::time::Instant;
use tower::Layer;
use tower::ServiceBuilder;
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer, ResponseForPanic};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};
use tower_http::trace::{DefaultOnRequest, DefaultOnResponse, MakeSpan, Trace, TraceLayer};
use tracing::Level;

/// The model tier (what the API adapter calls); its layers are listed in [`crate::model`].
pub type ModelService = Resolve<KiroService>;

/// The whole stack, as a named type so embedding apps can store it. Each level is a
/// [`Toggle`] of the layered service and the service it wraps (what is left when the layer is
/// switched off), outermost first.
pub type Pipeline =
    Toggle<BoundRequestId<SetRequestId<PropagateRequestId<Traced>, MakeRequestUuid>>, Traced>;

type Traced = Toggle<
    SetSensitiveRequestHeaders<
        Trace<
            PanicsCaught,
            SharedClassifier<ServerErrorsAsFailures>,
            RequestSpan,
            DefaultOnRequest,
            DefaultOnResponse,
        >,
    >,
    PanicsCaught,
>;
type PanicsCaught = Toggle<CatchPanic<Authenticated, PanicResponse>, Authenticated>;
type Authenticated = Toggle<Auth<Routed>, Routed>;
type Routed = Toggle<Route<Api>, Api>;
type Api = ApiService<ModelService>;

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The model catalog is unusable.
    #[error(transparent)]
    Catalog(#[from] crate::kiro::models::CatalogError),
    /// The credentials are unusable.
    #[error(transparent)]
    Credentials(#[from] crate::kiro::credentials::CredentialError),
    /// No way to reach Kiro.
    #[error(
        "no Kiro credentials found. Pass --kiro-oauth-creds-file FILE or --kiro-oauth-creds-base64 B64 \
         (or set KIRO_OAUTH_CREDS_FILE / KIRO_OAUTH_CREDS_BASE64), sign in with the Kiro IDE so that \
         ~/.aws/sso/cache/kiro-auth-token.json exists, or start with KIRO_MOCK_MODE=true to use the built-in fake Kiro"
    )]
    NoCredentials,
    /// The configuration contradicts itself.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The HTTP client or the upstream URL could not be set up.
    #[error("cannot set up the Kiro client: {0}")]
    Client(String),
}

/// Builds the pipeline for `config`.
pub fn build(config: &Config) -> Result<Pipeline, BuildError> {
    config.check_layers()?;
    let catalog = match &config.models_file {
        Some(path) => Catalog::from_file(path)?,
        None => Catalog::builtin()?,
    };
    let (kiro, account) = model_service(config)?;
    let state = ApiState {
        catalog: catalog.clone(),
        max_body_bytes: config.max_body_bytes,
        ready_timeout: config.request_timeout,
        providers: vec![ProviderStatus {
            id: config.model_provider.clone(),
            mode: kiro.mode(),
            accounts: account.into_iter().collect(),
        }],
        started: Instant::now(),
    };
    let model = ResolveLayer::new(catalog).layer(kiro);
    let sensitive: [HeaderName; 4] = [
        AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("x-goog-api-key"),
        COOKIE,
    ];
    let on = |layer| config.layer_enabled(layer);
    let trace = on(PipelineLayer::Trace);
    let request_id = on(PipelineLayer::RequestId);
    Ok(ServiceBuilder::new()
        .layer(ToggleLayer::new(request_id.then(|| {
            ServiceBuilder::new()
                .layer(BoundRequestIdLayer::new())
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .into_inner()
        })))
        .layer(ToggleLayer::new(trace.then(|| {
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(RequestSpan)
                        .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .into_inner()
        })))
        .layer(ToggleLayer::new(
            on(PipelineLayer::CatchPanic).then(|| CatchPanicLayer::custom(PanicResponse)),
        ))
        .layer(ToggleLayer::new(on(PipelineLayer::Auth).then(|| {
            AuthLayer::new(config.api_keys.iter().map(Secret::expose)).public_path("/health")
        })))
        .layer(ToggleLayer::new(on(PipelineLayer::Route).then(|| {
            RouteLayer::new(&config.model_provider, crate::config::PROVIDERS)
        })))
        .service(ApiService::new(model, state)))
}

/// The Kiro upstream: the in-process fake with a mock account in mock mode, else a live
/// account (returned too, for `/health`).
fn model_service(config: &Config) -> Result<(KiroService, Option<Arc<Account>>), BuildError> {
    if config.kiro_mock_mode {
        let fake = FakeKiro::new().with_event_delay(config.kiro_mock_event_delay);
        let account = Arc::new(FixedToken::new("mock"));
        return Ok((
            KiroService::mock(fake, account, config.max_connections),
            None,
        ));
    }
    let (name, credentials) = load_credentials(config)?;
    let client = HttpUpstream::client(config.max_connections, config.request_timeout)
        .map_err(|e| BuildError::Client(e.to_string()))?;
    let endpoints = endpoints(config, &credentials);
    tracing::info!(account = %name, format = credentials.format.name(), api = %endpoints.api_base, "Kiro account loaded");
    let settings = TokenSettings {
        refresh_margin: config.token_refresh_margin,
        state_dir: config.state_dir.clone(),
        timeout: config.request_timeout,
    };
    let account = Account::new(name, credentials, endpoints, settings, client.clone());
    let http = HttpUpstream::new(config.max_connections, config.request_timeout);
    let service = KiroService::live(http, Arc::clone(&account), config.max_connections)
        .map_err(BuildError::Client)?;
    Ok((service, Some(account)))
}

/// Credential sources in order: file flag/env, base64 flag/env, the Kiro IDE's own file.
fn load_credentials(config: &Config) -> Result<(String, Credentials), BuildError> {
    if let Some(path) = &config.kiro_oauth_creds_file {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok((name, credentials::from_file(path)?));
    }
    if let Some(base64) = &config.kiro_oauth_creds_base64 {
        let origin = "--kiro-oauth-creds-base64 / KIRO_OAUTH_CREDS_BASE64";
        return Ok((
            "base64".into(),
            credentials::from_base64(base64.expose(), origin)?,
        ));
    }
    if let Some(path) = credentials::kiro_ide_token_file() {
        return Ok(("kiro-ide".into(), credentials::from_file(&path)?));
    }
    Err(BuildError::NoCredentials)
}

/// API region: explicit `--kiro-region`, else the profileArn's region, else us-east-1.
/// Refresh region: the credential's `region`, else the same.
fn endpoints(config: &Config, credentials: &Credentials) -> Endpoints {
    let arn_region = credentials
        .profile_arn
        .as_deref()
        .and_then(|arn| arn.split(':').nth(3))
        .filter(|r| !r.is_empty());
    let api_region = config
        .kiro_region
        .as_deref()
        .or(arn_region)
        .unwrap_or("us-east-1");
    let auth_region = credentials
        .region
        .as_deref()
        .or(config.kiro_region.as_deref())
        .unwrap_or("us-east-1");
    Endpoints {
        api_base: config
            .kiro_base_url
            .clone()
            .unwrap_or_else(|| format!("https://q.{api_region}.amazonaws.com")),
        social_refresh: config.kiro_refresh_url.clone().unwrap_or_else(|| {
            format!("https://prod.{auth_region}.auth.desktop.kiro.dev/refreshToken")
        }),
        idc_refresh: config
            .kiro_idc_refresh_url
            .clone()
            .unwrap_or_else(|| format!("https://oidc.{auth_region}.amazonaws.com/token")),
    }
}

/// The request span: path only (a `?key=` query must never reach a log line).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> tracing::Span {
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id,
            provider = tracing::field::Empty,
            model = tracing::field::Empty,
            account = tracing::field::Empty,
        )
    }
}

/// Answers a panic with a 500 in the OpenAI error shape.
#[derive(Clone, Copy, Debug, Default)]
pub struct PanicResponse;

impl ResponseForPanic for PanicResponse {
    type ResponseBody = ResponseBody;

    fn response_for_panic(
        &mut self,
        _panic: Box<dyn Any + Send + 'static>,
    ) -> Response<ResponseBody> {
        tracing::error!("a request handler panicked");
        Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "aiproxy hit an internal error while handling this request. Retry it; if it repeats, report it with the x-request-id.",
        )
        .with_code("internal_error")
        .into_response(ErrorShape::OpenAi)
        .map(ResponseBody::full)
    }
}
