//! The journal: the daemon's own logs, and every child's stdout/stderr.
//!
//! # Children, and why there are two journal modes
//!
//! systemd gives each service a *stream connection* to journald's `stdout` socket as its
//! stdout/stderr: the connection starts with a short header (identifier, priority, whether
//! lines carry `<N>` priority prefixes, …) and from then on every byte the service writes
//! goes straight to journald. [`ChildLogMode::Stream`] does exactly that for each component,
//! with the component id as `SYSLOG_IDENTIFIER`, so log bytes never pass through the
//! supervisor.
//!
//! That stream protocol has no way to attach extra fields to the entries: its header is
//! fixed (systemd 252's `journald-stream.c` reads seven lines and nothing else), and the
//! only per-stream metadata journald adds is what it learns from the peer (`_PID`, `_UID`,
//! `_SYSTEMD_CGROUP`, …). The unit-id line is honoured only for root peers and only selects
//! the unit's own `LogExtraFields=`, which are per unit, not per component. So in `Stream`
//! mode an entry is found by `SYSLOG_IDENTIFIER=<component>` and, under a delegated cgroup,
//! by `_SYSTEMD_CGROUP` ending in `/<pipeline>/<component>`; it carries no `FLOWCTL_*` fields.
//!
//! [`ChildLogMode::Fields`] (the default) carries them: the child's stdout/stderr is a pipe,
//! and a small relay task in the supervisor sends each line to journald's native socket as
//! one entry with `MESSAGE`, `PRIORITY` (from a `<N>` prefix, as systemd does),
//! `SYSLOG_IDENTIFIER=<component>`, `SYSLOG_PID=<child pid>`, `FLOWCTL_PIPELINE`,
//! `FLOWCTL_COMPONENT` and `FLOWCTL_RESTART`. This costs one read and one datagram per line
//! in the supervisor; operators who prefer zero-copy over the fields choose `stream`.
//!
//! Without journald (a terminal, a container) both fall back to [`ChildLogMode::Stderr`]:
//! lines are relayed to the supervisor's stderr as `component | line`, and this is said once.
//!
//! The daemon gives the supervisor [`ChildLogs::sink`]: the supervisor asks it for each start's
//! stdout/stderr (a stream connection in `stream` mode) and otherwise relays lines to it with
//! the restart count they were written under. [`ChildLogs::attach`] does the same for a single
//! process started outside the supervisor.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::logsink::{DirectOutput, LineOrigin, LogSink, StderrSink, Stream};

/// journald's stream socket for stdout-like connections.
pub const STDOUT_SOCKET: &str = "/run/systemd/journal/stdout";
/// journald's native protocol socket.
pub const NATIVE_SOCKET: &str = "/run/systemd/journal/socket";

/// journald cuts stream lines at 48 KiB (`LINE_MAX` in journald-stream.c); the relay does
/// the same so one runaway line cannot exceed a datagram.
const MAX_LINE: usize = 48 * 1024;

/// syslog priority used when a line has no `<N>` prefix (`SyslogLevel=info`).
pub const DEFAULT_PRIORITY: u8 = 6;

/// How children's output reaches the journal; `log.children` in the daemon config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChildLogMode {
    /// Relay lines with `FLOWCTL_*` fields through the native protocol.
    Fields,
    /// Hand the child a journald stream connection: no copy, no `FLOWCTL_*` fields.
    Stream,
    /// Relay lines to the supervisor's stderr, prefixed with the component id.
    Stderr,
}

/// Where journald's sockets are; [`JournalSockets::system`] everywhere but tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSockets {
    pub stdout: PathBuf,
    pub native: PathBuf,
}

impl JournalSockets {
    pub fn system() -> Self {
        JournalSockets {
            stdout: STDOUT_SOCKET.into(),
            native: NATIVE_SOCKET.into(),
        }
    }

    /// True when journald is listening (both sockets exist).
    pub fn available(&self) -> bool {
        is_socket(&self.stdout) && is_socket(&self.native)
    }
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// Opens a stream connection to journald, as systemd does for a service's stdout: after the
/// header, every line written to the returned socket is one journal entry with
/// `SYSLOG_IDENTIFIER=identifier`, at `priority` unless the line starts with `<N>` (when
/// `level_prefix`).
pub fn open_stream(
    socket: &Path,
    identifier: &str,
    priority: u8,
    level_prefix: bool,
) -> io::Result<OwnedFd> {
    if identifier.contains('\n') || priority > 7 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid journal stream identifier {identifier:?} or priority {priority}"),
        ));
    }
    let mut stream = UnixStream::connect(socket)?;
    // journald never writes back; a child that reads its stdout must see EOF, not block.
    stream.shutdown(std::net::Shutdown::Read)?;
    // identifier, unit id (empty: journald derives the unit from our cgroup), priority,
    // level prefix, forward to syslog, to kmsg, to console.
    let header = format!(
        "{identifier}\n\n{priority}\n{}\n0\n0\n0\n",
        u8::from(level_prefix)
    );
    stream.write_all(header.as_bytes())?;
    Ok(stream.into())
}

/// Splits a syslog `<N>` prefix off a line, as journald does with `level_prefix=1`.
pub fn split_priority(line: &[u8]) -> (Option<u8>, &[u8]) {
    match line {
        [b'<', d @ b'0'..=b'7', b'>', rest @ ..] => (Some(d - b'0'), rest),
        _ => (None, line),
    }
}

/// Encodes one journal entry in journald's native protocol: `KEY=value\n`, or for values
/// holding a newline `KEY\n` + 64-bit little-endian length + value + `\n`.
pub fn encode_native(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|(k, v)| k.len() + v.len() + 10).sum());
    for (key, value) in fields {
        out.extend_from_slice(key.as_bytes());
        if value.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// Who a child is, for its journal entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildIdentity {
    pub pipeline: String,
    pub component: String,
    /// How many times this component has been restarted (0 for the first start); `None`
    /// when the caller does not know, and then `FLOWCTL_RESTART` is left out.
    pub restart: Option<u32>,
}

/// Hands out stdout/stderr for children, in one [`ChildLogMode`] for the daemon's life.
#[derive(Debug, Clone)]
pub struct ChildLogs {
    mode: ChildLogMode,
    sockets: JournalSockets,
}

impl ChildLogs {
    /// Uses `wanted`, or stderr when journald is not there (saying so once, here).
    pub fn new(wanted: ChildLogMode, sockets: JournalSockets) -> Self {
        let mode = if wanted != ChildLogMode::Stderr && !sockets.available() {
            tracing::warn!(
                "no journald at {}: children's output goes to stderr, prefixed with the component id",
                sockets.stdout.display()
            );
            ChildLogMode::Stderr
        } else {
            wanted
        };
        ChildLogs { mode, sockets }
    }

    /// The mode in effect (after any fallback).
    pub fn mode(&self) -> ChildLogMode {
        self.mode
    }

    /// The supervisor's [`LogSink`] for this mode. `fields` relays each line with the
    /// `FLOWCTL_*` fields (to stderr if journald's native socket cannot be reached); `stream`
    /// hands each child a stream connection and relays only when that cannot be opened.
    pub fn sink(&self) -> Arc<dyn LogSink> {
        let relay = || -> Arc<dyn LogSink> {
            match NativeJournal::connect(&self.sockets.native) {
                Ok(j) => Arc::new(JournalSink(j)),
                Err(e) => {
                    tracing::warn!(
                        "cannot reach journald at {} ({e}): children's output goes to stderr",
                        self.sockets.native.display()
                    );
                    Arc::new(StderrSink)
                }
            }
        };
        match self.mode {
            ChildLogMode::Fields => relay(),
            ChildLogMode::Stream => Arc::new(StreamSink {
                stdout_socket: self.sockets.stdout.clone(),
                relay: relay(),
                failing: AtomicBool::new(false),
            }),
            ChildLogMode::Stderr => Arc::new(StderrSink),
        }
    }

    /// stdout/stderr for one child start. Give `stdout` and `stderr` to the child; after the
    /// spawn call [`ChildOutput::start`] with its pid (a relay needs it, a stream does not).
    pub fn attach(&self, who: &ChildIdentity) -> io::Result<ChildOutput> {
        match self.mode {
            ChildLogMode::Stream => {
                let stream =
                    open_stream(&self.sockets.stdout, &who.component, DEFAULT_PRIORITY, true)?;
                let stderr = stream.try_clone()?;
                Ok(ChildOutput {
                    stdout: stream,
                    stderr,
                    relay: None,
                })
            }
            ChildLogMode::Fields | ChildLogMode::Stderr => {
                let (read, write) = nix::unistd::pipe().map_err(io::Error::from)?;
                let stderr = write.try_clone()?;
                let sink = if self.mode == ChildLogMode::Fields {
                    Sink::Native(NativeJournal::connect(&self.sockets.native)?)
                } else {
                    Sink::Stderr
                };
                Ok(ChildOutput {
                    stdout: write,
                    stderr,
                    relay: Some(PendingRelay {
                        read,
                        who: who.clone(),
                        sink,
                    }),
                })
            }
        }
    }
}

/// A child's stdout and stderr, and the relay that forwards them when there is one.
#[derive(Debug)]
pub struct ChildOutput {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    relay: Option<PendingRelay>,
}

impl ChildOutput {
    /// Call after the spawn, once the child holds its copies of the fds (this drops ours,
    /// so the relay sees EOF when the child and all its descendants have closed them).
    /// Returns the relay task, which ends at that EOF; `None` in stream mode.
    pub fn start(self, child_pid: u32) -> io::Result<Option<tokio::task::JoinHandle<()>>> {
        let ChildOutput {
            stdout,
            stderr,
            relay,
        } = self;
        drop((stdout, stderr));
        let Some(relay) = relay else {
            return Ok(None);
        };
        let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(relay.read)?;
        let sink = Arc::new(relay.sink);
        let who = relay.who;
        Ok(Some(tokio::spawn(async move {
            relay_lines(rx, &who, child_pid, &sink).await;
        })))
    }
}

#[derive(Debug)]
struct PendingRelay {
    read: OwnedFd,
    who: ChildIdentity,
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    Native(NativeJournal),
    Stderr,
}

async fn relay_lines(
    rx: tokio::net::unix::pipe::Receiver,
    who: &ChildIdentity,
    pid: u32,
    sink: &Sink,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, rx);
    let mut buf = Vec::with_capacity(1024);
    let mut warned = false;
    loop {
        buf.clear();
        match read_line_capped(&mut reader, &mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(component = %who.component, "reading child output: {e}");
                break;
            }
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        match sink {
            Sink::Native(journal) => {
                if let Err(e) = journal.line(who, Some(pid), line) {
                    if !warned {
                        tracing::warn!(component = %who.component, "journald refused a log line ({e}); relaying to stderr");
                        warned = true;
                    }
                    write_prefixed(&who.component, split_priority(line).1);
                }
            }
            Sink::Stderr => write_prefixed(&who.component, split_priority(line).1),
        }
    }
}

/// A connection to journald's native socket that writes children's lines as entries with
/// the `FLOWCTL_*` fields. The relay uses it; so can anything else that already holds a
/// child's lines (one datagram per line, no state between lines).
#[derive(Debug)]
pub struct NativeJournal {
    path: PathBuf,
    sock: std::sync::Mutex<UnixDatagram>,
}

/// How long one entry may wait for room in journald's queue before the line is given to the
/// caller's fallback: a wedged journald must not stall the daemon.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl NativeJournal {
    pub fn connect(socket: &Path) -> io::Result<Self> {
        Ok(NativeJournal {
            path: socket.to_path_buf(),
            sock: std::sync::Mutex::new(Self::open(socket)?),
        })
    }

    fn open(socket: &Path) -> io::Result<UnixDatagram> {
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        sock.connect(socket)?;
        Ok(sock)
    }

    /// Sends a datagram; when journald was restarted (the old socket is gone) connects again
    /// once and retries.
    fn send(&self, entry: &[u8]) -> io::Result<()> {
        let mut sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        match sock.send(entry) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ENOENT)
                ) =>
            {
                *sock = Self::open(&self.path)?;
                sock.send(entry).map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one line (without its newline) as one entry; a `<N>` prefix sets `PRIORITY`.
    pub fn line(&self, who: &ChildIdentity, pid: Option<u32>, line: &[u8]) -> io::Result<()> {
        self.entry(&who.pipeline, &who.component, who.restart, pid, line)
    }

    fn entry(
        &self,
        pipeline: &str,
        component: &str,
        restart: Option<u32>,
        pid: Option<u32>,
        line: &[u8],
    ) -> io::Result<()> {
        let (prio, msg) = split_priority(line);
        let prio = [b'0' + prio.unwrap_or(DEFAULT_PRIORITY)];
        let restart = restart.map(|r| r.to_string());
        let pid = pid.map(|p| p.to_string());
        let mut fields: Vec<(&str, &[u8])> = vec![
            ("MESSAGE", msg),
            ("PRIORITY", &prio),
            ("SYSLOG_IDENTIFIER", component.as_bytes()),
            ("FLOWCTL_PIPELINE", pipeline.as_bytes()),
            ("FLOWCTL_COMPONENT", component.as_bytes()),
        ];
        if let Some(restart) = &restart {
            fields.push(("FLOWCTL_RESTART", restart.as_bytes()));
        }
        if let Some(pid) = &pid {
            fields.push(("SYSLOG_PID", pid.as_bytes()));
        }
        self.send(&encode_native(&fields))
    }
}

/// The supervisor's sink in `fields` mode: each relayed line is one native entry with the
/// `FLOWCTL_*` fields; a line journald refuses goes to stderr instead of being lost.
struct JournalSink(NativeJournal);

impl LogSink for JournalSink {
    fn line(&self, pipeline: &str, component: &str, stream: Stream, line: &[u8]) {
        if self.0.entry(pipeline, component, None, None, line).is_err() {
            StderrSink.line(pipeline, component, stream, line);
        }
    }

    fn origin_line(&self, origin: &LineOrigin, stream: Stream, line: &[u8]) {
        let (p, c) = (&*origin.pipeline, &*origin.component);
        if self
            .0
            .entry(p, c, Some(origin.restart), Some(origin.pid), line)
            .is_err()
        {
            StderrSink.line(p, c, stream, line);
        }
    }
}

/// The supervisor's sink in `stream` mode: each child gets its own stream connection, so
/// nothing reaches this sink unless that connection could not be made; then that start's
/// output is relayed through `relay` (with the `FLOWCTL_*` fields) rather than lost.
struct StreamSink {
    stdout_socket: PathBuf,
    relay: Arc<dyn LogSink>,
    /// The last connection attempt failed: said once, until one succeeds again.
    failing: AtomicBool,
}

impl LogSink for StreamSink {
    fn line(&self, pipeline: &str, component: &str, stream: Stream, line: &[u8]) {
        self.relay.line(pipeline, component, stream, line)
    }

    fn origin_line(&self, origin: &LineOrigin, stream: Stream, line: &[u8]) {
        self.relay.origin_line(origin, stream, line)
    }

    fn direct_output(&self, _pipeline: &str, component: &str) -> Option<DirectOutput> {
        // As systemd does for a service whose stdout and stderr both go to the journal: one
        // connection for both, so their lines keep their order, and stderr lines are `info`
        // unless they carry a `<N>` prefix.
        let opened = open_stream(&self.stdout_socket, component, DEFAULT_PRIORITY, true)
            .and_then(|stdout| Ok((stdout.try_clone()?, stdout)));
        match opened {
            Ok((stderr, stdout)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("journald's stream socket accepts connections again");
                }
                Some(DirectOutput { stdout, stderr })
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        component,
                        "cannot connect to {} ({e}): relaying children's output with FLOWCTL_* \
                         fields until it can",
                        self.stdout_socket.display()
                    );
                }
                None
            }
        }
    }
}

/// Reads up to and including `\n`, but never more than [`MAX_LINE`] bytes: a longer line is
/// split, as journald does.
async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(buf.len());
        }
        let room = MAX_LINE - buf.len();
        let take = avail.len().min(room);
        if let Some(i) = avail[..take].iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&avail[..=i]);
            r.consume(i + 1);
            return Ok(buf.len());
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if buf.len() >= MAX_LINE {
            return Ok(buf.len());
        }
    }
}

fn write_prefixed(component: &str, msg: &[u8]) {
    let mut out = Vec::with_capacity(component.len() + msg.len() + 4);
    out.extend_from_slice(component.as_bytes());
    out.extend_from_slice(b" | ");
    out.extend_from_slice(msg);
    out.push(b'\n');
    // One write per line keeps lines from different children whole.
    let _ = io::stderr().lock().write_all(&out);
}

/// The daemon's own logs: to journald through tracing-journald when it listens (identifier
/// `flowctl-sup`, tracing fields become journal fields as written, e.g. `FLOWCTL_PIPELINE`),
/// otherwise human-readable lines on stderr. `filter` is an `EnvFilter` directive
/// (`info`, `flowctl=debug`); `RUST_LOG` wins when set.
pub fn init_daemon_logging(filter: &str, sockets: &JournalSockets) -> Result<(), LoggingError> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(&env),
        _ => EnvFilter::try_new(filter),
    }
    .map_err(|e| LoggingError::Filter(filter.to_string(), e.to_string()))?;
    let journald = if sockets.available() && sockets.native == Path::new(NATIVE_SOCKET) {
        tracing_journald::layer().ok().map(|l| {
            l.with_syslog_identifier("flowctl-sup".into())
                .with_field_prefix(None)
        })
    } else {
        None
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match journald {
        Some(layer) => registry.with(layer).try_init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(io::stderr))
            .try_init(),
    };
    result.map_err(|e| LoggingError::AlreadySet(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("log filter {0:?} is invalid: {1}")]
    Filter(String, String),
    #[error("logging was already set up: {0}")]
    AlreadySet(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_prefix_is_split_only_for_digits_zero_to_seven() {
        assert_eq!(split_priority(b"<3>boom"), (Some(3), &b"boom"[..]));
        assert_eq!(split_priority(b"<7>"), (Some(7), &b""[..]));
        assert_eq!(split_priority(b"<8>x"), (None, &b"<8>x"[..]));
        assert_eq!(split_priority(b"<3x"), (None, &b"<3x"[..]));
        assert_eq!(split_priority(b"plain"), (None, &b"plain"[..]));
    }

    #[test]
    fn native_encoding_uses_length_framing_for_multiline_values() {
        let e = encode_native(&[("MESSAGE", b"a\nb"), ("PRIORITY", b"6")]);
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\nPRIORITY=6\n");
        assert_eq!(e, want);
    }

    #[test]
    fn stream_rejects_identifier_with_newline() {
        let err = open_stream(Path::new("/nonexistent"), "a\nb", 6, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn long_lines_are_split_at_the_journald_limit() {
        let data = vec![b'x'; MAX_LINE + 10];
        let mut input = data.clone();
        input.push(b'\n');
        let mut r = BufReader::new(&input[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut r, &mut buf).await.unwrap(), MAX_LINE);
        buf.clear();
        assert_eq!(read_line_capped(&mut r, &mut buf).await.unwrap(), 11);
        buf.clear();
        assert_eq!(read_line_capped(&mut r, &mut buf).await.unwrap(), 0);
    }
}
