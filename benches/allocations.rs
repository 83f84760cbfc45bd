//! Heap allocations per request: a counting allocator (stats_alloc), the
//! whole pipeline against the in-process fake Kiro (mock mode: no sockets, so the figures
//! are aiproxy's layers, JSON and event-stream work, plus the fake's own share, which is
//! printed beside them to subtract).
//!
//! `cargo bench --bench allocations` prints a table; `BENCH_JSON=1` prints JSON instead.
//! Under `cargo test --bench allocations` it runs a few requests of each kind only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aiproxy::config::Config;
use bytes::Bytes;
use common::{chat, ALL_LAYERS};
use http_body_util::{BodyExt, Full};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::ServiceExt;

// stats_alloc wraps the system allocator; the counts do not depend on the allocator (only
// the time would), so they are the binary's.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Runs `n` requests after a warm-up and returns (allocations, bytes) per request.
fn per_request<F, Fut>(runtime: &tokio::runtime::Runtime, n: u64, mut one: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..20 {
        runtime.block_on(one());
    }
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        runtime.block_on(one());
    }
    let stats = region.change();
    let allocations = (stats.allocations + stats.reallocations) as f64;
    let bytes = (stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize) as f64;
    (allocations / n as f64, bytes / n as f64)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = std::env::var("ALLOC_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if quick { 5 } else { 2000 });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        api_keys: vec!["bench-key".into()],
        ..Config::mock()
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    let no_layers = aiproxy::pipeline::build(&Config {
        disabled_layers: ALL_LAYERS.to_vec(),
        ..Config::mock()
    })
    .unwrap();
    let mut rows: Vec<(String, (f64, f64))> = Vec::new();
    for (name, words, stream) in [
        ("non_stream_small", 3, false),
        ("stream_50_events", 50, true),
    ] {
        let body = Bytes::from(chat(words, stream));
        let run = |pipeline: &aiproxy::pipeline::Pipeline| {
            let pipeline = pipeline.clone();
            let body = body.clone();
            move || {
                let pipeline = pipeline.clone();
                let request = http::Request::post("/v1/chat/completions")
                    .header("authorization", "Bearer bench-key")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                async move {
                    let response = pipeline.oneshot(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                }
            }
        };
        rows.push((
            format!("pipeline/{name}"),
            per_request(&runtime, n, run(&pipeline)),
        ));
        rows.push((
            format!("pipeline_http_layers_off/{name}"),
            per_request(&runtime, n, run(&no_layers)),
        ));
        // With the binary's default log settings (INFO lines, written to a sink here).
        let logging = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(std::io::sink)
            .finish();
        let logged =
            tracing::subscriber::with_default(logging, || per_request(&runtime, n, run(&pipeline)));
        rows.push((format!("pipeline_info_logging/{name}"), logged));
        // The fake's own share: building and framing what aiproxy then decodes.
        let fake = aiproxy::kiro::fake::FakeKiro::new();
        let kiro_body = Bytes::from(
            serde_json::json!({"conversationState": {"chatTriggerType": "MANUAL",
                "conversationId": "bench", "currentMessage": {"userInputMessage": {
                "content": (0..words).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" "),
                "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}}}})
            .to_string(),
        );
        let fake_alone = per_request(&runtime, n, || {
            let request = http::Request::post("/generateAssistantResponse")
                .body(kiro_body.clone())
                .unwrap();
            let response = fake.handle(request);
            async move {
                let mut frames = response.into_body();
                while let Some(chunk) = futures_util::StreamExt::next(&mut frames).await {
                    chunk.unwrap();
                }
            }
        });
        rows.push((format!("fake_kiro_alone/{name}"), fake_alone));
    }
    if std::env::var_os("BENCH_JSON").is_some() {
        let json: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(name, (a, b))| {
                (
                    name.clone(),
                    serde_json::json!({"allocations": a, "bytes": b}),
                )
            })
            .collect();
        println!("{}", serde_json::Value::Object(json));
    } else {
        println!(
            "{:<45} {:>12} {:>12}",
            "per request", "allocations", "bytes"
        );
        for (name, (a, b)) in rows {
            println!("{name:<45} {a:>12.1} {b:>12.0}");
        }
    }
}
