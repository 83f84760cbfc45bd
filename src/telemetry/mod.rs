//! Telemetry: logging set-up (here), the metrics registry ([`metrics`]) and trace export
//! over OTLP ([`traces`]).
//!
//! Logging: `RUST_LOG` levels (default `info`), text or JSON lines on stderr. Text lines are
//! tracing-subscriber's format, their fields ([`fields`]) and timestamp (`clock`) written by a
//! shorter way than its own (the same text).
//!
//! Lines are formatted on the thread that logs and written in batches by a dedicated thread
//! ([`batched`]), so a request never waits on a `write` to stderr and costs no wake-up of
//! its own; what is buffered is written when the [`LogGuard`] is dropped at exit. If stderr
//! stalls (a blocked pipe), lines beyond the buffer's bound are dropped (and counted) rather
//! than stalling requests. Colours only when stderr is a terminal.

pub mod access;
pub mod batched;
mod clock;
pub mod fields;
pub mod journal;
pub mod metrics;
pub mod traces;

use crate::config::LogFormat;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What a fmt subscriber writes, kept for a test to read.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log-line layer: text or JSON lines to `writer`.
fn lines<S>(format: LogFormat, writer: BoxMakeWriter) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => lines
            .fmt_fields(fields::LineFields)
            .with_timer(clock::LineClock)
            .boxed(),
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    }
}

/// Keeps the log writer thread and the trace exporter alive; dropping it flushes what is
/// queued (log lines, spans). Hold it until exit, outside the async runtime.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<batched::BatchGuard>,
    traces: Option<SdkTracerProvider>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("aiproxy: the last spans could not be exported: {error}");
            }
        }
    }
}

/// Installs the global subscriber: log lines, and spans exported over OTLP when the
/// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables say where (`runtime` runs the exports; `None`:
/// no export). Call once per process and keep the guard.
pub fn init(format: LogFormat, runtime: Option<&tokio::runtime::Handle>) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = match batched::Batched::start(std::io::stderr(), batched::MAX_BUFFER) {
        Ok((writer, guard)) => (BoxMakeWriter::new(writer), Some(guard)),
        Err(error) => {
            // Without its thread, lines are written as they come (one write each).
            eprintln!("aiproxy: cannot start the log writer thread ({error}); logging directly");
            (BoxMakeWriter::new(std::io::stderr), None)
        }
    };
    let (traces, problem) = match runtime.map(traces::provider) {
        Some(Ok(provider)) => (provider, None),
        Some(Err(problem)) => (None, Some(problem)),
        None => (None, None),
    };
    let result = match &traces {
        // No export: the filter is global, the cheapest shape (callsites below the level
        // are never enabled at all).
        None => tracing_subscriber::registry()
            .with(filter)
            .with(lines(format, writer))
            .try_init(),
        // Spans are exported at `info` whatever `RUST_LOG` says about log lines, so each
        // layer has its own filter.
        Some(provider) => tracing_subscriber::registry()
            .with(lines(format, writer).with_filter(filter))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(traces::tracer(provider))
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            )
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("aiproxy: logging was already initialised: {error}");
        return LogGuard {
            _writer: None,
            traces: None,
        };
    }
    if let Some(problem) = problem {
        tracing::warn!("traces are not exported: {problem}");
    } else if traces.is_some() {
        access::spans_exported();
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    LogGuard {
        _writer: guard,
        traces,
    }
}
