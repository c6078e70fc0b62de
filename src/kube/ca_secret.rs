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
//!
//! Every replica watches both Secrets ([`follow`]) and adopts a changed
//! one without a restart: the trust bundle is what the Secret's
//! `root-cert.pem` holds (plus the signing root), so a switch trusts old and
//! new roots while the Secret carries both, and drops the old one when it no
//! longer does. The self-signed root is rotated by the Lease holder
//! ([`rotate`], behind `pilotfish rotate-root`): `begin` writes a new root
//! with the old one kept in `root-cert.pem`, `finish` leaves only the new.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::kube::Api;
use ::kube::api::{ObjectMeta, PostParams};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::KubeError;
use crate::ca::serving::ServingCert;
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
    let bundle = text(secret, "root-cert.pem").unwrap_or_default();
    Ca::from_root_pem(&src, cert, KeyText::new(key), &bundle, trust_domain)
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

/// What a replica follows the CA Secrets with.
pub struct Follower {
    pub client: ::kube::Client,
    pub namespace: String,
    pub trust_domain: String,
    /// The CA every role shares; changed in place.
    pub ca: Arc<Ca>,
    /// Woken after a change, so SDS re-issues leaves and bundles at once.
    pub roots_changed: Arc<Notify>,
    /// The trust bundle, for the root ConfigMaps and the webhook's caBundle.
    pub roots: watch::Sender<String>,
    /// pilotfish's own serving certificates, re-issued when a root they may
    /// chain to leaves the bundle.
    pub serving: Vec<Arc<ServingCert>>,
    pub metrics: crate::metrics::Metrics,
}

/// One Secret's watcher: it alone, by field selector (what RBAC by name allows).
fn watch_one(
    api: &Api<Secret>,
    name: &'static str,
) -> impl futures_util::Stream<Item = (&'static str, Result<Event<Secret>, watcher::Error>)> + use<>
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher::watcher(api.clone(), config)
        .default_backoff()
        .map(move |e| (name, e))
}

/// Watches `cacerts` and `istio-ca-secret` and adopts whichever is in
/// force (`cacerts` first) when it changes. A Secret that does not make a
/// valid CA is reported and the CA in force is kept. Runs until the
/// process ends.
pub async fn follow(f: Follower) {
    let api: Api<Secret> = Api::namespaced(f.client.clone(), &f.namespace);
    let mut events =
        futures_util::stream::select(watch_one(&api, CACERTS_SECRET), watch_one(&api, CA_SECRET))
            .boxed();
    // The last seen version of each, once its first list is done.
    let mut seen: BTreeMap<&'static str, Option<Secret>> = BTreeMap::new();
    let mut listing: BTreeMap<&'static str, Option<Secret>> = BTreeMap::new();
    while let Some((name, ev)) = events.next().await {
        let named = |s: &Secret| s.metadata.name.as_deref() == Some(name);
        match ev {
            Ok(Event::Init) => {
                listing.insert(name, None);
                continue;
            }
            Ok(Event::InitApply(s)) => {
                if named(&s) {
                    listing.insert(name, Some(s));
                }
                continue;
            }
            Ok(Event::InitDone) => {
                seen.insert(name, listing.remove(name).flatten());
            }
            Ok(Event::Apply(s)) if named(&s) => {
                seen.insert(name, Some(s));
            }
            Ok(Event::Delete(s)) if named(&s) => {
                seen.insert(name, None);
            }
            Ok(_) => continue,
            Err(e) => {
                warn!(error = %e, secret = name, "watching the CA Secret failed; retrying with backoff");
                continue;
            }
        }
        if seen.len() < 2 {
            continue; // Both listed once before deciding.
        }
        let next = match (&seen[CACERTS_SECRET], &seen[CA_SECRET]) {
            (Some(s), _) => from_cacerts(s, &f.namespace, &f.trust_domain),
            (None, Some(s)) => from_ca_secret(s, &f.namespace, &f.trust_domain),
            (None, None) => {
                warn!(namespace = %f.namespace, "neither Secret {CACERTS_SECRET} nor {CA_SECRET} exists; keeping the CA in force");
                continue;
            }
        };
        let next = match next {
            Ok(ca) => ca,
            Err(e) => {
                warn!(error = %e, "the changed CA Secret is not usable; keeping the CA in force");
                continue;
            }
        };
        match f.ca.adopt(next) {
            Ok(change) if change.any() => {
                let roots = f.ca.roots_pem();
                info!(
                    secret = if seen[CACERTS_SECRET].is_some() {
                        CACERTS_SECRET
                    } else {
                        CA_SECRET
                    },
                    signer = change.signer,
                    roots_added = change.roots_added,
                    roots_dropped = change.roots_dropped,
                    roots = roots.matches("BEGIN CERTIFICATE").count(),
                    "CA Secret changed: adopted"
                );
                // Proxies and publishers first, then our own serving
                // certificates.
                f.metrics.record_ca_expiry(&f.ca);
                f.roots.send_replace(roots);
                f.roots_changed.notify_one();
                if change.roots_dropped {
                    // Our serving certificates may chain to the root just
                    // dropped: issue them again from the signer in force.
                    for s in &f.serving {
                        let s = Arc::clone(s);
                        match tokio::task::spawn_blocking(move || s.reissue()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                warn!(error = %e, "re-issuing a serving certificate failed")
                            }
                            Err(e) => {
                                warn!(error = %e, "re-issuing a serving certificate panicked")
                            }
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "the changed CA Secret cannot be adopted"),
        }
    }
}

/// A step of rotating the self-signed root in `istio-ca-secret`, written
/// by the Lease holder (checked right before the write); every replica
/// adopts the result through [`follow`]. `begin`: a new root signs, the
/// old one stays in `root-cert.pem`; `finish`: only the signing root is
/// left. Returns how many roots the Secret now trusts.
pub async fn rotate(
    client: ::kube::Client,
    namespace: &str,
    step: &str,
    leader: &watch::Receiver<bool>,
) -> Result<usize, KubeError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    if api
        .get_opt(CACERTS_SECRET)
        .await
        .map_err(api_err("reading Secret cacerts"))?
        .is_some()
    {
        return Err(ca_err(format!(
            "the CA is plugged in from Secret {namespace}/{CACERTS_SECRET}: rotate it by editing that Secret (keep the old and new roots in root-cert.pem while workloads move over)"
        )));
    }
    let mut secret = api
        .get_opt(CA_SECRET)
        .await
        .map_err(api_err("reading Secret istio-ca-secret"))?
        .ok_or_else(|| ca_err(format!("Secret {namespace}/{CA_SECRET} does not exist yet")))?;
    let src = source(namespace, CA_SECRET);
    let cert =
        text(&secret, "ca-cert.pem").ok_or_else(|| ca_err(format!("{src}: no ca-cert.pem")))?;
    let bundle = text(&secret, "root-cert.pem").unwrap_or_default();
    let others =
        crate::ca::other_roots(&cert, &bundle).map_err(|e| ca_err(format!("{src}: {e}")))?;
    let (data, roots): (Vec<(&str, Vec<u8>)>, usize) = match step {
        "begin" if !others.is_empty() => {
            return Err(ca_err(format!(
                "{src}: a rotation is already in progress (root-cert.pem holds {} other root(s)); finish it first",
                others.len()
            )));
        }
        "begin" => {
            let (new_cert, new_key) = Ca::new_root_pem().map_err(|e| ca_err(e.to_string()))?;
            let bundle = format!("{new_cert}{cert}");
            (
                vec![
                    ("ca-cert.pem", new_cert.into_bytes()),
                    ("ca-key.pem", new_key.expose().as_bytes().to_vec()),
                    ("root-cert.pem", bundle.into_bytes()),
                ],
                2,
            )
        }
        "finish" if others.is_empty() => {
            return Err(ca_err(format!(
                "{src}: no rotation in progress; begin one first"
            )));
        }
        "finish" => (vec![("root-cert.pem", cert.into_bytes())], 1),
        other => return Err(ca_err(format!("unknown step {other:?}: begin or finish"))),
    };
    let map = secret.data.get_or_insert_with(BTreeMap::new);
    for (k, v) in data {
        map.insert(k.to_string(), ByteString(v));
    }
    if !*leader.borrow() {
        return Err(ca_err(
            "this replica does not hold the Lease; run rotate-root against the one that does (pilotfish_leader 1)".to_string(),
        ));
    }
    // A replace on the resourceVersion read: a concurrent change gets 409.
    api.replace(CA_SECRET, &PostParams::default(), &secret)
        .await
        .map_err(api_err("writing Secret istio-ca-secret"))?;
    info!(%namespace, step, "root rotation step written to Secret {CA_SECRET} (Lease holder)");
    Ok(roots)
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
