//! Sidecar egress listeners with their own `port` (Istio's outbound
//! listeners for an `IstioEgressListener` with a port): a listener on that
//! port that reaches only the hosts of that egress listener.
//!
//! * It binds the listener's `bind` address, else the workload's own (no
//!   iptables: the app connects to its sidecar's address at the port, as
//!   for outbound TCP). On the workload's address, a port that is one of its
//!   inbound ports gets no listener (`outbound_tcp::bind`). A `unix:///path`
//!   bind is an Envoy pipe listener on that socket, with port 0 too (the
//!   listener `unix:///path_0`).
//! * `captureMode` NONE and DEFAULT are what pilotfish does (nothing is
//!   captured); IPTABLES needs capture: the listener is skipped with a
//!   warning.
//! * HTTP protocols (HTTP, HTTP2, GRPC): an HTTP connection manager with
//!   its own route table over RDS, named by the port number as Istio names
//!   it (`9080`; port 0: the bind, `unix:///path`). The table holds virtual
//!   hosts only for the services the listener's hosts import that have the
//!   port (each name with and without `:PORT`; port 0: every port, names
//!   with `:PORT`), the VirtualServices within those hosts, and the
//!   catch-all of the outbound traffic policy. Those services stay routed
//!   through 15001 as well, which stands for every port's HTTP listener.
//! * Other protocols: `outbound_tcp`'s rule for one port, over the services
//!   the listener's hosts import on it: the first TCP service in Istio's
//!   order (with its `tcp` routes), TLS services by SNI. Port 0 forwards
//!   to the one non-HTTP service port its hosts import (none or several:
//!   no listener, with a warning).
//! * The address and port are the listener's own: the catch-all egress
//!   listener's TCP services leave them alone (on the workload's address,
//!   the port; with a `bind` of its own, the catch-all keeps the port on
//!   the workload's address, as Istio's keeps `127.0.0.1:PORT`).

use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;

use super::outbound_tcp::{self, Conflict, PortListener, RESERVED_PORTS, Source, UNIX_PREFIX};
use super::scope::Scope;
use super::{Mesh, access_log, egress, listeners};
use crate::model::Resource;
use crate::model::istio::{CaptureMode, Resolution, SidecarSpec};
use crate::model::registry::Protocol;

/// One egress listener with a port (or a `unix://` bind).
#[derive(Clone, Debug)]
pub struct EgressPort<'a> {
    /// Its index in the Sidecar's `egress`.
    pub index: usize,
    /// 0 only with a `unix://` bind: every port of its hosts.
    pub port: u32,
    pub bind: Option<&'a str>,
    pub protocol: Protocol,
    /// `captureMode: IPTABLES`: skipped (pilotfish captures nothing).
    pub iptables: bool,
}

impl EgressPort<'_> {
    fn is_unix(&self) -> bool {
        self.bind.is_some_and(|b| b.starts_with(UNIX_PREFIX))
    }

    /// Translated into a listener (not skipped for its capture mode).
    pub fn listens(&self) -> bool {
        !self.iptables
    }
}

/// The egress listeners of `sidecar` with a port or a `unix://` bind.
pub fn ports<'a>(sidecar: Option<(&Resource, &'a SidecarSpec)>) -> Vec<EgressPort<'a>> {
    let Some((_, spec)) = sidecar else {
        return Vec::new();
    };
    spec.egress
        .iter()
        .enumerate()
        .filter_map(|(index, e)| {
            let p = e.port.as_ref()?;
            let bind = e.bind.as_deref().filter(|b| !b.is_empty());
            let port = p.number.unwrap_or(0);
            if port == 0 && !bind.is_some_and(|b| b.starts_with(UNIX_PREFIX)) {
                return None; // validation reports it
            }
            Some(EgressPort {
                index,
                port,
                bind,
                protocol: Protocol::detect(p.protocol.as_deref(), p.name.as_deref().unwrap_or("")),
                iptables: e.capture_mode == Some(CaptureMode::Iptables),
            })
        })
        .collect()
}

/// The RDS name of an HTTP egress listener's route table, as Istio's: the
/// port, or for port 0 the socket (`unix:///path`).
pub fn route_name(e: &EgressPort<'_>) -> String {
    match (e.port, e.bind) {
        (0, Some(bind)) => bind.to_string(),
        (port, _) => port.to_string(),
    }
}

/// The HTTP connection manager's stat prefix (Envoy stat names keep to
/// letters, digits, `_` and `.`).
fn stat_prefix(e: &EgressPort<'_>) -> String {
    match e.bind.filter(|_| e.is_unix()) {
        Some(bind) => {
            let clean: String = bind
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("outbound_{clean}_{}", e.port)
        }
        None => format!("outbound_0.0.0.0_{}", e.port),
    }
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
    conflicts: &mut Vec<Conflict>,
) -> Option<PortListener> {
    let here = origin(sidecar.0, e);
    let hosts = sidecar.1.egress[e.index].hosts.clone();
    if e.iptables {
        warnings.push(format!(
            "{here}: captureMode IPTABLES needs traffic capture, which pilotfish does not do: no listener"
        ));
        return None;
    }
    if !e.is_unix() && RESERVED_PORTS.contains(&e.port) {
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
        let filter = listeners::outbound_http(mesh, &chain, stat_prefix(e), &route_name(e), logs);
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
            egress: true,
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
        // Port 0: every non-HTTP port of its hosts' services.
        let ports = svc
            .ports
            .iter()
            .filter(|p| p.number == e.port || (e.port == 0 && !p.protocol.is_http()));
        for p in ports {
            if !m.routes_to(&svc.hostname, p.number) {
                continue;
            }
            if svc.resolution == Resolution::None {
                local.push(outbound_tcp::none_warning(svc, p.number));
                continue;
            }
            services.push((svc.as_ref(), p));
        }
    }
    let port = match services.as_slice() {
        [] => {
            local.push("its hosts import no service on the port: no listener".to_string());
            None
        }
        [(_, p)] => Some(p.number),
        [(_, p), ..] if e.port > 0 => Some(p.number),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|(s, p)| format!("{}:{}", s.hostname, p.number))
                .collect();
            local.push(format!(
                "port 0 forwards to one service port, and its hosts import {}: no listener (give the listener a port)",
                names.join(", ")
            ));
            None
        }
    };
    let mut found = Vec::new();
    let out = port.and_then(|port| {
        outbound_tcp::port_listener(&m, src, port, services, tcp_logs, &mut local, &mut found)
    });
    warnings.extend(local.into_iter().map(|w| format!("{here}: {w}")));
    conflicts.extend(found.into_iter().map(|c| Conflict {
        bind: bind.clone(),
        ..c
    }));
    out.map(|pl| PortListener {
        port: e.port,
        bind,
        egress: true,
        hosts,
        ..pl
    })
}

/// The route tables of `sidecar`'s HTTP egress listeners with a port, for
/// proxies in `namespace` (`mesh` as for the view's `outbound` table: its
/// scope is replaced by each egress listener's own).
pub fn route_tables(
    mesh: &Mesh<'_>,
    namespace: &str,
    sidecar: (&Resource, &SidecarSpec),
    mode: egress::Outbound<'_>,
) -> Vec<RouteConfiguration> {
    let mut out = Vec::new();
    for e in ports(Some(sidecar)) {
        if !e.protocol.is_http()
            || !e.listens()
            || (!e.is_unix() && RESERVED_PORTS.contains(&e.port))
        {
            continue;
        }
        let sub =
            Scope::for_egress_listener(mesh.config, mesh.registry, namespace, sidecar, e.index);
        let mut rc = egress::outbound_routes(&mesh.with_scope(&sub), namespace, mode);
        rc.name = route_name(&e);
        if e.port == 0 {
            out.push(rc); // every port: names keep their `:PORT`
            continue;
        }
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
