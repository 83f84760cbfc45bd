//! How well the pool's load measures balance 10 accounts of different speeds: a
//! simulation in virtual time (tokio's paused clock, so it is exact and runs in a second),
//! not a timing of this machine. Prints mean and p99 request latency and each account's
//! share per measure. `cargo bench --bench balance`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aiproxy::chat::{ChatError, ChatEvent, StopReason};
use aiproxy::model::{ModelRequest, ModelResponse};
use aiproxy_layers::model::pool::{Balance, MemberSpec, Pool, PoolConfig};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tower::ServiceExt;

const ACCOUNTS: u64 = 10;
const REQUESTS: usize = 5000;
/// Gaps between requests: one every 40 ms (25 per second) and one every 20 ms (50 per
/// second; a bit over half of what the ten accounts take together, about 90 per second,
/// the slow ones far less than their share).
const GAPS: [Duration; 2] = [Duration::from_millis(40), Duration::from_millis(20)];

/// Account `i`: its first event after `40 ms * (i + 1)`, each further in-flight request on
/// it slowing it by a fifth (a busy account answers slower), the stream 3 times that long.
fn account(
    i: u64,
    in_flight: Arc<std::sync::atomic::AtomicU64>,
) -> impl Clone
       + Send
       + Sync
       + 'static
       + tower::Service<ModelRequest, Response = ModelResponse, Error = ChatError, Future = impl Send>
{
    tower::service_fn(move |_request: ModelRequest| {
        let in_flight = Arc::clone(&in_flight);
        async move {
            use std::sync::atomic::Ordering;
            let load = in_flight.fetch_add(1, Ordering::SeqCst);
            let base = Duration::from_millis(40 * (i + 1));
            let first = base + base * u32::try_from(load).unwrap() / 5;
            sleep(first).await;
            let rest = first * 3;
            let events = futures_util::stream::iter([Ok(ChatEvent::Start {
                id: Arc::from("m"),
                model: Arc::from("m"),
                input_tokens: 1,
            })])
            .chain(futures_util::stream::once(async move {
                sleep(rest).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(ChatEvent::Stop(StopReason::EndTurn))
            }));
            Ok::<_, ChatError>(ModelResponse::new(Box::pin(events)))
        }
    })
}

async fn simulate(balance: Balance, gap: Duration) -> (Duration, Duration, Vec<usize>) {
    let members = (0..ACCOUNTS)
        .map(|i| {
            let spec = MemberSpec {
                name: Arc::from(format!("a{i}")),
                weight: 1,
                max_concurrency: 64,
                requests_per_minute: None,
            };
            (spec, account(i, Arc::default()))
        })
        .collect();
    let config = PoolConfig {
        slow_start: Duration::ZERO,
        balance,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, members);
    let mut tasks = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let response = pool
                .oneshot(ModelRequest::new(Default::default()))
                .await
                .unwrap();
            let served = response
                .extensions
                .get::<aiproxy_layers::model::AccountId>()
                .map(|s| s.0.to_string())
                .unwrap();
            let mut events = response.events;
            while events.next().await.is_some() {}
            (start.elapsed(), served)
        }));
        sleep(gap).await;
    }
    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut share = vec![0; ACCOUNTS as usize];
    for task in tasks {
        let (latency, served) = task.await.unwrap();
        latencies.push(latency);
        share[served[1..].parse::<usize>().unwrap()] += 1;
    }
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / REQUESTS as u32;
    (mean, latencies[REQUESTS * 99 / 100], share)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run both ways.
    for gap in GAPS {
        for balance in [Balance::InFlight, Balance::PeakEwma] {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let (mean, p99, share) = runtime.block_on(simulate(balance, gap));
            println!(
                "one request every {} ms, {balance:?}: mean {} ms, p99 {} ms, requests per account (fastest first) {share:?}",
                gap.as_millis(),
                mean.as_millis(),
                p99.as_millis()
            );
        }
    }
}
