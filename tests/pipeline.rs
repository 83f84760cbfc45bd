//! The whole pipeline, in-process (`tower::ServiceExt::oneshot`) against the built-in fake Kiro.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aiproxy::config::Config;
use bytes::Bytes;
use common::sse_data;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "your-api-key";

fn config() -> Config {
    Config {
        api_keys: vec![KEY.into()],
        ..Config::mock()
    }
}

async fn call_with(
    config: &Config,
    request: Request<Full<Bytes>>,
) -> (u16, http::HeaderMap, String) {
    let pipeline = aiproxy::pipeline::build(config).unwrap();
    let response = pipeline.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn call(request: Request<Full<Bytes>>) -> (u16, http::HeaderMap, String) {
    call_with(&config(), request).await
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("authorization", format!("Bearer {KEY}"))
        .header("x-model-provider", "kiro-api")
        .body(Full::default())
        .unwrap()
}

fn post(path: &str, body: impl Into<String>) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("authorization", format!("Bearer {KEY}"))
        .header("x-model-provider", "kiro-api")
        .header("content-type", "application/json")
        .body(Full::from(body.into()))
        .unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn models_lists_the_seed_ids() {
    let (status, headers, body) = call(get("/v1/models")).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-request-id"));
    let body = json(&body);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        "claude-3-opus-20240229",
        "claude-3-sonnet-20240229",
        "claude-3-haiku-20240307",
        "claude-sonnet-4-5",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model" && m["owned_by"] == "kiro" && m["created"].is_u64()));
}

#[tokio::test]
async fn chat_completion_echoes_through_the_fake() {
    let body = json!({"model": "claude-3-sonnet-20240229", "messages": [{"role": "user", "content": "Hello, Claude!"}], "max_tokens": 100});
    let (status, _, text) = call(post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, 200, "{text}");
    let body = json(&text);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude-3-sonnet-20240229");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello, Claude!");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        body["usage"]["total_tokens"].as_u64().unwrap(),
        body["usage"]["prompt_tokens"].as_u64().unwrap()
            + body["usage"]["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn stream_sends_role_deltas_finish_usage_and_done() {
    let body = json!({
        "model": "claude-3-sonnet-20240229",
        "messages": [{"role": "user", "content": "Count from 1 to 5"}],
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let (status, headers, text) = call(post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| json(d)).collect();
    let id = chunks[0]["id"].clone();
    assert!(chunks.iter().all(|c| c["id"] == id));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Count from 1 to 5");
    assert!(
        chunks.len() > 4,
        "one chunk per upstream event, not one big chunk"
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn multi_turn_with_system_and_developer_messages() {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second question"}
        ]
    });
    let (status, _, text) = call(post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, 200, "{text}");
    // With history, the system prompt goes in front of the first user turn, so the echo of
    // the current turn is the bare question.
    assert_eq!(
        json(&text)["choices"][0]["message"]["content"],
        "second question"
    );
}

#[tokio::test]
async fn path_prefix_selects_the_provider() {
    let mut request = get("/kiro-api/v1/models");
    request.headers_mut().remove("x-model-provider");
    let (status, _, _) = call(request).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wrong_or_missing_key_is_401() {
    let mut request = get("/v1/models");
    request
        .headers_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    let (status, _, body) = call(request).await;
    assert_eq!(status, 401);
    assert_eq!(json(&body)["error"]["code"], "invalid_api_key");

    let mut request = get("/v1/models");
    request.headers_mut().remove("authorization");
    let (status, _, body) = call(request).await;
    assert_eq!(status, 401);
    assert!(json(&body)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Missing API key"));

    let mut request = get("/health");
    request.headers_mut().remove("authorization");
    assert_eq!(call(request).await.0, 200, "/health is public");
}

#[tokio::test]
async fn unknown_provider_is_400_naming_the_known_ones() {
    let mut request = get("/v1/models");
    request
        .headers_mut()
        .insert("x-model-provider", "gemini-cli".parse().unwrap());
    let (status, _, body) = call(request).await;
    assert_eq!(status, 400);
    let message = json(&body)["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("gemini-cli") && message.contains("kiro-api"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_field() {
    let cases = [
        ("{\"model\": ", None, "not valid JSON"),
        ("[1,2]", None, "JSON object"),
        (
            r#"{"messages": [{"role":"user","content":"x"}]}"#,
            Some("model"),
            "`model` is required",
        ),
        (
            r#"{"model": "claude-sonnet-4-5"}"#,
            Some("messages"),
            "`messages` is required",
        ),
        (
            r#"{"model": "claude-sonnet-4-5", "messages": []}"#,
            Some("messages"),
            "at least one",
        ),
        (
            r#"{"model": 7, "messages": []}"#,
            Some("model"),
            "must be a string",
        ),
        (
            r#"{"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": {"a": 1}}]}"#,
            Some("messages[0].content"),
            "an object",
        ),
        (
            r#"{"model": "claude-sonnet-4-5", "messages": [{"content": "x"}]}"#,
            Some("messages[0].role"),
            "is required",
        ),
        (
            r#"{"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#,
            Some("stream"),
            "a boolean",
        ),
    ];
    for (body, param, needle) in cases {
        let (status, _, text) = call(post("/v1/chat/completions", body)).await;
        assert_eq!(status, 400, "{body} -> {text}");
        let error = &json(&text)["error"];
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"].as_str(), param, "{body} -> {text}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{body} -> {text}"
        );
    }
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]});
    let (status, _, text) = call(post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, 404);
    let error = &json(&text)["error"];
    assert_eq!(error["code"], "model_not_found");
    assert!(error["message"].as_str().unwrap().contains("/v1/models"));
}

#[tokio::test]
async fn oversized_body_is_413() {
    let config = Config {
        max_body_bytes: 1024,
        ..config()
    };
    let body = common::chat_body(&"x".repeat(2048), false);
    let (status, _, text) = call_with(&config, post("/v1/chat/completions", body)).await;
    assert_eq!(status, 413);
    assert!(text.contains("--max-body-bytes"));
}

#[tokio::test]
async fn context_overflow_is_worded_so_clients_compact() {
    // 600 kB passes our body limit, but CJK weighs 8 in Kiro's payload limit (§13.1):
    // 1.8 M weighted units, over what Kiro accepts (the local guard says so).
    let body = common::chat_body(&"字 ".repeat(200_000), false);
    let (status, _, text) = call(post("/v1/chat/completions", body)).await;
    assert_eq!(status, 400, "{text}");
    let error = &json(&text)["error"];
    assert_eq!(error["param"], "messages");
    assert_eq!(error["code"], "context_length_exceeded");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long: "));
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let (status, _, text) = call(get("/v1/files")).await;
    assert_eq!(status, 404);
    assert!(text.contains("/v1/chat/completions") && text.contains("/v1/responses"));
    let (status, _, text) = call(get("/v1/embeddings")).await;
    assert_eq!(status, 404);
    assert!(text.contains("no embeddings"), "{text}");
    let (status, headers, _) = call(get("/v1/responses")).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    let (status, headers, _) = call(get("/v1/chat/completions")).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    // The same table says what each served route takes.
    let (status, headers, _) = call(post("/v1/models/claude-sonnet-4-5", "{}")).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, headers, _) = call(post("/v1/responses/resp_1/input_items", "{}")).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, _, _) = call(get("/v2/responses/x/input_items")).await;
    assert_eq!(status, 404, "only the served route's suffix");
}

#[tokio::test]
async fn open_mode_without_keys() {
    let config = Config::mock();
    let request = Request::get("/v1/models").body(Full::default()).unwrap();
    assert_eq!(call_with(&config, request).await.0, 200);
}

#[tokio::test]
async fn every_switchable_layer_can_be_turned_off() {
    use aiproxy::config::PipelineLayer::*;
    let all_off = Config {
        disabled_layers: vec![RequestId, Trace, CatchPanic, Auth, Route],
        ..Config::mock()
    };
    let body =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]});
    let (status, headers, text) =
        call_with(&all_off, post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["choices"][0]["message"]["content"], "hi");
    assert!(
        !headers.contains_key("x-request-id"),
        "request-id layer is off"
    );
    // Without the route layer a /{provider}/ prefix is not understood any more.
    assert_eq!(call_with(&all_off, get("/kiro-api/v1/models")).await.0, 404);

    let (_, headers, _) = call(get("/v1/models")).await;
    assert!(headers.contains_key("x-request-id"), "on by default");
    let only_auth_off = Config {
        disabled_layers: vec![Auth],
        ..Config::mock()
    };
    let request = Request::get("/kiro-api/v1/models")
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = call_with(&only_auth_off, request).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-request-id"));
    // Keys with auth switched off would go unchecked: refused, also for code-built configs.
    let error = aiproxy::pipeline::build(&Config {
        api_keys: vec![KEY.into()],
        ..only_auth_off
    })
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("`auth` cannot be switched off"), "{error}");
}

#[tokio::test]
async fn no_credentials_and_no_mock_mode_refuses_to_build() {
    let error = aiproxy::pipeline::build(&Config::default())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("KIRO_MOCK_MODE=true"), "{error}");
}

#[tokio::test]
async fn a_models_file_replaces_the_catalog() {
    let dir =
        std::env::temp_dir().join(format!("aiproxy-models-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("models.toml");
    std::fs::write(&path, "[[model]]\nid = \"house-model\"\nkiro_model_id = \"claude-haiku-4.5\"\ncreated = 1\ncontext_window = 200000\n").unwrap();
    let config = Config {
        models_file: Some(path.clone()),
        ..config()
    };
    let (status, _, body) = call_with(&config, get("/v1/models")).await;
    assert_eq!(status, 200);
    let ids: Vec<String> = json(&body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec!["house-model"]);
    let chat = json!({"model": "house-model", "messages": [{"role": "user", "content": "via the custom catalog"}]});
    let (status, _, body) =
        call_with(&config, post("/v1/chat/completions", chat.to_string())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["model"], "house-model");

    std::fs::write(&path, "[[model]]\nid = \"x\"\n").unwrap();
    let error = aiproxy::pipeline::build(&config).err().unwrap().to_string();
    assert!(
        error.contains("models.toml") && error.contains("kiro_model_id"),
        "{error}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_full_account_answers_503_busy_not_an_upstream_timeout() {
    let config = Config {
        max_connections: 1,
        request_timeout: std::time::Duration::from_secs(1),
        ..config()
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    // The only slot is held by an open stream (its body not yet read).
    let open = pipeline
        .clone()
        .oneshot(post(
            "/v1/chat/completions",
            common::chat_body("hold the slot", true),
        ))
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    assert_eq!(open.headers()["x-aiproxy-account"], "mock");
    let response = pipeline
        .clone()
        .oneshot(post("/v1/chat/completions", common::chat_body("x", false)))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error = &json(std::str::from_utf8(&body).unwrap())["error"];
    assert_eq!(error["code"], "capacity_exhausted");
    // A request that breaks the model's limits is told so at once, not after the wait (it
    // would be the same 503 if it waited for the slot that stays held).
    let over = json!({"model": "claude-sonnet-4-5", "max_tokens": 10_000_000,
                      "messages": [{"role": "user", "content": "x"}]});
    let response = pipeline
        .clone()
        .oneshot(post("/v1/chat/completions", over.to_string()))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error = &json(std::str::from_utf8(&body).unwrap())["error"];
    assert_eq!(error["param"], "max_tokens", "{error}");
    // So is a conversation over the model's context window (about 270 000 tokens).
    let long = json!({"model": "claude-sonnet-4-5",
                      "messages": [{"role": "user", "content": "lorem ipsum dolor sit amet ".repeat(40_000)}]});
    let response = pipeline
        .clone()
        .oneshot(post("/v1/chat/completions", long.to_string()))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error = &json(std::str::from_utf8(&body).unwrap())["error"];
    assert_eq!(error["code"], "context_length_exceeded", "{error}");
    // The stream ends, the slot comes back.
    let _ = open.into_body().collect().await.unwrap();
    let again = pipeline
        .oneshot(post("/v1/chat/completions", common::chat_body("x", false)))
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn request_ids_are_bounded() {
    let with_id = |id: &str| {
        let mut request = get("/v1/models");
        request
            .headers_mut()
            .insert("x-request-id", http::HeaderValue::from_str(id).unwrap());
        request
    };
    let (_, headers, _) = call(with_id("client-trace-42")).await;
    assert_eq!(
        headers["x-request-id"], "client-trace-42",
        "a sane id is kept"
    );
    let long = "x".repeat(129);
    let (_, headers, _) = call(with_id(&long)).await;
    let fresh = headers["x-request-id"].to_str().unwrap();
    assert_ne!(fresh, long, "an id over 128 characters is replaced");
    assert_eq!(fresh.len(), 36, "by a fresh UUID: {fresh}");
    let (_, headers, _) = call(with_id("two words")).await;
    assert_ne!(headers["x-request-id"], "two words", "only visible ASCII");
}

#[tokio::test]
async fn a_model_is_retrieved_by_id_in_either_shape() {
    let (status, _, body) = call(get("/v1/models/claude-sonnet-4-5")).await;
    assert_eq!(status, 200, "{body}");
    let model = json(&body);
    assert_eq!(model["id"], "claude-sonnet-4-5");
    assert_eq!(model["object"], "model");
    let mut request = get("/v1/models/claude-sonnet-4-5");
    request.headers_mut().insert(
        "anthropic-version",
        http::HeaderValue::from_static("2023-06-01"),
    );
    let (status, _, body) = call(request).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["type"], "model");
    let (status, _, body) = call(get("/v1/models/gpt-4")).await;
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["code"], "model_not_found");
}
