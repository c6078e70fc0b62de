//! The UI's graph as a pure function of the registry, the series and the
//! sync state; the rate window; and the two routes served in-process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tower::ServiceExt;

use super::graph::{Baseline, Edge, Graph, Totals, build};
use super::{MIN_SPAN, RATE_WINDOW, SAMPLE_EVERY, Window};
use crate::admin::{AdminState, router};
use crate::config::{ConfigError, ConfigState, parse_file};
use crate::model::{ConfigSnapshot, Registry, WorkloadKey};
use crate::telemetry::labels::{Labels, MeshView, PeerLabels, Reporter, ServiceLabels};
use crate::telemetry::series::{DURATION_BUCKETS_MS, HttpSeries, TcpSeries};
use crate::xds::cache::XdsSnapshot;
use crate::xds::server::protocol::{Nack, TypeStatus};
use crate::xds::server::status::ProxySync;

const SERVICES: &str = include_str!("../../../examples/bookinfo/mesh/services.yaml");
const WORKLOADS: &str = include_str!("../../../examples/bookinfo/mesh/workloads.yaml");

fn mk_registry() -> Arc<Registry> {
    let mut snap = ConfigSnapshot::default();
    for (i, text) in [SERVICES, WORKLOADS].iter().enumerate() {
        let parsed = parse_file(std::path::Path::new(&format!("f{i}.yaml")), text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        for r in parsed.resources {
            snap.resources.insert(r.key(), Arc::new(r));
        }
    }
    Arc::new(Registry::build(&snap))
}

fn key(name: &str) -> WorkloadKey {
    WorkloadKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

/// Labels of one series: `None` for a side pilotfish could not name.
fn mk_labels(
    view: &MeshView,
    reporter: Reporter,
    source: Option<&str>,
    destination: Option<&str>,
    service: &str,
    code: &str,
) -> Labels {
    let peer = |w: Option<&str>| {
        w.map_or_else(
            || Arc::new(PeerLabels::unknown()),
            |w| Arc::clone(view.workload(&key(w)).expect("bookinfo workload")),
        )
    };
    let host = format!("{service}.default.svc.cluster.local");
    Labels {
        reporter,
        source: peer(source),
        destination: peer(destination),
        service: Arc::new(ServiceLabels {
            host,
            name: service.into(),
            namespace: "default".into(),
        }),
        request_protocol: "http",
        response_code: code.into(),
        grpc_response_status: String::new(),
        response_flags: "-".into(),
        connection_security_policy: match reporter {
            Reporter::Destination => "mutual_tls",
            Reporter::Source => "unknown",
        },
        tags: Arc::default(),
    }
}

/// A series of `n` requests each taking `ms`.
fn mk_series(n: u64, ms: f64) -> HttpSeries {
    let mut s = HttpSeries::default();
    for _ in 0..n {
        s.requests += 1;
        s.duration_ms.observe(&DURATION_BUCKETS_MS, ms);
    }
    s
}

fn mk_status(sent: Option<&str>, acked: Option<&str>, nack: Option<&str>) -> TypeStatus {
    TypeStatus {
        sent_version: sent.map(Into::into),
        sent_nonce: None,
        acked_version: acked.map(Into::into),
        last_nack: nack.map(|m| Nack {
            nonce: "n".into(),
            version: sent.unwrap_or_default().into(),
            message: m.into(),
        }),
        subscribed: Vec::new(),
        wildcard: true,
        sent: Default::default(),
    }
}

fn mk_proxy(workload: &str, types: &[(&'static str, TypeStatus)]) -> ProxySync {
    ProxySync {
        node_id: format!("sidecar~127.0.0.1~{workload}.default~default.svc.cluster.local"),
        workload: format!("default/{workload}"),
        group: None,
        peer: "127.0.0.1:5000".into(),
        delta: false,
        connected_unix: 1,
        types: types.iter().cloned().collect(),
    }
}

fn edge<'a>(g: &'a Graph, id: &str) -> &'a Edge {
    g.edges
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no edge {id} in {:?}", g.edges))
}

/// productpage -> reviews-v1 and -> details-v1 as both reporters saw them,
/// an outside client -> productpage, and aborted requests that never left
/// productpage (source reporter only, no destination workload).
fn bookinfo_series(view: &MeshView, scale: u64) -> (HttpSnapshot, TcpSnapshot) {
    use Reporter::{Destination, Source};
    let http = vec![
        (
            mk_labels(
                view,
                Source,
                Some("productpage-v1"),
                Some("reviews-v1"),
                "reviews",
                "200",
            ),
            mk_series(9 * scale, 4.0),
        ),
        (
            mk_labels(
                view,
                Source,
                Some("productpage-v1"),
                Some("reviews-v1"),
                "reviews",
                "503",
            ),
            mk_series(scale, 40.0),
        ),
        (
            mk_labels(
                view,
                Destination,
                Some("productpage-v1"),
                Some("reviews-v1"),
                "reviews",
                "200",
            ),
            mk_series(9 * scale, 3.0),
        ),
        (
            mk_labels(
                view,
                Destination,
                Some("productpage-v1"),
                Some("reviews-v1"),
                "reviews",
                "503",
            ),
            mk_series(scale, 30.0),
        ),
        (
            mk_labels(
                view,
                Source,
                Some("productpage-v1"),
                Some("details-v1"),
                "details",
                "200",
            ),
            mk_series(10 * scale, 2.0),
        ),
        (
            mk_labels(
                view,
                Destination,
                None,
                Some("productpage-v1"),
                "productpage",
                "200",
            ),
            mk_series(10 * scale, 20.0),
        ),
        (
            mk_labels(view, Source, Some("productpage-v1"), None, "ratings", "503"),
            mk_series(2 * scale, 0.1),
        ),
    ];
    (http, Vec::new())
}

type HttpSnapshot = Vec<(Labels, HttpSeries)>;
type TcpSnapshot = Vec<(Labels, TcpSeries)>;

fn mk_view() -> MeshView {
    MeshView::new(mk_registry(), Some("cluster.local"))
}

#[test]
fn totals_sum_series_by_edge_and_reporter() {
    let view = mk_view();
    let (http, tcp) = bookinfo_series(&view, 1);
    let t = Totals::of(&http, &tcp);
    // 7 series: reviews (2 reporters), details, client, ratings abort.
    assert_eq!(t.edges.len(), 5);
    let reviews_dest = t
        .edges
        .iter()
        .find(|((k, r), _)| *r == Reporter::Destination && k.destination.name() == "reviews-v1")
        .map(|(_, v)| v)
        .unwrap();
    assert_eq!(reviews_dest.requests, 10);
    assert_eq!(reviews_dest.errors, 1);
    assert_eq!(reviews_dest.mtls, 10);
    assert_eq!(reviews_dest.duration.iter().sum::<u64>(), 10);
}

#[test]
fn graph_prefers_the_destination_reporter_and_marks_mtls() {
    let registry = mk_registry();
    let view = mk_view();
    let (http, tcp) = bookinfo_series(&view, 1);
    let g = build(&registry, &Totals::of(&http, &tcp), None, &[], 3, &[]);

    let reviews = edge(&g, "productpage-v1->reviews-v1");
    assert_eq!(reviews.reporter, "destination");
    assert_eq!(reviews.source, "default/productpage-v1");
    assert_eq!(reviews.destination, "default/reviews-v1");
    assert_eq!(reviews.mtls, Some(true));
    assert_eq!(reviews.requests_total, 10);
    assert_eq!(reviews.error_rate, Some(0.1));
    // No second sample yet: no rate, figures over all time.
    assert_eq!(reviews.rps, None);
    assert_eq!(reviews.basis, "all_time");
    // 9 of 10 at 3 ms (bucket 1..5), 1 at 30 ms (bucket 25..50): p99 inside 25..50.
    let p99 = reviews.p99_ms.unwrap();
    assert!((25.0..=50.0).contains(&p99), "p99 {p99}");

    // Only productpage's sidecar reported details: mTLS cannot be told.
    let details = edge(&g, "productpage-v1->details-v1");
    assert_eq!(details.reporter, "source");
    assert_eq!(details.mtls, None);
    assert_eq!(details.error_rate, Some(0.0));

    // A client outside the mesh, and aborted calls that never reached a workload.
    assert_eq!(edge(&g, "unknown->productpage-v1").source, "unknown");
    let aborted = edge(&g, "productpage-v1->ratings.default.svc.cluster.local");
    assert_eq!(
        aborted.destination,
        "service:ratings.default.svc.cluster.local"
    );
    assert_eq!(aborted.error_rate, Some(1.0));
    assert_eq!(g.edges.len(), 4);

    // Every workload of the registry is a node, labelled by app and version,
    // plus the unknown client and the service the aborted calls named.
    let names: Vec<(&str, &str)> = g.nodes.iter().map(|n| (n.name.as_str(), n.kind)).collect();
    for w in [
        "productpage-v1",
        "details-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
        "ratings-v1",
    ] {
        assert!(
            names.contains(&(w, "workload")),
            "{w} missing from {names:?}"
        );
    }
    assert!(names.contains(&("unknown", "unknown")));
    assert!(names.contains(&("ratings.default.svc.cluster.local", "service")));
    assert_eq!(g.nodes.len(), 8);
    let v2 = g.nodes.iter().find(|n| n.name == "reviews-v2").unwrap();
    assert_eq!(
        (v2.app.as_deref(), v2.version.as_deref()),
        (Some("reviews"), Some("v2"))
    );
    assert_eq!(v2.proxy, None);
    assert_eq!(g.config_version, 3);
}

#[test]
fn rates_error_share_and_p99_cover_the_window() {
    let registry = mk_registry();
    let view = mk_view();
    let (http, tcp) = bookinfo_series(&view, 1);
    let before = Totals::of(&http, &tcp);
    // Ten seconds later, three times as much traffic in total.
    let (http, tcp) = bookinfo_series(&view, 3);
    let now = Totals::of(&http, &tcp);
    let base = Baseline {
        age: Duration::from_secs(10),
        totals: &before,
    };
    let g = build(&registry, &now, Some(&base), &[], 1, &[]);
    assert_eq!(g.window_s, Some(10.0));
    let reviews = edge(&g, "productpage-v1->reviews-v1");
    assert_eq!(reviews.requests_total, 30);
    assert_eq!(reviews.rps, Some(2.0)); // 20 more in 10 s
    assert_eq!(reviews.basis, "window");
    assert_eq!(reviews.error_rate, Some(0.1)); // 2 of 20

    // Nothing new on an edge: rate 0, error rate and p99 from all time.
    let now_same = Totals::of(&bookinfo_series(&view, 1).0, &[]);
    let g = build(&registry, &now_same, Some(&base), &[], 1, &[]);
    let details = edge(&g, "productpage-v1->details-v1");
    assert_eq!(details.rps, Some(0.0));
    assert_eq!(details.basis, "all_time");
    assert!(details.p99_ms.is_some());
}

#[test]
fn p99_comes_from_the_window_not_from_history() {
    let registry = mk_registry();
    let view = mk_view();
    let labels = mk_labels(
        &view,
        Reporter::Destination,
        Some("productpage-v1"),
        Some("details-v1"),
        "details",
        "200",
    );
    // 1000 slow requests long ago, then 100 fast ones in the window.
    let old = mk_series(1000, 2000.0);
    let mut new = old.clone();
    for _ in 0..100 {
        new.requests += 1;
        new.duration_ms.observe(&DURATION_BUCKETS_MS, 3.0);
    }
    let before = Totals::of(&[(labels.clone(), old)], &[]);
    let now = Totals::of(&[(labels, new)], &[]);
    let base = Baseline {
        age: Duration::from_secs(5),
        totals: &before,
    };
    let g = build(&registry, &now, Some(&base), &[], 1, &[]);
    let e = edge(&g, "productpage-v1->details-v1");
    assert_eq!(e.rps, Some(20.0));
    let p99 = e.p99_ms.unwrap();
    assert!(
        (1.0..=5.0).contains(&p99),
        "p99 {p99} should be in the 1..5 ms bucket"
    );
    let all_time = build(&registry, &now, None, &[], 1, &[]);
    let p99_all = edge(&all_time, "productpage-v1->details-v1")
        .p99_ms
        .unwrap();
    assert!(p99_all > 1000.0, "all-time p99 {p99_all}");
}

#[test]
fn a_counter_reset_counts_from_zero() {
    let registry = mk_registry();
    let view = mk_view();
    // The window started with 30 requests; the series expired and came back with 3.
    let before = Totals::of(&bookinfo_series(&view, 3).0, &[]);
    let now = Totals::of(&bookinfo_series(&view, 1).0, &[]);
    let base = Baseline {
        age: Duration::from_secs(2),
        totals: &before,
    };
    let g = build(&registry, &now, Some(&base), &[], 1, &[]);
    assert_eq!(edge(&g, "productpage-v1->details-v1").rps, Some(5.0));
}

#[test]
fn proxies_show_each_types_sync_state_and_nodes_the_worst() {
    let registry = mk_registry();
    let synced = mk_status(Some("v1"), Some("v1"), None);
    let syncs = vec![
        mk_proxy(
            "reviews-v1",
            &[("cds", synced.clone()), ("lds", synced.clone())],
        ),
        mk_proxy(
            "details-v1",
            &[
                ("cds", synced.clone()),
                (
                    "lds",
                    mk_status(Some("v2"), Some("v1"), Some("bad listener")),
                ),
                ("rds", mk_status(Some("v3"), Some("v2"), None)),
            ],
        ),
        mk_proxy(
            "ratings-v1",
            &[("cds", mk_status(Some("v3"), Some("v2"), None))],
        ),
    ];
    let g = build(&registry, &Totals::default(), None, &syncs, 1, &[]);
    let details = g
        .proxies
        .iter()
        .find(|p| p.workload == "default/details-v1")
        .unwrap();
    assert_eq!(details.types["cds"], "SYNCED");
    assert_eq!(details.types["lds"], "NACKED");
    assert_eq!(details.types["rds"], "STALE");
    assert_eq!(details.nacks["lds"], "bad listener");
    assert_eq!(details.xds, "sotw");
    let state = |n: &str| g.nodes.iter().find(|x| x.name == n).unwrap().proxy;
    assert_eq!(state("reviews-v1"), Some("SYNCED"));
    assert_eq!(state("details-v1"), Some("NACKED"));
    assert_eq!(state("ratings-v1"), Some("STALE"));
    assert_eq!(state("productpage-v1"), None);
    // Sorted by workload.
    let order: Vec<&str> = g.proxies.iter().map(|p| p.workload.as_str()).collect();
    assert_eq!(
        order,
        [
            "default/details-v1",
            "default/ratings-v1",
            "default/reviews-v1"
        ]
    );
}

#[test]
fn config_errors_are_capped() {
    let registry = mk_registry();
    let errors: Vec<ConfigError> = (0..super::graph::MAX_CONFIG_ERRORS + 5)
        .map(|i| ConfigError {
            file: format!("bad-{i}.yaml"),
            document: Some(1),
            resource: None,
            path: Some("spec.hosts".into()),
            message: "expected a list".into(),
        })
        .collect();
    let g = build(&registry, &Totals::default(), None, &[], 7, &errors);
    assert_eq!(g.config_errors_total, errors.len());
    assert_eq!(g.config_errors.len(), super::graph::MAX_CONFIG_ERRORS);
    assert_eq!(g.config_errors[0], errors[0]);
}

#[test]
fn window_measures_against_a_sample_about_rate_window_old() {
    let mut w = Window::default();
    let t0 = Instant::now();
    let s = |n: u64| {
        let mut t = Totals::default();
        t.seen
            .insert(key(&n.to_string()), (String::new(), String::new()));
        Arc::new(t)
    };
    // First call: nothing to compare with.
    assert!(w.advance(t0, s(0)).is_none());
    // Too soon: no rate, and not kept (one sample per SAMPLE_EVERY).
    assert!(w.advance(t0 + MIN_SPAN / 2, s(1)).is_none());
    assert_eq!(w.len(), 1);
    // Later calls measure against the first sample...
    let (age, base) = w.advance(t0 + Duration::from_secs(3), s(3)).unwrap();
    assert_eq!(age, Duration::from_secs(3));
    assert_eq!(*base, *s(0));
    // ... until it is older than the window and a newer one is too.
    for i in 4..60u64 {
        w.advance(t0 + Duration::from_secs(i), s(i));
    }
    let now = t0 + Duration::from_secs(60);
    let (age, base) = w.advance(now, s(60)).unwrap();
    assert!(
        age >= RATE_WINDOW && age < RATE_WINDOW + SAMPLE_EVERY,
        "age {age:?}"
    );
    assert_eq!(*base, *s(60 - RATE_WINDOW.as_secs()));
    assert!(w.len() <= (RATE_WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize + 2);
    // A page left alone for ten minutes measures over those ten minutes.
    let later = now + Duration::from_secs(600);
    let (age, _) = w.advance(later, s(660)).unwrap();
    assert_eq!(age, Duration::from_secs(600));
}

fn mk_state() -> AdminState {
    let (metrics, registry) = crate::metrics::Metrics::new();
    let telemetry = crate::telemetry::Telemetry::new(metrics, 100);
    let (_config_tx, config) = watch::channel(Arc::new(ConfigState::default()));
    let snapshot = XdsSnapshot {
        registry: mk_registry(),
        ..Default::default()
    };
    let (_xds_tx, xds) = watch::channel(Arc::new(snapshot));
    AdminState {
        registry: Arc::new(registry),
        syncs: Default::default(),
        config,
        xds,
        telemetry: telemetry.sink,
        rotation: None,
        autoreg: None,
    }
}

async fn get(app: axum::Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn ui_page_is_self_contained() {
    let (status, headers, body) = get(router(mk_state()), "/ui").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert!(body.contains("/ui/graph.json"));
    // Nothing is loaded from anywhere else.
    for remote in ["src=\"http", "href=\"http", "@import", "//cdn", "https://"] {
        assert!(!body.contains(remote), "page refers to {remote}");
    }
}

#[tokio::test]
async fn graph_json_lists_the_registry_workloads() {
    let app = router(mk_state());
    let (status, _, body) = get(app, "/ui/graph.json").await;
    assert_eq!(status, StatusCode::OK);
    let g: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "details-v1",
            "productpage-v1",
            "ratings-v1",
            "reviews-v1",
            "reviews-v2",
            "reviews-v3"
        ]
    );
    assert_eq!(g["edges"], serde_json::json!([]));
    assert_eq!(g["window_s"], serde_json::Value::Null);
}

#[test]
fn tcp_edges_count_connections_and_bytes() {
    let registry = mk_registry();
    let view = mk_view();
    let mut labels = mk_labels(
        &view,
        Reporter::Destination,
        Some("reviews-v2"),
        Some("ratings-v1"),
        "ratings",
        "",
    );
    labels.request_protocol = "tcp";
    let conns = |opened: u64| TcpSeries {
        mask: crate::telemetry::series::ALL_METRICS,
        sent_bytes: 100 * opened,
        received_bytes: 10 * opened,
        opened,
        closed: opened,
    };
    let before = Totals::of(&[], &[(labels.clone(), conns(2))]);
    let now = Totals::of(&[], &[(labels, conns(6))]);
    let base = Baseline {
        age: Duration::from_secs(2),
        totals: &before,
    };
    let g = build(&registry, &now, Some(&base), &[], 1, &[]);
    let e = edge(&g, "reviews-v2->ratings-v1 (tcp)");
    assert_eq!(e.protocol, "tcp");
    assert_eq!(e.requests_total, 6);
    assert_eq!(e.rps, Some(2.0));
    assert_eq!(e.tcp_bytes_total, Some(660));
    assert_eq!(e.mtls, Some(true));
    assert_eq!((e.error_rate, e.p99_ms), (None, None));
}
