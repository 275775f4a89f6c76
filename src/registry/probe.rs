//! The registry as the supervisor's `registered` readiness probe sees it.

use crate::api::protocol::RegistrationInfo;
use crate::probe::registered::Registrations;

use super::{ComponentRegistration, HealthStatus, Registry, SupervisedComponent};

/// The registration of `pipeline/component`: by its component id (what the supervisor
/// injects as `FLOWCTL_COMPONENT_ID`) or by `pipeline/component`, and not one that another
/// supervised component owns (two pipelines may both have a `source`).
fn registration_of(
    registry: &Registry,
    pipeline: &str,
    component: &str,
) -> Option<ComponentRegistration> {
    [component.to_string(), format!("{pipeline}/{component}")]
        .iter()
        .filter_map(|id| registry.status(id))
        .find(|s| {
            s.owner
                .as_ref()
                .is_none_or(|o| o.pipeline == pipeline && o.component == component)
        })
}

/// Registered means registered and not silent past the TTL.
impl Registrations for Registry {
    fn is_registered(&self, pipeline: &str, component: &str) -> bool {
        registration_of(self, pipeline, component)
            .is_some_and(|s| s.health != HealthStatus::Unhealthy)
    }

    fn registration(&self, pipeline: &str, component: &str) -> Option<RegistrationInfo> {
        let found = registration_of(self, pipeline, component)?;
        Some(RegistrationInfo {
            health: format!("{:?}", found.health).to_lowercase(),
            heartbeat_age_ms: found.last_heartbeat_age().map(|a| a.as_millis() as u64),
            linked_by: found.linked.map(|(_, by)| by.as_str().to_string()),
            metrics: found
                .metrics
                .iter()
                .map(|(k, v)| (k.clone(), v.to_text()))
                .collect(),
        })
    }

    fn run_stalled(&self, pipeline: &str) -> Option<String> {
        Registry::run_stalled(self, pipeline)
    }

    fn unregister(&self, pipeline: &str, component: &str) {
        while let Some(found) = registration_of(self, pipeline, component) {
            if !Registry::unregister(self, &found.service_id) {
                break;
            }
        }
    }

    fn process_started(&self, pipeline: &str, component: &str, pid: u32, health_port: u16) {
        let component = SupervisedComponent {
            pipeline: pipeline.to_string(),
            component: component.to_string(),
        };
        Registry::component_health_port(self, component.clone(), health_port);
        Registry::process_started(self, pid, component);
    }

    fn process_exited(&self, pid: u32) {
        Registry::process_exited(self, pid);
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
