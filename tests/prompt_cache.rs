//! Prompt caching over real sockets (docs/kiro-protocol.md §13.1): Anthropic `cache_control`
//! marks become Kiro `cachePoint` entries among the tools, within the model's checkpoint
//! limit, and the cache figures Kiro reports come back in the usage. aiproxy in live mode
//! against `aiproxy fake-kiro`, which refuses stray or surplus checkpoints and caches the
//! prefix before the last one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::Fake;
use common::send;
use http_body_util::Full;
use serde_json::{json, Value};

fn tool(name: &str, marked: bool) -> Value {
    let mut tool = json!({"name": name, "description": format!("the {name} tool"),
                          "input_schema": {"type": "object", "properties": {}}});
    if marked {
        tool["cache_control"] = json!({"type": "ephemeral"});
    }
    tool
}

fn body(model: &str, tools: Vec<Value>) -> Value {
    json!({"model": model, "max_tokens": 4096,
           "system": [{"type": "text", "text": "You are a careful assistant. ".repeat(40),
                       "cache_control": {"type": "ephemeral"}}],
           "tools": tools,
           "messages": [{"role": "user", "content": [
               {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}]}]})
}

async fn messages(proxy: &common::Proxy, body: &Value) -> Value {
    let answer = send(
        http::Request::post(format!("{}/v1/messages", proxy.base))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(Full::from(body.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

#[tokio::test]
async fn cache_marks_become_cache_points_and_the_cache_figures_come_back() {
    let fake = Fake::start();
    let proxy = fake.proxy("social", &[]);
    let request = body(
        "claude-sonnet-4-6",
        vec![tool("a", false), tool("b", true), tool("c", false)],
    );
    let first = messages(&proxy, &request).await;
    let stats = fake.stats().await;
    assert_eq!(stats["rejected_requests"], 0, "{}", stats["last_violation"]);
    // After `b`, and after the last tool for the system and message marks.
    assert_eq!(stats["last_cache_points"], 2);
    let written = first["usage"]["cache_creation_input_tokens"]
        .as_u64()
        .unwrap();
    assert!(written > 0, "{first}");
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0);

    let second = messages(&proxy, &request).await;
    assert_eq!(
        second["usage"]["cache_read_input_tokens"].as_u64().unwrap(),
        written,
        "the same prefix is read from the cache: {second}"
    );
    assert_eq!(second["usage"]["cache_creation_input_tokens"], 0);
}

#[tokio::test]
async fn marks_beyond_the_models_limit_are_dropped_and_models_without_caching_get_none() {
    let fake = Fake::start();
    let proxy = fake.proxy("social", &[]);
    // Six marked tools and the prompt marks: the model takes four checkpoints.
    let tools: Vec<Value> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|name| tool(name, true))
        .collect();
    messages(&proxy, &body("claude-sonnet-4-6", tools.clone())).await;
    let stats = fake.stats().await;
    assert_eq!(stats["rejected_requests"], 0, "{}", stats["last_violation"]);
    assert_eq!(stats["last_cache_points"], 4);

    // A model that does not cache: no checkpoint at all (Kiro would refuse one).
    messages(&proxy, &body("deepseek-3.2", tools)).await;
    let stats = fake.stats().await;
    assert_eq!(stats["rejected_requests"], 0, "{}", stats["last_violation"]);
    assert_eq!(stats["last_cache_points"], 0);
}
