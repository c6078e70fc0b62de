//! The admission webhook's `ValidatingWebhookConfiguration` (in
//! `manifests/`), kept pointing at pilotfish's CA as istiod's webhook
//! controller keeps its own: the manifest ships without a `caBundle` and
//! with `failurePolicy: Ignore` (fail open while nothing can verify the
//! webhook's certificate); the Lease holder patches in the CA's roots, and
//! switches every webhook of that one object to `failurePolicy: Fail` only
//! once the webhook is seen to work: a dry-run create of an invalid Gateway
//! is denied by it (istiod's check), so a webhook the API server cannot
//! reach never blocks config writes. It patches them back whenever someone
//! changes them (checked every [`CHECK`]).
//!
//! The webhook's serving certificate is issued by the same CA for the
//! Service's DNS name (`--webhook-dns-name`, `pilotfish.NS.svc`), so the API
//! server verifies it with this bundle.

use std::time::Duration;

use ::kube::Api;
use ::kube::api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::index::Watched;
use crate::model::Kind;

/// The object's name in `manifests/` (cluster-scoped).
pub const WEBHOOK_CONFIG: &str = "pilotfish-validator";
/// What the holder does with it: the RBAC in `manifests/` grants exactly
/// these, on that name only (tests/manifests.rs).
pub const WEBHOOK_CONFIG_VERBS: [&str; 2] = ["get", "patch"];
/// How often the holder reads the object back: one small GET; a changed
/// bundle is restored within this long (istiod reacts to a watch; a watch
/// would need list/watch on every webhook configuration in the cluster).
pub const CHECK: Duration = Duration::from_secs(10);
/// What every webhook is switched to once the webhook is seen to deny an
/// invalid object (istiod's).
pub const FAILURE_POLICY: &str = "Fail";
/// What every webhook keeps until then (the manifest's, istiod's).
pub const FAIL_OPEN: &str = "Ignore";
/// How often the holder tries the dry-run again while the webhook is not
/// seen to work yet (a pod starting, the bundle just patched in).
pub const DRY_RUN_RETRY: Duration = Duration::from_secs(2);
/// `generateName` of the dry-run Gateway: never stored, never conflicts.
pub const DRY_RUN_NAME: &str = "pilotfish-webhook-check-";
/// The verb the dry-run needs on Gateways in pilotfish's namespace (RBAC
/// cannot limit it to dry runs; tests/manifests.rs).
pub const DRY_RUN_VERBS: [&str; 1] = ["create"];

/// The merge patch that puts `roots_pem` and failure policy `policy` on
/// every webhook of `config`, or None when every webhook has them. Carries
/// the resourceVersion read: a concurrent change wins (409) and is looked at
/// again.
pub fn plan(
    config: &ValidatingWebhookConfiguration,
    roots_pem: &str,
    policy: &str,
) -> Option<Value> {
    let hooks = config.webhooks.as_deref().unwrap_or_default();
    let bundle = ByteString(roots_pem.as_bytes().to_vec());
    let right = |h: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhook| {
        h.client_config.ca_bundle.as_ref() == Some(&bundle)
            && h.failure_policy.as_deref() == Some(policy)
    };
    if hooks.iter().all(right) {
        return None;
    }
    let fixed: Vec<_> = hooks
        .iter()
        .cloned()
        .map(|mut h| {
            h.client_config.ca_bundle = Some(bundle.clone());
            h.failure_policy = Some(policy.to_string());
            h
        })
        .collect();
    // A merge patch replaces lists whole: every webhook, as read, fixed.
    Some(json!({
        "metadata": {"resourceVersion": config.metadata.resource_version},
        "webhooks": fixed,
    }))
}

/// Whether every webhook of `config` carries `roots_pem` (the API server
/// can verify the webhook).
fn has_bundle(config: &ValidatingWebhookConfiguration, roots_pem: &str) -> bool {
    let bundle = ByteString(roots_pem.as_bytes().to_vec());
    let hooks = config.webhooks.as_deref().unwrap_or_default();
    !hooks.is_empty()
        && hooks
            .iter()
            .all(|h| h.client_config.ca_bundle.as_ref() == Some(&bundle))
}

/// istiod's check that the webhook is in effect: a dry-run create of an
/// invalid Gateway (no servers) in `namespace`. Ok(true) when the API
/// server says a webhook denied it; Ok(false) when it was accepted (the
/// webhook not called, or failing open); Err for anything else (RBAC, the
/// CRD missing, the API server unreachable).
pub async fn invalid_config_rejected(
    client: &::kube::Client,
    namespace: &str,
) -> Result<bool, String> {
    let ar = Watched::Istio(Kind::Gateway).api_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let mut gateway = DynamicObject::new("", &ar).data(json!({"spec": {}}));
    gateway.metadata = ObjectMeta {
        generate_name: Some(DRY_RUN_NAME.to_string()),
        namespace: Some(namespace.to_string()),
        ..ObjectMeta::default()
    };
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&pp, &gateway).await {
        Ok(_) => Ok(false),
        Err(::kube::Error::Api(s)) if s.message.contains("denied the request") => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}

/// Keeps the caBundle of `name` equal to the latest `roots` while this
/// replica holds the Lease (checked right before each write), and its
/// failure policy `Ignore` until a dry-run of an invalid Gateway in
/// `namespace` is denied by the webhook, `Fail` from then on. Reads the
/// object when the replica becomes the holder and every `every` (every
/// [`DRY_RUN_RETRY`] until the check passed). Runs until `leader` closes.
pub async fn keep_ca_bundle(
    client: ::kube::Client,
    name: String,
    namespace: String,
    mut roots: watch::Receiver<String>,
    mut leader: watch::Receiver<bool>,
    every: Duration,
) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut missing_logged = false;
    // The webhook denied an invalid object once: it works (istiod also
    // checks only until it does).
    let mut verified = false;
    loop {
        let roots_pem = roots.borrow_and_update().clone();
        let mut wait = every;
        if *leader.borrow_and_update() {
            match api.get_opt(&name).await {
                Ok(None) if !missing_logged => {
                    missing_logged = true;
                    warn!(%name, "ValidatingWebhookConfiguration not found (apply manifests/); the API server does not call the webhook");
                }
                Ok(None) => {}
                Ok(Some(config)) => {
                    missing_logged = false;
                    // Without the bundle the API server cannot call it.
                    if !verified && has_bundle(&config, &roots_pem) {
                        match invalid_config_rejected(&client, &namespace).await {
                            Ok(true) => {
                                verified = true;
                                info!(%name, "the webhook denied a dry-run of an invalid Gateway: switching it to fail closed");
                            }
                            Ok(false) => {
                                debug!(%name, "a dry-run of an invalid Gateway was accepted: the webhook is not in effect yet; it stays fail-open")
                            }
                            Err(e) => {
                                warn!(%name, error = %e, "the dry-run check of the webhook failed; it stays fail-open")
                            }
                        }
                    }
                    if !verified {
                        wait = every.min(DRY_RUN_RETRY);
                    }
                    let policy = if verified { FAILURE_POLICY } else { FAIL_OPEN };
                    if let Some(patch) = plan(&config, &roots_pem, policy)
                        && *leader.borrow()
                    {
                        match api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => {
                                info!(%name, failure_policy = policy, "patched the webhook's caBundle and failure policy (Lease holder)")
                            }
                            Err(e) => {
                                warn!(%name, error = %e, "patching the webhook's caBundle failed; retrying")
                            }
                        }
                        // Read back soon: confirms the write, or retries it.
                        wait = every.min(Duration::from_secs(1));
                    }
                }
                Err(e) => {
                    warn!(%name, error = %e, "reading the ValidatingWebhookConfiguration failed")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = leader.changed() => if changed.is_err() { return },
            changed = roots.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bundle: Option<&str>, policy: &str) -> ValidatingWebhookConfiguration {
        let mut hook = json!({
            "name": "validation.pilotfish.io", "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "failurePolicy": policy,
            "clientConfig": {"service": {"name": "pilotfish", "namespace": "istio-system",
                                         "path": "/validate", "port": 443}},
        });
        if let Some(b) = bundle {
            hook["clientConfig"]["caBundle"] = json!(base64(b));
        }
        serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIG, "resourceVersion": "5"},
            "webhooks": [hook],
        }))
        .unwrap()
    }

    fn base64(s: &str) -> String {
        serde_json::to_value(ByteString(s.as_bytes().to_vec()))
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_bundle_and_the_policy_are_patched_in_once() {
        let p = plan(&config(None, "Ignore"), ROOT, FAIL_OPEN).expect("a patch");
        assert_eq!(p["metadata"]["resourceVersion"], "5");
        let hook = &p["webhooks"][0];
        assert_eq!(hook["clientConfig"]["caBundle"], base64(ROOT));
        assert_eq!(hook["failurePolicy"], "Ignore");
        // Everything else in the webhook is kept as read.
        assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
        assert_eq!(hook["name"], "validation.pilotfish.io");
        assert!(has_bundle(&config(Some(ROOT), "Ignore"), ROOT));
        assert!(!has_bundle(&config(None, "Ignore"), ROOT));
        assert_eq!(plan(&config(Some(ROOT), "Ignore"), ROOT, FAIL_OPEN), None);
        // Once the webhook is seen to work: fail closed.
        let p = plan(&config(Some(ROOT), "Ignore"), ROOT, FAILURE_POLICY).expect("a patch");
        assert_eq!(p["webhooks"][0]["failurePolicy"], "Fail");
        assert_eq!(
            plan(&config(Some(ROOT), "Fail"), ROOT, FAILURE_POLICY),
            None
        );
        // Someone changed the bundle, or the policy: patched back.
        assert!(plan(&config(Some("other"), "Fail"), ROOT, FAILURE_POLICY).is_some());
        assert!(plan(&config(Some(ROOT), "Fail"), ROOT, FAIL_OPEN).is_some());
    }
}
