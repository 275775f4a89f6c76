//! `flowctl.v1.DeadLetterService` on a real registry over real sockets: who may report,
//! read, resolve and purge dead letters, and what the store makes of repeated failures.

mod registry_support;

use flowctl::registry::client::{connect, ClientOptions, RegistryClient};
use flowctl::registry::{Registry, RegistryConfig, ServerOptions, SupervisedComponent};
use flowctl_proto::flowctl::v1::{
    DeadLetterStatus, GetDeadLetterRequest, ListDeadLettersRequest, PurgeDeadLettersRequest,
    ReportDeadLetterRequest, ResolveDeadLetterRequest,
};
use tonic::Code;

async fn client(endpoint: &str, token: Option<&str>) -> RegistryClient {
    let mut options = ClientOptions::from_env(endpoint);
    options.token = token.map(str::to_string);
    connect(&options).await.expect("connect")
}

fn report(pipeline: &str, component: &str, ledger: u32) -> ReportDeadLetterRequest {
    ReportDeadLetterRequest {
        pipeline: pipeline.into(),
        component: component.into(),
        ledger,
        reason: format!("ledger {ledger}: cannot decode LedgerCloseMeta"),
        payload: b"garbage".to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_standalone_registry_takes_reports_from_local_callers_but_resolves_and_purges_only_for_the_operator(
) {
    let server = registry_support::start(RegistryConfig::default()).await;
    let mut tcp = client(&server.endpoint(), None).await;
    let first = tcp
        .dlq
        .report(report("ttp", "source", 998))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let again = tcp
        .dlq
        .report(report("ttp", "source", 998))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let letter = again.letter.unwrap();
    assert_eq!(letter.id, first.letter.unwrap().id);
    assert_eq!(letter.attempts, 2);

    // Reads are open: the listing has no payload, Get has it.
    let listed = tcp
        .dlq
        .list(ListDeadLettersRequest {
            pipeline: "ttp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.letters.len(), 1);
    assert!(listed.letters[0].payload.is_empty());
    assert!(!listed.truncated);
    let got = tcp
        .dlq
        .get(GetDeadLetterRequest {
            id: letter.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.payload, b"garbage");
    assert_eq!(got.ledger, 998);
    let missing = tcp
        .dlq
        .get(GetDeadLetterRequest { id: "777".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing}");

    // A report must say whose letter it is.
    let nameless = tcp.dlq.report(report("", "", 1)).await.unwrap_err();
    assert_eq!(nameless.code(), Code::InvalidArgument, "{nameless}");

    let resolve = tcp
        .dlq
        .resolve(ResolveDeadLetterRequest {
            id: letter.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(resolve.code(), Code::PermissionDenied, "{resolve}");
    assert!(resolve.message().contains("Resolve"), "{resolve}");
    let purge = tcp
        .dlq
        .purge(PurgeDeadLettersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(purge.code(), Code::PermissionDenied, "{purge}");

    let mut unix = client(&server.operator_endpoint(), None).await;
    let resolved = unix
        .dlq
        .resolve(ResolveDeadLetterRequest { id: letter.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.status(), DeadLetterStatus::Resolved);
    let purged = unix
        .dlq
        .purge(PurgeDeadLettersRequest {
            resolved_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.purged, 1);
    server.stop().await;
}

#[tokio::test]
async fn in_a_supervisor_a_component_reports_only_for_itself_and_strangers_not_at_all() {
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let server = registry_support::serve(
        registry.clone(),
        Some(runtime.path()),
        ServerOptions {
            token: Some("op-s3cret".into()),
            in_supervisor: true,
            ..Default::default()
        },
    )
    .await;
    // Not supervised (yet): a stranger on loopback.
    let mut stranger = client(&server.endpoint(), None).await;
    let err = stranger
        .dlq
        .report(report("ttp", "source", 5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("this supervisor started"), "{err}");
    // The operator's token may report for anyone.
    let mut operator = client(&server.endpoint(), Some("op-s3cret")).await;
    operator.dlq.report(report("ttp", "sink", 5)).await.unwrap();

    // This test process, taken for the supervisor's child `ttp/source`.
    registry.process_started(
        std::process::id(),
        SupervisedComponent {
            pipeline: "ttp".into(),
            component: "source".into(),
        },
    );
    let mut own = client(&server.endpoint(), None).await;
    // Leaving pipeline and component out reports for its own.
    let mine = own
        .dlq
        .report(report("", "", 998))
        .await
        .unwrap()
        .into_inner()
        .letter
        .unwrap();
    assert_eq!(
        (mine.pipeline.as_str(), mine.component.as_str()),
        ("ttp", "source")
    );
    let err = own
        .dlq
        .report(report("ttp", "ttp-processor", 998))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("ttp/source"), "{err}");
    let err = own
        .dlq
        .resolve(ResolveDeadLetterRequest {
            id: mine.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // It may read.
    let all = own
        .dlq
        .list(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .letters;
    assert_eq!(all.len(), 2);
    registry.process_exited(std::process::id());
    server.stop().await;
}

/// `flowctl dlq ARGS` against `endpoint`.
fn dlq(endpoint: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("dlq")
        .args(args)
        .args(["--endpoint", endpoint])
        .env_remove("FLOWCTL_TOKEN")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_ls_shows_open_letters_and_purge_over_the_socket_removes_resolved_then_all() {
    let server = registry_support::start(RegistryConfig::default()).await;
    let socket = server.operator_endpoint();
    let mut c = client(&socket, None).await;
    let a = c
        .dlq
        .report(report("ttp", "source", 998))
        .await
        .unwrap()
        .into_inner()
        .letter
        .unwrap();
    c.dlq.report(report("other", "ttp", 5)).await.unwrap();
    c.dlq
        .resolve(ResolveDeadLetterRequest { id: a.id.clone() })
        .await
        .unwrap();
    c.dlq.report(report("ttp", "source", 999)).await.unwrap();

    let ls = dlq(&socket, &["ls", "--pipeline", "ttp", "-o", "json"]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let open: Vec<serde_json::Value> = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["ledger"], 999);
    let all = dlq(&socket, &["ls", "--all"]);
    let table = String::from_utf8_lossy(&all.stdout);
    assert!(
        table.contains("resolved") && table.contains("other"),
        "{table}"
    );
    assert_eq!(
        table.lines().count(),
        4,
        "a header and three letters:\n{table}"
    );

    let missing = dlq(&socket, &["show", "4242"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("4242"));

    // Purging needs the operator: over loopback TCP a stranger is refused.
    let refused = dlq(&server.endpoint(), &["purge"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Purge"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let resolved = dlq(&socket, &["purge", "--resolved"]);
    assert_eq!(
        String::from_utf8_lossy(&resolved.stdout).trim(),
        "purged 1 dead letter(s)"
    );
    let rest = dlq(&socket, &["purge", "-o", "json"]);
    assert_eq!(
        String::from_utf8_lossy(&rest.stdout).trim(),
        r#"{"purged":2}"#
    );
    server.stop().await;
}

#[tokio::test]
async fn the_sdk_records_a_dead_letter_cuts_a_large_payload_and_counts_it() {
    let server = registry_support::start(RegistryConfig::default()).await;
    let endpoint = server.endpoint();
    let config = flowctl_sdk::Config::from_lookup("", |k| match k {
        "ENABLE_FLOWCTL" => Some("true".into()),
        "FLOWCTL_ENDPOINT" => Some(endpoint.clone()),
        "FLOWCTL_COMPONENT_ID" => Some("ttp-processor".into()),
        _ => None,
    })
    .unwrap();
    let letters = flowctl_sdk::DeadLetters::new(&config).for_pipeline("ttp");
    let big = vec![7u8; flowctl_sdk::dead_letters::MAX_PAYLOAD_BYTES + 100];
    letters
        .report(998, "ledger 998: not a valid LedgerCloseMeta", &big)
        .await
        .unwrap();
    let mut c = client(&server.endpoint(), None).await;
    let cut = c
        .dlq
        .get(GetDeadLetterRequest { id: "1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cut.payload.len(),
        flowctl_sdk::dead_letters::MAX_PAYLOAD_BYTES
    );
    assert!(cut.payload_truncated);
    assert_eq!(cut.payload_size, big.len() as u64);
    letters.report(998, "again", b"x").await.unwrap();
    // Each report counts; the store holds one letter with two attempts.
    assert_eq!(letters.total(), 2);
    let listed = c
        .dlq
        .list(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .letters;
    assert_eq!(listed.len(), 1);
    let l = &listed[0];
    assert_eq!(
        (
            l.pipeline.as_str(),
            l.component.as_str(),
            l.ledger,
            l.attempts
        ),
        ("ttp", "ttp-processor", 998, 2)
    );
    assert_eq!(l.reason, "again");
    let first = c
        .dlq
        .get(GetDeadLetterRequest { id: l.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.payload, b"x");
    server.stop().await;

    // A registry that is gone: the caller is told, nothing is counted.
    let err = letters.report(999, "x", b"").await.unwrap_err();
    assert!(
        err.to_string().contains("cannot record a dead letter"),
        "{err}"
    );
    assert_eq!(letters.total(), 2);
}
