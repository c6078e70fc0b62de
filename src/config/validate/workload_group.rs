//! Istio's WorkloadGroup rules: the template (no address: the registering
//! workload supplies it), its ports, the group metadata, and the readiness
//! probe (one method, non-negative timings, valid ports and headers).

use super::findings::Findings;
use super::names;
use crate::model::istio::{ReadinessProbe, WorkloadGroupSpec};

/// Longest service account name (Istio's CRD).
const SERVICE_ACCOUNT_MAX: usize = 253;
/// Longest port name in `template.ports` (Istio's CRD: fewer than 63).
const PORT_NAME_MAX: usize = 62;

pub fn check(s: &WorkloadGroupSpec, f: &mut Findings) {
    if let Some(meta) = &s.metadata {
        for (k, v) in &meta.labels {
            let at = format!("spec.metadata.labels[{k}]");
            f.check(&at, names::label_key(k));
            f.check(&at, names::label_value(v));
        }
    }
    let t = &s.template;
    if t.address.as_deref().is_some_and(|a| !a.is_empty()) {
        f.error(
            "spec.template.address",
            "address must not be set in a WorkloadGroup template: each registering workload supplies its own",
        );
    }
    if !t.labels.is_empty() {
        f.warn(
            "spec.template.labels",
            "labels should not be set in the template; set them in spec.metadata.labels",
        );
    }
    for (name, port) in &t.ports {
        let at = format!("spec.template.ports[{name}]");
        if name.len() > PORT_NAME_MAX || !names::is_dns1123_label(name) {
            f.error(&at, "port name must be valid");
        }
        f.check(&at, names::port(*port));
    }
    if t.service_account
        .as_deref()
        .is_some_and(|sa| sa.len() > SERVICE_ACCOUNT_MAX)
    {
        f.error(
            "spec.template.serviceAccount",
            format!("longer than {SERVICE_ACCOUNT_MAX} characters"),
        );
    }
    if let Some(probe) = &s.probe {
        readiness_probe("spec.probe", probe, f);
    }
}

fn readiness_probe(path: &str, probe: &ReadinessProbe, f: &mut Findings) {
    for (field, value) in [
        ("periodSeconds", probe.period_seconds),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if value.is_some_and(|v| v < 0) {
            f.error(
                format!("{path}.{field}"),
                format!("{field} must be non-negative"),
            );
        }
    }
    let methods = probe.methods();
    if methods.len() > 1 {
        f.error(
            path,
            format!(
                "only one of httpGet, tcpSocket, exec, grpc may be set, but found {}",
                methods.join(" and ")
            ),
        );
    }
    if methods.is_empty() {
        f.error(
            path,
            "a health check method is required: one of httpGet, tcpSocket, exec, grpc",
        );
    }
    if let Some(h) = &probe.http_get {
        f.check(format!("{path}.httpGet.port"), names::port(h.port));
        if let Some(scheme) = h.scheme.as_deref()
            && !matches!(scheme, "" | "HTTP" | "HTTPS")
        {
            f.error(
                format!("{path}.httpGet.scheme"),
                "httpGet.scheme must be one of \"HTTPS\", \"HTTP\"",
            );
        }
        for (i, header) in h.http_headers.iter().enumerate() {
            let name = header.name.as_deref().unwrap_or_default();
            let at = format!("{path}.httpGet.httpHeaders[{i}].name");
            if name.is_empty() {
                f.error(at, "header name cannot be empty");
            } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                f.error(at, format!("header name {name} is not a valid header name"));
            }
        }
    }
    if let Some(t) = &probe.tcp_socket {
        f.check(format!("{path}.tcpSocket.port"), names::port(t.port));
    }
    if let Some(e) = &probe.exec {
        if e.command.is_empty() {
            f.error(format!("{path}.exec.command"), "exec.command is required");
        }
        for (i, arg) in e.command.iter().enumerate() {
            if arg.is_empty() {
                f.error(
                    format!("{path}.exec.command[{i}]"),
                    "command arguments must not be empty",
                );
            }
        }
    }
    if let Some(g) = &probe.grpc
        && let Some(port) = g.port
    {
        f.check(format!("{path}.grpc.port"), names::port(port));
    }
}
