//! Sidecars' outbound TCP/TLS listeners (`translate::outbound_tcp`, and
//! Sidecar egress listeners with a port): one template per view, shared by
//! the sidecars that see the same thing (the key is the Sidecar scope,
//! namespace and Sidecar, plus the outcome of source-dependent matches), then
//! bound to each workload's address in a layer of its own, so a sidecar's
//! other listeners do not depend on every service.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::scope::Views;
use super::{Layer, XdsSnapshot};
use crate::config::ConfigError;
use crate::model::istio::SidecarSpec;
use crate::model::{Kind, Resource, ResourceKey, Spec, WorkloadKey};
use crate::xds::translate::outbound_tcp::{self, Source, Template};
use crate::xds::translate::scope::{Scope, ScopeKey};
use crate::xds::translate::{Mesh, gateway};
use crate::xds::types::XdsType;

/// One sidecar's outbound TCP/TLS listeners.
#[derive(Clone, Debug, Default)]
pub struct BoundLayer {
    /// Hash of what binding used (template version, address, inbound ports).
    pub input: u64,
    pub listeners: Arc<Layer>,
}

/// The templates by view key, and every sidecar's bound layer, reusing
/// `prev`'s where their inputs did not change. `views` gives each
/// workload's Sidecar scope (`cache/scope.rs`); a template is translated
/// once per scope and outcome of source-dependent matches.
pub(super) fn build(
    prev: &XdsSnapshot,
    mesh: &Mesh<'_>,
    views: &Views,
) -> (
    HashMap<ScopeKey, Arc<Template>>,
    HashMap<WorkloadKey, BoundLayer>,
) {
    let mut templates: HashMap<ScopeKey, Arc<Template>> = HashMap::new();
    // The Sidecar scopes, once each (several templates may share one).
    let mut scopes: HashMap<(String, Option<String>), Scope<'_>> = HashMap::new();
    let mut bound = HashMap::new();
    let matches = outbound_tcp::SourceMatches::of(mesh.config);
    for (key, w) in &mesh.registry.workloads {
        if gateway::is_gateway(mesh, w) {
            continue;
        }
        let sidecar = views
            .of
            .get(key)
            .and_then(|v| v.sidecar.as_deref())
            .and_then(|name| sidecar_named(mesh, name));
        let view = outbound_tcp::view_key(mesh, w, sidecar, &matches);
        let t = match templates.get(&view) {
            Some(t) => Arc::clone(t),
            None => {
                let scope = scopes
                    .entry((view.namespace.clone(), view.sidecar.clone()))
                    .or_insert_with(|| {
                        Scope::new(mesh.config, mesh.registry, &key.namespace, sidecar)
                    });
                let t = outbound_tcp::template(&mesh.with_scope(scope), Source::of(w), sidecar);
                let t = match prev.outbound_listeners.get(&view) {
                    Some(p) if p.version == t.version => Arc::clone(p),
                    _ => Arc::new(t),
                };
                templates.insert(view, Arc::clone(&t));
                t
            }
        };
        let input = outbound_tcp::bind_input(mesh, &t, w);
        let old = prev.outbound_bound.get(key);
        let layer = match old.filter(|o| o.input == input) {
            Some(o) => o.clone(),
            None => BoundLayer {
                input,
                listeners: Layer::encode(
                    XdsType::Listener,
                    outbound_tcp::bind(mesh, &t, w)
                        .0
                        .into_iter()
                        .map(|l| (l.name.clone(), l)),
                )
                .reuse(old.map(|o| &o.listeners)),
            },
        };
        bound.insert(key.clone(), layer);
    }
    (templates, bound)
}

impl XdsSnapshot {
    /// The TCP services left out of a port another TCP service keeps, in
    /// every view, once each.
    pub fn tcp_conflicts(&self) -> BTreeSet<&outbound_tcp::Conflict> {
        self.outbound_listeners
            .values()
            .flat_map(|t| &t.conflicts)
            .collect()
    }

    /// Istio's `pilot_conflict_outbound_listener_tcp_over_current_tcp`:
    /// the listeners (bind and port; no bind: each sidecar's own address,
    /// Istio's `0.0.0.0_PORT`) where a TCP service was left out.
    pub fn tcp_conflicted_listeners(&self) -> usize {
        self.tcp_conflicts()
            .iter()
            .map(|c| (&c.bind, c.port))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// `tcp_conflicts` as config warnings on the ServiceEntry (file,
    /// document, port) of the service left out.
    pub fn tcp_conflict_warnings(&self) -> Vec<ConfigError> {
        self.tcp_conflicts()
            .into_iter()
            .map(|c| {
                let se = c.source.split_once('/').and_then(|(namespace, name)| {
                    self.config.snapshot.resources.get(&ResourceKey {
                        kind: Kind::ServiceEntry,
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                    })
                });
                let port = se.and_then(|r| match &r.spec {
                    Spec::ServiceEntry(s) => s.ports.iter().position(|p| p.number == c.port),
                    _ => None,
                });
                ConfigError {
                    file: se
                        .map(|r| r.origin.file.display().to_string())
                        .unwrap_or_default(),
                    document: se.map(|r| r.origin.document).filter(|d| *d > 0),
                    resource: Some(format!("ServiceEntry {}", c.source)),
                    path: port.map(|i| format!("spec.ports[{i}]")),
                    message: c.message(),
                }
            })
            .collect()
    }
}

/// The Sidecar `namespace/name`.
fn sidecar_named<'a>(mesh: &Mesh<'a>, name: &str) -> Option<(&'a Resource, &'a SidecarSpec)> {
    let (namespace, name) = name.split_once('/')?;
    let key = ResourceKey {
        kind: Kind::Sidecar,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let r = mesh.config.resources.get(&key)?;
    match &r.spec {
        Spec::Sidecar(s) => Some((r.as_ref(), s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_file;
    use crate::model::{ConfigSnapshot, Registry};

    const MESH: &str = include_str!("../../../examples/bookinfo/mesh/services.yaml");
    const WORKLOADS: &str = include_str!("../../../examples/bookinfo/mesh/workloads.yaml");
    const TCP_ECHO: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  workloadSelector: {labels: {app: ratings}}
";
    const FROM_PRODUCTPAGE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: tcp-echo, subset: v2}}]
";

    fn mk_build(prev: &XdsSnapshot, files: &[&str]) -> XdsSnapshot {
        let mut snap = ConfigSnapshot::default();
        for (i, text) in files.iter().enumerate() {
            let parsed = parse_file(std::path::Path::new(&format!("f{i}.yaml")), text);
            assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
            for r in parsed.resources {
                snap.resources.insert(r.key(), Arc::new(r));
            }
        }
        let reg = Arc::new(Registry::build(&snap));
        XdsSnapshot::build(prev, &snap, &reg, "cluster.local", false)
    }

    fn mk_key(name: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn lds(s: &XdsSnapshot, name: &str) -> Vec<Arc<Layer>> {
        s.resources_for(&mk_key(name)).unwrap().layers[XdsType::Listener.index()].clone()
    }

    #[test]
    fn a_tcp_service_adds_outbound_listeners_without_touching_the_others() {
        let first = mk_build(&XdsSnapshot::default(), &[MESH, WORKLOADS]);
        let second = mk_build(&first, &[MESH, WORKLOADS, TCP_ECHO]);
        let (before, after) = (
            lds(&first, "productpage-v1"),
            lds(&second, "productpage-v1"),
        );
        // The workload's own listeners (inbound, 15001) keep their identity.
        assert!(Arc::ptr_eq(&before[0], &after[0]));
        assert!(before[1].resources.is_empty());
        assert!(after[1].resources.contains_key("127.0.0.11_9000"));
        // ratings-v1 serves 9000 itself: no outbound listener on it.
        assert!(lds(&second, "ratings-v1")[1].resources.is_empty());
        // One view for the whole namespace, and a rebuild reuses everything.
        assert_eq!(second.outbound_listeners.len(), 1);
        let third = mk_build(&second, &[MESH, WORKLOADS, TCP_ECHO]);
        assert!(Arc::ptr_eq(
            &lds(&second, "productpage-v1")[1],
            &lds(&third, "productpage-v1")[1]
        ));
    }

    #[test]
    fn source_label_matches_split_the_view() {
        let s = mk_build(
            &XdsSnapshot::default(),
            &[MESH, WORKLOADS, TCP_ECHO, FROM_PRODUCTPAGE],
        );
        // productpage-v1 matches the rule, the other sidecars do not.
        assert_eq!(s.outbound_listeners.len(), 2);
        let listener = |name: &str, l: &str| {
            let layer = &lds(&s, name)[1];
            layer.resources.get(l).map(|e| e.version.clone())
        };
        let pp = listener("productpage-v1", "127.0.0.11_9000").unwrap();
        let reviews = listener("reviews-v1", "127.0.0.13_9000").unwrap();
        assert_ne!(pp, reviews);
        // reviews-v1 and details-v1 share a template: only their address differs.
        let details = lds(&s, "details-v1");
        assert!(details[1].resources.contains_key("127.0.0.12_9000"));
    }

    /// reviews may only call ratings (and tcp-echo is not among its hosts).
    const REVIEWS_SIDECAR: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews}
spec:
  workloadSelector: {labels: {app: reviews}}
  egress:
  - hosts: [./ratings.default.svc.cluster.local]
";

    #[test]
    fn a_narrowed_scope_drops_the_listener_and_shares_one_template() {
        let s = mk_build(
            &XdsSnapshot::default(),
            &[MESH, WORKLOADS, TCP_ECHO, REVIEWS_SIDECAR],
        );
        let has = |name: &str, l: &str| lds(&s, name)[1].resources.contains_key(l);
        assert!(has("productpage-v1", "127.0.0.11_9000"));
        assert!(has("details-v1", "127.0.0.12_9000"));
        for (name, addr) in [("reviews-v1", 13), ("reviews-v2", 14), ("reviews-v3", 15)] {
            assert!(!has(name, &format!("127.0.0.{addr}_9000")), "{name}");
        }
        // Two scopes (the namespace's default, reviews' Sidecar): two
        // templates, and the three reviews share the narrowed one.
        assert_eq!(s.outbound_listeners.len(), 2);
        let narrowed: Vec<_> = s
            .outbound_listeners
            .iter()
            .filter(|(k, _)| k.sidecar.is_some())
            .collect();
        assert_eq!(narrowed.len(), 1);
        assert!(narrowed[0].1.listeners.is_empty());
        // Importing tcp-echo gives the listener back.
        let wider = REVIEWS_SIDECAR.replace(
            "[./ratings.default.svc.cluster.local]",
            "[./ratings.default.svc.cluster.local, ./tcp-echo.default.svc.cluster.local]",
        );
        let s2 = mk_build(&s, &[MESH, WORKLOADS, TCP_ECHO, &wider]);
        assert!(
            lds(&s2, "reviews-v2")[1]
                .resources
                .contains_key("127.0.0.14_9000")
        );
    }

    #[test]
    fn an_egress_listener_with_a_port_gets_its_own_listener_and_route_table() {
        let sidecar = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.2.11
    hosts: [./reviews.default.svc.cluster.local]
  - port: {number: 9000, protocol: TCP, name: tcp}
    hosts: [./tcp-echo.default.svc.cluster.local]
  - hosts: [./details.default.svc.cluster.local]
";
        let s = mk_build(
            &XdsSnapshot::default(),
            &[MESH, WORKLOADS, TCP_ECHO, sidecar],
        );
        let layer = &lds(&s, "productpage-v1")[1];
        let names: Vec<&String> = layer.resources.keys().collect();
        assert_eq!(names, ["127.0.0.11_9000", "127.0.2.11_9080"]);
        let routes = s.resources_for(&mk_key("productpage-v1")).unwrap().layers
            [XdsType::Route.index()]
        .clone();
        let rc = routes[0].resources.get("9080").expect("route table 9080");
        let rc = {
            use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
            use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
            use prost::Message;
            let resp = DiscoveryResponse::decode(rc.sotw.as_ref()).unwrap();
            RouteConfiguration::decode(resp.resources[0].value.as_slice()).unwrap()
        };
        let vhosts: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            vhosts,
            ["reviews.default.svc.cluster.local:9080", "allow_any"]
        );
        // The catch-all table still routes every imported service.
        assert!(routes[0].resources.contains_key("outbound"));
        // Other sidecars get neither.
        assert!(
            !lds(&s, "details-v1")[1]
                .resources
                .contains_key("127.0.2.11_9080")
        );
        let other = s.resources_for(&mk_key("details-v1")).unwrap();
        assert!(other.get(XdsType::Route, "9080").is_none());
    }

    /// Two TCP services on 9000 without creation times: `a-echo` wins by
    /// name; a third on 9100 is alone.
    const TWO_ON_9000: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: z-entry}
spec:
  hosts: [b-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.1.90}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: y-entry}
spec:
  hosts: [a-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9100, name: tcp-other, protocol: TCP}
  - {number: 9000, name: tcp, protocol: TCP}
  endpoints: [{address: 127.0.1.91}]
";

    #[test]
    fn tcp_conflicts_are_counted_once_per_listener_and_name_the_service_entry() {
        let files = [MESH, WORKLOADS, TWO_ON_9000];
        let mut s = mk_build(&XdsSnapshot::default(), &files);
        // serve hands each snapshot the config it was translated from.
        let mut config = ConfigSnapshot::default();
        for (i, text) in files.iter().enumerate() {
            let parsed = parse_file(std::path::Path::new(&format!("f{i}.yaml")), text);
            for r in parsed.resources {
                config.resources.insert(r.key(), Arc::new(r));
            }
        }
        s.config = Arc::new(crate::config::ConfigState {
            snapshot: config,
            ..Default::default()
        });
        // Every sidecar keeps a-echo (by name; the ServiceEntry's own name
        // does not count) on its 9000.
        for (name, ip) in [
            ("productpage-v1", "127.0.0.11"),
            ("details-v1", "127.0.0.12"),
        ] {
            let layer = &lds(&s, name)[1];
            let l = layer.resources.get(&format!("{ip}_9000")).expect("9000");
            assert!(format!("{:?}", l).contains("a-echo"));
        }
        // One listener (each sidecar's own address at 9000) in conflict.
        assert_eq!(s.tcp_conflicted_listeners(), 1);
        let warnings = s.tcp_conflict_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = &warnings[0];
        assert_eq!(w.file, "f2.yaml");
        assert_eq!(w.document, Some(1));
        assert_eq!(w.resource.as_deref(), Some("ServiceEntry default/z-entry"));
        assert_eq!(w.path.as_deref(), Some("spec.ports[0]"));
        assert!(
            w.message
                .contains("a-echo.default.svc.cluster.local (first"),
            "{}",
            w.message
        );
    }
}
