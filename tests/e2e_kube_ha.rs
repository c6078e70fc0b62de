//! Kubernetes mode, HA and identity, end to end: real `pilotfish serve
//! --kubernetes` replicas against the fake API server (`tests/kube_api`) and
//! real Envoy sidecars whose credential is their pod's ServiceAccount token
//! (a file, as the kubelet projects it), checked with TokenReview.
//!
//! * The CA root is created once, by the Lease holder, in Secret
//!   `istio-ca-secret`; the follower reads it (one root for both); the
//!   public root is in ConfigMap `istio-ca-root-cert`, where `pilotfish
//!   bootstrap --kubernetes` finds it.
//! * SIGTERM releases the Lease: the follower takes over within a retry
//!   period and starts writing, while both keep serving.
//! * TokenReview: an unknown token and one for another audience are
//!   refused; a token bound to another pod cannot take this pod's identity;
//!   a rotated token file (the kubelet's symlink swap) is picked up by
//!   Envoy without a restart.

mod common;
mod kube_api;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Mesh, metric, next_net, wait_until};
use kube_api::FakeApi;
use serde_json::{Value, json};

const NET_BASE: u8 = 100;

fn mk_pod(net: u8, name: &str, sa: &str, host: u8) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"app": "web", "security.istio.io/tlsMode": "istio"}},
        "spec": {"serviceAccountName": sa,
                 "containers": [{"name": "web", "image": "web", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": format!("127.{net}.0.{host}"),
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn mk_cluster(fake: &FakeApi, net: u8) {
    fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}
    }));
    fake.apply(mk_pod(net, "web-1", "web", 11));
    fake.apply(mk_pod(net, "web-2", "web", 12));
}

/// Writes `token` where the kubelet would, as it does: a new timestamped
/// directory, `..data` swapped to it by a rename, `istio-token` a symlink
/// through `..data` (what Envoy's watched directory sees as a move).
fn project_token(dir: &Path, token: &str, generation: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let data = dir.join(format!("..gen{generation}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("istio-token"), token).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..gen{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("istio-token");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/istio-token", &link).unwrap();
    }
    link
}

/// Starts the sidecar of pod `pod` on `host`, its credential the token file.
fn start_sidecar(mesh: &mut Mesh, kubeconfig: &Path, pod: &str, host: u8, token_file: &Path) {
    let sds = mesh.dir.path().join(format!("{pod}-token-sds.json"));
    mesh.start_envoy_with(
        pod,
        host,
        &[
            "--kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--token-file",
            token_file.to_str().unwrap(),
            "--token-sds-file",
            sds.to_str().unwrap(),
        ],
        |_| {},
    );
}

fn spiffe_of(mesh: &Mesh, host: u8) -> String {
    mesh.envoy_admin(host, "/certs")
}

fn leader(mesh: &Mesh) -> Option<f64> {
    metric(&mesh.metrics(), "pilotfish_leader")
}

#[test]
fn ca_in_a_secret_shared_by_replicas_and_fast_failover_on_sigterm() {
    let net_a = next_net(NET_BASE);
    let net_b = next_net(NET_BASE);
    let fake = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    mk_cluster(&fake, net_b);
    let kc_a = fake.kubeconfig_with_token(dir.path(), "pilotfish-a");
    let kc_b = fake.kubeconfig_with_token(dir.path(), "pilotfish-b");
    let kc_boot = fake.kubeconfig_with_token(dir.path(), "bootstrap");

    let mut a =
        Mesh::start_kubernetes_with(net_a, &kc_a, &["--leader-election-identity", "pilotfish-a"]);
    wait_until("a to lead", || leader(&a) == Some(1.0));
    // The holder created the root once, and published the public part.
    let secret = fake
        .get("Secret", "istio-system", "istio-ca-secret")
        .expect("istio-ca-secret created");
    assert_eq!(fake.writes_by("Secret", "pilotfish-a"), 1);
    use base64::Engine;
    let root = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["ca-cert.pem"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(root.contains("BEGIN CERTIFICATE"));
    wait_until("the root ConfigMap", || {
        fake.get("ConfigMap", "istio-system", "istio-ca-root-cert")
            .is_some()
    });
    let cm = fake
        .get("ConfigMap", "istio-system", "istio-ca-root-cert")
        .unwrap();
    assert_eq!(
        cm["data"]["root-cert.pem"].as_str().unwrap().trim(),
        root.trim()
    );

    let mut b =
        Mesh::start_kubernetes_with(net_b, &kc_b, &["--leader-election-identity", "pilotfish-b"]);
    assert_eq!(leader(&b), Some(0.0));
    assert!(
        b.log()
            .contains("self-signed root CA from Secret istio-ca-secret")
    );

    // A sidecar of b's, bootstrapped from the ConfigMap's root and
    // authenticated by its ServiceAccount token: b's serving certificate
    // chains to the root a created, and b signs the pod's identity.
    fake.issue_token(
        "tok-web-1.x.y",
        "default",
        "web",
        Some("web-1"),
        &["istio-ca"],
    );
    let token = project_token(&dir.path().join("web-1-tokens"), "tok-web-1.x.y", 1);
    start_sidecar(&mut b, &kc_boot, "web-1", 11, &token);
    b.wait_envoy_ready(11);
    let certs = spiffe_of(&b, 11);
    assert!(
        certs.contains("spiffe://cluster.local/ns/default/sa/web"),
        "{certs}"
    );
    assert!(fake.token_reviews() >= 1);
    // The bootstrap held no credential of its own.
    let boot = std::fs::read_to_string(b.dir.path().join("web-1-11.json")).unwrap();
    assert!(!boot.contains("tok-web-1.x.y") && boot.contains("credential_injector"));

    // The holder restores the ConfigMap deleted behind its back at once
    // (it watches that name); the follower writes nothing.
    let by_a = fake.writes_by("ConfigMap", "pilotfish-a");
    assert!(fake.delete("ConfigMap", "istio-system", "istio-ca-root-cert"));
    wait_until("a restored the root ConfigMap", || {
        fake.writes_by("ConfigMap", "pilotfish-a") == by_a + 1
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        fake.get("ConfigMap", "istio-system", "istio-ca-root-cert")
            .is_some()
    );
    assert_eq!(fake.writes_by("ConfigMap", "pilotfish-b"), 0);
    assert_eq!(fake.writes_by("Secret", "pilotfish-b"), 0);

    // SIGTERM: a releases the Lease on its way out; b takes over within a
    // retry period or two, not a lease duration, and writes at once.
    a.terminate_pilotfish();
    let stopped = Instant::now();
    // Deleted while a is gone: b restores it as soon as it holds the Lease.
    assert!(fake.delete("ConfigMap", "istio-system", "istio-ca-root-cert"));
    assert!(
        a.log().contains("leader election: released the Lease"),
        "{}",
        a.log()
    );
    wait_until("b to take over", || {
        assert_eq!(b.get_text(&b.admin_url("/readyz")), "ready\n");
        leader(&b) == Some(1.0)
    });
    let took = stopped.elapsed();
    assert!(
        took < pilotfish::kube::leader::LEASE_DURATION / 2,
        "b took over {took:?} after a stopped"
    );
    wait_until("b republished the root", || {
        fake.writes_by("ConfigMap", "pilotfish-b") == 1
    });
    // Still one root, still serving the sidecar.
    assert_eq!(fake.writes("Secret"), 1);
    assert!(spiffe_of(&b, 11).contains("spiffe://cluster.local/ns/default/sa/web"));
    assert_eq!(
        fake.get("Lease", "istio-system", "pilotfish").unwrap()["spec"]["holderIdentity"],
        "pilotfish-b"
    );
}

#[test]
fn service_account_tokens_checked_with_token_review() {
    let net = next_net(NET_BASE);
    let fake = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    mk_cluster(&fake, net);
    let kc = fake.kubeconfig(dir.path());
    let mut mesh = Mesh::start_kubernetes(net, &kc);
    let failures = |m: &Mesh| {
        metric(
            &m.metrics(),
            "citadel_server_authentication_failure_count_total",
        )
        .unwrap_or(0.0)
    };

    // Unknown token: refused, no config.
    let tokens = dir.path().join("web-1-tokens");
    let token = project_token(&tokens, "not-a-real-token.x.y", 1);
    start_sidecar(&mut mesh, &kc, "web-1", 11, &token);
    wait_until("the unknown token refused", || {
        mesh.log().contains("invalid bearer token") && failures(&mesh) >= 1.0
    });
    // A real token for another audience: refused with the reason.
    fake.issue_token(
        "tok-api.x.y",
        "default",
        "web",
        Some("web-1"),
        &["https://kubernetes.default.svc"],
    );
    project_token(&tokens, "tok-api.x.y", 2);
    wait_until("the wrong audience refused", || {
        mesh.log().contains("is invalid for the target audiences")
    });
    let lds = mesh.envoy_stat(11, "listener_manager.lds.update_success");
    assert_eq!(lds, 0, "a refused proxy got config");

    // The kubelet rotates the file to a good token: Envoy re-reads it and
    // connects, without a restart.
    fake.issue_token(
        "tok-web-1.x.y",
        "default",
        "web",
        Some("web-1"),
        &["istio-ca"],
    );
    project_token(&tokens, "tok-web-1.x.y", 3);
    mesh.wait_envoy_ready(11);
    assert!(spiffe_of(&mesh, 11).contains("spiffe://cluster.local/ns/default/sa/web"));

    // web-2's sidecar presenting web-1's token: same service account, but
    // the token is bound to pod web-1, so it cannot be web-2.
    let denied_before = mesh.log().matches("proxy claims another workload").count();
    start_sidecar(&mut mesh, &kc, "web-2", 12, &token);
    wait_until("web-2 with web-1's token denied", || {
        mesh.log().matches("proxy claims another workload").count() > denied_before
    });
    assert_eq!(
        mesh.envoy_stat(12, "listener_manager.lds.update_success"),
        0
    );

    // Reviews are cached: more streams than reviews.
    let reviews = fake.token_reviews();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        fake.token_reviews() <= reviews + 2,
        "{} reviews for a steady mesh",
        fake.token_reviews()
    );
}

/// A Secret as `kubectl create secret` makes it (data base64).
fn mk_secret(ns: &str, name: &str, type_: &str, data: &[(&str, &str)]) -> Value {
    use base64::Engine;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
           "metadata": {"name": name, "namespace": ns}, "data": data})
}

fn mk_pair(host: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// `credentialName` from Secrets through the real watcher and `kube`
/// client: a kubernetes.io/tls Secret, a generic one whose CA is in
/// `NAME-cacert` (Istio's convention), scoped to the gateway's namespace;
/// a rotated Secret is a new SDS layer, a deleted one goes missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_credentials_from_secrets() {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Arc;

    use pilotfish::model::WorkloadKey;
    use pilotfish::xds::credentials::CredentialDir;

    let fake = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let client = pilotfish::kube::client(Some(&fake.kubeconfig(dir.path())))
        .await
        .unwrap();
    let (gw_cert, gw_key) = mk_pair("bookinfo.example.com");
    let (other_cert, other_key) = mk_pair("other.example.com");
    let (m_cert, m_key) = mk_pair("mtls.example.com");
    let (ca, _) = mk_pair("client-ca");
    let tls = "kubernetes.io/tls";
    fake.apply(mk_secret(
        "istio-system",
        "gw-cert",
        tls,
        &[("tls.crt", &gw_cert), ("tls.key", &gw_key)],
    ));
    fake.apply(mk_secret(
        "other",
        "gw-cert",
        tls,
        &[("tls.crt", &other_cert), ("tls.key", &other_key)],
    ));
    fake.apply(mk_secret(
        "istio-system",
        "mtls",
        "Opaque",
        &[("cert", &m_cert), ("key", &m_key)],
    ));
    fake.apply(mk_secret(
        "istio-system",
        "mtls-cacert",
        "Opaque",
        &[("cacert", &ca)],
    ));
    fake.apply(mk_secret(
        "istio-system",
        "half",
        "Opaque",
        &[("cert", &m_cert)],
    ));
    fake.apply(mk_secret(
        "istio-system",
        "unrelated",
        "Opaque",
        &[("password", "hunter2")],
    ));

    let (tx, rx) = tokio::sync::watch::channel(Arc::default());
    tokio::spawn(pilotfish::kube::secrets::run(client, tx));
    let mut creds = CredentialDir::kubernetes(rx);
    let start = Instant::now();
    while !creds.reload() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no Secrets listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        creds.names().collect::<Vec<_>>(),
        ["istio-system/gw-cert", "istio-system/mtls", "other/gw-cert"]
    );
    assert_eq!(creds.errors.len(), 1, "{:?}", creds.errors);
    assert!(creds.errors[0].contains("istio-system/half"));
    assert!(!format!("{:?}", creds.errors).contains("PRIVATE KEY"));

    let gw = WorkloadKey {
        namespace: "istio-system".into(),
        name: "istio-ingressgateway-7d4f".into(),
    };
    let wants: HashMap<WorkloadKey, Arc<BTreeSet<String>>> = HashMap::from([(
        gw.clone(),
        Arc::new(BTreeSet::from([
            "gw-cert".into(),
            "mtls".into(),
            "absent".into(),
        ])),
    )]);
    let layers = creds.layers(&wants);
    let names: Vec<&String> = layers[&gw].resources.keys().collect();
    assert_eq!(
        names,
        [
            "credential://gw-cert",
            "credential://mtls",
            "credential://mtls-cacert"
        ]
    );
    let holds = |layer: &pilotfish::xds::cache::Layer, res: &str, text: &str| {
        let body = text.lines().nth(1).unwrap();
        layer.resources[res]
            .sotw
            .windows(body.len())
            .any(|w| w == body.as_bytes())
    };
    // The gateway's own namespace's Secret, not the other namespace's.
    assert!(holds(&layers[&gw], "credential://gw-cert", &gw_cert));
    assert!(!holds(&layers[&gw], "credential://gw-cert", &other_cert));
    assert!(holds(&layers[&gw], "credential://mtls-cacert", &ca));
    assert_eq!(
        creds.missing(&wants),
        BTreeSet::from(["istio-system/absent".to_string()])
    );

    // Rotation: the renewed certificate is a new layer holding it.
    let (new_cert, new_key) = mk_pair("bookinfo.example.com");
    fake.apply(mk_secret(
        "istio-system",
        "gw-cert",
        tls,
        &[("tls.crt", &new_cert), ("tls.key", &new_key)],
    ));
    let start = Instant::now();
    while !creds.reload() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "rotation not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rotated = creds.layers(&wants);
    assert!(!Arc::ptr_eq(&layers[&gw], &rotated[&gw]));
    assert!(holds(&rotated[&gw], "credential://gw-cert", &new_cert));

    // Deleted: missing again.
    assert!(fake.delete("Secret", "istio-system", "gw-cert"));
    let start = Instant::now();
    while !creds.reload() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "deletion not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    creds.layers(&wants);
    assert!(creds.missing(&wants).contains("istio-system/gw-cert"));
}
