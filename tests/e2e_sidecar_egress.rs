//! Sidecar egress scope for outbound TCP, and egress listeners with their
//! own port, with real Envoy: a Sidecar that imports one of two TCP
//! services leaves its workload's Envoy with a listener for that one only;
//! an HTTP egress listener with a port (and `bind`) routes to its hosts only.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{Mesh, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 252;
/// productpage-v1's sidecar: the client in both tests.
const CLIENT: u8 = 11;
/// details-v1's sidecar: a client without a Sidecar resource.
const OTHER: u8 = 12;
/// ratings-v1's sidecar and app.
const RATINGS: u8 = 16;
/// Hosts of the two TCP services' sidecars (and apps).
const ECHO_A: u8 = 41;
const ECHO_B: u8 = 42;

/// Two TCP services, echo-a on 9000 and echo-b on 9100, one workload each.
fn echo_config(net: u8) -> String {
    let mut out = String::new();
    for (name, port, host) in [("echo-a", 9000, ECHO_A), ("echo-b", 9100, ECHO_B)] {
        out.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: tcp, protocol: TCP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}-1
  namespace: default
  annotations: {{pilotfish.io/app-address: 127.{net}.1.{host}}}
spec:
  address: 127.{net}.0.{host}
  labels: {{app: {name}, security.istio.io/tlsMode: istio}}
  serviceAccount: {name}
"
        ));
    }
    out
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

/// The names of the listeners the Envoy on `host` serves with (its admin
/// config dump; a removed listener stays there, draining, for a while).
fn active_listeners(mesh: &Mesh, host: u8) -> Vec<String> {
    let dump: serde_json::Value =
        serde_json::from_str(&mesh.envoy_admin(host, "/config_dump?resource=dynamic_listeners"))
            .expect("config dump JSON");
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.get("active_state").is_some())
        .filter_map(|l| l["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_sidecar_that_imports_one_tcp_service_gets_a_listener_for_it_only() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    let net = mesh.net;
    mesh.write("echo.yaml", &echo_config(net));
    start_echo(format!("127.{net}.1.{ECHO_A}:9000"), "a");
    start_echo(format!("127.{net}.1.{ECHO_B}:9100"), "b");
    for (name, host) in [
        ("echo-a-1", ECHO_A),
        ("echo-b-1", ECHO_B),
        ("productpage-v1", CLIENT),
        ("details-v1", OTHER),
    ] {
        mesh.start_envoy(name, host);
    }
    for host in [ECHO_A, ECHO_B, CLIENT, OTHER] {
        mesh.wait_envoy_ready(host);
    }
    let listeners = |host: u8| active_listeners(&mesh, host);
    let at = |host: u8, port: u16| format!("127.{net}.0.{host}:{port}");
    let name = |host: u8, port: u16| format!("127.{net}.0.{host}_{port}");
    // Without a Sidecar the client reaches both services.
    wait_until("both TCP services through the client's sidecar", || {
        exchange(&at(CLIENT, 9000), b"hi\n").is_ok_and(|r| r == "a hi\n")
            && exchange(&at(CLIENT, 9100), b"hi\n").is_ok_and(|r| r == "b hi\n")
    });

    // productpage imports echo-a only.
    mesh.write(
        "sidecar-productpage.yaml",
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
  - hosts: [./echo-a.default.svc.cluster.local]
",
    );
    wait_until("the client's Envoy to drop its echo-b listener", || {
        !listeners(CLIENT).contains(&name(CLIENT, 9100))
    });
    let active = listeners(CLIENT);
    assert!(active.contains(&name(CLIENT, 9000)), "{active:?}");
    for _ in 0..3 {
        assert_eq!(exchange(&at(CLIENT, 9000), b"one\n").unwrap(), "a one\n");
        // Nothing listens there any more.
        assert!(exchange(&at(CLIENT, 9100), b"two\n").is_err());
        // details has no Sidecar: it keeps both.
        assert_eq!(exchange(&at(OTHER, 9100), b"two\n").unwrap(), "b two\n");
    }
    assert!(listeners(OTHER).contains(&name(OTHER, 9100)));
}

#[test]
fn an_egress_listener_with_a_port_routes_http_to_its_hosts_only() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    let net = mesh.net;
    // The egress listener binds its own address on the port the workload
    // also serves (9080), so the app calls ratings at 127.N.2.11:9080.
    mesh.write(
        "sidecar-productpage.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: productpage, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: productpage}}}}
  egress:
  - port: {{number: 9080, protocol: HTTP, name: http-ratings}}
    bind: 127.{net}.2.{CLIENT}
    hosts: [./ratings.default.svc.cluster.local]
  - hosts: [./*]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
"
        ),
    );
    for (workload, app, host) in [
        ("productpage-v1", "", CLIENT),
        ("details-v1", "details", OTHER),
        ("ratings-v1", "ratings", RATINGS),
    ] {
        mesh.start_envoy(workload, host);
        if !app.is_empty() {
            mesh.start_app(app, "v1", host, &[]);
        }
    }
    for host in [CLIENT, OTHER, RATINGS] {
        mesh.wait_envoy_ready(host);
    }
    let egress = format!("http://127.{net}.2.{CLIENT}:9080");
    let get = |proxy: &str, url: &str| -> u16 {
        reqwest::blocking::Client::builder()
            .proxy(reqwest::Proxy::http(proxy).unwrap())
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap()
            .get(url)
            .send()
            .map_or(0, |r| r.status().as_u16())
    };
    wait_until("ratings through the egress listener", || {
        get(&egress, "http://ratings:9080/ratings/0") == 200
    });
    let routes = mesh.envoy_admin(CLIENT, "/config_dump?resource=dynamic_route_configs");
    assert!(routes.contains("\"name\": \"9080\""), "{routes}");
    let listeners = mesh.envoy_admin(CLIENT, "/config_dump?resource=dynamic_listeners");
    assert!(
        listeners.contains(&format!("\"127.{net}.2.{CLIENT}_9080\"")),
        "{listeners}"
    );
    let outbound = format!("http://127.{net}.0.{CLIENT}:15001");
    for _ in 0..3 {
        assert_eq!(get(&egress, "http://ratings:9080/ratings/0"), 200);
        assert_eq!(get(&egress, "http://ratings/ratings/0"), 200);
        // details is not among the egress listener's hosts: the catch-all
        // of REGISTRY_ONLY answers.
        assert_eq!(get(&egress, "http://details:9080/details/0"), 502);
        // The catch-all egress listener (15001 here) imports ./* : details.
        assert_eq!(get(&outbound, "http://details:9080/details/0"), 200);
    }
}
