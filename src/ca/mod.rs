//! The Citadel role: a certificate authority for SPIFFE workload identities.
//!
//! A [`Ca`] signs with one of three roots of trust:
//!
//! * [`Ca::load_or_create`]: a self-signed root kept in a state directory,
//!   created on first start and reused afterwards (`root-cert.pem`,
//!   `root-key.pem` mode 0600). Only this kind can rotate its root
//!   ([`Ca::begin_rotation`], [`Ca::finish_rotation`]).
//! * [`Ca::from_cacerts`]: a plugged-in CA in Istio's `cacerts` layout
//!   (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`).
//! * [`Ca::ephemeral`]: in memory, for tests and benchmarks.
//!
//! In Kubernetes the root lives in a Secret ([`Ca::from_root_pem`],
//! [`Ca::from_cacerts_pem`]); when the Secret changes, the CA in use
//! [`Ca::adopt`]s the new one in place, so every holder of it follows.
//!
//! It mints ECDSA P-256 leaf certificates whose only SAN is the workload's
//! SPIFFE URI ([`Ca::issue`]) and signs CSRs for the Istio CA API
//! ([`Ca::sign_csr`]). [`renew_at`] says when a certificate is due again and
//! [`inspect`] reads one back (tests, `/debug`).
//!
//! Key material never reaches a log line or an error message: private keys
//! travel as [`Secret`], whose `Debug` and `Display` print `<redacted>`.

pub mod auth;
mod authority;
mod chain;
pub mod grpc;
mod identity;
mod inspect;
mod pem;
pub mod serving;
mod store;
pub mod token;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use authority::{Adopted, Ca};
pub use identity::Identity;
pub use inspect::{CertInfo, inspect};

/// Lifetime of a self-signed root: ten years, so that a root outlives every
/// deployment that does not rotate it on purpose.
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Workload certificates start this long before "now", so that a peer whose
/// clock is a little behind ours still accepts a certificate minted just now.
pub const CLOCK_SKEW_GRACE: Duration = Duration::from_secs(60);

/// Longest workload certificate the CA mints: istiod's default
/// `--max-workload-cert-ttl` (90 days). Workload certificates are meant to be
/// short-lived and re-issued; a longer request is a configuration mistake.
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Everything that can go wrong in the CA. Messages name the file or the input
/// and say what was expected; none of them contains key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cacerts dir {} is missing {} (a plugged-in CA needs Istio's cacerts files: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)",
        dir.display(),
        missing.join(", ")
    )]
    MissingCacerts {
        dir: PathBuf,
        missing: Vec<&'static str>,
    },
    /// A file exists but does not hold what it should.
    #[error("{file} in {}: {problem}", dir.display())]
    InvalidFile {
        dir: PathBuf,
        file: String,
        problem: String,
    },
    /// The state directory's files contradict each other.
    #[error("CA state dir {}: {problem}", dir.display())]
    InconsistentState { dir: PathBuf, problem: String },
    #[error(
        "invalid SPIFFE identity {input:?}: {reason} (expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)"
    )]
    InvalidIdentity { input: String, reason: String },
    #[error(
        "invalid trust domain {input:?}: {reason} (expected lowercase letters, digits, '.', '-' or '_', e.g. cluster.local)"
    )]
    InvalidTrustDomain { input: String, reason: String },
    #[error("identity {identity} is not in trust domain {ca:?}, the only one this CA signs for")]
    ForeignTrustDomain { identity: String, ca: String },
    #[error("invalid certificate TTL {ttl:?}: {reason}")]
    InvalidTtl { ttl: Duration, reason: String },
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    #[error("invalid certificate: {0}")]
    InvalidCert(String),
    #[error(
        "the CA's signing chain expired at {not_after}; rotate the root (state dir) or replace the cacerts files"
    )]
    SignerExpired { not_after: String },
    #[error("root rotation: {0}")]
    Rotation(String),
    /// Building pilotfish's own TLS server from an issued certificate.
    #[error("TLS serving certificate: {0}")]
    Serving(String),
    /// rcgen failed to generate or sign; its messages carry no key bytes.
    #[error("{what}: {source}")]
    Crypto {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
}

/// Secret text (a PEM private key). `Debug` and `Display` print
/// `<redacted>`; [`Secret::expose`] is the one way to read it, so every use is
/// easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A workload key pair and certificate chain.
#[derive(Clone, Debug)]
pub struct WorkloadCert {
    /// Leaf first, then intermediates (never the root: that is the trust bundle).
    pub cert_chain_pem: String,
    /// PKCS#8 PEM of the leaf's private key.
    pub key_pem: Secret,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The leaf's serial number, lowercase hex.
    pub serial_hex: String,
}

/// The certificates of `bundle_pem` other than `root_pem` (compared by
/// DER, so PEM line breaks do not matter), as canonical PEM: the roots a
/// CA Secret keeps trusted besides its signing root.
pub fn other_roots(root_pem: &str, bundle_pem: &str) -> Result<Vec<String>, String> {
    let root = pem::single_cert(root_pem)?;
    let mut out: Vec<String> = Vec::new();
    for der in pem::certs(bundle_pem)? {
        let text = pem::cert_pem(&der);
        if der != root && !out.contains(&text) {
            out.push(text);
        }
    }
    Ok(out)
}

/// When to re-issue `cert`: at `not_before + fraction * lifetime`.
///
/// pilotfish re-issues when half the lifetime remains (`fraction` 0.5).
/// `fraction` is clamped to `0.0..=1.0` (NaN counts as 0.5).
pub fn renew_at(cert: &WorkloadCert, fraction: f64) -> SystemTime {
    let fraction = if fraction.is_nan() {
        0.5
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let lifetime = cert
        .not_after
        .duration_since(cert.not_before)
        .unwrap_or_default();
    cert.not_before + lifetime.mul_f64(fraction)
}

#[cfg(test)]
mod tests;
