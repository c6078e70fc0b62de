use std::sync::Arc;

use super::*;
use crate::config::parse_file;
use crate::model::{ConfigSnapshot, Registry, WorkloadKey};

/// A service on 9080 (HTTP) and 9000 (TCP) selecting `app: web`, two such
/// workloads (web-1 with an app address), and `extra` documents.
fn mk_mesh(extra: &str) -> (ConfigSnapshot, Registry) {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: prod}}
spec:
  hosts: [web.prod.svc.cluster.local]
  ports: [{{number: 9080, name: http}}, {{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: web}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web-1
  namespace: prod
  annotations: {{pilotfish.io/app-address: 127.0.1.1}}
spec: {{address: 127.0.0.11, labels: {{app: web, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: web-2, namespace: prod}}
spec: {{address: 127.0.0.12, labels: {{app: web, version: v2}}}}
---
{extra}"
    );
    let parsed = parse_file(std::path::Path::new("t.yaml"), &yaml);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let mut config = ConfigSnapshot::default();
    for r in parsed.resources {
        config.resources.insert(r.key(), Arc::new(r));
    }
    let registry = Registry::build(&config);
    (config, registry)
}

fn mk_workload<'r>(registry: &'r Registry, name: &str) -> &'r Workload {
    registry
        .workloads
        .get(&WorkloadKey {
            namespace: "prod".into(),
            name: name.into(),
        })
        .unwrap_or_else(|| panic!("no workload {name}"))
}

/// web-1's Sidecar: ingress listeners with every `defaultEndpoint` form.
const INGRESS: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web-1, namespace: prod}
spec:
  workloadSelector: {labels: {version: v1}}
  inboundConnectionPool: {tcp: {maxConnections: 10}}
  ingress:
  - port: {number: 8443, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
    connectionPool: {http: {http1MaxPendingRequests: 5}}
  - port: {number: 7000, protocol: TCP, name: tcp}
    bind: 127.0.0.99
    defaultEndpoint: 0.0.0.0:7001
  - port: {number: 7002, protocol: GRPC, name: grpc}
    defaultEndpoint: unix:///var/run/app.sock
  - port: {number: 7003, protocol: HTTP2, name: h2}
  - port: {number: 7004, protocol: TCP, name: v6}
    defaultEndpoint: '[::]:7005'
  - port: {number: 7006, protocol: HTTP, name: captured}
    captureMode: IPTABLES
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 15021, protocol: HTTP, name: status}
    defaultEndpoint: 127.0.0.1:8080
";

#[test]
fn without_ingress_the_services_ports_go_to_the_app() {
    let (config, registry) = mk_mesh("");
    let mesh = Mesh::new(&config, &registry);
    let w = mk_workload(&registry, "web-1");
    let ports = ports(&mesh, w);
    let summary: Vec<(u32, &str, Protocol, Target)> = ports
        .iter()
        .map(|p| (p.port, p.bind.as_str(), p.protocol, p.target.clone()))
        .collect();
    let app = |port| Target::Socket {
        address: "127.0.1.1".into(),
        port,
    };
    assert_eq!(
        summary,
        vec![
            (9000, "127.0.0.11", Protocol::Tcp, app(9000)),
            (9080, "127.0.0.11", Protocol::Http, app(9080)),
        ]
    );
    assert!(
        ports
            .iter()
            .all(|p| p.tls.is_none() && p.connection_pool.is_none())
    );
    assert_eq!(ports_on_address(&mesh, w), [9000, 9080].into());
    assert!(warnings(&mesh).is_empty());
}

#[test]
fn ingress_listeners_replace_the_service_ports() {
    let (config, registry) = mk_mesh(INGRESS);
    let mesh = Mesh::new(&config, &registry);
    let w = mk_workload(&registry, "web-1");
    let ports = ports(&mesh, w);
    let summary: Vec<(u32, &str, Protocol, Target)> = ports
        .iter()
        .map(|p| (p.port, p.bind.as_str(), p.protocol, p.target.clone()))
        .collect();
    let socket = |address: &str, port| Target::Socket {
        address: address.into(),
        port,
    };
    assert_eq!(
        summary,
        vec![
            // `0.0.0.0` is the instance's address: here the app address.
            (7000, "127.0.0.99", Protocol::Tcp, socket("127.0.1.1", 7001)),
            (
                7002,
                "127.0.0.11",
                Protocol::Grpc,
                Target::Pipe("unix:///var/run/app.sock".into())
            ),
            // No defaultEndpoint: the app address on the same port.
            (
                7003,
                "127.0.0.11",
                Protocol::Http2,
                socket("127.0.1.1", 7003)
            ),
            // `::` with an IPv4 app: IPv6 loopback, as Istio falls back.
            (7004, "127.0.0.11", Protocol::Tcp, socket("::1", 7005)),
            (
                8443,
                "127.0.0.11",
                Protocol::Http,
                socket("127.0.0.1", 8080)
            ),
        ]
    );
    // The ingress listener's pool for its port, else the Sidecar-wide one.
    let pool = |port: u32| {
        ports
            .iter()
            .find(|p| p.port == port)
            .and_then(|p| p.connection_pool)
    };
    assert!(pool(8443).is_some_and(|p| p.http.is_some() && p.tcp.is_none()));
    assert!(pool(7000).is_some_and(|p| p.tcp.is_some() && p.http.is_none()));
    // Only listeners on the workload's own address keep outbound TCP off.
    assert_eq!(ports_on_address(&mesh, w), [7002, 7003, 7004, 8443].into());
    assert_eq!(
        port_numbers(&mesh, w, false),
        [7000, 7002, 7003, 7004, 8443].into()
    );
    assert_eq!(
        warnings(&mesh),
        vec![
            "sidecar prod/web-1: no inbound listener for Sidecar ingress port 7006: captureMode IPTABLES needs traffic capture, which pilotfish does not do",
            "sidecar prod/web-1: no inbound listener for Sidecar ingress port 15021: it is one of the proxy's own ports",
        ]
    );
}

#[test]
fn workloads_the_sidecar_does_not_select_keep_their_service_ports() {
    let (config, registry) = mk_mesh(INGRESS);
    let mesh = Mesh::new(&config, &registry);
    let w = mk_workload(&registry, "web-2");
    let ports: Vec<u32> = ports(&mesh, w).iter().map(|p| p.port).collect();
    assert_eq!(ports, vec![9000, 9080]);
    let mut a = std::hash::DefaultHasher::new();
    let mut b = std::hash::DefaultHasher::new();
    hash_inputs(&mesh, w, &mut a);
    let (config2, registry2) = mk_mesh("");
    hash_inputs(&Mesh::new(&config2, &registry2), w, &mut b);
    use std::hash::Hasher;
    assert_eq!(a.finish(), b.finish(), "web-2's inputs do not change");
}

#[test]
fn an_inbound_connection_pool_alone_applies_to_the_service_ports() {
    let (config, registry) = mk_mesh(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  inboundConnectionPool: {tcp: {maxConnections: 10}}
",
    );
    let mesh = Mesh::new(&config, &registry);
    let ports = ports(&mesh, mk_workload(&registry, "web-2"));
    assert_eq!(ports.len(), 2);
    assert!(
        ports
            .iter()
            .all(|p| p.connection_pool.is_some_and(|c| c.tcp.is_some()))
    );
}
