use super::*;

const ID: &str = "Gateway some-config-namespace/my-gateway";

/// Istio's Gateway reference example: HTTP with httpsRedirect, HTTPS with
/// files and with a credential, namespace-qualified hosts, and MONGO.
const DOCS_EXAMPLE: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: my-gateway
  namespace: some-config-namespace
spec:
  selector:
    app: my-gateway-controller
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      httpsRedirect: true # sends 301 redirect for http requests
  - port:
      number: 443
      name: https-443
      protocol: HTTPS
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      mode: SIMPLE # enables HTTPS on this port
      serverCertificate: /etc/certs/servercert.pem
      privateKey: /etc/certs/privatekey.pem
  - port:
      number: 9443
      name: https-9443
      protocol: HTTPS
    hosts:
    - "bookinfo-namespace/*.bookinfo.com"
    tls:
      mode: SIMPLE # enables HTTPS on this port
      credentialName: bookinfo-secret # fetches certs from Kubernetes secret
  - port:
      number: 9080
      name: http-wildcard
      protocol: HTTP
    hosts:
    - "ns1/*"
    - "ns2/foo.bar.com"
  - port:
      number: 2379 # to expose internal service via external port 2379
      name: mongo
      protocol: MONGO
    hosts:
    - "*"
"#;

/// A Gateway with one server (flow style) in the docs example's namespace.
fn mk_gateway(server: &str) -> String {
    mk_doc(
        "networking.istio.io/v1",
        "Gateway",
        "some-config-namespace",
        "my-gateway",
        &format!("{{selector: {{istio: ingressgateway}}, servers: [{server}]}}"),
    )
}

#[test]
fn istio_docs_example_is_valid() {
    assert_clean(DOCS_EXAMPLE, ID);
    let parsed = mk_parse(DOCS_EXAMPLE);
    let crate::model::Spec::Gateway(gw) = &parsed.resources[0].spec else {
        panic!("not a Gateway: {:?}", parsed.resources[0].spec);
    };
    assert_eq!(gw.servers.len(), 5);
    assert_eq!(gw.servers[2].hosts, ["bookinfo-namespace/*.bookinfo.com"]);
    assert_eq!(
        gw.servers[2]
            .tls
            .as_ref()
            .and_then(|t| t.credential_name.as_deref()),
        Some("bookinfo-secret")
    );
}

#[test]
fn bookinfo_gateway_sample_is_valid() {
    let text = include_str!(
        "../../../../../shared/reference/istio-samples/bookinfo/bookinfo-gateway.yaml"
    );
    let parsed = mk_parse(text);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    assert!(parsed.warnings.is_empty(), "{:#?}", parsed.warnings);
    assert_eq!(
        parsed.resources[0].key().to_string(),
        "Gateway default/bookinfo-gateway"
    );
}

#[test]
fn a_gateway_needs_servers() {
    let doc = mk_doc(
        "networking.istio.io/v1",
        "Gateway",
        "default",
        "gw",
        "{selector: {istio: ingressgateway}}",
    );
    assert_eq!(
        mk_errors(&doc, "Gateway default/gw"),
        expect(&[("spec.servers", "gateway must have at least one server")])
    );
}

#[test]
fn gateway_name_is_a_dns_label() {
    let doc = mk_doc(
        "networking.istio.io/v1",
        "Gateway",
        "default",
        "my.gateway",
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}",
    );
    assert_eq!(
        mk_errors(&doc, "Gateway default/my.gateway"),
        expect(&[(
            "metadata.name",
            "invalid gateway name: \"my.gateway\" (a DNS-1123 label, without dots)"
        )])
    );
}

#[test]
fn hosts_must_be_fqdns_with_an_optional_namespace() {
    let doc = mk_gateway(
        "{port: {number: 80, name: http, protocol: HTTP}, hosts: [reviews, 'prod/*.example.com', 'ns.with.dots/a.example.com', 'prod/api.*.com', '~/a.example.com']}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.servers[0].hosts[0]",
                "short names (non FQDN) are not allowed"
            ),
            (
                "spec.servers[0].hosts[2]",
                "invalid namespace value \"ns.with.dots\" in gateway"
            ),
            (
                "spec.servers[0].hosts[3]",
                "domain name \"api.*.com\" invalid (label \"*\" invalid)"
            ),
            (
                "spec.servers[0].hosts[3]",
                "partial wildcard \"api.*.com\" not allowed"
            ),
            (
                "spec.servers[0].hosts[4]",
                "invalid namespace value \"~\" in gateway"
            ),
        ])
    );
    let no_hosts = mk_gateway("{port: {number: 80, name: http, protocol: HTTP}, hosts: []}");
    assert_eq!(
        mk_errors(&no_hosts, ID),
        expect(&[(
            "spec.servers[0].hosts",
            "server config must contain at least one host"
        )])
    );
}

#[test]
fn ports_protocols_and_names() {
    let doc = mk_gateway(
        "{port: {number: 70000, name: http, protocol: QUIC, targetPort: 8080}, hosts: ['*']}, {port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.servers[0].port.protocol",
                "invalid protocol \"QUIC\", supported protocols are HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, HTTP_PROXY, TCP, TLS, UDP, MONGO, REDIS, MYSQL"
            ),
            (
                "spec.servers[0].port.number",
                "port number 70000 must be in the range 1..65535"
            ),
            (
                "spec.servers[0].port.targetPort",
                "targetPort has no impact on Gateways"
            ),
            (
                "spec.servers[1].port.name",
                "port names in servers must be unique: duplicate name http"
            ),
        ])
    );
}

#[test]
fn binds_are_ips_or_unix_sockets_with_port_zero() {
    let good = mk_gateway(
        "{port: {number: 0, name: uds, protocol: HTTP}, bind: 'unix:///var/run/gw.sock', hosts: ['*']}",
    );
    assert_clean(&good, ID);
    let doc = mk_gateway(
        "{port: {number: 8080, name: uds, protocol: HTTP}, bind: 'unix://relative.sock', hosts: ['*']}, {port: {number: 8081, name: ip, protocol: HTTP}, bind: 'localhost', hosts: ['*']}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.servers[0].bind",
                "relative.sock is not an absolute path to a file"
            ),
            (
                "spec.servers[0].port.number",
                "port number must be 0 for unix domain socket"
            ),
            ("spec.servers[1].bind", "localhost is not a valid IP"),
        ])
    );
}

#[test]
fn https_and_tls_ports_need_tls_settings() {
    let doc = mk_gateway("{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}");
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[(
            "spec.servers[0].tls",
            "server must have TLS settings for HTTPS/TLS protocols (port protocol is HTTPS)"
        )])
    );
    let passthrough = mk_gateway(
        "{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*.example.com'], tls: {mode: PASSTHROUGH}}",
    );
    assert_clean(&passthrough, ID);
    let auto = mk_gateway(
        "{port: {number: 15443, name: tls, protocol: TLS}, hosts: ['*.local'], tls: {mode: AUTO_PASSTHROUGH}}",
    );
    assert_clean(&auto, ID);
}

#[test]
fn tls_only_on_tls_ports_and_only_a_redirect_on_http() {
    let tcp = mk_gateway(
        "{port: {number: 9000, name: tcp, protocol: TCP}, hosts: ['*'], tls: {mode: PASSTHROUGH}}",
    );
    assert_eq!(
        mk_errors(&tcp, ID),
        expect(&[(
            "spec.servers[0].tls",
            "server cannot have TLS settings for non HTTPS/TLS ports"
        )])
    );
    let http_simple = mk_gateway(
        "{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: cert}}",
    );
    assert_eq!(
        mk_errors(&http_simple, ID),
        expect(&[(
            "spec.servers[0].tls",
            "server cannot have TLS settings for plain text HTTP ports (only httpsRedirect)"
        )])
    );
    let redirect_on_tcp = mk_gateway(
        "{port: {number: 9000, name: tcp, protocol: TCP}, hosts: ['*'], tls: {httpsRedirect: true}}",
    );
    let parsed = mk_parse(&redirect_on_tcp);
    assert_eq!(
        pairs(&parsed.warnings),
        expect(&[(
            "spec.servers[0].tls.httpsRedirect",
            "tls.httpsRedirect should only be used with http servers"
        )])
    );
    assert_eq!(
        pairs(&parsed.errors),
        expect(&[(
            "spec.servers[0].tls",
            "server cannot have TLS settings for non HTTPS/TLS ports"
        )])
    );
}

#[test]
fn simple_and_mutual_need_a_credential_or_files() {
    let simple = mk_gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE}}",
    );
    assert_eq!(
        mk_errors(&simple, ID),
        expect(&[
            (
                "spec.servers[0].tls.serverCertificate",
                "SIMPLE TLS requires a server certificate (serverCertificate), or credentialName"
            ),
            (
                "spec.servers[0].tls.privateKey",
                "SIMPLE TLS requires a private key (privateKey), or credentialName"
            ),
        ])
    );
    let mutual = mk_gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}}",
    );
    assert_eq!(
        mk_errors(&mutual, ID),
        expect(&[(
            "spec.servers[0].tls.caCertificates",
            "MUTUAL TLS requires a client CA bundle (caCertificates), or credentialName"
        )])
    );
    let mutual_secret = mk_gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, credentialName: gw-cert}}",
    );
    assert_clean(&mutual_secret, ID);
    let pairs_of_files = mk_gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, tlsCertificates: [{serverCertificate: /rsa.pem, privateKey: /rsa.key}, {serverCertificate: /ec.pem}]}}",
    );
    assert_eq!(
        mk_errors(&pairs_of_files, ID),
        expect(&[(
            "spec.servers[0].tls.tlsCertificates[1].privateKey",
            "SIMPLE TLS requires a private key (privateKey), or credentialName"
        )])
    );
}

#[test]
fn one_certificate_source_and_istio_mutual_takes_none() {
    let two = mk_gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: a, credentialNames: [b, c]}}",
    );
    assert_eq!(
        mk_errors(&two, ID),
        expect(&[(
            "spec.servers[0].tls",
            "only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates may be set"
        )])
    );
    let istio_mutual = mk_gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, credentialName: a, caCertificates: /ca.pem}}",
    );
    assert_eq!(
        mk_errors(&istio_mutual, ID),
        expect(&[
            (
                "spec.servers[0].tls.caCertificates",
                "ISTIO_MUTUAL TLS cannot have associated caCertificates"
            ),
            (
                "spec.servers[0].tls.credentialName",
                "ISTIO_MUTUAL TLS cannot have associated credentialName"
            ),
        ])
    );
    let three = mk_gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialNames: [a, b, c]}}",
    );
    assert_eq!(
        mk_errors(&three, ID),
        expect(&[(
            "spec.servers[0].tls.credentialNames",
            "at most 2 items are allowed, found 3"
        )])
    );
}

#[test]
fn tls_warnings() {
    let doc = mk_gateway(
        "{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], tls: {mode: PASSTHROUGH, credentialName: unused, minProtocolVersion: TLSV1_1}}, {port: {number: 8443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, NOT-A-CIPHER, ECDHE-RSA-AES128-GCM-SHA256, '-AES128-SHA']}}",
    );
    assert_eq!(
        mk_warnings(&doc, ID),
        expect(&[
            (
                "spec.servers[0].tls.minProtocolVersion",
                "TLS versions below TLSV1_2 need compatible cipherSuites: the default ciphers no longer include them"
            ),
            (
                "spec.servers[0].tls.mode",
                "PASSTHROUGH mode does not use certificates, they will be ignored"
            ),
            (
                "spec.servers[1].tls.cipherSuites",
                "ignoring invalid cipher suites: {\"NOT-A-CIPHER\"}"
            ),
            (
                "spec.servers[1].tls.cipherSuites",
                "ignoring duplicate cipher suites: {\"ECDHE-RSA-AES128-GCM-SHA256\"}"
            ),
        ])
    );
}

#[test]
fn unknown_fields_and_bad_enums_are_schema_errors() {
    let doc = mk_gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialname: x}}",
    );
    let errors = mk_errors(&doc, ID);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, "spec.servers[0].tls.credentialname");
    assert!(
        errors[0].1.starts_with("unknown field `credentialname`"),
        "{}",
        errors[0].1
    );
    let doc = mk_gateway(
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: STRICT}}",
    );
    let errors = mk_errors(&doc, ID);
    assert_eq!(errors[0].0, "spec.servers[0].tls.mode");
    assert!(
        errors[0].1.starts_with("unknown variant `STRICT`"),
        "{}",
        errors[0].1
    );
    let doc = mk_gateway("{port: {number: 443, protocol: HTTPS}, hosts: ['*']}");
    let errors = mk_errors(&doc, ID);
    assert_eq!(errors[0].0, "spec.servers[0].port");
    assert!(
        errors[0].1.starts_with("missing field `name`"),
        "{}",
        errors[0].1
    );
}
