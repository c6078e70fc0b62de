//! Sidecar: what a workload's proxy listens for (ingress) and which services
//! it can reach (egress), instead of everything in the mesh.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ConnectionPoolSettings, Destination, IstioStatus, ServerTlsSettings,
    ServiceEntryWorkloadSelector,
};

/// Istio `networking.v1.Sidecar` (the `spec` of a Sidecar).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Sidecar",
    doc = "Istio Sidecar: the inbound listeners and the reachable services of a workload's proxy.",
    namespaced,
    plural = "sidecars",
    category = "istio-io",
    category = "networking-istio-io",
    status = "IstioStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    /// Workloads this applies to; without it, every workload of the namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<ServiceEntryWorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Connection pool for every inbound port (overridden per ingress listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// Istio `networking.v1.IstioIngressListener`: one inbound port of the proxy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    pub port: SidecarPort,
    /// IP address the listener binds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where traffic goes: `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`,
    /// `[::]:PORT` or `unix:///path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// Istio `networking.v1.IstioEgressListener`: a port (or all ports) and the
/// hosts reachable through it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// Without a port, the listener is the catch-all (at most one, last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// IP or `unix://` socket the listener binds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// `namespace/dnsName`: namespace `*`, `.` (this one), `~` (none) or a
    /// name; dnsName an FQDN, `*.suffix` or `*`.
    pub hosts: Vec<String>,
}

/// Istio `networking.v1.SidecarPort`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    /// Port number (0 only with a `unix://` bind on egress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Deprecated; has no effect on sidecars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Istio `networking.v1.CaptureMode`: how traffic reaches the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// The environment's default.
    #[default]
    Default,
    /// iptables redirection.
    Iptables,
    /// No capture: apps address the listener directly.
    None,
}

/// Istio `networking.v1.OutboundTrafficPolicy`: traffic to unknown destinations.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundMode>,
    /// Where ALLOW_ANY traffic goes, instead of its original destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

/// Istio `networking.v1.OutboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Only services in the registry are reachable (the proto's default).
    #[default]
    RegistryOnly,
    /// Unknown destinations are passed through.
    AllowAny,
}
