//! The daemon's TOML configuration: defaults, the shipped file, and errors that point at the
//! file, line and key.

use std::path::Path;
use std::time::Duration;

use flowctl::config::{CgroupMode, Config, ConfigError, RestartPolicyName};
use flowctl::systemd::journal::ChildLogMode;

fn invalid(text: &str) -> flowctl::config::InvalidConfig {
    match Config::parse(Path::new("/etc/flowctl/flowctl.toml"), text) {
        Err(ConfigError::Invalid(e)) => *e,
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn shipped_config_parses_and_spells_out_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/flowctl.toml");
    let cfg = Config::load(Path::new(path)).unwrap();
    assert_eq!(cfg, Config::default());
}

#[test]
fn empty_file_means_defaults() {
    let cfg = Config::parse(Path::new("x.toml"), "").unwrap();
    assert_eq!(cfg.paths.pipelines_dir, Path::new("/etc/flowctl/pipelines"));
    assert_eq!(cfg.log.children, ChildLogMode::Fields);
    assert_eq!(cfg.cgroups.mode, CgroupMode::Auto);
    assert_eq!(cfg.control_socket(), Path::new("/run/flowctl/flowctl.sock"));
}

#[test]
fn values_override_defaults_key_by_key() {
    let cfg = Config::parse(
        Path::new("x.toml"),
        r#"
[registry]
listen = "127.0.0.1:18080"
[defaults.restart]
policy = "always"
max_delay = "2min"
[log]
children = "stream"
[metrics]
listen = ""
"#,
    )
    .unwrap();
    assert_eq!(cfg.registry.listen.port(), 18080);
    assert_eq!(cfg.defaults.restart.policy, RestartPolicyName::Always);
    assert_eq!(cfg.defaults.restart.max_delay, Duration::from_secs(120));
    assert_eq!(
        cfg.defaults.restart.initial_delay,
        Duration::from_millis(100)
    );
    assert_eq!(cfg.log.children, ChildLogMode::Stream);
    assert_eq!(cfg.metrics.listen, None);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = invalid("[paths]\nstate_dir = \"/x\"\npipline_dir = \"/y\"\n");
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("paths.pipline_dir"));
    assert!(
        e.message.contains("unknown field `pipline_dir`"),
        "{}",
        e.message
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with("/etc/flowctl/flowctl.toml:3:1: key `paths.pipline_dir`: "),
        "{shown}"
    );
}

#[test]
fn bad_duration_names_the_key_and_shows_the_format() {
    let e = invalid("[defaults.stop]\ntimeout = \"thirty\"\n");
    assert_eq!(e.line, Some(2));
    assert_eq!(e.key.as_deref(), Some("defaults.stop.timeout"));
    assert!(
        e.message.contains("invalid duration \"thirty\""),
        "{}",
        e.message
    );
}

#[test]
fn bad_enum_value_lists_the_choices() {
    let e = invalid("[log]\nchildren = \"syslog\"\n");
    assert_eq!(e.key.as_deref(), Some("log.children"));
    assert!(e.message.contains("fields"), "{}", e.message);
}

#[test]
fn bad_address_is_reported() {
    let e = invalid("[registry]\nlisten = \"localhost\"\n");
    assert_eq!(e.key.as_deref(), Some("registry.listen"));
}

#[test]
fn missing_file_other_than_the_default_is_an_error_naming_it() {
    let err = Config::load(Path::new("/nonexistent/flowctl.toml")).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/flowctl.toml: "),
        "{err}"
    );
}

#[test]
fn pipeline_files_are_yaml_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["b.yaml", "a.yml", ".hidden.yaml", "notes.txt", "c.yaml~"] {
        std::fs::write(dir.path().join(name), "").unwrap();
    }
    std::fs::create_dir(dir.path().join("d.yaml")).unwrap();
    let mut cfg = Config::default();
    cfg.paths.pipelines_dir = dir.path().to_path_buf();
    let names: Vec<String> = cfg
        .pipeline_files()
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.yml", "b.yaml"]);
    cfg.paths.pipelines_dir = dir.path().join("absent");
    assert!(cfg.pipeline_files().unwrap().is_empty());
}

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/seed-stellar-token-pipeline.yaml"
);

#[test]
fn a_bad_pipeline_file_is_rejected_with_its_error_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(EXAMPLE).unwrap();
    std::fs::write(dir.path().join("a-good.yaml"), &good).unwrap();
    std::fs::write(
        dir.path().join("b-bad.yaml"),
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: [oops\n",
    )
    .unwrap();
    // The same pipeline name again: rejected, the first keeps it.
    std::fs::write(dir.path().join("c-dup.yaml"), &good).unwrap();
    let mut cfg = Config::default();
    cfg.paths.pipelines_dir = dir.path().to_path_buf();
    let set = cfg.load_pipelines().unwrap();
    assert_eq!(set.loaded.len(), 1);
    assert_eq!(
        set.loaded[0].plan.source_file,
        dir.path().join("a-good.yaml")
    );
    assert_eq!(set.rejected.len(), 2, "{:#?}", set.rejected);
    let bad = &set.rejected[0];
    assert_eq!(bad.file, dir.path().join("b-bad.yaml"));
    assert!(
        bad.reason
            .starts_with(&format!("{}:", dir.path().join("b-bad.yaml").display())),
        "{}",
        bad.reason
    );
    assert!(
        set.rejected[1].reason.contains("is already defined in"),
        "{}",
        set.rejected[1].reason
    );
}

#[test]
fn config_defaults_reach_the_resolved_components() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(EXAMPLE, dir.path().join("p.yaml")).unwrap();
    let mut cfg = Config::parse(
        Path::new("flowctl.toml"),
        "[defaults.stop]\ntimeout = \"42s\"\n[defaults.restart]\nmax_delay = \"7s\"\n",
    )
    .unwrap();
    cfg.paths.pipelines_dir = dir.path().to_path_buf();
    // Unset fields equal the spec's own defaults.
    let d = Config::default().spec_defaults();
    assert_eq!(d, flowctl::spec::Defaults::default());
    let set = cfg.load_pipelines().unwrap();
    assert!(set.rejected.is_empty(), "{:#?}", set.rejected);
    let plan = &set.loaded[0].plan;
    assert!(!plan.components.is_empty());
    for c in &plan.components {
        // Unless the pipeline sets its own.
        let stop = c.stop.timeout;
        assert!(
            stop == Duration::from_secs(42) || plan.config_yaml.contains("timeout"),
            "{stop:?}"
        );
        assert!(
            c.restart.max_delay == Duration::from_secs(7) || plan.config_yaml.contains("max_delay")
        );
    }
}

#[test]
fn two_pipelines_never_share_an_allocated_port() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(EXAMPLE).unwrap();
    let name_line = good
        .lines()
        .find(|l| l.trim_start().starts_with("name:"))
        .unwrap()
        .to_string();
    std::fs::write(dir.path().join("one.yaml"), &good).unwrap();
    let other = good.replacen(&name_line, &format!("{name_line}-two"), 1);
    std::fs::write(dir.path().join("two.yaml"), other).unwrap();
    let mut cfg = Config::default();
    cfg.paths.pipelines_dir = dir.path().to_path_buf();
    let set = cfg.load_pipelines().unwrap();
    assert_eq!(set.loaded.len(), 2, "{:#?}", set.rejected);
    let mut seen = std::collections::BTreeSet::new();
    for l in &set.loaded {
        for c in &l.plan.components {
            for port in std::iter::once(c.health_port).chain(c.ports.iter().map(|p| p.port)) {
                assert!(seen.insert(port), "port {port} allocated twice");
            }
        }
    }
}

#[test]
fn systemd_edge_follows_the_config() {
    let cfg = Config::parse(
        Path::new("flowctl.toml"),
        "[log]\nchildren = \"stderr\"\n[cgroups]\nmode = \"off\"\n",
    )
    .unwrap();
    std::env::remove_var("NOTIFY_SOCKET");
    let edge = flowctl::systemd::SystemdEdge::setup(&cfg);
    assert!(!edge.notifier.is_enabled());
    assert_eq!(edge.child_logs.mode(), ChildLogMode::Stderr);
    assert!(matches!(
        edge.containment,
        flowctl::systemd::cgroup::Containment::ProcessGroups { .. }
    ));
}

#[test]
fn registry_token_file_is_read_and_half_a_tls_setup_is_refused_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("registry.token");
    std::fs::write(&token, "op-s3cret\n").unwrap();
    let cfg = Config::parse(
        Path::new("x.toml"),
        &format!(
            "[registry]\ntoken_file = \"{}\"\nmax_connections = 100\n",
            token.display()
        ),
    )
    .unwrap();
    let serving = cfg.registry.serving().unwrap();
    assert_eq!(serving.token.as_deref(), Some("op-s3cret"));
    assert_eq!(serving.connections.max_connections, Some(100));

    let half = Config::parse(
        Path::new("x.toml"),
        "[registry]\ntls_cert = \"/etc/flowctl/tls/server.pem\"\n",
    )
    .unwrap();
    let err = half.registry.serving().unwrap_err().to_string();
    assert!(err.contains("tls_cert, tls_key and tls_client_ca"), "{err}");

    let missing = Config::parse(
        Path::new("x.toml"),
        "[registry]\ntoken_file = \"/nonexistent/registry.token\"\n",
    )
    .unwrap();
    let err = format!("{:#}", missing.registry.serving().unwrap_err());
    assert!(err.contains("[registry] token_file"), "{err}");
    assert!(err.contains("/nonexistent/registry.token"), "{err}");
}

#[test]
fn a_default_count_past_a_million_is_refused_naming_its_key() {
    let e = invalid("[defaults.restart]\nstart_limit_burst = 4294967295\n");
    assert_eq!(
        e.key.as_deref(),
        Some("defaults.restart.start_limit_burst"),
        "{e}"
    );
    assert!(e.message.contains("allowed from 0 to 1000000"), "{e}");
    let e = invalid("[defaults.probes]\nfailure_threshold = 1000001\n");
    assert!(e.message.contains("allowed from 0 to 1000000"), "{e}");
}
