//! The admission webhook's ValidatingWebhookConfiguration in Kubernetes
//! mode (`src/kube/webhook_config.rs`) against the fake API server: the
//! real `pilotfish serve --kubernetes` patches the manifest's object with
//! its CA root, switches it to fail-closed only once the fake API server's
//! admission (which calls the webhook on a dry-run create) denies an
//! invalid Gateway, restores it when it is changed, and the
//! webhook's certificate verifies against that bundle for the Service's DNS
//! name, as the API server checks it; a replica without the Lease writes
//! nothing.

mod common;
mod kube_api;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use kube_api::FakeApi;
use serde_json::{Value, json};
use tokio::sync::watch;

const NET_BASE: u8 = 254;
const KIND: &str = "ValidatingWebhookConfiguration";
const NAME: &str = pilotfish::kube::webhook_config::WEBHOOK_CONFIG;

/// The ValidatingWebhookConfiguration as `manifests/` ships it.
fn manifest() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/60-validatingwebhook.yaml"
    );
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let v = serde_json::to_value(yaml).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["metadata"]["name"].as_str()),
        (Some(KIND), Some(NAME))
    );
    v
}

/// The PEM in the first webhook's caBundle, if any.
fn bundle(api: &FakeApi) -> Option<String> {
    let v = api.get(KIND, "", NAME)?;
    let b = v["webhooks"][0]["clientConfig"].get("caBundle")?.clone();
    let bytes: ByteString = serde_json::from_value(b).ok()?;
    String::from_utf8(bytes.0).ok()
}

fn policy(api: &FakeApi) -> Value {
    api.get(KIND, "", NAME).unwrap()["webhooks"][0]["failurePolicy"].clone()
}

/// POSTs an AdmissionReview for an invalid VirtualService to the webhook,
/// trusting only `roots_pem` and checking the certificate for `server_name`,
/// as the API server does with the caBundle; returns the response.
fn review_bad_vs(addr: &str, server_name: &str, roots_pem: &str) -> Result<Value, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "namespace": "default", "name": "reviews", "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "reviews", "namespace": "default"},
                "spec": {"hosts": ["reviews"], "http": [{"route": [
                    {"destination": {"host": "reviews"}, "weight": -1}]}]}},
        }
    }))
    .unwrap();
    let head = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\n\
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

#[test]
fn the_holder_patches_its_root_into_the_webhook_configuration_and_keeps_it() {
    let api = FakeApi::start("127.0.0.1");
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
    api.apply(manifest());
    assert_eq!(bundle(&api), None);
    assert_eq!(policy(&api), "Ignore");
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig_with_token(dir.path(), "pilotfish-a");
    let mesh = common::Mesh::start_kubernetes_with(
        common::next_net(NET_BASE),
        &kc,
        &["--leader-election-identity", "pilotfish-a"],
    );
    common::wait_until("the caBundle", || bundle(&api).is_some());
    // The webhook cannot be reached yet (no route to the Service): its
    // dry-run check is accepted, so it stays fail-open.
    common::wait_until("two dry-run checks", || api.dry_runs().0 >= 2);
    assert_eq!(api.dry_runs().1, 0);
    assert_eq!(policy(&api), "Ignore");
    assert_eq!(api.writes_by(KIND, "pilotfish-a"), 1);
    // Once the API server reaches it, the webhook denies the invalid
    // Gateway: fail-closed from now on.
    let addr = format!("{}:15017", mesh.pilotfish_ip());
    api.route_service("istio-system", "pilotfish", 443, &addr);
    common::wait_until("fail-closed", || policy(&api) == "Fail");
    assert!(api.dry_runs().1 >= 1, "a denied dry-run");
    assert!(
        mesh.log()
            .contains("denied a dry-run of an invalid Gateway")
    );
    let checks = api.dry_runs().0;
    // The CA's root, as published for bootstraps.
    let root = api
        .get("ConfigMap", "istio-system", "istio-ca-root-cert")
        .unwrap()["data"]["root-cert.pem"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bundle(&api).as_deref(), Some(root.as_str()));
    let patched = api.get(KIND, "", NAME).unwrap();
    assert_eq!(
        patched["webhooks"][0]["clientConfig"]["service"],
        manifest()["webhooks"][0]["clientConfig"]["service"],
        "only caBundle and failurePolicy change"
    );
    assert_eq!(api.writes_by(KIND, "pilotfish-a"), 2);

    // What the API server does: verify the webhook with the bundle, for
    // the Service's name, and get a review back.
    let answer = review_bad_vs(&addr, "pilotfish.istio-system.svc", &root).unwrap();
    assert_eq!(answer["response"]["uid"], "uid-1");
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    // Another name is not in the certificate.
    let wrong = review_bad_vs(&addr, "pilotfish.elsewhere.svc", &root);
    assert!(wrong.is_err(), "{wrong:?}");

    // Someone puts another bundle in: patched back (within the check period).
    let mut changed = api.get(KIND, "", NAME).unwrap();
    changed["webhooks"][0]["clientConfig"]["caBundle"] = json!("b3RoZXI=");
    changed["webhooks"][0]["failurePolicy"] = json!("Ignore");
    api.apply(changed);
    assert_eq!(bundle(&api).as_deref(), Some("other"));
    common::wait_until("the caBundle restored", || {
        bundle(&api).as_deref() == Some(root.as_str())
    });
    assert_eq!(policy(&api), "Fail");
    assert_eq!(api.writes_by(KIND, "pilotfish-a"), 3);
    // The check passed once: it is not made again.
    assert_eq!(api.dry_runs().0, checks);
}

/// A replica that does not hold the Lease leaves the object alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_lease_does_not_patch_it() {
    let api = FakeApi::start("127.0.0.1");
    api.apply(manifest());
    let dir = tempfile::tempdir().unwrap();
    let client = pilotfish::kube::client(Some(&api.kubeconfig_with_token(dir.path(), "b")))
        .await
        .unwrap();
    let root = pilotfish::ca::Ca::ephemeral("cluster.local")
        .unwrap()
        .roots_pem();
    let (tx, rx) = watch::channel(false);
    let (roots_tx, roots_rx) = watch::channel(root.clone());
    let task = tokio::spawn(pilotfish::kube::webhook_config::keep_ca_bundle(
        client,
        NAME.to_string(),
        "istio-system".to_string(),
        roots_rx,
        rx,
        Duration::from_millis(100),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.writes_by(KIND, "b"), 0);
    assert_eq!(bundle(&api), None);
    // It becomes the holder: now it writes, once.
    tx.send_replace(true);
    let start = std::time::Instant::now();
    while bundle(&api).as_deref() != Some(root.as_str()) {
        assert!(start.elapsed() < Duration::from_secs(10), "never patched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.writes_by(KIND, "b"), 1);
    // The CA's bundle changes (a CA Secret replaced): patched at once, not
    // at the next check.
    let both = format!("{root}{root}");
    roots_tx.send_replace(both.clone());
    let start = std::time::Instant::now();
    while bundle(&api).as_deref() != Some(both.as_str()) {
        assert!(start.elapsed() < Duration::from_secs(10), "never patched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.writes_by(KIND, "b"), 2);
    task.abort();
}
