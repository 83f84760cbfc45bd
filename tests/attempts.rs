//! Every upstream call is an attempt the retry layer sees (README: "Upstream calls per
//! request"), and the pool never refuses for Kiro's own faults while it has accounts that
//! could serve: aiproxy (the binary) against `aiproxy fake-kiro` over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake::Fake;
use common::{metrics_text, send, Answer, Proxy};
use http_body_util::Full;
use serde_json::{json, Value};

async fn post(proxy: &Proxy, path: &str, body: Value) -> Answer {
    common::post_json(&proxy.base, path, &body).await
}

async fn get(proxy: &Proxy, path: &str) -> Answer {
    send(
        http::Request::get(format!("{}{path}", proxy.base))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

fn thinking_turn(content: Value) -> Value {
    json!({"model": "claude-opus-4-8", "max_tokens": 2000, "thinking": {"type": "adaptive"},
           "messages": content})
}

/// A conversation whose second turn replays the first answer's reasoning with a signature
/// Kiro never gave, so Kiro refuses it until it is sent inline.
async fn forged_second_turn(proxy: &Proxy) -> Value {
    let first = post(
        proxy,
        "/v1/messages",
        thinking_turn(json!([{"role": "user", "content": "plan it"}])),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    thinking_turn(json!([
        {"role": "user", "content": "plan it"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": first["content"][0]["thinking"], "signature": "fake-sig-0000"},
            {"type": "text", "text": first["content"][1]["text"]}]},
        {"role": "user", "content": "go on"}]))
}

/// Fails each way once, in this order: a rejected access token (refresh and resend), the
/// refused signature (resend inline), an empty turn (resend with the reminder), a 500
/// (retry after a backoff); then answers.
async fn script_each_way_once(fake: &Fake) {
    fake.script(json!([
        {"expire_tokens": true},
        {},
        {"text": "", "reasoning": ""},
        {"status": 500},
    ]))
    .await;
}

fn calls(stats: &Value) -> u64 {
    stats["generate_calls"].as_u64().unwrap()
}

fn counter(metrics: &str, kind: &str, outcome: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("aiproxy_upstream_attempts_total{"))
        .filter(|l| l.contains(&format!("kind=\"{kind}\"")))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn every_upstream_call_is_an_attempt_the_retry_layer_counts() {
    let fake = Fake::start();
    let mut proxy = fake.proxy_with_env(
        "social",
        &["--max-retries", "4", "--retry-base-delay-ms", "5"],
        &[("RUST_LOG", "info")],
    );
    let second = forged_second_turn(&proxy).await;
    let before = fake.stats().await;
    script_each_way_once(&fake).await;
    let answer = post(&proxy, "/v1/messages", second).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.json()["content"][1]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.starts_with("go on"), "{text}");
    assert!(
        text.contains("Your previous reply was empty"),
        "the last attempt still carried the reminder: {text}"
    );
    let after = fake.stats().await;
    assert_eq!(
        calls(&after) - calls(&before),
        5,
        "1 + --max-retries upstream calls, each one an attempt"
    );
    assert_eq!(answer.headers["x-aiproxy-attempts"], "5");
    assert_eq!(
        after["refresh_calls"].as_u64().unwrap() - before["refresh_calls"].as_u64().unwrap(),
        1,
        "one refresh, for the rejected token"
    );
    assert_eq!(after["rejected_requests"], 0, "{}", after["last_violation"]);

    let metrics = metrics_text(&proxy.base).await;
    for (kind, outcome) in [
        ("first", "token_rejected"),
        ("refresh", "signature_refused"),
        ("inline_reasoning", "empty_turn"),
        ("nudge", "upstream_error"),
        ("retry", "ok"),
    ] {
        assert_eq!(counter(&metrics, kind, outcome), 1, "{kind} {outcome}");
    }
    let logs = proxy.stop_and_logs();
    let line = logs
        .lines()
        .find(|l| l.contains("aiproxy.attempts="))
        .unwrap_or_else(|| panic!("no log line lists the attempts: {logs}"));
    for kind in [
        "first token_rejected",
        "refresh signature_refused",
        "inline_reasoning empty_turn",
        "nudge upstream_error",
        "retry ok",
    ] {
        assert!(line.contains(kind), "{kind} in {line}");
    }
}

#[tokio::test]
async fn the_retry_settings_cap_the_upstream_calls_of_a_request() {
    let fake = Fake::start();
    let proxy = fake.proxy("social", &["--retry-base-delay-ms", "5"]);
    let second = forged_second_turn(&proxy).await;
    let before = calls(&fake.stats().await);
    script_each_way_once(&fake).await;
    // The default --max-retries 3: four calls, and the fourth's 500 is the answer.
    let answer = post(&proxy, "/v1/messages", second.clone()).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(calls(&fake.stats().await) - before, 4);

    // Without the retry layer there is nothing that calls again: one call per request, and
    // a rejected token is refreshed for the next request.
    let fake = Fake::start();
    let proxy = fake.proxy("social", &["--disable-layers", "retry"]);
    let first = post(
        &proxy,
        "/v1/messages",
        thinking_turn(json!([{"role": "user", "content": "hi"}])),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let before = calls(&fake.stats().await);
    fake.script(json!([{"expire_tokens": true}])).await;
    let answer = post(
        &proxy,
        "/v1/messages",
        thinking_turn(json!([{"role": "user", "content": "hi"}])),
    )
    .await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(
        answer.text().contains("has been refreshed"),
        "{}",
        answer.text()
    );
    let next = post(
        &proxy,
        "/v1/messages",
        thinking_turn(json!([{"role": "user", "content": "hi"}])),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(calls(&fake.stats().await) - before, 2);
}

#[tokio::test]
async fn one_account_serves_again_after_a_run_of_kiro_5xx() {
    let fake = Fake::start();
    let proxy = fake.proxy("social", &["--retry-base-delay-ms", "5"]);
    let chat = |text: &str| {
        post(
            &proxy,
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": text}]}),
        )
    };
    fake.script(Value::Array(vec![json!({"status": 500}); 8]))
        .await;
    // Each failed request is an honest 502 after 4 calls; together they open the breaker
    // (5 failures).
    for _ in 0..2 {
        let answer = chat("x").await;
        assert_eq!(answer.status, 502, "{}", answer.text());
    }
    let instances = get(&proxy, "/loadbalancer/instances").await.json();
    assert_eq!(instances[0]["state"], "open");
    assert_eq!(instances[0]["pool_panic"], true);
    assert_eq!(instances[0]["usable"], true, "panic mode sends it traffic");
    let health = get(&proxy, "/health").await;
    assert_eq!(health.status, 200, "panic mode is degraded, not down");
    let health = health.json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["providers"][0]["panic"], true);

    // Kiro is back: the next request is served, not refused, and closes the breaker.
    let answer = chat("back again").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let instances = get(&proxy, "/loadbalancer/instances").await.json();
    assert_eq!(instances[0]["state"], "healthy");
    assert_eq!(instances[0]["pool_panic"], false);
    assert_eq!(get(&proxy, "/health").await.json()["status"], "ok");
    let metrics = metrics_text(&proxy.base).await;
    let panics: u64 = metrics
        .lines()
        .find(|l| l.starts_with("aiproxy_pool_panic_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .unwrap_or_else(|| panic!("no panic counter: {metrics}"));
    assert!(panics >= 1, "{panics}");
}
