//! pilotfish's own TLS serving certificate (the xDS port), kept fresh while
//! the process runs.
//!
//! [`ServingCert`] is a rustls certificate resolver: every handshake reads
//! the current certificate, so a re-issued one takes effect for the next
//! connection without touching open ones. [`ServingCert::keep_fresh`]
//! re-issues it when half its lifetime is gone, and [`ServingCert::reissue`]
//! does it at once (after a root rotation finished, so that the certificate
//! chains to the root the bundle now holds).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{Ca, CaError, Identity};

/// Shortest wait between two renewal attempts, so that a CA that keeps
/// failing does not spin.
const RETRY: Duration = Duration::from_secs(5);

/// Shortest lifetime between two renewals, whatever the TTL.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// The serving certificate of one identity, re-issued from `ca` as needed.
pub struct ServingCert {
    ca: Arc<Ca>,
    identity: Identity,
    /// DNS SANs beside the SPIFFE ID (the webhook's Service names).
    dns_names: Vec<String>,
    ttl: Duration,
    current: RwLock<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    renew_at: SystemTime,
    serial_hex: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("identity", &self.identity.to_string())
            .field("serial", &self.serial_hex())
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Issues the first certificate for `identity`, valid for `ttl` (cut
    /// short by the CA to the signing chain's expiry).
    pub fn new(ca: Arc<Ca>, identity: Identity, ttl: Duration) -> Result<Arc<Self>, CaError> {
        Self::with_dns(ca, identity, Vec::new(), ttl)
    }

    /// Like `new`, with DNS names as further SANs (clients that check a
    /// host name, like the Kubernetes API server calling the webhook).
    pub fn with_dns(
        ca: Arc<Ca>,
        identity: Identity,
        dns_names: Vec<String>,
        ttl: Duration,
    ) -> Result<Arc<Self>, CaError> {
        let current = issue(&ca, &identity, &dns_names, ttl)?;
        Ok(Arc::new(ServingCert {
            ca,
            identity,
            dns_names,
            ttl,
            current: RwLock::new(current),
        }))
    }

    /// The current certificate's serial number, lowercase hex.
    pub fn serial_hex(&self) -> String {
        self.read().serial_hex.clone()
    }

    /// When the current certificate is due for renewal.
    pub fn renew_at(&self) -> SystemTime {
        self.read().renew_at
    }

    /// Issues a new certificate now; the next handshake uses it. Blocking
    /// (key generation and signing take about a millisecond).
    pub fn reissue(&self) -> Result<(), CaError> {
        let next = issue(&self.ca, &self.identity, &self.dns_names, self.ttl)?;
        tracing::info!(identity = %self.identity, serial = %next.serial_hex, "xDS serving certificate issued");
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    /// Re-issues the certificate whenever half its lifetime is gone; runs
    /// until the task is dropped.
    pub async fn keep_fresh(self: Arc<Self>) {
        loop {
            let wait = self
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .max(MIN_WAIT);
            tokio::time::sleep(wait).await;
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.reissue()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "renewing the xDS serving certificate failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "renewing the xDS serving certificate panicked");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// A rustls server configuration that reads this certificate at every
    /// handshake, offering HTTP/2 only (gRPC).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, CaError> {
        self.server_config_alpn(&[b"h2"])
    }

    /// `server_config` offering the given ALPN protocols, in preference order.
    pub fn server_config_alpn(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<rustls::ServerConfig, CaError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CaError::Serving(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.read().key))
    }
}

fn issue(
    ca: &Ca,
    identity: &Identity,
    dns_names: &[String],
    ttl: Duration,
) -> Result<Current, CaError> {
    let cert = if dns_names.is_empty() {
        ca.issue(identity, ttl)?
    } else {
        ca.issue_with_dns(identity, dns_names, ttl)?
    };
    let chain = CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Serving(format!("reading the certificate back: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.expose().as_bytes())
        .map_err(|e| CaError::Serving(format!("reading the key back: {e}")))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| CaError::Serving(format!("loading the key: {e}")))?;
    Ok(Current {
        key: Arc::new(CertifiedKey::new(chain, signer)),
        // Half the lifetime left from now (the certificate's notBefore is
        // back-dated for clock skew, which would make a short one due at once).
        renew_at: {
            let now = SystemTime::now();
            now + cert.not_after.duration_since(now).unwrap_or_default() / 2
        },
        serial_hex: cert.serial_hex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(ttl: Duration) -> Arc<ServingCert> {
        let ca = Arc::new(Ca::ephemeral("cluster.local").unwrap());
        let id = Identity::new("cluster.local", "istio-system", "pilotfish").unwrap();
        ServingCert::new(ca, id, ttl).unwrap()
    }

    /// The leaf the resolver hands out, parsed.
    fn resolved_serial(s: &ServingCert) -> String {
        let key = s.read().key.clone();
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).unwrap();
        cert.raw_serial_as_string().replace(':', "")
    }

    #[test]
    fn reissue_changes_what_handshakes_get() {
        let s = serving(Duration::from_secs(3600));
        let first = resolved_serial(&s);
        assert_eq!(first, s.serial_hex());
        s.reissue().unwrap();
        assert_ne!(resolved_serial(&s), first);
        assert_eq!(resolved_serial(&s), s.serial_hex());
        // Due at half of the lifetime left.
        let due = s.renew_at().duration_since(SystemTime::now()).unwrap();
        assert!(
            due > Duration::from_secs(1700) && due <= Duration::from_secs(1800),
            "{due:?}"
        );
    }

    #[tokio::test]
    async fn keep_fresh_renews_at_half_life() {
        let s = serving(Duration::from_secs(2));
        let first = s.serial_hex();
        let task = tokio::spawn(Arc::clone(&s).keep_fresh());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.serial_hex() == first {
            assert!(std::time::Instant::now() < deadline, "not renewed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        task.abort();
    }

    #[test]
    fn server_config_offers_h2() {
        let s = serving(Duration::from_secs(3600));
        assert_eq!(
            s.server_config().unwrap().alpn_protocols,
            vec![b"h2".to_vec()]
        );
    }
}
