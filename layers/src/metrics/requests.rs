//! The HTTP tier's metrics layer (see the module docs).

use super::bound::{self, Series};
use super::{label_or_none, UpstreamClock, LATENCY_BOUNDS};
use crate::ProviderId;
use http::{HeaderValue, Request, Response};
use opentelemetry::metrics::{BoundHistogram, Histogram, Meter, UpDownCounter};
use opentelemetry::KeyValue;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// Maps a request path to a route label from a fixed list (unknown paths to one label), so
/// that a client cannot make a label per path it invents.
pub type RouteClassifier = fn(&str) -> &'static str;

struct Instruments {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
    overhead: Histogram<f64>,
    routes: RouteClassifier,
    series: Series<SeriesKey, Bound>,
}

/// A response's label set: route, status class and provider (`None`: no provider, or an
/// error instead of a response).
type SeriesKey = (&'static str, &'static str, Option<Arc<str>>);

/// Handles bound to one label set (see [`bound`]).
#[derive(Default)]
struct Bound {
    duration: OnceLock<BoundHistogram<f64>>,
    /// By route only: every status and provider of a route binds the same series.
    overhead: OnceLock<BoundHistogram<f64>>,
}

/// Records HTTP requests (see the module docs).
#[derive(Clone)]
pub struct HttpMetricsLayer {
    instruments: Arc<Instruments>,
}

impl std::fmt::Debug for HttpMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetricsLayer").finish_non_exhaustive()
    }
}

impl HttpMetricsLayer {
    /// Instruments on `meter`; `routes` names each request's route.
    pub fn new(meter: &Meter, routes: RouteClassifier) -> Self {
        Self::with_max_bound_sets(meter, routes, bound::MAX_SETS)
    }

    /// Instruments on `meter`, with bound handles for at most `max_sets` label sets.
    pub(super) fn with_max_bound_sets(
        meter: &Meter,
        routes: RouteClassifier,
        max_sets: usize,
    ) -> Self {
        let instruments = Instruments {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Time from the request to its response headers, by route, status class and provider")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_description("Requests waiting for their response headers")
                .build(),
            overhead: meter
                .f64_histogram("overhead")
                .with_unit("s")
                .with_description("The proxy's own time per model request: time to response headers less the time spent waiting on the upstream")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            routes,
            series: Series::with_max_sets(max_sets),
        };
        Self {
            instruments: Arc::new(instruments),
        }
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            instruments: Arc::clone(&self.instruments),
        }
    }
}

/// The service of [`HttpMetricsLayer`].
#[derive(Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    instruments: Arc<Instruments>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for HttpMetrics<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, RB> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = HttpMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = (self.instruments.routes)(request.uri().path());
        self.instruments.active.add(1, &[]);
        HttpMetricsFuture {
            inner: self.inner.call(request),
            pending: Some(Pending {
                instruments: Arc::clone(&self.instruments),
                route,
                started: Instant::now(),
            }),
        }
    }
}

/// What a request in flight needs to be recorded; dropping it unrecorded (a client that
/// went away before the headers) still leaves the in-flight count right.
struct Pending {
    instruments: Arc<Instruments>,
    route: &'static str,
    started: Instant,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.instruments.active.add(-1, &[]);
    }
}

pin_project! {
    /// The future of [`HttpMetrics`].
    pub struct HttpMetricsFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F, RB, E> Future for HttpMetricsFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        if let Some(pending) = this.pending.take() {
            let elapsed = pending.started.elapsed();
            let i = &pending.instruments;
            let (status, provider) = match &result {
                Ok(response) => (
                    status_class(response.status().as_u16()),
                    response
                        .extensions()
                        .get::<ProviderId>()
                        .map(ProviderId::shared),
                ),
                Err(_) => ("error", None),
            };
            let route = pending.route;
            let bound = i.series.get((route, status, provider.clone()));
            bound::record(
                &i.duration,
                bound.as_ref().map(|b| &b.duration),
                elapsed.as_secs_f64(),
                || {
                    [
                        KeyValue::new("route", route),
                        KeyValue::new("status_class", status),
                        label_or_none("provider", provider),
                    ]
                },
            );
            if let Ok(response) = &mut result {
                if let Some(clock) = response.extensions().get::<UpstreamClock>() {
                    let overhead = elapsed.saturating_sub(clock.total());
                    bound::record(
                        &i.overhead,
                        bound.as_ref().map(|b| &b.overhead),
                        overhead.as_secs_f64(),
                        || [KeyValue::new("route", route)],
                    );
                    if let Some(value) = millis(overhead) {
                        response.headers_mut().insert(OVERHEAD_HEADER, value);
                    }
                }
            }
        }
        Poll::Ready(result)
    }
}

/// A constant: inserting by `&str` copies a non-standard name on every response.
const OVERHEAD_HEADER: http::HeaderName = http::HeaderName::from_static("x-aiproxy-overhead-ms");

/// `duration` in milliseconds with three decimals, rounded to the microsecond: written as
/// two integers (formatting the float with a precision cost more than the rest of the
/// layer).
fn millis(duration: std::time::Duration) -> Option<HeaderValue> {
    use std::io::Write;
    let micros = (duration.as_nanos() + 500) / 1000;
    let mut text = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    write!(cursor, "{}.{:03}", micros / 1000, micros % 1000).ok()?;
    let written = usize::try_from(cursor.position()).ok()?;
    HeaderValue::from_bytes(&text[..written]).ok()
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::millis;
    use std::time::Duration;

    #[test]
    fn overhead_is_written_in_milliseconds_to_the_microsecond() {
        for (nanos, text) in [
            (0, "0.000"),
            (499, "0.000"),
            (500, "0.001"),
            (1_234_567, "1.235"),
            (12_000_400, "12.000"),
            (987_654_321_000, "987654.321"),
        ] {
            let value = millis(Duration::from_nanos(nanos)).unwrap();
            assert_eq!(value.to_str().unwrap(), text, "{nanos} ns");
        }
        assert!(millis(Duration::MAX).is_some(), "the largest duration fits");
    }
}
