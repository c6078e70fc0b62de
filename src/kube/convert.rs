//! Pure conversions from Kubernetes objects to the model's resources: a
//! Service to a ServiceEntry, a Pod to a WorkloadEntry, EndpointSlices to
//! readiness. No I/O; every function here is unit-tested in `tests.rs`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::istio::{
    Location, Resolution, ServiceEntrySpec, ServiceEntryWorkloadSelector, ServicePort,
    WorkloadEntrySpec,
};
use crate::model::registry::{APP_ADDRESS_ANNOTATION, KUBERNETES_SERVICE_PREFIX, READY_ANNOTATION};
use crate::model::resource::Origin;
use crate::model::{DOMAIN_SUFFIX, Resource, Spec};

/// The label an EndpointSlice carries naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Name prefix of the ServiceEntries made from Services. `:` never appears
/// in a Kubernetes object name, so they cannot collide with a ServiceEntry
/// object of the same name (a user may well create one); the registry also
/// reads it to give Services precedence over ServiceEntries for one host.
pub const SERVICE_ENTRY_PREFIX: &str = KUBERNETES_SERVICE_PREFIX;

/// The annotation by which a Service limits where it is visible, as Istio
/// reads it: comma-separated namespaces, `.` (its own), `*` (all), `~` (none).
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// The service account of a pod that names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// One problem with one object: the field and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// Where a resource made from a Kubernetes object came from (shown in errors).
pub fn origin(kind: &str, namespace: &str, name: &str) -> Origin {
    Origin {
        file: PathBuf::from(format!("kubernetes {kind} {namespace}/{name}")),
        document: 0,
    }
}

/// The ServiceEntry `protocol` Istio derives from a port's `appProtocol`;
/// None when Istio does not know the value, leaving the choice to the port
/// name's prefix (`http-web`), then TCP.
pub fn app_protocol(app_protocol: &str) -> Option<&'static str> {
    Some(match app_protocol.to_ascii_lowercase().as_str() {
        "http" | "kubernetes.io/ws" => "HTTP",
        "http2" | "kubernetes.io/h2c" => "HTTP2",
        "https" | "kubernetes.io/wss" => "HTTPS",
        "grpc" => "GRPC",
        "grpc-web" => "GRPC-Web",
        "tls" => "TLS",
        "tcp" => "TCP",
        "mongo" => "Mongo",
        "redis" => "Redis",
        "mysql" => "MySQL",
        _ => return None,
    })
}

/// A Service port's name in the ServiceEntry: its own, or `port-N` for the
/// unnamed port of a single-port Service (ServiceEntry ports need a name).
pub fn port_name(name: Option<&str>, number: i32) -> String {
    match name {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("port-{number}"),
    }
}

fn port_number(path: String, n: i32) -> Result<u32, Problem> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=65535).contains(n))
        .ok_or_else(|| problem(path, format!("port {n} is not in 1-65535")))
}

/// Ports Istio does not proxy (it skips UDP and SCTP Service ports).
fn proxied(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
}

/// `name.namespace.svc.cluster.local`.
pub fn service_host(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.{DOMAIN_SUFFIX}")
}

fn name_and_namespace(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(String, String), Problem> {
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| problem("metadata.name", "a name is required"))?;
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| problem("metadata.namespace", "a namespace is required"))?;
    Ok((name, namespace))
}

/// A Service as a ServiceEntry. With a selector its endpoints are the
/// workloads it selects (pods and WorkloadEntries); without one, the ready
/// addresses of its EndpointSlices (`slices`, already filtered to this
/// Service); an ExternalName Service resolves its name by DNS. Its
/// `networking.istio.io/exportTo` annotation becomes the `exportTo`; the
/// values ignored from it come back as problems beside the resource.
pub fn service_entry(
    svc: &Service,
    slices: &[&EndpointSlice],
) -> Result<(Resource, Vec<Problem>), Problem> {
    let (name, namespace) = name_and_namespace(&svc.metadata)?;
    let (export_to, problems) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| export_to(v))
        .unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        if !proxied(p.protocol.as_deref()) {
            continue;
        }
        let path = format!("spec.ports[{i}]");
        let number = port_number(format!("{path}.port"), p.port)?;
        let target_port = match &p.target_port {
            Some(IntOrString::Int(t)) => Some(port_number(format!("{path}.targetPort"), *t)?),
            // A named target port is resolved per pod (see `named_target_ports`).
            Some(IntOrString::String(_)) | None => None,
        };
        ports.push(ServicePort {
            number,
            protocol: p
                .app_protocol
                .as_deref()
                .and_then(app_protocol)
                .map(str::to_string),
            name: port_name(p.name.as_deref(), p.port),
            target_port,
        });
    }
    let host = service_host(&name, &namespace);
    let mut se = ServiceEntrySpec {
        hosts: vec![host],
        ports,
        location: Some(Location::MeshInternal),
        resolution: Some(Resolution::Static),
        export_to,
        ..Default::default()
    };
    let selector = spec.selector.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        let external = spec
            .external_name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                problem(
                    "spec.externalName",
                    "an ExternalName Service needs an externalName",
                )
            })?;
        se.location = Some(Location::MeshExternal);
        se.resolution = Some(Resolution::Dns);
        se.endpoints = vec![WorkloadEntrySpec {
            address: Some(external),
            ..Default::default()
        }];
    } else if !selector.is_empty() {
        se.addresses = cluster_ips(&spec);
        se.workload_selector = Some(ServiceEntryWorkloadSelector { labels: selector });
    } else {
        se.addresses = cluster_ips(&spec);
        se.endpoints = slice_endpoints(slices, &se.ports);
    }
    let resource = Resource {
        name: format!("{SERVICE_ENTRY_PREFIX}{name}"),
        namespace: namespace.clone(),
        labels: svc.metadata.labels.clone().unwrap_or_default(),
        annotations: BTreeMap::new(),
        created: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
        spec: Spec::ServiceEntry(se),
        origin: origin("Service", &namespace, &name),
    };
    Ok((resource, problems))
}

/// The `exportTo` list of a `networking.istio.io/exportTo` annotation:
/// comma-separated, blanks trimmed; each value `.`, `*`, `~` or a namespace
/// name. Other values are left out, each reported. `~` (visible nowhere)
/// beside namespaces keeps only `~`, as Istio's registry treats it (`*`
/// still wins over it). Nothing usable left means Istio's default: visible
/// everywhere.
pub fn export_to(value: &str) -> (Vec<String>, Vec<Problem>) {
    let path = format!("metadata.annotations[{EXPORT_TO_ANNOTATION}]");
    let mut out: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    for v in value.split(',').map(str::trim) {
        if v.is_empty() {
            continue;
        }
        if matches!(v, "." | "*" | "~") || is_dns1123_label(v) {
            if !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        } else {
            problems.push(problem(
                &path,
                format!("{v:?} is not a namespace name, \".\", \"*\" or \"~\"; ignored"),
            ));
        }
    }
    if out.len() > 1 && out.iter().any(|o| o == "~") && !out.iter().any(|o| o == "*") {
        problems.push(problem(
            &path,
            format!(
                "\"~\" (visible nowhere) cannot be combined with other values ({}); the Service is visible nowhere",
                out.iter().filter(|o| *o != "~").cloned().collect::<Vec<_>>().join(",")
            ),
        ));
        out = vec!["~".to_string()];
    }
    (out, problems)
}

/// A Kubernetes namespace name: 1-63 lowercase letters, digits and `-`,
/// starting and ending with a letter or digit.
fn is_dns1123_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || c == '-')
}

fn cluster_ips(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Vec<String> {
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.clone());
    }
    ips.retain(|ip| ip.parse::<IpAddr>().is_ok());
    ips
}

/// Ready addresses of a selector-less Service's EndpointSlices, each with the
/// slice's ports by Service port name.
fn slice_endpoints(slices: &[&EndpointSlice], ports: &[ServicePort]) -> Vec<WorkloadEntrySpec> {
    let mut out: Vec<WorkloadEntrySpec> = Vec::new();
    for slice in slices {
        let slice_ports: BTreeMap<String, u32> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let number = u32::try_from(p.port?).ok()?;
                let name = port_name(p.name.as_deref(), number as i32);
                // The slice names an unnamed port "": match the Service's only port.
                let name = if p.name.as_deref().unwrap_or_default().is_empty() && ports.len() == 1 {
                    ports[0].name.clone()
                } else {
                    name
                };
                ports
                    .iter()
                    .any(|sp| sp.name == name)
                    .then_some((name, number))
            })
            .collect();
        for e in &slice.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &e.addresses {
                if out.iter().any(|o| o.address.as_deref() == Some(address)) {
                    continue;
                }
                out.push(WorkloadEntrySpec {
                    address: Some(address.clone()),
                    ports: slice_ports.clone(),
                    locality: e.zone.clone(),
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// Per pod (namespace, name), whether its EndpointSlice entries call it
/// ready: false if any says not ready (a terminating pod, a failing
/// readiness probe). A condition left unset means ready, as the API says.
pub fn slice_readiness<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> HashMap<(String, String), bool> {
    let mut ready: HashMap<(String, String), bool> = HashMap::new();
    for slice in slices {
        let slice_ns = slice.metadata.namespace.clone().unwrap_or_default();
        for e in &slice.endpoints {
            let Some(target) = &e.target_ref else {
                continue;
            };
            if target.kind.as_deref() != Some("Pod") {
                continue;
            }
            let Some(name) = target.name.clone() else {
                continue;
            };
            let ns = target.namespace.clone().unwrap_or_else(|| slice_ns.clone());
            let this = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            *ready.entry((ns, name)).or_insert(true) &= this;
        }
    }
    ready
}

/// Whether a pod may receive traffic: as its EndpointSlices say when any
/// lists it, else its own Ready condition (a pod only a ServiceEntry
/// selects); never while it is terminating.
pub fn pod_ready(pod: &Pod, from_slices: Option<bool>) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    from_slices.unwrap_or_else(|| {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
}

/// True when every label of `selector` is on `labels`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a Service's selector picks `pod` (same namespace, non-empty selector).
pub fn service_selects(svc: &Service, pod: &Pod) -> bool {
    if svc.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    match selector {
        Some(sel) if !sel.is_empty() => selects(
            sel,
            pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
        ),
        _ => false,
    }
}

/// The pod's port for each Service port whose `targetPort` names a container
/// port (`targetPort: http-web`), keyed by the Service port's name, as a
/// WorkloadEntry's `ports` are. Two Services giving the same port name
/// different numbers is reported; the first (by namespace/name) wins.
pub fn named_target_ports(
    pod: &Pod,
    services: &[&Service],
) -> (BTreeMap<String, u32>, Vec<Problem>) {
    let mut ports = BTreeMap::new();
    let mut problems = Vec::new();
    let container_ports: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    for svc in services {
        for p in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
            let Some(IntOrString::String(target)) = &p.target_port else {
                continue;
            };
            let Some(cp) = container_ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(target.as_str()))
            else {
                continue; // Kubernetes gives such a pod no endpoint for this port either.
            };
            let Ok(number) = u32::try_from(cp.container_port) else {
                continue;
            };
            let name = port_name(p.name.as_deref(), p.port);
            match ports.get(&name) {
                Some(n) if *n != number => problems.push(problem(
                    "spec.containers[].ports",
                    format!(
                        "Services selecting this pod map port name {name:?} to different ports ({n} and {number}); using {n}"
                    ),
                )),
                Some(_) => {}
                None => {
                    ports.insert(name, number);
                }
            }
        }
    }
    (ports, problems)
}

/// A pod as a WorkloadEntry named after it: its IP, labels and service
/// account, `ports` from [`named_target_ports`], and not ready unless
/// `ready`. None for a pod without an IP yet or one that has finished.
/// The `pilotfish.io/app-address` annotation is carried over from the pod.
pub fn workload_entry(
    pod: &Pod,
    ready: bool,
    ports: BTreeMap<String, u32>,
) -> Result<Option<Resource>, Problem> {
    let (name, namespace) = name_and_namespace(&pod.metadata)?;
    let status = pod.status.clone().unwrap_or_default();
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Ok(None);
    }
    let Some(ip) = status.pod_ip.filter(|ip| !ip.is_empty()) else {
        return Ok(None);
    };
    if ip.parse::<IpAddr>().is_err() {
        return Err(problem(
            "status.podIP",
            format!("{ip:?} is not an IP address"),
        ));
    }
    let mut annotations = BTreeMap::new();
    if let Some(a) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APP_ADDRESS_ANNOTATION))
    {
        annotations.insert(APP_ADDRESS_ANNOTATION.to_string(), a.clone());
    }
    if !ready {
        annotations.insert(READY_ANNOTATION.to_string(), "false".to_string());
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    Ok(Some(Resource {
        name: name.clone(),
        namespace: namespace.clone(),
        labels: labels.clone(),
        annotations,
        created: None,
        spec: Spec::WorkloadEntry(WorkloadEntrySpec {
            address: Some(ip),
            ports,
            labels,
            service_account: Some(service_account(pod)),
            ..Default::default()
        }),
        origin: origin("Pod", &namespace, &name),
    }))
}

fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string())
}

/// A pod's address and service account, for its sidecar's bootstrap.
pub fn pod_identity(pod: &Pod) -> Result<super::PodIdentity, String> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty())
        .ok_or("has no IP address yet (status.podIP)")?;
    Ok(super::PodIdentity {
        ip,
        service_account: service_account(pod),
    })
}

/// One of Istio's discovery selectors, `key=value[,key=value...]`: a
/// namespace is in the mesh when every pair is among its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector(pub BTreeMap<String, String>);

impl FromStr for LabelSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut labels = BTreeMap::new();
        for pair in s.split(',') {
            let (k, v) = pair
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| format!("{pair:?}: expected key=value"))?;
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(LabelSelector(labels))
    }
}

/// Whether objects in `namespace` are part of the mesh: always without
/// selectors, else when the namespace matches any selector.
pub fn namespace_selected(selectors: &[LabelSelector], namespace: Option<&Namespace>) -> bool {
    if selectors.is_empty() {
        return true;
    }
    let Some(ns) = namespace else {
        return false;
    };
    let empty = BTreeMap::new();
    let labels = ns.metadata.labels.as_ref().unwrap_or(&empty);
    selectors.iter().any(|s| selects(&s.0, labels))
}
