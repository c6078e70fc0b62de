//! The watch loop: one kube-runtime watcher per watched type feeding the
//! index, and a `ConfigState` published from it on the channel `serve` uses.
//!
//! Nothing is published until every type has been listed once (an optional
//! CRD that is not installed counts as listed, empty), so proxies never see a
//! half-loaded mesh. A relist (after `410 Gone`, or any watcher restart) is
//! buffered until it is complete and then swapped in at once: objects missing
//! from it are deleted, everything else is an update, never a mass deletion.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, DynamicObject};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::convert::LabelSelector;
use super::index::{Index, Watched, build};
use super::status::{Observed, SeenObjects, observe};
use crate::config::{ConfigError, ConfigState};
use crate::metrics::{ConfigErrorLabel, Metrics};
use crate::model::{ConfigSnapshot, Resource, ResourceKey};

/// How the Kubernetes source runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Changes are gathered for this long after the first one before the
    /// model is rebuilt: a rollout touching many pods becomes one push.
    /// Counted from the first change (not reset by later ones), so a busy
    /// cluster still gets its updates within this bound.
    pub debounce: Duration,
    /// Istio's discovery selectors: only namespaces matching one are in the
    /// mesh. Empty: every namespace.
    pub discovery_selectors: Vec<LabelSelector>,
    /// Where to keep what was last seen of each Istio object (its
    /// generation, resourceVersion and status), for the status writer.
    pub seen: Option<watch::Sender<SeenObjects>>,
    /// Where to keep the names of the namespaces in the mesh (for the root
    /// ConfigMap in each), updated with every build.
    pub namespaces: Option<watch::Sender<std::collections::BTreeSet<String>>>,
}

/// Why a watcher error is worth a line in the log, and how loud.
fn report_error(w: Watched, e: &watcher::Error) {
    match e {
        watcher::Error::WatchError(s) if s.code == 410 => {
            info!(kind = %w, "resourceVersion too old (410 Gone); relisting");
        }
        _ => warn!(kind = %w, error = %e, "watch failed; retrying with backoff"),
    }
}

fn not_installed(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(::kube::Error::Api(s)) if s.code == 404)
}

/// Runs until `tx` has no receivers.
pub async fn run(
    client: Client,
    opts: Options,
    tx: watch::Sender<Arc<ConfigState>>,
    metrics: Metrics,
) {
    let all = Watched::all();
    let mut events = futures_util::stream::select_all(all.iter().map(|&w| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &w.api_resource());
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |ev| (w, ev))
            .boxed()
    }));
    let mut index = Index::default();
    // Objects of a (re)list under way, per type, until its InitDone.
    let mut listing: HashMap<Watched, Vec<DynamicObject>> = HashMap::new();
    let mut listed: HashSet<Watched> = HashSet::new();
    let mut absent: HashSet<Watched> = HashSet::new();
    let mut published = Published {
        version: tx.borrow().version,
        ..Published::default()
    };
    let mut due: Option<Instant> = None;
    info!(
        kinds = all.len(),
        "watching the Kubernetes API; serving nothing until every kind is listed"
    );
    loop {
        let ready = listed.len() == all.len();
        let wake = due.filter(|_| ready);
        tokio::select! {
            next = events.next() => {
                let Some((w, ev)) = next else { return };
                if let (Some(tx), Watched::Istio(kind)) = (&opts.seen, w) {
                    let listed = match &ev {
                        Ok(Event::InitDone) => listing.get(&w).map(Vec::as_slice),
                        Err(e) if not_installed(e) => Some(&[][..]),
                        _ => None,
                    };
                    match (&ev, listed) {
                        (_, Some(objs)) => observe(tx, kind, Observed::Listed(objs)),
                        (Ok(Event::Apply(obj)), _) => observe(tx, kind, Observed::Applied(obj)),
                        (Ok(Event::Delete(obj)), _) => observe(tx, kind, Observed::Deleted(obj)),
                        _ => {}
                    }
                }
                let changed = match ev {
                    Ok(Event::Init) => {
                        if listed.contains(&w) {
                            debug!(kind = %w, "relisting");
                        }
                        listing.insert(w, Vec::new());
                        false
                    }
                    Ok(Event::InitApply(obj)) => {
                        listing.entry(w).or_default().push(obj);
                        false
                    }
                    Ok(Event::InitDone) => {
                        let objs = listing.remove(&w).unwrap_or_default();
                        let n = objs.len();
                        let changed = index.replace(w, objs);
                        if absent.remove(&w) {
                            info!(kind = %w, "CRD is installed now; watching it");
                        }
                        if listed.insert(w) {
                            debug!(kind = %w, objects = n, "listed");
                            if listed.len() == all.len() {
                                // The first complete picture goes out at once.
                                due = Some(Instant::now());
                            }
                        }
                        changed
                    }
                    Ok(Event::Apply(obj)) => index.apply(w, obj),
                    Ok(Event::Delete(obj)) => index.delete(w, &obj),
                    Err(e) if w.optional() && not_installed(&e) => {
                        if absent.insert(w) {
                            warn!(kind = %w, "CRD not installed (404 on list); skipped, checking again with backoff");
                        }
                        listing.remove(&w);
                        if listed.insert(w) && listed.len() == all.len() {
                            due = Some(Instant::now());
                        }
                        // A CRD that went away took its objects with it.
                        index.replace(w, Vec::new())
                    }
                    Err(e) => {
                        report_error(w, &e);
                        false
                    }
                };
                if changed && due.is_none() {
                    due = Some(Instant::now() + opts.debounce);
                }
            }
            _ = sleep_until(wake), if wake.is_some() => {
                due = None;
                let selectors = opts.discovery_selectors.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    let built = build(&index, &selectors);
                    (index, built)
                })
                .await;
                let built;
                (index, built) = match joined {
                    Ok(v) => v,
                    Err(e) => {
                        warn!(error = %e, "building the model from Kubernetes objects failed");
                        return;
                    }
                };
                metrics.config_reloads.inc();
                if let Some(tx) = &opts.namespaces {
                    tx.send_if_modified(|n| {
                        *n != built.namespaces && {
                            *n = built.namespaces.clone();
                            true
                        }
                    });
                }
                if let Some(state) = published.next(built.resources, built.errors, &metrics) {
                    info!(
                        version = state.version,
                        resources = state.snapshot.resources.len(),
                        errors = state.errors.len(),
                        services = index.count(Watched::Service),
                        pods = index.count(Watched::Pod),
                        "config from Kubernetes"
                    );
                    if tx.send(Arc::new(state)).is_err() {
                        return;
                    }
                }
            }
            _ = tx.closed() => return,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// What was last published, to publish only changes.
#[derive(Default)]
struct Published {
    version: u64,
    first_sent: bool,
    resources: std::collections::BTreeMap<ResourceKey, Arc<Resource>>,
    errors: Vec<ConfigError>,
}

impl Published {
    /// The state to publish for a build, if it differs from the last one.
    /// The version moves when resources change (and on the first publish,
    /// which is what tells the translator the config is loaded).
    fn next(
        &mut self,
        resources: std::collections::BTreeMap<ResourceKey, Arc<Resource>>,
        errors: Vec<ConfigError>,
        metrics: &Metrics,
    ) -> Option<ConfigState> {
        let changed = !self.first_sent || resources != self.resources;
        if !changed && errors == self.errors {
            return None;
        }
        for e in errors.iter().filter(|e| !self.errors.contains(e)) {
            warn!(error = %e, "Kubernetes object skipped or partly used");
            metrics
                .config_errors
                .get_or_create(&ConfigErrorLabel {
                    kind: e.kind().to_string(),
                })
                .inc();
        }
        if changed {
            self.version += 1;
        }
        self.first_sent = true;
        self.resources = resources.clone();
        self.errors = errors.clone();
        let snapshot = ConfigSnapshot::new(resources);
        let warnings = crate::config::analyze::serve_warnings(&snapshot)
            .iter()
            .map(|m| m.to_config_error())
            .collect();
        Some(ConfigState {
            version: self.version,
            snapshot,
            errors,
            warnings,
            files: 0,
            // When it is published (the debounce window is not counted).
            changed_at: Some(std::time::Instant::now()),
        })
    }
}
