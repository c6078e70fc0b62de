//! An in-process stand-in for the Kubernetes API server, for tests: no API
//! server runs on the machines this is built on. It speaks the parts of the
//! API a list/watch client uses, over plain HTTP, so the real `kube` client
//! (in the test process or in a `pilotfish` child process, through a
//! kubeconfig the test writes) talks to it as it would to a cluster:
//!
//! * `GET` lists (`/api/v1/pods`, `/apis/GROUP/VERSION/namespaces/NS/PLURAL`)
//!   with the store's `resourceVersion`, and single objects;
//! * `?watch=1` streams of newline-delimited watch events (ADDED, MODIFIED,
//!   DELETED) resuming after the requested `resourceVersion`; BOOKMARK
//!   events on request when the client allows them (`allowWatchBookmarks`);
//!   an `ERROR` event with a `410 Gone` Status for a resourceVersion older
//!   than the last compaction (and on open streams by [`FakeApi::expire`]);
//! * dropped connections ([`FakeApi::drop_watches`] aborts every open stream);
//! * `404 Not Found` for kinds that are not installed ([`FakeApi::uninstall`]);
//! * `POST` (create: `409 AlreadyExists` if it exists) and `PUT` (replace:
//!   `409 Conflict` unless the body's `metadata.resourceVersion` is the
//!   stored one), as Lease-based leader election uses them;
//! * `PATCH` with a JSON merge patch (RFC 7386,
//!   `application/merge-patch+json`) of an object or of its `/status`
//!   subresource (then only `status` changes, `metadata.generation` stays);
//!   a `metadata.resourceVersion` in the patch is a precondition (`409`);
//!   `/status` requests are recorded ([`FakeApi::status_patches`]) and
//!   successful patches count as writes per client;
//! * `metadata.generation`, bumped when `spec` changes (as for CRDs);
//! * a dry-run create (`?dryRun=All`) goes through the stored
//!   ValidatingWebhookConfigurations as the API server's admission does:
//!   each matching webhook gets an AdmissionReview over TLS verified with
//!   its `caBundle` for `SERVICE.NAMESPACE.svc` (reached at the address
//!   [`FakeApi::route_service`] gives it), a denial is answered with the
//!   API server's "admission webhook ... denied the request" error, an
//!   unreachable webhook fails or is ignored by its `failurePolicy`; the
//!   object is never stored;
//! * a client cut off by its bearer token ([`FakeApi::block_token`]: every
//!   request gets 503, a replica partitioned from the API server).
//!
//! Objects are JSON; the store does not validate them, so a test can serve a
//! malformed one, as a broken admission chain or an older schema would.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// A kind the fake serves: group ("" for core), version, kind, plural, namespaced.
#[derive(Clone, Copy, Debug)]
pub struct ApiKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl ApiKind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as kubectl names resources.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The kinds the Kubernetes source watches.
pub const KINDS: &[ApiKind] = &[
    ApiKind {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
    ApiKind {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
    },
    ApiKind {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        namespaced: true,
    },
    ApiKind {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        namespaced: true,
    },
    ApiKind {
        group: "networking.istio.io",
        version: "v1",
        kind: "VirtualService",
        plural: "virtualservices",
        namespaced: true,
    },
    ApiKind {
        group: "networking.istio.io",
        version: "v1",
        kind: "DestinationRule",
        plural: "destinationrules",
        namespaced: true,
    },
    ApiKind {
        group: "networking.istio.io",
        version: "v1",
        kind: "ServiceEntry",
        plural: "serviceentries",
        namespaced: true,
    },
    ApiKind {
        group: "networking.istio.io",
        version: "v1",
        kind: "WorkloadEntry",
        plural: "workloadentries",
        namespaced: true,
    },
    ApiKind {
        group: "security.istio.io",
        version: "v1",
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        namespaced: true,
    },
];

/// Served too, not watched by the Kubernetes source: leader election's.
pub const LEASE: ApiKind = ApiKind {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    namespaced: true,
};

/// Served and stored, not watched by the config source: Secrets (the CA,
/// gateway credentials) and ConfigMaps (the published root).
pub const SECRET: ApiKind = ApiKind {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    namespaced: true,
};
pub const CONFIGMAP: ApiKind = ApiKind {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    namespaced: true,
};
/// Gateways, for credentialName tests (not in KINDS: other tests run
/// with the CRD absent).
pub const GATEWAY: ApiKind = ApiKind {
    group: "networking.istio.io",
    version: "v1",
    kind: "Gateway",
    plural: "gateways",
    namespaced: true,
};

/// The admission webhook's configuration (cluster-scoped), whose caBundle
/// the Lease holder patches.
pub const VALIDATING_WEBHOOK: ApiKind = ApiKind {
    group: "admissionregistration.k8s.io",
    version: "v1",
    kind: "ValidatingWebhookConfiguration",
    plural: "validatingwebhookconfigurations",
    namespaced: false,
};

fn served() -> impl Iterator<Item = &'static ApiKind> {
    KINDS
        .iter()
        .chain([&LEASE, &SECRET, &CONFIGMAP, &GATEWAY, &VALIDATING_WEBHOOK])
}

/// A ServiceAccount token the fake's TokenReview knows.
#[derive(Clone, Debug)]
struct IssuedToken {
    namespace: String,
    service_account: String,
    pod: Option<String>,
    audiences: Vec<String>,
}

fn kind_by_name(kind: &str) -> ApiKind {
    *served()
        .find(|k| k.kind == kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve kind {kind}"))
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    kind: &'static str,
    event: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    objects: HashMap<&'static str, BTreeMap<(String, String), Value>>,
    history: Vec<Change>,
    uninstalled: HashSet<&'static str>,
    failing: HashSet<&'static str>,
    slow: HashMap<&'static str, Duration>,
    lists: HashMap<&'static str, usize>,
    watches: HashMap<&'static str, usize>,
    bookmark_watches: usize,
    blocked_tokens: HashSet<String>,
    /// Successful creates and replaces, per kind.
    writes: HashMap<&'static str, usize>,
    tokens: HashMap<String, IssuedToken>,
    token_reviews: usize,
    /// Writes per (kind, client token): who wrote what.
    writers: HashMap<(&'static str, String), usize>,
    /// Every `/status` PATCH request, answered or not.
    status_patches: Vec<StatusPatch>,
    /// Where a Service's port is reached: (namespace, name, port) -> address.
    services: HashMap<(String, String, u16), String>,
    /// Dry-run creates answered, and how many a webhook denied.
    dry_runs: usize,
    denied: usize,
}

/// One `PATCH .../NAME/status` request as received.
#[derive(Clone, Debug)]
pub struct StatusPatch {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// The client's bearer token.
    pub client: String,
    pub body: Value,
    /// The HTTP status answered.
    pub code: u16,
}

/// What open watch streams are told to do besides delivering changes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Signal {
    None,
    Bookmark,
    Drop,
    Expire,
}

struct Shared {
    store: Mutex<Store>,
    /// The store's resourceVersion after each change.
    changed: watch::Sender<u64>,
    /// (sequence, signal) broadcast to open watch streams.
    signal: watch::Sender<(u64, Signal)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, s: Signal) {
        self.signal.send_modify(|(n, sig)| {
            *n += 1;
            *sig = s;
        });
    }
}

/// The fake API server; it runs on its own thread until dropped.
pub struct FakeApi {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FakeApi {
    /// Starts on `ip`, on a free port.
    pub fn start(ip: &str) -> FakeApi {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 1,
                ..Store::default()
            }),
            changed: watch::channel(1).0,
            signal: watch::channel((0, Signal::None)).0,
        });
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the fake API server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                // Not graceful: open watch streams would hold it for minutes.
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        FakeApi {
            shared,
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        self.kubeconfig_with_token(dir, "fake-token")
    }

    /// A kubeconfig whose user presents `token` (one per simulated client,
    /// to cut one off with [`FakeApi::block_token`]).
    pub fn kubeconfig_with_token(&self, dir: &Path, token: &str) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{token}"));
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: tester\n  user:\n    token: {token}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: default\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn record(&self, store: &mut Store, kind: ApiKind, event: &'static str, object: Value) {
        store.history.push(Change {
            rv: store.rv,
            kind: kind.kind,
            event,
            object,
        });
        self.shared.changed.send_replace(store.rv);
    }

    /// Creates or replaces an object (its `apiVersion` and `kind` say which
    /// kind); returns its new resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        let kind = kind_by_name(object["kind"].as_str().expect("object without kind"));
        let key = object_key(kind, &object);
        let mut store = self.shared.lock();
        store.rv += 1;
        let rv = store.rv;
        let previous = store.objects.get(kind.kind).and_then(|m| m.get(&key));
        let generation = next_generation(previous, &object);
        keep_status(kind, previous, &mut object);
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        meta["generation"] = json!(generation);
        if meta.get("uid").is_none() {
            meta["uid"] = json!(format!("uid-{}-{}-{rv}", key.0, key.1));
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let old = store
            .objects
            .entry(kind.kind)
            .or_default()
            .insert(key, object.clone());
        let event = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.record(&mut store, kind, event, object);
        rv
    }

    /// Deletes an object; false when it did not exist.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let kind = kind_by_name(kind);
        let mut store = self.shared.lock();
        let key = (ns_of(kind, namespace), name.to_string());
        let Some(mut object) = store.objects.entry(kind.kind).or_default().remove(&key) else {
            return false;
        };
        store.rv += 1;
        object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        self.record(&mut store, kind, "DELETED", object);
        true
    }

    /// Deletes an object without a watch event, as if the event had been
    /// compacted away while nobody was watching: only a relist can tell.
    pub fn delete_unseen(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let kind = kind_by_name(kind);
        let mut store = self.shared.lock();
        let key = (ns_of(kind, namespace), name.to_string());
        let gone = store
            .objects
            .entry(kind.kind)
            .or_default()
            .remove(&key)
            .is_some();
        store.rv += 1;
        gone
    }

    /// Compacts history (as etcd does): every open watch gets an ERROR event
    /// with a 410 Gone Status, and resuming from any earlier resourceVersion
    /// gets the same, so clients must relist.
    pub fn expire(&self) {
        {
            let mut store = self.shared.lock();
            store.compacted = store.rv;
            let rv = store.rv;
            store.history.retain(|c| c.rv > rv);
        }
        self.shared.send(Signal::Expire);
    }

    /// Compacts history without touching open watches: only a client that
    /// resumes from an older resourceVersion notices.
    pub fn compact(&self) {
        let mut store = self.shared.lock();
        store.compacted = store.rv;
        let rv = store.rv;
        store.history.retain(|c| c.rv > rv);
    }

    /// Aborts every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        self.shared.send(Signal::Drop);
    }

    /// Sends a BOOKMARK (the current resourceVersion) on every open watch
    /// whose client allows bookmarks.
    pub fn bookmark(&self) {
        self.shared.send(Signal::Bookmark);
    }

    /// Lists of this kind answer 404, as for a CRD that is not installed.
    pub fn uninstall(&self, kind: &str) {
        let kind = kind_by_name(kind);
        self.shared.lock().uninstalled.insert(kind.kind);
    }

    /// While on, lists of this kind fail with 503 (an API server that is
    /// overloaded or restarting).
    pub fn fail_lists(&self, kind: &str, on: bool) {
        let kind = kind_by_name(kind);
        let mut store = self.shared.lock();
        if on {
            store.failing.insert(kind.kind);
        } else {
            store.failing.remove(kind.kind);
        }
    }

    /// Lists of this kind take `delay` to answer (a large list on a busy
    /// server): the window in which a client holds half a relist.
    pub fn slow_lists(&self, kind: &str, delay: Duration) {
        let kind = kind_by_name(kind);
        self.shared.lock().slow.insert(kind.kind, delay);
    }

    /// While on, every request presenting `token` fails with 503 (the
    /// client is cut off from the API server; others are not).
    pub fn block_token(&self, token: &str, on: bool) {
        let mut store = self.shared.lock();
        if on {
            store.blocked_tokens.insert(token.to_string());
        } else {
            store.blocked_tokens.remove(token);
        }
    }

    /// Makes `token` a ServiceAccount token of `namespace/service_account`
    /// (bound to `pod` if given) valid for `audiences`, as the kubelet's
    /// projected tokens are; TokenReview answers for it until revoked.
    pub fn issue_token(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        pod: Option<&str>,
        audiences: &[&str],
    ) {
        self.shared.lock().tokens.insert(
            token.to_string(),
            IssuedToken {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
                pod: pod.map(str::to_string),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
            },
        );
    }

    /// TokenReview no longer authenticates `token` (expired, or its pod deleted).
    pub fn revoke_token(&self, token: &str) {
        self.shared.lock().tokens.remove(token);
    }

    /// TokenReviews answered so far.
    pub fn token_reviews(&self) -> usize {
        self.shared.lock().token_reviews
    }

    /// Successful creates and replaces of `kind` by the client presenting `token`.
    pub fn writes_by(&self, kind: &str, token: &str) -> usize {
        self.shared
            .lock()
            .writers
            .get(&(kind_by_name(kind).kind, token.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Sets an object's `status` as another writer would (a replica that
    /// held the Lease before, a user); returns the new resourceVersion.
    pub fn set_status(&self, kind: &str, namespace: &str, name: &str, status: Value) -> u64 {
        let kind = kind_by_name(kind);
        let mut store = self.shared.lock();
        store.rv += 1;
        let rv = store.rv;
        let key = (ns_of(kind, namespace), name.to_string());
        let object = {
            let o = store
                .objects
                .get_mut(kind.kind)
                .and_then(|m| m.get_mut(&key))
                .unwrap_or_else(|| panic!("no {} {namespace}/{name}", kind.kind));
            o["status"] = status;
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            o.clone()
        };
        self.record(&mut store, kind, "MODIFIED", object);
        rv
    }

    /// Every `/status` PATCH received so far, in order.
    /// Where the fake's admission calls reach Service `namespace/name`'s
    /// `port` (no cluster DNS here): `addr` is `IP:PORT`.
    pub fn route_service(&self, namespace: &str, name: &str, port: u16, addr: &str) {
        self.shared
            .lock()
            .services
            .insert((namespace.into(), name.into(), port), addr.into());
    }

    /// Dry-run creates answered so far, and how many of them a webhook denied.
    pub fn dry_runs(&self) -> (usize, usize) {
        let s = self.shared.lock();
        (s.dry_runs, s.denied)
    }

    pub fn status_patches(&self) -> Vec<StatusPatch> {
        self.shared.lock().status_patches.clone()
    }

    /// Successful creates and replaces of this kind.
    pub fn writes(&self, kind: &str) -> usize {
        self.shared.lock().writes.get(kind).copied().unwrap_or(0)
    }

    pub fn install(&self, kind: &str) {
        let kind = kind_by_name(kind);
        self.shared.lock().uninstalled.remove(kind.kind);
    }

    /// How many list requests this kind has had.
    pub fn lists(&self, kind: &str) -> usize {
        self.shared.lock().lists.get(kind).copied().unwrap_or(0)
    }

    /// How many watch requests this kind has had.
    pub fn watches(&self, kind: &str) -> usize {
        self.shared.lock().watches.get(kind).copied().unwrap_or(0)
    }

    /// Watch requests that asked for bookmarks.
    pub fn bookmark_watches(&self) -> usize {
        self.shared.lock().bookmark_watches
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// An object as stored.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = kind_by_name(kind);
        self.shared
            .lock()
            .objects
            .get(kind.kind)
            .and_then(|m| m.get(&(ns_of(kind, namespace), name.to_string())))
            .cloned()
    }
}

/// Istio's CRDs have a status subresource: writes to the object itself
/// leave `status` as it was (none on create); only `/status` changes it.
fn keep_status(kind: ApiKind, previous: Option<&Value>, object: &mut Value) {
    if !kind.group.ends_with("istio.io") {
        return;
    }
    let Some(o) = object.as_object_mut() else {
        return;
    };
    match previous.and_then(|p| p.get("status")) {
        Some(s) => {
            o.insert("status".into(), s.clone());
        }
        None => {
            o.remove("status");
        }
    }
}

/// `metadata.generation` for a new version of an object: 1 when new, one
/// more when `spec` changed, as the API server counts it for CRDs.
fn next_generation(previous: Option<&Value>, object: &Value) -> u64 {
    match previous {
        None => 1,
        Some(p) => {
            let g = p["metadata"]["generation"].as_u64().unwrap_or(1);
            if p.get("spec") == object.get("spec") {
                g
            } else {
                g + 1
            }
        }
    }
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` deletes,
/// anything else (arrays included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn ns_of(kind: ApiKind, namespace: &str) -> String {
    if kind.namespaced {
        namespace.to_string()
    } else {
        String::new()
    }
}

fn object_key(kind: ApiKind, object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().expect("object without metadata.name");
    let ns = if kind.namespaced {
        meta["namespace"].as_str().unwrap_or("default")
    } else {
        ""
    };
    (ns.to_string(), name.to_string())
}

fn status(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()
    })
}

fn error(code: StatusCode, reason: &str, message: &str) -> Response {
    (code, axum::Json(status(code, reason, message))).into_response()
}

/// The request's kind, namespace (if any) and object name (if any).
fn route(path: &str) -> Option<(ApiKind, Option<String>, Option<String>)> {
    if path.trim_end_matches('/').ends_with("/status") {
        return None;
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let find = |plural: &str| {
        served()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .copied()
    };
    match rest {
        [plural] => Some((find(plural)?, None, None)),
        ["namespaces", name] if group.is_empty() => {
            Some((find("namespaces")?, None, Some(name.to_string())))
        }
        ["namespaces", ns, plural] => Some((find(plural)?, Some(ns.to_string()), None)),
        ["namespaces", ns, plural, name] => {
            Some((find(plural)?, Some(ns.to_string()), Some(name.to_string())))
        }
        [plural, name] => Some((find(plural)?, None, Some(name.to_string()))),
        _ => None,
    }
}

/// A `/status` subresource path: the object's kind, namespace and name.
fn status_route(path: &str) -> Option<(ApiKind, Option<String>, String)> {
    let object = path.trim_end_matches('/').strip_suffix("/status")?;
    match route(object)? {
        (kind, ns, Some(name)) => Some((kind, ns, name)),
        _ => None,
    }
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn without_type(mut o: Value) -> Value {
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if shared.lock().blocked_tokens.contains(token) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this client is cut off by the test",
        );
    }
    if method == Method::POST && uri.path() == "/apis/authentication.k8s.io/v1/tokenreviews" {
        return token_review(&shared, &body);
    }
    if let Some((kind, ns, name)) = status_route(uri.path()) {
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return match method {
            Method::PATCH => {
                patch_object(&shared, kind, ns, name, content_type, &body, token, true)
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the fake API server only patches status",
            ),
        };
    }
    let Some((kind, ns, name)) = route(uri.path()) else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    match method {
        Method::GET => {}
        Method::PATCH if name.is_some() => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let name = name.unwrap_or_default();
            return patch_object(&shared, kind, ns, name, content_type, &body, token, false);
        }
        Method::POST
            if name.is_none() && query(&uri).get("dryRun").map(String::as_str) == Some("All") =>
        {
            return dry_run_create(&shared, kind, ns, &body).await;
        }
        Method::POST if name.is_none() => return write(&shared, kind, ns, None, &body, token),
        Method::PUT if name.is_some() => return write(&shared, kind, ns, name, &body, token),
        _ => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the fake API server reads, creates and replaces",
            );
        }
    }
    let q = query(&uri);
    let watching = matches!(q.get("watch").map(String::as_str), Some("1" | "true"));
    let delay = shared.lock().slow.get(kind.kind).copied();
    if let Some(delay) = delay.filter(|_| !watching) {
        tokio::time::sleep(delay).await;
    }
    let mut store = shared.lock();
    if !watching {
        *store.lists.entry(kind.kind).or_default() += 1;
    }
    if store.uninstalled.contains(kind.kind) {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    if let Some(name) = name {
        let key = (ns.clone().unwrap_or_default(), name.clone());
        return match store.objects.get(kind.kind).and_then(|m| m.get(&key)) {
            Some(o) => axum::Json(o.clone()).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} \"{name}\" not found", kind.resource()),
            ),
        };
    }
    if !watching {
        if store.failing.contains(kind.kind) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the fake API server is failing lists of this kind",
            );
        }
        let items: Vec<Value> = store
            .objects
            .get(kind.kind)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|((o_ns, _), _)| ns.as_ref().is_none_or(|n| n == o_ns))
            .map(|(_, o)| without_type(o.clone()))
            .collect();
        let body = json!({
            "kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": store.rv.to_string()},
            "items": items,
        });
        return axum::Json(body).into_response();
    }
    *store.watches.entry(kind.kind).or_default() += 1;
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("1" | "true")
    );
    if bookmarks {
        store.bookmark_watches += 1;
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(store.rv);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let too_old = from < store.compacted;
    drop(store);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let stream = WatchStream {
        shared: Arc::clone(&shared),
        kind,
        ns,
        pos: from,
        bookmarks,
        tx,
    };
    tokio::spawn(stream.run(too_old, timeout));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap()
}

/// Whether one admission rule covers CREATE of `kind`.
fn rule_covers(rule: &Value, kind: ApiKind) -> bool {
    let has = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == want || v == "*"))
    };
    has("operations", "CREATE") && has("apiGroups", kind.group) && has("resources", kind.plural)
}

/// A dry-run create: admission by every matching validating webhook, as
/// the API server runs it; nothing is stored.
async fn dry_run_create(
    shared: &Arc<Shared>,
    kind: ApiKind,
    ns: Option<String>,
    body: &[u8],
) -> Response {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    if let Some(ns) = &ns {
        object["metadata"]["namespace"] = json!(ns);
    }
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        let prefix = object["metadata"]["generateName"]
            .as_str()
            .unwrap_or_default();
        object["metadata"]["name"] = json!(format!("{prefix}dryrun"));
    }
    // (webhook name, failure policy, address, server name, path, CA PEM)
    let hooks: Vec<(String, String, Option<String>, String, String, String)> = {
        let mut store = shared.lock();
        store.dry_runs += 1;
        let configs: Vec<Value> = store
            .objects
            .get(VALIDATING_WEBHOOK.kind)
            .into_iter()
            .flat_map(|m| m.values().cloned())
            .collect();
        configs
            .iter()
            .flat_map(|c| c["webhooks"].as_array().cloned().unwrap_or_default())
            .filter(|h| {
                h["rules"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| rule_covers(r, kind)))
            })
            .map(|h| {
                let svc = &h["clientConfig"]["service"];
                let (svc_ns, svc_name) = (
                    svc["namespace"].as_str().unwrap_or_default().to_string(),
                    svc["name"].as_str().unwrap_or_default().to_string(),
                );
                let port = svc["port"].as_u64().unwrap_or(443) as u16;
                let ca = h["clientConfig"]["caBundle"]
                    .as_str()
                    .and_then(|b| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.decode(b).ok()
                    })
                    .map(|b| String::from_utf8_lossy(&b).to_string())
                    .unwrap_or_default();
                (
                    h["name"].as_str().unwrap_or_default().to_string(),
                    h["failurePolicy"].as_str().unwrap_or("Fail").to_string(),
                    store
                        .services
                        .get(&(svc_ns.clone(), svc_name.clone(), port))
                        .cloned(),
                    format!("{svc_name}.{svc_ns}.svc"),
                    svc["path"].as_str().unwrap_or("/").to_string(),
                    ca,
                )
            })
            .collect()
    };
    for (name, policy, addr, server_name, path, ca) in hooks {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "dry-run", "dryRun": true, "operation": "CREATE",
                "kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
                "resource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
                "namespace": object["metadata"]["namespace"], "name": object["metadata"]["name"],
                "userInfo": {"username": "system:serviceaccount:istio-system:pilotfish"},
                "object": object,
            }
        });
        let called = match addr {
            None => Err(format!("no route to service {server_name}")),
            Some(addr) => tokio::task::spawn_blocking(move || {
                call_webhook(&addr, &server_name, &path, &ca, &review)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        };
        match called {
            Ok(answer) if answer["response"]["allowed"] == false => {
                shared.lock().denied += 1;
                let why = answer["response"]["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("admission webhook \"{name}\" denied the request: {why}"),
                );
            }
            Ok(_) => {}
            Err(_) if policy == "Ignore" => {}
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &format!("Internal error occurred: failed calling webhook \"{name}\": {e}"),
                );
            }
        }
    }
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

/// POSTs `review` to a webhook at `addr` over TLS, trusting only `ca_pem`
/// and checking the certificate for `server_name`, as the API server does
/// with a webhook's caBundle; the answer's JSON.
pub fn call_webhook(
    addr: &str,
    server_name: &str,
    path: &str,
    ca_pem: &str,
    review: &Value,
) -> Result<Value, String> {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no caBundle to verify the webhook with".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
    let head = format!(
        "POST {path}?timeout=10s HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    tls.write_all(&body).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (_, body) = text.split_once("\r\n\r\n").ok_or(text.clone())?;
    serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))
}

/// `authentication.k8s.io/v1` TokenReview: authenticated for an issued
/// token whose audiences intersect the requested ones (as the API server
/// answers, with the pod in `user.extra`), refused otherwise.
fn token_review(shared: &Shared, body: &[u8]) -> Response {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut store = shared.lock();
    store.token_reviews += 1;
    let status = match store.tokens.get(token) {
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
        Some(t) => {
            let common: Vec<&String> = t.audiences.iter().filter(|a| wanted.contains(a)).collect();
            if !wanted.is_empty() && common.is_empty() {
                json!({"authenticated": false, "error": format!(
                    "invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}",
                    t.audiences, wanted)})
            } else {
                let mut user = json!({
                    "username": format!("system:serviceaccount:{}:{}", t.namespace, t.service_account),
                    "uid": "sa-uid",
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace)],
                });
                if let Some(pod) = &t.pod {
                    user["extra"] = json!({"authentication.kubernetes.io/pod-name": [pod]});
                }
                json!({"authenticated": true, "user": user, "audiences": common})
            }
        }
    };
    let answer = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "metadata": {"creationTimestamp": null},
        "spec": review["spec"], "status": status,
    });
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// `PATCH` of an object, or of its `/status` (`status_only`: only
/// `status` changes), with a JSON merge patch; `metadata.resourceVersion`
/// in the patch must match (if given).
#[allow(clippy::too_many_arguments)]
fn patch_object(
    shared: &Shared,
    kind: ApiKind,
    ns: Option<String>,
    name: String,
    content_type: &str,
    body: &[u8],
    client: &str,
    status_only: bool,
) -> Response {
    let mut store = shared.lock();
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let mut record = StatusPatch {
        kind: kind.kind,
        namespace: ns.clone().unwrap_or_default(),
        name: name.clone(),
        client: client.to_string(),
        body: parsed.as_ref().cloned().unwrap_or(Value::Null),
        code: 0,
    };
    let answer = |store: &mut Store, record: &mut StatusPatch, code: StatusCode, r: Response| {
        record.code = code.as_u16();
        if status_only {
            store.status_patches.push(record.clone());
        }
        if code == StatusCode::OK {
            *store.writes.entry(record.kind).or_default() += 1;
            *store
                .writers
                .entry((record.kind, record.client.clone()))
                .or_default() += 1;
        }
        r
    };
    if content_type != "application/merge-patch+json" {
        let code = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        let e = error(
            code,
            "UnsupportedMediaType",
            "the fake API server takes merge patches",
        );
        return answer(&mut store, &mut record, code, e);
    }
    let patch = match parsed {
        Ok(v) => v,
        Err(e) => {
            let code = StatusCode::BAD_REQUEST;
            let e = error(code, "BadRequest", &e.to_string());
            return answer(&mut store, &mut record, code, e);
        }
    };
    let key = (ns.unwrap_or_default(), name.clone());
    let Some(current) = store
        .objects
        .get(kind.kind)
        .and_then(|m| m.get(&key))
        .cloned()
    else {
        let code = StatusCode::NOT_FOUND;
        let e = error(
            code,
            "NotFound",
            &format!("{} \"{name}\" not found", kind.resource()),
        );
        return answer(&mut store, &mut record, code, e);
    };
    let wanted_rv = &patch["metadata"]["resourceVersion"];
    if !wanted_rv.is_null() && *wanted_rv != current["metadata"]["resourceVersion"] {
        let code = StatusCode::CONFLICT;
        let e = error(
            code,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again",
                kind.resource()
            ),
        );
        return answer(&mut store, &mut record, code, e);
    }
    let mut object = current;
    if !status_only {
        let before = object.clone();
        merge_patch(&mut object, &patch);
        object["metadata"] = before["metadata"].clone();
        object["metadata"]["generation"] = json!(next_generation(Some(&before), &object));
    } else if let Some(status) = patch.get("status") {
        let mut s = object.get("status").cloned().unwrap_or(Value::Null);
        merge_patch(&mut s, status);
        match s {
            Value::Null => {
                object.as_object_mut().map(|o| o.remove("status"));
            }
            s => object["status"] = s,
        }
    }
    store.rv += 1;
    let rv = store.rv;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    store
        .objects
        .entry(kind.kind)
        .or_default()
        .insert(key, object.clone());
    store.history.push(Change {
        rv,
        kind: kind.kind,
        event: "MODIFIED",
        object: object.clone(),
    });
    shared.changed.send_replace(rv);
    let code = StatusCode::OK;
    answer(
        &mut store,
        &mut record,
        code,
        axum::Json(object).into_response(),
    )
}

/// Create (`name` None) or replace, with the API server's conflict rules.
fn write(
    shared: &Shared,
    kind: ApiKind,
    ns: Option<String>,
    name: Option<String>,
    body: &[u8],
    client: &str,
) -> Response {
    let mut object: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let Some(obj_name) = object["metadata"]["name"].as_str().map(str::to_string) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "metadata.name missing",
        );
    };
    if name.as_ref().is_some_and(|n| *n != obj_name) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "name does not match the URL",
        );
    }
    let key = (ns.clone().unwrap_or_default(), obj_name.clone());
    let mut store = shared.lock();
    if store.uninstalled.contains(kind.kind) {
        return error(StatusCode::NOT_FOUND, "NotFound", "kind not installed");
    }
    let old_rv = store
        .objects
        .get(kind.kind)
        .and_then(|m| m.get(&key))
        .map(|o| o["metadata"]["resourceVersion"].clone());
    let conflict = |reason: &str, message: String| error(StatusCode::CONFLICT, reason, &message);
    match (&name, &old_rv) {
        (None, Some(_)) => {
            return conflict(
                "AlreadyExists",
                format!("{} \"{obj_name}\" already exists", kind.resource()),
            );
        }
        (Some(_), None) => {
            return error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} \"{obj_name}\" not found", kind.resource()),
            );
        }
        (Some(_), Some(rv)) if object["metadata"]["resourceVersion"] != *rv => {
            return conflict(
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{obj_name}\": the object has been \
                     modified; please apply your changes to the latest version and try again",
                    kind.resource()
                ),
            );
        }
        _ => {}
    }
    store.rv += 1;
    let rv = store.rv;
    object["apiVersion"] = json!(kind.api_version());
    object["kind"] = json!(kind.kind);
    let previous = store.objects.get(kind.kind).and_then(|m| m.get(&key));
    let generation = next_generation(previous, &object);
    keep_status(kind, previous, &mut object);
    let meta = &mut object["metadata"];
    meta["resourceVersion"] = json!(rv.to_string());
    meta["generation"] = json!(generation);
    if let Some(ns) = &ns {
        meta["namespace"] = json!(ns);
    }
    if meta.get("uid").is_none() {
        meta["uid"] = json!(format!("uid-{}-{}-{rv}", key.0, key.1));
    }
    store
        .objects
        .entry(kind.kind)
        .or_default()
        .insert(key, object.clone());
    *store.writes.entry(kind.kind).or_default() += 1;
    *store
        .writers
        .entry((kind.kind, client.to_string()))
        .or_default() += 1;
    let event = if old_rv.is_some() {
        "MODIFIED"
    } else {
        "ADDED"
    };
    store.history.push(Change {
        rv,
        kind: kind.kind,
        event,
        object: object.clone(),
    });
    shared.changed.send_replace(rv);
    let code = if old_rv.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (code, axum::Json(object)).into_response()
}

struct WatchStream {
    shared: Arc<Shared>,
    kind: ApiKind,
    ns: Option<String>,
    /// The resourceVersion this stream has delivered up to.
    pos: u64,
    bookmarks: bool,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap();
    b.push(b'\n');
    Bytes::from(b)
}

impl WatchStream {
    async fn send(&self, v: Value) -> bool {
        self.tx.send(Ok(line(&v))).await.is_ok()
    }

    async fn gone(&self) {
        let s = status(
            StatusCode::GONE,
            "Expired",
            &format!("too old resource version: {}", self.pos),
        );
        let _ = self.send(json!({"type": "ERROR", "object": s})).await;
    }

    /// Delivers every change after `pos` for this stream's kind and namespace.
    async fn flush(&mut self) -> bool {
        let (changes, rv) = {
            let store = self.shared.lock();
            let changes: Vec<Change> = store
                .history
                .iter()
                .filter(|c| c.rv > self.pos && c.kind == self.kind.kind)
                .filter(|c| {
                    self.ns.as_ref().is_none_or(|n| {
                        c.object["metadata"]["namespace"].as_str() == Some(n.as_str())
                    })
                })
                .cloned()
                .collect();
            (changes, store.rv)
        };
        for c in changes {
            if !self
                .send(json!({"type": c.event, "object": c.object}))
                .await
            {
                return false;
            }
        }
        self.pos = rv;
        true
    }

    async fn run(mut self, too_old: bool, timeout: Duration) {
        if too_old {
            self.gone().await;
            return;
        }
        let mut changed = self.shared.changed.subscribe();
        let mut signal = self.shared.signal.subscribe();
        signal.borrow_and_update();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            if !self.flush().await {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                r = signal.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let sig = signal.borrow_and_update().1;
                    match sig {
                        Signal::Drop => {
                            let _ = self
                                .tx
                                .send(Err(std::io::Error::other("connection dropped by the test")))
                                .await;
                            return;
                        }
                        Signal::Expire => {
                            self.gone().await;
                            return;
                        }
                        Signal::Bookmark if self.bookmarks => {
                            if !self.flush().await {
                                return;
                            }
                            let bm = json!({"type": "BOOKMARK", "object": {
                                "kind": self.kind.kind, "apiVersion": self.kind.api_version(),
                                "metadata": {"resourceVersion": self.pos.to_string()}
                            }});
                            if !self.send(bm).await {
                                return;
                            }
                        }
                        Signal::Bookmark | Signal::None => {}
                    }
                }
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
            }
        }
    }
}
