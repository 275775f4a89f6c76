//! Where children's output lines go.
//!
//! The supervisor reads each child's stdout and stderr line by line and hands every line to a
//! [`LogSink`]. The default writes them to the supervisor's own stderr, prefixed by the
//! component id; a journald sink can replace it without the supervisor changing. A sink may
//! also hand a child its stdout/stderr directly ([`LogSink::direct_output`]), so that its
//! bytes never pass through the supervisor at all.

use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Which of the child's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Which process of which component wrote a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineOrigin {
    pub pipeline: Arc<str>,
    pub component: Arc<str>,
    /// The component's restart count when this process was started (0 for its first start).
    pub restart: u32,
    /// The component's main process (a grandchild sharing its output is not told apart).
    pub pid: u32,
}

/// A child's stdout and stderr, given to it as they are instead of pipes.
#[derive(Debug)]
pub struct DirectOutput {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Receives the children's output, one line at a time (without the newline).
pub trait LogSink: Send + Sync {
    fn line(&self, pipeline: &str, component: &str, stream: Stream, line: &[u8]);

    /// A line knowing which start of the component wrote it; the supervisor calls this one.
    /// Sinks that record the restart count or pid override it; the default forgets them.
    fn origin_line(&self, origin: &LineOrigin, stream: Stream, line: &[u8]) {
        self.line(&origin.pipeline, &origin.component, stream, line)
    }

    /// Called before each start of a component: `Some` gives the child these as its stdout and
    /// stderr and nothing is relayed; `None` (the default) pipes them to [`forward`].
    fn direct_output(&self, _pipeline: &str, _component: &str) -> Option<DirectOutput> {
        None
    }
}

/// Writes `component| line` to the supervisor's stderr, through the queue of
/// [`crate::stderr`]: a stderr nobody reads loses lines (counted) instead of blocking.
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrSink;

impl LogSink for StderrSink {
    fn line(&self, _pipeline: &str, component: &str, _stream: Stream, line: &[u8]) {
        let mut record = Vec::with_capacity(component.len() + line.len() + 3);
        record.extend_from_slice(component.as_bytes());
        record.extend_from_slice(b"| ");
        record.extend_from_slice(line);
        record.push(b'\n');
        crate::stderr::write(&record);
    }
}

/// Reads `fd` to its end, passing each line to `sink`. Overlong lines are cut at 64 KiB so a
/// child printing without newlines cannot grow the supervisor's memory without bound.
pub async fn forward(
    fd: OwnedFd,
    sink: Arc<dyn LogSink>,
    origin: LineOrigin,
    stream: Stream,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    const MAX_LINE: usize = 64 * 1024;
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            if !buf.is_empty() {
                sink.origin_line(&origin, stream, &buf);
            }
            return Ok(());
        }
        for &b in &chunk[..n] {
            if b == b'\n' {
                sink.origin_line(&origin, stream, &buf);
                buf.clear();
            } else {
                buf.push(b);
                if buf.len() >= MAX_LINE {
                    sink.origin_line(&origin, stream, &buf);
                    buf.clear();
                }
            }
        }
        if buf.capacity() > 4 * 1024 && buf.is_empty() {
            buf.shrink_to(1024);
        }
    }
}
