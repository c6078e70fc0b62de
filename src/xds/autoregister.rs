//! WorkloadGroup auto-registration at run time, as istiod's WorkloadEntry
//! controller does it: a proxy whose node names a group
//! (`AUTO_REGISTER_GROUP`, with `NAMESPACE` and `INSTANCE_IPS`) and whose
//! credential matches the group's service account gets a WorkloadEntry
//! made from the group's template while it is connected, and for
//! `--workload-entry-grace-period` after its last stream ends (a reconnect
//! within it keeps the entry).
//!
//! The entries live in memory, never in the config directory. [`run`] sits
//! between the config source and the translator: it publishes the source's
//! state with the entries added, so the rest of pilotfish sees them as any
//! other WorkloadEntry. The index is plain data behind a mutex; nothing
//! awaits while holding it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::ca::token::Claims;
use crate::config::ConfigState;
use crate::metrics::Metrics;
use crate::model::autoregister::{self as model, Merged, Registration, Request};
use crate::model::istio::WorkloadEntrySpec;
use crate::model::{Spec, Timestamp, WorkloadKey};

/// Istio's default `PILOT_WORKLOAD_ENTRY_GRACE_PERIOD`: long enough for a
/// proxy to reconnect (restart, control plane failover) without its
/// endpoint leaving every other proxy's config and coming back.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Why a proxy could not register (sent to it, and logged).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RegisterError {
    #[error("auto-registration: {0}")]
    BadNode(String),
    #[error("auto-registration of {proxy} failed: cannot find WorkloadGroup {group}")]
    NoGroup { proxy: String, group: String },
    #[error(
        "auto-registration as {entry}: the credential ({credential}) may not register it: {why}"
    )]
    Identity {
        entry: WorkloadKey,
        /// `namespace/workload (service account SA)` of the credential.
        credential: String,
        why: String,
    },
}

fn describe(c: Option<&Claims>) -> String {
    match c {
        Some(c) => format!(
            "{}/{} (service account {})",
            c.namespace, c.workload, c.service_account
        ),
        None => "none".into(),
    }
}

/// The registration request in a node's metadata, if it names a group:
/// `AUTO_REGISTER_GROUP`, `NAMESPACE`, the first of `INSTANCE_IPS`
/// (comma-separated), `NETWORK`, `LABELS` (a struct of strings), and the
/// node's locality.
pub fn request_of(node: &Node) -> Option<Result<Request, RegisterError>> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let fields = &node.metadata.as_ref()?.fields;
    let text = |key: &str| match fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    };
    let group = text("AUTO_REGISTER_GROUP")?;
    let bad = |m: &str| {
        Some(Err(RegisterError::BadNode(format!(
            "node {}: {m}",
            node.id
        ))))
    };
    let Some(namespace) = text("NAMESPACE") else {
        return bad("AUTO_REGISTER_GROUP needs NAMESPACE in the node metadata");
    };
    let Some(ip) = text("INSTANCE_IPS")
        .and_then(|ips| ips.split(',').next().map(|s| s.trim().to_string()))
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
    else {
        return bad("AUTO_REGISTER_GROUP needs an IP address in INSTANCE_IPS");
    };
    let mut labels = BTreeMap::new();
    if let Some(Kind::StructValue(s)) = fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        for (k, v) in &s.fields {
            if let Some(Kind::StringValue(v)) = &v.kind {
                labels.insert(k.clone(), v.clone());
            }
        }
    }
    let locality = node.locality.as_ref().and_then(|l| {
        let parts = [&l.region, &l.zone, &l.sub_zone];
        let n = parts.iter().rposition(|p| !p.is_empty())?;
        Some(
            parts[..=n]
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("/"),
        )
    });
    Some(Ok(Request {
        namespace,
        group,
        ip,
        network: text("NETWORK"),
        locality,
        labels,
    }))
}

/// The registered workloads; cheap to clone (one shared index).
#[derive(Clone)]
pub struct AutoRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AutoRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoRegistry")
            .field("grace", &self.inner.grace)
            .finish_non_exhaustive()
    }
}

struct Inner {
    state: Mutex<State>,
    /// The config as the source has it (groups, and the user's entries).
    source: watch::Receiver<Arc<ConfigState>>,
    changed: Notify,
    grace: Duration,
    metrics: Metrics,
}

#[derive(Default)]
struct State {
    registrations: BTreeMap<WorkloadKey, Registration>,
    /// When each disconnected registration is deleted.
    expires: BTreeMap<WorkloadKey, Instant>,
    /// Bumped on every change of `registrations`.
    generation: u64,
    /// What the last published state holds (for /debug).
    merged: Arc<Merged>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One proxy's stream as a registered workload: the entry it is served as.
/// Dropping it (the stream ended) starts the grace period once no other
/// stream holds the entry.
#[derive(Debug)]
pub struct Connection {
    pub key: WorkloadKey,
    /// `namespace/name` of the group it registered with.
    pub group: String,
    /// Set when the entry is an auto-registered one (not the user's).
    registry: Option<AutoRegistry>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(r) = self.registry.take() {
            r.disconnect(&self.key);
        }
    }
}

/// Whether `claims` may be the workload `key` with service account `sa`
/// (Istio: the verified identity's namespace and service account must be
/// the entry's; a credential bound to one workload only that one).
fn check_identity(
    claims: Option<&Claims>,
    key: &WorkloadKey,
    sa: Option<&str>,
) -> Result<(), RegisterError> {
    let Some(c) = claims else {
        return Ok(()); // the unauthenticated port
    };
    let why = if c.namespace != key.namespace {
        Some(format!(
            "namespace {} is not {}",
            c.namespace, key.namespace
        ))
    } else if !c.workload.is_empty() && c.workload != key.name {
        Some("it is bound to another workload".to_string())
    } else {
        sa.filter(|sa| *sa != c.service_account)
            .map(|sa| format!("the entry's service account is {sa}"))
    };
    match why {
        None => Ok(()),
        Some(why) => Err(RegisterError::Identity {
            entry: key.clone(),
            credential: describe(Some(c)),
            why,
        }),
    }
}

impl AutoRegistry {
    pub fn new(
        source: watch::Receiver<Arc<ConfigState>>,
        grace: Duration,
        metrics: Metrics,
    ) -> Self {
        AutoRegistry {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                source,
                changed: Notify::new(),
                grace,
                metrics,
            }),
        }
    }

    /// A proxy whose node could not be read as a registration request.
    pub fn refused(&self) {
        self.inner.metrics.autoreg_errors.inc();
    }

    /// Registers a connecting proxy (or finds the WorkloadEntry from the
    /// config that is it): the entry it is to be served as, kept until the
    /// returned connection is dropped and the grace period has passed.
    pub fn connect(
        &self,
        node_id: &str,
        req: Request,
        claims: Option<&Claims>,
    ) -> Result<Connection, RegisterError> {
        let result = self.register(node_id, req, claims);
        if result.is_err() {
            self.refused();
        }
        result
    }

    fn register(
        &self,
        node_id: &str,
        req: Request,
        claims: Option<&Claims>,
    ) -> Result<Connection, RegisterError> {
        let config = Arc::clone(&self.inner.source.borrow());
        let snapshot = &config.snapshot;
        let group_name = format!("{}/{}", req.namespace, req.group);
        let Some((_, group)) = model::group(snapshot, &req) else {
            return Err(RegisterError::NoGroup {
                proxy: node_id.to_string(),
                group: group_name,
            });
        };
        if let Some(user) = model::user_entry(snapshot, &req) {
            // istiod: an existing entry is the proxy's when its identity fits.
            let key = WorkloadKey {
                namespace: user.namespace.clone(),
                name: user.name.clone(),
            };
            let sa = match &user.spec {
                Spec::WorkloadEntry(WorkloadEntrySpec {
                    service_account, ..
                }) => service_account.as_deref().filter(|s| !s.is_empty()),
                _ => None,
            };
            check_identity(claims, &key, sa)?;
            info!(node = %node_id, workload = %key, group = %group_name, "proxy registering for a group is the WorkloadEntry from the config with its name or address");
            return Ok(Connection {
                key,
                group: group_name,
                registry: None,
            });
        }
        let key = req.entry_key();
        let sa = model::service_account(group, claims.map(|c| c.service_account.as_str()))
            .map_err(|why| RegisterError::Identity {
                entry: key.clone(),
                credential: describe(claims),
                why: why.to_string(),
            })?;
        check_identity(claims, &key, sa.as_deref())?;
        let now = Timestamp::now();
        {
            let mut st = lock(&self.inner.state);
            st.expires.remove(&key);
            let counter = match st.registrations.contains_key(&key) {
                true => &self.inner.metrics.autoreg_updates,
                false => &self.inner.metrics.autoreg_success,
            };
            counter.inc();
            let reg = st
                .registrations
                .entry(key.clone())
                .or_insert_with(|| Registration {
                    request: req.clone(),
                    service_account: None,
                    connections: 0,
                    connected_at: now,
                    disconnected_at: None,
                });
            reg.request = req;
            reg.service_account = claims.map(|c| c.service_account.clone());
            reg.connections += 1;
            reg.connected_at = now;
            reg.disconnected_at = None;
            st.generation += 1;
        }
        info!(node = %node_id, workload = %key, group = %group_name, "workload auto-registered");
        self.inner.changed.notify_one();
        Ok(Connection {
            key,
            group: group_name,
            registry: Some(self.clone()),
        })
    }

    fn disconnect(&self, key: &WorkloadKey) {
        {
            let mut st = lock(&self.inner.state);
            let Some(reg) = st.registrations.get_mut(key) else {
                return;
            };
            reg.connections = reg.connections.saturating_sub(1);
            if reg.connections > 0 {
                return; // another stream still holds it
            }
            reg.disconnected_at = Some(Timestamp::now());
            st.expires
                .insert(key.clone(), Instant::now() + self.inner.grace);
            st.generation += 1;
        }
        self.inner.metrics.autoreg_unregister.inc();
        info!(workload = %key, grace = ?self.inner.grace, "auto-registered workload disconnected; its entry goes after the grace period unless it reconnects");
        self.inner.changed.notify_one();
    }

    /// Deletes the entries whose grace period ended; the next deadline.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut st = lock(&self.inner.state);
        let due: Vec<WorkloadKey> = st
            .expires
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            st.expires.remove(k);
            st.registrations.remove(k);
            self.inner.metrics.autoreg_deletes.inc();
            info!(workload = %k, "auto-registered WorkloadEntry deleted: its proxy did not reconnect within the grace period");
        }
        if !due.is_empty() {
            st.generation += 1;
        }
        st.expires.values().min().copied()
    }

    /// Every registration and what became of it (for /debug).
    pub fn debug(&self) -> Vec<DebugEntry> {
        let st = lock(&self.inner.state);
        let now = Instant::now();
        st.registrations
            .iter()
            .map(|(key, reg)| DebugEntry {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                group: reg.request.group.clone(),
                address: reg.request.ip.clone(),
                connections: reg.connections,
                connected_at: reg.connected_at.to_string(),
                disconnected_at: reg.disconnected_at.map(|t| t.to_string()),
                deleted_in_seconds: st
                    .expires
                    .get(key)
                    .map(|at| at.saturating_duration_since(now).as_secs_f64()),
                in_force: st.merged.entries.contains_key(key),
                skipped: st.merged.skipped.get(key).map(|s| s.to_string()),
                entry: st.merged.entries.get(key).and_then(|r| match &r.spec {
                    Spec::WorkloadEntry(s) => Some(EntryView {
                        spec: s.clone(),
                        annotations: r.annotations.clone(),
                    }),
                    _ => None,
                }),
            })
            .collect()
    }
}

/// One registration at `/debug/autoregistration`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DebugEntry {
    pub namespace: String,
    pub name: String,
    pub group: String,
    pub address: String,
    /// Open ADS streams.
    pub connections: u32,
    pub connected_at: String,
    pub disconnected_at: Option<String>,
    /// Time left in the grace period, once disconnected.
    pub deleted_in_seconds: Option<f64>,
    /// Whether the entry is in the model (see `skipped` when not).
    pub in_force: bool,
    pub skipped: Option<String>,
    /// The WorkloadEntry as the model has it.
    pub entry: Option<EntryView>,
}

#[derive(Debug, Serialize)]
pub struct EntryView {
    pub spec: WorkloadEntrySpec,
    pub annotations: BTreeMap<String, String>,
}

/// Publishes the source's config state with the registered entries added,
/// on every change of either, and deletes entries whose grace period
/// ended. Runs until the source closes.
pub async fn run(registry: AutoRegistry, out: watch::Sender<Arc<ConfigState>>) {
    let mut source = registry.inner.source.clone();
    // The source state and generation last published: a new source state
    // is recognised by identity, not version (a reload that only changes
    // errors keeps the version).
    let mut last: Option<(Arc<ConfigState>, u64)> = None;
    loop {
        let notified = registry.inner.changed.notified();
        let next = registry.expire(Instant::now());
        let src = Arc::clone(&source.borrow_and_update());
        let (generation, registrations) = {
            let st = lock(&registry.inner.state);
            (st.generation, st.registrations.clone())
        };
        let unchanged = last
            .as_ref()
            .is_some_and(|(s, g)| Arc::ptr_eq(s, &src) && *g == generation);
        if !unchanged {
            let merged = model::merge(&src.snapshot, &registrations);
            for (key, why) in &merged.skipped {
                let before = lock(&registry.inner.state).merged.skipped.get(key).cloned();
                if before.as_ref() != Some(why) {
                    warn!(workload = %key, reason = %why, "auto-registered workload has no WorkloadEntry");
                }
            }
            let state = if generation == 0 {
                Arc::clone(&src)
            } else {
                Arc::new(ConfigState {
                    version: src.version + generation,
                    snapshot: model::with_entries(&src.snapshot, &merged.entries),
                    errors: src.errors.clone(),
                    warnings: src.warnings.clone(),
                    files: src.files,
                    changed_at: match &last {
                        Some((s, _)) if Arc::ptr_eq(s, &src) => Some(Instant::now()),
                        _ => src.changed_at,
                    },
                })
            };
            lock(&registry.inner.state).merged = Arc::new(merged);
            out.send_replace(state);
            last = Some((src, generation));
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = source.changed() => if changed.is_err() { return },
            _ = notified => {}
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests;
