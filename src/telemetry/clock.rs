//! The timestamp of a text log line: the same RFC 3339 text as tracing-subscriber's
//! `SystemTime` (`2026-12-07T19:45:02.123456Z`), with the date and time of day formatted once
//! a second per thread instead of for every line (they were 1 % of a request's instructions
//! under callgrind; the microseconds are all that changes between lines).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The clock of text lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct LineClock;

/// The second last formatted on this thread, and its text up to the decimal point.
struct Second {
    unix: Option<u64>,
    text: String,
}

thread_local! {
    static SECOND: RefCell<Second> = const { RefCell::new(Second { unix: None, text: String::new() }) };
}

impl FormatTime for LineClock {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now();
        let Ok(since) = now.duration_since(UNIX_EPOCH) else {
            // Before 1970: tracing-subscriber's clock (it writes negative years).
            return tracing_subscriber::fmt::time::SystemTime.format_time(writer);
        };
        let micros = since.subsec_micros();
        SECOND.with(|second| {
            let Ok(mut second) = second.try_borrow_mut() else {
                return tracing_subscriber::fmt::time::SystemTime.format_time(writer);
            };
            if second.unix != Some(since.as_secs()) {
                second.text.clear();
                if civil(since.as_secs(), &mut second.text).is_err() {
                    second.unix = None;
                    return tracing_subscriber::fmt::time::SystemTime.format_time(writer);
                }
                second.unix = Some(since.as_secs());
            }
            writer.write_str(&second.text)?;
            write!(writer, ".{micros:06}Z")
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (UTC), as tracing-subscriber writes it; an error for
/// a year past 9999 (the `time` crate's range), which the caller leaves to tracing-subscriber.
fn civil(unix: u64, out: &mut String) -> fmt::Result {
    let at = i64::try_from(unix)
        .ok()
        .and_then(|unix| time::OffsetDateTime::from_unix_timestamp(unix).ok())
        .ok_or(fmt::Error)?;
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn civil_text(unix: u64) -> String {
        let mut text = String::new();
        civil(unix, &mut text).unwrap();
        text
    }

    #[test]
    fn dates_are_the_calendars() {
        for (unix, text) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_399, "2000-02-28T23:59:59"),
            (951_782_400, "2000-02-29T00:00:00"),
            (951_868_800, "2000-03-01T00:00:00"),
            (4_107_542_400, "2100-03-01T00:00:00"),
            (4_107_542_399, "2100-02-28T23:59:59"),
            (1_796_671_502, "2026-12-07T19:25:02"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            assert_eq!(civil_text(unix), text, "{unix}");
        }
        // Past 9999 (`+10000-01-01T00:00:00` in tracing-subscriber's text): refused here, so
        // the line is written by tracing-subscriber's clock.
        assert!(civil(253_402_300_800, &mut String::new()).is_err());
    }

    /// The same text as tracing-subscriber's clock, read a moment apart (retried when a
    /// second turned between the two reads).
    #[test]
    fn lines_read_as_tracing_subscribers_clock_writes_them() {
        let read = |clock: &dyn FormatTime| {
            let mut text = String::new();
            clock.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        for _ in 0..100 {
            let (theirs, ours) = (
                read(&tracing_subscriber::fmt::time::SystemTime),
                read(&LineClock),
            );
            let (theirs_second, ours_second) =
                (&theirs[..theirs.len() - 8], &ours[..ours.len() - 8]);
            assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
            assert!(
                ours.ends_with('Z') && ours.as_bytes()[ours.len() - 8] == b'.',
                "{ours}"
            );
            if theirs_second == ours_second {
                // The cached second, read again.
                let again = read(&LineClock);
                if again[..again.len() - 8] == *ours_second {
                    return;
                }
            }
        }
        panic!("the clocks never agreed on the second");
    }
}
