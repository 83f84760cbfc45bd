//! Trace export over OTLP (HTTP, protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: every request span, with its GenAI
//! attributes, goes to the collector through `tracing-opentelemetry`.
//!
//! The SDK's batch processor exports from a thread of its own, outside the async runtime;
//! [`RuntimeClient`] carries each export onto the runtime, so the HTTP client is the
//! hyper client the rest of aiproxy uses (no second HTTP stack). The standard `OTEL_*`
//! variables apply as the specification has them: `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` (the service is `aiproxy` only when neither names it),
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*` and
//! `OTEL_EXPORTER_OTLP_HEADERS` (each pinned by a test in `tests/traces.rs`), and
//! `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` ([`export_timeout`], unit-tested below).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;

/// The variables that switch export on (either is enough).
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Longest an export may take unless `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` says otherwise
/// (the specification's default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The export timeout: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (milliseconds), else [`EXPORT_TIMEOUT`]. Given to the exporter explicitly because our HTTP
/// client times each export too, and an explicit timeout would otherwise hide the variables.
fn export_timeout(var: impl Fn(&str) -> Option<String>) -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| var(name)?.trim().parse::<u64>().ok())
    .map_or(EXPORT_TIMEOUT, Duration::from_millis)
}

/// Largest collector answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The tracer provider when export is configured; `Ok(None)` when it is not.
pub fn provider(runtime: &tokio::runtime::Handle) -> Result<Option<SdkTracerProvider>, String> {
    let configured = ENDPOINT_VARS
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    if !configured {
        return Ok(None);
    }
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL") {
        if protocol != "http/protobuf" {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: aiproxy exports \
                 http/protobuf. Point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's OTLP/HTTP \
                 port (usually 4318) and unset the variable or set it to http/protobuf"
            ));
        }
    }
    let timeout = export_timeout(|name| std::env::var(name).ok());
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(timeout)
        .with_http_client(RuntimeClient::new(runtime.clone(), timeout))
        .build()
        .map_err(|e| format!("cannot set up the OTLP trace exporter: {e}"))?;
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build(),
    ))
}

/// The resource the SDK detects from the environment, with the service named as the
/// specification says: `OTEL_SERVICE_NAME`, else `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`, else `aiproxy` (the SDK would say `unknown_service`, and its
/// attribute detector, run last, would let an attribute beat `OTEL_SERVICE_NAME`).
fn resource() -> Resource {
    let detected = Resource::builder();
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
    {
        return detected.with_service_name(name.trim().to_owned()).build();
    }
    let by_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|value| {
        value
            .split(',')
            .any(|pair| pair.split('=').next().map(str::trim) == Some("service.name"))
    });
    if by_attributes {
        detected.build()
    } else {
        detected.with_service_name("aiproxy").build()
    }
}

/// The tracer for the `tracing` layer.
pub fn tracer(provider: &SdkTracerProvider) -> SdkTracer {
    provider.tracer("aiproxy")
}

/// An OTLP HTTP client whose requests run on the async runtime (see the module docs);
/// `https://` collectors are reached over rustls with the web PKI roots.
#[derive(Clone)]
pub struct RuntimeClient {
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    client: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

impl std::fmt::Debug for RuntimeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeClient").finish_non_exhaustive()
    }
}

impl RuntimeClient {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Self {
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Self {
            runtime,
            timeout,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let timed = async move {
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| HttpError::from("the OTLP collector did not answer in time"))?
        };
        self.runtime.spawn(timed).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_timeout_follows_the_signal_variable_then_the_general_one() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert_eq!(export_timeout(vars(&[])), EXPORT_TIMEOUT);
        assert_eq!(
            export_timeout(vars(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])),
            Duration::from_millis(2500)
        );
        assert_eq!(
            export_timeout(vars(&[
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
            ])),
            Duration::from_millis(700)
        );
        assert_eq!(
            export_timeout(vars(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")])),
            EXPORT_TIMEOUT,
            "not a number of milliseconds: the default"
        );
    }
}
