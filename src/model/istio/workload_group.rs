//! WorkloadGroup: the template WorkloadEntries are made from when VMs
//! register themselves, and their readiness probe.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{IstioStatus, WorkloadEntrySpec};

/// Istio `networking.v1.WorkloadGroup` (the `spec` of a WorkloadGroup).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadGroup",
    doc = "Istio WorkloadGroup: the template and health check of auto-registered WorkloadEntries.",
    namespaced,
    plural = "workloadgroups",
    shortname = "wg",
    category = "istio-io",
    category = "networking-istio-io",
    status = "IstioStatus",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since the object was created"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroupSpec {
    /// Labels and annotations copied to every WorkloadEntry of the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkloadGroupMetadata>,
    /// The WorkloadEntry each member starts from (`address` comes from the
    /// registering workload, so the template has none).
    pub template: WorkloadEntrySpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ReadinessProbe>,
}

/// Istio `networking.v1.WorkloadGroup.ObjectMeta`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroupMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Istio `networking.v1.ReadinessProbe`: how the VM's agent checks readiness.
/// `httpGet`, `tcpSocket`, `exec` and `grpc` are a `oneof`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessProbe {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthCheckConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthCheckConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckConfig>,
}

impl ReadinessProbe {
    /// The health check methods set, by YAML name.
    pub fn methods(&self) -> Vec<&'static str> {
        [
            ("httpGet", self.http_get.is_some()),
            ("tcpSocket", self.tcp_socket.is_some()),
            ("exec", self.exec.is_some()),
            ("grpc", self.grpc.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Istio `networking.v1.HTTPHealthCheckConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheckConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub port: u32,
    /// Host to connect to; defaults to localhost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` or `HTTPS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HealthCheckHeader>,
}

/// Istio `networking.v1.HTTPHeader` (of an HTTP health check).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckHeader {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Istio `networking.v1.TCPHealthCheckConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheckConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: u32,
}

/// Istio `networking.v1.ExecHealthCheckConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecHealthCheckConfig {
    /// Command and arguments; exit status 0 is healthy.
    pub command: Vec<String>,
}

/// Istio `networking.v1.GrpcHealthCheckConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheckConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Service name for the gRPC health protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}
