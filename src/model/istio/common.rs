//! Small messages used by more than one Istio networking kind.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::at_most_one;

/// Istio `networking.v1.PortSelector`: a port of a service, by number.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Valid port number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
}

/// Istio `networking.v1.Percent`: a percentage in the range 0.0 to 100.0.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// Istio `type.v1beta1.WorkloadSelector`: selects pods/VMs by labels (`matchLabels`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must carry to be selected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// Istio `type.v1beta1.PolicyTargetReference`: the resource a policy
/// (AuthorizationPolicy, RequestAuthentication, Telemetry) attaches to, in
/// the policy's own namespace.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target (empty for the core group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the target: `Service`, `ServiceEntry`, `Gateway`, `GatewayClass`.
    pub kind: String,
    pub name: String,
    /// Must be empty: cross-namespace references are not supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Istio `networking.v1.StringMatch`: exact, prefix or RE2 regex string match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Enum view of the `match_type` oneof of [`StringMatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatchKind<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

impl StringMatch {
    /// The match, or `None` for an empty match (which, for headers, tests
    /// presence). When several members are set the first of exact, prefix,
    /// regex wins (call [`StringMatch::validate_one_of`] to reject that).
    pub fn kind(&self) -> Option<StringMatchKind<'_>> {
        if let Some(s) = &self.exact {
            return Some(StringMatchKind::Exact(s));
        }
        if let Some(s) = &self.prefix {
            return Some(StringMatchKind::Prefix(s));
        }
        self.regex.as_deref().map(StringMatchKind::Regex)
    }

    /// Fails if more than one of `exact`, `prefix`, `regex` is set.
    pub fn validate_one_of(&self) -> Result<(), String> {
        self.check_one_of("")
    }

    pub(super) fn check_one_of(&self, path: &str) -> Result<(), String> {
        at_most_one(
            path,
            &[
                ("exact", self.exact.is_some()),
                ("prefix", self.prefix.is_some()),
                ("regex", self.regex.is_some()),
            ],
        )
    }
}

/// Istio `meta.v1alpha1.IstioStatus`: the `status` of every Istio kind.
///
/// pilotfish writes no status yet, so it keeps whatever is there (Istio's
/// status controller may share the cluster) and its schema accepts any object,
/// as Istio's CRDs do with `x-kubernetes-preserve-unknown-fields`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IstioStatus(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for IstioStatus {
    fn schema_name() -> Cow<'static, str> {
        "IstioStatus".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Status written by controllers; any object is kept.",
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}
