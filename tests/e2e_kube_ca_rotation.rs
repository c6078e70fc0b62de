//! Rotating the CA root in Kubernetes mode, end to end: the real `pilotfish
//! serve --kubernetes` (Lease holder) against the fake API server
//! (`tests/kube_api`) and a real Envoy sidecar authenticated by its
//! ServiceAccount token. `pilotfish rotate-root begin` writes a new root
//! into `istio-ca-secret`; pilotfish follows the Secret, and the sidecar
//! gets a new leaf and the two-root bundle over SDS while the root
//! ConfigMap carries both; `finish` leaves only the new root everywhere,
//! and a sidecar bootstrapped afterwards (from the new root) connects.
//! Then the operator plugs in `cacerts`: adopted without a restart.

mod common;
mod kube_api;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::{Mesh, metric, next_net, wait_until};
use kube_api::FakeApi;
use serde_json::{Value, json};

const NET_BASE: u8 = 2;

fn mk_pod(net: u8, name: &str, host: u8) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"app": "web", "security.istio.io/tlsMode": "istio"}},
        "spec": {"serviceAccountName": "web",
                 "containers": [{"name": "web", "image": "web", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": format!("127.{net}.0.{host}"),
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

/// A token file as the kubelet projects it (one generation is enough here).
fn token_file(dir: &Path, pod: &str, token: &str) -> PathBuf {
    let path = dir.join(format!("{pod}-token"));
    std::fs::write(&path, token).unwrap();
    path
}

fn start_sidecar(mesh: &mut Mesh, api: &FakeApi, kubeconfig: &Path, pod: &str, host: u8) {
    let token = format!("tok-{pod}.x.y");
    api.issue_token(&token, "default", "web", Some(pod), &["istio-ca"]);
    let file = token_file(mesh.dir.path(), pod, &token);
    let sds = mesh.dir.path().join(format!("{pod}-token-sds.json"));
    mesh.start_envoy_with(
        pod,
        host,
        &[
            "--kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--token-file",
            file.to_str().unwrap(),
            "--token-sds-file",
            sds.to_str().unwrap(),
        ],
        |_| {},
    );
    mesh.wait_envoy_ready(host);
}

/// The serials of the roots an Envoy trusts in its mesh TLS contexts (those
/// with a workload certificate), and its workload leaf's serial.
fn envoy_certs(mesh: &Mesh, host: u8) -> (Vec<String>, Option<String>) {
    let certs: Value = serde_json::from_str(&mesh.envoy_admin(host, "/certs")).unwrap_or_default();
    let mesh_ctx: Vec<&Value> = certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["cert_chain"].as_array().is_some_and(|a| !a.is_empty()))
        .collect();
    let mut roots: Vec<String> = mesh_ctx
        .iter()
        .flat_map(|c| c["ca_cert"].as_array().cloned().unwrap_or_default())
        .filter_map(|ca| ca["serial_number"].as_str().map(str::to_string))
        .collect();
    roots.sort();
    roots.dedup();
    let leaf = mesh_ctx
        .first()
        .and_then(|c| c["cert_chain"][0]["serial_number"].as_str())
        .map(str::to_string);
    (roots, leaf)
}

/// How many certificates the root ConfigMap of `ns` holds.
fn published_roots(api: &FakeApi, ns: &str) -> usize {
    api.get("ConfigMap", ns, "istio-ca-root-cert")
        .and_then(|c| c["data"]["root-cert.pem"].as_str().map(str::to_string))
        .map_or(0, |r| r.matches("BEGIN CERTIFICATE").count())
}

fn rotate(mesh: &Mesh, step: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .args(["rotate-root", step, "--admin-address"])
        .arg(format!("{}:15014", mesh.pilotfish_ip()))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn rotate_root_through_istio_ca_secret_then_plug_in_cacerts() {
    let net = next_net(NET_BASE);
    let api = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}
    }));
    api.apply(mk_pod(net, "web-1", 11));
    api.apply(mk_pod(net, "web-2", 12));
    let kc = api.kubeconfig_with_token(dir.path(), "pilotfish-a");
    let kc_boot = api.kubeconfig_with_token(dir.path(), "bootstrap");
    let mut mesh =
        Mesh::start_kubernetes_with(net, &kc, &["--leader-election-identity", "pilotfish-a"]);
    wait_until("the Lease", || {
        metric(&mesh.metrics(), "pilotfish_leader") == Some(1.0)
    });
    wait_until("the root published", || {
        published_roots(&api, "default") == 1
    });
    start_sidecar(&mut mesh, &api, &kc_boot, "web-1", 11);
    let (old_root, old_leaf) = envoy_certs(&mesh, 11);
    assert_eq!(old_root.len(), 1, "{old_root:?}");
    let old_leaf = old_leaf.expect("a workload certificate");

    // begin: written into the Secret, followed by pilotfish, pushed to the
    // sidecar: both roots, a leaf from the new one.
    let (ok, out) = rotate(&mesh, "begin");
    assert!(ok && out.contains("2 root(s)"), "{out}");
    let secret = api
        .get("Secret", "istio-system", "istio-ca-secret")
        .unwrap();
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["root-cert.pem"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(bundle)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    wait_until("the sidecar trusting both roots with a new leaf", || {
        let (roots, leaf) = envoy_certs(&mesh, 11);
        roots.len() == 2 && roots.contains(&old_root[0]) && leaf.is_some_and(|l| l != old_leaf)
    });
    wait_until("both roots published", || {
        published_roots(&api, "default") == 2
    });
    let (ok, out) = rotate(&mesh, "begin");
    assert!(!ok && out.contains("already in progress"), "{out}");

    // finish: only the new root, in the sidecar and the ConfigMaps.
    let (ok, out) = rotate(&mesh, "finish");
    assert!(ok && out.contains("1 root(s)"), "{out}");
    wait_until("the sidecar trusting only the new root", || {
        let (roots, _) = envoy_certs(&mesh, 11);
        roots.len() == 1 && roots[0] != old_root[0]
    });
    wait_until("the new root alone published", || {
        published_roots(&api, "default") == 1
    });
    let new_root = envoy_certs(&mesh, 11).0;
    // pilotfish serves xDS under the new root now: a sidecar bootstrapped
    // from the ConfigMap as it is now connects.
    start_sidecar(&mut mesh, &api, &kc_boot, "web-2", 12);
    assert_eq!(envoy_certs(&mesh, 12).0, new_root);

    // The operator plugs in a CA, keeping the current root trusted while
    // workloads move over: adopted at once, no restart.
    let (r3, k3) = pilotfish::ca::Ca::new_root_pem().unwrap();
    let current = api
        .get("ConfigMap", "default", "istio-ca-root-cert")
        .unwrap()["data"]["root-cert.pem"]
        .as_str()
        .unwrap()
        .to_string();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    api.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": "istio-system"},
        "data": {"ca-cert.pem": b64(&r3), "ca-key.pem": b64(k3.expose()),
                 "root-cert.pem": b64(&format!("{r3}{current}")), "cert-chain.pem": b64(&r3)}
    }));
    let leaf = envoy_certs(&mesh, 12).1;
    wait_until("both sidecars trusting the plugged-in root too", || {
        [11, 12].iter().all(|h| {
            let (roots, _) = envoy_certs(&mesh, *h);
            roots.len() == 2 && roots.contains(&new_root[0])
        }) && envoy_certs(&mesh, 12).1 != leaf
    });
    assert!(mesh.log().contains("CA Secret changed: adopted"));
    // A plugged-in CA is the operator's to rotate.
    let (ok, out) = rotate(&mesh, "begin");
    assert!(!ok && out.contains("plugged in from Secret"), "{out}");
}
