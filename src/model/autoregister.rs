//! WorkloadGroup auto-registration, the pure part: the WorkloadEntry a
//! proxy connecting for a group stands for, made from the group's template
//! as istiod makes it, and the snapshot with those entries added.
//!
//! Registered entries live in memory only (the config directory is the
//! user's); they enter the model as WorkloadEntry resources, so everything
//! downstream (ServiceEntry workloadSelectors, inbound listeners, identity,
//! telemetry) treats them like entries from files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::WorkloadKey;
use super::istio::{WorkloadEntrySpec, WorkloadGroupSpec};
use super::resource::{ConfigSnapshot, Kind, Origin, Resource, ResourceKey, Spec, Timestamp};

/// Annotation naming the WorkloadGroup an entry was registered from (Istio's).
pub const GROUP_ANNOTATION: &str = "istio.io/autoRegistrationGroup";
/// Annotation naming the control plane instance the proxy is connected to.
pub const CONTROLLER_ANNOTATION: &str = "istio.io/workloadController";
/// When the proxy connected (RFC 3339), while it is connected.
pub const CONNECTED_AT_ANNOTATION: &str = "istio.io/connectedAt";
/// When the proxy disconnected (RFC 3339), during the grace period.
pub const DISCONNECTED_AT_ANNOTATION: &str = "istio.io/disconnectedAt";
/// The value of [`CONTROLLER_ANNOTATION`]: this control plane.
pub const CONTROLLER: &str = "pilotfish";
/// Longest resource name Kubernetes takes; istiod keeps the name's end.
const NAME_MAX: usize = 253;

/// What a proxy registering for a group says about itself (its node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    pub namespace: String,
    pub group: String,
    /// The first of the node's `INSTANCE_IPS`.
    pub ip: String,
    /// The node's `NETWORK`, overriding the template's.
    pub network: Option<String>,
    /// The node's locality (`region/zone/subzone`), overriding the template's.
    pub locality: Option<String>,
    /// The node's `LABELS`, over the group's.
    pub labels: BTreeMap<String, String>,
}

impl Request {
    /// The entry's key: Istio's `<group>-<ip>[-<network>]` (IPv6 colons
    /// become dashes; over 253 characters, the end is kept).
    pub fn entry_key(&self) -> WorkloadKey {
        let mut name = format!("{}-{}", self.group, self.ip.replace(':', "-"));
        if let Some(n) = self.network.as_deref().filter(|n| !n.is_empty()) {
            name.push('-');
            name.push_str(n);
        }
        if name.len() > NAME_MAX {
            let cut = name.len() - NAME_MAX;
            let start = (cut..name.len())
                .find(|i| name.is_char_boundary(*i))
                .unwrap_or(name.len());
            name = name[start..].to_string();
        }
        WorkloadKey {
            namespace: self.namespace.clone(),
            name,
        }
    }
}

/// One registered workload: who connected, and whether it still is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Registration {
    pub request: Request,
    /// The service account the proxy authenticated as (None on the
    /// unauthenticated port). The entry's identity is this one: the
    /// template's service account must be it, or be unset.
    pub service_account: Option<String>,
    /// Open ADS streams for this entry (Envoy may reconnect before the old
    /// stream is seen to end).
    pub connections: u32,
    pub connected_at: Timestamp,
    /// Set when the last stream ended; the entry goes after the grace period.
    pub disconnected_at: Option<Timestamp>,
}

/// Why a registration has no entry in the model (shown at /debug).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Skipped {
    /// The WorkloadGroup is gone (deleting a group removes its entries).
    NoGroup,
    /// A WorkloadEntry from the config has this name or address: it wins.
    UserEntry(String),
    /// The group's template names another service account than the proxy
    /// authenticated as (the template changed after it connected).
    ServiceAccount { template: String, proxy: String },
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::NoGroup => f.write_str("the WorkloadGroup no longer exists"),
            Skipped::UserEntry(name) => write!(
                f,
                "WorkloadEntry {name} from the config has this name or address and wins"
            ),
            Skipped::ServiceAccount { template, proxy } => write!(
                f,
                "the group's template names service account {template:?}, the proxy authenticated as {proxy:?}"
            ),
        }
    }
}

/// The WorkloadEntry from the config that a registering proxy is, if any:
/// one with the entry's name, else one in its namespace with its address.
pub fn user_entry<'a>(snapshot: &'a ConfigSnapshot, req: &Request) -> Option<&'a Resource> {
    let key = req.entry_key();
    let by_name = snapshot.resources.get(&ResourceKey {
        kind: Kind::WorkloadEntry,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    });
    if let Some(r) = by_name {
        return Some(r.as_ref());
    }
    snapshot
        .workload_entries()
        .find(|(r, s)| r.namespace == req.namespace && s.address.as_deref() == Some(&req.ip))
        .map(|(r, _)| r)
}

/// The WorkloadGroup a request names.
pub fn group<'a>(
    snapshot: &'a ConfigSnapshot,
    req: &Request,
) -> Option<(&'a Resource, &'a WorkloadGroupSpec)> {
    let r = snapshot.resources.get(&ResourceKey {
        kind: Kind::WorkloadGroup,
        namespace: req.namespace.clone(),
        name: req.group.clone(),
    })?;
    match &r.spec {
        Spec::WorkloadGroup(g) => Some((r.as_ref(), g)),
        _ => None,
    }
}

/// The service account an entry of `group` gets for a proxy authenticated
/// as `proxy_sa`: the template's (which must then be the proxy's), else
/// the proxy's own. Err names both when they differ.
pub fn service_account(
    group: &WorkloadGroupSpec,
    proxy_sa: Option<&str>,
) -> Result<Option<String>, Skipped> {
    let template = group
        .template
        .service_account
        .as_deref()
        .filter(|s| !s.is_empty());
    match (template, proxy_sa) {
        (Some(t), Some(p)) if t != p => Err(Skipped::ServiceAccount {
            template: t.to_string(),
            proxy: p.to_string(),
        }),
        (Some(t), _) => Ok(Some(t.to_string())),
        (None, p) => Ok(p.map(str::to_string)),
    }
}

/// The WorkloadEntry istiod would create for `reg` from `group`: the
/// template with the proxy's address; labels template < group metadata <
/// the node's; annotations the group's metadata plus Istio's registration
/// annotations; network and locality from the node when it has them.
pub fn entry(
    key: &WorkloadKey,
    group_name: &str,
    group: &WorkloadGroupSpec,
    reg: &Registration,
    service_account: Option<String>,
) -> Resource {
    let mut spec: WorkloadEntrySpec = group.template.clone();
    spec.address = Some(reg.request.ip.clone());
    let mut annotations = BTreeMap::new();
    if let Some(meta) = &group.metadata {
        spec.labels
            .extend(meta.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        annotations.extend(meta.annotations.clone());
    }
    spec.labels.extend(reg.request.labels.clone());
    if let Some(n) = reg.request.network.as_deref().filter(|n| !n.is_empty()) {
        spec.network = Some(n.to_string());
    }
    if let Some(l) = reg.request.locality.as_deref().filter(|l| !l.is_empty()) {
        spec.locality = Some(l.to_string());
    }
    spec.service_account = service_account;
    annotations.insert(GROUP_ANNOTATION.into(), group_name.to_string());
    annotations.insert(CONTROLLER_ANNOTATION.into(), CONTROLLER.into());
    match reg.disconnected_at {
        None => {
            annotations.insert(CONNECTED_AT_ANNOTATION.into(), reg.connected_at.to_string());
        }
        Some(at) => {
            annotations.insert(DISCONNECTED_AT_ANNOTATION.into(), at.to_string());
        }
    }
    Resource {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        labels: spec.labels.clone(),
        annotations,
        created: Some(reg.connected_at),
        spec: Spec::WorkloadEntry(spec),
        origin: Origin {
            file: PathBuf::from(format!(
                "<auto-registered from WorkloadGroup {}/{group_name}>",
                key.namespace
            )),
            document: 0,
        },
    }
}

/// What the registrations add to a snapshot.
#[derive(Debug, Default)]
pub struct Merged {
    /// The entries in force, by key.
    pub entries: BTreeMap<WorkloadKey, Arc<Resource>>,
    /// Registrations left out, and why.
    pub skipped: BTreeMap<WorkloadKey, Skipped>,
}

/// The entries `registrations` stand for in `snapshot` (from the groups as
/// they are now: a changed template changes its entries).
pub fn merge(
    snapshot: &ConfigSnapshot,
    registrations: &BTreeMap<WorkloadKey, Registration>,
) -> Merged {
    let mut out = Merged::default();
    for (key, reg) in registrations {
        let Some((_, g)) = group(snapshot, &reg.request) else {
            out.skipped.insert(key.clone(), Skipped::NoGroup);
            continue;
        };
        if let Some(user) = user_entry(snapshot, &reg.request) {
            out.skipped
                .insert(key.clone(), Skipped::UserEntry(user.name.clone()));
            continue;
        }
        match service_account(g, reg.service_account.as_deref()) {
            Ok(sa) => {
                let r = entry(key, &reg.request.group, g, reg, sa);
                out.entries.insert(key.clone(), Arc::new(r));
            }
            Err(why) => {
                out.skipped.insert(key.clone(), why);
            }
        }
    }
    out
}

/// `snapshot` with `entries` added as WorkloadEntry resources.
pub fn with_entries(
    snapshot: &ConfigSnapshot,
    entries: &BTreeMap<WorkloadKey, Arc<Resource>>,
) -> ConfigSnapshot {
    let mut resources = snapshot.resources.clone();
    for r in entries.values() {
        resources.insert(r.key(), Arc::clone(r));
    }
    ConfigSnapshot::new(resources)
}

#[cfg(test)]
mod tests;
