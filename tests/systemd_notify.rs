//! sd_notify up to systemd, checked against a real datagram socket standing in for
//! `NOTIFY_SOCKET`, as systemd binds it for a `Type=notify` unit.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use flowctl::systemd::notify::Notifier;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn bound_socket() -> (tempfile::TempDir, UnixDatagram, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (dir, sock, path)
}

#[test]
fn lifecycle_notifications_reach_the_notify_socket() {
    let (_dir, sock, path) = bound_socket();
    std::env::set_var("NOTIFY_SOCKET", &path);
    std::env::set_var("WATCHDOG_USEC", "4000000");
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    let n = Notifier::from_env();
    assert!(n.is_enabled());
    assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(2)));

    n.extend_timeout(Duration::from_secs(30), "starting: 2/6 ready")
        .unwrap();
    assert_eq!(
        recv(&sock),
        "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=starting: 2/6 ready\n"
    );
    n.ready("1 pipeline, 6/6 ready, 0 failed").unwrap();
    assert_eq!(
        recv(&sock),
        "READY=1\nSTATUS=1 pipeline, 6/6 ready, 0 failed\n"
    );
    n.watchdog().unwrap();
    assert_eq!(recv(&sock), "WATCHDOG=1\n");
    n.status("1 pipeline, 5/6 ready, 1 failed").unwrap();
    assert_eq!(recv(&sock), "STATUS=1 pipeline, 5/6 ready, 1 failed\n");

    n.reloading("reloading").unwrap();
    let msg = recv(&sock);
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines[0], "RELOADING=1");
    let mono: u64 = lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .expect("MONOTONIC_USEC follows RELOADING")
        .parse()
        .unwrap();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    let now_usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    assert!(
        mono <= now_usec && now_usec - mono < 5_000_000,
        "{mono} vs {now_usec}"
    );
    assert_eq!(lines[2], "STATUS=reloading");

    n.stopping("stopping: draining 1 pipeline").unwrap();
    assert_eq!(
        recv(&sock),
        "STOPPING=1\nSTATUS=stopping: draining 1 pipeline\n"
    );
}

#[test]
fn socket_is_captured_at_start_so_a_cleared_environment_cannot_silence_it() {
    let (_dir, sock, path) = bound_socket();
    std::env::set_var("NOTIFY_SOCKET", &path);
    let n = Notifier::from_env();
    std::env::remove_var("NOTIFY_SOCKET");
    n.ready("ok").unwrap();
    assert_eq!(recv(&sock), "READY=1\nSTATUS=ok\n");
}

#[test]
fn abstract_notify_socket_is_supported() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("flowctl-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
    Notifier::from_env().stopping("bye").unwrap();
    assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=bye\n");
}

#[test]
fn watchdog_meant_for_another_pid_is_ignored() {
    let (_dir, _sock, path) = bound_socket();
    std::env::set_var("NOTIFY_SOCKET", &path);
    std::env::set_var("WATCHDOG_USEC", "4000000");
    std::env::set_var("WATCHDOG_PID", "1");
    assert_eq!(Notifier::from_env().watchdog_interval(), None);
}

#[test]
fn without_notify_socket_every_call_is_a_no_op() {
    std::env::remove_var("NOTIFY_SOCKET");
    std::env::set_var("WATCHDOG_USEC", "4000000");
    let n = Notifier::from_env();
    assert!(!n.is_enabled());
    assert_eq!(n.watchdog_interval(), None);
    n.ready("x").unwrap();
    n.watchdog().unwrap();
}

#[test]
fn a_missing_notify_socket_is_an_error_not_a_panic() {
    std::env::set_var("NOTIFY_SOCKET", "/nonexistent/flowctl/notify");
    let err = Notifier::from_env().ready("x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[path = "sandbox/mod.rs"]
mod sandbox;

/// In a booted systemd, a `Type=notify` unit running the notifier: `systemd-run` returns only
/// after `READY=1`, `STATUS=` shows in the unit, and watchdog pings at the interval the
/// notifier derives keep a `WatchdogSec=2` unit alive well past 2 s.
#[test]
fn under_systemd_ready_status_and_watchdog_drive_a_notify_unit() {
    const TEST: &str = "under_systemd_ready_status_and_watchdog_drive_a_notify_unit";
    const IN_UNIT: &str = "FLOWCTL_TEST_IN_UNIT";
    if std::env::var(IN_UNIT).as_deref() == Ok(TEST) {
        let n = Notifier::from_env();
        let tick = n
            .watchdog_interval()
            .expect("WatchdogSec=2 gives a watchdog");
        assert_eq!(tick, Duration::from_secs(1));
        n.extend_timeout(Duration::from_secs(10), "starting")
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        n.ready("1 pipeline, 3/3 ready, 0 failed").unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < until {
            n.watchdog().unwrap();
            std::thread::sleep(tick);
        }
        n.stopping("stopping: done").unwrap();
        return;
    }
    let Some(sb) = sandbox::Sandbox::start() else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let t0 = std::time::Instant::now();
    // TimeoutStartSec=1 would fail the start without the EXTEND_TIMEOUT_USEC the test sends.
    sb.ok(&format!(
        "systemd-run --quiet --unit=flowctl-notify-test -p Type=notify -p WatchdogSec=2 \
         -p TimeoutStartSec=1 -E {IN_UNIT}={TEST} {} --exact {TEST} --nocapture --test-threads=1",
        exe.display()
    ));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "returned before READY: {waited:?}"
    );
    let show = sb.ok("systemctl show -p ActiveState -p StatusText flowctl-notify-test");
    assert!(show.contains("ActiveState=active"), "{show}");
    assert!(
        show.contains("StatusText=1 pipeline, 3/3 ready, 0 failed"),
        "{show}"
    );
    // Past WatchdogSec: still running, so the pings arrived.
    std::thread::sleep(Duration::from_secs(3));
    let show = sb.ok("systemctl show -p ActiveState -p Result flowctl-notify-test");
    assert!(show.contains("ActiveState=active"), "{show}");
    // Then it says STOPPING and exits cleanly.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = sb.run("systemctl is-active flowctl-notify-test");
        if !out.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "unit never stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = sb.ok("journalctl --no-pager -u flowctl-notify-test");
    assert!(!log.contains("Watchdog timeout"), "{log}");
    assert!(!log.contains("Failed with result"), "{log}");
}
