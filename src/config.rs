//! The daemon's own configuration, `/etc/flowctl/flowctl.toml`.
//!
//! Every key has a default, so an empty (or missing) file is a working setup. Unknown keys
//! are errors, not silently ignored: a typo like `pipline_dir` would otherwise mean "use the
//! default" without a word. Errors name the file, line, column and key.
//!
//! Durations are written as humantime strings (`"500ms"`, `"10s"`, `"5min"`), the same as in
//! pipeline files.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::systemd::journal::ChildLogMode;

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/flowctl/flowctl.toml";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub registry: RegistryConfig,
    pub paths: PathsConfig,
    pub defaults: Defaults,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub cgroups: CgroupConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// The control plane's gRPC address (components register and heartbeat here).
    pub listen: SocketAddr,
    /// The operator's bearer token (first line of the file): with it, TCP clients may manage
    /// runs as over the unix socket. Needed, or mutual TLS, for a `listen` off loopback.
    pub token_file: Option<PathBuf>,
    /// Mutual TLS for TCP clients: server certificate, key and the CA of client certificates.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    /// Open TCP connections at most (the supervised components still get in); default half
    /// the open-file limit, between 64 and 8192.
    pub max_connections: Option<usize>,
}

impl RegistryConfig {
    /// How the daemon's registry serves: token read, TLS files checked to go together.
    pub fn serving(&self) -> anyhow::Result<crate::registry::ServerOptions> {
        use anyhow::Context;
        let token = match &self.token_file {
            None => None,
            Some(path) => Some(
                crate::registry::server::read_token_file(path).context("[registry] token_file")?,
            ),
        };
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(client_ca)) => Some(crate::registry::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
            }),
            _ => anyhow::bail!(
                "[registry] tls_cert, tls_key and tls_client_ca go together: give all three or none"
            ),
        };
        Ok(crate::registry::ServerOptions {
            token,
            tls,
            connections: crate::registry::connections::ConnectionLimits {
                max_connections: self.max_connections,
                ..Default::default()
            },
            ..Default::default()
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Run history, checkpoints, dead letters (systemd `StateDirectory=flowctl`).
    pub state_dir: PathBuf,
    /// Control socket and notify sockets (systemd `RuntimeDirectory=flowctl`).
    pub runtime_dir: PathBuf,
    /// Every `*.yaml` / `*.yml` here is a pipeline the daemon runs.
    pub pipelines_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// A component with a readiness check not ready this long after its start is stopped and
    /// handled by its restart policy (systemd's `TimeoutStartSec=`, 90 s); `0s` waits for ever.
    #[serde(deserialize_with = "duration")]
    pub start_timeout: Duration,
    pub restart: RestartDefaults,
    pub probes: ProbeDefaults,
    pub stop: StopDefaults,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            start_timeout: crate::spec::Defaults::default().start_timeout,
            restart: RestartDefaults::default(),
            probes: ProbeDefaults::default(),
            stop: StopDefaults::default(),
        }
    }
}

/// Used where a component's `restart` leaves a field out (systemd's `Restart=`,
/// `RestartSec=`, `RestartMaxDelaySec=`, `StartLimitBurst=`, `StartLimitIntervalSec=`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartDefaults {
    pub policy: RestartPolicyName,
    #[serde(deserialize_with = "duration")]
    pub initial_delay: Duration,
    pub multiplier: f64,
    #[serde(deserialize_with = "duration")]
    pub max_delay: Duration,
    #[serde(deserialize_with = "count")]
    pub start_limit_burst: u32,
    #[serde(deserialize_with = "duration")]
    pub start_limit_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicyName {
    No,
    OnFailure,
    Always,
}

/// Used where a probe leaves a field out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeDefaults {
    #[serde(deserialize_with = "duration")]
    pub period: Duration,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "count")]
    pub failure_threshold: u32,
    #[serde(deserialize_with = "count")]
    pub success_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopDefaults {
    /// SIGTERM → SIGKILL grace (systemd `TimeoutStopSec=`). The unit's own `TimeoutStopSec=`
    /// must stay above the longest one in use.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The daemon's own level filter (`info`, `debug`, `flowctl=debug,info`).
    pub level: String,
    /// How children's stdout/stderr reach the journal; see `systemd::journal`.
    pub children: ChildLogMode,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Prometheus `/metrics`; `""` turns it off. Loopback by default: it is not meant to be
    /// exposed without a proxy in front.
    #[serde(deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    /// Serve on a non-loopback `listen` address. `/metrics` has no authentication and names
    /// every pipeline and component, so this has to be asked for.
    pub allow_remote: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// `auto`: per-component cgroups when systemd delegated a subtree, process groups
    /// otherwise; `off`: always process groups.
    pub mode: CgroupMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupMode {
    Auto,
    Off,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            listen: ([127, 0, 0, 1], 8080).into(),
            token_file: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            max_connections: None,
        }
    }
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            state_dir: "/var/lib/flowctl".into(),
            runtime_dir: "/run/flowctl".into(),
            pipelines_dir: "/etc/flowctl/pipelines".into(),
        }
    }
}

impl Default for RestartDefaults {
    fn default() -> Self {
        RestartDefaults {
            policy: RestartPolicyName::OnFailure,
            initial_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            start_limit_burst: 5,
            start_limit_interval: Duration::from_secs(10),
        }
    }
}

impl Default for ProbeDefaults {
    fn default() -> Self {
        ProbeDefaults {
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
            success_threshold: 1,
        }
    }
}

impl Default for StopDefaults {
    fn default() -> Self {
        StopDefaults {
            timeout: Duration::from_secs(10),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            children: ChildLogMode::Fields,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(([127, 0, 0, 1], 9464).into()),
            allow_remote: false,
        }
    }
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            mode: CgroupMode::Auto,
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let d = humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?}: {e} (write e.g. \"500ms\", \"10s\", \"5min\")"
        ))
    })?;
    crate::spec::units::within_max(d).map_err(serde::de::Error::custom)
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u64::deserialize(d)?;
    let max = crate::spec::units::MAX_COUNT;
    u32::try_from(n).ok().filter(|n| *n <= max).ok_or_else(|| {
        serde::de::Error::custom(format!("{n} is too large: allowed from 0 to {max}"))
    })
}

fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid address {s:?}: write IP:PORT, e.g. \"127.0.0.1:9464\", or \"\" to turn it off"
        ))
    })
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0)]
    Invalid(Box<InvalidConfig>),
}

/// Where and why a configuration file is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    pub path: PathBuf,
    /// 1-based; `None` when the parser gave no position.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key (`log.children`), when it can be told.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Config {
    /// Reads `path`; a missing file at the default path means all defaults (a fresh install
    /// may not have one), anywhere else it is an error.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(path, &text),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) =>
            {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column, key) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (Some(l), Some(c), key_at(text, span.start))
                }
                None => (None, None, None),
            };
            ConfigError::Invalid(Box::new(InvalidConfig {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message: e.message().trim().to_string(),
            }))
        })
    }

    /// The pipeline files the daemon runs, sorted by name: `*.yaml` and `*.yml` in
    /// `paths.pipelines_dir` (hidden files and editor backups are not pipelines).
    pub fn pipeline_files(&self) -> std::io::Result<Vec<PathBuf>> {
        let dir = &self.paths.pipelines_dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if is_yaml && !name.starts_with('.') && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// The daemon's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.paths.runtime_dir.join("flowctl.sock")
    }

    /// The spec's defaults with this file's `[defaults]` laid over them.
    pub fn spec_defaults(&self) -> crate::spec::Defaults {
        let mut d = crate::spec::Defaults::default();
        let r = &self.defaults.restart;
        d.restart.policy = match r.policy {
            RestartPolicyName::No => crate::plan::RestartPolicy::Never,
            RestartPolicyName::OnFailure => crate::plan::RestartPolicy::OnFailure,
            RestartPolicyName::Always => crate::plan::RestartPolicy::Always,
        };
        d.restart.initial_delay = r.initial_delay;
        d.restart.multiplier = r.multiplier;
        d.restart.max_delay = r.max_delay;
        d.restart.start_limit_burst = r.start_limit_burst;
        d.restart.start_limit_interval = r.start_limit_interval;
        let p = &self.defaults.probes;
        d.probe.period = p.period;
        d.probe.timeout = p.timeout;
        d.probe.failure_threshold = p.failure_threshold;
        d.probe.success_threshold = p.success_threshold;
        d.stop.timeout = self.defaults.stop.timeout;
        d.start_timeout = self.defaults.start_timeout;
        d
    }

    /// Loads every pipeline file of `paths.pipelines_dir`. A file that does not load is
    /// rejected with its diagnostics and the others still run; two files naming the same
    /// pipeline keep the first (by file name), or on a reload the one already running. Ports
    /// allocated for one pipeline are reserved for the next, so pipelines never share a port.
    pub fn load_pipelines(&self) -> std::io::Result<PipelineSet> {
        Ok(self.load_pipeline_files(self.pipeline_files()?))
    }

    /// [`Config::load_pipelines`] for the given files.
    pub fn load_pipeline_files(&self, files: Vec<PathBuf>) -> PipelineSet {
        self.load_pipeline_files_holding(files, &[])
    }

    /// [`Config::load_pipeline_files`] on a reload: components of `running` keep the ports
    /// they hold, so an unchanged file resolves to the plan that runs, and a file naming a
    /// running pipeline whose own file is still there is rejected: the newcomer never replaces
    /// it, whatever the file names' order (even while the running file does not load).
    pub fn load_pipeline_files_holding(
        &self,
        files: Vec<PathBuf>,
        running: &[crate::plan::PipelinePlan],
    ) -> PipelineSet {
        let mut set = PipelineSet::default();
        let mut opts = crate::spec::ResolveOptions {
            defaults: self.spec_defaults(),
            held_ports: crate::plan::HeldPorts::of(running),
            ..Default::default()
        };
        let all_files = files.clone();
        for file in files {
            match crate::spec::load_plan(&file, &opts) {
                Ok(loaded) => {
                    if let Some(running) = running.iter().find(|p| {
                        p.name == loaded.plan.name
                            && p.source_file != file
                            && all_files.contains(&p.source_file)
                    }) {
                        set.rejected.push(Rejected {
                            file: file.clone(),
                            reason: format!(
                                "{}: pipeline {:?} is already running from {}",
                                file.display(),
                                loaded.plan.name,
                                running.source_file.display()
                            ),
                        });
                        continue;
                    }
                    if let Some(first) = set.loaded.iter().find(|l| l.plan.name == loaded.plan.name)
                    {
                        set.rejected.push(Rejected {
                            file: file.clone(),
                            reason: format!(
                                "{}: pipeline {:?} is already defined in {}",
                                file.display(),
                                loaded.plan.name,
                                first.plan.source_file.display()
                            ),
                        });
                        continue;
                    }
                    for c in &loaded.plan.components {
                        opts.reserved_ports.insert(c.health_port);
                        opts.reserved_ports.extend(c.ports.iter().map(|p| p.port));
                    }
                    set.loaded.push(loaded);
                }
                Err(diags) => set.rejected.push(Rejected {
                    file,
                    reason: diags.to_string().trim_end().to_string(),
                }),
            }
        }
        set
    }
}

/// What [`Config::load_pipelines`] found.
#[derive(Debug, Default)]
pub struct PipelineSet {
    pub loaded: Vec<crate::spec::Loaded>,
    pub rejected: Vec<Rejected>,
}

/// A pipeline file that will not run, and why (the spec's diagnostics, one per line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub file: PathBuf,
    pub reason: String,
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key at a byte offset: the nearest `[table]` header above it joined with the
/// key on its line. Good enough for the flat tables of this file.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') {
        return table;
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }

    #[test]
    fn key_at_joins_table_and_key() {
        let t = "[log]\nlevel = \"info\"\nchildren = \"x\"\n";
        assert_eq!(
            key_at(t, t.find("\"x\"").unwrap()),
            Some("log.children".into())
        );
        assert_eq!(key_at("a = 1", 4), Some("a".into()));
    }
}
