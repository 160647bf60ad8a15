//! Downstream mTLS: a listener with `validation_context.trusted_ca` asks
//! clients for a certificate and verifies it; with
//! `require_client_certificate` a client without one is turned away.
//! Failures are counted as Envoy names them (`ssl.fail_verify_no_cert`,
//! `ssl.fail_verify_error`). Real certificates (rcgen: a CA, a client it
//! signed, an untrusted one), real OpenSSL clients, the real proxy binary,
//! on both HTTP/1 engines. Addresses: 127.0.26.x.

#[allow(unused_imports)]
mod support;

use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use support::proxy::ProxyProcess;
use support::{free_addr, ip, yaml, Backend};

/// A client certificate and key (PEM).
struct Client {
    cert: String,
    key: String,
}

/// A CA (its PEM), a client certificate it signed, and an untrusted
/// self-signed one.
fn certificates() -> (String, Client, Client) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["client.test".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    let trusted = Client { cert: cert.pem(), key: key.serialize_pem() };
    let other = rcgen::generate_simple_self_signed(vec!["client.test".to_string()]).unwrap();
    let untrusted = Client { cert: other.cert.pem(), key: other.signing_key.serialize_pem() };
    (ca.pem(), trusted, untrusted)
}

/// `GET /` over TLS with `client`'s certificate (none if `None`): the status
/// line, or why there was none.
async fn get(addr: SocketAddr, client: Option<&Client>) -> Result<String, String> {
    let client = client.map(|c| (c.cert.clone(), c.key.clone()));
    tokio::task::spawn_blocking(move || {
        let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
        connector.set_verify(SslVerifyMode::NONE);
        if let Some((cert, key)) = &client {
            connector.set_certificate(&X509::from_pem(cert.as_bytes()).unwrap()).unwrap();
            connector.set_private_key(&PKey::private_key_from_pem(key.as_bytes()).unwrap()).unwrap();
        }
        let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
        let mut tls = ssl.connect(tcp).map_err(|e| e.to_string())?;
        // TLS 1.3: the server checks the client's certificate after the
        // client's side of the handshake is done; a refusal shows here.
        tls.write_all(b"GET / HTTP/1.1\r\nhost: any\r\nconnection: close\r\n\r\n").map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        let read = tls.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        match text.lines().next() {
            Some(status) if !status.is_empty() => Ok(status.to_string()),
            _ => Err(format!("no response: {read:?}")),
        }
    })
    .await
    .unwrap()
}

/// A TLS listener whose context has `extra` (indented under `typed_config`).
fn listener(name: &str, addr: SocketAddr, hcm: &str, cert: &str, key: &str, extra: &str) -> String {
    yaml::with_inline_tls(&yaml::listener(name, addr, hcm), cert, key)
        .replace("          common_tls_context:\n", &format!("{extra}          common_tls_context:\n"))
}

#[tokio::test]
async fn client_certificates_are_verified_and_required() {
    let backend = Backend::start("b", SocketAddr::new(ip(26, 1), 0)).await;
    let (ca, trusted, untrusted) = certificates();
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (server.cert.pem(), server.signing_key.serialize_pem());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let hcm = yaml::hcm("mtls", "", &yaml::routes(&[("/", "cluster: backend")]));
    let validation = format!(
        "            validation_context:\n              trusted_ca: {{ filename: \"{}\" }}\n",
        ca_file.display()
    );
    let (required, optional, admin) = (free_addr(ip(26, 1)), free_addr(ip(26, 1)), free_addr(ip(26, 1)));
    let required_listener =
        listener("required", required, &hcm, &cert, &key, "          require_client_certificate: true\n");
    let optional_listener = listener("optional", optional, &hcm, &cert, &key, "");
    let cfg = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(
            &[required_listener, optional_listener],
            &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
        )
    )
    .replace("          common_tls_context:\n", &format!("          common_tls_context:\n{validation}"));
    let proxy = ProxyProcess::start(&cfg, optional).await;

    let ok = "HTTP/1.1 200 OK".to_string();
    assert_eq!(get(required, Some(&trusted)).await, Ok(ok.clone()), "{}", proxy.log());
    assert!(get(required, None).await.is_err(), "a client without a certificate was served");
    assert!(get(required, Some(&untrusted)).await.is_err(), "an untrusted certificate was accepted");
    // Without require_client_certificate: a certificate is verified when
    // sent, and none is fine.
    assert_eq!(get(optional, None).await, Ok(ok.clone()));
    assert_eq!(get(optional, Some(&trusted)).await, Ok(ok));
    assert!(get(optional, Some(&untrusted)).await.is_err(), "an untrusted certificate was accepted");

    let stat = |a: SocketAddr, name: &str| {
        let name = format!("listener.{}.{name}", a.to_string().replace(':', "_"));
        async move { support::stat(admin, &name).await }
    };
    assert_eq!(stat(required, "ssl.fail_verify_no_cert").await, 1);
    assert_eq!(stat(required, "ssl.fail_verify_error").await, 1);
    assert_eq!(stat(optional, "ssl.fail_verify_no_cert").await, 0);
    assert_eq!(stat(optional, "ssl.fail_verify_error").await, 1);
}

#[tokio::test]
async fn client_certificates_must_carry_an_accepted_subject_alt_name() {
    let backend = Backend::start("b", SocketAddr::new(ip(26, 2), 0)).await;
    let (ca, trusted, _) = certificates();
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (server.cert.pem(), server.signing_key.serialize_pem());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let hcm = yaml::hcm("san", "", &yaml::routes(&[("/", "cluster: backend")]));
    let with_names = |name: &str, addr: SocketAddr, matchers: &str| {
        let validation = format!(
            "          common_tls_context:\n            validation_context:\n              trusted_ca: {{ filename: \"{}\" }}\n              match_typed_subject_alt_names: {matchers}\n",
            ca_file.display()
        );
        listener(name, addr, &hcm, &cert, &key, "          require_client_certificate: true\n")
            .replace("          common_tls_context:\n", &validation)
    };
    let (accepts, refuses, admin) = (free_addr(ip(26, 2)), free_addr(ip(26, 2)), free_addr(ip(26, 2)));
    let cfg = format!(
        "{}{}",
        yaml::admin(admin),
        yaml::bootstrap(
            &[
                with_names(
                    "accepts",
                    accepts,
                    "[{ san_type: URI, matcher: { prefix: \"spiffe://\" } }, { san_type: DNS, matcher: { suffix: \".TEST\", ignore_case: true } }]",
                ),
                with_names("refuses", refuses, "[{ san_type: DNS, matcher: { exact: someone.else } }]"),
            ],
            &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
        )
    );
    let proxy = ProxyProcess::start(&cfg, refuses).await;

    assert_eq!(get(accepts, Some(&trusted)).await, Ok("HTTP/1.1 200 OK".to_string()), "{}", proxy.log());
    assert!(get(refuses, Some(&trusted)).await.is_err(), "a certificate without an accepted name was served");
    let stat = |a: SocketAddr, name: &str| {
        let name = format!("listener.{}.{name}", a.to_string().replace(':', "_"));
        async move { support::stat(admin, &name).await }
    };
    assert_eq!(stat(refuses, "ssl.fail_verify_san").await, 1);
    assert_eq!(stat(accepts, "ssl.fail_verify_san").await, 0);
}
