//! The Kubernetes objects in force: for every watched type, the last good
//! version of each object (a malformed update keeps the previous version and
//! reports why), and the pure build of the model from them. Plain data,
//! synchronous; `source.rs` drives it from the watchers.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use ::kube::api::{ApiResource, DynamicObject};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;

use super::convert::{self, LabelSelector, Problem, SERVICE_NAME_LABEL};
use crate::config::{ConfigError, parse::parse_object, validate};
use crate::model::{Kind, Resource, ResourceKey};

/// What `ConfigError::file` says for problems found in Kubernetes objects.
pub const SOURCE_NAME: &str = "kubernetes";

/// The types the source watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Watched {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
    Istio(Kind),
}

impl Watched {
    pub fn all() -> Vec<Watched> {
        let mut all = vec![
            Watched::Namespace,
            Watched::Service,
            Watched::EndpointSlice,
            Watched::Pod,
        ];
        all.extend(Kind::ALL.into_iter().map(Watched::Istio));
        all
    }

    /// Where the API serves this type (the Istio kinds at their storage version).
    pub fn api_resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Watched::Namespace => ("", "v1", "Namespace", "namespaces"),
            Watched::Service => ("", "v1", "Service", "services"),
            Watched::EndpointSlice => ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
            Watched::Pod => ("", "v1", "Pod", "pods"),
            Watched::Istio(k) => (k.group(), k.storage_version(), k.name(), istio_plural(k)),
        };
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    /// CRDs may not be installed; the core types always are.
    pub fn optional(self) -> bool {
        matches!(self, Watched::Istio(_))
    }
}

fn istio_plural(k: Kind) -> &'static str {
    match k {
        Kind::ServiceEntry => "serviceentries",
        Kind::WorkloadEntry => "workloadentries",
        Kind::VirtualService => "virtualservices",
        Kind::DestinationRule => "destinationrules",
        Kind::PeerAuthentication => "peerauthentications",
        Kind::Gateway => "gateways",
        Kind::Sidecar => "sidecars",
        Kind::WorkloadGroup => "workloadgroups",
        Kind::AuthorizationPolicy => "authorizationpolicies",
        Kind::RequestAuthentication => "requestauthentications",
        Kind::Telemetry => "telemetries",
    }
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.api_resource().kind)
    }
}

/// Namespace ("" for cluster-scoped objects) and name.
pub type ObjKey = (String, String);

fn key_of(obj: &DynamicObject) -> ObjKey {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// One object: its last good version and the problem with its latest one.
#[derive(Debug)]
struct Entry<T> {
    good: Option<Arc<T>>,
    error: Option<ConfigError>,
}

/// The objects of one type.
#[derive(Debug)]
pub struct Table<T> {
    entries: BTreeMap<ObjKey, Entry<T>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            entries: BTreeMap::new(),
        }
    }
}

impl<T: PartialEq> Table<T> {
    /// A new version of one object; a version that fails to decode leaves the
    /// last good one in force. Returns true when anything changed.
    fn apply(&mut self, key: ObjKey, decoded: Result<T, ConfigError>) -> bool {
        let entry = self.entries.entry(key).or_insert(Entry {
            good: None,
            error: None,
        });
        match decoded {
            Ok(v) => {
                let changed = entry.good.as_deref() != Some(&v) || entry.error.is_some();
                entry.good = Some(Arc::new(v));
                entry.error = None;
                changed
            }
            Err(e) => {
                let changed = entry.error.as_ref() != Some(&e);
                entry.error = Some(e);
                changed
            }
        }
    }

    fn delete(&mut self, key: &ObjKey) -> bool {
        self.entries.remove(key).is_some()
    }

    /// A complete list (after a relist): objects not in it are gone, listed
    /// ones are applied as updates (so a malformed one keeps its last good
    /// version). The caller swaps this in at once: no intermediate state.
    fn replace(&mut self, items: Vec<(ObjKey, Result<T, ConfigError>)>) -> bool {
        let mut old = std::mem::take(&mut self.entries);
        let mut changed = false;
        for (key, decoded) in items {
            if let Some(entry) = old.remove(&key) {
                self.entries.insert(key.clone(), entry);
            }
            changed |= self.apply(key, decoded);
        }
        changed || !old.is_empty()
    }

    pub fn get(&self, key: &ObjKey) -> Option<&Arc<T>> {
        self.entries.get(key).and_then(|e| e.good.as_ref())
    }

    /// Every object with a good version.
    pub fn good(&self) -> impl Iterator<Item = (&ObjKey, &Arc<T>)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.good.as_ref().map(|g| (k, g)))
    }

    fn errors(&self) -> impl Iterator<Item = (&ObjKey, &ConfigError)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.error.as_ref().map(|err| (k, err)))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Every watched object, by type.
#[derive(Debug, Default)]
pub struct Index {
    pub namespaces: Table<Namespace>,
    pub services: Table<Service>,
    pub slices: Table<EndpointSlice>,
    pub pods: Table<Pod>,
    pub istio: BTreeMap<Kind, Table<Resource>>,
}

fn kube_error(kind: &str, key: &ObjKey, path: Option<String>, message: String) -> ConfigError {
    let resource = if key.0.is_empty() {
        format!("{kind} {}", key.1)
    } else {
        format!("{kind} {}/{}", key.0, key.1)
    };
    ConfigError {
        file: SOURCE_NAME.into(),
        document: None,
        resource: Some(resource),
        path,
        message,
    }
}

/// The object as JSON with its apiVersion and kind (list items carry none)
/// and without managedFields (large, never used).
fn to_json(w: Watched, mut obj: DynamicObject) -> serde_json::Value {
    let ar = w.api_resource();
    obj.types = Some(::kube::api::TypeMeta {
        api_version: ar.api_version,
        kind: ar.kind,
    });
    obj.metadata.managed_fields = None;
    serde_json::to_value(obj).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(
    w: Watched,
    key: &ObjKey,
    obj: DynamicObject,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(to_json(w, obj)).map_err(|e| {
        let path = e.path().to_string();
        kube_error(
            &w.to_string(),
            key,
            (path != ".").then_some(path),
            e.into_inner().to_string(),
        )
    })
}

/// An Istio object, parsed and validated exactly as a file document.
fn decode_istio(w: Watched, key: &ObjKey, obj: DynamicObject) -> Result<Resource, ConfigError> {
    let json = to_json(w, obj);
    let value = serde_yaml_ng::to_value(json)
        .map_err(|e| kube_error(&w.to_string(), key, None, e.to_string()))?;
    let mut parsed = parse_object(Path::new(SOURCE_NAME), value);
    match (parsed.resources.pop(), parsed.errors.into_iter().next()) {
        (Some(r), None) => Ok(r),
        (_, Some(e)) => Err(e),
        (None, None) => Err(kube_error(
            &w.to_string(),
            key,
            None,
            parsed.skipped.join("; "),
        )),
    }
}

impl Index {
    /// An added or modified object. Returns true when anything changed.
    pub fn apply(&mut self, w: Watched, obj: DynamicObject) -> bool {
        let key = key_of(&obj);
        match w {
            Watched::Namespace => {
                let d = decode(w, &key, obj);
                self.namespaces.apply(key, d)
            }
            Watched::Service => {
                let d = decode(w, &key, obj);
                self.services.apply(key, d)
            }
            Watched::EndpointSlice => {
                let d = decode(w, &key, obj);
                self.slices.apply(key, d)
            }
            Watched::Pod => {
                let d = decode(w, &key, obj);
                self.pods.apply(key, d)
            }
            Watched::Istio(k) => {
                let d = decode_istio(w, &key, obj);
                self.istio.entry(k).or_default().apply(key, d)
            }
        }
    }

    pub fn delete(&mut self, w: Watched, obj: &DynamicObject) -> bool {
        let key = key_of(obj);
        match w {
            Watched::Namespace => self.namespaces.delete(&key),
            Watched::Service => self.services.delete(&key),
            Watched::EndpointSlice => self.slices.delete(&key),
            Watched::Pod => self.pods.delete(&key),
            Watched::Istio(k) => self.istio.entry(k).or_default().delete(&key),
        }
    }

    /// Replaces every object of one type with a fresh list, at once.
    pub fn replace(&mut self, w: Watched, objs: Vec<DynamicObject>) -> bool {
        fn items<T: DeserializeOwned>(
            w: Watched,
            objs: Vec<DynamicObject>,
        ) -> Vec<(ObjKey, Result<T, ConfigError>)> {
            objs.into_iter()
                .map(|o| {
                    let key = key_of(&o);
                    let d = decode(w, &key, o);
                    (key, d)
                })
                .collect()
        }
        match w {
            Watched::Namespace => self.namespaces.replace(items(w, objs)),
            Watched::Service => self.services.replace(items(w, objs)),
            Watched::EndpointSlice => self.slices.replace(items(w, objs)),
            Watched::Pod => self.pods.replace(items(w, objs)),
            Watched::Istio(k) => {
                let items = objs
                    .into_iter()
                    .map(|o| {
                        let key = key_of(&o);
                        let d = decode_istio(w, &key, o);
                        (key, d)
                    })
                    .collect();
                self.istio.entry(k).or_default().replace(items)
            }
        }
    }

    /// Objects held for `w`.
    pub fn count(&self, w: Watched) -> usize {
        match w {
            Watched::Namespace => self.namespaces.len(),
            Watched::Service => self.services.len(),
            Watched::EndpointSlice => self.slices.len(),
            Watched::Pod => self.pods.len(),
            Watched::Istio(k) => self.istio.get(&k).map_or(0, Table::len),
        }
    }
}

/// The model built from the index.
#[derive(Debug, Default)]
pub struct Built {
    pub resources: BTreeMap<ResourceKey, Arc<Resource>>,
    /// Every object skipped or only partly used, with why.
    pub errors: Vec<ConfigError>,
    /// The namespaces in the mesh (every Namespace the selectors select).
    pub namespaces: std::collections::BTreeSet<String>,
}

/// Builds the resources the translator sees from the objects in force:
/// Istio objects as they are, a ServiceEntry per Service, a WorkloadEntry per
/// pod. Objects in namespaces the `selectors` leave out are ignored.
pub fn build(ix: &Index, selectors: &[LabelSelector]) -> Built {
    let mut out = Built::default();
    let in_mesh = |ns: &str| {
        convert::namespace_selected(
            selectors,
            ix.namespaces
                .get(&(String::new(), ns.to_string()))
                .map(|n| n.as_ref()),
        )
    };
    let mut report = |kind: &str, key: &ObjKey, p: Problem| {
        out.errors.push(kube_error(
            kind,
            key,
            Some(p.path).filter(|p| !p.is_empty()),
            p.message,
        ))
    };

    let mut resources: BTreeMap<ResourceKey, Arc<Resource>> = BTreeMap::new();
    let mut errors: Vec<ConfigError> = Vec::new();
    for table in ix.istio.values() {
        for (key, r) in table.good() {
            if in_mesh(&key.0) {
                resources.insert(r.key(), Arc::clone(r));
            }
        }
        errors.extend(
            table
                .errors()
                .filter(|(k, _)| in_mesh(&k.0))
                .map(|(_, e)| e.clone()),
        );
    }
    errors.extend(ix.namespaces.errors().map(|(_, e)| e.clone()));
    for (k, e) in ix
        .services
        .errors()
        .chain(ix.slices.errors())
        .chain(ix.pods.errors())
    {
        if in_mesh(&k.0) {
            errors.push(e.clone());
        }
    }

    let slices: Vec<&EndpointSlice> = ix
        .slices
        .good()
        .filter(|(k, _)| in_mesh(&k.0))
        .map(|(_, s)| s.as_ref())
        .collect();
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in &slices {
        if let (Some(ns), Some(svc)) = (
            s.metadata.namespace.as_deref(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) {
            by_service.entry((ns, svc.as_str())).or_default().push(s);
        }
    }
    let readiness = convert::slice_readiness(slices.iter().copied());

    let mut services_by_ns: HashMap<&str, Vec<&Service>> = HashMap::new();
    for (key, svc) in ix.services.good().filter(|(k, _)| in_mesh(&k.0)) {
        services_by_ns.entry(key.0.as_str()).or_default().push(svc);
        let own = by_service
            .get(&(key.0.as_str(), key.1.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        match convert::service_entry(svc, own) {
            Ok((r, problems)) => {
                for p in problems {
                    report("Service", key, p);
                }
                add_checked(&mut resources, &mut report, "Service", key, r)
            }
            Err(p) => report("Service", key, p),
        }
    }

    for (key, pod) in ix.pods.good().filter(|(k, _)| in_mesh(&k.0)) {
        let selecting: Vec<&Service> = services_by_ns
            .get(key.0.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|s| convert::service_selects(s, pod))
            .collect();
        let (ports, problems) = convert::named_target_ports(pod, &selecting);
        for p in problems {
            report("Pod", key, p);
        }
        let ready = convert::pod_ready(pod, readiness.get(key).copied());
        match convert::workload_entry(pod, ready, ports) {
            Ok(Some(r)) => {
                let rk = r.key();
                if resources.contains_key(&rk) {
                    report(
                        "Pod",
                        key,
                        Problem {
                            path: "metadata.name".into(),
                            message: format!(
                                "a WorkloadEntry object has this pod's name; the pod's workload is in force and the WorkloadEntry {}/{} is ignored",
                                rk.namespace, rk.name
                            ),
                        },
                    );
                }
                add_checked(&mut resources, &mut report, "Pod", key, r);
            }
            Ok(None) => {}
            Err(p) => report("Pod", key, p),
        }
    }
    out.resources = resources;
    out.namespaces = ix
        .namespaces
        .good()
        .map(|(k, _)| k.1.clone())
        .filter(|n| in_mesh(n))
        .collect();
    out.errors.extend(errors);
    out.errors
        .sort_by(|a, b| (&a.resource, &a.path).cmp(&(&b.resource, &b.path)));
    out
}

/// Adds a resource made from a Kubernetes object if it passes the checks
/// file documents get; reports it otherwise.
fn add_checked(
    resources: &mut BTreeMap<ResourceKey, Arc<Resource>>,
    report: &mut impl FnMut(&str, &ObjKey, Problem),
    kind: &str,
    key: &ObjKey,
    r: Resource,
) {
    // Warnings do not reject an object (as in files, where they are logged).
    let findings = validate::check(&r);
    if findings.errors.is_empty() {
        resources.insert(r.key(), Arc::new(r));
    } else {
        for (path, message) in findings.errors {
            report(kind, key, Problem { path, message });
        }
    }
}
