//! Istio's "Locality failover" and "Locality weighted distribution" tasks
//! with real Envoy: productpage's sidecar (region1/zone1/sub1) calls reviews,
//! whose three workloads sit in region1/zone1/sub1 (v1), region2/zone2 (v2)
//! and region3/zone3 (v3).

mod common;

use std::fs;

use common::{Mesh, next_net, wait_until};
use serde_json::Value;

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 236;
/// The client: productpage's sidecar.
const CLIENT: u8 = 11;
/// reviews-v1's sidecar, the endpoint local to the client.
const LOCAL_REVIEWS: u8 = 13;
const REVIEWS_URL: &str = "http://reviews:9080/reviews/0";

/// bookinfo with localities on the WorkloadEntries and `rule` (a reviews
/// DestinationRule) applied, every sidecar started.
fn mk_mesh(rule: &str) -> Mesh {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    let path = mesh.config.join("workloads.yaml");
    let mut text = fs::read_to_string(&path).unwrap();
    // Each WorkloadEntry's `locality`, after its address line.
    for (host, locality) in [
        (11, "region1/zone1/sub1"),
        (13, "region1/zone1/sub1"),
        (14, "region2/zone2"),
        (15, "region3/zone3"),
    ] {
        let address = format!("  address: 127.{}.0.{host}\n", mesh.net);
        assert!(text.contains(&address), "{address} in workloads.yaml");
        text = text.replace(&address, &format!("{address}  locality: {locality}\n"));
    }
    fs::write(&path, text).unwrap();
    mesh.write("reviews-locality.yaml", rule);
    mesh.start_bookinfo();
    mesh
}

/// The reviews version that answered one call through the client's sidecar
/// (None for a failed call).
fn reviews_version(mesh: &Mesh) -> Option<String> {
    let ex = mesh.via_sidecar(CLIENT, REVIEWS_URL, &[]);
    if ex.status != 200 {
        return None;
    }
    let body: Value = serde_json::from_str(&ex.body).ok()?;
    body["version"].as_str().map(str::to_string)
}

fn versions(mesh: &Mesh, n: usize) -> Vec<Option<String>> {
    (0..n).map(|_| reviews_version(mesh)).collect()
}

#[test]
fn locality_failover_moves_traffic_to_the_failover_region() {
    let mut mesh = mk_mesh(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        failover:
        - {from: region1, to: region2}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 1m
      maxEjectionPercent: 100
",
    );
    // The bootstrap gave Envoy the node's locality.
    let info: Value =
        serde_json::from_str(&mesh.envoy_admin(CLIENT, "/server_info")).expect("server_info");
    let node_locality = &info["node"]["locality"];
    assert_eq!(node_locality["region"], "region1", "{node_locality}");
    assert_eq!(node_locality["sub_zone"], "sub1", "{node_locality}");
    // All traffic stays in the client's own locality.
    wait_until("reviews calls to stay local (v1)", || {
        versions(&mesh, 5)
            .iter()
            .all(|v| v.as_deref() == Some("v1"))
    });
    let local = versions(&mesh, 30);
    assert!(
        local.iter().all(|v| v.as_deref() == Some("v1")),
        "{local:?}"
    );

    // The local endpoint dies: once outlier detection ejects it, requests
    // go to region2 (the failover target), never to region3.
    mesh.kill_envoy(LOCAL_REVIEWS);
    wait_until("reviews calls to fail over to region2 (v2)", || {
        versions(&mesh, 5)
            .iter()
            .all(|v| v.as_deref() == Some("v2"))
    });
    let after = versions(&mesh, 30);
    assert!(
        after.iter().all(|v| v.as_deref() == Some("v2")),
        "after failover: {after:?}"
    );
    let ejected = mesh.envoy_stat(
        CLIENT,
        "cluster.outbound|9080||reviews.default.svc.cluster.local.outlier_detection.ejections_enforced_total",
    );
    assert!(ejected >= 1, "the local endpoint was ejected: {ejected}");
}

#[test]
fn locality_distribute_weights_traffic() {
    let mesh = mk_mesh(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        distribute:
        - from: region1/zone1/*
          to:
            \"region1/zone1/*\": 80
            \"region2/zone2/*\": 20
",
    );
    wait_until("reviews v2 to get a share", || {
        versions(&mesh, 20)
            .iter()
            .any(|v| v.as_deref() == Some("v2"))
    });
    let got = versions(&mesh, 200);
    let count = |v: &str| got.iter().filter(|x| x.as_deref() == Some(v)).count();
    let (v1, v2, v3) = (count("v1"), count("v2"), count("v3"));
    assert_eq!(v1 + v2, 200, "every call answered by v1 or v2: {got:?}");
    assert_eq!(v3, 0, "region3 is not in the distribution");
    // 80/20 of 200: Envoy's locality scheduler is weighted round robin.
    assert!((140..=180).contains(&v1), "v1 {v1}, v2 {v2}");
}
