//! Cross-resource analysis (`pilotfish analyze`): problems no single
//! document shows, each with a stable code. Codes are Istio's (`istioctl
//! analyze`) where Istio has one for the same finding, with Istio's levels;
//! docs/analyze.md lists them with an example and the fix.
//!
//! Pure functions of a config snapshot and the registry derived from it:
//! one function per check, each returning its messages.

mod policy;
mod routing;

use std::fmt;

use serde::Serialize;

use crate::model::{ConfigSnapshot, Registry, Resource, ResourceKey};

/// How bad a finding is, as Istio grades analyzer messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// The findings `analyze` reports. Codes and names are Istio's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// IST0101: a host, subset, gateway or namespace a resource names does not exist.
    ReferencedResourceNotFound,
    /// IST0106: a document fails validation (what `pilotfish validate` reports).
    SchemaValidationError,
    /// IST0109: several mesh VirtualServices for one host.
    ConflictingMeshGatewayVirtualServiceHosts,
    /// IST0113: a DestinationRule sends plaintext to workloads that take only mTLS.
    MtlsPolicyConflict,
    /// IST0130: an HTTP/TCP rule no request can reach.
    VirtualServiceUnreachableRule,
    /// IST0131: one match of a rule is shadowed by an earlier identical match.
    VirtualServiceIneffectiveMatch,
    /// IST0173: a DestinationRule subset whose labels select no workload.
    DestinationRuleSubsetNotSelectPods,
}

impl Code {
    pub const ALL: [Code; 7] = [
        Code::ReferencedResourceNotFound,
        Code::SchemaValidationError,
        Code::ConflictingMeshGatewayVirtualServiceHosts,
        Code::MtlsPolicyConflict,
        Code::VirtualServiceUnreachableRule,
        Code::VirtualServiceIneffectiveMatch,
        Code::DestinationRuleSubsetNotSelectPods,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Code::ReferencedResourceNotFound => "IST0101",
            Code::SchemaValidationError => "IST0106",
            Code::ConflictingMeshGatewayVirtualServiceHosts => "IST0109",
            Code::MtlsPolicyConflict => "IST0113",
            Code::VirtualServiceUnreachableRule => "IST0130",
            Code::VirtualServiceIneffectiveMatch => "IST0131",
            Code::DestinationRuleSubsetNotSelectPods => "IST0173",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::ReferencedResourceNotFound => "ReferencedResourceNotFound",
            Code::SchemaValidationError => "SchemaValidationError",
            Code::ConflictingMeshGatewayVirtualServiceHosts => {
                "ConflictingMeshGatewayVirtualServiceHosts"
            }
            Code::MtlsPolicyConflict => "MTLSPolicyConflict",
            Code::VirtualServiceUnreachableRule => "VirtualServiceUnreachableRule",
            Code::VirtualServiceIneffectiveMatch => "VirtualServiceIneffectiveMatch",
            Code::DestinationRuleSubsetNotSelectPods => "DestinationRuleSubsetNotSelectPods",
        }
    }

    pub fn level(self) -> Level {
        match self {
            Code::ReferencedResourceNotFound
            | Code::SchemaValidationError
            | Code::ConflictingMeshGatewayVirtualServiceHosts
            | Code::MtlsPolicyConflict => Level::Error,
            Code::VirtualServiceUnreachableRule | Code::DestinationRuleSubsetNotSelectPods => {
                Level::Warning
            }
            Code::VirtualServiceIneffectiveMatch => Level::Info,
        }
    }
}

/// One finding: what, where (resource, file, document, field path), why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub level: Level,
    pub code: &'static str,
    pub name: &'static str,
    /// `Kind namespace/name`.
    pub resource: String,
    pub file: String,
    /// 1-based document number in `file` (0 when not from a file).
    pub document: usize,
    /// Field path, e.g. `spec.http[0].route[0].destination.subset`.
    pub path: String,
    pub message: String,
    /// The resource the finding is about (for status on Kubernetes objects).
    #[serde(skip)]
    pub key: Option<ResourceKey>,
}

impl Message {
    pub fn new(code: Code, r: &Resource, path: impl Into<String>, message: String) -> Self {
        Message {
            level: code.level(),
            code: code.id(),
            name: code.name(),
            resource: format!("{} {}/{}", r.spec.kind(), r.namespace, r.name),
            file: r.origin.file.display().to_string(),
            document: r.origin.document,
            path: path.into(),
            message,
            key: Some(r.key()),
        }
    }

    /// IST0101's message: `Referenced WHAT not found: "NAME"`.
    fn not_found(r: &Resource, path: String, what: &str, name: &str) -> Self {
        Message::new(
            Code::ReferencedResourceNotFound,
            r,
            path,
            format!("Referenced {what} not found: {name:?}"),
        )
    }
}

impl Message {
    /// This finding as a config warning (for /debug/config_errors), its
    /// message led by the code.
    pub fn to_config_error(&self) -> crate::config::ConfigError {
        crate::config::ConfigError {
            file: self.file.clone(),
            document: (self.document > 0).then_some(self.document),
            resource: (!self.resource.is_empty()).then(|| self.resource.clone()),
            path: (!self.path.is_empty()).then(|| self.path.clone()),
            message: format!("[{}] {}", self.code, self.message),
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] ", self.level, self.code)?;
        if !self.resource.is_empty() {
            write!(f, "({}) ", self.resource)?;
        }
        f.write_str(&self.file)?;
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A snapshot of `resources` (a later resource with the same kind,
/// namespace and name replaces an earlier one, as in serve mode).
pub fn snapshot_of(resources: Vec<Resource>) -> ConfigSnapshot {
    ConfigSnapshot::new(
        resources
            .into_iter()
            .map(|r| (r.key(), std::sync::Arc::new(r)))
            .collect(),
    )
}

/// The cross-resource routing findings `serve` reports with its config
/// warnings (on /debug/config_errors): route destinations naming a host
/// or subset that does not exist (IST0101: Envoy answers 503 for them, as
/// under Istio), VirtualServices competing for one host on the sidecars,
/// delegates missing, hidden or conflicting, and rules no request reaches
/// (IST0130; those after a catch-all are dropped from the route tables).
pub fn serve_warnings(snapshot: &ConfigSnapshot) -> Vec<Message> {
    let registry = Registry::build(snapshot);
    let mut out = routing::destination_hosts(snapshot, &registry);
    out.extend(routing::destination_subsets(snapshot));
    out.extend(routing::conflicting_virtual_services(snapshot));
    out.extend(routing::delegates(snapshot));
    out.extend(
        routing::unreachable_rules(snapshot)
            .into_iter()
            .filter(|m| m.code == Code::VirtualServiceUnreachableRule.id()),
    );
    out
}

/// Every finding for `snapshot`, in resource order, checks in a fixed order.
pub fn analyze(snapshot: &ConfigSnapshot) -> Vec<Message> {
    let registry = Registry::build(snapshot);
    let mut out = Vec::new();
    out.extend(routing::destination_hosts(snapshot, &registry));
    out.extend(routing::destination_subsets(snapshot));
    out.extend(routing::gateways(snapshot));
    out.extend(routing::conflicting_virtual_services(snapshot));
    out.extend(routing::delegates(snapshot));
    out.extend(routing::unreachable_rules(snapshot));
    out.extend(policy::subsets_select_no_workload(snapshot, &registry));
    out.extend(policy::mtls_conflicts(snapshot, &registry));
    out.extend(policy::authorization_namespaces(snapshot));
    out.sort_by(|a, b| (&a.file, a.document, &a.resource).cmp(&(&b.file, b.document, &b.resource)));
    out
}

#[cfg(test)]
mod tests;
