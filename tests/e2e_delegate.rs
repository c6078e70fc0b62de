//! Delegate VirtualServices with real Envoy: a root VirtualService hands a
//! path prefix to a delegate in another namespace, whose rules take effect
//! through the sidecars narrowed by the root rule's match and carrying its
//! header operations; a rule whose delegate is missing is skipped (and
//! reported) while the root's other rules keep working.

mod common;

use common::{Mesh, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 248;

const ROOT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    headers: {response: {set: {x-root-rule: api}}}
    delegate: {name: reviews-api, namespace: team}
  - match: [{uri: {prefix: /gone}}]
    delegate: {name: missing}
  - route: [{destination: {host: reviews, subset: v2}}]
";

const DELEGATE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-api, namespace: team}
spec:
  http:
  - name: v1
    match: [{uri: {prefix: /api/v1}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]
  - name: elsewhere
    match: [{uri: {prefix: /v3}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]
";

#[test]
fn a_delegates_rules_route_through_the_sidecar() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &["destination-rule-all.yaml"], false);
    mesh.start_bookinfo();
    mesh.write("reviews-root.yaml", ROOT);
    mesh.write("reviews-delegate.yaml", DELEGATE);
    // Through productpage's sidecar, as productpage would call reviews.
    let call = |path: &str| mesh.via_sidecar(11, &format!("http://reviews:9080{path}"), &[]);
    let version = |path: &str| {
        let x = call(path);
        assert_eq!(x.status, 200, "{path}: {}", x.body);
        let body: serde_json::Value = serde_json::from_str(&x.body).expect("json");
        body["version"].as_str().unwrap_or_default().to_string()
    };
    // Before the files are read reviews has no VirtualService and Envoy
    // balances over v1, v2 and v3, so a single answer proves nothing: wait
    // for the root rule's own response header (present only once the
    // delegate is merged), then for answers that hold.
    wait_until("the root rule and its delegate to be served", || {
        let x = call("/api/v1/reviews/0");
        x.headers.get("x-root-rule").is_some_and(|v| v == "api")
    });
    wait_until("the root's catch-all to send other paths to v2", || {
        (0..5).all(|_| version("/reviews/0") == "v2")
    });
    wait_until("the delegate's /api/v1 rule to reach v1", || {
        (0..5).all(|_| version("/api/v1/reviews/0") == "v1")
    });
    for _ in 0..10 {
        assert_eq!(version("/api/v1/reviews/0"), "v1");
        assert_eq!(version("/reviews/0"), "v2");
    }
    // The root rule's response header operation applies to its delegate's rules.
    let x = call("/api/v1/reviews/0");
    assert_eq!(
        x.headers.get("x-root-rule").and_then(|v| v.to_str().ok()),
        Some("api")
    );
    assert!(call("/reviews/0").headers.get("x-root-rule").is_none());
    // Paths under /api that no delegate rule takes, the delegate's rule
    // outside /api (dropped) and the missing delegate's /gone (skipped)
    // all fall through to the root's catch-all.
    assert_eq!(version("/api/other/reviews/0"), "v2");
    assert_eq!(version("/v3/reviews/0"), "v2");
    assert_eq!(version("/gone/reviews/0"), "v2");

    // Envoy holds the merged rules, named root-delegate as Istio names them.
    let dump = mesh.envoy_admin(11, "/config_dump?resource=dynamic_route_configs");
    assert!(dump.contains("\"api-v1\""), "merged route missing: {dump}");
    assert!(!dump.contains("\"api-elsewhere\""), "conflicting rule kept");

    // The skipped rule and the dropped one are reported.
    let errors = mesh.get_json(&mesh.admin_url("/debug/config_errors"));
    let warnings = errors["warnings"].to_string();
    assert!(
        warnings.contains("delegate VirtualService default/missing does not exist"),
        "{warnings}"
    );
    assert!(
        warnings.contains("1 of 2 rules of delegate VirtualService team/reviews-api"),
        "{warnings}"
    );

    // The delegate is not applied on its own: removing the root leaves
    // plain routing (all versions), and no route to v1 by path.
    mesh.remove("reviews-root.yaml");
    wait_until("plain routing once the root is gone", || {
        !mesh
            .envoy_admin(11, "/config_dump?resource=dynamic_route_configs")
            .contains("\"api-v1\"")
    });
}
