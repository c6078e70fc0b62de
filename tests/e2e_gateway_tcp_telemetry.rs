//! Telemetry of a gateway's ISTIO_MUTUAL TCP server, with real Envoy: a
//! sidecar sends TCP over mesh mTLS to the gateway (a DestinationRule with
//! ISTIO_MUTUAL and the server's host as SNI), the gateway terminates it
//! and forwards to tcp-echo behind ratings' sidecar; the gateway reports
//! the connection as the source, with both sides' workload labels.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Mesh, ROOT, next_net, series, wait_until};

/// 127.N block of this test binary (this helper's blocks are 6 to 8).
const NET_BASE: u8 = 8;
/// Host number of the gateway's address (127.N.0.30), as in examples/bookinfo/mesh.
const GATEWAY_HOST: u8 = 30;
const GATEWAY: &str = "istio-ingressgateway";
const CLIENT: u8 = 11;
const RATINGS: u8 = 16;

/// The gateway as a TCP service of the mesh on 9443 (mesh mTLS with SNI
/// echo.example.com), its ISTIO_MUTUAL TLS server for that name, and the
/// route from there to tcp-echo.
const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: gateway-echo}
spec:
  hosts: [gateway-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9443, name: tcp-echo, protocol: TCP}]
  workloadSelector: {labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: gateway-echo}
spec:
  host: gateway-echo.default.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, sni: echo.example.com}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mesh-tcp}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9443, name: tls-echo, protocol: TLS}
    hosts: [echo.example.com]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo-through-gateway}
spec:
  hosts: [echo.example.com]
  gateways: [mesh-tcp]
  tcp:
  - route:
    - destination: {host: tcp-echo.default.svc.cluster.local, port: {number: 9090}}
"#;

/// Sends `payload` to `addr` and reads as many bytes back.
fn echo(addr: &str, payload: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(payload.as_bytes())?;
    let mut buf = vec![0u8; payload.len()];
    s.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[test]
fn a_gateway_istio_mutual_tcp_server_reports_both_sides() {
    let net = next_net(NET_BASE);
    let mut mesh = Mesh::start(net, &[], false);
    let gw_entry =
        std::fs::read_to_string(Path::new(ROOT).join("examples/bookinfo/mesh/ingressgateway.yaml"))
            .unwrap()
            .replace("127.0.0.", &format!("127.{net}.0."));
    mesh.write("ingressgateway.yaml", &gw_entry);
    mesh.start_tcp_echo();
    mesh.write("gateway-echo.yaml", CONFIG);
    mesh.start_envoy("productpage-v1", CLIENT);
    mesh.start_envoy("ratings-v1", RATINGS);
    let config = mesh.config.display().to_string();
    mesh.start_envoy_with(
        GATEWAY,
        GATEWAY_HOST,
        &["--gateway", "--config-dir", &config],
        |_| {},
    );
    for host in [CLIENT, RATINGS, GATEWAY_HOST] {
        mesh.wait_envoy_ready(host);
    }
    let client = format!("127.{net}.0.{CLIENT}:9443");
    wait_until("tcp-echo through the gateway's ISTIO_MUTUAL server", || {
        echo(&client, "ping").is_ok_and(|r| r == "ping")
    });
    for i in 0..3 {
        let msg = format!("hello {i}");
        assert_eq!(echo(&client, &msg).unwrap(), msg);
    }
    // The gateway terminated mesh mTLS on 9443.
    let handshakes = mesh.envoy_stat(
        GATEWAY_HOST,
        &format!("listener.127.{net}.0.{GATEWAY_HOST}_9443.ssl.handshake"),
    );
    assert!(handshakes >= 4, "{handshakes}");

    // The gateway's own report: it is the source, ratings-v1 (behind its
    // sidecar) the destination workload of tcp-echo.
    let gateway_side = [
        ("reporter", "source"),
        ("source_workload", GATEWAY),
        ("source_app", "istio-ingressgateway"),
        ("destination_workload", "ratings-v1"),
        ("destination_service", "tcp-echo.default.svc.cluster.local"),
        ("request_protocol", "tcp"),
    ];
    wait_until("the gateway's TCP metrics", || {
        let m = mesh.metrics();
        series(&m, "istio_tcp_connections_closed_total", &gateway_side)
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>()
            >= 4.0
    });
    let m = mesh.metrics();
    let sent = series(&m, "istio_tcp_sent_bytes_total", &gateway_side);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (labels, bytes) = &sent[0];
    assert!(*bytes >= 4.0, "{labels:?} {bytes}");
    assert_eq!(labels["destination_app"], "ratings", "{labels:?}");
    assert_eq!(labels["source_workload_namespace"], "default", "{labels:?}");
    assert!(
        labels["destination_principal"].ends_with("/ns/default/sa/bookinfo-ratings"),
        "{labels:?}"
    );
    assert_eq!(
        labels["source_principal"],
        "spiffe://cluster.local/ns/default/sa/istio-ingressgateway-service-account",
        "{labels:?}"
    );
    // The client's sidecar reports the gateway as its destination.
    let client_side = series(
        &m,
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "source"),
            ("source_workload", "productpage-v1"),
            ("destination_workload", GATEWAY),
            (
                "destination_service",
                "gateway-echo.default.svc.cluster.local",
            ),
        ],
    );
    assert!(
        client_side.iter().map(|(_, v)| v).sum::<f64>() >= 4.0,
        "{client_side:?}"
    );
}
