//! Tracing from Telemetry resources: Envoy's Zipkin tracer on a workload's
//! HTTP connection managers, reporting to the collector `serve
//! --zipkin-address` names (Istio's `zipkin` extension provider).

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::ClusterDiscoveryType};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::trace::v3::{ZipkinConfig, tracing, zipkin_config};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::v3::Percent;

use super::{Mesh, any, socket_address};
use crate::model::telemetry::TelemetrySpec;
use crate::model::telemetry::resolve::{ZIPKIN_PROVIDER, tracing as tracing_setting};

/// Name of the cluster that points at the Zipkin collector.
pub const ZIPKIN_CLUSTER: &str = "zipkin";
/// Istio's default sampling when a Telemetry names no percentage.
const DEFAULT_SAMPLING: f64 = 1.0;

/// The HCM tracing config for client or server traffic of a workload
/// `chain` applies to: None without a `zipkin` tracing setting, or when no
/// collector is configured.
pub fn hcm_tracing(mesh: &Mesh<'_>, chain: &[&TelemetrySpec], client: bool) -> Option<Tracing> {
    mesh.zipkin?;
    let t = tracing_setting(chain, client)?;
    let zipkin = t.providers.is_empty() || t.providers.iter().any(|p| p.name == ZIPKIN_PROVIDER);
    if !zipkin || t.disable_span_reporting == Some(true) {
        return None;
    }
    let sampling = t
        .random_sampling_percentage
        .unwrap_or(DEFAULT_SAMPLING)
        .clamp(0.0, 100.0);
    Some(Tracing {
        random_sampling: Some(Percent { value: sampling }),
        provider: Some(tracing::Http {
            name: "envoy.tracers.zipkin".to_string(),
            config_type: Some(tracing::http::ConfigType::TypedConfig(any(&ZipkinConfig {
                collector_cluster: ZIPKIN_CLUSTER.to_string(),
                collector_endpoint: "/api/v2/spans".to_string(),
                collector_endpoint_version: zipkin_config::CollectorEndpointVersion::HttpJson
                    as i32,
                trace_id_128bit: true,
                ..Default::default()
            }))),
        }),
        ..Default::default()
    })
}

/// The cluster for the Zipkin collector (`host:port`; a name is resolved by Envoy).
pub fn zipkin_cluster(address: &str) -> Option<Cluster> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u32 = port.parse().ok()?;
    let host = host.trim_matches(['[', ']']);
    let kind = if host.parse::<std::net::IpAddr>().is_ok() {
        envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::Static
    } else {
        envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::StrictDns
    };
    Some(Cluster {
        name: ZIPKIN_CLUSTER.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: Some(super::duration(std::time::Duration::from_secs(
            super::CONNECT_TIMEOUT_SECS as u64,
        ))),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: ZIPKIN_CLUSTER.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address(host, port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
}
