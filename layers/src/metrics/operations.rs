//! The model tier's metrics layer (see the module docs).

use super::bound::{self, Series};
use super::{label_or_none, ModelLabel, OperationName, LATENCY_BOUNDS, TOKEN_BOUNDS};
use crate::cache::CacheStatus;
use crate::model::{Attempts, Failure, HasExtensions, Observe, StreamReport};
use crate::ProviderId;
use opentelemetry::metrics::{
    BoundCounter, BoundHistogram, Counter, Histogram, Meter, UpDownCounter,
};
use opentelemetry::KeyValue;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

struct Instruments {
    operation: Histogram<f64>,
    first_token: Histogram<f64>,
    tokens: Histogram<u64>,
    streams: UpDownCounter<i64>,
    retries: Counter<u64>,
    attempts: Counter<u64>,
    series: Series<SeriesKey, Bound>,
}

/// A request's label set: provider, model (`None` when a layer above did not name them)
/// and operation.
type SeriesKey = (Option<Arc<str>>, Option<Arc<str>>, &'static str);

/// The token kinds counted, in the order of [`Bound::tokens`].
const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

/// Handles bound to one label set, for what most requests record: an operation that
/// succeeded, its first token, its tokens by kind and whether estimated, a first attempt
/// that succeeded. Failures and retries record with their attributes.
#[derive(Default)]
struct Bound {
    operation: OnceLock<BoundHistogram<f64>>,
    first_token: OnceLock<BoundHistogram<f64>>,
    /// By `TOKEN_KINDS` index times two, plus one when estimated.
    tokens: [OnceLock<BoundHistogram<u64>>; 8],
    first_attempt_ok: OnceLock<BoundCounter<u64>>,
}

/// Records model operations (see the module docs).
#[derive(Clone)]
pub struct ModelMetricsLayer {
    instruments: Arc<Instruments>,
}

impl std::fmt::Debug for ModelMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelMetricsLayer").finish_non_exhaustive()
    }
}

impl ModelMetricsLayer {
    /// Instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self::with_max_bound_sets(meter, bound::MAX_SETS)
    }

    /// Instruments on `meter`, with bound handles for at most `max_sets` label sets.
    pub(super) fn with_max_bound_sets(meter: &Meter, max_sets: usize) -> Self {
        let instruments = Instruments {
            operation: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("Model operations from the call to the end of the answer, by provider, model and error type")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            first_token: meter
                .f64_histogram("gen_ai.server.time_to_first_token")
                .with_unit("s")
                .with_description("Time from the call to the answer's first content")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            tokens: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Tokens per answer by type (input, output, cache_read, cache_write); estimated=true where the upstream gave no figures")
                .with_boundaries(TOKEN_BOUNDS.to_vec())
                .build(),
            streams: meter
                .i64_up_down_counter("active_streams")
                .with_description("Answers being streamed from the upstream")
                .build(),
            retries: meter
                .u64_counter("retries")
                .with_description("Attempts beyond the first, by provider and model")
                .build(),
            attempts: meter
                .u64_counter("upstream.attempts")
                .with_description("Upstream calls by why they were made (first, retry, refresh, nudge, inline_reasoning) and how they ended (ok or the error type)")
                .build(),
            series: Series::with_max_sets(max_sets),
        };
        Self {
            instruments: Arc::new(instruments),
        }
    }
}

impl<S> Layer<S> for ModelMetricsLayer {
    type Service = ModelMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ModelMetrics {
            inner,
            instruments: Arc::clone(&self.instruments),
        }
    }
}

/// The service of [`ModelMetricsLayer`].
#[derive(Clone)]
pub struct ModelMetrics<S> {
    inner: S,
    instruments: Arc<Instruments>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for ModelMetrics<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelMetrics")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for ModelMetrics<S>
where
    S: Service<Req>,
    S::Response: Observe + HasExtensions,
    S::Error: Failure,
    Req: HasExtensions,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ModelMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let extensions = request.extensions();
        let provider = extensions.get::<ProviderId>().map(ProviderId::shared);
        let model = extensions.get::<ModelLabel>().map(|m| Arc::clone(&m.0));
        let attempts = extensions.get::<Attempts>().cloned();
        let operation = extensions.get::<OperationName>().map_or("chat", |o| o.0);
        let bound = self
            .instruments
            .series
            .get((provider.clone(), model.clone(), operation));
        ModelMetricsFuture {
            inner: self.inner.call(request),
            labels: Some(Labels {
                instruments: Arc::clone(&self.instruments),
                bound,
                count_tokens: true,
                provider: label_or_none("gen_ai.provider.name", provider),
                model: label_or_none("gen_ai.request.model", model),
                operation,
                started: Instant::now(),
                attempts,
            }),
        }
    }
}

struct Labels {
    instruments: Arc<Instruments>,
    /// The label set's bound handles (`None` past the cap of label sets).
    bound: Option<Arc<Bound>>,
    count_tokens: bool,
    provider: KeyValue,
    model: KeyValue,
    /// `gen_ai.operation.name`: `chat`, or the server tool's operation.
    operation: &'static str,
    started: Instant,
    /// The request's attempts record, when a layer above started one.
    attempts: Option<Attempts>,
}

impl Labels {
    /// Counts the upstream calls the request made, by kind and outcome, and the retries.
    fn record_attempts(&self, from_response: Option<&Attempts>) {
        let Some(attempts) = self.attempts.as_ref().or(from_response) else {
            return;
        };
        let i = &self.instruments;
        let mut count = 0u64;
        attempts.each(|attempt| {
            count += 1;
            let slot = self
                .bound
                .as_ref()
                .filter(|_| attempt.kind == crate::model::FIRST && attempt.error.is_none())
                .map(|b| &b.first_attempt_ok);
            bound::add(&i.attempts, slot, 1, || {
                [
                    self.provider.clone(),
                    self.model.clone(),
                    KeyValue::new("kind", attempt.kind),
                    KeyValue::new("outcome", attempt.error.unwrap_or("ok")),
                    KeyValue::new("gen_ai.operation.name", self.operation),
                ]
            });
        });
        if count > 1 {
            i.retries
                .add(count - 1, &[self.provider.clone(), self.model.clone()]);
        }
    }

    /// Records the operation's duration so far, with its error type when it failed.
    fn record_operation(&self, error: Option<&'static str>) {
        let slot = self
            .bound
            .as_ref()
            .filter(|_| error.is_none())
            .map(|b| &b.operation);
        bound::record(
            &self.instruments.operation,
            slot,
            self.started.elapsed().as_secs_f64(),
            || {
                let mut attributes = vec![
                    self.provider.clone(),
                    self.model.clone(),
                    KeyValue::new("gen_ai.operation.name", self.operation),
                ];
                attributes.extend(error.map(|e| KeyValue::new("error.type", e)));
                attributes
            },
        );
    }

    /// Records a finished stream: `headers_after` is when the response came.
    fn finish(self, report: &StreamReport, headers_after: std::time::Duration) {
        let i = &self.instruments;
        i.streams.add(-1, &[]);
        self.record_operation(report.error_kind);
        if let Some(first) = report.time_to_first_event {
            bound::record(
                &i.first_token,
                self.bound.as_ref().map(|b| &b.first_token),
                (headers_after + first).as_secs_f64(),
                || [self.provider.clone(), self.model.clone()],
            );
        }
        if let Some(usage) = report.usage.filter(|_| self.count_tokens) {
            let counts = [
                usage.input,
                usage.output,
                usage.cache_read,
                usage.cache_write,
            ];
            for (index, (kind, count)) in TOKEN_KINDS.into_iter().zip(counts).enumerate() {
                // Cache figures are mostly zero: only what was spent is recorded (a zero
                // adds nothing to the sums).
                if count == 0 && matches!(kind, "cache_read" | "cache_write") {
                    continue;
                }
                let slot = index * 2 + usize::from(usage.estimated);
                bound::record(
                    &i.tokens,
                    self.bound.as_ref().map(|b| &b.tokens[slot]),
                    count,
                    || {
                        [
                            self.provider.clone(),
                            self.model.clone(),
                            KeyValue::new("gen_ai.token.type", kind),
                            KeyValue::new("estimated", usage.estimated),
                        ]
                    },
                );
            }
        }
    }
}

pin_project! {
    /// The future of [`ModelMetrics`].
    pub struct ModelMetricsFuture<F> {
        #[pin]
        inner: F,
        labels: Option<Labels>,
    }
}

impl<F, R, E> Future for ModelMetricsFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: Observe + HasExtensions,
    E: Failure,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        let Some(labels) = this.labels.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(match result {
            Err(error) => {
                labels.record_operation(Some(error.kind()));
                labels.record_attempts(None);
                Err(error)
            }
            Ok(response) => {
                let i = &labels.instruments;
                labels.record_attempts(response.extensions().get::<Attempts>());
                i.streams.add(1, &[]);
                let headers_after = labels.started.elapsed();
                // A cached answer spent no tokens upstream.
                let labels = Labels {
                    count_tokens: response.extensions().get::<CacheStatus>()
                        != Some(&CacheStatus::Hit),
                    ..labels
                };
                Ok(response.on_stream_end(move |report| labels.finish(report, headers_after)))
            }
        })
    }
}
