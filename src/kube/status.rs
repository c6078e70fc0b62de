//! Status on the Istio objects pilotfish reads from Kubernetes, in the shape
//! istiod's analysis controller gives it, so `kubectl get vs -o yaml` (and
//! Kiali, `kubectl wait`) shows why an object is not in force:
//!
//! ```yaml
//! status:
//!   observedGeneration: 3
//!   validationMessages:            # istiod's AnalysisMessageBase, one per finding
//!   - documentationUrl: https://istio.io/latest/docs/reference/config/analysis/ist0106/
//!     level: ERROR
//!     type: {code: IST0106}
//!   conditions:
//!   - type: PassedAnalysis          # Istio's documented analysis condition
//!     status: "False"
//!     reason: ErrorsFound
//!     message: '1 error found: IST0106 spec.hosts: ...'
//!     observedGeneration: 3
//!     lastTransitionTime: "..."
//! ```
//!
//! istiod's `validationMessages` carry only the code, level and link; the
//! condition carries what each finding says, which the link cannot.
//!
//! * Findings are validation errors (IST0106, the object's latest version is
//!   not in force) and the analyzers' messages (`config::analyze`), computed
//!   from the published config: [`findings`] and [`plan`] are pure.
//! * Only the Lease holder writes, a JSON merge patch of the `/status`
//!   subresource carrying the resourceVersion it decided on (a concurrent
//!   change wins with `409`, and is looked at again), and only when the
//!   part of the status pilotfish owns differs from what the object carries:
//!   the write comes back through the watch, equal, and triggers nothing.
//! * A valid object carries none of it: what pilotfish wrote is removed
//!   (other writers' conditions stay).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::index::{SOURCE_NAME, Watched};
use crate::config::ConfigState;
use crate::config::analyze::{self, Code, Level};
use crate::model::{Kind, ResourceKey};

/// What the writer does with the `/status` subresource of each watched
/// Istio kind: the RBAC in `manifests/` grants exactly this (tests/manifests.rs).
pub const STATUS_VERBS: [&str; 1] = ["patch"];

/// The condition pilotfish owns (Istio's config-status docs name it).
pub const CONDITION: &str = "PassedAnalysis";
/// Where istiod's status links each code to (lower-case code appended).
pub const DOCS: &str = "https://istio.io/latest/docs/reference/config/analysis";
/// Longest condition message written: Kubernetes allows 32 KiB, a reader
/// wants far less; the full list is in `pilotfish analyze` and the log.
const MAX_MESSAGE: usize = 4096;
/// How often the holder compares every object's status again even when
/// nothing changed (someone else edited a status; a write that failed).
pub const RESYNC: Duration = Duration::from_secs(60);
/// How soon a failed or conflicting write is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// What the source last saw of one Istio object: what deciding on and
/// making a status write needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub generation: Option<i64>,
    pub resource_version: String,
    pub status: Option<Value>,
}

/// Every Istio object the source watches, as last seen.
pub type SeenObjects = BTreeMap<ResourceKey, Seen>;

impl Seen {
    pub fn key(kind: Kind, obj: &DynamicObject) -> ResourceKey {
        ResourceKey {
            kind,
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
        }
    }

    pub fn of(obj: &DynamicObject) -> Seen {
        Seen {
            generation: obj.metadata.generation,
            resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            status: obj.data.get("status").filter(|s| !s.is_null()).cloned(),
        }
    }
}

/// One finding about one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub level: Level,
    pub code: &'static str,
    /// Field path, empty when the finding is about the whole object.
    pub path: String,
    pub message: String,
}

/// Every finding, by object.
pub type Findings = BTreeMap<ResourceKey, Vec<Finding>>;

/// `Kind namespace/name`, as [`crate::config::ConfigError::resource`] names
/// Kubernetes objects.
fn parse_key(resource: &str) -> Option<ResourceKey> {
    let (kind, rest) = resource.split_once(' ')?;
    let (namespace, name) = rest.split_once('/')?;
    Some(ResourceKey {
        kind: Kind::from_name(kind)?,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// Every finding about the Istio objects in `state`: its validation errors
/// (IST0106) and what the analyzers say about the config in force.
pub fn findings(state: &ConfigState) -> Findings {
    let mut out = Findings::new();
    let invalid = Code::SchemaValidationError;
    for e in state.errors.iter().filter(|e| e.file == SOURCE_NAME) {
        if let Some(key) = e.resource.as_deref().and_then(parse_key) {
            out.entry(key).or_default().push(Finding {
                level: invalid.level(),
                code: invalid.id(),
                path: e.path.clone().unwrap_or_default(),
                message: e.message.clone(),
            });
        }
    }
    for m in analyze::analyze(&state.snapshot) {
        if let Some(key) = m.key {
            out.entry(key).or_default().push(Finding {
                level: m.level,
                code: m.code,
                path: m.path,
                message: m.message,
            });
        }
    }
    for f in out.values_mut() {
        f.sort();
        f.dedup();
    }
    out
}

/// istiod's level names (`AnalysisMessageBase.Level`).
fn level_name(l: Level) -> &'static str {
    match l {
        Level::Error => "ERROR",
        Level::Warning => "WARNING",
        Level::Info => "INFO",
    }
}

/// One entry of `validationMessages`, exactly as istiod writes it.
fn validation_message(f: &Finding) -> Value {
    json!({
        "documentationUrl": format!("{DOCS}/{}/", f.code.to_lowercase()),
        "level": level_name(f.level),
        "type": {"code": f.code},
    })
}

fn count(n: usize, what: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{n} {what}{s}")
}

/// The condition's reason and message for a non-empty list of findings.
fn summary(findings: &[Finding]) -> (&'static str, String) {
    let n = |l: Level| findings.iter().filter(|f| f.level == l).count();
    let counts: Vec<String> = [
        (n(Level::Error), "error"),
        (n(Level::Warning), "warning"),
        (n(Level::Info), "info message"),
    ]
    .into_iter()
    .filter(|(c, _)| *c > 0)
    .map(|(c, w)| count(c, w))
    .collect();
    let worst = findings
        .iter()
        .map(|f| f.level)
        .min()
        .unwrap_or(Level::Info);
    let reason = match worst {
        Level::Error => "ErrorsFound",
        Level::Warning => "WarningsFound",
        Level::Info => "InfoFound",
    };
    let items: Vec<String> = findings
        .iter()
        .map(|f| match f.path.as_str() {
            "" => format!("{} {}", f.code, f.message),
            p => format!("{} {p}: {}", f.code, f.message),
        })
        .collect();
    let mut message = format!("{} found: {}", counts.join(" and "), items.join("; "));
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    (reason, message)
}

fn our_condition(status: Option<&Value>) -> Option<&Value> {
    status?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == CONDITION)
}

/// The part of a status pilotfish owns, without timestamps: two statuses
/// with equal views need no write.
fn owned(status: Option<&Value>) -> Value {
    let field = |k: &str| status.and_then(|s| s.get(k)).cloned();
    let condition = our_condition(status).map(|c| {
        let mut c = c.clone();
        if let Some(o) = c.as_object_mut() {
            o.remove("lastTransitionTime");
            o.remove("lastProbeTime");
        }
        c
    });
    json!({
        "validationMessages": field("validationMessages"),
        "observedGeneration": field("observedGeneration"),
        "condition": condition,
    })
}

/// A status write to make: the merge patch, and the owned view it leads to.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub patch: Value,
    owned: Value,
}

/// The write that brings `seen`'s status to what `findings` say (none when
/// it already does). `now` stamps a condition that changes.
pub fn plan(seen: &Seen, findings: &[Finding], now: &str) -> Option<Plan> {
    let current = seen.status.as_ref();
    let others: Vec<Value> = current
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter(|c| c["type"] != CONDITION)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let status = if findings.is_empty() {
        json!({
            "validationMessages": null,
            "observedGeneration": null,
            "conditions": if others.is_empty() { Value::Null } else { Value::Array(others) },
        })
    } else {
        let (reason, message) = summary(findings);
        let since = our_condition(current)
            .filter(|c| c["status"] == "False")
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        let mut condition = json!({
            "type": CONDITION, "status": "False", "reason": reason,
            "message": message, "lastTransitionTime": since,
        });
        if let Some(g) = seen.generation {
            condition["observedGeneration"] = json!(g);
        }
        let mut conditions = others;
        conditions.push(condition);
        json!({
            "validationMessages": findings.iter().map(validation_message).collect::<Vec<_>>(),
            "observedGeneration": seen.generation,
            "conditions": conditions,
        })
    };
    let mut after = current.cloned().unwrap_or_else(|| json!({}));
    merge(&mut after, &status);
    let wanted = owned(Some(&after));
    if wanted == owned(current) {
        return None;
    }
    Some(Plan {
        patch: json!({
            "metadata": {"resourceVersion": seen.resource_version},
            "status": status,
        }),
        owned: wanted,
    })
}

/// RFC 7386 merge of `patch` into `target` (what the API server does).
fn merge(target: &mut Value, patch: &Value) {
    let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
        *target = patch.clone();
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else if v.is_object() {
            merge(t.entry(k.clone()).or_insert_with(|| json!({})), v);
        } else {
            t.insert(k.clone(), v.clone());
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("{0}: changed meanwhile (409 Conflict)")]
    Conflict(ResourceKey),
    #[error("{0}: gone")]
    Gone(ResourceKey),
    #[error("{0}: {1}")]
    Api(ResourceKey, #[source] ::kube::Error),
}

async fn write(
    client: &::kube::Client,
    key: &ResourceKey,
    patch: &Value,
) -> Result<(), WriteError> {
    let ar = Watched::Istio(key.kind).api_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, &ar);
    match api
        .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(::kube::Error::Api(s)) if s.code == 409 => Err(WriteError::Conflict(key.clone())),
        Err(::kube::Error::Api(s)) if s.code == 404 => Err(WriteError::Gone(key.clone())),
        Err(e) => Err(WriteError::Api(key.clone(), e)),
    }
}

/// Keeps the status of every Istio object equal to what the config says
/// about it while this replica holds the Lease (checked right before each
/// write); writes nothing otherwise. Looks again when the config or the
/// leadership changes, every [`RESYNC`], and [`RETRY`] after a failed
/// write. Runs until `config` or `leader` closes.
pub async fn run(
    client: ::kube::Client,
    mut config: watch::Receiver<Arc<ConfigState>>,
    seen: watch::Receiver<SeenObjects>,
    mut leader: watch::Receiver<bool>,
) {
    // Writes made, by object: the resourceVersion they were decided on and
    // the owned view they lead to. Until the watch shows that object
    // changed, the same write is not made again (its echo is on the way).
    let mut written: HashMap<ResourceKey, (String, Value)> = HashMap::new();
    let mut analyzed: Option<(Arc<ConfigState>, Arc<Findings>)> = None;
    let mut retry = false;
    loop {
        let wait = if retry { RETRY } else { RESYNC };
        tokio::select! {
            r = config.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
        if !*leader.borrow_and_update() {
            written.clear();
            retry = false;
            continue;
        }
        let state = Arc::clone(&config.borrow_and_update());
        if state.version == 0 {
            continue;
        }
        let found = match &analyzed {
            Some((s, f)) if Arc::ptr_eq(s, &state) => Arc::clone(f),
            _ => {
                let s = Arc::clone(&state);
                let Ok(f) = tokio::task::spawn_blocking(move || findings(&s)).await else {
                    return;
                };
                let f = Arc::new(f);
                analyzed = Some((state, Arc::clone(&f)));
                f
            }
        };
        let objects = seen.borrow().clone();
        let now = k8s_openapi::jiff::Timestamp::now()
            .round(k8s_openapi::jiff::Unit::Second)
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
            .to_string();
        retry = false;
        let (mut wrote, mut cleared) = (0usize, 0usize);
        for (key, s) in &objects {
            let f = found.get(key).map(Vec::as_slice).unwrap_or_default();
            let Some(p) = plan(s, f, &now) else {
                written.remove(key);
                continue;
            };
            if written
                .get(key)
                .is_some_and(|(rv, o)| *rv == s.resource_version && *o == p.owned)
            {
                continue;
            }
            // Checked right before each write: a replica that lost the
            // Lease stops at once.
            if !*leader.borrow() {
                break;
            }
            match write(&client, key, &p.patch).await {
                Ok(()) => {
                    debug!(resource = %key, findings = f.len(), "status written");
                    if f.is_empty() {
                        cleared += 1;
                    } else {
                        wrote += 1;
                    }
                    written.insert(key.clone(), (s.resource_version.clone(), p.owned));
                }
                Err(WriteError::Gone(_)) => {}
                Err(e @ WriteError::Conflict(_)) => {
                    debug!(error = %e, "status write: looking again");
                    retry = true;
                }
                Err(e) => {
                    warn!(error = %e, "writing status failed; retrying");
                    retry = true;
                }
            }
        }
        written.retain(|k, _| objects.contains_key(k));
        if wrote + cleared > 0 {
            info!(
                written = wrote,
                cleared, "status of Istio objects updated (Lease holder)"
            );
        }
    }
}

/// Keeps `tx` equal to the Istio objects the watchers deliver: called by
/// the source for each event of an Istio kind.
pub(crate) fn observe(tx: &watch::Sender<SeenObjects>, kind: Kind, change: Observed<'_>) {
    tx.send_if_modified(|seen| match change {
        Observed::Applied(obj) => {
            let s = Seen::of(obj);
            let key = Seen::key(kind, obj);
            seen.get(&key) != Some(&s) && {
                seen.insert(key, s);
                true
            }
        }
        Observed::Deleted(obj) => seen.remove(&Seen::key(kind, obj)).is_some(),
        Observed::Listed(objs) => {
            let fresh: SeenObjects = objs
                .iter()
                .map(|o| (Seen::key(kind, o), Seen::of(o)))
                .collect();
            let before = seen.len();
            seen.retain(|k, _| k.kind != kind);
            let changed = before != seen.len() || !fresh.is_empty();
            seen.extend(fresh);
            changed
        }
    });
}

/// One watch event of an Istio kind, for [`observe`].
pub(crate) enum Observed<'a> {
    Applied(&'a DynamicObject),
    Deleted(&'a DynamicObject),
    /// A complete (re)list: every object of the kind.
    Listed(&'a [DynamicObject]),
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
