//! Outbound TCP listener conflicts and unix socket egress listeners, with
//! real Envoy: two TCP services without VIPs on one port leave the port to
//! the first in Istio's order (the oldest), report the other (log,
//! /debug/config_errors, `pilot_conflict_outbound_listener_tcp_over_current_tcp`),
//! and a Sidecar egress listener with its own bind reaches the other; an
//! egress listener bound to `unix://` takes HTTP and TCP over the socket.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::{Mesh, metric, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 6;
/// productpage-v1's sidecar: the client.
const CLIENT: u8 = 11;
/// ratings-v1's sidecar and app.
const RATINGS: u8 = 16;
/// App hosts of the TCP echo services (no sidecar: plain endpoints).
const OLD_APP: u8 = 41;
const NEW_APP: u8 = 42;

const GAUGE: &str = "pilot_conflict_outbound_listener_tcp_over_current_tcp";

/// A TCP service `name` on `port` whose one endpoint is the app on `host`.
fn tcp_service(net: u8, name: &str, created: &str, port: u16, host: u8) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.{net}.1.{host}}}]
"
    )
}

/// An echo app on `addr`: answers one line with `prefix` and the line.
fn start_echo(addr: String, prefix: &'static str) {
    let server = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut got = Vec::new();
                let mut byte = [0u8; 1];
                while !got.ends_with(b"\n") && conn.read_exact(&mut byte).is_ok() {
                    got.push(byte[0]);
                }
                let mut out = format!("{prefix} ").into_bytes();
                out.extend_from_slice(&got);
                let _ = conn.write_all(&out);
            });
        }
    });
}

/// One connection to `addr`: sends `msg`, returns what comes back until
/// the server closes.
fn exchange(addr: &str, msg: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(msg)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The same over the unix socket at `path`.
fn exchange_unix(path: &Path, msg: &[u8]) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(msg)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// An HTTP/1.1 GET for `host` and `path` over the unix socket at `socket`:
/// the status code and the body.
fn get_unix(socket: &Path, host: &str, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let response = exchange_unix(socket, request.as_bytes()).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn gauge(mesh: &Mesh) -> Option<f64> {
    metric(&mesh.metrics(), GAUGE)
}

#[test]
fn the_oldest_tcp_service_keeps_a_shared_port_and_the_other_is_reported() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    let net = mesh.net;
    // "new" sorts first by name, "old" is older: the older one wins.
    let both = tcp_service(net, "old", "2024-01-01T00:00:00Z", 9000, OLD_APP)
        + &tcp_service(net, "new", "2024-06-01T00:00:00Z", 9000, NEW_APP);
    mesh.write("echo.yaml", &both);
    start_echo(format!("127.{net}.1.{OLD_APP}:9000"), "old");
    start_echo(format!("127.{net}.1.{NEW_APP}:9000"), "new");
    mesh.start_envoy("productpage-v1", CLIENT);
    mesh.wait_envoy_ready(CLIENT);
    let at = |ip: &str| format!("127.{net}.{ip}.{CLIENT}:9000");

    wait_until("the old service on the client's 9000", || {
        exchange(&at("0"), b"hi\n").is_ok_and(|r| r == "old hi\n")
    });
    for _ in 0..3 {
        assert_eq!(exchange(&at("0"), b"again\n").unwrap(), "old again\n");
    }
    // One listener (every sidecar's own address at 9000) with a conflict.
    wait_until("the conflict gauge", || gauge(&mesh) == Some(1.0));
    let errors = mesh.get_json(&mesh.admin_url("/debug/config_errors"));
    let warnings = errors["warnings"].as_array().cloned().unwrap_or_default();
    let ours: Vec<_> = warnings
        .iter()
        .filter(|w| w["resource"] == "ServiceEntry default/new")
        .collect();
    assert_eq!(ours.len(), 1, "{errors}");
    assert_eq!(ours[0]["path"], "spec.ports[0]", "{errors}");
    assert!(ours[0]["document"].is_u64(), "{errors}");
    assert!(
        ours[0]["file"].as_str().unwrap().ends_with("echo.yaml"),
        "{errors}"
    );
    let message = ours[0]["message"].as_str().unwrap();
    assert!(
        message.contains("old.default.svc.cluster.local (first in Istio's order"),
        "{message}"
    );
    assert!(mesh.log().contains("share outbound port 9000"));

    // A Sidecar egress listener with its own bind reaches the other one;
    // the catch-all keeps the first on the client's own address.
    mesh.write(
        "sidecar.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: productpage, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: productpage}}}}
  egress:
  - port: {{number: 9000, protocol: TCP, name: tcp-new}}
    bind: 127.{net}.2.{CLIENT}
    hosts: [./new.default.svc.cluster.local]
  - hosts: [./*]
"
        ),
    );
    wait_until("the new service on its own bind", || {
        exchange(&at("2"), b"hi\n").is_ok_and(|r| r == "new hi\n")
    });
    for _ in 0..3 {
        assert_eq!(exchange(&at("2"), b"b\n").unwrap(), "new b\n");
        assert_eq!(exchange(&at("0"), b"a\n").unwrap(), "old a\n");
    }

    // Without the old service the new one takes the port: no conflict.
    mesh.remove("sidecar.yaml");
    mesh.write(
        "echo.yaml",
        &tcp_service(net, "new", "2024-06-01T00:00:00Z", 9000, NEW_APP),
    );
    wait_until("the new service on the client's 9000", || {
        exchange(&at("0"), b"hi\n").is_ok_and(|r| r == "new hi\n")
    });
    wait_until("the conflict gauge back to 0", || gauge(&mesh) == Some(0.0));
    let errors = mesh.get_json(&mesh.admin_url("/debug/config_errors"));
    assert!(!errors["warnings"].to_string().contains(GAUGE), "{errors}");
}

#[test]
fn an_egress_listener_bound_to_a_unix_socket_takes_http_and_tcp() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    let net = mesh.net;
    let http_sock = mesh.dir.path().join("http.sock");
    let tcp_sock = mesh.dir.path().join("echo.sock");
    mesh.write(
        "echo.yaml",
        &tcp_service(net, "echo", "2024-01-01T00:00:00Z", 9000, OLD_APP),
    );
    start_echo(format!("127.{net}.1.{OLD_APP}:9000"), "echo");
    mesh.write(
        "sidecar.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: productpage, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: productpage}}}}
  egress:
  - port: {{number: 0, protocol: HTTP, name: http}}
    bind: unix://{}
    captureMode: NONE
    hosts: [./ratings.default.svc.cluster.local]
  - port: {{number: 0, protocol: TCP, name: tcp}}
    bind: unix://{}
    hosts: [./echo.default.svc.cluster.local]
  - hosts: [./*]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
",
            http_sock.display(),
            tcp_sock.display()
        ),
    );
    mesh.start_envoy("productpage-v1", CLIENT);
    mesh.start_envoy("ratings-v1", RATINGS);
    mesh.start_app("ratings", "v1", RATINGS, &[]);
    for host in [CLIENT, RATINGS] {
        mesh.wait_envoy_ready(host);
    }
    wait_until("ratings over the unix socket", || {
        get_unix(&http_sock, "ratings:9080", "/ratings/0").is_some_and(|(s, _)| s == 200)
    });
    let listeners = mesh.envoy_admin(CLIENT, "/config_dump?resource=dynamic_listeners");
    assert!(
        listeners.contains(&format!("\"unix://{}_0\"", http_sock.display())),
        "{listeners}"
    );
    for _ in 0..3 {
        let (status, body) = get_unix(&http_sock, "ratings:9080", "/ratings/0").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("ratings"), "{body}");
        // details is not among the socket's hosts: REGISTRY_ONLY's catch-all.
        let (status, _) = get_unix(&http_sock, "details:9080", "/details/0").unwrap();
        assert_eq!(status, 502);
        assert_eq!(exchange_unix(&tcp_sock, b"hi\n").unwrap(), "echo hi\n");
        // The catch-all still gives echo its port on the client's address.
        assert_eq!(
            exchange(&format!("127.{net}.0.{CLIENT}:9000"), b"ip\n").unwrap(),
            "echo ip\n"
        );
    }
}
