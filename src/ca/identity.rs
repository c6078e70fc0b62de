//! SPIFFE identities in Istio's shape: `spiffe://<td>/ns/<ns>/sa/<sa>`.

use std::fmt;

use super::CaError;

const SCHEME: &str = "spiffe://";

/// SPIFFE caps an ID at 2048 bytes (SPIFFE-ID spec, section 2.3).
const MAX_URI_LEN: usize = 2048;

/// DNS caps a name at 255 bytes; SPIFFE trust domains follow.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A workload identity: who a certificate speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    /// Builds a checked identity (see [`Identity::validate`]).
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Identity, CaError> {
        let id = Identity {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        id.validate()?;
        Ok(id)
    }

    /// `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn spiffe_uri(&self) -> String {
        format!(
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// Parses Istio's SPIFFE URI shape; anything else (other paths, query,
    /// fragment, port, user info, upper-case trust domain) is refused.
    pub fn parse(uri: &str) -> Result<Identity, CaError> {
        let invalid = |reason: &str| CaError::InvalidIdentity {
            input: uri.to_string(),
            reason: reason.to_string(),
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("does not start with spiffe://"))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("has no path after the trust domain"))?;
        let segments: Vec<&str> = path.split('/').collect();
        let [ns_key, namespace, sa_key, service_account] = segments[..] else {
            return Err(invalid("path is not /ns/<namespace>/sa/<service-account>"));
        };
        if ns_key != "ns" || sa_key != "sa" {
            return Err(invalid("path is not /ns/<namespace>/sa/<service-account>"));
        }
        let id = Identity {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        };
        id.validate().map_err(|e| match e {
            CaError::InvalidTrustDomain { reason, .. } => {
                invalid(&format!("trust domain {reason}"))
            }
            other => other,
        })?;
        Ok(id)
    }

    /// Checks every part against the SPIFFE ID rules, so that the URI built
    /// from the parts names exactly this identity (no `/` smuggled into a
    /// namespace, no `..` segment).
    pub fn validate(&self) -> Result<(), CaError> {
        check_trust_domain(&self.trust_domain)?;
        let uri = self.spiffe_uri();
        let invalid = |reason: String| CaError::InvalidIdentity {
            input: uri.clone(),
            reason,
        };
        check_segment(&self.namespace).map_err(|r| invalid(format!("namespace {r}")))?;
        check_segment(&self.service_account)
            .map_err(|r| invalid(format!("service account {r}")))?;
        if uri.len() > MAX_URI_LEN {
            return Err(invalid(format!("longer than {MAX_URI_LEN} bytes")));
        }
        Ok(())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spiffe_uri())
    }
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`.
pub(super) fn check_trust_domain(td: &str) -> Result<(), CaError> {
    let invalid = |reason: &str| CaError::InvalidTrustDomain {
        input: td.to_string(),
        reason: reason.to_string(),
    };
    if td.is_empty() {
        return Err(invalid("is empty"));
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(invalid("is longer than 255 bytes"));
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(invalid(
            "has a character other than a-z, 0-9, '.', '-', '_'",
        ));
    }
    Ok(())
}

/// A SPIFFE path segment: letters, digits, `.`, `-`, `_`; not `.` or `..`.
fn check_segment(segment: &str) -> Result<(), &'static str> {
    if segment.is_empty() {
        return Err("is empty");
    }
    if segment == "." || segment == ".." {
        return Err("is a dot segment");
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("has a character other than letters, digits, '.', '-', '_'");
    }
    Ok(())
}
