//! Semantic checks beyond the schema, each with the field path it concerns:
//! the rules of Istio's validating webhook and the `x-kubernetes-validations`
//! of its CRDs. Errors reject a document; warnings are reported and do not
//! (as Istio's webhook distinguishes them). The checks of the older kinds
//! are here; each newer kind has its own file below `validate/`.

mod authorization;
mod connection_pool;
mod findings;
mod gateway;
mod names;
mod policy;
mod request_authentication;
mod server_tls;
mod sidecar;
mod telemetry;
mod workload_group;

use std::collections::HashSet;
use std::net::IpAddr;

pub use findings::{Findings, Problems};

use crate::model::istio::{
    ConnectionPoolSettings, DestinationRuleSpec, HttpMatchRequest, LoadBalancerSettings,
    OutlierDetection, Resolution, ServiceEntrySpec, SimpleLb, StringMatch, TrafficPolicy,
    VirtualServiceSpec, WorkloadEntrySpec, parse_duration,
};
use crate::model::registry::{APP_ADDRESS_ANNOTATION, READY_ANNOTATION};
use crate::model::security::PeerAuthenticationSpec;
use crate::model::{Resource, Spec};

/// Longest regex accepted (Envoy's default RE2 program-size guard is the real
/// limit; this keeps pathological patterns out early).
const MAX_REGEX_LEN: usize = 1024;

/// Every problem with one resource: errors and warnings, each as (field
/// path, message).
pub fn check(r: &Resource) -> Findings {
    let mut f = Findings::default();
    match &r.spec {
        Spec::VirtualService(s) => {
            virtual_service(s, &mut f.errors);
            for (i, r) in s.http.iter().enumerate() {
                for (j, m) in r.r#match.iter().enumerate() {
                    if m.stat_prefix.is_some() {
                        f.warn(
                            format!("spec.http[{i}].match[{j}].statPrefix"),
                            NOT_TRANSLATED,
                        );
                    }
                }
            }
        }
        Spec::DestinationRule(s) => {
            destination_rule(s, &mut f.errors);
            destination_rule_policies(s, &mut f);
        }
        Spec::ServiceEntry(s) => service_entry(s, &mut f.errors),
        Spec::WorkloadEntry(s) => workload_entry(s, &mut f.errors),
        Spec::PeerAuthentication(s) => {
            peer_authentication(s, &mut f.errors);
            if s.selector
                .as_ref()
                .is_some_and(|sel| sel.match_labels.is_empty())
            {
                f.warn(
                    "spec.selector.matchLabels",
                    "workload selector specified without labels; it selects every workload in the namespace",
                );
            }
        }
        Spec::Gateway(s) => gateway::check(&r.name, s, &mut f),
        Spec::Sidecar(s) => sidecar::check(&r.namespace, s, &mut f),
        Spec::WorkloadGroup(s) => workload_group::check(s, &mut f),
        Spec::AuthorizationPolicy(s) => authorization::check(s, &mut f),
        Spec::RequestAuthentication(s) => request_authentication::check(s, &mut f),
        Spec::Telemetry(s) => telemetry::check(s, &mut f),
    }
    if let Some(addr) = r.annotations.get(APP_ADDRESS_ANNOTATION)
        && addr.parse::<IpAddr>().is_err()
    {
        f.error(
            format!("metadata.annotations[{APP_ADDRESS_ANNOTATION}]"),
            format!("expected an IP address, got {addr:?}"),
        );
    }
    if let Some(v) = r.annotations.get(READY_ANNOTATION)
        && v != "true"
        && v != "false"
    {
        f.error(
            format!("metadata.annotations[{READY_ANNOTATION}]"),
            format!("expected \"true\" or \"false\", got {v:?}"),
        );
    }
    f
}

/// Connection pools of a DestinationRule's traffic policies (top level,
/// per port, per subset), with Istio's `validateConnectionPool`.
fn destination_rule_policies(s: &DestinationRuleSpec, f: &mut Findings) {
    let mut policies: Vec<(String, &TrafficPolicy)> = Vec::new();
    if let Some(tp) = &s.traffic_policy {
        policies.push(("spec.trafficPolicy".into(), tp));
    }
    for (i, sub) in s.subsets.iter().enumerate() {
        if let Some(tp) = &sub.traffic_policy {
            policies.push((format!("spec.subsets[{i}].trafficPolicy"), tp));
        }
    }
    for (path, tp) in policies {
        if let Some(pool) = &tp.connection_pool {
            connection_pool::check(&format!("{path}.connectionPool"), pool, f);
        }
        if tp.tunnel.is_some() {
            f.warn(format!("{path}.tunnel"), NOT_TRANSLATED);
        }
        if let Some(b) = &tp.retry_budget {
            percent(&format!("{path}.retryBudget.percent"), b.percent, f);
            f.duration(
                format!("{path}.retryBudget.budgetInterval"),
                b.budget_interval.as_deref(),
            );
        }
        untranslated_sections(
            &path,
            tp.load_balancer.as_ref(),
            tp.connection_pool.as_ref(),
            tp.outlier_detection.as_ref(),
            f,
        );
        for (j, port) in tp.port_level_settings.iter().enumerate() {
            let at = format!("{path}.portLevelSettings[{j}]");
            if let Some(pool) = &port.connection_pool {
                connection_pool::check(&format!("{at}.connectionPool"), pool, f);
            }
            untranslated_sections(
                &at,
                port.load_balancer.as_ref(),
                port.connection_pool.as_ref(),
                port.outlier_detection.as_ref(),
                f,
            );
        }
    }
}

/// A percentage field: between 0 and 100.
fn percent(path: &str, value: Option<f64>, f: &mut Findings) {
    if let Some(v) = value.filter(|v| !(0.0..=100.0).contains(v)) {
        f.error(path, format!("percentage {v} must be between 0 and 100"));
    }
}

/// The warning for a field pilotfish accepts (Istio's API has it) but does
/// not turn into Envoy configuration.
const NOT_TRANSLATED: &str = "accepted but not translated by pilotfish: it has no effect";

/// Warnings for the parts of a policy's sections that are not translated,
/// so they are not ignored silently.
fn untranslated_sections(
    path: &str,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    od: Option<&OutlierDetection>,
    f: &mut Findings,
) {
    if let Some(lb) = lb {
        if let Some(w) = &lb.warmup {
            f.duration(
                format!("{path}.loadBalancer.warmup.duration"),
                Some(&w.duration),
            );
            percent(
                &format!("{path}.loadBalancer.warmup.minimumPercent"),
                w.minimum_percent,
                f,
            );
        }
        f.duration(
            format!("{path}.loadBalancer.warmupDurationSecs"),
            lb.warmup_duration_secs.as_deref(),
        );
        if lb.backend_utilization.is_some() {
            f.warn(
                format!("{path}.loadBalancer.backendUtilization"),
                NOT_TRANSLATED,
            );
        }
        if lb.zone_aware_lb_setting.is_some() {
            f.warn(
                format!("{path}.loadBalancer.zoneAwareLbSetting"),
                NOT_TRANSLATED,
            );
        }
        if lb.simple == Some(SimpleLb::Passthrough) {
            f.warn(
                format!("{path}.loadBalancer.simple"),
                "PASSTHROUGH sends each connection to its original destination, which without traffic capture is the sidecar's own listener: use a load-balancing algorithm or a ServiceEntry with resolution DNS",
            );
        }
        // Envoy has slow start for these two only; Istio ignores the rest.
        let slow_start = matches!(
            lb.simple,
            None | Some(SimpleLb::Unspecified)
                | Some(SimpleLb::LeastRequest)
                | Some(SimpleLb::LeastConn)
                | Some(SimpleLb::RoundRobin)
        ) && lb.consistent_hash.is_none();
        if !slow_start && (lb.warmup.is_some() || lb.warmup_duration_secs.is_some()) {
            f.warn(
                format!("{path}.loadBalancer.warmup"),
                "warmup applies to LEAST_REQUEST and ROUND_ROBIN load balancing only: it has no effect",
            );
        }
    }
    if pool
        .and_then(|p| p.http.as_ref())
        .is_some_and(|h| h.http2_keep_alive.is_some())
    {
        f.warn(
            format!("{path}.connectionPool.http.http2KeepAlive"),
            NOT_TRANSLATED,
        );
    }
    if od.is_some_and(|od| !od.outlier_detection_http_error_codes.is_empty()) {
        f.warn(
            format!("{path}.outlierDetection.outlierDetectionHttpErrorCodes"),
            NOT_TRANSLATED,
        );
    }
}

/// A Kubernetes name (RFC 1123 label, also allowing dots as subdomains do).
pub fn dns1123_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid name: expected lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ))
    }
}

fn host(path: String, h: &str, p: &mut Problems) {
    if h.is_empty() {
        p.push((path, "host must not be empty".into()));
    } else if h.contains('/') || h.contains(' ') {
        p.push((path, format!("{h:?} is not a host name")));
    }
}

fn duration(path: String, d: &Option<String>, p: &mut Problems) {
    if let Some(d) = d {
        match parse_duration(d) {
            Ok(v) if v < std::time::Duration::from_millis(1) && !v.is_zero() => {
                p.push((path, format!("duration {d:?} is below 1ms")))
            }
            Ok(_) => {}
            Err(e) => p.push((path, e)),
        }
    }
}

fn string_match(path: String, m: &StringMatch, p: &mut Problems) {
    if let Err(e) = m.validate_one_of() {
        p.push((path.clone(), e));
    }
    if let Some(re) = &m.regex {
        if re.len() > MAX_REGEX_LEN {
            p.push((
                path,
                format!("regex longer than {MAX_REGEX_LEN} characters"),
            ));
        } else if let Err(e) = regex::Regex::new(re) {
            p.push((path + ".regex", format!("invalid regex: {e}")));
        }
    }
}

fn http_match(path: &str, m: &HttpMatchRequest, p: &mut Problems) {
    for (name, sm) in [
        ("uri", &m.uri),
        ("method", &m.method),
        ("authority", &m.authority),
        ("scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            string_match(format!("{path}.{name}"), sm, p);
        }
    }
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
        ("queryParams", &m.query_params),
    ] {
        for (k, sm) in map {
            string_match(format!("{path}.{field}[{k}]"), sm, p);
        }
    }
    if let Some(port) = m.port {
        port_number(format!("{path}.port"), port, p);
    }
}

fn port_number(path: String, port: u32, p: &mut Problems) {
    if !(1..=65535).contains(&port) {
        p.push((path, format!("port {port} is out of range 1-65535")));
    }
}

/// Istio's rules for delegates: a VirtualService without hosts is a
/// delegate, which only HTTP rules of a root VirtualService use, so it
/// names no gateways, has no TCP or TLS rules and delegates no further; a
/// root rule (one with `delegate`) leaves the routing to its delegate.
fn delegate_rules(s: &VirtualServiceSpec, p: &mut Problems) {
    let is_delegate = s.hosts.is_empty();
    if is_delegate {
        for (field, set) in [
            ("gateways", !s.gateways.is_empty()),
            ("tls", !s.tls.is_empty()),
            ("tcp", !s.tcp.is_empty()),
        ] {
            if set {
                p.push((
                    format!("spec.{field}"),
                    format!("a delegate VirtualService (one without hosts) must have no {field}"),
                ));
            }
        }
    }
    for (i, r) in s.http.iter().enumerate() {
        let Some(d) = &r.delegate else {
            continue;
        };
        let path = format!("spec.http[{i}]");
        if is_delegate {
            p.push((
                format!("{path}.delegate"),
                "a delegate VirtualService's rule cannot delegate again".into(),
            ));
        }
        if d.name.as_deref().is_none_or(str::is_empty) {
            p.push((
                format!("{path}.delegate.name"),
                "the delegate VirtualService's name is required".into(),
            ));
        }
        if !r.route.is_empty() {
            p.push((
                format!("{path}.route"),
                "a rule with delegate must not specify route (the delegate routes)".into(),
            ));
        }
        if r.redirect.is_some() {
            p.push((
                format!("{path}.redirect"),
                "a rule with delegate must not specify redirect".into(),
            ));
        }
    }
}

fn virtual_service(s: &VirtualServiceSpec, p: &mut Problems) {
    delegate_rules(s, p);
    for (i, h) in s.hosts.iter().enumerate() {
        host(format!("spec.hosts[{i}]"), h, p);
    }
    for (i, r) in s.http.iter().enumerate() {
        let path = format!("spec.http[{i}]");
        if let Err(e) = r.validate_one_of() {
            p.push((path.clone(), e));
        }
        if r.route.is_empty()
            && r.redirect.is_none()
            && r.direct_response.is_none()
            && r.delegate.is_none()
        {
            p.push((
                path.clone(),
                "one of route, redirect, directResponse or delegate is required".into(),
            ));
        }
        for (j, m) in r.r#match.iter().enumerate() {
            http_match(&format!("{path}.match[{j}]"), m, p);
        }
        let mut total = 0i64;
        for (j, d) in r.route.iter().enumerate() {
            host(
                format!("{path}.route[{j}].destination.host"),
                &d.destination.host,
                p,
            );
            if let Some(w) = d.weight {
                if w < 0 {
                    p.push((
                        format!("{path}.route[{j}].weight"),
                        format!("weight {w} is negative"),
                    ));
                }
                total += i64::from(w.max(0));
            }
            if let Some(port) = d.destination.port.as_ref().and_then(|x| x.number) {
                port_number(
                    format!("{path}.route[{j}].destination.port.number"),
                    port,
                    p,
                );
            }
        }
        if r.route.len() > 1 && total == 0 {
            p.push((
                format!("{path}.route"),
                "with several destinations, at least one weight must be above 0".into(),
            ));
        }
        if let Some(rw) = &r.rewrite
            && rw.uri.is_some()
            && rw.uri_regex_rewrite.is_some()
        {
            p.push((
                format!("{path}.rewrite"),
                "uri and uriRegexRewrite cannot both be set".into(),
            ));
        }
        duration(format!("{path}.timeout"), &r.timeout, p);
        if let Some(retries) = &r.retries {
            duration(
                format!("{path}.retries.perTryTimeout"),
                &retries.per_try_timeout,
                p,
            );
            duration(format!("{path}.retries.backoff"), &retries.backoff, p);
        }
        let body = r.direct_response.as_ref().and_then(|d| d.body.as_ref());
        if let Some(Err(e)) = body.and_then(|b| b.decoded_bytes()) {
            p.push((format!("{path}.directResponse.body.bytes"), e));
        }
    }
}

fn destination_rule(s: &DestinationRuleSpec, p: &mut Problems) {
    host("spec.host".into(), &s.host, p);
    if let Err(e) = s.validate_one_of() {
        p.push(("spec".into(), e));
    }
    let mut names = HashSet::new();
    for (i, sub) in s.subsets.iter().enumerate() {
        let path = format!("spec.subsets[{i}].name");
        if sub.name.is_empty() {
            p.push((path, "a subset name is required".into()));
        } else if !names.insert(&sub.name) {
            p.push((path, format!("duplicate subset name {:?}", sub.name)));
        }
    }
}

fn service_entry(s: &ServiceEntrySpec, p: &mut Problems) {
    if s.hosts.is_empty() {
        p.push(("spec.hosts".into(), "at least one host is required".into()));
    }
    for (i, h) in s.hosts.iter().enumerate() {
        host(format!("spec.hosts[{i}]"), h, p);
        if h == "*" {
            p.push((
                format!("spec.hosts[{i}]"),
                "a ServiceEntry host cannot be \"*\"".into(),
            ));
        }
    }
    if let Err(e) = s.validate_one_of() {
        p.push(("spec".into(), e));
    }
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, port) in s.ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        port_number(format!("{path}.number"), port.number, p);
        if let Some(t) = port.target_port {
            port_number(format!("{path}.targetPort"), t, p);
        }
        if port.name.is_empty() {
            p.push((format!("{path}.name"), "a port name is required".into()));
        } else if !names.insert(&port.name) {
            p.push((
                format!("{path}.name"),
                format!("duplicate port name {:?}", port.name),
            ));
        }
        if !numbers.insert(port.number) {
            p.push((
                format!("{path}.number"),
                format!("duplicate port number {}", port.number),
            ));
        }
    }
    let resolution = s.resolution.unwrap_or_default();
    if resolution == Resolution::DnsRoundRobin && s.endpoints.len() > 1 {
        p.push((
            "spec.endpoints".into(),
            "resolution DNS_ROUND_ROBIN takes at most one endpoint (Envoy's LOGICAL_DNS resolves a single name)".into(),
        ));
    }
    for (i, e) in s.endpoints.iter().enumerate() {
        let path = format!("spec.endpoints[{i}]");
        workload_fields(&path, e, p);
        if resolution == Resolution::Static
            && let Some(a) = &e.address
            && a.parse::<IpAddr>().is_err()
            && !a.starts_with("unix://")
        {
            p.push((
                format!("{path}.address"),
                format!("{a:?} is not an IP address (resolution STATIC)"),
            ));
        }
        for name in e.ports.keys() {
            if !s.ports.iter().any(|sp| &sp.name == name) {
                p.push((
                    format!("{path}.ports[{name}]"),
                    format!("no port named {name:?} in spec.ports"),
                ));
            }
        }
    }
}

fn workload_fields(path: &str, e: &WorkloadEntrySpec, p: &mut Problems) {
    for (name, port) in &e.ports {
        port_number(format!("{path}.ports[{name}]"), *port, p);
    }
    if let Some(w) = e.weight
        && w > u32::from(u16::MAX) * 2
    {
        p.push((format!("{path}.weight"), format!("weight {w} is too large")));
    }
}

fn peer_authentication(s: &PeerAuthenticationSpec, p: &mut Problems) {
    let has_selector = s
        .selector
        .as_ref()
        .is_some_and(|sel| !sel.match_labels.is_empty());
    if !s.port_level_mtls.is_empty() && !has_selector {
        p.push((
            "spec.portLevelMtls".into(),
            "portLevelMtls requires a selector with matchLabels".into(),
        ));
    }
    for port in s.port_level_mtls.keys() {
        match port.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => {}
            _ => p.push((
                format!("spec.portLevelMtls[{port}]"),
                "port must be between 1-65535".into(),
            )),
        }
    }
    if let Some(sel) = &s.selector {
        for (k, v) in &sel.match_labels {
            if k.is_empty() || k.contains('*') || v.contains('*') {
                p.push((
                    format!("spec.selector.matchLabels[{k}]"),
                    "label keys must be non-empty and wildcards are not allowed".into(),
                ));
            }
        }
    }
}

fn workload_entry(s: &WorkloadEntrySpec, p: &mut Problems) {
    match &s.address {
        None => p.push((
            "spec.address".into(),
            "an address is required (the sidecar binds it)".into(),
        )),
        Some(a) if a.is_empty() => p.push((
            "spec.address".into(),
            "an address is required (the sidecar binds it)".into(),
        )),
        Some(_) => {}
    }
    workload_fields("spec", s, p);
}

#[cfg(test)]
mod tests;
