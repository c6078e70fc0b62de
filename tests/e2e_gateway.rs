//! Ingress gateway with real Envoy: a stock Envoy bootstrapped as the
//! `istio-ingressgateway` workload (selected by Istio's bookinfo-gateway
//! sample) serves bookinfo over HTTP, HTTPS and mutual TLS with certificates
//! from `--credentials-dir` (credentialName, over SDS), redirects to HTTPS,
//! and sidecars get none of its routes.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::pki::{Pki, write_credential};
use common::{Mesh, ROOT, next_net, wait_until};
use serde_json::Value;

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 160;
/// Host number of the gateway's address (127.N.0.30), as in examples/bookinfo/mesh.
const GATEWAY_HOST: u8 = 30;
const GATEWAY: &str = "istio-ingressgateway";

/// The TLS servers, the redirect and the VirtualService they route with.
const TLS_CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-tls}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-credential}
  - port: {number: 8443, name: https-mtls, protocol: HTTPS}
    hosts: [mtls.example.com]
    tls: {mode: MUTUAL, credentialName: mtls-credential}
  - port: {number: 8081, name: http-redirect, protocol: HTTP}
    hosts: [bookinfo.example.com]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo-tls}
spec:
  hosts: [bookinfo.example.com, mtls.example.com]
  gateways: [bookinfo-tls]
  http:
  - match: [{uri: {exact: /productpage}}]
    route:
    - destination: {host: productpage, port: {number: 9080}}
"#;

/// TLS passthrough: port 9443 forwards TLS for bookinfo.example.com, by
/// SNI and untouched, to a "backend" that terminates it: the gateway's own
/// 8443 server (a ServiceEntry for its address), so the client sees the
/// bookinfo certificate although 9443 has none.
fn passthrough_config(gw_ip: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: passthrough}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 9443, name: tls, protocol: TLS}}
    hosts: [bookinfo.example.com]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tls-backend}}
spec:
  hosts: [tls-backend.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8443, name: tls, protocol: TLS}}]
  endpoints: [{{address: {gw_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: passthrough}}
spec:
  hosts: [bookinfo.example.com]
  gateways: [passthrough]
  tls:
  - match: [{{sniHosts: [bookinfo.example.com]}}]
    route:
    - destination: {{host: tls-backend.example.com, port: {{number: 8443}}}}
"#
    )
}

/// Accepts any server certificate (still checking the handshake
/// signatures): for servers whose certificate names no DNS name, such as a
/// gateway's SPIFFE workload certificate, where the test is about what the
/// server accepts from the client.
#[derive(Debug)]
struct AnyServerCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A certificate for SPIFFE identity `spiffe` signed by pilotfish's mesh
/// root (from its state directory): what a workload of the mesh presents.
fn mesh_identity(mesh: &Mesh, spiffe: &str) -> (String, String) {
    let state = mesh.dir.path().join("state");
    let root = std::fs::read_to_string(state.join("root-cert.pem")).unwrap();
    let root_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(state.join("root-key.pem")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&root, root_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into().unwrap())];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A TLS connection to `addr` with SNI `host`, trusting only `ca_pem` (any
/// server when it is empty), optionally with a client certificate and ALPN
/// values. (rustls directly: the tests' reqwest has no TLS backend.)
fn tls_connect(
    ca_pem: &str,
    host: &str,
    addr: SocketAddr,
    identity: Option<(&str, &str)>,
    alpn: &[&str],
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::sync::Arc;

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if ca_pem.is_empty() {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match identity {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = config;
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    // Complete the handshake now, so a refused one is an error here.
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

/// One HTTPS GET of `path` from `addr` with SNI and Host `host`, trusting
/// only `ca_pem`, optionally with a client certificate: (status, body), or
/// the handshake or I/O error.
fn https_get(
    ca_pem: &str,
    host: &str,
    addr: SocketAddr,
    path: &str,
    identity: Option<(&str, &str)>,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};

    let mut tls = tls_connect(ca_pem, host, addr, identity, &[])?;
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // Envoy may close without close_notify after `Connection: close`.
    if let Err(e) = tls.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(e.to_string());
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("no HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line: {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn config_dump(mesh: &Mesh, host: u8) -> String {
    mesh.envoy_admin(host, "/config_dump")
}

#[test]
fn ingress_gateway_http_https_mutual_and_redirect() {
    let net = next_net(NET_BASE);
    let mut mesh = Mesh::start(net, &[], false);
    let creds = mesh.dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let server_pki = Pki::new("bookinfo test CA");
    let client_pki = Pki::new("client test CA");
    let (cert, key) = server_pki.issue(&["bookinfo.example.com"]);
    write_credential(&creds, "bookinfo-credential", &cert, &key, None);
    let (mcert, mkey) = server_pki.issue(&["mtls.example.com"]);
    write_credential(
        &creds,
        "mtls-credential",
        &mcert,
        &mkey,
        Some(&client_pki.ca_pem),
    );

    mesh.serve_args = vec!["--credentials-dir".into(), creds.display().to_string()];
    mesh.stop_pilotfish();
    mesh.start_pilotfish();
    let gw_entry =
        std::fs::read_to_string(Path::new(ROOT).join("examples/bookinfo/mesh/ingressgateway.yaml"))
            .unwrap()
            .replace("127.0.0.", &format!("127.{net}.0."));
    mesh.write("ingressgateway.yaml", &gw_entry);
    for f in [
        "destination-rule-all.yaml",
        "virtual-service-all-v1.yaml",
        "bookinfo-gateway.yaml",
    ] {
        mesh.apply(f);
    }
    mesh.write("gateway-tls.yaml", TLS_CONFIG);
    mesh.write(
        "gateway-passthrough.yaml",
        &passthrough_config(&format!("127.{net}.0.{GATEWAY_HOST}")),
    );
    mesh.start_bookinfo();
    let config = mesh.config.display().to_string();
    mesh.start_envoy_with(
        GATEWAY,
        GATEWAY_HOST,
        &["--gateway", "--config-dir", &config],
        |b| {
            assert!(
                b["node"]["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&format!("router~127.{net}.0.30~"))),
                "{}",
                b["node"]
            );
        },
    );
    mesh.wait_envoy_ready(GATEWAY_HOST);
    let gw_ip = format!("127.{net}.0.{GATEWAY_HOST}");

    // HTTP through the gateway, as Istio's bookinfo task does it.
    let url = format!("http://{gw_ip}:8080/productpage");
    wait_until("productpage through the gateway", || {
        reqwest::blocking::Client::new()
            .get(&url)
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    let page: Value = mesh.get_json(&url);
    assert_eq!(page["service"], "productpage", "{page}");
    assert!(
        page["calls"]
            .as_array()
            .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["status"] == 200)),
        "{page}"
    );
    // Paths the sample does not route: 404 from the gateway.
    let status = reqwest::blocking::Client::new()
        .get(format!("http://{gw_ip}:8080/details/0"))
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 404);

    // httpsRedirect: 301 to https with the same host and path.
    let no_redirects = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let resp = no_redirects
        .get(format!("http://{gw_ip}:8081/productpage"))
        .header("host", "bookinfo.example.com")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers()["location"],
        "https://bookinfo.example.com/productpage"
    );

    // HTTPS SIMPLE: the credential's certificate, chosen by SNI.
    let tls_addr: SocketAddr = format!("{gw_ip}:8443").parse().unwrap();
    let (status, body) = https_get(
        &server_pki.ca_pem,
        "bookinfo.example.com",
        tls_addr,
        "/productpage",
        None,
    )
    .expect("HTTPS through the gateway");
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).expect("productpage JSON");
    assert_eq!(page["service"], "productpage");
    // Another name over the same port: no server for that SNI.
    assert!(
        https_get(
            &server_pki.ca_pem,
            "other.example.com",
            tls_addr,
            "/productpage",
            None
        )
        .is_err()
    );

    // MUTUAL: no client certificate, no answer; a certificate from the
    // credential's CA is let through.
    let refused = https_get(
        &server_pki.ca_pem,
        "mtls.example.com",
        tls_addr,
        "/productpage",
        None,
    );
    assert!(
        refused.is_err(),
        "MUTUAL served a client without a certificate: {refused:?}"
    );
    let (ccert, ckey) = client_pki.issue(&["client.example.com"]);
    let stranger_pki = Pki::new("someone else");
    let (scert, skey) = stranger_pki.issue(&["stranger.example.com"]);
    let stranger = https_get(
        &server_pki.ca_pem,
        "mtls.example.com",
        tls_addr,
        "/productpage",
        Some((&scert, &skey)),
    );
    assert!(
        stranger.is_err(),
        "MUTUAL served a client whose certificate another CA signed"
    );
    let (status, body) = https_get(
        &server_pki.ca_pem,
        "mtls.example.com",
        tls_addr,
        "/productpage",
        Some((&ccert, &ckey)),
    )
    .expect("MUTUAL with a client certificate");
    assert_eq!(status, 200, "{body}");

    // PASSTHROUGH: the TLS stream reaches the backend untouched (its
    // certificate, its answer); an SNI no route names gets nothing.
    let passthrough: SocketAddr = format!("{gw_ip}:9443").parse().unwrap();
    let (status, body) = https_get(
        &server_pki.ca_pem,
        "bookinfo.example.com",
        passthrough,
        "/productpage",
        None,
    )
    .expect("TLS passthrough by SNI");
    assert_eq!(status, 200, "{body}");
    assert!(
        https_get(
            &server_pki.ca_pem,
            "mtls.example.com",
            passthrough,
            "/productpage",
            None
        )
        .is_err()
    );

    // Sidecars got none of the gateway's routes, listeners or credentials.
    for (_, _, _, host, _) in common::BOOKINFO {
        let dump = config_dump(&mesh, *host);
        for gateway_only in [
            "http.8080",
            "https.8443",
            "credential://",
            "bookinfo.example.com",
            ":8080",
        ] {
            assert!(
                !dump.contains(gateway_only),
                "sidecar {host} has gateway config {gateway_only:?}"
            );
        }
    }
    let gw_dump = config_dump(&mesh, GATEWAY_HOST);
    for expected in [
        "\"http.8080\"",
        "\"http.8081\"",
        "https.8443.https.bookinfo-tls.default",
        "https.8443.https-mtls.bookinfo-tls.default",
    ] {
        assert!(gw_dump.contains(expected), "gateway lacks {expected}");
    }
    // The gateway is no sidecar: no outbound 15001 listener.
    assert!(!gw_dump.contains(&format!("{gw_ip}_15001")));

    // pilotfish's own dump redacts the credentials' keys; its log never has them.
    let dump =
        mesh.get_text(&mesh.admin_url(&format!("/debug/config_dump?proxy=default/{GATEWAY}")));
    assert!(dump.contains("credential://bookinfo-credential"), "{dump}");
    assert!(dump.contains("credential://mtls-credential-cacert"));
    assert!(!dump.contains("PRIVATE KEY"), "key material in config_dump");
    assert!(!mesh.log().contains("PRIVATE KEY"));
}

#[test]
fn renewed_credentials_reach_the_gateway_without_restart() {
    let net = next_net(NET_BASE);
    let mut mesh = Mesh::start(net, &[], false);
    let creds = mesh.dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    mesh.serve_args = vec!["--credentials-dir".into(), creds.display().to_string()];
    mesh.stop_pilotfish();
    mesh.start_pilotfish();
    let gw_entry =
        std::fs::read_to_string(Path::new(ROOT).join("examples/bookinfo/mesh/ingressgateway.yaml"))
            .unwrap()
            .replace("127.0.0.", &format!("127.{net}.0."));
    mesh.write("ingressgateway.yaml", &gw_entry);
    mesh.write("gateway-tls.yaml", TLS_CONFIG);
    mesh.write(
        "gateway-passthrough.yaml",
        &passthrough_config(&format!("127.{net}.0.{GATEWAY_HOST}")),
    );
    mesh.start_bookinfo();
    let config = mesh.config.display().to_string();
    mesh.start_envoy_with(
        GATEWAY,
        GATEWAY_HOST,
        &["--gateway", "--config-dir", &config],
        |_| {},
    );
    let gw_ip = format!("127.{net}.0.{GATEWAY_HOST}");
    let tls_addr: SocketAddr = format!("{gw_ip}:8443").parse().unwrap();

    // The credential appears after the gateway started: served once written.
    let first = Pki::new("first CA");
    let (cert, key) = first.issue(&["bookinfo.example.com"]);
    write_credential(&creds, "bookinfo-credential", &cert, &key, None);
    let ok = |ca: &str| {
        https_get(ca, "bookinfo.example.com", tls_addr, "/productpage", None)
            .is_ok_and(|(status, _)| status == 200)
    };
    wait_until("the first certificate served", || ok(&first.ca_pem));

    // Replaced in place (a renewal from another CA): the gateway switches.
    let second = Pki::new("second CA");
    let (cert, key) = second.issue(&["bookinfo.example.com"]);
    write_credential(&creds, "bookinfo-credential", &cert, &key, None);
    wait_until("the renewed certificate served", || ok(&second.ca_pem));
    assert!(!ok(&first.ca_pem));
}

/// 127.N blocks of the tests of gateways that terminate TLS in front of TCP
/// and carry mesh mTLS (ISTIO_MUTUAL, AUTO_PASSTHROUGH).
const TLS_NET_BASE: u8 = 246;

/// Writes the gateway's WorkloadEntry (examples/bookinfo/mesh) into `mesh`.
fn write_gateway_entry(mesh: &Mesh) {
    let gw_entry =
        std::fs::read_to_string(Path::new(ROOT).join("examples/bookinfo/mesh/ingressgateway.yaml"))
            .unwrap()
            .replace("127.0.0.", &format!("127.{}.0.", mesh.net));
    mesh.write("ingressgateway.yaml", &gw_entry);
}

/// Starts the gateway's Envoy and waits until it is ready.
fn start_gateway(mesh: &mut Mesh) {
    let config = mesh.config.display().to_string();
    mesh.start_envoy_with(
        GATEWAY,
        GATEWAY_HOST,
        &["--gateway", "--config-dir", &config],
        |_| {},
    );
    mesh.wait_envoy_ready(GATEWAY_HOST);
}

/// Sends `payload` over TLS (SNI `host`) to `addr` and reads as many bytes
/// back: what a TCP echo behind a TLS-terminating gateway returns.
fn tls_echo(
    ca_pem: &str,
    host: &str,
    addr: SocketAddr,
    identity: Option<(&str, &str)>,
    payload: &str,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut tls = tls_connect(ca_pem, host, addr, identity, &[])?;
    tls.write_all(payload.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; payload.len()];
    tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf).to_string())
}

/// TLS servers that terminate TLS and forward the bytes to a `tcp` route.
const TLS_TCP_CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-tls}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9444, name: tls-echo, protocol: TLS}
    hosts: [echo.example.com]
    tls: {mode: SIMPLE, credentialName: echo-credential}
  - port: {number: 9444, name: tls-echo-mtls, protocol: TLS}
    hosts: [echo-mtls.example.com]
    tls: {mode: MUTUAL, credentialName: echo-mtls-credential}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-tls}
spec:
  hosts: [echo.example.com, echo-mtls.example.com]
  gateways: [tcp-tls]
  tcp:
  - match: [{port: 9444}]
    route:
    - destination: {host: tcp-echo.default.svc.cluster.local, port: {number: 9090}}
"#;

#[test]
fn gateway_terminates_tls_in_front_of_tcp() {
    let net = next_net(TLS_NET_BASE);
    let mut mesh = Mesh::start(net, &[], false);
    let creds = mesh.dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let server_pki = Pki::new("echo test CA");
    let client_pki = Pki::new("echo client CA");
    let (cert, key) = server_pki.issue(&["echo.example.com"]);
    write_credential(&creds, "echo-credential", &cert, &key, None);
    let (mcert, mkey) = server_pki.issue(&["echo-mtls.example.com"]);
    write_credential(
        &creds,
        "echo-mtls-credential",
        &mcert,
        &mkey,
        Some(&client_pki.ca_pem),
    );
    mesh.serve_args = vec!["--credentials-dir".into(), creds.display().to_string()];
    mesh.stop_pilotfish();
    mesh.start_pilotfish();
    write_gateway_entry(&mesh);
    // The echo server behind ratings-v1's sidecar.
    mesh.start_tcp_echo();
    mesh.write("gateway-tcp-tls.yaml", TLS_TCP_CONFIG);
    mesh.start_envoy("ratings-v1", 16);
    mesh.wait_envoy_ready(16);
    start_gateway(&mut mesh);
    let addr: SocketAddr = format!("127.{net}.0.{GATEWAY_HOST}:9444").parse().unwrap();

    // SIMPLE: the credential's certificate by SNI, then plain bytes to the echo.
    wait_until("TLS-terminated TCP through the gateway", || {
        tls_echo(&server_pki.ca_pem, "echo.example.com", addr, None, "ping")
            .is_ok_and(|r| r == "ping")
    });
    assert_eq!(
        tls_echo(
            &server_pki.ca_pem,
            "echo.example.com",
            addr,
            None,
            "hello over tls"
        )
        .as_deref(),
        Ok("hello over tls")
    );
    // The gateway decrypted: the echo cluster saw plain TCP from it.
    assert!(
        mesh.envoy_stat(
            GATEWAY_HOST,
            "cluster.outbound|9090||tcp-echo.default.svc.cluster.local.upstream_cx_total"
        ) >= 2
    );
    // No server for another name.
    assert!(tls_echo(&server_pki.ca_pem, "other.example.com", addr, None, "x").is_err());

    // MUTUAL: a client certificate from the credential's CA is required.
    let refused = tls_echo(&server_pki.ca_pem, "echo-mtls.example.com", addr, None, "x");
    assert!(refused.is_err(), "MUTUAL served without a certificate");
    let stranger = Pki::new("someone else");
    let (scert, skey) = stranger.issue(&["stranger.example.com"]);
    assert!(
        tls_echo(
            &server_pki.ca_pem,
            "echo-mtls.example.com",
            addr,
            Some((&scert, &skey)),
            "x"
        )
        .is_err()
    );
    let (ccert, ckey) = client_pki.issue(&["client.example.com"]);
    assert_eq!(
        tls_echo(
            &server_pki.ca_pem,
            "echo-mtls.example.com",
            addr,
            Some((&ccert, &ckey)),
            "mutual"
        )
        .as_deref(),
        Ok("mutual")
    );
}

/// ISTIO_MUTUAL: sidecars send `ratings.example.com` to the gateway's 8443
/// server over mesh mTLS (a DestinationRule subset with ISTIO_MUTUAL and
/// the server's host as SNI, Istio's egress gateway pattern); the gateway
/// terminates with its workload certificate, accepts only productpage's
/// identity (`subjectAltNames`) and routes to ratings.
/// AUTO_PASSTHROUGH: port 15443 forwards mesh mTLS by its SNI to the
/// service it names; `ratings.remote.example` stands for a service on
/// another network, reached through that gateway with ratings' SNI.
fn mesh_mtls_config(net: u8) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: istio-ingressgateway}}
spec:
  hosts: [istio-ingressgateway.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8443, name: http-mesh, protocol: HTTP}}]
  workloadSelector: {{labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: istio-ingressgateway}}
spec:
  host: istio-ingressgateway.default.svc.cluster.local
  subsets:
  - name: mesh-gw
    trafficPolicy:
      tls: {{mode: ISTIO_MUTUAL, sni: ratings.example.com}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings-example}}
spec:
  hosts: [ratings.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.{net}.2.9}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: mesh-gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https-mesh, protocol: HTTPS}}
    hosts: [ratings.example.com]
    tls:
      mode: ISTIO_MUTUAL
      subjectAltNames: [spiffe://cluster.local/ns/default/sa/bookinfo-productpage]
  - port: {{number: 15443, name: tls-eastwest, protocol: TLS}}
    hosts: ["*.local"]
    tls: {{mode: AUTO_PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings-through-gateway}}
spec:
  hosts: [ratings.example.com]
  gateways: [mesh, mesh-gw]
  http:
  - match: [{{gateways: [mesh], port: 9080}}]
    route:
    - destination: {{host: istio-ingressgateway.default.svc.cluster.local, subset: mesh-gw, port: {{number: 8443}}}}
  - match: [{{gateways: [mesh-gw], port: 8443}}]
    route:
    - destination: {{host: ratings.default.svc.cluster.local, port: {{number: 9080}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings-remote}}
spec:
  hosts: [ratings.remote.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.{net}.0.{GATEWAY_HOST}, ports: {{http: 15443}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings-remote}}
spec:
  host: ratings.remote.example
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL, sni: outbound_.9080_._.ratings.default.svc.cluster.local}}
"#
    )
}

#[test]
fn gateway_istio_mutual_and_auto_passthrough_carry_mesh_mtls() {
    let net = next_net(TLS_NET_BASE);
    let mut mesh = Mesh::start(net, &[], false);
    write_gateway_entry(&mesh);
    mesh.write("mesh-mtls.yaml", &mesh_mtls_config(net));
    mesh.start_envoy("productpage-v1", 11);
    mesh.start_envoy("ratings-v1", 16);
    mesh.start_app("ratings", "v1", 16, &[]);
    mesh.wait_envoy_ready(11);
    mesh.wait_envoy_ready(16);
    start_gateway(&mut mesh);
    let gw_ip = format!("127.{net}.0.{GATEWAY_HOST}");

    // ISTIO_MUTUAL: sidecar -> (mesh mTLS) -> gateway -> ratings.
    let ratings = |url: &str| {
        let r = mesh.via_sidecar(11, url, &[]);
        r.status == 200
            && serde_json::from_str::<Value>(&r.body).is_ok_and(|v| v["service"] == "ratings")
    };
    wait_until("ratings through the ISTIO_MUTUAL server", || {
        ratings("http://ratings.example.com:9080/ratings/0")
    });
    let via_gateway = mesh.envoy_stat(
        GATEWAY_HOST,
        "cluster.outbound|9080||ratings.default.svc.cluster.local.upstream_rq_total",
    );
    assert!(via_gateway >= 1, "{via_gateway}");
    let handshakes = mesh.envoy_stat(
        GATEWAY_HOST,
        &format!("listener.{gw_ip}_8443.ssl.handshake"),
    );
    assert!(handshakes >= 1, "no TLS handshake on the gateway's 8443");
    // The server wants a mesh certificate with an identity it names: none,
    // one from another CA, or a mesh one for another identity is refused.
    let addr: SocketAddr = format!("{gw_ip}:8443").parse().unwrap();
    let get = |identity: Option<(&str, &str)>| {
        https_get("", "ratings.example.com", addr, "/ratings/0", identity)
    };
    let outsider = Pki::new("not the mesh CA");
    let (ocert, okey) = outsider.issue(&["ratings.example.com"]);
    let (mcert, mkey) = mesh_identity(&mesh, "spiffe://cluster.local/ns/default/sa/sleep");
    let (pcert, pkey) = mesh_identity(
        &mesh,
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
    );
    for (who, identity) in [
        ("no certificate", None),
        ("another CA", Some((ocert.as_str(), okey.as_str()))),
        ("another identity", Some((mcert.as_str(), mkey.as_str()))),
    ] {
        let r = get(identity);
        assert!(r.is_err(), "ISTIO_MUTUAL served {who}: {r:?}");
    }
    // The named identity, from the mesh CA, is served (not only the sidecar).
    let (status, body) = get(Some((&pcert, &pkey))).expect("the named mesh identity");
    assert_eq!(status, 200, "{body}");

    // AUTO_PASSTHROUGH: the sidecar's mTLS, with ratings' SNI, goes through
    // the gateway untouched to ratings' sidecar, which terminates it.
    wait_until("ratings through the AUTO_PASSTHROUGH server", || {
        ratings("http://ratings.remote.example:9080/ratings/0")
    });
    let sni_dnat = mesh.envoy_stat(
        GATEWAY_HOST,
        "cluster.outbound_.9080_._.ratings.default.svc.cluster.local.upstream_cx_total",
    );
    assert!(sni_dnat >= 1, "{sni_dnat}");
    // Only mesh mTLS gets a filter chain: TLS without Istio's ALPN, none.
    let eastwest: SocketAddr = format!("{gw_ip}:15443").parse().unwrap();
    let plain = tls_connect(
        "",
        "outbound_.9080_._.ratings.default.svc.cluster.local",
        eastwest,
        None,
        &[],
    );
    assert!(
        plain.is_err(),
        "AUTO_PASSTHROUGH took TLS without mesh ALPN"
    );
    // The gateway serves its own certificate (SDS `default`, the root as
    // `ROOTCA`) and has the SNI-DNAT cluster, with no TLS of its own.
    let clusters: Value =
        serde_json::from_str(&mesh.envoy_admin(GATEWAY_HOST, "/clusters?format=json")).unwrap();
    let sni_dnat = clusters["cluster_statuses"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["name"] == "outbound_.9080_._.ratings.default.svc.cluster.local")
        })
        .cloned()
        .expect("SNI-DNAT cluster on the gateway");
    assert_eq!(
        sni_dnat["host_statuses"][0]["address"]["socket_address"]["address"],
        format!("127.{net}.0.16"),
        "{sni_dnat}"
    );
    let dump: Value = serde_json::from_str(&mesh.envoy_admin(
        GATEWAY_HOST,
        "/config_dump?resource=dynamic_active_clusters",
    ))
    .unwrap();
    let cluster = dump["configs"]
        .as_array()
        .and_then(|c| {
            c.iter().find(|c| {
                c["cluster"]["name"] == "outbound_.9080_._.ratings.default.svc.cluster.local"
            })
        })
        .map(|c| c["cluster"].clone())
        .expect("SNI-DNAT cluster in the config dump");
    assert!(cluster.get("transport_socket").is_none(), "{cluster}");
    assert!(
        cluster.get("transport_socket_matches").is_none(),
        "{cluster}"
    );
    let secrets = mesh.envoy_admin(GATEWAY_HOST, "/config_dump?resource=dynamic_active_secrets");
    assert!(secrets.contains("\"name\": \"default\""), "{secrets}");
    assert!(secrets.contains("\"name\": \"ROOTCA\""));
}
