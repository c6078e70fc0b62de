//! The service registry: services and workloads derived from ServiceEntry
//! and WorkloadEntry resources. A pure function of the config snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::istio::{Location, Resolution, WorkloadEntrySpec};
use super::resource::{ConfigSnapshot, Timestamp};
use super::{WorkloadKey, host};

/// Prefix of the names of the ServiceEntries the Kubernetes source makes
/// from Services (`svc:reviews`). `:` never appears in a Kubernetes object
/// name, so no ServiceEntry object can carry it.
pub const KUBERNETES_SERVICE_PREFIX: &str = "svc:";

/// WorkloadEntry annotation naming the address the workload's application
/// listens on; its sidecar forwards inbound traffic there. Istio's default
/// (no annotation) is 127.0.0.1, which suits one workload per network
/// namespace; on one machine give each app its own loopback address.
pub const APP_ADDRESS_ANNOTATION: &str = "pilotfish.io/app-address";
const DEFAULT_APP_ADDRESS: &str = "127.0.0.1";

/// WorkloadEntry annotation saying whether the workload may receive traffic
/// (`"true"`, the default, or `"false"`). A workload that is not ready keeps
/// its sidecar's config (inbound listeners for the services selecting it
/// included) but is no service's endpoint, as a Kubernetes pod that is not
/// ready stays out of its services' EndpointSlices. The Kubernetes source
/// sets it from EndpointSlice readiness; in files it takes a workload out of
/// rotation (draining a VM) without deleting it.
pub const READY_ANNOTATION: &str = "pilotfish.io/ready";

/// False when `annotations` mark a workload as not ready.
pub fn is_ready(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(READY_ANNOTATION).map(String::as_str) != Some("false")
}

/// Application protocol of a service port, from `protocol` or the port name's
/// prefix (`http-web`), as Istio selects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tls,
    Tcp,
}

impl Protocol {
    pub fn detect(protocol: Option<&str>, port_name: &str) -> Protocol {
        let from = |s: &str| match s.to_ascii_lowercase().as_str() {
            "http" => Some(Protocol::Http),
            "http2" => Some(Protocol::Http2),
            "grpc" | "grpc-web" => Some(Protocol::Grpc),
            "https" => Some(Protocol::Https),
            "tls" => Some(Protocol::Tls),
            "tcp" | "mongo" | "redis" | "mysql" => Some(Protocol::Tcp),
            _ => None,
        };
        protocol
            .and_then(from)
            .or_else(|| from(port_name.split('-').next().unwrap_or_default()))
            .unwrap_or(Protocol::Tcp)
    }

    /// Routed by an HTTP connection manager (HTTP/1.1, HTTP/2, gRPC).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ServicePort {
    pub number: u32,
    pub name: String,
    pub protocol: Protocol,
    pub target_port: Option<u32>,
}

/// One instance of a service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Endpoint {
    /// IP address, or a DNS name for DNS resolution.
    pub address: String,
    /// Port by service port name.
    pub ports: BTreeMap<String, u32>,
    pub labels: BTreeMap<String, String>,
    pub locality: Option<String>,
    /// The L3 network it is in (`network` of its WorkloadEntry or
    /// ServiceEntry endpoint), for failoverPriority's synthesized
    /// `topology.istio.io/network` label.
    pub network: Option<String>,
    pub weight: Option<u32>,
    pub service_account: Option<String>,
    pub workload: Option<WorkloadKey>,
}

impl Endpoint {
    fn from_spec(spec: &WorkloadEntrySpec, workload: Option<WorkloadKey>) -> Option<Self> {
        Some(Endpoint {
            address: spec.address.clone().filter(|a| !a.is_empty())?,
            ports: spec.ports.clone(),
            labels: spec.labels.clone(),
            locality: spec.locality.clone(),
            network: spec.network.clone(),
            weight: spec.weight,
            service_account: spec.service_account.clone(),
            workload,
        })
    }

    /// The port this endpoint receives `port`'s traffic on: its own port for
    /// that port name, else the service's targetPort, else the port number.
    pub fn port_for(&self, port: &ServicePort) -> u32 {
        self.ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }
}

/// A mesh service: one host of a ServiceEntry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Service {
    pub hostname: String,
    pub namespace: String,
    /// `namespace/name` of the ServiceEntry.
    pub source: String,
    /// The ServiceEntry's (or Kubernetes Service's) `creationTimestamp`.
    #[serde(skip)]
    pub created: Option<Timestamp>,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub location: Location,
    pub endpoints: Vec<Endpoint>,
    pub selector: Option<BTreeMap<String, String>>,
}

impl Service {
    /// Made by the Kubernetes source from a Service.
    pub fn from_kubernetes(&self) -> bool {
        self.source
            .split_once('/')
            .is_some_and(|(_, name)| name.starts_with(KUBERNETES_SERVICE_PREFIX))
    }

    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// Istio's order of services (`SortServicesByCreationTime`): the oldest
    /// first (no creation time before any), then by name, then namespace.
    /// Istio names a ServiceEntry's service by its host, a Kubernetes
    /// Service's by the Service's name.
    pub fn istio_order(&self) -> (Option<Timestamp>, &str, &str) {
        let name = self
            .source
            .split_once('/')
            .and_then(|(_, n)| n.strip_prefix(KUBERNETES_SERVICE_PREFIX))
            .unwrap_or(&self.hostname);
        (self.created, name, &self.namespace)
    }
}

/// A workload: a WorkloadEntry, with a sidecar bound to its address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Workload {
    pub key: WorkloadKey,
    pub address: String,
    /// Where the application listens (inbound traffic goes there).
    pub app_address: String,
    pub ports: BTreeMap<String, u32>,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub locality: Option<String>,
    /// The L3 network it is in (its WorkloadEntry's `network`).
    pub network: Option<String>,
    pub weight: Option<u32>,
}

/// Services and workloads, derived from a config snapshot.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// By FQDN.
    pub services: BTreeMap<String, Arc<Service>>,
    pub workloads: BTreeMap<WorkloadKey, Arc<Workload>>,
    /// The services whose workloadSelector selects each workload.
    pub selected: HashMap<WorkloadKey, Vec<Arc<Service>>>,
    /// Conflicts found while building (e.g. a host defined twice).
    pub warnings: Vec<String>,
}

/// A WorkloadEntry resource and its spec.
type EntryRef<'a> = (&'a crate::model::Resource, &'a WorkloadEntrySpec);

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Registry {
    pub fn build(snapshot: &ConfigSnapshot) -> Registry {
        let mut reg = Registry::default();
        for (res, spec) in snapshot.workload_entries() {
            let key = WorkloadKey {
                namespace: res.namespace.clone(),
                name: res.name.clone(),
            };
            let Some(address) = spec.address.clone().filter(|a| !a.is_empty()) else {
                continue; // validation reports it
            };
            let app_address = res
                .annotations
                .get(APP_ADDRESS_ANNOTATION)
                .cloned()
                .unwrap_or_else(|| DEFAULT_APP_ADDRESS.to_string());
            reg.workloads.insert(
                key.clone(),
                Arc::new(Workload {
                    key,
                    address,
                    app_address,
                    ports: spec.ports.clone(),
                    labels: spec.labels.clone(),
                    service_account: spec.service_account.clone(),
                    locality: spec.locality.clone(),
                    network: spec.network.clone(),
                    weight: spec.weight,
                }),
            );
        }

        // WorkloadEntries by (namespace, label, value), so a selector is
        // matched against the few entries carrying its first label rather than
        // against every entry in the mesh.
        let mut by_label: HashMap<(&str, &str, &str), Vec<EntryRef<'_>>> = HashMap::new();
        for (we, spec) in snapshot.workload_entries() {
            for (k, v) in &spec.labels {
                by_label
                    .entry((we.namespace.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push((we, spec));
            }
        }
        // Istio's precedence among ServiceEntries defining one host: a
        // Kubernetes Service over any other (no one can squat a Service's
        // name before it exists), then the oldest, then by namespace/name.
        let mut entries: Vec<_> = snapshot.service_entries().collect();
        entries.sort_by(|(a, _), (b, _)| {
            let kube = |r: &crate::model::Resource| !r.name.starts_with(KUBERNETES_SERVICE_PREFIX);
            (kube(a), a.creation_order()).cmp(&(kube(b), b.creation_order()))
        });
        for (res, spec) in entries {
            let ports: Vec<ServicePort> = spec
                .ports
                .iter()
                .map(|p| ServicePort {
                    number: p.number,
                    name: p.name.clone(),
                    protocol: Protocol::detect(p.protocol.as_deref(), &p.name),
                    target_port: p.target_port,
                })
                .collect();
            let selector = spec.workload_selector.as_ref().map(|s| s.labels.clone());
            let candidates: Vec<EntryRef<'_>> = match &selector {
                Some(sel) => match sel.iter().next() {
                    Some((k, v)) => by_label
                        .get(&(res.namespace.as_str(), k.as_str(), v.as_str()))
                        .cloned()
                        .unwrap_or_default(),
                    // An empty selector selects every workload in the namespace.
                    None => snapshot
                        .workload_entries()
                        .filter(|(we, _)| we.namespace == res.namespace)
                        .collect(),
                },
                None => Vec::new(),
            };
            // Every selected workload serves the service's ports (inbound);
            // only the ready ones are its endpoints.
            let mut members: Vec<WorkloadKey> = Vec::new();
            let endpoints: Vec<Endpoint> = match &selector {
                Some(sel) => candidates
                    .iter()
                    .filter(|(_, we_spec)| selects(sel, &we_spec.labels))
                    .filter_map(|(we, we_spec)| {
                        let key = WorkloadKey {
                            namespace: we.namespace.clone(),
                            name: we.name.clone(),
                        };
                        if reg.workloads.contains_key(&key) {
                            members.push(key.clone());
                        }
                        is_ready(&we.annotations)
                            .then(|| Endpoint::from_spec(we_spec, Some(key)))
                            .flatten()
                    })
                    .collect(),
                None => spec
                    .endpoints
                    .iter()
                    .filter_map(|e| Endpoint::from_spec(e, None))
                    .collect(),
            };
            let source = format!("{}/{}", res.namespace, res.name);
            for h in &spec.hosts {
                let hostname = host::resolve(h, &res.namespace);
                if let Some(existing) = reg.services.get(&hostname) {
                    let why = if existing.from_kubernetes()
                        && !res.name.starts_with(KUBERNETES_SERVICE_PREFIX)
                    {
                        " (a Kubernetes Service takes precedence)"
                    } else {
                        ""
                    };
                    reg.warnings.push(format!(
                        "host {hostname} is defined by ServiceEntry {} and {source}; using {}{why}",
                        existing.source, existing.source
                    ));
                    continue;
                }
                let svc = Arc::new(Service {
                    hostname: hostname.clone(),
                    namespace: res.namespace.clone(),
                    source: source.clone(),
                    created: res.created,
                    ports: ports.clone(),
                    resolution: spec.resolution.unwrap_or_default(),
                    location: spec.location.unwrap_or_default(),
                    endpoints: endpoints.clone(),
                    selector: selector.clone(),
                });
                for w in &members {
                    reg.selected
                        .entry(w.clone())
                        .or_default()
                        .push(Arc::clone(&svc));
                }
                reg.services.insert(hostname, svc);
            }
        }
        reg
    }

    /// The services whose workloadSelector selects `workload`.
    pub fn services_of<'a>(&'a self, workload: &Workload) -> impl Iterator<Item = &'a Service> {
        self.selected
            .get(&workload.key)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|s| s.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_service(hostname: &str, source: &str, created: Option<&str>) -> Service {
        Service {
            hostname: hostname.into(),
            namespace: "shop".into(),
            source: source.into(),
            created: created.map(|t| t.parse().unwrap()),
            ports: Vec::new(),
            resolution: Default::default(),
            location: Default::default(),
            endpoints: Vec::new(),
            selector: None,
        }
    }

    #[test]
    fn istio_order_is_oldest_then_istio_name_then_namespace() {
        // A ServiceEntry's service is named by its host, a Kubernetes
        // Service's by its name: `zeta` before `zeta-a`, although the host
        // `zeta-a.shop...` sorts before `zeta.shop...`.
        let zeta = mk_service("zeta.shop.svc.cluster.local", "shop/svc:zeta", None);
        let zeta_a = mk_service("zeta-a.shop.svc.cluster.local", "shop/svc:zeta-a", None);
        assert!(zeta.istio_order() < zeta_a.istio_order());
        let entry = mk_service("zeta.example.com", "shop/a-entry", None);
        assert_eq!(entry.istio_order().1, "zeta.example.com");
        // No creation time sorts before any; then the oldest.
        let old = mk_service("b.example.com", "shop/b", Some("2024-01-01T00:00:00Z"));
        let new = mk_service("a.example.com", "shop/a", Some("2024-06-01T00:00:00Z"));
        assert!(entry.istio_order() < old.istio_order());
        assert!(old.istio_order() < new.istio_order());
    }
}
