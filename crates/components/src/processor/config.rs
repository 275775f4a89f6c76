//! The component's environment contract, the variable names the Go ttp-processor uses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Where and how the component runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentConfig {
    /// gRPC listen address: loopback unless `LISTEN_ADDR`/`GRPC_ADDR` says otherwise.
    pub listen: SocketAddr,
    /// `RawLedgerService` endpoint, as an `http://host:port` URI.
    pub upstream: String,
    pub network_passphrase: String,
    /// First and longest wait between upstream reconnection attempts.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set; it is required")]
    Missing(&'static str),
    #[error("{name}={value:?} is not valid: {hint}")]
    Invalid {
        name: &'static str,
        value: String,
        hint: &'static str,
    },
}

pub const DEFAULT_PORT: u16 = 50051;

impl ComponentConfig {
    /// Reads the configuration through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let (port_name, port) = match (nonempty("PORT"), nonempty("GRPC_PORT")) {
            (Some(p), _) => ("PORT", Some(p)),
            (None, Some(p)) => ("GRPC_PORT", Some(p)),
            (None, None) => ("PORT", None),
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p.trim().parse::<u16>().map_err(|_| ConfigError::Invalid {
                name: port_name,
                value: p,
                hint: "expected a port number such as 50051",
            })?,
        };
        let (addr_name, addr) = match (nonempty("LISTEN_ADDR"), nonempty("GRPC_ADDR")) {
            (Some(a), _) => ("LISTEN_ADDR", Some(a)),
            (None, Some(a)) => ("GRPC_ADDR", Some(a)),
            (None, None) => ("LISTEN_ADDR", None),
        };
        let listen = match addr {
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            Some(a) => parse_listen(a.trim(), port).ok_or(ConfigError::Invalid {
                name: addr_name,
                value: a,
                hint: "expected an IP address, IP:port or :port",
            })?,
        };
        let upstream = nonempty("SOURCE_SERVICE_ADDRESS")
            .or_else(|| nonempty("LIVE_SOURCE_ENDPOINT"))
            .ok_or(ConfigError::Missing(
                "SOURCE_SERVICE_ADDRESS (or LIVE_SOURCE_ENDPOINT)",
            ))?;
        let upstream = upstream.trim();
        let upstream = if upstream.contains("://") {
            upstream.to_string()
        } else {
            format!("http://{upstream}")
        };
        if tonic::transport::Endpoint::from_shared(upstream.clone()).is_err() {
            return Err(ConfigError::Invalid {
                name: "SOURCE_SERVICE_ADDRESS",
                value: upstream,
                hint: "expected host:port",
            });
        }
        let network_passphrase = get("NETWORK_PASSPHRASE")
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing("NETWORK_PASSPHRASE"))?;
        Ok(ComponentConfig {
            listen,
            upstream,
            network_passphrase,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        })
    }
}

/// `IP:port`, an IP (with `port`), Go's `:port` (every interface) or `localhost`.
pub fn parse_listen(a: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return Some(sa);
    }
    if let Ok(ip) = a
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(SocketAddr::new(ip, port));
    }
    // Go style ":port" means every interface.
    if let Some(p) = a.strip_prefix(':') {
        return Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            p.parse().ok()?,
        ));
    }
    if a == "localhost" {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<ComponentConfig, ConfigError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ComponentConfig::from_env(|k| m.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("SOURCE_SERVICE_ADDRESS", "localhost:50052"),
        ("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015"),
    ];

    #[test]
    fn binds_loopback_on_port_by_default() {
        let mut v = BASE.to_vec();
        v.push(("PORT", "6001"));
        let c = cfg(&v).unwrap();
        assert_eq!(c.listen, "127.0.0.1:6001".parse().unwrap());
        assert_eq!(c.upstream, "http://localhost:50052");
    }

    #[test]
    fn listen_addr_overrides_the_interface() {
        let mut v = BASE.to_vec();
        v.extend([("PORT", "6001"), ("LISTEN_ADDR", "0.0.0.0")]);
        assert_eq!(cfg(&v).unwrap().listen, "0.0.0.0:6001".parse().unwrap());
        let mut v = BASE.to_vec();
        v.push(("GRPC_ADDR", "[::1]:7000"));
        assert_eq!(cfg(&v).unwrap().listen, "[::1]:7000".parse().unwrap());
    }

    #[test]
    fn live_source_endpoint_is_accepted_as_the_upstream() {
        let v = [
            ("LIVE_SOURCE_ENDPOINT", "src:9"),
            ("NETWORK_PASSPHRASE", "x"),
        ];
        assert_eq!(cfg(&v).unwrap().upstream, "http://src:9");
    }

    #[test]
    fn missing_and_bad_values_are_named() {
        assert_eq!(
            cfg(&[("NETWORK_PASSPHRASE", "x")]).unwrap_err(),
            ConfigError::Missing("SOURCE_SERVICE_ADDRESS (or LIVE_SOURCE_ENDPOINT)")
        );
        assert_eq!(
            cfg(&[("SOURCE_SERVICE_ADDRESS", "a:1")]).unwrap_err(),
            ConfigError::Missing("NETWORK_PASSPHRASE")
        );
        let mut v = BASE.to_vec();
        v.push(("PORT", "http"));
        assert!(cfg(&v).unwrap_err().to_string().contains("PORT=\"http\""));
    }
}
