//! Endpoint layers keyed by client locality: clusters with locality load
//! balancing get their ClusterLoadAssignments shaped per client (see
//! `translate::locality`); proxies with the same locality (and the labels
//! failoverPriority reads) share one layer. Every other cluster stays in the
//! mesh-wide endpoint layer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{Layer, XdsSnapshot};
use crate::model::WorkloadKey;
use crate::xds::translate::{Mesh, endpoints, locality::Client};
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
            .map(|w| Client::of(w.locality.as_deref(), &w.labels, &labels))
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
            let client = Client::of(
                w.locality.as_deref(),
                &w.labels,
                &self.locality_endpoints.labels,
            );
            out.extend(self.locality_endpoints.layers.get(&client).cloned());
        }
        out
    }
}
