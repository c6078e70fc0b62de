//! Workload certificates as SDS secrets: the CA issues, this book keeps one
//! certificate per workload, renews it when half its lifetime is gone, and
//! encodes each as a secrets layer (`default` key pair, `ROOTCA` bundle)
//! that only that workload's proxy is sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};

use super::cache::Layer;
use super::translate::mtls::{SDS_CERT, SDS_ROOT};
use super::types::XdsType;
use crate::ca::{Ca, Identity, WorkloadCert};
use crate::model::{Registry, WorkloadKey};

/// Re-issue when this fraction of a certificate's lifetime has passed
/// (Istio's agent also renews at half-life by default).
pub const RENEW_FRACTION: f64 = 0.5;

fn inline(text: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(text.to_string())),
        ..Default::default()
    }
}

/// The two secrets one workload's proxy gets.
pub fn secret_layer(cert: &WorkloadCert, roots_pem: &str) -> Layer {
    let key_pair = Secret {
        name: SDS_CERT.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&cert.cert_chain_pem)),
            private_key: Some(inline(cert.key_pem.expose())),
            ..Default::default()
        })),
    };
    let bundle = Secret {
        name: SDS_ROOT.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(roots_pem)),
                ..Default::default()
            },
        )),
    };
    Layer::encode(
        XdsType::Secret,
        [
            (SDS_CERT.to_string(), key_pair),
            (SDS_ROOT.to_string(), bundle),
        ],
    )
}

struct Entry {
    identity: Identity,
    roots_pem: String,
    /// The CA's generation when issued: a new signer re-issues.
    generation: u64,
    cert: Arc<WorkloadCert>,
    renew_at: SystemTime,
    layer: Arc<Layer>,
}

/// What a refresh produced.
#[derive(Debug, Default)]
pub struct Refresh {
    pub layers: HashMap<WorkloadKey, Arc<Layer>>,
    /// The earliest renewal due, for the caller's timer.
    pub next_renewal: Option<SystemTime>,
    pub issued: usize,
    pub errors: Vec<String>,
}

/// One certificate per workload, kept fresh.
pub struct CertBook {
    ca: Arc<Ca>,
    ttl: Duration,
    entries: HashMap<WorkloadKey, Entry>,
    /// Woken when the CA's roots change (a root rotation step), so the
    /// certificates and trust bundles are refreshed at once.
    roots_changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for CertBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertBook")
            .field("workloads", &self.entries.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl CertBook {
    pub fn new(ca: Arc<Ca>, ttl: Duration) -> Self {
        CertBook {
            ca,
            ttl,
            entries: HashMap::new(),
            roots_changed: Arc::default(),
        }
    }

    /// Notify this after changing the CA's roots: the translator refreshes
    /// every certificate whose trust bundle changed right away.
    pub fn roots_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.roots_changed)
    }

    pub fn trust_domain(&self) -> &str {
        self.ca.trust_domain()
    }

    /// Issues certificates for new workloads and for those due for renewal,
    /// whose identity changed, or whose trust bundle or signer changed
    /// (root rotation, a CA Secret replaced);
    /// forgets workloads that are gone.
    pub fn refresh(&mut self, registry: &Registry, now: SystemTime) -> Refresh {
        let mut out = Refresh::default();
        let roots = self.ca.roots_pem();
        let generation = self.ca.generation();
        self.entries
            .retain(|k, _| registry.workloads.contains_key(k));
        for (key, w) in &registry.workloads {
            let sa = w
                .service_account
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_string());
            let identity = match Identity::new(self.ca.trust_domain(), &key.namespace, sa) {
                Ok(id) => id,
                Err(e) => {
                    out.errors.push(format!("workload {key}: {e}"));
                    continue;
                }
            };
            let fresh = self.entries.get(key).is_some_and(|e| {
                e.identity == identity
                    && e.roots_pem == roots
                    && e.generation == generation
                    && now < e.renew_at
            });
            if !fresh {
                match self.ca.issue(&identity, self.ttl) {
                    Ok(cert) => {
                        let layer = Arc::new(secret_layer(&cert, &roots));
                        // Half of the lifetime from now, not from not_before:
                        // leaves are backdated for clock skew.
                        let remaining = cert.not_after.duration_since(now).unwrap_or_default();
                        let entry = Entry {
                            renew_at: now + remaining.mul_f64(RENEW_FRACTION),
                            identity,
                            roots_pem: roots.clone(),
                            generation,
                            cert: Arc::new(cert),
                            layer,
                        };
                        self.entries.insert(key.clone(), entry);
                        out.issued += 1;
                    }
                    Err(e) => {
                        // Keep serving the old certificate (if any) until it can be renewed.
                        out.errors.push(format!("issuing for {key}: {e}"));
                    }
                }
            }
        }
        for (key, e) in &self.entries {
            out.layers.insert(key.clone(), Arc::clone(&e.layer));
            out.next_renewal = Some(match out.next_renewal {
                Some(t) => t.min(e.renew_at),
                None => e.renew_at,
            });
        }
        out
    }

    /// The certificate a workload currently has (for /debug and tests).
    pub fn cert(&self, key: &WorkloadKey) -> Option<Arc<WorkloadCert>> {
        self.entries.get(key).map(|e| Arc::clone(&e.cert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_file;
    use crate::model::ConfigSnapshot;

    fn mk_registry(extra: &str) -> Registry {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: a}}\nspec: {{address: 127.0.0.2, serviceAccount: sa-a}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: b}}\nspec: {{address: 127.0.0.3}}\n{extra}"
        );
        let parsed = parse_file(std::path::Path::new("w.yaml"), &text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let mut snap = ConfigSnapshot::default();
        for r in parsed.resources {
            snap.resources.insert(r.key(), Arc::new(r));
        }
        Registry::build(&snap)
    }

    fn mk_key(name: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn each_workload_gets_its_own_identity_and_renewal_is_at_half_life() {
        let ca = Arc::new(Ca::ephemeral("example.org").unwrap());
        let mut book = CertBook::new(ca, Duration::from_secs(3600));
        let reg = mk_registry("");
        let now = SystemTime::now();
        let r = book.refresh(&reg, now);
        assert_eq!(r.issued, 2);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let a = crate::ca::inspect(&book.cert(&mk_key("a")).unwrap().cert_chain_pem).unwrap();
        assert_eq!(a.spiffe_ids, ["spiffe://example.org/ns/default/sa/sa-a"]);
        let b = crate::ca::inspect(&book.cert(&mk_key("b")).unwrap().cert_chain_pem).unwrap();
        assert_eq!(b.spiffe_ids, ["spiffe://example.org/ns/default/sa/default"]);
        assert!(!Arc::ptr_eq(
            &r.layers[&mk_key("a")],
            &r.layers[&mk_key("b")]
        ));
        let layer = &r.layers[&mk_key("a")];
        assert!(layer.resources.contains_key(SDS_CERT) && layer.resources.contains_key(SDS_ROOT));

        // Nothing due: nothing issued, same layers.
        let again = book.refresh(&reg, now + Duration::from_secs(60));
        assert_eq!(again.issued, 0);
        assert!(Arc::ptr_eq(&again.layers[&mk_key("a")], layer));
        let next = again.next_renewal.unwrap();
        let half = Duration::from_secs(1800);
        assert!(
            next > now + half - Duration::from_secs(120)
                && next < now + half + Duration::from_secs(60)
        );

        // Past half-life: renewed.
        let later = book.refresh(&reg, now + Duration::from_secs(1900));
        assert_eq!(later.issued, 2);
        assert!(!Arc::ptr_eq(&later.layers[&mk_key("a")], layer));
    }

    #[test]
    fn departed_workloads_are_forgotten_and_sa_change_reissues() {
        let ca = Arc::new(Ca::ephemeral("cluster.local").unwrap());
        let mut book = CertBook::new(ca, Duration::from_secs(3600));
        let now = SystemTime::now();
        book.refresh(&mk_registry(""), now);
        let text = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\nspec: {address: 127.0.0.2, serviceAccount: other}\n";
        let parsed = parse_file(std::path::Path::new("w.yaml"), text);
        let mut snap = ConfigSnapshot::default();
        for r in parsed.resources {
            snap.resources.insert(r.key(), Arc::new(r));
        }
        let r = book.refresh(&Registry::build(&snap), now);
        assert_eq!(r.issued, 1);
        assert_eq!(r.layers.len(), 1);
        assert!(book.cert(&mk_key("b")).is_none());
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let ca = Arc::new(Ca::ephemeral("cluster.local").unwrap());
        let mut book = CertBook::new(ca, Duration::from_secs(3600));
        book.refresh(&mk_registry(""), SystemTime::now());
        let cert = book.cert(&mk_key("a")).unwrap();
        assert!(!format!("{cert:?} {book:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn a_new_signer_with_the_same_bundle_reissues_every_leaf() {
        // A cacerts Secret trusting roots 1 and 2 that switches its signer
        // from 1 to 2: the bundle stays the same, the leaves must not.
        let (r1, k1) = Ca::new_root_pem().unwrap();
        let (r2, k2) = Ca::new_root_pem().unwrap();
        let both = format!("{r1}{r2}");
        let mk = |cert: &str, key: &crate::ca::Secret| {
            Ca::from_cacerts_pem(
                "Secret ns/cacerts",
                cert.to_string(),
                key.clone(),
                both.clone(),
                cert.to_string(),
                "cluster.local",
            )
            .unwrap()
        };
        let ca = Arc::new(mk(&r1, &k1));
        let mut book = CertBook::new(Arc::clone(&ca), Duration::from_secs(3600));
        let now = SystemTime::now();
        assert_eq!(book.refresh(&mk_registry(""), now).issued, 2);
        // The same Secret adopted again: nothing to do.
        assert!(!ca.adopt(mk(&r1, &k1)).unwrap().any());
        assert_eq!(book.refresh(&mk_registry(""), now).issued, 0);
        let roots = ca.roots_pem();
        let change = ca.adopt(mk(&r2, &k2)).unwrap();
        assert!(change.signer && !change.roots_added && !change.roots_dropped);
        assert_eq!(ca.roots_pem(), roots);
        assert_eq!(book.refresh(&mk_registry(""), now).issued, 2);
    }
}
