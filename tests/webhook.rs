//! The admission webhook of the real `pilotfish serve`: AdmissionReview v1
//! documents POSTed over HTTPS, the server's certificate verified against
//! pilotfish's CA root and the webhook's DNS name, as the API server does.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{Mesh, next_net};
use serde_json::{Value, json};

const NET_BASE: u8 = 200;
/// The name `serve` puts in the webhook certificate by default.
const WEBHOOK_NAME: &str = "pilotfish.istio-system.svc";

/// TLS client trusting only the root in the mesh's state directory.
fn tls_client(mesh: &Mesh) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(mesh.dir.path().join("state/root-cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile(&pem) {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn rustls_pemfile(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

/// POSTs `body` to `/validate` as `server_name`; returns (status, body).
fn post(mesh: &Mesh, server_name: &str, body: &[u8]) -> Result<(u16, Value), String> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(tls_client(mesh), name).unwrap();
    let tcp =
        TcpStream::connect(format!("{}:15017", mesh.pilotfish_ip())).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    tls.write_all(body).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or(text.clone())?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(text.clone())?;
    let value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    Ok((status, value))
}

fn admission_review(uid: &str, operation: &str, object: Value) -> Vec<u8> {
    let kind = object["kind"].clone();
    let group = object["apiVersion"]
        .as_str()
        .and_then(|a| a.split_once('/'))
        .map(|(g, _)| g.to_string())
        .unwrap_or_default();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": "virtualservices"},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "namespace": "default",
            "name": object["metadata"]["name"],
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap()
}

const BAD_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: -1}
"#;

#[test]
fn admission_reviews_over_https_are_allowed_or_denied_with_validates_messages() {
    let mesh = Mesh::start(next_net(NET_BASE), &[], false);
    common::wait_until("webhook port", || {
        common::connect_ok(&format!("{}:15017", mesh.pilotfish_ip()))
    });

    // A valid VirtualService: allowed, uid echoed.
    let good: Value =
        serde_yaml_ng::from_str(&BAD_VS.replace("weight: -1", "weight: 100")).unwrap();
    let (status, r) = post(
        &mesh,
        WEBHOOK_NAME,
        &admission_review("uid-1", "CREATE", good),
    )
    .unwrap();
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    assert_eq!(r["response"]["uid"], "uid-1");
    assert_eq!(r["response"]["allowed"], true, "{r}");

    // An invalid one: denied with the message `pilotfish validate` prints.
    let bad: Value = serde_yaml_ng::from_str(BAD_VS).unwrap();
    let (status, r) = post(
        &mesh,
        WEBHOOK_NAME,
        &admission_review("uid-2", "UPDATE", bad.clone()),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(r["response"]["uid"], "uid-2");
    assert_eq!(r["response"]["allowed"], false, "{r}");
    let message = r["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let file = mesh.dir.path().join("bad-vs.yaml");
    std::fs::write(&file, BAD_VS).unwrap();
    let validate = std::process::Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&validate.stdout).trim().to_string();
    // validate: "FILE: document 1 (VirtualService default/reviews): PATH: MESSAGE"
    let (_, after_resource) = line.split_once(" (").unwrap();
    assert_eq!(after_resource.replacen("): ", ": ", 1), message, "{line}");
    assert!(
        message.contains("spec.http[0].route[0].weight"),
        "{message}"
    );

    // Deleting an invalid object is allowed.
    let (_, r) = post(
        &mesh,
        WEBHOOK_NAME,
        &admission_review("uid-3", "DELETE", bad),
    )
    .unwrap();
    assert_eq!(
        (
            r["response"]["uid"].as_str(),
            r["response"]["allowed"].as_bool()
        ),
        (Some("uid-3"), Some(true))
    );

    // Istio's warnings come back in response.warnings, the object allowed.
    let pa = json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {}}, "mtls": {"mode": "STRICT"}}
    });
    let (_, r) = post(
        &mesh,
        WEBHOOK_NAME,
        &admission_review("uid-4", "CREATE", pa),
    )
    .unwrap();
    assert_eq!(r["response"]["allowed"], true, "{r}");
    let warnings = r["response"]["warnings"].as_array().unwrap();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("PeerAuthentication default/p: spec.selector.matchLabels"),
        "{r}"
    );

    // Kinds pilotfish does not read are allowed untouched.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "y"}});
    let (_, r) = post(
        &mesh,
        WEBHOOK_NAME,
        &admission_review("uid-5", "CREATE", cm),
    )
    .unwrap();
    assert_eq!(r["response"]["allowed"], true, "{r}");

    // What is not an AdmissionReview gets a 400.
    let (status, r) = post(&mesh, WEBHOOK_NAME, b"{not json").unwrap();
    assert_eq!(status, 400, "{r}");
    let (status, _) = post(&mesh, WEBHOOK_NAME, br#"{"kind": "Pod"}"#).unwrap();
    assert_eq!(status, 400);

    // The certificate names the webhook, not anything else.
    let e = post(
        &mesh,
        "other.example.com",
        &admission_review("uid-6", "CREATE", json!({})),
    )
    .unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}
