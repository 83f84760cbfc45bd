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

/// A one-route OTLP/HTTP receiver: every `POST /v1/traces` body, decoded, goes to the channel.
async fn receiver() -> (
    String,
    mpsc::UnboundedReceiver<(String, ExportTraceServiceRequest)>,
) {
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
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        let _ = sender.send((path, export));
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

#[tokio::test]
async fn the_request_span_reaches_an_otlp_receiver_with_its_genai_attributes() {
    let (endpoint, mut received) = receiver().await;
    let proxy = Proxy::start(
        &["--kiro-mock-mode", "--api-key", "secret-key-1"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
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
            let (path, export) = received.recv().await.unwrap();
            assert_eq!(path, "/v1/traces");
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
                    let service = export.resource_spans[0]
                        .resource
                        .as_ref()
                        .unwrap()
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.clone())
                        .and_then(|v| v.value);
                    assert_eq!(service, Some(AnyValue::StringValue("aiproxy".into())));
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
    expect("http.response.status_code", "200".into());
    expect(
        "gen_ai.usage.input_tokens",
        usage["prompt_tokens"].to_string(),
    );
    expect(
        "gen_ai.usage.output_tokens",
        usage["completion_tokens"].to_string(),
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
