//! The CA's public root in ConfigMap `istio-ca-root-cert` (key
//! `root-cert.pem`) in every namespace of the mesh, as istiod's namespace
//! controller keeps it, so a workload's bootstrap reads its own namespace's
//! copy with no access to pilotfish's namespace.
//!
//! * The namespaces are those the source sees in the mesh (discovery
//!   selectors apply), minus the Kubernetes system namespaces istiod skips,
//!   plus pilotfish's own (where `bootstrap --kubernetes` reads by default).
//! * Only the Lease holder writes (checked right before each write): a
//!   create when it is missing, an update on the resourceVersion read when
//!   its root differs; nothing when it is right.
//! * A ConfigMap deleted or changed by someone else is restored at once: a
//!   watcher on ConfigMaps of that name (field selector) tells which
//!   namespace to look at again; every namespace is checked again when the
//!   replica becomes the holder and every [`FULL_CHECK`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ::kube::Api;
use ::kube::api::{ObjectMeta, PostParams};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::ca_secret::{ROOT_CONFIGMAP, ROOT_CONFIGMAP_KEY};

/// Namespaces istiod writes no root ConfigMap into (its injector's ignored
/// namespaces): the cluster's own.
pub const SKIPPED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];
/// The label istiod puts on the ConfigMaps it owns.
pub const LABEL: (&str, &str) = ("istio.io/config", "true");
/// Every namespace's copy is read back this often even without events (a
/// missed event, a write that failed).
pub const FULL_CHECK: Duration = Duration::from_secs(60);
/// How soon namespaces whose write failed are tried again.
const RETRY: Duration = Duration::from_secs(1);
/// The field selector of the watcher: that one name, in every namespace.
fn field_selector() -> String {
    format!("metadata.name={ROOT_CONFIGMAP}")
}

/// The namespaces that get a copy: the mesh's, but the skipped ones, and
/// pilotfish's own.
pub fn targets(mesh: &BTreeSet<String>, own: &str) -> BTreeSet<String> {
    mesh.iter()
        .filter(|n| !SKIPPED_NAMESPACES.contains(&n.as_str()))
        .cloned()
        .chain([own.to_string()])
        .collect()
}

/// Whether `cm` holds exactly `roots_pem` (other keys are not ours to
/// keep; istiod writes only this one).
fn holds(cm: &ConfigMap, roots_pem: &str) -> bool {
    cm.data.as_ref().is_some_and(|d| {
        d.len() == 1 && d.get(ROOT_CONFIGMAP_KEY).map(String::as_str) == Some(roots_pem)
    })
}

/// Makes the ConfigMap in `namespace` hold `roots_pem`; Ok(true) when it
/// wrote. Writes nothing unless `leader` says so right before.
async fn ensure(
    client: &::kube::Client,
    namespace: &str,
    roots_pem: &str,
    leader: &watch::Receiver<bool>,
) -> Result<bool, ::kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let current = api.get_opt(ROOT_CONFIGMAP).await?;
    if current.as_ref().is_some_and(|c| holds(c, roots_pem)) || !*leader.borrow() {
        return Ok(false);
    }
    let data = BTreeMap::from([(ROOT_CONFIGMAP_KEY.to_string(), roots_pem.to_string())]);
    let pp = PostParams::default();
    match current {
        Some(mut cm) => {
            cm.data = Some(data);
            cm.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(LABEL.0.into(), LABEL.1.into());
            api.replace(ROOT_CONFIGMAP, &pp, &cm).await?;
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CONFIGMAP.to_string()),
                    namespace: Some(namespace.to_string()),
                    labels: Some(BTreeMap::from([(LABEL.0.into(), LABEL.1.into())])),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            api.create(&pp, &cm).await?;
        }
    }
    Ok(true)
}

/// Keeps `istio-ca-root-cert` equal to the latest `roots` in every namespace
/// [`targets`] names while this replica holds the Lease; never writes
/// otherwise. Runs until `leader` closes.
pub async fn run(
    client: ::kube::Client,
    own_namespace: String,
    mut roots: watch::Receiver<String>,
    mut mesh: watch::Receiver<BTreeSet<String>>,
    mut leader: watch::Receiver<bool>,
) {
    let api: Api<ConfigMap> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&field_selector());
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    // Namespaces whose copy is known right (checked or written).
    let mut right: BTreeSet<String> = BTreeSet::new();
    // Namespaces to look at now.
    let mut due: BTreeSet<String> = BTreeSet::new();
    let mut full_at = tokio::time::Instant::now();
    let mut retry = false;
    let mut roots_pem = roots.borrow_and_update().clone();
    loop {
        let wait = if retry {
            RETRY
        } else {
            full_at.saturating_duration_since(tokio::time::Instant::now())
        };
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() { return }
                right.clear();
            }
            changed = mesh.changed() => if changed.is_err() { return },
            // The CA's bundle changed (a CA Secret was replaced): every copy is stale.
            changed = roots.changed() => {
                if changed.is_err() { return }
                roots_pem = roots.borrow_and_update().clone();
                right.clear();
            }
            ev = events.next() => match ev {
                Some(Ok(Event::Apply(cm) | Event::InitApply(cm))) if !holds(&cm, &roots_pem) => {
                    if let Some(ns) = cm.metadata.namespace {
                        right.remove(&ns);
                    }
                }
                Some(Ok(Event::Delete(cm))) => {
                    if let Some(ns) = cm.metadata.namespace {
                        right.remove(&ns);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => debug!(error = %e, "watching the root ConfigMaps failed; retrying with backoff"),
                None => return,
            },
            _ = tokio::time::sleep(wait) => {}
        }
        if tokio::time::Instant::now() >= full_at {
            right.clear();
            full_at = tokio::time::Instant::now() + FULL_CHECK;
        }
        if !*leader.borrow_and_update() {
            continue;
        }
        let wanted = targets(&mesh.borrow_and_update(), &own_namespace);
        right.retain(|n| wanted.contains(n));
        due.extend(wanted.difference(&right).cloned());
        retry = false;
        let mut wrote = 0usize;
        while let Some(ns) = due.pop_first() {
            match ensure(&client, &ns, &roots_pem, &leader).await {
                Ok(w) => {
                    wrote += usize::from(w);
                    if *leader.borrow() {
                        right.insert(ns);
                    }
                }
                Err(e) => {
                    warn!(namespace = %ns, error = %e, "publishing the root ConfigMap {ROOT_CONFIGMAP} failed; retrying");
                    retry = true;
                }
            }
        }
        if wrote > 0 {
            info!(
                namespaces = wrote,
                "published the root CA in ConfigMap {ROOT_CONFIGMAP} (Lease holder)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mesh_namespace_but_the_systems_own_and_pilotfishs() {
        let mesh: BTreeSet<String> = ["default", "kube-system", "bookinfo", "kube-public"]
            .map(String::from)
            .into();
        assert_eq!(
            targets(&mesh, "istio-system"),
            ["bookinfo", "default", "istio-system"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn only_exactly_the_root_counts_as_right() {
        let cm = |data: &[(&str, &str)]| ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        };
        assert!(holds(&cm(&[("root-cert.pem", "R")]), "R"));
        assert!(!holds(&cm(&[("root-cert.pem", "old")]), "R"));
        assert!(!holds(&cm(&[("root-cert.pem", "R"), ("x", "y")]), "R"));
        assert!(!holds(&ConfigMap::default(), "R"));
    }
}
