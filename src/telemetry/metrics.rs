//! The metrics registry of one pipeline: an OpenTelemetry meter provider whose reader is the
//! Prometheus exporter, rendered as Prometheus text at `GET /metrics`.
//!
//! Every instrument is named without a prefix (`http.server.request.duration`,
//! `gen_ai.client.token.usage`, ...) and the exporter puts `aiproxy_` in front of each, so
//! Prometheus sees `aiproxy_http_server_request_duration_seconds` and so on, while OTLP
//! consumers see the OpenTelemetry names under the `aiproxy` scope.
//!
//! Why this exporter: `opentelemetry-prometheus` was declared discontinued at 0.29 for its
//! unmaintained `protobuf` dependency; its 0.33 release builds on `prometheus` 0.14 without
//! default features, which has no `protobuf` at all (`cargo tree -i protobuf` finds nothing),
//! so the official exporter is the smallest correct choice again.

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::Resource;
use prometheus::{Encoder, TextEncoder};

/// The registry and the meter that layers build their instruments on. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: prometheus::Registry,
    // Kept so the reader stays registered for as long as the pipeline lives.
    _provider: SdkMeterProvider,
    meter: Meter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Why the metrics could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Prometheus exporter: {0}")]
pub struct MetricsError(String);

impl Metrics {
    /// A fresh registry (one per pipeline, so two pipelines in one process do not mix).
    pub fn new() -> Result<Self, MetricsError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .with_namespace("aiproxy")
            .scope_info_enabled(false)
            .build()
            .map_err(|e| MetricsError(e.to_string()))?;
        let provider = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("aiproxy")
                    .build(),
            )
            .build();
        let meter = provider.meter("aiproxy");
        Ok(Self {
            registry,
            _provider: provider,
            meter,
        })
    }

    /// The meter instruments are built on.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The Prometheus text exposition of everything recorded so far, and its content type.
    pub fn render(&self) -> (String, &'static str) {
        let mut text = Vec::with_capacity(16 * 1024);
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut text) {
            tracing::warn!(%error, "encoding the metrics failed");
        }
        (
            String::from_utf8_lossy(&text).into_owned(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    }
}
