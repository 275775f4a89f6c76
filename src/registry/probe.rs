//! The registry as the supervisor's `registered` readiness probe sees it.

use crate::probe::registered::Registrations;

use super::{HealthStatus, Registry};

/// Registered and not silent past the TTL. The component is looked up by its component id
/// (what the supervisor injects as `FLOWCTL_COMPONENT_ID`), or by `pipeline/component` for a
/// supervisor that qualifies ids with the pipeline name.
impl Registrations for Registry {
    fn is_registered(&self, pipeline: &str, component: &str) -> bool {
        [component.to_string(), format!("{pipeline}/{component}")]
            .iter()
            .filter_map(|id| self.status(id))
            .any(|s| s.health != HealthStatus::Unhealthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::state::{Api, Registration};
    use crate::registry::RegistryConfig;
    use flowctl_proto::flowctl::ServiceType;
    use std::time::Duration;

    fn registration(component_id: &str) -> Registration {
        Registration {
            service_id: String::new(),
            component_id: component_id.into(),
            api: Api::V0,
            service_type: ServiceType::Sink,
            info: Default::default(),
            max_inflight: 0,
        }
    }

    #[test]
    fn registered_probe_needs_a_live_registration() {
        let config = RegistryConfig {
            ttl: Some(Duration::from_millis(50)),
            ..Default::default()
        };
        let registry = Registry::open(config).unwrap();
        let probe: &dyn Registrations = &registry;
        assert!(!probe.is_registered("ttp", "sink"));
        registry.register(registration("sink"));
        assert!(probe.is_registered("ttp", "sink"));
        registry.register(registration("ttp/source"));
        assert!(probe.is_registered("ttp", "source"));
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            !probe.is_registered("ttp", "sink"),
            "silent past the TTL is not registered"
        );
        registry
            .heartbeat("sink", HealthStatus::Unknown, Default::default())
            .unwrap();
        assert!(probe.is_registered("ttp", "sink"));
    }
}
