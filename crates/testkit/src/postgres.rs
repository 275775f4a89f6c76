//! A throwaway PostgreSQL cluster: `initdb` in a temp dir, `pg_ctl start` on a free loopback
//! port (and, for tests with hosts in network namespaces, on one more address), stopped
//! (immediate) when dropped. Needs the server binaries of Debian's `postgresql`
//! package (`/usr/lib/postgresql/N/bin`); run as root, the cluster belongs to `postgres`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// How much the cluster may lose in a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`: tests, where speed matters and a crash loses nothing of value.
    Off,
    /// PostgreSQL's defaults: what an operator runs, for benchmarks.
    Default,
}

pub struct PgCluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    port: u16,
    as_root: bool,
    durability: Durability,
    /// `listen_addresses`: loopback, and the address other hosts reach it on.
    listen: String,
}

/// The newest installed server's `bin` directory.
pub fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

impl PgCluster {
    /// A running cluster, or `None` after a skip message when PostgreSQL is not installed.
    /// Panics, with PostgreSQL's own message, when it is installed but does not start.
    pub fn start(durability: Durability) -> Option<PgCluster> {
        PgCluster::start_on(durability, None)
    }

    /// [`PgCluster::start`], also listening on `address` (an address of this host, e.g. a
    /// bridge's) and trusting every client of `allow` (a CIDR, e.g. `10.0.0.0/8`): for
    /// programs in network namespaces, to which this host's loopback is not theirs.
    pub fn start_reachable(
        durability: Durability,
        address: &str,
        allow: &str,
    ) -> Option<PgCluster> {
        PgCluster::start_on(durability, Some((address, allow)))
    }

    fn start_on(durability: Durability, reachable: Option<(&str, &str)>) -> Option<PgCluster> {
        let Some(bin) = server_bin() else {
            eprintln!(
                "skipped: PostgreSQL server binaries are absent (apt-get install postgresql)"
            );
            return None;
        };
        let as_root = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::tempdir().expect("a temp dir for the cluster");
        if as_root {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the cluster dir to postgres");
        }
        let pg = PgCluster {
            data: dir.path().join("data"),
            log: dir.path().join("log"),
            _dir: dir,
            bin,
            port: free_port(),
            as_root,
            durability,
            listen: match reachable {
                Some((address, _)) => format!("127.0.0.1,{address}"),
                None => "127.0.0.1".into(),
            },
        };
        let init = pg
            .cmd("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&pg.data)
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        if let Some((_, allow)) = reachable {
            use std::io::Write;
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(pg.data.join("pg_hba.conf"))
                .expect("initdb wrote pg_hba.conf");
            writeln!(hba, "host all all {allow} trust").expect("pg_hba.conf is writable");
        }
        pg.up();
        Some(pg)
    }

    /// A server program (`pg_ctl`, `psql` …), run as `postgres` when we are root.
    pub fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Starts the server (again, after `down`), on the same port and data.
    pub fn up(&self) {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses={}",
            self.port,
            self.data.parent().expect("data dir has a parent").display(),
            self.listen
        );
        if self.durability == Durability::Off {
            opts.push_str(" -c fsync=off");
        }
        let out = self
            .cmd("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-o", &opts, "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Stops the server at once, as a crash would.
    pub fn down(&self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["-w", "-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL of `database` on `host` (an address it listens on).
    pub fn url_on(&self, host: &str, database: &str) -> String {
        format!("postgres://postgres@{host}:{}/{database}", self.port)
    }

    /// One value from `psql`, `None` when the query fails (e.g. no table yet).
    pub fn query(&self, sql: &str) -> Option<String> {
        self.query_in("postgres", sql)
    }

    /// [`PgCluster::query`] in `database`.
    pub fn query_in(&self, database: &str, sql: &str) -> Option<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-d",
                &self.url_on("127.0.0.1", database),
            ])
            .args(["-c", sql])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.down();
    }
}
