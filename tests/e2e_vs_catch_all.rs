//! A sidecar VirtualService whose routes end at a catch-all, with real
//! Envoy: the rules after a `uri: {prefix: /}` match never reach the
//! sidecar's route table (as in Istio), traffic follows the rules before
//! it, and the dropped rules are reported as IST0130 on
//! /debug/config_errors.

mod common;

use common::{Mesh, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 244;

const REVIEWS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: everyone
    match: [{uri: {prefix: /}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: dead-mary
    match: [{headers: {end-user: {exact: mary}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: dead-default
    route: [{destination: {host: reviews, subset: v3}}]
";

#[test]
fn routes_end_at_the_first_catch_all_and_the_rest_is_reported() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &["destination-rule-all.yaml"], false);
    mesh.start_bookinfo();
    mesh.write("reviews.yaml", REVIEWS);
    let version = |user: Option<&str>| mesh.reviews_call(user).0["body"]["version"].clone();
    // Without the VirtualService, calls go to any version: wait until
    // several in a row follow it.
    wait_until("the VirtualService to apply", || {
        (0..6).all(|_| version(Some("jason")) == "v2" && version(None) == "v1")
    });
    for _ in 0..5 {
        assert_eq!(version(Some("jason")), "v2");
        assert_eq!(version(Some("mary")), "v1");
        assert_eq!(version(None), "v1");
    }

    // The productpage sidecar holds the rules up to the catch-all only.
    let dump = mesh.envoy_admin(11, "/config_dump?resource=dynamic_route_configs");
    assert!(dump.contains("\"everyone\""), "catch-all missing: {dump}");
    assert!(!dump.contains("dead-mary"), "rule after the catch-all kept");
    assert!(
        !dump.contains("dead-default"),
        "rule after the catch-all kept"
    );

    let errors = mesh.get_json(&mesh.admin_url("/debug/config_errors"));
    let warnings = errors["warnings"].to_string();
    for dead in ["dead-mary", "dead-default"] {
        assert!(
            warnings.contains("[IST0130]")
                && warnings.contains(&format!("rule \\\"{dead}\\\" not used")),
            "{warnings}"
        );
    }
}
