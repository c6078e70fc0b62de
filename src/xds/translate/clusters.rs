//! Clusters: outbound per service port and subset, inbound per workload port.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;

use super::locality::{Client, Group, Mode};
use super::{
    CONNECT_TIMEOUT_SECS, Mesh, ads_config_source, cluster_policy, inbound_cluster_name, mtls,
    outbound_cluster_name, socket_address,
};
use crate::model::istio::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, Location, OutlierDetection,
    ProxyProtocol, Resolution, RetryBudget, SimpleLb, TlsMode, TrafficPolicy,
};
use crate::model::registry::{Protocol, Service, ServicePort, Workload};

/// Every outbound cluster in the mesh that is the same for every client,
/// named as Istio names them. DNS clusters with locality load balancing
/// (see `for_client`) are left out.
pub fn outbound(mesh: &Mesh<'_>) -> Vec<Cluster> {
    let mut out: Vec<Cluster> = mesh
        .zipkin
        .and_then(super::tracing::zipkin_cluster)
        .into_iter()
        .chain(super::egress::clusters())
        .collect();
    each_outbound(mesh, |svc, port, subset, policy, labels| {
        if dns_locality_mode(svc, policy).is_none() {
            out.push(cluster(
                (mesh.trust_domain, mesh.mtls),
                svc,
                port,
                subset,
                policy,
                labels,
                None,
            ));
        }
    });
    out
}

/// The DNS clusters with locality load balancing, as `client` sees them:
/// their inline `load_assignment` carries priorities (or weights) relative
/// to the client's locality, as EDS assignments do (`endpoints::for_client`).
pub fn for_client(mesh: &Mesh<'_>, client: &Client) -> Vec<Cluster> {
    let mut out = Vec::new();
    each_outbound(mesh, |svc, port, subset, policy, labels| {
        if let Some(mode) = dns_locality_mode(svc, policy) {
            out.push(cluster(
                (mesh.trust_domain, mesh.mtls),
                svc,
                port,
                subset,
                policy,
                labels,
                Some((client, &mode)),
            ));
        }
    });
    out
}

/// The locality mode of a DNS cluster that differs per client, if it is one.
fn dns_locality_mode<'a>(svc: &Service, policy: &EffectivePolicy<'a>) -> Option<Mode<'a>> {
    if svc.resolution != Resolution::Dns {
        return None;
    }
    super::endpoints::locality_mode(svc, policy)
}

/// Calls `f` for every outbound service cluster: each reachable port of
/// each service, without subset and with each DestinationRule subset.
fn each_outbound<'a>(
    mesh: &Mesh<'a>,
    mut f: impl FnMut(
        &'a Service,
        &'a ServicePort,
        &'a str,
        &EffectivePolicy<'a>,
        Option<&'a BTreeMap<String, String>>,
    ),
) {
    for svc in mesh.registry.services.values() {
        let dr = mesh.destination_rule(&svc.hostname, &svc.namespace);
        let top = dr.and_then(|(_, d)| d.traffic_policy.as_ref());
        for port in svc
            .ports
            .iter()
            .filter(|p| mesh.reaches(&svc.hostname, p.number))
        {
            f(
                svc,
                port,
                "",
                &EffectivePolicy::merge(top, None, port.number),
                None,
            );
            for subset in dr.map(|(_, d)| d.subsets.as_slice()).unwrap_or_default() {
                let policy =
                    EffectivePolicy::merge(top, subset.traffic_policy.as_ref(), port.number);
                f(svc, port, &subset.name, &policy, Some(&subset.labels));
            }
        }
    }
}

/// The traffic policy that applies to one port of one (subset) cluster, as
/// Istio merges it: the top-level policy; replaced entirely by a matching
/// top-level `portLevelSettings` entry; then each section the subset's policy
/// sets overrides the result, and a matching subset port-level entry replaces it.
#[derive(Clone, Copy, Debug, Default)]
pub struct EffectivePolicy<'a> {
    pub load_balancer: Option<&'a LoadBalancerSettings>,
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
    pub outlier_detection: Option<&'a OutlierDetection>,
    pub tls: Option<&'a ClientTlsSettings>,
    /// Not part of port-level settings: kept when they replace the rest.
    pub proxy_protocol: Option<&'a ProxyProtocol>,
    pub retry_budget: Option<&'a RetryBudget>,
}

impl<'a> EffectivePolicy<'a> {
    pub fn merge(
        top: Option<&'a TrafficPolicy>,
        subset: Option<&'a TrafficPolicy>,
        port: u32,
    ) -> Self {
        let mut p = EffectivePolicy::default();
        for layer in [top, subset].into_iter().flatten() {
            p.load_balancer = layer.load_balancer.as_ref().or(p.load_balancer);
            p.connection_pool = layer.connection_pool.as_ref().or(p.connection_pool);
            p.outlier_detection = layer.outlier_detection.as_ref().or(p.outlier_detection);
            p.tls = layer.tls.as_ref().or(p.tls);
            p.proxy_protocol = layer.proxy_protocol.as_ref().or(p.proxy_protocol);
            p.retry_budget = layer.retry_budget.as_ref().or(p.retry_budget);
            if let Some(pl) = layer
                .port_level_settings
                .iter()
                .find(|s| s.port.as_ref().and_then(|x| x.number) == Some(port))
            {
                // Port-level settings replace the policy; omitted sections take defaults.
                p = EffectivePolicy {
                    load_balancer: pl.load_balancer.as_ref(),
                    connection_pool: pl.connection_pool.as_ref(),
                    outlier_detection: pl.outlier_detection.as_ref(),
                    tls: pl.tls.as_ref(),
                    proxy_protocol: p.proxy_protocol,
                    retry_budget: p.retry_budget,
                };
            }
        }
        p
    }
}

fn cluster(
    (trust_domain, mesh_mtls): (&str, bool),
    svc: &Service,
    port: &ServicePort,
    subset: &str,
    policy: &EffectivePolicy<'_>,
    subset_labels: Option<&BTreeMap<String, String>>,
    client: Option<(&Client, &Mode<'_>)>,
) -> Cluster {
    let name = outbound_cluster_name(port.number, subset, &svc.hostname);
    let mut c = Cluster {
        name: name.clone(),
        connect_timeout: Some(PbDuration {
            seconds: CONNECT_TIMEOUT_SECS,
            nanos: 0,
        }),
        ..Default::default()
    };
    match svc.resolution {
        Resolution::Static => {
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            c.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads_config_source()),
                service_name: name.clone(),
            });
        }
        Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => {
            let t = if svc.resolution == Resolution::Dns {
                DiscoveryType::StrictDns
            } else {
                DiscoveryType::LogicalDns
            };
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(t as i32));
            // IPv4, as Istio resolves for IPv4 proxies: a name with an IPv6
            // address too (`localhost`) must not pick one the proxy's IPv4
            // source address cannot reach.
            c.dns_lookup_family =
                envoy_types::pb::envoy::config::cluster::v3::cluster::DnsLookupFamily::V4Only
                    as i32;
            c.load_assignment = Some(dns_assignment(&name, svc, port, subset_labels, client));
        }
        Resolution::None => {}
    }
    cluster_policy::load_balancer(&mut c, policy.load_balancer);
    let passthrough = policy.load_balancer.and_then(|l| l.simple) == Some(SimpleLb::Passthrough);
    if svc.resolution == Resolution::None || passthrough {
        // Forward to the address the client asked for.
        c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ));
        c.eds_cluster_config = None;
        c.load_assignment = None;
        c.lb_policy = LbPolicy::ClusterProvided as i32;
        c.lb_config = None;
    }
    let http2 = matches!(port.protocol, Protocol::Http2 | Protocol::Grpc)
        || cluster_policy::h2_upgrade(policy.connection_pool);
    cluster_policy::apply_connection_pool(&mut c, policy.connection_pool, http2);
    cluster_policy::retry_budget(&mut c, policy.retry_budget);
    cluster_policy::outlier_detection(&mut c, policy.outlier_detection);
    if let Some(mode) = super::endpoints::locality_mode(svc, policy) {
        super::locality::configure_cluster(&mut c, &mode);
    }
    cluster_policy::upstream_tls(&mut c, policy.tls);
    if mesh_mtls {
        mesh_tls(
            &mut c,
            trust_domain,
            svc,
            port,
            subset,
            policy,
            subset_labels,
        );
    }
    // After TLS: the PROXY header goes first on the wire, then TLS.
    cluster_policy::upstream_proxy_protocol(&mut c, policy.proxy_protocol);
    c
}

/// Mesh mTLS: ISTIO_MUTUAL when the DestinationRule asks; otherwise auto
/// mTLS toward the endpoints that run a sidecar (Istio's default).
fn mesh_tls(
    c: &mut Cluster,
    trust_domain: &str,
    svc: &Service,
    port: &ServicePort,
    subset: &str,
    policy: &EffectivePolicy<'_>,
    subset_labels: Option<&BTreeMap<String, String>>,
) {
    let sans = mtls::service_sans(trust_domain, svc, subset_labels);
    let sni = mtls::sni(port.number, subset, &svc.hostname);
    match policy.tls.and_then(|t| t.mode) {
        Some(TlsMode::IstioMutual) => {
            // An explicit `sni` (e.g. the host an egress gateway's
            // ISTIO_MUTUAL server is for) replaces Istio's cluster SNI.
            let sni = policy.tls.and_then(|t| t.sni.clone()).unwrap_or(sni);
            c.transport_socket = Some(mtls::upstream_socket(&sans, &sni));
        }
        Some(_) => {}
        None if svc.location == Location::MeshInternal && !sans.is_empty() => {
            c.transport_socket_matches = mtls::auto_mtls_matches(&sans, &sni);
        }
        None => {}
    }
}

fn set_http2(c: &mut Cluster) {
    cluster_policy::apply_connection_pool(c, None, true);
    // Inbound clusters carry no circuit breakers of their own.
    c.circuit_breakers = None;
}

/// The load assignment of a DNS cluster: its endpoints (the host names
/// Envoy resolves) grouped by locality, as Istio groups them, so Envoy
/// knows each host's locality; the service host itself when it has none.
/// With a `client`, the groups get that client's locality priorities or
/// weights (`locality::apply`, as for EDS).
fn dns_assignment(
    name: &str,
    svc: &Service,
    port: &ServicePort,
    subset_labels: Option<&BTreeMap<String, String>>,
    client: Option<(&Client, &Mode<'_>)>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Group<'_>> = BTreeMap::new();
    for e in svc
        .endpoints
        .iter()
        .filter(|e| subset_labels.is_none_or(|s| s.iter().all(|(k, v)| e.labels.get(k) == Some(v))))
    {
        let locality = e.locality.as_deref().unwrap_or_default();
        by_locality
            .entry(locality)
            .or_insert_with(|| Group::new(locality))
            .endpoints
            .push((e, lb_endpoint(&e.address, e.port_for(port), e.weight)));
    }
    let mut groups: Vec<Group<'_>> = by_locality.into_values().collect();
    if groups.is_empty() {
        if svc.endpoints.is_empty() {
            // DNS resolution with no endpoints: Envoy resolves the host itself.
            let lb = lb_endpoint(&svc.hostname, port.target_port.unwrap_or(port.number), None);
            let endpoint = LocalityLbEndpoints {
                lb_endpoints: vec![lb],
                ..Default::default()
            };
            return ClusterLoadAssignment {
                cluster_name: name.to_string(),
                endpoints: vec![endpoint],
                ..Default::default()
            };
        }
        // A subset selecting no endpoint: an empty group, as before.
        groups.push(Group::new(""));
    } else if let Some((client, mode)) = client {
        groups = super::locality::apply(groups, client, mode);
    }
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: groups.into_iter().map(Group::into_envoy).collect(),
        ..Default::default()
    }
}

pub(super) fn lb_endpoint(address: &str, port: u32, weight: Option<u32>) -> LbEndpoint {
    // `unix:///path` endpoints (allowed by Istio for STATIC) are pipes.
    let address = match address.strip_prefix("unix://") {
        Some(path) => envoy_types::pb::envoy::config::core::v3::Address {
            address: Some(
                envoy_types::pb::envoy::config::core::v3::address::Address::Pipe(
                    envoy_types::pb::envoy::config::core::v3::Pipe {
                        path: path.to_string(),
                        mode: 0,
                    },
                ),
            ),
        },
        None => socket_address(address, port),
    };
    LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(
            envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                address: Some(address),
                ..Default::default()
            },
        )),
        load_balancing_weight: weight
            .filter(|w| *w > 0)
            .map(|value| envoy_types::pb::google::protobuf::UInt32Value { value }),
        ..Default::default()
    }
}

/// The ports a workload serves: each port of each service that selects it,
/// as the endpoint port peers dial, with the service port it belongs to.
pub fn inbound_ports<'a>(mesh: &Mesh<'a>, workload: &Workload) -> BTreeMap<u32, Protocol> {
    let mut ports = BTreeMap::new();
    for svc in mesh.registry.services_of(workload) {
        for p in &svc.ports {
            let port = workload
                .ports
                .get(&p.name)
                .copied()
                .or(p.target_port)
                .unwrap_or(p.number);
            ports.entry(port).or_insert(p.protocol);
        }
    }
    ports
}

/// Inbound clusters of one workload: one per inbound listener
/// (`inbound::ports`), to the local app (or where a Sidecar ingress
/// listener's `defaultEndpoint` says).
pub fn inbound(mesh: &Mesh<'_>, workload: &Workload) -> Vec<Cluster> {
    super::inbound::ports(mesh, workload)
        .into_iter()
        .map(|p| {
            let name = inbound_cluster_name(p.port);
            let endpoint = match &p.target {
                super::inbound::Target::Socket { address, port } => {
                    lb_endpoint(address, *port, None)
                }
                super::inbound::Target::Pipe(path) => lb_endpoint(path, 0, None),
            };
            let mut c = Cluster {
                name: name.clone(),
                connect_timeout: Some(PbDuration {
                    seconds: CONNECT_TIMEOUT_SECS,
                    nanos: 0,
                }),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::Static as i32,
                )),
                load_assignment: Some(ClusterLoadAssignment {
                    cluster_name: name,
                    endpoints: vec![LocalityLbEndpoints {
                        lb_endpoints: vec![endpoint],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            };
            let http2 = matches!(p.protocol, Protocol::Http2 | Protocol::Grpc);
            match p.connection_pool {
                // A Sidecar's inbound connection pool, as Istio applies it.
                Some(pool) => cluster_policy::apply_connection_pool(&mut c, Some(pool), http2),
                None if http2 => set_http2(&mut c),
                None => {}
            }
            c
        })
        .collect()
}
