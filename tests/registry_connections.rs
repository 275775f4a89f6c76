//! The registry's TCP connections are bounded: too many are refused, silent ones are closed,
//! and running out of fds makes it wait rather than spin.

mod registry_support;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowctl::registry::client::{connect, ClientOptions};
use flowctl::registry::connections::ConnectionLimits;
use flowctl::registry::{Registry, RegistryConfig, ServerOptions};
use registry_support::{client, serve};

/// Whether the server closes `stream` within `within` (a read sees EOF or a reset).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // The server's HTTP/2 preface: keep reading.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_are_refused_and_silent_ones_are_closed() {
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let server = serve(
        registry,
        None,
        ServerOptions {
            connections: ConnectionLimits {
                max_connections: Some(8),
                handshake_timeout: Duration::from_secs(2),
            },
            ..Default::default()
        },
    )
    .await;
    let addr = server.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Let the accept loop count all eight before the ninth arrives.
        std::thread::sleep(Duration::from_millis(300));
        let mut ninth = TcpStream::connect(addr).unwrap();
        let ninth_refused = closed_within(&mut ninth, Duration::from_millis(1500));
        let started = Instant::now();
        let idle_closed = idle
            .iter_mut()
            .all(|s| closed_within(s, Duration::from_secs(10)));
        (ninth_refused, idle_closed, started.elapsed())
    })
    .await
    .unwrap();
    let (ninth_refused, idle_closed, took) = outcome;
    assert!(ninth_refused, "the ninth connection was kept open");
    assert!(idle_closed, "silent connections stayed open ({took:?})");
    // With the silent ones gone, a real client gets in and is served.
    let mut c = client(&server.endpoint()).await;
    c.v0.list_services(()).await.unwrap();
    server.stop().await;
}

/// CPU time (user + system) of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_registry_out_of_fds_waits_instead_of_spinning_and_serves_again_once_fds_free_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // 40 fds in all: a few dozen connections exhaust them.
    let mut server = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 40 && exec \"$0\" server --port {port} --no-unix-socket --state-dir \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_flowctl"))
        .arg(dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "flowctl server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    // More connections than it has fds: the kernel completes them in the backlog, and every
    // accept fails with EMFILE.
    let held: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(server.id());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(server.id()) - before;
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    assert!(
        spent < ticks_per_s / 2,
        "the registry used {spent} ticks of CPU in 2 s while out of fds (a spinning accept \
         loop uses all of one core)"
    );
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("cannot accept connections"), "{log}");
    drop(held);

    // Served again once the connections are gone (the silent ones time out by themselves).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let served = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = tokio::time::timeout(Duration::from_secs(3), async {
                let options = ClientOptions::from_env(format!("127.0.0.1:{port}"));
                match connect(&options).await {
                    Ok(mut c) => c.v0.list_services(()).await.is_ok(),
                    Err(_) => false,
                }
            })
            .await;
            if attempt == Ok(true) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(served, "the registry did not serve again");
}
