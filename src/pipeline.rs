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
//! | 4 | `Trace` | tower-http | one `request` span per request (method, path without query, request id; `gen_ai.provider.name`, `gen_ai.request.model`, `account`, `aiproxy.attempts` (each upstream call: account, kind, outcome, when there was more than one or none answered), `gen_ai.usage.*` and `http.response.status_code` recorded later; exported over OTLP when configured, see [`crate::telemetry::traces`]), a log line per response | ? `x-request-id` |
//! | 5 | `CatchPanic` | tower-http | a panic becomes a 500 in the OpenAI error shape (release builds unwind for this) | |
//! | 6 | [`metrics`](aiproxy_layers::metrics) | aiproxy-layers | requests by route, status class and provider, time to headers, in flight; overhead (time to headers less the upstream's waits) as a histogram and the `x-aiproxy-overhead-ms` header | ? response `ProviderId`, `UpstreamClock` |
//! | 7 | [`auth`](aiproxy_layers::auth) | aiproxy-layers | API key check; `/health` and (unless `--admin-require-key`) `/loadbalancer/instances` and `/metrics` are public | + [`ClientKey`](aiproxy_layers::ClientKey) |
//! | 8 | [`route`](aiproxy_layers::route) | aiproxy-layers | provider from headers / path prefix / default | + [`ProviderId`](aiproxy_layers::ProviderId) |
//! | 9 | [`ApiService`] | aiproxy | CORS preflights and headers (with `--cors-allow-origin`); OpenAI and Anthropic wire formats <-> [`ModelRequest`](crate::model::ModelRequest) / [`ChatEvent`](crate::chat::ChatEvent) streams; `GET /metrics` | ? `ClientKey`, ? `ProviderId`; + model request `ProviderId`, `UpstreamClock`; from the model tier's response: `AccountId` -> `x-aiproxy-account` header, `account` span field; + response `ProviderId`, `UpstreamClock` |
//! | 10 | [`ModelService`] | aiproxy | the model tier: its own table of layers is in [`crate::model`] | |
//!
//! Every service of the HTTP tier has `Error = Infallible`: failures are API-shaped
//! responses. The model tier's services fail with [`ChatError`](crate::chat::ChatError),
//! which the adapter turns into those responses.
//!
//! Layers 1-8 can be switched off with `--disable-layers` (config key `disable_layers`):
//! `request-id` (1 and 2), `trace` (3 and 4), `catch-panic`, `metrics`, `auth`, `route`. Each sits in a
//! [`ToggleLayer`]: off, requests go straight to the inner service (an enum match, no
//! boxing), which is how `benches/pipeline.rs` measures what each layer costs. The model
//! tier's `retry`, `pool` (one account only: its leaf serves every request, with no breaker)
//! and `metrics` switch off the same way (a `tower::util::Either`).

use crate::api::{ApiService, ApiState, ProviderStatus};
use crate::body::ResponseBody;
use crate::catalog::Catalog;
use crate::chat::ChatEvent;
use crate::config::{Config, PipelineLayer};
use crate::kiro::accounts::{Accounts, AccountsError};
use crate::kiro::KiroService;
use crate::model::emulate::{Emulate, EmulateLayer};
use crate::model::resolve::{Resolve, ResolveLayer};
use crate::model::search::{WebSearch, WebSearchLayer};
use crate::secret::Secret;
use crate::telemetry::access::AccessNote;
use crate::telemetry::metrics::Metrics;
use aiproxy_layers::auth::{Auth, AuthLayer};
use aiproxy_layers::cache::{Cache, CacheLayer, CacheStore, MemoryStore};
use aiproxy_layers::metrics::{HttpMetrics, HttpMetricsLayer, ModelMetrics, ModelMetricsLayer};
use aiproxy_layers::model::pool::Pool;
use aiproxy_layers::model::ready::{WaitReady, WaitReadyLayer};
use aiproxy_layers::model::retry::{Retry, RetryLayer};
use aiproxy_layers::rate_limit::{RateLimit, RateLimitLayer};
use aiproxy_layers::request_id::{BoundRequestId, BoundRequestIdLayer};
use aiproxy_layers::route::{Route, RouteLayer};
use aiproxy_layers::toggle::{Toggle, ToggleLayer};
use aiproxy_layers::{ErrorShape, Rejection};
use http::header::{HeaderName, AUTHORIZATION, COOKIE};
use http::{Request, Response, StatusCode};
use std::any::Any;
use std::sync::Arc;
use std::time::Instant;
use tower::util::Either;
use tower::Layer;
use tower::ServiceBuilder;
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer, ResponseForPanic};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};
use tower_http::trace::{DefaultOnRequest, MakeSpan, OnResponse, Trace, TraceLayer};
use tracing::Level;

/// The model tier (what the API adapter calls); its layers are listed in [`crate::model`].
pub type ModelService = Resolve<Either<RateLimit<Searching>, Searching>>;
type Searching = WebSearch<Metered>;
type Metered = Either<ModelMetrics<Cached>, Cached>;
type Cached = Either<Cache<Emulated, ChatEvent>, Emulated>;
type Emulated = Emulate<Waiting>;
type Waiting = WaitReady<Either<Retry<Pooled>, Pooled>>;
type Pooled = Either<Pool<KiroService>, KiroService>;

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
            ResponseLine,
        >,
    >,
    PanicsCaught,
>;
type PanicsCaught = Toggle<CatchPanic<HttpMetered, PanicResponse>, HttpMetered>;
type HttpMetered = Toggle<HttpMetrics<Authenticated>, Authenticated>;
type Authenticated = Toggle<Auth<Routed>, Routed>;
type Routed = Toggle<Route<Api>, Api>;
type Api = ApiService;

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The model catalog is unusable.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    /// The accounts could not be set up (credentials, pool file, client).
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// The layers asked for do not fit the accounts.
    #[error("pool: {0}")]
    Pool(String),
    /// The configuration contradicts itself.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The metrics registry could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::metrics::MetricsError),
    /// Redis could not be set up (the URL, or no runtime to connect on).
    #[error("redis: {0}")]
    Redis(String),
}

/// Builds the pipeline for `config`.
pub fn build(config: &Config) -> Result<Pipeline, BuildError> {
    build_with_accounts(config).map(|built| built.pipeline)
}

/// The pipeline and the handles the server keeps beside it.
pub struct Built {
    /// The stack.
    pub pipeline: Pipeline,
    /// The accounts (reload, probes, the console's actions).
    pub accounts: Accounts,
    /// What the status views and the console read: providers, catalog, the journal.
    pub views: crate::api::Views,
}

/// Builds the pipeline for `config`, with the handle that reloads its accounts.
pub fn build_with_accounts(config: &Config) -> Result<Built, BuildError> {
    config.check_layers()?;
    let catalog = match &config.models_file {
        Some(path) => Catalog::from_file(path)?,
        None => Catalog::builtin()?,
    };
    let metrics = Metrics::new()?;
    let redis = match &config.redis {
        Some(settings) => Some(
            crate::replicas::Redis::start(settings.clone(), metrics.meter())
                .map_err(BuildError::Redis)?,
        ),
        None => None,
    };
    // One store of client limits in Redis: the rate-limit layer's, and the leases' (which
    // take its decision in their own round trip).
    let shared_limits = redis.as_ref().map(|redis| {
        Arc::new(crate::replicas::rate_limit::RedisRateLimits::new(
            redis.clone(),
        ))
    });
    let sharing = match &redis {
        Some(redis) => crate::kiro::accounts::Sharing {
            tokens: Some(crate::replicas::tokens::shared(redis.clone())),
            pool: Some(Arc::new(crate::replicas::health::RedisPool::start(
                redis.clone(),
            ))),
            leases: Some(Arc::new(crate::replicas::leases::RedisLeases::start(
                redis.clone(),
                config.request_timeout,
                shared_limits.clone(),
            ))),
        },
        None => crate::kiro::accounts::Sharing::default(),
    };
    let accounts = Accounts::build(config, catalog.clone(), sharing)?;
    let pool = accounts.pool();
    let views = pool.clone();
    let state = ApiState {
        catalog: catalog.clone(),
        max_body_bytes: config.max_body_bytes,
        rate_limited: !config.rate_limit.is_unlimited(),
        providers: vec![ProviderStatus {
            id: config.model_provider.clone(),
            mode: accounts.mode(),
            accounts: accounts.live(),
            pool: Arc::new(move || views.status()),
        }],
        started: Instant::now(),
        responses: match &redis {
            Some(redis) => Arc::new(crate::replicas::responses::RedisResponses::new(
                redis.clone(),
                config.responses_store_max_bytes,
                config.responses_store_ttl,
            )),
            None => Arc::new(crate::api::responses::store::MemoryStore::new(
                config.responses_store_max_bytes,
                config.responses_store_ttl,
            )),
        },
        cors: crate::api::cors::Cors::new(&config.cors_allow_origins),
        credits: crate::api::credits::CreditsCounter::new(metrics.meter()),
        metrics: metrics.clone(),
        journal: config
            .admin_key
            .is_some()
            .then(|| crate::telemetry::journal::Journal::new(config.console_log_bodies)),
        shared_state: redis
            .clone()
            .map(|redis| crate::api::SharedStateView(Arc::new(move || redis.status_json()))),
    };
    crate::api::metrics::observe_accounts(metrics.meter(), &state.providers);
    let views = state.views();
    let metered = config.layer_enabled(PipelineLayer::Metrics);
    let pool = if config.layer_enabled(PipelineLayer::Pool) {
        Either::Left(pool)
    } else {
        Either::Right(accounts.only_leaf().ok_or_else(|| {
            BuildError::Pool("`pool` can be switched off only for a single account".into())
        })?)
    };
    let tier = if config.layer_enabled(PipelineLayer::Retry) {
        Either::Left(RetryLayer::new(config.pool.retry.clone()).layer(pool))
    } else {
        Either::Right(pool)
    };
    // Emulate above the wait: its checks need only the request and the catalog, so a request
    // that breaks a model limit is told so at once, not after waiting for a free account.
    let emulated = EmulateLayer.layer(WaitReadyLayer::new(config.request_timeout).layer(tier));
    let cached = if config.cache.enabled {
        let store: Arc<dyn CacheStore<ChatEvent>> = match &redis {
            Some(redis) => Arc::new(crate::replicas::cache::RedisCache::new(
                redis.clone(),
                config.cache.max_bytes,
                config.cache.ttl,
            )),
            None => Arc::new(MemoryStore::new(config.cache.max_bytes, config.cache.ttl)),
        };
        Either::Left(
            CacheLayer::new(store)
                .with_meter(metrics.meter())
                .layer(emulated),
        )
    } else {
        Either::Right(emulated)
    };
    let measured = if metered {
        Either::Left(ModelMetricsLayer::new(metrics.meter()).layer(cached))
    } else {
        Either::Right(cached)
    };
    let searching = WebSearchLayer.layer(measured);
    let model = ResolveLayer::new(catalog).layer(if config.rate_limit.is_unlimited() {
        Either::Right(searching)
    } else {
        Either::Left(rate_limit_layer(config, &metrics, shared_limits).layer(searching))
    });
    let sensitive: [HeaderName; 4] = [
        AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("x-goog-api-key"),
        COOKIE,
    ];
    let on = |layer| config.layer_enabled(layer);
    let trace = on(PipelineLayer::Trace);
    let request_id = on(PipelineLayer::RequestId);
    let pipeline = ServiceBuilder::new()
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
                        .on_response(ResponseLine),
                )
                .into_inner()
        })))
        .layer(ToggleLayer::new(
            on(PipelineLayer::CatchPanic).then(|| CatchPanicLayer::custom(PanicResponse)),
        ))
        .layer(ToggleLayer::new(metered.then(|| {
            HttpMetricsLayer::new(metrics.meter(), crate::api::route_label)
        })))
        .layer(ToggleLayer::new(on(PipelineLayer::Auth).then(|| {
            let mut auth =
                AuthLayer::new(config.api_keys.iter().map(Secret::expose)).public_path("/health");
            // The adapter answers CORS preflights; browsers send no key on them.
            if !config.cors_allow_origins.is_empty() {
                auth = auth.public_preflights();
            }
            if config.admin_require_key {
                auth
            } else {
                auth.public_path("/loadbalancer/instances")
                    .public_path("/metrics")
            }
        })))
        .layer(ToggleLayer::new(on(PipelineLayer::Route).then(|| {
            RouteLayer::new(&config.model_provider, crate::config::PROVIDERS)
        })))
        .service(ApiService::new(model, state));
    Ok(Built {
        pipeline,
        accounts,
        views,
    })
}

/// The client rate limits of `config`: buckets in Redis when replicas share state (each
/// decision then left to the Kiro service, which makes it in one round trip with an
/// account's lease), else in this process's memory.
fn rate_limit_layer(
    config: &Config,
    metrics: &Metrics,
    shared: Option<Arc<crate::replicas::rate_limit::RedisRateLimits>>,
) -> RateLimitLayer {
    let deferred = shared.is_some();
    let store: Arc<dyn aiproxy_layers::rate_limit::RateLimitStore> = match shared {
        Some(shared) => shared,
        None => Arc::new(aiproxy_layers::rate_limit::MemoryStore::new()),
    };
    let mut layer =
        RateLimitLayer::new(store, config.rate_limit.default).with_meter(metrics.meter());
    if deferred {
        layer = layer.defer_to_leaf();
    }
    for (label, limits) in &config.rate_limit.keys {
        layer = layer.with_override(label.as_str(), *limits);
    }
    layer
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
        // GenAI and HTTP semantic-convention names, so an OTLP backend reads them as such.
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id,
            "gen_ai.provider.name" = tracing::field::Empty,
            "gen_ai.request.model" = tracing::field::Empty,
            account = tracing::field::Empty,
            "aiproxy.attempts" = tracing::field::Empty,
            "gen_ai.usage.input_tokens" = tracing::field::Empty,
            "gen_ai.usage.output_tokens" = tracing::field::Empty,
            "aiproxy.kiro.credits" = tracing::field::Empty,
            "http.response.status_code" = tracing::field::Empty,
        )
    }
}

/// The per-response access line ([`crate::telemetry::access`]): the status and latency, and
/// what the API adapter noted on the response (model, account, usage).
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseLine;

impl<B> OnResponse<B> for ResponseLine {
    fn on_response(
        self,
        response: &Response<B>,
        latency: std::time::Duration,
        _span: &tracing::Span,
    ) {
        let status = response.status().as_u16();
        let note = response.extensions().get::<AccessNote>();
        if let Some(note) = note {
            note.status(status);
        }
        crate::telemetry::access::write_line(status, latency, note);
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
