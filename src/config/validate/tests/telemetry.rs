use super::*;

/// Istio's Telemetry examples: mesh-wide sampling and access logs, metric
/// tag overrides for one workload, and a custom tracing tag.
const DOCS_MESH_DEFAULT: &str = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - randomSamplingPercentage: 10.00
  accessLogging:
  - providers:
    - name: envoy
"#;

const DOCS_METRICS: &str = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: namespace-metrics
  namespace: myapp
spec:
  selector:
    matchLabels:
      service.istio.io/canonical-name: frontend
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - match:
        metric: REQUEST_COUNT
        mode: CLIENT
      tagOverrides:
        request_host:
          value: "request.host"
    - match:
        metric: REQUEST_COUNT
      tagOverrides:
        request_protocol:
          operation: REMOVE
"#;

const DOCS_CUSTOM_TAG: &str = r#"apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - providers:
    - name: zipkin
    customTags:
      my_new_foo_tag:
        literal:
          value: "foo"
      cluster:
        environment:
          name: ISTIO_META_CLUSTER_ID
          defaultValue: unknown
"#;

const ID: &str = "Telemetry istio-system/mesh-default";

fn mk_telemetry(spec: &str) -> String {
    mk_doc(
        "telemetry.istio.io/v1",
        "Telemetry",
        "istio-system",
        "mesh-default",
        spec,
    )
}

#[test]
fn istio_docs_examples_are_valid() {
    assert_clean(DOCS_MESH_DEFAULT, ID);
    assert_clean(DOCS_METRICS, "Telemetry myapp/namespace-metrics");
    assert_clean(DOCS_CUSTOM_TAG, ID);
    let parsed = mk_parse(DOCS_MESH_DEFAULT);
    let crate::model::Spec::Telemetry(t) = &parsed.resources[0].spec else {
        panic!("not a Telemetry: {:?}", parsed.resources[0].spec);
    };
    assert_eq!(t.tracing[0].random_sampling_percentage, Some(10.0));
}

#[test]
fn sampling_percentage_and_provider_names() {
    let doc = mk_telemetry(
        "{tracing: [{randomSamplingPercentage: 150, providers: [{name: ''}]}], accessLogging: [{providers: [{name: envoy}, {name: ''}]}], metrics: [{providers: [{name: ''}], reportingInterval: 0s}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.metrics[0].providers[0].name",
                "providers.name may not be empty"
            ),
            (
                "spec.metrics[0].reportingInterval",
                "must be a valid duration greater than 1ms"
            ),
            (
                "spec.tracing[0].providers[0].name",
                "providers.name may not be empty"
            ),
            (
                "spec.tracing[0].randomSamplingPercentage",
                "randomSamplingPercentage must be in range [0.0, 100.0], got 150"
            ),
            (
                "spec.accessLogging[0].providers[1].name",
                "providers.name may not be empty"
            ),
        ])
    );
    let negative = mk_telemetry("{tracing: [{randomSamplingPercentage: -0.5}]}");
    assert_eq!(
        mk_errors(&negative, ID),
        expect(&[(
            "spec.tracing[0].randomSamplingPercentage",
            "randomSamplingPercentage must be in range [0.0, 100.0], got -0.5"
        )])
    );
}

#[test]
fn selector_and_target_refs_are_exclusive() {
    let doc = mk_telemetry(
        "{selector: {matchLabels: {app: a}}, targetRef: {kind: Service, name: a}, tracing: [{randomSamplingPercentage: 1}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[("spec", "only one of targetRefs or selector can be set")])
    );
}

#[test]
fn tag_overrides_and_metric_selectors() {
    let doc = mk_telemetry(
        "{metrics: [{overrides: [{match: {metric: REQUEST_COUNT, customMetric: my_metric}, tagOverrides: {a: {}, b: {operation: REMOVE, value: x}, c: {operation: UPSERT, value: ''}}}, {match: {customMetric: ''}}]}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.metrics[0].overrides[0].tagOverrides[a].value",
                "tagOverrides.value must be set when operation is UPSERT"
            ),
            (
                "spec.metrics[0].overrides[0].tagOverrides[b].value",
                "tagOverrides.value may only be set when operation is UPSERT"
            ),
            (
                "spec.metrics[0].overrides[0].tagOverrides[c].value",
                "tagOverrides.value must be set when operation is UPSERT"
            ),
            (
                "spec.metrics[0].overrides[0].match",
                "only one of metric, customMetric may be set"
            ),
            (
                "spec.metrics[0].overrides[1].match.customMetric",
                "customMetric may not be empty"
            ),
        ])
    );
}

#[test]
fn custom_tags() {
    let doc = mk_telemetry(
        "{tracing: [{customTags: {a: {literal: {value: ''}}, b: {header: {name: x-b}, environment: {name: B}}, c: {formatter: {value: ''}}}}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.tracing[0].customTags[a].literal.value",
                "literal tag value may not be empty"
            ),
            (
                "spec.tracing[0].customTags[b]",
                "only one of literal, environment, header, formatter may be set, but found environment and header"
            ),
            (
                "spec.tracing[0].customTags[c].formatter.value",
                "formatter tag value may not be empty"
            ),
        ])
    );
}

#[test]
fn several_tracing_entries_or_providers_are_warnings() {
    let doc = mk_telemetry(
        "{tracing: [{providers: [{name: zipkin}, {name: otel}]}, {randomSamplingPercentage: 5}]}",
    );
    assert_eq!(
        mk_warnings(&doc, ID),
        expect(&[
            (
                "spec.tracing",
                "multiple tracing is not currently supported"
            ),
            (
                "spec.tracing[0].providers",
                "multiple providers is not currently supported"
            ),
        ])
    );
}
