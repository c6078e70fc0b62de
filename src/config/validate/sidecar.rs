//! Istio's Sidecar rules: ingress listeners (port, bind, defaultEndpoint,
//! TLS), egress listeners (hosts in `namespace/host` form, at most one
//! catch-all listener, unique ports and sockets) and the outbound policy.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::findings::Findings;
use super::names::{self, Protocol, UNIX_PREFIX};
use super::{connection_pool, server_tls};
use crate::model::istio::{
    CaptureMode, IstioEgressListener, IstioIngressListener, OutboundMode, OutboundTrafficPolicy,
    ServerTlsMode, SidecarPort, SidecarSpec,
};

/// Hosts a `defaultEndpoint` may name (loopback or any address).
const DEFAULT_ENDPOINT_HOSTS: &[&str] = &["", "127.0.0.1", "0.0.0.0", "::1", "::"];

/// Longest label value Istio's CRD accepts in a workload selector.
const SELECTOR_VALUE_MAX: usize = 63;

pub fn check(namespace: &str, s: &SidecarSpec, f: &mut Findings) {
    if let Some(selector) = &s.workload_selector {
        for (k, v) in &selector.labels {
            let at = format!("spec.workloadSelector.labels[{k}]");
            if k.is_empty() {
                f.error(
                    &at,
                    format!("empty key is not supported in selector: \"{k}={v}\""),
                );
            }
            if k.contains('*') || v.contains('*') {
                f.error(
                    &at,
                    format!("wildcard is not supported in selector: \"{k}={v}\""),
                );
            } else if v.len() > SELECTOR_VALUE_MAX {
                f.error(
                    &at,
                    format!("label value longer than {SELECTOR_VALUE_MAX} characters"),
                );
            }
        }
        if selector.labels.is_empty() {
            f.warn(
                "spec.workloadSelector.labels",
                "sidecar: workload selector specified without labels, will be applied to all services in namespace",
            );
        }
    }
    if s.egress.is_empty()
        && s.ingress.is_empty()
        && s.outbound_traffic_policy.is_none()
        && s.inbound_connection_pool.is_none()
    {
        f.error("spec", "sidecar: empty configuration provided");
        return;
    }
    let mut ports = HashSet::new();
    for (i, listener) in s.ingress.iter().enumerate() {
        ingress(&format!("spec.ingress[{i}]"), listener, &mut ports, f);
    }
    if let Some(pool) = &s.inbound_connection_pool {
        connection_pool::check("spec.inboundConnectionPool", pool, f);
    }
    let mut ports = HashSet::new();
    let mut sockets = HashSet::new();
    let mut catch_all = false;
    for (i, listener) in s.egress.iter().enumerate() {
        let path = format!("spec.egress[{i}]");
        match &listener.port {
            None if catch_all => f.error(
                format!("{path}.port"),
                "sidecar: egress can have only one listener with empty port",
            ),
            None if i + 1 < s.egress.len() => f.error(
                format!("{path}.port"),
                "sidecar: the egress listener with empty port should be the last listener in the list",
            ),
            None => catch_all = true,
            Some(port) => egress_port(&path, port, listener, &mut ports, &mut sockets, f),
        }
        egress_hosts(&path, namespace, listener, f);
    }
    if let Some(policy) = &s.outbound_traffic_policy {
        outbound(policy, f);
    }
}

fn port_fields(path: &str, port: &SidecarPort, f: &mut Findings) {
    if port.target_port.is_some_and(|t| t > 0) {
        f.error(
            format!("{path}.port.targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
        f.check(format!("{path}.port.name"), names::port_name(name));
    }
    f.check(
        format!("{path}.port.protocol"),
        names::protocol(port.protocol.as_deref().unwrap_or_default()),
    );
}

fn ingress(
    path: &str,
    listener: &IstioIngressListener,
    ports: &mut HashSet<u32>,
    f: &mut Findings,
) {
    let port = &listener.port;
    let number = port.number.unwrap_or(0);
    port_fields(path, port, f);
    f.check(format!("{path}.port.number"), names::port(number));
    if let Some(bind) = listener.bind.as_deref().filter(|b| !b.is_empty()) {
        f.check(format!("{path}.bind"), names::ip(bind));
    }
    if !ports.insert(number) {
        f.error(
            format!("{path}.port.number"),
            "sidecar: ports on IP bound listeners must be unique",
        );
    }
    if listener.capture_mode == Some(CaptureMode::Iptables) {
        f.warn(
            format!("{path}.captureMode"),
            format!(
                "pilotfish does not capture traffic: no listener is made for ingress port {number} with captureMode IPTABLES"
            ),
        );
    }
    if let Some(endpoint) = listener
        .default_endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        default_endpoint(&format!("{path}.defaultEndpoint"), endpoint, f);
    }
    let protocol = port.protocol.as_deref().and_then(Protocol::parse);
    if let Some(tls) = &listener.tls {
        let at = |field: &str| format!("{path}.tls.{field}");
        for (field, present, what) in [
            (
                "subjectAltNames",
                !tls.subject_alt_names.is_empty(),
                "sidecar: subjectAltNames is not supported in ingress tls",
            ),
            (
                "httpsRedirect",
                tls.https_redirect == Some(true),
                "sidecar: httpsRedirect is not supported",
            ),
            (
                "credentialName",
                tls.credential_name
                    .as_deref()
                    .is_some_and(|c| !c.is_empty()),
                "sidecar: credentialName is not currently supported",
            ),
            (
                "credentialNames",
                !tls.credential_names.is_empty(),
                "sidecar: credentialNames is not currently supported",
            ),
            (
                "tlsCertificates",
                !tls.tls_certificates.is_empty(),
                "sidecar: tlsCertificates is not currently supported",
            ),
        ] {
            if present {
                f.error(at(field), what);
            }
        }
        let mode = tls.mode.unwrap_or_default();
        if matches!(
            mode,
            ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
        ) {
            f.error(
                at("mode"),
                format!("cannot set mode to {} in sidecar ingress tls", mode.name()),
            );
        }
        if !protocol.is_some_and(Protocol::is_tls) {
            f.error(
                format!("{path}.tls"),
                "server cannot have TLS settings for non HTTPS/TLS ports",
            );
        }
        server_tls::check(&format!("{path}.tls"), tls, f);
    }
    if let Some(pool) = &listener.connection_pool {
        connection_pool::check(&format!("{path}.connectionPool"), pool, f);
        if pool.http.is_some() && !protocol.is_some_and(Protocol::is_http) {
            f.warn(
                format!("{path}.connectionPool.http"),
                format!(
                    "sidecar: HTTP connection pool settings are configured for port {number} but its protocol is not HTTP ({}); only TCP settings will apply",
                    port.protocol.as_deref().unwrap_or("unset")
                ),
            );
        }
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`, `:PORT` or
/// `unix:///path`.
fn default_endpoint(path: &str, endpoint: &str, f: &mut Findings) {
    if let Some(socket) = endpoint.strip_prefix(UNIX_PREFIX) {
        f.check(path, names::unix_address(socket));
        return;
    }
    let form = "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, unix://filepath or unset";
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        f.error(
            path,
            format!("{form}; missing port in address {endpoint:?}"),
        );
        return;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if !DEFAULT_ENDPOINT_HOSTS.contains(&host) {
        f.error(path, form);
    }
    match port.parse::<u32>() {
        Ok(n) => f.check(path, names::port(n)),
        Err(_) => f.error(
            path,
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}

fn egress_port(
    path: &str,
    port: &SidecarPort,
    listener: &IstioEgressListener,
    ports: &mut HashSet<u32>,
    sockets: &mut HashSet<String>,
    f: &mut Findings,
) {
    port_fields(path, port, f);
    let bind = listener.bind.as_deref().unwrap_or_default();
    let number = port.number.unwrap_or(0);
    if number == 0 {
        match bind.strip_prefix(UNIX_PREFIX) {
            Some(socket) => f.check(format!("{path}.bind"), names::unix_address(socket)),
            None => f.error(
                format!("{path}.bind"),
                "sidecar: ports with 0 value must have a unix domain socket bind address",
            ),
        }
        if !matches!(
            listener.capture_mode.unwrap_or_default(),
            CaptureMode::Default | CaptureMode::None
        ) {
            f.error(
                format!("{path}.captureMode"),
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
            );
        }
        if !sockets.insert(bind.to_string()) {
            f.error(
                format!("{path}.bind"),
                "sidecar: unix domain socket values for listeners must be unique",
            );
        }
    } else {
        f.check(format!("{path}.port.number"), names::port(number));
        if !bind.is_empty() {
            f.check(format!("{path}.bind"), names::ip(bind));
        }
        if !ports.insert(number) {
            f.error(
                format!("{path}.port.number"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        if listener.capture_mode == Some(CaptureMode::Iptables) {
            f.warn(
                format!("{path}.captureMode"),
                format!(
                    "pilotfish does not capture traffic: no listener is made for egress port {number} with captureMode IPTABLES"
                ),
            );
        }
    }
}

fn egress_hosts(path: &str, namespace: &str, listener: &IstioEgressListener, f: &mut Findings) {
    if listener.hosts.is_empty() {
        f.error(
            format!("{path}.hosts"),
            "sidecar: egress listener must contain at least one host",
        );
        return;
    }
    // Namespace (with `.` resolved) -> hosts listed for it, to warn about repeats.
    let mut by_namespace: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (j, host) in listener.hosts.iter().enumerate() {
        let at = format!("{path}.hosts[{j}]");
        if let Some((ns, name)) = host.split_once('/') {
            let ns = if ns == "." { namespace } else { ns };
            let seen = by_namespace.entry(ns).or_default();
            let repeated = if name == "*" {
                !seen.is_empty()
            } else {
                seen.contains(name) || seen.contains("*")
            };
            if repeated {
                f.warn(&at, format!("duplicated egress host: {host}"));
            }
            seen.insert(name);
        }
        for e in names::namespace_slash_host(host, false) {
            f.error(&at, e);
        }
    }
    if by_namespace.get("*").is_some_and(|s| s.contains("*")) && by_namespace.len() != 1 {
        f.warn(
            format!("{path}.hosts"),
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
}

fn outbound(policy: &OutboundTrafficPolicy, f: &mut Findings) {
    let Some(proxy) = &policy.egress_proxy else {
        return;
    };
    let path = "spec.outboundTrafficPolicy.egressProxy";
    if policy.mode.unwrap_or_default() != OutboundMode::AllowAny {
        f.error(
            path,
            "sidecar: egressProxy must be set only with ALLOW_ANY outboundTrafficPolicy mode",
        );
        return;
    }
    f.check(format!("{path}.host"), names::fqdn(&proxy.host));
    match proxy.port.as_ref().and_then(|p| p.number) {
        None => f.error(
            format!("{path}.port"),
            "sidecar: egressProxy port must be non-nil",
        ),
        Some(n) => f.check(format!("{path}.port.number"), names::port(n)),
    }
    if let Some(subset) = proxy.subset.as_deref().filter(|s| !s.is_empty())
        && !names::is_dns1123_label(subset)
    {
        f.error(
            format!("{path}.subset"),
            format!("subset name is invalid: {subset}"),
        );
    }
}
