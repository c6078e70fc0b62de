//! Gateway credentials (`credentialName`) from a directory, served over SDS
//! to the gateway proxies whose Gateways name them.
//!
//! File mode's stand-in for Kubernetes Secrets: credential `NAME` is
//! `NAME.crt` (certificate chain, PEM) and `NAME.key` (private key, PEM) in
//! the directory, plus `NAME.ca` (CA bundle: client CA for MUTUAL servers,
//! server CA for TLS origination). `NAME.ca` alone is a CA-only credential
//! (SIMPLE origination needs no key pair). Sidecars get the credentials
//! their namespace's DestinationRules name; gateways those their Gateways
//! and the DestinationRules of their clusters name.
//! pilotfish only reads the directory; it is re-read on every config change
//! and polled for changes, so renewed certificates reach Envoy without a
//! restart. Key material is kept as [`crate::ca::Secret`] (never printed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};

use super::cache::Layer;
use super::translate::gateway::{credential_ca_secret, credential_secret};
use super::types::XdsType;
use crate::ca::Secret as KeyText;
use crate::model::WorkloadKey;

/// How often the directory is checked for changed files: short enough that
/// a renewed certificate is served within seconds, long enough to cost
/// nothing (a handful of small reads).
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// One credential as read from the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// Empty for a CA-only credential.
    pub cert_pem: String,
    pub key_pem: KeyText,
    pub ca_pem: Option<String>,
}

/// Kubernetes Secrets that may be credentials, by (namespace, name): only
/// the keys a credential uses (see [`CREDENTIAL_KEYS`]).
pub type SecretStore = BTreeMap<(String, String), Arc<BTreeMap<String, Vec<u8>>>>;

/// The Secret keys Istio reads a credential from: `kubernetes.io/tls`
/// (`tls.crt`, `tls.key`, `ca.crt`) and generic (`cert`, `key`, `cacert`).
pub const CREDENTIAL_KEYS: [&str; 6] = ["tls.crt", "tls.key", "ca.crt", "cert", "key", "cacert"];

/// Where credentials come from.
#[derive(Debug)]
enum Source {
    /// `NAME.crt`, `NAME.key`, `NAME.ca` files.
    Dir(PathBuf),
    /// Secrets in the gateway workload's namespace, as Istio reads them.
    Kubernetes(tokio::sync::watch::Receiver<Arc<SecretStore>>),
}

/// The credentials directory (or Secrets) and what was last read from it.
#[derive(Debug)]
pub struct CredentialDir {
    source: Source,
    /// By name (directory) or `namespace/name` (Secrets).
    creds: BTreeMap<String, Credential>,
    /// Problems of the last read (file, what is wrong), never key bytes.
    pub errors: Vec<String>,
    /// Layers by the namespace ("" for a directory) and set of names they
    /// hold, kept while their content is unchanged so streams skip them.
    layers: HashMap<(String, BTreeSet<String>), Arc<Layer>>,
    /// The directory changed since `layers` were made.
    stale: bool,
}

fn text_of(data: &BTreeMap<String, Vec<u8>>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| data.get(*k))
        .and_then(|b| String::from_utf8(b.clone()).ok())
}

/// Credentials from Secrets, as Istio reads `credentialName`: the key pair
/// from `tls.crt`/`tls.key` or `cert`/`key`; the client CA from `ca.crt` or
/// `cacert` in the same Secret, else from Secret `NAME-cacert`. Keyed
/// `namespace/name`; problems name the Secret and key, never the bytes.
pub fn from_secrets(store: &SecretStore) -> (BTreeMap<String, Credential>, Vec<String>) {
    let mut creds = BTreeMap::new();
    let mut errors = Vec::new();
    for ((ns, name), data) in store {
        let cert = text_of(data, &["tls.crt", "cert"]);
        let key = text_of(data, &["tls.key", "key"]);
        let (cert_pem, key_pem) = match (cert, key) {
            (Some(c), Some(k)) => (c, k),
            // A CA-only Secret (`NAME-cacert`) or not a credential at all.
            (None, None) => continue,
            _ => {
                errors.push(format!(
                    "Secret {ns}/{name}: needs both a certificate (tls.crt or cert) and a key (tls.key or key)"
                ));
                continue;
            }
        };
        if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
            errors.push(format!("Secret {ns}/{name}: the certificate is not PEM"));
            continue;
        }
        if !key_pem.contains("PRIVATE KEY-----") {
            errors.push(format!(
                "Secret {ns}/{name}: the key is not a PEM private key"
            ));
            continue;
        }
        let ca_pem = text_of(data, &["ca.crt", "cacert"]).or_else(|| {
            store
                .get(&(ns.clone(), format!("{name}-cacert")))
                .and_then(|d| text_of(d, &["cacert", "ca.crt"]))
        });
        creds.insert(
            format!("{ns}/{name}"),
            Credential {
                cert_pem,
                key_pem: KeyText::new(key_pem),
                ca_pem,
            },
        );
    }
    (creds, errors)
}

fn inline(text: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(text.to_string())),
        ..Default::default()
    }
}

/// The SDS secrets of one credential: the key pair, and the client CA when
/// there is one.
pub fn secrets(name: &str, c: &Credential) -> Vec<Secret> {
    let mut out = Vec::new();
    if !c.cert_pem.is_empty() {
        out.push(Secret {
            name: credential_secret(name),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(&c.cert_pem)),
                private_key: Some(inline(c.key_pem.expose())),
                ..Default::default()
            })),
        });
    }
    if let Some(ca) = &c.ca_pem {
        out.push(Secret {
            name: credential_ca_secret(name),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(ca)),
                    ..Default::default()
                },
            )),
        });
    }
    out
}

/// Reads every credential in `dir`: each `NAME.crt` with its `NAME.key`
/// (and optional `NAME.ca`). Problems are returned, not fatal.
pub fn read_dir(dir: &Path) -> (BTreeMap<String, Credential>, Vec<String>) {
    let mut creds = BTreeMap::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(format!("credentials directory {}: {e}", dir.display()));
            return (creds, errors);
        }
    };
    let mut names: Vec<(String, bool)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let p = e.path();
            let ext = p.extension()?;
            let stem = p.file_stem()?.to_str()?.to_string();
            if ext == "crt" {
                Some((stem, true))
            } else if ext == "ca" && !dir.join(format!("{stem}.crt")).exists() {
                // A CA bundle alone: verifies servers (SIMPLE origination).
                Some((stem, false))
            } else {
                None
            }
        })
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    names.sort();
    for (name, key_pair) in names {
        let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{name}.{ext}")));
        if !key_pair {
            match read("ca") {
                Ok(ca) if ca.contains("-----BEGIN CERTIFICATE-----") => {
                    let cred = Credential {
                        cert_pem: String::new(),
                        key_pem: KeyText::new(String::new()),
                        ca_pem: Some(ca),
                    };
                    creds.insert(name, cred);
                }
                Ok(_) => errors.push(format!(
                    "credential {name}: {name}.ca holds no PEM certificate"
                )),
                Err(e) => errors.push(format!("credential {name}: {name}.ca: {e}")),
            }
            continue;
        }
        let cert_pem = match read("crt") {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("credential {name}: {name}.crt: {e}"));
                continue;
            }
        };
        let key_pem = match read("key") {
            Ok(t) => KeyText::new(t),
            Err(e) => {
                errors.push(format!("credential {name}: {name}.key: {e}"));
                continue;
            }
        };
        if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
            errors.push(format!(
                "credential {name}: {name}.crt holds no PEM certificate"
            ));
            continue;
        }
        if !key_pem.expose().contains("PRIVATE KEY-----") {
            errors.push(format!(
                "credential {name}: {name}.key holds no PEM private key"
            ));
            continue;
        }
        let ca_pem = match read("ca") {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                errors.push(format!("credential {name}: {name}.ca: {e}"));
                None
            }
        };
        creds.insert(
            name,
            Credential {
                cert_pem,
                key_pem,
                ca_pem,
            },
        );
    }
    (creds, errors)
}

impl CredentialDir {
    /// A directory not read yet (call [`CredentialDir::reload`]).
    pub fn new(dir: PathBuf) -> Self {
        CredentialDir::with_source(Source::Dir(dir))
    }

    /// Credentials from the Secrets a Kubernetes watcher publishes.
    pub fn kubernetes(secrets: tokio::sync::watch::Receiver<Arc<SecretStore>>) -> Self {
        CredentialDir::with_source(Source::Kubernetes(secrets))
    }

    fn with_source(source: Source) -> Self {
        CredentialDir {
            source,
            creds: BTreeMap::new(),
            errors: Vec::new(),
            layers: HashMap::new(),
            stale: false,
        }
    }

    /// Where the credentials come from, for messages.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Dir(d) => d.display().to_string(),
            Source::Kubernetes(_) => "Kubernetes Secrets".to_string(),
        }
    }

    /// The key a gateway in `namespace` finds credential `name` under.
    fn key(&self, namespace: &str, name: &str) -> String {
        match &self.source {
            Source::Dir(_) => name.to_string(),
            Source::Kubernetes(_) => format!("{namespace}/{name}"),
        }
    }

    /// Re-reads the source; true when any credential (or problem) changed.
    pub fn reload(&mut self) -> bool {
        let (creds, errors) = match &mut self.source {
            Source::Dir(dir) => read_dir(dir),
            Source::Kubernetes(rx) => from_secrets(&rx.borrow_and_update()),
        };
        let changed = creds != self.creds || errors != self.errors;
        if changed {
            self.creds = creds;
            self.errors = errors;
            self.stale = true;
        }
        changed
    }

    /// The names of the credentials read.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.creds.keys().map(String::as_str)
    }

    /// One secrets layer per gateway workload, holding only the credentials
    /// its Gateways name (missing ones are simply absent: Envoy waits for
    /// them). Workloads wanting the same set share one layer.
    pub fn layers(
        &mut self,
        wants: &HashMap<WorkloadKey, Arc<BTreeSet<String>>>,
    ) -> HashMap<WorkloadKey, Arc<Layer>> {
        let mut out = HashMap::new();
        let mut kept: HashMap<(String, BTreeSet<String>), Arc<Layer>> = HashMap::new();
        for (key, names) in wants {
            if names.is_empty() {
                continue;
            }
            let ns = match self.source {
                Source::Dir(_) => String::new(),
                Source::Kubernetes(_) => key.namespace.clone(),
            };
            let cache_key = (ns, (**names).clone());
            let layer = match kept.get(&cache_key) {
                Some(l) => Arc::clone(l),
                None => {
                    let old = self.layers.get(&cache_key);
                    let layer = match old {
                        Some(l) if !self.stale => Arc::clone(l),
                        _ => {
                            let items = names
                                .iter()
                                .filter_map(|n| {
                                    self.creds.get(&self.key(&key.namespace, n)).map(|c| (n, c))
                                })
                                .flat_map(|(n, c)| secrets(n, c))
                                .map(|s| (s.name.clone(), s));
                            // Same content as before keeps the old layer's identity.
                            Layer::encode(XdsType::Secret, items).reuse(old)
                        }
                    };
                    kept.insert(cache_key, Arc::clone(&layer));
                    layer
                }
            };
            out.insert(key.clone(), layer);
        }
        self.layers = kept;
        self.stale = false;
        out
    }

    /// Names wanted by some gateway but absent from the source
    /// (`namespace/name` for Secrets).
    pub fn missing(&self, wants: &HashMap<WorkloadKey, Arc<BTreeSet<String>>>) -> BTreeSet<String> {
        wants
            .iter()
            .flat_map(|(k, names)| names.iter().map(move |n| (k, n)))
            .map(|(k, n)| self.key(&k.namespace, n))
            .filter(|n| !self.creds.contains_key(n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_cred(dir: &Path, name: &str, ca: bool) -> String {
        let c = rcgen::generate_simple_self_signed(vec![format!("{name}.example.com")]).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), c.cert.pem()).unwrap();
        std::fs::write(
            dir.join(format!("{name}.key")),
            c.signing_key.serialize_pem(),
        )
        .unwrap();
        if ca {
            std::fs::write(dir.join(format!("{name}.ca")), c.cert.pem()).unwrap();
        }
        c.signing_key.serialize_pem()
    }

    fn mk_key(name: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn reads_pairs_and_serves_only_what_a_gateway_names() {
        let tmp = tempfile::tempdir().unwrap();
        let key_a = mk_cred(tmp.path(), "a", false);
        mk_cred(tmp.path(), "b", true);
        std::fs::write(tmp.path().join("broken.crt"), "not pem").unwrap();
        std::fs::write(tmp.path().join("broken.key"), "not pem").unwrap();
        std::fs::write(tmp.path().join("lonely.crt"), "x").unwrap();
        let mut d = CredentialDir::new(tmp.path().to_path_buf());
        assert!(d.reload());
        assert_eq!(d.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(d.errors.len(), 2, "{:?}", d.errors);
        assert!(!format!("{d:?} {:?}", d.errors).contains("PRIVATE KEY"));
        assert!(!d.reload(), "nothing changed");

        let wants: HashMap<WorkloadKey, Arc<BTreeSet<String>>> = [
            (mk_key("gw1"), Arc::new(BTreeSet::from(["a".to_string()]))),
            (mk_key("gw2"), Arc::new(BTreeSet::from(["a".to_string()]))),
            (
                mk_key("gw3"),
                Arc::new(BTreeSet::from(["b".to_string(), "zz".to_string()])),
            ),
        ]
        .into();
        let layers = d.layers(&wants);
        assert!(Arc::ptr_eq(
            &layers[&mk_key("gw1")],
            &layers[&mk_key("gw2")]
        ));
        let names: Vec<&String> = layers[&mk_key("gw1")].resources.keys().collect();
        assert_eq!(names, ["credential://a"]);
        let names: Vec<&String> = layers[&mk_key("gw3")].resources.keys().collect();
        assert_eq!(names, ["credential://b", "credential://b-cacert"]);
        assert_eq!(d.missing(&wants), BTreeSet::from(["zz".to_string()]));
        // The key reaches Envoy (inline in the secret) and nowhere else.
        let enc = &layers[&mk_key("gw1")].resources["credential://a"];
        assert!(enc.sotw.windows(key_a.len()).any(|w| w == key_a.as_bytes()));

        // A renewed certificate is a new layer.
        let before = Arc::clone(&layers[&mk_key("gw1")]);
        mk_cred(tmp.path(), "a", false);
        assert!(d.reload());
        let after = d.layers(&wants);
        assert!(!Arc::ptr_eq(&before, &after[&mk_key("gw1")]));
    }
}
