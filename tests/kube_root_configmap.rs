//! The root ConfigMap `istio-ca-root-cert` in every namespace
//! (`src/kube/root_configmap.rs`) against the fake API server, through the
//! real `kube` client and the real source (which names the namespaces):
//! nothing written without the Lease; with it, one copy per mesh namespace
//! (not the system ones), restored at once when deleted or changed, and a
//! new namespace gets its own.

mod kube_api;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube_api::FakeApi;
use pilotfish::config::ConfigState;
use pilotfish::kube::root_configmap;
use pilotfish::metrics::Metrics;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);
const CM: &str = "istio-ca-root-cert";

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn root_in(api: &FakeApi, ns: &str) -> Option<String> {
    api.get("ConfigMap", ns, CM)
        .and_then(|c| c["data"]["root-cert.pem"].as_str().map(str::to_string))
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_keeps_the_root_in_every_mesh_namespace() {
    let api = FakeApi::start("127.0.0.1");
    for ns in ["default", "bookinfo", "kube-system", "istio-system"] {
        api.apply(namespace(ns));
    }
    // A stale copy (an older root) in bookinfo.
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CM, "namespace": "bookinfo"},
        "data": {"root-cert.pem": "old root"}}));
    let root = pilotfish::ca::Ca::ephemeral("cluster.local")
        .unwrap()
        .roots_pem();
    let dir = tempfile::tempdir().unwrap();
    let client = pilotfish::kube::client(Some(&api.kubeconfig_with_token(dir.path(), "holder")))
        .await
        .unwrap();
    let (config_tx, _config_rx) = watch::channel(Arc::new(ConfigState::default()));
    let (ns_tx, ns_rx) = watch::channel(BTreeSet::new());
    let opts = pilotfish::kube::Options {
        debounce: Duration::from_millis(50),
        namespaces: Some(ns_tx),
        ..Default::default()
    };
    let source = tokio::spawn(pilotfish::kube::run(
        client.clone(),
        opts,
        config_tx,
        Metrics::default(),
    ));
    let (leader_tx, leader_rx) = watch::channel(false);
    let (roots_tx, roots_rx) = watch::channel(root.clone());
    let publisher = tokio::spawn(root_configmap::run(
        client,
        "istio-system".into(),
        roots_rx,
        ns_rx,
        leader_rx,
    ));

    // Not the holder: nothing written, the stale copy stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.writes_by("ConfigMap", "holder"), 0);
    assert_eq!(root_in(&api, "bookinfo").as_deref(), Some("old root"));

    leader_tx.send_replace(true);
    let mesh = ["default", "bookinfo", "istio-system"];
    wait_for("a copy in every mesh namespace", || {
        mesh.iter()
            .all(|ns| root_in(&api, ns).as_deref() == Some(root.as_str()))
    })
    .await;
    assert_eq!(root_in(&api, "kube-system"), None, "a system namespace");
    let cm = api.get("ConfigMap", "default", CM).unwrap();
    assert_eq!(cm["metadata"]["labels"]["istio.io/config"], "true");
    // Three writes (two creates, one update), then quiet: the copies come
    // back through the watch equal and trigger nothing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(api.writes_by("ConfigMap", "holder"), 3);

    // Deleted or changed behind its back: restored at once (the watch),
    // not at the next full check.
    let t = Instant::now();
    api.delete("ConfigMap", "default", CM);
    let mut changed = api.get("ConfigMap", "bookinfo", CM).unwrap();
    changed["data"]["root-cert.pem"] = json!("tampered");
    api.apply(changed);
    wait_for("both restored", || {
        ["default", "bookinfo"]
            .iter()
            .all(|ns| root_in(&api, ns).as_deref() == Some(root.as_str()))
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(api.writes_by("ConfigMap", "holder"), 5);

    // A new namespace gets its copy.
    api.apply(namespace("late"));
    wait_for("late's copy", || {
        root_in(&api, "late").as_deref() == Some(root.as_str())
    })
    .await;

    // The CA's bundle changes (a CA Secret replaced): every copy follows.
    let both = format!("{root}{root}");
    roots_tx.send_replace(both.clone());
    wait_for("every copy holding the new bundle", || {
        ["default", "bookinfo", "istio-system", "late"]
            .iter()
            .all(|ns| root_in(&api, ns).as_deref() == Some(both.as_str()))
    })
    .await;

    // Leadership lost: a deletion is no longer repaired.
    leader_tx.send_replace(false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes = api.writes_by("ConfigMap", "holder");
    api.delete("ConfigMap", "late", CM);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(root_in(&api, "late"), None);
    assert_eq!(api.writes_by("ConfigMap", "holder"), writes);
    publisher.abort();
    source.abort();
}
