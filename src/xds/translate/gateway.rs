//! Gateways (ingress): the listeners and route tables of a gateway proxy.
//!
//! A workload is a gateway when a Gateway's `selector` matches its labels
//! (Istio selects gateway pods the same way, e.g. `istio: ingressgateway`;
//! Gateways in any namespace, an empty selector selects nothing). A gateway
//! proxy has no sidecar listeners: it gets one listener per Gateway server
//! port on its workload's address (or the server's `bind`), HTTP route
//! tables named as Istio names them (`http.PORT` for plaintext ports,
//! `https.PORT.PORTNAME.GATEWAY.NAMESPACE` per TLS-terminating server) built
//! from the VirtualServices bound to the Gateway (`gateways: [ns/name]` or
//! the short `name` in the VirtualService's namespace), and the mesh's
//! outbound clusters and endpoints like any sidecar.
//!
//! Per port: HTTP servers share one plaintext listener (`httpsRedirect`
//! servers answer 301 to https); HTTPS/TLS servers get one filter chain each,
//! matched by SNI from their hosts: SIMPLE and MUTUAL terminate TLS with the
//! certificate named by `credentialName` (served over SDS as
//! `credential://NAME`, the client CA as `credential://NAME-cacert`) or the
//! server's certificate files; ISTIO_MUTUAL terminates with the gateway's
//! workload certificate and requires a mesh client certificate. TLS servers
//! that terminate forward the plain bytes to a bound `tcp` route's
//! destination, as TCP servers do; PASSTHROUGH forwards the TLS stream by
//! SNI to the destination of a bound VirtualService `tls` route;
//! AUTO_PASSTHROUGH forwards mesh mTLS to the SNI-DNAT cluster its SNI names
//! (`outbound_.PORT_.SUBSET_.HOST`), no VirtualService needed.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source::Specifier, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteConfiguration, VirtualHost, virtual_host::TlsRequirementType,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    TlsCertificate, TlsParameters,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    tls_parameters::TlsProtocol as EnvoyTlsProtocol,
};
use envoy_types::pb::google::protobuf::BoolValue;

use super::l4::{tcp_proxy, tcp_proxy_to};
use super::listeners::{hcm_filter, http_filter, listener_name, router};
use super::{Mesh, ads_config_source, any, http_policy, mtls};
use super::{access_log, routes, socket_address};
use crate::model::istio::{
    GatewaySpec, Location, Server, ServerTlsMode, TlsProtocol, VirtualServiceSpec,
};
use crate::model::registry::{Protocol, Service, ServicePort, Workload};
use crate::model::{Resource, host};

/// SDS name prefix of certificates a Gateway names by `credentialName`.
pub const CREDENTIAL_PREFIX: &str = "credential://";
/// Suffix of the SDS name of a credential's client CA (MUTUAL), as Istio's
/// `NAME-cacert`.
pub const CACERT_SUFFIX: &str = "-cacert";
/// The gateway name that means "sidecars" in a VirtualService's `gateways`.
const MESH_GATEWAY: &str = "mesh";

/// SDS name of the key pair of credential `name`.
pub fn credential_secret(name: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{name}")
}

/// SDS name of the client CA of credential `name`.
pub fn credential_ca_secret(name: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{name}{CACERT_SUFFIX}")
}

/// The Gateways whose selector matches `workload`'s labels, by namespace/name.
pub fn gateways_of<'a>(
    mesh: &Mesh<'a>,
    workload: &Workload,
) -> Vec<(&'a Resource, &'a GatewaySpec)> {
    mesh.config
        .gateways()
        .filter(|(_, g)| {
            !g.selector.is_empty()
                && g.selector
                    .iter()
                    .all(|(k, v)| workload.labels.get(k) == Some(v))
        })
        .collect()
}

/// Whether `workload` runs a gateway proxy rather than a sidecar.
pub fn is_gateway(mesh: &Mesh<'_>, workload: &Workload) -> bool {
    !gateways_of(mesh, workload).is_empty()
}

/// How a server's traffic is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerKind {
    /// Plaintext HTTP (HTTP, HTTP2, GRPC): routed by RDS.
    Http,
    /// TLS terminated (HTTPS SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL),
    /// then HTTP.
    Terminate,
    /// TLS terminated (TLS SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL),
    /// then plain TCP to a bound `tcp` route's destination.
    TerminateTcp,
    /// TLS forwarded untouched, by SNI.
    Passthrough,
    /// Mesh mTLS forwarded untouched to the cluster its SNI names
    /// (`outbound_.PORT_.SUBSET_.HOST`), without a VirtualService.
    AutoPassthrough,
    /// Opaque TCP.
    Tcp,
}

/// Which listener shape a port gets; servers of another shape on the same
/// port conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortShape {
    Http,
    Tls,
    Tcp,
}

impl ServerKind {
    fn of(server: &Server) -> Option<ServerKind> {
        let mode = server.tls.as_ref().map(|t| t.mode.unwrap_or_default());
        let forwarded = |mode| match mode {
            ServerTlsMode::Passthrough => ServerKind::Passthrough,
            _ => ServerKind::AutoPassthrough,
        };
        match server.port.protocol.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Some(ServerKind::Http),
            "HTTPS" => Some(match mode? {
                m if terminates(m) => ServerKind::Terminate,
                m => forwarded(m),
            }),
            "TLS" => Some(match mode.unwrap_or_default() {
                m if terminates(m) => ServerKind::TerminateTcp,
                m => forwarded(m),
            }),
            "TCP" | "MONGO" | "REDIS" | "MYSQL" => Some(ServerKind::Tcp),
            _ => None,
        }
    }

    fn shape(self) -> PortShape {
        match self {
            ServerKind::Http => PortShape::Http,
            ServerKind::Terminate
            | ServerKind::TerminateTcp
            | ServerKind::Passthrough
            | ServerKind::AutoPassthrough => PortShape::Tls,
            ServerKind::Tcp => PortShape::Tcp,
        }
    }
}

/// Whether a server in TLS mode `mode` terminates TLS itself.
fn terminates(mode: ServerTlsMode) -> bool {
    matches!(
        mode,
        ServerTlsMode::Simple
            | ServerTlsMode::Mutual
            | ServerTlsMode::OptionalMutual
            | ServerTlsMode::IstioMutual
    )
}

/// The TLS mode of a server (PASSTHROUGH when unset, as Istio's default).
fn tls_mode(server: &Server) -> ServerTlsMode {
    server.tls.as_ref().and_then(|t| t.mode).unwrap_or_default()
}

/// One server of one Gateway that applies to a gateway workload.
#[derive(Clone, Copy, Debug)]
struct BoundServer<'a> {
    gateway: &'a Resource,
    server: &'a Server,
    kind: ServerKind,
    /// The gateway proxy's namespace (what VirtualService `exportTo` is
    /// checked against).
    proxy_ns: &'a str,
}

impl BoundServer<'_> {
    /// Istio's route table name for a TLS-terminating server.
    fn https_route_name(&self) -> String {
        format!(
            "https.{}.{}.{}.{}",
            self.server.port.number,
            self.server.port.name,
            self.gateway.name,
            self.gateway.namespace
        )
    }

    /// SNI names of the server: its hosts without the namespace part; none
    /// (any SNI) when a host is `*`.
    fn server_names(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .server
            .hosts
            .iter()
            .map(|h| split_host(h).1.to_string())
            .collect();
        if names.contains("*") {
            Vec::new()
        } else {
            names.into_iter().collect()
        }
    }
}

/// The servers of one port, and the listener shape they share.
#[derive(Debug)]
struct PortPlan<'a> {
    port: u32,
    bind: Option<&'a str>,
    shape: PortShape,
    servers: Vec<BoundServer<'a>>,
}

/// What a gateway workload serves, port by port, and what was left out.
#[derive(Debug, Default)]
struct Plan<'a> {
    ports: Vec<PortPlan<'a>>,
    warnings: Vec<String>,
}

fn plan<'a>(mesh: &Mesh<'a>, workload: &'a Workload) -> Plan<'a> {
    let proxy_ns = workload.key.namespace.as_str();
    let mut by_port: BTreeMap<u32, PortPlan<'a>> = BTreeMap::new();
    let mut warnings = Vec::new();
    for (gw, spec) in gateways_of(mesh, workload) {
        for server in &spec.servers {
            let where_ = format!(
                "Gateway {}/{} server {:?} (port {})",
                gw.namespace, gw.name, server.port.name, server.port.number
            );
            if server
                .bind
                .as_deref()
                .is_some_and(|b| b.starts_with("unix://"))
            {
                warnings.push(format!(
                    "{where_}: unix socket binds are not supported; skipped"
                ));
                continue;
            }
            let Some(kind) = ServerKind::of(server) else {
                warnings.push(format!(
                    "{where_}: protocol {} with TLS mode {} is not supported; skipped",
                    server.port.protocol,
                    server
                        .tls
                        .as_ref()
                        .and_then(|t| t.mode)
                        .map_or("unset", ServerTlsMode::name)
                ));
                continue;
            };
            if tls_mode(server) == ServerTlsMode::IstioMutual && !mesh.mtls {
                warnings.push(format!(
                    "{where_}: ISTIO_MUTUAL needs workload certificates, and the mesh CA is off; skipped"
                ));
                continue;
            }
            let entry = by_port
                .entry(server.port.number)
                .or_insert_with(|| PortPlan {
                    port: server.port.number,
                    bind: server.bind.as_deref(),
                    shape: kind.shape(),
                    servers: Vec::new(),
                });
            if entry.shape != kind.shape() {
                warnings.push(format!(
                    "{where_}: port {} already serves {:?} from another server; skipped",
                    server.port.number, entry.shape
                ));
                continue;
            }
            entry.servers.push(BoundServer {
                gateway: gw,
                server,
                kind,
                proxy_ns,
            });
        }
    }
    Plan {
        ports: by_port.into_values().collect(),
        warnings,
    }
}

/// Problems found while planning `workload`'s gateway (servers skipped),
/// and TLS filter chains left out because an earlier server on the same
/// port already matches the same SNI.
pub fn warnings(mesh: &Mesh<'_>, workload: &Workload) -> Vec<String> {
    let mut out = plan(mesh, workload).warnings;
    build_listeners(mesh, workload, &mut out);
    out
}

/// VirtualServices naming Gateways that do not exist (their gateway
/// routes go nowhere until the Gateway appears).
pub fn reference_warnings(mesh: &Mesh<'_>) -> Vec<String> {
    let gateways: Vec<&Resource> = mesh.config.gateways().map(|(r, _)| r).collect();
    let mut out = Vec::new();
    for (vs, spec) in mesh.config.virtual_services() {
        for g in spec.gateways.iter().filter(|g| *g != MESH_GATEWAY) {
            if !gateways
                .iter()
                .any(|gw| names_gateway(g, &vs.namespace, gw))
            {
                out.push(format!(
                    "VirtualService {}/{}: gateway {g:?} does not exist",
                    vs.namespace, vs.name
                ));
            }
        }
    }
    out
}

/// Splits a Gateway server host `ns/dnsName` (or a bare `dnsName`).
fn split_host(h: &str) -> (Option<&str>, &str) {
    match h.split_once('/') {
        Some((ns, dns)) => (Some(ns), dns),
        None => (None, h),
    }
}

/// Whether a VirtualService's `gateways` entry names `gw` (`ns/name`, or
/// `name` in the VirtualService's own namespace).
fn names_gateway(entry: &str, vs_namespace: &str, gw: &Resource) -> bool {
    match entry.split_once('/') {
        Some((ns, name)) => ns == gw.namespace && name == gw.name,
        None => entry == gw.name && vs_namespace == gw.namespace,
    }
}

/// The narrower of two host patterns when they overlap, else None.
fn intersect(a: &str, b: &str) -> Option<String> {
    if host::matches(a, b) {
        Some(b.to_string())
    } else if host::matches(b, a) {
        Some(a.to_string())
    } else {
        None
    }
}

/// The hosts of `vs` a server exposes: each VirtualService host (resolved
/// in its namespace) intersected with the server hosts whose namespace part
/// admits the VirtualService's namespace.
fn exposed_hosts(b: &BoundServer<'_>, vs: &Resource, spec: &VirtualServiceSpec) -> Vec<String> {
    let mut out = Vec::new();
    for sh in &b.server.hosts {
        let (ns, dns) = split_host(sh);
        let ns_ok = match ns {
            None | Some("*") => true,
            Some(".") => vs.namespace == b.gateway.namespace,
            Some(ns) => vs.namespace == ns,
        };
        if !ns_ok {
            continue;
        }
        for vh in &spec.hosts {
            let vh = host::resolve(vh, &vs.namespace);
            if let Some(h) = intersect(dns, &vh)
                && !out.contains(&h)
            {
                out.push(h);
            }
        }
    }
    out
}

/// VirtualServices bound to `gw` (not `mesh`-only) and exported to the
/// gateway proxy's namespace `proxy_ns`, delegates merged into their
/// roots, in Istio's order (`VirtualServicesForGateway`): by visibility
/// first (see [`Visibility`]), then as Istio sorts them (oldest first, then
/// namespace/name; roots after the others).
fn bound_virtual_services<'a>(
    mesh: &Mesh<'a>,
    gw: &Resource,
    proxy_ns: &str,
) -> impl Iterator<Item = (&'a Resource, &'a VirtualServiceSpec)> {
    let mut bound: Vec<(Visibility, &'a Resource, &'a VirtualServiceSpec)> = mesh
        .config
        .effective_virtual_services()
        .filter(|(vs, spec)| {
            spec.gateways
                .iter()
                .filter(|g| *g != MESH_GATEWAY)
                .any(|g| names_gateway(g, &vs.namespace, gw))
        })
        .filter_map(|(vs, spec)| {
            Visibility::of(&spec.export_to, &vs.namespace, proxy_ns).map(|v| (v, vs, spec))
        })
        .collect();
    // Stable: Istio's order holds within each visibility.
    bound.sort_by_key(|(v, _, _)| *v);
    bound.into_iter().map(|(_, vs, spec)| (vs, spec))
}

/// How a gateway VirtualService is visible to a gateway proxy's namespace,
/// in the order Istio lists them for the gateway (`privateByNamespace`,
/// `exportedToNamespace`, `publicByGateway` in its VirtualService index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Visibility {
    /// `exportTo` names `.` or the VirtualService's own namespace, which is
    /// the proxy's.
    Private,
    /// `exportTo` names the proxy's namespace (another than its own).
    ExportedToNamespace,
    /// No `exportTo` (Istio's default `*`), or `*`.
    Public,
}

impl Visibility {
    /// None when the VirtualService is hidden from `proxy_ns` (`~`, or
    /// namespaces that are not the proxy's).
    fn of(export_to: &[String], owner_ns: &str, proxy_ns: &str) -> Option<Visibility> {
        let has = |e: &str| export_to.iter().any(|x| x == e);
        if export_to.is_empty() || has("*") {
            Some(Visibility::Public)
        } else if has("~") {
            None
        } else if owner_ns == proxy_ns && (has(".") || has(owner_ns)) {
            Some(Visibility::Private)
        } else if owner_ns != proxy_ns && has(proxy_ns) {
            Some(Visibility::ExportedToNamespace)
        } else {
            None
        }
    }
}

/// A match-level `gateways` list admits `gw` (an empty list inherits the
/// VirtualService's, which bound it already).
fn match_admits(gateways: &[String], vs_namespace: &str, gw: &Resource) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| names_gateway(g, vs_namespace, gw))
}

/// The Envoy routes of one VirtualService at one gateway server port.
/// Matches for another port or other gateways are dropped, then each rule
/// is translated as for sidecars (against its first destination's service).
fn vs_routes(
    mesh: &Mesh<'_>,
    vs: &Resource,
    spec: &VirtualServiceSpec,
    gw: &Resource,
    port: u32,
    client_ns: &str,
) -> Vec<Route> {
    let mut out = Vec::new();
    for rule in &spec.http {
        let mut rule = rule.clone();
        if !rule.r#match.is_empty() {
            rule.r#match.retain(|m| {
                m.port.is_none_or(|p| p == port) && match_admits(&m.gateways, &vs.namespace, gw)
            });
            if rule.r#match.is_empty() {
                continue;
            }
            for m in &mut rule.r#match {
                m.port = None;
                m.gateways.clear();
            }
        }
        let (svc, svc_port) =
            destination_service(mesh, vs, rule.route.first().map(|d| &d.destination), port);
        let one = VirtualServiceSpec {
            http: vec![rule],
            ..Default::default()
        };
        out.extend(routes::http_routes(
            mesh, vs, &one, &svc, &svc_port, client_ns,
        ));
    }
    out
}

/// The service (and port) a destination names, as the sidecar route
/// translation wants it; a host the registry lacks gets a stand-in with the
/// destination's port (or the gateway port).
fn destination_service(
    mesh: &Mesh<'_>,
    vs: &Resource,
    d: Option<&crate::model::istio::Destination>,
    gateway_port: u32,
) -> (Service, ServicePort) {
    let hostname = d.map_or_else(String::new, |d| host::resolve(&d.host, &vs.namespace));
    let number = d.and_then(|d| d.port.as_ref()).and_then(|p| p.number);
    let known = mesh.registry.services.get(&hostname);
    let port = known
        .and_then(|s| {
            number
                .and_then(|n| s.port(n))
                .or_else(|| s.ports.iter().find(|p| p.protocol.is_http()))
                .or(s.ports.first())
                .cloned()
        })
        .unwrap_or_else(|| ServicePort {
            number: number.unwrap_or(gateway_port),
            name: "http".into(),
            protocol: Protocol::Http,
            target_port: None,
        });
    let svc = match known {
        Some(s) => (**s).clone(),
        None => Service {
            hostname,
            namespace: vs.namespace.clone(),
            source: String::new(),
            created: None,
            ports: vec![port.clone()],
            resolution: Default::default(),
            location: Default::default(),
            endpoints: Vec::new(),
            selector: None,
        },
    };
    (svc, port)
}

/// Virtual host domains for `h` at gateway port `port`: the name, and the
/// name with any port (`Host: name:port` names the port the client dialled,
/// which behind a load balancer or a passthrough hop is not the gateway's),
/// as Istio lists them. Envoy takes one wildcard per domain, so a wildcard
/// name gets the gateway port instead.
fn domains(h: &str, port: u32) -> Vec<String> {
    if h == "*" {
        vec!["*".to_string()]
    } else if h.starts_with('*') {
        vec![h.to_string(), format!("{h}:{port}")]
    } else {
        vec![h.to_string(), format!("{h}:*")]
    }
}

/// One route table from the HTTP servers `servers` (all on `port`). As in
/// Istio, the routes of every VirtualService exposing a host are merged
/// into that host's virtual host in VirtualService order (each
/// VirtualService's routes end at its first catch-all), then catch-all
/// routes are moved last, keeping the order of the others.
fn route_table(
    mesh: &Mesh<'_>,
    name: String,
    port: u32,
    servers: &[BoundServer<'_>],
    client_ns: &str,
) -> RouteConfiguration {
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut by_host: BTreeMap<String, usize> = BTreeMap::new();
    let mut virtual_hosts: Vec<VirtualHost> = Vec::new();
    for b in servers {
        let redirect = b.kind == ServerKind::Http
            && b.server
                .tls
                .as_ref()
                .and_then(|t| t.https_redirect)
                .unwrap_or(false);
        let require_tls = if redirect {
            TlsRequirementType::All as i32
        } else {
            TlsRequirementType::None as i32
        };
        for (vs, spec) in bound_virtual_services(mesh, b.gateway, b.proxy_ns) {
            for h in exposed_hosts(b, vs, spec) {
                let mut routes = if redirect {
                    Vec::new()
                } else {
                    vs_routes(mesh, vs, spec, b.gateway, port, client_ns)
                };
                if let Some(i) = routes.iter().position(super::routes::is_catch_all) {
                    routes.truncate(i + 1);
                }
                if let Some(&i) = by_host.get(&h) {
                    // Another VirtualService (or server) has this host: merge.
                    virtual_hosts[i].routes.extend(routes);
                    if redirect {
                        virtual_hosts[i].require_tls = require_tls;
                    }
                    continue;
                }
                if routes.is_empty() && !redirect {
                    continue;
                }
                let doms: Vec<String> = domains(&h, port)
                    .into_iter()
                    .filter(|d| !used.contains(d))
                    .collect();
                if doms.is_empty() {
                    continue;
                }
                used.extend(doms.iter().cloned());
                by_host.insert(h.clone(), virtual_hosts.len());
                virtual_hosts.push(VirtualHost {
                    name: format!("{h}:{port}"),
                    domains: doms,
                    routes,
                    require_tls,
                    ..Default::default()
                });
            }
        }
        if redirect {
            // Every host of a redirecting server redirects, bound or not.
            for sh in &b.server.hosts {
                let h = split_host(sh).1;
                if let Some(&i) = by_host.get(h) {
                    virtual_hosts[i].require_tls = require_tls;
                    continue;
                }
                let doms: Vec<String> = domains(h, port)
                    .into_iter()
                    .filter(|d| !used.contains(d))
                    .collect();
                if doms.is_empty() {
                    continue;
                }
                used.extend(doms.iter().cloned());
                by_host.insert(h.to_string(), virtual_hosts.len());
                virtual_hosts.push(VirtualHost {
                    name: format!("{h}:{port}"),
                    domains: doms,
                    require_tls,
                    ..Default::default()
                });
            }
        }
    }
    for vh in &mut virtual_hosts {
        let (rest, catch_all): (Vec<Route>, Vec<Route>) = std::mem::take(&mut vh.routes)
            .into_iter()
            .partition(|r| !super::routes::is_catch_all(r));
        vh.routes = rest;
        vh.routes.extend(catch_all);
    }
    RouteConfiguration {
        name,
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// Istio's route table name for a plaintext HTTP port.
pub fn http_route_name(port: u32) -> String {
    format!("http.{port}")
}

/// The route tables of `workload`'s gateway (empty for a sidecar). They
/// depend on the Gateways selecting it and its namespace, not its address.
pub fn route_tables(mesh: &Mesh<'_>, workload: &Workload) -> Vec<RouteConfiguration> {
    let ns = workload.key.namespace.as_str();
    let mut out = Vec::new();
    for p in plan(mesh, workload).ports {
        match p.shape {
            PortShape::Http => {
                out.push(route_table(
                    mesh,
                    http_route_name(p.port),
                    p.port,
                    &p.servers,
                    ns,
                ));
            }
            PortShape::Tls => {
                for b in p.servers.iter().filter(|b| b.kind == ServerKind::Terminate) {
                    out.push(route_table(
                        mesh,
                        b.https_route_name(),
                        p.port,
                        std::slice::from_ref(b),
                        ns,
                    ));
                }
            }
            PortShape::Tcp => {}
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// The credentials (`credentialName`) `workload`'s gateway proxy is sent,
/// and the only ones: those its servers terminate TLS with, and those the
/// DestinationRules of its clusters originate TLS with.
pub fn credential_names(mesh: &Mesh<'_>, workload: &Workload) -> BTreeSet<String> {
    let mut names = server_credential_names(mesh, workload);
    // TLS origination toward external hosts (Istio's egress gateway tasks).
    names.extend(super::egress::gateway_credential_names(
        mesh,
        &workload.key.namespace,
    ));
    names
}

/// The credentials `workload`'s Gateway servers terminate TLS with.
pub fn server_credential_names(mesh: &Mesh<'_>, workload: &Workload) -> BTreeSet<String> {
    plan(mesh, workload)
        .ports
        .iter()
        .flat_map(|p| &p.servers)
        .filter(|b| matches!(b.kind, ServerKind::Terminate | ServerKind::TerminateTcp))
        .filter_map(|b| credential_of(b.server))
        .map(str::to_string)
        .collect()
}

fn credential_of(server: &Server) -> Option<&str> {
    let tls = server.tls.as_ref()?;
    tls.credential_name
        .as_deref()
        .or(tls.credential_names.first().map(String::as_str))
}

pub(super) fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads_config_source()),
    }
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

fn tls_protocol(p: Option<TlsProtocol>) -> i32 {
    let p = match p.unwrap_or_default() {
        TlsProtocol::TlsAuto => EnvoyTlsProtocol::TlsAuto,
        TlsProtocol::Tlsv1_0 => EnvoyTlsProtocol::TlSv10,
        TlsProtocol::Tlsv1_1 => EnvoyTlsProtocol::TlSv11,
        TlsProtocol::Tlsv1_2 => EnvoyTlsProtocol::TlSv12,
        TlsProtocol::Tlsv1_3 => EnvoyTlsProtocol::TlSv13,
    };
    p as i32
}

/// The TLS a terminating server offers: its certificate (SDS by
/// `credentialName`, else its files), and for MUTUAL the client CA;
/// ISTIO_MUTUAL offers the gateway's workload certificate and requires one
/// the mesh CA signed, as a sidecar's inbound does. HTTP servers offer
/// HTTP ALPN; TCP ones none (the bytes go on as they are).
pub(super) fn downstream_tls(server: &Server, http: bool) -> TransportSocket {
    let tls = server.tls.clone().unwrap_or_default();
    let mode = tls.mode.unwrap_or_default();
    let mut common = CommonTlsContext {
        alpn_protocols: if http {
            vec!["h2".into(), "http/1.1".into()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let verify = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
    match credential_of(server) {
        _ if mode == ServerTlsMode::IstioMutual => {
            common.tls_certificate_sds_secret_configs = vec![sds(mtls::SDS_CERT.to_string())];
            let root = sds(mtls::SDS_ROOT.to_string());
            // `subjectAltNames` narrows the clients to those identities.
            common.validation_context_type = Some(if tls.subject_alt_names.is_empty() {
                ValidationContextType::ValidationContextSdsSecretConfig(root)
            } else {
                ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: mtls::uri_san_matchers(
                                &tls.subject_alt_names,
                            ),
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(root),
                        ..Default::default()
                    },
                )
            });
        }
        Some(name) => {
            common.tls_certificate_sds_secret_configs = vec![sds(credential_secret(name))];
            if verify {
                common.validation_context_type =
                    Some(ValidationContextType::ValidationContextSdsSecretConfig(
                        sds(credential_ca_secret(
                            tls.ca_cert_credential_name.as_deref().unwrap_or(name),
                        )),
                    ));
            }
        }
        None => {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: tls.server_certificate.as_deref().map(file),
                private_key: tls.private_key.as_deref().map(file),
                ..Default::default()
            }];
            if verify && let Some(ca) = &tls.ca_certificates {
                common.validation_context_type = Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(file(ca)),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    if tls.min_protocol_version.is_some()
        || tls.max_protocol_version.is_some()
        || !tls.cipher_suites.is_empty()
    {
        common.tls_params = Some(TlsParameters {
            tls_minimum_protocol_version: tls_protocol(tls.min_protocol_version),
            tls_maximum_protocol_version: tls_protocol(tls.max_protocol_version),
            cipher_suites: tls.cipher_suites.clone(),
            ..Default::default()
        });
    }
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue {
            value: matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::IstioMutual),
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

fn http_manager(stat_prefix: String, route_name: String) -> Filter {
    hcm_filter(HttpConnectionManager {
        stat_prefix,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_name,
        })),
        // Fault and CORS act only where a route configures them.
        http_filters: vec![
            http_filter(http_policy::FAULT_FILTER, any(&HttpFault::default())),
            http_filter(http_policy::CORS_FILTER, any(&Cors::default())),
            router(),
        ],
        // The gateway reports as the source of the requests it forwards.
        access_log: vec![access_log::http(false)],
        ..Default::default()
    })
}

/// The `tcp_proxy` of a TCP (or TLS-terminating TCP) server: the first
/// `tcp` route, of the VirtualServices bound to its Gateway whose hosts the
/// server exposes, whose matches admit this port and Gateway (Istio's rule).
/// The gateway reports its connections as the source (Istio's gateway
/// stats; without Istio's in-band metadata exchange the telemetry sink
/// names both sides from the gateway's identity and the upstream address).
fn tcp_route_filter(
    mesh: &Mesh<'_>,
    b: &BoundServer<'_>,
    port: u32,
    stat_prefix: &str,
) -> Option<Filter> {
    bound_virtual_services(mesh, b.gateway, b.proxy_ns)
        .filter(|(vs, spec)| !exposed_hosts(b, vs, spec).is_empty())
        .find_map(|(vs, spec)| {
            spec.tcp
                .iter()
                .find(|r| {
                    r.r#match.is_empty()
                        || r.r#match.iter().any(|m| {
                            m.port.is_none_or(|x| x == port)
                                && match_admits(&m.gateways, &vs.namespace, b.gateway)
                        })
                })
                .and_then(|r| {
                    tcp_proxy_to(
                        stat_prefix.to_string(),
                        &super::l4::route_clusters(mesh, vs, &r.route, port),
                        vec![access_log::tcp_outbound()],
                    )
                })
        })
}

/// The clusters an AUTO_PASSTHROUGH server forwards to, by the SNI that
/// names each (`outbound_.PORT_.SUBSET_.HOST`, Istio's SNI-DNAT cluster
/// name): every port of every mesh-internal service whose host the server
/// names and exports to the gateway's namespace `client_ns`, unsubsetted
/// and per DestinationRule subset; with the name of the ordinary outbound
/// cluster it copies.
fn auto_passthrough_targets(
    mesh: &Mesh<'_>,
    b: &BoundServer<'_>,
    client_ns: &str,
) -> Vec<(String, String)> {
    let hosts: Vec<&str> = b.server.hosts.iter().map(|h| split_host(h).1).collect();
    let mut out = Vec::new();
    for svc in mesh.registry.services.values() {
        if svc.location != Location::MeshInternal
            || !hosts.iter().any(|h| host::matches(h, &svc.hostname))
            || !super::scope::service_exported(mesh.config, svc, client_ns)
        {
            continue;
        }
        let dr = mesh.destination_rule(&svc.hostname, &svc.namespace);
        let subsets = std::iter::once("").chain(
            dr.map(|(_, d)| d.subsets.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|s| s.name.as_str()),
        );
        for subset in subsets {
            for p in svc
                .ports
                .iter()
                .filter(|p| mesh.reaches(&svc.hostname, p.number))
            {
                out.push((
                    mtls::sni(p.number, subset, &svc.hostname),
                    super::outbound_cluster_name(p.number, subset, &svc.hostname),
                ));
            }
        }
    }
    out
}

/// AUTO_PASSTHROUGH: one filter chain per target cluster, matched by its
/// SNI and the ALPN of mesh mTLS (so only sidecars' mTLS gets through), the
/// TLS stream forwarded untouched to the endpoints' sidecars.
fn auto_passthrough_chains(
    mesh: &Mesh<'_>,
    b: &BoundServer<'_>,
    client_ns: &str,
) -> Vec<FilterChain> {
    auto_passthrough_targets(mesh, b, client_ns)
        .into_iter()
        .filter_map(|(sni, _)| {
            let f = tcp_proxy_to(sni.clone(), &[(sni.clone(), 1)], Vec::new())?;
            Some(FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    server_names: vec![sni],
                    ..mtls::mtls_chain_match()
                }),
                filters: vec![f],
                ..Default::default()
            })
        })
        .collect()
}

/// The SNI-DNAT clusters `workload`'s AUTO_PASSTHROUGH servers forward to:
/// copies of the outbound clusters named by SNI, without the mesh mTLS the
/// originals add (the client's mTLS passes through), reading the
/// originals' endpoints.
pub fn sni_dnat_clusters(mesh: &Mesh<'_>, workload: &Workload) -> Vec<Cluster> {
    let targets: BTreeMap<String, String> = plan(mesh, workload)
        .ports
        .iter()
        .flat_map(|p| &p.servers)
        .filter(|b| b.kind == ServerKind::AutoPassthrough)
        .flat_map(|b| auto_passthrough_targets(mesh, b, &workload.key.namespace))
        .map(|(sni, cluster)| (cluster, sni))
        .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    // Locality-balanced DNS clusters as this gateway's locality sees them.
    let client = super::endpoints::dns_client_labels(mesh)
        .map(|labels| super::locality::Client::of_workload(workload, &labels));
    let shaped = client
        .iter()
        .flat_map(|c| super::clusters::for_client(mesh, c));
    let mut out: Vec<Cluster> = super::clusters::outbound(mesh)
        .into_iter()
        .chain(shaped)
        .filter_map(|mut c| {
            let sni = targets.get(&c.name)?.clone();
            let original = std::mem::replace(&mut c.name, sni.clone());
            c.transport_socket = None;
            c.transport_socket_matches.clear();
            if let Some(eds) = &mut c.eds_cluster_config
                && eds.service_name.is_empty()
            {
                eds.service_name = original;
            }
            if let Some(la) = &mut c.load_assignment {
                la.cluster_name = sni;
            }
            Some(c)
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// PASSTHROUGH: one filter chain per bound `tls` route match, matched by the
/// SNI names both the route and the server name.
fn passthrough_chains(
    mesh: &Mesh<'_>,
    b: &BoundServer<'_>,
    port: u32,
    stat_prefix: &str,
) -> Vec<FilterChain> {
    let mut out = Vec::new();
    for (vs, spec) in bound_virtual_services(mesh, b.gateway, b.proxy_ns) {
        for route in &spec.tls {
            for m in &route.r#match {
                if m.port.is_some_and(|p| p != port)
                    || !match_admits(&m.gateways, &vs.namespace, b.gateway)
                {
                    continue;
                }
                let mut names: Vec<String> = Vec::new();
                for sni in &m.sni_hosts {
                    for sh in &b.server.hosts {
                        if let Some(h) = intersect(split_host(sh).1, sni)
                            && !names.contains(&h)
                        {
                            names.push(h);
                        }
                    }
                }
                if names.is_empty() {
                    continue;
                }
                let server_names = if names.iter().any(|n| n == "*") {
                    Vec::new()
                } else {
                    names
                };
                if let Some(f) = tcp_proxy(mesh, stat_prefix.to_string(), vs, &route.route, port) {
                    out.push(FilterChain {
                        filter_chain_match: Some(FilterChainMatch {
                            server_names,
                            transport_protocol: "tls".into(),
                            ..Default::default()
                        }),
                        filters: vec![f],
                        ..Default::default()
                    });
                }
            }
        }
    }
    out
}

/// The listeners of `workload`'s gateway proxy (empty for a sidecar).
pub fn listeners(mesh: &Mesh<'_>, workload: &Workload) -> Vec<Listener> {
    build_listeners(mesh, workload, &mut Vec::new())
}

fn build_listeners(
    mesh: &Mesh<'_>,
    workload: &Workload,
    warnings: &mut Vec<String>,
) -> Vec<Listener> {
    let mut out = Vec::new();
    for p in plan(mesh, workload).ports {
        let address = p.bind.unwrap_or(&workload.address);
        let name = listener_name(address, p.port);
        let stat_prefix = format!("outbound_{name}");
        let mut chains: Vec<FilterChain> = Vec::new();
        match p.shape {
            PortShape::Http => chains.push(FilterChain {
                filters: vec![http_manager(stat_prefix, http_route_name(p.port))],
                ..Default::default()
            }),
            PortShape::Tcp => {
                let first = p
                    .servers
                    .first()
                    .and_then(|b| tcp_route_filter(mesh, b, p.port, &stat_prefix));
                chains.extend(first.map(|f| FilterChain {
                    filters: vec![f],
                    ..Default::default()
                }));
            }
            PortShape::Tls => {
                for b in &p.servers {
                    let new: Vec<FilterChain> = match b.kind {
                        ServerKind::Terminate => vec![FilterChain {
                            filter_chain_match: Some(FilterChainMatch {
                                server_names: b.server_names(),
                                transport_protocol: "tls".into(),
                                ..Default::default()
                            }),
                            transport_socket: Some(downstream_tls(b.server, true)),
                            filters: vec![http_manager(stat_prefix.clone(), b.https_route_name())],
                            ..Default::default()
                        }],
                        ServerKind::TerminateTcp => tcp_route_filter(mesh, b, p.port, &stat_prefix)
                            .map(|f| FilterChain {
                                filter_chain_match: Some(FilterChainMatch {
                                    server_names: b.server_names(),
                                    transport_protocol: "tls".into(),
                                    ..Default::default()
                                }),
                                transport_socket: Some(downstream_tls(b.server, false)),
                                filters: vec![f],
                                ..Default::default()
                            })
                            .into_iter()
                            .collect(),
                        ServerKind::AutoPassthrough => {
                            auto_passthrough_chains(mesh, b, &workload.key.namespace)
                        }
                        _ => passthrough_chains(mesh, b, p.port, &stat_prefix),
                    };
                    // Envoy refuses two chains with the same match: the first wins.
                    for c in new {
                        if !chains
                            .iter()
                            .any(|x| x.filter_chain_match == c.filter_chain_match)
                        {
                            chains.push(c);
                        } else {
                            let sni = c
                                .filter_chain_match
                                .as_ref()
                                .map(|m| m.server_names.join(","))
                                .filter(|s| !s.is_empty())
                                .unwrap_or_else(|| "*".into());
                            warnings.push(format!(
                                "gateway {}/{} port {}: Gateway {}/{} server for SNI {sni} is ignored: an earlier server on this port already takes the same connections",
                                workload.key.namespace,
                                workload.key.name,
                                p.port,
                                b.gateway.namespace,
                                b.gateway.name
                            ));
                        }
                    }
                }
            }
        }
        if chains.is_empty() {
            continue; // nothing bound to this port yet
        }
        out.push(Listener {
            name,
            address: Some(socket_address(address, p.port)),
            listener_filters: if p.shape == PortShape::Tls {
                vec![mtls::tls_inspector()]
            } else {
                Vec::new()
            },
            filter_chains: chains,
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_virtual_service_visibility_follows_istio() {
        let v = |export_to: &[&str], owner: &str, proxy: &str| {
            let list: Vec<String> = export_to.iter().map(|e| e.to_string()).collect();
            Visibility::of(&list, owner, proxy)
        };
        use Visibility::*;
        assert_eq!(v(&[], "shop", "ingress"), Some(Public));
        assert_eq!(v(&["*"], "shop", "ingress"), Some(Public));
        // `*` wins over anything else listed.
        assert_eq!(v(&[".", "*"], "ingress", "ingress"), Some(Public));
        assert_eq!(v(&["."], "ingress", "ingress"), Some(Private));
        assert_eq!(v(&["ingress"], "ingress", "ingress"), Some(Private));
        assert_eq!(
            v(&["ingress"], "shop", "ingress"),
            Some(ExportedToNamespace)
        );
        assert_eq!(
            v(&[".", "ingress"], "shop", "ingress"),
            Some(ExportedToNamespace)
        );
        assert_eq!(v(&["."], "shop", "ingress"), None);
        assert_eq!(v(&["other"], "shop", "ingress"), None);
        assert_eq!(v(&["~"], "ingress", "ingress"), None);
        assert!(Private < ExportedToNamespace && ExportedToNamespace < Public);
    }

    #[test]
    fn gateway_references_and_host_intersection() {
        let gw = Resource {
            name: "gw".into(),
            namespace: "istio-system".into(),
            labels: Default::default(),
            annotations: Default::default(),
            created: None,
            spec: crate::model::Spec::Gateway(Default::default()),
            origin: Default::default(),
        };
        assert!(names_gateway("istio-system/gw", "default", &gw));
        assert!(!names_gateway("gw", "default", &gw));
        assert!(names_gateway("gw", "istio-system", &gw));
        assert!(!names_gateway("default/gw", "default", &gw));
        assert_eq!(
            intersect("*", "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "*").as_deref(),
            Some("*.example.com")
        );
        assert_eq!(intersect("a.example.com", "b.example.com"), None);
        assert_eq!(split_host("./a.com"), (Some("."), "a.com"));
        assert_eq!(domains("a.com", 8443), ["a.com", "a.com:*"]);
        assert_eq!(domains("*.a.com", 8443), ["*.a.com", "*.a.com:8443"]);
        assert_eq!(domains("*", 80), ["*"]);
    }

    /// A gateway workload and one Gateway with `servers` (YAML flow list).
    fn mk_mesh_config(servers: &str) -> (crate::model::ConfigSnapshot, crate::model::Registry) {
        let text = format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: gw}}
spec: {{address: 127.0.0.30, labels: {{istio: gw}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {{istio: gw}}
  servers: {servers}
"
        );
        let parsed = crate::config::parse_file(std::path::Path::new("gw.yaml"), &text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let mut config = crate::model::ConfigSnapshot::default();
        for r in parsed.resources {
            config.resources.insert(r.key(), std::sync::Arc::new(r));
        }
        let registry = crate::model::Registry::build(&config);
        (config, registry)
    }

    #[test]
    fn server_kinds_and_istio_mutual_without_a_ca() {
        let (config, registry) = mk_mesh_config(
            "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.com], tls: {mode: ISTIO_MUTUAL}},
              {port: {number: 444, name: tls, protocol: TLS}, hosts: [a.com], tls: {mode: SIMPLE, credentialName: c}},
              {port: {number: 15443, name: tls-auto, protocol: TLS}, hosts: ['*.local'], tls: {mode: AUTO_PASSTHROUGH}},
              {port: {number: 445, name: tls-pass, protocol: TLS}, hosts: [a.com], tls: {mode: PASSTHROUGH}}]",
        );
        let w = registry.workloads.values().next().unwrap();
        let kinds = |mesh: &Mesh<'_>| -> Vec<(u32, ServerKind)> {
            plan(mesh, w)
                .ports
                .iter()
                .flat_map(|p| p.servers.iter().map(move |b| (p.port, b.kind)))
                .collect()
        };
        let with_ca = Mesh::new(&config, &registry).with_mtls(true);
        assert_eq!(
            kinds(&with_ca),
            [
                (443, ServerKind::Terminate),
                (444, ServerKind::TerminateTcp),
                (445, ServerKind::Passthrough),
                (15443, ServerKind::AutoPassthrough),
            ]
        );
        assert!(warnings(&with_ca, w).is_empty());
        // Without the mesh CA there is no workload certificate to serve.
        let without = Mesh::new(&config, &registry);
        assert_eq!(kinds(&without).len(), 3);
        let warned = warnings(&without, w);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("server \"https\" (port 443)")
                && warned[0].contains("ISTIO_MUTUAL needs workload certificates"),
            "{warned:?}"
        );
        // No services: an AUTO_PASSTHROUGH server has nothing to forward to.
        assert!(sni_dnat_clusters(&with_ca, w).is_empty());
    }

    #[test]
    fn a_second_server_for_the_same_sni_is_reported() {
        let (config, registry) = mk_mesh_config(
            "[{port: {number: 443, name: https-a, protocol: HTTPS}, hosts: [a.com], tls: {mode: SIMPLE, credentialName: a}},
              {port: {number: 443, name: https-b, protocol: HTTPS}, hosts: [a.com], tls: {mode: SIMPLE, credentialName: b}}]",
        );
        let w = registry.workloads.values().next().unwrap();
        let mesh = Mesh::new(&config, &registry);
        let l = listeners(&mesh, w);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].filter_chains.len(), 1, "the first server wins");
        let warned = warnings(&mesh, w);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("port 443") && warned[0].contains("SNI a.com is ignored"),
            "{warned:?}"
        );
    }
}
