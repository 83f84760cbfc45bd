//! Strict input (hardening issue, item 8): what Kiro would reject or silently misread is a
//! 400 that names the field, before anything goes upstream. In-process through the whole
//! pipeline in mock mode (the parsers and the emulate layer), both APIs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aiproxy::config::Config;
use common::fake::{post_json, Reply};
use serde_json::{json, Value};

const PNG: &str = "iVBORw0KGgo=";

async fn send(path: &str, body: Value) -> Reply {
    let pipeline = aiproxy::pipeline::build(&Config::mock()).unwrap();
    post_json(&pipeline, path, body.to_string()).await
}

async fn openai_user(content: Value, extra: Value) -> Reply {
    let mut body =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": content}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    send("/v1/chat/completions", body).await
}

async fn anthropic_user(content: Value, extra: Value) -> Reply {
    let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": content}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    send("/v1/messages", body).await
}

fn refused(reply: &Reply, param: &str, words: &str) {
    assert_eq!(reply.status, 400, "{}", reply.body);
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "invalid_request_error", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(words), "{message}");
    if let Some(p) = error.get("param").and_then(Value::as_str) {
        assert_eq!(p, param);
    }
}

fn image_url(url: &str) -> Value {
    json!([{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}])
}

fn image_block(media_type: &str, data: &str) -> Value {
    json!([{"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}, {"type": "text", "text": "?"}])
}

#[tokio::test]
async fn images_must_be_real_inline_images_kiro_takes() {
    let ok = openai_user(
        image_url(&format!("data:image/png;base64,{PNG}")),
        json!({}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let path = "messages[0].content[1].image_url";
    refused(
        &openai_user(image_url("https://example.com/cat.png"), json!({})).await,
        path,
        "does not fetch images",
    );
    refused(
        &openai_user(image_url("data:image/png;base64,@@@"), json!({})).await,
        path,
        "not valid base64",
    );
    refused(
        &openai_user(
            image_url(&format!("data:image/tiff;base64,{PNG}")),
            json!({}),
        )
        .await,
        path,
        "image/tiff",
    );

    let ok = anthropic_user(image_block("image/png", PNG), json!({})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let path = "messages[0].content[0].source.data";
    refused(
        &anthropic_user(image_block("image/jpeg", PNG), json!({})).await,
        path,
        "the data is image/png",
    );
    refused(
        &anthropic_user(image_block("application/pdf", PNG), json!({})).await,
        path,
        "application/pdf",
    );
    let remote =
        json!([{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]);
    refused(
        &anthropic_user(remote, json!({})).await,
        "messages[0].content[0].source.url",
        "does not fetch images",
    );
}

#[tokio::test]
async fn tool_schemas_must_be_objects_and_a_forced_tool_must_exist() {
    let tools =
        json!([{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]);
    refused(
        &openai_user(json!("hi"), json!({"tools": tools})).await,
        "tools[0].function.parameters",
        "a JSON Schema object",
    );
    let tools = json!([{"name": "f", "input_schema": [1]}]);
    refused(
        &anthropic_user(json!("hi"), json!({"tools": tools})).await,
        "tools[0].input_schema",
        "a JSON Schema object",
    );
    let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
    refused(
        &anthropic_user(
            json!("hi"),
            json!({"tools": tools, "tool_choice": {"type": "tool", "name": "g"}}),
        )
        .await,
        "tool_choice",
        "`g`",
    );
    refused(
        &anthropic_user(json!("hi"), json!({"max_tokens": 0})).await,
        "max_tokens",
        "at least 1",
    );
}

async fn raw(body: Vec<u8>) -> Reply {
    let pipeline = aiproxy::pipeline::build(&Config::mock()).unwrap();
    post_json(&pipeline, "/v1/chat/completions", body).await
}

#[tokio::test]
async fn json_errors_say_what_is_wrong_and_a_bom_is_accepted() {
    let body =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]});
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(body.to_string().as_bytes());
    assert_eq!(raw(with_bom).await.status, 200);

    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep = format!(r#"{{"model": "m", "messages": {deep}}}"#);
    let reply = raw(deep.into_bytes()).await;
    refused(&reply, "", "nested too deeply");

    let surrogate = r#"{"model": "m", "messages": [{"role": "user", "content": "\ud800"}]}"#;
    refused(
        &raw(surrogate.as_bytes().to_vec()).await,
        "",
        "lone UTF-16 surrogate",
    );
    let trailing = r#"{"model": "m", "messages": [{"role": "user", "content": "\udc00 x"}]}"#;
    refused(
        &raw(trailing.as_bytes().to_vec()).await,
        "",
        "lone UTF-16 surrogate",
    );
}

#[tokio::test]
async fn fields_that_cannot_be_honoured_are_refused_and_sampling_hints_are_named() {
    let refusals = [
        (json!({"logprobs": true}), "logprobs", "token probabilities"),
        (
            json!({"top_logprobs": 3}),
            "top_logprobs",
            "token probabilities",
        ),
        (
            json!({"logit_bias": {"50256": -100}}),
            "logit_bias",
            "token biases",
        ),
        (
            json!({"audio": {"voice": "alloy", "format": "wav"}}),
            "audio",
            "text only",
        ),
        (
            json!({"modalities": ["text", "audio"]}),
            "modalities",
            "text only",
        ),
        (
            json!({"prediction": {"type": "content", "content": "x"}}),
            "prediction",
            "speculative",
        ),
        (
            json!({"web_search_options": {}}),
            "web_search_options",
            "web search",
        ),
    ];
    for (extra, param, words) in refusals {
        refused(&openai_user(json!("hi"), extra).await, param, words);
    }
    refused(
        &anthropic_user(
            json!("hi"),
            json!({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}),
        )
        .await,
        "mcp_servers",
        "MCP",
    );
    // Harmless defaults pass.
    let ok = openai_user(
        json!("hi"),
        json!({"logprobs": false, "logit_bias": {}, "modalities": ["text"]}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(!ok.headers.contains_key("x-aiproxy-not-honoured"));

    let hinted = openai_user(json!("hi"), json!({"temperature": 0.2, "seed": 7})).await;
    assert_eq!(hinted.status, 200);
    assert_eq!(
        hinted.headers["x-aiproxy-not-honoured"],
        "temperature, seed"
    );
    let hinted = anthropic_user(json!("hi"), json!({"top_k": 5})).await;
    assert_eq!(hinted.headers["x-aiproxy-not-honoured"], "top_k");
    let empty = send(
        "/v1/responses",
        json!({"model": "claude-sonnet-4-5", "input": []}),
    )
    .await;
    refused(&empty, "input", "`input` is required");
    let empty = send(
        "/v1/responses/input_tokens",
        json!({"model": "claude-sonnet-4-5"}),
    )
    .await;
    refused(&empty, "input", "`input` is required");
    let responses = send(
        "/v1/responses",
        json!({"model": "claude-sonnet-4-5", "input": "hi", "top_p": 0.5}),
    )
    .await;
    assert_eq!(responses.headers["x-aiproxy-not-honoured"], "top_p");
}
