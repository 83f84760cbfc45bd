//! The answer cache over real sockets: aiproxy (the binary, `--cache-enabled` as the product
//! guide starts it) in live mode against `aiproxy fake-kiro`, whose request count says when
//! an answer came from the cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::fake::Fake;
use common::{send, sse_data, Answer, Proxy};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEYS: [&str; 4] = ["--api-key", "k1", "--api-key", "k2"];

fn start(fake: &Fake) -> Proxy {
    let mut args = vec!["--cache-enabled", "--models-refresh-interval", "0"];
    args.extend_from_slice(&KEYS);
    fake.proxy("social", &args)
}

fn body(content: &str, stream: bool) -> String {
    json!({"model": "claude-sonnet-4-5", "stream": stream,
           "messages": [{"role": "user", "content": content}]})
    .to_string()
}

fn chat_request(proxy: &Proxy, key: &str, body: String) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{}/v1/chat/completions", proxy.base))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::from(body))
        .unwrap()
}

async fn chat(proxy: &Proxy, key: &str, body: String) -> Answer {
    let answer = send(chat_request(proxy, key, body)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer
}

fn cache_header(answer: &Answer) -> &str {
    answer.headers["x-aiproxy-cache"].to_str().unwrap()
}

async fn upstream_calls(fake: &Fake) -> u64 {
    fake.stats().await["generate_calls"].as_u64().unwrap()
}

/// The stream's chunks without what is fresh on every answer (ids, timestamps).
fn chunks(answer: &Answer) -> Vec<Value> {
    sse_data(&answer.text())
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| {
            let mut chunk: Value = serde_json::from_str(&d).unwrap();
            let object = chunk.as_object_mut().unwrap();
            object.remove("id");
            object.remove("created");
            chunk
        })
        .collect()
}

fn content(answer: &Answer) -> String {
    answer.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn streamed_text(answer: &Answer) -> String {
    chunks(answer)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn a_cached_stream_replays_the_same_events_and_the_upstream_sees_one_request() {
    let fake = Fake::start();
    let proxy = start(&fake);
    let first = chat(&proxy, "k1", body("tell me", true)).await;
    let before = upstream_calls(&fake).await;
    let second = chat(&proxy, "k1", body("tell me", true)).await;
    assert_eq!(
        upstream_calls(&fake).await,
        before,
        "answered from the cache"
    );
    assert_eq!(cache_header(&first), "miss");
    assert_eq!(cache_header(&second), "hit");
    assert_eq!(chunks(&first), chunks(&second));
    let id =
        |a: &Answer| serde_json::from_str::<Value>(&sse_data(&a.text())[0]).unwrap()["id"].clone();
    assert_ne!(id(&first), id(&second), "fresh ids");
}

#[tokio::test]
async fn a_cached_body_serves_a_stream_and_a_cached_stream_a_body() {
    let fake = Fake::start();
    let proxy = start(&fake);
    let body_first = chat(&proxy, "k1", body("one", false)).await;
    let stream_then = chat(&proxy, "k1", body("one", true)).await;
    assert_eq!(cache_header(&stream_then), "hit");
    assert_eq!(streamed_text(&stream_then), content(&body_first));

    let stream_first = chat(&proxy, "k1", body("two", true)).await;
    let body_then = chat(&proxy, "k1", body("two", false)).await;
    assert_eq!(cache_header(&body_then), "hit");
    assert_eq!(content(&body_then), streamed_text(&stream_first));
    assert_eq!(body_then.json()["object"], "chat.completion");
}

#[tokio::test]
async fn two_tenants_never_share_an_entry() {
    let fake = Fake::start();
    let proxy = start(&fake);
    chat(&proxy, "k1", body("same words", false)).await;
    let other = chat(&proxy, "k2", body("same words", false)).await;
    assert_eq!(cache_header(&other), "miss");
}

#[tokio::test]
async fn truncated_streams_and_tool_calls_are_not_cached() {
    let fake = Fake::start();
    let proxy = start(&fake);
    fake.script(json!([{"text": "a long enough answer", "truncate_after": 1}]))
        .await;
    let cut = send(chat_request(&proxy, "k1", body("cut", true))).await;
    assert!(cut.text().contains("error"), "{}", cut.text());
    assert_eq!(
        cache_header(&chat(&proxy, "k1", body("cut", true)).await),
        "miss"
    );

    fake.script(
        json!([{"text": "Let me look.", "tool_calls": [{"name": "search", "input": {"q": "x"}}]}]),
    )
    .await;
    let tools = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "find x"}],
                       "tools": [{"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]});
    chat(&proxy, "k1", tools.to_string()).await;
    assert_eq!(
        cache_header(&chat(&proxy, "k1", tools.to_string()).await),
        "miss"
    );
}

#[tokio::test]
async fn no_cache_skips_the_lookup_and_no_store_the_store() {
    let fake = Fake::start();
    let proxy = start(&fake);
    let with = |value: &'static str, content: &str| {
        let mut request = chat_request(&proxy, "k1", body(content, false));
        request
            .headers_mut()
            .insert("cache-control", http::HeaderValue::from_static(value));
        request
    };
    let stored_not = send(with("no-store", "a")).await;
    assert_eq!(cache_header(&stored_not), "miss");
    assert_eq!(
        cache_header(&chat(&proxy, "k1", body("a", false)).await),
        "miss"
    );
    assert_eq!(cache_header(&send(with("no-cache", "a")).await), "bypass");
    assert_eq!(
        cache_header(&chat(&proxy, "k1", body("a", false)).await),
        "hit"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_does_not_prevent_the_store() {
    let fake = Fake::start();
    let proxy = start(&fake);
    fake.script(json!([{"text": "word ".repeat(40), "event_delay_ms": 20}]))
        .await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .request(chat_request(&proxy, "k1", body("leave early", true)))
        .await
        .unwrap();
    let mut stream = response.into_body();
    let _first = stream.frame().await.unwrap().unwrap();
    drop(stream);
    drop(client);
    // The rest is read by aiproxy itself; the entry appears when the answer is complete.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut request = chat_request(&proxy, "k1", body("leave early", true));
        // Only look: never start a second upstream answer while the first one runs.
        request
            .headers_mut()
            .insert("cache-control", http::HeaderValue::from_static("no-store"));
        let answer = send(request).await;
        if cache_header(&answer) == "hit" {
            break;
        }
        assert!(Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn ten_concurrent_identical_misses_make_one_upstream_call() {
    let fake = Fake::start();
    let proxy = start(&fake);
    fake.script(json!([{"text": "shared answer", "event_delay_ms": 30}]))
        .await;
    let before = upstream_calls(&fake).await;
    let asks: Vec<_> = (0..10)
        .map(|_| send(chat_request(&proxy, "k1", body("all at once", false))))
        .collect();
    let answers = futures_util::future::join_all(asks).await;
    assert_eq!(upstream_calls(&fake).await, before + 1);
    let hits = answers.iter().filter(|a| cache_header(a) == "hit").count();
    assert_eq!(hits, 9);
    assert!(answers.iter().all(|a| content(a) == "shared answer"));
}

#[test]
fn the_guide_command_starts_with_the_cache_on() {
    // ./aiproxy --model-provider kiro-api --cache-enabled (mock mode, as the guide's tests run)
    let proxy = Proxy::start(
        &["--model-provider", "kiro-api", "--cache-enabled"],
        &[("KIRO_MOCK_MODE", "true")],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let request = || {
            http::Request::post(format!("{}/v1/chat/completions", proxy.base))
                .header("content-type", "application/json")
                .body(Full::from(body("hi", false)))
                .unwrap()
        };
        assert_eq!(cache_header(&send(request()).await), "miss");
        assert_eq!(cache_header(&send(request()).await), "hit");
        let metrics = common::metrics_text(&proxy.base).await;
        for line in [
            "aiproxy_cache_entries 1",
            r#"aiproxy_cache_requests_total{result="hit"} 1"#,
            r#"aiproxy_cache_requests_total{result="miss"} 1"#,
        ] {
            assert!(metrics.contains(line), "{line} in {metrics}");
        }
        let size = metrics
            .lines()
            .find_map(|l| l.strip_prefix("aiproxy_cache_size_bytes "))
            .unwrap();
        assert!(size.parse::<f64>().unwrap() > 0.0);
    });
}

#[tokio::test]
async fn a_hit_is_served_while_every_account_slot_is_busy() {
    let fake = Fake::start();
    let mut args = vec![
        "--cache-enabled",
        "--models-refresh-interval",
        "0",
        "--max-connections",
        "1",
        "--request-timeout",
        "2",
    ];
    args.extend_from_slice(&KEYS);
    let proxy = fake.proxy("social", &args);
    assert_eq!(
        cache_header(&chat(&proxy, "k1", body("remembered", false)).await),
        "miss"
    );
    // A slow stream takes the only upstream slot and keeps it (its body is left unread).
    fake.script(json!([{"text": "word ".repeat(40), "event_delay_ms": 100}]))
        .await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let held = client
        .request(chat_request(&proxy, "k1", body("holding the slot", true)))
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    // The hit needs no account: answered now, not after the slot frees.
    let hit = send(chat_request(&proxy, "k1", body("remembered", false))).await;
    assert_eq!((hit.status, cache_header(&hit)), (200, "hit"));
    // A miss needs one: it waits at most --request-timeout, then is told why.
    let miss = send(chat_request(&proxy, "k1", body("a new question", false))).await;
    assert_eq!(miss.status, 503, "{}", miss.text());
    assert!(
        miss.text().contains("capacity_exhausted"),
        "{}",
        miss.text()
    );
    assert_eq!(upstream_calls(&fake).await, 2, "neither reached Kiro");
    drop(held);
}
