//! Credits per request (Kiro's `meteringEvent`, docs/kiro-protocol.md §14.4) over real sockets to
//! `aiproxy fake-kiro`: the header, every API's usage, the metric, the account's view; and the
//! two quota refusals told apart in the account's state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::{instances, post_json, request, Fake};
use serde_json::{json, Value};

fn directive(step: Value) -> String {
    format!("fake-kiro: {step}")
}

#[tokio::test]
async fn each_answers_credits_reach_the_client_the_metric_and_the_account() {
    let fake = Fake::start();
    let pipeline = fake.pipeline(|_| {});
    let content = directive(json!({"text": "priced", "credits": 0.25}));
    // Non-stream: the header and the usage extension, in each API.
    let anthropic = post_json(
        &pipeline,
        "/v1/messages",
        json!({"model": "claude-sonnet-4-5", "max_tokens": 50,
               "messages": [{"role": "user", "content": content}]})
        .to_string(),
    )
    .await;
    assert_eq!(anthropic.status, 200, "{}", anthropic.body);
    assert_eq!(anthropic.headers["x-aiproxy-credits"], "0.25");
    assert_eq!(anthropic.json()["usage"]["kiro_credits"], 0.25);
    let chat = post_json(
        &pipeline,
        "/v1/chat/completions",
        common::chat_body(&content, false),
    )
    .await;
    assert_eq!(chat.headers["x-aiproxy-credits"], "0.25");
    assert_eq!(chat.json()["usage"]["kiro_credits"], 0.25);
    let responses = post_json(
        &pipeline,
        "/v1/responses",
        json!({"model": "claude-sonnet-4-5", "input": content}).to_string(),
    )
    .await;
    assert_eq!(responses.headers["x-aiproxy-credits"], "0.25");
    assert_eq!(responses.json()["usage"]["kiro_credits"], 0.25);
    // A stream carries them in its last usage.
    let streamed = post_json(
        &pipeline,
        "/v1/messages",
        json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": true,
               "messages": [{"role": "user", "content": content}]})
        .to_string(),
    )
    .await;
    let delta = common::sse_data(&streamed.body)
        .iter()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["usage"]["kiro_credits"], 0.25, "{delta}");
    // An answer without a meteringEvent has none.
    let free = post_json(
        &pipeline,
        "/v1/chat/completions",
        common::chat_body(&directive(json!({"text": "free", "credits": 0})), false),
    )
    .await;
    assert!(free.headers.get("x-aiproxy-credits").is_none());
    assert!(free.json()["usage"].get("kiro_credits").is_none());

    let metrics = request(&pipeline, "GET", "/metrics", None, "").await.body;
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("aiproxy_kiro_credits_total{"))
        .collect();
    let sum: f64 = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-9, "four answers of 0.25: {lines:?}");
    let sonnet = lines
        .iter()
        .find(|l| l.contains(r#"gen_ai_request_model="claude-sonnet-4-5""#))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(sonnet.contains(r#"account="creds.json""#), "{sonnet}");
    assert!(sonnet.contains(r#"api_key="anonymous""#), "{sonnet}");
    assert!(
        sonnet.ends_with(" 0.75"),
        "three answers of 0.25 on that model: {sonnet}"
    );
    let instances = instances(&pipeline).await;
    assert_eq!(instances[0]["credits_spent"], 1.0, "{instances}");
}

#[tokio::test]
async fn the_monthly_quota_and_the_overage_limit_are_told_apart() {
    for (reason, state_reason, words) in [
        (
            "MONTHLY_REQUEST_COUNT",
            "quota_exhausted",
            "monthly request quota",
        ),
        (
            "OVERAGE_REQUEST_LIMIT_EXCEEDED",
            "overage_limit",
            "overage limit",
        ),
    ] {
        let fake = Fake::start();
        let pipeline = fake.pipeline(|config| config.pool.retry.max_retries = 0);
        let content = directive(json!({"status": 402, "reason": reason}));
        let reply = post_json(
            &pipeline,
            "/v1/chat/completions",
            common::chat_body(&content, false),
        )
        .await;
        assert!(reply.body.contains(words), "{reason}: {}", reply.body);
        let instances = instances(&pipeline).await;
        assert_eq!(instances[0]["state"], "disabled", "{instances}");
        assert_eq!(instances[0]["reason"], state_reason, "{instances}");
    }
}
