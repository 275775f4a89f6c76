//! The registry as the supervisor's `registered` readiness probe sees it.

use crate::api::protocol::RegistrationInfo;
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

    fn registration(&self, pipeline: &str, component: &str) -> Option<RegistrationInfo> {
        let found = [component.to_string(), format!("{pipeline}/{component}")]
            .iter()
            .find_map(|id| self.status(id))?;
        Some(RegistrationInfo {
            health: format!("{:?}", found.health).to_lowercase(),
            heartbeat_age_ms: found.last_heartbeat_age().map(|a| a.as_millis() as u64),
            metrics: found
                .metrics
                .iter()
                .map(|(k, v)| (k.clone(), v.to_text()))
                .collect(),
        })
    }

    fn unregister(&self, pipeline: &str, component: &str) {
        for id in [component.to_string(), format!("{pipeline}/{component}")] {
            Registry::unregister(self, &id);
        }
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

    #[test]
    fn status_shows_the_registration_and_a_stopped_component_is_unregistered() {
        let registry = Registry::open(RegistryConfig::default()).unwrap();
        let probe: &dyn Registrations = &registry;
        assert_eq!(probe.registration("ttp", "sink"), None);
        registry.register(registration("sink"));
        let mut metrics = std::collections::HashMap::new();
        metrics.insert(
            "total_processed".to_string(),
            crate::registry::MetricValue::Number(7.0),
        );
        registry
            .heartbeat("sink", HealthStatus::Healthy, metrics)
            .unwrap();
        let shown = probe.registration("ttp", "sink").unwrap();
        assert_eq!(shown.health, "healthy");
        assert!(
            shown.heartbeat_age_ms.is_some_and(|ms| ms < 5_000),
            "{shown:?}"
        );
        assert_eq!(
            shown.metrics.get("total_processed").map(String::as_str),
            Some("7")
        );
        probe.unregister("ttp", "sink");
        assert!(!registry.is_registered("sink"));
        assert_eq!(probe.registration("ttp", "sink"), None);
    }
}
