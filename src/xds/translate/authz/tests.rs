use std::sync::Arc;

use envoy_types::pb::envoy::config::rbac::v3::{Rbac, rbac::Action as RbacAction};
use prost::Message;
use serde_json::Value;

use super::*;
use crate::config::parse_file;
use crate::model::{ConfigSnapshot, Registry, WorkloadKey};

const WORKLOADS: &str = include_str!("../../../../examples/bookinfo/mesh/workloads.yaml");
const SERVICES: &str = include_str!("../../../../examples/bookinfo/mesh/services.yaml");

fn mk_config(policies: &str) -> (ConfigSnapshot, Registry) {
    let mut config = ConfigSnapshot::default();
    for (i, text) in [SERVICES, WORKLOADS, policies].iter().enumerate() {
        let parsed = parse_file(std::path::Path::new(&format!("f{i}.yaml")), text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        for r in parsed.resources {
            config.resources.insert(r.key(), Arc::new(r));
        }
    }
    let registry = Registry::build(&config);
    (config, registry)
}

fn mk_workload<'a>(reg: &'a Registry, name: &str) -> &'a Workload {
    &reg.workloads[&WorkloadKey {
        namespace: "default".into(),
        name: name.into(),
    }]
}

/// The RBAC rule sets for `workload`, decoded, as (action, policy JSON by name).
fn mk_rbac(policies: &str, workload: &str, tcp: bool) -> Vec<(RbacAction, Value)> {
    let (config, reg) = mk_config(policies);
    let applied = policies_for(&config, mk_workload(&reg, workload));
    rbac_rules(&applied, tcp)
        .into_iter()
        .map(|r| {
            let rbac = Rbac::decode(r.encode_to_vec().as_slice()).unwrap();
            let json = crate::xds::dump::message_json(&rbac);
            (
                RbacAction::try_from(rbac.action).unwrap(),
                json["policies"].clone(),
            )
        })
        .collect()
}

fn policy(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n---\n"
    )
}

#[test]
fn allow_without_rules_denies_everything_and_empty_rule_allows_everything() {
    let deny_all = policy("deny-all", "default", "  {}");
    let out = mk_rbac(&deny_all, "details-v1", false);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, RbacAction::Allow);
    assert!(out[0].1.is_null(), "no policies: {}", out[0].1);

    let allow_all = policy("allow-all", "default", "  rules: [{}]");
    let out = mk_rbac(&allow_all, "details-v1", false);
    assert_eq!(out[0].0, RbacAction::Allow);
    let p = &out[0].1["ns[default]-policy[allow-all]-rule[0]"];
    assert_eq!(p["permissions"][0]["any"], true);
    assert_eq!(p["principals"][0]["any"], true);
}

#[test]
fn audit_then_deny_then_allow_and_custom_fails_closed() {
    let text = [
        policy(
            "a",
            "default",
            "  action: ALLOW\n  rules: [{to: [{operation: {methods: [GET]}}]}]",
        ),
        policy(
            "d",
            "default",
            "  action: DENY\n  rules: [{to: [{operation: {paths: [/admin*]}}]}]",
        ),
        policy(
            "l",
            "default",
            "  action: AUDIT\n  rules: [{to: [{operation: {paths: ['*']}}]}]",
        ),
        policy(
            "c",
            "default",
            "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{to: [{operation: {paths: [/ext]}}]}]",
        ),
    ]
    .concat();
    let out = mk_rbac(&text, "details-v1", false);
    let actions: Vec<RbacAction> = out.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        actions,
        [RbacAction::Log, RbacAction::Deny, RbacAction::Allow]
    );
    let deny = &out[1].1;
    assert!(deny["ns[default]-policy[c]-rule[0]"].is_object(), "{deny}");
    assert_eq!(
        deny["ns[default]-policy[d]-rule[0]"]["permissions"][0]["urlPath"]["path"]["prefix"],
        "/admin"
    );
}

#[test]
fn principals_get_the_spiffe_prefix_and_namespaces_a_regex() {
    let text = policy(
        "p",
        "default",
        "  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage, '*']}\n    - source: {namespaces: [foo], notPrincipals: ['*/sa/evil']}",
    );
    let out = mk_rbac(&text, "details-v1", false);
    let p = &out[0].1["ns[default]-policy[p]-rule[0]"]["principals"];
    let names = &p[0]["orIds"]["ids"];
    assert_eq!(
        names[0]["authenticated"]["principalName"]["exact"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert_eq!(
        names[1]["authenticated"]["principalName"]["safeRegex"]["regex"],
        ".+"
    );
    let and = &p[1]["andIds"]["ids"];
    assert_eq!(
        and[0]["notId"]["authenticated"]["principalName"]["safeRegex"]["regex"],
        "spiffe://.*/sa/evil"
    );
    assert_eq!(
        and[1]["authenticated"]["principalName"]["safeRegex"]["regex"],
        ".*/ns/foo/.*"
    );
}

#[test]
fn http_only_keys_on_tcp_drop_an_allow_rule_but_widen_a_deny_rule() {
    let text = [
        policy(
            "a",
            "default",
            "  rules:\n  - to: [{operation: {methods: [GET], ports: ['9090']}}]\n  - to: [{operation: {ports: ['9090']}}]",
        ),
        policy(
            "d",
            "default",
            "  action: DENY\n  rules:\n  - to: [{operation: {methods: [POST], ports: ['9091']}}]\n    when: [{key: 'request.headers[x]', values: ['1']}]",
        ),
    ]
    .concat();
    let out = mk_rbac(&text, "ratings-v1", true);
    let deny = &out[0].1["ns[default]-policy[d]-rule[0]"];
    assert_eq!(deny["permissions"][0]["destinationPort"], 9091);
    assert_eq!(deny["principals"][0]["any"], true);
    let allow = &out[1].1;
    assert!(allow["ns[default]-policy[a]-rule[0]"].is_null(), "{allow}");
    assert_eq!(
        allow["ns[default]-policy[a]-rule[1]"]["permissions"][0]["destinationPort"],
        9090
    );
    // On HTTP the same rules keep every key.
    let out = mk_rbac(&text, "ratings-v1", false);
    let rule = &out[1].1["ns[default]-policy[a]-rule[0]"]["permissions"][0]["andRules"]["rules"];
    assert_eq!(rule[0]["destinationPort"], 9090);
    assert_eq!(rule[1]["header"]["name"], ":method");
}

#[test]
fn request_principals_match_the_verified_tokens_iss_and_sub() {
    let text = policy(
        "j",
        "default",
        "  rules:\n  - from: [{source: {requestPrincipals: ['https://issuer.example/user-1', '*']}}]\n    when: [{key: 'request.auth.claims[groups]', values: [admin]}]",
    );
    let out = mk_rbac(&text, "details-v1", false);
    let p = &out[0].1["ns[default]-policy[j]-rule[0]"]["principals"][0]["andIds"]["ids"];
    let exact = &p[0]["orIds"]["ids"][0]["andIds"]["ids"];
    let iss = &exact[0]["sourcedMetadata"]["metadataMatcher"];
    assert_eq!(iss["filter"], "envoy.filters.http.jwt_authn");
    assert_eq!(iss["path"][0]["key"], "payload");
    assert_eq!(iss["path"][1]["key"], "iss");
    assert_eq!(
        iss["value"]["stringMatch"]["exact"],
        "https://issuer.example"
    );
    let sub = &exact[1]["sourcedMetadata"]["metadataMatcher"];
    assert_eq!(sub["value"]["stringMatch"]["exact"], "user-1");
    let any = &p[0]["orIds"]["ids"][1]["sourcedMetadata"]["metadataMatcher"];
    assert_eq!(any["value"]["presentMatch"], true);
    // A claim matches as a string or as one element of a list.
    let claim = &p[1]["orIds"]["ids"];
    assert_eq!(
        claim[1]["sourcedMetadata"]["metadataMatcher"]["value"]["listMatch"]["oneOf"]["stringMatch"]
            ["exact"],
        "admin"
    );
}

#[test]
fn conditions_land_on_the_right_side() {
    let text = policy(
        "w",
        "default",
        "  rules:\n  - when:\n    - {key: source.ip, values: [127.0.0.11, 10.0.0.0/8]}\n    - {key: destination.port, notValues: ['9080']}\n    - {key: source.namespace, values: [default]}\n    - {key: source.principal, values: [cluster.local/ns/default/sa/x]}",
    );
    let out = mk_rbac(&text, "details-v1", false);
    let p = &out[0].1["ns[default]-policy[w]-rule[0]"];
    let ids = &p["principals"][0]["andIds"]["ids"];
    let ips = &ids[0]["orIds"]["ids"];
    assert_eq!(ips[0]["directRemoteIp"]["addressPrefix"], "127.0.0.11");
    assert_eq!(ips[0]["directRemoteIp"]["prefixLen"], 32);
    assert_eq!(ips[1]["directRemoteIp"]["prefixLen"], 8);
    assert_eq!(ids.as_array().map(Vec::len), Some(3));
    assert_eq!(
        p["permissions"][0]["notRule"]["destinationPort"], 9080,
        "{p}"
    );
}

#[test]
fn scope_follows_namespace_selector_and_root_namespace() {
    let text = [
        policy("ns-wide", "default", "  rules: [{}]"),
        policy(
            "reviews-only",
            "default",
            "  selector: {matchLabels: {app: reviews}}\n  rules: [{}]",
        ),
        policy("other-ns", "foo", "  rules: [{}]"),
        policy("mesh", "istio-system", "  rules: [{}]"),
        policy(
            "mesh-ratings",
            "istio-system",
            "  selector: {matchLabels: {app: ratings}}\n  rules: [{}]",
        ),
    ]
    .concat();
    let (config, reg) = mk_config(&text);
    let names = |w: &str| -> Vec<String> {
        policies_for(&config, mk_workload(&reg, w))
            .iter()
            .map(|(r, _)| r.name.clone())
            .collect()
    };
    assert_eq!(names("reviews-v2"), ["ns-wide", "reviews-only", "mesh"]);
    assert_eq!(names("ratings-v1"), ["ns-wide", "mesh", "mesh-ratings"]);
}

#[test]
fn paths_hosts_and_templates() {
    let text = policy(
        "o",
        "default",
        "  rules:\n  - to: [{operation: {paths: [/exact, /pre*, '*.png', '/books/{*}/reviews/{**}'], hosts: [details, '*.example.com:8080']}}]",
    );
    let out = mk_rbac(&text, "details-v1", false);
    let rules = &out[0].1["ns[default]-policy[o]-rule[0]"]["permissions"][0]["andRules"]["rules"];
    let hosts = &rules[0]["orRules"]["rules"];
    assert_eq!(
        hosts[0]["header"]["stringMatch"]["safeRegex"]["regex"],
        "(?i)details(:[0-9]+)?"
    );
    assert_eq!(
        hosts[1]["header"]["stringMatch"]["safeRegex"]["regex"],
        "(?i).*\\.example\\.com:8080"
    );
    let paths = &rules[1]["orRules"]["rules"];
    assert_eq!(paths[0]["urlPath"]["path"]["exact"], "/exact");
    assert_eq!(paths[1]["urlPath"]["path"]["prefix"], "/pre");
    assert_eq!(paths[2]["urlPath"]["path"]["suffix"], ".png");
    assert_eq!(
        paths[3]["urlPath"]["path"]["safeRegex"]["regex"],
        "/books/[^/]+/reviews/.*"
    );
}
