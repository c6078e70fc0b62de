//! Endpoints (EDS): one ClusterLoadAssignment per EDS cluster, grouped by locality.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};

use super::clusters::lb_endpoint;
use super::{Mesh, mtls, outbound_cluster_name};
use crate::model::istio::Resolution;
use crate::model::registry::{Endpoint, Service, ServicePort};

/// Assignments for every EDS cluster (services with STATIC resolution and
/// their DestinationRule subsets).
pub fn assignments(mesh: &Mesh<'_>) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    for svc in mesh.registry.services.values() {
        if svc.resolution != Resolution::Static {
            continue;
        }
        let subsets = mesh
            .destination_rule(&svc.hostname, &svc.namespace)
            .map(|(_, dr)| dr.subsets.as_slice())
            .unwrap_or_default();
        for port in svc
            .ports
            .iter()
            .filter(|p| mesh.reaches(&svc.hostname, p.number))
        {
            out.push(assignment(mesh.mtls, svc, port, "", &BTreeMap::new()));
            for s in subsets {
                out.push(assignment(mesh.mtls, svc, port, &s.name, &s.labels));
            }
        }
    }
    out
}

fn assignment(
    mesh_mtls: bool,
    svc: &Service,
    port: &ServicePort,
    subset: &str,
    labels: &BTreeMap<String, String>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
    for e in &svc.endpoints {
        if labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)) {
            by_locality
                .entry(e.locality.as_deref().unwrap_or_default())
                .or_default()
                .push(e);
        }
    }
    ClusterLoadAssignment {
        cluster_name: outbound_cluster_name(port.number, subset, &svc.hostname),
        endpoints: by_locality
            .into_iter()
            .map(|(locality, eps)| LocalityLbEndpoints {
                locality: parse_locality(locality),
                lb_endpoints: eps
                    .iter()
                    .map(|e| {
                        let mut lb = lb_endpoint(&e.address, e.port_for(port), e.weight);
                        if mesh_mtls && mtls::has_sidecar(e) {
                            lb.metadata = Some(mtls::endpoint_metadata());
                        }
                        lb
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Istio's `region/zone/subzone` locality string.
fn parse_locality(s: &str) -> Option<Locality> {
    if s.is_empty() {
        return None;
    }
    let mut parts = s.splitn(3, '/');
    Some(Locality {
        region: parts.next().unwrap_or_default().to_string(),
        zone: parts.next().unwrap_or_default().to_string(),
        sub_zone: parts.next().unwrap_or_default().to_string(),
    })
}
