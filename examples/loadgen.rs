//! Load generator for `benches/load/run.sh` (loopback only; every run ends by itself).
//!
//! ```text
//! loadgen saturate --url URL --body FILE [--header K:V]... --connections N --seconds S
//! loadgen rate     --url URL --body FILE [--header K:V]... --rps R --seconds S
//! loadgen stream   --url URL --body FILE [--header K:V]... --requests N [--concurrency C]
//! ```
//!
//! `rate` is open-loop: requests are sent on a fixed schedule, each from its own task, so a
//! slow server never holds the next send back (no coordinated omission). Latency is measured
//! from the moment each request is sent: tokio's timer fires on whole milliseconds, so
//! measured from the scheduled time a run carried a constant offset of 0-1 ms set by where
//! its schedule fell between two ticks (direct runs of one fake measured p50 1.05 to 1.59 ms).
//! How far sends lagged their schedule is reported too (`send_lag`), so a generator falling
//! behind shows. `stream` records time to first byte and the gaps between body chunks. Output is
//! one JSON object on stdout.
// A load tool that cannot set itself up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Args {
    mode: String,
    url: String,
    body: Bytes,
    headers: Vec<(String, String)>,
    connections: usize,
    seconds: u64,
    rps: u64,
    requests: usize,
    concurrency: usize,
    /// Leading chunks that carry no content (aiproxy's OpenAI role chunk).
    skip_chunks: usize,
}

fn args() -> Args {
    let mut raw = std::env::args().skip(1);
    let mode = raw.next().expect("mode: saturate | rate | stream");
    let mut args = Args {
        mode,
        url: String::new(),
        body: Bytes::new(),
        headers: Vec::new(),
        connections: 16,
        seconds: 10,
        rps: 1000,
        requests: 20,
        concurrency: 1,
        skip_chunks: 0,
    };
    while let Some(flag) = raw.next() {
        let value = raw.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value,
            "--body" => args.body = Bytes::from(std::fs::read(&value).expect("read --body file")),
            "--header" => {
                let (k, v) = value.split_once(':').expect("--header K:V");
                args.headers
                    .push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "--connections" => args.connections = value.parse().unwrap(),
            "--seconds" => args.seconds = value.parse().unwrap(),
            "--rps" => args.rps = value.parse().unwrap(),
            "--requests" => args.requests = value.parse().unwrap(),
            "--concurrency" => args.concurrency = value.parse().unwrap(),
            "--skip-chunks" => args.skip_chunks = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        args.url.starts_with("http://127.0.0.1") || args.url.starts_with("http://localhost"),
        "loopback only"
    );
    args
}

fn request(args: &Args) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::post(&args.url).header("content-type", "application/json");
    for (k, v) in &args.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder.body(Full::new(args.body.clone())).unwrap()
}

/// Sends one request and drains the body; returns (ok, first-byte time, chunk arrival times).
async fn one(
    client: &HttpClient,
    args: &Args,
    timed: bool,
) -> (bool, Option<Instant>, Vec<Instant>) {
    let Ok(response) = client.request(request(args)).await else {
        return (false, None, Vec::new());
    };
    let ok = response.status().is_success();
    let mut body = response.into_body();
    let mut first = None;
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (false, first, chunks);
        };
        if frame.is_data() {
            let now = Instant::now();
            first.get_or_insert(now);
            if timed {
                chunks.push(now);
            }
        }
    }
    (ok, first, chunks)
}

fn percentiles(mut micros: Vec<u64>) -> serde_json::Value {
    if micros.is_empty() {
        return json!(null);
    }
    micros.sort_unstable();
    let at = |p: f64| micros[((micros.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    let mean = micros.iter().sum::<u64>() as f64 / micros.len() as f64 / 1000.0;
    json!({"count": micros.len(), "mean_ms": mean, "p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

fn client(pool: usize) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool)
        .build_http()
}

async fn saturate(args: Arc<Args>) -> serde_json::Value {
    let client = client(args.connections);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (client, args, stop, done, failed) = (
                client.clone(),
                args.clone(),
                stop.clone(),
                done.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let (ok, _, _) = one(&client, &args, false).await;
                    latencies.push(start.elapsed().as_micros() as u64);
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    json!({
        "mode": "saturate", "connections": args.connections, "seconds": elapsed,
        "ok": done.load(Ordering::Relaxed), "failed": failed.load(Ordering::Relaxed),
        "rps": done.load(Ordering::Relaxed) as f64 / elapsed,
        "latency": percentiles(latencies),
    })
}

async fn rate(args: Arc<Args>) -> serde_json::Value {
    let client = client(512);
    let interval = Duration::from_nanos(1_000_000_000 / args.rps.max(1));
    let total = args.rps * args.seconds;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (client, args) = (client.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            let (ok, _, _) = one(&client, &args, false).await;
            let lag = sent.saturating_duration_since(scheduled);
            (
                ok,
                sent.elapsed().as_micros() as u64,
                lag.as_micros() as u64,
            )
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut lags = Vec::with_capacity(tasks.len());
    let mut failed = 0;
    for task in tasks {
        let (ok, micros, lag) = task.await.unwrap();
        lags.push(lag);
        if ok {
            latencies.push(micros)
        } else {
            failed += 1
        }
    }
    json!({"mode": "rate", "rps": args.rps, "seconds": args.seconds, "failed": failed,
           "latency": percentiles(latencies), "send_lag": percentiles(lags)})
}

async fn stream(args: Arc<Args>) -> serde_json::Value {
    let client = client(args.concurrency.max(1));
    let per_worker = args.requests.div_ceil(args.concurrency.max(1));
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (client, args) = (client.clone(), args.clone());
            tokio::spawn(async move {
                let mut ttfb = Vec::new();
                let mut first_content = Vec::new();
                let mut durations = Vec::new();
                let mut gaps = Vec::new();
                let mut chunks_per_stream = Vec::new();
                let mut failed = 0;
                for _ in 0..per_worker {
                    let start = Instant::now();
                    let (ok, first, chunks) = one(&client, &args, true).await;
                    if !ok {
                        failed += 1;
                        continue;
                    }
                    if let Some(first) = first {
                        ttfb.push((first - start).as_micros() as u64);
                    }
                    if let Some(content) = chunks.get(args.skip_chunks) {
                        first_content.push((*content - start).as_micros() as u64);
                    }
                    if let Some(last) = chunks.last() {
                        durations.push((*last - start).as_micros() as u64);
                    }
                    gaps.extend(chunks.windows(2).map(|w| (w[1] - w[0]).as_micros() as u64));
                    chunks_per_stream.push(chunks.len());
                }
                (
                    ttfb,
                    first_content,
                    durations,
                    gaps,
                    chunks_per_stream,
                    failed,
                )
            })
        })
        .collect();
    let (mut ttfb, mut first_content, mut durations, mut gaps, mut chunks, mut failed) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        0,
    );
    for worker in workers {
        let (t, fc, d, g, c, f) = worker.await.unwrap();
        ttfb.extend(t);
        first_content.extend(fc);
        durations.extend(d);
        gaps.extend(g);
        chunks.extend(c);
        failed += f;
    }
    let mean_chunks = chunks.iter().sum::<usize>() as f64 / chunks.len().max(1) as f64;
    json!({"mode": "stream", "requests": args.requests, "concurrency": args.concurrency, "failed": failed,
           "chunks_per_stream": mean_chunks, "ttfb": percentiles(ttfb), "first_content": percentiles(first_content),
           "duration": percentiles(durations), "chunk_gap": percentiles(gaps)})
}

#[tokio::main]
async fn main() {
    let args = Arc::new(args());
    let report = match args.mode.as_str() {
        "saturate" => saturate(args).await,
        "rate" => rate(args).await,
        "stream" => stream(args).await,
        other => panic!("unknown mode {other}"),
    };
    println!("{report}");
}
