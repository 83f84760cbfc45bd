//! Web search through Kiro's MCP endpoint (docs/kiro-protocol.md §14.1), over real sockets to
//! `aiproxy fake-kiro`: every way a search fails is the API's own search error result, never
//! a failed request; searches go through retry and the pool and are measured as `search`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::{post_json, request, Fake};
use common::send;
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::Duration;

fn search_request(query: &str, stream: bool) -> String {
    json!({
        "model": "claude-sonnet-4-5", "max_tokens": 200, "stream": stream,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}],
        "tool_choice": {"type": "tool", "name": "web_search"},
        "messages": [{"role": "user", "content": format!("Perform a web search for the query: {query}")}],
    })
    .to_string()
}

/// The error code of the answer's search result block, or `ok` with the results.
fn search_outcome(body: &Value) -> String {
    let result = body["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|block| block["type"] == "web_search_tool_result")
        .unwrap_or_else(|| panic!("no search result in {body}"));
    match &result["content"] {
        Value::Array(hits) => format!("ok:{}", hits.len()),
        error => {
            assert_eq!(error["type"], "web_search_tool_result_error");
            error["error_code"].as_str().unwrap().to_owned()
        }
    }
}

#[tokio::test]
async fn every_search_failure_is_a_search_error_result_and_the_model_still_answers() {
    let fake = Fake::start();
    let pipeline = fake.pipeline(|config| {
        config.pool.retry.max_retries = 1;
        config.pool.retry.base_delay = Duration::from_millis(1);
        config.request_timeout = Duration::from_secs(1);
    });
    let cases = [
        // JSON-RPC errors and 5xx are the upstream's: retried once, then unavailable.
        (
            json!([{"rpc_error": "boom"}, {"rpc_error": "boom"}]),
            "unavailable",
        ),
        (json!([{"status": 500}, {"status": 503}]), "unavailable"),
        (json!({"is_error": true}), "unavailable"),
        // Slower than the first-byte timeout.
        (
            json!([{"delay_ms": 2500}, {"delay_ms": 2500}]),
            "unavailable",
        ),
        // One failure, then the retry finds the results.
        (json!({"status": 500}), "ok:3"),
        // Last: it rests the account for its Retry-After.
        (
            json!([{"status": 429}, {"status": 429}]),
            "too_many_requests",
        ),
    ];
    for (steps, expected) in cases {
        fake.control("/__fake/search", steps.clone()).await;
        let reply = post_json(&pipeline, "/v1/messages", search_request("q", false)).await;
        assert_eq!(reply.status, 200, "{steps}: {}", reply.body);
        let body = reply.json();
        assert_eq!(search_outcome(&body), expected, "{steps}: {body}");
        let last = body["content"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["type"], "text", "the model answered: {body}");
        if expected != "ok:3" {
            assert!(
                last["text"].as_str().unwrap().contains("failed ("),
                "the model was told the search failed: {last}"
            );
        }
    }
    assert_eq!(fake.stats().await["rejected_requests"], 0);
}

#[tokio::test]
async fn searches_are_measured_as_their_own_operation_and_streamed_as_blocks() {
    let fake = Fake::start();
    let pipeline = fake.pipeline(|_| {});
    let reply = post_json(&pipeline, "/v1/messages", search_request("streamed", true)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let starts: Vec<Value> = common::sse_data(&reply.body)
        .iter()
        .map(|data| serde_json::from_str::<Value>(data).unwrap())
        .filter(|event| event["type"] == "content_block_start")
        .map(|event| event["content_block"]["type"].clone())
        .collect();
    assert_eq!(
        starts,
        [
            json!("server_tool_use"),
            json!("web_search_tool_result"),
            json!("text")
        ]
    );
    assert!(reply
        .body
        .contains(r#""server_tool_use":{"web_search_requests":1}"#));
    assert_eq!(fake.stats().await["last_search_query"], "streamed");
    let metrics = request(&pipeline, "GET", "/metrics", None, "").await.body;
    let search = metrics
        .lines()
        .find(|line| {
            line.starts_with("aiproxy_gen_ai_client_operation_duration_seconds_count{")
                && line.contains(r#"gen_ai_operation_name="search""#)
        })
        .unwrap_or_else(|| panic!("no search operation in\n{metrics}"));
    assert!(search.ends_with(" 1"), "{search}");
}

#[tokio::test]
async fn the_fake_refuses_a_search_call_that_breaks_kiros_rules() {
    let fake = Fake::start();
    let token = send(
        http::Request::post(fake.url("/refreshToken"))
            .body(Full::from(json!({"refreshToken": "rt-x"}).to_string()))
            .unwrap(),
    )
    .await
    .json()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = |body: Value, arn: bool| {
        let mut request = http::Request::post(fake.url("/mcp"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("user-agent", "aws-sdk-js/1.0 KiroIDE-0.9-m")
            .header("x-amz-user-agent", "aws-sdk-js/1.0 KiroIDE-0.9-m")
            .header("amz-sdk-invocation-id", "1");
        if arn {
            request = request.header(
                "x-amzn-kiro-profile-arn",
                "arn:aws:codewhisperer:us-east-1:1:profile/X",
            );
        }
        request.body(Full::from(body.to_string())).unwrap()
    };
    let good = json!({"id": "web_search_tooluse_a", "jsonrpc": "2.0", "method": "tools/call",
        "params": {"name": "web_search", "arguments": {"query": "q"}}});
    let answer = send(call(good.clone(), true)).await;
    assert_eq!(answer.status, 200);
    let text = answer.json()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let results: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(results["results"].as_array().unwrap().len(), 3);
    let no_arn = send(call(good, false)).await;
    assert_eq!(no_arn.status, 400);
    assert!(no_arn.text().contains("profileArn is required"));
    let bad_id = json!({"id": 7, "jsonrpc": "2.0", "method": "tools/call",
        "params": {"name": "web_search", "arguments": {"query": "q"}}});
    assert_eq!(send(call(bad_id, true)).await.status, 400);
    assert_eq!(fake.stats().await["rejected_requests"], 2);
}
