//! Locality load balancing of a DNS ServiceEntry with real Envoy: Envoy
//! resolves `localhost` for two endpoints (two local servers on different
//! ports) in two localities. productpage's sidecar (region1/zone1, network
//! net-a) calls the service: every call goes to the endpoint in its own
//! locality (priority 0 in Envoy's /clusters); when that server dies,
//! outlier detection ejects it and the calls fail over to the other
//! locality. A second DNS service names Istio's synthesized
//! `topology.istio.io/network` label in `failoverPriority`: its endpoint in
//! the client's network comes first, though the other one is local.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Mesh, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 240;
/// The client: productpage's sidecar.
const CLIENT: u8 = 11;
/// How often a stopped-or-not server looks for a new connection.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
const LOCALITY_URL: &str = "http://dns-locality.external.test:8080/";
const NETWORK_URL: &str = "http://dns-network.external.test:8080/";
const LOCALITY_CLUSTER: &str = "outbound|8080||dns-locality.external.test";
const NETWORK_CLUSTER: &str = "outbound|8080||dns-network.external.test";

/// A plain HTTP server on 127.0.0.1 answering `name` until stopped; once
/// stopped its port refuses connections.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(name: &'static str) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        answer(&mut conn, name);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
                    Err(_) => std::thread::sleep(ACCEPT_POLL),
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket.
    fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads one request head and answers `name` (connection closed after).
fn answer(conn: &mut std::net::TcpStream, name: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
        name.len()
    );
    let _ = conn.write_all(resp.as_bytes());
}

fn config(local: u16, remote: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns-locality}}
spec:
  hosts: [dns-locality.external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: localhost, ports: {{http: {local}}}, locality: region1/zone1}}
  - {{address: localhost, ports: {{http: {remote}}}, locality: region2/zone1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: dns-locality}}
spec:
  host: dns-locality.external.test
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 1m
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns-network}}
spec:
  hosts: [dns-network.external.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: localhost, ports: {{http: {local}}}, locality: region1/zone1, network: net-b}}
  - {{address: localhost, ports: {{http: {remote}}}, locality: region2/zone1, network: net-a}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: dns-network}}
spec:
  host: dns-network.external.test
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}}
    loadBalancer:
      localityLbSetting:
        failoverPriority: [topology.istio.io/network]
"#
    )
}

/// Who answered each of `n` calls to `url` through the client's sidecar
/// (the status for a failed call).
fn answers(mesh: &Mesh, url: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let ex = mesh.via_sidecar(CLIENT, url, &[]);
            if ex.status == 200 {
                ex.body
            } else {
                ex.status.to_string()
            }
        })
        .collect()
}

/// A host's value of `stat` (`priority`, `health_flags`) in Envoy's /clusters.
fn host_stat(mesh: &Mesh, cluster: &str, port: u16, stat: &str) -> Option<String> {
    let prefix = format!("{cluster}::127.0.0.1:{port}::{stat}::");
    mesh.envoy_admin(CLIENT, "/clusters")
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

#[test]
fn dns_endpoints_stay_local_and_fail_over_by_outlier_detection() {
    stay_local_then_fail_over(false);
}

/// The same over delta xDS, where the client-shaped cluster is one more
/// cluster layer the stream merges.
#[test]
fn dns_endpoints_stay_local_and_fail_over_over_delta_xds() {
    stay_local_then_fail_over(true);
}

fn stay_local_then_fail_over(delta: bool) {
    let mut local = Server::start("local");
    let remote = Server::start("remote");
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], delta);
    // productpage's locality and network, after its address line.
    let path = mesh.config.join("workloads.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let address = format!("  address: 127.{}.0.{CLIENT}\n", mesh.net);
    assert!(text.contains(&address), "{address} in workloads.yaml");
    let text = text.replace(
        &address,
        &format!("{address}  locality: region1/zone1\n  network: net-a\n"),
    );
    fs::write(&path, text).unwrap();
    mesh.write("dns-locality.yaml", &config(local.port, remote.port));
    mesh.start_envoy("productpage-v1", CLIENT);
    mesh.wait_envoy_ready(CLIENT);

    // Every call stays in the client's locality: priority 0 is the local
    // endpoint, 1 the other region's.
    wait_until("calls to the DNS service to stay local", || {
        answers(&mesh, LOCALITY_URL, 5).iter().all(|a| a == "local")
    });
    let before = answers(&mesh, LOCALITY_URL, 30);
    assert!(before.iter().all(|a| a == "local"), "{before:?}");
    let priority = |cluster, port| host_stat(&mesh, cluster, port, "priority");
    assert_eq!(priority(LOCALITY_CLUSTER, local.port).as_deref(), Some("0"));
    assert_eq!(
        priority(LOCALITY_CLUSTER, remote.port).as_deref(),
        Some("1")
    );
    assert_eq!(
        host_stat(&mesh, LOCALITY_CLUSTER, local.port, "region").as_deref(),
        Some("region1")
    );

    // failoverPriority on the synthesized network label: the endpoint in
    // the client's network (net-a, the remote one) first.
    let by_network = answers(&mesh, NETWORK_URL, 20);
    assert!(by_network.iter().all(|a| a == "remote"), "{by_network:?}");
    assert_eq!(priority(NETWORK_CLUSTER, remote.port).as_deref(), Some("0"));
    assert_eq!(priority(NETWORK_CLUSTER, local.port).as_deref(), Some("1"));

    // The local server dies: once outlier detection ejects it, every call
    // goes to the other locality.
    local.kill();
    wait_until("calls to fail over to region2", || {
        answers(&mesh, LOCALITY_URL, 5)
            .iter()
            .all(|a| a == "remote")
    });
    let after = answers(&mesh, LOCALITY_URL, 30);
    assert!(
        after.iter().all(|a| a == "remote"),
        "after failover: {after:?}"
    );
    let flags = host_stat(&mesh, LOCALITY_CLUSTER, local.port, "health_flags");
    assert!(
        flags
            .as_deref()
            .is_some_and(|f| f.contains("failed_outlier_check")),
        "the local endpoint is ejected: {flags:?}"
    );
    let ejected = mesh.envoy_stat(
        CLIENT,
        &format!("cluster.{LOCALITY_CLUSTER}.outlier_detection.ejections_enforced_total"),
    );
    assert!(ejected >= 1, "ejections: {ejected}");
    drop(remote);
}
