//! xDS client authentication in Kubernetes: a proxy presents its pod's
//! projected ServiceAccount token, and the API server says whose it is
//! (`authentication.k8s.io/v1` TokenReview, with the audience pilotfish
//! expects, `istio-ca` by default as Istio's). The user
//! `system:serviceaccount:NS:SA` becomes the claims; the pod name comes from
//! the review's `authentication.kubernetes.io/pod-name` extra (or the token's
//! own `kubernetes.io.pod.name` claim, trusted once the API server has
//! verified the token). With a pod name the proxy may only be that pod;
//! without, any workload of that service account in that namespace.
//!
//! Reviews are cached briefly (by a hash of the token, never the token
//! itself), so thousands of proxies reconnecting at once cost one review
//! each, not one per stream and sink.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::kube::Api;
use ::kube::api::PostParams;
use base64::Engine;
use futures_util::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};

use crate::ca::auth::Reviewer;
use crate::ca::token::{Claims, TokenError};

/// How long a review's answer is reused: short, so a deleted pod or
/// service account loses access within seconds, long enough to absorb a
/// reconnect storm (each proxy opens ADS and two telemetry streams).
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Refusals are remembered for less: a token just issued may not be known
/// to every API server yet.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// At most this many reviews are kept (a few hundred bytes each).
pub const CACHE_MAX: usize = 10_000;

const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const SA_PREFIX: &str = "system:serviceaccount:";

type Key = [u8; 32];
/// Reviews by token hash: until when the answer holds, and the answer.
type Cache = HashMap<Key, (Instant, Result<Claims, TokenError>)>;

pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    cache: Arc<Mutex<Cache>>,
}

impl TokenReviewer {
    pub fn new(client: ::kube::Client, audience: String) -> TokenReviewer {
        TokenReviewer {
            api: Api::all(client),
            audience,
            cache: Arc::default(),
        }
    }
}

fn key(token: &str) -> Key {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// The JWT's payload, unverified (only read after the API server accepted it).
fn payload(token: &str) -> Option<serde_json::Value> {
    let part = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The claims a successful review for `audience` gives.
pub fn claims_of(review: &TokenReview, token: &str, audience: &str) -> Result<Claims, TokenError> {
    let status = review.status.clone().unwrap_or_default();
    if status.authenticated != Some(true) {
        let why = status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "not authenticated".into());
        return Err(TokenError::Rejected(why));
    }
    // The Kubernetes API: a client that sets `spec.audiences` must check
    // that `status.audiences` names one of them. An empty list means the
    // token is valid for the API server's own audience only (an
    // authenticator that ignores audiences), not for pilotfish.
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(TokenError::Rejected(format!(
            "the token is authenticated for audiences {audiences:?}, not {audience:?}"
        )));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, service_account)) = username
        .strip_prefix(SA_PREFIX)
        .and_then(|r| r.split_once(':'))
    else {
        return Err(TokenError::NotServiceAccount(username));
    };
    let jwt = payload(token);
    let pod = user
        .extra
        .as_ref()
        .and_then(|e| e.get(POD_NAME_EXTRA))
        .and_then(|v| v.first().cloned())
        .or_else(|| {
            jwt.as_ref()?["kubernetes.io"]["pod"]["name"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    let exp = jwt.as_ref().and_then(|p| p["exp"].as_u64()).unwrap_or(0);
    Ok(Claims {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        workload: pod,
        exp,
    })
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Reviewer for TokenReviewer {
    fn review(&self, token: String) -> BoxFuture<'static, Result<Claims, TokenError>> {
        let k = key(&token);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(&k)
                .filter(|(until, _)| Instant::now() < *until)
                .map(|(_, r)| r.clone())
        };
        let (api, audience_wanted, cache) = (
            self.api.clone(),
            self.audience.clone(),
            Arc::clone(&self.cache),
        );
        Box::pin(async move {
            if let Some(r) = cached {
                // An expired token is refused even while its review is cached.
                return match r {
                    Ok(c) if c.exp != 0 && c.exp <= now_unix() => Err(TokenError::Expired),
                    r => r,
                };
            }
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.clone()),
                    audiences: Some(vec![audience_wanted.clone()]),
                },
                ..TokenReview::default()
            };
            let answer = match api.create(&PostParams::default(), &review).await {
                Ok(a) => a,
                // Not cached: the next attempt asks again.
                Err(e) => return Err(TokenError::Review(e.to_string())),
            };
            let result = claims_of(&answer, &token, &audience_wanted);
            let mut ttl = if result.is_ok() {
                CACHE_TTL
            } else {
                NEGATIVE_TTL
            };
            if let Ok(c) = &result
                && c.exp != 0
            {
                ttl = ttl.min(Duration::from_secs(c.exp.saturating_sub(now_unix())));
            }
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_MAX {
                let now = Instant::now();
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(k, (Instant::now() + ttl, result.clone()));
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_review(v: serde_json::Value) -> TokenReview {
        serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}, "status": v})).unwrap()
    }

    fn mk_jwt(payload: serde_json::Value) -> String {
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b(br#"{"alg":"RS256"}"#),
            b(payload.to_string().as_bytes())
        )
    }

    #[test]
    fn a_service_account_with_its_pod() {
        let r = mk_review(
            json!({"authenticated": true, "audiences": ["istio-ca"], "user": {
            "username": "system:serviceaccount:default:bookinfo-reviews",
            "extra": {"authentication.kubernetes.io/pod-name": ["reviews-v1-5d8f9"]}}}),
        );
        let c = claims_of(&r, "a.b.c", "istio-ca").unwrap();
        assert_eq!(
            (
                c.namespace.as_str(),
                c.service_account.as_str(),
                c.workload.as_str()
            ),
            ("default", "bookinfo-reviews", "reviews-v1-5d8f9")
        );
    }

    #[test]
    fn the_pod_from_the_tokens_own_claims_and_none_without() {
        let r = mk_review(
            json!({"authenticated": true, "audiences": ["istio-ca"], "user": {
            "username": "system:serviceaccount:ns1:sa1"}}),
        );
        let t = mk_jwt(json!({"exp": 4_000_000_000u64, "kubernetes.io": {"pod": {"name": "p-1"}}}));
        let c = claims_of(&r, &t, "istio-ca").unwrap();
        assert_eq!((c.workload.as_str(), c.exp), ("p-1", 4_000_000_000));
        // A legacy (Secret-based) token names no pod: any workload of the SA.
        let c = claims_of(&r, &mk_jwt(json!({"sub": "x"})), "istio-ca").unwrap();
        assert_eq!(c.workload, "");
    }

    #[test]
    fn refusals() {
        let r = mk_review(
            json!({"authenticated": false, "error": "token audiences [\"api\"] is invalid for the target audiences [\"istio-ca\"]"}),
        );
        assert!(
            matches!(claims_of(&r, "a.b.c", "istio-ca"), Err(TokenError::Rejected(m)) if m.contains("audiences"))
        );
        let r = mk_review(
            json!({"authenticated": true, "audiences": ["istio-ca"], "user": {"username": "alice"}}),
        );
        assert_eq!(
            claims_of(&r, "a.b.c", "istio-ca"),
            Err(TokenError::NotServiceAccount("alice".into()))
        );
        let r = mk_review(json!({}));
        assert!(matches!(
            claims_of(&r, "a.b.c", "istio-ca"),
            Err(TokenError::Rejected(_))
        ));
        // Authenticated, but not for pilotfish's audience: an API server
        // that ignores audiences answers with none (the token is only good
        // for the API server itself).
        for audiences in [json!([]), json!(["api"]), serde_json::Value::Null] {
            let r = mk_review(
                json!({"authenticated": true, "audiences": audiences, "user": {
                "username": "system:serviceaccount:ns1:sa1"}}),
            );
            assert!(
                matches!(claims_of(&r, "a.b.c", "istio-ca"), Err(TokenError::Rejected(m)) if m.contains("istio-ca")),
                "{audiences}"
            );
        }
    }
}
