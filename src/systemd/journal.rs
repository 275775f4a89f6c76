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
//! lines are relayed to the supervisor's stderr as `component| line`, and this is said once.
//!
//! The daemon gives the supervisor [`ChildLogs::sink`]: the supervisor asks it for each start's
//! stdout/stderr (a stream connection in `stream` mode) and otherwise relays lines to it with
//! the restart count and pid of the process that wrote them.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::logsink::{DirectOutput, LineOrigin, LogSink, StderrSink, Stream};

/// journald's stream socket for stdout-like connections.
pub const STDOUT_SOCKET: &str = "/run/systemd/journal/stdout";
/// journald's native protocol socket.
pub const NATIVE_SOCKET: &str = "/run/systemd/journal/socket";

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
}

/// A connection to journald's native socket that writes children's lines as entries with
/// the `FLOWCTL_*` fields: one datagram per line, no state between lines.
#[derive(Debug)]
struct NativeJournal {
    path: PathBuf,
    sock: std::sync::Mutex<UnixDatagram>,
}

/// How long one entry may wait for room in journald's queue before the line is given to the
/// caller's fallback: a wedged journald must not stall the daemon.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl NativeJournal {
    fn connect(socket: &Path) -> io::Result<Self> {
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
            .with(tracing_subscriber::fmt::layer().with_writer(crate::stderr::MakeQueueWriter))
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
}
