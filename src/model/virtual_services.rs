//! The VirtualServices in force as Istio sees them (`initVirtualServices`
//! and `mergeVirtualServicesIfNeeded`): in creation order, delegates (a
//! VirtualService without hosts) merged into the root rules that name
//! them and not applied on their own, and the problems found doing so.

use std::collections::HashMap;
use std::sync::Arc;

use super::istio::{HttpRoute, VirtualServiceSpec, delegate};
use super::{Resource, ResourceKey, Spec};

/// The effective VirtualServices and what went wrong building them.
#[derive(Clone, Debug, Default)]
pub struct VirtualServiceIndex {
    /// VirtualServices with hosts, delegates merged in, in Istio's order:
    /// those without delegate rules first, then roots, each group oldest
    /// first (then by namespace and name).
    pub effective: Vec<Arc<Resource>>,
    /// Missing or hidden delegates (their root rule is skipped) and
    /// delegate rules dropped for conflicting with the root rule's matches.
    pub problems: Vec<DelegateProblem>,
}

/// One problem with a root rule's delegate.
#[derive(Clone, Debug, PartialEq)]
pub struct DelegateProblem {
    pub kind: DelegateProblemKind,
    /// The root VirtualService.
    pub root: Arc<Resource>,
    /// Field path in the root, e.g. `spec.http[1].delegate`.
    pub path: String,
    /// `namespace/name` of the delegate.
    pub delegate: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelegateProblemKind {
    /// No VirtualService without hosts by that name: the root rule is skipped.
    NotFound,
    /// The delegate's exportTo hides it from the root's namespace: skipped.
    NotExported,
    /// Some delegate rules conflict with the root rule's matches: dropped.
    Conflict,
}

/// Whether a delegate in `owner_ns` exporting to `export_to` is visible to a
/// root in `root_ns` (Istio checks `*` or the root's namespace; `.` is the
/// delegate's own namespace).
fn delegate_visible(export_to: &[String], owner_ns: &str, root_ns: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => owner_ns == root_ns,
            ns => ns == root_ns,
        })
}

/// Resolves a rule's destination hosts (routes, mirrors) in `namespace`.
fn resolve_destinations(rule: &mut HttpRoute, namespace: &str) {
    let dests = rule
        .route
        .iter_mut()
        .map(|d| &mut d.destination)
        .chain(rule.mirror.iter_mut())
        .chain(rule.mirrors.iter_mut().map(|m| &mut m.destination));
    for d in dests {
        d.host = super::host::resolve(&d.host, namespace);
    }
}

/// Builds the index from every VirtualService of a snapshot.
pub fn build<'a>(all: impl Iterator<Item = &'a Arc<Resource>>) -> VirtualServiceIndex {
    let mut vss: Vec<(&Arc<Resource>, &VirtualServiceSpec)> = all
        .filter_map(|r| match &r.spec {
            Spec::VirtualService(s) => Some((r, s)),
            _ => None,
        })
        .collect();
    vss.sort_by(|a, b| a.0.creation_order().cmp(&b.0.creation_order()));
    let delegates: HashMap<(&str, &str), &VirtualServiceSpec> = vss
        .iter()
        .filter(|(_, s)| s.hosts.is_empty())
        .map(|(r, s)| ((r.namespace.as_str(), r.name.as_str()), *s))
        .collect();
    let mut index = VirtualServiceIndex::default();
    let mut roots = Vec::new();
    for (r, spec) in vss.iter().filter(|(_, s)| !s.hosts.is_empty()) {
        if spec.http.iter().any(|h| h.delegate.is_some()) {
            roots.push((*r, *spec));
        } else {
            index.effective.push(Arc::clone(r));
        }
    }
    for (root, spec) in roots {
        let mut merged = spec.clone();
        merged.http.clear();
        for (i, rule) in spec.http.iter().enumerate() {
            let Some(d) = &rule.delegate else {
                merged.http.push(rule.clone());
                continue;
            };
            let ns = d
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(&root.namespace);
            let name = d.name.as_deref().unwrap_or_default();
            let delegate_name = format!("{ns}/{name}");
            let path = format!("spec.http[{i}].delegate");
            let problem = |kind, message: String| DelegateProblem {
                kind,
                root: Arc::clone(root),
                path: path.clone(),
                delegate: delegate_name.clone(),
                message,
            };
            let Some(target) = delegates.get(&(ns, name)) else {
                let has_hosts = vss.iter().any(|(r, _)| r.namespace == ns && r.name == name);
                let why = if has_hosts {
                    "has hosts, so it is not a delegate"
                } else {
                    "does not exist"
                };
                index.problems.push(problem(
                    DelegateProblemKind::NotFound,
                    format!("delegate VirtualService {delegate_name} {why}; this rule is skipped"),
                ));
                continue;
            };
            if !delegate_visible(&target.export_to, ns, &root.namespace) {
                index.problems.push(problem(
                    DelegateProblemKind::NotExported,
                    format!(
                        "delegate VirtualService {delegate_name} is not exported to namespace {}; this rule is skipped",
                        root.namespace
                    ),
                ));
                continue;
            }
            let (mut rules, dropped) = delegate::merge_routes(rule, &target.http);
            // Short destination names are the delegate's, as Istio resolves
            // them before merging.
            for r in &mut rules {
                resolve_destinations(r, ns);
            }
            if dropped > 0 {
                index.problems.push(problem(
                    DelegateProblemKind::Conflict,
                    format!(
                        "{dropped} of {} rules of delegate VirtualService {delegate_name} have matches outside this rule's and are dropped",
                        target.http.len()
                    ),
                ));
            }
            merged.http.extend(rules);
        }
        index.effective.push(Arc::new(Resource {
            spec: Spec::VirtualService(merged),
            ..(**root).clone()
        }));
    }
    index
}

impl DelegateProblem {
    /// `VirtualService namespace/name` of the root.
    pub fn root_key(&self) -> ResourceKey {
        self.root.key()
    }
}

#[cfg(test)]
mod tests;
