//! The layers of gateway proxies: listeners per gateway workload (they bind
//! its address), route tables per set of Gateways and namespace (replicas of
//! one gateway share them), and the names of the credentials it serves.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{Layer, ProxyResources, XdsSnapshot};
use crate::model::WorkloadKey;
use crate::xds::translate::{Mesh, egress, gateway};
use crate::xds::types::XdsType;

/// What one gateway proxy gets instead of a sidecar's listeners and routes.
#[derive(Clone, Debug, Default)]
pub struct GatewayLayers {
    pub listeners: Arc<Layer>,
    pub routes: Arc<Layer>,
    /// Its own clusters besides the mesh's: the SNI-DNAT clusters of its
    /// AUTO_PASSTHROUGH servers.
    pub clusters: Arc<Layer>,
    /// The `credentialName`s its servers terminate TLS with and its
    /// DestinationRules originate TLS with.
    pub credential_names: Arc<BTreeSet<String>>,
}

/// The gateways selecting a workload (`namespace/name` each) and the
/// workload's namespace: what its route tables depend on.
type RouteKey = (Vec<String>, String);

/// Translates every gateway workload of the mesh, reusing `prev`'s layers
/// whose content did not change.
pub(super) fn build(prev: &XdsSnapshot, mesh: &Mesh<'_>) -> HashMap<WorkloadKey, GatewayLayers> {
    let mut routes: HashMap<RouteKey, Arc<Layer>> = HashMap::new();
    // TLS origination credentials depend on the namespace only.
    let mut originating: HashMap<&str, BTreeSet<String>> = HashMap::new();
    let mut out = HashMap::new();
    for (key, w) in &mesh.registry.workloads {
        let selecting = gateway::gateways_of(mesh, w);
        if selecting.is_empty() {
            continue;
        }
        let old = prev.gateways.get(key);
        let route_key: RouteKey = (
            selecting
                .iter()
                .map(|(r, _)| format!("{}/{}", r.namespace, r.name))
                .collect(),
            key.namespace.clone(),
        );
        let routes = Arc::clone(routes.entry(route_key).or_insert_with(|| {
            Layer::encode(
                XdsType::Route,
                gateway::route_tables(mesh, w)
                    .into_iter()
                    .map(|r| (r.name.clone(), r)),
            )
            .reuse(old.map(|o| &o.routes))
        }));
        let listeners = Layer::encode(
            XdsType::Listener,
            gateway::listeners(mesh, w)
                .into_iter()
                .map(|l| (l.name.clone(), l)),
        )
        .reuse(old.map(|o| &o.listeners));
        let clusters = Layer::encode(
            XdsType::Cluster,
            gateway::sni_dnat_clusters(mesh, w)
                .into_iter()
                .map(|c| (c.name.clone(), c)),
        )
        .reuse(old.map(|o| &o.clusters));
        let mut names = gateway::server_credential_names(mesh, w);
        names.extend(
            originating
                .entry(key.namespace.as_str())
                .or_insert_with(|| egress::gateway_credential_names(mesh, &key.namespace))
                .iter()
                .cloned(),
        );
        let credential_names = match old {
            Some(o) if *o.credential_names == names => Arc::clone(&o.credential_names),
            _ => Arc::new(names),
        };
        out.insert(
            key.clone(),
            GatewayLayers {
                listeners,
                routes,
                clusters,
                credential_names,
            },
        );
    }
    out
}

impl XdsSnapshot {
    /// A gateway proxy's resources: the mesh's outbound clusters and
    /// endpoints (and its own SNI-DNAT clusters), its own listeners and route tables, its workload
    /// certificate (mTLS toward the mesh) and its credentials.
    pub(super) fn gateway_resources(
        &self,
        key: &WorkloadKey,
        gw: &GatewayLayers,
    ) -> ProxyResources {
        // The view of the gateway's namespace (exportTo; no Sidecar).
        let (clusters, endpoints) = match self.outbound_of(key) {
            Some(v) => (&v.clusters, &v.endpoints),
            None => (&self.clusters, &self.endpoints),
        };
        ProxyResources {
            layers: [
                self.cluster_layers(
                    key,
                    std::iter::once(clusters)
                        .chain(Some(&gw.clusters).filter(|c| !c.resources.is_empty()))
                        .cloned(),
                ),
                self.endpoint_layers(key, endpoints),
                vec![Arc::clone(&gw.listeners)],
                vec![Arc::clone(&gw.routes)],
                self.secrets
                    .get(key)
                    .into_iter()
                    .chain(self.credentials.get(key))
                    .cloned()
                    .collect(),
            ],
        }
    }

    /// The credentials each proxy wants (for `CredentialDir::layers`): a
    /// gateway's, those its Gateways name; a sidecar's, those its own
    /// namespace's DestinationRules name for TLS origination.
    pub fn credential_wants(&self) -> HashMap<WorkloadKey, Arc<BTreeSet<String>>> {
        let mut out: HashMap<WorkloadKey, Arc<BTreeSet<String>>> = self
            .gateways
            .iter()
            .map(|(k, g)| (k.clone(), Arc::clone(&g.credential_names)))
            .collect();
        let mesh = Mesh::new(&self.config.snapshot, &self.registry);
        let mut by_ns: HashMap<&str, Arc<BTreeSet<String>>> = HashMap::new();
        for key in self.workloads.keys() {
            if self.gateways.contains_key(key) {
                continue;
            }
            let names = by_ns.entry(key.namespace.as_str()).or_insert_with(|| {
                Arc::new(crate::xds::translate::egress::sidecar_credential_names(
                    &mesh,
                    &key.namespace,
                ))
            });
            if !names.is_empty() {
                out.insert(key.clone(), Arc::clone(names));
            }
        }
        out
    }
}
