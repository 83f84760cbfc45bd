//! In-process benchmarks of the whole pipeline against the built-in fake Kiro (zero
//! latency), and of the event-stream decoder.
//!
//! `cargo bench --bench pipeline`
// Benchmark set-up failing is a bug in the bench: fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aiproxy::config::Config;
use aiproxy::kiro::eventstream::{encode_frame, FrameDecoder, KiroEvent};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use std::hint::black_box;
use tower::ServiceExt;

fn request(body: &str) -> http::Request<Full<Bytes>> {
    http::Request::post("/v1/chat/completions")
        .header("authorization", "Bearer bench-key")
        .header("content-type", "application/json")
        .body(Full::from(body.to_owned()))
        .unwrap()
}

fn chat(words: usize, stream: bool) -> String {
    let content: Vec<String> = (0..words).map(|i| format!("w{i}")).collect();
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": content.join(" ")}],
        "stream": stream
    })
    .to_string()
}

fn pipeline(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        api_keys: vec!["bench-key".into()],
        ..Config::mock()
    };
    let pipeline = aiproxy::pipeline::build(&config).unwrap();
    let mut group = c.benchmark_group("pipeline");
    for (name, words, stream) in [
        ("non_stream_small", 3, false),
        ("stream_50_events", 50, true),
    ] {
        let body = chat(words, stream);
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let response = pipeline.clone().oneshot(request(&body)).await.unwrap();
                    assert_eq!(response.status(), 200);
                    black_box(response.into_body().collect().await.unwrap().to_bytes())
                })
            })
        });
    }
    group.finish();
}

fn decoder(c: &mut Criterion) {
    let frame = encode_frame(
        "event",
        "assistantResponseEvent",
        br#"{"content":"The quick brown fox jumps over the lazy dog. "}"#,
    );
    let stream: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 1000)
        .collect();
    let mut group = c.benchmark_group("eventstream");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("decode_1000_text_frames_in_4k_reads", |b| {
        b.iter(|| {
            let mut decoder = FrameDecoder::new();
            let mut events = 0;
            for read in stream.chunks(4096) {
                decoder.push(read);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    black_box(KiroEvent::from_frame(&frame).unwrap());
                    events += 1;
                }
            }
            assert_eq!(events, 1000);
        })
    });
    group.finish();
}

fn api(c: &mut Criterion) {
    use aiproxy::api::anthropic::{request, response};
    use aiproxy::chat::{ChatEvent, ChatStream, Metadata, StopReason};
    use futures_util::StreamExt;
    use std::sync::Arc;

    // count_tokens on a Claude Code-sized request: system prompt, 20 turns, 10 tools.
    let tool = serde_json::json!({"name": "read_file", "description": "Read a file from disk. ".repeat(20),
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}});
    let mut messages = Vec::new();
    for i in 0..20 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": "Some typical conversational text with code `fn main() {}`. ".repeat(8)}));
    }
    let body = serde_json::json!({"model": "claude-sonnet-4-6", "system": "You are Claude Code. ".repeat(100),
        "messages": messages, "tools": vec![tool; 10]})
    .to_string();
    let mut group = c.benchmark_group("api");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("anthropic_count_tokens_claude_code_sized", |b| {
        b.iter(|| {
            let chat = request::parse(
                body.as_bytes(),
                Metadata::default(),
                request::Endpoint::CountTokens,
            )
            .unwrap();
            black_box(aiproxy::tokens::estimate_request(&chat))
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events: Vec<ChatEvent> = std::iter::once(ChatEvent::Start {
        id: Arc::from("msg_1"),
        model: Arc::from("m"),
        input_tokens: 10,
    })
    .chain((0..100).map(|i| ChatEvent::TextDelta(format!("word{i} "))))
    .chain(std::iter::once(ChatEvent::Stop(StopReason::EndTurn)))
    .collect();
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("openai_sse_encode_100_text_events", |b| {
        b.iter(|| {
            let stream: ChatStream = Box::pin(futures_util::stream::iter(
                events.clone().into_iter().map(Ok),
            ));
            runtime.block_on(async {
                let options = aiproxy::api::openai::request::ResponseOptions::default();
                let mut out = aiproxy::api::openai::response::sse(stream, "m", options);
                let mut n = 0;
                while let Some(chunk) = out.next().await {
                    n += black_box(chunk).len();
                }
                n
            })
        })
    });
    group.bench_function("anthropic_sse_encode_100_text_events", |b| {
        b.iter(|| {
            let stream: ChatStream = Box::pin(futures_util::stream::iter(
                events.clone().into_iter().map(Ok),
            ));
            runtime.block_on(async {
                let mut out = response::sse(stream, "m");
                let mut n = 0;
                while let Some(chunk) = out.next().await {
                    n += black_box(chunk).len();
                }
                n
            })
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline, decoder, api);
criterion_main!(benches);
