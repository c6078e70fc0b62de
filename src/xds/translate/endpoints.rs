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
use crate::model::istio::{Resolution, SimpleLb};
use crate::model::registry::{Service, ServicePort};

/// Assignments every proxy shares: each EDS cluster (services with STATIC
/// resolution and their DestinationRule subsets) without locality load
/// balancing.
pub fn assignments(mesh: &Mesh<'_>) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    each_cluster(
        mesh,
        Resolution::Static,
        |svc, port, subset, labels, mode| {
            if mode.is_none() {
                out.push(assignment(mesh.mtls, svc, port, subset, labels, None));
            }
        },
    );
    out
}

/// The locality-balanced assignments, as `client` sees them.
pub fn for_client(mesh: &Mesh<'_>, client: &Client) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    each_cluster(
        mesh,
        Resolution::Static,
        |svc, port, subset, labels, mode| {
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
        },
    );
    out
}

/// The client labels locality load balancing reads (failoverPriority label
/// names), or None when no EDS cluster has locality load balancing: then
/// every proxy gets the same endpoints.
pub fn client_labels(mesh: &Mesh<'_>) -> Option<BTreeSet<String>> {
    let mut any = false;
    let mut labels = BTreeSet::new();
    each_cluster(mesh, Resolution::Static, |_, _, _, _, mode| {
        if let Some(mode) = mode {
            any = true;
            labels.extend(locality::client_labels(&mode).map(str::to_string));
        }
    });
    any.then_some(labels)
}

/// Calls `f` for every cluster of the services with `resolution` (EDS
/// clusters for STATIC) with its locality mode. A service whose endpoints
/// carry no locality is the same for every client.
fn each_cluster<'a>(
    mesh: &Mesh<'a>,
    resolution: Resolution,
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
        if svc.resolution != resolution {
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
/// and STRICT_DNS services whose endpoints have localities differ per
/// client (a DNS cluster forwarding to the original destination has no
/// endpoints of its own).
pub fn locality_mode<'a>(svc: &Service, policy: &EffectivePolicy<'a>) -> Option<Mode<'a>> {
    let shaped = match svc.resolution {
        Resolution::Static => true,
        Resolution::Dns => {
            policy.load_balancer.and_then(|l| l.simple) != Some(SimpleLb::Passthrough)
        }
        _ => false,
    };
    if !shaped || !has_locality(svc) {
        return None;
    }
    locality::mode(policy)
}

/// Whether any endpoint of `svc` names its locality.
pub fn has_locality(svc: &Service) -> bool {
    svc.endpoints.iter().any(|e| e.locality.is_some())
}

/// The client labels that locality-balanced DNS clusters may read: the
/// failoverPriority label names of every DestinationRule (a view may see a
/// rule the mesh-wide translation does not), or None when no DNS service
/// has endpoints with a locality: then DNS clusters are the same for every
/// client.
pub fn dns_client_labels(mesh: &Mesh<'_>) -> Option<BTreeSet<String>> {
    let any = mesh
        .registry
        .services
        .values()
        .any(|s| s.resolution == Resolution::Dns && has_locality(s));
    if !any {
        return None;
    }
    let mut labels = BTreeSet::new();
    for (_, dr) in mesh.config.destination_rules() {
        let policies = dr
            .traffic_policy
            .iter()
            .chain(dr.subsets.iter().filter_map(|s| s.traffic_policy.as_ref()));
        for p in policies {
            let lbs = p.load_balancer.iter().chain(
                p.port_level_settings
                    .iter()
                    .filter_map(|l| l.load_balancer.as_ref()),
            );
            for lb in lbs {
                if let Some(s) = &lb.locality_lb_setting {
                    let mode = Mode::Failover {
                        failover: &[],
                        failover_priority: &s.failover_priority,
                    };
                    labels.extend(locality::client_labels(&mode).map(str::to_string));
                }
            }
        }
    }
    Some(labels)
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
