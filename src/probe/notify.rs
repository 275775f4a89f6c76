//! `notify`: the sd_notify protocol on a per-component datagram socket.
//!
//! Each component with a notify check or a watchdog gets its own socket under the runtime
//! directory, passed as `NOTIFY_SOCKET`, so a message can only be about that component.
//! `READY=1` makes it ready, `STATUS=…` is shown in the status, `WATCHDOG=1` keeps the
//! watchdog from firing.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::net::UnixDatagram;

/// One assignment from a notify datagram that the supervisor acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyMessage {
    Ready,
    Status(String),
    Watchdog,
    Stopping,
}

/// Parses a datagram: newline-separated `KEY=VALUE` assignments; unknown keys are ignored as
/// sd_notify(3) asks.
pub fn parse(datagram: &[u8]) -> Vec<NotifyMessage> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            match (key, value) {
                ("READY", "1") => Some(NotifyMessage::Ready),
                ("STATUS", status) => Some(NotifyMessage::Status(status.to_string())),
                ("WATCHDOG", "1") => Some(NotifyMessage::Watchdog),
                ("STOPPING", "1") => Some(NotifyMessage::Stopping),
                _ => None,
            }
        })
        .collect()
}

/// Something the notify socket saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyEvent {
    Message(NotifyMessage),
    /// No `WATCHDOG=1` (or any message) for this long.
    WatchdogExpired(Duration),
}

/// Binds a fresh socket at `path` (a stale one is replaced), readable only by the supervisor
/// and writable by `owner` (the component's user) when it runs as someone else.
pub fn bind(path: &Path, owner: Option<u32>) -> io::Result<UnixDatagram> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = UnixDatagram::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(uid) = owner {
        std::os::unix::fs::chown(path, Some(uid), None)?;
    }
    Ok(socket)
}

/// Reads messages until `report` returns false. With a `watchdog`, a gap longer than it
/// (counted from the start and then from each message) is reported once per gap.
pub async fn listen(
    socket: UnixDatagram,
    watchdog: Option<Duration>,
    mut report: impl FnMut(NotifyEvent) -> bool,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let received = match watchdog {
            Some(limit) => match tokio::time::timeout(limit, socket.recv(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    if !report(NotifyEvent::WatchdogExpired(limit)) {
                        return;
                    }
                    continue;
                }
            },
            None => socket.recv(&mut buf).await,
        };
        let Ok(n) = received else { return };
        for message in parse(&buf[..n]) {
            if !report(NotifyEvent::Message(message)) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_assignments_and_ignores_the_rest() {
        let got = parse(b"READY=1\nSTATUS=catching up: 12 ledgers\nMAINPID=7\nWATCHDOG=1\nREADY=0");
        assert_eq!(
            got,
            vec![
                NotifyMessage::Ready,
                NotifyMessage::Status("catching up: 12 ledgers".into()),
                NotifyMessage::Watchdog,
            ]
        );
    }
}
