//! Outbound TCP and TLS listeners of a sidecar, without iptables or VIPs.
//!
//! HTTP leaves a sidecar through its one `OUTBOUND_PORT` listener, routed by
//! Host header. Opaque TCP and TLS carry no Host header, so, like Istio's
//! Sidecar egress listeners with `captureMode: NONE`, each non-HTTP service
//! port gets its own listener on the sidecar's address at the service port
//! (`127.0.0.11:9000`): the app connects there. The binding rule:
//!
//! * one listener per port; a port that is one of the workload's inbound
//!   ports (or one of the proxy's own ports, `RESERVED_PORTS`) gets none;
//! * one TCP service on a port: its `tcp` routes (or the service itself);
//!   two or more TCP services on one port cannot be told apart without a
//!   VIP per service: as Istio does on its wildcard listener, the first in
//!   Istio's service order (`Service::istio_order`: oldest, then name, then
//!   namespace) keeps the port and the others are reported as conflicts
//!   (Istio's `pilot_conflict_outbound_listener_tcp_over_current_tcp`);
//! * TLS services (TLS, HTTPS) on a port share one listener: a filter chain
//!   per `tls` route match chosen by SNI (`sniHosts`), else by the service's
//!   host name; the TCP service on the same port takes the connections no
//!   SNI chain takes.
//!
//! Rules follow Istio's order: the first `tcp` route whose match applies
//! (port, `sourceLabels`, `sourceNamespace`, `gateways: [mesh]`) is the
//! catch-all; matches with `destinationSubnets` become filter chains on the
//! destination address (the address the app connected to: here the
//! sidecar's own), which Envoy prefers over the catch-all. Every `tls` match
//! that applies is a chain by SNI; an SNI taken by an earlier chain stays
//! with it. Forwarding is a `tcp_proxy` to the route's (weighted)
//! destinations, with the source-reporter TCP access log.
//!
//! Like HTTP routes, they follow the proxy's Sidecar scope: only services
//! its egress hosts import (and exportTo shows it) get a listener, and
//! only VirtualServices within those hosts apply. A Sidecar egress listener
//! with a `port` gets its own listener there (`sidecar_egress`).
//!
//! The listeners depend on the services, VirtualServices, Sidecar and
//! Telemetry access logs, and on the proxy only through its scope (namespace
//! and Sidecar) and the outcome of source-dependent matches: `view_key`
//! names that view, and `template` builds the listeners once per view,
//! unbound; `bind` puts one workload's address on them.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};

use super::listeners::listener_name;
use super::routes::virtual_service_for;
use super::scope::{Scope, ScopeKey, select_sidecar};
use super::{
    Mesh, OUTBOUND_PORT, access_log, l4, mtls, outbound_cluster_name, sidecar_egress,
    socket_address,
};
use crate::model::istio::{
    L4MatchAttributes, Resolution, RouteDestination, SidecarSpec, TlsMatchAttributes,
    VirtualServiceSpec,
};
use crate::model::registry::{Protocol, Service, ServicePort, Workload};
use crate::model::{ConfigSnapshot, Resource};

/// The gateway name that means "sidecars" in a VirtualService's `gateways`.
const MESH_GATEWAY: &str = "mesh";

/// Ports the proxy itself uses (Istio's reserved proxy ports: admin 15000,
/// outbound 15001, ...): never an outbound TCP listener.
pub const RESERVED_PORTS: &[u32] = &[
    15000,
    OUTBOUND_PORT,
    15004,
    15006,
    15008,
    15009,
    15020,
    15021,
    15053,
    15090,
];

/// Who opens the connection, as far as route matches care.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl<'a> Source<'a> {
    pub fn of(w: &'a Workload) -> Self {
        Source {
            namespace: &w.key.namespace,
            labels: &w.labels,
        }
    }

    fn admits(
        &self,
        labels: &BTreeMap<String, String>,
        namespace: Option<&str>,
        gateways: &[String],
    ) -> bool {
        labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
            && namespace.is_none_or(|ns| ns == self.namespace)
            && (gateways.is_empty() || gateways.iter().any(|g| g == MESH_GATEWAY))
    }
}

/// One outbound listener, not yet bound to an address.
#[derive(Clone, Debug)]
pub struct PortListener {
    pub port: u32,
    /// The address to bind (a Sidecar egress listener's `bind`: an IP or
    /// `unix:///path`); None: the workload's own.
    pub bind: Option<String>,
    /// A Sidecar egress listener's: it takes its address and port from the
    /// catch-all's listeners.
    pub egress: bool,
    /// The services it forwards to (for messages).
    pub hosts: Vec<String>,
    pub listener: Listener,
}

/// A TCP service left out of a port another TCP service keeps (Istio's
/// TCP-over-TCP listener conflict).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Conflict {
    /// The listener's bind (a Sidecar egress listener's; None: the
    /// sidecar's own address) and port.
    pub bind: Option<String>,
    pub port: u32,
    /// The service that keeps the port.
    pub kept: String,
    /// The service left out, and its ServiceEntry (`namespace/name`).
    pub left_out: String,
    pub source: String,
}

impl Conflict {
    /// What a user reads in the log and on /debug/config_errors.
    pub fn message(&self) -> String {
        format!(
            "TCP services {} and {} share outbound port {}{}; without a VIP per service one port forwards to one TCP service: {} (first in Istio's order: oldest creationTimestamp, then name, then namespace) keeps it and {} is left out (pilot_conflict_outbound_listener_tcp_over_current_tcp); give one a Sidecar egress listener with its own bind to reach it",
            self.kept,
            self.left_out,
            self.port,
            self.bind
                .as_deref()
                .map(|b| format!(" (bind {b})"))
                .unwrap_or_default(),
            self.kept,
            self.left_out,
        )
    }
}

/// The outbound TCP/TLS listeners of one view, shared by every sidecar
/// whose `view_key` is equal.
#[derive(Clone, Debug, Default)]
pub struct Template {
    pub listeners: Vec<PortListener>,
    /// Ports left without a listener, and why.
    pub warnings: Vec<String>,
    /// TCP services left out of a port another TCP service keeps.
    pub conflicts: Vec<Conflict>,
    /// Hash of the listeners' content: equal means the same template.
    pub version: u64,
}

/// The key of the view `workload`'s outbound TCP/TLS listeners depend on:
/// its Sidecar scope (namespace and `sidecar`, the one that applies to it),
/// with in `source` a hash of what differs between proxies of one scope
/// (the outcome of every `tcp`/`tls` match on `sourceLabels` or
/// `sourceNamespace`, the Telemetry access log on client traffic, and the
/// tracing of its HTTP egress listeners; 0 when none of that applies).
/// Sidecars with equal keys share one `template`.
pub fn view_key(
    mesh: &Mesh<'_>,
    workload: &Workload,
    sidecar: Option<(&Resource, &SidecarSpec)>,
    matches: &SourceMatches<'_>,
) -> ScopeKey {
    let src = Source::of(workload);
    let mut h = std::hash::DefaultHasher::new();
    let mut special = false;
    for (labels, ns, gateways) in &matches.0 {
        special = true;
        src.admits(labels, *ns, gateways).hash(&mut h);
    }
    if let Some(log) = telemetry_log(mesh, src) {
        special = true;
        prost::Message::encode_to_vec(&log).hash(&mut h);
    }
    if sidecar_egress::ports(sidecar)
        .iter()
        .any(|e| e.protocol.is_http())
        && let Some(t) = sidecar_egress::tracing(mesh, src)
    {
        special = true;
        prost::Message::encode_to_vec(&t).hash(&mut h);
    }
    ScopeKey {
        namespace: src.namespace.to_string(),
        sidecar: sidecar.map(|(r, _)| format!("{}/{}", r.namespace, r.name)),
        source: if special { h.finish().max(1) } else { 0 },
    }
}

/// Every `tcp`/`tls` match of the mesh's VirtualServices that depends on
/// the client (`sourceLabels`, `sourceNamespace`), in order: gathered once
/// per translation, so `view_key` does not walk every VirtualService for
/// every workload.
pub struct SourceMatches<'c>(Vec<SourceMatch<'c>>);

/// A match's `sourceLabels`, `sourceNamespace` and `gateways`.
type SourceMatch<'c> = (&'c BTreeMap<String, String>, Option<&'c str>, &'c [String]);

impl<'c> SourceMatches<'c> {
    pub fn of(config: &'c ConfigSnapshot) -> Self {
        let mut v = Vec::new();
        for (_, spec) in mesh_virtual_services(config) {
            let tcp = spec.tcp.iter().flat_map(|r| &r.r#match).map(|m| {
                (
                    &m.source_labels,
                    m.source_namespace.as_deref(),
                    m.gateways.as_slice(),
                )
            });
            let tls = spec.tls.iter().flat_map(|r| &r.r#match).map(|m| {
                (
                    &m.source_labels,
                    m.source_namespace.as_deref(),
                    m.gateways.as_slice(),
                )
            });
            v.extend(
                tcp.chain(tls)
                    .filter(|(l, ns, _)| !l.is_empty() || ns.is_some()),
            );
        }
        SourceMatches(v)
    }
}

fn mesh_virtual_services(
    config: &ConfigSnapshot,
) -> impl Iterator<Item = (&Resource, &VirtualServiceSpec)> {
    config.virtual_services().filter(|(_, s)| {
        (!s.tcp.is_empty() || !s.tls.is_empty())
            && (s.gateways.is_empty() || s.gateways.iter().any(|g| g == MESH_GATEWAY))
    })
}

/// The Telemetry API's own access log on client traffic, if one applies.
pub(super) fn telemetry_log(mesh: &Mesh<'_>, src: Source<'_>) -> Option<AccessLog> {
    let chain =
        crate::model::telemetry::resolve::applicable(mesh.config, src.namespace, src.labels);
    access_log::telemetry_log(&chain, true)
}

/// Whether a port is carried as TLS (routed by SNI) or opaque TCP.
fn is_tls(p: &ServicePort) -> bool {
    matches!(p.protocol, Protocol::Tls | Protocol::Https)
}

/// The outbound TCP/TLS listeners for proxies of `src`'s view, unbound:
/// `mesh` is scoped to the view (its Sidecar's egress hosts and exportTo:
/// a service it does not import gets no listener), and `sidecar`'s egress
/// listeners with a `port` get their own listener on that port (see
/// `sidecar_egress`), which the catch-all's services then leave alone.
pub fn template(
    mesh: &Mesh<'_>,
    src: Source<'_>,
    sidecar: Option<(&Resource, &SidecarSpec)>,
) -> Template {
    let egress_ports = sidecar_egress::ports(sidecar);
    // Ports an egress listener takes on the sidecar's own address (one
    // with a `bind` of its own takes that address's port only: `bind`).
    let claimed: BTreeSet<u32> = egress_ports
        .iter()
        .filter(|e| e.bind.is_none() && e.listens())
        .map(|e| e.port)
        .collect();
    let mut by_port: BTreeMap<u32, Vec<(&Service, &ServicePort)>> = BTreeMap::new();
    let mut out = Template::default();
    for svc in mesh.registry.services.values() {
        for p in svc.ports.iter().filter(|p| !p.protocol.is_http()) {
            if claimed.contains(&p.number) || !mesh.routes_to(&svc.hostname, p.number) {
                continue; // an egress listener's own port, or not imported
            }
            if svc.resolution == Resolution::None {
                out.warnings.push(none_warning(svc, p.number));
                continue;
            }
            by_port.entry(p.number).or_default().push((svc, p));
        }
    }
    let logs = logs(mesh, src);
    for (port, services) in by_port {
        out.listeners.extend(port_listener(
            mesh,
            src,
            port,
            services,
            &logs,
            &mut out.warnings,
            &mut out.conflicts,
        ));
    }
    if let Some(sidecar) = sidecar {
        for e in &egress_ports {
            out.listeners.extend(sidecar_egress::listener(
                mesh,
                src,
                sidecar,
                e,
                &logs,
                &mut out.warnings,
                &mut out.conflicts,
            ));
        }
    }
    let mut h = std::hash::DefaultHasher::new();
    for l in &out.listeners {
        l.port.hash(&mut h);
        l.bind.hash(&mut h);
        l.egress.hash(&mut h);
        prost::Message::encode_to_vec(&l.listener).hash(&mut h);
    }
    out.conflicts.hash(&mut h);
    out.version = h.finish();
    out
}

/// The access logs of an outbound TCP listener for `src`.
fn logs(mesh: &Mesh<'_>, src: Source<'_>) -> Vec<AccessLog> {
    std::iter::once(access_log::tcp_outbound())
        .chain(telemetry_log(mesh, src))
        .collect()
}

pub(super) fn none_warning(svc: &Service, port: u32) -> String {
    format!(
        "outbound port {port} ({}): resolution NONE forwards to the original destination, which without iptables is the sidecar's own listener: no outbound listener",
        svc.hostname
    )
}

/// The listener of one port for `services` (non-HTTP ports of services
/// that are not of resolution NONE), if any, by the rule in the module doc;
/// TCP services left out go to `conflicts` (and `warnings`).
pub(super) fn port_listener(
    mesh: &Mesh<'_>,
    src: Source<'_>,
    port: u32,
    services: Vec<(&Service, &ServicePort)>,
    logs: &[AccessLog],
    warnings: &mut Vec<String>,
    conflicts: &mut Vec<Conflict>,
) -> Option<PortListener> {
    let hosts: Vec<String> = services.iter().map(|(s, _)| s.hostname.clone()).collect();
    if RESERVED_PORTS.contains(&port) {
        warnings.push(format!(
            "outbound port {port} ({}) is one of the proxy's own ports: no outbound listener",
            hosts.join(", ")
        ));
        return None;
    }
    let (tls, mut tcp): (Vec<_>, Vec<_>) = services.into_iter().partition(|(_, p)| is_tls(p));
    tcp.sort_by(|a, b| a.0.istio_order().cmp(&b.0.istio_order()));
    // Each chain with the service it came from; TLS chains first (they
    // match by SNI, so TCP ones rarely meet them).
    let mut chains: Vec<(FilterChain, &Service)> = Vec::new();
    for (svc, p) in &tls {
        for c in tls_chains(mesh, src, svc, p, logs, warnings) {
            chains.push((c, *svc));
        }
    }
    for (svc, p) in &tcp {
        for c in tcp_chains(mesh, src, svc, p, logs, warnings) {
            chains.push((c, *svc));
        }
    }
    let (chains, lost) = distinct_chains(chains);
    let mut reported = BTreeSet::new();
    for (left_out, kept) in lost {
        if is_tls_service(left_out, port) || !reported.insert(&left_out.hostname) {
            continue;
        }
        let c = Conflict {
            bind: None,
            port,
            kept: kept.hostname.clone(),
            left_out: left_out.hostname.clone(),
            source: left_out.source.clone(),
        };
        warnings.push(c.message());
        conflicts.push(c);
    }
    if chains.is_empty() {
        return None;
    }
    let mut listener = Listener {
        filter_chains: chains,
        ..Default::default()
    };
    if !tls.is_empty() {
        listener.listener_filters = vec![mtls::tls_inspector()];
        // A client of the TCP service may wait for the server to speak first.
        if !tcp.is_empty() {
            listener.continue_on_listener_filters_timeout = true;
        }
    }
    Some(PortListener {
        port,
        bind: None,
        egress: false,
        hosts,
        listener,
    })
}

fn is_tls_service(svc: &Service, port: u32) -> bool {
    svc.port(port).is_some_and(is_tls)
}

/// The template's listeners on `workload`'s address, leaving out its
/// inbound ports; and what was left out.
pub fn bind(mesh: &Mesh<'_>, t: &Template, workload: &Workload) -> (Vec<Listener>, Vec<String>) {
    let inbound = super::inbound::ports_on_address(mesh, workload);
    let address_of = |pl: &PortListener| pl.bind.clone().unwrap_or(workload.address.clone());
    // What egress listeners with a port bind: the catch-all leaves it alone.
    let egress: BTreeSet<(String, u32)> = t
        .listeners
        .iter()
        .filter(|pl| pl.egress)
        .map(|pl| (address_of(pl), pl.port))
        .collect();
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for pl in &t.listeners {
        let address = address_of(pl);
        if !pl.egress && egress.contains(&(address.clone(), pl.port)) {
            continue;
        }
        if let Some(path) = address.strip_prefix(UNIX_PREFIX) {
            let mut l = pl.listener.clone();
            l.name = listener_name(&address, pl.port);
            l.address = Some(pipe_address(path));
            out.push(l);
            continue;
        }
        if address == workload.address && inbound.contains(&pl.port) {
            warnings.push(format!(
                "sidecar {}: no outbound listener on port {} ({}): it is one of the workload's inbound ports",
                workload.key,
                pl.port,
                pl.hosts.join(", ")
            ));
            continue;
        }
        let mut l = pl.listener.clone();
        l.name = listener_name(&address, pl.port);
        l.address = Some(socket_address(&address, pl.port));
        out.push(l);
    }
    (out, warnings)
}

/// Istio's prefix of a unix domain socket address (`unix:///path`).
pub const UNIX_PREFIX: &str = "unix://";

/// An Envoy pipe (unix domain socket) address at `path` (`@name`: abstract).
pub fn pipe_address(path: &str) -> envoy_types::pb::envoy::config::core::v3::Address {
    use envoy_types::pb::envoy::config::core::v3::{Address, Pipe, address};
    Address {
        address: Some(address::Address::Pipe(Pipe {
            path: path.to_string(),
            mode: 0,
        })),
    }
}

/// Inputs of `bind` besides the template: equal means the same output.
pub fn bind_input(mesh: &Mesh<'_>, t: &Template, workload: &Workload) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    t.version.hash(&mut h);
    workload.address.hash(&mut h);
    for p in super::inbound::ports_on_address(mesh, workload) {
        p.hash(&mut h);
    }
    h.finish()
}

/// The Sidecar that applies to a sidecar `workload`, if any.
fn sidecar_of<'a>(mesh: &Mesh<'a>, w: &Workload) -> Option<(&'a Resource, &'a SidecarSpec)> {
    select_sidecar(mesh.config, &w.key.namespace, &w.labels).sidecar
}

/// `workload`'s outbound TCP/TLS listeners (for tests and tools; the xDS
/// cache shares the template between sidecars).
pub fn for_workload(mesh: &Mesh<'_>, workload: &Workload) -> Vec<Listener> {
    let sidecar = sidecar_of(mesh, workload);
    let scope = Scope::new(mesh.config, mesh.registry, &workload.key.namespace, sidecar);
    let scoped = mesh.with_scope(&scope);
    bind(
        mesh,
        &template(&scoped, Source::of(workload), sidecar),
        workload,
    )
    .0
}

/// Everything left out of the sidecars' outbound TCP/TLS listeners, and
/// why: a port's problem once per view (`view_key`), an inbound port per
/// workload. Gateway proxies have no such listeners.
pub fn warnings(mesh: &Mesh<'_>) -> Vec<String> {
    report(mesh).warnings
}

/// `warnings`, and the TCP conflicts of every view (once each).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub warnings: Vec<String>,
    pub conflicts: BTreeSet<Conflict>,
}

/// The `Report` of every sidecar's outbound TCP/TLS listeners.
pub fn report(mesh: &Mesh<'_>) -> Report {
    let mut templates: BTreeMap<ScopeKey, Template> = BTreeMap::new();
    let mut ports = BTreeSet::new();
    let mut conflicts = BTreeSet::new();
    let mut out = Vec::new();
    let matches = SourceMatches::of(mesh.config);
    for w in mesh.registry.workloads.values() {
        if super::gateway::is_gateway(mesh, w) {
            continue;
        }
        let sidecar = sidecar_of(mesh, w);
        let view = view_key(mesh, w, sidecar, &matches);
        let t = templates.entry(view.clone()).or_insert_with(|| {
            let scope = Scope::new(mesh.config, mesh.registry, &w.key.namespace, sidecar);
            let t = template(&mesh.with_scope(&scope), Source::of(w), sidecar);
            let who = match &view.sidecar {
                Some(s) => format!("sidecars in namespace {} (Sidecar {s})", view.namespace),
                None => format!("sidecars in namespace {}", view.namespace),
            };
            ports.extend(t.warnings.iter().map(|m| format!("{who}: {m}")));
            conflicts.extend(t.conflicts.iter().cloned());
            t
        });
        out.extend(bind(mesh, t, w).1);
    }
    Report {
        warnings: ports.into_iter().chain(out).collect(),
        conflicts,
    }
}

/// The `tcp_proxy` chain of one route, if it forwards anywhere.
fn chain(
    filter_chain_match: Option<FilterChainMatch>,
    stat_prefix: &str,
    clusters: &[(String, u32)],
    logs: &[AccessLog],
) -> Option<FilterChain> {
    let f = l4::tcp_proxy_to(stat_prefix.to_string(), clusters, logs.to_vec())?;
    Some(FilterChain {
        filter_chain_match,
        filters: vec![f],
        ..Default::default()
    })
}

/// `destinationSubnets` as prefix ranges; an invalid one is reported and
/// the whole match left out (None), rather than sent to Envoy.
fn subnets(
    vs: &Resource,
    subnets: &[String],
    warnings: &mut Vec<String>,
) -> Option<Vec<CidrRange>> {
    let mut out = Vec::new();
    for s in subnets {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.as_str(), None),
        };
        let max = match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => 32,
            Ok(std::net::IpAddr::V6(_)) => 128,
            Err(_) => 0,
        };
        let ok = max > 0 && len.is_none_or(|l| l.parse::<u32>().is_ok_and(|l| l <= max));
        if !ok {
            warnings.push(format!(
                "VirtualService {}/{}: destinationSubnets {s:?} is not an IP address or CIDR; match left out",
                vs.namespace, vs.name
            ));
            return None;
        }
        out.push(super::authz::cidr(s));
    }
    Some(out)
}

/// The chains of a TCP service port: the first applicable `tcp` route of
/// its VirtualService (see the module doc), else the service itself.
fn tcp_chains(
    mesh: &Mesh<'_>,
    src: Source<'_>,
    svc: &Service,
    port: &ServicePort,
    logs: &[AccessLog],
    warnings: &mut Vec<String>,
) -> Vec<FilterChain> {
    let stat = outbound_cluster_name(port.number, "", &svc.hostname);
    let mut out = Vec::new();
    if let Some((vs, spec)) = virtual_service_for(mesh, &svc.hostname) {
        for rule in &spec.tcp {
            let dests = forwardable(mesh, vs, &rule.route);
            let clusters = l4::route_clusters(mesh, vs, &dests, port.number);
            if rule.r#match.is_empty() {
                out.extend(chain(None, &stat, &clusters, logs));
                return out;
            }
            let mut ranges = Vec::new();
            for m in rule.r#match.iter().filter(|m| applies(src, m, port.number)) {
                if m.destination_subnets.is_empty() {
                    out.extend(chain(None, &stat, &clusters, logs));
                    return out;
                }
                ranges.extend(subnets(vs, &m.destination_subnets, warnings).unwrap_or_default());
            }
            if !ranges.is_empty() {
                let m = FilterChainMatch {
                    prefix_ranges: ranges,
                    ..Default::default()
                };
                out.extend(chain(Some(m), &stat, &clusters, logs));
            }
        }
    }
    out.extend(chain(None, &stat, &[(stat.clone(), 1)], logs));
    out
}

/// A route's destinations except services of resolution NONE (their
/// original destination would be this very listener: a loop).
fn forwardable(
    mesh: &Mesh<'_>,
    vs: &Resource,
    dests: &[RouteDestination],
) -> Vec<RouteDestination> {
    dests
        .iter()
        .filter(|d| {
            let h = crate::model::host::resolve(&d.destination.host, &vs.namespace);
            mesh.registry
                .services
                .get(&h)
                .is_none_or(|s| s.resolution != Resolution::None)
        })
        .cloned()
        .collect()
}

fn applies(src: Source<'_>, m: &L4MatchAttributes, port: u32) -> bool {
    m.port.is_none_or(|p| p == port)
        && src.admits(&m.source_labels, m.source_namespace.as_deref(), &m.gateways)
}

fn applies_tls(src: Source<'_>, m: &TlsMatchAttributes, port: u32) -> bool {
    m.port.is_none_or(|p| p == port)
        && src.admits(&m.source_labels, m.source_namespace.as_deref(), &m.gateways)
}

/// The chains of a TLS service port: one per applicable `tls` route match
/// (by its `sniHosts`), else the service by its host name as SNI.
fn tls_chains(
    mesh: &Mesh<'_>,
    src: Source<'_>,
    svc: &Service,
    port: &ServicePort,
    logs: &[AccessLog],
    warnings: &mut Vec<String>,
) -> Vec<FilterChain> {
    let stat = outbound_cluster_name(port.number, "", &svc.hostname);
    let mut out = Vec::new();
    let mut matched = false;
    if let Some((vs, spec)) = virtual_service_for(mesh, &svc.hostname) {
        for rule in &spec.tls {
            let dests = forwardable(mesh, vs, &rule.route);
            let clusters = l4::route_clusters(mesh, vs, &dests, port.number);
            for m in rule
                .r#match
                .iter()
                .filter(|m| applies_tls(src, m, port.number))
            {
                let Some(ranges) = subnets(vs, &m.destination_subnets, warnings) else {
                    continue;
                };
                matched = true;
                let server_names = if m.sni_hosts.iter().any(|h| h == "*") {
                    Vec::new()
                } else {
                    m.sni_hosts.clone()
                };
                let fcm = FilterChainMatch {
                    server_names,
                    prefix_ranges: ranges,
                    ..Default::default()
                };
                out.extend(chain(Some(fcm), &stat, &clusters, logs));
            }
        }
    }
    if !matched {
        let fcm = FilterChainMatch {
            server_names: vec![svc.hostname.clone()],
            ..Default::default()
        };
        out.extend(chain(Some(fcm), &stat, &[(stat.clone(), 1)], logs));
    }
    out
}

/// Envoy rejects two chains that match the same connection: the first
/// chain keeps each (destination ranges, SNI) pair, later chains lose it,
/// and a chain left with no SNI it asked for is dropped. Returns the chains
/// kept, and for each chain without SNI that lost its match, whose it was
/// and whose chain kept the match.
type Owned<'s> = (FilterChain, &'s Service);

fn distinct_chains(chains: Vec<Owned<'_>>) -> (Vec<FilterChain>, Vec<(&Service, &Service)>) {
    let mut taken: BTreeMap<(Vec<String>, String), &Service> = BTreeMap::new();
    let mut out = Vec::new();
    let mut lost = Vec::new();
    for (mut c, owner) in chains {
        let m = c.filter_chain_match.clone().unwrap_or_default();
        let ranges: Vec<String> = {
            let mut r: Vec<String> = m
                .prefix_ranges
                .iter()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r.address_prefix,
                        r.prefix_len.as_ref().map_or(0, |l| l.value)
                    )
                })
                .collect();
            r.sort();
            r
        };
        if m.server_names.is_empty() {
            match taken.get(&(ranges.clone(), String::new())) {
                // A service's own repeated match is no conflict.
                Some(first) if first.hostname == owner.hostname => {}
                Some(first) => lost.push((owner, *first)),
                None => {
                    taken.insert((ranges, String::new()), owner);
                    out.push(c);
                }
            }
            continue;
        }
        let mut names = Vec::new();
        for n in &m.server_names {
            if let std::collections::btree_map::Entry::Vacant(e) =
                taken.entry((ranges.clone(), n.to_string()))
            {
                e.insert(owner);
                names.push(n.clone());
            }
        }
        if names.is_empty() {
            continue;
        }
        if let Some(fcm) = c.filter_chain_match.as_mut() {
            fcm.server_names = names;
        }
        out.push(c);
    }
    (out, lost)
}
