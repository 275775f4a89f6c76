//! `flowctl-testkit`: a stand-in component whose behaviour is chosen by flags.
//!
//! ```text
//! --exit-code N        exit with code N (after --after-ms); without it, run until signalled
//! --crash              abort (SIGABRT) instead (after --after-ms)
//! --after-ms T         wait T ms before exiting or crashing
//! --ignore-sigterm     ignore SIGTERM
//! --grandchild FILE    start a copy of itself that ignores SIGTERM and writes its pid to FILE
//! --env-file FILE      write the environment as a JSON object to FILE
//! --pid-file FILE      write the pid to FILE
//! --stamp-file FILE    append "start NS" now and "exit NS" before exiting (CLOCK_MONOTONIC)
//! --serve-health       answer HTTP GET /health with 200 on 127.0.0.1:$HEALTH_PORT
//! --notify-ready       send READY=1 to $NOTIFY_SOCKET (after --ready-after-ms)
//! --ready-after-ms T   delay before serving health / notifying readiness
//! --notify-status TXT  send STATUS=TXT with the readiness notification
//! --watchdog-ms T      send WATCHDOG=1 every T ms
//! --say TEXT           print TEXT on stdout and on stderr
//! --print-lines N      print N numbered lines of 100 bytes on stderr
//! --daemonize FILE     fork, setsid and fork again (a classic daemon, stdio on /dev/null); the
//!                      daemon writes its pid to FILE and runs until killed (ignoring SIGTERM
//!                      with --ignore-sigterm), the first fork exits at once
//! ```

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[derive(Default)]
struct Opts {
    exit_code: Option<i32>,
    crash: bool,
    after_ms: u64,
    ignore_sigterm: bool,
    grandchild: Option<String>,
    env_file: Option<String>,
    pid_file: Option<String>,
    stamp_file: Option<String>,
    serve_health: bool,
    notify_ready: bool,
    ready_after_ms: u64,
    notify_status: Option<String>,
    watchdog_ms: Option<u64>,
    say: Option<String>,
    print_lines: u64,
    daemonize: Option<String>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--exit-code" => {
                let v = value()?;
                o.exit_code = Some(v.parse().map_err(|e| format!("{v}: {e}"))?)
            }
            "--crash" => o.crash = true,
            "--after-ms" => o.after_ms = number(value()?)?,
            "--ignore-sigterm" => o.ignore_sigterm = true,
            "--grandchild" => o.grandchild = Some(value()?),
            "--env-file" => o.env_file = Some(value()?),
            "--pid-file" => o.pid_file = Some(value()?),
            "--stamp-file" => o.stamp_file = Some(value()?),
            "--serve-health" => o.serve_health = true,
            "--notify-ready" => o.notify_ready = true,
            "--ready-after-ms" => o.ready_after_ms = number(value()?)?,
            "--notify-status" => o.notify_status = Some(value()?),
            "--watchdog-ms" => o.watchdog_ms = Some(number(value()?)?),
            "--say" => o.say = Some(value()?),
            "--print-lines" => o.print_lines = number(value()?)?,
            "--daemonize" => o.daemonize = Some(value()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn stamp(file: &Option<String>, what: &str) {
    if let Some(path) = file {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open stamp file");
        // One write per line: O_APPEND keeps lines from different processes whole.
        f.write_all(format!("{what} {}\n", monotonic_ns()).as_bytes())
            .expect("write stamp file");
    }
}

/// Writes through a temporary file so readers never see half a file.
fn write_atomic(path: &str, contents: &str) {
    let tmp = format!("{path}.tmp{}", std::process::id());
    std::fs::write(&tmp, contents).expect("write file");
    std::fs::rename(&tmp, path).expect("rename file");
}

fn notify(message: &str) {
    if let Ok(path) = std::env::var("NOTIFY_SOCKET") {
        let socket = UnixDatagram::unbound().expect("datagram socket");
        socket
            .send_to(message.as_bytes(), path)
            .expect("send to NOTIFY_SOCKET");
    }
}

fn serve_health() {
    let port: u16 = std::env::var("HEALTH_PORT")
        .expect("HEALTH_PORT")
        .parse()
        .expect("HEALTH_PORT is a number");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind HEALTH_PORT");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            let ok = buf[..n].starts_with(b"GET /health ");
            let reply: &[u8] = if ok {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = stream.write_all(reply);
        }
    });
}

/// The classic double fork: the daemon is in a session of its own, outside the component's
/// process group, and its parent is gone, so the subreaper inherits it.
fn daemonize(pid_file: &str) {
    // SAFETY: this process has no other threads yet; the children only make system calls and
    // write one file before pausing or exiting.
    unsafe {
        match libc::fork() {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                libc::setsid();
                match libc::fork() {
                    -1 => libc::_exit(1),
                    0 => {
                        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                        for fd in 0..3 {
                            libc::dup2(null, fd);
                        }
                        write_atomic(pid_file, &std::process::id().to_string());
                        loop {
                            libc::pause();
                        }
                    }
                    _ => libc::_exit(0),
                }
            }
            first => {
                let mut status = 0;
                libc::waitpid(first, &mut status, 0);
            }
        }
    }
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("flowctl-testkit: {e}");
            std::process::exit(2);
        }
    };
    stamp(&o.stamp_file, "start");
    if o.ignore_sigterm {
        // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    if let Some(path) = &o.pid_file {
        write_atomic(path, &std::process::id().to_string());
    }
    if let Some(path) = &o.env_file {
        let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        write_atomic(path, &serde_json::Value::Object(env).to_string());
    }
    if let Some(text) = &o.say {
        println!("{text}");
        eprintln!("{text}");
    }
    if let Some(pid_file) = &o.grandchild {
        let exe = std::env::current_exe().expect("current_exe");
        // Left running on purpose: the supervisor must deal with it.
        let _grandchild = std::process::Command::new(exe)
            .args(["--ignore-sigterm", "--pid-file", pid_file])
            .spawn()
            .expect("spawn grandchild");
        #[allow(clippy::zombie_processes)]
        std::mem::forget(_grandchild);
    }
    if let Some(pid_file) = &o.daemonize {
        daemonize(pid_file);
    }
    if o.print_lines > 0 {
        let mut err = std::io::stderr().lock();
        for i in 0..o.print_lines {
            // A closed or full stderr is the supervisor's problem, not ours.
            let _ = writeln!(err, "line {i:>10} {}", "x".repeat(84));
        }
    }
    if o.ready_after_ms > 0 {
        std::thread::sleep(Duration::from_millis(o.ready_after_ms));
    }
    if o.serve_health {
        serve_health();
    }
    if o.notify_ready {
        let mut message = String::from("READY=1");
        if let Some(status) = &o.notify_status {
            message.push_str(&format!("\nSTATUS={status}"));
        }
        notify(&message);
    }
    if let Some(every) = o.watchdog_ms {
        std::thread::spawn(move || loop {
            notify("WATCHDOG=1");
            std::thread::sleep(Duration::from_millis(every));
        });
    }
    if o.exit_code.is_some() || o.crash {
        std::thread::sleep(Duration::from_millis(o.after_ms));
        stamp(&o.stamp_file, "exit");
        if o.crash {
            std::process::abort();
        }
        std::process::exit(o.exit_code.unwrap_or(0));
    }
    loop {
        std::thread::park();
    }
}
