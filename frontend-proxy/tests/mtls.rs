//! Downstream mTLS: a listener with `validation_context.trusted_ca` asks
//! clients for a certificate and verifies it; with
//! `require_client_certificate` a client without one is turned away.
//! Failures are counted as Envoy names them (`ssl.fail_verify_no_cert`,
//! `ssl.fail_verify_error`), revoked ones too (`crl`, for the whole chain
//! or the leaf alone). What reaches the upstream of the client's
//! certificate follows `forward_client_cert_details`. Real certificates
//! (rcgen: a CA, a client it signed, an untrusted one, CRLs), real OpenSSL
//! clients, the real proxy binary, on both HTTP/1 engines. Addresses:
//! 127.0.26.x.

#[allow(unused_imports)]
mod support;

use boring::pkey::PKey;
use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use boring::x509::X509;
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

/// A CA certificate (PEM) and its issuer, self-signed or signed by `parent`.
fn ca(
    name: &str,
    parent: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = match parent {
        Some(parent) => params.signed_by(&key, parent).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), rcgen::Issuer::new(params, key))
}

/// A client certificate with serial number `serial`, signed by `issuer`;
/// `chain` (PEM) is sent after it.
fn client_of(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, serial: u64, chain: &str) -> Client {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["client.test".to_string()]).unwrap();
    params.serial_number = Some(serial.into());
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).unwrap();
    Client { cert: format!("{}{chain}", cert.pem()), key: key.serialize_pem() }
}

/// A CRL (PEM) from `issuer` revoking the certificates with these serials,
/// valid from 2020 to 2099.
fn crl(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, revoked: &[u64]) -> String {
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2020, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: 1u64.into(),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: (*serial).into(),
                revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(issuer).unwrap().pem().unwrap()
}

/// `GET /` over TLS with `client`'s certificate (none if `None`): the status
/// line, or why there was none.
async fn get(addr: SocketAddr, client: Option<&Client>) -> Result<String, String> {
    get_with(addr, client, "").await
}

/// [`get`] with `headers` (each line ending in CRLF) in the request.
async fn get_with(addr: SocketAddr, client: Option<&Client>, headers: &str) -> Result<String, String> {
    let client = client.map(|c| (c.cert.clone(), c.key.clone()));
    let request = format!("GET / HTTP/1.1\r\nhost: any\r\n{headers}connection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
        connector.set_verify(SslVerifyMode::NONE);
        if let Some((cert, key)) = &client {
            // The leaf, then any intermediates the client sends with it.
            let mut chain = X509::stack_from_pem(cert.as_bytes()).unwrap().into_iter();
            connector.set_certificate(&chain.next().unwrap()).unwrap();
            for intermediate in chain {
                connector.add_extra_chain_cert(intermediate).unwrap();
            }
            connector.set_private_key(&PKey::private_key_from_pem(key.as_bytes()).unwrap()).unwrap();
        }
        let ssl = connector.build().configure().unwrap().into_ssl("localhost").unwrap();
        let mut tls = ssl.connect(tcp).map_err(|e| e.to_string())?;
        // TLS 1.3: the server checks the client's certificate after the
        // client's side of the handshake is done; a refusal shows here.
        tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
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

/// A client certificate with a subject, a DNS and a URI name, signed by a
/// CA; a server certificate with a URI name of its own (Envoy's `By`).
fn named_certificates() -> (String, Client, Client) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let signed = |cn: &str, sans: Vec<rcgen::SanType>, usage| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        Client { cert: cert.pem(), key: key.serialize_pem() }
    };
    let client = signed(
        "client one",
        vec![
            rcgen::SanType::DnsName("client.test".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://test/client".try_into().unwrap()),
            rcgen::SanType::DnsName("other.test".try_into().unwrap()),
        ],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let server = signed(
        "proxy",
        vec![
            rcgen::SanType::DnsName("localhost".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://test/proxy".try_into().unwrap()),
        ],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    (ca.pem(), client, server)
}

/// The certificates (DER) in a `Cert`/`Chain` value: quoted, URL-encoded PEM.
fn decoded_pems(value: &str) -> Vec<Vec<u8>> {
    let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).expect("quoted");
    let pem =
        unquoted.replace("%0A", "\n").replace("%20", " ").replace("%2B", "+").replace("%2F", "/").replace("%3D", "=");
    X509::stack_from_pem(pem.as_bytes()).unwrap().iter().map(|c| c.to_der().unwrap()).collect()
}

#[tokio::test]
async fn x_forwarded_client_cert_follows_forward_client_cert_details() {
    let backend = Backend::start("b", SocketAddr::new(ip(26, 3), 0)).await;
    let (ca, client, server) = named_certificates();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let validation = format!(
        "          common_tls_context:\n            validation_context:\n              trusted_ca: {{ filename: \"{}\" }}\n",
        ca_file.display()
    );
    let routes = yaml::routes(&[("/", "cluster: backend")]);
    let modes = [
        ("sanitize", ""),
        ("forward_only", "          forward_client_cert_details: FORWARD_ONLY\n"),
        (
            "append_forward",
            "          forward_client_cert_details: APPEND_FORWARD\n          set_current_client_cert_details: { subject: true, cert: true, chain: true, uri: true, dns: true }\n",
        ),
        (
            "sanitize_set",
            "          forward_client_cert_details: SANITIZE_SET\n          set_current_client_cert_details: { uri: true }\n",
        ),
        ("always_forward_only", "          forward_client_cert_details: ALWAYS_FORWARD_ONLY\n"),
    ];
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for (name, extra) in modes {
        let addr = free_addr(ip(26, 3));
        let hcm = yaml::hcm(name, extra.trim_end(), &routes);
        listeners.push(
            listener(name, addr, &hcm, &server.cert, &server.key, "")
                .replace("          common_tls_context:\n", &validation),
        );
        addrs.push(addr);
    }
    // Without TLS there is no client certificate: every mode but
    // ALWAYS_FORWARD_ONLY removes the header.
    let plain = free_addr(ip(26, 3));
    listeners.push(yaml::listener("plain", plain, &yaml::hcm("plain", modes[2].1.trim_end(), &routes)));
    let admin = free_addr(ip(26, 3));
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &listeners,
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, plain).await;

    let forged = "x-forwarded-client-cert: By=spiffe://forged;Hash=00\r\n";
    let seen = |addr: SocketAddr, with_cert: bool| {
        let backend = &backend;
        let client = with_cert.then_some(&client);
        let log = proxy.log();
        async move {
            let status = get_with(addr, client, forged).await;
            assert_eq!(status, Ok("HTTP/1.1 200 OK".to_string()), "{log}");
            backend.last_header("x-forwarded-client-cert")
        }
    };
    let [sanitize, forward_only, append_forward, sanitize_set, always] = addrs[..] else { unreachable!() };
    let forged_value = Some("By=spiffe://forged;Hash=00".to_string());

    assert_eq!(seen(sanitize, true).await, None);
    assert_eq!(seen(sanitize, false).await, None);
    assert_eq!(seen(forward_only, true).await, forged_value);
    assert_eq!(seen(forward_only, false).await, None, "forwarded from a client without a certificate");
    assert_eq!(seen(always, true).await, forged_value);
    assert_eq!(seen(always, false).await, forged_value);
    assert_eq!(seen(append_forward, false).await, None, "forwarded from a client without a certificate");
    assert_eq!(seen(sanitize_set, false).await, None, "forwarded from a client without a certificate");

    let client_der = X509::from_pem(client.cert.as_bytes()).unwrap().to_der().unwrap();
    let hash: String = boring::sha::sha256(&client_der).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        seen(sanitize_set, true).await,
        Some(format!("By=spiffe://test/proxy;Hash={hash};URI=spiffe://test/client"))
    );

    let appended = seen(append_forward, true).await.expect("x-forwarded-client-cert");
    let (before, element) = appended.split_once(',').expect("two elements");
    assert_eq!(before, "By=spiffe://forged;Hash=00");
    let fields: Vec<(&str, &str)> = element.split(';').map(|kv| kv.split_once('=').unwrap()).collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["By", "Hash", "Cert", "Chain", "Subject", "URI", "DNS", "DNS"], "{element}");
    let value = |i: usize| fields[i].1;
    assert_eq!(value(0), "spiffe://test/proxy");
    assert_eq!(value(1), hash);
    assert_eq!(decoded_pems(value(2)), vec![client_der.clone()]);
    assert_eq!(decoded_pems(value(3)), vec![client_der]);
    // RFC 2253: last RDN first, the comma in the organization escaped.
    assert_eq!(value(4), "\"O=Example\\, Inc.,CN=client one\"");
    assert_eq!(value(5), "spiffe://test/client");
    assert_eq!((value(6), value(7)), ("client.test", "other.test"));

    // A quote the client leaves open would take in the element: what the
    // client sent is dropped.
    let open = "x-forwarded-client-cert: URI=spiffe://evil;Subject=\"\r\n";
    assert_eq!(get_with(append_forward, Some(&client), open).await, Ok("HTTP/1.1 200 OK".to_string()));
    let alone = backend.last_header("x-forwarded-client-cert").expect("x-forwarded-client-cert");
    assert!(alone.starts_with("By=spiffe://test/proxy;Hash="), "{alone}");

    // Plaintext: no client certificate, so nothing is forwarded or written.
    let (status, _) = support::send(
        support::client()
            .get(format!("http://{plain}/"))
            .header("x-forwarded-client-cert", "By=spiffe://forged;Hash=00"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(backend.last_header("x-forwarded-client-cert"), None);
}

/// A listener with a `validation_context` of `trusted_ca` (a file) and `extra`
/// (indented as its fields), requiring a client certificate.
fn validating_listener(name: &str, addr: SocketAddr, ca_file: &std::path::Path, extra: &str) -> String {
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let hcm = yaml::hcm(name, "", &yaml::routes(&[("/", "cluster: backend")]));
    let validation = format!(
        "          common_tls_context:\n            validation_context:\n              trusted_ca: {{ filename: \"{}\" }}\n{extra}",
        ca_file.display()
    );
    listener(
        name,
        addr,
        &hcm,
        &server.cert.pem(),
        &server.signing_key.serialize_pem(),
        "          require_client_certificate: true\n",
    )
    .replace("          common_tls_context:\n", &validation)
}

/// PEM as a YAML block scalar under `key`, indented as a validation
/// context's field.
fn inline_field(key: &str, pem: &str) -> String {
    let block: String = pem.lines().map(|l| format!("\n                  {l}")).collect();
    format!("              {key}:\n                inline_string: |{block}\n")
}

#[tokio::test]
async fn revoked_client_certificates_are_refused() {
    let backend = Backend::start("b", SocketAddr::new(ip(26, 4), 0)).await;
    let (ca_pem, issuer) = ca("test CA", None);
    let (good, revoked) = (client_of(&issuer, 1001, ""), client_of(&issuer, 1002, ""));
    let list = crl(&issuer, &[1002, 4242]);
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, crl_file) = (dir.path().join("ca.pem"), dir.path().join("crl.pem"));
    std::fs::write(&ca_file, &ca_pem).unwrap();
    std::fs::write(&crl_file, &list).unwrap();
    let (from_file, inline, without, admin) =
        (free_addr(ip(26, 4)), free_addr(ip(26, 4)), free_addr(ip(26, 4)), free_addr(ip(26, 4)));
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            validating_listener(
                "from_file",
                from_file,
                &ca_file,
                &format!("              crl: {{ filename: \"{}\" }}\n", crl_file.display()),
            ),
            validating_listener("inline", inline, &ca_file, &inline_field("crl", &list)),
            validating_listener("without", without, &ca_file, ""),
        ],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, without).await;

    let ok = Ok("HTTP/1.1 200 OK".to_string());
    for addr in [from_file, inline] {
        assert_eq!(get(addr, Some(&good)).await, ok, "{}", proxy.log());
        assert!(get(addr, Some(&revoked)).await.is_err(), "a revoked certificate was served");
    }
    // The list is what refuses it: the same CA without one serves it.
    assert_eq!(get(without, Some(&revoked)).await, ok);
    let stat = |a: SocketAddr, name: &str| {
        let name = format!("listener.{}.{name}", a.to_string().replace(':', "_"));
        async move { support::stat(admin, &name).await }
    };
    assert_eq!(stat(from_file, "ssl.fail_verify_error").await, 1);
    assert_eq!(stat(inline, "ssl.fail_verify_error").await, 1);
    assert_eq!(stat(without, "ssl.fail_verify_error").await, 0);
}

#[tokio::test]
async fn crls_are_checked_for_the_whole_chain_unless_only_the_leaf_is_asked_for() {
    let backend = Backend::start("b", SocketAddr::new(ip(26, 5), 0)).await;
    let (root_pem, root) = ca("root CA", None);
    let (intermediate_pem, intermediate) = ca("intermediate CA", Some(&root));
    let good = client_of(&intermediate, 2001, &intermediate_pem);
    let revoked = client_of(&intermediate, 2002, &intermediate_pem);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("root.pem");
    std::fs::write(&ca_file, &root_pem).unwrap();
    // The intermediate's list alone, and both lists in one file.
    let leaf_list = crl(&intermediate, &[2002]);
    let (leaf_crl, both_crls) = (dir.path().join("leaf-crl.pem"), dir.path().join("both-crl.pem"));
    std::fs::write(&leaf_crl, &leaf_list).unwrap();
    std::fs::write(&both_crls, format!("{leaf_list}{}", crl(&root, &[]))).unwrap();
    let crl_field = |file: &std::path::Path| format!("              crl: {{ filename: \"{}\" }}\n", file.display());
    let [whole, leaf_only, both, admin] = [(); 4].map(|_| free_addr(ip(26, 5)));
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            validating_listener("whole", whole, &ca_file, &crl_field(&leaf_crl)),
            validating_listener(
                "leaf_only",
                leaf_only,
                &ca_file,
                &format!("{}              only_verify_leaf_cert_crl: true\n", crl_field(&leaf_crl)),
            ),
            validating_listener("both", both, &ca_file, &crl_field(&both_crls)),
        ],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, both).await;

    let ok = Ok("HTTP/1.1 200 OK".to_string());
    // As Envoy: by default every CA of the chain needs a list, and the
    // root's is missing ("unable to get certificate CRL").
    assert!(get(whole, Some(&good)).await.is_err(), "a chain without every CRL was accepted");
    assert_eq!(get(leaf_only, Some(&good)).await, ok, "{}", proxy.log());
    assert!(get(leaf_only, Some(&revoked)).await.is_err(), "a revoked certificate was served");
    assert_eq!(get(both, Some(&good)).await, ok);
    assert!(get(both, Some(&revoked)).await.is_err(), "a revoked certificate was served");
    let stat = |a: SocketAddr| {
        let name = format!("listener.{}.ssl.fail_verify_error", a.to_string().replace(':', "_"));
        async move { support::stat(admin, &name).await }
    };
    assert_eq!((stat(whole).await, stat(leaf_only).await, stat(both).await), (1, 1, 1));
}

#[tokio::test]
async fn lists_bundled_in_the_trusted_ca_file_are_checked() {
    let backend = Backend::start("b", SocketAddr::new(ip(26, 6), 0)).await;
    let (root_pem, root) = ca("root CA", None);
    let (intermediate_pem, intermediate) = ca("intermediate CA", Some(&root));
    let (good, revoked) = (client_of(&root, 3001, ""), client_of(&root, 3002, ""));
    let chained_good = client_of(&intermediate, 3003, &intermediate_pem);
    let chained_revoked = client_of(&intermediate, 3004, &intermediate_pem);
    let dir = tempfile::tempdir().unwrap();
    // As Envoy reads a `trusted_ca` file: its CRLs are checked too.
    let (bundle, leaf_bundle) = (dir.path().join("bundle.pem"), dir.path().join("leaf-bundle.pem"));
    std::fs::write(&bundle, format!("{root_pem}{}", crl(&root, &[3002]))).unwrap();
    // Only the intermediate's list: the whole chain cannot be checked,
    // the leaf can (`only_verify_leaf_cert_crl`, without `crl`).
    std::fs::write(&leaf_bundle, format!("{root_pem}{}", crl(&intermediate, &[3004]))).unwrap();
    let [bundled, whole, leaf_only, admin] = [(); 4].map(|_| free_addr(ip(26, 6)));
    let cfg = yaml::bootstrap_with_admin(
        admin,
        &[
            validating_listener("bundled", bundled, &bundle, ""),
            validating_listener("whole", whole, &leaf_bundle, ""),
            validating_listener(
                "leaf_only",
                leaf_only,
                &leaf_bundle,
                "              only_verify_leaf_cert_crl: true\n",
            ),
        ],
        &[yaml::cluster("backend", "STATIC", &[(backend.addr.ip().to_string(), backend.addr.port())], "")],
    );
    let proxy = ProxyProcess::start(&cfg, bundled).await;

    let ok = Ok("HTTP/1.1 200 OK".to_string());
    assert_eq!(get(bundled, Some(&good)).await, ok, "{}", proxy.log());
    assert!(get(bundled, Some(&revoked)).await.is_err(), "a certificate the bundled list revokes was served");
    assert!(get(whole, Some(&chained_good)).await.is_err(), "a chain without every CRL was accepted");
    assert_eq!(get(leaf_only, Some(&chained_good)).await, ok, "{}", proxy.log());
    assert!(get(leaf_only, Some(&chained_revoked)).await.is_err(), "a revoked certificate was served");
}
