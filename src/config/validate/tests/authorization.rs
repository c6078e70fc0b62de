use super::*;

const ID: &str = "AuthorizationPolicy foo/httpbin";

/// Istio's AuthorizationPolicy reference example (ALLOW with from, to, when).
const DOCS_ALLOW: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["test"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
"#;

/// Istio's DENY example: deny requests from outside namespace foo.
const DOCS_DENY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  action: DENY
  rules:
  - from:
    - source:
        notNamespaces: ["foo"]
"#;

/// Istio's CUSTOM example: ask an external authorizer about /admin paths.
const DOCS_CUSTOM: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: CUSTOM
  provider:
    name: "my-custom-authz"
  rules:
  - to:
    - operation:
        paths: ["/admin/*"]
"#;

fn mk_policy(spec: &str) -> String {
    mk_doc(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        "foo",
        "httpbin",
        spec,
    )
}

#[test]
fn istio_docs_examples_are_valid() {
    assert_clean(DOCS_ALLOW, ID);
    assert_clean(DOCS_DENY, ID);
    // Valid; pilotfish says it enforces it as DENY (no extension providers).
    assert_eq!(
        mk_warnings(DOCS_CUSTOM, ID),
        expect(&[(
            "spec.provider.name",
            super::super::authorization::CUSTOM_UNSUPPORTED
        )])
    );
    // allow-nothing and deny-all.
    assert_clean(&mk_policy("{}"), ID);
    assert_clean(&mk_policy("{action: DENY, rules: [{}]}"), ID);
    // Every supported condition key, with values of the right form.
    let when = mk_policy(
        "{rules: [{when: [{key: 'request.headers[User-Agent]', values: [curl*]}, {key: source.ip, values: [10.0.0.0/8]}, {key: remote.ip, notValues: [192.0.2.1]}, {key: source.namespace, values: [foo]}, {key: source.serviceAccount, values: [foo/sleep]}, {key: source.principal, values: ['cluster.local/ns/foo/sa/sleep']}, {key: request.auth.principal, values: ['issuer/subject']}, {key: request.auth.audiences, values: [aud]}, {key: request.auth.presenter, values: [p]}, {key: 'request.auth.claims[groups]', values: [admin]}, {key: destination.ip, values: ['2001:db8::/32']}, {key: destination.port, values: ['8080']}, {key: connection.sni, values: [a.example.com]}, {key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: ['[update]']}]}]}",
    );
    assert_clean(&when, ID);
}

#[test]
fn action_and_provider() {
    let custom = mk_policy("{action: CUSTOM, rules: [{}]}");
    assert_eq!(
        mk_errors(&custom, ID),
        expect(&[("spec.provider.name", "`provider.name` must not be empty")])
    );
    let custom_without_rules = mk_policy("{action: CUSTOM, provider: {name: ext}}");
    assert_eq!(
        mk_errors(&custom_without_rules, ID),
        expect(&[(
            "spec.rules",
            "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request"
        )])
    );
    let provider_with_allow = mk_policy("{action: ALLOW, provider: {name: ext}, rules: [{}]}");
    assert_eq!(
        mk_errors(&provider_with_allow, ID),
        expect(&[(
            "spec.provider",
            "`provider` must not be with non CUSTOM action, found ALLOW"
        )])
    );
    let deny_without_rules = mk_policy("{action: DENY}");
    assert_eq!(
        mk_errors(&deny_without_rules, ID),
        expect(&[(
            "spec.rules",
            "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request"
        )])
    );
    let bad_action = mk_policy("{action: REJECT}");
    let errors = mk_errors(&bad_action, ID);
    assert_eq!(errors[0].0, "spec.action");
    assert!(
        errors[0].1.starts_with(
            "unknown variant `REJECT`, expected one of `ALLOW`, `DENY`, `AUDIT`, `CUSTOM`"
        ),
        "{}",
        errors[0].1
    );
}

#[test]
fn custom_supports_only_some_attributes() {
    let doc = mk_policy(
        "{action: CUSTOM, provider: {name: ext}, rules: [{from: [{source: {principals: [a], ipBlocks: [10.0.0.1]}}], when: [{key: 'request.auth.claims[iss]', values: [x]}]}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.rules[0].from[0].source.principals",
                "principals is currently not supported with CUSTOM action"
            ),
            (
                "spec.rules[0].when[0].key",
                "request.auth.claims[iss] is currently not supported with CUSTOM action"
            ),
        ])
    );
}

#[test]
fn rule_lists_are_absent_or_non_empty() {
    let doc = mk_policy(
        "{rules: [{from: [], to: []}, {from: [{}], to: [{}]}, {from: [{source: {}}], to: [{operation: {}}]}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            ("spec.rules[0].from", "`from` must not be empty"),
            ("spec.rules[0].to", "`to` must not be empty"),
            (
                "spec.rules[1].from[0].source",
                "`from.source` must not be nil"
            ),
            (
                "spec.rules[1].to[0].operation",
                "`to.operation` must not be nil"
            ),
            (
                "spec.rules[2].from[0].source",
                "`from.source` must not be empty"
            ),
            (
                "spec.rules[2].to[0].operation",
                "`to.operation` must not be empty"
            ),
        ])
    );
}

#[test]
fn source_formats() {
    let doc = mk_policy(
        "{rules: [{from: [{source: {ipBlocks: [10.0.0.0/33, 1.2.3], notRemoteIpBlocks: ['::1'], principals: ['']}}, {source: {serviceAccounts: ['*', 'a/b/c', '/sa'], namespaces: [foo]}}]}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.rules[0].from[0].source.principals[0]",
                "empty value not allowed, found in principals"
            ),
            (
                "spec.rules[0].from[0].source.ipBlocks[0]",
                "bad CIDR range (10.0.0.0/33): prefix length must be 0..32"
            ),
            (
                "spec.rules[0].from[0].source.ipBlocks[1]",
                "bad IP address (1.2.3)"
            ),
            (
                "spec.rules[0].from[1].source",
                "cannot set serviceAccounts with namespaces or principals"
            ),
            (
                "spec.rules[0].from[1].source.serviceAccounts[0]",
                "wildcard not allowed, found in serviceAccounts"
            ),
            (
                "spec.rules[0].from[1].source.serviceAccounts[1]",
                "expected format 'serviceAccount' or 'namespace/serviceAccount', found \"a/b/c\" in serviceAccounts"
            ),
            (
                "spec.rules[0].from[1].source.serviceAccounts[2]",
                "expected format 'serviceAccount' or 'namespace/serviceAccount', found empty namespace \"/sa\" in serviceAccounts"
            ),
        ])
    );
}

#[test]
fn operation_formats() {
    let doc = mk_policy(
        "{rules: [{to: [{operation: {ports: ['80', http, '70000'], paths: ['/foo/{**}/bar', '/foo/{**}/{*}', '/a/{x}', '/b/{*}/c d']}}]}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.rules[0].to[0].operation.ports[1]",
                "bad port (http): expected a number 0-65535"
            ),
            (
                "spec.rules[0].to[0].operation.ports[2]",
                "bad port (70000): expected a number 0-65535"
            ),
            (
                "spec.rules[0].to[0].operation.paths[1]",
                "invalid or unsupported path foo/{**}/{*}, found in paths. {**} is not the last operator"
            ),
            (
                "spec.rules[0].to[0].operation.paths[2]",
                "invalid or unsupported path a/{x}, found in paths. Contains '{' or '}' beyond a supported path template"
            ),
            (
                "spec.rules[0].to[0].operation.paths[3]",
                "invalid or unsupported path b/{*}/c d, found in paths. Contains segment c d with invalid string literal"
            ),
        ])
    );
}

#[test]
fn when_keys_come_from_istios_attribute_list() {
    let doc = mk_policy(
        "{rules: [{when: [{key: request.foo, values: [x]}, {key: destination.port, values: [http]}, {key: source.ip, notValues: [not-an-ip]}, {key: request.headers, values: [x]}, {key: 'destination.labels[app]', values: [x]}, {key: source.namespace}, {key: '', values: [x]}]}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.rules[0].when[0].values",
                "invalid `value` for `key` request.foo: unknown attribute: request.foo"
            ),
            (
                "spec.rules[0].when[1].values",
                "invalid `value` for `key` destination.port: bad port (http): expected a number 0-65535"
            ),
            (
                "spec.rules[0].when[2].notValues",
                "invalid `notValue` for `key` source.ip: bad IP address (not-an-ip)"
            ),
            (
                "spec.rules[0].when[3].values",
                "invalid `value` for `key` request.headers: bad key (request.headers): should have format a[b]"
            ),
            (
                "spec.rules[0].when[4].values",
                "invalid `value` for `key` destination.labels[app]: attribute destination.labels[app] is replaced by the workload selector"
            ),
            (
                "spec.rules[0].when[5]",
                "at least one of `values` or `notValues` must be set for key source.namespace"
            ),
            ("spec.rules[0].when[6].key", "`key` must not be empty"),
        ])
    );
}

#[test]
fn selector_and_target_refs() {
    let both = mk_policy(
        "{selector: {matchLabels: {app: httpbin}}, targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}}",
    );
    assert_eq!(
        mk_errors(&both, ID),
        expect(&[("spec", "only one of targetRefs or selector can be set")])
    );
    let bad_ref = mk_policy(
        "{targetRefs: [{kind: Service, name: httpbin}, {kind: Deployment, group: apps, name: httpbin, namespace: bar}]}",
    );
    assert_eq!(
        mk_errors(&bad_ref, ID),
        expect(&[
            (
                "spec.targetRefs[1].namespace",
                "cross namespace referencing is not currently supported"
            ),
            (
                "spec.targetRefs[1].kind",
                "targetRef must be to one of core/Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/GatewayClass but was apps/Deployment"
            ),
        ])
    );
    let wildcard = mk_policy("{selector: {matchLabels: {app: 'http*'}}}");
    assert_eq!(
        mk_errors(&wildcard, ID),
        expect(&[(
            "spec.selector.matchLabels[app]",
            "wildcard is not supported in selector: \"app=http*\""
        )])
    );
    let empty = mk_policy("{selector: {}}");
    assert_eq!(
        mk_warnings(&empty, ID),
        expect(&[(
            "spec.selector.matchLabels",
            "workload selector specified without labels; it selects every workload in the namespace"
        )])
    );
}

#[test]
fn deny_with_only_http_attributes_warns_about_tcp_ports() {
    let doc = mk_policy(
        "{action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}, {from: [{source: {requestPrincipals: ['*']}}]}, {to: [{operation: {ports: ['8080'], methods: [POST]}}]}]}",
    );
    let warning = "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port";
    assert_eq!(
        mk_warnings(&doc, ID),
        expect(&[("spec.rules[0]", warning), ("spec.rules[1]", warning)])
    );
}
