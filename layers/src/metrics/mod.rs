//! Metrics layers: what the proxy does, as OpenTelemetry instruments (rendered for
//! Prometheus by whoever owns the meter provider).
//!
//! - [`HttpMetricsLayer`] (HTTP tier): requests by route, status class and provider, their
//!   time to response headers, requests in flight, and the proxy's own overhead: the time to
//!   response headers less the time spent waiting on the upstream ([`UpstreamClock`]),
//!   also sent as the `x-aiproxy-overhead-ms` response header.
//! - [`ModelMetricsLayer`] (model tier): operations by provider, model and error type with
//!   their duration to the end of the stream, time to first token, tokens by type, streams
//!   in flight and retries, following the OpenTelemetry GenAI names
//!   (`gen_ai.client.operation.duration`, `gen_ai.server.time_to_first_token`,
//!   `gen_ai.client.token.usage`).
//!
//! Labels are bounded: routes come from a classifier that maps paths to a fixed list,
//! models from the catalog (the layer sits below model resolution), error types from
//! [`Failure::kind`](crate::model::Failure::kind)'s closed vocabulary.
//!
//! Both layers record through bound instruments ([`bound`]): the meter must come from
//! `opentelemetry_sdk` (whose `bind` this crate's feature turns on).
//!
//! # Example: model operations counted over a mock account, read back as Prometheus text
//!
//! ```
//! use aiproxy_layers::metrics::ModelMetricsLayer;
//! use aiproxy_layers::model::StreamEnd;
//! use aiproxy_layers::testing::{MockAccount, MockError, MockRequest};
//! use opentelemetry::metrics::MeterProvider;
//! use opentelemetry_sdk::metrics::SdkMeterProvider;
//! use prometheus::{Encoder, TextEncoder};
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = prometheus::Registry::new();
//! let exporter = opentelemetry_prometheus::exporter()
//!     .with_registry(registry.clone())
//!     .without_target_info()
//!     .build()
//!     .unwrap();
//! let provider = SdkMeterProvider::builder().with_reader(exporter).build();
//! let account = MockAccount::new("a");
//! let measured = ModelMetricsLayer::new(&provider.meter("example")).layer(account.clone());
//! let answer = measured.clone().oneshot(MockRequest::default()).await.unwrap();
//! answer.end(StreamEnd::Complete); // an operation is measured to the end of its stream
//! account.script(Err(MockError::upstream()));
//! assert!(measured.oneshot(MockRequest::default()).await.is_err());
//!
//! let mut text = Vec::new();
//! TextEncoder::new().encode(&registry.gather(), &mut text).unwrap();
//! let text = String::from_utf8(text).unwrap();
//! let operations = |line: &str| line.starts_with("gen_ai_client_operation_duration_seconds_count");
//! assert_eq!(text.lines().filter(|l| operations(l)).count(), 2, "{text}");
//! assert!(text.lines().any(|l| operations(l) && l.contains("error_type=\"mock\"")), "{text}");
//! # }
//! ```
//!
//! [`HttpMetricsLayer`] is used the same way around an `http::Request` service, with a
//! route classifier (`HttpMetricsLayer::new(&meter, |path| ...)`): `tests/embed.rs` and
//! this module's tests run it.

pub mod bound;
mod operations;
mod requests;
#[cfg(test)]
mod tests;

pub use operations::{ModelMetrics, ModelMetricsFuture, ModelMetricsLayer};
pub use requests::{HttpMetrics, HttpMetricsFuture, HttpMetricsLayer, RouteClassifier};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The model a request resolved to, as a metrics label (added by model resolution, read by
/// [`ModelMetricsLayer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelLabel(pub Arc<str>);

/// What kind of model operation a request is, as the `gen_ai.operation.name` label of
/// [`ModelMetricsLayer`] (OpenTelemetry GenAI names: `chat` when absent; a server tool's
/// own call, such as a web search, names itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperationName(pub &'static str);

/// Time spent waiting on the upstream for one client request (token endpoint, first
/// event, and for a non-stream answer the rest of the stream). The adapter puts one on the
/// model request and the response; the leaf adds its waits (clones share the clock, so
/// every retry's waits count); [`HttpMetricsLayer`] subtracts it from the time to response
/// headers to get the proxy's overhead.
#[derive(Clone, Debug, Default)]
pub struct UpstreamClock(Arc<AtomicU64>);

impl UpstreamClock {
    /// Adds a wait.
    pub fn add(&self, wait: Duration) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The waits so far.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// The label `name` = `value`, or `none` when there is no value (a static string: no
/// allocation for the label of a request without a provider or model).
fn label_or_none(name: &'static str, value: Option<Arc<str>>) -> opentelemetry::KeyValue {
    value.map_or(opentelemetry::KeyValue::new(name, "none"), |value| {
        opentelemetry::KeyValue::new(name, value)
    })
}

/// Histogram bucket bounds for latencies in seconds: fine below 100 ms (the proxy's own
/// time, first tokens) and up to ten minutes (long agent answers).
const LATENCY_BOUNDS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Bucket bounds for tokens per request (powers of four up to 4 Mi).
const TOKEN_BOUNDS: &[f64] = &[
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
];
