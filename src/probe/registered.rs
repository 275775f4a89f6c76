//! `registered`: the component registered with the control plane under its id.
//!
//! The registry answers through [`Registrations`]; a supervisor run without one keeps such a
//! component not ready and says so, rather than pretending.

use super::ProbeTarget;

/// Implemented by the control plane: has this component registered (and is it still alive)?
pub trait Registrations: Send + Sync {
    fn is_registered(&self, pipeline: &str, component: &str) -> bool;

    /// What status output shows of the registration.
    fn registration(
        &self,
        _pipeline: &str,
        _component: &str,
    ) -> Option<crate::api::protocol::RegistrationInfo> {
        None
    }

    /// Why the current bounded run of `pipeline` is stalled, when it is.
    fn run_stalled(&self, _pipeline: &str) -> Option<String> {
        None
    }

    /// The supervisor stopped the component on purpose: it is no longer a service.
    fn unregister(&self, _pipeline: &str, _component: &str) {}

    /// The supervisor started `pid` as the component: the control plane accepts that
    /// component's registration and heartbeats from this process (and its descendants) only.
    /// `health_port` is its `HEALTH_PORT`, by which a registration may be linked to it.
    fn process_started(&self, _pipeline: &str, _component: &str, _pid: u32, _health_port: u16) {}

    /// `pid` has exited.
    fn process_exited(&self, _pid: u32) {}
}

pub fn check(target: &ProbeTarget) -> Result<(), String> {
    match &target.registry {
        None => Err("no registry: this supervisor runs no control plane".into()),
        Some(registry) if registry.is_registered(&target.pipeline, &target.component) => Ok(()),
        Some(_) => Err(format!("`{}` has not registered", target.component)),
    }
}
