//! In-process benchmarks of the whole pipeline against the built-in fake Kiro (zero
//! latency): every switchable layer alone, all on and all off, the model tier without the
//! HTTP/JSON surface; the event-stream decoder; the SSE encoders; count_tokens.
//!
//! `cargo bench --bench pipeline`
// Benchmark set-up failing is a bug in the bench: fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aiproxy::config::{Config, PipelineLayer};
use aiproxy::kiro::protocol::eventstream::{encode_frame, FrameDecoder, KiroEvent};
use bytes::Bytes;
use common::{chat, ALL_LAYERS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use std::hint::black_box;
use tower::ServiceExt;

/// The allocator of the `aiproxy` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn request(body: &str) -> http::Request<Full<Bytes>> {
    http::Request::post("/v1/chat/completions")
        .header("authorization", "Bearer bench-key")
        .header("content-type", "application/json")
        .body(Full::from(body.to_owned()))
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The pipeline with exactly the `on` layers switched on.
fn pipeline_with(on: &[PipelineLayer]) -> aiproxy::pipeline::Pipeline {
    let auth = on.contains(&PipelineLayer::Auth);
    let config = Config {
        api_keys: if auth {
            vec!["bench-key".into()]
        } else {
            Vec::new()
        },
        disabled_layers: ALL_LAYERS.into_iter().filter(|l| !on.contains(l)).collect(),
        ..Config::mock()
    };
    aiproxy::pipeline::build(&config).unwrap()
}

fn bench_requests(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    pipeline: &aiproxy::pipeline::Pipeline,
    body: &str,
) {
    group.bench_function(name, |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = pipeline.clone().oneshot(request(body)).await.unwrap();
                assert_eq!(response.status(), 200);
                black_box(response.into_body().collect().await.unwrap().to_bytes())
            })
        })
    });
}

/// Whole pipeline, all layers on: a small non-stream request, and streams of 50 and 500
/// events (the difference between the two streams / 450 is the cost of one event, of which
/// the `fake_kiro_alone_*` difference / 450 is the fake's, not aiproxy's).
fn pipeline(c: &mut Criterion) {
    let runtime = runtime();
    let pipeline = pipeline_with(&ALL_LAYERS);
    let mut group = c.benchmark_group("pipeline");
    for (name, words, stream) in [
        ("non_stream_small", 3, false),
        ("stream_50_events", 50, true),
        ("stream_500_events", 500, true),
    ] {
        bench_requests(&mut group, &runtime, name, &pipeline, &chat(words, stream));
    }
    // The in-process fake's own share of the stream benches (building and framing the
    // events aiproxy then decodes): subtract it to get aiproxy's cost per event.
    let fake = aiproxy::kiro::fake::FakeKiro::new();
    for (name, words) in [
        ("fake_kiro_alone_50_events", 50),
        ("fake_kiro_alone_500_events", 500),
    ] {
        let content: Vec<String> = (0..words).map(|i| format!("w{i}")).collect();
        let body = Bytes::from(
            serde_json::json!({"conversationState": {"chatTriggerType": "MANUAL",
                "conversationId": "bench", "currentMessage": {"userInputMessage": {
                "content": content.join(" "), "modelId": "claude-sonnet-4.5", "origin": "AI_EDITOR"}}}})
            .to_string(),
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let request = http::Request::post("/generateAssistantResponse")
                        .body(body.clone())
                        .unwrap();
                    let response = fake.handle(request);
                    assert_eq!(response.status(), 200);
                    let mut frames = response.into_body();
                    let mut n = 0;
                    while let Some(chunk) = futures_util::StreamExt::next(&mut frames).await {
                        n += black_box(chunk.unwrap()).len();
                    }
                    n
                })
            })
        });
    }
    group.finish();
}

/// A small non-stream request with all layers off, each layer alone, all on (without and
/// with an INFO log subscriber); and the
/// model tier alone (a parsed `ChatRequest` straight to the Kiro service: no HTTP surface,
/// no JSON parsing or encoding), so that (all_off - model_tier) is the OpenAI conversion.
fn layers(c: &mut Criterion) {
    let runtime = runtime();
    let body = chat(3, false);
    let mut group = c.benchmark_group("layers");
    bench_requests(&mut group, &runtime, "all_off", &pipeline_with(&[]), &body);
    for layer in ALL_LAYERS {
        let name = format!("only_{layer:?}").to_lowercase();
        bench_requests(&mut group, &runtime, &name, &pipeline_with(&[layer]), &body);
    }
    let all_on = pipeline_with(&ALL_LAYERS);
    bench_requests(&mut group, &runtime, "all_on", &all_on, &body);
    // As the binary runs by default: an INFO subscriber formats the span and the access-log
    // line (written to a sink here, so the write itself is not measured).
    let logging = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(logging, || {
        bench_requests(&mut group, &runtime, "all_on_info_logging", &all_on, &body);
    });

    use aiproxy::chat::Metadata;
    use futures_util::StreamExt;
    let model = tower::Layer::layer(
        &aiproxy::model::resolve::ResolveLayer::new(aiproxy::catalog::Catalog::builtin().unwrap()),
        aiproxy::kiro::KiroService::mock(
            aiproxy::kiro::fake::FakeKiro::new(),
            std::sync::Arc::new(aiproxy::kiro::auth::token_source::FixedToken::new("bench")),
            64,
        ),
    );
    let (chat_request, _) =
        aiproxy::api::openai::request::parse(body.as_bytes(), Metadata::default()).unwrap();
    let request = aiproxy::model::ModelRequest::new(chat_request);
    group.bench_function("model_tier_only", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = model.clone().oneshot(request.clone()).await.unwrap();
                let mut events = response.events;
                let mut n = 0;
                while let Some(event) = events.next().await {
                    black_box(event.unwrap());
                    n += 1;
                }
                n
            })
        })
    });
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

/// A Claude Code-shaped Anthropic request: system prompt, 20 turns, `tools` tools (with
/// `long_tool`, the first has a 12 000-character description, as Claude Code's own set does).
fn claude_code_sized(tools: usize, long_tool: bool) -> String {
    let tool = |i: usize| {
        serde_json::json!({"name": format!("tool_{i}"), "description": "Read a file from disk. ".repeat(20),
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}})
    };
    let mut tools: Vec<serde_json::Value> = (0..tools).map(tool).collect();
    if long_tool {
        tools[0]["description"] = serde_json::Value::from("Runs a shell command. ".repeat(550));
    }
    let mut messages = Vec::new();
    for i in 0..20 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": "Some typical conversational text with code `fn main() {}`. ".repeat(8)}));
    }
    serde_json::json!({"model": "claude-sonnet-4-6", "max_tokens": 32000, "system": "You are Claude Code. ".repeat(100),
        "messages": messages, "tools": tools})
    .to_string()
}

/// The Kiro request builder (normaliser + body serialisation) on a Claude Code-sized
/// request, the work done for every chat call before the upstream sees a byte.
fn builder(c: &mut Criterion) {
    use aiproxy::api::anthropic::request;
    use aiproxy::chat::Metadata;
    use aiproxy::kiro::protocol::request::{build, BuildOptions};

    let body = claude_code_sized(20, true);
    let chat = request::parse(
        body.as_bytes(),
        Metadata::default(),
        request::Endpoint::Messages,
    )
    .unwrap();
    let options = BuildOptions {
        kiro_model_id: "claude-sonnet-4.6",
        profile_arn: None,
        conversation_id: "bench".into(),
        thinking: None,
        reasoning: None,
        replay_signatures: true,
        native_max_tokens: None,
        prompt_caching: None,
    };
    let mut group = c.benchmark_group("kiro");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("build_request_claude_code_sized_20_tools", |b| {
        b.iter(|| {
            let built = build(black_box(&chat), &options);
            black_box(serde_json::to_vec(&built.body).unwrap())
        })
    });
    group.finish();
}

/// The live catalog: what resolving a model id costs per request (a snapshot read and a
/// lookup; a dated id misses twice first), and what one rebuild from the fake's 15 models
/// costs (once per refresh, off the request path).
fn catalog(c: &mut Criterion) {
    use aiproxy::kiro::accounts::model_list::{parse_page, Listing};
    let models = aiproxy::kiro::fake::models::default_models();
    let page = parse_page(
        serde_json::json!({ "models": models })
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let listing = Listing {
        models: page.models,
        default_model: None,
    };
    let catalog = aiproxy::catalog::Catalog::builtin().unwrap();
    let answers = vec![("bench".to_owned(), Ok(listing))];
    catalog.apply(&answers);
    let mut group = c.benchmark_group("catalog");
    group.bench_function("resolve_listed_id", |b| {
        b.iter(|| black_box(catalog.resolve(black_box("claude-sonnet-4-5"))))
    });
    group.bench_function("resolve_dated_thinking_id", |b| {
        b.iter(|| black_box(catalog.resolve(black_box("claude-opus-5-20260101-thinking"))))
    });
    group.bench_function("rebuild_from_15_served_models", |b| {
        b.iter(|| catalog.apply(black_box(&answers)))
    });
    group.finish();
}

fn api(c: &mut Criterion) {
    use aiproxy::api::anthropic::{request, response};
    use aiproxy::chat::{ChatEvent, ChatStream, Metadata, StopReason};
    use futures_util::StreamExt;
    use std::sync::Arc;

    // count_tokens on a Claude Code-sized request: system prompt, 20 turns, 10 tools.
    let body = claude_code_sized(10, false);
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
            black_box(aiproxy::token_count::estimate_request(&chat))
        })
    });

    let runtime = runtime();
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
    let (_, options) = aiproxy::api::responses::request::parse(
        br#"{"model": "m", "input": "hi"}"#,
        Metadata::default(),
    )
    .unwrap();
    let setup = Arc::new(aiproxy::api::responses::encode::Setup::new("m", &options));
    group.bench_function("responses_sse_encode_100_text_events", |b| {
        b.iter(|| {
            let stream: ChatStream = Box::pin(futures_util::stream::iter(
                events.clone().into_iter().map(Ok),
            ));
            runtime.block_on(async {
                let mut out = aiproxy::api::responses::stream_unstored(stream, Arc::clone(&setup));
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

/// What the model-tier layers cost per request, around a leaf that answers at once (one
/// Start and one Stop event): the leaf alone, the pool of one account around it, and retry
/// around that (the tier as the pipeline runs it, less model resolution).
fn model_layers(c: &mut Criterion) {
    use aiproxy::chat::{ChatError, ChatEvent, StopReason};
    use aiproxy::model::{ModelRequest, ModelResponse};
    use aiproxy_layers::model::pool::{MemberSpec, Pool, PoolConfig};
    use aiproxy_layers::model::retry::{RetryConfig, RetryLayer};
    use futures_util::StreamExt;
    use std::sync::Arc;
    let runtime = runtime();
    let leaf = tower::service_fn(|_request: ModelRequest| async {
        let events = futures_util::stream::iter([
            Ok(ChatEvent::Start {
                id: Arc::from("m"),
                model: Arc::from("m"),
                input_tokens: 1,
            }),
            Ok(ChatEvent::Stop(StopReason::EndTurn)),
        ]);
        Ok::<_, ChatError>(ModelResponse::new(Box::pin(events)))
    });
    let pool = Pool::new(PoolConfig::default(), vec![(member(), leaf)]);
    let retried = tower::Layer::layer(&RetryLayer::new(RetryConfig::default()), pool.clone());
    let request = ModelRequest::new(aiproxy::chat::ChatRequest::default());
    let mut group = c.benchmark_group("model_layers");
    macro_rules! bench {
        ($name:expr, $service:expr) => {
            group.bench_function($name, |b| {
                b.iter(|| {
                    runtime.block_on(async {
                        let response = $service.clone().oneshot(request.clone()).await.unwrap();
                        black_box(response.events.count().await)
                    })
                })
            });
        };
    }
    bench!("leaf_alone", leaf);
    bench!("pool_of_one", pool);
    bench!("retry_and_pool_of_one", retried);
    // The bounded wait for a ready tier, inside the call (always ready itself).
    let waiting = tower::Layer::layer(
        &aiproxy_layers::model::ready::WaitReadyLayer::new(std::time::Duration::from_secs(30)),
        pool.clone(),
    );
    bench!("wait_ready_and_pool_of_one", waiting);
    let emulated = tower::Layer::layer(&aiproxy::model::emulate::EmulateLayer, leaf);
    bench!("emulate_nothing_to_do", emulated);
    // Recording into the Prometheus-backed registry the binary uses.
    let metrics = aiproxy::telemetry::metrics::Metrics::new().unwrap();
    let metered = tower::Layer::layer(
        &aiproxy_layers::metrics::ModelMetricsLayer::new(metrics.meter()),
        leaf,
    );
    bench!("metrics_and_leaf", metered);
    // The cache in front of the leaf: a hit (the answer stored by the first call), and a
    // miss (a request never seen: key, lookup, upstream call, recording, store).
    let store: Arc<dyn aiproxy_layers::cache::CacheStore<ChatEvent>> = Arc::new(
        aiproxy_layers::cache::MemoryStore::new(64 << 20, std::time::Duration::from_secs(3600)),
    );
    let cached = tower::Layer::layer(&aiproxy_layers::cache::CacheLayer::new(store), leaf);
    bench!("cache_hit", cached);
    let mut n = 0u64;
    group.bench_function("cache_miss", |b| {
        b.iter(|| {
            n += 1;
            let chat = aiproxy::chat::ChatRequest {
                model: format!("m{n}"),
                ..Default::default()
            };
            runtime.block_on(async {
                let response = cached
                    .clone()
                    .oneshot(ModelRequest::new(chat))
                    .await
                    .unwrap();
                black_box(response.events.count().await)
            })
        })
    });
    // Rate limits that never refuse (so every call takes the full path): the request
    // bucket alone, and with the token bucket (estimate at admission, settle at the end).
    use aiproxy_layers::rate_limit::{Limits, MemoryStore, RateLimitLayer, RequestQuota};
    use std::num::NonZeroU32;
    let unbounded = RequestQuota {
        per_minute: NonZeroU32::MAX,
        burst: NonZeroU32::MAX,
    };
    let limited = |limits| {
        let layer = RateLimitLayer::new(Arc::new(MemoryStore::new()), limits);
        tower::Layer::layer(&layer, leaf)
    };
    let requests_only = limited(Limits {
        requests: Some(unbounded),
        tokens_per_minute: None,
    });
    bench!("rate_limit_requests", requests_only);
    let both = limited(Limits {
        requests: Some(unbounded),
        tokens_per_minute: Some(NonZeroU32::MAX),
    });
    bench!("rate_limit_requests_and_tokens", both);
    // The pool of one with its account's per-minute guard on.
    let guarded_spec = MemberSpec {
        name: Arc::from("bench"),
        weight: 1,
        max_concurrency: 64,
        requests_per_minute: Some(unbounded),
    };
    let guarded = Pool::new(PoolConfig::default(), vec![(guarded_spec, leaf)]);
    bench!("pool_of_one_guarded", guarded);
    group.finish();
}

/// What the emulate layer's limits cost per streamed event: 200 text deltas of one word
/// each, untouched, with a `max_tokens` budget that does not bind, and with two stop
/// sequences that never match (every word is checked and a possible start held back).
fn emulate_stream(c: &mut Criterion) {
    use aiproxy::chat::{ChatEvent, StopReason};
    use aiproxy::model::emulate::limits::Limits;
    use futures_util::StreamExt;
    use std::sync::Arc;
    const EVENTS: usize = 200;
    let runtime = runtime();
    let events = || {
        let mut events = vec![Ok(ChatEvent::Start {
            id: Arc::from("m"),
            model: Arc::from("m"),
            input_tokens: 1,
        })];
        events.extend((0..EVENTS).map(|i| Ok(ChatEvent::TextDelta(format!("word{i} ")))));
        events.push(Ok(ChatEvent::Stop(StopReason::EndTurn)));
        Box::pin(futures_util::stream::iter(events)) as aiproxy::chat::ChatStream
    };
    let mut group = c.benchmark_group("emulate_stream");
    group.throughput(Throughput::Elements(EVENTS as u64));
    let cases = [
        ("untouched", Limits::default()),
        (
            "max_tokens",
            Limits {
                max_tokens: Some(32_000),
                ..Limits::default()
            },
        ),
        (
            "two_stop_sequences",
            Limits {
                stop: vec!["\n\nHuman:".into(), "</answer>".into()],
                ..Limits::default()
            },
        ),
    ];
    for (name, limits) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let stream = limits.clone().apply(events());
                    black_box(stream.count().await)
                })
            })
        });
    }
    group.finish();
}

/// The one account of the benches' pools.
fn member() -> aiproxy_layers::model::pool::MemberSpec {
    aiproxy_layers::model::pool::MemberSpec {
        name: std::sync::Arc::from("bench"),
        weight: 1,
        max_concurrency: 64,
        requests_per_minute: None,
    }
}

/// A web search in-process: the fake's `/mcp` alone (the request it gets, answered and
/// read), and the same search as the model tier makes it: retry, a pool of one mock account,
/// the leaf's MCP call and answer (the difference is what aiproxy adds to a search).
fn search(c: &mut Criterion) {
    use aiproxy::chat::web_search::SearchQuery;
    use aiproxy::kiro::fake::FakeKiro;
    use aiproxy::model::ModelRequest;
    use aiproxy_layers::model::pool::{Pool, PoolConfig};
    use aiproxy_layers::model::retry::{RetryConfig, RetryLayer};
    use futures_util::StreamExt;
    use std::sync::Arc;
    let runtime = runtime();
    let fake = FakeKiro::new();
    let mut group = c.benchmark_group("search");
    group.bench_function("fake_mcp_alone", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut request = http::Request::post(aiproxy::kiro::search::MCP_PATH)
                    .body(aiproxy::kiro::search::body("tokio tower"))
                    .unwrap();
                for (name, value) in [
                    ("content-type", "application/json"),
                    ("user-agent", "aws-sdk-js/1.0.34 KiroIDE-0.9.2-m"),
                    ("x-amz-user-agent", "aws-sdk-js/1.0.34 KiroIDE-0.9.2-m"),
                    (
                        "amz-sdk-invocation-id",
                        "5b1f7c3e-0000-4000-8000-000000000000",
                    ),
                    (
                        "x-amzn-kiro-profile-arn",
                        aiproxy::kiro::fake::FAKE_PROFILE_ARN,
                    ),
                    ("authorization", "Bearer mock-access-token"),
                ] {
                    request
                        .headers_mut()
                        .insert(name, http::HeaderValue::from_static(value));
                }
                let body = fake.handle(request).into_body();
                black_box(
                    body.map(|chunk| chunk.unwrap().len())
                        .collect::<Vec<_>>()
                        .await,
                )
            })
        })
    });
    let leaf = aiproxy::kiro::KiroService::mock(
        fake.clone(),
        Arc::new(aiproxy::kiro::auth::token_source::FixedToken::new("bench")),
        64,
    );
    let pool = Pool::new(PoolConfig::default(), vec![(member(), leaf)]);
    let tier = tower::Layer::layer(&RetryLayer::new(RetryConfig::default()), pool);
    let mut request = ModelRequest::new(aiproxy::chat::ChatRequest::default());
    request.extensions.insert(SearchQuery {
        id: "srvtoolu_bench".into(),
        query: "tokio tower".into(),
    });
    group.bench_function("retry_pool_leaf_search", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = tier.clone().oneshot(request.clone()).await.unwrap();
                black_box(response.events.count().await)
            })
        })
    });
    group.finish();
}

/// What the operator console costs the API: the server's `/console` mount in front of the
/// pipeline (one path check), the journal a console keeps (one entry per model request),
/// and one journal entry alone.
fn console(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("console");
    let body = chat(3, false);
    let plain = pipeline_with(&ALL_LAYERS);
    bench_requests(
        &mut group,
        &runtime,
        "non_stream_small_console_off",
        &plain,
        &body,
    );
    let journaled = aiproxy::pipeline::build(&Config {
        api_keys: vec!["bench-key".into()],
        admin_key: Some("bench-admin-key-0123456789".into()),
        ..Config::mock()
    })
    .unwrap();
    bench_requests(
        &mut group,
        &runtime,
        "non_stream_small_journal_on",
        &journaled,
        &body,
    );
    let mounted = aiproxy::console::Mount::new(plain.clone(), None);
    group.bench_function("non_stream_small_mounted", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = mounted.clone().oneshot(request(&body)).await.unwrap();
                assert_eq!(response.status(), 200);
                black_box(response.into_body().collect().await.unwrap().to_bytes())
            })
        })
    });
    let journal = aiproxy::telemetry::journal::Journal::new(false);
    let entry = aiproxy::telemetry::journal::Entry {
        at_ms: aiproxy::telemetry::journal::now_ms(),
        key: std::sync::Arc::from("key-1"),
        model: std::sync::Arc::from("claude-sonnet-4"),
        account: Some(std::sync::Arc::from("a1")),
        status: 200,
        error: None,
        attempts: 1,
        latency_ms: 12,
        input_tokens: 95,
        output_tokens: 2,
        credits: 0.01,
        cache: None,
        stream: false,
        prompt: None,
    };
    group.bench_function("journal_record", |b| {
        b.iter(|| journal.record(black_box(entry.clone())))
    });
    group.finish();
}

criterion_group!(
    benches,
    pipeline,
    console,
    search,
    layers,
    decoder,
    builder,
    catalog,
    api,
    model_layers,
    emulate_stream
);
criterion_main!(benches);
