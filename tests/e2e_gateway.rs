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

/// One HTTPS GET of `path` from `addr` with SNI and Host `host`, trusting
/// only `ca_pem`, optionally with a client certificate: (status, body), or
/// the handshake or I/O error. (rustls directly: the tests' reqwest has no
/// TLS backend.)
fn https_get(
    ca_pem: &str,
    host: &str,
    addr: SocketAddr,
    path: &str,
    identity: Option<(&str, &str)>,
) -> Result<(u16, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    use std::sync::Arc;

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
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
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
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
