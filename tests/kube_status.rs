//! Status on Istio objects (`src/kube/status.rs`) against the fake API
//! server (`tests/kube_api`), through the real `kube` client: two replicas,
//! each with its own source, elector and status writer, as `serve
//! --kubernetes` runs them; only the Lease holder writes.

mod kube_api;

use std::sync::Arc;
use std::time::Duration;

use kube_api::FakeApi;
use pilotfish::config::ConfigState;
use pilotfish::kube::leader;
use pilotfish::kube::status::SeenObjects;
use pilotfish::metrics::Metrics;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

struct Replica {
    leader: watch::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A replica whose client presents `identity` as its token, so the fake
/// can tell who wrote what.
async fn replica(api: &FakeApi, dir: &std::path::Path, identity: &str) -> Replica {
    let client = pilotfish::kube::client(Some(&api.kubeconfig_with_token(dir, identity)))
        .await
        .unwrap();
    let (config_tx, config_rx) = watch::channel(Arc::new(ConfigState::default()));
    let (seen_tx, seen_rx) = watch::channel(SeenObjects::new());
    let opts = pilotfish::kube::Options {
        debounce: Duration::from_millis(50),
        seen: Some(seen_tx),
        ..Default::default()
    };
    let elector = leader::Options {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1200),
        retry_period: Duration::from_millis(200),
        ..leader::Options::new("istio-system", identity)
    };
    let (leader_tx, leader_rx) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(pilotfish::kube::run(
            client.clone(),
            opts,
            config_tx,
            Metrics::default(),
        )),
        tokio::spawn(leader::run(client.clone(), elector, leader_tx)),
        tokio::spawn(pilotfish::kube::status::run(
            client,
            config_rx,
            seen_rx,
            leader_rx.clone(),
        )),
    ];
    Replica {
        leader: leader_rx,
        tasks,
    }
}

fn mk_service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}],
                 "clusterIP": "10.96.0.20"}
    })
}

fn mk_vs(name: &str, route: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": [name], "http": [{"route": [route]}]}
    })
}

fn status(api: &FakeApi, name: &str) -> Value {
    api.get("VirtualService", "default", name).unwrap()["status"].clone()
}

/// No status, or an empty one (what clearing every field leaves).
fn blank(status: &Value) -> bool {
    status.is_null() || status.as_object().is_some_and(|o| o.is_empty())
}

fn codes(status: &Value) -> Vec<String> {
    status["validationMessages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    format!(
                        "{} {}",
                        m["level"].as_str().unwrap(),
                        m["type"]["code"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PATCHes to /status by the client presenting `token`: (object, answer).
fn patches_by(api: &FakeApi, token: &str) -> Vec<(String, u16)> {
    api.status_patches()
        .into_iter()
        .filter(|p| p.client == token)
        .map(|p| (p.name, p.code))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_holder_writes_status_for_bad_objects_and_clears_it_when_fixed() {
    let api = FakeApi::start("127.0.0.1");
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    api.apply(mk_service("reviews"));
    api.apply(mk_service("ratings"));
    // Invalid: an unknown field. Valid but wrong: a subset no
    // DestinationRule defines (the analyzers' IST0101). Fine: no status.
    let mut broken = mk_vs("reviews", json!({"destination": {"host": "reviews"}}));
    broken["spec"]["htp"] = json!([]);
    api.apply(broken);
    api.apply(mk_vs(
        "ratings",
        json!({"destination": {"host": "ratings", "subset": "v9"}}),
    ));
    api.apply(mk_vs("clean", json!({"destination": {"host": "reviews"}})));
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&api, dir.path(), "pilotfish-a").await;
    wait_for("a to lead", || *a.leader.borrow()).await;
    let b = replica(&api, dir.path(), "pilotfish-b").await;

    wait_for("reviews' status", || {
        !codes(&status(&api, "reviews")).is_empty()
    })
    .await;
    let s = status(&api, "reviews");
    assert_eq!(codes(&s), ["ERROR IST0106"], "{s:#}");
    assert_eq!(
        s["validationMessages"][0]["documentationUrl"],
        "https://istio.io/latest/docs/reference/config/analysis/ist0106/"
    );
    assert_eq!(s["observedGeneration"], 1, "{s:#}");
    let c = &s["conditions"][0];
    assert_eq!(
        (&c["type"], &c["status"], &c["reason"]),
        (
            &json!("PassedAnalysis"),
            &json!("False"),
            &json!("ErrorsFound")
        ),
        "{s:#}"
    );
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("IST0106 spec.htp: "),
        "{s:#}"
    );
    wait_for("ratings' status", || {
        !codes(&status(&api, "ratings")).is_empty()
    })
    .await;
    let s = status(&api, "ratings");
    assert_eq!(codes(&s), ["ERROR IST0101"], "{s:#}");
    assert!(
        s["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ratings.default.svc.cluster.local+v9"),
        "{s:#}"
    );
    assert!(status(&api, "clean").is_null());

    // Each write came back through the watch, equal: nothing more is
    // written, even when the config changes for another reason.
    let settled = api.status_patches().len();
    api.apply(mk_service("details"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        api.status_patches().len(),
        settled,
        "{:#?}",
        api.status_patches()
    );
    assert_eq!(
        sorted(patches_by(&api, "pilotfish-a")),
        [("ratings".to_string(), 200), ("reviews".to_string(), 200)],
        "one write per bad object"
    );

    // Fixed: the status pilotfish wrote goes.
    api.apply(mk_vs(
        "reviews",
        json!({"destination": {"host": "reviews"}}),
    ));
    wait_for("reviews' status cleared", || {
        blank(&status(&api, "reviews"))
    })
    .await;
    assert_eq!(
        api.get("VirtualService", "default", "reviews").unwrap()["metadata"]["generation"],
        2
    );

    // A status left behind (as by a holder that died before clearing it):
    // the next holder clears it when it takes over; what is right stays.
    api.set_status(
        "VirtualService",
        "default",
        "clean",
        json!({"validationMessages": [{"level": "ERROR", "type": {"code": "IST0106"}}],
               "observedGeneration": 1}),
    );
    let before_b = api.status_patches().len();
    drop(a);
    wait_for("b to lead", || *b.leader.borrow()).await;
    wait_for("clean's stale status cleared", || {
        blank(&status(&api, "clean"))
    })
    .await;
    assert_eq!(
        patches_by(&api, "pilotfish-b"),
        [("clean".to_string(), 200)]
    );
    assert_eq!(api.status_patches().len(), before_b + 1);
    assert_eq!(codes(&status(&api, "ratings")), ["ERROR IST0101"]);
}

fn sorted(mut v: Vec<(String, u16)>) -> Vec<(String, u16)> {
    v.sort();
    v
}

/// A replica that does not hold the Lease writes no status, however wrong
/// the statuses are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_lease_writes_nothing() {
    let api = FakeApi::start("127.0.0.1");
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    let mut broken = mk_vs("reviews", json!({"destination": {"host": "reviews"}}));
    broken["spec"]["htp"] = json!([]);
    api.apply(broken);
    // Someone else holds the Lease, and keeps renewing it.
    let dir = tempfile::tempdir().unwrap();
    let holder = {
        let client = pilotfish::kube::client(Some(&api.kubeconfig_with_token(dir.path(), "other")))
            .await
            .unwrap();
        let (tx, rx) = watch::channel(false);
        let opts = leader::Options {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1200),
            retry_period: Duration::from_millis(200),
            ..leader::Options::new("istio-system", "other")
        };
        let task = tokio::spawn(leader::run(client, opts, tx));
        wait_for("the other to lead", || *rx.borrow()).await;
        (task, rx)
    };
    let follower = replica(&api, dir.path(), "pilotfish-b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!*follower.leader.borrow());
    assert!(*holder.1.borrow());
    assert!(
        api.status_patches().is_empty(),
        "{:#?}",
        api.status_patches()
    );
    assert!(status(&api, "reviews").is_null());
    holder.0.abort();
}
