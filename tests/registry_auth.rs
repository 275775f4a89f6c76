//! Who may talk to the registry: off loopback it needs a bearer token or mutual TLS, and both
//! really let the right client in and keep the wrong one out.

mod registry_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flowctl::registry::client::{connect, ClientOptions, ClientTls};
use flowctl::registry::{Registry, RegistryConfig, ServerOptions, TlsFiles};
use flowctl_proto::flowctl::{ServiceInfo, ServiceType};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use registry_support::{client_with, serve};
use tonic::Code;

fn info(id: &str) -> ServiceInfo {
    ServiceInfo {
        component_id: id.into(),
        service_type: ServiceType::Sink as i32,
        ..Default::default()
    }
}

#[test]
fn server_refuses_to_listen_off_loopback_without_auth() {
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .args([
            "server",
            "--listen",
            "0.0.0.0:0",
            "--no-unix-socket",
            "--state-dir",
        ])
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without authentication"),
        "{stderr}"
    );
    assert!(stderr.contains("--token-file"), "{stderr}");
}

#[test]
fn server_rejects_an_empty_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .args([
            "server",
            "--listen",
            "0.0.0.0:0",
            "--no-unix-socket",
            "--state-dir",
        ])
        .arg(dir.path())
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is empty"), "{stderr}");
}

#[tokio::test]
async fn bearer_token_is_checked_on_every_rpc() {
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let options = ServerOptions {
        // Off loopback is allowed because a token is set; the test connects over loopback.
        listen: Some("0.0.0.0:0".parse().unwrap()),
        token: Some("s3cret-token".into()),
        ..Default::default()
    };
    let server = serve(registry, None, options).await;
    let endpoint = server.endpoint();

    let mut anonymous = client_with(&endpoint, None, ClientTls::default()).await;
    let err = anonymous.v0.register(info("x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("FLOWCTL_TOKEN"), "{}", err.message());
    let err = anonymous.v0.list_services(()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut health = tonic_health::pb::health_client::HealthClient::new(anonymous.channel.clone());
    let err = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "the health service is guarded too"
    );

    let mut wrong = client_with(&endpoint, Some("guess"), ClientTls::default()).await;
    assert_eq!(
        wrong
            .v1
            .list_components(flowctl_proto::flowctl::v1::ListComponentsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let mut good = client_with(&endpoint, Some("s3cret-token"), ClientTls::default()).await;
    assert_eq!(
        good.v0
            .register(info("sink"))
            .await
            .unwrap()
            .into_inner()
            .service_id,
        "sink"
    );
    assert_eq!(
        good.v0
            .list_services(())
            .await
            .unwrap()
            .into_inner()
            .services
            .len(),
        1
    );
    server.stop().await;
}

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flowctl test CA");
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate and key (PEM) for these names.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flowctl test");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_signed_by_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new();
    let (server_cert, server_key) = pki.leaf(&["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = pki.leaf(&["component"]);
    let stranger = Pki::new();
    let (stranger_cert, stranger_key) = stranger.leaf(&["component"]);

    let tls = TlsFiles {
        cert: write(d, "server.pem", &server_cert),
        key: write(d, "server.key", &server_key),
        client_ca: write(d, "ca.pem", &pki.ca_pem),
    };
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let options = ServerOptions {
        listen: Some("0.0.0.0:0".parse().unwrap()),
        tls: Some(tls),
        ..Default::default()
    };
    let server = serve(registry, None, options).await;
    let endpoint = format!("https://localhost:{}", server.addr.port());
    let ca = Some(write(d, "ca-for-client.pem", &pki.ca_pem));

    // No client certificate: the handshake or the first call fails.
    let no_cert = ClientTls {
        ca: ca.clone(),
        cert: None,
        key: None,
    };
    assert!(
        call_fails(&endpoint, no_cert).await,
        "a client without a certificate is refused"
    );

    // A certificate from another CA: refused.
    let wrong = ClientTls {
        ca: ca.clone(),
        cert: Some(write(d, "stranger.pem", &stranger_cert)),
        key: Some(write(d, "stranger.key", &stranger_key)),
    };
    assert!(
        call_fails(&endpoint, wrong).await,
        "a client signed by another CA is refused"
    );

    // Plain HTTP/2 to the TLS port: refused.
    let plain = format!("http://127.0.0.1:{}", server.addr.port());
    assert!(
        call_fails(&plain, ClientTls::default()).await,
        "plaintext is refused"
    );

    // The right certificate works.
    let good = ClientTls {
        ca,
        cert: Some(write(d, "client.pem", &client_cert)),
        key: Some(write(d, "client.key", &client_key)),
    };
    let mut c = client_with(&endpoint, None, good).await;
    assert_eq!(
        c.v0.register(info("tls-sink"))
            .await
            .unwrap()
            .into_inner()
            .service_id,
        "tls-sink"
    );
    server.stop().await;
}

async fn call_fails(endpoint: &str, tls: ClientTls) -> bool {
    let options = ClientOptions {
        endpoint: endpoint.into(),
        token: None,
        tls,
        connect_timeout: Duration::from_secs(3),
    };
    match connect(&options).await {
        Err(_) => true,
        Ok(mut c) => c.v0.list_services(()).await.is_err(),
    }
}
