//! Access logs every sidecar streams to pilotfish's telemetry sink (Envoy's
//! gRPC AccessLogService). The log name tells the sink which side reported:
//! the outbound listener reports as the source, inbound listeners as the
//! destination, as Istio's `reporter` label says.

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::core::v3::{ApiVersion, GrpcService, grpc_service};
use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::{
    CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig, TcpGrpcAccessLogConfig,
};

use super::{any, duration};

/// The bootstrap's cluster that points at pilotfish's telemetry sink.
pub const TELEMETRY_CLUSTER: &str = "pilotfish-telemetry";
/// Log names, one per reporter and protocol.
pub const LOG_HTTP_OUTBOUND: &str = "pilotfish-http-outbound";
pub const LOG_HTTP_INBOUND: &str = "pilotfish-http-inbound";
pub const LOG_TCP_INBOUND: &str = "pilotfish-tcp-inbound";
/// How long Envoy buffers entries before it sends them (Envoy's default is 1 s).
const FLUSH_MS: u64 = 500;
/// Request headers and response trailers the sink needs for Istio's labels.
pub const REQUEST_HEADERS: &[&str] = &["content-type"];
pub const RESPONSE_TRAILERS: &[&str] = &["grpc-status"];

fn common(log_name: &str) -> CommonGrpcAccessLogConfig {
    CommonGrpcAccessLogConfig {
        log_name: log_name.to_string(),
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: TELEMETRY_CLUSTER.to_string(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        transport_api_version: ApiVersion::V3 as i32,
        buffer_flush_interval: Some(duration(std::time::Duration::from_millis(FLUSH_MS))),
        ..Default::default()
    }
}

/// The HTTP access log of a sidecar's outbound (`inbound == false`) or
/// inbound listener.
pub fn http(inbound: bool) -> AccessLog {
    let name = if inbound {
        LOG_HTTP_INBOUND
    } else {
        LOG_HTTP_OUTBOUND
    };
    AccessLog {
        name: "envoy.access_loggers.http_grpc".to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(any(
            &HttpGrpcAccessLogConfig {
                common_config: Some(common(name)),
                additional_request_headers_to_log: to_strings(REQUEST_HEADERS),
                // gRPC puts grpc-status in trailers, or in the headers of a
                // trailers-only response.
                additional_response_headers_to_log: to_strings(RESPONSE_TRAILERS),
                additional_response_trailers_to_log: to_strings(RESPONSE_TRAILERS),
            },
        ))),
        ..Default::default()
    }
}

/// The access log of an inbound TCP proxy.
pub fn tcp_inbound() -> AccessLog {
    AccessLog {
        name: "envoy.access_loggers.tcp_grpc".to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(any(
            &TcpGrpcAccessLogConfig {
                common_config: Some(common(LOG_TCP_INBOUND)),
            },
        ))),
        ..Default::default()
    }
}

fn to_strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
