//! The CA's root of trust in Kubernetes, shared by every replica through the
//! API server, as istiod keeps it:
//!
//! * Istio's `cacerts` Secret in pilotfish's namespace (`ca-cert.pem`,
//!   `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`) when the operator
//!   plugged a CA in;
//! * otherwise the self-signed root in `istio-ca-secret` (istiod's Secret:
//!   `ca-cert.pem`, `ca-key.pem`), created ONCE by the replica holding the
//!   Lease; the others wait until it exists and read it. Creation is a
//!   create (never a replace), so of two writers one gets `409` and reads
//!   the winner's root.
//!
//! The public root goes into the `istio-ca-root-cert` ConfigMap of every
//! namespace (`root_configmap.rs`, written by the Lease holder only), where
//! `pilotfish bootstrap --kubernetes` reads it: bootstrapping a proxy needs
//! no Secret access.

use std::collections::BTreeMap;
use std::time::Duration;

use ::kube::Api;
use ::kube::api::{ObjectMeta, PostParams};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use tokio::sync::watch;
use tracing::{info, warn};

use super::KubeError;
use crate::ca::{Ca, Secret as KeyText};

/// Istio's plugged-in CA Secret.
pub const CACERTS_SECRET: &str = "cacerts";
/// istiod's self-signed CA Secret.
pub const CA_SECRET: &str = "istio-ca-secret";
/// The ConfigMap holding the trust bundle (public).
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
pub const ROOT_CONFIGMAP_KEY: &str = "root-cert.pem";
/// The type istiod gives its CA Secret.
const CA_SECRET_TYPE: &str = "istio.io/ca-root";

/// How often a replica waiting for the holder's CA Secret looks again: a
/// few cheap GETs; a follower waits at most this long after the Secret
/// appears.
pub const POLL: Duration = Duration::from_secs(1);

fn ca_err(message: String) -> KubeError {
    KubeError::Ca(message)
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let data = secret.data.as_ref()?;
    let bytes = data.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn source(namespace: &str, name: &str) -> String {
    format!("Secret {namespace}/{name}")
}

/// The CA from `cacerts`, if that Secret exists.
fn from_cacerts(secret: &Secret, namespace: &str, trust_domain: &str) -> Result<Ca, KubeError> {
    let src = source(namespace, CACERTS_SECRET);
    let field = |key: &str| {
        text(secret, key).ok_or_else(|| ca_err(format!("{src}: no {key} (Istio's cacerts keys: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)")))
    };
    Ca::from_cacerts_pem(
        &src,
        field("ca-cert.pem")?,
        KeyText::new(field("ca-key.pem")?),
        field("root-cert.pem")?,
        field("cert-chain.pem")?,
        trust_domain,
    )
    .map_err(|e| ca_err(e.to_string()))
}

fn from_ca_secret(secret: &Secret, namespace: &str, trust_domain: &str) -> Result<Ca, KubeError> {
    let src = source(namespace, CA_SECRET);
    let (Some(cert), Some(key)) = (text(secret, "ca-cert.pem"), text(secret, "ca-key.pem")) else {
        return Err(ca_err(format!("{src}: needs ca-cert.pem and ca-key.pem")));
    };
    Ca::from_root_pem(&src, cert, KeyText::new(key), trust_domain)
        .map_err(|e| ca_err(e.to_string()))
}

fn api_err(what: &str) -> impl FnOnce(::kube::Error) -> KubeError + '_ {
    move |e| ca_err(format!("{what}: {e}"))
}

/// The Secret istiod would write for a new self-signed root.
fn new_ca_secret(namespace: &str) -> Result<Secret, KubeError> {
    let (cert, key) = Ca::new_root_pem().map_err(|e| ca_err(e.to_string()))?;
    let data: BTreeMap<String, ByteString> = [
        ("ca-cert.pem", cert.into_bytes()),
        ("ca-key.pem", key.expose().as_bytes().to_vec()),
        ("cert-chain.pem", Vec::new()),
        ("root-cert.pem", Vec::new()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v)))
    .collect();
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        type_: Some(CA_SECRET_TYPE.to_string()),
        data: Some(data),
        ..Secret::default()
    })
}

/// The CA every replica shares: `cacerts` if present, else
/// `istio-ca-secret`, created by the Lease holder when missing. Waits
/// (polling) while neither exists and this replica does not hold the Lease.
pub async fn load(
    client: ::kube::Client,
    namespace: &str,
    trust_domain: &str,
    mut leader: watch::Receiver<bool>,
) -> Result<Ca, KubeError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let mut waiting_logged = false;
    loop {
        let plugged = api
            .get_opt(CACERTS_SECRET)
            .await
            .map_err(api_err("reading Secret cacerts"))?;
        if let Some(s) = plugged {
            info!(%namespace, "plugged-in CA from Secret cacerts");
            return from_cacerts(&s, namespace, trust_domain);
        }
        let own = api
            .get_opt(CA_SECRET)
            .await
            .map_err(api_err("reading Secret istio-ca-secret"))?;
        if let Some(s) = own {
            info!(%namespace, "self-signed root CA from Secret {CA_SECRET}");
            return from_ca_secret(&s, namespace, trust_domain);
        }
        // Checked right before the write: only the holder creates it.
        if *leader.borrow_and_update() {
            match api
                .create(&PostParams::default(), &new_ca_secret(namespace)?)
                .await
            {
                Ok(s) => {
                    info!(%namespace, "created a self-signed root CA in Secret {CA_SECRET} (Lease holder)");
                    return from_ca_secret(&s, namespace, trust_domain);
                }
                // Someone else created it meanwhile: read theirs.
                Err(::kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    warn!(error = %e, "creating Secret {CA_SECRET} failed; retrying");
                }
            }
        } else if !waiting_logged {
            waiting_logged = true;
            info!(%namespace, "no Secret cacerts or {CA_SECRET} yet; waiting for the Lease holder to create the root CA");
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = leader.changed() => {}
        }
    }
}

/// How long `read_root` waits for the ConfigMap (a pod's init container may
/// start before pilotfish has published it).
pub const ROOT_WAIT: Duration = Duration::from_secs(30);

/// The trust bundle from the `istio-ca-root-cert` ConfigMap (what `pilotfish
/// bootstrap --kubernetes` puts in a proxy's bootstrap), waiting up to
/// [`ROOT_WAIT`] for it to appear.
pub async fn read_root(client: ::kube::Client, namespace: &str) -> Result<String, KubeError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let until = tokio::time::Instant::now() + ROOT_WAIT;
    let cm = loop {
        let got = api
            .get_opt(ROOT_CONFIGMAP)
            .await
            .map_err(api_err("reading ConfigMap istio-ca-root-cert"))?;
        match got {
            Some(cm) => break cm,
            None if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            None => {
                return Err(ca_err(format!(
                    "ConfigMap {namespace}/{ROOT_CONFIGMAP} not found after {ROOT_WAIT:?} (pilotfish serve --kubernetes publishes it)"
                )));
            }
        }
    };
    cm.data
        .and_then(|mut d| d.remove(ROOT_CONFIGMAP_KEY))
        .filter(|r| r.contains("-----BEGIN CERTIFICATE-----"))
        .ok_or_else(|| {
            ca_err(format!(
                "ConfigMap {namespace}/{ROOT_CONFIGMAP} has no PEM {ROOT_CONFIGMAP_KEY}"
            ))
        })
}
