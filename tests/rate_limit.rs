//! Client rate limits over real sockets: the binary with `--rate-limit-*` (mock mode, or
//! live against `aiproxy fake-kiro` where the upstream's request count is the proof).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::fake::Fake;
use common::{send, temp_dir, Answer, Proxy};
use futures_util::future::join_all;
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::Instant;

fn mock(args: &[&str]) -> Proxy {
    let mut all = vec!["--kiro-mock-mode"];
    all.extend_from_slice(args);
    Proxy::start(&all, &[])
}

fn post(proxy: &Proxy, path: &str, key: &str, body: Value) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{}{path}", proxy.base))
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .body(Full::from(body.to_string()))
        .unwrap()
}

fn chat_body(content: &str, stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "stream": stream,
           "messages": [{"role": "user", "content": content}]})
}

async fn chat(proxy: &Proxy, key: &str, content: &str) -> Answer {
    send(post(
        proxy,
        "/v1/chat/completions",
        key,
        chat_body(content, false),
    ))
    .await
}

fn header(answer: &Answer, name: &str) -> String {
    answer
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", answer.headers))
        .to_str()
        .unwrap()
        .to_owned()
}

fn number(answer: &Answer, name: &str) -> i64 {
    header(answer, name).parse().unwrap()
}

#[tokio::test]
async fn a_burst_passes_then_429_in_both_shapes_with_the_headers() {
    let proxy = mock(&[
        "--api-key",
        "k1",
        "--rate-limit-rpm",
        "60",
        "--rate-limit-burst",
        "2",
    ]);
    let first = chat(&proxy, "k1", "one").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(number(&first, "x-ratelimit-limit-requests"), 60);
    assert_eq!(number(&first, "x-ratelimit-remaining-requests"), 1);
    assert_eq!(header(&first, "x-ratelimit-reset-requests"), "1s");
    assert!(
        first.headers.get("x-ratelimit-limit-tokens").is_none(),
        "tokens are not limited"
    );
    // A stream carries them too (in its headers).
    let streamed = send(post(
        &proxy,
        "/v1/chat/completions",
        "k1",
        chat_body("two", true),
    ))
    .await;
    assert_eq!(streamed.status, 200);
    assert_eq!(number(&streamed, "x-ratelimit-remaining-requests"), 0);

    let refused = chat(&proxy, "k1", "three").await;
    assert_eq!(refused.status, 429);
    let error = &refused.json()["error"];
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["code"], "rate_limit_exceeded");
    let message = error["message"].as_str().unwrap();
    assert!(
        message
            .contains("`key-1` may send 60 requests per minute (bursts of 2); retry in 1 second"),
        "{message}"
    );
    assert!(
        !message.contains("k1"),
        "the key itself never shows: {message}"
    );
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(number(&refused, "x-ratelimit-remaining-requests"), 0);
    assert_eq!(number(&refused, "x-ratelimit-limit-requests"), 60);

    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "four"}]});
    let refused = send(post(&proxy, "/v1/messages", "k1", body)).await;
    assert_eq!(refused.status, 429);
    let answer = refused.json();
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["error"]["type"], "rate_limit_error");
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(number(&refused, "x-ratelimit-remaining-requests"), 0);

    let metrics = common::metrics_text(&proxy.base).await;
    assert!(
        metrics.contains("aiproxy_rate_limit_rejections_total{limit=\"requests\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn tokens_per_minute_are_settled_with_the_real_usage() {
    // 6000 tokens per minute: 100 come back each second.
    let proxy = mock(&["--api-key", "k1", "--rate-limit-tpm", "6000"]);
    let answer_text = "word ".repeat(600);
    let content = format!("hello\nfake-kiro: {}", json!({ "text": answer_text }));
    let started = Instant::now();
    let first = chat(&proxy, "k1", &content).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(number(&first, "x-ratelimit-limit-tokens"), 6000);
    let after_first = number(&first, "x-ratelimit-remaining-tokens");
    let estimate = 6000 - after_first;
    assert!(
        estimate > 0 && estimate < 1500,
        "the prompt's estimate: {estimate}"
    );
    let usage = &first.json()["usage"];
    let used =
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap();
    assert!(used > estimate + 300, "the answer is long: {usage}");

    let second = chat(&proxy, "k1", &content).await;
    assert_eq!(second.status, 200);
    let refill = (started.elapsed().as_secs_f64() * 100.0).ceil() as i64 + 2;
    let after_second = number(&second, "x-ratelimit-remaining-tokens");
    // The first answer's real usage was charged (not its estimate), then the second's
    // estimate.
    let expected = 6000 - used - estimate;
    assert!(
        (expected..=expected + refill).contains(&after_second),
        "remaining {after_second}, expected {expected} (+ up to {refill} refilled)"
    );

    // Larger than a whole minute's budget: refused for good, without a Retry-After.
    let huge = "lorem ipsum dolor ".repeat(4000);
    let refused = chat(&proxy, "k1", &huge).await;
    assert_eq!(refused.status, 429);
    assert!(refused.headers.get("retry-after").is_none());
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("Request too large for `key-1`'s rate limit"),
        "{message}"
    );
}

#[tokio::test]
async fn per_key_overrides_come_from_the_config_file() {
    let dir = temp_dir("rate-limit");
    let config = dir.join("aiproxy.toml");
    std::fs::write(
        &config,
        "api_keys = [\"k1\", { key = \"k2\", rpm = 5, burst = 3 }, { key = \"k3\", rpm = 0 }]\n\
         [kiro]\nkiro_mock_mode = true\n\
         [rate_limit]\nrpm = 60\nburst = 1\n",
    )
    .unwrap();
    let proxy = Proxy::start(&["--config", config.to_str().unwrap()], &[]);
    assert_eq!(chat(&proxy, "k1", "a").await.status, 200);
    assert_eq!(chat(&proxy, "k1", "b").await.status, 429);
    for _ in 0..3 {
        let answer = chat(&proxy, "k2", "c").await;
        assert_eq!(answer.status, 200);
        assert_eq!(number(&answer, "x-ratelimit-limit-requests"), 5);
    }
    assert_eq!(chat(&proxy, "k2", "d").await.status, 429);
    for _ in 0..5 {
        let answer = chat(&proxy, "k3", "e").await;
        assert_eq!(answer.status, 200);
        assert!(answer.headers.get("x-ratelimit-limit-requests").is_none());
    }
    // A bad entry is named at start-up.
    std::fs::write(&config, "api_keys = [{ key = \"k\", rmp = 5 }]\n").unwrap();
    let (code, logs) = common::run_to_exit(&["--config", config.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(logs.contains("an API key string, or a table"), "{logs}");
}

#[tokio::test]
async fn concurrent_clients_of_one_key_never_exceed_the_limit() {
    let fake = Fake::start();
    // One request back per minute: only the burst of 10 can pass during the test.
    let proxy = fake.proxy(
        "social",
        &[
            "--api-key",
            "k1",
            "--rate-limit-rpm",
            "1",
            "--rate-limit-burst",
            "10",
        ],
    );
    let proxy = &proxy;
    let answers = join_all((0..8).map(|w| async move {
        let mut codes = Vec::new();
        for i in 0..5 {
            codes.push(chat(proxy, "k1", &format!("hello {w} {i}")).await.status);
        }
        codes
    }))
    .await;
    let codes: Vec<u16> = answers.into_iter().flatten().collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 30, "{codes:?}");
    assert_eq!(
        fake.stats().await["generate_calls"],
        10,
        "the upstream saw only the burst"
    );
}
