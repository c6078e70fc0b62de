//! Reading a certificate back: what tests assert on and `/debug` shows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use super::{CaError, pem};

/// The facts about one certificate that matter to a mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// RFC 4514 form, e.g. `O=pilotfish, CN=pilotfish root CA` (empty for
    /// workload leaves).
    pub subject: String,
    pub issuer: String,
    /// URI SANs that are SPIFFE IDs.
    pub spiffe_ids: Vec<String>,
    /// Every SAN, typed: `URI:spiffe://...`, `DNS:...`, `IP:...`,
    /// `email:...`, or `other`.
    pub sans: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    /// Lowercase hex.
    pub serial_hex: String,
}

/// Parses the first certificate of a PEM text.
pub fn inspect(cert_pem: &str) -> Result<CertInfo, CaError> {
    let ders = pem::certs(cert_pem).map_err(CaError::InvalidCert)?;
    let der = ders
        .first()
        .ok_or_else(|| CaError::InvalidCert("not a PEM certificate".to_string()))?;
    let cert = pem::parse_cert(der).map_err(CaError::InvalidCert)?;
    info(&cert)
}

pub(super) fn info(cert: &X509Certificate<'_>) -> Result<CertInfo, CaError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::InvalidCert(format!("subjectAltName: {e}")))?;
    let mut sans = Vec::new();
    let mut spiffe_ids = Vec::new();
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        sans.push(match name {
            GeneralName::URI(uri) => {
                if uri.starts_with("spiffe://") {
                    spiffe_ids.push(uri.to_string());
                }
                format!("URI:{uri}")
            }
            GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            GeneralName::RFC822Name(email) => format!("email:{email}"),
            GeneralName::IPAddress(bytes) => format!("IP:{}", ip_text(bytes)),
            _ => "other".to_string(),
        });
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        spiffe_ids,
        sans,
        not_before: system_time(cert.validity().not_before),
        not_after: system_time(cert.validity().not_after),
        is_ca: cert.is_ca(),
        serial_hex: hex(cert.raw_serial()),
    })
}

pub(super) fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// Lowercase hex, without the DER sign byte a serial may carry.
pub(super) fn hex(bytes: &[u8]) -> String {
    let bytes = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => {
            let a: [u8; 4] = bytes.try_into().unwrap_or_default();
            std::net::Ipv4Addr::from(a).to_string()
        }
        16 => {
            let a: [u8; 16] = bytes.try_into().unwrap_or_default();
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => hex(bytes),
    }
}
