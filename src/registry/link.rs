//! Which supervised component a registration belongs to.
//!
//! The Go and Node.js components of ttp-processor-demo register without a `component_id`, so
//! the registry ties their registration to a component by what it can check, best first:
//!
//! 1. the connection's peer process ([`super::peer`]): the process holding the client socket
//!    is, or descends from, a process the supervisor started;
//! 2. `metadata.component_id`, when exactly one live supervised component has that id;
//! 3. the port of `health_endpoint`, when it is one live component's `HEALTH_PORT`.
//!
//! A registration that names its component id is linked to it when one live component has
//! that id. A linked registration goes when its component's process exits; an unlinked one
//! that stays unhealthy is dropped after a retention period (see [`super::Registry::sweep`]).

use std::collections::HashMap;

use super::state::SupervisedComponent;

/// How a registration was tied to its component; shown in `flowctl-sup status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkedBy {
    /// The process on the other end of the connection is the component's.
    PeerProcess,
    /// It sent `component_id` (`FLOWCTL_COMPONENT_ID`).
    ComponentId,
    /// It sent `metadata.component_id`.
    Metadata,
    /// The port of its `health_endpoint` is the component's `HEALTH_PORT`.
    HealthPort,
}

impl LinkedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkedBy::PeerProcess => "peer process",
            LinkedBy::ComponentId => "component id",
            LinkedBy::Metadata => "metadata",
            LinkedBy::HealthPort => "health port",
        }
    }
}

/// A live supervised component as linking sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub component: SupervisedComponent,
    pub health_port: u16,
}

/// What a registration says that can tie it to a component.
#[derive(Debug, Clone, Default)]
pub struct Claims<'a> {
    /// `component_id` as sent (empty when none).
    pub component_id: &'a str,
    pub metadata: Option<&'a HashMap<String, String>>,
    /// `health_endpoint` (v0) or `endpoint` (v1).
    pub health_endpoint: &'a str,
}

/// The component a registration belongs to and how that was found; `None` when nothing ties
/// it to exactly one live component.
pub fn decide(
    claims: &Claims<'_>,
    peer: Option<&SupervisedComponent>,
    live: &[Candidate],
) -> Option<(SupervisedComponent, LinkedBy)> {
    if let Some(peer) = peer {
        return Some((peer.clone(), LinkedBy::PeerProcess));
    }
    let only = |found: Vec<&Candidate>| match found.as_slice() {
        [one] => Some(one.component.clone()),
        _ => None,
    };
    let named = |id: &str| {
        only(
            live.iter()
                .filter(|c| c.component.component == id)
                .collect(),
        )
    };
    if !claims.component_id.is_empty() {
        return named(claims.component_id).map(|c| (c, LinkedBy::ComponentId));
    }
    if let Some(id) = claims
        .metadata
        .and_then(|m| m.get("component_id"))
        .filter(|id| !id.is_empty())
    {
        if let Some(c) = named(id) {
            return Some((c, LinkedBy::Metadata));
        }
    }
    let port = endpoint_port(claims.health_endpoint)?;
    only(live.iter().filter(|c| c.health_port == port).collect()).map(|c| (c, LinkedBy::HealthPort))
}

/// The port of `http://host:port/path`, `host:port` or `[::1]:port`.
fn endpoint_port(endpoint: &str) -> Option<u16> {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let (_, port) = authority.rsplit_once(':')?;
    port.parse().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pipeline: &str, component: &str) -> SupervisedComponent {
        SupervisedComponent {
            pipeline: pipeline.into(),
            component: component.into(),
        }
    }

    fn live() -> Vec<Candidate> {
        vec![
            Candidate {
                component: c("ttp", "processor"),
                health_port: 8088,
            },
            Candidate {
                component: c("ttp", "consumer"),
                health_port: 8089,
            },
            Candidate {
                component: c("other", "consumer"),
                health_port: 8090,
            },
        ]
    }

    /// What a registration claims, its peer, and the link expected.
    type Row<'a> = (
        Claims<'a>,
        Option<&'a SupervisedComponent>,
        Option<(SupervisedComponent, LinkedBy)>,
    );

    #[test]
    fn links_are_made_by_peer_then_component_id_then_metadata_then_health_port() {
        let meta = |id: &str| HashMap::from([("component_id".to_string(), id.to_string())]);
        let processor_meta = meta("processor");
        let consumer_meta = meta("consumer");
        let nobody_meta = meta("nobody");
        let peer = c("ttp", "processor");
        let rows: Vec<Row> = vec![
            // The peer process wins over anything the registration claims.
            (
                Claims {
                    health_endpoint: "http://127.0.0.1:8089/health",
                    ..Claims::default()
                },
                Some(&peer),
                Some((c("ttp", "processor"), LinkedBy::PeerProcess)),
            ),
            (
                Claims {
                    component_id: "processor",
                    ..Claims::default()
                },
                None,
                Some((c("ttp", "processor"), LinkedBy::ComponentId)),
            ),
            // Two pipelines have a `consumer`: the id alone cannot say which.
            (
                Claims {
                    component_id: "consumer",
                    ..Claims::default()
                },
                None,
                None,
            ),
            (
                Claims {
                    metadata: Some(&processor_meta),
                    ..Claims::default()
                },
                None,
                Some((c("ttp", "processor"), LinkedBy::Metadata)),
            ),
            // An ambiguous metadata id falls through to the health port.
            (
                Claims {
                    metadata: Some(&consumer_meta),
                    health_endpoint: "http://127.0.0.1:8090/health",
                    ..Claims::default()
                },
                None,
                Some((c("other", "consumer"), LinkedBy::HealthPort)),
            ),
            (
                Claims {
                    metadata: Some(&nobody_meta),
                    health_endpoint: "127.0.0.1:8089",
                    ..Claims::default()
                },
                None,
                Some((c("ttp", "consumer"), LinkedBy::HealthPort)),
            ),
            // The Node consumer's hard-coded endpoint matches no component.
            (
                Claims {
                    health_endpoint: "http://localhost:8088x/health",
                    ..Claims::default()
                },
                None,
                None,
            ),
            (Claims::default(), None, None),
        ];
        for (claims, peer, want) in rows {
            assert_eq!(decide(&claims, peer, &live()), want, "{claims:?}");
        }
    }

    #[test]
    fn endpoint_ports_are_read_from_urls_and_host_port_pairs() {
        assert_eq!(endpoint_port("http://127.0.0.1:8088/health"), Some(8088));
        assert_eq!(endpoint_port("[::1]:9000"), Some(9000));
        assert_eq!(endpoint_port("localhost:0"), None);
        assert_eq!(endpoint_port("http://localhost/health"), None);
        assert_eq!(endpoint_port(""), None);
    }
}
