//! DestinationRule traffic policy applied to an Envoy cluster: connection
//! pool (circuit breakers), outlier detection, upstream TLS, load balancer.

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier, UpstreamConnectionOptions,
    circuit_breakers::{Thresholds, thresholds},
    cluster::{
        CommonLbConfig, LbConfig, LbPolicy, LeastRequestLbConfig, MaglevLbConfig, RingHashLbConfig,
        RoundRobinLbConfig, SlowStartConfig,
    },
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Http1ProtocolOptions, Http2ProtocolOptions,
    HttpProtocolOptions as CommonHttpOptions, ProxyProtocolConfig, RoutingPriority, RuntimeDouble,
    TcpKeepalive, TransportSocket, data_source::Specifier, proxy_protocol_config, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::proxy_protocol::v3::ProxyProtocolUpstreamTransport;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext, common_tls_context::ValidationContextType,
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig, explicit_http_config,
    },
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};

use super::{any, duration};
use crate::model::istio::{
    ClientTlsSettings, ConnectionPoolSettings, H2UpgradePolicy, HashAlgorithm,
    LoadBalancerSettings, OutlierDetection, ProxyProtocol, ProxyProtocolVersion, RetryBudget,
    SimpleLb, TlsMode, parse_duration,
};

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const PROXY_PROTOCOL_SOCKET: &str = "envoy.transport_sockets.upstream_proxy_protocol";
const RAW_BUFFER_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
/// Istio's retry budget defaults when `retryBudget` leaves them out.
const DEFAULT_RETRY_BUDGET_PERCENT: f64 = 20.0;
const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;
/// Istio's warmup defaults: a linear ramp (aggression 1) from 10 % of the
/// weight (Envoy's own floor).
const DEFAULT_WARMUP_AGGRESSION: f64 = 1.0;
const DEFAULT_WARMUP_MIN_PERCENT: f64 = 10.0;
/// A runtime key no runtime layer can hold, so a configured value is fixed
/// (the key Istio uses).
const UNSETTABLE_RUNTIME_KEY: &str = "(";
/// Istio lifts Envoy's default circuit-breaker limits (1024) out of the way:
/// limits apply only where a DestinationRule sets them.
const UNLIMITED: u32 = u32::MAX;

fn dur(s: &Option<String>) -> Option<envoy_types::pb::google::protobuf::Duration> {
    s.as_deref()
        .and_then(|d| parse_duration(d).ok())
        .map(duration)
}

fn u32v(v: Option<i32>) -> Option<UInt32Value> {
    v.filter(|v| *v > 0)
        .map(|v| UInt32Value { value: v as u32 })
}

/// Circuit breakers, timeouts and keepalives from `connectionPool`, and the
/// upstream HTTP protocol options (HTTP/2 for `http2`).
pub fn apply_connection_pool(c: &mut Cluster, pool: Option<&ConnectionPoolSettings>, http2: bool) {
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    let or_unlimited = |v: Option<UInt32Value>| v.or(Some(UInt32Value { value: UNLIMITED }));
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: or_unlimited(u32v(tcp.and_then(|t| t.max_connections))),
            max_pending_requests: or_unlimited(u32v(
                http.and_then(|h| h.http1_max_pending_requests),
            )),
            max_requests: or_unlimited(u32v(http.and_then(|h| h.http2_max_requests))),
            max_retries: or_unlimited(u32v(http.and_then(|h| h.max_retries))),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    });
    if let Some(t) = tcp {
        if let Some(d) = dur(&t.connect_timeout) {
            c.connect_timeout = Some(d);
        }
        if let Some(k) = &t.tcp_keepalive {
            c.upstream_connection_options = Some(UpstreamConnectionOptions {
                tcp_keepalive: Some(TcpKeepalive {
                    keepalive_probes: k.probes.map(|value| UInt32Value { value }),
                    keepalive_time: dur(&k.time).map(|d| UInt32Value {
                        value: d.seconds.max(1) as u32,
                    }),
                    keepalive_interval: dur(&k.interval).map(|d| UInt32Value {
                        value: d.seconds.max(1) as u32,
                    }),
                }),
                ..Default::default()
            });
        }
    }
    let common = CommonHttpOptions {
        idle_timeout: http
            .and_then(|h| dur(&h.idle_timeout))
            .or(tcp.and_then(|t| dur(&t.idle_timeout))),
        max_connection_duration: tcp.and_then(|t| dur(&t.max_connection_duration)),
        max_requests_per_connection: u32v(http.and_then(|h| h.max_requests_per_connection)),
        ..Default::default()
    };
    let has_common = common != CommonHttpOptions::default();
    let max_concurrent_streams = u32v(http.and_then(|h| h.max_concurrent_streams));
    // `useClientProtocol`: HTTP/1.1 or HTTP/2 upstream as the client spoke
    // downstream; it wins over the port's protocol, as in Istio.
    if http.and_then(|h| h.use_client_protocol) == Some(true) {
        let opts = HttpProtocolOptions {
            common_http_protocol_options: has_common.then_some(common),
            upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                UseDownstreamHttpConfig {
                    http_protocol_options: Some(Http1ProtocolOptions::default()),
                    http2_protocol_options: Some(Http2ProtocolOptions {
                        max_concurrent_streams,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        c.typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), any(&opts));
        return;
    }
    if http2 || has_common {
        let opts = HttpProtocolOptions {
            common_http_protocol_options: has_common.then_some(common),
            // Envoy requires the upstream protocol whenever these options are set.
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(if http2 {
                        explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions {
                                max_concurrent_streams,
                                ..Default::default()
                            },
                        )
                    } else {
                        explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                            Http1ProtocolOptions::default(),
                        )
                    }),
                },
            )),
            ..Default::default()
        };
        c.typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), any(&opts));
    }
}

/// Whether `h2UpgradePolicy: UPGRADE` asks for HTTP/2 upstream whatever the
/// port's protocol (Istio's `shouldH2Upgrade`; the mesh default is
/// DO_NOT_UPGRADE). `useClientProtocol` takes precedence.
pub fn h2_upgrade(pool: Option<&ConnectionPoolSettings>) -> bool {
    let Some(http) = pool.and_then(|p| p.http.as_ref()) else {
        return false;
    };
    http.use_client_protocol != Some(true)
        && http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
}

/// `trafficPolicy.retryBudget`: a cap on concurrent retries relative to the
/// active requests, with Istio's defaults (20 %, at least 3 retries).
/// Envoy then ignores the `max_retries` threshold.
pub fn retry_budget(c: &mut Cluster, budget: Option<&RetryBudget>) {
    let Some(budget) = budget else { return };
    let Some(t) = c
        .circuit_breakers
        .as_mut()
        .and_then(|cb| cb.thresholds.first_mut())
    else {
        return;
    };
    t.retry_budget = Some(thresholds::RetryBudget {
        budget_percent: Some(Percent {
            value: budget.percent.unwrap_or(DEFAULT_RETRY_BUDGET_PERCENT),
        }),
        min_retry_concurrency: Some(UInt32Value {
            value: budget
                .min_retry_concurrency
                .filter(|v| *v > 0)
                .unwrap_or(DEFAULT_MIN_RETRY_CONCURRENCY),
        }),
        budget_interval: dur(&budget.budget_interval),
    });
}

/// `trafficPolicy.proxyProtocol`: a PROXY protocol header before anything
/// else on upstream connections, as Istio sets it: the cluster's transport
/// socket (plain, TLS, or each auto-mTLS match) wrapped in Envoy's
/// upstream proxy-protocol socket.
pub fn upstream_proxy_protocol(c: &mut Cluster, pp: Option<&ProxyProtocol>) {
    let Some(pp) = pp else { return };
    let version = match pp.version.unwrap_or_default() {
        ProxyProtocolVersion::V1 => proxy_protocol_config::Version::V1,
        ProxyProtocolVersion::V2 => proxy_protocol_config::Version::V2,
    };
    let wrap = |inner: Option<TransportSocket>| TransportSocket {
        name: PROXY_PROTOCOL_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &ProxyProtocolUpstreamTransport {
                config: Some(ProxyProtocolConfig {
                    version: version as i32,
                    ..Default::default()
                }),
                transport_socket: Some(inner.unwrap_or_else(raw_buffer)),
                ..Default::default()
            },
        ))),
    };
    if c.transport_socket_matches.is_empty() {
        c.transport_socket = Some(wrap(c.transport_socket.take()));
        return;
    }
    if let Some(ts) = c.transport_socket.take() {
        c.transport_socket = Some(wrap(Some(ts)));
    }
    for m in &mut c.transport_socket_matches {
        m.transport_socket = Some(wrap(m.transport_socket.take()));
    }
}

fn raw_buffer() -> TransportSocket {
    TransportSocket {
        name: RAW_BUFFER_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &RawBuffer::default(),
        ))),
    }
}

/// Outlier detection, as Istio maps it: each consecutive-error check set above
/// zero is enforced 100 %; success-rate ejection is off.
pub fn outlier_detection(c: &mut Cluster, od: Option<&OutlierDetection>) {
    let Some(od) = od else { return };
    let five_xx = od
        .consecutive_5xx_errors
        .or(od.consecutive_errors.filter(|v| *v > 0).map(|v| v as u32));
    let enforce = |v: Option<u32>| {
        v.map(|v| UInt32Value {
            value: if v > 0 { 100 } else { 0 },
        })
    };
    c.outlier_detection = Some(EnvoyOutlier {
        consecutive_5xx: five_xx.map(|value| UInt32Value { value }),
        enforcing_consecutive_5xx: enforce(five_xx).or(Some(UInt32Value { value: 0 })),
        consecutive_gateway_failure: od
            .consecutive_gateway_errors
            .map(|value| UInt32Value { value }),
        enforcing_consecutive_gateway_failure: enforce(od.consecutive_gateway_errors),
        split_external_local_origin_errors: od.split_external_local_origin_errors.unwrap_or(false),
        consecutive_local_origin_failure: od
            .consecutive_local_origin_failures
            .map(|value| UInt32Value { value }),
        enforcing_consecutive_local_origin_failure: enforce(od.consecutive_local_origin_failures),
        interval: dur(&od.interval),
        base_ejection_time: dur(&od.base_ejection_time),
        max_ejection_percent: od.max_ejection_percent.map(|v| UInt32Value {
            value: v.clamp(0, 100) as u32,
        }),
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        ..Default::default()
    });
    if let Some(min) = od.min_health_percent {
        c.common_lb_config = Some(CommonLbConfig {
            healthy_panic_threshold: Some(Percent {
                value: f64::from(min.clamp(0, 100)),
            }),
            ..Default::default()
        });
    }
}

/// Upstream TLS for SIMPLE and MUTUAL modes: certificates from files, as
/// Istio's non-mesh TLS does, or from `credentialName` over SDS (see
/// `egress::credential_tls`). ISTIO_MUTUAL is set up in `clusters` (mesh mTLS).
pub fn upstream_tls(c: &mut Cluster, tls: Option<&ClientTlsSettings>) {
    let Some(tls) = tls else { return };
    let mode = tls.mode.unwrap_or_default();
    if !matches!(mode, TlsMode::Simple | TlsMode::Mutual) {
        return;
    }
    if let Some(name) = &tls.credential_name {
        // Key pair and CA over SDS instead of files.
        let ctx = super::egress::credential_tls(tls, name);
        c.transport_socket = Some(TransportSocket {
            name: TLS_SOCKET.to_string(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
        });
        return;
    }
    let file = |p: &Option<String>| {
        p.clone().map(|f| DataSource {
            specifier: Some(Specifier::Filename(f)),
            ..Default::default()
        })
    };
    let mut common = CommonTlsContext::default();
    if mode == TlsMode::Mutual {
        common.tls_certificates = vec![TlsCertificate {
            certificate_chain: file(&tls.client_certificate),
            private_key: file(&tls.private_key),
            ..Default::default()
        }];
    }
    if !tls.insecure_skip_verify.unwrap_or(false)
        && (tls.ca_certificates.is_some() || !tls.subject_alt_names.is_empty())
    {
        common.validation_context_type = Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: file(&tls.ca_certificates),
                match_typed_subject_alt_names: dns_san_matchers(&tls.subject_alt_names),
                crl: file(&tls.ca_crl),
                ..Default::default()
            },
        ));
    }
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    c.transport_socket = Some(TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    });
}

/// The load-balancing policy. Istio's default is LEAST_REQUEST.
pub fn load_balancer(c: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    if let Some(hash) = lb.and_then(|l| l.consistent_hash.as_ref()) {
        match hash.hash_algorithm() {
            Some(HashAlgorithm::Maglev(m)) => {
                c.lb_policy = LbPolicy::Maglev as i32;
                c.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                    table_size: m.table_size.map(|value| UInt64Value { value }),
                }));
            }
            ring => {
                let min = match ring {
                    Some(HashAlgorithm::RingHash(r)) => r.minimum_ring_size,
                    _ => hash.minimum_ring_size,
                };
                c.lb_policy = LbPolicy::RingHash as i32;
                c.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                    minimum_ring_size: min.map(|value| UInt64Value { value }),
                    ..Default::default()
                }));
            }
        }
        return;
    }
    let policy = match lb.and_then(|l| l.simple) {
        Some(SimpleLb::Random) => LbPolicy::Random,
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Passthrough) => LbPolicy::ClusterProvided,
        _ => LbPolicy::LeastRequest,
    };
    c.lb_policy = policy as i32;
    // Warmup (slow start) exists for round robin and least request only.
    let Some(slow_start_config) = lb.and_then(slow_start) else {
        return;
    };
    c.lb_config = match policy {
        LbPolicy::RoundRobin => Some(LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
            slow_start_config: Some(slow_start_config),
        })),
        LbPolicy::LeastRequest => Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
            slow_start_config: Some(slow_start_config),
            ..Default::default()
        })),
        _ => None,
    };
}

/// `warmup` (or the older `warmupDurationSecs`, a window alone), as Istio
/// maps it: aggression 1 (linear) and a 10 % floor unless set.
fn slow_start(lb: &LoadBalancerSettings) -> Option<SlowStartConfig> {
    if let Some(w) = &lb.warmup {
        return Some(SlowStartConfig {
            slow_start_window: dur(&Some(w.duration.clone())),
            aggression: Some(RuntimeDouble {
                default_value: w.aggression.unwrap_or(DEFAULT_WARMUP_AGGRESSION),
                // Istio fixes the value: a key no runtime layer can set.
                runtime_key: UNSETTABLE_RUNTIME_KEY.to_string(),
            }),
            min_weight_percent: Some(Percent {
                value: w.minimum_percent.unwrap_or(DEFAULT_WARMUP_MIN_PERCENT),
            }),
        });
    }
    let window = dur(&lb.warmup_duration_secs)?;
    Some(SlowStartConfig {
        slow_start_window: Some(window),
        ..Default::default()
    })
}

/// DestinationRule `subjectAltNames`: each an exact DNS SAN the server's
/// certificate must carry.
pub fn dns_san_matchers(sans: &[String]) -> Vec<SubjectAltNameMatcher> {
    sans.iter()
        .map(|san| SubjectAltNameMatcher {
            san_type: SanType::Dns as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(san.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}
