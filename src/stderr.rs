//! The supervisor's own stderr, written so that it can never block the supervisor.
//!
//! Whatever the supervisor writes to its stderr (children's lines relayed by
//! [`crate::logsink::StderrSink`], its own log lines, `flowctl run`'s messages) goes into one
//! bounded queue that a dedicated thread writes out. A stderr nobody reads (`2> fifo` with no
//! reader, a full pipe) then stalls only that thread: when the queue is full, new lines are
//! dropped and counted, and once output flows again one line says how many were lost, where
//! they were lost. [`dropped_total`] is the count since start (`/metrics` shows it).
//!
//! Hand-written rather than `tracing-appender`'s non-blocking writer because the children's
//! lines share it, the bound is in bytes (a line may be 64 KiB), and the drop notice must be
//! written in the stream itself.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Bytes that may wait for the writer; past this, lines are dropped.
pub const CAPACITY: usize = 1 << 20;

struct Item {
    /// Lines dropped just before this one, not yet reported.
    dropped_before: u64,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct State {
    items: VecDeque<Item>,
    queued_bytes: usize,
    /// Dropped since the last notice or queued line.
    pending_drops: u64,
    /// The writer is in a `write` (so the queue being empty is not "all written").
    writing: bool,
}

struct Queue {
    state: Mutex<State>,
    /// Something to write.
    work: Condvar,
    /// Everything queued so far is written.
    idle: Condvar,
}

static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);

static QUEUE: OnceLock<&'static Queue> = OnceLock::new();

fn queue() -> &'static Queue {
    QUEUE.get_or_init(|| {
        let q: &'static Queue = Box::leak(Box::new(Queue {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
        }));
        // Without the thread the queue fills and every line is counted as dropped, which is
        // still better than blocking.
        let _ = std::thread::Builder::new()
            .name("stderr-writer".into())
            .spawn(move || write_loop(q));
        q
    })
}

fn lock(q: &Queue) -> MutexGuard<'_, State> {
    // Nothing panics while holding the lock; a poisoned one still holds consistent data.
    q.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the writer takes at once: whole items (and notices) up to this many bytes, so a
/// flood of short lines costs one `write` per batch rather than per line.
const BATCH: usize = 64 * 1024;

fn write_loop(q: &'static Queue) {
    let mut err = io::stderr();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        {
            let mut s = lock(q);
            s.writing = false;
            while s.items.is_empty() && s.pending_drops == 0 {
                q.idle.notify_all();
                s = q.work.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.writing = true;
            while batch.len() < BATCH {
                let Some(item) = s.items.pop_front() else {
                    break;
                };
                s.queued_bytes -= item.bytes.len();
                if item.dropped_before > 0 {
                    batch.extend_from_slice(notice_line(item.dropped_before).as_bytes());
                }
                batch.extend_from_slice(&item.bytes);
            }
            if s.items.is_empty() && s.pending_drops > 0 {
                let n = std::mem::take(&mut s.pending_drops);
                batch.extend_from_slice(notice_line(n).as_bytes());
            }
        }
        // A closed stderr must not take the supervisor down; the output is lost either way.
        let _ = err.write_all(&batch);
        batch.clear();
        if batch.capacity() > 4 * BATCH {
            batch.shrink_to(BATCH);
        }
    }
}

/// The line that reports `n` lost lines.
pub fn notice_line(n: u64) -> String {
    let lines = if n == 1 { "line" } else { "lines" };
    format!("flowctl: dropped {n} {lines} of output: stderr was not being read\n")
}

/// Queues `record` (one or more whole lines, newline included) for stderr, or drops and
/// counts it when the queue is full. Never blocks on the output.
pub fn write(record: &[u8]) {
    if record.is_empty() {
        return;
    }
    let q = queue();
    let mut s = lock(q);
    if s.queued_bytes + record.len() > CAPACITY {
        s.pending_drops += 1;
        DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let dropped_before = std::mem::take(&mut s.pending_drops);
    // The writer waits only on an empty queue: wake it only then (no syscall per line).
    let wake = s.items.is_empty();
    s.queued_bytes += record.len();
    s.items.push_back(Item {
        dropped_before,
        bytes: record.to_vec(),
    });
    drop(s);
    if wake {
        q.work.notify_one();
    }
}

/// Queues one line of text (the newline is added), like `eprintln!`.
pub fn line(text: impl fmt::Display) {
    let mut s = text.to_string();
    s.push('\n');
    write(s.as_bytes());
}

/// Lines dropped since the process started because stderr was not being read.
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(Ordering::Relaxed)
}

/// Waits up to `timeout` for everything queued to be written; false if stderr is still not
/// being read. Call before exiting, so the last lines are not lost when they can be written.
pub fn flush(timeout: Duration) -> bool {
    let Some(q) = QUEUE.get().copied() else {
        return true; // nothing was ever queued
    };
    let deadline = Instant::now() + timeout;
    let mut s = lock(q);
    loop {
        if s.items.is_empty() && s.pending_drops == 0 && !s.writing {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s = q
            .idle
            .wait_timeout(s, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// A `tracing_subscriber` writer into the queue: each event is queued whole when the
/// formatter is done with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeQueueWriter;

/// One event's bytes, queued on drop.
#[derive(Debug, Default)]
pub struct QueueWriter {
    buf: Vec<u8>,
}

impl Write for QueueWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for QueueWriter {
    fn drop(&mut self) {
        write(&self.buf);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeQueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> QueueWriter {
        QueueWriter::default()
    }
}

/// `eprintln!` through the queue: formats one line and queues it for stderr.
#[macro_export]
macro_rules! stderr_line {
    ($($arg:tt)*) => {
        $crate::stderr::line(format_args!($($arg)*))
    };
}
