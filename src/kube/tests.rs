//! Conversions and the index, without a network: Kubernetes objects written
//! as JSON (as the API serves them), built into the model, read back through
//! the same `Registry` the translator uses.

use std::collections::BTreeMap;

use ::kube::api::DynamicObject;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::convert::{self, LabelSelector};
use super::index::{Index, Watched, build};
use crate::model::istio::{Location, Resolution};
use crate::model::registry::{Protocol, READY_ANNOTATION};
use crate::model::{ConfigSnapshot, Registry, Spec, WorkloadKey};

fn mk_service(name: &str, selector: Value, ports: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {"selector": selector, "ports": ports, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}
    })
}

fn mk_pod(name: &str, ip: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels, "resourceVersion": "1"},
        "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [
            {"name": "app", "image": "app", "ports": [{"name": "web", "containerPort": 8080}]}
        ]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn mk_slice(service: &str, name: &str, endpoints: &[(&str, &str, bool)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|(pod, ip, ready)| json!({
            "addresses": [ip], "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}
        })).collect::<Vec<_>>()
    })
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("test object")
}

fn dynamic(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("dynamic object")
}

fn mk_index(objects: Vec<(Watched, Value)>) -> Index {
    let mut ix = Index::default();
    for (w, v) in objects {
        ix.apply(w, dynamic(v));
    }
    ix
}

fn registry(ix: &Index) -> Registry {
    let built = build(ix, &[]);
    Registry::build(&ConfigSnapshot::new(built.resources))
}

#[test]
fn app_protocol_wins_over_port_name_then_name_prefix_then_tcp() {
    let svc: Service = typed(mk_service(
        "reviews",
        json!({"app": "reviews"}),
        json!([
            {"name": "http-web", "port": 9080},
            {"name": "tcp-but-grpc", "port": 9090, "appProtocol": "grpc"},
            {"name": "h2c", "port": 9091, "appProtocol": "kubernetes.io/h2c"},
            {"name": "metrics", "port": 9092},
            {"name": "grpc", "port": 9093, "appProtocol": "made-up"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"port": 9094, "name": "https-admin", "protocol": "TCP"}
        ]),
    ));
    let (r, _) = convert::service_entry(&svc, &[]).unwrap();
    let Spec::ServiceEntry(se) = &r.spec else {
        panic!("not a ServiceEntry: {r:?}")
    };
    let detected: Vec<(u32, Protocol)> = se
        .ports
        .iter()
        .map(|p| (p.number, Protocol::detect(p.protocol.as_deref(), &p.name)))
        .collect();
    assert_eq!(
        detected,
        vec![
            (9080, Protocol::Http),
            (9090, Protocol::Grpc),
            (9091, Protocol::Http2),
            (9092, Protocol::Tcp),
            (9093, Protocol::Grpc),
            (9094, Protocol::Https),
        ],
        "UDP port 53 is not proxied"
    );
    assert_eq!(se.hosts, vec!["reviews.default.svc.cluster.local"]);
    assert_eq!(se.addresses, vec!["10.96.0.10"]);
    assert_eq!(se.location, Some(Location::MeshInternal));
    assert_eq!(se.resolution, Some(Resolution::Static));
    assert_eq!(
        se.workload_selector.as_ref().map(|s| s.labels.clone()),
        Some(BTreeMap::from([("app".into(), "reviews".into())]))
    );
    assert_eq!(r.name, "svc:reviews");
}

#[test]
fn a_bad_service_port_is_named_with_its_path() {
    let svc: Service = typed(mk_service(
        "reviews",
        json!({"app": "reviews"}),
        json!([{"name": "http", "port": 9080, "targetPort": 70000}]),
    ));
    let p = convert::service_entry(&svc, &[]).unwrap_err();
    assert_eq!(p.path, "spec.ports[0].targetPort");
    assert!(p.message.contains("70000"), "{}", p.message);
}

#[test]
fn external_name_service_resolves_by_dns() {
    let svc: Service = typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"type": "ExternalName", "externalName": "db.example.com", "ports": [{"name": "tcp", "port": 5432}]}
    }));
    let (r, _) = convert::service_entry(&svc, &[]).unwrap();
    let Spec::ServiceEntry(se) = &r.spec else {
        panic!()
    };
    assert_eq!(se.resolution, Some(Resolution::Dns));
    assert_eq!(se.location, Some(Location::MeshExternal));
    assert_eq!(se.hosts, vec!["db.prod.svc.cluster.local"]);
    assert_eq!(se.endpoints[0].address.as_deref(), Some("db.example.com"));
}

#[test]
fn service_selects_ready_pods_as_endpoints_and_every_pod_as_a_workload() {
    let ix = mk_index(vec![
        (
            Watched::Service,
            mk_service(
                "reviews",
                json!({"app": "reviews"}),
                json!([{"name": "http", "port": 9080}]),
            ),
        ),
        (
            Watched::Pod,
            mk_pod(
                "reviews-v1-a",
                "10.0.0.1",
                json!({"app": "reviews", "version": "v1"}),
            ),
        ),
        (
            Watched::Pod,
            mk_pod(
                "reviews-v2-b",
                "10.0.0.2",
                json!({"app": "reviews", "version": "v2"}),
            ),
        ),
        (
            Watched::Pod,
            mk_pod("ratings-v1-c", "10.0.0.3", json!({"app": "ratings"})),
        ),
        (
            Watched::EndpointSlice,
            mk_slice(
                "reviews",
                "reviews-abc",
                &[
                    ("reviews-v1-a", "10.0.0.1", true),
                    ("reviews-v2-b", "10.0.0.2", false),
                ],
            ),
        ),
    ]);
    let reg = registry(&ix);
    let svc = &reg.services["reviews.default.svc.cluster.local"];
    let endpoints: Vec<&str> = svc.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(endpoints, vec!["10.0.0.1"], "only the ready pod serves");
    assert_eq!(
        svc.endpoints[0].service_account.as_deref(),
        Some("bookinfo-reviews")
    );
    assert_eq!(svc.endpoints[0].labels["version"], "v1");
    // The pod that is not ready still has its workload, and still serves
    // the service's port inbound (its sidecar must be ready before it is).
    let v2 = WorkloadKey {
        namespace: "default".into(),
        name: "reviews-v2-b".into(),
    };
    let w = &reg.workloads[&v2];
    assert_eq!(w.address, "10.0.0.2");
    assert_eq!(
        reg.services_of(w)
            .map(|s| s.hostname.as_str())
            .collect::<Vec<_>>(),
        vec!["reviews.default.svc.cluster.local"]
    );
    assert_eq!(reg.workloads.len(), 3);
}

#[test]
fn not_ready_when_any_slice_says_so_or_terminating_and_pod_condition_without_slices() {
    let slices: Vec<EndpointSlice> = vec![
        typed(mk_slice(
            "a",
            "a-1",
            &[("p1", "10.0.0.1", true), ("p2", "10.0.0.2", true)],
        )),
        typed(mk_slice("b", "b-1", &[("p1", "10.0.0.1", false)])),
    ];
    let r = convert::slice_readiness(slices.iter());
    assert!(!r[&("default".into(), "p1".into())]);
    assert!(r[&("default".into(), "p2".into())]);

    let mut pod: Pod = typed(mk_pod("p3", "10.0.0.3", json!({})));
    assert!(convert::pod_ready(&pod, None), "Ready condition True");
    assert!(!convert::pod_ready(&pod, Some(false)), "slices decide");
    pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().unwrap(),
    ));
    assert!(!convert::pod_ready(&pod, Some(true)), "terminating");
    let r = convert::workload_entry(&pod, false, BTreeMap::new())
        .unwrap()
        .unwrap();
    assert_eq!(r.annotations[READY_ANNOTATION], "false");
}

#[test]
fn pods_without_ip_or_finished_are_not_workloads() {
    let mut v = mk_pod("p", "", json!({}));
    assert!(
        convert::workload_entry(&typed(v.clone()), true, BTreeMap::new())
            .unwrap()
            .is_none()
    );
    v["status"]["podIP"] = json!("10.0.0.9");
    v["status"]["phase"] = json!("Succeeded");
    assert!(
        convert::workload_entry(&typed(v.clone()), true, BTreeMap::new())
            .unwrap()
            .is_none()
    );
    v["status"]["phase"] = json!("Running");
    v["status"]["podIP"] = json!("ten.zero");
    let p = convert::workload_entry(&typed(v), true, BTreeMap::new()).unwrap_err();
    assert_eq!(p.path, "status.podIP");
}

#[test]
fn named_target_port_resolves_from_the_pods_container_ports() {
    let ix = mk_index(vec![
        (
            Watched::Service,
            mk_service(
                "web",
                json!({"app": "web"}),
                json!([{"name": "http", "port": 80, "targetPort": "web"}]),
            ),
        ),
        (
            Watched::Pod,
            mk_pod("web-1", "10.0.0.1", json!({"app": "web"})),
        ),
        (
            Watched::EndpointSlice,
            mk_slice("web", "web-1", &[("web-1", "10.0.0.1", true)]),
        ),
    ]);
    let reg = registry(&ix);
    let svc = &reg.services["web.default.svc.cluster.local"];
    assert_eq!(svc.endpoints[0].port_for(&svc.ports[0]), 8080);
}

#[test]
fn selectorless_service_takes_ready_slice_addresses() {
    let ix = mk_index(vec![
        (
            Watched::Service,
            mk_service("ext", json!(null), json!([{"name": "http", "port": 9080}])),
        ),
        (
            Watched::EndpointSlice,
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "ext-1", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "ext"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 7000}],
                "endpoints": [
                    {"addresses": ["192.168.1.1"], "conditions": {"ready": true}},
                    {"addresses": ["192.168.1.2"], "conditions": {"ready": false}},
                    {"addresses": ["192.168.1.3"]}
                ]
            }),
        ),
    ]);
    let reg = registry(&ix);
    let svc = &reg.services["ext.default.svc.cluster.local"];
    let eps: Vec<(&str, u32)> = svc
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e.port_for(&svc.ports[0])))
        .collect();
    assert_eq!(eps, vec![("192.168.1.1", 7000), ("192.168.1.3", 7000)]);
}

#[test]
fn istio_objects_are_parsed_and_validated_as_files_are() {
    let good = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default", "resourceVersion": "7",
                     "uid": "u", "generation": 2, "managedFields": [{"manager": "kubectl"}]},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    });
    let mut ix = mk_index(vec![(
        Watched::Istio(crate::model::Kind::VirtualService),
        good.clone(),
    )]);
    let built = build(&ix, &[]);
    assert_eq!(built.resources.len(), 1);
    assert!(built.errors.is_empty(), "{:?}", built.errors);

    // A bad update: reported with kind, name and field; the last good
    // version stays in force.
    let mut bad = good.clone();
    bad["spec"]["http"][0]["route"][0]["weight"] = json!(-5);
    bad["spec"]["hosts"] = json!(["ratings"]);
    ix.apply(
        Watched::Istio(crate::model::Kind::VirtualService),
        dynamic(bad),
    );
    let built = build(&ix, &[]);
    let vs = built.resources.values().next().unwrap();
    let Spec::VirtualService(spec) = &vs.spec else {
        panic!()
    };
    assert_eq!(spec.hosts, vec!["reviews"], "last good version in force");
    assert_eq!(built.errors.len(), 1, "{:?}", built.errors);
    let e = &built.errors[0];
    assert_eq!(
        e.resource.as_deref(),
        Some("VirtualService default/reviews")
    );
    assert_eq!(e.file, "kubernetes");
    assert!(
        e.path.as_deref().unwrap_or_default().contains("weight"),
        "{e}"
    );
}

#[test]
fn malformed_service_is_reported_and_skipped_others_kept() {
    let ix = mk_index(vec![
        (
            Watched::Service,
            mk_service(
                "good",
                json!({"app": "good"}),
                json!([{"name": "http", "port": 80}]),
            ),
        ),
        (
            Watched::Service,
            mk_service("bad", json!({"app": "bad"}), json!("eighty")),
        ),
    ]);
    let built = build(&ix, &[]);
    let names: Vec<&str> = built.resources.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(names, vec!["svc:good"]);
    assert_eq!(built.errors.len(), 1);
    let e = &built.errors[0];
    assert_eq!(e.resource.as_deref(), Some("Service default/bad"));
    assert_eq!(e.path.as_deref(), Some("spec.ports"));
}

#[test]
fn relist_replaces_at_once_and_keeps_last_good_of_malformed() {
    let mut ix = mk_index(vec![
        (
            Watched::Service,
            mk_service(
                "a",
                json!({"app": "a"}),
                json!([{"name": "http", "port": 80}]),
            ),
        ),
        (
            Watched::Service,
            mk_service(
                "b",
                json!({"app": "b"}),
                json!([{"name": "http", "port": 80}]),
            ),
        ),
    ]);
    // The relist: `a` gone, `b` now malformed, `c` new.
    let changed = ix.replace(
        Watched::Service,
        vec![
            dynamic(mk_service("b", json!({"app": "b"}), json!("broken"))),
            dynamic(mk_service(
                "c",
                json!({"app": "c"}),
                json!([{"name": "http", "port": 80}]),
            )),
        ],
    );
    assert!(changed);
    let built = build(&ix, &[]);
    let names: Vec<&str> = built.resources.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(names, vec!["svc:b", "svc:c"]);
    assert_eq!(built.errors.len(), 1);
    // The same list again changes nothing.
    assert!(!ix.replace(
        Watched::Service,
        vec![
            dynamic(mk_service("b", json!({"app": "b"}), json!("broken"))),
            dynamic(mk_service(
                "c",
                json!({"app": "c"}),
                json!([{"name": "http", "port": 80}])
            )),
        ],
    ));
}

#[test]
fn discovery_selectors_leave_out_other_namespaces() {
    let ns = |name: &str, labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
    let mut other = mk_service(
        "x",
        json!({"app": "x"}),
        json!([{"name": "http", "port": 80}]),
    );
    other["metadata"]["namespace"] = json!("other");
    let ix = mk_index(vec![
        (Watched::Namespace, ns("default", json!({"mesh": "on"}))),
        (Watched::Namespace, ns("other", json!({}))),
        (
            Watched::Service,
            mk_service(
                "a",
                json!({"app": "a"}),
                json!([{"name": "http", "port": 80}]),
            ),
        ),
        (Watched::Service, other),
    ]);
    let sel: LabelSelector = "mesh=on".parse().unwrap();
    let only: Vec<String> = build(&ix, &[sel])
        .resources
        .keys()
        .map(|k| k.namespace.clone())
        .collect();
    assert_eq!(only, vec!["default"]);
    assert_eq!(build(&ix, &[]).resources.len(), 2);
    assert!("mesh".parse::<LabelSelector>().is_err());
}

#[test]
fn a_pod_and_a_workload_entry_with_the_same_name_the_pod_wins_and_it_is_reported() {
    let ix = mk_index(vec![
        (
            Watched::Pod,
            mk_pod("vm-1", "10.0.0.1", json!({"app": "a"})),
        ),
        (
            Watched::Istio(crate::model::Kind::WorkloadEntry),
            json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                   "metadata": {"name": "vm-1", "namespace": "default"},
                   "spec": {"address": "192.168.0.1"}}),
        ),
    ]);
    let built = build(&ix, &[]);
    let reg = Registry::build(&ConfigSnapshot::new(built.resources));
    let w = reg.workloads.values().next().unwrap();
    assert_eq!(w.address, "10.0.0.1");
    assert_eq!(built.errors.len(), 1);
    assert!(built.errors[0].message.contains("WorkloadEntry"));
}

#[test]
fn export_to_annotation_values_as_istio_reads_them() {
    let list = |v: &str| convert::export_to(v);
    assert_eq!(list("").0, Vec::<String>::new());
    assert_eq!(list(" . , prod ,,*").0, vec![".", "prod", "*"]);
    assert!(list(". , prod").1.is_empty());
    assert_eq!(list("~").0, vec!["~"]);
    // Bad values are left out, each reported with the annotation's path.
    let (out, problems) = list("prod,Bad_NS,.,-x");
    assert_eq!(out, vec!["prod", "."]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(
        problems[0].path,
        "metadata.annotations[networking.istio.io/exportTo]"
    );
    assert!(problems[0].message.contains("\"Bad_NS\""), "{problems:?}");
    assert!(problems[1].message.contains("\"-x\""), "{problems:?}");
    // Nothing usable: Istio's default (visible everywhere).
    assert_eq!(list("Bad!").0, Vec::<String>::new());
    // `~` beside namespaces: visible nowhere, reported; `*` still wins.
    let (out, problems) = list("~,prod");
    assert_eq!(out, vec!["~"]);
    assert!(problems[0].message.contains("prod"), "{problems:?}");
    assert_eq!(list("~,*").0, vec!["~", "*"]);
    assert!(list("~,*").1.is_empty());
}

#[test]
fn a_service_export_to_annotation_becomes_the_service_entry_export_to() {
    let mut svc = mk_service(
        "reviews",
        json!({"app": "reviews"}),
        json!([{"name": "http", "port": 9080}]),
    );
    svc["metadata"]["annotations"] =
        json!({"networking.istio.io/exportTo": "., istio-system, NOT valid"});
    let built = build(&mk_index(vec![(Watched::Service, svc)]), &[]);
    let se = built
        .resources
        .values()
        .next()
        .expect("the Service is kept");
    let Spec::ServiceEntry(spec) = &se.spec else {
        panic!("{se:?}")
    };
    assert_eq!(spec.export_to, vec![".", "istio-system"]);
    assert_eq!(built.errors.len(), 1, "{:?}", built.errors);
    let e = &built.errors[0];
    assert_eq!(e.resource.as_deref(), Some("Service default/reviews"));
    assert_eq!(
        e.path.as_deref(),
        Some("metadata.annotations[networking.istio.io/exportTo]")
    );
    assert!(e.message.contains("\"NOT valid\""), "{}", e.message);
}

#[test]
fn a_kubernetes_service_takes_precedence_over_a_service_entry_for_its_host() {
    // The ServiceEntry comes first by name and is older; the Service still wins.
    let ix = mk_index(vec![
        (
            Watched::Service,
            mk_service(
                "reviews",
                json!({"app": "reviews"}),
                json!([{"name": "http", "port": 9080}]),
            ),
        ),
        (
            Watched::Istio(crate::model::Kind::ServiceEntry),
            json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                   "metadata": {"name": "a-squatter", "namespace": "default",
                                "creationTimestamp": "2020-01-01T00:00:00Z"},
                   "spec": {"hosts": ["reviews.default.svc.cluster.local"],
                            "ports": [{"number": 80, "name": "http"}],
                            "resolution": "STATIC",
                            "endpoints": [{"address": "192.0.2.1"}]}}),
        ),
    ]);
    let built = build(&ix, &[]);
    let reg = Registry::build(&ConfigSnapshot::new(built.resources));
    let svc = &reg.services["reviews.default.svc.cluster.local"];
    assert_eq!(svc.source, "default/svc:reviews");
    assert!(svc.from_kubernetes());
    assert_eq!(svc.ports[0].number, 9080);
    assert_eq!(reg.warnings.len(), 1, "{:?}", reg.warnings);
    assert!(
        reg.warnings[0].contains("default/a-squatter")
            && reg.warnings[0].contains("a Kubernetes Service takes precedence"),
        "{:?}",
        reg.warnings
    );
}
