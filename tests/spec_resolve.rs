//! Resolution: ports allocated, `${…}` expanded, upstream addresses injected, defaults filled.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use flowctl::plan::{ComponentPlan, PipelinePlan, ProbeCheck, RestartPolicy, Role};
use flowctl::spec::{parse_str, resolve, Defaults, Diagnostics, ResolveOptions};

const HEAD: &str = "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: t}\nspec:\n";

fn opts_with(vars: &[(&str, &str)]) -> ResolveOptions {
    ResolveOptions {
        vars: Some(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn try_plan(body: &str, opts: &ResolveOptions) -> Result<PipelinePlan, Diagnostics> {
    let text = format!("{HEAD}{body}");
    let p = parse_str(Path::new("p.yaml"), &text)
        .unwrap_or_else(|d| panic!("parse failed:\n{d}\n{text}"));
    resolve(&p, opts)
}

fn plan(body: &str, opts: &ResolveOptions) -> PipelinePlan {
    try_plan(body, opts).unwrap_or_else(|d| panic!("resolve failed:\n{d}"))
}

fn get<'a>(p: &'a PipelinePlan, id: &str) -> &'a ComponentPlan {
    p.components.iter().find(|c| c.id == id).unwrap()
}

fn port(c: &ComponentPlan, name: &str) -> u16 {
    c.ports.iter().find(|p| p.name == name).unwrap().port
}

#[test]
fn env_references_expand_to_own_and_other_ports_and_addresses() {
    let p = plan(
        "  sources:
    - id: src
      command: src
      ports: [{name: grpc}, {name: metrics}]
      env:
        LISTEN: \"0.0.0.0:${ports.grpc}\"
  sinks:
    - id: sink
      command: sink
      ports: [{name: web, hostPort: 0}]
      args: [\"--from=${src.address}\", \"--metrics=${src.ports.metrics}\"]
      env:
        WEB: \"${ports.web}\"
        FROM: \"${src.address}\"
        OWN_HEALTH: \"${ports.health}\"
        SRC_HEALTH: \"${src.ports.health}\"
",
        &opts_with(&[]),
    );
    let src = get(&p, "src");
    let sink = get(&p, "sink");
    let grpc = port(src, "grpc");
    assert_ne!(grpc, 0);
    assert_eq!(src.env["LISTEN"], format!("0.0.0.0:{grpc}"));
    assert_eq!(sink.env["WEB"], port(sink, "web").to_string());
    assert_eq!(sink.env["FROM"], format!("127.0.0.1:{grpc}"));
    assert_eq!(sink.env["OWN_HEALTH"], sink.health_port.to_string());
    assert_eq!(sink.env["SRC_HEALTH"], src.health_port.to_string());
    assert_eq!(
        sink.args,
        [
            format!("--from=127.0.0.1:{grpc}"),
            format!("--metrics={}", port(src, "metrics"))
        ]
    );
}

#[test]
fn address_uses_the_grpc_port_else_the_first_port() {
    let p = plan(
        "  sources:
    - id: a
      command: a
      ports: [{name: http, hostPort: 18080}, {name: grpc, hostPort: 18081}]
    - id: b
      command: b
      ports: [{name: http, hostPort: 18082}, {name: admin, hostPort: 18083}]
  sinks:
    - id: s
      command: s
      env: {A: \"${a.address}\", B: \"${b.address}\"}
",
        &opts_with(&[]),
    );
    let s = get(&p, "s");
    assert_eq!(s.env["A"], "127.0.0.1:18081");
    assert_eq!(s.env["B"], "127.0.0.1:18082");
}

#[test]
fn variables_come_from_the_supervisor_environment() {
    let body = "  sinks:
    - id: s
      command: s
      env:
        DB: \"postgres://u:${PGPASSWORD}@localhost/x\"
";
    let p = plan(body, &opts_with(&[("PGPASSWORD", "hunter2")]));
    assert_eq!(get(&p, "s").env["DB"], "postgres://u:hunter2@localhost/x");

    // Without a map, flowctl's own environment is read.
    let p = plan(
        "  sinks:\n    - id: s\n      command: s\n      env: {P: \"${PATH}\"}\n",
        &ResolveOptions::default(),
    );
    assert_eq!(get(&p, "s").env["P"], std::env::var("PATH").unwrap());
}

#[test]
fn unset_variable_is_an_error_naming_it_and_its_place() {
    let err = try_plan(
        "  sinks:
    - id: s
      command: s
      env:
        DB: \"${NOT_SET_ANYWHERE}\"
      args: [\"${ALSO_UNSET}\"]
",
        &opts_with(&[]),
    )
    .unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("p.yaml:9:13: error: `env.DB`: `${NOT_SET_ANYWHERE}` is not set"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("p.yaml:10:14: error: `args`: `${ALSO_UNSET}` is not set"),
        "{text}"
    );
}

#[test]
fn dollar_dollar_brace_escapes_a_reference() {
    let p = plan(
        "  sinks:\n    - id: s\n      command: s\n      env: {T: \"$${HOME} costs $5\"}\n",
        &opts_with(&[]),
    );
    assert_eq!(get(&p, "s").env["T"], "${HOME} costs $5");
}

#[test]
fn allocated_ports_are_distinct_and_free() {
    let mut body = String::from("  sources:\n");
    for i in 0..6 {
        body.push_str(&format!(
            "    - id: s{i}\n      command: x\n      ports: [{{name: a}}, {{name: b, hostPort: 0}}, {{name: u, protocol: udp}}]\n"
        ));
    }
    let p = plan(&body, &opts_with(&[]));
    let mut tcp = Vec::new();
    for c in &p.components {
        tcp.push(c.health_port);
        tcp.push(port(c, "a"));
        tcp.push(port(c, "b"));
    }
    let distinct: BTreeSet<u16> = tcp.iter().copied().collect();
    assert_eq!(distinct.len(), tcp.len(), "{tcp:?}");
    assert!(!distinct.contains(&0));
    // The allocator released them: each can be bound on loopback now.
    let held: Vec<TcpListener> = tcp
        .iter()
        .map(|p| TcpListener::bind(("127.0.0.1", *p)).unwrap_or_else(|e| panic!("port {p}: {e}")))
        .collect();
    assert_eq!(held.len(), 18);
    let udp: BTreeSet<u16> = p.components.iter().map(|c| port(c, "u")).collect();
    assert_eq!(udp.len(), 6);
    assert!(p.components.iter().all(|c| c.ports[2].protocol == "udp"));
}

#[test]
fn fixed_ports_are_kept_and_may_not_clash_between_components() {
    let p = plan(
        "  sinks:\n    - id: s\n      command: s\n      health_port: 3000\n      ports: [{containerPort: 3000, hostPort: 3000}]\n",
        &opts_with(&[]),
    );
    let s = get(&p, "s");
    assert_eq!((s.health_port, port(s, "grpc")), (3000, 3000));

    let err = try_plan(
        "  sources:
    - id: a
      command: a
      health_port: 8088
  sinks:
    - id: b
      command: b
      health_port: 8088
",
        &opts_with(&[]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:12:20: error: port 8088 is also used by `a` (at 8:20); give one of them another \
         port, or leave it out to have one allocated"
    );
}

#[test]
fn unnamed_ports_and_portless_sources_get_a_grpc_port() {
    let p = plan(
        "  sources:
    - id: src
      command: src
  processors:
    - id: proc
      command: proc
      ports: [{hostPort: 0}, {hostPort: 0}]
  sinks:
    - id: sink
      command: sink
",
        &opts_with(&[]),
    );
    let names =
        |id: &str| -> Vec<String> { get(&p, id).ports.iter().map(|p| p.name.clone()).collect() };
    assert_eq!(names("src"), ["grpc"]);
    assert_eq!(names("proc"), ["grpc", "port2"]);
    assert!(names("sink").is_empty());
    assert_ne!(get(&p, "sink").health_port, 0);
}

#[test]
fn inputs_inject_upstream_addresses_under_the_components_names() {
    let p = plan(
        "  sources:
    - id: src
      command: src
  processors:
    - id: proc
      command: proc
      inputs: [src]
  sinks:
    - id: sink
      command: sink
      inputs: [proc]
    - id: raw
      command: raw
      inputs: [src]
      env: {SOURCE_SERVICE_ADDRESS: \"elsewhere:1\"}
",
        &opts_with(&[]),
    );
    let src = format!("127.0.0.1:{}", port(get(&p, "src"), "grpc"));
    let proc_addr = format!("127.0.0.1:{}", port(get(&p, "proc"), "grpc"));
    let proc = get(&p, "proc");
    assert_eq!(proc.env["SOURCE_SERVICE_ADDRESS"], src);
    assert_eq!(proc.env["LIVE_SOURCE_ENDPOINT"], src);
    let sink = get(&p, "sink");
    assert_eq!(sink.env["TTP_SERVICE_ADDRESS"], proc_addr);
    assert!(!sink.env.contains_key("SOURCE_SERVICE_ADDRESS"));
    let raw = get(&p, "raw");
    assert_eq!(raw.env["SOURCE_SERVICE_ADDRESS"], "elsewhere:1");
    assert_eq!(raw.env["LIVE_SOURCE_ENDPOINT"], src);
    assert!(get(&p, "src").env.is_empty());
}

#[test]
fn plan_lists_components_after_what_they_depend_on() {
    let p = plan(
        "  sources:
    - id: src
      command: x
      depends_on: [db]
    - id: db
      command: x
  processors:
    - id: proc
      command: x
      inputs: [src]
  sinks:
    - id: sink
      command: x
      inputs: [proc]
      depends_on: [db, proc]
",
        &opts_with(&[]),
    );
    let order: Vec<&str> = p.components.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(order, ["db", "src", "proc", "sink"]);
    let sink = get(&p, "sink");
    assert_eq!(sink.inputs, ["proc"]);
    assert_eq!(sink.depends_on, ["proc", "db"]);
    assert_eq!(get(&p, "proc").role, Role::Processor);
    assert_eq!(p.name, "t");
    assert!(p.config_yaml.starts_with(HEAD));
}

#[test]
fn unset_fields_take_the_defaults_and_defaults_are_replaceable() {
    let body = "  sinks:\n    - id: s\n      command: s\n      readiness: {tcp: {port: 1}}\n";
    let p = plan(body, &opts_with(&[]));
    let s = get(&p, "s");
    let d = Defaults::default();
    assert_eq!(s.restart, d.restart);
    assert_eq!(s.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(s.restart.initial_delay, Duration::from_millis(100));
    assert_eq!(s.restart.max_delay, Duration::from_secs(30));
    assert_eq!(s.restart.start_limit_burst, 5);
    assert_eq!(s.stop.signal, libc::SIGTERM);
    assert_eq!(s.stop.timeout, Duration::from_secs(10));
    let r = s.readiness.as_ref().unwrap();
    assert_eq!(r.check, ProbeCheck::Tcp { port: 1 });
    assert_eq!(
        (
            r.period,
            r.timeout,
            r.failure_threshold,
            r.success_threshold
        ),
        (Duration::from_secs(1), Duration::from_secs(1), 3, 1)
    );
    assert!(!s.inherit_env);
    assert!(s.liveness.is_none());

    let mut custom = opts_with(&[]);
    custom.defaults.stop.timeout = Duration::from_secs(42);
    custom.defaults.restart.policy = RestartPolicy::Always;
    custom.defaults.probe.period = Duration::from_millis(250);
    custom.defaults.inherit_env = true;
    let p = plan(body, &custom);
    let s = get(&p, "s");
    assert_eq!(s.stop.timeout, Duration::from_secs(42));
    assert_eq!(s.restart.policy, RestartPolicy::Always);
    assert_eq!(
        s.readiness.as_ref().unwrap().period,
        Duration::from_millis(250)
    );
    assert!(s.inherit_env);
}

#[test]
fn spec_fields_override_the_defaults() {
    let p = plan(
        "  sources:
    - id: s
      command: /usr/bin/s
      args: [--verbose]
      restart_policy: no
      ports: [{name: api}]
      stop: {signal: INT, timeout: 2s}
      watchdog: 30s
      inherit_env: true
      rlimits: {nofile: 65536, core: unlimited}
      resources: {limits: {memory: 512Mi, cpu: 500m, pids: 64}, requests: {cpu: \"0.1\"}}
      restart:
        initial_delay: 0s
        multiplier: 1.5
        max_delay: 5s
        jitter: 0.2
        reset_after: 1m
        start_limit_burst: 10
        start_limit_interval: 1m
        with_dependencies: true
      readiness:
        grpc: {service: raw_ledger_service.RawLedgerService}
        initial_delay: 2s
        period: 500ms
        failure_threshold: 5
      liveness:
        http: {port: health, path: /live}
        timeout: 3s
",
        &opts_with(&[]),
    );
    let s = get(&p, "s");
    assert_eq!(s.command, "/usr/bin/s");
    assert_eq!(s.args, ["--verbose"]);
    assert_eq!(s.restart.policy, RestartPolicy::Never);
    assert_eq!(s.restart.initial_delay, Duration::ZERO);
    assert_eq!(s.restart.multiplier, 1.5);
    assert_eq!(s.restart.max_delay, Duration::from_secs(5));
    assert_eq!(s.restart.jitter, 0.2);
    assert_eq!(s.restart.reset_after, Duration::from_secs(60));
    assert_eq!(s.restart.start_limit_burst, 10);
    assert_eq!(s.restart.start_limit_interval, Duration::from_secs(60));
    assert!(s.restart.restart_with_dependencies);
    assert_eq!(s.stop.signal, libc::SIGINT);
    assert_eq!(s.stop.timeout, Duration::from_secs(2));
    assert_eq!(s.watchdog, Some(Duration::from_secs(30)));
    assert!(s.inherit_env);
    assert_eq!(s.rlimits.nofile, Some(65536));
    assert_eq!(s.rlimits.core, Some(libc::RLIM_INFINITY));
    assert_eq!(s.rlimits.nproc, None);
    assert_eq!(s.resources.memory_max, Some(512 << 20));
    assert_eq!(s.resources.cpu_max, Some(0.5));
    assert_eq!(s.resources.pids_max, Some(64));
    let r = s.readiness.as_ref().unwrap();
    // No port named grpc: the service port is the first one.
    assert_eq!(
        r.check,
        ProbeCheck::Grpc {
            port: port(s, "api"),
            service: "raw_ledger_service.RawLedgerService".into()
        }
    );
    assert_eq!(r.initial_delay, Duration::from_secs(2));
    assert_eq!(r.period, Duration::from_millis(500));
    assert_eq!(r.failure_threshold, 5);
    let l = s.liveness.as_ref().unwrap();
    assert_eq!(
        l.check,
        ProbeCheck::Http {
            port: s.health_port,
            path: "/live".into()
        }
    );
    assert_eq!(l.timeout, Duration::from_secs(3));
}

#[test]
fn notify_and_registered_probes() {
    let p = plan(
        "  sinks:
    - id: a
      command: a
      readiness: notify
    - id: b
      command: b
      readiness: {registered: true, period: 2s}
      liveness: {exec: {command: [/bin/true, x]}}
",
        &opts_with(&[]),
    );
    assert_eq!(
        get(&p, "a").readiness.as_ref().unwrap().check,
        ProbeCheck::Notify
    );
    let b = get(&p, "b");
    assert_eq!(b.readiness.as_ref().unwrap().check, ProbeCheck::Registered);
    assert_eq!(
        b.liveness.as_ref().unwrap().check,
        ProbeCheck::Exec {
            command: vec!["/bin/true".into(), "x".into()]
        }
    );
}

#[test]
fn legacy_health_check_and_health_port_become_an_http_readiness_probe() {
    let p = plan(
        "  sinks:
    - id: a
      command: a
      health_check: /healthz
      health_port: 18090
    - id: b
      command: b
      health_port: 18091
    - id: c
      command: c
      health_check: http://localhost:18092/ready
    - id: d
      command: d
",
        &opts_with(&[]),
    );
    let probe = |id: &str| get(&p, id).readiness.as_ref().map(|r| r.check.clone());
    assert_eq!(
        probe("a"),
        Some(ProbeCheck::Http {
            port: 18090,
            path: "/healthz".into()
        })
    );
    assert_eq!(
        probe("b"),
        Some(ProbeCheck::Http {
            port: 18091,
            path: "/health".into()
        })
    );
    assert_eq!(get(&p, "c").health_port, 18092);
    assert_eq!(
        probe("c"),
        Some(ProbeCheck::Http {
            port: 18092,
            path: "/ready".into()
        })
    );
    assert_eq!(probe("d"), None);
}

#[test]
fn bundled_images_run_bundled_programs_with_config_as_env() {
    let text = format!(
        "{HEAD}  sources:
    - id: lake
      image: ghcr.io/withobsrvr/stellar-live-source-datalake:v1.2
      config:
        network_passphrase: \"Test SDF Network ; September 2015\"
        start_ledger: 997
        storage-type: FS
    - id: lake2
      image: withobsrvr/stellar-live-source-datalake
      env: {{BACKEND: synthetic}}
      config: {{backend: rpc}}
    - id: reg
      type: stellar-live-source@v1.0.0
      config: {{rpc_endpoint: \"http://x\", end_ledger: 0}}
      env: {{RPC_ENDPOINT: \"http://y\"}}
  processors:
    - id: ttp
      image: ghcr.io/withobsrvr/ttp-processor:latest
      inputs: [lake]
  sinks:
    - id: out
      type: withobsrvr/ttp-sink@v0.1.0
      inputs: [ttp]
    - id: own
      image: ghcr.io/withobsrvr/ttp-processor:latest
      command: [/opt/ttp/bin/ttp-processor, --flag]
"
    );
    let p = parse_str(Path::new("p.yaml"), &text).unwrap();
    let notices: Vec<String> = p.notices.iter().map(|n| n.to_string()).collect();
    assert_eq!(notices.len(), 6, "{notices:#?}");
    assert_eq!(
        notices[0],
        "p.yaml:7:14: notice: image `ghcr.io/withobsrvr/stellar-live-source-datalake:v1.2` runs \
         the bundled `stellar-live-source` with BACKEND=datalake (unless `env` sets it): flowctl \
         runs processes, not containers"
    );
    assert!(notices[2].starts_with("p.yaml:17:13: notice: `type: stellar-live-source@v1.0.0` runs the bundled `stellar-live-source`"));
    assert!(notices[5].starts_with(
        "p.yaml:29:14: notice: `image: ghcr.io/withobsrvr/ttp-processor:latest` is ignored"
    ));

    let plan = resolve(&p, &opts_with(&[])).unwrap();
    let lake = get(&plan, "lake");
    assert_eq!(lake.command, "stellar-live-source");
    assert_eq!(lake.env["BACKEND"], "datalake");
    assert_eq!(
        lake.env["NETWORK_PASSPHRASE"],
        "Test SDF Network ; September 2015"
    );
    assert_eq!(lake.env["START_LEDGER"], "997");
    assert_eq!(lake.env["STORAGE_TYPE"], "FS");
    let lake2 = get(&plan, "lake2");
    assert_eq!(lake2.env["BACKEND"], "synthetic");
    let reg = get(&plan, "reg");
    assert_eq!(reg.command, "stellar-live-source");
    assert_eq!(reg.env["RPC_ENDPOINT"], "http://y");
    assert_eq!(reg.env["END_LEDGER"], "0");
    assert_eq!(get(&plan, "ttp").command, "ttp-processor");
    assert_eq!(get(&plan, "out").command, "ttp-sink");
    let own = get(&plan, "own");
    assert_eq!(own.command, "/opt/ttp/bin/ttp-processor");
    assert_eq!(own.args, ["--flag"]);
    // Bundled components are ready when their /health answers.
    assert_eq!(
        lake.readiness.as_ref().unwrap().check,
        ProbeCheck::Http {
            port: lake.health_port,
            path: "/health".into()
        }
    );
    assert!(own.readiness.is_none());
    // A bundled program named by `command` is probed the same way.
    let by_name = self::plan(
        "  sinks:\n    - id: s\n      command: ttp-sink\n    - id: o\n      command: ./ttp-sink\n",
        &opts_with(&[]),
    );
    let s = get(&by_name, "s");
    assert_eq!(
        s.readiness.as_ref().unwrap().check,
        ProbeCheck::Http {
            port: s.health_port,
            path: "/health".into()
        }
    );
    assert!(get(&by_name, "o").readiness.is_none());
}

#[test]
fn shared_config_applies_to_every_component_below_its_own() {
    let p = plan(
        "  config: {network: testnet, log_level: info}
  sinks:
    - id: a
      command: a
      config: {log_level: debug}
",
        &opts_with(&[]),
    );
    let a = get(&p, "a");
    assert_eq!(a.env["NETWORK"], "testnet");
    assert_eq!(a.env["LOG_LEVEL"], "debug");
}

#[test]
fn env_values_keep_their_yaml_text() {
    let p = plan(
        "  sinks:
    - id: a
      command: a
      env: {RATIO: 1.10, FLAG: yes, HEX: 0x1F, EMPTY: , QUOTED: \"007\"}
      config: {list: [1, two], map: {k: v}}
",
        &opts_with(&[]),
    );
    let env: BTreeMap<&str, &str> = get(&p, "a")
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env["RATIO"], "1.10");
    assert_eq!(env["FLAG"], "yes");
    assert_eq!(env["HEX"], "0x1F");
    assert_eq!(env["EMPTY"], "");
    assert_eq!(env["QUOTED"], "007");
    assert_eq!(env["LIST"], "[1,\"two\"]");
    assert_eq!(env["MAP"], "{\"k\":\"v\"}");
}

#[test]
fn working_dir_is_relative_to_the_pipeline_file_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let file = dir.path().join("p.yaml");
    let text = format!(
        "{HEAD}  sinks:\n    - id: a\n      command: a\n      working_dir: work\n    - id: b\n      command: b\n      working_dir: missing\n"
    );
    let p = parse_str(&file, &text).unwrap();
    let err = resolve(&p, &opts_with(&[])).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.len(), 1, "{msg}");
    assert!(msg.contains(":11:20: error: `working_dir`: "), "{msg}");
    assert!(msg.contains("missing is not a directory"), "{msg}");

    let text = format!("{HEAD}  sinks:\n    - id: a\n      command: a\n      working_dir: work\n");
    let p = parse_str(&file, &text).unwrap();
    let plan = resolve(&p, &opts_with(&[])).unwrap();
    assert_eq!(
        get(&plan, "a").working_dir.as_deref(),
        Some(dir.path().join("work").as_path())
    );
}

#[test]
fn unknown_user_is_an_error() {
    let err = try_plan(
        "  sinks:\n    - id: a\n      command: a\n      user: no-such-user-flowctl-test\n      group: root\n",
        &opts_with(&[]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:8:13: error: `user: no-such-user-flowctl-test`: no such user on this host"
    );
}

#[test]
fn nul_bytes_in_values_are_errors() {
    let err = try_plan(
        "  sinks:\n    - id: s\n      command: s\n      env: {A: \"x\\0y\"}\n",
        &opts_with(&[]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:8:16: error: `env.A` contains a NUL byte, which no process argument or variable can hold"
    );
}

const RANGED: &str = "  range: {from_ledger: 1000, to_ledger: 1999}
  sources:
    - id: src
      command: [x]
  processors:
    - id: proc
      command: [x]
      inputs: [src]
  sinks:
    - id: own
      command: [x]
      inputs: [proc]
      env: {START_LEDGER: \"1500\"}
";

#[test]
fn spec_range_reaches_sources_and_sinks_as_start_and_end_ledger_unless_they_set_their_own() {
    let p = plan(RANGED, &opts_with(&[]));
    assert_eq!(
        p.range,
        Some(flowctl::plan::LedgerRange {
            from: 1000,
            to: Some(1999)
        })
    );
    let src = get(&p, "src");
    assert_eq!(src.env["START_LEDGER"], "1000");
    assert_eq!(src.env["END_LEDGER"], "1999");
    assert!(!get(&p, "proc").env.contains_key("START_LEDGER"));
    let own = get(&p, "own");
    assert_eq!(
        own.env["START_LEDGER"], "1500",
        "the component's own env wins"
    );
    assert_eq!(own.env["END_LEDGER"], "1999");
}

#[test]
fn a_range_given_for_one_run_replaces_spec_range_and_an_open_end_follows_the_tip() {
    let opts = ResolveOptions {
        range: Some(flowctl::plan::LedgerRange { from: 5, to: None }),
        ..opts_with(&[])
    };
    let p = plan(RANGED, &opts);
    let src = get(&p, "src");
    assert_eq!(src.env["START_LEDGER"], "5");
    assert!(!src.env.contains_key("END_LEDGER"));
}

#[test]
fn a_component_contradicting_spec_range_is_a_notice_naming_both() {
    let text = format!("{HEAD}{RANGED}");
    let p = parse_str(Path::new("p.yaml"), &text).unwrap();
    let notices: Vec<String> = p.notices.notices().map(|n| n.to_string()).collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("`own` sets START_LEDGER=1500 but `spec.range.from_ledger` says 1000"),
        "{notices:?}"
    );
    assert!(notices[0].starts_with("p.yaml:17:27:"), "{notices:?}");
}

#[test]
fn a_range_ending_before_it_starts_or_without_a_start_is_an_error_with_its_position() {
    for (range, message) in [
        (
            "{from_ledger: 10, to_ledger: 9}",
            "is before `from_ledger` (10)",
        ),
        ("{to_ledger: 9}", "needs `from_ledger`"),
        ("{from_ledger: 0}", "between 1 and 4294967295"),
        ("{from_ledger: 1, until: 5}", "until"),
    ] {
        let text = format!("{HEAD}  range: {range}\n  sources:\n    - id: s\n      command: [x]\n");
        let d = parse_str(Path::new("p.yaml"), &text)
            .unwrap_err()
            .to_string();
        assert!(d.contains(message), "{range}: {d}");
        assert!(d.starts_with("p.yaml:5:"), "{range}: {d}");
    }
}

#[test]
fn start_timeout_defaults_to_90s_for_a_component_with_readiness_and_flowctl_toml_can_change_it() {
    let text = "  sources:
    - id: src
      command: src
      readiness: {tcp: {}}
    - id: quick
      command: quick
      readiness: {tcp: {}}
      start_timeout: 5s
    - id: patient
      command: patient
      readiness: {tcp: {}}
      start_timeout: 0s
    - id: plain
      command: plain
";
    let p = plan(text, &opts_with(&[]));
    assert_eq!(get(&p, "src").start_timeout, Some(Duration::from_secs(90)));
    assert_eq!(get(&p, "quick").start_timeout, Some(Duration::from_secs(5)));
    assert_eq!(get(&p, "patient").start_timeout, None, "0s waits for ever");
    assert_eq!(
        get(&p, "plain").start_timeout,
        None,
        "no readiness, nothing to wait for"
    );

    let config = flowctl::config::Config::parse(
        Path::new("flowctl.toml"),
        "[defaults]\nstart_timeout = \"3m\"\n",
    )
    .unwrap();
    let mut opts = opts_with(&[]);
    opts.defaults = config.spec_defaults();
    let p = plan(text, &opts);
    assert_eq!(get(&p, "src").start_timeout, Some(Duration::from_secs(180)));
    assert_eq!(get(&p, "quick").start_timeout, Some(Duration::from_secs(5)));
}

#[test]
fn heartbeat_interval_format_defaults_to_go_and_millis_is_per_component() {
    let p = plan(
        "  sources:
    - id: src
      command: src
  sinks:
    - id: consumer
      command: node
      inputs: [src]
      heartbeat_interval_format: millis
",
        &opts_with(&[]),
    );
    use flowctl::plan::HeartbeatFormat;
    assert_eq!(
        get(&p, "src").heartbeat_interval_format,
        HeartbeatFormat::Go
    );
    assert_eq!(
        get(&p, "consumer").heartbeat_interval_format,
        HeartbeatFormat::Millis
    );
}

#[test]
fn on_error_defaults_to_fail_and_dead_letter_is_per_component() {
    let p = plan(
        "  sources:
    - id: src
      command: src
      on_error: dead-letter
  sinks:
    - id: snk
      command: snk
      inputs: [src]
",
        &opts_with(&[]),
    );
    assert_eq!(get(&p, "src").on_error, flowctl::plan::OnError::DeadLetter);
    assert_eq!(get(&p, "snk").on_error, flowctl::plan::OnError::Fail);
}

#[test]
fn the_go_ecosystems_range_and_retry_policy_are_read_as_ours_with_a_notice_each() {
    let text = format!(
        "{HEAD}  range: {{start: 1000, end: 1999, chunkSize: 256, maxWorkers: 4}}
  retryPolicy: {{maxAttempts: 5, initialBackoff: 2s, maxBackoff: 30s, backoffMultiplier: 3}}
  sources:
    - id: src
      command: [x]
      restart: {{initial_delay: 1s}}
  sinks:
    - id: sink
      command: [x]
      inputs: [src]
      retryPolicy: {{maxAttempts: 2}}
"
    );
    let p = parse_str(Path::new("p.yaml"), &text).unwrap_or_else(|d| panic!("{d}"));
    let notices: Vec<String> = p.notices.notices().map(|n| n.to_string()).collect();
    for (alias, ours) in [
        ("spec.range.start", "spec.range.from_ledger"),
        ("spec.range.end", "spec.range.to_ledger"),
        ("spec.range.chunkSize", "spec.range.chunk_size"),
        ("spec.range.maxWorkers", "spec.range.max_workers"),
        ("spec.retryPolicy", "spec.retry_policy"),
        (
            "spec.retryPolicy.maxAttempts",
            "spec.retryPolicy.max_attempts",
        ),
        (
            "spec.retryPolicy.initialBackoff",
            "spec.retryPolicy.initial_delay",
        ),
        ("retryPolicy", "retry_policy"),
    ] {
        let wanted = format!("`{alias}` (the Go ecosystem's name) is read as `{ours}`");
        assert!(
            notices.iter().any(|n| n.contains(&wanted)),
            "{wanted} missing: {notices:#?}"
        );
    }
    assert!(notices.iter().all(|n| n.starts_with("p.yaml:")));
    let plan = resolve(&p, &opts_with(&[])).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        plan.range,
        Some(flowctl::plan::LedgerRange {
            from: 1000,
            to: Some(1999)
        })
    );
    assert_eq!(
        plan.chunking,
        flowctl::plan::Chunking {
            chunk_size: Some(256),
            max_workers: Some(4),
            max_attempts: Some(5),
        }
    );
    // The pipeline's policy is every component's, under what a component says itself.
    let src = &get(&plan, "src").restart;
    assert_eq!(src.policy, RestartPolicy::OnFailure);
    assert_eq!(src.start_limit_burst, 5);
    assert_eq!(
        src.initial_delay,
        Duration::from_secs(1),
        "its own restart wins"
    );
    assert_eq!(src.max_delay, Duration::from_secs(30));
    assert_eq!(src.multiplier, 3.0);
    let sink = &get(&plan, "sink").restart;
    assert_eq!(sink.policy, RestartPolicy::OnFailure);
    assert_eq!(sink.start_limit_burst, 2);
    assert_eq!(sink.initial_delay, Duration::from_secs(2));
    // Attempts of the whole run, not of a minute.
    assert_eq!(sink.start_limit_interval, Duration::from_secs(86400 * 365));
}

#[test]
fn a_field_in_both_spellings_or_a_retry_policy_beside_restart_is_an_error_naming_both() {
    for (body, message) in [
        (
            "  range: {from_ledger: 5, start: 6}\n",
            "`spec.range.from_ledger` and `spec.range.start` both set `spec.range.from_ledger`",
        ),
        (
            "  range: {start: 9, end: 8}\n",
            "`spec.range.end` (8) is before `start` (9)",
        ),
        (
            "  range: {from_ledger: 5, chunkSize: 0}\n",
            "`spec.range.chunkSize` must be between 1 and",
        ),
        (
            "  retryPolicy: {maxDelay: 1s, maxBackoff: 2s}\n",
            "`spec.retryPolicy.maxDelay` and `spec.retryPolicy.maxBackoff` both set",
        ),
        (
            "  retry_policy: {max_attempts: 2}\n  retryPolicy: {maxAttempts: 2}\n",
            "`spec.retry_policy` and `spec.retryPolicy` both set",
        ),
        (
            "  retryPolicy: {backoffMultiplier: 0.5}\n",
            "`spec.retryPolicy.backoffMultiplier` must be at least 1",
        ),
        (
            "  retryPolicy: {initialDelay: 10s, maxDelay: 1s}\n",
            "its maximum delay is shorter than its initial delay",
        ),
        ("  retryPolicy: {maxAttempt: 2}\n", "maxAttempts"),
    ] {
        let text = format!("{HEAD}{body}  sources:\n    - id: s\n      command: [x]\n");
        let d = parse_str(Path::new("p.yaml"), &text)
            .unwrap_err()
            .to_string();
        assert!(d.contains(message), "{body}: {d}");
        assert!(
            d.starts_with("p.yaml:5:") || d.starts_with("p.yaml:6:"),
            "{body}: {d}"
        );
    }
    let text = format!(
        "{HEAD}  sources:\n    - id: s\n      command: [x]\n      restart_policy: always\n      retryPolicy: {{maxAttempts: 2}}\n"
    );
    let d = parse_str(Path::new("p.yaml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        d.contains("`restart_policy` and `retryPolicy` both say how `s` is restarted: keep one"),
        "{d}"
    );
}

#[test]
fn the_obsrvr_stellar_components_images_run_the_bundled_arrow_programs() {
    let text = format!(
        "{HEAD}  sources:
    - id: src
      image: ghcr.io/withobsrvr/stellar-arrow-source:latest
  processors:
    - id: ttp
      image: withobsrvr/ttp-arrow-processor:v2
      inputs: [src]
  sinks:
    - id: out
      type: withobsrvr/arrow-analytics-sink@v1.0.0
      inputs: [ttp]
"
    );
    let p = parse_str(Path::new("p.yaml"), &text).unwrap_or_else(|d| panic!("{d}"));
    let commands: Vec<&str> = p
        .components
        .iter()
        .map(|c| c.command.value.as_str())
        .collect();
    assert_eq!(
        commands,
        [
            "stellar-arrow-source",
            "ttp-arrow-processor",
            "arrow-analytics-sink"
        ]
    );
    let plan = resolve(&p, &opts_with(&[])).unwrap_or_else(|d| panic!("{d}"));
    // The processor and the sink find their upstream's Flight through the injected names.
    let src_port = get(&plan, "src").ports[0].port;
    assert_eq!(
        get(&plan, "ttp").env["SOURCE_SERVICE_ADDRESS"],
        format!("127.0.0.1:{src_port}")
    );
    let ttp_port = get(&plan, "ttp").ports[0].port;
    assert_eq!(
        get(&plan, "out").env["TTP_SERVICE_ADDRESS"],
        format!("127.0.0.1:{ttp_port}")
    );
}
