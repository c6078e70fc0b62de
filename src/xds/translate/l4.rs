//! Pieces every L4 listener shares (gateways' TCP and TLS-passthrough
//! servers, sidecars' outbound TCP and TLS listeners): the clusters of a
//! VirtualService `tcp`/`tls` route and the `tcp_proxy` that forwards to them.

use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier as TcpClusterSpecifier, tcp_proxy::TcpAccessLogOptions,
    tcp_proxy::WeightedCluster, tcp_proxy::weighted_cluster::ClusterWeight,
};

use super::{Mesh, any, outbound_cluster_name};
use crate::model::istio::RouteDestination;
use crate::model::{Resource, host};

/// Envoy's name of the TCP proxy network filter.
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

/// The cluster of an L4 destination: its port, else the service's only port,
/// else the listener port.
pub fn destination_cluster(
    mesh: &Mesh<'_>,
    vs: &Resource,
    d: &RouteDestination,
    port: u32,
) -> String {
    let hostname = host::resolve(&d.destination.host, &vs.namespace);
    let number = d
        .destination
        .port
        .as_ref()
        .and_then(|p| p.number)
        .or_else(|| {
            let svc = mesh.registry.services.get(&hostname)?;
            (svc.ports.len() == 1).then(|| svc.ports[0].number)
        })
        .unwrap_or(port);
    outbound_cluster_name(
        number,
        d.destination.subset.as_deref().unwrap_or_default(),
        &hostname,
    )
}

/// The clusters of a route's destinations with their relative weights, as
/// Istio reads them: a sole destination takes everything, otherwise a
/// destination without a weight (or with 0) takes none.
pub fn route_clusters(
    mesh: &Mesh<'_>,
    vs: &Resource,
    dests: &[RouteDestination],
    port: u32,
) -> Vec<(String, u32)> {
    dests
        .iter()
        .map(|d| {
            let w = if dests.len() == 1 {
                1
            } else {
                d.weight.unwrap_or(0).max(0) as u32
            };
            (destination_cluster(mesh, vs, d, port), w)
        })
        .filter(|(_, w)| *w > 0)
        .collect()
}

/// A `tcp_proxy` to `clusters` (one cluster, or weighted clusters); None
/// when there is nothing to forward to. With access logs, an entry is also
/// written when the upstream connects (connections opened), as on inbound.
pub fn tcp_proxy_to(
    stat_prefix: String,
    clusters: &[(String, u32)],
    access_log: Vec<AccessLog>,
) -> Option<Filter> {
    let spec = match clusters {
        [] => return None,
        [(c, _)] => TcpClusterSpecifier::Cluster(c.clone()),
        many => TcpClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(name, weight)| ClusterWeight {
                    name: name.clone(),
                    weight: *weight,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let access_log_options = (!access_log.is_empty()).then(|| TcpAccessLogOptions {
        flush_access_log_on_connected: true,
        ..Default::default()
    });
    Some(Filter {
        name: TCP_PROXY.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&TcpProxy {
            stat_prefix,
            cluster_specifier: Some(spec),
            access_log,
            access_log_options,
            ..Default::default()
        }))),
    })
}

/// A `tcp_proxy` to a VirtualService route's destinations, without access logs.
pub fn tcp_proxy(
    mesh: &Mesh<'_>,
    stat_prefix: String,
    vs: &Resource,
    dests: &[RouteDestination],
    port: u32,
) -> Option<Filter> {
    tcp_proxy_to(
        stat_prefix,
        &route_clusters(mesh, vs, dests, port),
        Vec::new(),
    )
}
