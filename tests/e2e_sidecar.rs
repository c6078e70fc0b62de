//! The Sidecar resource with real Envoy: egress hosts narrow what a proxy
//! can reach and what its Envoy holds; other proxies are unaffected.

mod common;

use common::{Mesh, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 200;

#[test]
fn sidecar_egress_hosts_scope_one_workloads_view() {
    let mut mesh = Mesh::start(
        next_net(NET_BASE),
        &["destination-rule-all.yaml", "virtual-service-all-v1.yaml"],
        false,
    );
    mesh.start_bookinfo();
    let status = |via: u8, url: &str| mesh.via_sidecar(via, url, &[]).status;
    let clusters = |host: u8| mesh.envoy_admin(host, "/clusters");
    // Before: reviews-v2 (14) reaches details like everyone.
    assert_eq!(status(14, "http://details:9080/details/0"), 200);

    // reviews may only call ratings; anything else is refused (REGISTRY_ONLY).
    mesh.write(
        "sidecar-reviews.yaml",
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector:
    labels: {app: reviews}
  egress:
  - hosts: [\"./ratings.default.svc.cluster.local\"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
",
    );
    wait_until("reviews-v2's Envoy to drop the details cluster", || {
        !clusters(14).contains("details.default.svc.cluster.local")
    });
    let c14 = clusters(14);
    assert!(
        c14.contains("outbound|9080|v1|ratings.default.svc.cluster.local"),
        "{c14}"
    );
    assert!(!c14.contains("productpage.default.svc.cluster.local"));
    for _ in 0..3 {
        assert_eq!(status(14, "http://details:9080/details/0"), 502);
        assert_eq!(status(14, "http://ratings:9080/ratings/0"), 200);
        // productpage has no Sidecar: it still sees and reaches everything.
        assert_eq!(status(11, "http://details:9080/details/0"), 200);
    }
    assert!(clusters(11).contains("details.default.svc.cluster.local"));
    // The page still works end to end (reviews only ever calls ratings).
    let page = mesh.try_productpage(None).expect("productpage");
    assert!(
        page["calls"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["status"] == 200)),
        "{page}"
    );

    // Removing the Sidecar gives the full view back.
    mesh.remove("sidecar-reviews.yaml");
    wait_until("reviews-v2 to reach details again", || {
        status(14, "http://details:9080/details/0") == 200
    });
}
