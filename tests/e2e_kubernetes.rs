//! End-to-end in Kubernetes mode: the fake API server (`tests/kube_api`) in
//! this process, the real `pilotfish serve --kubernetes` against it, and real
//! Envoy sidecars bootstrapped with `pilotfish bootstrap --kubernetes` (the
//! workload is the pod, named by `--workload POD --namespace NS`). Objects
//! created, changed and deleted through the API server change what Envoy
//! receives, seen in traffic and in Envoy's admin API.

mod common;
mod kube_api;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{BOOKINFO, Mesh, next_net, wait_until};
use kube_api::FakeApi;
use serde_json::{Value, json};

const NET_BASE: u8 = 120;

/// The pod of a bookinfo workload: `reviews-v1` runs in pod `reviews-v1-5d8f9`.
fn pod_name(workload: &str) -> String {
    format!("{workload}-5d8f9")
}

fn mk_pod(net: u8, workload: &str, app: &str, version: &str, host: u8) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(workload), "namespace": "default",
            "labels": {"app": app, "version": version, "security.istio.io/tlsMode": "istio"},
            // Sidecar and app share one machine here: the app has its own address.
            "annotations": {"pilotfish.io/app-address": format!("127.{net}.1.{host}")}
        },
        "spec": {"serviceAccountName": format!("bookinfo-{app}"),
                 "containers": [{"name": app, "image": "bookinfo", "ports": [{"name": "http", "containerPort": 9080}]}]},
        "status": {"phase": "Running", "podIP": format!("127.{net}.0.{host}"),
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn mk_service(app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": app, "namespace": "default", "labels": {"app": app}},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}
    })
}

/// The EndpointSlice of `app`'s Service, with each of its pods ready or not.
fn mk_slice(net: u8, app: &str, not_ready: &[&str]) -> Value {
    let endpoints: Vec<Value> = BOOKINFO
        .iter()
        .filter(|b| b.1 == app)
        .map(|(workload, _, _, host, _)| {
            json!({
                "addresses": [format!("127.{net}.0.{host}")],
                "conditions": {"ready": !not_ready.contains(workload)},
                "targetRef": {"kind": "Pod", "namespace": "default", "name": pod_name(workload)}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{app}-x7k2p"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": app}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// Applies every document of one of Istio's sample files, as `kubectl apply -f` would.
fn apply_sample(fake: &FakeApi, name: &str) {
    let path = PathBuf::from(common::ROOT)
        .join("examples/bookinfo/routing")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if !v.is_null() {
            fake.apply(v);
        }
    }
}

/// The endpoint addresses Envoy on `host` has for `cluster` (admin /clusters).
fn envoy_endpoints(mesh: &Mesh, host: u8, cluster: &str) -> BTreeSet<String> {
    let text = mesh.envoy_admin(host, "/clusters");
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{cluster}::")))
        .filter(|rest| rest.contains("::health_flags::"))
        .filter_map(|rest| rest.split("::").next())
        .map(str::to_string)
        .collect()
}

fn has_cluster(mesh: &Mesh, host: u8, cluster: &str) -> bool {
    mesh.envoy_admin(host, "/clusters")
        .lines()
        .any(|l| l.starts_with(&format!("{cluster}::")))
}

/// The reviews version productpage got, None if the call failed (while a
/// change propagates, as in Istio, a route can name a cluster still warming).
fn try_reviews(mesh: &Mesh) -> Option<String> {
    let (call, _) = mesh.reviews_call(None);
    (call["status"] == 200).then(|| {
        call["body"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

/// Waits until 10 reviews calls in a row come from `version`.
fn wait_reviews_only(mesh: &Mesh, version: &str) {
    wait_until(&format!("reviews only {version}"), || {
        (0..10).all(|_| try_reviews(mesh).as_deref() == Some(version))
    });
}

/// The versions `n` successful reviews calls came from.
fn versions_seen(mesh: &Mesh, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| try_reviews(mesh).expect("reviews call failed"))
        .collect()
}

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";

#[test]
fn kubernetes_objects_drive_real_envoy() {
    let net = next_net(NET_BASE);
    let fake = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    for app in ["productpage", "details", "reviews", "ratings"] {
        fake.apply(mk_service(app));
        fake.apply(mk_slice(net, app, &[]));
    }
    for (workload, app, version, host, _) in BOOKINFO {
        fake.apply(mk_pod(net, workload, app, version, *host));
    }

    let mut mesh = Mesh::start_kubernetes(net, &kubeconfig);
    let kc = kubeconfig.to_str().unwrap().to_string();
    for (workload, app, version, host, calls) in BOOKINFO {
        mesh.start_envoy_with(
            &pod_name(workload),
            *host,
            &["--kubernetes", "--kubeconfig", &kc],
            |_| {},
        );
        mesh.start_app(app, version, *host, calls);
    }
    for (_, _, _, host, _) in BOOKINFO {
        mesh.wait_envoy_ready(*host);
    }
    wait_until("bookinfo answering through its sidecars", || {
        mesh.try_productpage(None).is_ok_and(|v| {
            v["calls"]
                .as_array()
                .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["status"] == 200))
        })
    });

    // Identity from the pod's service account, mTLS from its tlsMode label.
    let certs = mesh.envoy_admin(13, "/certs");
    assert!(
        certs.contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{certs}"
    );
    // No VirtualService: the Service balances over all three ready pods.
    assert_eq!(
        envoy_endpoints(&mesh, 11, REVIEWS),
        (13..=15).map(|h| format!("127.{net}.0.{h}:9080")).collect()
    );
    let seen = versions_seen(&mesh, 30);
    assert_eq!(seen.len(), 3, "{seen:?}");

    // Istio's own sample files, applied through the API server.
    apply_sample(&fake, "destination-rule-all.yaml");
    apply_sample(&fake, "virtual-service-reviews-v3.yaml");
    wait_reviews_only(&mesh, "v3");
    // Changed in place.
    let mut vs = fake.get("VirtualService", "default", "reviews").unwrap();
    vs["spec"]["http"][0]["route"][0]["destination"]["subset"] = json!("v2");
    fake.apply(vs);
    wait_reviews_only(&mesh, "v2");
    // Deleted: back to all versions.
    assert!(fake.delete("VirtualService", "default", "reviews"));
    wait_until("reviews balanced again", || {
        (0..30)
            .filter_map(|_| try_reviews(&mesh))
            .collect::<BTreeSet<_>>()
            .len()
            == 3
    });

    // Readiness: v1 and v3 fail their probes; their endpoints leave Envoy,
    // their sidecars keep their config.
    fake.apply(mk_slice(net, "reviews", &["reviews-v1", "reviews-v3"]));
    wait_until("only reviews-v2 in Envoy's endpoints", || {
        envoy_endpoints(&mesh, 11, REVIEWS) == BTreeSet::from([format!("127.{net}.0.14:9080")])
    });
    wait_reviews_only(&mesh, "v2");
    assert!(
        has_cluster(&mesh, 13, RATINGS),
        "a pod that is not ready keeps its config"
    );

    // A relist (every watch told 410 Gone) of an unchanged cluster pushes
    // nothing: the proxies' CDS update count does not move, traffic goes on.
    let cds = mesh.envoy_stat(11, "cluster_manager.cds.update_success");
    let relists = fake.lists("Pod");
    fake.expire();
    wait_until("pilotfish relisted", || fake.lists("Pod") > relists);
    wait_until("the relist logged", || {
        mesh.log()
            .contains("resourceVersion too old (410 Gone); relisting")
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    wait_reviews_only(&mesh, "v2");
    assert_eq!(
        mesh.envoy_stat(11, "cluster_manager.cds.update_success"),
        cds,
        "an unchanged relist looked like a change"
    );

    // Deleting a Service removes its cluster from every sidecar; reviews-v2
    // can no longer reach ratings.
    assert!(fake.delete("Service", "default", "ratings"));
    wait_until("ratings' cluster gone from reviews-v2's sidecar", || {
        !has_cluster(&mesh, 14, RATINGS)
    });
    let (version, ratings) = mesh.reviews(None);
    assert_eq!((version.as_str(), ratings), ("v2", false));

    // details' pod and Service deleted: productpage's sidecar loses the
    // cluster, the rest carries on.
    assert!(fake.delete("Pod", "default", &pod_name("details-v1")));
    assert!(fake.delete("Service", "default", "details"));
    wait_until("details gone from productpage's sidecar", || {
        !has_cluster(
            &mesh,
            11,
            "outbound|9080||details.default.svc.cluster.local",
        )
    });
    assert_eq!(mesh.reviews(None).0, "v2");
}

#[test]
fn bootstrap_names_a_pod_backed_workload_by_its_pod() {
    let fake = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let mut pod = mk_pod(0, "reviews-v1", "reviews", "v1", 13);
    pod["status"]["podIP"] = json!("10.244.1.7");
    fake.apply(pod);
    // The root pilotfish publishes (no pilotfish runs in this test).
    let root = "-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----\n";
    fake.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": "istio-system"},
        "data": {"root-cert.pem": root}}));
    let mut pending = mk_pod(0, "reviews-v2", "reviews", "v2", 14);
    pending["status"] = json!({"phase": "Pending"});
    fake.apply(pending);
    let bootstrap = |workload: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pilotfish"))
            .args(["bootstrap", "--kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .args([
                "--workload",
                workload,
                "--namespace",
                "default",
                "-o",
                "json",
            ])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap()
    };

    let out = bootstrap(&pod_name("reviews-v1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        b["node"]["id"],
        "sidecar~10.244.1.7~reviews-v1-5d8f9.default~default.svc.cluster.local"
    );
    // The xDS cluster trusts the root from the ConfigMap.
    assert!(b.to_string().contains("MIIBroot"));

    for (workload, expected) in [
        ("nope", "Pod default/nope: not found"),
        (
            "reviews-v2-5d8f9",
            "Pod default/reviews-v2-5d8f9: has no IP address yet",
        ),
    ] {
        let out = bootstrap(workload);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "{stderr}");
    }
}
