//! The Anthropic surface of the pipeline, in-process against the built-in fake Kiro.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aiproxy::config::Config;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(request: Request<Full<Bytes>>) -> (u16, http::HeaderMap, String) {
    let config = Config {
        api_keys: vec!["k".into()],
        ..Config::mock()
    };
    let response = aiproxy::pipeline::build(&config)
        .unwrap()
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn post(path: &str, body: Value) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .header("content-type", "application/json")
        .body(Full::from(body.to_string()))
        .unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn messages_non_stream() {
    let (status, _, body) = call(post(
        "/v1/messages",
        json!({
            "model": "claude-haiku-4-5", "max_tokens": 50,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]
        }),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "hi there"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
}

#[tokio::test]
async fn errors_use_the_anthropic_shape_and_status() {
    let cases = [
        (
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
            "/v1/models",
        ),
        (
            json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x\nfake-kiro: {\"status\": 429}"}]}),
            429,
            "rate_limit_error",
            "rate limiting",
        ),
        (
            json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x\nfake-kiro: {\"status\": 500}"}]}),
            502,
            "api_error",
            "500",
        ),
        (
            json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x\nfake-kiro: {\"status\": 403, \"reason\": \"suspended\"}"}]}),
            503,
            "overloaded_error",
            "suspended",
        ),
    ];
    for (body, status, kind, needle) in cases {
        let (got, _, text) = call(post("/v1/messages", body.clone())).await;
        assert_eq!(got, status, "{body} -> {text}");
        let error = json(&text);
        assert_eq!(error["type"], "error");
        assert_eq!(error["error"]["type"], kind, "{text}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(needle),
            "{text}"
        );
    }
    let mut request = post("/v1/messages", json!({}));
    request
        .headers_mut()
        .insert("x-api-key", "wrong".parse().unwrap());
    let (status, _, text) = call(request).await;
    assert_eq!(
        (status, json(&text)["error"]["type"].as_str()),
        (401, Some("authentication_error"))
    );
}

#[tokio::test]
async fn stream_ends_with_message_stop_and_truncation_with_an_error_event() {
    let (status, headers, body) = call(post(
        "/v1/messages",
        json!({
            "model": "claude-haiku-4-5", "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "a b"}]
        }),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(body.starts_with("event: message_start\n"));
    assert!(body
        .trim_end()
        .ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}"));

    let (_, _, body) = call(post(
        "/v1/messages",
        json!({
            "model": "claude-haiku-4-5", "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "a b c\nfake-kiro: {\"truncate_after\": 1}"}]
        }),
    ))
    .await;
    assert!(body.contains("event: error"), "{body}");
    assert!(!body.contains("message_stop"));
}

#[tokio::test]
async fn count_tokens_is_local_and_checks_the_model() {
    let (status, _, body) = call(post(
        "/v1/messages/count_tokens",
        json!({
            "model": "claude-sonnet-4-6", "system": "You are terse.",
            "messages": [{"role": "user", "content": "How many tokens is this?"}]
        }),
    ))
    .await;
    assert_eq!(status, 200);
    let n = json(&body)["input_tokens"].as_u64().unwrap();
    assert!((10..40).contains(&n), "{n}");
    let (status, _, body) = call(post(
        "/v1/messages/count_tokens",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    ))
    .await;
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn models_in_anthropic_shape_when_asked_the_anthropic_way() {
    let request = Request::get("/v1/models")
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .body(Full::default())
        .unwrap();
    let (status, _, body) = call(request).await;
    assert_eq!(status, 200);
    let body = json(&body);
    assert_eq!(body["has_more"], false);
    assert_eq!(body["data"][0]["type"], "model");
    assert!(body["data"][0]["created_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(body["first_id"], body["data"][0]["id"]);
}

#[tokio::test]
async fn estimated_usage_is_flagged() {
    // An answer that ends with ContentLengthExceededException is complete but carries no
    // metadataEvent, so its usage is a local estimate.
    let (status, headers, body) = call(post("/v1/messages", json!({
        "model": "claude-haiku-4-5", "max_tokens": 50,
        "messages": [{"role": "user", "content": "long\nfake-kiro: {\"exception\": \"ContentLengthExceededException\"}"}]
    })))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["stop_reason"], "max_tokens");
    assert_eq!(headers["x-aiproxy-usage"], "estimated");
    let (_, headers, _) = call(post("/v1/messages", json!({
        "model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]
    })))
    .await;
    assert!(
        !headers.contains_key("x-aiproxy-usage"),
        "upstream usage is not an estimate"
    );
}
