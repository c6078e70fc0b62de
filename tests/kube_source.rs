//! The Kubernetes source against the in-process fake API server
//! (`tests/kube_api`), through the real `kube` client over HTTP: what the
//! API server holds becomes the model, changes follow, and the hard cases
//! (410 Gone, dropped connections, bookmarks, malformed objects, CRDs that
//! are not installed, an API server failing lists at start) never publish
//! a partial state.

mod kube_api;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_api::FakeApi;
use pilotfish::config::ConfigState;
use pilotfish::kube::Options;
use pilotfish::metrics::Metrics;
use pilotfish::model::{Kind, Registry, WorkloadKey};
use serde_json::{Value, json};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

fn mk_namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn mk_service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}],
                 "clusterIP": "10.96.0.20"}
    })
}

fn mk_pod(name: &str, app: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"app": app, "version": name.split('-').nth(1).unwrap_or("v1")}},
        "spec": {"serviceAccountName": format!("bookinfo-{app}"), "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

/// The EndpointSlice of `service`: (pod, ip, ready).
fn mk_slice(service: &str, endpoints: &[(&str, &str, bool)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abcde"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|(pod, ip, ready)| json!({
            "addresses": [ip], "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}
        })).collect::<Vec<_>>()
    })
}

fn mk_vs(name: &str, subset: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": [name], "http": [{"route": [{"destination": {"host": name, "subset": subset}}]}]}
    })
}

/// The bookinfo-ish seed: reviews (v1, v2 ready), ratings (v1), a
/// VirtualService, a DestinationRule and a mesh-wide PeerAuthentication.
fn seed(fake: &FakeApi) {
    fake.apply(mk_namespace("default"));
    fake.apply(mk_namespace("istio-system"));
    fake.apply(mk_service("reviews"));
    fake.apply(mk_service("ratings"));
    fake.apply(mk_pod("reviews-v1-a", "reviews", "10.0.0.1"));
    fake.apply(mk_pod("reviews-v2-b", "reviews", "10.0.0.2"));
    fake.apply(mk_pod("ratings-v1-c", "ratings", "10.0.0.3"));
    fake.apply(mk_slice(
        "reviews",
        &[
            ("reviews-v1-a", "10.0.0.1", true),
            ("reviews-v2-b", "10.0.0.2", true),
        ],
    ));
    fake.apply(mk_slice("ratings", &[("ratings-v1-c", "10.0.0.3", true)]));
    fake.apply(mk_vs("reviews", "v1"));
    fake.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"host": "reviews", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}
    }));
    fake.apply(json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "istio-system"},
        "spec": {"mtls": {"mode": "STRICT"}}
    }));
}

/// The source running against a fake API server, and every state it published.
struct Source {
    fake: FakeApi,
    rx: watch::Receiver<Arc<ConfigState>>,
    states: Arc<Mutex<Vec<Arc<ConfigState>>>>,
    _dir: tempfile::TempDir,
}

async fn start(fake: FakeApi) -> Source {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let client = pilotfish::kube::client(Some(&kubeconfig))
        .await
        .expect("client");
    let (tx, rx) = watch::channel(Arc::new(ConfigState::default()));
    let states = Arc::new(Mutex::new(Vec::new()));
    let mut sub = tx.subscribe();
    let seen = Arc::clone(&states);
    tokio::spawn(async move {
        while sub.changed().await.is_ok() {
            let s = Arc::clone(&sub.borrow_and_update());
            seen.lock().unwrap().push(s);
        }
    });
    let opts = Options {
        debounce: Duration::from_millis(50),
        ..Options::default()
    };
    tokio::spawn(pilotfish::kube::run(client, opts, tx, Metrics::default()));
    Source {
        fake,
        rx,
        states,
        _dir: dir,
    }
}

impl Source {
    /// Waits until the latest state satisfies `f`.
    async fn wait(
        &self,
        what: &str,
        f: impl Fn(&ConfigState, &Registry) -> bool,
    ) -> Arc<ConfigState> {
        let start = Instant::now();
        loop {
            let s = Arc::clone(&self.rx.borrow());
            if s.version > 0 && f(&s, &Registry::build(&s.snapshot)) {
                return s;
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out waiting for {what}; latest state: version {}, {:?}, errors {:?}",
                s.version,
                names(&s),
                s.errors
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn published(&self) -> Vec<Arc<ConfigState>> {
        self.states.lock().unwrap().clone()
    }
}

/// `Kind ns/name` of every resource.
fn names(s: &ConfigState) -> Vec<String> {
    s.snapshot.resources.keys().map(|k| k.to_string()).collect()
}

fn has(s: &ConfigState, kind: Kind, ns: &str, name: &str) -> bool {
    s.snapshot
        .resources
        .keys()
        .any(|k| k.kind == kind && k.namespace == ns && k.name == name)
}

fn wk(name: &str) -> WorkloadKey {
    WorkloadKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn endpoints(reg: &Registry, host: &str) -> Vec<String> {
    reg.services
        .get(host)
        .map(|s| s.endpoints.iter().map(|e| e.address.clone()).collect())
        .unwrap_or_default()
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// Everything the seed defines, as the translator will see it.
fn seeded(s: &ConfigState, reg: &Registry) -> bool {
    has(s, Kind::VirtualService, "default", "reviews")
        && has(s, Kind::DestinationRule, "default", "reviews")
        && has(s, Kind::PeerAuthentication, "istio-system", "default")
        && reg
            .services
            .contains_key("ratings.default.svc.cluster.local")
        && endpoints(reg, REVIEWS) == ["10.0.0.1", "10.0.0.2"]
        && reg.workloads.contains_key(&wk("ratings-v1-c"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_until_every_kind_is_listed_and_missing_crds_are_skipped() {
    let fake = FakeApi::start("127.0.0.1");
    seed(&fake);
    fake.uninstall("WorkloadEntry");
    fake.fail_lists("Pod", true);
    let src = start(fake).await;

    // Pods cannot be listed: no state at all, however long that lasts.
    let start = Instant::now();
    while src.fake.lists("Pod") < 2 {
        assert!(start.elapsed() < WAIT, "pods never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        src.published().is_empty(),
        "published before pods were listed"
    );
    assert_eq!(src.rx.borrow().version, 0);

    src.fake.fail_lists("Pod", false);
    let first = src.wait("the first state", seeded).await;
    let published = src.published();
    assert_eq!(published.len(), 1, "one complete first state");
    assert_eq!(first.version, 1);
    assert!(
        src.fake.lists("WorkloadEntry") >= 1,
        "the missing CRD was tried"
    );
    let reg = Registry::build(&first.snapshot);
    let w = &reg.workloads[&wk("reviews-v1-a")];
    assert_eq!(w.service_account.as_deref(), Some("bookinfo-reviews"));
    assert_eq!(w.labels["version"], "v1");

    // Installed later, the CRD is picked up (the watcher keeps trying).
    src.fake.install("WorkloadEntry");
    src.fake.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
        "metadata": {"name": "vm-1", "namespace": "default"},
        "spec": {"address": "192.168.0.7", "labels": {"app": "reviews", "version": "v3"}}
    }));
    src.wait("the WorkloadEntry as a reviews endpoint", |_, reg| {
        endpoints(reg, REVIEWS).contains(&"192.168.0.7".to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_changing_and_deleting_objects_changes_the_model() {
    let fake = FakeApi::start("127.0.0.1");
    seed(&fake);
    let src = start(fake).await;
    src.wait("the seed", seeded).await;

    // A new pod, and its slice entry ready: a new endpoint.
    src.fake
        .apply(mk_pod("reviews-v3-d", "reviews", "10.0.0.4"));
    src.fake.apply(mk_slice(
        "reviews",
        &[
            ("reviews-v1-a", "10.0.0.1", true),
            ("reviews-v2-b", "10.0.0.2", true),
            ("reviews-v3-d", "10.0.0.4", true),
        ],
    ));
    src.wait("reviews-v3 serving", |_, reg| {
        endpoints(reg, REVIEWS) == ["10.0.0.1", "10.0.0.2", "10.0.0.4"]
    })
    .await;

    // v1 fails its readiness probe: out of the endpoints, still a workload
    // with its inbound port.
    src.fake.apply(mk_slice(
        "reviews",
        &[
            ("reviews-v1-a", "10.0.0.1", false),
            ("reviews-v2-b", "10.0.0.2", true),
            ("reviews-v3-d", "10.0.0.4", true),
        ],
    ));
    let s = src
        .wait("reviews-v1 not ready", |_, reg| {
            endpoints(reg, REVIEWS) == ["10.0.0.2", "10.0.0.4"]
        })
        .await;
    let reg = Registry::build(&s.snapshot);
    let v1 = &reg.workloads[&wk("reviews-v1-a")];
    assert_eq!(reg.services_of(v1).count(), 1);

    // A routing change.
    src.fake.apply(mk_vs("reviews", "v2"));
    src.wait("the VirtualService routing to v2", |s, _| {
        s.snapshot
            .virtual_services()
            .any(|(_, vs)| vs.http[0].route[0].destination.subset.as_deref() == Some("v2"))
    })
    .await;

    // Deletions.
    src.fake.delete("Pod", "default", "reviews-v2-b");
    src.wait("reviews-v2's workload gone", |_, reg| {
        !reg.workloads.contains_key(&wk("reviews-v2-b"))
    })
    .await;
    src.fake.delete("Service", "default", "ratings");
    src.fake.delete("VirtualService", "default", "reviews");
    let s = src
        .wait("ratings and the VirtualService gone", |s, reg| {
            !reg.services
                .contains_key("ratings.default.svc.cluster.local")
                && !has(s, Kind::VirtualService, "default", "reviews")
        })
        .await;
    assert!(has(&s, Kind::DestinationRule, "default", "reviews"));
    // Versions only ever count up by one: no state went unseen.
    let versions: Vec<u64> = src.published().iter().map(|s| s.version).collect();
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1),
        "{versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_relists_and_swaps_without_an_empty_or_partial_state() {
    let fake = FakeApi::start("127.0.0.1");
    seed(&fake);
    let src = start(fake).await;
    let first = src.wait("the seed", seeded).await;
    let lists_before: Vec<usize> = kube_api::KINDS
        .iter()
        .map(|k| src.fake.lists(k.kind))
        .collect();

    // Deletions whose events are lost to compaction, then every watch is
    // told 410 Gone: only a relist can find out. Pods list slowly, so other
    // kinds' relists are published while the pod relist is under way.
    src.fake.slow_lists("Pod", Duration::from_millis(800));
    assert!(src.fake.delete_unseen("Pod", "default", "reviews-v2-b"));
    assert!(
        src.fake
            .delete_unseen("VirtualService", "default", "reviews")
    );
    src.fake.expire();
    let start = Instant::now();
    while kube_api::KINDS
        .iter()
        .zip(&lists_before)
        .any(|(k, before)| src.fake.lists(k.kind) <= *before)
    {
        assert!(start.elapsed() < WAIT, "not every kind was relisted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let last = src
        .wait("the relisted state", |s, reg| {
            !reg.workloads.contains_key(&wk("reviews-v2-b"))
                && !has(s, Kind::VirtualService, "default", "reviews")
        })
        .await;
    // Whatever the relists published has arrived.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every state published, the intermediate ones included, has everything
    // that never went away: the relist replaced, it did not empty and refill.
    let published = src.published();
    let versions: Vec<u64> = published.iter().map(|s| s.version).collect();
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1),
        "{versions:?}"
    );
    for s in &published {
        let reg = Registry::build(&s.snapshot);
        assert!(
            has(s, Kind::DestinationRule, "default", "reviews")
                && has(s, Kind::PeerAuthentication, "istio-system", "default")
                && reg.services.contains_key(REVIEWS)
                && reg
                    .services
                    .contains_key("ratings.default.svc.cluster.local")
                && reg.workloads.contains_key(&wk("reviews-v1-a"))
                && reg.workloads.contains_key(&wk("ratings-v1-c")),
            "version {} is missing objects that were never deleted: {:?}",
            s.version,
            names(s)
        );
    }
    assert_eq!(
        last.snapshot.resources.len(),
        first.snapshot.resources.len() - 2,
        "exactly the two deleted objects went away"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_resume_from_the_last_resource_version_without_relisting() {
    let fake = FakeApi::start("127.0.0.1");
    seed(&fake);
    let src = start(fake).await;
    src.wait("the seed", seeded).await;
    let lists = src.fake.lists("Pod");
    let watches = src.fake.watches("Pod");

    src.fake.drop_watches();
    src.fake
        .apply(mk_pod("reviews-v3-d", "reviews", "10.0.0.4"));
    src.wait("the pod created across the reconnect", |_, reg| {
        reg.workloads.contains_key(&wk("reviews-v3-d"))
    })
    .await;
    assert!(src.fake.watches("Pod") > watches, "the watch was reopened");
    assert_eq!(
        src.fake.lists("Pod"),
        lists,
        "no relist after a dropped connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_keep_quiet_watches_resumable_after_compaction() {
    let fake = FakeApi::start("127.0.0.1");
    seed(&fake);
    let src = start(fake).await;
    src.wait("the seed", seeded).await;
    assert!(
        src.fake.bookmark_watches() > 0,
        "the client asks for bookmarks"
    );

    // Services change, pods do not: the pod watch's resourceVersion falls
    // behind until a bookmark moves it on.
    let churn = |n: usize| {
        for i in 0..n {
            src.fake.apply(mk_service(&format!("churn-{i}")));
        }
    };
    churn(3);
    src.wait("the churn", |_, reg| {
        reg.services
            .contains_key("churn-2.default.svc.cluster.local")
    })
    .await;
    let pod_lists = src.fake.lists("Pod");
    src.fake.bookmark();
    tokio::time::sleep(Duration::from_millis(500)).await;
    src.fake.compact();
    src.fake.drop_watches();
    src.fake
        .apply(mk_pod("reviews-v3-d", "reviews", "10.0.0.4"));
    src.wait("the new pod", |_, reg| {
        reg.workloads.contains_key(&wk("reviews-v3-d"))
    })
    .await;
    assert_eq!(
        src.fake.lists("Pod"),
        pod_lists,
        "after a bookmark, resuming from a compacted history needs no relist"
    );

    // The same without a bookmark: the pod watch is behind and must relist.
    churn(6);
    src.wait("more churn", |_, reg| {
        reg.services
            .contains_key("churn-5.default.svc.cluster.local")
    })
    .await;
    src.fake.compact();
    src.fake.drop_watches();
    src.fake
        .apply(mk_pod("reviews-v4-e", "reviews", "10.0.0.5"));
    src.wait("the second new pod", |_, reg| {
        reg.workloads.contains_key(&wk("reviews-v4-e"))
    })
    .await;
    assert!(
        src.fake.lists("Pod") > pod_lists,
        "without a bookmark, a relist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_objects_are_skipped_with_an_error_and_the_watch_goes_on() {
    let fake = FakeApi::start("127.0.0.1");
    seed(&fake);
    let mut bad_svc = mk_service("details");
    bad_svc["spec"]["ports"] = json!("nine thousand and eighty");
    fake.apply(bad_svc);
    let mut bad_vs = mk_vs("ratings", "v1");
    bad_vs["spec"]["htp"] = json!([]);
    fake.apply(bad_vs);
    let src = start(fake).await;

    let s = src.wait("the seed", seeded).await;
    let errors: Vec<(Option<&str>, Option<&str>)> = s
        .errors
        .iter()
        .map(|e| (e.resource.as_deref(), e.path.as_deref()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (Some("Service default/details"), Some("spec.ports")),
            (Some("VirtualService default/ratings"), Some("spec.htp")),
        ],
        "{:#?}",
        s.errors
    );
    assert!(s.errors[1].message.contains("htp"), "{}", s.errors[1]);
    assert!(!has(&s, Kind::VirtualService, "default", "ratings"));

    // A malformed update of a good object: reported, the last good version stays.
    let mut broken = mk_vs("reviews", "v2");
    broken["spec"]["http"][0]["route"][0]["weight"] = json!("heavy");
    src.fake.apply(broken);
    let s = src
        .wait("the broken update reported", |s, _| {
            s.errors
                .iter()
                .any(|e| e.resource.as_deref() == Some("VirtualService default/reviews"))
        })
        .await;
    assert!(
        s.snapshot
            .virtual_services()
            .any(|(r, vs)| r.name == "reviews"
                && vs.http[0].route[0].destination.subset.as_deref() == Some("v1"))
    );

    // The watch goes on: fixes and new objects arrive.
    src.fake.apply(mk_service("details"));
    src.fake
        .apply(mk_pod("reviews-v3-d", "reviews", "10.0.0.4"));
    let s = src
        .wait("the fixed Service and a new pod", |_, reg| {
            reg.services
                .contains_key("details.default.svc.cluster.local")
                && reg.workloads.contains_key(&wk("reviews-v3-d"))
        })
        .await;
    assert!(
        s.errors
            .iter()
            .all(|e| e.resource.as_deref() != Some("Service default/details"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_to_annotation_and_service_precedence_over_a_service_entry() {
    use pilotfish::xds::translate::scope::service_exported;
    let fake = FakeApi::start("127.0.0.1");
    seed(&fake);
    fake.apply(mk_namespace("prod"));
    let mut reviews = mk_service("reviews");
    reviews["metadata"]["annotations"] = json!({"networking.istio.io/exportTo": "."});
    fake.apply(reviews.clone());
    // An older ServiceEntry object claiming the Service's host, first by
    // name too: the Service wins, as in Istio.
    fake.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "a-squatter", "namespace": "default",
                     "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {"hosts": [REVIEWS], "ports": [{"number": 80, "name": "http"}],
                 "resolution": "STATIC", "endpoints": [{"address": "192.0.2.1"}]}
    }));
    let src = start(fake).await;
    let visible = |s: &ConfigState, reg: &Registry, ns: &str| {
        reg.services
            .get(REVIEWS)
            .is_some_and(|svc| service_exported(&s.snapshot, svc, ns))
    };
    let s = src
        .wait("reviews private to default", |s, reg| {
            seeded(s, reg) && visible(s, reg, "default") && !visible(s, reg, "prod")
        })
        .await;
    let reg = Registry::build(&s.snapshot);
    assert_eq!(reg.services[REVIEWS].source, "default/svc:reviews");
    assert!(
        reg.warnings
            .iter()
            .any(|w| w.contains("default/a-squatter") && w.contains("Kubernetes Service")),
        "{:?}",
        reg.warnings
    );

    // Exported to prod, with a bad value warned about and ignored.
    reviews["metadata"]["annotations"] =
        json!({"networking.istio.io/exportTo": "., prod, Not_A_Namespace"});
    src.fake.apply(reviews.clone());
    let s = src
        .wait("reviews exported to prod", |s, reg| visible(s, reg, "prod"))
        .await;
    let e = s
        .errors
        .iter()
        .find(|e| e.resource.as_deref() == Some("Service default/reviews"))
        .expect("the bad value is reported");
    assert_eq!(
        e.path.as_deref(),
        Some("metadata.annotations[networking.istio.io/exportTo]")
    );
    assert!(e.message.contains("Not_A_Namespace"), "{e}");
    assert!(!visible(&s, &Registry::build(&s.snapshot), "istio-system"));
    assert_eq!(
        endpoints(&Registry::build(&s.snapshot), REVIEWS),
        ["10.0.0.1", "10.0.0.2"],
        "the Service still serves its endpoints"
    );

    // The annotation removed: visible everywhere, the report gone.
    reviews["metadata"]["annotations"] = json!({});
    src.fake.apply(reviews);
    src.wait("reviews public again", |s, reg| {
        visible(s, reg, "istio-system")
            && s.errors
                .iter()
                .all(|e| e.resource.as_deref() != Some("Service default/reviews"))
    })
    .await;
}
