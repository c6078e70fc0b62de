//! The admission webhook's `ValidatingWebhookConfiguration` (in
//! `manifests/`), kept pointing at pilotfish's CA as istiod's webhook
//! controller keeps its own: the manifest ships without a `caBundle` and
//! with `failurePolicy: Ignore` (fail open while nothing can verify the
//! webhook's certificate); the Lease holder patches in the CA's roots and
//! `failurePolicy: Fail` on every webhook of that one object, and patches
//! them back whenever someone changes them (checked every [`CHECK`]).
//!
//! The webhook's serving certificate is issued by the same CA for the
//! Service's DNS name (`--webhook-dns-name`, `pilotfish.NS.svc`), so the API
//! server verifies it with this bundle.

use std::time::Duration;

use ::kube::Api;
use ::kube::api::{Patch, PatchParams};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{info, warn};

/// The object's name in `manifests/` (cluster-scoped).
pub const WEBHOOK_CONFIG: &str = "pilotfish-validator";
/// What the holder does with it: the RBAC in `manifests/` grants exactly
/// these, on that name only (tests/manifests.rs).
pub const WEBHOOK_CONFIG_VERBS: [&str; 2] = ["get", "patch"];
/// How often the holder reads the object back: one small GET; a changed
/// bundle is restored within this long (istiod reacts to a watch; a watch
/// would need list/watch on every webhook configuration in the cluster).
pub const CHECK: Duration = Duration::from_secs(10);
/// What every webhook is switched to once the bundle is in (istiod's).
pub const FAILURE_POLICY: &str = "Fail";

/// The merge patch that puts `roots_pem` and [`FAILURE_POLICY`] on every
/// webhook of `config`, or None when every webhook has them. Carries the
/// resourceVersion read: a concurrent change wins (409) and is looked at
/// again.
pub fn plan(config: &ValidatingWebhookConfiguration, roots_pem: &str) -> Option<Value> {
    let hooks = config.webhooks.as_deref().unwrap_or_default();
    let bundle = ByteString(roots_pem.as_bytes().to_vec());
    let right = |h: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhook| {
        h.client_config.ca_bundle.as_ref() == Some(&bundle)
            && h.failure_policy.as_deref() == Some(FAILURE_POLICY)
    };
    if hooks.iter().all(right) {
        return None;
    }
    let fixed: Vec<_> = hooks
        .iter()
        .cloned()
        .map(|mut h| {
            h.client_config.ca_bundle = Some(bundle.clone());
            h.failure_policy = Some(FAILURE_POLICY.to_string());
            h
        })
        .collect();
    // A merge patch replaces lists whole: every webhook, as read, fixed.
    Some(json!({
        "metadata": {"resourceVersion": config.metadata.resource_version},
        "webhooks": fixed,
    }))
}

/// Keeps the caBundle of `name` equal to the latest `roots` while this replica
/// holds the Lease (checked right before each write); reads it when the
/// replica becomes the holder and every `every`. Runs until `leader` closes.
pub async fn keep_ca_bundle(
    client: ::kube::Client,
    name: String,
    mut roots: watch::Receiver<String>,
    mut leader: watch::Receiver<bool>,
    every: Duration,
) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let mut missing_logged = false;
    loop {
        let roots_pem = roots.borrow_and_update().clone();
        if *leader.borrow_and_update() {
            match api.get_opt(&name).await {
                Ok(None) if !missing_logged => {
                    missing_logged = true;
                    warn!(%name, "ValidatingWebhookConfiguration not found (apply manifests/); the API server does not call the webhook");
                }
                Ok(None) => {}
                Ok(Some(config)) => {
                    missing_logged = false;
                    if let Some(patch) = plan(&config, &roots_pem)
                        && *leader.borrow()
                    {
                        match api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => {
                                info!(%name, "patched the webhook's caBundle with the CA root (Lease holder)")
                            }
                            Err(e) => {
                                warn!(%name, error = %e, "patching the webhook's caBundle failed; retrying")
                            }
                        }
                        // Read back soon: confirms the write, or retries it.
                        tokio::select! {
                            _ = tokio::time::sleep(every.min(Duration::from_secs(1))) => {}
                            changed = leader.changed() => if changed.is_err() { return },
                            changed = roots.changed() => if changed.is_err() { return },
                        }
                        continue;
                    }
                }
                Err(e) => {
                    warn!(%name, error = %e, "reading the ValidatingWebhookConfiguration failed")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
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
    fn the_bundle_and_fail_closed_are_patched_in_once() {
        let p = plan(&config(None, "Ignore"), ROOT).expect("a patch");
        assert_eq!(p["metadata"]["resourceVersion"], "5");
        let hook = &p["webhooks"][0];
        assert_eq!(hook["clientConfig"]["caBundle"], base64(ROOT));
        assert_eq!(hook["failurePolicy"], "Fail");
        // Everything else in the webhook is kept as read.
        assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
        assert_eq!(hook["name"], "validation.pilotfish.io");
        assert_eq!(plan(&config(Some(ROOT), "Fail"), ROOT), None);
        // Someone changed the bundle, or the policy: patched back.
        assert!(plan(&config(Some("other"), "Fail"), ROOT).is_some());
        assert!(plan(&config(Some(ROOT), "Ignore"), ROOT).is_some());
    }
}
