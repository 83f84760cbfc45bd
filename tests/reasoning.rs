//! Native reasoning over real sockets (docs/kiro-protocol.md §13.1, §13.2): aiproxy in live mode
//! against `aiproxy fake-kiro`, whose model list says which models take
//! `additionalModelRequestFields` and at which effort levels, and which signs its reasoning
//! and checks the signatures of replayed reasoning as Kiro does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::Fake;
use common::{sse_data, Answer, Proxy};
use serde_json::{json, Value};

fn start(fake: &Fake) -> Proxy {
    fake.proxy("social", &[])
}

async fn post(proxy: &Proxy, path: &str, body: Value) -> Answer {
    common::post_json(&proxy.base, path, &body).await
}

async fn messages(proxy: &Proxy, body: Value) -> Value {
    let answer = post(proxy, "/v1/messages", body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

fn adaptive(model: &str, effort: &str, content: Value) -> Value {
    json!({"model": model, "max_tokens": 2000, "thinking": {"type": "adaptive"},
           "output_config": {"effort": effort},
           "messages": [{"role": "user", "content": content}]})
}

async fn stats(fake: &Fake) -> Value {
    fake.stats().await
}

#[tokio::test]
async fn native_reasoning_follows_each_models_capabilities() {
    let fake = Fake::start();
    let proxy = start(&fake);

    // Opus 4.8 takes xhigh: sent as asked, answered with signed reasoning.
    let answer = messages(
        &proxy,
        adaptive("claude-opus-4-8", "xhigh", json!("plan it")),
    )
    .await;
    assert_eq!(
        stats(&fake).await["last_additional_fields"],
        json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}})
    );
    let thinking = &answer["content"][0];
    assert_eq!(thinking["type"], "thinking");
    assert_eq!(thinking["thinking"], "Thinking about: plan it");
    assert!(
        thinking["signature"]
            .as_str()
            .unwrap()
            .starts_with("fake-sig-"),
        "{answer}"
    );
    assert_eq!(
        answer["content"][1]["text"], "plan it",
        "no thinking tags in the text"
    );

    // Sonnet 4.6 stops at high below max: xhigh is clamped to high; a budget maps to a level.
    messages(&proxy, adaptive("claude-sonnet-4-6", "xhigh", json!("x"))).await;
    assert_eq!(
        stats(&fake).await["last_additional_fields"]["output_config"]["effort"],
        "high"
    );
    let budget = json!({"model": "claude-sonnet-4-6", "max_tokens": 2000,
                        "thinking": {"type": "enabled", "budget_tokens": 2048},
                        "messages": [{"role": "user", "content": "y"}]});
    messages(&proxy, budget).await;
    assert_eq!(
        stats(&fake).await["last_additional_fields"]["output_config"]["effort"],
        "low"
    );

    // Sonnet 4.5 has no native reasoning: no field (Kiro would refuse it), the tags instead,
    // and the answer's thinking comes unsigned.
    let answer = messages(&proxy, adaptive("claude-sonnet-4-5", "high", json!("z"))).await;
    let after = stats(&fake).await;
    assert_eq!(after["last_additional_fields"], Value::Null);
    assert_eq!(answer["content"][0]["type"], "thinking");
    assert_eq!(answer["content"][0]["signature"], "");
    assert_eq!(after["rejected_requests"], 0, "{}", after["last_violation"]);
}

#[tokio::test]
async fn chat_completions_reasoning_effort_is_native_reasoning_like_the_responses_apis() {
    let fake = Fake::start();
    let proxy = start(&fake);
    let chat = |effort: &str| {
        json!({"model": "claude-opus-4-7", "reasoning_effort": effort,
               "messages": [{"role": "user", "content": "think it over"}]})
    };
    let answer = post(&proxy, "/v1/chat/completions", chat("high")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        stats(&fake).await["last_additional_fields"],
        json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}})
    );
    let message = &answer.json()["choices"][0]["message"];
    assert_eq!(message["content"], "think it over", "{message}");
    // `none` (and `minimal`) think not at all: no field.
    let answer = post(&proxy, "/v1/chat/completions", chat("none")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(stats(&fake).await["last_additional_fields"], Value::Null);
    // A level OpenAI does not have is a 400 that names the field and the levels.
    let refused = post(&proxy, "/v1/chat/completions", chat("extreme")).await;
    assert_eq!(refused.status, 400);
    let error = &refused.json()["error"];
    assert_eq!(error["param"], "reasoning_effort");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("low, medium, high"),
        "{error}"
    );
}

#[tokio::test]
async fn a_stream_sends_the_signature_as_a_signature_delta() {
    let fake = Fake::start();
    let proxy = start(&fake);
    let mut body = adaptive("claude-opus-4-8", "high", json!("stream it"));
    body["stream"] = json!(true);
    let answer = post(&proxy, "/v1/messages", body).await;
    assert_eq!(answer.status, 200);
    let events: Vec<Value> = sse_data(&answer.text())
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let signature = events
        .iter()
        .find(|e| e["delta"]["type"] == "signature_delta")
        .expect("a signature_delta")["delta"]["signature"]
        .clone();
    assert!(signature.as_str().unwrap().starts_with("fake-sig-"));
    // The thinking block closes after its signature; the text is the next block.
    let text_start = events
        .iter()
        .find(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == "text")
        .unwrap();
    assert_eq!(text_start["index"], 1);
}

/// A second turn that replays the first answer's thinking block with `signature`.
fn second_turn(first: &Value, signature: &str) -> Value {
    let thinking = &first["content"][0];
    json!({"model": "claude-opus-4-8", "max_tokens": 2000, "thinking": {"type": "adaptive"},
           "messages": [
               {"role": "user", "content": "plan it"},
               {"role": "assistant", "content": [
                   {"type": "thinking", "thinking": thinking["thinking"], "signature": signature},
                   {"type": "text", "text": first["content"][1]["text"]}]},
               {"role": "user", "content": "go on"}]})
}

#[tokio::test]
async fn signed_thinking_is_replayed_natively_and_a_refused_signature_is_retried_inline() {
    let fake = Fake::start();
    let proxy = start(&fake);
    let first = messages(
        &proxy,
        adaptive("claude-opus-4-8", "high", json!("plan it")),
    )
    .await;
    let signature = first["content"][0]["signature"]
        .as_str()
        .unwrap()
        .to_owned();

    let calls = stats(&fake).await["generate_calls"].as_u64().unwrap();
    messages(&proxy, second_turn(&first, &signature)).await;
    let after = stats(&fake).await;
    assert_eq!(
        after["signatures_verified"], 1,
        "the signature went back to Kiro"
    );
    assert_eq!(after["generate_calls"].as_u64().unwrap(), calls + 1);

    // A signature Kiro did not give (another account's, a client's edit): refused once,
    // then sent again with the reasoning inline; the client sees a normal answer.
    let answer = messages(&proxy, second_turn(&first, "fake-sig-0000")).await;
    assert_eq!(answer["content"][1]["text"], "go on");
    let after = stats(&fake).await;
    assert_eq!(after["signatures_refused"], 1);
    assert_eq!(after["generate_calls"].as_u64().unwrap(), calls + 3);
    assert_eq!(after["rejected_requests"], 0, "{}", after["last_violation"]);
}

#[tokio::test]
async fn the_responses_api_carries_the_signature_in_encrypted_content() {
    let fake = Fake::start();
    let proxy = start(&fake);
    let first = post(
        &proxy,
        "/v1/responses",
        json!({"model": "claude-opus-4-8", "input": "plan it",
               "reasoning": {"effort": "high"}, "include": ["reasoning.encrypted_content"],
               "store": false}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    let reasoning = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "reasoning")
        .cloned()
        .unwrap();
    assert!(reasoning["encrypted_content"].is_string(), "{first}");
    let message = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "message")
        .cloned()
        .unwrap();
    let again = post(
        &proxy,
        "/v1/responses",
        json!({"model": "claude-opus-4-8", "reasoning": {"effort": "high"}, "store": false,
               "input": [{"role": "user", "content": "plan it"}, reasoning, message,
                         {"role": "user", "content": "go on"}]}),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(stats(&fake).await["signatures_verified"], 1);
}

#[tokio::test]
async fn encrypted_reasoning_is_shown_as_redacted_thinking_and_replayed_as_it_came() {
    let fake = Fake::start();
    let proxy = start(&fake);
    fake.script(json!({"redacted_reasoning": "the hidden plan"}))
        .await;
    let first = messages(
        &proxy,
        adaptive("claude-opus-4-8", "high", json!("plan it")),
    )
    .await;
    let redacted = &first["content"][0];
    assert_eq!(redacted["type"], "redacted_thinking", "{first}");
    let data = redacted["data"].as_str().unwrap().to_owned();
    assert!(!data.contains("hidden plan"), "opaque to the client");
    assert_eq!(first["content"][1]["type"], "thinking");
    assert_eq!(first["content"][2]["text"], "plan it");

    // In a stream: a block of its own, whole in its start event.
    fake.script(json!({"redacted_reasoning": "the hidden plan"}))
        .await;
    let mut body = adaptive("claude-opus-4-8", "high", json!("stream it"));
    body["stream"] = json!(true);
    let answer = post(&proxy, "/v1/messages", body).await;
    let events: Vec<Value> = sse_data(&answer.text())
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let start = events
        .iter()
        .position(|e| e["content_block"]["type"] == "redacted_thinking")
        .expect("a redacted_thinking block");
    assert_eq!(events[start]["content_block"]["data"], data.as_str());
    assert_eq!(events[start + 1]["type"], "content_block_stop");
    assert_eq!(events[start + 1]["index"], events[start]["index"]);

    // Sent back with the turn, it reaches Kiro as the turn's redactedContent.
    let replay = |data: &str| {
        json!({"model": "claude-opus-4-8", "max_tokens": 2000, "thinking": {"type": "adaptive"},
               "messages": [
                   {"role": "user", "content": "plan it"},
                   {"role": "assistant", "content": [
                       {"type": "redacted_thinking", "data": data},
                       {"type": "text", "text": "plan it"}]},
                   {"role": "user", "content": "go on"}]})
    };
    messages(&proxy, replay(&data)).await;
    let after = stats(&fake).await;
    assert_eq!(after["signatures_verified"], 1, "{after}");
    assert_eq!(after["signatures_refused"], 0);
    // Ciphertext Kiro did not make (another provider's): refused once, then the turn goes
    // without it.
    let answer = messages(&proxy, replay("bm90IGtpcm8ncw==.fake-sig-0000")).await;
    assert_eq!(answer["content"][1]["text"], "go on");
    let after = stats(&fake).await;
    assert_eq!(after["signatures_refused"], 1);
    assert_eq!(after["rejected_requests"], 0, "{}", after["last_violation"]);
}
