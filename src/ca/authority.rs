//! The certificate authority: where its signing chain comes from (state dir,
//! Istio cacerts, memory), the shared state behind issuing, and rotating a
//! self-signed root.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use super::chain::{Chain, crypto, csr_public_key, new_root, self_signed_chain};
use super::identity::check_trust_domain;
use super::inspect::system_time;
use super::store::{self, CA_CERT, CA_KEY, CERT_CHAIN, OLD_ROOT_CERT, ROOT_CERT, ROOT_KEY};
use super::{CaError, Identity, Secret, WorkloadCert, pem};

/// A certificate authority for one trust domain. `Send + Sync`; share it
/// behind an `Arc`. Issuing takes a read lock only long enough to clone an
/// `Arc`, so rotation never stalls minting for long.
pub struct Ca {
    trust_domain: String,
    origin: Origin,
    state: RwLock<State>,
    /// Serialises rotation steps (key generation, file writes) without
    /// holding `state` while they run.
    rotation: Mutex<()>,
}

/// Where the signing key came from; decides whether the root can rotate.
enum Origin {
    StateDir(PathBuf),
    Cacerts(PathBuf),
    Ephemeral,
}

/// What `issue` and `roots_pem` read; replaced whole by rotation.
struct State {
    chain: Arc<Chain>,
    /// Trust bundle, canonical PEM per root.
    bundle: Vec<String>,
    /// The previous root while a rotation is in progress.
    old_root: Option<String>,
    /// Counts replacements of the state (rotation steps, adopted Secrets),
    /// so that holders of leaves see a new signer even when the bundle
    /// stays the same.
    generation: u64,
}

/// What [`Ca::adopt`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Leaves are now signed by another certificate or key.
    pub signer: bool,
    /// The trust bundle gained a root.
    pub roots_added: bool,
    /// The trust bundle lost a root: certificates chaining to it (pilotfish's
    /// own serving certificates included) are no longer trusted.
    pub roots_dropped: bool,
}

impl Adopted {
    pub fn any(self) -> bool {
        self.signer || self.roots_added || self.roots_dropped
    }
}

impl Ca {
    /// A self-signed root kept in `state_dir` (`root-cert.pem`, and
    /// `root-key.pem` with mode 0600; the directory is created 0700 if
    /// missing). Created on first start, reused on later starts; a rotation
    /// in progress (`old-root-cert.pem`) is picked up again.
    pub fn load_or_create(state_dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain)?;
        store::ensure_state_dir(state_dir)?;
        store::recover(state_dir)?;
        let files = match store::read_state(state_dir)? {
            Some(files) => files,
            None => {
                let (cert_pem, key) = new_root()?;
                let key_pem = Secret::new(key.serialize_pem());
                store::install_root(state_dir, &cert_pem, &key_pem)?;
                tracing::info!(dir = %state_dir.display(), "created a self-signed root CA");
                store::StateFiles {
                    cert_pem,
                    key_pem,
                    old_cert_pem: None,
                }
            }
        };
        let state = state_from_dir(state_dir, files)?;
        let ca = Ca::new(
            trust_domain,
            Origin::StateDir(state_dir.to_path_buf()),
            state,
        );
        tracing::info!(
            dir = %state_dir.display(),
            roots = ca.read().bundle.len(),
            root_not_after = %OffsetDateTime::from(ca.root_not_after()),
            "root CA ready"
        );
        Ok(ca)
    }

    /// A plugged-in CA from Istio's `cacerts` files, read as istiod reads
    /// them: `ca-cert.pem`/`ca-key.pem` sign, `root-cert.pem` is the trust
    /// anchor (one or more roots), `cert-chain.pem` (`ca-cert.pem` first,
    /// then any intermediates, optionally the root) follows every leaf.
    ///
    /// The chain is checked before use: the key matches `ca-cert.pem`, each
    /// certificate is signed by the next, and the last by a root. Roots found
    /// in `cert-chain.pem` are left out of issued chains (peers get them from
    /// the trust bundle).
    pub fn from_cacerts(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain)?;
        let files = store::read_cacerts(dir)?;
        Ca::from_cacerts_files(dir, files, trust_domain)
    }

    /// The same from the four files' contents (Istio's `cacerts` Secret);
    /// `source` names where they came from in errors and logs.
    pub fn from_cacerts_pem(
        source: &str,
        ca_cert: String,
        ca_key: Secret,
        root_cert: String,
        cert_chain: String,
        trust_domain: &str,
    ) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain)?;
        let files = store::CacertsFiles {
            ca_cert,
            ca_key,
            root_cert,
            cert_chain,
        };
        Ca::from_cacerts_files(Path::new(source), files, trust_domain)
    }

    /// A self-signed root given as PEM (istiod's `istio-ca-secret`), checked
    /// as a state dir's root is. `bundle_pem` is the Secret's
    /// `root-cert.pem`: the roots trusted besides the signing one (the
    /// previous root while a rotation is in progress); empty or holding just
    /// the signing root outside one. It does not rotate by itself: the
    /// Kubernetes source rewrites the Secret and [`Ca::adopt`]s the result.
    pub fn from_root_pem(
        source: &str,
        cert_pem: String,
        key_pem: Secret,
        bundle_pem: &str,
        trust_domain: &str,
    ) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain)?;
        let files = store::StateFiles {
            cert_pem,
            key_pem,
            old_cert_pem: None,
        };
        let dir = Path::new(source);
        let mut state = state_from_dir(dir, files)?;
        for der in pem::certs(bundle_pem).map_err(|p| invalid(dir, ROOT_CERT, p))? {
            pem::parse_cert(&der).map_err(|p| invalid(dir, ROOT_CERT, p))?;
            let root = pem::cert_pem(&der);
            if !state.bundle.contains(&root) {
                state.old_root.get_or_insert_with(|| root.clone());
                state.bundle.push(root);
            }
        }
        Ok(Ca::new(
            trust_domain,
            Origin::Cacerts(PathBuf::from(source)),
            state,
        ))
    }

    /// Takes `next`'s signing chain and trust bundle (a CA Secret that
    /// changed), keeping this CA's identity so that every holder of the
    /// `Arc` (SDS, the CA API, serving certificates) follows. Nothing
    /// changes when `next` signs and trusts the same as this CA.
    pub fn adopt(&self, next: Ca) -> Result<Adopted, CaError> {
        if next.trust_domain != self.trust_domain {
            return Err(CaError::Rotation(format!(
                "the new CA is for trust domain {:?}, this one for {:?}",
                next.trust_domain, self.trust_domain
            )));
        }
        let _serial = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let next = next
            .state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let mut state = self.write();
        let signer = |c: &Chain| (c.intermediates.clone(), c.anchor_pem.clone());
        let change = Adopted {
            signer: signer(&state.chain) != signer(&next.chain),
            roots_added: next.bundle.iter().any(|r| !state.bundle.contains(r)),
            roots_dropped: state.bundle.iter().any(|r| !next.bundle.contains(r)),
        };
        if change.any() {
            let generation = state.generation + 1;
            *state = State { generation, ..next };
        }
        Ok(change)
    }

    /// Changes each time the signing chain or the bundle is replaced.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// A new self-signed root (certificate and key, PEM), for a caller that
    /// keeps it somewhere else than a state dir (a Kubernetes Secret).
    pub fn new_root_pem() -> Result<(String, Secret), CaError> {
        let (cert_pem, key) = new_root()?;
        Ok((cert_pem, Secret::new(key.serialize_pem())))
    }

    fn from_cacerts_files(
        dir: &Path,
        files: store::CacertsFiles,
        trust_domain: &str,
    ) -> Result<Ca, CaError> {
        let chain = chain_from_cacerts(dir, &files)?;
        let bundle = pem::certs(&files.root_cert)
            .map_err(|p| invalid(dir, ROOT_CERT, p))?
            .iter()
            .map(|der| pem::cert_pem(der))
            .collect();
        let state = State {
            chain: Arc::new(chain),
            bundle,
            old_root: None,
            generation: 0,
        };
        let ca = Ca::new(trust_domain, Origin::Cacerts(dir.to_path_buf()), state);
        tracing::info!(
            dir = %dir.display(),
            intermediates = ca.read().chain.intermediates.len(),
            chain_not_after = %OffsetDateTime::from(ca.chain_not_after()),
            "plugged-in CA ready"
        );
        Ok(ca)
    }

    /// A CA whose root lives only in memory (tests, benchmarks).
    pub fn ephemeral(trust_domain: &str) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain)?;
        let (cert_pem, key) = new_root()?;
        let state = State {
            chain: Arc::new(self_signed_chain(&cert_pem, key)?),
            bundle: vec![cert_pem],
            old_root: None,
            generation: 0,
        };
        Ok(Ca::new(trust_domain, Origin::Ephemeral, state))
    }

    fn new(trust_domain: &str, origin: Origin, state: State) -> Ca {
        Ca {
            trust_domain: trust_domain.to_string(),
            origin,
            state: RwLock::new(state),
            rotation: Mutex::new(()),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// PEM of every root in the trust bundle: one, or two during a root
    /// rotation (new root first).
    pub fn roots_pem(&self) -> String {
        self.read().bundle.concat()
    }

    /// Expiry of the root that issued chains end at.
    pub fn root_not_after(&self) -> SystemTime {
        self.chain().anchor_not_after
    }

    /// Earliest expiry on the signing chain (signing certificate,
    /// intermediates, root): leaves are cut short to never outlive it.
    pub fn chain_not_after(&self) -> SystemTime {
        self.chain().not_after
    }

    /// Whether `begin_rotation` ran and `finish_rotation` did not yet.
    pub fn rotation_in_progress(&self) -> bool {
        self.read().old_root.is_some()
    }

    /// A new ECDSA P-256 key and a leaf certificate for `id`: its only SAN
    /// is the SPIFFE URI; valid from a minute ago (clock skew) for `ttl`.
    pub fn issue(&self, id: &Identity, ttl: Duration) -> Result<WorkloadCert, CaError> {
        self.issue_with_dns(id, &[], ttl)
    }

    /// As [`Ca::issue`], with DNS SANs besides the SPIFFE URI: for a server
    /// that clients reach by host name (the admission webhook, which the
    /// Kubernetes API server calls as `SERVICE.NAMESPACE.svc`).
    pub fn issue_with_dns(
        &self,
        id: &Identity,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<WorkloadCert, CaError> {
        self.check_identity(id)?;
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto("generating a key"))?;
        let chain = self.chain();
        let leaf = chain.leaf(&key, id, dns_names, ttl)?;
        let mut cert_chain_pem = leaf.pem;
        for intermediate in &chain.intermediates {
            cert_chain_pem.push_str(intermediate);
        }
        tracing::debug!(identity = %id, serial = %leaf.serial_hex, "issued workload certificate");
        Ok(WorkloadCert {
            cert_chain_pem,
            key_pem: Secret::new(key.serialize_pem()),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            serial_hex: leaf.serial_hex,
        })
    }

    /// Signs a PEM CSR for `id` (the Istio CA API path). Only the CSR's
    /// public key is used, after its signature proves the caller holds the
    /// private key: the SAN is `id`'s SPIFFE URI whatever the CSR asks, and
    /// subject, usages and extensions are the CA's choice. Returns the chain
    /// as istiod does: leaf, then intermediates, then the root, one PEM each.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        id: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        self.check_identity(id)?;
        let der = pem::csr(csr_pem).map_err(CaError::InvalidCsr)?;
        let public_key = csr_public_key(&der)?;
        let chain = self.chain();
        let leaf = chain.leaf(&public_key, id, &[], ttl)?;
        tracing::debug!(identity = %id, serial = %leaf.serial_hex, "signed workload CSR");
        let mut out = Vec::with_capacity(chain.intermediates.len() + 2);
        out.push(leaf.pem);
        out.extend(chain.intermediates.iter().cloned());
        out.push(chain.anchor_pem.clone());
        Ok(out)
    }

    /// Root rotation, step 1: a new self-signed root becomes the signing
    /// root (`root-cert.pem`/`root-key.pem`), the current one moves to
    /// `old-root-cert.pem`, and the trust bundle holds both. Leaves issued
    /// from now on chain to the new root; re-issue every workload's
    /// certificate, then call [`Ca::finish_rotation`].
    pub fn begin_rotation(&self) -> Result<(), CaError> {
        let dir = self.rotatable_dir()?;
        let _serial = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let (current, old) = {
            let state = self.read();
            (state.chain.clone(), state.old_root.clone())
        };
        if old.is_some() {
            return Err(CaError::Rotation(
                "a rotation is already in progress; call finish_rotation once every workload \
                 holds a certificate from the new root"
                    .to_string(),
            ));
        }
        let (cert_pem, key) = new_root()?;
        store::write_old_root(dir, &current.anchor_pem)?;
        store::install_root(dir, &cert_pem, &Secret::new(key.serialize_pem()))?;
        let chain = self_signed_chain(&cert_pem, key)?;
        let not_after = chain.anchor_not_after;
        let mut state = self.write();
        *state = State {
            chain: Arc::new(chain),
            bundle: vec![cert_pem, current.anchor_pem.clone()],
            old_root: Some(current.anchor_pem.clone()),
            generation: state.generation + 1,
        };
        drop(state);
        tracing::info!(
            dir = %dir.display(),
            new_root_not_after = %OffsetDateTime::from(not_after),
            "root rotation begun: trust bundle holds the old and the new root"
        );
        Ok(())
    }

    /// Root rotation, step 2: drops the old root from the trust bundle and
    /// deletes `old-root-cert.pem`. Certificates still chaining to the old
    /// root stop being trusted, so call it only after every workload got a
    /// certificate from the new root (and the new bundle reached every peer).
    pub fn finish_rotation(&self) -> Result<(), CaError> {
        let dir = self.rotatable_dir()?;
        let _serial = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        if self.read().old_root.is_none() {
            return Err(CaError::Rotation(
                "no rotation in progress; call begin_rotation first".to_string(),
            ));
        }
        store::remove_old_root(dir)?;
        let mut state = self.write();
        state.bundle = vec![state.chain.anchor_pem.clone()];
        state.old_root = None;
        state.generation += 1;
        tracing::info!(dir = %dir.display(), "root rotation finished: old root removed from the trust bundle");
        Ok(())
    }

    fn rotatable_dir(&self) -> Result<&Path, CaError> {
        match &self.origin {
            Origin::StateDir(dir) => Ok(dir),
            Origin::Cacerts(dir) => Err(CaError::Rotation(format!(
                "this CA is plugged in from {}; rotate it by replacing the cacerts files \
                 or Secret (put the old and new roots in root-cert.pem while workloads move over)",
                dir.display()
            ))),
            Origin::Ephemeral => Err(CaError::Rotation(
                "an in-memory CA has no state dir to keep a rotated root in; use load_or_create"
                    .to_string(),
            )),
        }
    }

    fn check_identity(&self, id: &Identity) -> Result<(), CaError> {
        id.validate()?;
        if id.trust_domain != self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                identity: id.spiffe_uri(),
                ca: self.trust_domain.clone(),
            });
        }
        Ok(())
    }

    fn chain(&self) -> Arc<Chain> {
        self.read().chain.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // State is replaced whole under the lock, so a panic elsewhere
        // cannot leave it half-written: poisoning carries no meaning here.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match &self.origin {
            Origin::StateDir(dir) => format!("state dir {}", dir.display()),
            Origin::Cacerts(dir) => format!("cacerts {}", dir.display()),
            Origin::Ephemeral => "in memory".to_string(),
        };
        let state = self.read();
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("origin", &origin)
            .field("roots", &state.bundle.len())
            .field("intermediates", &state.chain.intermediates.len())
            .field("rotation_in_progress", &state.old_root.is_some())
            .finish_non_exhaustive()
    }
}

/// Checks a state dir's root (self-signed CA, key matches) and its
/// rotation leftovers.
fn state_from_dir(dir: &Path, files: store::StateFiles) -> Result<State, CaError> {
    let der = pem::single_cert(&files.cert_pem).map_err(|p| invalid(dir, ROOT_CERT, p))?;
    let cert = pem::parse_cert(&der).map_err(|p| invalid(dir, ROOT_CERT, p))?;
    if !cert.is_ca() || cert.verify_signature(None).is_err() {
        return Err(invalid(dir, ROOT_CERT, "not a self-signed CA certificate"));
    }
    let key = pem::private_key(files.key_pem.expose()).map_err(|p| invalid(dir, ROOT_KEY, p))?;
    if !pem::key_matches(&key, &cert) {
        return Err(invalid(
            dir,
            ROOT_KEY,
            format!("does not match the public key of {ROOT_CERT}"),
        ));
    }
    if system_time(cert.validity().not_after) <= SystemTime::now() {
        tracing::warn!(dir = %dir.display(), "the root CA has expired; begin a root rotation");
    }
    let cert_pem = pem::cert_pem(&der);
    let chain = self_signed_chain(&cert_pem, key)?;
    let mut old_root = None;
    if let Some(old_pem) = &files.old_cert_pem {
        let old_der = pem::single_cert(old_pem).map_err(|p| invalid(dir, OLD_ROOT_CERT, p))?;
        if old_der == der {
            // Left by a begin_rotation that crashed before the new root was
            // committed: nothing is rotating.
            store::remove_old_root(dir)?;
        } else {
            old_root = Some(pem::cert_pem(&old_der));
        }
    }
    let bundle = std::iter::once(cert_pem).chain(old_root.clone()).collect();
    Ok(State {
        chain: Arc::new(chain),
        bundle,
        old_root,
        generation: 0,
    })
}

/// Checks Istio's cacerts files and builds the signing chain from them.
fn chain_from_cacerts(dir: &Path, files: &store::CacertsFiles) -> Result<Chain, CaError> {
    let ca_der = pem::certs(&files.ca_cert)
        .map_err(|p| invalid(dir, CA_CERT, p))
        .and_then(|certs| match certs.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(invalid(dir, CA_CERT, "not a PEM certificate (no CERTIFICATE block)")),
            more => Err(invalid(
                dir,
                CA_CERT,
                format!(
                    "holds {} certificates, expected only the signing certificate (intermediates go in {CERT_CHAIN})",
                    more.len()
                ),
            )),
        })?;
    let ca = pem::parse_cert(&ca_der).map_err(|p| invalid(dir, CA_CERT, p))?;
    if !ca.is_ca() {
        return Err(invalid(
            dir,
            CA_CERT,
            "not a CA certificate (basicConstraints CA:TRUE missing)",
        ));
    }
    if let Ok(Some(usage)) = ca.key_usage()
        && !usage.value.key_cert_sign()
    {
        return Err(invalid(
            dir,
            CA_CERT,
            "key usage does not allow keyCertSign",
        ));
    }
    let ca_not_after = system_time(ca.validity().not_after);
    if ca_not_after <= SystemTime::now() {
        return Err(invalid(
            dir,
            CA_CERT,
            format!(
                "certificate expired at {}",
                OffsetDateTime::from(ca_not_after)
            ),
        ));
    }
    let key = pem::private_key(files.ca_key.expose()).map_err(|p| invalid(dir, CA_KEY, p))?;
    if !pem::key_matches(&key, &ca) {
        return Err(invalid(
            dir,
            CA_KEY,
            format!("does not match the public key of {CA_CERT}"),
        ));
    }

    let root_ders = pem::certs(&files.root_cert).map_err(|p| invalid(dir, ROOT_CERT, p))?;
    if root_ders.is_empty() {
        return Err(invalid(
            dir,
            ROOT_CERT,
            "not a PEM certificate (no CERTIFICATE block)",
        ));
    }
    let roots = root_ders
        .iter()
        .map(|der| pem::parse_cert(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| invalid(dir, ROOT_CERT, p))?;

    // cert-chain.pem minus any roots: the certificates a leaf is sent with.
    let chain_ders: Vec<Vec<u8>> = pem::certs(&files.cert_chain)
        .map_err(|p| invalid(dir, CERT_CHAIN, p))?
        .into_iter()
        .filter(|der| !root_ders.contains(der))
        .collect();
    let ca_is_root = root_ders.contains(&ca_der);
    match chain_ders.first() {
        Some(first) if *first != ca_der => {
            return Err(invalid(
                dir,
                CERT_CHAIN,
                format!(
                    "must begin with the certificate in {CA_CERT} (Istio's layout: {CA_CERT}, \
                     then any intermediates, then optionally the root)"
                ),
            ));
        }
        None if !ca_is_root => {
            return Err(invalid(
                dir,
                CERT_CHAIN,
                format!(
                    "holds no certificate besides roots; expected the certificate in {CA_CERT} \
                     first, then any intermediates"
                ),
            ));
        }
        _ => {}
    }
    let chain = chain_ders
        .iter()
        .map(|der| pem::parse_cert(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| invalid(dir, CERT_CHAIN, p))?;
    for (i, pair) in chain.windows(2).enumerate() {
        if !signed_by(&pair[0], &pair[1]) {
            return Err(invalid(
                dir,
                CERT_CHAIN,
                format!(
                    "certificate {} ({}) is not signed by certificate {} ({})",
                    i + 1,
                    pair[0].subject(),
                    i + 2,
                    pair[1].subject()
                ),
            ));
        }
    }
    let anchor = match chain.last() {
        None => ca_der.clone(),
        Some(top) => root_ders
            .iter()
            .zip(&roots)
            .find(|(_, root)| signed_by(top, root))
            .map(|(der, _)| der.clone())
            .ok_or_else(|| {
                invalid(
                    dir,
                    CERT_CHAIN,
                    format!(
                        "its last certificate ({}, issued by {}) is not signed by any certificate in {ROOT_CERT}",
                        top.subject(),
                        top.issuer()
                    ),
                )
            })?,
    };
    let anchor_not_after = pem::parse_cert(&anchor)
        .map(|c| system_time(c.validity().not_after))
        .map_err(|p| invalid(dir, ROOT_CERT, p))?;
    let not_after = chain
        .iter()
        .map(|c| system_time(c.validity().not_after))
        .fold(anchor_not_after, SystemTime::min);
    let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), key)
        .map_err(|e| invalid(dir, CA_CERT, format!("cannot sign with it: {e}")))?;
    Ok(Chain {
        issuer,
        intermediates: chain_ders.iter().map(|der| pem::cert_pem(der)).collect(),
        anchor_pem: pem::cert_pem(&anchor),
        anchor_not_after,
        not_after,
    })
}

fn signed_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    child.verify_signature(Some(parent.public_key())).is_ok()
}

fn invalid(dir: &Path, file: &str, problem: impl Into<String>) -> CaError {
    CaError::InvalidFile {
        dir: dir.to_path_buf(),
        file: file.to_string(),
        problem: problem.into(),
    }
}
