//! xDS credentials: tokens pilotfish signs for one workload, carried by Envoy
//! as gRPC metadata (`authorization: Bearer ...`) on its ADS stream.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256)`, keyed by a
//! 256-bit secret kept in the state directory (mode 0600). It binds
//! namespace, service account and workload, and expires.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// File (in the state directory) holding the token signing key.
pub const TOKEN_KEY_FILE: &str = "xds-token.key";
const KEY_BYTES: usize = 32;

/// Who a token speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub namespace: String,
    pub service_account: String,
    /// The workload (pod); empty for a ServiceAccount token that names no
    /// pod: then any workload running as `service_account` (see [`Claims::allows`]).
    pub workload: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

impl Claims {
    /// Whether a proxy holding these claims may be `workload`, whose
    /// service account is `workload_sa` (None: unknown workload).
    pub fn allows(&self, workload: &crate::model::WorkloadKey, workload_sa: Option<&str>) -> bool {
        if self.namespace != workload.namespace {
            return false;
        }
        if self.workload.is_empty() {
            return workload_sa == Some(self.service_account.as_str());
        }
        self.workload == workload.name
    }
}

/// Why a token was refused (shown to the refused proxy and logged).
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error(
        "no credential: the bootstrap must send `authorization: Bearer <token>` (pilotfish bootstrap adds it)"
    )]
    Missing,
    #[error("malformed credential")]
    Malformed,
    #[error("credential signature does not verify (forged, or from another pilotfish)")]
    BadSignature,
    #[error("credential expired; regenerate the bootstrap")]
    Expired,
    #[error("ServiceAccount token rejected by the API server: {0}")]
    Rejected(String),
    #[error("ServiceAccount token not checked: TokenReview failed: {0}")]
    Review(String),
    #[error("the token is not a ServiceAccount's (user {0:?})")]
    NotServiceAccount(String),
    #[error("token key {path}: {message}")]
    Key { path: String, message: String },
}

/// Signs and verifies tokens.
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKey {
    /// The key in `state_dir`, created (mode 0600) on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<TokenKey, TokenError> {
        let path = state_dir.join(TOKEN_KEY_FILE);
        let err = |message: String| TokenError::Key {
            path: path.display().to_string(),
            message,
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::create_dir_all(state_dir).map_err(|e| err(e.to_string()))?;
                let mut b = vec![0u8; KEY_BYTES];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                    .map_err(|_| err("no randomness".into()))?;
                let tmp = state_dir.join(format!("{TOKEN_KEY_FILE}.new"));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| err(e.to_string()))?;
                f.write_all(&b).map_err(|e| err(e.to_string()))?;
                f.sync_all().map_err(|e| err(e.to_string()))?;
                // If another process created it meanwhile, keep theirs.
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&tmp);
                        b
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(&tmp);
                        std::fs::read(&path).map_err(|e| err(e.to_string()))?
                    }
                }
            }
            Err(e) => return Err(err(e.to_string())),
        };
        if bytes.len() != KEY_BYTES {
            return Err(err(format!(
                "expected {KEY_BYTES} bytes, found {}",
                bytes.len()
            )));
        }
        Ok(TokenKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// A token for `claims` (whose `exp` is set from `ttl`).
    pub fn sign(&self, mut claims: Claims, ttl: Duration) -> String {
        claims.exp = unix(SystemTime::now() + ttl);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of a valid, unexpired token.
    /// Verifies an `authorization` header value (`Bearer <token>`).
    pub fn verify_header(
        &self,
        header: Option<&str>,
        now: SystemTime,
    ) -> Result<Claims, TokenError> {
        match header.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) => self.verify(t, now),
            None => Err(TokenError::Missing),
        }
    }

    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, payload.as_bytes(), &sig).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= unix(now) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    fn mk_claims(workload: &str) -> Claims {
        Claims {
            namespace: "default".into(),
            service_account: "reviews".into(),
            workload: workload.into(),
            exp: 0,
        }
    }

    #[test]
    fn sign_verify_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let key = TokenKey::load_or_create(dir.path()).unwrap();
        let t = key.sign(mk_claims("reviews-v1"), Duration::from_secs(60));
        let c = key.verify(&t, SystemTime::now()).unwrap();
        assert_eq!(c.workload, "reviews-v1");
        // Expired.
        assert_eq!(
            key.verify(&t, SystemTime::now() + Duration::from_secs(120)),
            Err(TokenError::Expired)
        );
        // Tampered payload (claims another workload).
        let (_, sig) = t.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                exp: u64::MAX,
                ..mk_claims("ratings-v1")
            })
            .unwrap(),
        );
        assert_eq!(
            key.verify(&format!("{forged_payload}.{sig}"), SystemTime::now()),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            key.verify("garbage", SystemTime::now()),
            Err(TokenError::Malformed)
        );
        // Another pilotfish's key.
        let other = TokenKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(
            other.verify(&t, SystemTime::now()),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn key_is_persistent_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKey::load_or_create(dir.path()).unwrap();
        let t = a.sign(mk_claims("w"), Duration::from_secs(60));
        let b = TokenKey::load_or_create(dir.path()).unwrap();
        assert!(b.verify(&t, SystemTime::now()).is_ok());
        let mode = std::fs::metadata(dir.path().join(TOKEN_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{a:?}").contains(&t));
    }
}
