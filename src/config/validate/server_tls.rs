//! Istio's `validateTLSOptions`: the TLS of a Gateway server or a Sidecar
//! ingress listener.

use std::collections::BTreeSet;

use super::findings::Findings;
use crate::model::istio::{ServerTlsMode, ServerTlsSettings, TlsProtocol};

/// Most certificates (RSA + ECDSA) a server may have.
const MAX_CERTIFICATES: usize = 2;

/// Cipher suites Envoy (BoringSSL) accepts in `cipherSuites` (Istio's list).
const VALID_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// As Istio: `ALL`, and expressions starting with an operator (`-`, `+`,
/// `!`, `[`), pass; other names must be known.
fn valid_cipher(cs: &str) -> bool {
    cs.is_empty()
        || cs == "ALL"
        || !cs.starts_with(|c: char| c.is_alphanumeric())
        || VALID_CIPHER_SUITES.contains(&cs)
}

fn set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

pub fn check(path: &str, tls: &ServerTlsSettings, f: &mut Findings) {
    let at = |field: &str| format!("{path}.{field}");
    let mode = tls.mode.unwrap_or_default();
    if matches!(
        tls.min_protocol_version,
        Some(TlsProtocol::Tlsv1_0 | TlsProtocol::Tlsv1_1)
    ) && tls.cipher_suites.is_empty()
    {
        f.warn(
            at("minProtocolVersion"),
            "TLS versions below TLSV1_2 need compatible cipherSuites: the default ciphers no longer include them",
        );
    }
    let mut seen = BTreeSet::new();
    let mut invalid = BTreeSet::new();
    let mut duplicate = BTreeSet::new();
    for cs in &tls.cipher_suites {
        if !valid_cipher(cs) {
            invalid.insert(cs.as_str());
        } else if !seen.insert(cs.as_str()) {
            duplicate.insert(cs.as_str());
        }
    }
    if !invalid.is_empty() {
        f.warn(
            at("cipherSuites"),
            format!("ignoring invalid cipher suites: {invalid:?}"),
        );
    }
    if !duplicate.is_empty() {
        f.warn(
            at("cipherSuites"),
            format!("ignoring duplicate cipher suites: {duplicate:?}"),
        );
    }
    for (field, len) in [
        ("credentialNames", tls.credential_names.len()),
        ("tlsCertificates", tls.tls_certificates.len()),
    ] {
        if len > MAX_CERTIFICATES {
            f.error(
                at(field),
                format!("at most {MAX_CERTIFICATES} items are allowed, found {len}"),
            );
        }
    }

    if mode == ServerTlsMode::IstioMutual {
        // Istio-issued certificates only: every other source is an error.
        for (field, present) in [
            ("serverCertificate", set(&tls.server_certificate)),
            ("privateKey", set(&tls.private_key)),
            ("caCertificates", set(&tls.ca_certificates)),
            ("tlsCertificates", !tls.tls_certificates.is_empty()),
            ("credentialName", set(&tls.credential_name)),
            ("credentialNames", !tls.credential_names.is_empty()),
        ] {
            if present {
                f.error(
                    at(field),
                    format!("ISTIO_MUTUAL TLS cannot have associated {field}"),
                );
            }
        }
        return;
    }

    if matches!(
        mode,
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
    ) && (set(&tls.ca_crl)
        || set(&tls.server_certificate)
        || set(&tls.private_key)
        || set(&tls.ca_certificates)
        || !tls.tls_certificates.is_empty()
        || set(&tls.credential_name)
        || !tls.credential_names.is_empty())
    {
        f.warn(
            at("mode"),
            format!(
                "{} mode does not use certificates, they will be ignored",
                mode.name()
            ),
        );
    }

    let sources = [
        set(&tls.server_certificate) && set(&tls.private_key),
        set(&tls.credential_name),
        !tls.credential_names.is_empty(),
        !tls.tls_certificates.is_empty(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        f.error(
            path,
            "only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates may be set",
        );
    }

    let terminating = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if terminating && (set(&tls.credential_name) || !tls.credential_names.is_empty()) {
        // Certificates come from the secret(s); no files are needed.
        return;
    }
    if terminating {
        let prefix = if mode == ServerTlsMode::Simple {
            "SIMPLE TLS"
        } else {
            if !set(&tls.ca_certificates) {
                f.error(
                    at("caCertificates"),
                    "MUTUAL TLS requires a client CA bundle (caCertificates), or credentialName",
                );
            }
            "MUTUAL TLS"
        };
        let certs: Vec<(String, bool, bool)> = if tls.tls_certificates.is_empty() {
            vec![(
                path.to_string(),
                set(&tls.server_certificate),
                set(&tls.private_key),
            )]
        } else {
            tls.tls_certificates
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        at(&format!("tlsCertificates[{i}]")),
                        set(&c.server_certificate),
                        set(&c.private_key),
                    )
                })
                .collect()
        };
        for (cert_path, has_cert, has_key) in certs {
            if !has_cert {
                f.error(
                    format!("{cert_path}.serverCertificate"),
                    format!("{prefix} requires a server certificate (serverCertificate), or credentialName"),
                );
            }
            if !has_key {
                f.error(
                    format!("{cert_path}.privateKey"),
                    format!("{prefix} requires a private key (privateKey), or credentialName"),
                );
            }
        }
    }
    if set(&tls.ca_crl) {
        if set(&tls.credential_name) {
            f.error(
                at("caCrl"),
                "CRL is not supported with credentialName; put the CRL in the credential",
            );
        }
        if mode == ServerTlsMode::Simple {
            f.error(at("caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}
