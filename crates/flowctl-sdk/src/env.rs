//! The environment contract between a supervisor and a component.
//!
//! Every variable may also be given with the component's prefix (`TTP_PROCESSOR_ENABLE_FLOWCTL`
//! wins over `ENABLE_FLOWCTL`), so one environment can configure several components. A value
//! that cannot be parsed is an error naming the variable, never a silent default.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// What the environment says.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The component's env prefix (`TTP_PROCESSOR`), empty for none.
    pub prefix: String,
    /// `ENABLE_FLOWCTL`: register and heartbeat with a control plane (default false).
    pub enabled: bool,
    /// `FLOWCTL_ENDPOINT`: `host:port`, `http://host:port` or `unix:/path` (default
    /// `localhost:8080`).
    pub endpoint: String,
    /// `FLOWCTL_COMPONENT_ID`: the supervisor's name for this process; becomes the service id.
    pub component_id: Option<String>,
    /// `FLOWCTL_SERVICE_ID`: the service id wanted when there is no component id.
    pub service_id: Option<String>,
    /// `FLOWCTL_HEARTBEAT_INTERVAL`: `10s`, `500ms`, `1m` or plain milliseconds (default 10 s).
    pub heartbeat_interval: Duration,
    /// `FLOWCTL_TOKEN`: bearer token for a registry that asks for one.
    pub token: Option<String>,
    /// `HEALTH_PORT`: where `/health`, `/ready`, `/live` and `/metrics` are served.
    pub health_port: Option<u16>,
    /// `HEALTH_BIND_ADDRESS`: the address they bind (default 127.0.0.1).
    pub health_bind: IpAddr,
    /// `PORT`: the component's own service port, for the component to use.
    pub port: Option<u16>,
}

pub const DEFAULT_ENDPOINT: &str = "localhost:8080";
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?} is not valid: expected {expected}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub expected: &'static str,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env(prefix: &str) -> Result<Config, ConfigError> {
        Self::from_lookup(prefix, |name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, for tests and for embedding.
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let prefix = prefix.trim_end_matches('_').to_string();
        // The prefixed name wins; an empty value counts as unset.
        let get = |name: &str| -> Option<(String, String)> {
            let prefixed = (!prefix.is_empty()).then(|| format!("{prefix}_{name}"));
            prefixed
                .into_iter()
                .chain(std::iter::once(name.to_string()))
                .find_map(|var| {
                    lookup(&var)
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| (var, v))
                })
        };
        let bad = |(var, value): (String, String), expected| ConfigError {
            var,
            value,
            expected,
        };

        // FLOWCTL_ENABLED is the contract-data processor's spelling of the same switch.
        let enabled = match get("ENABLE_FLOWCTL").or_else(|| get("FLOWCTL_ENABLED")) {
            None => false,
            Some(pair) => parse_bool(&pair.1).ok_or_else(|| bad(pair, "true or false"))?,
        };
        let heartbeat_interval = match get("FLOWCTL_HEARTBEAT_INTERVAL") {
            None => DEFAULT_HEARTBEAT_INTERVAL,
            Some(pair) => parse_interval(&pair.1).ok_or_else(|| {
                bad(
                    pair,
                    "a positive duration such as 10s or 500ms, or milliseconds",
                )
            })?,
        };
        let port = |name: &str| -> Result<Option<u16>, ConfigError> {
            match get(name) {
                None => Ok(None),
                Some(pair) => pair
                    .1
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| bad(pair, "a port number 0-65535")),
            }
        };
        let health_bind = match get("HEALTH_BIND_ADDRESS") {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(pair) => pair
                .1
                .trim()
                .parse()
                .map_err(|_| bad(pair, "an IP address such as 127.0.0.1"))?,
        };
        Ok(Config {
            enabled,
            endpoint: get("FLOWCTL_ENDPOINT")
                .map(|p| p.1.trim().to_string())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
            component_id: get("FLOWCTL_COMPONENT_ID").map(|p| p.1.trim().to_string()),
            service_id: get("FLOWCTL_SERVICE_ID").map(|p| p.1.trim().to_string()),
            heartbeat_interval,
            token: get("FLOWCTL_TOKEN").map(|p| p.1.trim().to_string()),
            health_port: port("HEALTH_PORT")?,
            health_bind,
            port: port("PORT")?,
            prefix,
        })
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `10s`, `1m30s`, `500ms` (Go and humantime durations) or a bare number of milliseconds (what
/// the Node consumer reads). Zero is refused: it would heartbeat in a busy loop.
pub fn parse_interval(value: &str) -> Option<Duration> {
    let value = value.trim();
    let d = match value.parse::<u64>() {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) => humantime::parse_duration(value).ok()?,
    };
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(prefix: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(prefix, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let c = config("TTP_PROCESSOR", &[]).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.endpoint, "localhost:8080");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.health_port, None);
        assert_eq!(c.health_bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.component_id, None);
    }

    #[test]
    fn prefixed_variables_win_over_plain_ones() {
        let c = config(
            "TTP_PROCESSOR",
            &[
                ("ENABLE_FLOWCTL", "false"),
                ("TTP_PROCESSOR_ENABLE_FLOWCTL", "true"),
                ("FLOWCTL_ENDPOINT", "10.0.0.1:8080"),
                ("TTP_PROCESSOR_FLOWCTL_ENDPOINT", "127.0.0.1:9000"),
                ("FLOWCTL_COMPONENT_ID", "ttp"),
                ("HEALTH_PORT", "8088"),
                ("PORT", "50051"),
            ],
        )
        .unwrap();
        assert!(c.enabled);
        assert_eq!(c.endpoint, "127.0.0.1:9000");
        assert_eq!(c.component_id.as_deref(), Some("ttp"));
        assert_eq!(c.health_port, Some(8088));
        assert_eq!(c.port, Some(50051));
    }

    #[test]
    fn heartbeat_interval_takes_durations_or_milliseconds() {
        let interval =
            |v| config("", &[("FLOWCTL_HEARTBEAT_INTERVAL", v)]).map(|c| c.heartbeat_interval);
        assert_eq!(interval("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(interval("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(interval("5000"), Ok(Duration::from_millis(5000)));
        for bad in ["ten seconds", "0", "0s", "-5", "10x"] {
            let err = interval(bad).unwrap_err();
            assert_eq!(err.var, "FLOWCTL_HEARTBEAT_INTERVAL", "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn bad_values_name_the_variable_that_held_them() {
        let err = config("TTP", &[("TTP_ENABLE_FLOWCTL", "maybe")]).unwrap_err();
        assert_eq!(err.var, "TTP_ENABLE_FLOWCTL");
        assert_eq!(
            err.to_string(),
            "TTP_ENABLE_FLOWCTL=\"maybe\" is not valid: expected true or false"
        );
        let err = config("", &[("HEALTH_PORT", "70000")]).unwrap_err();
        assert_eq!(err.var, "HEALTH_PORT");
        let err = config("", &[("HEALTH_BIND_ADDRESS", "localhost")]).unwrap_err();
        assert_eq!(err.var, "HEALTH_BIND_ADDRESS");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = config("", &[("ENABLE_FLOWCTL", ""), ("HEALTH_PORT", " ")]).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.health_port, None);
    }
}
