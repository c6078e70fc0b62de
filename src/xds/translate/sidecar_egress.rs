//! Sidecar egress listeners with their own `port` (Istio's outbound
//! listeners for an `IstioEgressListener` with a port): a listener on that
//! port that reaches only the hosts of that egress listener.
//!
//! * It binds the listener's `bind` address, else the workload's own (no
//!   iptables: the app connects to its sidecar's address at the port, as
//!   for outbound TCP). On the workload's address, a port that is one of its
//!   inbound ports gets no listener (`outbound_tcp::bind`).
//! * HTTP protocols (HTTP, HTTP2, GRPC): an HTTP connection manager with
//!   its own route table over RDS, named by the port number as Istio names
//!   it (`9080`). The table holds virtual hosts only for the services the
//!   listener's hosts import that have the port (each name with and
//!   without `:PORT`), the VirtualServices within those hosts, and the
//!   catch-all of the outbound traffic policy. Those services stay routed
//!   through 15001 as well, which stands for every port's HTTP listener.
//! * Other protocols: `outbound_tcp`'s rule for one port, over the services
//!   the listener's hosts import on it: the lone TCP service (with its
//!   `tcp` routes), TLS services by SNI.
//! * The port is the listener's own: the catch-all egress listener's TCP
//!   services leave it alone. A `unix://` bind (port 0) is not translated.

use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;

use super::outbound_tcp::{self, PortListener, RESERVED_PORTS, Source};
use super::scope::Scope;
use super::{Mesh, OutboundMode, access_log, egress, listeners};
use crate::model::Resource;
use crate::model::istio::{Resolution, SidecarSpec};
use crate::model::registry::Protocol;

/// One egress listener with a port.
#[derive(Clone, Debug)]
pub struct EgressPort<'a> {
    /// Its index in the Sidecar's `egress`.
    pub index: usize,
    pub port: u32,
    pub bind: Option<&'a str>,
    pub protocol: Protocol,
}

/// The egress listeners of `sidecar` with a port (not a `unix://` bind).
pub fn ports<'a>(sidecar: Option<(&Resource, &'a SidecarSpec)>) -> Vec<EgressPort<'a>> {
    let Some((_, spec)) = sidecar else {
        return Vec::new();
    };
    spec.egress
        .iter()
        .enumerate()
        .filter_map(|(index, e)| {
            let p = e.port.as_ref()?;
            let port = p.number.filter(|n| *n > 0)?;
            Some(EgressPort {
                index,
                port,
                bind: e.bind.as_deref().filter(|b| !b.is_empty()),
                protocol: Protocol::detect(p.protocol.as_deref(), p.name.as_deref().unwrap_or("")),
            })
        })
        .collect()
}

/// The RDS name of an HTTP egress listener's route table, as Istio's.
pub fn route_name(port: u32) -> String {
    port.to_string()
}

/// Client-side tracing for `src`'s HTTP egress listeners (Telemetry).
pub fn tracing(mesh: &Mesh<'_>, src: Source<'_>) -> Option<Tracing> {
    let chain =
        crate::model::telemetry::resolve::applicable(mesh.config, src.namespace, src.labels);
    super::tracing::hcm_tracing(mesh, &chain, true)
}

/// Where a warning about `e` comes from.
fn origin(sidecar: &Resource, e: &EgressPort<'_>) -> String {
    format!(
        "Sidecar {}/{} spec.egress[{}] (port {})",
        sidecar.namespace, sidecar.name, e.index, e.port
    )
}

/// The unbound listener of egress listener `e` for proxies of `src`'s view,
/// if it has one; `tcp_logs` are the view's TCP access logs.
pub fn listener(
    mesh: &Mesh<'_>,
    src: Source<'_>,
    sidecar: (&Resource, &SidecarSpec),
    e: &EgressPort<'_>,
    tcp_logs: &[AccessLog],
    warnings: &mut Vec<String>,
) -> Option<PortListener> {
    let here = origin(sidecar.0, e);
    let hosts = sidecar.1.egress[e.index].hosts.clone();
    if RESERVED_PORTS.contains(&e.port) {
        warnings.push(format!(
            "{here}: the port is one of the proxy's own ports: no listener"
        ));
        return None;
    }
    let bind = e.bind.map(str::to_string);
    if e.protocol.is_http() {
        let logs = std::iter::once(access_log::http(false))
            .chain(outbound_tcp::telemetry_log(mesh, src))
            .collect();
        let chain =
            crate::model::telemetry::resolve::applicable(mesh.config, src.namespace, src.labels);
        let filter = listeners::outbound_http(
            mesh,
            &chain,
            format!("outbound_0.0.0.0_{}", e.port),
            &route_name(e.port),
            logs,
        );
        let listener = Listener {
            filter_chains: vec![FilterChain {
                filters: vec![filter],
                ..Default::default()
            }],
            ..Default::default()
        };
        return Some(PortListener {
            port: e.port,
            bind,
            hosts,
            listener,
        });
    }
    let sub =
        Scope::for_egress_listener(mesh.config, mesh.registry, src.namespace, sidecar, e.index);
    let m = mesh.with_scope(&sub);
    let mut services = Vec::new();
    let mut local = Vec::new();
    for svc in mesh.registry.services.values() {
        let Some(p) = svc.port(e.port) else {
            continue;
        };
        if !m.routes_to(&svc.hostname, e.port) {
            continue;
        }
        if svc.resolution == Resolution::None {
            local.push(outbound_tcp::none_warning(svc, e.port));
            continue;
        }
        services.push((svc.as_ref(), p));
    }
    if services.is_empty() {
        local.push("its hosts import no service on the port: no listener".to_string());
    }
    let out = if services.is_empty() {
        None
    } else {
        outbound_tcp::port_listener(&m, src, e.port, services, tcp_logs, &mut local)
    };
    warnings.extend(local.into_iter().map(|w| format!("{here}: {w}")));
    out.map(|pl| PortListener { bind, hosts, ..pl })
}

/// The route tables of `sidecar`'s HTTP egress listeners with a port, for
/// proxies in `namespace` (`mesh` as for the view's `outbound` table: its
/// scope is replaced by each egress listener's own).
pub fn route_tables(
    mesh: &Mesh<'_>,
    namespace: &str,
    sidecar: (&Resource, &SidecarSpec),
    mode: OutboundMode,
) -> Vec<RouteConfiguration> {
    let mut out = Vec::new();
    for e in ports(Some(sidecar)) {
        if !e.protocol.is_http() || RESERVED_PORTS.contains(&e.port) {
            continue;
        }
        let sub =
            Scope::for_egress_listener(mesh.config, mesh.registry, namespace, sidecar, e.index);
        let mut rc = egress::outbound_routes(&mesh.with_scope(&sub), namespace, mode);
        rc.name = route_name(e.port);
        // One port: a Host without `:PORT` is unambiguous here.
        let suffix = format!(":{}", e.port);
        for vh in &mut rc.virtual_hosts {
            let bare: Vec<String> = vh
                .domains
                .iter()
                .filter_map(|d| d.strip_suffix(&suffix))
                .filter(|d| !vh.domains.iter().any(|o| o == d))
                .map(str::to_string)
                .collect();
            vh.domains.extend(bare);
        }
        out.push(rc);
    }
    out
}
