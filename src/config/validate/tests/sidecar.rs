use super::*;

/// Istio's Sidecar reference examples: the namespace default, a workload's
/// ingress to a unix socket with a per-port egress and a catch-all, TLS on
/// an ingress port, and an egress proxy.
const DOCS_DEFAULT: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: prod-us1
spec:
  egress:
  - hosts:
    - "prod-us1/*"
    - "prod-apis/*"
    - "istio-system/*"
"#;

const DOCS_RATINGS: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: ratings
  namespace: prod-us1
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: unix:///var/run/someuds.sock
  egress:
  - port:
      number: 9080
      protocol: HTTP
      name: egresshttp
    hosts:
    - "prod-us1/*"
  - hosts:
    - "istio-system/*"
"#;

const DOCS_INGRESS_TLS: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: ratings
  namespace: prod-us1
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTPS
      name: somename
    defaultEndpoint: 127.0.0.1:8080
    tls:
      mode: SIMPLE
      privateKey: "/etc/istio/ratings-certs/privatekey.pem"
      serverCertificate: "/etc/istio/ratings-certs/servercert.pem"
"#;

const DOCS_EGRESS_PROXY: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: prod-us1
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy:
      host: foo.bar
      subset: v1
      port:
        number: 443
"#;

const ID: &str = "Sidecar prod-us1/ratings";

fn mk_sidecar(spec: &str) -> String {
    mk_doc(
        "networking.istio.io/v1",
        "Sidecar",
        "prod-us1",
        "ratings",
        spec,
    )
}

#[test]
fn istio_docs_examples_are_valid() {
    assert_clean(DOCS_DEFAULT, "Sidecar prod-us1/default");
    assert_clean(DOCS_RATINGS, ID);
    assert_clean(DOCS_INGRESS_TLS, ID);
    assert_clean(DOCS_EGRESS_PROXY, "Sidecar prod-us1/default");
    let parsed = mk_parse(DOCS_RATINGS);
    let crate::model::Spec::Sidecar(sc) = &parsed.resources[0].spec else {
        panic!("not a Sidecar: {:?}", parsed.resources[0].spec);
    };
    assert_eq!(
        sc.ingress[0].default_endpoint.as_deref(),
        Some("unix:///var/run/someuds.sock")
    );
    assert!(sc.egress[1].port.is_none());
}

#[test]
fn an_empty_sidecar_is_an_error() {
    assert_eq!(
        mk_errors(
            &mk_sidecar("{workloadSelector: {labels: {app: ratings}}}"),
            ID
        ),
        expect(&[("spec", "sidecar: empty configuration provided")])
    );
}

#[test]
fn egress_hosts_are_namespace_slash_host() {
    let doc = mk_sidecar(
        "{egress: [{hosts: ['./*', '~/*', '*/api.example.com', reviews.prod.svc.cluster.local, 'Prod_1/*', 'prod/reviews', '']}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.egress[0].hosts[3]",
                "host must be of form namespace/dnsName"
            ),
            (
                "spec.egress[0].hosts[4]",
                "invalid namespace value \"Prod_1\" in sidecar"
            ),
            (
                "spec.egress[0].hosts[5]",
                "short names (non FQDN) are not allowed"
            ),
            (
                "spec.egress[0].hosts[6]",
                "host must be of form namespace/dnsName"
            ),
        ])
    );
    let none = mk_sidecar("{egress: [{hosts: []}]}");
    assert_eq!(
        mk_errors(&none, ID),
        expect(&[(
            "spec.egress[0].hosts",
            "sidecar: egress listener must contain at least one host"
        )])
    );
}

#[test]
fn only_the_last_egress_listener_may_have_no_port() {
    let doc = mk_sidecar(
        "{egress: [{hosts: ['./*']}, {port: {number: 9080, protocol: HTTP, name: http}, hosts: ['./*']}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[(
            "spec.egress[0].port",
            "sidecar: the egress listener with empty port should be the last listener in the list"
        )])
    );
}

#[test]
fn egress_ports_binds_and_sockets() {
    let doc = mk_sidecar(
        "{egress: [{port: {number: 9080, protocol: HTTP, name: http}, hosts: ['./*']}, {port: {number: 9080, protocol: FTP, name: Http_2}, bind: '10.0.0.300', hosts: ['./*']}, {port: {number: 0, protocol: HTTP}, bind: 127.0.0.1, captureMode: IPTABLES, hosts: ['./*']}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            ("spec.egress[1].port.name", "invalid port name: Http_2"),
            (
                "spec.egress[1].port.protocol",
                "unsupported protocol: FTP (expected one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, HTTP_PROXY, TCP, TLS, UDP, MONGO, REDIS, MYSQL)"
            ),
            ("spec.egress[1].bind", "10.0.0.300 is not a valid IP"),
            (
                "spec.egress[1].port.number",
                "sidecar: ports on IP bound listeners must be unique"
            ),
            (
                "spec.egress[2].bind",
                "sidecar: ports with 0 value must have a unix domain socket bind address"
            ),
            (
                "spec.egress[2].captureMode",
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners"
            ),
        ])
    );
    let uds = mk_sidecar(
        "{egress: [{port: {number: 0, protocol: HTTP}, bind: 'unix:///var/run/a.sock', hosts: ['./*']}, {port: {number: 0, protocol: HTTP}, bind: 'unix:///var/run/a.sock', hosts: ['./*']}]}",
    );
    assert_eq!(
        mk_errors(&uds, ID),
        expect(&[(
            "spec.egress[1].bind",
            "sidecar: unix domain socket values for listeners must be unique"
        )])
    );
}

#[test]
fn ingress_needs_a_port_and_a_loopback_or_socket_endpoint() {
    let doc = mk_sidecar(
        "{ingress: [{port: {protocol: HTTP, name: http}, defaultEndpoint: '127.0.0.1:8080'}, {port: {number: 9081, protocol: HTTP, name: a, targetPort: 81}, defaultEndpoint: '10.1.2.3:8080'}, {port: {number: 9082, protocol: HTTP, name: b}, defaultEndpoint: '0.0.0.0:http'}, {port: {number: 9083, protocol: HTTP, name: c}, defaultEndpoint: '[::1]:8083'}, {port: {number: 9084, protocol: HTTP, name: d}, defaultEndpoint: 'unix://var/run/app.sock'}, {port: {number: 9083, protocol: HTTP, name: e}}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.ingress[0].port.number",
                "port number 0 must be in the range 1..65535"
            ),
            (
                "spec.ingress[1].port.targetPort",
                "targetPort has no impact on Sidecars"
            ),
            (
                "spec.ingress[1].defaultEndpoint",
                "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, unix://filepath or unset"
            ),
            (
                "spec.ingress[2].defaultEndpoint",
                "sidecar: defaultEndpoint port (http) is not a number"
            ),
            (
                "spec.ingress[4].defaultEndpoint",
                "var/run/app.sock is not an absolute path to a file"
            ),
            (
                "spec.ingress[5].port.number",
                "sidecar: ports on IP bound listeners must be unique"
            ),
        ])
    );
    let missing = mk_sidecar("{ingress: [{defaultEndpoint: '127.0.0.1:8080'}]}");
    let errors = mk_errors(&missing, ID);
    assert_eq!(errors[0].0, "spec.ingress[0]");
    assert!(
        errors[0].1.starts_with("missing field `port`"),
        "{}",
        errors[0].1
    );
}

#[test]
fn ingress_tls_is_limited() {
    let doc = mk_sidecar(
        "{ingress: [{port: {number: 9080, protocol: HTTP, name: http}, tls: {mode: ISTIO_MUTUAL, credentialName: c, httpsRedirect: true, subjectAltNames: [a]}}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.ingress[0].tls.subjectAltNames",
                "sidecar: subjectAltNames is not supported in ingress tls"
            ),
            (
                "spec.ingress[0].tls.httpsRedirect",
                "sidecar: httpsRedirect is not supported"
            ),
            (
                "spec.ingress[0].tls.credentialName",
                "sidecar: credentialName is not currently supported"
            ),
            (
                "spec.ingress[0].tls.mode",
                "cannot set mode to ISTIO_MUTUAL in sidecar ingress tls"
            ),
            (
                "spec.ingress[0].tls",
                "server cannot have TLS settings for non HTTPS/TLS ports"
            ),
            (
                "spec.ingress[0].tls.credentialName",
                "ISTIO_MUTUAL TLS cannot have associated credentialName"
            ),
        ])
    );
}

#[test]
fn connection_pools_are_checked() {
    let doc = mk_sidecar(
        "{inboundConnectionPool: {}, ingress: [{port: {number: 9000, protocol: TCP, name: tcp}, connectionPool: {http: {http2MaxRequests: -1, idleTimeout: 500us}, tcp: {connectTimeout: 0s}}}]}",
    );
    let parsed = mk_parse(&doc);
    assert_eq!(
        pairs(&parsed.errors),
        expect(&[
            (
                "spec.ingress[0].connectionPool.http.http2MaxRequests",
                "http2 max requests must be non-negative"
            ),
            (
                "spec.ingress[0].connectionPool.http.idleTimeout",
                "must be a valid duration greater than 1ms"
            ),
            (
                "spec.ingress[0].connectionPool.tcp.connectTimeout",
                "must be a valid duration greater than 1ms"
            ),
            (
                "spec.inboundConnectionPool",
                "connection pool must have at least one field"
            ),
        ])
    );
    assert_eq!(
        pairs(&parsed.warnings),
        expect(&[(
            "spec.ingress[0].connectionPool.http",
            "sidecar: HTTP connection pool settings are configured for port 9000 but its protocol is not HTTP (TCP); only TCP settings will apply"
        )])
    );
}

#[test]
fn egress_proxy_needs_allow_any_and_a_port() {
    let registry_only = mk_sidecar(
        "{outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: foo.bar, port: {number: 443}}}}",
    );
    assert_eq!(
        mk_errors(&registry_only, ID),
        expect(&[(
            "spec.outboundTrafficPolicy.egressProxy",
            "sidecar: egressProxy must be set only with ALLOW_ANY outboundTrafficPolicy mode"
        )])
    );
    let no_port =
        mk_sidecar("{outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: foo}}}");
    assert_eq!(
        mk_errors(&no_port, ID),
        expect(&[(
            "spec.outboundTrafficPolicy.egressProxy.port",
            "sidecar: egressProxy port must be non-nil"
        )])
    );
}

#[test]
fn warnings_for_duplicates_and_empty_selectors() {
    let doc = mk_sidecar(
        "{workloadSelector: {labels: {}}, egress: [{hosts: ['prod-us1/a.example.com', './a.example.com', '*/*', 'prod-us1/*']}]}",
    );
    assert_eq!(
        mk_warnings(&doc, ID),
        expect(&[
            (
                "spec.workloadSelector.labels",
                "sidecar: workload selector specified without labels, will be applied to all services in namespace"
            ),
            (
                "spec.egress[0].hosts[1]",
                "duplicated egress host: ./a.example.com"
            ),
            (
                "spec.egress[0].hosts[3]",
                "duplicated egress host: prod-us1/*"
            ),
            (
                "spec.egress[0].hosts",
                "`*/*` host select all resources, no other hosts can be added"
            ),
        ])
    );
    let wildcard =
        mk_sidecar("{workloadSelector: {labels: {app: '*'}}, egress: [{hosts: ['./*']}]}");
    assert_eq!(
        mk_errors(&wildcard, ID),
        expect(&[(
            "spec.workloadSelector.labels[app]",
            "wildcard is not supported in selector: \"app=*\""
        )])
    );
}

#[test]
fn captured_ingress_listeners_are_a_warning() {
    let doc = mk_sidecar(
        "{ingress: [{port: {number: 9080, protocol: HTTP, name: http}, captureMode: IPTABLES, defaultEndpoint: '127.0.0.1:8080'}, {port: {number: 9081, protocol: HTTP, name: b}, captureMode: NONE, defaultEndpoint: '127.0.0.1:8081'}]}",
    );
    assert_eq!(
        mk_warnings(&doc, ID),
        expect(&[(
            "spec.ingress[0].captureMode",
            "pilotfish does not capture traffic: no listener is made for ingress port 9080 with captureMode IPTABLES"
        )])
    );
}

#[test]
fn captured_egress_listeners_are_a_warning() {
    let doc = mk_sidecar(
        "{egress: [{port: {number: 9000, protocol: TCP, name: tcp}, captureMode: IPTABLES, hosts: ['./*']}, {port: {number: 0, protocol: HTTP, name: http}, bind: 'unix:///var/run/a.sock', captureMode: NONE, hosts: ['./*']}]}",
    );
    assert_eq!(
        mk_warnings(&doc, ID),
        expect(&[(
            "spec.egress[0].captureMode",
            "pilotfish does not capture traffic: no listener is made for egress port 9000 with captureMode IPTABLES"
        )])
    );
}
