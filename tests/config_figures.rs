//! Issue 5's figures, measured (never typed in): validation throughput on a
//! generated corpus, analysis time, admission reviews per second. Prints
//! them; BENCHMARKS.md quotes a run. For release figures:
//!
//! ```sh
//! cargo test --release --test config_figures -- --nocapture
//! ```

use std::path::Path;
use std::time::Instant;

use pilotfish::config::{analyze, parse_file, webhook};

/// Services in the corpus; each gives six documents.
const SERVICES: usize = 500;

/// A bookinfo-shaped service `svc-I`: ServiceEntry, two WorkloadEntries, a
/// DestinationRule with two subsets, a VirtualService with header, prefix
/// and weighted rules, an AuthorizationPolicy.
fn service_docs(i: usize) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-{i}, namespace: ns-{ns}}}
spec:
  hosts: [svc-{i}.ns-{ns}.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: svc-{i}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: svc-{i}-v1, namespace: ns-{ns}}}
spec: {{address: 10.{a}.{b}.1, labels: {{app: svc-{i}, version: v1}}, serviceAccount: svc-{i}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: svc-{i}-v2, namespace: ns-{ns}}}
spec: {{address: 10.{a}.{b}.2, labels: {{app: svc-{i}, version: v2}}, serviceAccount: svc-{i}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc-{i}, namespace: ns-{ns}}}
spec:
  host: svc-{i}
  trafficPolicy:
    connectionPool: {{http: {{http1MaxPendingRequests: 100, maxRequestsPerConnection: 10}}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-{i}, namespace: ns-{ns}}}
spec:
  hosts: [svc-{i}]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: svc-{i}, subset: v2}}}}]
  - match: [{{uri: {{prefix: /api/v2}}}}, {{uri: {{regex: "^/v2/[a-z]+$"}}}}]
    timeout: 5s
    retries: {{attempts: 3, perTryTimeout: 2s, retryOn: "5xx,reset"}}
    route: [{{destination: {{host: svc-{i}, subset: v2}}}}]
  - route:
    - {{destination: {{host: svc-{i}, subset: v1}}, weight: 80}}
    - {{destination: {{host: svc-{i}, subset: v2}}, weight: 20}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: svc-{i}, namespace: ns-{ns}}}
spec:
  selector: {{matchLabels: {{app: svc-{i}}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/ns-{ns}/sa/svc-{j}]}}}}]
    to: [{{operation: {{methods: [GET, POST], paths: [/api/*]}}}}]
"#,
        ns = i % 10,
        j = (i + 1) % SERVICES,
        a = i / 250,
        b = i % 250,
    )
}

#[test]
fn validation_throughput_on_a_generated_corpus() {
    let profile = if cfg!(debug_assertions) {
        "debug (unoptimized) build"
    } else {
        "release build"
    };
    let text: String = (0..SERVICES)
        .map(service_docs)
        .collect::<Vec<_>>()
        .join("---\n");
    let path = Path::new("corpus.yaml");

    // Parse + validate, the whole corpus, best of 3 runs.
    let mut best = f64::MAX;
    let mut parsed = parse_file(path, &text);
    for _ in 0..3 {
        let start = Instant::now();
        parsed = parse_file(path, &text);
        best = best.min(start.elapsed().as_secs_f64());
    }
    assert!(parsed.errors.is_empty(), "{:?}", &parsed.errors[..1]);
    let docs = parsed.resources.len();
    assert_eq!(docs, SERVICES * 6);
    println!(
        "figure: parse + validate: {docs} documents ({:.2} MiB) in {:.1} ms: {:.0} documents/s, {:.1} MiB/s [{profile}]",
        text.len() as f64 / 1048576.0,
        best * 1000.0,
        docs as f64 / best,
        text.len() as f64 / 1048576.0 / best
    );

    // Cross-resource analysis of the same corpus (which is consistent).
    let snapshot = analyze::snapshot_of(parsed.resources);
    let start = Instant::now();
    let messages = analyze::analyze(&snapshot);
    let took = start.elapsed().as_secs_f64();
    assert_eq!(messages, vec![], "the generated corpus is consistent");
    println!(
        "figure: analyze: {docs} resources in {:.1} ms [{profile}]",
        took * 1000.0
    );

    // Admission reviews: one VirtualService object per review, as JSON.
    let vs: serde_json::Value = {
        let one = service_docs(7);
        let doc = one.split("---\n").nth(4).unwrap();
        serde_yaml_ng::from_str(doc).unwrap()
    };
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE", "namespace": "ns-7", "name": "svc-7",
                    "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                    "object": vs}
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    let n = 2000;
    let start = Instant::now();
    for _ in 0..n {
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let r = webhook::review(&v).unwrap();
        assert_eq!(r["response"]["allowed"], true);
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "figure: admission review (JSON in, decision out, no network): {:.0} reviews/s, {:.1} µs each [{profile}]",
        n as f64 / took,
        took / n as f64 * 1e6
    );
}
