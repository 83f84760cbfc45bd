//! Trace export over OTLP/HTTP: the binary (mock mode) with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! pointing at a local OTLP receiver in this test, which decodes the protobuf export and
//! looks for the request span and its attributes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{send, Proxy};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the receiver got: the path, the `x-collector-token` header, the decoded export.
type Received = (String, Option<String>, ExportTraceServiceRequest);

/// A one-route OTLP/HTTP receiver: every `POST /v1/traces` body, decoded, goes to the channel.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let sender = sender.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let content_type = request
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        assert_eq!(content_type, "application/x-protobuf");
                        let token = request
                            .headers()
                            .get("x-collector-token")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        let _ = sender.send((path, token, export));
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{address}"), received)
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// `key`'s value when it is an integer attribute (`None` for any other type or none).
fn int_attribute(span: &Span, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|value| match value {
            AnyValue::IntValue(i) => Some(*i),
            _ => None,
        })
}

/// The `service.name` of an export's first resource.
fn service_name(export: &ExportTraceServiceRequest) -> Option<AnyValue> {
    export.resource_spans[0]
        .resource
        .as_ref()?
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

/// Request spans from the exports received until `quiet` passes without one.
async fn request_spans(
    received: &mut mpsc::UnboundedReceiver<Received>,
    quiet: Duration,
) -> Vec<(ExportTraceServiceRequest, usize)> {
    let mut exports = Vec::new();
    while let Ok(Some((_, _, export))) = tokio::time::timeout(quiet, received.recv()).await {
        let count = export
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|span| span.name == "request")
            .count();
        exports.push((export, count));
    }
    exports
}

/// Sends `n` chat requests to `proxy`, each with its own trace.
async fn chats(proxy: &Proxy, n: usize) {
    let body = json!({"model": "claude-sonnet-4-5",
                      "messages": [{"role": "user", "content": "sample me"}]});
    for _ in 0..n {
        let answer = send(
            http::Request::post(format!("{}/v1/chat/completions", proxy.base))
                .header("content-type", "application/json")
                .body(Full::from(body.to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
}

#[tokio::test]
async fn the_service_is_named_by_the_otel_variables_and_aiproxy_only_without_them() {
    for (envs, expected) in [
        (vec![("OTEL_SERVICE_NAME", "my-proxy")], "my-proxy"),
        (
            vec![(
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,service.name=from-attributes",
            )],
            "from-attributes",
        ),
        (
            vec![
                ("OTEL_SERVICE_NAME", "name-wins"),
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=attribute-loses"),
            ],
            "name-wins",
        ),
        (vec![], "aiproxy"),
    ] {
        let (endpoint, mut received) = receiver().await;
        let mut all = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ];
        all.extend(envs.iter().copied());
        let proxy = Proxy::start(&["--kiro-mock-mode"], &all);
        chats(&proxy, 1).await;
        let (_, _, export) = tokio::time::timeout(Duration::from_secs(20), received.recv())
            .await
            .expect("nothing exported")
            .unwrap();
        assert_eq!(
            service_name(&export),
            Some(AnyValue::StringValue(expected.into())),
            "with {envs:?}"
        );
    }
}

#[tokio::test]
async fn the_sampler_and_batch_variables_apply() {
    // A quarter of the traces, by trace id: over 300 requests the count is binomial
    // (mean 75, standard deviation 7.5), so 30..=120 is six deviations either side.
    let (endpoint, mut received) = receiver().await;
    let proxy = Proxy::start(
        &["--kiro-mock-mode"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "7"),
        ],
    );
    chats(&proxy, 300).await;
    let exports = request_spans(&mut received, Duration::from_secs(3)).await;
    let sampled: usize = exports.iter().map(|(_, count)| count).sum();
    assert!(
        (30..=120).contains(&sampled),
        "{sampled} of 300 sampled at 0.25"
    );
    // Every export holds at most OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans.
    let largest = exports
        .iter()
        .map(|(export, _)| {
            export
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum::<usize>()
        })
        .max()
        .unwrap_or_default();
    assert!(largest <= 7, "an export of {largest} spans");

    let (endpoint, mut received) = receiver().await;
    let proxy = Proxy::start(
        &["--kiro-mock-mode"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    chats(&proxy, 20).await;
    let exports = request_spans(&mut received, Duration::from_secs(2)).await;
    assert_eq!(
        exports.iter().map(|(_, c)| c).sum::<usize>(),
        0,
        "always_off exports nothing"
    );
}

#[tokio::test]
async fn the_request_span_reaches_an_otlp_receiver_with_its_genai_attributes() {
    let (endpoint, mut received) = receiver().await;
    let proxy = Proxy::start(
        &["--kiro-mock-mode", "--api-key", "secret-key-1"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-collector-token=collector-t0k",
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let body = json!({"model": "claude-sonnet-4-5",
                      "messages": [{"role": "user", "content": "trace me"}]});
    let answer = send(
        http::Request::post(format!("{}/v1/chat/completions", proxy.base))
            .header("content-type", "application/json")
            .header("authorization", "Bearer secret-key-1")
            .header("x-request-id", "trace-test-1")
            .body(Full::from(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["x-request-id"], "trace-test-1");
    let usage = answer.json()["usage"].clone();

    let span = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (path, token, export) = received.recv().await.unwrap();
            assert_eq!(path, "/v1/traces");
            assert_eq!(
                token.as_deref(),
                Some("collector-t0k"),
                "OTEL_EXPORTER_OTLP_HEADERS"
            );
            let spans = export
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans);
            for span in spans {
                if span.name == "request"
                    && attributes(span).get("request_id").map(String::as_str)
                        == Some("trace-test-1")
                {
                    assert_eq!(
                        service_name(&export),
                        Some(AnyValue::StringValue("aiproxy".into()))
                    );
                    return span.clone();
                }
            }
        }
    })
    .await
    .expect("no request span reached the receiver");
    let attributes = attributes(&span);
    let expect = |key: &str, value: String| {
        assert_eq!(attributes.get(key), Some(&value), "{key} in {attributes:?}");
    };
    expect("gen_ai.request.model", "claude-sonnet-4-5".into());
    expect("gen_ai.provider.name", "kiro-api".into());
    expect("account", "mock".into());
    expect("method", "POST".into());
    expect("path", "/v1/chat/completions".into());
    // Numbers are exported as integers (the GenAI and HTTP conventions), not as text.
    let int = |key: &str| match int_attribute(&span, key) {
        Some(value) => value,
        None => panic!("{key} is not an integer attribute: {:?}", span.attributes),
    };
    assert_eq!(int("http.response.status_code"), 200);
    assert_eq!(
        int("gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        int("gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().unwrap()
    );
    // The credits of the answer (the fake's meteringEvent: 0.01), as a number.
    let credits = span
        .attributes
        .iter()
        .find(|kv| kv.key == "aiproxy.kiro.credits");
    assert!(
        matches!(credits.and_then(|kv| kv.value.as_ref()?.value.as_ref()), Some(AnyValue::DoubleValue(d)) if (*d - 0.01).abs() < 1e-9),
        "{:?}",
        span.attributes
    );
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    let everything = format!("{span:?}");
    assert!(
        !everything.contains("secret-key-1"),
        "the key never reaches a span"
    );
}

#[tokio::test]
async fn an_unsupported_protocol_is_named_at_start_up() {
    let mut proxy = Proxy::start(
        &["--kiro-mock-mode"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    let logs = proxy.stop_and_logs();
    assert!(
        logs.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"),
        "{logs}"
    );
}
