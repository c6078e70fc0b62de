//! Traffic leaving the mesh: Istio's `outboundTrafficPolicy` on the
//! sidecar's outbound route table, and TLS origination with a
//! DestinationRule's `credentialName`.
//!
//! Without iptables there is no original destination to pass traffic
//! through to: an app names its target only in the Host header. So
//! ALLOW_ANY routes unknown hosts to `PassthroughCluster`, an Envoy dynamic
//! forward proxy cluster that resolves the Host header (name or IP, with
//! its port; 80 when none) and connects there, unless the Sidecar names an
//! `egressProxy`: then they go to that service's cluster instead. REGISTRY_ONLY
//! answers them with 502 from the `block_all` route, as Istio does.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, CustomClusterType, DiscoveryType, DnsLookupFamily, LbPolicy},
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::{
    ClusterConfig, cluster_config::ClusterImplementationSpecifier,
};
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig;
use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3::{
    FilterConfig, filter_config::ImplementationSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
};

use super::gateway::{credential_ca_secret, credential_secret, sds};
use super::{CONNECT_TIMEOUT_SECS, Mesh, any, cluster_policy, duration, routes};
use crate::model::istio::{
    ClientTlsSettings, Destination, OutboundMode, SidecarSpec, TlsMode, TrafficPolicy,
};
use crate::model::registry::Workload;

/// Istio's cluster for traffic to hosts outside the registry (ALLOW_ANY).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's cluster that goes nowhere (REGISTRY_ONLY; TCP blocking uses it).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Istio's names of the catch-all virtual host and route.
const ALLOW_ANY: &str = "allow_any";
const BLOCK_ALL: &str = "block_all";
/// The status Istio's `block_all` route answers with.
const BLOCKED_STATUS: u32 = 502;
const DFP_FILTER: &str = "envoy.filters.http.dynamic_forward_proxy";
const DFP_CLUSTER: &str = "envoy.clusters.dynamic_forward_proxy";
/// The DNS cache the filter and the cluster share (same name, same settings).
const DNS_CACHE: &str = "passthrough_dns_cache";

/// The outbound traffic policy of `workload`'s sidecar: the `mode` of the
/// Sidecar resource that applies to it, else the mesh-wide one.
///
/// The Sidecar is the one `scope::select_sidecar` picks for the workload,
/// as for its view's route table (`cache/scope.rs`).
pub fn outbound_mode(mesh: &Mesh<'_>, workload: &Workload) -> OutboundMode {
    let choice =
        super::scope::select_sidecar(mesh.config, &workload.key.namespace, &workload.labels);
    mode_of(mesh, choice.sidecar.map(|(_, s)| s))
}

/// The outbound traffic policy under `sidecar` (the one selected for a
/// proxy, if any), else the mesh-wide one.
pub fn mode_of(mesh: &Mesh<'_>, sidecar: Option<&SidecarSpec>) -> OutboundMode {
    sidecar
        .and_then(|s| s.outbound_traffic_policy.as_ref())
        // A policy without `mode` is REGISTRY_ONLY, the proto's default.
        .map_or(mesh.outbound_policy, |p| p.mode.unwrap_or_default())
}

/// What a sidecar does with traffic for hosts outside the registry: its
/// outbound traffic policy's mode and, under ALLOW_ANY, the Sidecar's
/// `egressProxy` that takes such traffic instead of `PassthroughCluster`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outbound<'a> {
    pub mode: OutboundMode,
    pub egress_proxy: Option<&'a Destination>,
}

impl From<OutboundMode> for Outbound<'_> {
    fn from(mode: OutboundMode) -> Self {
        Outbound {
            mode,
            egress_proxy: None,
        }
    }
}

/// The outbound traffic policy under `sidecar` (the one selected for a
/// proxy, if any), with its `egressProxy`; else the mesh-wide mode.
pub fn policy_of<'a>(mesh: &Mesh<'_>, sidecar: Option<&'a SidecarSpec>) -> Outbound<'a> {
    let egress_proxy = sidecar
        .and_then(|s| s.outbound_traffic_policy.as_ref())
        .and_then(|p| p.egress_proxy.as_ref());
    Outbound {
        mode: mode_of(mesh, sidecar),
        egress_proxy,
    }
}

/// The cluster an `egressProxy` names, as Istio names it: its host as
/// written (Istio resolves no short name here), its subset and port.
pub fn egress_proxy_cluster(proxy: &Destination) -> String {
    let port = proxy.port.as_ref().and_then(|p| p.number).unwrap_or(0);
    let subset = proxy.subset.as_deref().unwrap_or_default();
    super::outbound_cluster_name(port, subset, &proxy.host)
}

/// The outbound route table for sidecars in `namespace` under `policy`:
/// the mesh's virtual hosts, then the catch-all for every other host.
pub fn outbound_routes(
    mesh: &Mesh<'_>,
    namespace: &str,
    policy: Outbound<'_>,
) -> RouteConfiguration {
    // No service's domains are `*` (a ServiceEntry host cannot be), so the
    // catch-all takes exactly the hosts outside the registry.
    let mut rc = routes::outbound(mesh, namespace);
    rc.virtual_hosts.push(catch_all(policy));
    rc
}

/// Sidecars whose `egressProxy` names no cluster their proxies have (the
/// host is not a registry service with that port, their egress hosts do
/// not import it, or its DestinationRule lacks the subset): Envoy answers
/// the requests it should take with 503, as in Istio, so each is reported.
pub fn warnings(mesh: &Mesh<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for (r, sidecar) in mesh.config.sidecars() {
        let Some(proxy) = sidecar
            .outbound_traffic_policy
            .as_ref()
            .filter(|p| p.mode == Some(OutboundMode::AllowAny))
            .and_then(|p| p.egress_proxy.as_ref())
        else {
            continue;
        };
        let port = proxy.port.as_ref().and_then(|p| p.number).unwrap_or(0);
        let subset = proxy.subset.as_deref().filter(|s| !s.is_empty());
        let scope =
            super::scope::Scope::new(mesh.config, mesh.registry, &r.namespace, Some((r, sidecar)));
        let problem = match mesh.registry.services.get(proxy.host.as_str()) {
            None => "is not a service in the registry (a ServiceEntry host, written in full)"
                .to_string(),
            Some(svc) if !svc.ports.iter().any(|p| p.number == port) => {
                format!("has no port {port}")
            }
            Some(_)
                if !scope
                    .reachable
                    .get(proxy.host.as_str())
                    .is_some_and(|p| p.contains(port)) =>
            {
                "is not imported by the Sidecar's egress hosts (or not exported to its namespace)"
                    .to_string()
            }
            Some(svc) => {
                let scoped = mesh.with_scope(&scope);
                let rule = scoped.destination_rule(&svc.hostname, &svc.namespace);
                match subset {
                    Some(name)
                        if !rule
                            .is_some_and(|(_, dr)| dr.subsets.iter().any(|s| s.name == name)) =>
                    {
                        format!("has no subset {name} in a DestinationRule this Sidecar sees")
                    }
                    _ => continue,
                }
            }
        };
        out.push(format!(
            "Sidecar {}/{} spec.outboundTrafficPolicy.egressProxy: {} {problem}: requests for hosts outside the registry get 503 (no cluster {})",
            r.namespace,
            r.name,
            proxy.host,
            egress_proxy_cluster(proxy)
        ));
    }
    out
}

fn catch_all(policy: Outbound<'_>) -> VirtualHost {
    let (name, action) = match policy.mode {
        OutboundMode::AllowAny => (
            ALLOW_ANY,
            Action::Route(RouteAction {
                // Validation allows an egressProxy only under ALLOW_ANY, as Istio.
                cluster_specifier: Some(ClusterSpecifier::Cluster(
                    policy
                        .egress_proxy
                        .map_or_else(|| PASSTHROUGH_CLUSTER.to_string(), egress_proxy_cluster),
                )),
                timeout: Some(duration(std::time::Duration::ZERO)),
                ..Default::default()
            }),
        ),
        OutboundMode::RegistryOnly => (
            BLOCK_ALL,
            Action::DirectResponse(DirectResponseAction {
                status: BLOCKED_STATUS,
                ..Default::default()
            }),
        ),
    };
    VirtualHost {
        name: name.to_string(),
        domains: vec!["*".to_string()],
        routes: vec![Route {
            name: name.to_string(),
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                ..Default::default()
            }),
            action: Some(action),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn dns_cache() -> DnsCacheConfig {
    DnsCacheConfig {
        name: DNS_CACHE.to_string(),
        dns_lookup_family: DnsLookupFamily::V4Only as i32,
        ..Default::default()
    }
}

/// The HTTP filter that resolves the Host header for routes to
/// `PassthroughCluster`; requests routed to other clusters pass it untouched.
pub fn passthrough_filter() -> HttpFilter {
    super::listeners::http_filter(
        DFP_FILTER,
        any(&FilterConfig {
            implementation_specifier: Some(ImplementationSpecifier::DnsCacheConfig(dns_cache())),
            ..Default::default()
        }),
    )
}

/// `PassthroughCluster` (a dynamic forward proxy) and `BlackHoleCluster`
/// (no endpoints), which every sidecar has, as in Istio.
pub fn clusters() -> Vec<Cluster> {
    let connect_timeout = Some(duration(std::time::Duration::from_secs(
        CONNECT_TIMEOUT_SECS as u64,
    )));
    let mut passthrough = Cluster {
        name: PASSTHROUGH_CLUSTER.to_string(),
        connect_timeout,
        lb_policy: LbPolicy::ClusterProvided as i32,
        cluster_discovery_type: Some(ClusterDiscoveryType::ClusterType(CustomClusterType {
            name: DFP_CLUSTER.to_string(),
            typed_config: Some(any(&ClusterConfig {
                cluster_implementation_specifier: Some(
                    ClusterImplementationSpecifier::DnsCacheConfig(dns_cache()),
                ),
                ..Default::default()
            })),
        })),
        ..Default::default()
    };
    cluster_policy::apply_connection_pool(&mut passthrough, None, false);
    let blackhole = Cluster {
        name: BLACKHOLE_CLUSTER.to_string(),
        connect_timeout,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: BLACKHOLE_CLUSTER.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![passthrough, blackhole]
}

/// The upstream TLS context of a SIMPLE or MUTUAL policy naming a
/// `credentialName`: the client key pair (MUTUAL) and the CA that verifies
/// the server come over SDS (`credential://NAME`, `credential://NAME-cacert`),
/// the server's names are checked against `subjectAltNames`, and `sni` is sent.
pub fn credential_tls(tls: &ClientTlsSettings, name: &str) -> UpstreamTlsContext {
    let mut common = CommonTlsContext::default();
    if tls.mode == Some(TlsMode::Mutual) {
        common.tls_certificate_sds_secret_configs = vec![sds(credential_secret(name))];
    }
    if !tls.insecure_skip_verify.unwrap_or(false) {
        common.validation_context_type = Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: cluster_policy::dns_san_matchers(
                        &tls.subject_alt_names,
                    ),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds(credential_ca_secret(name))),
                ..Default::default()
            },
        ));
    }
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// The `credentialName`s a sidecar in `namespace` may be sent: those named
/// by SIMPLE or MUTUAL policies of DestinationRules in its own namespace
/// (Istio only lets a sidecar use secrets of its own namespace; the flat
/// credentials directory stands in for the namespace of the rule naming it).
pub fn sidecar_credential_names(mesh: &Mesh<'_>, namespace: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (r, dr) in mesh.config.destination_rules() {
        if r.namespace != namespace {
            continue;
        }
        let policies = dr
            .traffic_policy
            .iter()
            .chain(dr.subsets.iter().filter_map(|s| s.traffic_policy.as_ref()));
        for p in policies {
            out.extend(policy_credentials(p));
        }
    }
    out
}

/// The `credentialName`s a gateway proxy in `namespace` originates TLS
/// with: those named by SIMPLE or MUTUAL policies of the DestinationRules
/// its clusters use (looked up from its namespace, exportTo applied, as for
/// its clusters). As in Istio, a gateway reads them from its own namespace
/// (in Kubernetes mode; the flat credentials directory in file mode), so
/// the rule naming one may live in any namespace that exports it there.
pub fn gateway_credential_names(mesh: &Mesh<'_>, namespace: &str) -> BTreeSet<String> {
    let scope = super::scope::Scope::new(mesh.config, mesh.registry, namespace, None);
    let scoped = mesh.with_scope(&scope);
    let mut rules: Vec<*const crate::model::Resource> = Vec::new();
    let mut out = BTreeSet::new();
    for host in scope.reachable.keys() {
        let Some(svc) = mesh.registry.services.get(*host) else {
            continue;
        };
        let Some((r, dr)) = scoped.destination_rule(&svc.hostname, &svc.namespace) else {
            continue;
        };
        if rules.contains(&std::ptr::from_ref(r)) {
            continue;
        }
        rules.push(r);
        let policies = dr
            .traffic_policy
            .iter()
            .chain(dr.subsets.iter().filter_map(|s| s.traffic_policy.as_ref()));
        for p in policies {
            out.extend(policy_credentials(p));
        }
    }
    out
}

fn policy_credentials(p: &TrafficPolicy) -> impl Iterator<Item = String> + '_ {
    p.tls
        .iter()
        .chain(p.port_level_settings.iter().filter_map(|s| s.tls.as_ref()))
        .filter(|t| matches!(t.mode, Some(TlsMode::Simple | TlsMode::Mutual)))
        .filter_map(|t| t.credential_name.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::parse_file;
    use crate::model::{ConfigSnapshot, Registry, WorkloadKey};

    const WORKLOADS: &str = "
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: plain, namespace: default}
spec: {address: 127.0.0.11, labels: {app: plain}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: legacy, namespace: default}
spec: {address: 127.0.0.12, labels: {app: legacy}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: other}
spec: {address: 127.0.0.13, labels: {app: legacy}}
";

    fn mk_mesh(text: &str) -> (ConfigSnapshot, Registry) {
        let parsed = parse_file(std::path::Path::new("in.yaml"), text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let mut config = ConfigSnapshot::default();
        for r in parsed.resources {
            config.resources.insert(r.key(), Arc::new(r));
        }
        let registry = Registry::build(&config);
        (config, registry)
    }

    fn mode_of(mesh: &Mesh<'_>, ns: &str, name: &str) -> OutboundMode {
        let key = WorkloadKey {
            namespace: ns.into(),
            name: name.into(),
        };
        outbound_mode(mesh, &mesh.registry.workloads[&key])
    }

    #[test]
    fn sidecar_selector_then_namespace_then_root_then_mesh() {
        let (config, registry) = mk_mesh(WORKLOADS);
        let mesh = Mesh::new(&config, &registry);
        assert_eq!(mode_of(&mesh, "default", "plain"), OutboundMode::AllowAny);
        let mesh = mesh.with_outbound_policy(OutboundMode::RegistryOnly);
        assert_eq!(
            mode_of(&mesh, "default", "plain"),
            OutboundMode::RegistryOnly
        );

        let text = format!(
            "{WORKLOADS}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: istio-system}}
spec: {{outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec: {{outboundTrafficPolicy: {{mode: ALLOW_ANY}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: legacy, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: legacy}}}}
  outboundTrafficPolicy: {{}}
"
        );
        let (config, registry) = mk_mesh(&text);
        let mesh = Mesh::new(&config, &registry);
        // The namespace's Sidecar, over the root namespace's.
        assert_eq!(mode_of(&mesh, "default", "plain"), OutboundMode::AllowAny);
        // A selecting Sidecar wins; a policy without mode is REGISTRY_ONLY.
        assert_eq!(
            mode_of(&mesh, "default", "legacy"),
            OutboundMode::RegistryOnly
        );
        // Another namespace: the root namespace's; selectors stay in their namespace.
        assert_eq!(mode_of(&mesh, "other", "other"), OutboundMode::RegistryOnly);
    }

    #[test]
    fn catch_all_follows_the_mode() {
        let (config, registry) = mk_mesh(WORKLOADS);
        let mesh = Mesh::new(&config, &registry);
        let last = |mode| {
            let rc = outbound_routes(&mesh, "default", Outbound::from(mode));
            rc.virtual_hosts.last().cloned().unwrap()
        };
        let allow = last(OutboundMode::AllowAny);
        assert_eq!(
            (allow.name.as_str(), allow.domains.as_slice()),
            ("allow_any", &["*".to_string()][..])
        );
        assert!(matches!(
            &allow.routes[0].action,
            Some(Action::Route(RouteAction { cluster_specifier: Some(ClusterSpecifier::Cluster(c)), .. })) if c == PASSTHROUGH_CLUSTER
        ));
        let block = last(OutboundMode::RegistryOnly);
        assert_eq!(block.name, "block_all");
        assert!(matches!(
            &block.routes[0].action,
            Some(Action::DirectResponse(d)) if d.status == 502
        ));
    }

    #[test]
    fn egress_proxy_takes_the_catch_all_under_allow_any() {
        let text = format!(
            "{WORKLOADS}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {{host: squid.proxies.test, subset: v1, port: {{number: 3128}}}}
"
        );
        let (config, registry) = mk_mesh(&text);
        let mesh = Mesh::new(&config, &registry).with_outbound_policy(OutboundMode::RegistryOnly);
        let sidecar = config.sidecars().next().map(|(_, s)| s);
        let policy = policy_of(&mesh, sidecar);
        assert_eq!(policy.mode, OutboundMode::AllowAny);
        let rc = outbound_routes(&mesh, "default", policy);
        let last = rc.virtual_hosts.last().unwrap();
        assert_eq!(last.name, "allow_any");
        assert!(matches!(
            &last.routes[0].action,
            Some(Action::Route(RouteAction { cluster_specifier: Some(ClusterSpecifier::Cluster(c)), .. }))
                if c == "outbound|3128|v1|squid.proxies.test"
        ));
        // Without a Sidecar: the mesh-wide mode, no egress proxy.
        assert_eq!(policy_of(&mesh, None), OutboundMode::RegistryOnly.into());
    }

    #[test]
    fn gateways_get_the_credentials_of_the_rules_their_clusters_use() {
        let mut text = String::from(WORKLOADS);
        for host in ["a", "b", "c"] {
            text.push_str(&format!(
                "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}, namespace: default}}
spec:
  hosts: [{host}.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
"
            ));
        }
        text.push_str(
            "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec:
  host: a.example.com
  trafficPolicy: {tls: {mode: SIMPLE, credentialName: a-ca}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: istio-system}
spec:
  host: b.example.com
  exportTo: [.]
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL, credentialName: b-client}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: c, namespace: other}
spec:
  host: c.example.com
  exportTo: [other]
  trafficPolicy: {tls: {mode: SIMPLE, credentialName: c-ca}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: c-here, namespace: istio-system}
spec:
  host: c.example.com
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
",
        );
        let (config, registry) = mk_mesh(&text);
        let mesh = Mesh::new(&config, &registry);
        let names = |ns| {
            gateway_credential_names(&mesh, ns)
                .into_iter()
                .collect::<Vec<_>>()
        };
        // A gateway in istio-system: the rule exported to it from `default`
        // and its own namespace's; not `other`'s (hidden), nor ISTIO_MUTUAL.
        assert_eq!(names("istio-system"), ["a-ca", "b-client"]);
        // In `other` its own rule for c wins; b's rule is not exported there.
        assert_eq!(names("other"), ["a-ca", "c-ca"]);
    }

    #[test]
    fn sidecars_get_only_their_namespace_credentials() {
        let text = format!(
            "{WORKLOADS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: a, namespace: default}}
spec:
  host: a.example.com
  trafficPolicy:
    tls: {{mode: SIMPLE, credentialName: a-ca}}
    portLevelSettings:
    - port: {{number: 443}}
      tls: {{mode: MUTUAL, credentialName: a-client}}
  subsets:
  - name: v1
    labels: {{v: '1'}}
    trafficPolicy: {{tls: {{mode: SIMPLE, credentialName: a-subset}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: b, namespace: other}}
spec:
  host: b.example.com
  trafficPolicy: {{tls: {{mode: SIMPLE, credentialName: b-ca}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: c, namespace: default}}
spec:
  host: c.example.com
  trafficPolicy: {{tls: {{mode: DISABLE, credentialName: unused}}}}
"
        );
        let (config, registry) = mk_mesh(&text);
        let mesh = Mesh::new(&config, &registry);
        let names = |ns| {
            sidecar_credential_names(&mesh, ns)
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(names("default"), ["a-ca", "a-client", "a-subset"]);
        assert_eq!(names("other"), ["b-ca"]);
        assert!(names("third").is_empty());
    }
}
