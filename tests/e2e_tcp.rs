//! Sidecar outbound TCP and TLS with real Envoy: Istio's TCP traffic
//! shifting task (tcp-echo v1/v2, all to v1, then 80/20), the source
//! reporter's `istio_tcp_*` metrics, TCP to a STRICT mTLS workload, and TLS
//! routed by SNI to two backends (by host name, then by a VirtualService
//! `tls` route). The client app connects to its own sidecar's address at
//! the service port (no iptables): productpage-v1's sidecar, 127.N.0.11.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{Mesh, next_net, series, series_sum, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 212;
/// productpage-v1's sidecar: the client of every test here.
const CLIENT: u8 = 11;
/// Host numbers of the tcp-echo and TLS backends' sidecars (and apps).
const ECHO_V1: u8 = 41;
const ECHO_V2: u8 = 42;
const TLS_A: u8 = 43;
const TLS_B: u8 = 44;
/// Connections counted for the 80/20 split: the v1 share's standard
/// deviation is sqrt(200 * 0.8 * 0.2) = 5.7 connections.
const SPLIT_CONNECTIONS: usize = 200;
/// Accepted deviation from 160 v1 connections: four standard deviations
/// (a correct split fails about once in 16,000 runs).
const SPLIT_TOLERANCE: usize = 23;

/// Istio's tcp-echo sample as a ServiceEntry (port 9000), two versions with
/// mesh mTLS (the `tlsMode` label), and the DestinationRule with their subsets.
fn echo_config(net: u8) -> String {
    let mut out = String::from(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  workloadSelector: {labels: {app: tcp-echo}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo, namespace: default}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
",
    );
    for (version, host) in [("v1", ECHO_V1), ("v2", ECHO_V2)] {
        out.push_str(&workload(
            net,
            &format!("tcp-echo-{version}"),
            "tcp-echo",
            version,
            host,
        ));
    }
    out
}

fn workload(net: u8, name: &str, app: &str, version: &str, host: u8) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: default
  annotations: {{pilotfish.io/app-address: 127.{net}.1.{host}}}
spec:
  address: 127.{net}.0.{host}
  labels: {{app: {app}, version: {version}, security.istio.io/tlsMode: istio}}
  serviceAccount: {app}
"
    )
}

/// Istio's `tcp-echo-all-v1.yaml` and `tcp-echo-20-v2.yaml`.
const ALL_V1: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
";
const SPLIT_80_20: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
      weight: 80
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}
      weight: 20
";

/// A TCP server on `addr`: for each connection, reads one message with
/// `read`, answers with `reply(message)` and closes.
fn serve(
    addr: String,
    read: fn(&mut TcpStream) -> Vec<u8>,
    reply: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static,
) {
    let server = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let reply = std::sync::Arc::new(reply);
    std::thread::spawn(move || {
        for conn in server.incoming().flatten() {
            let reply = std::sync::Arc::clone(&reply);
            std::thread::spawn(move || {
                let mut conn = conn;
                let got = read(&mut conn);
                let _ = conn.write_all(&reply(&got));
            });
        }
    });
}

/// One line (up to and with `\n`).
fn read_line(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") && conn.read_exact(&mut byte).is_ok() {
        got.push(byte[0]);
    }
    got
}

/// One TLS record (the ClientHello): its 5-byte header says how long it is.
fn read_tls_record(conn: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 5];
    if conn.read_exact(&mut head).is_err() {
        return Vec::new();
    }
    let len = u16::from_be_bytes([head[3], head[4]]) as usize;
    let mut body = vec![0u8; len];
    if conn.read_exact(&mut body).is_err() {
        return head.to_vec();
    }
    [head.to_vec(), body].concat()
}

/// Istio's tcp-echo app: answers each message prefixed with its version's word.
fn start_echo(net: u8, host: u8, prefix: &'static str) {
    serve(format!("127.{net}.1.{host}:9000"), read_line, move |got| {
        let mut out = format!("{prefix} ").into_bytes();
        out.extend_from_slice(got);
        out
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

/// The tcp-echo mesh: its config, both echo apps and sidecars, and the
/// client's sidecar, all ready.
fn echo_mesh() -> Mesh {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    let net = mesh.net;
    mesh.write("tcp-echo.yaml", &echo_config(net));
    start_echo(net, ECHO_V1, "one");
    start_echo(net, ECHO_V2, "two");
    for (name, host) in [
        ("tcp-echo-v1", ECHO_V1),
        ("tcp-echo-v2", ECHO_V2),
        ("productpage-v1", CLIENT),
    ] {
        mesh.start_envoy(name, host);
    }
    for host in [ECHO_V1, ECHO_V2, CLIENT] {
        mesh.wait_envoy_ready(host);
    }
    mesh
}

fn client_addr(net: u8, port: u16) -> String {
    format!("127.{net}.0.{CLIENT}:{port}")
}

#[test]
fn tcp_traffic_shifting_with_source_metrics() {
    let mesh = echo_mesh();
    let net = mesh.net;
    let to = client_addr(net, 9000);

    // No VirtualService: the service's cluster, both versions.
    let mut seen = std::collections::BTreeSet::new();
    wait_until(
        "both versions through the client's outbound TCP listener",
        || {
            seen.extend(exchange(&to, b"hello\n").ok());
            seen.contains("one hello\n") && seen.contains("two hello\n")
        },
    );

    // All to v1, once the client's listener has the route.
    mesh.write("tcp-echo-vs.yaml", ALL_V1);
    wait_until("the all-v1 route in the client's listener", || {
        mesh.envoy_admin(CLIENT, "/config_dump?resource=dynamic_listeners")
            .contains("outbound|9000|v1|tcp-echo.default.svc.cluster.local")
    });
    for _ in 0..20 {
        assert_eq!(exchange(&to, b"hello\n").unwrap(), "one hello\n");
    }

    // 80/20: wait until v2 answers at all (the new route is in force), then count.
    mesh.write("tcp-echo-vs.yaml", SPLIT_80_20);
    wait_until("v2 to answer after the 80/20 route", || {
        exchange(&to, b"hello\n").is_ok_and(|a| a == "two hello\n")
    });
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..SPLIT_CONNECTIONS {
        match exchange(&to, b"hello\n").unwrap().as_str() {
            "one hello\n" => v1 += 1,
            "two hello\n" => v2 += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    eprintln!("80/20 split over {SPLIT_CONNECTIONS} connections: v1 {v1}, v2 {v2}");
    assert_eq!(v1 + v2, SPLIT_CONNECTIONS);
    let expected = SPLIT_CONNECTIONS * 8 / 10;
    assert!(
        v1.abs_diff(expected) <= SPLIT_TOLERANCE,
        "v1 got {v1} of {SPLIT_CONNECTIONS} connections, expected {expected} ± {SPLIT_TOLERANCE}"
    );

    // The client's sidecar reports as the source: both versions appear.
    let filter = [
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
        ("destination_service_name", "tcp-echo"),
    ];
    let name = "istio_tcp_connections_closed_total";
    wait_until("source-reported TCP connections", || {
        let text = mesh.metrics();
        let s = series(&text, name, &filter);
        ["tcp-echo-v1", "tcp-echo-v2"].iter().all(|w| {
            s.iter()
                .any(|(l, v)| l.get("destination_workload").is_some_and(|x| x == w) && *v > 0.0)
        })
    });
    let sample = series(&mesh.metrics(), name, &filter);
    let (labels, _) = &sample[0];
    assert_eq!(labels["request_protocol"], "tcp", "{labels:?}");
    assert_eq!(labels["source_app"], "productpage", "{labels:?}");
    assert_eq!(
        labels["destination_service"], "tcp-echo.default.svc.cluster.local",
        "{labels:?}"
    );

    // Exact counts: settle, then ten more connections.
    let totals = |text: &str| {
        [
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
            "istio_tcp_received_bytes_total",
            "istio_tcp_sent_bytes_total",
        ]
        .map(|n| series_sum(text, n, &filter))
    };
    let mut last = [-1.0; 4];
    wait_until("the source-reported TCP metrics to settle", || {
        std::thread::sleep(Duration::from_millis(1200));
        let now = totals(&mesh.metrics());
        std::mem::replace(&mut last, now) == now
    });
    let base = last;
    assert!(
        base[0] >= (SPLIT_CONNECTIONS + 21) as f64,
        "opened {base:?}"
    );
    for _ in 0..10 {
        let a = exchange(&to, b"hello\n").unwrap();
        assert!(a == "one hello\n" || a == "two hello\n", "{a:?}");
    }
    // Each connection: 6 bytes received from the client, 10 sent back.
    let want = [10.0, 10.0, 60.0, 100.0];
    wait_until("ten connections counted by the source", || {
        let now = totals(&mesh.metrics());
        (0..4).all(|i| now[i] - base[i] >= want[i])
    });
    std::thread::sleep(Duration::from_millis(1500));
    let now = totals(&mesh.metrics());
    let delta: Vec<f64> = (0..4).map(|i| now[i] - base[i]).collect();
    assert_eq!(delta, want, "opened, closed, received, sent");
}

#[test]
fn tcp_to_a_strict_mtls_workload() {
    let mesh = echo_mesh();
    let net = mesh.net;
    mesh.write(
        "strict.yaml",
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: tcp-echo-strict, namespace: default}
spec:
  selector: {matchLabels: {app: tcp-echo}}
  mtls: {mode: STRICT}
",
    );
    // STRICT in force: a plaintext client straight at the server's sidecar
    // gets nothing back.
    let direct = format!("127.{net}.0.{ECHO_V1}:9000");
    wait_until("STRICT to refuse plaintext", || {
        exchange(&direct, b"hello\n").map_or(true, |a| a.is_empty())
    });
    // Through the client's sidecar (auto mTLS with its workload certificate)
    // every connection is answered.
    let to = client_addr(net, 9000);
    for _ in 0..10 {
        let a = exchange(&to, b"hello\n").unwrap();
        assert!(a == "one hello\n" || a == "two hello\n", "{a:?}");
    }
    // The server side terminated TLS for them.
    let handshakes: u64 = [ECHO_V1, ECHO_V2]
        .iter()
        .map(|h| mesh.envoy_stat(*h, &format!("listener.127.{net}.0.{h}_9000.ssl.handshake")))
        .sum();
    assert!(
        handshakes >= 10,
        "TLS handshakes on the servers: {handshakes}"
    );
}

/// The first bytes of a TLS connection (the ClientHello) with SNI `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    use rustls::pki_types::ServerName;
    use std::sync::Arc;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn tls_routed_by_sni() {
    // Over delta xDS: a sidecar's listeners come from two layers there too.
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], true);
    let net = mesh.net;
    let mut config = String::new();
    for (name, host) in [("tls-a", TLS_A), ("tls-b", TLS_B)] {
        config.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8443, name: tls, protocol: TLS}}]
  workloadSelector: {{labels: {{app: {name}}}}}
"
        ));
        config.push_str(&workload(net, &format!("{name}-v1"), name, "v1", host));
        // The backend: tells who got the stream (the ClientHello, untouched).
        serve(
            format!("127.{net}.1.{host}:8443"),
            read_tls_record,
            move |got| {
                let hello = got.first() == Some(&0x16);
                format!("{name} got {} bytes of TLS: {hello}", got.len()).into_bytes()
            },
        );
    }
    mesh.write("tls.yaml", &config);
    for (name, host) in [
        ("tls-a-v1", TLS_A),
        ("tls-b-v1", TLS_B),
        ("productpage-v1", CLIENT),
    ] {
        mesh.start_envoy(name, host);
    }
    for host in [TLS_A, TLS_B, CLIENT] {
        mesh.wait_envoy_ready(host);
    }
    let to = client_addr(net, 8443);
    let backend = |sni: &str| -> String {
        let hello = client_hello(sni);
        exchange(&to, &hello)
            .map(|a| a.split(' ').next().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    // By host name: each SNI reaches its own service; the ClientHello
    // arrives as the client sent it.
    wait_until("tls-a by SNI", || {
        backend("tls-a.default.svc.cluster.local") == "tls-a"
    });
    let hello = client_hello("tls-a.default.svc.cluster.local");
    let answer = exchange(&to, &hello).unwrap();
    assert_eq!(
        answer,
        format!("tls-a got {} bytes of TLS: true", hello.len())
    );
    for _ in 0..5 {
        assert_eq!(backend("tls-a.default.svc.cluster.local"), "tls-a");
        assert_eq!(backend("tls-b.default.svc.cluster.local"), "tls-b");
    }
    // An SNI no chain names gets nothing.
    assert_eq!(backend("nobody.example.com"), "");

    // A VirtualService tls route sends tls-a's SNI to tls-b.
    mesh.write(
        "tls-vs.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-a, namespace: default}
spec:
  hosts: [tls-a.default.svc.cluster.local]
  tls:
  - match: [{port: 8443, sniHosts: [tls-a.default.svc.cluster.local]}]
    route:
    - destination: {host: tls-b.default.svc.cluster.local, port: {number: 8443}}
",
    );
    wait_until("tls-a's SNI routed to tls-b", || {
        backend("tls-a.default.svc.cluster.local") == "tls-b"
    });
    for _ in 0..5 {
        assert_eq!(backend("tls-a.default.svc.cluster.local"), "tls-b");
        assert_eq!(backend("tls-b.default.svc.cluster.local"), "tls-b");
    }
}
