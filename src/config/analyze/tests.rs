use std::path::Path;

use super::*;

/// Two bookinfo-like services: `reviews` (workloads v1 and v2) and
/// `ratings` (v1), in namespace `default`.
const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 127.0.0.13, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2}
spec: {address: 127.0.0.14, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v1}
spec: {address: 127.0.0.16, labels: {app: ratings, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn mk_snapshot(extra: &str) -> ConfigSnapshot {
    let text = format!("{MESH}---\n{extra}");
    let parsed = crate::config::parse_file(Path::new("test.yaml"), &text);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    snapshot_of(parsed.resources)
}

fn codes(extra: &str) -> Vec<(&'static str, String, String)> {
    analyze(&mk_snapshot(extra))
        .into_iter()
        .map(|m| (m.code, m.path, m.message))
        .collect()
}

#[test]
fn a_consistent_mesh_has_no_findings() {
    let found = codes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#,
    );
    assert_eq!(found, vec![]);
}

#[test]
fn ist0101_missing_subset_host_and_gateway() {
    let found = codes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [mesh, bookinfo-gateway]
  http:
  - route:
    - {destination: {host: reviews, subset: v3}, weight: 50}
    - {destination: {host: reviewz}, weight: 50}
"#,
    );
    assert_eq!(
        found,
        vec![
            (
                "IST0101",
                "spec.http[0].route[1].destination.host".into(),
                "Referenced host not found: \"reviewz.default.svc.cluster.local\"".into()
            ),
            (
                "IST0101",
                "spec.http[0].route[0].destination.subset".into(),
                "Referenced host+subset in destinationrule not found: \"reviews.default.svc.cluster.local+v3\"".into()
            ),
            (
                "IST0101",
                "spec.gateways[1]".into(),
                "Referenced gateway not found: \"default/bookinfo-gateway\"".into()
            ),
        ]
    );
    let m = &analyze(&mk_snapshot(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [x]\n  http: [{route: [{destination: {host: nope}}]}]\n",
    ))[0];
    assert_eq!(m.level, Level::Error);
    assert_eq!(
        m.to_string(),
        "Error [IST0101] (VirtualService default/x) test.yaml: document 7: \
         spec.http[0].route[0].destination.host: Referenced host not found: \"nope.default.svc.cluster.local\""
    );
}

#[test]
fn ist0101_wildcard_service_entries_cover_hosts() {
    let found = codes(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{sniHosts: [api.example.com]}]
    route: [{destination: {host: api.example.com}}]
"#,
    );
    assert_eq!(found, vec![]);
}

#[test]
fn ist0109_two_mesh_virtual_services_for_one_host() {
    let vs = |name: &str, host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\n\
             spec:\n  hosts: [{host}]\n  http: [{{route: [{{destination: {{host: reviews}}}}]}}]\n"
        )
    };
    let found = codes(&format!(
        "{}---\n{}",
        vs("a", "reviews"),
        vs("b", "reviews.default.svc.cluster.local")
    ));
    assert_eq!(found.len(), 2, "{found:?}");
    for (code, path, message) in &found {
        assert_eq!(*code, "IST0109");
        assert_eq!(path, "spec.hosts[0]");
        assert!(
            message.contains("default/a,default/b")
                && message.contains("reviews.default.svc.cluster.local"),
            "{message}"
        );
    }
    assert_eq!(
        Code::ConflictingMeshGatewayVirtualServiceHosts.level(),
        Level::Error
    );
}

#[test]
fn ist0130_and_ist0131_unreachable_rules_and_matches() {
    let found = codes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{headers: {end-user: {exact: jason}}}, {uri: {prefix: /v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{name: again, headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
  - name: never
    route: [{destination: {host: reviews, subset: v2}}]
"#,
    );
    let got: Vec<(&str, &str)> = found.iter().map(|(c, p, _)| (*c, p.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("IST0131", "spec.http[1].match[0]"),
            ("IST0131", "spec.http[2].match[0]"),
            ("IST0130", "spec.http[2]"),
            ("IST0130", "spec.http[4]"),
        ]
    );
    assert!(
        found[0].2.contains("rule #1 match #0 is not used") && found[0].2.contains("\"jason\"")
    );
    assert!(found[3].2.contains("rule \"never\" not used") && found[3].2.contains("#3"));
    assert_eq!(Code::VirtualServiceUnreachableRule.level(), Level::Warning);
    assert_eq!(Code::VirtualServiceIneffectiveMatch.level(), Level::Info);
}

#[test]
fn ist0130_tcp_rule_after_a_catch_all() {
    let found = codes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-tcp}
spec:
  hosts: [ratings]
  tcp:
  - route: [{destination: {host: ratings}}]
  - match: [{port: 9080}]
    route: [{destination: {host: ratings}}]
"#,
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].0, found[0].1.as_str()),
        ("IST0130", "spec.tcp[1]")
    );
}

#[test]
fn ist0173_subset_selecting_no_workload() {
    let found = codes(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v9, labels: {version: v9}}
"#,
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].0, found[0].1.as_str()),
        ("IST0173", "spec.subsets[1]")
    );
    assert!(found[0].2.contains("\"v9\""), "{}", found[0].2);
}

#[test]
fn ist0113_disable_toward_strict_workloads() {
    let strict = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings}
spec:
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: STRICT}
"#;
    let disable = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy: {tls: {mode: DISABLE}}
"#;
    let found = codes(&format!("{strict}---\n{disable}"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].0, found[0].1.as_str()),
        ("IST0113", "spec.trafficPolicy.tls.mode")
    );
    assert!(
        found[0]
            .2
            .contains("ratings.default.svc.cluster.local:9080")
            && found[0].2.contains("default/ratings-v1"),
        "{}",
        found[0].2
    );
    // PERMISSIVE (the default) takes plaintext: no conflict.
    assert_eq!(codes(disable), vec![]);
    // A port-level PERMISSIVE exception on the port: no conflict either.
    let port_exception = strict.replace(
        "mtls: {mode: STRICT}",
        "mtls: {mode: STRICT}\n  portLevelMtls: {\"9080\": {mode: PERMISSIVE}}",
    );
    assert_eq!(codes(&format!("{port_exception}---\n{disable}")), vec![]);
}

#[test]
fn ist0101_authorization_policy_unknown_namespaces() {
    let found = codes(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: [default, "istio-*", "*-prod", deafult]
        principals: [cluster.local/ns/default/sa/bookinfo-reviews, cluster.local/ns/foo/sa/x, "cluster.local/ns/*/sa/y"]
"#,
    );
    let got: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|(c, p, m)| (*c, p.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "IST0101",
                "spec.rules[0].from[0].source.namespaces[1]",
                "Referenced namespace not found: \"istio-*\""
            ),
            (
                "IST0101",
                "spec.rules[0].from[0].source.namespaces[2]",
                "Referenced namespace not found: \"*-prod\""
            ),
            (
                "IST0101",
                "spec.rules[0].from[0].source.namespaces[3]",
                "Referenced namespace not found: \"deafult\""
            ),
            (
                "IST0101",
                "spec.rules[0].from[0].source.principals[1]",
                "Referenced namespace (of principal \"cluster.local/ns/foo/sa/x\") not found: \"foo\""
            ),
        ]
    );
}

#[test]
fn every_code_is_documented() {
    let doc = include_str!("../../../docs/analyze.md");
    for c in Code::ALL {
        let row = format!("| {} | {} | {} |", c.id(), c.name(), c.level());
        assert!(doc.contains(&row), "docs/analyze.md lacks the row {row:?}");
    }
}

#[test]
fn ist0130_rules_after_a_match_without_conditions() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{port: 9090}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: all
    match: [{uri: {prefix: /api}}, {uri: {prefix: /}, ignoreUriCase: true}, {uri: {prefix: /x}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: late
    match: [{uri: {prefix: /late}}]
    route: [{destination: {host: reviews, subset: v2}}]
"#;
    let found = codes(text);
    let got: Vec<(&str, &str)> = found.iter().map(|(c, p, _)| (*c, p.as_str())).collect();
    // A port or source condition is not "every request": no finding for
    // the rules after those.
    assert_eq!(
        got,
        vec![
            ("IST0131", "spec.http[2].match[2]"),
            ("IST0130", "spec.http[3]"),
        ]
    );
    assert!(
        found[0]
            .2
            .contains("match #1 before it matches every request")
    );
    assert!(found[1].2.contains("rule \"late\" not used") && found[1].2.contains("\"all\""));
    // serve reports the dropped rule (IST0130) with its config warnings,
    // not the Info-level ineffective match.
    let served: Vec<(&str, String)> = super::serve_warnings(&mk_snapshot(text))
        .into_iter()
        .map(|m| (m.code, m.path))
        .collect();
    assert_eq!(served, vec![("IST0130", "spec.http[3]".to_string())]);
}
