//! The metrics layers against scriptable services, read back through a real Prometheus
//! registry.

use super::*;
use crate::model::{Attempts, StreamEnd, StreamReport, TokenUsage};
use crate::testing::{MockAccount, MockError, MockRequest};
use crate::ProviderId;
use http::{Request, Response, StatusCode};
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};
use std::convert::Infallible;
use std::time::Duration;
use tower::{service_fn, Layer, Service, ServiceExt};

struct Registry {
    registry: prometheus::Registry,
    _provider: SdkMeterProvider,
    meter: opentelemetry::metrics::Meter,
}

impl Registry {
    fn new() -> Self {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("test");
        Self {
            registry,
            _provider: provider,
            meter,
        }
    }

    fn text(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The value of the one series whose line starts with `prefix`.
    fn value(&self, prefix: &str) -> f64 {
        let text = self.text();
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

fn routes(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "/v1/chat/completions",
        _ => "other",
    }
}

/// The inner service's answer: on the chat route, the provider and `clock` (the upstream
/// waits); anywhere else 404.
fn chat_or_not_found(request: &Request<()>, clock: UpstreamClock) -> Response<()> {
    let mut response = Response::new(());
    if request.uri().path() == "/v1/chat/completions" {
        response
            .extensions_mut()
            .insert(ProviderId::new("kiro-api"));
        response.extensions_mut().insert(clock);
    } else {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}

#[tokio::test]
async fn http_requests_are_counted_by_route_status_and_provider_with_overhead() {
    let registry = Registry::new();
    let layer = HttpMetricsLayer::new(&registry.meter, routes);
    let mut service = layer.layer(service_fn(|request: Request<()>| async move {
        let clock = UpstreamClock::default();
        if request.uri().path() == "/v1/chat/completions" {
            clock.add(Duration::from_millis(3));
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        Ok::<_, Infallible>(chat_or_not_found(&request, clock))
    }));
    let ok = service
        .ready()
        .await
        .unwrap()
        .call(Request::post("/v1/chat/completions").body(()).unwrap())
        .await
        .unwrap();
    let overhead: f64 = ok.headers()["x-aiproxy-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        overhead >= 1.0,
        "4 ms in all, 3 of them upstream: {overhead}"
    );
    for invented in ["/a", "/b", "/c"] {
        let missing = service
            .ready()
            .await
            .unwrap()
            .call(Request::get(invented).body(()).unwrap())
            .await
            .unwrap();
        assert!(missing.headers().get("x-aiproxy-overhead-ms").is_none());
    }
    assert_eq!(
        registry.value(
            r#"http_server_request_duration_seconds_count{provider="kiro-api",route="/v1/chat/completions",status_class="2xx"}"#
        ),
        1.0
    );
    // Invented paths share one label.
    assert_eq!(
        registry.value(
            r#"http_server_request_duration_seconds_count{provider="none",route="other",status_class="4xx"}"#
        ),
        3.0
    );
    assert_eq!(
        registry.value(r#"overhead_seconds_count{route="/v1/chat/completions"}"#),
        1.0
    );
    assert_eq!(registry.value("http_server_active_requests"), 0.0);
}

#[tokio::test]
async fn a_request_abandoned_before_its_headers_leaves_the_in_flight_count_right() {
    let registry = Registry::new();
    let layer = HttpMetricsLayer::new(&registry.meter, routes);
    let mut service = layer.layer(service_fn(|_: Request<()>| async move {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(()))
    }));
    let call = service.call(Request::get("/v1/chat/completions").body(()).unwrap());
    assert_eq!(registry.value("http_server_active_requests"), 1.0);
    drop(call);
    assert_eq!(registry.value("http_server_active_requests"), 0.0);
}

fn model_request() -> MockRequest {
    let mut request = MockRequest::default();
    request.extensions.insert(ProviderId::new("kiro-api"));
    request
        .extensions
        .insert(ModelLabel(std::sync::Arc::from("claude-sonnet-4-5")));
    request
}

const LABELS: &str = r#"gen_ai_provider_name="kiro-api",gen_ai_request_model="claude-sonnet-4-5""#;

#[tokio::test]
async fn model_operations_record_duration_first_token_tokens_streams_and_retries() {
    let registry = Registry::new();
    let account = MockAccount::new("a");
    let mut service = ModelMetricsLayer::new(&registry.meter).layer(account.clone());
    let mut response = service.call(model_request()).await.unwrap();
    let attempts = Attempts::default();
    attempts.record("a".into());
    attempts.record("b".into());
    response.extensions.insert(attempts);
    assert_eq!(registry.value("active_streams"), 1.0);
    response.end_with(StreamReport {
        end: StreamEnd::Complete,
        error_kind: None,
        duration: Duration::from_millis(30),
        time_to_first_event: Some(Duration::from_millis(10)),
        usage: Some(TokenUsage {
            input: 100,
            output: 7,
            cache_read: 40,
            cache_write: 0,
            estimated: false,
            credits: 0.0,
        }),
    });
    assert_eq!(registry.value("active_streams"), 0.0);
    assert_eq!(
        registry.value(&format!(
            "gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"chat\",{LABELS}}}"
        )),
        1.0
    );
    assert_eq!(
        registry.value(&format!(
            "gen_ai_server_time_to_first_token_seconds_count{{{LABELS}}}"
        )),
        1.0
    );
    for (kind, count) in [("input", 100.0), ("output", 7.0), ("cache_read", 40.0)] {
        assert_eq!(
            registry.value(&format!(
                "gen_ai_client_token_usage_sum{{estimated=\"false\",{LABELS},gen_ai_token_type=\"{kind}\"}}"
            )),
            count
        );
    }
    // The attempts were put on the response after the layer saw it, so no retry counted.
    assert!(!registry.text().contains("retries_total{"));
}

#[tokio::test]
async fn retries_are_counted_from_the_attempts_on_the_response() {
    let registry = Registry::new();
    let inner = tower::service_fn(|request: MockRequest| {
        let mut account = MockAccount::new("a");
        async move {
            let mut response = account.call(request).await?;
            let attempts = Attempts::default();
            attempts.record("a".into());
            attempts.record("b".into());
            attempts.record("c".into());
            response.extensions.insert(attempts);
            Ok::<_, MockError>(response)
        }
    });
    let mut service = ModelMetricsLayer::new(&registry.meter).layer(inner);
    let response = service.call(model_request()).await.unwrap();
    response.end(StreamEnd::Complete);
    assert_eq!(registry.value(&format!("retries_total{{{LABELS}}}")), 2.0);
}

#[tokio::test]
async fn failures_are_labelled_with_their_kind_and_abandoned_streams_apart() {
    let registry = Registry::new();
    let account = MockAccount::new("a");
    account.script(Err(MockError::upstream()));
    let mut service = ModelMetricsLayer::new(&registry.meter).layer(account.clone());
    assert!(service.call(model_request()).await.is_err());
    let response = service.call(model_request()).await.unwrap();
    drop(response);
    let text = registry.text();
    assert!(
        text.contains(&format!(
            "gen_ai_client_operation_duration_seconds_count{{error_type=\"mock\",gen_ai_operation_name=\"chat\",{LABELS}}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "gen_ai_client_operation_duration_seconds_count{{error_type=\"abandoned\",gen_ai_operation_name=\"chat\",{LABELS}}} 1"
        )),
        "{text}"
    );
    assert_eq!(registry.value("active_streams"), 0.0);
}

#[tokio::test]
async fn an_operation_names_itself_in_its_label() {
    let registry = Registry::new();
    let mut service = ModelMetricsLayer::new(&registry.meter).layer(MockAccount::new("a"));
    let mut request = model_request();
    request
        .extensions
        .insert(crate::metrics::OperationName("search"));
    let response = service.call(request).await.unwrap();
    response.end(StreamEnd::Complete);
    assert_eq!(
        registry.value(&format!(
            "gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"search\",{LABELS}}}"
        )),
        1.0
    );
}

/// The deterministic lines of the exported text: everything but durations' sums and
/// buckets (times differ between runs).
fn counted(text: &str) -> Vec<String> {
    let timed = [
        "duration_seconds",
        "overhead_seconds",
        "first_token_seconds",
    ];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| !timed.iter().any(|t| l.contains(t)) || l.contains("_count{"))
        .map(str::to_owned)
        .collect()
}

/// The same model operations through a layer binding at most `max_sets` label sets.
async fn model_operations_text(max_sets: usize) -> Vec<String> {
    let registry = Registry::new();
    let account = MockAccount::new("a");
    let layer = ModelMetricsLayer::with_max_bound_sets(&registry.meter, max_sets);
    let mut service = layer.layer(account.clone());
    let usage = |input, estimated| TokenUsage {
        input,
        output: 3,
        cache_read: 0,
        cache_write: input / 2,
        estimated,
        credits: 0.0,
    };
    for (round, (model, estimated)) in [
        ("claude-sonnet-4-5", false),
        ("claude-sonnet-4-5", false),
        ("claude-haiku-4-5", true),
        ("claude-sonnet-4-5", true),
        ("claude-haiku-4-5", false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = model_request();
        request
            .extensions
            .insert(ModelLabel(std::sync::Arc::from(model)));
        let attempts = Attempts::default();
        attempts.record("a".into());
        if round >= 3 {
            // A first attempt that failed (bound only when it succeeds), then a retry.
            attempts.settle(Some("upstream"));
            attempts.plan(crate::model::RETRY, false);
            attempts.record("b".into());
        }
        request.extensions.insert(attempts);
        let response = service.call(request).await.unwrap();
        response.end_with(StreamReport {
            end: StreamEnd::Complete,
            error_kind: None,
            duration: Duration::from_millis(5),
            time_to_first_event: Some(Duration::from_millis(1)),
            usage: Some(usage(10 * (round as u64 + 1), estimated)),
        });
    }
    account.script(Err(MockError::upstream()));
    assert!(service.call(model_request()).await.is_err());
    counted(&registry.text())
}

/// `text(max_sets)` is the same with no label set bound, one, and all of them, and has a
/// line containing `expected`.
async fn same_bound_or_not<F, Fut>(text: F, expected: &str)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let unbound = text(0).await;
    assert!(
        unbound.iter().any(|l| l.contains(expected)),
        "{expected} in {unbound:?}"
    );
    assert_eq!(text(1).await, unbound, "one set bound");
    assert_eq!(text(64).await, unbound, "all bound");
}

#[tokio::test]
async fn bound_handles_export_what_records_with_attributes_export() {
    let unbound = model_operations_text(0).await;
    assert!(
        !unbound.iter().any(|l| l.contains("cache_read")),
        "zero cache reads are not recorded: {unbound:?}"
    );
    same_bound_or_not(model_operations_text, "upstream_attempts_total").await;

    let http_text = |max_sets| async move {
        let registry = Registry::new();
        let layer = HttpMetricsLayer::with_max_bound_sets(&registry.meter, routes, max_sets);
        let mut service = layer.layer(service_fn(|request: Request<()>| async move {
            Ok::<_, Infallible>(chat_or_not_found(&request, UpstreamClock::default()))
        }));
        for path in ["/v1/chat/completions", "/x", "/v1/chat/completions", "/y"] {
            let request = Request::post(path).body(()).unwrap();
            service.ready().await.unwrap().call(request).await.unwrap();
        }
        counted(&registry.text())
    };
    same_bound_or_not(http_text, "overhead_seconds_count").await;
}
