//! Delegates merged as Istio merges them, and Istio's VirtualService order.

use std::sync::Arc;

use super::{DelegateProblemKind, VirtualServiceIndex, build};
use crate::model::istio::delegate::{merge_matches, merge_route};
use crate::model::istio::{HttpMatchRequest, HttpRoute, VirtualServiceSpec};
use crate::model::{Resource, Spec};

fn mk_vs(ns: &str, name: &str, created: Option<&str>, spec: &str) -> Arc<Resource> {
    let spec: VirtualServiceSpec = serde_yaml_ng::from_str(spec).expect("spec");
    Arc::new(Resource {
        name: name.into(),
        namespace: ns.into(),
        labels: Default::default(),
        annotations: Default::default(),
        created: created.map(|t| t.parse().expect("timestamp")),
        spec: Spec::VirtualService(spec),
        origin: Default::default(),
    })
}

fn mk_route(yaml: &str) -> HttpRoute {
    serde_yaml_ng::from_str(yaml).expect("route")
}

fn mk_matches(yaml: &str) -> Vec<HttpMatchRequest> {
    serde_yaml_ng::from_str(yaml).expect("matches")
}

fn http_of(index: &VirtualServiceIndex, name: &str) -> Vec<HttpRoute> {
    let r = index
        .effective
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name} not effective"));
    match &r.spec {
        Spec::VirtualService(s) => s.http.clone(),
        _ => unreachable!(),
    }
}

fn uri_prefixes(routes: &[HttpRoute]) -> Vec<Vec<String>> {
    routes
        .iter()
        .map(|r| {
            r.r#match
                .iter()
                .map(|m| {
                    let u = m.uri.as_ref().expect("uri");
                    u.prefix.clone().or(u.exact.clone()).unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

#[test]
fn delegate_matches_must_lie_within_the_root_match() {
    let root = mk_matches("[{uri: {prefix: /a}, headers: {x: {exact: '1'}}}]");
    // A longer prefix and an exact path under /a fit; the root's header joins.
    let merged = merge_matches(
        &root,
        &mk_matches("[{uri: {prefix: /a/b}}, {uri: {exact: /a/c}}]"),
    )
    .expect("no conflict");
    assert_eq!(merged.len(), 2);
    assert_eq!(
        merged[0].uri.as_ref().unwrap().prefix.as_deref(),
        Some("/a/b")
    );
    assert_eq!(
        merged[1].uri.as_ref().unwrap().exact.as_deref(),
        Some("/a/c")
    );
    assert!(
        merged
            .iter()
            .all(|m| m.headers["x"].exact.as_deref() == Some("1"))
    );
    // Outside the root's prefix, a regex, another header value: conflicts.
    for leaf in [
        "[{uri: {prefix: /b}}]",
        "[{uri: {regex: '/a.*'}}]",
        "[{headers: {x: {exact: '2'}}}]",
        "[{uri: {prefix: /a}, ignoreUriCase: true}]",
    ] {
        assert_eq!(merge_matches(&root, &mk_matches(leaf)), None, "{leaf}");
    }
    // No matches on either side: the other side's.
    assert_eq!(merge_matches(&[], &root), Some(root.clone()));
    assert_eq!(merge_matches(&root, &[]), Some(root.clone()));
    // Each delegate match must fit some root match (ORed root matches).
    let two = mk_matches("[{uri: {prefix: /a}}, {uri: {prefix: /b}}]");
    let merged = merge_matches(&two, &mk_matches("[{uri: {prefix: /b/1}}]")).unwrap();
    assert_eq!(merged.len(), 1);
    assert_eq!(
        merged[0].uri.as_ref().unwrap().prefix.as_deref(),
        Some("/b/1")
    );
}

#[test]
fn root_rule_settings_fill_what_the_delegate_rule_leaves_unset() {
    let root = mk_route(
        "{name: api, match: [{uri: {prefix: /api}}], delegate: {name: d}, timeout: 3s, \
         headers: {request: {set: {x-root: '1'}}}, retries: {attempts: 5}}",
    );
    let leaf = mk_route(
        "{name: v1, match: [{uri: {prefix: /api/v1}}], timeout: 1s, \
         route: [{destination: {host: v1}}]}",
    );
    let merged = merge_route(&root, &leaf).expect("merged");
    assert_eq!(merged.name.as_deref(), Some("api-v1"));
    assert_eq!(
        merged.timeout.as_deref(),
        Some("1s"),
        "the delegate's own wins"
    );
    assert_eq!(merged.retries.as_ref().and_then(|r| r.attempts), Some(5));
    assert_eq!(
        merged
            .headers
            .as_ref()
            .and_then(|h| h.request.as_ref())
            .map(|r| r.set.clone()),
        Some([("x-root".to_string(), "1".to_string())].into())
    );
    assert!(merged.delegate.is_none());
    assert_eq!(merged.route.len(), 1);
}

#[test]
fn delegates_merge_into_roots_and_are_not_applied_alone() {
    let root = mk_vs(
        "default",
        "reviews",
        None,
        "{hosts: [reviews], http: [\
          {name: first, match: [{uri: {prefix: /a}}], route: [{destination: {host: x}}]},\
          {match: [{uri: {prefix: /api}}], delegate: {name: api, namespace: team}},\
          {match: [{uri: {prefix: /gone}}], delegate: {name: missing}},\
          {match: [{uri: {prefix: /hidden}}], delegate: {name: private, namespace: team}},\
          {match: [{uri: {prefix: /host}}], delegate: {name: with-hosts}},\
          {route: [{destination: {host: reviews}}]}]}",
    );
    let api = mk_vs(
        "team",
        "api",
        None,
        "{http: [{match: [{uri: {prefix: /api/v1}}], route: [{destination: {host: v1}}]},\
          {match: [{uri: {prefix: /other}}], route: [{destination: {host: v9}}]},\
          {route: [{destination: {host: v2}}]}]}",
    );
    let private = mk_vs(
        "team",
        "private",
        None,
        "{exportTo: ['.'], http: [{route: [{destination: {host: p}}]}]}",
    );
    let with_hosts = mk_vs(
        "default",
        "with-hosts",
        None,
        "{hosts: [h], http: [{route: [{destination: {host: h}}]}]}",
    );
    let index = build([&root, &api, &private, &with_hosts].into_iter());
    let names: Vec<&str> = index.effective.iter().map(|r| r.name.as_str()).collect();
    // Delegates are not applied alone; the root comes after plain ones.
    assert_eq!(names, ["with-hosts", "reviews"]);
    let http = http_of(&index, "reviews");
    assert_eq!(
        uri_prefixes(&http),
        [
            vec!["/a".to_string()],
            vec!["/api/v1".to_string()],
            vec!["/api".to_string()],
            vec![],
        ]
    );
    // Short names resolve in the delegate's namespace.
    assert_eq!(
        http[1].route[0].destination.host,
        "v1.team.svc.cluster.local"
    );
    assert_eq!(
        http[2].route[0].destination.host, "v2.team.svc.cluster.local",
        "delegate catch-all under /api"
    );
    let problems: Vec<(DelegateProblemKind, &str, &str)> = index
        .problems
        .iter()
        .map(|p| (p.kind, p.path.as_str(), p.delegate.as_str()))
        .collect();
    assert_eq!(
        problems,
        [
            (
                DelegateProblemKind::Conflict,
                "spec.http[1].delegate",
                "team/api"
            ),
            (
                DelegateProblemKind::NotFound,
                "spec.http[2].delegate",
                "default/missing"
            ),
            (
                DelegateProblemKind::NotExported,
                "spec.http[3].delegate",
                "team/private"
            ),
            (
                DelegateProblemKind::NotFound,
                "spec.http[4].delegate",
                "default/with-hosts"
            ),
        ]
    );
    assert!(
        index.problems[3].message.contains("has hosts"),
        "{}",
        index.problems[3].message
    );
    assert!(
        index.problems[0].message.starts_with("1 of 3 rules"),
        "{}",
        index.problems[0].message
    );
}

#[test]
fn creation_time_orders_before_namespace_and_name() {
    let old = mk_vs(
        "z",
        "zz",
        Some("2024-01-01T00:00:00Z"),
        "{hosts: [a], http: [{route: [{destination: {host: a}}]}]}",
    );
    let new = mk_vs(
        "a",
        "aa",
        Some("2025-01-01T00:00:00Z"),
        "{hosts: [a], http: [{route: [{destination: {host: a}}]}]}",
    );
    let undated = mk_vs(
        "m",
        "mm",
        None,
        "{hosts: [a], http: [{route: [{destination: {host: a}}]}]}",
    );
    let index = build([&new, &old, &undated].into_iter());
    let names: Vec<&str> = index.effective.iter().map(|r| r.name.as_str()).collect();
    // No creation time sorts first (Go's zero time), then oldest first.
    assert_eq!(names, ["mm", "zz", "aa"]);
}
