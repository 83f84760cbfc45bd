//! How a text log line writes its fields (and its spans' fields): the same text as
//! tracing-subscriber's `DefaultFields`, by a shorter way for the values the access line
//! has.
//!
//! `DefaultFields` writes every field name through a terminal style even when colours are
//! off, every string through `Debug`'s per-character escaping, and the message through an
//! ANSI-sanitizing writer one character at a time: about a third of the access line's cost
//! (callgrind, per request). Here a name is written as it is, a string with nothing to escape
//! between quotes as it is, a message with nothing to sanitize as it is; anything else (and
//! every field of a line with colours) goes to `DefaultFields`'s own visitor, so the text is
//! the same byte for byte (the tests compare both on many values).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// The fields formatter of text lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct LineFields;

impl<'writer> FormatFields<'writer> for LineFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = LineVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct LineVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl LineVisitor<'_> {
    /// The field as `DefaultFields` writes it.
    fn as_default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if field.name().starts_with("log.") {
            return; // left out, as `name` says
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    /// The space between fields (none before the first).
    fn pad(&mut self) {
        if !self.is_empty {
            self.result = self.writer.write_char(' ');
        }
        self.is_empty = false;
    }

    /// `name=` after the separating space; `false` for a field not written at all (the
    /// `log.` metadata `DefaultFields` leaves out, with tracing-log on, as it is here).
    fn name(&mut self, name: &str) -> bool {
        if name.starts_with("log.") {
            return false;
        }
        self.pad();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        true
    }

    /// An integer field: its digits (`Debug` and `Display` agree), also as a message.
    fn integer(&mut self, field: &Field, value: impl fmt::Display) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.pad();
        } else if !self.name(field.name()) {
            return;
        }
        self.result = self.result.and_then(|()| write!(self.writer, "{value}"));
    }

    /// A message with nothing to sanitize, as it is.
    fn message(&mut self, text: &str) {
        self.pad();
        self.result = self.result.and_then(|()| self.writer.write_str(text));
    }
}

thread_local! {
    /// Where a formatted message is checked before it is written.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let plain = if field.name() == "message" {
            !needs_sanitizing(value)
        } else {
            quotes_as_is(value)
        };
        if !plain {
            return self.as_default(field, |visitor| visitor.record_str(field, value));
        }
        if field.name() == "message" {
            return self.message(value);
        }
        if self.name(field.name()) {
            self.result = self.result.and_then(|()| {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            });
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        self.as_default(field, |visitor| visitor.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            let written = SCRATCH.with(|scratch| {
                let Ok(mut scratch) = scratch.try_borrow_mut() else {
                    return false; // a message whose Debug logs: the plain way
                };
                scratch.clear();
                if write!(scratch, "{value:?}").is_err() || needs_sanitizing(&scratch) {
                    return false;
                }
                self.message(&scratch);
                true
            });
            if !written {
                self.as_default(field, |visitor| visitor.record_debug(field, value));
            }
            return;
        }
        if self.name(field.name()) {
            self.result = self.result.and_then(|()| write!(self.writer, "{value:?}"));
        }
    }
}

impl VisitOutput<fmt::Result> for LineVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

/// Whether `Debug` would write `text` between quotes unchanged: printable ASCII with no
/// quote or backslash.
fn quotes_as_is(text: &str) -> bool {
    text.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// Whether tracing-subscriber's message sanitizing would change `text`: the C0 controls a
/// terminal sequence starts with (ESC, BEL, BS, FF), DEL, or a C1 control (U+0080-U+009F,
/// `0xC2 0x80..=0x9F` in UTF-8).
fn needs_sanitizing(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f)
            || (b == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Captured;
    use proptest::prelude::*;

    /// What `run` logs through a text layer with these fields (no time, no colours).
    fn lines<N>(fields: N, run: &dyn Fn()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(fields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        captured.text()
    }

    /// The same line both ways.
    fn same(run: &dyn Fn()) -> String {
        let ours = lines(LineFields, run);
        assert_eq!(ours, lines(DefaultFields::new(), run));
        ours
    }

    #[derive(Debug)]
    struct Failed(Option<Box<Failed>>);

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "failed \u{1b}[31m")
        }
    }

    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.0.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn the_access_line_and_its_span_are_written_as_the_default_writes_them() {
        let line = same(&|| {
            let span = tracing::info_span!(
                "request",
                method = %http::Method::POST,
                path = %"/v1/chat/completions",
                request_id = "7f3c",
                account = tracing::field::Empty,
            );
            let _in = span.enter();
            span.record("account", "work");
            let model: Option<&str> = Some("claude-sonnet-4-5");
            let none: Option<&str> = None;
            tracing::info!(
                latency = format_args!("{} ms", 12),
                status = 200u16,
                "gen_ai.request.model" = model,
                "aiproxy.attempts" = none,
                "aiproxy.kiro.credits" = Some(0.25),
                "gen_ai.usage.input_tokens" = Some(12i64),
                r#type = "x",
                "finished processing request"
            );
        });
        assert!(
            line.contains(
                "request{method=POST path=/v1/chat/completions request_id=\"7f3c\" account=\"work\"}: "
            ),
            "{line}"
        );
        assert!(line.contains(": finished processing request latency=12 ms status=200 gen_ai.request.model=\"claude-sonnet-4-5\" aiproxy.kiro.credits=0.25 gen_ai.usage.input_tokens=12 type=\"x\"\n"), "{line}");
    }

    #[test]
    fn what_needs_escaping_is_escaped_as_the_default_does() {
        same(&|| {
            tracing::warn!(
                text = "say \"hi\"\\ \u{1b}[2J\ttab é \u{85}",
                error = &Failed(Some(Box::new(Failed(None)))) as &(dyn std::error::Error + 'static),
                alone = &Failed(None) as &(dyn std::error::Error + 'static),
                "bell \u{7} and \u{1b}[31m red {}",
                "\u{9b}"
            );
            tracing::warn!(message = "a str message \u{1b}[1m", n = 1);
            tracing::warn!(message = "a plain str message", n = -1);
            tracing::error!("first");
            tracing::info!(only = true);
            tracing::info!(message = 42u64, unsigned = u64::MAX, signed = i64::MIN);
            tracing::info!("log.target" = "skipped", "log.line" = 3u64, after = 1);
        });
    }

    proptest! {
        #[test]
        fn any_values_are_written_as_the_default_writes_them(
            text in "\\PC{0,12}|[ -~]{0,12}|[\\x00-\\x20\\x7f-\\u{a0}\"\\\\]{0,6}",
            message in "\\PC{0,12}|[\\x00-\\x20\\x7f-\\u{a0}]{0,6}",
            number in any::<i64>(),
            unsigned in any::<u64>(),
            float in any::<f64>(),
        ) {
            same(&|| {
                let span = tracing::info_span!("outer", text = text.as_str(), number);
                let _in = span.enter();
                tracing::info!(text = text.as_str(), shown = %text, debug = ?text, float, "{}", message);
                tracing::info!(message = message.as_str(), number, unsigned);
            });
        }
    }
}
