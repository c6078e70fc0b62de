//! Bad input gets a clear error (file, document, resource, field path) and
//! never costs the good documents around it.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

/// File name used in every error message below.
const FILE: &str = "f.yaml";

/// Longest any pathological input may take to be rejected. Parsing a few
/// kilobytes takes microseconds (milliseconds in a debug build on a busy
/// machine); ten seconds only catches real blow-ups.
const GARBAGE_TIME_LIMIT: Duration = Duration::from_secs(10);

/// A bookinfo sample file's name and text.
macro_rules! bookinfo {
    ($file:literal) => {
        (
            $file,
            include_str!(concat!(
                "../../../../shared/reference/istio-samples/bookinfo/",
                $file
            )),
        )
    };
}

/// Every bookinfo sample except `platform-kube-bookinfo.yaml` (Kubernetes
/// Deployments and Services, not Istio config).
const BOOKINFO: &[(&str, &str)] = &[
    bookinfo!("bookinfo-gateway.yaml"),
    bookinfo!("destination-rule-all-mtls.yaml"),
    bookinfo!("destination-rule-all.yaml"),
    bookinfo!("destination-rule-reviews.yaml"),
    bookinfo!("fault-injection-details-v1.yaml"),
    bookinfo!("virtual-service-all-v1.yaml"),
    bookinfo!("virtual-service-details-v2.yaml"),
    bookinfo!("virtual-service-ratings-test-abort.yaml"),
    bookinfo!("virtual-service-ratings-test-delay.yaml"),
    bookinfo!("virtual-service-reviews-50-v3.yaml"),
    bookinfo!("virtual-service-reviews-80-20.yaml"),
    bookinfo!("virtual-service-reviews-90-10.yaml"),
    bookinfo!("virtual-service-reviews-jason-v2-v3.yaml"),
    bookinfo!("virtual-service-reviews-test-v2.yaml"),
    bookinfo!("virtual-service-reviews-v2-v3.yaml"),
    bookinfo!("virtual-service-reviews-v3.yaml"),
];

/// Parses `text` as the file [`FILE`].
fn mk_parse(text: &str) -> ParsedFile {
    parse_file(Path::new(FILE), text)
}

/// One document of `kind`, `name` in the default namespace, with `spec`
/// written inline in YAML flow style (e.g. `{host: reviews}`).
fn mk_doc(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec: {spec}\n"
    )
}

/// A VirtualService for host `reviews` with the given `http` rules (flow style).
fn mk_vs(name: &str, http: &str) -> String {
    mk_doc(
        "VirtualService",
        name,
        &format!("{{hosts: [reviews], http: {http}}}"),
    )
}

/// A DestinationRule for host `reviews` with the given `subsets` (flow style).
fn mk_dr(name: &str, subsets: &str) -> String {
    mk_doc(
        "DestinationRule",
        name,
        &format!("{{host: reviews, subsets: {subsets}}}"),
    )
}

/// A ServiceEntry for `api.example.com` with the given `ports` (flow style).
fn mk_se(name: &str, ports: &str) -> String {
    mk_doc(
        "ServiceEntry",
        name,
        &format!(
            "{{hosts: [api.example.com], location: MESH_EXTERNAL, resolution: DNS, ports: {ports}}}"
        ),
    )
}

/// A valid VirtualService sending all of `reviews` to subset v1.
fn mk_good_vs(name: &str) -> String {
    mk_vs(
        name,
        "[{route: [{destination: {host: reviews, subset: v1}}]}]",
    )
}

/// Documents joined into one multi-document file.
fn mk_file(docs: &[String]) -> String {
    docs.join("---\n")
}

/// The single error of a file that should yield exactly one error and no
/// resources.
fn only_error(mut parsed: ParsedFile) -> ConfigError {
    assert_eq!(
        parsed.errors.len(),
        1,
        "expected exactly one error, got {:#?}",
        parsed.errors
    );
    assert!(
        parsed.resources.is_empty(),
        "the bad document must not yield a resource: {:#?}",
        parsed.resources
    );
    parsed.errors.remove(0)
}

/// `Kind namespace/name` of every parsed resource, in file order.
fn ids(parsed: &ParsedFile) -> Vec<String> {
    parsed.resources.iter().map(resource_id).collect()
}

/// Parses `text` and how long that took.
fn timed_parse(text: &str) -> (ParsedFile, Duration) {
    let start = Instant::now();
    let parsed = mk_parse(text);
    (parsed, start.elapsed())
}

// ---- good input ----

/// One document of each served kind, in the given apiVersion.
fn mk_all_kinds(api_version: &str, suffix: &str) -> String {
    format!(
        r#"apiVersion: {api_version}
kind: ServiceEntry
metadata:
  name: external-api-{suffix}
  namespace: shop
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - number: 443
    name: https
    protocol: TLS
  endpoints:
  - address: 192.0.2.10
---
apiVersion: {api_version}
kind: WorkloadEntry
metadata:
  name: vm-{suffix}
  namespace: shop
spec:
  address: 10.0.0.5
  labels:
    app: reviews
  ports:
    http: 9080
---
apiVersion: {api_version}
kind: VirtualService
metadata:
  name: reviews-{suffix}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 80
    - destination:
        host: reviews
        subset: v2
      weight: 20
    timeout: 5s
---
apiVersion: {api_version}
kind: DestinationRule
metadata:
  name: reviews-{suffix}
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"#
    )
}

#[test]
fn every_kind_parses_in_every_accepted_api_version() {
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let api_version = format!("networking.istio.io/{version}");
        let parsed = mk_parse(&mk_all_kinds(&api_version, version));
        assert!(
            parsed.errors.is_empty(),
            "{api_version}: {:#?}",
            parsed.errors
        );
        assert!(
            parsed.skipped.is_empty(),
            "{api_version}: {:?}",
            parsed.skipped
        );
        assert_eq!(
            ids(&parsed),
            [
                format!("ServiceEntry shop/external-api-{version}"),
                format!("WorkloadEntry shop/vm-{version}"),
                format!("VirtualService default/reviews-{version}"),
                format!("DestinationRule default/reviews-{version}"),
            ],
            "{api_version}"
        );
        let documents: Vec<usize> = parsed.resources.iter().map(|r| r.origin.document).collect();
        assert_eq!(documents, [1, 2, 3, 4]);
        assert!(
            parsed
                .resources
                .iter()
                .all(|r| r.origin.file == Path::new(FILE))
        );
    }
}

#[test]
fn parsed_specs_hold_the_values_written() {
    let parsed = mk_parse(&mk_all_kinds("networking.istio.io/v1", "x"));
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    let Spec::VirtualService(vs) = &parsed.resources[2].spec else {
        panic!("expected a VirtualService: {:?}", parsed.resources[2]);
    };
    let weights: Vec<Option<i32>> = vs.http[0].route.iter().map(|d| d.weight).collect();
    assert_eq!(weights, [Some(80), Some(20)]);
    assert_eq!(vs.http[0].timeout.as_deref(), Some("5s"));
    let Spec::WorkloadEntry(we) = &parsed.resources[1].spec else {
        panic!("expected a WorkloadEntry: {:?}", parsed.resources[1]);
    };
    assert_eq!(we.address.as_deref(), Some("10.0.0.5"));
    assert_eq!(we.ports.get("http"), Some(&9080));
}

#[test]
fn empty_documents_and_a_trailing_separator_are_skipped() {
    let text = format!(
        "---\n---\n# only a comment\n---\n{}---\n\n---\n{}---\n",
        mk_good_vs("one"),
        mk_good_vs("two")
    );
    let parsed = mk_parse(&text);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
    assert_eq!(
        ids(&parsed),
        ["VirtualService default/one", "VirtualService default/two"]
    );
    // Document numbers count the empty documents too: the leading `---`
    // opens document 1, the comment-only one is document 2.
    let documents: Vec<usize> = parsed.resources.iter().map(|r| r.origin.document).collect();
    assert_eq!(documents, [3, 5]);
}

#[test]
fn an_empty_file_holds_nothing() {
    for text in ["", "\n", "# nothing here\n", "---\n", "---\n---\n"] {
        let parsed = mk_parse(text);
        assert!(parsed.errors.is_empty(), "{text:?}: {:#?}", parsed.errors);
        assert!(parsed.resources.is_empty(), "{text:?}");
        assert!(parsed.skipped.is_empty(), "{text:?}");
    }
}

#[test]
fn namespace_defaults_to_default() {
    let parsed = mk_parse(&mk_good_vs("reviews"));
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    assert_eq!(parsed.resources[0].namespace, DEFAULT_NAMESPACE);
    assert_eq!(DEFAULT_NAMESPACE, "default");

    // An empty namespace is treated as no namespace.
    let text =
        mk_good_vs("reviews").replace("  name: reviews\n", "  name: reviews\n  namespace: \"\"\n");
    let parsed = mk_parse(&text);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    assert_eq!(ids(&parsed), ["VirtualService default/reviews"]);
}

#[test]
fn kubectl_metadata_and_status_are_accepted() {
    let text = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
  uid: 6b3f7a0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b
  resourceVersion: "123456"
  generation: 3
  creationTimestamp: "2024-01-02T03:04:05Z"
  managedFields: []
  labels:
    app: reviews
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
status:
  observedGeneration: 3
"#;
    let parsed = mk_parse(text);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    assert_eq!(ids(&parsed), ["VirtualService shop/reviews"]);
    let r = &parsed.resources[0];
    assert_eq!(r.labels.get("app").map(String::as_str), Some("reviews"));
    assert!(
        r.annotations
            .contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );
}

#[test]
fn every_bookinfo_sample_parses() {
    // The path resolves from this file to /work/shared (include_str! would
    // not compile otherwise); check it found real content.
    assert_eq!(BOOKINFO.len(), 16);
    let mut resources = 0;
    for (name, text) in BOOKINFO {
        assert!(text.contains("networking.istio.io"), "{name}");
        let parsed = parse_file(Path::new(name), text);
        assert!(parsed.errors.is_empty(), "{name}: {:#?}", parsed.errors);
        assert!(!parsed.resources.is_empty(), "{name}: no resources");
        resources += parsed.resources.len();
        assert!(parsed.skipped.is_empty(), "{name}: {:?}", parsed.skipped);
        if *name == "bookinfo-gateway.yaml" {
            assert_eq!(
                ids(&parsed),
                [
                    "Gateway default/bookinfo-gateway",
                    "VirtualService default/bookinfo"
                ]
            );
        }
    }
    // 25 VirtualServices and DestinationRules across the 15 Istio-only files,
    // plus the gateway file's Gateway and VirtualService.
    assert_eq!(resources, 27);
}

// ---- malformed YAML ----

#[test]
fn malformed_yaml_is_one_error_with_line_and_document() {
    let text = mk_file(&[
        mk_good_vs("first"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: [unclosed\n"
            .to_string(),
        mk_good_vs("third"),
    ]);
    let parsed = mk_parse(&text);
    assert_eq!(parsed.errors.len(), 1, "{:#?}", parsed.errors);
    let e = &parsed.errors[0];
    assert_eq!(e.file, FILE);
    assert_eq!(e.document, Some(2));
    assert_eq!(e.resource, None);
    assert_eq!(e.path, None);
    assert!(e.message.starts_with("invalid YAML at line "), "{e}");
    // The error is past the first document's lines.
    let line: usize = e.message["invalid YAML at line ".len()..]
        .split(',')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line number in {e}"));
    assert!(line > mk_good_vs("first").lines().count(), "{e}");
    assert!(
        e.to_string()
            .starts_with("f.yaml: document 2: invalid YAML at line "),
        "{e}"
    );
    // Documents before the syntax error still count.
    assert_eq!(ids(&parsed), ["VirtualService default/first"]);
}

#[test]
fn bad_indentation_is_invalid_yaml() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n    namespace: shop\nspec: {}\n";
    let e = only_error(mk_parse(text));
    assert_eq!(e.document, Some(1));
    assert!(
        e.message.starts_with("invalid YAML at line 5, column "),
        "{e}"
    );
}

#[test]
fn a_document_that_is_not_a_mapping_is_an_error() {
    for text in ["just a string\n", "- a\n- list\n", "42\n"] {
        let e = only_error(mk_parse(text));
        assert_eq!(e.document, Some(1), "{text:?}");
        assert_eq!(
            e.to_string(),
            "f.yaml: document 1: expected a mapping with apiVersion, kind, metadata and spec",
            "{text:?}"
        );
    }
}

// ---- schema errors: one error each, with where and what ----

#[test]
fn wrong_type_names_the_field_path() {
    let text = mk_file(&[
        mk_good_vs("ratings"),
        mk_vs(
            "reviews",
            r#"[{route: [{destination: {host: reviews}, weight: "abc"}]}]"#,
        ),
    ]);
    let parsed = mk_parse(&text);
    assert_eq!(ids(&parsed), ["VirtualService default/ratings"]);
    assert_eq!(parsed.errors.len(), 1, "{:#?}", parsed.errors);
    let e = &parsed.errors[0];
    assert_eq!(e.file, FILE);
    assert_eq!(e.document, Some(2));
    assert_eq!(
        e.resource.as_deref(),
        Some("VirtualService default/reviews")
    );
    assert_eq!(e.path.as_deref(), Some("spec.http[0].route[0].weight"));
    assert_eq!(
        e.to_string(),
        r#"f.yaml: document 2 (VirtualService default/reviews): spec.http[0].route[0].weight: invalid type: string "abc", expected i32"#
    );
    assert_eq!(e.kind(), "VirtualService");
}

#[test]
fn unknown_field_is_an_error_not_ignored() {
    let text = mk_file(&[
        mk_good_vs("ratings"),
        mk_vs(
            "reviews",
            "[{route: [{destination: {host: reviews, subsett: v1}}]}]",
        ),
    ]);
    let parsed = mk_parse(&text);
    assert_eq!(ids(&parsed), ["VirtualService default/ratings"]);
    assert_eq!(parsed.errors.len(), 1, "{:#?}", parsed.errors);
    let e = &parsed.errors[0];
    assert_eq!(e.document, Some(2));
    assert_eq!(
        e.resource.as_deref(),
        Some("VirtualService default/reviews")
    );
    assert_eq!(
        e.path.as_deref(),
        Some("spec.http[0].route[0].destination.subsett")
    );
    assert_eq!(
        e.to_string(),
        "f.yaml: document 2 (VirtualService default/reviews): spec.http[0].route[0].destination.subsett: unknown field `subsett`, expected one of `host`, `subset`, `port`"
    );
}

#[test]
fn missing_spec_is_an_error() {
    let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n  namespace: shop\n";
    let e = only_error(mk_parse(text));
    assert_eq!(e.path.as_deref(), Some("spec"));
    assert_eq!(
        e.to_string(),
        "f.yaml: document 1 (DestinationRule shop/reviews): spec: a spec is required"
    );
}

#[test]
fn missing_name_is_an_error() {
    for text in [
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  namespace: shop\nspec: {hosts: [reviews]}\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nspec: {hosts: [reviews]}\n",
    ] {
        let e = only_error(mk_parse(text));
        assert_eq!(e.path.as_deref(), Some("metadata.name"), "{text}");
        assert_eq!(e.message, "a name is required", "{text}");
        assert!(
            e.to_string()
                .starts_with("f.yaml: document 1 (VirtualService "),
            "{e}"
        );
    }
}

#[test]
fn invalid_name_is_an_error() {
    let e = only_error(mk_parse(&mk_good_vs("Reviews")));
    assert_eq!(e.path.as_deref(), Some("metadata.name"));
    assert_eq!(
        e.to_string(),
        r#"f.yaml: document 1 (VirtualService default/Reviews): metadata.name: "Reviews" is not a valid name: expected lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"#
    );
}

#[test]
fn invalid_namespace_is_an_error() {
    let text =
        mk_good_vs("reviews").replace("  name: reviews\n", "  name: reviews\n  namespace: My_NS\n");
    let e = only_error(mk_parse(&text));
    assert_eq!(e.path.as_deref(), Some("metadata.namespace"));
    assert_eq!(e.resource.as_deref(), Some("VirtualService My_NS/reviews"));
}

#[test]
fn metadata_of_the_wrong_type_names_the_field() {
    let text =
        mk_good_vs("reviews").replace("  name: reviews\n", "  name: reviews\n  labels: [a, b]\n");
    let e = only_error(mk_parse(&text));
    assert_eq!(e.document, Some(1));
    assert_eq!(e.path.as_deref(), Some("metadata.labels"), "{e}");
    assert!(e.message.starts_with("invalid type: sequence"), "{e}");
}

#[test]
fn wrong_api_version_is_an_error() {
    for (api_version, shown) in [
        ("networking.istio.io/v2", "networking.istio.io/v2"),
        ("v1", "v1"),
        ("security.istio.io/v1", "security.istio.io/v1"),
    ] {
        let text = mk_file(&[
            mk_good_vs("ratings"),
            mk_good_vs("reviews").replace("networking.istio.io/v1", api_version),
        ]);
        let parsed = mk_parse(&text);
        assert_eq!(
            ids(&parsed),
            ["VirtualService default/ratings"],
            "{api_version}"
        );
        assert_eq!(
            parsed.errors.len(),
            1,
            "{api_version}: {:#?}",
            parsed.errors
        );
        let e = &parsed.errors[0];
        assert_eq!(e.document, Some(2));
        assert_eq!(e.path.as_deref(), Some("apiVersion"));
        assert_eq!(
            e.to_string(),
            format!(
                "f.yaml: document 2 (VirtualService default/reviews): apiVersion: {shown} is not an apiVersion of VirtualService; expected one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"
            )
        );
    }
}

#[test]
fn missing_api_version_or_kind_is_an_error() {
    let e = only_error(mk_parse(
        "kind: VirtualService\nmetadata: {name: r}\nspec: {}\n",
    ));
    assert_eq!(e.document, Some(1));
    assert!(e.message.contains("missing field `apiVersion`"), "{e}");
    let e = only_error(mk_parse(
        "apiVersion: networking.istio.io/v1\nmetadata: {name: r}\nspec: {}\n",
    ));
    assert!(e.message.contains("missing field `kind`"), "{e}");
}

#[test]
fn unknown_top_level_field_is_an_error() {
    let text = mk_file(&[
        mk_good_vs("ratings"),
        format!("{}specs: {{}}\n", mk_good_vs("reviews")),
    ]);
    let parsed = mk_parse(&text);
    assert_eq!(ids(&parsed), ["VirtualService default/ratings"]);
    assert_eq!(parsed.errors.len(), 1, "{:#?}", parsed.errors);
    let e = &parsed.errors[0];
    assert_eq!(e.document, Some(2));
    assert_eq!(e.path.as_deref(), Some("specs"));
    assert_eq!(
        e.to_string(),
        "f.yaml: document 2 (VirtualService default/reviews): specs: unknown field `specs`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"
    );
}

// ---- kinds pilotfish does not serve ----

/// A Kubernetes ConfigMap: a kind pilotfish does not serve, whose content is
/// in a top-level `data` field rather than `spec`.
fn mk_config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: value\n")
}

#[test]
fn unknown_kinds_are_skipped_not_errors() {
    let text = mk_file(&[
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata:\n  name: ef\nspec:\n  workloadSelector: {labels: {app: reviews}}\n".to_string(),
        mk_good_vs("reviews"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  ports: [{port: 9080}]\n".to_string(),
        mk_dr("reviews", "[{name: v1, labels: {version: v1}}]"),
    ]);
    let parsed = mk_parse(&text);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    assert_eq!(
        ids(&parsed),
        [
            "VirtualService default/reviews",
            "DestinationRule default/reviews"
        ]
    );
    assert_eq!(
        parsed.skipped,
        [
            "f.yaml: document 1: kind EnvoyFilter (networking.istio.io/v1alpha3) is not served by pilotfish; skipped",
            "f.yaml: document 3: kind Service (v1) is not served by pilotfish; skipped",
        ]
    );
}

#[test]
fn kubernetes_manifests_are_skipped() {
    let (name, text) = bookinfo!("platform-kube-bookinfo.yaml");
    let parsed = parse_file(Path::new(name), text);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    assert!(parsed.resources.is_empty());
    // 4 Services, 4 ServiceAccounts and 6 Deployments.
    assert_eq!(parsed.skipped.len(), 14, "{:#?}", parsed.skipped);
}

#[test]

fn unknown_kinds_with_their_own_top_level_fields_are_skipped() {
    let text = mk_file(&[mk_good_vs("reviews"), mk_config_map("settings")]);
    let parsed = mk_parse(&text);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    assert_eq!(ids(&parsed), ["VirtualService default/reviews"]);
    assert_eq!(
        parsed.skipped,
        ["f.yaml: document 2: kind ConfigMap (v1) is not served by pilotfish; skipped"]
    );
}

// ---- one bad document among good ones ----

#[test]
fn one_bad_document_loses_nothing_else() {
    let text = mk_file(&[
        mk_good_vs("one"),
        mk_dr("reviews", "[{name: v1}]"),
        mk_vs(
            "bad",
            "[{route: [{destination: {host: reviews}, weight: -1}]}]",
        ),
        mk_se("external", "[{number: 443, name: https}]"),
        mk_good_vs("five"),
    ]);
    let parsed = mk_parse(&text);
    assert_eq!(
        ids(&parsed),
        [
            "VirtualService default/one",
            "DestinationRule default/reviews",
            "ServiceEntry default/external",
            "VirtualService default/five",
        ]
    );
    let documents: Vec<usize> = parsed.resources.iter().map(|r| r.origin.document).collect();
    assert_eq!(documents, [1, 2, 4, 5]);
    assert_eq!(parsed.errors.len(), 1, "{:#?}", parsed.errors);
    assert_eq!(parsed.errors[0].document, Some(3));
    assert_eq!(
        parsed.errors[0].resource.as_deref(),
        Some("VirtualService default/bad")
    );
}

// ---- semantic checks (validate.rs) ----

/// The single error for `doc` (alone in the file), as (path, message).
fn mk_validate_error(doc: &str) -> (String, String) {
    let e = only_error(mk_parse(doc));
    assert_eq!(e.document, Some(1), "{e}");
    assert!(e.resource.is_some(), "{e}");
    (e.path.unwrap_or_default(), e.message)
}

#[test]
fn invalid_regex_in_uri_match() {
    let doc = mk_vs(
        "reviews",
        r#"[{match: [{uri: {prefix: /api}}, {uri: {regex: "/(unclosed"}}], route: [{destination: {host: reviews}}]}]"#,
    );
    let (path, message) = mk_validate_error(&doc);
    assert_eq!(path, "spec.http[0].match[1].uri.regex");
    assert!(message.starts_with("invalid regex: "), "{message}");
}

#[test]
fn negative_weight() {
    let doc = mk_vs(
        "reviews",
        "[{route: [{destination: {host: reviews, subset: v1}, weight: -10}, {destination: {host: reviews, subset: v2}, weight: 110}]}]",
    );
    let e = only_error(mk_parse(&doc));
    assert_eq!(
        e.to_string(),
        "f.yaml: document 1 (VirtualService default/reviews): spec.http[0].route[0].weight: weight -10 is negative"
    );
}

#[test]
fn several_destinations_all_weight_zero() {
    let doc = mk_vs(
        "reviews",
        "[{route: [{destination: {host: reviews, subset: v1}, weight: 0}, {destination: {host: reviews, subset: v2}, weight: 0}]}]",
    );
    assert_eq!(
        mk_validate_error(&doc),
        (
            "spec.http[0].route".to_string(),
            "with several destinations, at least one weight must be above 0".to_string()
        )
    );
}

#[test]
fn duplicate_subset_names() {
    let doc = mk_dr(
        "reviews",
        "[{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: v1, labels: {version: v3}}]",
    );
    assert_eq!(
        mk_validate_error(&doc),
        (
            "spec.subsets[2].name".to_string(),
            r#"duplicate subset name "v1""#.to_string()
        )
    );
}

#[test]
fn service_entry_port_out_of_range() {
    for (number, message) in [
        (0, "port 0 is out of range 1-65535"),
        (70000, "port 70000 is out of range 1-65535"),
    ] {
        let doc = mk_se(
            "external",
            &format!("[{{number: 443, name: https}}, {{number: {number}, name: other}}]"),
        );
        assert_eq!(
            mk_validate_error(&doc),
            ("spec.ports[1].number".to_string(), message.to_string())
        );
    }
}

#[test]
fn service_entry_duplicate_port_name() {
    let doc = mk_se(
        "external",
        "[{number: 443, name: https}, {number: 8443, name: https}]",
    );
    assert_eq!(
        mk_validate_error(&doc),
        (
            "spec.ports[1].name".to_string(),
            r#"duplicate port name "https""#.to_string()
        )
    );
}

#[test]
fn static_endpoint_needs_an_ip_address() {
    let doc = mk_doc(
        "ServiceEntry",
        "external",
        "{hosts: [api.example.com], location: MESH_EXTERNAL, resolution: STATIC, ports: [{number: 443, name: https}], endpoints: [{address: 192.0.2.1}, {address: api.example.com}]}",
    );
    assert_eq!(
        mk_validate_error(&doc),
        (
            "spec.endpoints[1].address".to_string(),
            r#""api.example.com" is not an IP address (resolution STATIC)"#.to_string()
        )
    );
    // The same endpoint is fine when resolved by DNS.
    let dns = doc.replace("resolution: STATIC", "resolution: DNS");
    let parsed = mk_parse(&dns);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
}

#[test]
fn workload_entry_needs_an_address() {
    for spec in [
        "{labels: {app: reviews}}",
        "{address: \"\", labels: {app: reviews}}",
    ] {
        let doc = mk_doc("WorkloadEntry", "vm", spec);
        assert_eq!(
            mk_validate_error(&doc),
            (
                "spec.address".to_string(),
                "an address is required (the sidecar binds it)".to_string()
            ),
            "{spec}"
        );
    }
}

#[test]
fn bad_duration_in_timeout() {
    let doc = mk_vs(
        "reviews",
        "[{route: [{destination: {host: reviews}}], timeout: 5x}]",
    );
    let (path, message) = mk_validate_error(&doc);
    assert_eq!(path, "spec.http[0].timeout");
    assert!(message.contains(r#"invalid duration "5x""#), "{message}");
    assert!(message.contains(r#"unknown unit "x""#), "{message}");
}

#[test]
fn app_address_annotation_must_be_an_ip() {
    let doc = mk_good_vs("reviews").replace(
        "  name: reviews\n",
        "  name: reviews\n  annotations:\n    pilotfish.io/app-address: localhost\n",
    );
    assert_eq!(
        mk_validate_error(&doc),
        (
            "metadata.annotations[pilotfish.io/app-address]".to_string(),
            r#"expected an IP address, got "localhost""#.to_string()
        )
    );
    let ok = doc.replace("localhost", "127.0.0.2");
    let parsed = mk_parse(&ok);
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
}

#[test]
fn ready_annotation_must_be_true_or_false() {
    let doc = mk_good_vs("reviews").replace(
        "  name: reviews\n",
        "  name: reviews\n  annotations:\n    pilotfish.io/ready: \"no\"\n",
    );
    assert_eq!(
        mk_validate_error(&doc),
        (
            "metadata.annotations[pilotfish.io/ready]".to_string(),
            r#"expected "true" or "false", got "no""#.to_string()
        )
    );
    let parsed = mk_parse(&doc.replace("\"no\"", "\"false\""));
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
}

#[test]
fn several_problems_in_one_resource_are_all_reported() {
    let doc = mk_vs(
        "reviews",
        "[{route: [{destination: {host: reviews}, weight: -1}], timeout: 5x}]",
    );
    let parsed = mk_parse(&doc);
    assert!(parsed.resources.is_empty());
    let paths: Vec<&str> = parsed
        .errors
        .iter()
        .filter_map(|e| e.path.as_deref())
        .collect();
    assert_eq!(
        paths,
        ["spec.http[0].route[0].weight", "spec.http[0].timeout"]
    );
    assert!(parsed.errors.iter().all(|e| e.resource.as_deref()
        == Some("VirtualService default/reviews")
        && e.document == Some(1)));
}

// ---- garbage: an error or a result, quickly, never a panic ----

#[test]
fn binary_garbage_is_rejected_quickly() {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    let text = String::from_utf8_lossy(&bytes);
    let (parsed, took) = timed_parse(&text);
    assert!(took < GARBAGE_TIME_LIMIT, "took {took:?}");
    assert!(parsed.resources.is_empty());
    assert!(!parsed.errors.is_empty());
    assert!(
        parsed.errors[0].message.starts_with("invalid YAML"),
        "{:?}",
        parsed.errors
    );
}

#[test]
fn deeply_nested_flow_sequence_is_rejected_quickly() {
    const DEPTH: usize = 10_000;
    let text = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let (parsed, took) = timed_parse(&text);
    assert!(took < GARBAGE_TIME_LIMIT, "took {took:?}");
    assert!(parsed.resources.is_empty());
    assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);

    // The same depth inside a resource's spec.
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r}}\nspec: {{hosts: {}{}}}\n",
        "[".repeat(DEPTH),
        "]".repeat(DEPTH)
    );
    let (parsed, took) = timed_parse(&text);
    assert!(took < GARBAGE_TIME_LIMIT, "took {took:?}");
    assert!(parsed.resources.is_empty());
    assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
}

#[test]
fn alias_bomb_is_rejected_quickly() {
    // "Billion laughs": each level refers nine times to the one before, so
    // level i expands to 9^i strings if aliases were copied naively.
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let levels = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in levels.windows(2) {
        let (prev, cur) = (pair[0], pair[1]);
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{cur}: &{cur} [{refs}]\n"));
    }
    let (parsed, took) = timed_parse(&text);
    assert!(took < GARBAGE_TIME_LIMIT, "took {took:?}");
    assert!(parsed.resources.is_empty());
    assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);

    // The same bomb under an extra key of a VirtualService whose spec uses it:
    // the aliases are expanded while reading the document, before any schema.
    let indented: String = text.lines().map(|l| format!("  {l}\n")).collect();
    let doc = format!(
        "x-bomb:\n{indented}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r}}\nspec:\n  hosts: [reviews]\n  exportTo: *i\n"
    );
    let (parsed, took) = timed_parse(&doc);
    assert!(took < GARBAGE_TIME_LIMIT, "took {took:?}");
    assert!(parsed.resources.is_empty());
    assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
}

#[test]
fn rewrite_uri_and_regex_rewrite_together() {
    let doc = mk_vs(
        "reviews",
        "[{rewrite: {uri: /x, uriRegexRewrite: {match: '^/y', rewrite: /z}}, route: [{destination: {host: reviews}}]}]",
    );
    assert_eq!(
        mk_validate_error(&doc),
        (
            "spec.http[0].rewrite".to_string(),
            "uri and uriRegexRewrite cannot both be set".to_string()
        )
    );
}

#[test]
fn dns_round_robin_takes_one_endpoint() {
    let doc = mk_doc(
        "ServiceEntry",
        "ext",
        "{hosts: [ext.example.com], ports: [{number: 80, name: http}], resolution: DNS_ROUND_ROBIN, endpoints: [{address: a.example.com}, {address: b.example.com}]}",
    );
    let (path, message) = mk_validate_error(&doc);
    assert_eq!(path, "spec.endpoints");
    assert!(message.contains("DNS_ROUND_ROBIN"), "{message}");
}

#[test]
fn creation_timestamp_is_read_and_a_bad_one_is_an_error() {
    let good = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
        metadata: {name: a, creationTimestamp: \"2024-05-06T07:08:09Z\"}\n\
        spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n";
    let parsed = mk_parse(good);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let created = parsed.resources[0].created.expect("creationTimestamp");
    assert_eq!(created.as_second(), 1_714_979_289);
    // `creationTimestamp: null`, as `kubectl create --dry-run -o yaml` writes it.
    let parsed = mk_parse(&good.replace("\"2024-05-06T07:08:09Z\"", "null"));
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert_eq!(parsed.resources[0].created, None);
    let e = only_error(mk_parse(&good.replace("2024-05-06T07:08:09Z", "yesterday")));
    assert_eq!(e.path.as_deref(), Some("metadata.creationTimestamp"), "{e}");
}
