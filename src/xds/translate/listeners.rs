//! Listeners (LDS) of one sidecar, without iptables (Istio's captureMode NONE):
//! inbound listeners (`inbound::ports`: the ports it serves, or a Sidecar's
//! `ingress` list) bind the workload's own address and forward to the app;
//! one outbound HTTP listener binds the workload's
//! address on `OUTBOUND_PORT` and routes by Host header over RDS.

use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier as TcpClusterSpecifier, tcp_proxy::TcpAccessLogOptions,
};

use super::{
    Mesh, OUTBOUND_PORT, OUTBOUND_ROUTE, ads_config_source, any, duration, inbound_cluster_name,
    socket_address,
};
use super::{access_log, authz, http_policy, inbound, mtls, tracing};
use crate::model::registry::{Protocol, Workload};
use crate::model::security::MtlsMode;
use crate::model::telemetry::TelemetrySpec;
use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
const ROUTER: &str = "envoy.filters.http.router";

/// Istio's listener naming: `ADDRESS_PORT`.
pub fn listener_name(address: &str, port: u32) -> String {
    format!("{address}_{port}")
}

/// All listeners of `workload`'s sidecar.
pub fn for_workload(mesh: &Mesh<'_>, workload: &Workload) -> Vec<Listener> {
    // Telemetry resources for this workload: its own access log, tracing.
    let telemetry = crate::model::telemetry::resolve::applicable(
        mesh.config,
        &workload.key.namespace,
        &workload.labels,
    );
    let logs = |client: bool, sink: AccessLog| -> Vec<AccessLog> {
        std::iter::once(sink)
            .chain(access_log::telemetry_log(&telemetry, client))
            .collect()
    };
    // AuthorizationPolicy and RequestAuthentication on the inbound side.
    let security = authz::Inbound::for_workload(mesh, workload);
    let mut out: Vec<Listener> = inbound::ports(mesh, workload)
        .into_iter()
        .map(|p| {
            let cluster = inbound_cluster_name(p.port);
            let stat_prefix = format!("inbound_{}", listener_name(&p.bind, p.port));
            let peer = mesh.mtls.then(|| mtls::peer_mode(mesh, workload, p.port));
            // A Sidecar ingress listener's own TLS, as Istio: only where mesh
            // mTLS is off for the port; the protocol is then what TLS carries.
            let tls = p
                .tls
                .filter(|_| matches!(peer, None | Some(MtlsMode::Disable)));
            let protocol = match (tls, p.protocol) {
                (Some(_), Protocol::Https) => Protocol::Http,
                (Some(_), Protocol::Tls) => Protocol::Tcp,
                (_, protocol) => protocol,
            };
            let filter = if protocol.is_http() {
                hcm_filter(HttpConnectionManager {
                    stat_prefix,
                    route_specifier: Some(RouteSpecifier::RouteConfig(inbound_routes(&cluster))),
                    http_filters: security
                        .http_filters()
                        .into_iter()
                        .chain([router()])
                        .collect(),
                    access_log: logs(false, access_log::http(true)),
                    tracing: tracing::hcm_tracing(mesh, &telemetry, false),
                    ..Default::default()
                })
            } else {
                Filter {
                    name: TCP_PROXY.to_string(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&TcpProxy {
                        stat_prefix,
                        cluster_specifier: Some(TcpClusterSpecifier::Cluster(cluster)),
                        access_log: logs(false, access_log::tcp_inbound()),
                        // An entry on connect (connections opened) and one on close.
                        access_log_options: Some(TcpAccessLogOptions {
                            flush_access_log_on_connected: true,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }))),
                }
            };
            let mut l = listener(&p.bind, p.port, filter);
            if !protocol.is_http() {
                for chain in &mut l.filter_chains {
                    chain.filters.splice(0..0, security.network_filters());
                }
            }
            if let Some(tls) = tls {
                for chain in &mut l.filter_chains {
                    chain.transport_socket = Some(inbound::server_tls(tls));
                }
            } else if let Some(mode) = peer {
                apply_peer_authentication(&mut l, mode);
            }
            l
        })
        .collect();
    out.push(listener(
        &workload.address,
        OUTBOUND_PORT,
        outbound_http(
            mesh,
            &telemetry,
            format!(
                "outbound_{}",
                listener_name(&workload.address, OUTBOUND_PORT)
            ),
            OUTBOUND_ROUTE,
            logs(true, access_log::http(false)),
        ),
    ));
    out
}

/// The HTTP connection manager of an outbound HTTP listener (15001, or a
/// Sidecar egress listener's port): routes from `route_name` over RDS.
pub(super) fn outbound_http(
    mesh: &Mesh<'_>,
    telemetry: &[&TelemetrySpec],
    stat_prefix: String,
    route_name: &str,
    access_log: Vec<AccessLog>,
) -> Filter {
    hcm_filter(HttpConnectionManager {
        stat_prefix,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_name.to_string(),
        })),
        // Fault and CORS act only where a route configures them.
        http_filters: vec![
            http_filter(http_policy::FAULT_FILTER, any(&HttpFault::default())),
            http_filter(http_policy::CORS_FILTER, any(&Cors::default())),
            // Resolves the Host of requests for PassthroughCluster (ALLOW_ANY).
            super::egress::passthrough_filter(),
            router(),
        ],
        access_log,
        tracing: tracing::hcm_tracing(mesh, telemetry, true),
        ..Default::default()
    })
}

fn listener(address: &str, port: u32, filter: Filter) -> Listener {
    Listener {
        name: listener_name(address, port),
        address: Some(socket_address(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The server side of mTLS per PeerAuthentication: STRICT takes only mesh
/// mTLS; PERMISSIVE takes mesh mTLS and plaintext (told apart by the TLS
/// inspector); DISABLE takes plaintext.
fn apply_peer_authentication(l: &mut Listener, mode: MtlsMode) {
    let Some(plain) = l.filter_chains.first().cloned() else {
        return;
    };
    let mut tls = plain.clone();
    tls.filter_chain_match = Some(mtls::mtls_chain_match());
    tls.transport_socket = Some(mtls::downstream_socket());
    match mode {
        MtlsMode::Disable => {}
        MtlsMode::Strict => {
            l.listener_filters = vec![mtls::tls_inspector()];
            l.filter_chains = vec![tls];
        }
        MtlsMode::Permissive | MtlsMode::Unset => {
            l.listener_filters = vec![mtls::tls_inspector()];
            l.filter_chains = vec![tls, plain];
        }
    }
}

pub(super) fn hcm_filter(hcm: HttpConnectionManager) -> Filter {
    Filter {
        name: HCM.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
    }
}

pub(super) fn router() -> HttpFilter {
    http_filter(ROUTER, any(&Router::default()))
}

pub(super) fn http_filter(
    name: &str,
    config: envoy_types::pb::google::protobuf::Any,
) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// Inbound traffic on a port all goes to the local app; no timeout, as Istio.
fn inbound_routes(cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: cluster.to_string(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "default".to_string(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
                    timeout: Some(duration(std::time::Duration::ZERO)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
