//! A real TLS handshake: the client trusts a private CA only through `ca_file`, as on a
//! Huawei Cloud Stack or other private-cloud endpoint.

use crate::support::within;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vpcep_approver::cloud::TargetApi;
use vpcep_approver::cloud::auth::Credentials;
use vpcep_approver::cloud::client::CloudClient;
use vpcep_approver::cloud::error::ApiError;
use vpcep_approver::cloud::types::EndpointService;
use vpcep_approver::config::Config;
use vpcep_approver::metrics::Metrics;

/// Serves one canned `ServiceList` answer per connection over TLS with `cert`.
async fn tls_server(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> u16 {
    vpcep_approver::cloud::init_tls();
    let der = cert.cert.der().clone();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"endpoint_services":[{"id":"4189d3c2-8882-4871-a3c2-d380272eed88","status":"available","approval_enabled":true}],"total_count":1}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn cloud(port: u16, ca_file: Option<&PathBuf>) -> CloudClient {
    let ca = ca_file.map_or(String::new(), |p| {
        format!("ca_file = {:?}\n", p.display().to_string())
    });
    let text = format!(
        "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"p1\"\nvpcep_endpoint = \"https://localhost:{port}\"\n{ca}[poll]\nmax_retries = 0\nrequest_timeout = \"5s\"\n"
    );
    let cfg = Config::parse(&text, std::path::Path::new("/tls-test/config.toml")).expect("config");
    CloudClient::new(&cfg, Credentials::aksk("AK", "SK", None), Metrics::new()).expect("client")
}

/// The services on `port` as a client with `ca_file` (none: the system roots) lists them.
async fn list_services(
    port: u16,
    ca_file: Option<&PathBuf>,
) -> Result<Vec<EndpointService>, ApiError> {
    let cloud = cloud(port, ca_file);
    within(cloud.targets()[0].list_services()).await
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_through_ca_file() {
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("private-ca.pem");
    std::fs::write(&pem, ca.cert.pem()).expect("write pem");
    let port = tls_server(&ca).await;

    let services = list_services(port, Some(&pem))
        .await
        .expect("the handshake succeeds with ca_file");
    assert_eq!(services.len(), 1);

    let err = list_services(port, None)
        .await
        .expect_err("an unknown CA must be refused");
    assert!(err.url.starts_with("https://localhost:"), "{err}");
}
