//! Access logs every sidecar streams to pilotfish's telemetry sink (Envoy's
//! gRPC AccessLogService). The log name tells the sink which side reported:
//! outbound listeners report as the source, inbound listeners as the
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
pub const LOG_TCP_OUTBOUND: &str = "pilotfish-tcp-outbound";
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
    tcp(LOG_TCP_INBOUND)
}

/// The access log of an outbound TCP proxy (source reporter).
pub fn tcp_outbound() -> AccessLog {
    tcp(LOG_TCP_OUTBOUND)
}

fn tcp(log_name: &str) -> AccessLog {
    AccessLog {
        name: "envoy.access_loggers.tcp_grpc".to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(any(
            &TcpGrpcAccessLogConfig {
                common_config: Some(common(log_name)),
            },
        ))),
        ..Default::default()
    }
}

fn to_strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Envoy's text access-log format as Istio's `envoy` provider writes it: one
/// line per request with response flags, upstream host and cluster.
pub const ENVOY_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// The proxy's own access log (Telemetry `accessLogging` with the `envoy`
/// provider) for client (outbound) or server (inbound) traffic of a workload
/// that `chain` (see `model::telemetry::resolve`) applies to; None when no
/// Telemetry turns it on, or one turns it off.
pub fn telemetry_log(
    chain: &[&crate::model::telemetry::TelemetrySpec],
    client: bool,
) -> Option<AccessLog> {
    use crate::model::telemetry::resolve::{ENVOY_PROVIDER, access_logging};
    use envoy_types::pb::envoy::config::accesslog::v3::{
        AccessLogFilter, ExtensionFilter, access_log_filter, extension_filter,
    };
    use envoy_types::pb::envoy::config::core::v3::{
        DataSource, SubstitutionFormatString, data_source, substitution_format_string,
    };
    use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
        StdoutAccessLog, stdout_access_log,
    };

    let setting = access_logging(chain, client)?;
    let envoy =
        setting.providers.is_empty() || setting.providers.iter().any(|p| p.name == ENVOY_PROVIDER);
    if setting.disabled == Some(true) || !envoy {
        return None;
    }
    let filter = setting
        .filter
        .as_ref()
        .and_then(|f| f.expression.clone())
        .filter(|e| !e.is_empty())
        .map(|expression| AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
                ExtensionFilter {
                    name: "envoy.access_loggers.extension_filters.cel".to_string(),
                    config_type: Some(extension_filter::ConfigType::TypedConfig(any(
                        &ExpressionFilter {
                            expression,
                            ..Default::default()
                        },
                    ))),
                },
            )),
        });
    Some(AccessLog {
        name: "envoy.access_loggers.stdout".to_string(),
        filter,
        config_type: Some(access_log::ConfigType::TypedConfig(any(&StdoutAccessLog {
            access_log_format: Some(stdout_access_log::AccessLogFormat::LogFormat(
                SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::TextFormatSource(
                        DataSource {
                            specifier: Some(data_source::Specifier::InlineString(
                                ENVOY_TEXT_FORMAT.to_string(),
                            )),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
            )),
        }))),
    })
}
