//! Checks on DestinationRules and security policies against the workloads
//! and namespaces the config defines.

use std::collections::{BTreeMap, BTreeSet};

use super::{Code, Message};
use crate::model::istio::{ClientTlsSettings, TlsMode};
use crate::model::registry::{Service, Workload};
use crate::model::security::MtlsMode;
use crate::model::{ConfigSnapshot, Registry, Resource, host};
use crate::xds::translate::{Mesh, mtls};

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The workloads (WorkloadEntries, or pods in Kubernetes mode) a service
/// selects, ready or not.
fn service_workloads<'a>(registry: &'a Registry, svc: &Service) -> Vec<&'a Workload> {
    let Some(selector) = &svc.selector else {
        return Vec::new();
    };
    registry
        .workloads
        .values()
        .filter(|w| w.key.namespace == svc.namespace && selects(selector, &w.labels))
        .map(|w| w.as_ref())
        .collect()
}

/// The service a DestinationRule's host names, if the registry has it.
fn rule_service<'a>(registry: &'a Registry, r: &Resource, dr_host: &str) -> Option<&'a Service> {
    registry
        .services
        .get(&host::resolve(dr_host, &r.namespace))
        .map(|s| s.as_ref())
}

/// IST0173: a subset whose labels match none of its service's workloads
/// (or inline endpoints): traffic sent to it finds no endpoint (503).
pub fn subsets_select_no_workload(snapshot: &ConfigSnapshot, registry: &Registry) -> Vec<Message> {
    let mut out = Vec::new();
    for (r, dr) in snapshot.destination_rules() {
        let Some(svc) = rule_service(registry, r, &dr.host) else {
            continue; // IST0101 covers what routes to a missing host
        };
        let labels: Vec<&BTreeMap<String, String>> = if svc.selector.is_some() {
            service_workloads(registry, svc)
                .into_iter()
                .map(|w| &w.labels)
                .collect()
        } else {
            svc.endpoints.iter().map(|e| &e.labels).collect()
        };
        if svc.selector.is_none() && labels.is_empty() {
            continue; // resolved by DNS: nothing to select from
        }
        for (i, subset) in dr.subsets.iter().enumerate() {
            if subset.labels.is_empty() || labels.iter().any(|l| selects(&subset.labels, l)) {
                continue;
            }
            out.push(Message::new(
                Code::DestinationRuleSubsetNotSelectPods,
                r,
                format!("spec.subsets[{i}]"),
                format!(
                    "The Subsets {:?} defined in the DestinationRule does not select any workload of {} (labels {:?})",
                    subset.name, svc.hostname, subset.labels
                ),
            ));
        }
    }
    out
}

fn disables_tls(tls: Option<&ClientTlsSettings>) -> bool {
    tls.and_then(|t| t.mode) == Some(TlsMode::Disable)
}

/// Where a DestinationRule turns TLS off: field path, the port it applies
/// to (None: all) and the subset's labels (None: every workload).
type Disabled<'a> = (String, Option<u32>, Option<&'a BTreeMap<String, String>>);

/// IST0113: a DestinationRule that turns TLS off (`tls.mode: DISABLE`)
/// toward a service whose workloads take only mTLS (STRICT
/// PeerAuthentication): every request fails.
pub fn mtls_conflicts(snapshot: &ConfigSnapshot, registry: &Registry) -> Vec<Message> {
    let mesh = Mesh::new(snapshot, registry);
    let mut out = Vec::new();
    for (r, dr) in snapshot.destination_rules() {
        let Some(svc) = rule_service(registry, r, &dr.host) else {
            continue;
        };
        let mut disabled: Vec<Disabled<'_>> = Vec::new();
        if let Some(tp) = &dr.traffic_policy {
            if disables_tls(tp.tls.as_ref()) {
                disabled.push(("spec.trafficPolicy.tls.mode".into(), None, None));
            }
            for (i, p) in tp.port_level_settings.iter().enumerate() {
                if disables_tls(p.tls.as_ref()) {
                    let port = p.port.as_ref().and_then(|p| p.number);
                    let path = format!("spec.trafficPolicy.portLevelSettings[{i}].tls.mode");
                    disabled.push((path, port, None));
                }
            }
        }
        for (i, s) in dr.subsets.iter().enumerate() {
            let tls = s.traffic_policy.as_ref().and_then(|t| t.tls.as_ref());
            if disables_tls(tls) {
                let path = format!("spec.subsets[{i}].trafficPolicy.tls.mode");
                disabled.push((path, None, Some(&s.labels)));
            }
        }
        let workloads = service_workloads(registry, svc);
        for (path, port, subset) in disabled {
            let strict = workloads
                .iter()
                .filter(|w| subset.is_none_or(|l| selects(l, &w.labels)))
                .flat_map(|w| svc.ports.iter().map(move |p| (*w, p.number)))
                .filter(|(_, n)| port.is_none_or(|p| p == *n))
                .find(|(w, n)| mtls::peer_mode(&mesh, w, *n) == MtlsMode::Strict);
            if let Some((w, n)) = strict {
                out.push(Message::new(
                    Code::MtlsPolicyConflict,
                    r,
                    path,
                    format!(
                        "A DestinationRule and PeerAuthentication are in conflict with regards to mTLS for host {}:{n}. \
                         The DestinationRule \"{}/{}\" specifies that mTLS must be false (tls.mode DISABLE) \
                         but workload {} accepts only mTLS there (PeerAuthentication STRICT)",
                        svc.hostname, r.namespace, r.name, w.key
                    ),
                ));
            }
        }
    }
    out
}

/// Istio's namespace patterns: `*`, `prefix*`, `*suffix` or an exact name.
fn namespace_matches(pattern: &str, ns: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        ns.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        ns.starts_with(prefix)
    } else {
        pattern == ns
    }
}

/// The namespace a principal names (`TRUST_DOMAIN/ns/NS/sa/SA`), when it
/// names one without wildcards.
fn principal_namespace(principal: &str) -> Option<&str> {
    let (_, rest) = principal.split_once("/ns/")?;
    let (ns, _) = rest.split_once("/sa/")?;
    (!ns.contains('*') && !ns.is_empty()).then_some(ns)
}

/// IST0101: an AuthorizationPolicy source naming a namespace (in
/// `namespaces`, `notNamespaces` or a principal) that no resource of the
/// config lives in: it matches no caller, which is usually a typo.
pub fn authorization_namespaces(snapshot: &ConfigSnapshot) -> Vec<Message> {
    let known: BTreeSet<&str> = snapshot
        .resources
        .values()
        .map(|r| r.namespace.as_str())
        .collect();
    let exists = |pattern: &str| known.iter().any(|ns| namespace_matches(pattern, ns));
    let mut out = Vec::new();
    for (r, ap) in snapshot.authorization_policies() {
        for (i, rule) in ap.rules.iter().flatten().enumerate() {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(src) = &from.source else { continue };
                let base = format!("spec.rules[{i}].from[{j}].source");
                for (field, list) in [
                    ("namespaces", &src.namespaces),
                    ("notNamespaces", &src.not_namespaces),
                ] {
                    for (k, ns) in list.iter().enumerate() {
                        if !exists(ns) {
                            let path = format!("{base}.{field}[{k}]");
                            out.push(Message::not_found(r, path, "namespace", ns));
                        }
                    }
                }
                for (field, list) in [
                    ("principals", &src.principals),
                    ("notPrincipals", &src.not_principals),
                ] {
                    for (k, p) in list.iter().enumerate() {
                        if let Some(ns) = principal_namespace(p)
                            && !known.contains(ns)
                        {
                            let path = format!("{base}.{field}[{k}]");
                            let what = format!("namespace (of principal {p:?})");
                            out.push(Message::not_found(r, path, &what, ns));
                        }
                    }
                }
            }
        }
    }
    out
}
