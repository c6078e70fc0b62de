//! Layers keyed by client locality: clusters with locality load balancing
//! get their ClusterLoadAssignments shaped per client (see
//! `translate::locality`); proxies with the same locality (and the labels
//! failoverPriority reads) share one layer. Every other cluster stays in the
//! mesh-wide layers.
//!
//! * EDS clusters: one endpoint layer per distinct client (`LocalityEndpoints`).
//! * DNS (STRICT_DNS) clusters carry their assignment inline, so the cluster
//!   itself differs per client, and CDS sends every cluster a view sees: one
//!   cluster layer per (view's DNS clusters, client) (`LocalityClusters`),
//!   with only those clusters; views that see the same ones share it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{Layer, XdsSnapshot};
use crate::model::registry::{Service, Workload};
use crate::model::{Registry, Resource, WorkloadKey};
use crate::xds::translate::{Mesh, clusters, endpoints, locality::Client};
use crate::xds::types::XdsType;

/// The per-client endpoint layers of one snapshot.
#[derive(Clone, Debug, Default)]
pub struct LocalityEndpoints {
    /// Client labels the layers depend on (failoverPriority label names).
    pub labels: BTreeSet<String>,
    pub layers: HashMap<Client, Arc<Layer>>,
}

impl LocalityEndpoints {
    /// One layer per distinct client among the mesh's workloads, or none
    /// when no cluster has locality load balancing.
    pub fn build(prev: &LocalityEndpoints, mesh: &Mesh<'_>) -> LocalityEndpoints {
        let Some(labels) = endpoints::client_labels(mesh) else {
            return LocalityEndpoints::default();
        };
        let clients: BTreeSet<Client> = mesh
            .registry
            .workloads
            .values()
            .map(|w| Client::of_workload(w, &labels))
            .collect();
        let layers = clients
            .into_iter()
            .map(|client| {
                let layer = Layer::encode(
                    XdsType::Endpoint,
                    endpoints::for_client(mesh, &client)
                        .into_iter()
                        .map(|a| (a.cluster_name.clone(), a)),
                )
                .reuse(prev.layers.get(&client));
                (client, layer)
            })
            .collect();
        LocalityEndpoints { labels, layers }
    }
}

impl XdsSnapshot {
    /// The endpoint layers of `workload`'s proxy: `base` (its view's shared
    /// one), and its client's locality-balanced one when there is any.
    pub(super) fn endpoint_layers(
        &self,
        workload: &WorkloadKey,
        base: &Arc<Layer>,
    ) -> Vec<Arc<Layer>> {
        let mut out = vec![Arc::clone(base)];
        if self.locality_endpoints.layers.is_empty() {
            return out;
        }
        if let Some(w) = self.registry.workloads.get(workload) {
            let client = Client::of_workload(w, &self.locality_endpoints.labels);
            out.extend(self.locality_endpoints.layers.get(&client).cloned());
        }
        out
    }
}

/// Locality-balanced DNS clusters: the layer each proxy gets besides its
/// view's clusters (none for proxies whose view has no such cluster).
#[derive(Clone, Debug, Default)]
pub struct LocalityClusters {
    pub of: HashMap<WorkloadKey, Arc<Layer>>,
}

/// Builds `LocalityClusters` view by view (`cache/scope.rs` calls `view`
/// with each view's scoped translation).
pub(super) struct ClusterLayers {
    /// Client labels the clusters may depend on.
    labels: BTreeSet<String>,
    /// DNS services with localities on their endpoints: the only ones whose
    /// clusters can differ per client.
    candidates: Registry,
    /// Layers by (view signature, client): views that see the same
    /// candidates under the same rules share them.
    memo: HashMap<(u64, Client), Arc<Layer>>,
    /// The previous snapshot's layers by version, to keep their identity.
    prev: HashMap<u64, Arc<Layer>>,
    /// And by workload, to record what changed for its proxy.
    prev_of: HashMap<WorkloadKey, Arc<Layer>>,
    out: HashMap<WorkloadKey, Arc<Layer>>,
}

impl ClusterLayers {
    /// None when no DNS service has endpoints with a locality (the common
    /// case: nothing to build, nothing per client).
    pub fn new(prev: &XdsSnapshot, mesh: &Mesh<'_>) -> Option<Self> {
        let labels = endpoints::dns_client_labels(mesh)?;
        let services: BTreeMap<String, Arc<Service>> = mesh
            .registry
            .services
            .iter()
            .filter(|(_, s)| {
                s.resolution == crate::model::istio::Resolution::Dns && endpoints::has_locality(s)
            })
            .map(|(h, s)| (h.clone(), Arc::clone(s)))
            .collect();
        Some(ClusterLayers {
            labels,
            candidates: Registry {
                services,
                ..Default::default()
            },
            memo: HashMap::new(),
            prev: prev
                .views
                .dns_clusters
                .of
                .values()
                .map(|l| (l.version, Arc::clone(l)))
                .collect(),
            prev_of: prev.views.dns_clusters.of.clone(),
            out: HashMap::new(),
        })
    }

    /// Adds the layers of `workloads`, the proxies of the view `scoped`
    /// translates for.
    pub fn view<'w>(&mut self, scoped: &Mesh<'_>, workloads: impl Iterator<Item = &'w Workload>) {
        // What the view's DNS clusters depend on: which candidates and ports
        // it reaches, under which DestinationRule.
        let mut h = std::hash::DefaultHasher::new();
        for svc in self.candidates.services.values() {
            let ports: Vec<u32> = svc
                .ports
                .iter()
                .map(|p| p.number)
                .filter(|p| scoped.reaches(&svc.hostname, *p))
                .collect();
            if ports.is_empty() {
                continue;
            }
            svc.hostname.hash(&mut h);
            ports.hash(&mut h);
            let rule = scoped.destination_rule(&svc.hostname, &svc.namespace);
            rule.map_or(0, |(r, _)| r as *const Resource as usize)
                .hash(&mut h);
        }
        let signature = h.finish();
        let mesh = Mesh {
            registry: &self.candidates,
            ..*scoped
        };
        for w in workloads {
            let client = Client::of_workload(w, &self.labels);
            let layer = self
                .memo
                .entry((signature, client))
                .or_insert_with_key(|(_, client)| {
                    let layer = Layer::encode(
                        XdsType::Cluster,
                        clusters::for_client(&mesh, client)
                            .into_iter()
                            .map(|c| (c.name.clone(), c)),
                    );
                    // The same content keeps its identity; otherwise the
                    // diff is from what this proxy had (streams of the
                    // others sharing the layer fall back to a full pass).
                    let prev = self.prev.get(&layer.version);
                    layer.reuse(prev.or(self.prev_of.get(&w.key)))
                });
            if !layer.resources.is_empty() {
                self.out.insert(w.key.clone(), Arc::clone(layer));
            }
        }
    }

    pub fn finish(self) -> LocalityClusters {
        LocalityClusters { of: self.out }
    }
}

impl XdsSnapshot {
    /// The cluster layers of `workload`'s proxy: `base` (its view's and its
    /// own), and its locality-balanced DNS clusters when there are any.
    pub(super) fn cluster_layers(
        &self,
        workload: &WorkloadKey,
        base: impl IntoIterator<Item = Arc<Layer>>,
    ) -> Vec<Arc<Layer>> {
        base.into_iter()
            .chain(self.views.dns_clusters.of.get(workload).cloned())
            .collect()
    }
}
