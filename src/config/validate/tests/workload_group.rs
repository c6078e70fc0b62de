use super::*;

const ID: &str = "WorkloadGroup bookinfo/reviews";

/// Istio's WorkloadGroup reference example.
const DOCS_EXAMPLE: &str = r#"apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata:
  name: reviews
  namespace: bookinfo
spec:
  metadata:
    labels:
      app.kubernetes.io/name: reviews
      app.kubernetes.io/version: "1.3.4"
  template:
    ports:
      grpc: 3550
      http: 8080
    serviceAccount: default
  probe:
    initialDelaySeconds: 5
    timeoutSeconds: 3
    periodSeconds: 4
    successThreshold: 3
    failureThreshold: 3
    httpGet:
     path: /foo/bar
     host: 127.0.0.1
     port: 3100
     scheme: HTTPS
     httpHeaders:
     - name: Lit-Header
       value: Im-The-Best
"#;

fn mk_group(spec: &str) -> String {
    mk_doc(
        "networking.istio.io/v1",
        "WorkloadGroup",
        "bookinfo",
        "reviews",
        spec,
    )
}

#[test]
fn istio_docs_example_is_valid() {
    assert_clean(DOCS_EXAMPLE, ID);
    let exec = mk_group(
        "{template: {serviceAccount: default}, probe: {exec: {command: [cat, /tmp/healthy]}}}",
    );
    assert_clean(&exec, ID);
    let tcp = mk_group("{template: {}, probe: {tcpSocket: {host: 127.0.0.1, port: 3100}}}");
    assert_clean(&tcp, ID);
}

#[test]
fn the_template_has_no_address_and_valid_ports() {
    let doc = mk_group("{template: {address: 10.0.0.1, ports: {http: 70000, Bad_Name: 80}}}");
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.template.address",
                "address must not be set in a WorkloadGroup template: each registering workload supplies its own"
            ),
            ("spec.template.ports[Bad_Name]", "port name must be valid"),
            (
                "spec.template.ports[http]",
                "port number 70000 must be in the range 1..65535"
            ),
        ])
    );
    let missing = mk_group("{metadata: {labels: {app: reviews}}}");
    let errors = mk_errors(&missing, ID);
    assert_eq!(errors[0].0, "spec");
    assert!(
        errors[0].1.starts_with("missing field `template`"),
        "{}",
        errors[0].1
    );
}

#[test]
fn template_labels_are_a_warning() {
    let doc = mk_group("{template: {labels: {app: reviews}}}");
    assert_eq!(
        mk_warnings(&doc, ID),
        expect(&[(
            "spec.template.labels",
            "labels should not be set in the template; set them in spec.metadata.labels"
        )])
    );
}

#[test]
fn metadata_labels_are_kubernetes_labels() {
    let doc = mk_group("{metadata: {labels: {app: 'not ok', -bad: v1}}, template: {}}");
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.metadata.labels[-bad]",
                "invalid label key \"-bad\": name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            ),
            (
                "spec.metadata.labels[app]",
                "invalid label value \"not ok\": at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            ),
        ])
    );
}

#[test]
fn probe_has_exactly_one_method_and_sane_values() {
    let two = mk_group("{template: {}, probe: {httpGet: {port: 8080}, tcpSocket: {port: 8080}}}");
    assert_eq!(
        mk_errors(&two, ID),
        expect(&[(
            "spec.probe",
            "only one of httpGet, tcpSocket, exec, grpc may be set, but found httpGet and tcpSocket"
        )])
    );
    let none = mk_group("{template: {}, probe: {periodSeconds: -1}}");
    assert_eq!(
        mk_errors(&none, ID),
        expect(&[
            (
                "spec.probe.periodSeconds",
                "periodSeconds must be non-negative"
            ),
            (
                "spec.probe",
                "a health check method is required: one of httpGet, tcpSocket, exec, grpc"
            ),
        ])
    );
    let bad = mk_group(
        "{template: {}, probe: {httpGet: {port: 0, scheme: FTP, httpHeaders: [{name: 'X Bad', value: v}, {value: v}]}}}",
    );
    assert_eq!(
        mk_errors(&bad, ID),
        expect(&[
            (
                "spec.probe.httpGet.port",
                "port number 0 must be in the range 1..65535"
            ),
            (
                "spec.probe.httpGet.scheme",
                "httpGet.scheme must be one of \"HTTPS\", \"HTTP\""
            ),
            (
                "spec.probe.httpGet.httpHeaders[0].name",
                "header name X Bad is not a valid header name"
            ),
            (
                "spec.probe.httpGet.httpHeaders[1].name",
                "header name cannot be empty"
            ),
        ])
    );
    let exec = mk_group("{template: {}, probe: {exec: {command: []}}}");
    assert_eq!(
        mk_errors(&exec, ID),
        expect(&[("spec.probe.exec.command", "exec.command is required")])
    );
}
