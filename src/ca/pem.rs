//! PEM in and out: certificate blocks, private keys in the encodings operators
//! bring (PKCS#8, and the PKCS#1 / SEC1 files openssl and Istio's samples
//! write), and canonical PEM output.
//!
//! Problems are returned as plain strings saying what was expected; callers
//! add the file name. No message ever contains key bytes.

use rcgen::KeyPair;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

const CERTIFICATE: &str = "CERTIFICATE";

/// Every PEM block in `text`, decoded.
fn blocks(text: &str) -> Result<Vec<Pem>, String> {
    Pem::iter_from_buffer(text.as_bytes())
        .enumerate()
        .map(|(i, block)| block.map_err(|e| format!("PEM block {} is malformed: {e}", i + 1)))
        .collect()
}

/// The DER of every `CERTIFICATE` block in `text`, in order, each checked to
/// parse as X.509. Other blocks are refused: a stray key in a certificate
/// file is a mistake worth hearing about.
pub(super) fn certs(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for (i, block) in blocks(text)?.into_iter().enumerate() {
        if block.label != CERTIFICATE {
            return Err(format!(
                "PEM block {} is {:?}, expected only CERTIFICATE blocks",
                i + 1,
                block.label
            ));
        }
        parse_cert(&block.contents)
            .map_err(|e| format!("certificate {} does not parse: {e}", i + 1))?;
        out.push(block.contents);
    }
    Ok(out)
}

/// Exactly one certificate.
pub(super) fn single_cert(text: &str) -> Result<Vec<u8>, String> {
    let mut all = certs(text)?;
    match all.len() {
        0 => Err("not a PEM certificate (no CERTIFICATE block)".to_string()),
        1 => Ok(all.remove(0)),
        n => Err(format!("holds {n} certificates, expected exactly one")),
    }
}

/// The DER of the first certificate request in `text`.
pub(super) fn csr(text: &str) -> Result<Vec<u8>, String> {
    blocks(text)?
        .into_iter()
        .find(|b| b.label == "CERTIFICATE REQUEST" || b.label == "NEW CERTIFICATE REQUEST")
        .map(|b| b.contents)
        .ok_or_else(|| "not a PEM certificate request (no CERTIFICATE REQUEST block)".to_string())
}

/// Parses DER as one X.509 certificate with nothing after it.
pub(super) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The first private key in `text`. Accepts `PRIVATE KEY` (PKCS#8),
/// `RSA PRIVATE KEY` (PKCS#1) and `EC PRIVATE KEY` (SEC1); other blocks such
/// as openssl's `EC PARAMETERS` are skipped.
pub(super) fn private_key(text: &str) -> Result<KeyPair, String> {
    const UNSUPPORTED: &str = "unsupported or malformed private key (expected an unencrypted ECDSA P-256/P-384 or RSA 2048-4096 key)";
    let blocks = blocks(text).map_err(|_| "not a PEM private key".to_string())?;
    for block in blocks {
        let pkcs8_candidates = match block.label.as_str() {
            "PRIVATE KEY" => vec![block.contents],
            "RSA PRIVATE KEY" => vec![pkcs8_wrap(RSA_ALG_ID, &block.contents)],
            "EC PRIVATE KEY" => vec![
                pkcs8_wrap(EC_P256_ALG_ID, &block.contents),
                pkcs8_wrap(EC_P384_ALG_ID, &block.contents),
            ],
            "ENCRYPTED PRIVATE KEY" => {
                return Err(
                    "the private key is encrypted; pilotfish needs it unencrypted \
                     (openssl pkcs8 -topk8 -nocrypt)"
                        .to_string(),
                );
            }
            _ => continue,
        };
        return pkcs8_candidates
            .into_iter()
            .find_map(|der| KeyPair::try_from(der).ok())
            .ok_or_else(|| UNSUPPORTED.to_string());
    }
    Err("not a PEM private key".to_string())
}

/// Whether `key` is the private half of the certificate's public key.
pub(super) fn key_matches(key: &KeyPair, cert: &X509Certificate<'_>) -> bool {
    use rcgen::PublicKeyData;
    key.subject_public_key_info() == cert.public_key().raw
}

/// Canonical PEM of one certificate (64-column base64, LF line ends).
pub(super) fn cert_pem(der: &[u8]) -> String {
    encode(CERTIFICATE, der)
}

fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(chunk[0]) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// AlgorithmIdentifier DER for wrapping bare keys into PKCS#8 (RFC 5208).
/// SEQUENCE { rsaEncryption, NULL }
const RSA_ALG_ID: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// SEQUENCE { id-ecPublicKey, prime256v1 }
const EC_P256_ALG_ID: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];
/// SEQUENCE { id-ecPublicKey, secp384r1 }
const EC_P384_ALG_ID: &[u8] = &[
    0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
    0x00, 0x22,
];

/// PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, OCTET STRING key }
fn pkcs8_wrap(alg_id: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(alg_id);
    body.extend(der_tlv(0x04, key));
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn der_lengths_use_long_form_above_127() {
        assert_eq!(der_tlv(0x04, &[0; 3])[..2], [0x04, 3]);
        assert_eq!(der_tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(der_tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }
}
