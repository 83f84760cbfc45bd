//! The Responses API over a socket against `aiproxy fake-kiro`: namespace and custom tools
//! round-tripped, hosted tools dropped and reported, stored responses scoped per API key and
//! expired by their time to live, `max_output_tokens` reported as incomplete, reasoning
//! summaries and `encrypted_content` round-tripped, a mid-stream failure as `error` plus
//! `response.failed`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aiproxy::pipeline::Pipeline;
use common::fake::{request, Fake, Reply};
use common::sse_data;
use serde_json::{json, Value};
use std::time::Duration;

fn live(fake: &Fake, ttl: Duration) -> Pipeline {
    fake.pipeline(|config| {
        config.api_keys = vec!["key-one".into(), "key-two".into()];
        config.responses_store_ttl = ttl;
    })
}

async fn call(
    pipeline: &Pipeline,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> Reply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request(pipeline, method, path, Some(key), body).await
}

async fn create(pipeline: &Pipeline, key: &str, body: Value) -> Reply {
    call(pipeline, "POST", "/v1/responses", key, Some(body)).await
}

fn events(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    sse_data(&reply.body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn namespace_and_custom_tools_round_trip_and_hosted_tools_are_dropped() {
    let fake = Fake::start();
    let pipeline = live(&fake, Duration::from_secs(60));
    fake.script(json!([{"tool_calls": [
        {"name": "github__create_issue", "input": {"title": "bug"}, "id": "call_ns"},
        {"name": "apply_patch", "input": {"input": "*** Begin Patch\n*** End Patch"}, "id": "call_cu"},
    ]}]))
    .await;
    let tools = json!([
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "namespace", "name": "github", "description": "GitHub", "tools": [
            {"type": "function", "name": "create_issue", "parameters": {"type": "object", "properties": {"title": {"type": "string"}}}}
        ]},
        {"type": "custom", "name": "apply_patch", "description": "Apply a patch", "format": {"type": "text"}},
    ]);
    let reply = create(
        &pipeline,
        "key-one",
        json!({"model": "claude-sonnet-4-5", "input": "go", "tools": tools}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["x-aiproxy-dropped-tools"], "file_search");
    let body = reply.json();
    let output: Vec<&Value> = body["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] != "message")
        .collect();
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[0]["name"], "create_issue");
    assert_eq!(output[0]["namespace"], "github");
    assert_eq!(output[1]["type"], "custom_tool_call");
    assert_eq!(output[1]["input"], "*** Begin Patch\n*** End Patch");
    assert_eq!(fake.stats().await["rejected_requests"], 0);

    // The client sends both calls back with their outputs: the names reach Kiro flattened.
    let reply = create(
        &pipeline,
        "key-one",
        json!({
            "model": "claude-sonnet-4-5", "tools": tools,
            "input": [
                {"role": "user", "content": "go"},
                output[0], output[1],
                {"type": "function_call_output", "call_id": "call_ns", "output": "created #1"},
                {"type": "custom_tool_call_output", "call_id": "call_cu", "output": "patched"},
            ],
        }),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["output_text"],
        "Received tool results: call_ns=created #1 (success); call_cu=patched (success)"
    );
    assert_eq!(fake.stats().await["rejected_requests"], 0);
}

#[tokio::test]
async fn stored_responses_are_scoped_per_key_and_expire() {
    let fake = Fake::start();
    let pipeline = live(&fake, Duration::from_millis(400));
    let reply = create(
        &pipeline,
        "key-one",
        json!({"model": "claude-sonnet-4-5", "input": "remember me"}),
    )
    .await;
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/responses/{id}");
    let stored = call(&pipeline, "GET", &path, "key-one", None).await;
    assert_eq!(stored.status, 200);
    assert_eq!(
        stored.json(),
        reply.json(),
        "GET shows the answer as it was sent"
    );
    assert_eq!(
        call(&pipeline, "GET", &path, "key-two", None).await.status,
        404,
        "another key sees nothing"
    );
    let follow =
        json!({"model": "claude-sonnet-4-5", "input": "again", "previous_response_id": id});
    assert_eq!(
        create(&pipeline, "key-two", follow.clone()).await.status,
        400
    );
    let chained = create(&pipeline, "key-one", follow.clone()).await;
    assert_eq!(chained.status, 200, "{}", chained.body);
    let items = call(
        &pipeline,
        "GET",
        &format!("{path}/input_items"),
        "key-one",
        None,
    )
    .await;
    assert_eq!(items.json()["data"][0]["content"][0]["text"], "remember me");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        call(&pipeline, "GET", &path, "key-one", None).await.status,
        404,
        "expired"
    );
    let reply = create(&pipeline, "key-one", follow).await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("expired"), "{}", reply.body);
}

#[tokio::test]
async fn max_output_tokens_makes_the_response_incomplete() {
    let fake = Fake::start();
    let pipeline = live(&fake, Duration::from_secs(60));
    fake.script(json!([{"text": "alpha beta gamma delta"}, {"text": "alpha beta gamma delta"}]))
        .await;
    let body = create(
        &pipeline,
        "key-one",
        json!({"model": "claude-sonnet-4-5", "input": "x", "max_output_tokens": 2}),
    )
    .await
    .json();
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(body["output_text"], "alpha be");
    let reply = create(
        &pipeline,
        "key-one",
        json!({"model": "claude-sonnet-4-5", "input": "x", "max_output_tokens": 2, "stream": true}),
    )
    .await;
    let events = events(&reply);
    assert_eq!(events.last().unwrap()["type"], "response.incomplete");
}

#[tokio::test]
async fn reasoning_summaries_and_encrypted_content_round_trip() {
    let fake = Fake::start();
    let pipeline = live(&fake, Duration::from_secs(60));
    fake.script(json!([{"reasoning": "think about it", "text": "done"}]))
        .await;
    let reply = create(&pipeline, "key-one", json!({
        "model": "claude-sonnet-4-6", "input": "why?", "stream": true,
        "reasoning": {"effort": "high", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
    }))
    .await;
    let events = events(&reply);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"response.reasoning_summary_text.delta"),
        "{kinds:?}"
    );
    let done = events.last().unwrap();
    let reasoning = &done["response"]["output"][0];
    assert_eq!(reasoning["type"], "reasoning");
    assert_eq!(reasoning["summary"][0]["text"], "think about it");
    let sealed = reasoning["encrypted_content"].as_str().unwrap();
    assert!(!sealed.contains("think about it"), "opaque to the client");
    let chat = aiproxy::api::responses::request::parse(
        json!({"model": "m", "input": [reasoning, {"role": "user", "content": "and?"}]})
            .to_string()
            .as_bytes(),
        Default::default(),
    )
    .unwrap()
    .0;
    assert_eq!(
        chat.messages[0].parts,
        vec![aiproxy::chat::Part::Thinking("think about it".into())]
    );
}

#[tokio::test]
async fn a_failure_mid_stream_is_an_error_event_then_response_failed() {
    let fake = Fake::start();
    let pipeline = live(&fake, Duration::from_secs(60));
    let reply = create(
        &pipeline,
        "key-one",
        json!({
            "model": "claude-sonnet-4-5", "stream": true,
            "input": "one two three four\nfake-kiro: {\"truncate_after\": 2}",
        }),
    )
    .await;
    let events = events(&reply);
    let n = events.len();
    assert_eq!(events[n - 2]["type"], "error");
    assert_eq!(events[n - 1]["type"], "response.failed");
    assert_eq!(events[n - 1]["response"]["status"], "failed");
}
