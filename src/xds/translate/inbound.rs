//! What a sidecar receives traffic on: one entry per inbound listener, with
//! the address it binds, its protocol and where its cluster (`inbound|PORT||`)
//! forwards. Listeners (`listeners.rs`), inbound clusters (`clusters.rs`) and
//! the outbound TCP listeners that must stay off these ports all read it.
//!
//! Without a Sidecar `ingress`, as before: every port of every service that
//! selects the workload, on the workload's address, to the app address on the
//! same port. With one (the Sidecar `scope::select_sidecar` picks for the
//! workload), Istio's rule: the ingress listeners replace those, each on
//! `bind` (default the workload's address) at `port.number`, with
//! `port.protocol`, forwarding to `defaultEndpoint`.

use std::collections::{BTreeMap, BTreeSet};

use super::clusters::inbound_ports;
use super::outbound_tcp::RESERVED_PORTS;
use super::{Mesh, OUTBOUND_PORT, scope};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;

use crate::model::istio::{
    CaptureMode, ConnectionPoolSettings, IstioIngressListener, Server, ServerTlsSettings,
    SidecarSpec,
};
use crate::model::registry::{Protocol, Workload};

/// Istio's `defaultEndpoint` prefix for a unix domain socket.
const UNIX_PREFIX: &str = "unix://";

/// Where an inbound cluster sends traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// An IP address and port.
    Socket { address: String, port: u32 },
    /// A unix domain socket (`unix:///path`, kept whole).
    Pipe(String),
}

/// One inbound listener of a sidecar and its cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundPort<'a> {
    /// Listener port; the cluster is `inbound|PORT||`.
    pub port: u32,
    /// Address the listener binds.
    pub bind: String,
    pub protocol: Protocol,
    pub target: Target,
    /// Server TLS of a Sidecar ingress listener (files).
    pub tls: Option<&'a ServerTlsSettings>,
    /// The Sidecar's connection pool for this port (its ingress listener's,
    /// else `inboundConnectionPool`): applies to the inbound cluster.
    pub connection_pool: Option<&'a ConnectionPoolSettings>,
}

/// The Sidecar `scope::select_sidecar` picks for `workload`; None at once
/// when no Sidecar in the mesh says anything about the inbound side
/// (ingress listeners, an inbound connection pool), so proxies pay nothing
/// for Sidecars that only scope egress. (Gateway proxies have their own
/// listeners and never use these.)
pub fn sidecar_for<'a>(mesh: &Mesh<'a>, workload: &Workload) -> Option<&'a SidecarSpec> {
    let any = mesh
        .config
        .sidecars()
        .any(|(_, s)| !s.ingress.is_empty() || s.inbound_connection_pool.is_some());
    if !any {
        return None;
    }
    scope::select_sidecar(mesh.config, &workload.key.namespace, &workload.labels)
        .sidecar
        .map(|(_, s)| s)
}

/// The inbound listeners of `workload`'s sidecar, by port.
pub fn ports<'a>(mesh: &Mesh<'a>, workload: &Workload) -> Vec<InboundPort<'a>> {
    plan(mesh, workload, sidecar_for(mesh, workload)).0
}

/// The ports bound on the workload's own address (where outbound TCP
/// listeners must not go).
pub fn ports_on_address(mesh: &Mesh<'_>, workload: &Workload) -> BTreeSet<u32> {
    port_numbers(mesh, workload, true)
}

/// The ports of `ports`, only those on the workload's address when
/// `own_address`; without a Sidecar ingress, without building the plan.
pub fn port_numbers(mesh: &Mesh<'_>, workload: &Workload, own_address: bool) -> BTreeSet<u32> {
    let sidecar = sidecar_for(mesh, workload).filter(|s| !s.ingress.is_empty());
    if sidecar.is_none() {
        return inbound_ports(mesh, workload)
            .into_keys()
            .filter(|p| *p != OUTBOUND_PORT)
            .collect();
    }
    plan(mesh, workload, sidecar)
        .0
        .into_iter()
        .filter(|p| !own_address || p.bind == workload.address)
        .map(|p| p.port)
        .collect()
}

/// The inbound listeners with `sidecar` applied, and what was left out.
pub fn plan<'a>(
    mesh: &Mesh<'a>,
    workload: &Workload,
    sidecar: Option<&'a SidecarSpec>,
) -> (Vec<InboundPort<'a>>, Vec<String>) {
    let pool_for = |port: u32| {
        sidecar.and_then(|s| {
            s.ingress
                .iter()
                .find(|i| i.port.number == Some(port))
                .and_then(|i| i.connection_pool.as_ref())
                .or(s.inbound_connection_pool.as_ref())
        })
    };
    let ingress = sidecar.map(|s| s.ingress.as_slice()).unwrap_or_default();
    if ingress.is_empty() {
        let out = inbound_ports(mesh, workload)
            .into_iter()
            .filter(|(port, _)| *port != OUTBOUND_PORT)
            .map(|(port, protocol)| InboundPort {
                port,
                bind: workload.address.clone(),
                protocol,
                target: Target::Socket {
                    address: workload.app_address.clone(),
                    port,
                },
                tls: None,
                connection_pool: pool_for(port),
            })
            .collect();
        return (out, Vec::new());
    }
    let mut by_port: BTreeMap<u32, InboundPort<'a>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for listener in ingress {
        // Validation guarantees a port in 1..65535; unique ports.
        let Some(port) = listener.port.number.filter(|n| *n > 0) else {
            continue;
        };
        let skip = |why: &str| {
            format!(
                "sidecar {}: no inbound listener for Sidecar ingress port {port}: {why}",
                workload.key
            )
        };
        if listener.capture_mode == Some(CaptureMode::Iptables) {
            // Istio makes these filter chains of the iptables-fed virtual
            // inbound listener, which a proxy without capture does not have.
            skipped.push(skip(
                "captureMode IPTABLES needs traffic capture, which pilotfish does not do",
            ));
            continue;
        }
        if RESERVED_PORTS.contains(&port) {
            skipped.push(skip("it is one of the proxy's own ports"));
            continue;
        }
        if by_port.contains_key(&port) {
            continue;
        }
        let protocol = Protocol::detect(listener.port.protocol.as_deref(), "");
        by_port.insert(
            port,
            InboundPort {
                port,
                bind: listener
                    .bind
                    .clone()
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| workload.address.clone()),
                protocol,
                target: target(workload, listener, port),
                tls: listener.tls.as_ref(),
                connection_pool: pool_for(port),
            },
        );
    }
    (by_port.into_values().collect(), skipped)
}

/// Where an ingress listener forwards: `defaultEndpoint`, as Istio reads it
/// (`127.0.0.1` and `::1` loopback, `0.0.0.0` and `::` the instance's own
/// address, here the app address, `unix://` a socket). Without one Istio
/// forwards to the original destination, which without capture is the
/// listener itself: pilotfish sends to the app address on the same port.
fn target(workload: &Workload, listener: &IstioIngressListener, port: u32) -> Target {
    let app = |port: u32| Target::Socket {
        address: workload.app_address.clone(),
        port,
    };
    let Some(endpoint) = listener
        .default_endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
    else {
        return app(port);
    };
    if endpoint.starts_with(UNIX_PREFIX) {
        return Target::Pipe(endpoint.to_string());
    }
    // Validation guarantees `HOST:PORT` with a numeric port.
    let Some((host, p)) = endpoint.rsplit_once(':') else {
        return app(port);
    };
    let Ok(p) = p.parse::<u32>() else {
        return app(port);
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let app_is_v6 = workload.app_address.contains(':');
    match host {
        "127.0.0.1" | "::1" => Target::Socket {
            address: host.to_string(),
            port: p,
        },
        // The instance's IPv6 address, else IPv6 loopback (Istio's fallback).
        "::" if !app_is_v6 => Target::Socket {
            address: "::1".to_string(),
            port: p,
        },
        _ => app(p),
    }
}

/// The TLS a Sidecar ingress listener terminates: a gateway server's with
/// the same settings (validation allows only files: no credentialName).
pub fn server_tls(tls: &ServerTlsSettings) -> TransportSocket {
    // HTTP ALPN offered whatever the port's protocol, as Istio's sidecar
    // ingress TLS does.
    super::gateway::downstream_tls(
        &Server {
            tls: Some(tls.clone()),
            ..Default::default()
        },
        true,
    )
}

/// Everything left out of sidecars' inbound listeners, and why.
pub fn warnings(mesh: &Mesh<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for w in mesh.registry.workloads.values() {
        let Some(sidecar) = sidecar_for(mesh, w) else {
            continue;
        };
        if sidecar.ingress.is_empty() || super::gateway::is_gateway(mesh, w) {
            continue;
        }
        out.extend(plan(mesh, w, Some(sidecar)).1);
    }
    out
}

/// Hashes what `ports` depends on beyond the workload and the services
/// selecting it: the Sidecar's ingress listeners and inbound connection pool.
pub fn hash_inputs(mesh: &Mesh<'_>, workload: &Workload, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    if let Some(s) = sidecar_for(mesh, workload) {
        format!("{:?}{:?}", s.ingress, s.inbound_connection_pool).hash(h);
    }
}

#[cfg(test)]
mod tests;
