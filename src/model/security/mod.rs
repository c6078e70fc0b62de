//! Typed `spec`s of the `security.istio.io` kinds pilotfish reads:
//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication (v1 and
//! v1beta1 share the schema).

mod authorization_policy;
mod request_authentication;

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::istio::{IstioStatus, WorkloadSelector};

pub use authorization_policy::{
    Action, AuthorizationPolicy, AuthorizationPolicySpec, Condition, ExtensionProvider, Operation,
    Rule, RuleFrom, RuleTo, Source,
};
pub use request_authentication::{
    ClaimToHeader, JwtHeader, JwtPresence, JwtRule, RequestAuthentication,
    RequestAuthenticationSpec,
};

/// Istio `security.v1.PeerAuthentication`: how workloads accept peer traffic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    doc = "Istio PeerAuthentication: how workloads accept peer traffic (mutual TLS).",
    namespaced,
    plural = "peerauthentications",
    shortname = "pa",
    category = "istio-io",
    category = "security-istio-io",
    status = "IstioStatus",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mtls.mode",
        description = "Defines the mTLS mode used for peer authentication"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since the object was created"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Port number (as a string key, as in YAML) -> mTLS settings for that port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, PeerMtls>,
}

/// Istio `PeerAuthentication.MutualTLS`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerMtls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// Istio `PeerAuthentication.MutualTLS.Mode`. UNSET inherits from the parent
/// scope (workload -> namespace -> mesh); the mesh default is PERMISSIVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}
