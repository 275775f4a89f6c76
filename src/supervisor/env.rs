//! The exact environment a component's process sees.
//!
//! Layers, later ones winning: `PATH`, `HOME`, `LANG` (or the supervisor's whole environment
//! with `inherit_env`), then the flowctl contract, then the component's own `env`. Nothing else
//! leaks from the supervisor: a component behaves the same under systemd, a shell or a test.

use std::collections::BTreeMap;
use std::path::Path;

use crate::plan::ComponentPlan;

/// The heartbeat interval components are told (`FLOWCTL_HEARTBEAT_INTERVAL`, `10s` as the Go
/// flowctl sets it).
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Used when the supervisor itself has no `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The id of each pipeline's current run, as the control plane recorded it: children get it
/// as `FLOWCTL_RUN_ID`. Shared by whoever begins runs (`flowctl run`, the daemon) and the
/// supervisor that starts the processes.
pub type RunIds = std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>;

/// What the environment is built from besides the plan.
pub struct EnvInputs<'a> {
    /// The control plane's address; `None` when no registry runs, in which case components
    /// are told `ENABLE_FLOWCTL=false` rather than sent looking for one.
    pub endpoint: Option<&'a str>,
    /// Where the component sends sd_notify messages, when it has a notify check or watchdog.
    pub notify_socket: Option<&'a Path>,
    /// The home directory of the component's `user`, when one is set.
    pub user_home: Option<&'a Path>,
    /// The supervisor's own environment.
    pub parent: &'a [(String, String)],
    /// The pipeline run the process belongs to (`FLOWCTL_RUN_ID`), when one is recorded.
    pub run_id: Option<&'a str>,
    /// This process's start of its component: 1 for the first, 2 after one restart …
    /// (`FLOWCTL_ATTEMPT`).
    pub attempt: u32,
}

/// Builds the component's environment.
pub fn child_env(plan: &ComponentPlan, inputs: &EnvInputs<'_>) -> BTreeMap<String, String> {
    let parent = |key: &str| {
        inputs
            .parent
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mut env = BTreeMap::new();
    if plan.inherit_env {
        env.extend(inputs.parent.iter().cloned());
    }
    env.insert(
        "PATH".to_string(),
        parent("PATH").unwrap_or_else(|| DEFAULT_PATH.to_string()),
    );
    let home = match inputs.user_home {
        Some(home) => Some(home.display().to_string()),
        None => parent("HOME"),
    };
    if let Some(home) = home {
        env.insert("HOME".to_string(), home);
    }
    if let Some(lang) = parent("LANG") {
        env.insert("LANG".to_string(), lang);
    }

    match inputs.endpoint {
        Some(endpoint) => {
            env.insert("ENABLE_FLOWCTL".to_string(), "true".to_string());
            env.insert("FLOWCTL_ENDPOINT".to_string(), endpoint.to_string());
        }
        None => {
            env.insert("ENABLE_FLOWCTL".to_string(), "false".to_string());
        }
    }
    env.insert("FLOWCTL_COMPONENT_ID".to_string(), plan.id.clone());
    env.insert("FLOWCTL_SERVICE_ID".to_string(), plan.id.clone());
    env.insert(
        "FLOWCTL_HEARTBEAT_INTERVAL".to_string(),
        plan.heartbeat_interval_format.render(HEARTBEAT_INTERVAL),
    );
    // The Go flowctl v0.0.10 reporter reads the interval in milliseconds, whatever the form
    // of FLOWCTL_HEARTBEAT_INTERVAL.
    env.insert(
        "FLOWCTL_HEARTBEAT_INTERVAL_MS".to_string(),
        HEARTBEAT_INTERVAL.as_millis().to_string(),
    );
    env.insert(
        "FLOWCTL_ATTEMPT".to_string(),
        inputs.attempt.max(1).to_string(),
    );
    if let Some(run_id) = inputs.run_id {
        env.insert("FLOWCTL_RUN_ID".to_string(), run_id.to_string());
    }
    env.insert("HEALTH_PORT".to_string(), plan.health_port.to_string());
    // The Node.js consumer reports this as its health endpoint, else a hard-coded one.
    env.insert(
        "HEALTH_ENDPOINT".to_string(),
        format!("http://127.0.0.1:{}/health", plan.health_port),
    );
    env.insert(
        "FLOWCTL_ON_ERROR".to_string(),
        plan.on_error.as_str().to_string(),
    );
    if let Some(grpc) = plan.ports.iter().find(|p| p.name == "grpc") {
        env.insert("PORT".to_string(), grpc.port.to_string());
    }
    if let Some(socket) = inputs.notify_socket {
        env.insert("NOTIFY_SOCKET".to_string(), socket.display().to_string());
    }

    env.extend(plan.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PortPlan;
    use crate::supervisor::testplan::component;

    fn parent() -> Vec<(String, String)> {
        vec![
            ("PATH".into(), "/bin".into()),
            ("HOME".into(), "/root".into()),
            ("SECRET".into(), "x".into()),
        ]
    }

    #[test]
    fn contract_is_added_and_nothing_leaks() {
        let mut plan = component("ttp");
        plan.health_port = 8088;
        plan.ports.push(PortPlan {
            name: "grpc".into(),
            port: 50051,
            protocol: "tcp".into(),
        });
        let parent = parent();
        let env = child_env(
            &plan,
            &EnvInputs {
                endpoint: Some("127.0.0.1:8080"),
                notify_socket: None,
                user_home: None,
                parent: &parent,
                run_id: Some("run-7"),
                attempt: 2,
            },
        );
        let want: BTreeMap<String, String> = [
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("ENABLE_FLOWCTL", "true"),
            ("FLOWCTL_ENDPOINT", "127.0.0.1:8080"),
            ("FLOWCTL_COMPONENT_ID", "ttp"),
            ("FLOWCTL_SERVICE_ID", "ttp"),
            ("FLOWCTL_HEARTBEAT_INTERVAL", "10s"),
            ("FLOWCTL_HEARTBEAT_INTERVAL_MS", "10000"),
            ("FLOWCTL_ATTEMPT", "2"),
            ("FLOWCTL_RUN_ID", "run-7"),
            ("HEALTH_PORT", "8088"),
            ("HEALTH_ENDPOINT", "http://127.0.0.1:8088/health"),
            ("FLOWCTL_ON_ERROR", "fail"),
            ("PORT", "50051"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
    }

    #[test]
    fn component_env_wins_and_inherit_passes_everything() {
        let mut plan = component("c");
        plan.inherit_env = true;
        plan.env
            .insert("FLOWCTL_HEARTBEAT_INTERVAL".into(), "10000".into());
        let parent = parent();
        let env = child_env(
            &plan,
            &EnvInputs {
                endpoint: None,
                notify_socket: Some(Path::new("/run/n.sock")),
                user_home: Some(Path::new("/home/flowctl")),
                parent: &parent,
                run_id: None,
                attempt: 1,
            },
        );
        assert_eq!(env["FLOWCTL_HEARTBEAT_INTERVAL"], "10000");
        assert_eq!(env["SECRET"], "x");
        assert_eq!(env["FLOWCTL_ON_ERROR"], "fail");
        assert_eq!(env["HOME"], "/home/flowctl");
        assert_eq!(env["ENABLE_FLOWCTL"], "false");
        assert_eq!(env["NOTIFY_SOCKET"], "/run/n.sock");
        assert!(!env.contains_key("FLOWCTL_ENDPOINT"));
        assert!(
            !env.contains_key("FLOWCTL_RUN_ID"),
            "no run recorded, none told"
        );
        assert_eq!(env["FLOWCTL_ATTEMPT"], "1");
    }

    #[test]
    fn heartbeat_interval_is_written_in_the_form_the_component_reads() {
        let mut plan = component("consumer");
        let inputs = EnvInputs {
            endpoint: None,
            notify_socket: None,
            user_home: None,
            parent: &[],
            run_id: None,
            attempt: 1,
        };
        assert_eq!(
            child_env(&plan, &inputs)["FLOWCTL_HEARTBEAT_INTERVAL"],
            "10s"
        );
        plan.heartbeat_interval_format = crate::plan::HeartbeatFormat::Millis;
        assert_eq!(
            child_env(&plan, &inputs)["FLOWCTL_HEARTBEAT_INTERVAL"],
            "10000"
        );
    }

    #[test]
    fn on_error_is_handed_over_and_the_component_env_wins() {
        let mut plan = component("c");
        plan.on_error = crate::plan::OnError::DeadLetter;
        let inputs = EnvInputs {
            endpoint: None,
            notify_socket: None,
            user_home: None,
            parent: &[],
            run_id: None,
            attempt: 1,
        };
        assert_eq!(child_env(&plan, &inputs)["FLOWCTL_ON_ERROR"], "dead-letter");
        plan.env.insert("FLOWCTL_ON_ERROR".into(), "fail".into());
        assert_eq!(child_env(&plan, &inputs)["FLOWCTL_ON_ERROR"], "fail");
    }
}
