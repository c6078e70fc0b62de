use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::config::parse_file;
use crate::model::ConfigSnapshot;
use crate::xds::cache::ProxyResources;

const MESH: &str = include_str!("../../../../examples/bookinfo/mesh/services.yaml");
const WORKLOADS: &str = include_str!("../../../../examples/bookinfo/mesh/workloads.yaml");
const DR: &str = include_str!("../../../../examples/bookinfo/routing/destination-rule-all.yaml");
const VS: &str = include_str!("../../../../examples/bookinfo/routing/virtual-service-all-v1.yaml");

/// reviews may only call ratings.
const REVIEWS_SIDECAR: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector:
    labels: {app: reviews}
  egress:
  - hosts: [\"./ratings.default.svc.cluster.local\"]
";

fn mk_snapshot(files: &[&str]) -> (ConfigSnapshot, Arc<Registry>) {
    let mut snap = ConfigSnapshot::default();
    for (i, text) in files.iter().enumerate() {
        let parsed = parse_file(std::path::Path::new(&format!("f{i}.yaml")), text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        for r in parsed.resources {
            snap.resources.insert(r.key(), Arc::new(r));
        }
    }
    let reg = Arc::new(Registry::build(&snap));
    (snap, reg)
}

fn mk_key(ns: &str, name: &str) -> WorkloadKey {
    WorkloadKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn names(p: &ProxyResources, t: XdsType) -> BTreeSet<String> {
    p.all(t).map(|e| e.name.to_string()).collect()
}

fn build(snap: &ConfigSnapshot, reg: &Arc<Registry>, prev: &XdsSnapshot) -> XdsSnapshot {
    XdsSnapshot::build(prev, snap, reg, "cluster.local", true)
}

#[test]
fn a_sidecar_narrows_its_view_and_shares_the_encoded_bytes() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, DR, VS, REVIEWS_SIDECAR]);
    let xds = build(&snap, &reg, &XdsSnapshot::default());
    let product = xds
        .resources_for(&mk_key("default", "productpage-v1"))
        .unwrap();
    let v1 = xds.resources_for(&mk_key("default", "reviews-v1")).unwrap();
    let v2 = xds.resources_for(&mk_key("default", "reviews-v2")).unwrap();

    // productpage has no Sidecar: the mesh-wide layers themselves.
    assert!(Arc::ptr_eq(&product.layers[0][0], &xds.clusters));
    assert!(Arc::ptr_eq(&product.layers[1][0], &xds.endpoints));
    // Both reviews share one narrowed view.
    for t in [XdsType::Cluster, XdsType::Endpoint, XdsType::Route] {
        assert!(Arc::ptr_eq(
            &v1.layers[t.index()][0],
            &v2.layers[t.index()][0]
        ));
        assert!(!Arc::ptr_eq(
            &v1.layers[t.index()][0],
            &product.layers[t.index()][0]
        ));
    }

    // The narrowed view is exactly what translation gives for its scope ...
    let mesh = Mesh::new(&snap, &reg).with_mtls(true);
    let w = &reg.workloads[&mk_key("default", "reviews-v1")];
    let choice = select_sidecar(&snap, "default", &w.labels);
    let scope = Scope::new(&snap, &reg, "default", choice.sidecar);
    let scoped = mesh.with_scope(&scope);
    let expected: BTreeSet<String> = clusters::outbound(&scoped)
        .into_iter()
        .map(|c| c.name)
        .collect();
    let view = &v1.layers[XdsType::Cluster.index()][0];
    assert_eq!(
        view.resources.keys().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    assert!(
        expected
            .iter()
            .filter(|n| !n.ends_with("Cluster")) // PassthroughCluster, BlackHoleCluster
            .all(|n| n.ends_with("|ratings.default.svc.cluster.local"))
    );
    assert!(expected.contains("outbound|9080|v1|ratings.default.svc.cluster.local"));
    // ... made of the mesh-wide layer's encoded resources, not new copies.
    for (name, enc) in &view.resources {
        assert!(Arc::ptr_eq(enc, &xds.clusters.resources[name]), "{name}");
    }
    let eds = names(&v1, XdsType::Endpoint);
    assert!(
        eds.iter()
            .all(|n| n.ends_with("|ratings.default.svc.cluster.local"))
    );
    assert!(!eds.is_empty());

    // The route table has a virtual host for ratings only.
    let routes = names(&v1, XdsType::Route);
    assert_eq!(routes, BTreeSet::from(["outbound".to_string()]));
    let rc = egress::outbound_routes(
        &scoped,
        "default",
        crate::model::istio::OutboundMode::AllowAny.into(),
    );
    let vhosts: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    // ... and the catch-all (outboundTrafficPolicy ALLOW_ANY).
    assert_eq!(
        vhosts,
        ["ratings.default.svc.cluster.local:9080", "allow_any"]
    );
    let enc = v1.get(XdsType::Route, "outbound").unwrap();
    let own = Encoded::new(XdsType::Route.type_url(), "outbound", &rc);
    assert_eq!(enc.version, own.version);

    // Rebuilding from the same config keeps every layer's identity.
    let again = build(&snap, &reg, &xds);
    let v1b = again
        .resources_for(&mk_key("default", "reviews-v1"))
        .unwrap();
    for t in XdsType::PUSH_ORDER {
        assert!(v1.same_layers(&v1b, t), "{t:?} rebuilt");
    }
}

#[test]
fn without_sidecars_every_namespace_shares_the_mesh_wide_layers() {
    let other = WORKLOADS.replace("namespace: default", "namespace: other");
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, &other, DR, VS]);
    let xds = build(&snap, &reg, &XdsSnapshot::default());
    let a = xds.resources_for(&mk_key("default", "reviews-v1")).unwrap();
    let b = xds.resources_for(&mk_key("other", "reviews-v1")).unwrap();
    assert!(Arc::ptr_eq(&a.layers[0][0], &b.layers[0][0]));
    assert!(Arc::ptr_eq(&a.layers[1][0], &b.layers[1][0]));
    // Route tables differ by namespace (short names are the client's).
    assert!(!Arc::ptr_eq(&a.layers[3][0], &b.layers[3][0]));
}

#[test]
fn a_destination_rule_of_the_client_namespace_is_translated_for_its_view_only() {
    let other = WORKLOADS.replace("namespace: default", "namespace: other");
    // `other` has its own rule for ratings: no subsets, RANDOM.
    let local_dr = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-local, namespace: other}
spec:
  host: ratings.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
";
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, &other, DR, VS, local_dr]);
    let xds = build(&snap, &reg, &XdsSnapshot::default());
    let home = xds.resources_for(&mk_key("default", "reviews-v1")).unwrap();
    let away = xds.resources_for(&mk_key("other", "reviews-v1")).unwrap();
    // default keeps the mesh-wide view (bookinfo's rule, with subsets).
    assert!(Arc::ptr_eq(&home.layers[0][0], &xds.clusters));
    assert!(
        names(&home, XdsType::Cluster)
            .contains("outbound|9080|v1|ratings.default.svc.cluster.local")
    );
    let away_names = names(&away, XdsType::Cluster);
    assert!(!away_names.contains("outbound|9080|v1|ratings.default.svc.cluster.local"));
    let plain = "outbound|9080||ratings.default.svc.cluster.local";
    let (h, a) = (
        home.get(XdsType::Cluster, plain).unwrap(),
        away.get(XdsType::Cluster, plain).unwrap(),
    );
    assert_ne!(h.version, a.version, "other's rule applies to other only");
    // Services the local rule does not cover still share the mesh-wide bytes.
    let reviews = "outbound|9080|v1|reviews.default.svc.cluster.local";
    assert!(Arc::ptr_eq(
        home.get(XdsType::Cluster, reviews).unwrap(),
        away.get(XdsType::Cluster, reviews).unwrap()
    ));
}

#[test]
fn exported_to_one_namespace_is_invisible_elsewhere() {
    let other = WORKLOADS.replace("namespace: default", "namespace: other");
    let private = MESH.replacen("spec:\n", "spec:\n  exportTo: [\".\"]\n", 1);
    let (snap, reg) = mk_snapshot(&[&private, WORKLOADS, &other]);
    let xds = build(&snap, &reg, &XdsSnapshot::default());
    let first = reg
        .services
        .values()
        .find(|s| s.source.ends_with("/productpage"))
        .map(|s| s.hostname.clone())
        .unwrap();
    let home = xds.resources_for(&mk_key("default", "reviews-v1")).unwrap();
    let away = xds.resources_for(&mk_key("other", "reviews-v1")).unwrap();
    let has = |p: &ProxyResources| {
        names(p, XdsType::Cluster)
            .iter()
            .any(|n| n.ends_with(&format!("|{first}")))
    };
    assert!(has(&home));
    assert!(!has(&away));
}

/// Config bytes per proxy (sum of the encoded resources it is sent, per
/// type) in a generated mesh, without and with Istio's recommended
/// namespace-local default Sidecar. Prints the figures (`--nocapture`).
#[test]
fn config_bytes_per_proxy_shrink_with_a_sidecar() {
    use crate::loadgen::scenario::{ScenarioParams, generate};
    const SERVICES: usize = 200;
    const NAMESPACES: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let params = ScenarioParams {
        services: SERVICES,
        endpoints: 2,
        namespaces: NAMESPACES,
        routes: SERVICES / 2,
    };
    let files = generate(dir.path(), params).unwrap();
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let root_default = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress:
  - hosts: [\"./*\", \"istio-system/*\"]
";
    let sizes = |extra: &[&str]| {
        let mut all: Vec<&str> = texts.iter().map(String::as_str).collect();
        all.extend(extra);
        let (snap, reg) = mk_snapshot(&all);
        let xds = build(&snap, &reg, &XdsSnapshot::default());
        let key = reg.workloads.keys().next().unwrap().clone();
        let p = xds.resources_for(&key).unwrap();
        let per_type: Vec<(XdsType, usize)> = [
            XdsType::Cluster,
            XdsType::Endpoint,
            XdsType::Listener,
            XdsType::Route,
        ]
        .into_iter()
        .map(|t| (t, p.all(t).map(|e| e.size()).sum()))
        .collect();
        (key, per_type)
    };
    let (key, without) = sizes(&[]);
    let (_, with) = sizes(&[root_default]);
    let total = |v: &[(XdsType, usize)]| v.iter().map(|(_, n)| n).sum::<usize>();
    println!(
        "config bytes of proxy {key} ({SERVICES} services in {NAMESPACES} namespaces, 2 endpoints each):"
    );
    for ((t, a), (_, b)) in without.iter().zip(&with) {
        println!("  {t:?}: {a} bytes without a Sidecar, {b} with `./*`");
    }
    println!(
        "  total: {} bytes without, {} with",
        total(&without),
        total(&with)
    );
    assert!(
        total(&with) * 3 < total(&without),
        "{without:?} vs {with:?}"
    );
}

#[test]
fn source_labels_split_route_tables_only_for_the_clients_they_match() {
    let vs = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceLabels: {app: productpage}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
";
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, DR, vs]);
    let xds = build(&snap, &reg, &XdsSnapshot::default());
    let routes = |w: &str| {
        let r = xds.resources_for(&mk_key("default", w)).unwrap();
        Arc::clone(&r.layers[XdsType::Route.index()][0])
    };
    let table = |w: &str| {
        let layer = routes(w);
        let enc = layer.resources.get("outbound").unwrap();
        use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
        use prost::Message;
        let resp = DiscoveryResponse::decode(enc.sotw.as_ref()).unwrap();
        let rc = RouteConfiguration::decode(resp.resources[0].value.as_slice()).unwrap();
        let vh = rc
            .virtual_hosts
            .into_iter()
            .find(|v| v.name == "reviews.default.svc.cluster.local:9080")
            .unwrap();
        format!("{:?}", vh.routes)
    };
    // productpage satisfies the sourceLabels rule: its table routes to v2
    // first; every other workload's table only has the v1 rule.
    assert!(table("productpage-v1").contains("outbound|9080|v2|reviews"));
    assert!(!table("details-v1").contains("outbound|9080|v2|reviews"));
    assert!(table("details-v1").contains("outbound|9080|v1|reviews"));
    assert!(!Arc::ptr_eq(
        &routes("productpage-v1"),
        &routes("details-v1")
    ));
    // Workloads with the same outcome still share one encoded table.
    assert!(Arc::ptr_eq(&routes("details-v1"), &routes("ratings-v1")));
    assert!(Arc::ptr_eq(&routes("reviews-v1"), &routes("ratings-v1")));
}
