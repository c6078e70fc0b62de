//! WorkloadEntry: a non-Kubernetes workload (VM, bare metal) in the mesh.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::IstioStatus;

/// Istio `networking.v1.WorkloadEntry` (the `spec` of a WorkloadEntry, and each of a ServiceEntry's `endpoints`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadEntry",
    doc = "Istio WorkloadEntry: a non-Kubernetes workload (VM, bare metal) in the mesh.",
    namespaced,
    plural = "workloadentries",
    shortname = "we",
    category = "istio-io",
    category = "networking-istio-io",
    status = "IstioStatus",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since the object was created"
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".spec.address",
        description = "Address associated with the network endpoint"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    /// IP, DNS name or `unix://` socket path, without port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Service port name to endpoint port number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// L3 network the workload is in, for multi-network meshes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `region/zone/subzone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load balancing weight; defaults to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Service account of the workload's sidecar, for its identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}
