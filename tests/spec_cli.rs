//! `flowctl validate`, run as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spec")
        .join(name)
        .display()
        .to_string()
}

fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("validate")
        .args(args)
        .env_remove("FLOWCTL_TEST_UNSET_PASSWORD")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn valid_file_prints_ok_and_exits_0() {
    let f = fixture("valid.yaml");
    let out = validate(&[&f]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{f}: ok\n"));
    // The bundled component standing in for the image is announced.
    assert_eq!(
        text(&out.stderr),
        format!(
            "{f}:8:14: notice: image `ghcr.io/withobsrvr/stellar-live-source:latest` runs the \
             bundled `stellar-live-source`: flowctl runs processes, not containers\n"
        )
    );
}

#[test]
fn invalid_file_prints_every_error_with_line_and_column_and_exits_1() {
    let f = fixture("invalid.yaml");
    let out = validate(&[&f]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let expected = [
        (6, 11, "`driver: kubernetes`: flowctl runs processes, not containers"),
        (9, 14, "`image: example/source:1.0`: flowctl runs processes, not containers"),
        (17, 16, "`inputs` names `procesor`, which is not a component of this pipeline; did you mean `processor`?"),
        (18, 23, "`restart_policy: sometimes` is not a restart policy"),
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, (l, c, msg)) in lines.iter().zip(expected) {
        let prefix = format!("{f}:{l}:{c}: error: {msg}");
        assert!(line.starts_with(&prefix), "{line}\n  expected: {prefix}");
    }
}

#[test]
fn several_files_report_each_and_fail_if_any_fails() {
    let (good, bad) = (fixture("valid.yaml"), fixture("invalid.yaml"));
    let missing = fixture("does-not-exist.yaml");
    let out = validate(&[&good, &bad, &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), format!("{good}: ok\n"));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{bad}:6:11: error: ")), "{err}");
    assert!(
        err.contains(&format!(
            "{missing}: error: cannot read the pipeline file: No such file or directory"
        )),
        "{err}"
    );
}

#[test]
fn unset_variable_fails_validation_unless_no_resolve() {
    let f = fixture("needs-variable.yaml");
    let out = validate(&[&f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with(&format!(
        "{f}:10:23: error: `env.DATABASE_URL`: `${{FLOWCTL_TEST_UNSET_PASSWORD}}` is not set"
    )));

    let out = validate(&["--no-resolve", &f]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{f}: ok\n"));

    let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .args(["validate", &f])
        .env("FLOWCTL_TEST_UNSET_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn seed_examples_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let files: Vec<String> = [
        "seed-stellar-token-pipeline.yaml",
        "seed-ttp-processing-pipeline.yaml",
    ]
    .iter()
    .map(|f| root.join(f).display().to_string())
    .collect();
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let out = validate(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}: ok\n{}: ok\n", files[0], files[1])
    );
}

#[test]
fn no_file_is_a_usage_error() {
    let out = validate(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("FILE"));
}

#[test]
fn command_that_is_a_directory_missing_or_not_executable_is_an_error_naming_the_paths_searched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = dir.path().join("p.yaml");
    std::fs::write(
        &f,
        format!(
            "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: p}}\nspec:\n  sources:\n    \
             - id: dir\n      command: {}\n    \
             - id: missing\n      command: no-such-program-anywhere\n    \
             - id: plain\n      command: {}\n",
            dir.path().display(),
            plain.display()
        ),
    )
    .unwrap();
    let out = validate(&[f.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let f = f.display();
    assert!(
        stderr.contains(&format!("{f}:7:16: error: component `dir`: cannot run")),
        "{stderr}"
    );
    assert!(stderr.contains("Is a directory"), "{stderr}");
    let exe_dir = Path::new(env!("CARGO_BIN_EXE_flowctl")).parent().unwrap();
    assert!(
        stderr.contains(&format!(
            "{f}:9:16: error: component `missing`: cannot run `no-such-program-anywhere`"
        )) && stderr.contains(&format!(
            "(searched {}:/usr/lib/flowctl:",
            exe_dir.display()
        )),
        "{stderr}"
    );
    // Root may read anything but still needs an execute bit.
    assert!(
        stderr.contains(&format!("{f}:11:16: error: component `plain`: cannot run"))
            && stderr.contains("Permission denied"),
        "{stderr}"
    );
}
