//! Checks on VirtualServices: what they name exists, one owner per host,
//! every rule reachable.

use std::collections::{BTreeMap, HashMap};

use super::{Code, Message};
use crate::model::istio::{Destination, HttpMatchRequest, L4MatchAttributes, VirtualServiceSpec};
use crate::model::{ConfigSnapshot, Kind, Registry, Resource, ResourceKey, host};

/// The gateway name that means "the sidecars".
const MESH_GATEWAY: &str = "mesh";

/// Every destination of a VirtualService (routes, TCP/TLS routes, mirrors)
/// with its field path.
fn destinations(vs: &VirtualServiceSpec) -> Vec<(String, &Destination)> {
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            out.push((
                format!("spec.http[{i}].route[{j}].destination"),
                &d.destination,
            ));
        }
        if let Some(m) = &r.mirror {
            out.push((format!("spec.http[{i}].mirror"), m));
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            out.push((
                format!("spec.http[{i}].mirrors[{j}].destination"),
                &m.destination,
            ));
        }
    }
    for (i, r) in vs.tls.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            out.push((
                format!("spec.tls[{i}].route[{j}].destination"),
                &d.destination,
            ));
        }
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            out.push((
                format!("spec.tcp[{i}].route[{j}].destination"),
                &d.destination,
            ));
        }
    }
    out
}

/// Whether the registry has a service for `fqdn` (by name, or under a
/// ServiceEntry's wildcard host).
fn in_registry(registry: &Registry, fqdn: &str) -> bool {
    registry.services.contains_key(fqdn)
        || registry
            .services
            .keys()
            .any(|h| h.starts_with('*') && host::matches(h, fqdn))
}

/// IST0101: a destination host no ServiceEntry (or Kubernetes Service) defines.
pub fn destination_hosts(snapshot: &ConfigSnapshot, registry: &Registry) -> Vec<Message> {
    let mut out = Vec::new();
    for (r, vs) in snapshot.virtual_services() {
        for (path, d) in destinations(vs) {
            let fqdn = host::resolve(&d.host, &r.namespace);
            if !in_registry(registry, &fqdn) {
                out.push(Message::not_found(r, format!("{path}.host"), "host", &fqdn));
            }
        }
    }
    out
}

/// IST0101: a destination subset no DestinationRule for its host defines.
/// Any DestinationRule whose host covers the destination counts (pilotfish
/// does not apply exportTo yet).
pub fn destination_subsets(snapshot: &ConfigSnapshot) -> Vec<Message> {
    // Subset names by DestinationRule host (resolved), wildcards apart.
    let mut exact: HashMap<String, Vec<&str>> = HashMap::new();
    let mut wildcard: Vec<(String, Vec<&str>)> = Vec::new();
    for (dr_res, dr) in snapshot.destination_rules() {
        let h = host::resolve(&dr.host, &dr_res.namespace);
        let names = dr.subsets.iter().map(|s| s.name.as_str());
        if h.starts_with('*') {
            wildcard.push((h, names.collect()));
        } else {
            exact.entry(h).or_default().extend(names);
        }
    }
    let mut out = Vec::new();
    for (r, vs) in snapshot.virtual_services() {
        for (path, d) in destinations(vs) {
            let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let fqdn = host::resolve(&d.host, &r.namespace);
            let defined = exact.get(&fqdn).is_some_and(|n| n.contains(&subset))
                || wildcard
                    .iter()
                    .any(|(h, n)| host::matches(h, &fqdn) && n.contains(&subset));
            if !defined {
                out.push(Message::not_found(
                    r,
                    format!("{path}.subset"),
                    "host+subset in destinationrule",
                    &format!("{fqdn}+{subset}"),
                ));
            }
        }
    }
    out
}

/// `namespace/name` of a gateway reference made in `namespace`.
fn gateway_key(reference: &str, namespace: &str) -> ResourceKey {
    let (ns, name) = reference.split_once('/').unwrap_or((namespace, reference));
    ResourceKey {
        kind: Kind::Gateway,
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

/// IST0101: a Gateway a VirtualService (or one of its matches) binds to that
/// does not exist.
pub fn gateways(snapshot: &ConfigSnapshot) -> Vec<Message> {
    let mut out = Vec::new();
    for (r, vs) in snapshot.virtual_services() {
        let mut refs: Vec<(String, &String)> = vs
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("spec.gateways[{i}]"), g))
            .collect();
        for (i, rule) in vs.http.iter().enumerate() {
            for (j, m) in rule.r#match.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    refs.push((format!("spec.http[{i}].match[{j}].gateways[{k}]"), g));
                }
            }
        }
        for (i, rule) in vs.tcp.iter().enumerate() {
            for (j, m) in rule.r#match.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    refs.push((format!("spec.tcp[{i}].match[{j}].gateways[{k}]"), g));
                }
            }
        }
        for (i, rule) in vs.tls.iter().enumerate() {
            for (j, m) in rule.r#match.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    refs.push((format!("spec.tls[{i}].match[{j}].gateways[{k}]"), g));
                }
            }
        }
        for (path, g) in refs {
            if g == MESH_GATEWAY {
                continue;
            }
            let key = gateway_key(g, &r.namespace);
            if !snapshot.resources.contains_key(&key) {
                let name = format!("{}/{}", key.namespace, key.name);
                out.push(Message::not_found(r, path, "gateway", &name));
            }
        }
    }
    out
}

/// IST0109: several VirtualServices that apply to sidecars (`mesh`) name the
/// same host. Only one of them takes effect (as in Istio, the first in
/// creation order that the proxy imports: the oldest `creationTimestamp`,
/// then by namespace/name), so the others' rules are silently ignored.
/// Gateways merge such VirtualServices instead, so they are not reported.
pub fn conflicting_virtual_services(snapshot: &ConfigSnapshot) -> Vec<Message> {
    let mut by_host: BTreeMap<String, Vec<(&Resource, usize)>> = BTreeMap::new();
    for (r, vs) in snapshot.virtual_services() {
        if !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == MESH_GATEWAY) {
            continue;
        }
        for (i, h) in vs.hosts.iter().enumerate() {
            let list = by_host.entry(host::resolve(h, &r.namespace)).or_default();
            if !list.iter().any(|(x, _)| std::ptr::eq(*x, r)) {
                list.push((r, i));
            }
        }
    }
    let mut out = Vec::new();
    for (h, list) in by_host.iter_mut().filter(|(_, l)| l.len() > 1) {
        list.sort_by(|a, b| a.0.creation_order().cmp(&b.0.creation_order()));
        let names: Vec<String> = list
            .iter()
            .map(|(r, _)| format!("{}/{}", r.namespace, r.name))
            .collect();
        for (r, i) in list.iter() {
            out.push(Message::new(
                Code::ConflictingMeshGatewayVirtualServiceHosts,
                r,
                format!("spec.hosts[{i}]"),
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {h} \
                     which can lead to undefined behavior. This can be fixed by merging the \
                     conflicting VirtualServices into a single resource. (Sidecars apply the \
                     first they import, oldest first: {}.)",
                    names.join(","),
                    names[0]
                ),
            ));
        }
    }
    out
}

/// Root rules whose delegate is missing, not a delegate (it has hosts) or
/// not exported to the root's namespace (IST0101: the rule is skipped), and
/// delegate rules dropped for matching outside their root rule (IST0130).
pub fn delegates(snapshot: &ConfigSnapshot) -> Vec<Message> {
    use crate::model::virtual_services::DelegateProblemKind;
    snapshot
        .virtual_service_index()
        .problems
        .iter()
        .map(|p| {
            let code = match p.kind {
                DelegateProblemKind::NotFound | DelegateProblemKind::NotExported => {
                    Code::ReferencedResourceNotFound
                }
                DelegateProblemKind::Conflict => Code::VirtualServiceUnreachableRule,
            };
            Message::new(code, &p.root, p.path.clone(), p.message.clone())
        })
        .collect()
}

/// A rule's name for messages, as Istio prints it: `"name"` or `#index`.
fn rule_label(name: Option<&str>, i: usize) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{n:?}"),
        _ => format!("#{i}"),
    }
}

/// What the reachability check needs of a rule's matches: none means
/// "matches everything"; two equal keys match the same requests.
trait MatchKey: PartialEq + Clone + Default {
    fn without_name(&self) -> Self;
    /// Whether the match admits every request wherever it applies (its
    /// rule is a catch-all).
    fn matches_everything(&self) -> bool {
        *self == Self::default()
    }
}

impl MatchKey for HttpMatchRequest {
    fn without_name(&self) -> Self {
        HttpMatchRequest {
            name: None,
            ..self.clone()
        }
    }

    /// Also `uri: {prefix: /}` and the like: the route Istio builds from it
    /// matches every request, and the rules after it are dropped.
    fn matches_everything(&self) -> bool {
        self.matches_every_request()
    }
}

impl MatchKey for L4MatchAttributes {
    fn without_name(&self) -> Self {
        self.clone()
    }
}

/// Unreachable rules of one ordered rule list (`section` is `http` or `tcp`).
fn unreachable_in<M: MatchKey>(
    r: &Resource,
    section: &str,
    rules: &[(Option<&str>, &[M])],
    out: &mut Vec<Message>,
) {
    let mut catch_all: Option<usize> = None;
    let mut seen: Vec<(M, usize)> = Vec::new();
    for (i, (name, matches)) in rules.iter().enumerate() {
        let label = rule_label(*name, i);
        if let Some(k) = catch_all {
            let why = if rules[k].1.is_empty() {
                "only the last rule can have no matches"
            } else {
                "its match without conditions takes every request: only the last rule should have one"
            };
            out.push(Message::new(
                Code::VirtualServiceUnreachableRule,
                r,
                format!("spec.{section}[{i}]"),
                format!(
                    "VirtualService rule {label} not used (rule {} before it matches every request; {why})",
                    rule_label(rules[k].0, k)
                ),
            ));
            continue;
        }
        let keys: Vec<M> = matches.iter().map(MatchKey::without_name).collect();
        if keys.is_empty() || keys.iter().any(MatchKey::matches_everything) {
            catch_all = Some(i);
        }
        let mut shadowed = 0;
        let first_all = keys.iter().position(MatchKey::matches_everything);
        for (j, key) in keys.iter().enumerate() {
            if let Some(a) = first_all.filter(|&a| a < j) {
                out.push(Message::new(
                    Code::VirtualServiceIneffectiveMatch,
                    r,
                    format!("spec.{section}[{i}].match[{j}]"),
                    format!(
                        "VirtualService rule {label} match #{j} is not used (match #{a} before it matches every request)"
                    ),
                ));
                continue;
            }
            if let Some((_, k)) = seen.iter().find(|(m, _)| m == key) {
                shadowed += 1;
                out.push(Message::new(
                    Code::VirtualServiceIneffectiveMatch,
                    r,
                    format!("spec.{section}[{i}].match[{j}]"),
                    format!(
                        "VirtualService rule {label} match #{j} is not used (duplicate/overlapping match in rule {})",
                        rule_label(rules[*k].0, *k)
                    ),
                ));
            }
        }
        if !keys.is_empty() && shadowed == keys.len() {
            out.push(Message::new(
                Code::VirtualServiceUnreachableRule,
                r,
                format!("spec.{section}[{i}]"),
                format!("VirtualService rule {label} not used (all its matches are used by earlier rules)"),
            ));
        }
        seen.extend(keys.into_iter().map(|k| (k, i)));
    }
}

/// IST0130 / IST0131: HTTP and TCP rules after a catch-all (a rule without
/// matches, or with a match without conditions, such as an empty match or
/// an HTTP `uri: {prefix: /}`), which translation drops as Istio does, and
/// matches identical to an earlier rule's: no request ever reaches them.
pub fn unreachable_rules(snapshot: &ConfigSnapshot) -> Vec<Message> {
    let mut out = Vec::new();
    for (r, vs) in snapshot.virtual_services() {
        let http: Vec<(Option<&str>, &[HttpMatchRequest])> = vs
            .http
            .iter()
            .map(|h| (h.name.as_deref(), h.r#match.as_slice()))
            .collect();
        unreachable_in(r, "http", &http, &mut out);
        let tcp: Vec<(Option<&str>, &[L4MatchAttributes])> = vs
            .tcp
            .iter()
            .map(|t| (None, t.r#match.as_slice()))
            .collect();
        unreachable_in(r, "tcp", &tcp, &mut out);
    }
    out
}
