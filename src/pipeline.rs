//! THE place the aiproxy stack is assembled. The server, the library API and the tests all
//! run what [`build`] returns.
//!
//! Layers, outermost first, with the request extensions each adds (+) or needs (?):
//!
//! | # | layer | crate | does | extensions |
//! |---|---|---|---|---|
//! | 1 | `SetSensitiveRequestHeaders` | tower-http | marks `authorization`, `x-api-key`, `x-goog-api-key`, `cookie` sensitive so no `Debug`/trace output shows them | |
//! | 2 | `SetRequestId` | tower-http | `x-request-id` (kept if the client sent one, else a UUID) | + header `x-request-id` |
//! | 3 | `Trace` | tower-http | one `request` span per request (method, path without query, request id; `provider`, `model` recorded later), a log line per response | ? `x-request-id` |
//! | 4 | `PropagateRequestId` | tower-http | copies `x-request-id` onto the response | ? `x-request-id` |
//! | 5 | `CatchPanic` | tower-http | a panic becomes a 500 in the OpenAI error shape | |
//! | 6 | [`auth`](aiproxy_layers::auth) | aiproxy-layers | API key check; `/health` is public | + [`ClientKey`](aiproxy_layers::ClientKey) |
//! | 7 | [`route`](aiproxy_layers::route) | aiproxy-layers | provider from headers / path prefix / default | + [`ProviderId`](aiproxy_layers::ProviderId) |
//! | 8 | [`ApiService`] | aiproxy | OpenAI wire format <-> [`ChatRequest`](crate::chat::ChatRequest) / [`ChatEvent`](crate::chat::ChatEvent) streams | ? `ClientKey`, ? `ProviderId` |
//! | 9 | [`KiroService`] | aiproxy | the Kiro upstream: request builder, transport, event-stream decoder | (model tier: `ChatRequest.metadata`) |
//!
//! Every service in the stack has `Error = Infallible`: failures are API-shaped responses.

use crate::api::{ApiService, ApiState, ProviderStatus};
use crate::body::ResponseBody;
use crate::config::Config;
use crate::kiro::fake::FakeKiro;
use crate::kiro::{Catalog, KiroService, Transport};
use aiproxy_layers::auth::{Auth, AuthLayer};
use aiproxy_layers::route::{Route, RouteLayer};
use aiproxy_layers::{ErrorShape, Rejection};
use http::header::{HeaderName, AUTHORIZATION, COOKIE};
use http::{Request, Response, StatusCode};
use std::any::Any;
use std::time::Instant;
use tower::ServiceBuilder;
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer, ResponseForPanic};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};
use tower_http::trace::{DefaultOnRequest, DefaultOnResponse, MakeSpan, Trace, TraceLayer};
use tracing::Level;

/// The model tier (what the API adapter calls).
pub type ModelService = KiroService;

/// The whole stack, as a named type so embedding apps can store it.
pub type Pipeline = SetSensitiveRequestHeaders<
    SetRequestId<
        Trace<
            PropagateRequestId<CatchPanic<Auth<Route<ApiService<ModelService>>>, PanicResponse>>,
            SharedClassifier<ServerErrorsAsFailures>,
            RequestSpan,
            DefaultOnRequest,
            DefaultOnResponse,
        >,
        MakeRequestUuid,
    >,
>;

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The model catalog is unusable.
    #[error(transparent)]
    Catalog(#[from] crate::kiro::models::CatalogError),
    /// No way to reach Kiro.
    #[error(
        "no Kiro credentials are configured. This build serves the built-in fake Kiro only: \
         start with KIRO_MOCK_MODE=true (or --kiro-mock-mode)"
    )]
    NoCredentials,
}

/// Builds the pipeline for `config`.
pub fn build(config: &Config) -> Result<Pipeline, BuildError> {
    let catalog = match &config.models_file {
        Some(path) => Catalog::from_file(path)?,
        None => Catalog::builtin()?,
    };
    if !config.kiro_mock_mode {
        return Err(BuildError::NoCredentials);
    }
    let kiro = KiroService::new(
        Transport::Fake(FakeKiro::new().with_event_delay(config.kiro_mock_event_delay)),
        catalog.clone(),
    );
    let state = ApiState {
        catalog,
        max_body_bytes: config.max_body_bytes,
        providers: vec![ProviderStatus {
            id: config.model_provider.clone(),
            mode: kiro.mode(),
        }],
        started: Instant::now(),
    };
    let sensitive: [HeaderName; 4] = [
        AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("x-goog-api-key"),
        COOKIE,
    ];
    Ok(ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan)
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(CatchPanicLayer::custom(PanicResponse))
        .layer(AuthLayer::new(&config.api_keys).public_path("/health"))
        .layer(RouteLayer::new(
            &config.model_provider,
            crate::config::PROVIDERS,
        ))
        .service(ApiService::new(kiro, state)))
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
