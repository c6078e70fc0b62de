//! Egress with real Envoy: "external" services are local servers on
//! loopback addresses. A sidecar reaches hosts outside the registry under
//! ALLOW_ANY (through the dynamic forward proxy) and not under REGISTRY_ONLY
//! (502); MESH_EXTERNAL ServiceEntries (DNS resolved by Envoy, STATIC) are
//! reachable either way; DestinationRules originate TLS (SIMPLE, MUTUAL)
//! with `credentialName` from `--credentials-dir`; and Istio's egress
//! gateway task sends mesh traffic for an external host through a stock
//! Envoy gateway.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pki::{Pki, write_credential};
use common::{Mesh, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 224;
/// The sidecar the requests leave through (productpage-v1, 127.N.0.11).
const CLIENT: u8 = 11;
/// Host number of the egress gateway (127.N.0.40).
const EGRESS_HOST: u8 = 40;

/// What an external server saw of each request: the peer, and for TLS
/// servers the SNI and whether the client sent a certificate.
#[derive(Clone, Debug, Default)]
struct Seen {
    peer: Option<SocketAddr>,
    sni: Option<String>,
    client_cert: bool,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Reads one request head and answers `name` (connection closed after).
fn answer(conn: &mut impl ReadWrite, name: &str) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
        name.len()
    );
    conn.write_all(resp.as_bytes()).is_ok()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A plain HTTP server on `listener` answering its `name`.
fn http_server(listener: TcpListener, name: &'static str) -> Log {
    let log = Log::default();
    let seen = Arc::clone(&log);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let peer = conn.peer_addr().ok();
            if answer(&mut conn, name) {
                seen.lock().unwrap().push(Seen {
                    peer,
                    ..Default::default()
                });
            }
        }
    });
    log
}

/// A TLS server on `addr` with `cert`/`key`, requiring a client certificate
/// signed by `client_ca` when given, answering its `name`.
fn tls_server(
    addr: &str,
    (cert, key): (String, String),
    client_ca: Option<&str>,
    name: &'static str,
) -> Log {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = Arc::new(builder.with_single_cert(chain, key).unwrap());
    let listener = TcpListener::bind(addr).unwrap();
    let log = Log::default();
    let seen = Arc::clone(&log);
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let peer = sock.peer_addr().ok();
            sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            if answer(&mut tls, name) {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                seen.lock().unwrap().push(Seen {
                    peer,
                    sni: tls.conn.server_name().map(str::to_string),
                    client_cert: tls.conn.peer_certificates().is_some(),
                });
            }
        }
    });
    log
}

/// Status and body of a GET of `url` through the client's sidecar.
fn get(mesh: &Mesh, url: &str) -> (u16, String) {
    let r = mesh.via_sidecar(CLIENT, url, &[]);
    (r.status, r.body)
}

fn external_config(net: u8, dns_port: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns-external}}
spec:
  hosts: [dns.external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: localhost, ports: {{http: {dns_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: static-external}}
spec:
  hosts: [static.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.{net}.2.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure-external}}
spec:
  hosts: [secure.external.test, wrong-san.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP, targetPort: 8443}}]
  endpoints: [{{address: 127.{net}.2.4}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: mtls-external}}
spec:
  hosts: [mtls.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP, targetPort: 8443}}]
  endpoints: [{{address: 127.{net}.2.5}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure-external}}
spec:
  host: secure.external.test
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 8080}}
      tls:
        mode: SIMPLE
        credentialName: secure-ca
        sni: secure.external.test
        subjectAltNames: [secure.external.test]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: wrong-san}}
spec:
  host: wrong-san.external.test
  trafficPolicy:
    tls:
      mode: SIMPLE
      credentialName: secure-ca
      sni: secure.external.test
      subjectAltNames: [someone-else.external.test]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: mtls-external}}
spec:
  host: mtls.external.test
  trafficPolicy:
    tls: {{mode: MUTUAL, credentialName: mtls-client, sni: mtls.external.test}}
"#
    )
}

#[test]
fn outbound_policy_service_entries_and_tls_origination() {
    let net = next_net(NET_BASE);
    let mut mesh = Mesh::start(net, &[], false);
    let creds = mesh.dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let server_pki = Pki::new("external servers CA");
    let client_pki = Pki::new("mesh clients CA");
    // SIMPLE origination needs only the CA that verifies the server.
    std::fs::write(creds.join("secure-ca.ca"), &server_pki.ca_pem).unwrap();
    let (ccert, ckey) = client_pki.issue(&["client.example.com"]);
    write_credential(
        &creds,
        "mtls-client",
        &ccert,
        &ckey,
        Some(&server_pki.ca_pem),
    );
    // Named by no DestinationRule: no sidecar gets it.
    let (ucert, ukey) = client_pki.issue(&["unused.example.com"]);
    write_credential(&creds, "unused", &ucert, &ukey, None);
    mesh.serve_args = vec!["--credentials-dir".into(), creds.display().to_string()];
    mesh.stop_pilotfish();
    mesh.start_pilotfish();

    let static_log = http_server(
        TcpListener::bind(format!("127.{net}.2.1:8080")).unwrap(),
        "static",
    );
    let dns_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dns_port = dns_listener.local_addr().unwrap().port();
    let dns_log = http_server(dns_listener, "dns");
    let unknown_log = http_server(
        TcpListener::bind(format!("127.{net}.2.3:8080")).unwrap(),
        "unknown",
    );
    let secure_log = tls_server(
        &format!("127.{net}.2.4:8443"),
        server_pki.issue(&["secure.external.test"]),
        None,
        "secure",
    );
    let mtls_log = tls_server(
        &format!("127.{net}.2.5:8443"),
        server_pki.issue(&["mtls.external.test"]),
        Some(&client_pki.ca_pem),
        "mtls",
    );
    mesh.write("external.yaml", &external_config(net, dns_port));
    mesh.start_envoy("productpage-v1", CLIENT);
    mesh.wait_envoy_ready(CLIENT);

    // ALLOW_ANY (the default): a host outside the registry is reached where
    // its Host header points, by IP and by a name resolved locally.
    let unknown = format!("http://127.{net}.2.3:8080/anything");
    assert_eq!(get(&mesh, &unknown), (200, "unknown".into()));
    assert_eq!(unknown_log.lock().unwrap().len(), 1);
    wait_until(
        "a name outside the registry resolved by the sidecar",
        || get(&mesh, &format!("http://localhost:{dns_port}/")).0 == 200,
    );
    assert_eq!(
        get(&mesh, &format!("http://localhost:{dns_port}/")),
        (200, "dns".into())
    );

    // MESH_EXTERNAL ServiceEntries: STATIC and DNS (Envoy resolves `localhost`).
    wait_until("the ServiceEntries routed", || {
        get(&mesh, "http://static.external.test:8080/").0 == 200
    });
    assert_eq!(
        get(&mesh, "http://static.external.test:8080/"),
        (200, "static".into())
    );
    let dns_before = dns_log.lock().unwrap().len();
    assert_eq!(
        get(&mesh, "http://dns.external.test:8080/"),
        (200, "dns".into())
    );
    assert!(!static_log.lock().unwrap().is_empty());
    assert_eq!(dns_log.lock().unwrap().len(), dns_before + 1);

    // TLS origination: the app speaks plain HTTP, the sidecar TLS with the
    // DestinationRule's SNI, verifying the server with the credential's CA.
    wait_until("TLS origination to secure.external.test", || {
        get(&mesh, "http://secure.external.test:8080/") == (200, "secure".into())
    });
    let seen = secure_log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.sni.as_deref(), Some("secure.external.test"));
    assert!(!seen.client_cert);
    // MUTUAL: the client certificate comes from the credential too.
    wait_until("mutual TLS origination to mtls.external.test", || {
        get(&mesh, "http://mtls.external.test:8080/") == (200, "mtls".into())
    });
    let seen = mtls_log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.sni.as_deref(), Some("mtls.external.test"));
    assert!(seen.client_cert);
    // A server whose certificate lacks the subjectAltNames is refused.
    let before = secure_log.lock().unwrap().len();
    let (status, _) = get(&mesh, "http://wrong-san.external.test:8080/");
    assert_eq!(status, 503);
    assert_eq!(secure_log.lock().unwrap().len(), before);

    // The sidecar holds the credentials its DestinationRules name, no other.
    let dump = mesh.envoy_admin(CLIENT, "/config_dump?include_eds");
    assert!(dump.contains("credential://secure-ca-cacert"));
    assert!(dump.contains("credential://mtls-client\""));
    assert!(!dump.contains("credential://unused"));

    // REGISTRY_ONLY from the namespace's Sidecar: unknown hosts get 502,
    // ServiceEntry hosts still work.
    mesh.write(
        "sidecar.yaml",
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
",
    );
    wait_until("REGISTRY_ONLY blocks the unknown host", || {
        get(&mesh, &unknown).0 == 502
    });
    let reached = unknown_log.lock().unwrap().len();
    assert_eq!(get(&mesh, &unknown).0, 502);
    assert_eq!(
        unknown_log.lock().unwrap().len(),
        reached,
        "nothing got through"
    );
    assert_eq!(
        get(&mesh, "http://static.external.test:8080/"),
        (200, "static".into())
    );
    assert_eq!(
        get(&mesh, "http://dns.external.test:8080/"),
        (200, "dns".into())
    );
    // And back: the Sidecar removed, the mesh-wide ALLOW_ANY again.
    mesh.remove("sidecar.yaml");
    wait_until("ALLOW_ANY again", || get(&mesh, &unknown).0 == 200);
}

fn egress_gateway_config(net: u8, port: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external}}
spec:
  hosts: [external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: localhost, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: istio-egressgateway}}
spec:
  address: 127.{net}.0.{EGRESS_HOST}
  labels: {{istio: egressgateway, app: istio-egressgateway}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: istio-egressgateway}}
spec:
  hosts: [istio-egressgateway.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{istio: egressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [external.test]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway-for-external}}
spec:
  host: istio-egressgateway.default.svc.cluster.local
  subsets: [{{name: external}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct-external-through-egress-gateway}}
spec:
  hosts: [external.test]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{{gateways: [mesh], port: 8080}}]
    route:
    - destination: {{host: istio-egressgateway.default.svc.cluster.local, subset: external, port: {{number: 8080}}}}
  - match: [{{gateways: [istio-egressgateway], port: 8080}}]
    route:
    - destination: {{host: external.test, port: {{number: 8080}}}}
"#
    )
}

#[test]
fn egress_gateway_under_registry_only() {
    let net = next_net(NET_BASE);
    let mut mesh = Mesh::start(net, &[], false);
    mesh.serve_args = vec!["--outbound-traffic-policy".into(), "REGISTRY_ONLY".into()];
    mesh.stop_pilotfish();
    mesh.start_pilotfish();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let external = http_server(listener, "external");
    let unknown = http_server(
        TcpListener::bind(format!("127.{net}.2.3:8080")).unwrap(),
        "unknown",
    );
    mesh.write("egress.yaml", &egress_gateway_config(net, port));
    mesh.start_envoy("productpage-v1", CLIENT);
    let config = mesh.config.display().to_string();
    mesh.start_envoy_with(
        "istio-egressgateway",
        EGRESS_HOST,
        &["--gateway", "--config-dir", &config],
        |_| {},
    );
    mesh.wait_envoy_ready(CLIENT);
    mesh.wait_envoy_ready(EGRESS_HOST);

    // Mesh-wide REGISTRY_ONLY (the serve flag): no way out but the registry.
    let (status, _) = get(&mesh, &format!("http://127.{net}.2.3:8080/"));
    assert_eq!(status, 502);
    assert!(unknown.lock().unwrap().is_empty());

    // The sidecar sends external.test to the gateway, the gateway to the host.
    wait_until("external.test through the egress gateway", || {
        get(&mesh, "http://external.test:8080/") == (200, "external".into())
    });
    for _ in 0..4 {
        assert_eq!(
            get(&mesh, "http://external.test:8080/"),
            (200, "external".into())
        );
    }
    let to_gateway = mesh.envoy_stat(
        CLIENT,
        "cluster.outbound|8080|external|istio-egressgateway.default.svc.cluster.local.upstream_rq_total",
    );
    let to_external = mesh.envoy_stat(
        EGRESS_HOST,
        "cluster.outbound|8080||external.test.upstream_rq_total",
    );
    let served = external.lock().unwrap().len() as u64;
    assert!(served >= 5, "{served}");
    assert_eq!(to_gateway, served, "every request went to the gateway");
    assert_eq!(
        to_external, served,
        "every request left through the gateway"
    );
    // The sidecar never opened a connection to the external host itself.
    assert_eq!(
        mesh.envoy_stat(
            CLIENT,
            "cluster.outbound|8080||external.test.upstream_rq_total"
        ),
        0
    );
    // And the external server saw every request come from the gateway's address.
    let gateway_ip = format!("127.{net}.0.{EGRESS_HOST}");
    for seen in external.lock().unwrap().iter() {
        assert_eq!(
            seen.peer.map(|p| p.ip().to_string()),
            Some(gateway_ip.clone())
        );
    }
}
