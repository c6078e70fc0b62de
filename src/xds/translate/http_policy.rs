//! Per-route HTTP features of a VirtualService rule: fault injection,
//! mirroring, CORS, and consistent-hash keys.

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    HashPolicy, RequestMirrorPolicy,
    hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter},
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay as EnvoyDelay, fault_delay::FaultDelaySecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort as EnvoyAbort, HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{Any, BoolValue};

use super::{any, duration};
use crate::model::istio::{
    AbortKind, ConsistentHashLb, CorsPolicy, DelayKind, HashKey, HttpFaultInjection,
    StringMatchKind, UnmatchedPreflights, parse_duration,
};

/// Envoy's HTTP filter names; the outbound connection manager runs them in
/// this order before the router.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Istio's percentages are 0-100 with decimals; Envoy's, parts per million.
pub fn percent(value: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// gRPC status names Istio accepts in `fault.abort.grpcStatus`.
fn grpc_code(name: &str) -> Option<u32> {
    const CODES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    CODES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .map(|i| i as u32)
        .or_else(|| name.parse().ok())
}

/// The fault filter's per-route config; None when nothing is injected.
pub fn fault(f: &HttpFaultInjection) -> Option<Any> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = match d.kind()? {
            DelayKind::Fixed(s) | DelayKind::Exponential(s) => parse_duration(s).ok()?,
        };
        Some(EnvoyDelay {
            percentage: Some(percent(d.effective_percentage().unwrap_or(100.0))),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration(fixed))),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = match a.kind()? {
            AbortKind::HttpStatus(code) => ErrorType::HttpStatus(code.clamp(200, 599) as u32),
            AbortKind::GrpcStatus(name) => ErrorType::GrpcStatus(grpc_code(name)?),
            // Envoy has no stream-reset fault; Istio maps http2Error the same way.
            AbortKind::Http2Error(_) => return None,
        };
        Some(EnvoyAbort {
            percentage: Some(percent(a.percentage.as_ref().map_or(100.0, |p| p.value))),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(any(&HttpFault {
        delay,
        abort,
        ..Default::default()
    }))
}

/// A mirror to `cluster` for `percentage` (default 100) of requests.
pub fn mirror(cluster: String, percentage: Option<f64>) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(percent(percentage.unwrap_or(100.0))),
            runtime_key: String::new(),
        }),
        trace_sampled: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// The CORS filter's per-route config.
pub fn cors(c: &CorsPolicy) -> Any {
    let exact = |s: &String| StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.clone())),
        ..Default::default()
    };
    let mut origins: Vec<StringMatcher> = c.allow_origin.iter().map(exact).collect();
    origins.extend(c.allow_origins.iter().filter_map(|m| {
        let pattern = match m.kind()? {
            StringMatchKind::Exact(s) => MatchPattern::Exact(s.to_string()),
            StringMatchKind::Prefix(s) => MatchPattern::Prefix(s.to_string()),
            StringMatchKind::Regex(s) => {
                MatchPattern::SafeRegex(envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                    regex: s.to_string(),
                    ..Default::default()
                })
            }
        };
        Some(StringMatcher {
            match_pattern: Some(pattern),
            ..Default::default()
        })
    }));
    any(&EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_deref()
            .and_then(|d| parse_duration(d).ok())
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        forward_not_matching_preflights: c.unmatched_preflights.map(|u| BoolValue {
            value: u != UnmatchedPreflights::Ignore,
        }),
        ..Default::default()
    })
}

/// The route hash policy for a destination whose DestinationRule asks for
/// consistent hashing.
pub fn hash_policy(h: &ConsistentHashLb) -> Option<HashPolicy> {
    let spec = match h.hash_key()? {
        HashKey::HttpHeaderName(name) => PolicySpecifier::Header(Header {
            header_name: name.to_string(),
            ..Default::default()
        }),
        HashKey::HttpCookie(c) => PolicySpecifier::Cookie(Cookie {
            name: c.name.clone(),
            path: c.path.clone().unwrap_or_default(),
            ttl: c
                .ttl
                .as_deref()
                .and_then(|t| parse_duration(t).ok())
                .map(duration),
            ..Default::default()
        }),
        HashKey::UseSourceIp(true) => {
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
        }
        HashKey::UseSourceIp(false) => return None,
        HashKey::HttpQueryParameterName(name) => PolicySpecifier::QueryParameter(QueryParameter {
            name: name.to_string(),
        }),
    };
    Some(HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    })
}

/// Envoy's retry priority that moves retries to other priorities (other
/// localities) once one failed: Istio's `retryRemoteLocalities`. Istio
/// refreshes the excluded priorities every attempt + 1.
pub fn retry_remote_localities(
    attempts: i32,
) -> envoy_types::pb::envoy::config::route::v3::retry_policy::RetryPriority {
    use envoy_types::pb::envoy::config::route::v3::retry_policy::{RetryPriority, retry_priority};
    use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
    RetryPriority {
        name: "envoy.retry_priorities.previous_priorities".to_string(),
        config_type: Some(retry_priority::ConfigType::TypedConfig(any(
            &PreviousPrioritiesConfig {
                update_frequency: attempts.max(0) + 1,
            },
        ))),
    }
}
