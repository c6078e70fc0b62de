//! What one proxy sees, as Istio scopes it: the Sidecar that applies to its
//! workload (workload selector, then its namespace, then the root namespace),
//! the services its egress `hosts` import, and the `exportTo` visibility of
//! ServiceEntries, VirtualServices and DestinationRules.
//!
//! Proxies with the same namespace and Sidecar see the same thing: a
//! [`ScopeKey`] names that view, and the xDS cache encodes each view once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::Mesh;
use crate::model::istio::{
    DestinationRuleSpec, IstioEgressListener, SidecarSpec, VirtualServiceSpec,
};
use crate::model::registry::Service;
use crate::model::{ConfigSnapshot, Kind, Registry, Resource, ResourceKey, Spec, host};

/// Istio's root namespace: a Sidecar without selector there is the mesh default.
pub const ROOT_NAMESPACE: &str = super::mtls::ROOT_NAMESPACE;

/// Whether a resource of `owner_ns` with `export_to` is visible from
/// `client_ns`: no list means everywhere (Istio's default `*`); `.` is the
/// owner's namespace, `~` nowhere, anything else a namespace name.
pub fn exported_to(export_to: &[String], owner_ns: &str, client_ns: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => owner_ns == client_ns,
            "~" => false,
            ns => ns == client_ns,
        })
}

/// The Sidecar a workload uses, and a note when more than one competed.
#[derive(Clone, Debug, Default)]
pub struct SidecarChoice<'a> {
    pub sidecar: Option<(&'a Resource, &'a SidecarSpec)>,
    /// Istio's conflict warning, when several Sidecars matched equally.
    pub conflict: Option<String>,
}

/// The Sidecar for a workload in `namespace` with `labels`, as Istio picks it:
/// one in the namespace whose `workloadSelector` matches, else the
/// namespace's Sidecar without selector, else the root namespace's Sidecar
/// without selector. Among equals Istio takes the oldest; files have no
/// creation time, so the first by name wins and the conflict is reported.
pub fn select_sidecar<'a>(
    config: &'a ConfigSnapshot,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> SidecarChoice<'a> {
    let in_ns = |ns: &str| {
        config
            .sidecars()
            .filter(move |(r, _)| r.namespace == ns)
            .collect::<Vec<_>>()
    };
    let local = in_ns(namespace);
    let selecting: Vec<_> = local
        .iter()
        .copied()
        .filter(|(_, s)| {
            s.workload_selector
                .as_ref()
                .is_some_and(|sel| sel.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .collect();
    if !selecting.is_empty() {
        return choose(selecting, "select the same workload");
    }
    let plain: Vec<_> = local
        .into_iter()
        .filter(|(_, s)| s.workload_selector.is_none())
        .collect();
    if !plain.is_empty() {
        return choose(plain, "have no workloadSelector in one namespace");
    }
    if namespace != ROOT_NAMESPACE {
        let root: Vec<_> = in_ns(ROOT_NAMESPACE)
            .into_iter()
            .filter(|(_, s)| s.workload_selector.is_none())
            .collect();
        if !root.is_empty() {
            return choose(root, "have no workloadSelector in the root namespace");
        }
    }
    SidecarChoice::default()
}

fn choose<'a>(candidates: Vec<(&'a Resource, &'a SidecarSpec)>, why: &str) -> SidecarChoice<'a> {
    // `sidecars()` is in namespace/name order already.
    let conflict = (candidates.len() > 1).then(|| {
        let names: Vec<String> = candidates
            .iter()
            .map(|(r, _)| format!("{}/{}", r.namespace, r.name))
            .collect();
        format!(
            "Sidecars {} {why}; using {} (the first by name)",
            names.join(", "),
            names[0]
        )
    });
    SidecarChoice {
        sidecar: candidates.into_iter().next(),
        conflict,
    }
}

/// Names one view: the proxy's namespace and the Sidecar it uses
/// (`namespace/name`), None for Istio's default (everything exported).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey {
    pub namespace: String,
    pub sidecar: Option<String>,
    /// Which HTTP `sourceLabels` matches the view's clients satisfy (a
    /// hash; 0: none), so proxies routed differently get their own table.
    pub source: u64,
}

impl std::fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sidecar {
            Some(s) => write!(f, "{} (Sidecar {s})", self.namespace)?,
            None => write!(f, "{} (no Sidecar)", self.namespace)?,
        }
        if self.source != 0 {
            write!(f, " (sourceLabels {:016x})", self.source)?;
        }
        Ok(())
    }
}

/// Ports of a service a scope imports: all of them, or those of the egress
/// listeners with a port that imported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    All,
    Only(BTreeSet<u32>),
}

impl Ports {
    pub fn contains(&self, port: u32) -> bool {
        match self {
            Ports::All => true,
            Ports::Only(p) => p.contains(&port),
        }
    }

    fn add(&mut self, other: Option<u32>) {
        match (self, other) {
            (Ports::All, _) => {}
            (s, None) => *s = Ports::All,
            (Ports::Only(p), Some(n)) => {
                p.insert(n);
            }
        }
    }
}

/// One proxy view: what the outbound route table, clusters and endpoints of
/// the proxies in `key` contain.
#[derive(Clone, Debug)]
pub struct Scope<'a> {
    pub key: ScopeKey,
    /// Services with virtual hosts (imported by an egress listener's hosts
    /// and exported to the namespace), with the imported ports.
    pub routed: HashMap<&'a str, Ports>,
    /// Services with clusters and endpoints: `routed` plus the destinations
    /// of the imported VirtualServices (Istio adds those so routes resolve).
    pub reachable: HashMap<&'a str, Ports>,
    /// Mesh VirtualServices (namespace, name) the scope imports.
    pub virtual_services: HashSet<(&'a str, &'a str)>,
    /// True when nothing is hidden: every service with every port.
    pub everything: bool,
}

/// One egress listener's hosts, by namespace (`.` resolved).
struct Imports<'s> {
    port: Option<u32>,
    by_ns: HashMap<&'s str, Vec<&'s str>>,
}

impl<'s> Imports<'s> {
    fn new(port: Option<u32>, hosts: &'s [String], config_ns: &'s str) -> Self {
        let mut by_ns: HashMap<&str, Vec<&str>> = HashMap::new();
        for h in hosts {
            // Validation rejects hosts without `namespace/`.
            let Some((ns, dns)) = h.split_once('/') else {
                continue;
            };
            let ns = if ns == "." { config_ns } else { ns };
            by_ns.entry(ns).or_default().push(dns);
        }
        Imports { port, by_ns }
    }

    /// An egress listener's imports: its hosts, on its port if it has one.
    fn of(e: &'s IstioEgressListener, config_ns: &'s str) -> Self {
        let port = e.port.as_ref().and_then(|p| p.number).filter(|n| *n > 0);
        Imports::new(port, &e.hosts, config_ns)
    }

    /// Istio's rule: hosts listed for the service's own namespace decide
    /// alone; only without such a list do `*/...` hosts apply.
    fn imports_service(&self, svc: &Service) -> bool {
        let list = self
            .by_ns
            .get(svc.namespace.as_str())
            .or(self.by_ns.get("*"));
        list.is_some_and(|l| l.iter().any(|p| subset_of(&svc.hostname, p)))
    }

    /// A VirtualService is imported when one of its hosts falls within the
    /// hosts listed for its namespace or for `*`.
    fn imports_virtual_service(&self, ns: &str, hosts: &[String]) -> bool {
        [self.by_ns.get(ns), self.by_ns.get("*")]
            .into_iter()
            .flatten()
            .any(|list| {
                hosts.iter().any(|h| {
                    let h = host::resolve(h, ns);
                    list.iter().any(|p| subset_of(&h, p))
                })
            })
    }
}

/// Istio's `SubsetOf`: every name `h` covers is covered by `pattern`
/// (`*` covers all; `*.b.com` covers `a.b.com` and `*.a.b.com`).
pub fn subset_of(h: &str, pattern: &str) -> bool {
    match (h.strip_prefix('*'), pattern.strip_prefix('*')) {
        (Some(hs), Some(ps)) => hs.ends_with(ps),
        (Some(_), None) => false,
        (None, Some(ps)) => h.ends_with(ps),
        (None, None) => h.eq_ignore_ascii_case(pattern),
    }
}

impl<'a> Scope<'a> {
    /// The view of proxies in `namespace` using `sidecar` (None: Istio's
    /// default, one egress listener importing `*/*`).
    pub fn new(
        config: &'a ConfigSnapshot,
        registry: &'a Registry,
        namespace: &str,
        sidecar: Option<(&'a Resource, &'a SidecarSpec)>,
    ) -> Scope<'a> {
        let all_hosts = ["*/*".to_string()];
        let listeners: Vec<Imports<'_>> = match sidecar {
            Some((_, spec)) if !spec.egress.is_empty() => spec
                .egress
                .iter()
                .map(|e| Imports::of(e, namespace))
                .collect(),
            _ => vec![Imports::new(None, &all_hosts, namespace)],
        };
        Self::with_listeners(config, registry, namespace, sidecar, listeners)
    }

    /// The view through one egress listener of `sidecar` (`spec.egress[index]`)
    /// alone: what its own listener (one with a `port`) routes to. Its key is
    /// the Sidecar's.
    pub fn for_egress_listener(
        config: &'a ConfigSnapshot,
        registry: &'a Registry,
        namespace: &str,
        sidecar: (&'a Resource, &'a SidecarSpec),
        index: usize,
    ) -> Scope<'a> {
        let listeners = sidecar
            .1
            .egress
            .get(index)
            .map(|e| Imports::of(e, namespace))
            .into_iter()
            .collect();
        Self::with_listeners(config, registry, namespace, Some(sidecar), listeners)
    }

    fn with_listeners(
        config: &'a ConfigSnapshot,
        registry: &'a Registry,
        namespace: &str,
        sidecar: Option<(&'a Resource, &'a SidecarSpec)>,
        listeners: Vec<Imports<'_>>,
    ) -> Scope<'a> {
        let mut routed: HashMap<&str, Ports> = HashMap::new();
        let mut everything = true;
        for svc in registry.services.values() {
            if !service_exported(config, svc, namespace) {
                everything = false;
                continue;
            }
            let mut ports: Option<Ports> = None;
            for l in listeners.iter().filter(|l| l.imports_service(svc)) {
                if l.port.is_some_and(|p| svc.port(p).is_none()) {
                    continue;
                }
                ports
                    .get_or_insert(Ports::Only(BTreeSet::new()))
                    .add(l.port);
            }
            match ports {
                Some(p) => {
                    everything &= p == Ports::All;
                    routed.insert(svc.hostname.as_str(), p);
                }
                None => everything = false,
            }
        }
        let mut reachable = routed.clone();
        let mut virtual_services = HashSet::new();
        for (r, vs) in mesh_virtual_services(config) {
            if !exported_to(&vs.export_to, &r.namespace, namespace) {
                continue;
            }
            for l in &listeners {
                if !l.imports_virtual_service(&r.namespace, &vs.hosts) {
                    continue;
                }
                virtual_services.insert((r.namespace.as_str(), r.name.as_str()));
                for d in destination_hosts(vs) {
                    let h = host::resolve(d, &r.namespace);
                    let Some((name, svc)) = registry.services.get_key_value(&h) else {
                        continue;
                    };
                    if !service_exported(config, svc, namespace) {
                        continue;
                    }
                    if l.port.is_some_and(|p| svc.port(p).is_none()) {
                        continue;
                    }
                    reachable
                        .entry(name.as_str())
                        .or_insert(Ports::Only(BTreeSet::new()))
                        .add(l.port);
                }
            }
        }
        Scope {
            key: ScopeKey {
                namespace: namespace.to_string(),
                sidecar: sidecar.map(|(r, _)| format!("{}/{}", r.namespace, r.name)),
                source: 0,
            },
            routed,
            reachable,
            virtual_services,
            everything,
        }
    }

    /// The view of `namespace`'s proxies without a Sidecar (gateways too).
    pub fn default_for(
        config: &'a ConfigSnapshot,
        registry: &'a Registry,
        namespace: &str,
    ) -> Scope<'a> {
        Scope::new(config, registry, namespace, None)
    }

    pub fn namespace(&self) -> &str {
        &self.key.namespace
    }
}

/// The ServiceEntry of `svc` is exported to `client_ns`.
pub fn service_exported(config: &ConfigSnapshot, svc: &Service, client_ns: &str) -> bool {
    let Some((ns, name)) = svc.source.split_once('/') else {
        return true;
    };
    let key = ResourceKey {
        kind: Kind::ServiceEntry,
        namespace: ns.to_string(),
        name: name.to_string(),
    };
    match config.resources.get(&key).map(|r| &r.spec) {
        Some(Spec::ServiceEntry(se)) => exported_to(&se.export_to, ns, client_ns),
        _ => true,
    }
}

/// VirtualServices that apply to sidecars (`gateways` empty or naming
/// `mesh`), delegates merged into their roots (so a root imports its
/// delegates' destinations).
fn mesh_virtual_services(
    config: &ConfigSnapshot,
) -> impl Iterator<Item = (&Resource, &VirtualServiceSpec)> {
    config
        .effective_virtual_services()
        .filter(|(_, vs)| vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
}

/// Every destination host a VirtualService names (routes, mirrors, TCP, TLS).
fn destination_hosts(vs: &VirtualServiceSpec) -> impl Iterator<Item = &str> {
    let http = vs.http.iter().flat_map(|r| {
        r.route
            .iter()
            .map(|d| d.destination.host.as_str())
            .chain(r.mirror.iter().map(|m| m.host.as_str()))
            .chain(r.mirrors.iter().map(|m| m.destination.host.as_str()))
    });
    let tcp = vs
        .tcp
        .iter()
        .flat_map(|r| r.route.iter().map(|d| d.destination.host.as_str()));
    let tls = vs
        .tls
        .iter()
        .flat_map(|r| r.route.iter().map(|d| d.destination.host.as_str()));
    http.chain(tcp).chain(tls)
}

/// The DestinationRule a proxy in `client_ns` uses for `hostname`, as Istio
/// looks it up: rules in the client's namespace, then in the service's
/// namespace, then in the root namespace, each time only rules exported to
/// the client (a rule with a workloadSelector only to its own namespace);
/// within a namespace an exact host before the most specific wildcard.
pub fn destination_rule<'a>(
    config: &'a ConfigSnapshot,
    hostname: &str,
    service_ns: &str,
    client_ns: &str,
) -> Option<(&'a Resource, &'a DestinationRuleSpec)> {
    let idx = config.hosts();
    let exact = idx
        .destination_rules
        .get(hostname)
        .into_iter()
        .flatten()
        .map(|r| (usize::MAX, r));
    let wild = idx
        .wildcard_destination_rules
        .iter()
        .filter(|(pattern, _)| host::matches(pattern, hostname))
        .map(|(pattern, r)| (pattern.len(), r));
    let candidates: Vec<(usize, &'a Resource, &'a DestinationRuleSpec)> = exact
        .chain(wild)
        .filter_map(|(specificity, r)| match &r.spec {
            Spec::DestinationRule(dr) => Some((specificity, r.as_ref(), dr)),
            _ => None,
        })
        .filter(|(_, r, dr)| {
            if dr.workload_selector.is_some() {
                r.namespace == client_ns
            } else {
                exported_to(&dr.export_to, &r.namespace, client_ns)
            }
        })
        .collect();
    [client_ns, service_ns, ROOT_NAMESPACE]
        .into_iter()
        .find_map(|ns| {
            candidates
                .iter()
                .filter(|(_, r, _)| r.namespace == ns)
                // Most specific first; among equals the first by name.
                .min_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)))
        })
        .map(|(_, r, dr)| (*r, *dr))
}

impl<'a> Mesh<'a> {
    /// Translation for the proxies of one scope.
    pub fn with_scope(self, scope: &'a Scope<'a>) -> Self {
        Mesh {
            scope: Some(scope),
            ..self
        }
    }

    /// Whether `hostname:port` gets a virtual host in the outbound routes.
    pub fn routes_to(&self, hostname: &str, port: u32) -> bool {
        self.scope
            .is_none_or(|s| s.routed.get(hostname).is_some_and(|p| p.contains(port)))
    }

    /// Whether `hostname:port` gets outbound clusters (and endpoints).
    pub fn reaches(&self, hostname: &str, port: u32) -> bool {
        self.scope
            .is_none_or(|s| s.reachable.get(hostname).is_some_and(|p| p.contains(port)))
    }

    /// Whether the (mesh) VirtualService `r` is imported.
    pub fn imports_virtual_service(&self, r: &Resource) -> bool {
        self.scope.is_none_or(|s| {
            s.virtual_services
                .contains(&(r.namespace.as_str(), r.name.as_str()))
        })
    }
}

#[cfg(test)]
mod tests;
