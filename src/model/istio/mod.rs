//! Typed `spec`s of the Istio networking kinds pilotfish reads:
//! VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Gateway,
//! Sidecar and WorkloadGroup.
//!
//! Field names follow the `networking.istio.io` CRD schema exactly (v1, v1beta1
//! and v1alpha3 share it), and every struct rejects unknown fields, so a typo
//! in user YAML is an error rather than a silently ignored setting.
//!
//! Protobuf `oneof` groups are modelled as structs of `Option`s, because that
//! is how they appear in YAML; each such type has a `kind()`-style accessor
//! returning an enum view, and `validate_one_of` reports groups with more than
//! one member set. Durations stay strings as written by the user (`"10s"`);
//! [`parse_duration`] turns them into [`std::time::Duration`].

mod common;
pub mod delegate;
mod destination_rule;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;
mod workload_entry;
mod workload_group;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use common::{
    IstioStatus, Percent, PolicyTargetReference, PortSelector, StringMatch, StringMatchKind,
    WorkloadSelector,
};
pub use destination_rule::{
    BackendUtilization, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb,
    CookieAttribute, DestinationRule, DestinationRuleSpec, H2UpgradePolicy, HashAlgorithm, HashKey,
    Http2KeepAlive, HttpCookie, HttpSettings, LoadBalancerKind, LoadBalancerSettings,
    LocalityDistribute, LocalityFailover, LocalityLoadBalancerSetting, Maglev, OutlierDetection,
    PortTrafficPolicy, ProxyProtocol, ProxyProtocolVersion, RetryBudget, RingHash, SimpleLb,
    Subset, TcpKeepalive, TcpSettings, TlsMode, TrafficPolicy, TunnelSettings, WarmupConfiguration,
    ZoneAwareLbSetting,
};
pub use gateway::{
    Gateway, GatewaySpec, Port, Server, ServerTlsMode, ServerTlsSettings, TlsCertificate,
    TlsProtocol,
};
pub use service_entry::{
    Location, Resolution, ServiceEntry, ServiceEntrySpec, ServiceEntryWorkloadSelector, ServicePort,
};
pub use sidecar::{
    CaptureMode, IstioEgressListener, IstioIngressListener, OutboundMode, OutboundTrafficPolicy,
    Sidecar, SidecarPort, SidecarSpec,
};
pub use virtual_service::{
    AbortKind, CorsPolicy, DelayKind, Delegate, Destination, FaultAbort, FaultDelay,
    HeaderOperations, Headers, HttpBody, HttpBodyKind, HttpDirectResponse, HttpFaultInjection,
    HttpMatchRequest, HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute,
    HttpRouteDestination, L4MatchAttributes, RedirectPort, RedirectPortSelection, RegexRewrite,
    RouteDestination, TcpRoute, TlsMatchAttributes, TlsRoute, UnmatchedPreflights, VirtualService,
    VirtualServiceSpec,
};
pub use workload_entry::{WorkloadEntry, WorkloadEntrySpec};
pub use workload_group::{
    ExecHealthCheckConfig, GrpcHealthCheckConfig, HealthCheckHeader, HttpHealthCheckConfig,
    ReadinessProbe, TcpHealthCheckConfig, WorkloadGroup, WorkloadGroupMetadata, WorkloadGroupSpec,
};

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Istio parses durations with Go's `time.ParseDuration`, whose result is an
/// `int64` of nanoseconds; anything longer (about 292 years) is rejected there,
/// so it is rejected here too.
const MAX_DURATION_NANOS: u128 = i64::MAX as u128;

/// Fractional digits beyond nanosecond precision of the largest unit (hours)
/// cannot change the result; ignoring them keeps the arithmetic in range.
const MAX_FRACTION_DIGITS: usize = 20;

const DURATION_EXAMPLES: &str = r#"e.g. "10s", "1.5s", "100ms" or "1h30m""#;

/// Parses an Istio duration such as `"10s"`, `"1.5s"`, `"100ms"` or `"1h2m3.5s"`.
///
/// Accepts the syntax Istio accepts (Go's `time.ParseDuration`): one or more
/// decimal numbers, each with an optional fraction and a unit out of `h`, `m`,
/// `s`, `ms`, `us` (or `µs`), `ns`; a bare `"0"` is zero. Negative durations
/// are rejected, since no Istio duration field may be negative.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err(format!(
            "empty duration: expected a number with a unit, {DURATION_EXAMPLES}"
        ));
    }
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    if unsigned.starts_with('-') {
        return Err(format!(
            "invalid duration {s:?}: durations must not be negative"
        ));
    }
    if unsigned == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = unsigned;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (component, next) = duration_component(s, rest)?;
        total = total
            .checked_add(component)
            .filter(|t| *t <= MAX_DURATION_NANOS)
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        rest = next;
    }
    let secs = u64::try_from(total / NANOS_PER_SECOND)
        .map_err(|_| format!("invalid duration {s:?}: too large"))?;
    let nanos = u32::try_from(total % NANOS_PER_SECOND)
        .map_err(|_| format!("invalid duration {s:?}: too large"))?;
    Ok(Duration::new(secs, nanos))
}

/// Parses one `<number>[.<fraction>]<unit>` component at the start of `rest`,
/// returning its length in nanoseconds and the remaining text.
fn duration_component<'a>(whole: &str, rest: &'a str) -> Result<(u128, &'a str), String> {
    let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (int_digits, after_int) = rest.split_at(int_len);
    let (frac_digits, after_number) = match after_int.strip_prefix('.') {
        Some(after_dot) => {
            after_dot.split_at(after_dot.bytes().take_while(u8::is_ascii_digit).count())
        }
        None => ("", after_int),
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(format!(
            "invalid duration {whole:?}: expected a number at {rest:?}, {DURATION_EXAMPLES}"
        ));
    }
    let unit_len = after_number
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .unwrap_or(after_number.len());
    let (unit, next) = after_number.split_at(unit_len);
    let unit_nanos: u128 = match unit {
        "h" => 3_600 * NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "s" => NANOS_PER_SECOND,
        "ms" => 1_000_000,
        "us" | "µs" | "μs" => 1_000,
        "ns" => 1,
        "" => {
            return Err(format!(
                "invalid duration {whole:?}: missing unit after {:?} (expected one of h, m, s, ms, us, ns)",
                &rest[..rest.len() - after_number.len()]
            ));
        }
        other => {
            return Err(format!(
                "invalid duration {whole:?}: unknown unit {other:?} (expected one of h, m, s, ms, us, ns)"
            ));
        }
    };
    let too_large = || format!("invalid duration {whole:?}: too large");
    let int_value: u128 = if int_digits.is_empty() {
        0
    } else {
        int_digits.parse().map_err(|_| too_large())?
    };
    let mut nanos = int_value.checked_mul(unit_nanos).ok_or_else(too_large)?;
    let frac_digits = &frac_digits[..frac_digits.len().min(MAX_FRACTION_DIGITS)];
    if !frac_digits.is_empty() {
        let frac_value: u128 = frac_digits.parse().map_err(|_| too_large())?;
        let scale = 10u128.pow(u32::try_from(frac_digits.len()).map_err(|_| too_large())?);
        nanos = nanos
            .checked_add(frac_value * unit_nanos / scale)
            .ok_or_else(too_large)?;
    }
    Ok((nanos, next))
}

/// Joins a field path and a child segment: `("http[0]", "route")` gives
/// `"http[0].route"`, and an empty parent gives just the child.
fn field_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// Checks that at most one member of a `oneof` group is set. `path` is where
/// the group lives (empty at the top) and prefixes the error message.
fn at_most_one(path: &str, members: &[(&str, bool)]) -> Result<(), String> {
    let set: Vec<&str> = members
        .iter()
        .filter(|(_, is_set)| *is_set)
        .map(|(name, _)| *name)
        .collect();
    if set.len() <= 1 {
        return Ok(());
    }
    let all: Vec<&str> = members.iter().map(|(name, _)| *name).collect();
    let message = format!(
        "only one of {} may be set, but found {}",
        all.join(", "),
        set.join(" and ")
    );
    if path.is_empty() {
        Err(message)
    } else {
        Err(format!("{path}: {message}"))
    }
}
