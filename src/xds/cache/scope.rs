//! Outbound layers per view (see `translate::scope`): the route table,
//! clusters and endpoints that proxies with the same namespace and Sidecar
//! share. A view that sees everything (no Sidecar, nothing hidden by
//! exportTo, the same DestinationRules as the mesh-wide translation) uses
//! the mesh-wide layers themselves; any other view is a layer of the same
//! shared `Arc<Encoded>` resources, filtered, so no resource is encoded
//! twice unless its content differs (a DestinationRule that only this view
//! sees). Views with the same content share one layer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Layer, XdsSnapshot};
use crate::model::istio::SidecarSpec;
use crate::model::registry::Service;
use crate::model::{Registry, Resource, WorkloadKey};
use crate::xds::encoded::Encoded;
use crate::xds::translate::scope::{Scope, ScopeKey, select_sidecar};
use crate::xds::translate::{Mesh, clusters, egress, endpoints, gateway, sidecar_egress};
use crate::xds::types::XdsType;

/// What the proxies of one view share.
#[derive(Clone, Debug, Default)]
pub struct OutboundLayers {
    pub clusters: Arc<Layer>,
    pub endpoints: Arc<Layer>,
    pub routes: Arc<Layer>,
}

/// Every view of the mesh, and which workload uses which.
#[derive(Clone, Debug, Default)]
pub struct Views {
    pub layers: HashMap<ScopeKey, OutboundLayers>,
    pub of: HashMap<WorkloadKey, ScopeKey>,
    /// Sidecar conflicts (several Sidecars apply equally), as Istio reports them.
    pub conflicts: Vec<String>,
    /// Locality-balanced DNS clusters per proxy, as its view sees them.
    pub dns_clusters: super::locality::LocalityClusters,
}

/// One resource of a mesh-wide layer: its port, name and bytes.
type Entry<'l> = (u32, &'l String, &'l Arc<Encoded>);

/// Encoded resources of a mesh-wide layer by the service host their name
/// carries (`outbound|PORT|SUBSET|HOST`), and those of no service.
struct ByHost<'l> {
    hosts: HashMap<&'l str, Vec<Entry<'l>>>,
    other: Vec<(&'l String, &'l Arc<Encoded>)>,
}

impl<'l> ByHost<'l> {
    fn new(layer: &'l Layer, registry: &Registry) -> Self {
        let mut out = ByHost {
            hosts: HashMap::new(),
            other: Vec::new(),
        };
        for (name, enc) in &layer.resources {
            let mut parts = name.splitn(4, '|');
            let parsed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("outbound"), Some(port), Some(_), Some(host))
                    if registry.services.contains_key(host) =>
                {
                    port.parse::<u32>().ok().map(|p| (p, host))
                }
                _ => None,
            };
            match parsed {
                Some((port, host)) => out.hosts.entry(host).or_default().push((port, name, enc)),
                None => out.other.push((name, enc)),
            }
        }
        out
    }
}

/// Encoded clusters and endpoints of one service for a view whose
/// DestinationRule differs from the mesh-wide one, by (host, rule, ports).
type Translated = (
    BTreeMap<String, Arc<Encoded>>,
    BTreeMap<String, Arc<Encoded>>,
);

/// Which of `selectors` (HTTP `sourceLabels`) `labels` satisfies, as a
/// hash; 0 when none does.
fn source_outcome(
    selectors: &[&BTreeMap<String, String>],
    labels: &BTreeMap<String, String>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    let mut any = false;
    for (i, sel) in selectors.iter().enumerate() {
        if sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            i.hash(&mut h);
            any = true;
        }
    }
    if any { h.finish().max(1) } else { 0 }
}

pub(super) fn build(
    prev: &XdsSnapshot,
    mesh: &Mesh<'_>,
    full_clusters: &Arc<Layer>,
    full_endpoints: &Arc<Layer>,
) -> Views {
    let mut views = Views::default();
    let mut sidecars: BTreeMap<ScopeKey, Option<(&Resource, &SidecarSpec)>> = BTreeMap::new();
    // HTTP `sourceLabels` of mesh VirtualServices: proxies satisfying the
    // same ones share a route table (none anywhere: one per namespace and
    // Sidecar, as without them).
    let selectors: Vec<&BTreeMap<String, String>> = mesh
        .config
        .virtual_services()
        .flat_map(|(_, vs)| vs.http.iter())
        .flat_map(|r| r.r#match.iter())
        .map(|m| &m.source_labels)
        .filter(|l| !l.is_empty())
        .collect();
    let mut clients: HashMap<ScopeKey, &BTreeMap<String, String>> = HashMap::new();
    for (key, w) in &mesh.registry.workloads {
        // Sidecar resources apply to sidecars, not to gateway proxies.
        let choice = if gateway::is_gateway(mesh, w) {
            Default::default()
        } else {
            select_sidecar(mesh.config, &key.namespace, &w.labels)
        };
        if let Some(c) = choice.conflict {
            views.conflicts.push(format!("workload {key}: {c}"));
        }
        let scope_key = ScopeKey {
            namespace: key.namespace.clone(),
            sidecar: choice
                .sidecar
                .map(|(r, _)| format!("{}/{}", r.namespace, r.name)),
            source: source_outcome(&selectors, &w.labels),
        };
        clients.entry(scope_key.clone()).or_insert(&w.labels);
        sidecars.insert(scope_key.clone(), choice.sidecar);
        views.of.insert(key.clone(), scope_key);
    }

    // Locality-balanced DNS clusters, per view and client (usually none).
    let mut dns_clusters = super::locality::ClusterLayers::new(prev, mesh);
    let mut members: HashMap<&ScopeKey, Vec<&crate::model::registry::Workload>> = HashMap::new();
    if dns_clusters.is_some() {
        for (key, w) in &mesh.registry.workloads {
            if let Some(view) = views.of.get(key) {
                members.entry(view).or_default().push(w);
            }
        }
    }

    let mut cluster_index: Option<ByHost<'_>> = None;
    let mut endpoint_index: Option<ByHost<'_>> = None;
    let mut translated: HashMap<(String, usize, String), Translated> = HashMap::new();
    let mut interned: HashMap<(XdsType, u64), Arc<Layer>> = HashMap::new();
    let mut intern = |t: XdsType, layer: Arc<Layer>| {
        Arc::clone(interned.entry((t, layer.version)).or_insert(layer))
    };

    // The mesh-wide translation's DestinationRule per service, once.
    let wide: HashMap<&str, Option<&Resource>> = mesh
        .registry
        .services
        .values()
        .map(|s| {
            let dr = mesh.destination_rule(&s.hostname, &s.namespace);
            (s.hostname.as_str(), dr.map(|(r, _)| r))
        })
        .collect();

    for (scope_key, sidecar) in sidecars {
        let scope = Scope::new(mesh.config, mesh.registry, &scope_key.namespace, sidecar);
        let scoped = mesh.with_scope(&scope);
        if let Some(d) = &mut dns_clusters {
            let workloads = members.get(&scope_key).into_iter().flatten().copied();
            d.view(&scoped, workloads);
        }
        // The route table also depends on the clients' labels when some
        // `sourceLabels` match holds for them (every client of the view
        // satisfies the same ones).
        let routed = match scope_key.source {
            0 => scoped,
            _ => scoped.with_source_labels(clients.get(&scope_key).copied()),
        };
        let old = prev.views.layers.get(&scope_key);
        // The catch-all follows the view's Sidecar `outboundTrafficPolicy`
        // (and its `egressProxy`), else the mesh-wide one.
        let mode = egress::policy_of(mesh, sidecar.map(|(_, s)| s));
        let rc = egress::outbound_routes(&routed, &scope_key.namespace, mode);
        // The Sidecar's HTTP egress listeners with a port have tables of their own.
        let own = sidecar
            .map(|s| sidecar_egress::route_tables(&routed, &scope_key.namespace, s, mode))
            .unwrap_or_default();
        let routes = intern(
            XdsType::Route,
            Layer::encode(
                XdsType::Route,
                std::iter::once(rc)
                    .chain(own)
                    .map(|rc| (rc.name.clone(), rc)),
            )
            .reuse(old.map(|o| &o.routes)),
        );

        // Services whose DestinationRule for this view is not the mesh-wide one.
        let differing: Vec<(&Arc<Service>, Option<&Resource>)> = scope
            .reachable
            .keys()
            .filter_map(|h| mesh.registry.services.get(*h))
            .filter_map(|svc| {
                let here = scoped.destination_rule(&svc.hostname, &svc.namespace);
                let same = match (here, wide.get(svc.hostname.as_str()).copied().flatten()) {
                    (Some((a, _)), Some(b)) => std::ptr::eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                (!same).then(|| (svc, here.map(|(r, _)| r)))
            })
            .collect();
        if scope.everything && differing.is_empty() {
            let layers = OutboundLayers {
                clusters: Arc::clone(full_clusters),
                endpoints: Arc::clone(full_endpoints),
                routes,
            };
            views.layers.insert(scope_key, layers);
            continue;
        }

        let ci = cluster_index.get_or_insert_with(|| ByHost::new(full_clusters, mesh.registry));
        let ei = endpoint_index.get_or_insert_with(|| ByHost::new(full_endpoints, mesh.registry));
        let mut cl: BTreeMap<String, Arc<Encoded>> = ci
            .other
            .iter()
            .map(|(n, e)| ((*n).clone(), Arc::clone(e)))
            .collect();
        let mut el: BTreeMap<String, Arc<Encoded>> = ei
            .other
            .iter()
            .map(|(n, e)| ((*n).clone(), Arc::clone(e)))
            .collect();
        for (host, ports) in &scope.reachable {
            if differing.iter().any(|(s, _)| s.hostname == *host) {
                continue;
            }
            for (index, out) in [(&*ci, &mut cl), (&*ei, &mut el)] {
                for (port, name, enc) in index.hosts.get(host).into_iter().flatten() {
                    if ports.contains(*port) {
                        out.insert((*name).clone(), Arc::clone(enc));
                    }
                }
            }
        }
        for (svc, rule) in differing {
            let ports = format!("{:?}", scope.reachable.get(svc.hostname.as_str()));
            let memo_key = (
                svc.hostname.clone(),
                rule.map_or(0, |r| r as *const Resource as usize),
                ports,
            );
            let (c, e) = translated.entry(memo_key).or_insert_with(|| {
                let one = Registry {
                    services: [(svc.hostname.clone(), Arc::clone(svc))].into(),
                    ..Default::default()
                };
                let m = Mesh {
                    registry: &one,
                    ..scoped
                };
                let mine = |name: &str| name.ends_with(&format!("|{}", svc.hostname));
                let c = Layer::encode(
                    XdsType::Cluster,
                    clusters::outbound(&m)
                        .into_iter()
                        .filter(|c| mine(&c.name))
                        .map(|c| (c.name.clone(), c)),
                );
                let e = Layer::encode(
                    XdsType::Endpoint,
                    endpoints::assignments(&m)
                        .into_iter()
                        .map(|a| (a.cluster_name.clone(), a)),
                );
                (c.resources, e.resources)
            });
            cl.extend(c.iter().map(|(n, e)| (n.clone(), Arc::clone(e))));
            el.extend(e.iter().map(|(n, e)| (n.clone(), Arc::clone(e))));
        }
        let clusters = intern(
            XdsType::Cluster,
            Layer::from_encoded(cl).reuse(old.map(|o| &o.clusters)),
        );
        let endpoints = intern(
            XdsType::Endpoint,
            Layer::from_encoded(el).reuse(old.map(|o| &o.endpoints)),
        );
        views.layers.insert(
            scope_key,
            OutboundLayers {
                clusters,
                endpoints,
                routes,
            },
        );
    }
    views.dns_clusters = dns_clusters.map(|d| d.finish()).unwrap_or_default();
    if views.conflicts != prev.views.conflicts {
        for c in &views.conflicts {
            tracing::warn!(conflict = %c, "Sidecar conflict");
        }
    }
    views
}

impl XdsSnapshot {
    /// The outbound layers `workload`'s proxy uses.
    pub fn outbound_of(&self, workload: &WorkloadKey) -> Option<&OutboundLayers> {
        self.views.layers.get(self.views.of.get(workload)?)
    }
}

#[cfg(test)]
mod tests;
