//! The log writer: a line is formatted on the thread that logs and appended to a shared
//! buffer under a short lock; one writer thread writes the buffer out in batches.
//!
//! Why not a channel with a line per message (tracing-appender, used before): at 500 req/s
//! it woke its thread for every access-log line and wrote each line alone, 6.5 syscalls per
//! request of the 22.7 the whole request cost (futex wake-ups, the write, and its receiver's
//! `sched_yield` spinning; `strace -c` over 2000 requests), on the core the requests use.
//! Here the writer thread sleeps until a line lands in an empty buffer, gathers for
//! [`GATHER`], then writes everything in one `write`: one wake-up and one write per batch,
//! and none at all when nothing is logged.
//!
//! If the sink stalls (a blocked pipe), the buffer stops growing at its bound and further
//! lines are dropped rather than stalling requests; how many is written once the sink takes
//! lines again. Dropping the [`BatchGuard`] writes what is buffered and stops the thread.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long the writer waits after the first line of a batch for more. Each batch wakes the
/// writer twice on the requests' core (the first line, the end of the wait): at 1000 req/s,
/// 5 ms cost about 10 µs of aiproxy's CPU per request more than 100 ms (medians of five
/// pairs of runs, run times from `/proc/PID/task/*/schedstat`); a line reaches stderr at
/// most this late, and everything buffered is written at exit.
pub const GATHER: Duration = Duration::from_millis(100);

/// The buffer's bound (lines beyond it are dropped while the sink is stalled).
pub const MAX_BUFFER: usize = 8 << 20;

#[derive(Debug, Default)]
struct State {
    buffer: Vec<u8>,
    dropped: u64,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    max: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while appending bytes leaves a usable buffer.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` the log layer writes lines to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Batched {
    shared: Arc<Shared>,
}

/// Writes what is buffered and stops the writer thread when dropped.
#[derive(Debug)]
pub struct BatchGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Batched {
    /// Starts the writer thread for `sink`, with the buffer bounded at `max` bytes.
    pub fn start<W: Write + Send + 'static>(
        sink: W,
        max: usize,
    ) -> std::io::Result<(Self, BatchGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            max,
        });
        let thread = std::thread::Builder::new()
            .name("aiproxy-log".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || write_batches(&shared, sink)
            })?;
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            BatchGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

/// The writer thread: waits for a first line, gathers, writes the batch; until closed and
/// empty.
fn write_batches<W: Write>(shared: &Shared, mut sink: W) {
    let mut spare = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.buffer.is_empty() && !state.closed {
            state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.buffer.is_empty() {
            return;
        }
        if !state.closed {
            drop(state);
            std::thread::sleep(GATHER);
            state = shared.lock();
        }
        let batch = std::mem::replace(&mut state.buffer, std::mem::take(&mut spare));
        let dropped = std::mem::take(&mut state.dropped);
        drop(state);
        // A sink that fails (stderr closed) loses the batch, as a failed write would.
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        if dropped > 0 {
            let _ = writeln!(
                sink,
                "aiproxy: {dropped} log lines were dropped while the log output was blocked"
            )
            .and_then(|()| sink.flush());
        }
        spare = batch;
        spare.clear();
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line's writer: appends to the shared buffer. tracing-subscriber's fmt layer writes a
/// formatted event with one `write`, so a line is kept or dropped whole.
#[derive(Debug)]
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        if state.buffer.len() + bytes.len() > self.shared.max {
            state.dropped += 1;
            return Ok(bytes.len());
        }
        let first = state.buffer.is_empty();
        state.buffer.extend_from_slice(bytes);
        drop(state);
        if first {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// A sink tests can read, and hold (a stalled pipe).
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            *self.writes.lock().unwrap() += 1;
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_whole_in_batches() {
        let sink = Sink::default();
        let (writer, guard) = Batched::start(sink.clone(), MAX_BUFFER).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let line = format!("thread {t} line {i}\n");
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2000);
        for t in 0..4 {
            let ours: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            assert_eq!(ours.len(), 500);
            assert_eq!(ours[499], format!("thread {t} line 499"), "in order");
        }
        let writes = *sink.writes.lock().unwrap();
        assert!(writes < 2000, "{writes} writes for 2000 lines");
    }

    #[test]
    fn a_stalled_sink_drops_lines_beyond_the_bound_and_says_so() {
        let sink = Sink::default();
        let held = sink.gate.lock().unwrap();
        let (writer, guard) = Batched::start(sink.clone(), 1000).unwrap();
        // The first line is taken by the writer thread, which then blocks in the sink.
        writeln!(writer.make_writer(), "first").unwrap();
        std::thread::sleep(GATHER * 4);
        // One write per line, as the fmt layer writes a formatted event.
        for i in 0..100 {
            let line = format!("line {i:04} of a stalled sink\n");
            writer.make_writer().write_all(line.as_bytes()).unwrap();
        }
        drop(held);
        drop(guard);
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        let kept = text.lines().filter(|l| l.starts_with("line ")).count();
        assert!(kept < 100 && kept > 0, "{kept}");
        assert!(
            text.contains(&format!("{} log lines were dropped", 100 - kept)),
            "{text}"
        );
    }
}
