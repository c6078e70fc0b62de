use std::sync::Arc;

use super::*;
use crate::config::parse_file;
use crate::model::{ConfigSnapshot, Registry, WorkloadKey};

const MESH: &str = include_str!("../../../examples/bookinfo/mesh/services.yaml");
const WORKLOADS: &str = include_str!("../../../examples/bookinfo/mesh/workloads.yaml");
const DR: &str = include_str!("../../../examples/bookinfo/routing/destination-rule-all.yaml");
const VS: &str = include_str!("../../../examples/bookinfo/routing/virtual-service-all-v1.yaml");

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

fn mk_key(name: &str) -> WorkloadKey {
    WorkloadKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

#[test]
fn proxies_share_layers_and_unchanged_layers_keep_identity() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, DR, VS]);
    let first = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    assert_eq!(first.generation, 1);
    let a = first.resources_for(&mk_key("reviews-v1")).unwrap();
    let b = first.resources_for(&mk_key("ratings-v1")).unwrap();
    // Mesh-wide clusters, endpoints and the namespace's routes are one allocation.
    assert!(Arc::ptr_eq(&a.layers[0][0], &b.layers[0][0]));
    assert!(Arc::ptr_eq(&a.layers[1][0], &b.layers[1][0]));
    assert!(Arc::ptr_eq(&a.layers[3][0], &b.layers[3][0]));
    // Listeners are the workload's own.
    assert!(!Arc::ptr_eq(&a.layers[2][0], &b.layers[2][0]));

    // Rebuilding from the same config changes nothing.
    let second = XdsSnapshot::build(&first, &snap, &reg, "cluster.local", false);
    let a2 = second.resources_for(&mk_key("reviews-v1")).unwrap();
    for t in XdsType::PUSH_ORDER {
        assert!(a.same_layers(&a2, t), "{t:?} rebuilt");
    }
}

#[test]
fn an_endpoint_change_touches_only_endpoints_and_that_workload() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, DR, VS]);
    let first = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    let moved = WORKLOADS.replace("address: 127.0.0.16", "address: 127.0.0.99");
    let (snap2, reg2) = mk_snapshot(&[MESH, &moved, DR, VS]);
    let second = XdsSnapshot::build(&first, &snap2, &reg2, "cluster.local", false);
    let before = first.resources_for(&mk_key("reviews-v1")).unwrap();
    let after = second.resources_for(&mk_key("reviews-v1")).unwrap();
    assert!(before.same_layers(&after, XdsType::Cluster));
    assert!(!before.same_layers(&after, XdsType::Endpoint));
    assert!(before.same_layers(&after, XdsType::Listener));
    assert!(before.same_layers(&after, XdsType::Route));
    let ratings = second.resources_for(&mk_key("ratings-v1")).unwrap();
    let lds = &ratings.layers[XdsType::Listener.index()][0];
    assert!(lds.resources.contains_key("127.0.0.99_9080"));
}

#[test]
fn a_routing_change_touches_only_routes() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, DR, VS]);
    let first = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    let (snap2, reg2) = mk_snapshot(&[MESH, WORKLOADS, DR, &VS.replace("subset: v1\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings", "subset: v2\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings")]);
    let second = XdsSnapshot::build(&first, &snap2, &reg2, "cluster.local", false);
    let before = first.resources_for(&mk_key("productpage-v1")).unwrap();
    let after = second.resources_for(&mk_key("productpage-v1")).unwrap();
    assert!(before.same_layers(&after, XdsType::Cluster));
    assert!(before.same_layers(&after, XdsType::Endpoint));
    assert!(before.same_layers(&after, XdsType::Listener));
    assert!(!before.same_layers(&after, XdsType::Route));
}

#[test]
fn unknown_workload_has_no_resources() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS]);
    let s = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    assert!(s.resources_for(&mk_key("ghost")).is_none());
}

#[test]
fn a_peer_authentication_change_rebuilds_the_workloads_listeners() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS]);
    let first = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", true);
    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mtls: {mode: STRICT}}\n";
    let (snap2, reg2) = mk_snapshot(&[MESH, WORKLOADS, strict]);
    let second = XdsSnapshot::build(&first, &snap2, &reg2, "cluster.local", true);
    let before = first.resources_for(&mk_key("reviews-v1")).unwrap();
    let after = second.resources_for(&mk_key("reviews-v1")).unwrap();
    assert!(!before.same_layers(&after, XdsType::Listener));
    assert!(before.same_layers(&after, XdsType::Cluster));
}

const GATEWAY_WORKLOADS: &str = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: gw-a}\nspec: {address: 127.0.0.30, labels: {istio: ingressgateway}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: gw-b}\nspec: {address: 127.0.0.31, labels: {istio: ingressgateway}}\n";
const GATEWAY: &str = include_str!("../../../examples/bookinfo/routing/bookinfo-gateway.yaml");

#[test]
fn gateway_proxies_get_gateway_layers_and_sidecars_do_not() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, DR, VS, GATEWAY_WORKLOADS, GATEWAY]);
    let built = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    let a = built.resources_for(&mk_key("gw-a")).unwrap();
    let b = built.resources_for(&mk_key("gw-b")).unwrap();
    let sidecar = built.resources_for(&mk_key("productpage-v1")).unwrap();
    let names = |r: &ProxyResources, t: XdsType| -> Vec<String> {
        r.all(t).map(|e| e.name.to_string()).collect()
    };
    assert_eq!(names(&a, XdsType::Listener), ["127.0.0.30_8080"]);
    assert_eq!(names(&b, XdsType::Listener), ["127.0.0.31_8080"]);
    assert_eq!(names(&a, XdsType::Route), ["http.8080"]);
    assert_eq!(names(&sidecar, XdsType::Route), ["outbound"]);
    // Replicas of one gateway share their route tables and the mesh's clusters.
    assert!(Arc::ptr_eq(&a.layers[3][0], &b.layers[3][0]));
    assert!(Arc::ptr_eq(&a.layers[0][0], &sidecar.layers[0][0]));
    assert_eq!(a.layers[0].len(), 1, "no inbound clusters on a gateway");
    // The sidecar's route table has no gateway-only virtual host.
    let rc = sidecar.get(XdsType::Route, "outbound").unwrap();
    assert!(!String::from_utf8_lossy(&rc.sotw).contains("\"*\""));

    // Unchanged config: the same layers.
    let again = XdsSnapshot::build(&built, &snap, &reg, "cluster.local", false);
    let a2 = again.resources_for(&mk_key("gw-a")).unwrap();
    for t in XdsType::PUSH_ORDER {
        assert!(a.same_layers(&a2, t), "{t:?} rebuilt");
    }
    // Without the Gateway, the workload is an ordinary sidecar again.
    let (plain, reg2) = mk_snapshot(&[MESH, WORKLOADS, DR, VS, GATEWAY_WORKLOADS]);
    let plain = XdsSnapshot::build(&again, &plain, &reg2, "cluster.local", false);
    let a3 = plain.resources_for(&mk_key("gw-a")).unwrap();
    assert_eq!(names(&a3, XdsType::Listener), ["127.0.0.30_15001"]);
}

const REVIEWS_POLICY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}]
  - from: [{source: {namespaces: [default]}}]
    to: [{operation: {methods: [GET]}}]
";

const JWT_POLICY: &str = "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  jwtRules:
  - {issuer: a@example.com, jwks: '{\"keys\":[]}'}
  - {issuer: b@example.com, jwks: '{\"keys\":[]}'}
";

#[test]
fn an_authorization_policy_change_rebuilds_only_the_selected_workloads() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS]);
    let first = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", true);
    let (snap2, reg2) = mk_snapshot(&[MESH, WORKLOADS, REVIEWS_POLICY]);
    let second = XdsSnapshot::build(&first, &snap2, &reg2, "cluster.local", true);
    for (name, selected) in [
        ("reviews-v1", true),
        ("reviews-v3", true),
        ("productpage-v1", false),
        ("ratings-v1", false),
    ] {
        let before = first.resources_for(&mk_key(name)).unwrap();
        let after = second.resources_for(&mk_key(name)).unwrap();
        assert_eq!(
            !before.same_layers(&after, XdsType::Listener),
            selected,
            "{name}"
        );
        assert!(before.same_layers(&after, XdsType::Cluster), "{name}");
    }
    // Editing the policy rebuilds them again; removing it restores the first encoding.
    let edited = REVIEWS_POLICY.replace("[GET]", "[GET, HEAD]");
    let (snap3, reg3) = mk_snapshot(&[MESH, WORKLOADS, &edited]);
    let third = XdsSnapshot::build(&second, &snap3, &reg3, "cluster.local", true);
    let r2 = second.resources_for(&mk_key("reviews-v2")).unwrap();
    let r3 = third.resources_for(&mk_key("reviews-v2")).unwrap();
    assert!(!r2.same_layers(&r3, XdsType::Listener));
    let fourth = XdsSnapshot::build(&third, &snap, &reg, "cluster.local", true);
    let key = mk_key("reviews-v2");
    assert_eq!(
        fourth.workloads[&key].listeners.version,
        first.workloads[&key].listeners.version
    );
}

#[test]
fn policies_with_several_entries_encode_the_same_every_time() {
    // RBAC policies and JWT providers are protobuf maps: a HashMap would
    // encode in a different order on each translation.
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, REVIEWS_POLICY, JWT_POLICY]);
    let key = mk_key("reviews-v1");
    let versions: std::collections::BTreeSet<u64> = (0..8)
        .map(|_| {
            let s = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", true);
            s.workloads[&key].listeners.version
        })
        .collect();
    assert_eq!(versions.len(), 1);
}

#[test]
fn a_mesh_wide_request_authentication_rebuilds_every_workload() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS]);
    let first = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", true);
    let (snap2, reg2) = mk_snapshot(&[MESH, WORKLOADS, JWT_POLICY]);
    let second = XdsSnapshot::build(&first, &snap2, &reg2, "cluster.local", true);
    for key in reg.workloads.keys() {
        let before = first.resources_for(key).unwrap();
        let after = second.resources_for(key).unwrap();
        assert!(!before.same_layers(&after, XdsType::Listener), "{key}");
    }
}

#[test]
fn locality_balanced_endpoints_are_one_layer_per_client_locality() {
    // Without locality load balancing, every proxy has the shared layer only.
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, DR, VS]);
    let plain = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    assert!(plain.locality_endpoints.layers.is_empty());
    let a = plain.resources_for(&mk_key("productpage-v1")).unwrap();
    assert_eq!(a.layers[XdsType::Endpoint.index()].len(), 1);

    // productpage and details in region1/zone1, reviews spread, ratings in
    // region2; reviews' DestinationRule has outlier detection.
    let mut located = WORKLOADS.to_string();
    for (address, locality) in [
        ("127.0.0.11", "region1/zone1"),
        ("127.0.0.12", "region1/zone1"),
        ("127.0.0.13", "region1/zone1"),
        ("127.0.0.14", "region2/zone1"),
        ("127.0.0.16", "region2/zone1"),
    ] {
        located = located.replace(
            &format!("  address: {address}\n"),
            &format!("  address: {address}\n  locality: {locality}\n"),
        );
    }
    let dr = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-od}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
";
    let (snap, reg) = mk_snapshot(&[MESH, &located, dr]);
    let first = XdsSnapshot::build(&plain, &snap, &reg, "cluster.local", false);
    let eds = |s: &XdsSnapshot, w: &str| s.resources_for(&mk_key(w)).unwrap().layers[1].clone();
    let (pp, details, ratings) = (
        eds(&first, "productpage-v1"),
        eds(&first, "details-v1"),
        eds(&first, "ratings-v1"),
    );
    // The shared layer, plus one per client locality (region1/zone1,
    // region2/zone1, and none for reviews-v3): proxies in one locality share it.
    assert_eq!(first.locality_endpoints.layers.len(), 3);
    assert_eq!(pp.len(), 2);
    assert!(Arc::ptr_eq(&pp[0], &ratings[0]));
    assert!(Arc::ptr_eq(&pp[1], &details[1]));
    assert!(!Arc::ptr_eq(&pp[1], &ratings[1]));
    // reviews' cluster moved out of the shared layer into the per-client ones.
    let reviews = "outbound|9080||reviews.default.svc.cluster.local";
    assert!(!pp[0].resources.contains_key(reviews));
    assert!(pp[1].resources.contains_key(reviews));
    assert!(
        pp[0]
            .resources
            .contains_key("outbound|9080||ratings.default.svc.cluster.local")
    );

    // Rebuilding keeps every layer's identity.
    let second = XdsSnapshot::build(&first, &snap, &reg, "cluster.local", false);
    let pp2 = eds(&second, "productpage-v1");
    assert!(Arc::ptr_eq(&pp[0], &pp2[0]) && Arc::ptr_eq(&pp[1], &pp2[1]));
}

#[test]
fn route_tables_follow_each_sidecars_outbound_policy() {
    let sidecar = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-registry-only, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, sidecar]);
    let s = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    let routes = |name: &str| Arc::clone(&s.outbound_of(&mk_key(name)).unwrap().routes);
    // reviews' three versions share the REGISTRY_ONLY table; the rest the ALLOW_ANY one.
    assert!(Arc::ptr_eq(&routes("reviews-v1"), &routes("reviews-v3")));
    assert!(Arc::ptr_eq(&routes("details-v1"), &routes("ratings-v1")));
    assert!(!Arc::ptr_eq(&routes("reviews-v1"), &routes("details-v1")));
    let served = s.resources_for(&mk_key("reviews-v2")).unwrap();
    assert!(Arc::ptr_eq(
        &served.layers[XdsType::Route.index()][0],
        &routes("reviews-v2")
    ));
    // Without the Sidecar, the mesh-wide policy decides alone.
    let (snap2, reg2) = mk_snapshot(&[MESH, WORKLOADS]);
    let s2 = XdsSnapshot::build(&s, &snap2, &reg2, "cluster.local", false);
    let routes2 = |name: &str| Arc::clone(&s2.outbound_of(&mk_key(name)).unwrap().routes);
    assert!(Arc::ptr_eq(&routes2("reviews-v1"), &routes2("details-v1")));
    assert!(Arc::ptr_eq(&routes2("details-v1"), &routes("details-v1")));
}

#[test]
fn sidecars_want_the_credentials_of_their_namespaces_destination_rules() {
    let dr = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: external, namespace: default}
spec:
  host: api.example.com
  trafficPolicy: {tls: {mode: SIMPLE, credentialName: api-ca}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: elsewhere, namespace: other}
spec:
  host: other.example.com
  trafficPolicy: {tls: {mode: MUTUAL, credentialName: other-client}}
";
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, dr]);
    let mut s = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    s.config = Arc::new(crate::config::ConfigState {
        snapshot: snap.clone(),
        ..Default::default()
    });
    let wants = s.credential_wants();
    assert_eq!(
        wants[&mk_key("productpage-v1")].iter().collect::<Vec<_>>(),
        ["api-ca"]
    );
    assert!(wants.values().all(|w| !w.contains("other-client")));
}

/// A Sidecar with `ingress` for ratings, forwarding its port to `endpoint`.
fn mk_ratings_ingress(endpoint: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: ratings}}\nspec:\n  workloadSelector: {{labels: {{app: ratings}}}}\n  ingress:\n  - port: {{number: 9080, protocol: HTTP, name: http}}\n    defaultEndpoint: {endpoint}\n"
    )
}

#[test]
fn an_ingress_sidecar_rebuilds_only_the_workloads_it_selects() {
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS]);
    let first = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", true);
    let ingress = mk_ratings_ingress("127.0.0.1:8080");
    let (snap2, reg2) = mk_snapshot(&[MESH, WORKLOADS, &ingress]);
    let second = XdsSnapshot::build(&first, &snap2, &reg2, "cluster.local", true);
    // Proxies the Sidecar does not select keep every layer.
    let before = first.resources_for(&mk_key("reviews-v1")).unwrap();
    let after = second.resources_for(&mk_key("reviews-v1")).unwrap();
    for t in XdsType::PUSH_ORDER {
        assert!(
            before.same_layers(&after, t),
            "{t:?} rebuilt for reviews-v1"
        );
    }
    // ratings' inbound cluster now goes to the defaultEndpoint.
    let inbound =
        |s: &XdsSnapshot| Arc::clone(&s.workloads.get(&mk_key("ratings-v1")).unwrap().clusters);
    assert!(!Arc::ptr_eq(&inbound(&first), &inbound(&second)));
    let mesh = crate::xds::translate::Mesh::new(&snap2, &reg2).with_mtls(true);
    let ratings = reg2.workloads.get(&mk_key("ratings-v1")).unwrap();
    let expected = crate::xds::translate::clusters::inbound(&mesh, ratings);
    let expected = Encoded::new(XdsType::Cluster.type_url(), "inbound|9080||", &expected[0]);
    assert_eq!(
        inbound(&second).resources["inbound|9080||"].version,
        expected.version
    );

    // Another defaultEndpoint: a new cluster, the same listener.
    let moved = mk_ratings_ingress("127.0.0.1:8081");
    let (snap3, reg3) = mk_snapshot(&[MESH, WORKLOADS, &moved]);
    let third = XdsSnapshot::build(&second, &snap3, &reg3, "cluster.local", true);
    assert!(!Arc::ptr_eq(&inbound(&second), &inbound(&third)));
    let lds = |s: &XdsSnapshot| {
        let l = &s.workloads.get(&mk_key("ratings-v1")).unwrap().listeners;
        l.resources.get("127.0.0.16_9080").unwrap().version.clone()
    };
    assert_eq!(lds(&second), lds(&third));
}

#[test]
fn locality_balanced_dns_clusters_are_one_layer_per_view_and_client() {
    // Without a DNS service with localities, no proxy gets an extra layer.
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, DR, VS]);
    let plain = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    assert!(plain.views.dns_clusters.of.is_empty());
    let cds = |s: &XdsSnapshot, w: &str| s.resources_for(&mk_key(w)).unwrap().layers[0].clone();
    assert_eq!(cds(&plain, "productpage-v1").len(), 2);

    // productpage, reviews-v1 and details in region1/zone1, ratings in
    // region2/zone1; a DNS service with an endpoint in each and outlier
    // detection; details' Sidecar does not import it.
    let mut located = WORKLOADS.to_string();
    for (address, locality) in [
        ("127.0.0.11", "region1/zone1"),
        ("127.0.0.12", "region1/zone1"),
        ("127.0.0.13", "region1/zone1"),
        ("127.0.0.16", "region2/zone1"),
    ] {
        located = located.replace(
            &format!("  address: {address}\n"),
            &format!("  address: {address}\n  locality: {locality}\n"),
        );
    }
    let ext = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [ext.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: one.example.com, locality: region1/zone1}
  - {address: two.example.com, locality: region2/zone1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: default}
spec:
  host: ext.example.com
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: details, namespace: default}
spec:
  workloadSelector: {labels: {app: details}}
  egress:
  - hosts: [./ratings.default.svc.cluster.local]
";
    let (snap, reg) = mk_snapshot(&[MESH, &located, ext]);
    let first = XdsSnapshot::build(&plain, &snap, &reg, "cluster.local", false);
    let name = "outbound|80||ext.example.com";
    let (pp, reviews, ratings, details) = (
        cds(&first, "productpage-v1"),
        cds(&first, "reviews-v1"),
        cds(&first, "ratings-v1"),
        cds(&first, "details-v1"),
    );
    // The view's shared clusters no longer hold it; each client's layer does.
    assert!(!pp[0].resources.contains_key(name));
    assert_eq!(pp.len(), 3);
    assert!(pp[2].resources.contains_key(name));
    assert_eq!(pp[2].resources.len(), 1, "only the DNS cluster");
    // Same view and locality: one layer; another locality: another one.
    assert!(Arc::ptr_eq(&pp[2], &reviews[2]));
    assert!(!Arc::ptr_eq(&pp[2], &ratings[2]));
    // A view that does not see the service gets no extra layer.
    assert_eq!(details.len(), 2);
    assert!(!details.iter().any(|l| l.resources.contains_key(name)));
    // The priorities are the client's: its own locality first.
    let priorities = |layer: &Layer| {
        let enc = &layer.resources[name];
        let any = envoy_types::pb::google::protobuf::Any::decode(enc.any()).unwrap();
        let c = envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(&*any.value).unwrap();
        c.load_assignment
            .unwrap()
            .endpoints
            .iter()
            .map(|g| (g.locality.clone().unwrap().region, g.priority))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        priorities(&pp[2]),
        [("region1".into(), 0), ("region2".into(), 1)]
    );
    assert_eq!(
        priorities(&ratings[2]),
        [("region1".into(), 1), ("region2".into(), 0)]
    );

    // Rebuilding keeps every layer's identity.
    let second = XdsSnapshot::build(&first, &snap, &reg, "cluster.local", false);
    let pp2 = cds(&second, "productpage-v1");
    assert!(pp.iter().zip(&pp2).all(|(a, b)| Arc::ptr_eq(a, b)));

    // An endpoint of the DNS service changes: the client's layer is
    // replaced with a diff from the one its proxy had; the shared clusters
    // stay as they were.
    let moved = ext.replace("two.example.com", "three.example.com");
    let (snap3, reg3) = mk_snapshot(&[MESH, &located, &moved]);
    let third = XdsSnapshot::build(&second, &snap3, &reg3, "cluster.local", false);
    let pp3 = cds(&third, "productpage-v1");
    assert!(Arc::ptr_eq(&pp[0], &pp3[0]));
    assert!(!Arc::ptr_eq(&pp[2], &pp3[2]));
    let diff = pp3[2].diff.as_ref().expect("a diff");
    assert_eq!(diff.from, pp[2].version);
    assert_eq!(&*diff.changed[0].name, name);
}

#[test]
fn gateways_want_the_credentials_of_the_destination_rules_they_use() {
    let extra = "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: istio-egressgateway, namespace: istio-system}
spec:
  address: 127.0.0.40
  labels: {istio: egressgateway}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [api.example.com]
    tls: {mode: SIMPLE, credentialName: server-cert}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: istio-system}
spec:
  host: api.example.com
  exportTo: [.]
  trafficPolicy: {tls: {mode: MUTUAL, credentialName: api-client}}
";
    let (snap, reg) = mk_snapshot(&[MESH, WORKLOADS, extra]);
    let mut s = XdsSnapshot::build(&XdsSnapshot::default(), &snap, &reg, "cluster.local", false);
    s.config = Arc::new(crate::config::ConfigState {
        snapshot: snap.clone(),
        ..Default::default()
    });
    let wants = s.credential_wants();
    let gw = WorkloadKey {
        namespace: "istio-system".into(),
        name: "istio-egressgateway".into(),
    };
    // Its server's credential and the one its DestinationRule originates with.
    assert_eq!(
        wants[&gw].iter().collect::<Vec<_>>(),
        ["api-client", "server-cert"]
    );
    // The rule is exported to istio-system only: no sidecar wants its credential.
    assert!(!wants.contains_key(&mk_key("productpage-v1")));
}
