//! Sidecar `ingress` listeners with real Envoy: a workload whose app listens
//! on another port than its service's is reached through the listener the
//! Sidecar declares (`defaultEndpoint`), and its Envoy holds that listener.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use common::pki::Pki;
use common::{Mesh, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 250;

/// The app's answer, so a response is known to come from it.
const APP_BODY: &str = "ratings app on 8080";

/// A minimal HTTP/1.1 app on `addr` answering every request with `APP_BODY`
/// (keep-alive, as Envoy's upstream connections are).
fn start_http_app(addr: &str) {
    let server = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut conn = conn;
                loop {
                    // Read one request head (these requests have no body).
                    let mut line = String::new();
                    let mut got = false;
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        got = true;
                        if line == "\r\n" {
                            break;
                        }
                        line.clear();
                    }
                    if !got {
                        return;
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{APP_BODY}",
                        APP_BODY.len()
                    );
                    if conn.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// GET `path` over TLS (trusting only `ca_pem`, checking `name`) from
/// `addr`: the raw HTTP response. (rustls directly: the tests' reqwest has
/// no TLS backend.)
fn tls_get(ca_pem: &str, name: &str, addr: &str, path: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::Read;
    use std::sync::Arc;

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), server).map_err(|e| e.to_string())?;
    let sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // Envoy may close without close_notify after `Connection: close`.
    if let Err(e) = tls.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(e.to_string());
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// The listeners Envoy on `host` serves with (not those draining), from
/// its admin `/config_dump`.
fn active_listeners(mesh: &Mesh, host: u8) -> Vec<serde_json::Value> {
    let dump = mesh.envoy_admin(host, "/config_dump?resource=dynamic_listeners");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("config_dump JSON");
    dump["configs"]
        .as_array()
        .expect("listeners")
        .iter()
        .filter_map(|l| l.get("active_state").map(|a| a["listener"].clone()))
        .collect()
}

#[test]
fn sidecar_ingress_listener_forwards_to_the_default_endpoint() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    let net = mesh.net;
    // ratings-v1 (host 16) with its app on 8080, not the service's 9080;
    // productpage's sidecar (host 11) is the client.
    start_http_app(&format!("127.{net}.1.16:8080"));
    mesh.start_envoy("ratings-v1", 16);
    mesh.start_envoy("productpage-v1", 11);
    mesh.wait_envoy_ready(16);
    mesh.wait_envoy_ready(11);
    let call = |m: &Mesh| m.via_sidecar(11, "http://ratings:9080/ratings/0", &[]);
    // Without a Sidecar the inbound listener forwards to the app address on
    // 9080, where nothing listens.
    wait_until("ratings' service-derived listener", || {
        mesh.envoy_admin(16, "/clusters")
            .contains(&format!("inbound|9080||::127.{net}.1.16:9080::"))
    });
    assert_eq!(call(&mesh).status, 503);

    // A server certificate for the TLS ingress listener, from files.
    let pki = Pki::new("ratings test CA");
    let (cert, key) = pki.issue(&["ratings.example.com"]);
    let cert_path = mesh.dir.path().join("ratings.pem");
    let key_path = mesh.dir.path().join("ratings-key.pem");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let sidecar = format!(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: ratings, namespace: default}}
spec:
  workloadSelector:
    labels: {{app: ratings}}
  inboundConnectionPool: {{tcp: {{maxConnections: 50}}}}
  ingress:
  - port: {{number: 9080, protocol: HTTP, name: http}}
    defaultEndpoint: 0.0.0.0:8080
    connectionPool: {{tcp: {{maxConnections: 7}}}}
  - port: {{number: 9081, protocol: TCP, name: tcp}}
    defaultEndpoint: 0.0.0.0:8080
  - port: {{number: 9443, protocol: HTTPS, name: https}}
    defaultEndpoint: 0.0.0.0:8080
    tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}
---
# The listener's own TLS applies where mesh mTLS is off for its port.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: ratings, namespace: default}}
spec:
  selector: {{matchLabels: {{app: ratings}}}}
  portLevelMtls:
    \"9443\": {{mode: DISABLE}}
",
        cert_path.display(),
        key_path.display()
    );
    mesh.write("sidecar-ratings.yaml", &sidecar);
    wait_until("ratings' ingress clusters and listeners", || {
        mesh.envoy_admin(16, "/clusters")
            .contains(&format!("inbound|9080||::127.{net}.1.16:8080::"))
            && active_listeners(&mesh, 16)
                .iter()
                .any(|l| l["name"] == format!("127.{net}.0.16_9443").as_str())
    });
    // Mesh traffic (mTLS from productpage's sidecar) reaches the app.
    for _ in 0..3 {
        let r = call(&mesh);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, APP_BODY);
    }
    // The TCP ingress listener, on a port no service declares, takes
    // plaintext (PERMISSIVE) and forwards the bytes to the same app.
    let direct = mesh.get_text(&format!("http://127.{net}.0.16:9081/anything"));
    assert_eq!(direct, APP_BODY);

    // The HTTPS ingress listener terminates TLS with the Sidecar's
    // certificate and serves the app over HTTP.
    let tls = tls_get(
        &pki.ca_pem,
        "ratings.example.com",
        &format!("127.{net}.0.16:9443"),
        "/ratings/0",
    )
    .expect("TLS to the ingress listener");
    assert!(tls.starts_with("HTTP/1.1 200"), "{tls}");
    assert!(tls.ends_with(APP_BODY), "{tls}");

    // Envoy's config: both listeners on ratings' address, named as Istio
    // names them, each to its `inbound|PORT||` cluster.
    let listeners = active_listeners(&mesh, 16);
    for (port, filter) in [
        (9080, "envoy.filters.network.http_connection_manager"),
        (9081, "envoy.filters.network.tcp_proxy"),
    ] {
        let name = format!("127.{net}.0.16_{port}");
        let l = listeners
            .iter()
            .find(|l| l["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no listener {name} in {listeners:?}"));
        assert_eq!(l["address"]["socket_address"]["port_value"], port, "{l}");
        let text = l.to_string();
        assert!(text.contains(filter), "{text}");
        assert!(text.contains(&format!("inbound|{port}||")), "{text}");
    }
    let clusters = mesh.envoy_admin(16, "/clusters");
    assert!(
        clusters.contains(&format!("inbound|9081||::127.{net}.1.16:8080::")),
        "{clusters}"
    );
    // Connection pools: the ingress listener's own, else the Sidecar's.
    for (cluster, max) in [("inbound|9080||", 7), ("inbound|9081||", 50)] {
        let line = format!("{cluster}::default_priority::max_connections::{max}\n");
        assert!(clusters.contains(&line), "{line} in {clusters}");
    }

    // A bad defaultEndpoint: the error names file, resource and field; the
    // last good Sidecar keeps serving.
    mesh.write(
        "sidecar-ratings.yaml",
        &sidecar.replacen("0.0.0.0:8080", "10.1.2.3:8080", 1),
    );
    wait_until("the defaultEndpoint error to be reported", || {
        mesh.get_text(&mesh.admin_url("/debug/config_errors"))
            .contains("defaultEndpoint")
    });
    let errors = mesh.get_json(&mesh.admin_url("/debug/config_errors"));
    let e = &errors["errors"][0];
    assert!(
        e["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("sidecar-ratings.yaml")),
        "{errors}"
    );
    assert_eq!(e["resource"], "Sidecar default/ratings", "{errors}");
    assert_eq!(e["path"], "spec.ingress[0].defaultEndpoint", "{errors}");
    for _ in 0..3 {
        assert_eq!(call(&mesh).body, APP_BODY);
    }

    // Without the Sidecar, the service-derived listener (to 9080) is back.
    mesh.remove("sidecar-ratings.yaml");
    wait_until("ratings' listeners to follow the service again", || {
        !active_listeners(&mesh, 16)
            .iter()
            .any(|l| l["name"] == format!("127.{net}.0.16_9081").as_str())
    });
    wait_until("calls to fail again (nothing on 9080)", || {
        call(&mesh).status == 503
    });
}
