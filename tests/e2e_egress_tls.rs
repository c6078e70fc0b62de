//! Egress with real Envoy, part two: Istio's "Egress Gateways with TLS
//! Origination" tasks (the app sends plain HTTP, its sidecar sends it over
//! mesh mTLS to the egress gateway, and the gateway originates TLS, SIMPLE
//! and MUTUAL, with `credentialName` from `--credentials-dir`), and a
//! Sidecar's `outboundTrafficPolicy.egressProxy` taking the traffic for
//! hosts outside the registry instead of the dynamic forward proxy.
//! "External" servers are local servers on loopback addresses.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pki::{Pki, write_credential};
use common::{Mesh, next_net, wait_until};
use serde_json::Value;

/// 127.N blocks used by this test binary (two meshes: 238 and 239).
const NET_BASE: u8 = 238;
/// The sidecar the requests leave through (productpage-v1, 127.N.0.11).
const CLIENT: u8 = 11;
/// Host number of the egress gateway (127.N.0.40).
const EGRESS_HOST: u8 = 40;

/// What a stand-in server saw of one request: the peer, the Host header,
/// and for TLS servers the SNI and whether the client sent a certificate.
#[derive(Clone, Debug, Default)]
struct Seen {
    peer: Option<SocketAddr>,
    host: Option<String>,
    sni: Option<String>,
    client_cert: bool,
}

type Log = Arc<Mutex<Vec<Seen>>>;

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Reads one request head and answers `name` (connection closed after);
/// returns the Host header, None when no request came.
fn answer(conn: &mut impl ReadWrite, name: &str) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let host = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
        name.len()
    );
    conn.write_all(resp.as_bytes()).ok()?;
    Some(host)
}

/// A plain HTTP server on `addr` answering its `name`.
fn http_server(addr: &str, name: &'static str) -> Log {
    let listener = TcpListener::bind(addr).unwrap();
    let log = Log::default();
    let seen = Arc::clone(&log);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let peer = conn.peer_addr().ok();
            if let Some(host) = answer(&mut conn, name) {
                seen.lock().unwrap().push(Seen {
                    peer,
                    host: Some(host),
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
            if let Some(host) = answer(&mut tls, name) {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                seen.lock().unwrap().push(Seen {
                    peer,
                    host: Some(host),
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

/// Istio's task, for two external hosts: `api.external.test` (SIMPLE
/// origination, CA from credential `api-ca`, a rule in the client's
/// namespace exported everywhere) and `mtls.external.test` (MUTUAL, key
/// pair and CA from credential `client-credential`, a rule in the gateway's
/// namespace `istio-system` exported there only), each on port 80 (plain
/// HTTP from the app) and 443 (HTTPS, where the gateway sends it).
fn tls_origination_config(net: u8) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api-external}}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http-port, protocol: HTTP}}
  - {{number: 443, name: https-port-for-tls-origination, protocol: HTTPS}}
  endpoints: [{{address: 127.{net}.2.4}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: mtls-external}}
spec:
  hosts: [mtls.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http-port, protocol: HTTP}}
  - {{number: 443, name: https-port-for-tls-origination, protocol: HTTPS}}
  endpoints: [{{address: 127.{net}.2.5}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  address: 127.{net}.0.{EGRESS_HOST}
  labels: {{istio: egressgateway, app: istio-egressgateway}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http2, protocol: HTTP2}}]
  workloadSelector: {{labels: {{istio: egressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 80, name: https-port-for-tls-origination, protocol: HTTPS}}
    hosts: [api.external.test, mtls.external.test]
    tls: {{mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway-for-external}}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: api
    trafficPolicy:
      portLevelSettings:
      - port: {{number: 80}}
        tls: {{mode: ISTIO_MUTUAL, sni: api.external.test}}
  - name: mtls
    trafficPolicy:
      portLevelSettings:
      - port: {{number: 80}}
        tls: {{mode: ISTIO_MUTUAL, sni: mtls.external.test}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct-api-through-egress-gateway}}
spec:
  hosts: [api.external.test]
  gateways: [istio-system/istio-egressgateway, mesh]
  http:
  - match: [{{gateways: [mesh], port: 80}}]
    route:
    - destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, subset: api, port: {{number: 80}}}}
  - match: [{{gateways: [istio-system/istio-egressgateway], port: 80}}]
    route:
    - destination: {{host: api.external.test, port: {{number: 443}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct-mtls-through-egress-gateway}}
spec:
  hosts: [mtls.external.test]
  gateways: [istio-system/istio-egressgateway, mesh]
  http:
  - match: [{{gateways: [mesh], port: 80}}]
    route:
    - destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, subset: mtls, port: {{number: 80}}}}
  - match: [{{gateways: [istio-system/istio-egressgateway], port: 80}}]
    route:
    - destination: {{host: mtls.external.test, port: {{number: 443}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: originate-tls-for-api}}
spec:
  host: api.external.test
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 443}}
      tls:
        mode: SIMPLE
        credentialName: api-ca
        sni: api.external.test
        subjectAltNames: [api.external.test]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: originate-mtls-for-mtls, namespace: istio-system}}
spec:
  host: mtls.external.test
  exportTo: [.]
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 443}}
      tls: {{mode: MUTUAL, credentialName: client-credential, sni: mtls.external.test}}
"#
    )
}

/// The cluster named `name` in an Envoy `/config_dump`.
fn dumped_cluster<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump["configs"]
        .as_array()?
        .iter()
        .filter_map(|c| c["dynamic_active_clusters"].as_array())
        .flatten()
        .map(|c| &c["cluster"])
        .find(|c| c["name"] == name)
}

#[test]
fn egress_gateway_originates_simple_and_mutual_tls() {
    let net = next_net(NET_BASE);
    let mut mesh = Mesh::start(net, &[], false);
    let creds = mesh.dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let server_pki = Pki::new("external servers CA");
    let client_pki = Pki::new("egress clients CA");
    // SIMPLE origination needs only the CA that verifies the server.
    std::fs::write(creds.join("api-ca.ca"), &server_pki.ca_pem).unwrap();
    let (ccert, ckey) = client_pki.issue(&["egress.example.com"]);
    write_credential(
        &creds,
        "client-credential",
        &ccert,
        &ckey,
        Some(&server_pki.ca_pem),
    );
    mesh.serve_args = vec!["--credentials-dir".into(), creds.display().to_string()];
    mesh.stop_pilotfish();
    mesh.start_pilotfish();

    let api_log = tls_server(
        &format!("127.{net}.2.4:443"),
        server_pki.issue(&["api.external.test"]),
        None,
        "api",
    );
    let mtls_log = tls_server(
        &format!("127.{net}.2.5:443"),
        server_pki.issue(&["mtls.external.test"]),
        Some(&client_pki.ca_pem),
        "mtls",
    );
    mesh.write("egress-tls.yaml", &tls_origination_config(net));
    mesh.start_envoy("productpage-v1", CLIENT);
    let config = mesh.config.display().to_string();
    mesh.start_envoy_with(
        "istio-egressgateway",
        EGRESS_HOST,
        &[
            "--gateway",
            "--config-dir",
            &config,
            "--namespace",
            "istio-system",
        ],
        |_| {},
    );
    mesh.wait_envoy_ready(CLIENT);
    mesh.wait_envoy_ready(EGRESS_HOST);

    // SIMPLE: plain HTTP from the app, mTLS to the gateway, TLS from the
    // gateway with the DestinationRule's SNI, verified by the credential's CA.
    wait_until("api.external.test through the egress gateway", || {
        get(&mesh, "http://api.external.test/") == (200, "api".into())
    });
    // MUTUAL: the gateway presents the credential's client certificate.
    wait_until("mtls.external.test through the egress gateway", || {
        get(&mesh, "http://mtls.external.test/") == (200, "mtls".into())
    });
    let gateway_ip = format!("127.{net}.0.{EGRESS_HOST}");
    for (log, host, client_cert) in [
        (&api_log, "api.external.test", false),
        (&mtls_log, "mtls.external.test", true),
    ] {
        let seen = log.lock().unwrap().clone();
        assert!(!seen.is_empty(), "{host} saw nothing");
        for s in seen {
            // Every TLS connection came from the gateway, none from the sidecar.
            assert_eq!(
                s.peer.map(|p| p.ip().to_string()).as_deref(),
                Some(gateway_ip.as_str()),
                "{host}: {s:?}"
            );
            assert_eq!(s.sni.as_deref(), Some(host), "{s:?}");
            assert_eq!(s.client_cert, client_cert, "{host}: {s:?}");
            assert_eq!(s.host.as_deref(), Some(host), "{s:?}");
        }
    }
    // The sidecar reached the gateway over mesh mTLS (its ISTIO_MUTUAL
    // server handshook) and never the external hosts' 443 itself.
    assert!(
        mesh.envoy_stat(
            EGRESS_HOST,
            &format!("listener.{gateway_ip}_80.ssl.handshake")
        ) >= 2
    );
    for host in ["api.external.test", "mtls.external.test"] {
        assert_eq!(
            mesh.envoy_stat(
                CLIENT,
                &format!("cluster.outbound|443||{host}.upstream_cx_total")
            ),
            0,
            "{host}"
        );
        // The gateway's upstream TLS handshakes with the external host.
        assert!(
            mesh.envoy_stat(
                EGRESS_HOST,
                &format!("cluster.outbound|443||{host}.ssl.handshake")
            ) >= 1,
            "{host}"
        );
    }

    // The gateway's clusters carry the TLS transport socket with the
    // credentials over SDS, and the gateway holds those credentials.
    let dump: Value = serde_json::from_str(&mesh.envoy_admin(EGRESS_HOST, "/config_dump")).unwrap();
    for (host, secret) in [
        ("api.external.test", "credential://api-ca-cacert"),
        ("mtls.external.test", "credential://client-credential"),
    ] {
        let name = format!("outbound|443||{host}");
        let cluster = dumped_cluster(&dump, &name).unwrap_or_else(|| panic!("{name}"));
        let socket = &cluster["transport_socket"];
        assert_eq!(socket["name"], "envoy.transport_sockets.tls", "{cluster}");
        assert_eq!(socket["typed_config"]["sni"], host, "{cluster}");
        assert!(socket.to_string().contains(secret), "{cluster}");
    }
    let secrets = active_secrets(&dump);
    for secret in [
        "credential://api-ca-cacert",
        "credential://client-credential",
        "credential://client-credential-cacert",
    ] {
        assert!(
            secrets.iter().any(|s| s == secret),
            "gateway lacks {secret}: {secrets:?}"
        );
    }
    // The sidecar (namespace `default`) gets its namespace's rule's CA,
    // never the gateway's client key pair.
    let dump: Value = serde_json::from_str(&mesh.envoy_admin(CLIENT, "/config_dump")).unwrap();
    let secrets = active_secrets(&dump);
    assert!(
        secrets.iter().any(|s| s == "credential://api-ca-cacert"),
        "{secrets:?}"
    );
    assert!(
        !secrets
            .iter()
            .any(|s| s.starts_with("credential://client-credential")),
        "{secrets:?}"
    );
}

/// The names of the SDS secrets an Envoy `/config_dump` shows as loaded.
fn active_secrets(dump: &Value) -> Vec<String> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["dynamic_active_secrets"].as_array())
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect()
}

fn egress_proxy_config(net: u8) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: egress-proxy}}
spec:
  hosts: [egress-proxy.example.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 3128, name: http-proxy, protocol: HTTP}}]
  endpoints: [{{address: 127.{net}.2.7}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: known-external}}
spec:
  hosts: [known.external.test]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.{net}.2.1}}]
"#
    )
}

const EGRESS_PROXY_SIDECAR: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy:
      host: egress-proxy.example.test
      port: {number: 3128}
";

#[test]
fn sidecar_egress_proxy_takes_unknown_hosts() {
    let net = next_net(NET_BASE);
    let mut mesh = Mesh::start(net, &[], false);
    let unknown = http_server(&format!("127.{net}.2.3:8080"), "unknown");
    let known = http_server(&format!("127.{net}.2.1:8080"), "known");
    let proxy = http_server(&format!("127.{net}.2.7:3128"), "egress-proxy");
    mesh.write("egress-proxy.yaml", &egress_proxy_config(net));
    mesh.start_envoy("productpage-v1", CLIENT);
    mesh.wait_envoy_ready(CLIENT);
    let unknown_url = format!("http://127.{net}.2.3:8080/anything");

    // Without an egressProxy, ALLOW_ANY reaches the host itself.
    wait_until("the unknown host through PassthroughCluster", || {
        get(&mesh, &unknown_url) == (200, "unknown".into())
    });

    // With one, the same request goes to the egress proxy instead, with its
    // Host header, and never to the host or the dynamic forward proxy.
    mesh.write("sidecar.yaml", EGRESS_PROXY_SIDECAR);
    wait_until("the unknown host through the egress proxy", || {
        get(&mesh, &unknown_url) == (200, "egress-proxy".into())
    });
    let reached = unknown.lock().unwrap().len();
    let passthrough = "cluster.PassthroughCluster.upstream_rq_total";
    let through_dfp = mesh.envoy_stat(CLIENT, passthrough);
    let to_proxy = "cluster.outbound|3128||egress-proxy.example.test.upstream_rq_total";
    let proxied = mesh.envoy_stat(CLIENT, to_proxy);
    for path in ["a", "b", "c"] {
        let url = format!("http://127.{net}.2.3:8080/{path}");
        assert_eq!(get(&mesh, &url), (200, "egress-proxy".into()));
        let unknown_name = format!("http://unknown-{path}.example.test/");
        assert_eq!(get(&mesh, &unknown_name), (200, "egress-proxy".into()));
    }
    assert_eq!(mesh.envoy_stat(CLIENT, to_proxy), proxied + 6);
    assert_eq!(mesh.envoy_stat(CLIENT, passthrough), through_dfp);
    assert_eq!(unknown.lock().unwrap().len(), reached, "the host itself");
    let hosts: Vec<String> = proxy
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.host.clone())
        .collect();
    assert!(hosts.contains(&format!("127.{net}.2.3:8080")), "{hosts:?}");
    assert!(
        hosts.contains(&"unknown-b.example.test".to_string()),
        "{hosts:?}"
    );
    // Hosts in the registry are routed as before.
    assert_eq!(
        get(&mesh, "http://known.external.test:8080/"),
        (200, "known".into())
    );
    assert_eq!(known.lock().unwrap().len(), 1);

    // The Sidecar removed: the mesh-wide ALLOW_ANY passes through again.
    mesh.remove("sidecar.yaml");
    wait_until("PassthroughCluster again", || {
        get(&mesh, &unknown_url) == (200, "unknown".into())
    });
}
