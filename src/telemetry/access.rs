//! The per-request access line: what the API adapter learns while it serves a request
//! (provider, model, account, attempts, usage) is noted here as it comes and written once,
//! with the status and latency, when the response leaves.
//!
//! The request span used to carry these as fields recorded one by one: each `record`
//! re-entered the span registry and appended to the span's formatted fields: with the
//! default INFO logging, about 1 µs a request more (pipeline bench) than one formatted event.
//! The span still gets them when traces are exported (an OTLP backend reads span attributes,
//! not lines): [`AccessNote`] records them into it then.

use aiproxy_layers::ProviderId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The access line's target (what `RUST_LOG` filters it by): tower-http's, as the line was
/// before it was written here.
pub const TARGET: &str = "tower_http::trace::on_response";

/// Whether request spans are exported (set once by [`super::init`]).
static SPANS_EXPORTED: AtomicBool = AtomicBool::new(false);

/// Request spans are exported from now on: notes record their fields into the span too.
pub(super) fn spans_exported() {
    SPANS_EXPORTED.store(true, Ordering::Relaxed);
}

/// What a request's access line says beyond method, path and id; shared by the API adapter
/// (which fills it, the usage when the answer ends) and the line written when the response
/// leaves (which finds it in the response's extensions).
#[derive(Clone, Debug)]
pub struct AccessNote(Arc<Note>);

#[derive(Debug)]
struct Note {
    fields: Mutex<AccessFields>,
    /// The request span, when spans are exported; `None` otherwise.
    span: Option<tracing::Span>,
}

/// The noted fields, each absent until known.
#[derive(Debug, Default)]
struct AccessFields {
    provider: Option<ProviderId>,
    model: Option<Arc<str>>,
    account: Option<Arc<str>>,
    attempts: Option<String>,
    credits: Option<f64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
}

impl AccessNote {
    /// A note for the request being served, when anything reads it: the access line is on
    /// (`info` for its target) or spans are exported. `None` costs nothing further.
    pub fn for_current_request() -> Option<Self> {
        let exported = SPANS_EXPORTED.load(Ordering::Relaxed);
        if !exported && !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return None;
        }
        Some(Self(Arc::new(Note {
            fields: Mutex::default(),
            span: exported.then(tracing::Span::current),
        })))
    }

    fn update(&self, note: impl FnOnce(&mut AccessFields, Option<&tracing::Span>)) {
        let mut fields = self.0.fields.lock().unwrap_or_else(|e| e.into_inner());
        note(&mut fields, self.0.span.as_ref());
    }

    /// The provider the request was routed to.
    pub fn provider(&self, provider: &ProviderId) {
        self.update(|fields, span| {
            if let Some(span) = span {
                span.record("gen_ai.provider.name", provider.as_str());
            }
            fields.provider = Some(provider.clone());
        });
    }

    /// The model the client asked for.
    pub fn model(&self, model: &Arc<str>) {
        self.update(|fields, span| {
            if let Some(span) = span {
                span.record("gen_ai.request.model", &**model);
            }
            fields.model = Some(Arc::clone(model));
        });
    }

    /// The account that answered.
    pub fn account(&self, account: &Arc<str>) {
        self.update(|fields, span| {
            if let Some(span) = span {
                span.record("account", &**account);
            }
            fields.account = Some(Arc::clone(account));
        });
    }

    /// Every upstream call the request cost (when there was more than the one that answered).
    pub fn attempts(&self, summary: String) {
        self.update(|fields, span| {
            if let Some(span) = span {
                span.record("aiproxy.attempts", summary.as_str());
            }
            fields.attempts = Some(summary);
        });
    }

    /// The Kiro credits the answer cost.
    pub fn credits(&self, credits: f64) {
        self.update(|fields, span| {
            if let Some(span) = span {
                span.record("aiproxy.kiro.credits", credits);
            }
            fields.credits = Some(credits);
        });
    }

    /// The answer's usage: the prompt's tokens (cached parts included) and the output's.
    pub fn usage(&self, input: u64, output: u64) {
        // Integers, as the GenAI conventions have them (tracing-opentelemetry exports
        // unsigned fields as text).
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.update(|fields, span| {
            if let Some(span) = span {
                span.record("gen_ai.usage.input_tokens", int(input));
                span.record("gen_ai.usage.output_tokens", int(output));
            }
            fields.input_tokens = Some(int(input));
            fields.output_tokens = Some(int(output));
        });
    }

    /// The response's status, for the exported span (the line has it from the response).
    pub fn status(&self, status: u16) {
        if let Some(span) = &self.0.span {
            // As an integer (OpenTelemetry's HTTP convention).
            span.record("http.response.status_code", i64::from(status));
        }
    }
}

/// Writes the access line (inside the request span, which says method, path and id).
pub fn write_line(status: u16, latency: Duration, note: Option<&AccessNote>) {
    let noted = note.map(|note| note.0.fields.lock().unwrap_or_else(|e| e.into_inner()));
    let empty = AccessFields::default();
    let fields = noted.as_deref().unwrap_or(&empty);
    tracing::info!(
        target: TARGET,
        latency = format_args!("{} ms", latency.as_millis()),
        status,
        "gen_ai.provider.name" = fields.provider.as_ref().map(ProviderId::as_str),
        "gen_ai.request.model" = fields.model.as_deref(),
        account = fields.account.as_deref(),
        "aiproxy.attempts" = fields.attempts.as_deref(),
        "aiproxy.kiro.credits" = fields.credits,
        "gen_ai.usage.input_tokens" = fields.input_tokens,
        "gen_ai.usage.output_tokens" = fields.output_tokens,
        "finished processing request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Captured;

    fn logged(filter: &str, run: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        captured.text()
    }

    #[test]
    fn the_line_says_what_was_noted_once_the_response_leaves() {
        let line = logged("info", || {
            let note = AccessNote::for_current_request().expect("info is on");
            note.provider(&ProviderId::new("kiro-api"));
            note.model(&Arc::from("claude-sonnet-4-5"));
            note.account(&Arc::from("acct-a"));
            note.attempts("acct-b first throttled, acct-a retry ok".into());
            note.credits(0.25);
            note.usage(120, 7);
            write_line(200, Duration::from_millis(3), Some(&note));
        });
        for field in [
            "finished processing request",
            "latency=3 ms",
            "status=200",
            r#"gen_ai.provider.name="kiro-api""#,
            r#"gen_ai.request.model="claude-sonnet-4-5""#,
            r#"account="acct-a""#,
            r#"aiproxy.attempts="acct-b first throttled, acct-a retry ok""#,
            "aiproxy.kiro.credits=0.25",
            "gen_ai.usage.input_tokens=120",
            "gen_ai.usage.output_tokens=7",
        ] {
            assert!(line.contains(field), "{field} in {line}");
        }
    }

    #[test]
    fn what_was_not_noted_is_left_out() {
        let line = logged("info", || write_line(404, Duration::ZERO, None));
        assert!(line.contains("status=404"), "{line}");
        assert!(!line.contains("gen_ai"), "{line}");
        assert!(!line.contains("account"), "{line}");
    }

    #[test]
    fn no_note_is_kept_when_nothing_reads_it() {
        let line = logged("warn", || {
            assert!(AccessNote::for_current_request().is_none());
            write_line(200, Duration::ZERO, None);
        });
        assert_eq!(line, "");
    }
}
