//! Validation of each kind with Istio's rules, through `parse_file` (so
//! paths, documents and resource names are checked as users see them).
//! Good documents are Istio's own documentation examples; bad ones change
//! one thing and assert the exact path and message.

use std::path::Path;

use crate::config::parse::{ParsedFile, parse_file};

mod authorization;
mod delegate;
mod gateway;
mod request_authentication;
mod sidecar;
mod telemetry;
mod workload_group;

/// File name used in every error message below.
const FILE: &str = "f.yaml";

fn mk_parse(text: &str) -> ParsedFile {
    parse_file(Path::new(FILE), text)
}

/// One document: `apiVersion`, `kind`, `metadata.name` in namespace `ns`,
/// and `spec` in YAML flow style (e.g. `{servers: [...]}`).
fn mk_doc(api_version: &str, kind: &str, ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec: {spec}\n"
    )
}

/// (path, message) pairs.
type Pairs = Vec<(String, String)>;

fn pairs(list: &[crate::config::ConfigError]) -> Pairs {
    list.iter()
        .map(|e| (e.path.clone().unwrap_or_default(), e.message.clone()))
        .collect()
}

/// A document that must be accepted without errors or warnings, as the
/// single resource `id` (`Kind ns/name`).
fn assert_clean(text: &str, id: &str) {
    let parsed = mk_parse(text);
    assert!(parsed.errors.is_empty(), "{id}: {:#?}", parsed.errors);
    assert!(parsed.warnings.is_empty(), "{id}: {:#?}", parsed.warnings);
    assert!(parsed.skipped.is_empty(), "{id}: {:?}", parsed.skipped);
    let ids: Vec<String> = parsed
        .resources
        .iter()
        .map(|r| r.key().to_string())
        .collect();
    assert_eq!(ids, [id]);
}

/// The errors of a single document that must be rejected (no resource),
/// each naming the document and the resource `id`.
fn mk_errors(text: &str, id: &str) -> Pairs {
    let parsed = mk_parse(text);
    assert!(
        parsed.resources.is_empty(),
        "a rejected document must not yield a resource: {:#?}",
        parsed.resources
    );
    assert!(!parsed.errors.is_empty(), "{id}: expected errors");
    for e in &parsed.errors {
        assert_eq!(e.file, FILE);
        assert_eq!(e.document, Some(1), "{e}");
        assert_eq!(e.resource.as_deref(), Some(id), "{e}");
    }
    pairs(&parsed.errors)
}

/// The warnings of a single document that must be accepted all the same.
fn mk_warnings(text: &str, id: &str) -> Pairs {
    let parsed = mk_parse(text);
    assert!(parsed.errors.is_empty(), "{id}: {:#?}", parsed.errors);
    assert_eq!(parsed.resources.len(), 1, "a warning must not reject: {id}");
    for w in &parsed.warnings {
        assert_eq!(w.resource.as_deref(), Some(id), "{w}");
        assert_eq!(w.document, Some(1), "{w}");
    }
    pairs(&parsed.warnings)
}

/// `[(path, message), ...]` from string literals.
fn expect(list: &[(&str, &str)]) -> Pairs {
    list.iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect()
}

/// Warnings and errors are kept apart, and both name the field: a Gateway
/// with one of each yields only the error, and loses the resource.
#[test]
fn errors_reject_and_warnings_do_not() {
    let https_redirect_on_https = mk_doc(
        "networking.istio.io/v1",
        "Gateway",
        "default",
        "gw",
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, credentialName: a-cert, httpsRedirect: true}}]}",
    );
    let warnings = mk_warnings(&https_redirect_on_https, "Gateway default/gw");
    assert_eq!(
        warnings,
        expect(&[(
            "spec.servers[0].tls.httpsRedirect",
            "tls.httpsRedirect should only be used with http servers"
        )])
    );
    let both = https_redirect_on_https.replace("hosts: [a.example.com]", "hosts: [a]");
    let parsed = mk_parse(&both);
    assert!(parsed.resources.is_empty());
    assert_eq!(
        pairs(&parsed.errors),
        expect(&[(
            "spec.servers[0].hosts[0]",
            "short names (non FQDN) are not allowed"
        )])
    );
    assert_eq!(pairs(&parsed.warnings), warnings);
    assert_eq!(
        parsed.warnings[0].to_string(),
        "f.yaml: document 1 (Gateway default/gw): spec.servers[0].tls.httpsRedirect: tls.httpsRedirect should only be used with http servers"
    );
}

/// Each new kind is read in every version Istio serves, and named with its
/// group's versions when the apiVersion is wrong.
#[test]
fn new_kinds_parse_in_every_served_version() {
    let cases = [
        (
            "networking.istio.io",
            "Gateway",
            "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}",
        ),
        (
            "networking.istio.io",
            "Sidecar",
            "{egress: [{hosts: ['./*']}]}",
        ),
        (
            "networking.istio.io",
            "WorkloadGroup",
            "{template: {serviceAccount: reviews}}",
        ),
        ("security.istio.io", "AuthorizationPolicy", "{}"),
        (
            "security.istio.io",
            "RequestAuthentication",
            "{jwtRules: [{issuer: issuer-foo}]}",
        ),
        (
            "telemetry.istio.io",
            "Telemetry",
            "{accessLogging: [{providers: [{name: envoy}]}]}",
        ),
    ];
    for (group, kind, spec) in cases {
        let k = crate::model::Kind::from_name(kind).expect("a model kind");
        assert_eq!(k.group(), group);
        for version in k.versions() {
            let doc = mk_doc(&format!("{group}/{version}"), kind, "shop", "x", spec);
            assert_clean(&doc, &format!("{kind} shop/x"));
        }
        let wrong = mk_doc("example.com/v1", kind, "shop", "x", spec);
        let errors = mk_errors(&wrong, &format!("{kind} shop/x"));
        let expected: Vec<String> = k
            .versions()
            .iter()
            .map(|v| format!("{group}/{v}"))
            .collect();
        assert_eq!(
            errors,
            [(
                "apiVersion".to_string(),
                format!(
                    "example.com/v1 is not an apiVersion of {kind}; expected one of {}",
                    expected.join(", ")
                )
            )]
        );
    }
}

/// The parsed kinds sit in the snapshot, reachable by their typed iterators.
#[test]
fn new_kinds_are_in_the_snapshot() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let text = [
        mk_doc(
            "networking.istio.io/v1",
            "Gateway",
            "default",
            "gw",
            "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}",
        ),
        mk_doc(
            "networking.istio.io/v1",
            "Sidecar",
            "default",
            "sc",
            "{egress: [{hosts: ['./*']}]}",
        ),
        mk_doc(
            "networking.istio.io/v1",
            "WorkloadGroup",
            "default",
            "wg",
            "{template: {}}",
        ),
        mk_doc(
            "security.istio.io/v1",
            "AuthorizationPolicy",
            "default",
            "ap",
            "{}",
        ),
        mk_doc(
            "security.istio.io/v1",
            "RequestAuthentication",
            "default",
            "ra",
            "{}",
        ),
        mk_doc(
            "telemetry.istio.io/v1alpha1",
            "Telemetry",
            "default",
            "t",
            "{}",
        ),
    ]
    .join("---\n");
    let parsed = mk_parse(&text);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    let resources: BTreeMap<_, _> = parsed
        .resources
        .into_iter()
        .map(|r| (r.key(), Arc::new(r)))
        .collect();
    let snapshot = crate::model::ConfigSnapshot::new(resources);
    let names = |it: Vec<&str>| it.into_iter().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        names(snapshot.gateways().map(|(r, _)| r.name.as_str()).collect()),
        ["gw"]
    );
    assert_eq!(
        names(snapshot.sidecars().map(|(r, _)| r.name.as_str()).collect()),
        ["sc"]
    );
    assert_eq!(
        names(
            snapshot
                .workload_groups()
                .map(|(r, _)| r.name.as_str())
                .collect()
        ),
        ["wg"]
    );
    assert_eq!(
        names(
            snapshot
                .authorization_policies()
                .map(|(r, _)| r.name.as_str())
                .collect()
        ),
        ["ap"]
    );
    assert_eq!(
        names(
            snapshot
                .request_authentications()
                .map(|(r, _)| r.name.as_str())
                .collect()
        ),
        ["ra"]
    );
    assert_eq!(
        names(
            snapshot
                .telemetries()
                .map(|(r, _)| r.name.as_str())
                .collect()
        ),
        ["t"]
    );
}

/// Older kinds gain Istio's rules too: a DestinationRule's connection pools
/// (top level, per port, per subset), and PeerAuthentication's empty selector.
#[test]
fn destination_rule_connection_pools_and_peer_authentication_selector() {
    let dr = mk_doc(
        "networking.istio.io/v1",
        "DestinationRule",
        "default",
        "reviews",
        "{host: reviews, trafficPolicy: {connectionPool: {tcp: {maxConnections: -1, tcpKeepalive: {time: 0.1ms}}}, portLevelSettings: [{port: {number: 9080}, connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}]}, subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {}}}]}",
    );
    assert_eq!(
        mk_errors(&dr, "DestinationRule default/reviews"),
        expect(&[
            (
                "spec.trafficPolicy.connectionPool.tcp.maxConnections",
                "max connections must be non-negative"
            ),
            (
                "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
                "must be a valid duration greater than 1ms"
            ),
            (
                "spec.trafficPolicy.portLevelSettings[0].connectionPool.http.useClientProtocol",
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE"
            ),
            (
                "spec.subsets[0].trafficPolicy.connectionPool",
                "connection pool must have at least one field"
            ),
        ])
    );
    let pa = mk_doc(
        "security.istio.io/v1",
        "PeerAuthentication",
        "default",
        "strict",
        "{selector: {matchLabels: {}}, mtls: {mode: STRICT}}",
    );
    assert_eq!(
        mk_warnings(&pa, "PeerAuthentication default/strict"),
        expect(&[(
            "spec.selector.matchLabels",
            "workload selector specified without labels; it selects every workload in the namespace"
        )])
    );
}

/// A `directResponse` body in bytes must be base64 (standard or URL-safe),
/// and a retry `backoff` a duration; both are named by field path.
#[test]
fn direct_response_bytes_and_retry_backoff() {
    let vs = |rule: &str| {
        mk_doc(
            "networking.istio.io/v1",
            "VirtualService",
            "default",
            "vs",
            &format!("{{hosts: [reviews], http: [{rule}]}}"),
        )
    };
    assert_clean(
        &vs("{directResponse: {status: 418, body: {bytes: SSdtIGEgdGVhcG90}}}"),
        "VirtualService default/vs",
    );
    assert_clean(
        &vs("{route: [{destination: {host: reviews}}], retries: {attempts: 2, backoff: 25ms}}"),
        "VirtualService default/vs",
    );
    assert_eq!(
        mk_errors(
            &vs("{directResponse: {status: 200, body: {bytes: 'not base64!'}}}"),
            "VirtualService default/vs"
        ),
        expect(&[(
            "spec.http[0].directResponse.body.bytes",
            "\"not base64!\" is not valid base64"
        )])
    );
    let bad_backoff = mk_errors(
        &vs("{route: [{destination: {host: reviews}}], retries: {attempts: 2, backoff: soon}}"),
        "VirtualService default/vs",
    );
    assert_eq!(bad_backoff.len(), 1, "{bad_backoff:?}");
    assert_eq!(bad_backoff[0].0, "spec.http[0].retries.backoff");
}

/// Fields Istio's API has but pilotfish does not translate are accepted
/// with a warning naming each, rather than ignored silently.
#[test]
fn untranslated_fields_are_warnings() {
    const MSG: &str = "accepted but not translated by pilotfish: it has no effect";
    let dr = mk_doc(
        "networking.istio.io/v1",
        "DestinationRule",
        "default",
        "dr",
        "{host: reviews, trafficPolicy: {tunnel: {targetHost: 10.0.0.1, targetPort: 8443}, \
         connectionPool: {http: {http2KeepAlive: {interval: 10s}}}, \
         loadBalancer: {simple: RANDOM, warmup: {duration: 10s}}, \
         portLevelSettings: [{port: {number: 9080}, outlierDetection: {outlierDetectionHttpErrorCodes: [500]}}]}}",
    );
    assert_eq!(
        mk_warnings(&dr, "DestinationRule default/dr"),
        expect(&[
            ("spec.trafficPolicy.tunnel", MSG),
            (
                "spec.trafficPolicy.loadBalancer.warmup",
                "warmup applies to LEAST_REQUEST and ROUND_ROBIN load balancing only: it has no effect"
            ),
            ("spec.trafficPolicy.connectionPool.http.http2KeepAlive", MSG),
            (
                "spec.trafficPolicy.portLevelSettings[0].outlierDetection.outlierDetectionHttpErrorCodes",
                MSG
            ),
        ])
    );
    let vs = mk_doc(
        "networking.istio.io/v1",
        "VirtualService",
        "default",
        "vs",
        "{hosts: [reviews], http: [{match: [{statPrefix: x, uri: {prefix: /a}}], route: [{destination: {host: reviews}}]}]}",
    );
    assert_eq!(
        mk_warnings(&vs, "VirtualService default/vs"),
        expect(&[("spec.http[0].match[0].statPrefix", MSG)])
    );
}

/// PASSTHROUGH load balancing has no useful meaning without traffic
/// capture: accepted (Istio's API allows it) with a warning.
#[test]
fn passthrough_load_balancing_is_a_warning() {
    let dr = mk_doc(
        "networking.istio.io/v1",
        "DestinationRule",
        "default",
        "dr",
        "{host: reviews, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}",
    );
    let w = mk_warnings(&dr, "DestinationRule default/dr");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "spec.trafficPolicy.loadBalancer.simple");
    assert!(w[0].1.contains("original destination"), "{w:?}");
}

/// Warmup and retry budget values are checked before they reach Envoy.
#[test]
fn warmup_and_retry_budget_values() {
    let dr = |policy: &str| {
        mk_doc(
            "networking.istio.io/v1",
            "DestinationRule",
            "default",
            "dr",
            &format!("{{host: reviews, trafficPolicy: {policy}}}"),
        )
    };
    assert_clean(
        &dr(
            "{loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 60s, minimumPercent: 10}}, retryBudget: {percent: 20, budgetInterval: 10s}}",
        ),
        "DestinationRule default/dr",
    );
    let errors = mk_errors(
        &dr(
            "{loadBalancer: {warmup: {duration: later, minimumPercent: 150}}, retryBudget: {percent: -1}}",
        ),
        "DestinationRule default/dr",
    );
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.trafficPolicy.retryBudget.percent",
            "spec.trafficPolicy.loadBalancer.warmup.duration",
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
        ],
        "{errors:?}"
    );
    assert_eq!(errors[0].1, "percentage -1 must be between 0 and 100");
}
