//! ServiceEntry: adds services (usually outside the mesh) to the registry.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{IstioStatus, WorkloadEntrySpec, at_most_one};

/// Istio `networking.v1.ServiceEntry` (the `spec` of a ServiceEntry).
// Clippy takes the keys repeated across `printcolumn(...)` lists for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    doc = "Istio ServiceEntry: adds services (usually outside the mesh) to the service registry.",
    namespaced,
    plural = "serviceentries",
    shortname = "se",
    category = "istio-io",
    category = "networking-istio-io",
    status = "IstioStatus",
    printcolumn(
        name = "Hosts",
        type_ = "string",
        json_path = ".spec.hosts",
        description = "The hosts associated with the ServiceEntry"
    ),
    printcolumn(
        name = "Location",
        type_ = "string",
        json_path = ".spec.location",
        description = "Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL)"
    ),
    printcolumn(
        name = "Resolution",
        type_ = "string",
        json_path = ".spec.resolution",
        description = "Service resolution mode for the hosts (NONE, STATIC, or DNS)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since the object was created"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// Host names of the service (`*` alone is not allowed).
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR blocks of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Static endpoints; exclusive with `workload_selector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Selects pods and WorkloadEntries as endpoints; exclusive with `endpoints`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<ServiceEntryWorkloadSelector>,
    /// Namespaces this entry is visible to (`.`, `*` or names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// SANs the server certificate must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

impl ServiceEntrySpec {
    /// Fails if both `endpoints` and `workloadSelector` are set.
    pub fn validate_one_of(&self) -> Result<(), String> {
        at_most_one(
            "",
            &[
                ("workloadSelector", self.workload_selector.is_some()),
                ("endpoints", !self.endpoints.is_empty()),
            ],
        )
    }
}

/// Istio `networking.v1.ServicePort`: a port of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `MONGO`, `TCP`, `TLS` ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub name: String,
    /// Port on the endpoints; defaults to `number`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Istio `networking.v1.ServiceEntry.Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: no mTLS, no Istio identity.
    #[default]
    MeshExternal,
    /// Part of the mesh (e.g. VMs added by hand).
    MeshInternal,
}

/// Istio `networking.v1.ServiceEntry.Resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the connection's original destination IP.
    #[default]
    None,
    /// Use the endpoint addresses as given.
    Static,
    /// Resolve each endpoint (or host) by DNS, using all returned IPs.
    Dns,
    /// Resolve by DNS, using only the first IP returned.
    DnsRoundRobin,
    /// Resolve the requested host by DNS at request time (dynamic forward proxy).
    DynamicDns,
}

/// Istio `networking.v1.WorkloadSelector` as used by ServiceEntry and Sidecar:
/// selects by `labels` (not `matchLabels` as the `type.v1beta1`
/// [`super::WorkloadSelector`] does).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntryWorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
