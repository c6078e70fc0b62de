//! Sidecars' outbound TCP/TLS listeners (`translate::outbound_tcp`, and
//! Sidecar egress listeners with a port): one template per view, shared by
//! the sidecars that see the same thing (the key is the Sidecar scope,
//! namespace and Sidecar, plus the outcome of source-dependent matches), then
//! bound to each workload's address in a layer of its own, so a sidecar's
//! other listeners do not depend on every service.

use std::collections::HashMap;
use std::sync::Arc;

use super::scope::Views;
use super::{Layer, XdsSnapshot};
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
    for (key, w) in &mesh.registry.workloads {
        if gateway::is_gateway(mesh, w) {
            continue;
        }
        let sidecar = views
            .of
            .get(key)
            .and_then(|v| v.sidecar.as_deref())
            .and_then(|name| sidecar_named(mesh, name));
        let view = outbound_tcp::view_key(mesh, w, sidecar);
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
}
