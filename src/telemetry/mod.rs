//! Telemetry: logging set-up (here) and the metrics registry ([`metrics`]).
//!
//! Logging: `RUST_LOG` levels (default `info`), text or JSON lines on stderr.
//!
//! Lines are formatted on the thread that logs and written by a dedicated thread through a
//! buffer, so a request never waits on a `write` to stderr (one access-log line per request
//! was one syscall per request on the hot path). The buffer is flushed whenever the queue
//! runs empty and when the [`LogGuard`] is dropped at exit. If stderr stalls (a blocked
//! pipe), lines beyond the queue (128k lines) are dropped rather than stalling requests.
//! Colours only when stderr is a terminal.

pub mod metrics;

use crate::config::LogFormat;
use std::io::{BufWriter, IsTerminal};
use tracing_subscriber::EnvFilter;

/// Keeps the log writer thread alive; dropping it flushes what is queued. Hold it until exit.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global subscriber. Call once per process and keep the guard.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    match result {
        Ok(()) => LogGuard {
            _writer: Some(guard),
        },
        Err(error) => {
            eprintln!("aiproxy: logging was already initialised: {error}");
            LogGuard { _writer: None }
        }
    }
}
