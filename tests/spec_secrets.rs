//! `secrets`: a variable from a file only its owner can read.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flowctl::spec::{parse_str, resolve, ResolveOptions};

fn pipeline_with_secret(host_path: &str, extra: &str) -> String {
    format!(
        "apiVersion: flowctl/v1
kind: Pipeline
metadata: {{name: t}}
spec:
  sinks:
    - id: db
      command: ttp-sink
      secrets:
        - name: pg
          host_path: {host_path}
          env: PGPASSWORD
{extra}"
    )
}

fn write(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn world_readable_secret_is_refused_naming_the_file_and_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pg.pass");
    write(&secret, "hunter2\n", 0o644);
    let file = dir.path().join("p.yaml");
    let p = parse_str(&file, &pipeline_with_secret("pg.pass", "")).unwrap();
    let err = resolve(&p, &ResolveOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:10:22: error: secret `pg`: secret file {} is readable by everyone (mode 0644): \
             run `chmod o-rw {}`",
            file.display(),
            secret.display(),
            secret.display()
        )
    );

    write(&secret, "hunter2\n", 0o602);
    let err = resolve(&p, &ResolveOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("is writable by everyone (mode 0602)"),
        "{err}"
    );
}

#[test]
fn owner_only_secret_sets_the_variable_without_its_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pg.pass");
    write(&secret, "hunter2\n", 0o600);
    let p = parse_str(
        &dir.path().join("p.yaml"),
        &pipeline_with_secret("pg.pass", ""),
    )
    .unwrap();
    let plan = resolve(&p, &ResolveOptions::default()).unwrap();
    assert_eq!(plan.components[0].env["PGPASSWORD"], "hunter2");

    // Only one newline goes: a value may end in a newline of its own.
    write(&secret, "two\nlines\n\n", 0o640);
    let plan = resolve(&p, &ResolveOptions::default()).unwrap();
    assert_eq!(plan.components[0].env["PGPASSWORD"], "two\nlines\n");

    // Absolute paths are taken as they are.
    let abs = pipeline_with_secret(&secret.display().to_string(), "");
    let p = parse_str(Path::new("/elsewhere/p.yaml"), &abs).unwrap();
    let plan = resolve(&p, &ResolveOptions::default()).unwrap();
    assert_eq!(plan.components[0].env["PGPASSWORD"], "two\nlines\n");
}

#[test]
fn missing_secret_is_an_error_unless_not_required() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    let p = parse_str(&file, &pipeline_with_secret("absent", "")).unwrap();
    let err = resolve(&p, &ResolveOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains(":10:22: error: secret `pg`: cannot read secret file "),
        "{err}"
    );
    assert!(err.to_string().contains("No such file"), "{err}");

    let optional = pipeline_with_secret("absent", "          required: false\n");
    let p = parse_str(&file, &optional).unwrap();
    let plan = resolve(&p, &ResolveOptions::default()).unwrap();
    assert!(!plan.components[0].env.contains_key("PGPASSWORD"));
}

#[test]
fn a_variable_set_by_env_and_by_a_secret_is_an_error() {
    let text = pipeline_with_secret("pg.pass", "      env: {PGPASSWORD: visible}\n");
    let err = parse_str(Path::new("p.yaml"), &text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:9:11: error: `PGPASSWORD` is set both in `env` and by secret `pg`: keep one"
    );
}

#[test]
fn container_only_secret_fields_are_refused_with_the_reason() {
    let text = pipeline_with_secret("pg.pass", "");
    let text = text.replace(
        "          env: PGPASSWORD\n",
        "          env: PGPASSWORD\n          container_path: /run/secrets/pg\n          mode: \"0400\"\n",
    );
    let err = parse_str(Path::new("p.yaml"), &text).unwrap_err();
    let lines: Vec<String> = err.iter().map(|d| d.to_string()).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0]
        .starts_with("p.yaml:12:11: error: `container_path` mounts the secret into a container"));
    assert!(lines[1].starts_with("p.yaml:13:11: error: `mode` is a container mount option"));
}
