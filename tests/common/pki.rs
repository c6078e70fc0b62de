//! Test PKI: a CA made with rcgen, certificates it signs, and credentials
//! written as `serve --credentials-dir` reads them.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA and the PEMs of one certificate it signed for `names`.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(cn: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, private key PEM)
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes credential `name` as the credentials directory wants it (key 0600).
pub fn write_credential(dir: &Path, name: &str, cert: &str, key: &str, ca: Option<&str>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.join(format!("{name}.crt")), cert).unwrap();
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&key_path, key).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Some(ca) = ca {
        std::fs::write(dir.join(format!("{name}.ca")), ca).unwrap();
    }
}
