//! Endpoints (EDS): one ClusterLoadAssignment per EDS cluster, grouped by locality.
//!
//! Most assignments are the same for every proxy (`assignments`). A cluster
//! with locality load balancing (see `locality`) is shaped for the client's
//! locality instead (`for_client`), and left out of the shared ones.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

use super::clusters::{EffectivePolicy, lb_endpoint};
use super::locality::{self, Client, Group, Mode};
use super::{Mesh, mtls, outbound_cluster_name};
use crate::model::istio::Resolution;
use crate::model::registry::{Service, ServicePort};

/// Assignments every proxy shares: each EDS cluster (services with STATIC
/// resolution and their DestinationRule subsets) without locality load
/// balancing.
pub fn assignments(mesh: &Mesh<'_>) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    each_cluster(mesh, |svc, port, subset, labels, mode| {
        if mode.is_none() {
            out.push(assignment(mesh.mtls, svc, port, subset, labels, None));
        }
    });
    out
}

/// The locality-balanced assignments, as `client` sees them.
pub fn for_client(mesh: &Mesh<'_>, client: &Client) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    each_cluster(mesh, |svc, port, subset, labels, mode| {
        if let Some(mode) = mode {
            out.push(assignment(
                mesh.mtls,
                svc,
                port,
                subset,
                labels,
                Some((client, &mode)),
            ));
        }
    });
    out
}

/// The client labels locality load balancing reads (failoverPriority label
/// names), or None when no cluster has locality load balancing: then every
/// proxy gets the same endpoints.
pub fn client_labels(mesh: &Mesh<'_>) -> Option<BTreeSet<String>> {
    let mut any = false;
    let mut labels = BTreeSet::new();
    each_cluster(mesh, |_, _, _, _, mode| {
        if let Some(mode) = mode {
            any = true;
            labels.extend(locality::client_labels(&mode).map(str::to_string));
        }
    });
    any.then_some(labels)
}

/// Calls `f` for every EDS cluster with its locality mode. A service whose
/// endpoints carry no locality is the same for every client.
fn each_cluster<'a>(
    mesh: &Mesh<'a>,
    mut f: impl FnMut(
        &'a Service,
        &'a ServicePort,
        &'a str,
        &'a BTreeMap<String, String>,
        Option<Mode<'a>>,
    ),
) {
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    for svc in mesh.registry.services.values() {
        if svc.resolution != Resolution::Static {
            continue;
        }
        let dr = mesh.destination_rule(&svc.hostname, &svc.namespace);
        let top = dr.and_then(|(_, d)| d.traffic_policy.as_ref());
        let subsets = dr.map(|(_, d)| d.subsets.as_slice()).unwrap_or_default();
        for port in svc
            .ports
            .iter()
            .filter(|p| mesh.reaches(&svc.hostname, p.number))
        {
            let mode_of = |p: EffectivePolicy<'a>| locality_mode(svc, &p);
            f(
                svc,
                port,
                "",
                &NO_LABELS,
                mode_of(EffectivePolicy::merge(top, None, port.number)),
            );
            for s in subsets {
                let policy = EffectivePolicy::merge(top, s.traffic_policy.as_ref(), port.number);
                f(svc, port, &s.name, &s.labels, mode_of(policy));
            }
        }
    }
}

/// The locality mode of one of `svc`'s clusters under `policy`: only EDS
/// services whose endpoints have localities differ per client.
pub fn locality_mode<'a>(svc: &Service, policy: &EffectivePolicy<'a>) -> Option<Mode<'a>> {
    let has_locality = svc.endpoints.iter().any(|e| e.locality.is_some());
    if svc.resolution != Resolution::Static || !has_locality {
        return None;
    }
    locality::mode(policy)
}

fn assignment(
    mesh_mtls: bool,
    svc: &Service,
    port: &ServicePort,
    subset: &str,
    labels: &BTreeMap<String, String>,
    client: Option<(&Client, &Mode<'_>)>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Group<'_>> = BTreeMap::new();
    for e in &svc.endpoints {
        if labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)) {
            let locality = e.locality.as_deref().unwrap_or_default();
            let mut lb = lb_endpoint(&e.address, e.port_for(port), e.weight);
            if mesh_mtls && mtls::has_sidecar(e) {
                lb.metadata = Some(mtls::endpoint_metadata());
            }
            by_locality
                .entry(locality)
                .or_insert_with(|| Group {
                    locality,
                    endpoints: Vec::new(),
                    priority: 0,
                    weight: None,
                })
                .endpoints
                .push((e, lb));
        }
    }
    let mut groups: Vec<Group<'_>> = by_locality.into_values().collect();
    if let Some((client, mode)) = client {
        groups = locality::apply(groups, client, mode);
    }
    ClusterLoadAssignment {
        cluster_name: outbound_cluster_name(port.number, subset, &svc.hostname),
        endpoints: groups.into_iter().map(Group::into_envoy).collect(),
        ..Default::default()
    }
}
