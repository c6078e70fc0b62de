//! The CA Secrets followed by every replica (`src/kube/ca_secret.rs`)
//! against the fake API server, through the real `kube` client: a rotation
//! of the self-signed root in `istio-ca-secret`, written by the Lease holder
//! only, reaches another replica (two roots trusted, new leaves from the new
//! root, then the old root dropped and its serving certificate re-issued);
//! an operator's new `cacerts` is adopted without a restart, trusting both
//! roots while the Secret carries both, and a broken one changes nothing.

mod kube_api;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use kube_api::FakeApi;
use pilotfish::ca::serving::ServingCert;
use pilotfish::ca::{Ca, Identity};
use pilotfish::kube::ca_secret::{self, Follower};
use pilotfish::metrics::Metrics;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

const NS: &str = "istio-system";
const TD: &str = "cluster.local";
const WAIT: Duration = Duration::from_secs(20);

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// DER of each certificate in a PEM text.
fn ders(pem: &str) -> Vec<Vec<u8>> {
    Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| p.expect("PEM").contents)
        .collect()
}

/// Whether the first certificate of `leaf_pem` is signed by `root_pem`'s.
fn signed_by(leaf_pem: &str, root_pem: &str) -> bool {
    let (leaf, root) = (ders(leaf_pem), ders(root_pem));
    let leaf = X509Certificate::from_der(&leaf[0]).unwrap().1;
    let root = X509Certificate::from_der(&root[0]).unwrap().1;
    leaf.verify_signature(Some(root.public_key())).is_ok()
}

/// One replica: the CA it loaded and follows, what it publishes, and its
/// serving certificate.
struct Replica {
    client: ::kube::Client,
    ca: Arc<Ca>,
    published: watch::Receiver<String>,
    changed: Arc<Notify>,
    serving: Arc<ServingCert>,
    leader: watch::Sender<bool>,
}

impl Replica {
    async fn start(api: &FakeApi, dir: &std::path::Path, name: &str, leader: bool) -> Replica {
        let client = pilotfish::kube::client(Some(&api.kubeconfig_with_token(dir, name)))
            .await
            .unwrap();
        let (leader_tx, leader_rx) = watch::channel(leader);
        let ca = Arc::new(
            ca_secret::load(client.clone(), NS, TD, leader_rx)
                .await
                .unwrap(),
        );
        let (roots_tx, published) = watch::channel(ca.roots_pem());
        let serving = ServingCert::new(
            Arc::clone(&ca),
            Identity::new(TD, NS, "pilotfish").unwrap(),
            Duration::from_secs(3600),
        )
        .unwrap();
        let changed = Arc::new(Notify::new());
        tokio::spawn(ca_secret::follow(Follower {
            client: client.clone(),
            namespace: NS.into(),
            trust_domain: TD.into(),
            ca: Arc::clone(&ca),
            roots_changed: Arc::clone(&changed),
            roots: roots_tx,
            serving: vec![Arc::clone(&serving)],
            metrics: Metrics::default(),
        }));
        Replica {
            client,
            ca,
            published,
            changed,
            serving,
            leader: leader_tx,
        }
    }

    fn roots(&self) -> Vec<Vec<u8>> {
        ders(&self.ca.roots_pem())
    }

    /// A leaf minted now, as SDS and the CA API would.
    fn leaf(&self) -> String {
        let id = Identity::new(TD, "default", "web").unwrap();
        self.ca
            .issue(&id, Duration::from_secs(600))
            .unwrap()
            .cert_chain_pem
    }

    async fn rotate(&self, step: &str) -> Result<usize, String> {
        let leader = self.leader.subscribe();
        ca_secret::rotate(self.client.clone(), NS, step, &leader)
            .await
            .map_err(|e| e.to_string())
    }

    /// The SDS refresh was woken since the last call.
    async fn was_woken(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(1), self.changed.notified())
            .await
            .is_ok()
    }
}

fn secret_text(api: &FakeApi, name: &str, key: &str) -> String {
    let s = api.get("Secret", NS, name).expect("the Secret");
    let b = s["data"][key].as_str().unwrap_or_default();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_istio_ca_secret_reaches_every_replica() {
    let api = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::start(&api, dir.path(), "a", true).await;
    let b = Replica::start(&api, dir.path(), "b", false).await;
    let old = a.ca.roots_pem();
    assert_eq!(b.ca.roots_pem(), old, "one root for both");
    assert_eq!(a.roots().len(), 1);
    let serial = b.serving.serial_hex();

    // Only the Lease holder writes.
    let e = b.rotate("begin").await.unwrap_err();
    assert!(e.contains("does not hold the Lease"), "{e}");
    assert_eq!(api.writes_by("Secret", "b"), 0);

    // begin: a new signing root, the old one still trusted, on both.
    assert_eq!(a.rotate("begin").await.unwrap(), 2);
    let new = secret_text(&api, "istio-ca-secret", "ca-cert.pem");
    assert!(ders(&new) != ders(&old));
    for r in [&a, &b] {
        wait_for("both roots trusted and published", || {
            r.roots().len() == 2 && ders(&r.published.borrow()) == r.roots()
        })
        .await;
        assert_eq!(r.roots(), [ders(&new), ders(&old)].concat());
        assert!(signed_by(&r.leaf(), &new), "new leaves from the new root");
        assert!(!signed_by(&r.leaf(), &old));
        assert!(r.was_woken().await, "SDS refreshed at once");
    }
    assert_eq!(
        b.serving.serial_hex(),
        serial,
        "the old root is still trusted: the serving certificate stays"
    );
    let e = a.rotate("begin").await.unwrap_err();
    assert!(e.contains("already in progress"), "{e}");

    // finish: only the new root is left, everywhere; the serving
    // certificate (from the old root) is issued again.
    assert_eq!(a.rotate("finish").await.unwrap(), 1);
    for r in [&a, &b] {
        wait_for("the old root dropped and published", || {
            r.roots() == ders(&new) && ders(&r.published.borrow()) == ders(&new)
        })
        .await;
        assert!(signed_by(&r.leaf(), &new));
    }
    wait_for("b's serving certificate re-issued", || {
        b.serving.serial_hex() != serial
    })
    .await;
    let e = a.rotate("finish").await.unwrap_err();
    assert!(e.contains("no rotation in progress"), "{e}");
    // Created once, then begin and finish: three writes, all by the holder.
    assert_eq!(api.writes_by("Secret", "a"), 3);
    assert_eq!(api.writes_by("Secret", "b"), 0);
}

fn cacerts(ca_cert: &str, ca_key: &str, root_cert: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": NS},
        "data": {"ca-cert.pem": b64(ca_cert), "ca-key.pem": b64(ca_key),
                 "root-cert.pem": b64(root_cert), "cert-chain.pem": b64(ca_cert)}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_cacerts_is_adopted_without_a_restart() {
    let api = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let (r1, k1) = Ca::new_root_pem().unwrap();
    let (r2, k2) = Ca::new_root_pem().unwrap();
    api.apply(cacerts(&r1, k1.expose(), &r1));
    let c = Replica::start(&api, dir.path(), "c", false).await;
    assert_eq!(c.roots(), ders(&r1));
    assert!(signed_by(&c.leaf(), &r1));
    let serial = c.serving.serial_hex();

    // The operator switches the signer and keeps both roots: both trusted,
    // new leaves from the new signer.
    api.apply(cacerts(&r2, k2.expose(), &format!("{r1}{r2}")));
    wait_for("both roots", || c.roots().len() == 2).await;
    assert_eq!(c.roots(), [ders(&r1), ders(&r2)].concat());
    assert!(signed_by(&c.leaf(), &r2));
    assert!(c.was_woken().await);
    assert_eq!(c.serving.serial_hex(), serial);

    // A broken Secret (the key of another certificate) changes nothing.
    api.apply(cacerts(&r2, k1.expose(), &r2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.roots().len(), 2);
    assert!(signed_by(&c.leaf(), &r2));

    // The old root leaves the Secret: dropped; the serving certificate
    // follows the signer in force.
    api.apply(cacerts(&r2, k2.expose(), &r2));
    wait_for("the old root dropped and published", || {
        c.roots() == ders(&r2) && ders(&c.published.borrow()) == ders(&r2)
    })
    .await;
    wait_for("serving certificate re-issued", || {
        c.serving.serial_hex() != serial
    })
    .await;

    // A plugged-in CA is rotated by its operator, not by rotate-root.
    c.leader.send_replace(true);
    let e = c.rotate("begin").await.unwrap_err();
    assert!(e.contains("plugged in from Secret"), "{e}");
    assert_eq!(api.writes_by("Secret", "c"), 0);
}
