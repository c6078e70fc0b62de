//! Unit tests of the telemetry sink's pure parts: labels from access-log
//! entries, and the bounded series store.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::data::accesslog::v3::{
    AccessLogCommon, AccessLogType, ConnectionProperties, HttpAccessLogEntry,
    HttpRequestProperties, HttpResponseProperties, ResponseFlags, TcpAccessLogEntry, TlsProperties,
    tls_properties,
};

use super::labels::{MeshView, Reporter, cluster_host, http_sample, response_flags, tcp_sample};
use super::series::{DURATION_BUCKETS_MS, Hist, SeriesStore};
use crate::config::parse_file;
use crate::model::{ConfigSnapshot, Registry, WorkloadKey};

const SERVICES: &str = include_str!("../../examples/bookinfo/mesh/services.yaml");
const WORKLOADS: &str = include_str!("../../examples/bookinfo/mesh/workloads.yaml");

fn mk_registry(files: &[&str]) -> Arc<Registry> {
    let mut snap = ConfigSnapshot::default();
    for (i, text) in files.iter().enumerate() {
        let parsed = parse_file(std::path::Path::new(&format!("f{i}.yaml")), text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        for r in parsed.resources {
            snap.resources.insert(r.key(), Arc::new(r));
        }
    }
    Arc::new(Registry::build(&snap))
}

fn mk_view() -> MeshView {
    MeshView::new(mk_registry(&[SERVICES, WORKLOADS]), Some("cluster.local"))
}

fn key(name: &str) -> WorkloadKey {
    WorkloadKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn addr(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn entry(common: AccessLogCommon, authority: &str, code: u32) -> HttpAccessLogEntry {
    HttpAccessLogEntry {
        common_properties: Some(common),
        request: Some(HttpRequestProperties {
            authority: authority.into(),
            request_headers_bytes: 100,
            request_body_bytes: 20,
            ..Default::default()
        }),
        response: Some(HttpResponseProperties {
            response_code: Some(envoy_types::pb::google::protobuf::UInt32Value { value: code }),
            response_headers_bytes: 50,
            response_body_bytes: 7,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn cluster_names_give_their_host() {
    assert_eq!(
        cluster_host("outbound|9080|v1|ratings.default.svc.cluster.local"),
        Some("ratings.default.svc.cluster.local")
    );
    assert_eq!(
        cluster_host("outbound|9080||reviews.default.svc.cluster.local"),
        Some("reviews.default.svc.cluster.local")
    );
    assert_eq!(cluster_host("inbound|9080||"), None);
    assert_eq!(cluster_host(""), None);
}

#[test]
fn response_flags_are_envoys_short_codes() {
    assert_eq!(response_flags(None), "-");
    assert_eq!(response_flags(Some(&ResponseFlags::default())), "-");
    let f = ResponseFlags {
        upstream_connection_failure: true,
        upstream_retry_limit_exceeded: true,
        ..Default::default()
    };
    assert_eq!(response_flags(Some(&f)), "UF,URX");
}

#[test]
fn source_reporter_labels_name_both_workloads_and_the_service() {
    let view = mk_view();
    let mut e = entry(
        AccessLogCommon {
            upstream_cluster: "outbound|9080|v1|ratings.default.svc.cluster.local".into(),
            upstream_remote_address: addr("127.0.0.16", 9080),
            duration: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 0,
                nanos: 12_500_000,
            }),
            ..Default::default()
        },
        "ratings:9080",
        200,
    );
    let req = e.request.as_mut().unwrap();
    req.request_headers
        .insert("content-type".into(), "application/grpc+proto".into());
    e.response
        .as_mut()
        .unwrap()
        .response_trailers
        .insert("grpc-status".into(), "14".into());
    let s = http_sample(&view, Reporter::Source, &key("productpage-v1"), &e);
    let pairs: std::collections::BTreeMap<_, _> = s.labels.pairs(false).into_iter().collect();
    assert_eq!(pairs["reporter"], "source");
    assert_eq!(pairs["source_workload"], "productpage-v1");
    assert_eq!(pairs["source_app"], "productpage");
    assert_eq!(
        pairs["source_principal"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert_eq!(pairs["destination_workload"], "ratings-v1");
    assert_eq!(pairs["destination_version"], "v1");
    assert_eq!(
        pairs["destination_service"],
        "ratings.default.svc.cluster.local"
    );
    assert_eq!(pairs["destination_service_name"], "ratings");
    assert_eq!(pairs["request_protocol"], "grpc");
    assert_eq!(pairs["grpc_response_status"], "14");
    assert_eq!(pairs["response_code"], "200");
    assert_eq!(pairs["connection_security_policy"], "unknown");
    assert_eq!(s.duration_ms, 12.5);
    assert_eq!(s.request_bytes, 120);
    assert_eq!(s.response_bytes, 57);
}

#[test]
fn an_aborted_request_names_its_service_from_the_host_header() {
    let view = mk_view();
    let e = entry(
        AccessLogCommon {
            response_flags: Some(ResponseFlags {
                fault_injected: true,
                ..Default::default()
            }),
            ..Default::default()
        },
        "ratings:9080",
        503,
    );
    let s = http_sample(&view, Reporter::Source, &key("productpage-v1"), &e);
    assert_eq!(s.labels.service.host, "ratings.default.svc.cluster.local");
    assert_eq!(s.labels.destination.workload, "unknown");
    assert_eq!(s.labels.response_flags, "FI");
}

#[test]
fn destination_reporter_trusts_the_peer_certificate() {
    let view = mk_view();
    let tls = |uri: &str| {
        Some(TlsProperties {
            peer_certificate_properties: Some(tls_properties::CertificateProperties {
                subject_alt_name: vec![tls_properties::certificate_properties::SubjectAltName {
                    san: Some(
                        tls_properties::certificate_properties::subject_alt_name::San::Uri(
                            uri.into(),
                        ),
                    ),
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let common = AccessLogCommon {
        downstream_remote_address: addr("127.0.0.11", 40000),
        downstream_local_address: addr("127.0.0.16", 9080),
        tls_properties: tls("spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        upstream_cluster: "inbound|9080||".into(),
        ..Default::default()
    };
    let s = http_sample(
        &view,
        Reporter::Destination,
        &key("ratings-v1"),
        &entry(common.clone(), "ratings:9080", 200),
    );
    assert_eq!(s.labels.source.workload, "productpage-v1");
    assert_eq!(
        s.labels.source.principal,
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert_eq!(s.labels.destination.workload, "ratings-v1");
    assert_eq!(s.labels.service.name, "ratings");
    assert_eq!(s.labels.connection_security_policy, "mutual_tls");

    // Plaintext: the principal is not known, whatever the address says.
    let plain = AccessLogCommon {
        tls_properties: None,
        ..common.clone()
    };
    let s = http_sample(
        &view,
        Reporter::Destination,
        &key("ratings-v1"),
        &entry(plain, "ratings:9080", 200),
    );
    assert_eq!(s.labels.source.workload, "productpage-v1");
    assert_eq!(s.labels.source.principal, "unknown");
    assert_eq!(s.labels.connection_security_policy, "none");

    // An unknown address with a certificate: the certificate names the caller.
    let stranger = AccessLogCommon {
        downstream_remote_address: addr("10.9.9.9", 1),
        tls_properties: tls("spiffe://cluster.local/ns/other/sa/x"),
        ..common
    };
    let s = http_sample(
        &view,
        Reporter::Destination,
        &key("ratings-v1"),
        &entry(stranger, "", 200),
    );
    assert_eq!(s.labels.source.workload, "unknown");
    assert_eq!(
        s.labels.source.principal,
        "spiffe://cluster.local/ns/other/sa/x"
    );
}

#[test]
fn tcp_entries_count_opens_closes_and_bytes() {
    let view = mk_view();
    let mk = |kind: AccessLogType, connected: bool| TcpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            access_log_type: kind as i32,
            downstream_remote_address: addr("127.0.0.11", 40000),
            upstream_local_address: connected.then(|| addr("127.0.0.16", 5000)).flatten(),
            ..Default::default()
        }),
        connection_properties: Some(ConnectionProperties {
            received_bytes: 10,
            sent_bytes: 20,
        }),
    };
    let me = key("ratings-v1");
    let open = tcp_sample(
        &view,
        Reporter::Destination,
        &me,
        &mk(AccessLogType::TcpUpstreamConnected, true),
    );
    assert!(open.opened && !open.closed);
    assert_eq!((open.received_bytes, open.sent_bytes), (0, 0));
    let end = tcp_sample(
        &view,
        Reporter::Destination,
        &me,
        &mk(AccessLogType::TcpConnectionEnd, true),
    );
    assert!(!end.opened && end.closed);
    assert_eq!((end.received_bytes, end.sent_bytes), (10, 20));
    // A connection whose upstream never connected logs only its end.
    let failed = tcp_sample(
        &view,
        Reporter::Destination,
        &me,
        &mk(AccessLogType::TcpConnectionEnd, false),
    );
    assert!(failed.opened && failed.closed);
    assert!(
        !end.labels
            .pairs(true)
            .iter()
            .any(|(k, _)| *k == "response_code")
    );
}

#[test]
fn histograms_are_cumulative_and_give_quantiles() {
    let mut h = Hist::default();
    for v in [0.3, 3.0, 3.0, 7.0, 2_000_000.0, 9e9] {
        h.observe(&DURATION_BUCKETS_MS, v);
    }
    let c = h.cumulative(&DURATION_BUCKETS_MS);
    assert_eq!(c.len(), DURATION_BUCKETS_MS.len() + 1);
    assert_eq!(c[0], (0.5, 1));
    assert_eq!(c[2], (5.0, 3));
    assert_eq!(c[3], (10.0, 4));
    assert_eq!(c.last().unwrap().1, 6);
    assert_eq!(h.count, 6);
    // The median falls in the (1, 5] bucket.
    let p50 = h.quantile(&DURATION_BUCKETS_MS, 0.5).unwrap();
    assert!((1.0..=5.0).contains(&p50), "{p50}");
}

#[test]
fn the_store_caps_series_and_expires_departed_workloads() {
    let view = mk_view();
    let store = SeriesStore::new(2);
    let sample = |from: &str, code: u32| {
        http_sample(
            &view,
            Reporter::Source,
            &key(from),
            &entry(
                AccessLogCommon {
                    upstream_cluster: "outbound|9080||details.default.svc.cluster.local".into(),
                    upstream_remote_address: addr("127.0.0.12", 9080),
                    ..Default::default()
                },
                "details:9080",
                code,
            ),
        )
    };
    store.record_http(&[sample("productpage-v1", 200), sample("productpage-v1", 200)]);
    store.record_http(&[sample("productpage-v1", 500)]);
    assert_eq!(store.len(), 2);
    // A third label set is over the cap: dropped and counted.
    store.record_http(&[sample("reviews-v2", 200)]);
    assert_eq!(store.len(), 2);
    assert_eq!(store.dropped(), 1);
    // Existing series still count.
    store.record_http(&[sample("productpage-v1", 200)]);
    let snap = store.http_snapshot();
    let ok = snap.iter().find(|(l, _)| l.response_code == "200").unwrap();
    assert_eq!(ok.1.requests, 3);

    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let store = Arc::new(store);
    registry.register_collector(Box::new(Arc::clone(&store)));
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap();
    assert!(line.ends_with(" 3"), "{line}");
    assert!(
        line.contains("destination_workload=\"details-v1\""),
        "{line}"
    );
    assert!(text.contains("istio_request_duration_milliseconds_bucket{"));
    assert!(text.contains("pilotfish_telemetry_samples_dropped_total 1"));

    // details-v1 leaves the mesh: its series go.
    let removed = store.expire(|k| k.name != "details-v1");
    assert_eq!(removed, 2);
    assert!(store.is_empty());
}

#[test]
fn telemetry_overrides_split_disable_and_relabel_metrics() {
    use crate::model::telemetry::resolve::{applicable, metric_policy};
    let telemetry = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: pp, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_protocol: {operation: REMOVE}
        request_host: {value: request.host}
        team: {value: \"'bookinfo'\"}
    - match: {metric: REQUEST_DURATION}
      disabled: true
";
    let mut snap = ConfigSnapshot::default();
    for text in [SERVICES, WORKLOADS, telemetry] {
        let parsed = parse_file(std::path::Path::new("t.yaml"), text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        for r in parsed.resources {
            snap.resources.insert(r.key(), Arc::new(r));
        }
    }
    let registry = Arc::new(Registry::build(&snap));
    let view = MeshView::with_config(registry, Some("cluster.local"), Some(&snap));
    let pp = key("productpage-v1");
    let policy = view.policy(&pp, Reporter::Source).expect("a policy");
    assert!(view.policy(&key("ratings-v1"), Reporter::Source).is_none());
    let chain = applicable(&snap, "default", &view.registry.workloads[&pp].labels);
    assert_eq!(**policy, metric_policy(&chain, true));

    let e = entry(
        AccessLogCommon {
            upstream_cluster: "outbound|9080||details.default.svc.cluster.local".into(),
            upstream_remote_address: addr("127.0.0.12", 9080),
            ..Default::default()
        },
        "details:9080",
        200,
    );
    let s = http_sample(&view, Reporter::Source, &pp, &e);
    let parts = super::labels::apply_http(policy, s, &super::labels::Attributes::of(&e, "200"));
    // REQUEST_COUNT relabelled; sizes keep the standard labels; duration off.
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0].mask, 0b0001);
    assert_eq!(parts[1].mask, 0b1100);
    let store = Arc::new(SeriesStore::new(100));
    store.record_http(&parts);
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Arc::clone(&store)));
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let count = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap();
    assert!(!count.contains("request_protocol="), "{count}");
    assert!(count.contains("request_host=\"details:9080\""), "{count}");
    assert!(count.contains("team=\"bookinfo\""), "{count}");
    assert!(!text.contains("istio_request_duration_milliseconds_count{"));
    let size = text
        .lines()
        .find(|l| l.starts_with("istio_request_bytes_count{"))
        .unwrap();
    assert!(size.contains("request_protocol=\"http\""), "{size}");
    // The server side of productpage has no override.
    assert!(
        view.policy(&pp, Reporter::Destination)
            .is_some_and(|p| p.rule(0).is_some_and(|r| r.tags.is_empty()))
    );
}
