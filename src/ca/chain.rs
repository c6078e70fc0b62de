//! A signing chain and what it signs: workload leaves (from a fresh key or
//! a CSR's key) and new self-signed roots.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use super::inspect::{hex, system_time};
use super::{CLOCK_SKEW_GRACE, CaError, Identity, MAX_WORKLOAD_TTL, ROOT_TTL, pem};

const ROOT_ORGANIZATION: &str = "pilotfish";
const ROOT_COMMON_NAME: &str = "pilotfish root CA";

/// RSA keys below this size are refused in CSRs (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

/// A signing key and the certificates above it.
pub(super) struct Chain {
    pub issuer: Issuer<'static, KeyPair>,
    /// Certificates between a leaf and the root, signing certificate first;
    /// empty when the root signs directly.
    pub intermediates: Vec<String>,
    /// The root the chain ends at.
    pub anchor_pem: String,
    pub anchor_not_after: SystemTime,
    /// Earliest expiry on the chain; leaves never outlive it.
    pub not_after: SystemTime,
}

/// A freshly signed leaf.
pub(super) struct Leaf {
    pub pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub serial_hex: String,
}

impl Chain {
    /// Signs a workload leaf for `public_key`: empty subject (so the SAN is
    /// critical), URI SAN = SPIFFE ID (and `dns_names`, for pilotfish's own
    /// HTTPS serving certificates), CA:FALSE, digitalSignature +
    /// keyEncipherment, serverAuth + clientAuth, authority key identifier
    /// (so verifiers pick the right root when two share a subject during
    /// rotation).
    pub(super) fn leaf(
        &self,
        public_key: &impl PublicKeyData,
        id: &Identity,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<Leaf, CaError> {
        let (not_before, not_after) = self.leaf_validity(ttl)?;
        let uri =
            id.spiffe_uri()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::InvalidIdentity {
                    input: id.spiffe_uri(),
                    reason: e.to_string(),
                })?;
        let serial = random_serial();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        for name in dns_names {
            let dns =
                name.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| CaError::InvalidIdentity {
                        input: name.clone(),
                        reason: e.to_string(),
                    })?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(crypto("signing a workload certificate"))?;
        Ok(Leaf {
            pem: cert.pem(),
            not_before: not_before.into(),
            not_after: not_after.into(),
            serial_hex: hex(&serial),
        })
    }

    /// From `CLOCK_SKEW_GRACE` ago to `ttl` from now, cut at the chain's
    /// expiry.
    fn leaf_validity(&self, ttl: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
        if ttl.is_zero() {
            return Err(CaError::InvalidTtl {
                ttl,
                reason: "must be positive".to_string(),
            });
        }
        if ttl > MAX_WORKLOAD_TTL {
            return Err(CaError::InvalidTtl {
                ttl,
                reason: format!(
                    "longer than the {}-day maximum for workload certificates",
                    MAX_WORKLOAD_TTL.as_secs() / 86_400
                ),
            });
        }
        let now = now_whole_seconds();
        let limit = OffsetDateTime::from(self.not_after);
        if limit <= now {
            return Err(CaError::SignerExpired {
                not_after: limit.to_string(),
            });
        }
        let not_before = sub(now, CLOCK_SKEW_GRACE);
        let wanted = add(now, ttl);
        if wanted > limit {
            tracing::debug!(chain_not_after = %limit, "workload certificate cut short at the CA chain's expiry");
        }
        Ok((not_before, wanted.min(limit)))
    }
}

/// The CSR's public key, once its signature proves possession of the
/// private key. Everything else in the CSR is ignored.
pub(super) fn csr_public_key(der: &[u8]) -> Result<rcgen::SubjectPublicKeyInfo, CaError> {
    let csr = match X509CertificationRequest::from_der(der) {
        Ok(([], csr)) => csr,
        Ok(_) => {
            return Err(CaError::InvalidCsr(
                "trailing bytes after the request".to_string(),
            ));
        }
        Err(e) => return Err(CaError::InvalidCsr(format!("does not parse: {e}"))),
    };
    csr.verify_signature().map_err(|_| {
        CaError::InvalidCsr(
            "signature does not verify (a CSR must be signed by the key it carries)".to_string(),
        )
    })?;
    let spki = &csr.certification_request_info.subject_pki;
    if let Ok(PublicKey::RSA(rsa)) = spki.parsed()
        && rsa.key_size() < MIN_RSA_BITS
    {
        return Err(CaError::InvalidCsr(format!(
            "RSA key of {} bits; at least {MIN_RSA_BITS} required",
            rsa.key_size()
        )));
    }
    rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| {
        CaError::InvalidCsr(
            "unsupported public key (expected ECDSA P-256/P-384, Ed25519 or RSA)".to_string(),
        )
    })
}

/// A new self-signed root: ECDSA P-256, CA:TRUE, keyCertSign + cRLSign,
/// `O=pilotfish, CN=pilotfish root CA`, valid for `ROOT_TTL`.
pub(super) fn new_root() -> Result<(String, KeyPair), CaError> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto("generating a root key"))?;
    let now = now_whole_seconds();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, ROOT_ORGANIZATION);
    params
        .distinguished_name
        .push(DnType::CommonName, ROOT_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = sub(now, CLOCK_SKEW_GRACE);
    params.not_after = add(now, ROOT_TTL);
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    let cert = params
        .self_signed(&key)
        .map_err(crypto("self-signing the root"))?;
    Ok((cert.pem(), key))
}

/// The chain of a self-signed root that signs leaves itself.
pub(super) fn self_signed_chain(cert_pem: &str, key: KeyPair) -> Result<Chain, CaError> {
    let der = pem::single_cert(cert_pem).map_err(CaError::InvalidCert)?;
    let cert = pem::parse_cert(&der).map_err(CaError::InvalidCert)?;
    let not_after = system_time(cert.validity().not_after);
    let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(crypto("reading the root"))?;
    Ok(Chain {
        issuer,
        intermediates: Vec::new(),
        anchor_pem: pem::cert_pem(&der),
        anchor_not_after: not_after,
        not_after,
    })
}

pub(super) fn crypto(what: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Crypto { what, source }
}

/// A fresh 128-bit positive serial. Serials must be unique per CA and
/// should be unpredictable; the crate has no RNG dependency, so this hashes
/// a process-wide counter, the clock and the pid with SipHash under keys that
/// std's `RandomState` draws from the OS random source.
fn random_serial() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut serial = [0u8; 16];
    for (half, out) in serial.chunks_mut(8).enumerate() {
        let hash = RandomState::new().hash_one((half, count, nanos, std::process::id()));
        out.copy_from_slice(&hash.to_be_bytes());
    }
    // Positive, and no leading zero byte, so the DER integer is these 16
    // bytes exactly and `serial_hex` matches what parsers print.
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

/// Now, truncated to the second (X.509 times have no fractions, and the
/// times a `WorkloadCert` reports must be the certificate's own).
fn now_whole_seconds() -> OffsetDateTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn add(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d))
        .unwrap_or(t)
}

fn sub(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d))
        .unwrap_or(t)
}
