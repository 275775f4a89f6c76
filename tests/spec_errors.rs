//! Every validation error names its line and column, and every error of a file is reported.

use std::path::Path;

use flowctl::spec::{parse_str, Diagnostics};

/// Four lines every case starts with; a case's own text begins on line 5.
const HEAD: &str = "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: t}\nspec:\n";

fn diagnose(text: &str) -> Diagnostics {
    match parse_str(Path::new("p.yaml"), text) {
        Ok(p) => panic!("expected errors, the pipeline was accepted:\n{text}\n{p:#?}"),
        Err(d) => d,
    }
}

/// Errors a case must produce: (line, column, a piece of the message).
type Expected = &'static [(u32, u32, &'static str)];

/// Asserts the errors are exactly `expected`: (line, column, a piece of the message).
fn assert_errors(name: &str, text: &str, expected: &[(u32, u32, &str)]) {
    let diags = diagnose(text);
    let got: Vec<_> = diags.errors().collect();
    let shown = diags.to_string();
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: expected {} errors, got:\n{shown}",
        expected.len()
    );
    for (d, (line, col, piece)) in got.iter().zip(expected) {
        let pos = d.pos.expect("every error has a position");
        assert_eq!(
            (pos.line, pos.col),
            (*line, *col),
            "{name}: wrong position for `{}`",
            d.message
        );
        assert!(
            d.message.contains(piece),
            "{name}: `{}` does not contain `{piece}`",
            d.message
        );
        let text = d.to_string();
        assert!(
            text.starts_with(&format!("p.yaml:{line}:{col}: error: ")),
            "{name}: {text}"
        );
    }
}

#[test]
fn every_validation_error_has_line_and_column() {
    #[rustfmt::skip]
    let cases: &[(&str, String, Expected)] = &[
        ("unknown component key with hint",
         format!("{HEAD}  sources:\n    - id: a\n      comand: [x]\n      command: [x]\n"),
         &[(7, 7, "unknown key `comand` in source `a`; did you mean `command`?")]),
        ("unknown top-level key",
         format!("{HEAD}  sources: []\nmetdata: {{}}\n"),
         &[(6, 1, "did you mean `metadata`?")]),
        ("unsupported apiVersion",
         "apiVersion: flowctl/v2\nkind: Pipeline\nmetadata: {name: t}\nspec:\n  sinks: [{id: a, command: x}]\n".into(),
         &[(1, 13, "write `apiVersion: flowctl/v1`")]),
        ("wrong kind",
         "apiVersion: flowctl/v1\nkind: Deployment\nmetadata: {name: t}\nspec:\n  sinks: [{id: a, command: x}]\n".into(),
         &[(2, 7, "`kind: Deployment` is not supported")]),
        ("missing metadata name",
         "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  namespace: x\nspec:\n  sinks: [{id: a, command: x}]\n".into(),
         &[(4, 3, "missing `metadata.name`")]),
        ("container driver",
         format!("{HEAD}  driver: docker\n  sinks: [{{id: a, command: x}}]\n"),
         &[(5, 11, "flowctl runs processes, not containers")]),
        ("unknown driver with hint",
         format!("{HEAD}  driver: proces\n  sinks: [{{id: a, command: x}}]\n"),
         &[(5, 11, "did you mean `process`?")]),
        ("image without command",
         format!("{HEAD}  sources:\n    - id: a\n      image: example/my-source:1.2\n"),
         &[(7, 14, "flowctl runs processes, not containers")]),
        ("registry type not bundled",
         format!("{HEAD}  sinks:\n    - id: a\n      type: postgres-consumer@v1.0.0\n"),
         &[(7, 13, "`postgres-consumer` is not bundled")]),
        ("no command at all",
         format!("{HEAD}  sinks:\n    - id: a\n      type: sink\n"),
         &[(6, 11, "has no `command`")]),
        ("volumes",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      volumes: [{{name: d}}]\n"),
         &[(8, 7, "`volumes` mount host paths into a container")]),
        ("nested pipelines",
         format!("{HEAD}  sinks: [{{id: a, command: x}}]\n  pipelines: []\n"),
         &[(6, 3, "`spec.pipelines` runs whole pipelines as container images")]),
        ("replicas",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      replicas: 2\n"),
         &[(8, 17, "`replicas: 2`: flowctl runs one process per component")]),
        ("restart policy with hint",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      restart_policy: on_failure\n"),
         &[(8, 23, "did you mean `on-failure`?")]),
        ("on_error with hint",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      on_error: dead_letter\n"),
         &[(8, 17, "`on_error: dead_letter` is not known (known: fail, dead-letter); did you mean `dead-letter`?")]),
        ("heartbeat interval format with hint",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      heartbeat_interval_format: milis\n"),
         &[(8, 34, "`heartbeat_interval_format: milis` is not known (known: `go` for a Go duration such as `10s`, `millis` for milliseconds such as `10000`); did you mean `millis`?")]),
        ("restart policy twice",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      restart_policy: always\n      restart: {{policy: always}}\n"),
         &[(9, 25, "the restart policy is set twice")]),
        ("duration without unit",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      stop:\n        timeout: 10\n"),
         &[(9, 18, "`10` has no unit")]),
        ("bad memory and cpu",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      resources:\n        limits: {{memory: 1GB, cpu: lots}}\n"),
         &[(9, 26, "`1GB` is not a memory size"), (9, 36, "`lots` is not a CPU amount")]),
        ("port out of range",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      ports:\n        - hostPort: 70000\n"),
         &[(9, 21, "between 0 and 65535")]),
        ("port protocol",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      ports:\n        - {{name: w, protocol: sctp}}\n"),
         &[(9, 31, "write `tcp` or `udp`")]),
        ("list expected",
         format!("{HEAD}  sinks:\n    - id: a\n      command: x\n      inputs: b\n"),
         &[(8, 15, "`inputs` must be a list, found a string: write `inputs: [\"b\"]`")]),
        ("duplicate id",
         format!("{HEAD}  sources:\n    - id: a\n      command: x\n  sinks:\n    - id: a\n      command: y\n"),
         &[(9, 11, "component id `a` is used twice (first at 6:11)")]),
        ("unknown input with hint",
         format!("{HEAD}  sources:\n    - id: source\n      command: x\n  sinks:\n    - id: b\n      command: y\n      inputs: [sourse]\n"),
         &[(11, 16, "`inputs` names `sourse`, which is not a component of this pipeline; did you mean `source`?")]),
        ("unknown depends_on",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      depends_on: [db]\n"),
         &[(8, 20, "`depends_on` names `db`")]),
        ("source with inputs",
         format!("{HEAD}  sources:\n    - id: a\n      command: x\n    - id: b\n      command: x\n      inputs: [a]\n"),
         &[(10, 16, "sources produce data and read from no component")]),
        ("self dependency",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      depends_on: [b]\n"),
         &[(8, 20, "names the component itself")]),
        ("cycle",
         format!("{HEAD}  processors:\n    - id: p\n      command: x\n      inputs: [q]\n    - id: q\n      command: x\n      inputs: [r]\n    - id: r\n      command: x\n      inputs: [p]\n"),
         &[(8, 16, "dependency cycle: p → q → r → p")]),
        ("reference to an unknown port",
         format!("{HEAD}  sources:\n    - id: src\n      command: x\n  sinks:\n    - id: b\n      command: y\n      env:\n        A: \"${{src.ports.http}}\"\n"),
         &[(12, 12, "`src` has no port named `http` (it has grpc and health)")]),
        ("reference to an unknown component",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      args: [\"--to=${{srcc.address}}\"]\n"),
         &[(8, 14, "names `srcc`, which is not a component")]),
        ("malformed reference",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      env: {{A: \"${{x\"}}\n"),
         &[(8, 16, "without a closing `}`")]),
        ("duplicate key",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      command: z\n"),
         &[(8, 7, "duplicate key `command` in sink `b` (first set at 7:7)")]),
        ("probe with two checks",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      readiness:\n        tcp: {{port: 1}}\n        http: {{path: /h}}\n"),
         &[(10, 9, "more than one check (tcp, http)")]),
        ("probe port name",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      readiness: {{grpc: {{port: api}}}}\n"),
         &[(8, 32, "`b` has no port named `api`")]),
        ("bad health_check",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      health_check: health\n"),
         &[(8, 21, "must be a path such as `/health`")]),
        ("bad signal",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      stop: {{signal: SIGNOPE}}\n"),
         &[(8, 22, "`SIGNOPE` is not a signal")]),
        ("bad id",
         format!("{HEAD}  sinks:\n    - id: b.c\n      command: y\n"),
         &[(6, 11, "may only contain letters, digits")]),
        ("duplicate env key",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      env: {{A: 1, A: 2}}\n"),
         &[(8, 19, "duplicate key `A` in `env` (first set at 8:13)")]),
        ("config not a mapping",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      config: [x]\n"),
         &[(8, 15, "`config` must be a mapping, found a list")]),
        ("unknown probe word",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      liveness: alive\n"),
         &[(8, 17, "`liveness: alive`: write `notify`, `registered`, or a mapping")]),
        ("health_check port differs from health_port",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      health_port: 80\n      health_check: http://localhost:81/h\n"),
         &[(9, 21, "`health_check` uses port 81 but `health_port` is 80")]),
        ("secret without env",
         format!("{HEAD}  sinks:\n    - id: b\n      command: y\n      secrets:\n        - {{name: pg, host_path: /p}}\n"),
         &[(9, 11, "secret is missing `env`")]),
        ("no components",
         format!("{HEAD}  description: nothing\n"),
         &[(5, 3, "the pipeline has no components")]),
        ("two YAML documents",
         format!("{HEAD}  sinks: [{{id: a, command: x}}]\n---\nkind: Pipeline\n"),
         &[(7, 1, "one YAML document")]),
        ("YAML syntax",
         format!("{HEAD}  sinks:\n    - id: b\n     command: y\n"),
         &[(7, 6, "invalid YAML")]),
    ];
    let mut failed = Vec::new();
    for (name, text, expected) in cases {
        if let Err(e) = std::panic::catch_unwind(|| assert_errors(name, text, expected)) {
            failed.push(format!("{name}: {e:?}"));
        }
    }
    assert!(failed.is_empty(), "{} cases failed", failed.len());
}

#[test]
fn every_container_driver_is_refused_with_how_to_write_a_command() {
    for driver in ["docker", "container", "kubernetes", "k8s", "nomad"] {
        let text = format!("{HEAD}  driver: {driver}\n  sinks: [{{id: a, command: x}}]\n");
        let d = diagnose(&text);
        let msg = &d.errors().next().unwrap().message;
        assert!(
            msg.contains("flowctl runs processes, not containers"),
            "{msg}"
        );
        assert!(msg.contains("command: ["), "{msg}");
    }
    for driver in ["process", "local", "dag"] {
        let text = format!("{HEAD}  driver: {driver}\n  sinks: [{{id: a, command: x}}]\n");
        parse_str(Path::new("p.yaml"), &text).unwrap();
    }
}

#[test]
fn all_errors_of_a_file_are_reported_in_file_order() {
    let text = format!(
        "{HEAD}  driver: nomad\n  sources:\n    - id: a\n      image: x/y\n      replicas: 0\n  \
         sinks:\n    - id: b\n      command: z\n      inputs: [c]\n      restart_policy: sometimes\n"
    );
    let d = diagnose(&text);
    let lines: Vec<u32> = d.errors().map(|e| e.pos.unwrap().line).collect();
    assert_eq!(lines, [5, 8, 9, 13, 14], "{d}");
    assert_eq!(d.to_string().lines().count(), 5);
}

#[test]
fn unknown_key_without_a_close_match_lists_the_known_keys() {
    let text = format!(
        "{HEAD}  sinks:\n    - id: a\n      command: x\n      ports:\n        - frobnicate: 1\n"
    );
    let d = diagnose(&text);
    let msg = &d.errors().next().unwrap().message;
    assert!(
        msg.contains("known keys: name, containerPort, hostPort, protocol"),
        "{msg}"
    );
}

#[test]
fn empty_file_is_an_error_with_a_position() {
    let d = diagnose("# nothing\n");
    assert_eq!(d.to_string(), "p.yaml:1:1: error: the file is empty: a pipeline starts with `apiVersion: flowctl/v1` and `kind: Pipeline`");
}

#[test]
fn a_duration_of_u64_max_seconds_is_refused_at_validate_with_its_position() {
    let max = "18446744073709551615s";
    for (field, text) in [
        (
            "restart.initial_delay",
            format!("      restart: {{initial_delay: {max}}}\n"),
        ),
        (
            "restart.max_delay",
            format!("      restart: {{max_delay: {max}}}\n"),
        ),
        ("stop.timeout", format!("      stop: {{timeout: {max}}}\n")),
    ] {
        let text = format!("{HEAD}  sources:\n    - id: a\n      command: [x]\n{text}");
        let diags = diagnose(&text);
        let shown = diags.to_string();
        assert!(shown.contains(&format!("`{field}`")), "{field}: {shown}");
        assert!(shown.contains("allowed from 0 to 365d"), "{field}: {shown}");
        assert!(shown.starts_with("p.yaml:8:"), "{field}: {shown}");
    }
}

#[test]
fn counts_past_a_million_are_refused_at_validate_with_their_position() {
    for (field, text) in [
        (
            "restart.start_limit_burst",
            "      restart: {start_limit_burst: 4294967295}\n",
        ),
        (
            "readiness.failure_threshold",
            "      readiness: {tcp: {port: 1}, failure_threshold: 1000001}\n",
        ),
        (
            "readiness.success_threshold",
            "      readiness: {tcp: {port: 1}, success_threshold: 4294967296}\n",
        ),
    ] {
        let text = format!("{HEAD}  sources:\n    - id: a\n      command: [x]\n{text}");
        let shown = diagnose(&text).to_string();
        assert!(shown.contains(&format!("`{field}`")), "{field}: {shown}");
        assert!(shown.contains("between 1 and 1000000"), "{field}: {shown}");
        assert!(shown.starts_with("p.yaml:8:"), "{field}: {shown}");
    }
}
