//! Delegate VirtualServices: Istio's webhook rules for roots and delegates.

use super::{assert_clean, expect, mk_doc, mk_errors};

const VS: &str = "networking.istio.io/v1";

#[test]
fn a_root_and_its_delegate_are_accepted() {
    assert_clean(
        &mk_doc(
            VS,
            "VirtualService",
            "default",
            "reviews",
            "{hosts: [reviews], http: [{match: [{uri: {prefix: /api}}], delegate: {name: reviews-api, namespace: team}}, {route: [{destination: {host: reviews}}]}]}",
        ),
        "VirtualService default/reviews",
    );
    // No hosts: a delegate, with only HTTP rules.
    assert_clean(
        &mk_doc(
            VS,
            "VirtualService",
            "team",
            "reviews-api",
            "{http: [{match: [{uri: {prefix: /api/v1}}], route: [{destination: {host: reviews-v1}}]}]}",
        ),
        "VirtualService team/reviews-api",
    );
}

#[test]
fn a_delegate_has_no_gateways_tcp_tls_or_further_delegates() {
    let found = mk_errors(
        &mk_doc(
            VS,
            "VirtualService",
            "team",
            "d",
            "{gateways: [gw], http: [{delegate: {name: other}}], tcp: [{route: [{destination: {host: db}}]}]}",
        ),
        "VirtualService team/d",
    );
    assert_eq!(
        found,
        expect(&[
            (
                "spec.gateways",
                "a delegate VirtualService (one without hosts) must have no gateways"
            ),
            (
                "spec.tcp",
                "a delegate VirtualService (one without hosts) must have no tcp"
            ),
            (
                "spec.http[0].delegate",
                "a delegate VirtualService's rule cannot delegate again"
            ),
        ])
    );
}

#[test]
fn a_root_rule_leaves_routing_to_its_delegate() {
    let found = mk_errors(
        &mk_doc(
            VS,
            "VirtualService",
            "default",
            "r",
            "{hosts: [reviews], http: [{delegate: {namespace: team}, route: [{destination: {host: reviews}}]}, {delegate: {name: x}, redirect: {uri: /x}}]}",
        ),
        "VirtualService default/r",
    );
    assert_eq!(
        found,
        expect(&[
            (
                "spec.http[0].delegate.name",
                "the delegate VirtualService's name is required"
            ),
            (
                "spec.http[0].route",
                "a rule with delegate must not specify route (the delegate routes)"
            ),
            (
                "spec.http[1].redirect",
                "a rule with delegate must not specify redirect"
            ),
        ])
    );
}
