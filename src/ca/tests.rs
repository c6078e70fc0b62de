use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use super::*;

const TD: &str = "cluster.local";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn mk_id(ns: &str, sa: &str) -> Identity {
    Identity::new(TD, ns, sa).expect("valid identity")
}

fn mk_ca() -> Ca {
    Ca::ephemeral(TD).expect("ephemeral CA")
}

/// DER of every certificate in a PEM text.
fn ders(pem: &str) -> Vec<Vec<u8>> {
    Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| p.expect("PEM block").contents)
        .collect()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).expect("X.509").1
}

/// Whether `child`'s signature verifies with `parent`'s public key.
fn verifies(child: &[u8], parent: &[u8]) -> bool {
    parse(child)
        .verify_signature(Some(parse(parent).public_key()))
        .is_ok()
}

fn close_to(a: SystemTime, b: SystemTime, tolerance: Duration) -> bool {
    let diff = a
        .duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or_default();
    diff <= tolerance
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/ca/testdata")
        .join(name)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// A CA certificate and key made with rcgen directly (not with our code).
struct TestCa {
    cert_pem: String,
    key: KeyPair,
    params: CertificateParams,
}

impl TestCa {
    fn params(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
    }

    fn root(cn: &str) -> TestCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let params = Self::params(cn);
        let cert_pem = params.self_signed(&key).expect("self-signed").pem();
        TestCa {
            cert_pem,
            key,
            params,
        }
    }

    fn intermediate(&self, cn: &str) -> TestCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = Self::params(cn);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert_pem = params.signed_by(&key, &issuer).expect("signed").pem();
        TestCa {
            cert_pem,
            key,
            params,
        }
    }
}

/// Istio's four cacerts files for root -> intermediate; returns both.
fn mk_cacerts(dir: &Path, chain_includes_root: bool) -> (TestCa, TestCa) {
    let root = TestCa::root("test root");
    let intermediate = root.intermediate("test intermediate");
    let chain = if chain_includes_root {
        format!("{}{}", intermediate.cert_pem, root.cert_pem)
    } else {
        intermediate.cert_pem.clone()
    };
    fs::write(dir.join("ca-cert.pem"), &intermediate.cert_pem).expect("write");
    fs::write(dir.join("ca-key.pem"), intermediate.key.serialize_pem()).expect("write");
    fs::write(dir.join("root-cert.pem"), &root.cert_pem).expect("write");
    fs::write(dir.join("cert-chain.pem"), chain).expect("write");
    (root, intermediate)
}

// ---- identity ----

#[test]
fn identity_round_trips_through_its_spiffe_uri() {
    let id = mk_id("default", "bookinfo-productpage");
    let uri = id.spiffe_uri();
    assert_eq!(
        uri,
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert_eq!(Identity::parse(&uri).expect("parses"), id);
    assert_eq!(id.to_string(), uri);
}

#[test]
fn identity_parse_refuses_other_shapes() {
    for bad in [
        "",
        "https://cluster.local/ns/a/sa/b",
        "spiffe://cluster.local",
        "spiffe://cluster.local/ns/a",
        "spiffe://cluster.local/ns/a/sa/b/extra",
        "spiffe://cluster.local/sa/b/ns/a",
        "spiffe://Cluster.Local/ns/a/sa/b",
        "spiffe:///ns/a/sa/b",
        "spiffe://cluster.local/ns//sa/b",
        "spiffe://cluster.local/ns/../sa/b",
        "spiffe://cluster.local/ns/a/sa/b?x=y",
        "spiffe://cluster.local:443/ns/a/sa/b",
    ] {
        let err = Identity::parse(bad).expect_err(bad);
        assert!(
            matches!(err, CaError::InvalidIdentity { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn identity_new_refuses_smuggled_path_segments() {
    let err = Identity::new(TD, "a/sa/admin", "b").expect_err("slash in namespace");
    assert!(err.to_string().contains("namespace"), "{err}");
}

// ---- load_or_create ----

#[test]
fn load_or_create_persists_and_reuses_the_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state/ca");
    let ca = Ca::load_or_create(&dir, TD).expect("create");
    assert_eq!(mode(&dir), 0o700, "state dir mode");
    assert_eq!(mode(&dir.join("root-key.pem")), 0o600, "key file mode");
    let root_file = fs::read_to_string(dir.join("root-cert.pem")).expect("root-cert.pem");
    assert_eq!(ca.roots_pem(), root_file);
    assert!(!dir.join("old-root-cert.pem").exists());

    let info = inspect(&ca.roots_pem()).expect("root parses");
    assert!(info.is_ca);
    assert_eq!(info.subject, "O=pilotfish, CN=pilotfish root CA");
    assert_eq!(info.subject, info.issuer);
    assert!(close_to(
        info.not_after,
        SystemTime::now() + ROOT_TTL,
        Duration::from_secs(120)
    ));
    assert_eq!(ca.root_not_after(), info.not_after);
    let root_der = ders(&root_file);
    let root = parse(&root_der[0]);
    let usage = root.key_usage().expect("ku").expect("has ku").value;
    assert!(usage.key_cert_sign() && usage.crl_sign());

    let again = Ca::load_or_create(&dir, TD).expect("reload");
    assert_eq!(again.roots_pem(), ca.roots_pem());
    let leaf = again.issue(&mk_id("a", "b"), DAY).expect("issue");
    assert!(verifies(
        &ders(&leaf.cert_chain_pem)[0],
        &ders(&root_file)[0]
    ));
}

#[test]
fn load_or_create_names_a_corrupt_root_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    Ca::load_or_create(tmp.path(), TD).expect("create");
    fs::write(tmp.path().join("root-key.pem"), "not a key at all\n").expect("corrupt");
    let err = Ca::load_or_create(tmp.path(), TD).expect_err("corrupt key");
    let msg = err.to_string();
    assert!(
        msg.contains("root-key.pem in ") && msg.contains("not a PEM private key"),
        "{msg}"
    );
}

#[test]
fn load_or_create_refuses_a_key_of_another_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    Ca::load_or_create(tmp.path(), TD).expect("create");
    let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    fs::write(tmp.path().join("root-key.pem"), other.serialize_pem()).expect("swap key");
    let msg = Ca::load_or_create(tmp.path(), TD)
        .expect_err("mismatched key")
        .to_string();
    assert!(
        msg.contains("root-key.pem") && msg.contains("does not match"),
        "{msg}"
    );
    assert!(!msg.contains("PRIVATE KEY"), "{msg}");
}

#[test]
fn load_or_create_refuses_half_a_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    Ca::load_or_create(tmp.path(), TD).expect("create");
    fs::remove_file(tmp.path().join("root-key.pem")).expect("rm");
    let msg = Ca::load_or_create(tmp.path(), TD)
        .expect_err("no key")
        .to_string();
    assert!(msg.contains("root-key.pem is missing"), "{msg}");
}

#[test]
fn load_or_create_completes_a_root_install_cut_short_by_a_crash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    Ca::load_or_create(dir, TD).expect("create");
    // The state a crash leaves after the commit point of an install.
    let next = TestCa::root("next root");
    fs::write(dir.join("root-key.pem.new"), next.key.serialize_pem()).expect("write");
    fs::write(dir.join("root-cert.pem.new"), &next.cert_pem).expect("write");
    let ca = Ca::load_or_create(dir, TD).expect("recover");
    assert_eq!(ders(&ca.roots_pem()), ders(&next.cert_pem));
    assert!(!dir.join("root-cert.pem.new").exists());
    assert!(!dir.join("root-key.pem.new").exists());

    // Before the commit point: the pending key is discarded.
    fs::write(dir.join("root-key.pem.new"), "half-written").expect("write");
    let ca = Ca::load_or_create(dir, TD).expect("discard");
    assert_eq!(ders(&ca.roots_pem()), ders(&next.cert_pem));
    assert!(!dir.join("root-key.pem.new").exists());
}

// ---- issue ----

#[test]
fn issue_mints_a_spiffe_leaf_under_the_root() {
    let ca = mk_ca();
    let id = mk_id("default", "reviews");
    let ttl = Duration::from_secs(3600);
    let cert = ca.issue(&id, ttl).expect("issue");
    let now = SystemTime::now();

    let info = inspect(&cert.cert_chain_pem).expect("leaf parses");
    assert_eq!(info.sans, vec![format!("URI:{}", id.spiffe_uri())]);
    assert_eq!(info.spiffe_ids, vec![id.spiffe_uri()]);
    assert!(!info.is_ca);
    assert_eq!(info.subject, "");
    assert_eq!(info.issuer, inspect(&ca.roots_pem()).expect("root").subject);
    assert!(close_to(info.not_after, now + ttl, Duration::from_secs(2)));
    assert!(close_to(
        info.not_before,
        now - CLOCK_SKEW_GRACE,
        Duration::from_secs(2)
    ));
    assert_eq!(
        (info.not_before, info.not_after),
        (cert.not_before, cert.not_after)
    );
    assert_eq!(info.serial_hex, cert.serial_hex);

    let chain = ders(&cert.cert_chain_pem);
    assert_eq!(chain.len(), 1, "no intermediates, no root");
    let root = ders(&ca.roots_pem());
    assert!(verifies(&chain[0], &root[0]));

    let leaf = parse(&chain[0]);
    let ku = leaf.key_usage().expect("ku").expect("has ku").value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = leaf
        .extended_key_usage()
        .expect("eku")
        .expect("has eku")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    let san = leaf
        .subject_alternative_name()
        .expect("san")
        .expect("has san");
    assert!(san.critical, "SAN is critical when the subject is empty");

    let key = KeyPair::from_pem(cert.key_pem.expose()).expect("key parses");
    assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    assert!(pem::key_matches(&key, &leaf));
}

#[test]
fn issue_gives_fresh_keys_and_serials() {
    let ca = mk_ca();
    let id = mk_id("default", "reviews");
    let a = ca.issue(&id, DAY).expect("issue");
    let b = ca.issue(&id, DAY).expect("issue");
    assert_ne!(a.key_pem, b.key_pem);
    assert_ne!(a.serial_hex, b.serial_hex);
    assert_eq!(a.serial_hex.len(), 32, "128-bit serial");
}

#[test]
fn debug_never_prints_the_key() {
    let cert = mk_ca().issue(&mk_id("a", "b"), DAY).expect("issue");
    let debug = format!("{cert:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(debug.contains("<redacted>"));
    assert_eq!(cert.key_pem.to_string(), "<redacted>");
    assert!(cert.key_pem.expose().contains("PRIVATE KEY"));
}

#[test]
fn issue_refuses_foreign_trust_domains_and_bad_ttls() {
    let ca = mk_ca();
    let foreign = Identity::new("other.domain", "a", "b").expect("valid");
    assert!(matches!(
        ca.issue(&foreign, DAY),
        Err(CaError::ForeignTrustDomain { .. })
    ));
    let id = mk_id("a", "b");
    assert!(matches!(
        ca.issue(&id, Duration::ZERO),
        Err(CaError::InvalidTtl { .. })
    ));
    assert!(matches!(
        ca.issue(&id, MAX_WORKLOAD_TTL + DAY),
        Err(CaError::InvalidTtl { .. })
    ));
    let forged = Identity {
        trust_domain: TD.to_string(),
        namespace: "a/sa/admin".to_string(),
        service_account: "b".to_string(),
    };
    assert!(matches!(
        ca.issue(&forged, DAY),
        Err(CaError::InvalidIdentity { .. })
    ));
}

#[test]
fn renew_at_half_is_the_midpoint() {
    let cert = mk_ca().issue(&mk_id("a", "b"), DAY).expect("issue");
    let lifetime = cert
        .not_after
        .duration_since(cert.not_before)
        .expect("ordered");
    assert_eq!(renew_at(&cert, 0.5), cert.not_before + lifetime / 2);
    assert_eq!(renew_at(&cert, 0.0), cert.not_before);
    assert_eq!(renew_at(&cert, 1.0), cert.not_after);
    assert_eq!(renew_at(&cert, 7.0), cert.not_after, "clamped");
}

// ---- from_cacerts ----

#[test]
fn from_cacerts_signs_with_the_intermediate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, intermediate) = mk_cacerts(tmp.path(), false);
    let ca = Ca::from_cacerts(tmp.path(), TD).expect("plugged-in CA");
    assert_eq!(ca.roots_pem(), root.cert_pem);

    let cert = ca.issue(&mk_id("default", "ratings"), DAY).expect("issue");
    let chain_file = fs::read_to_string(tmp.path().join("cert-chain.pem")).expect("read");
    let leaf_pem = cert
        .cert_chain_pem
        .strip_suffix(chain_file.as_str())
        .expect("chain = leaf + cert-chain.pem");
    assert_eq!(ders(leaf_pem).len(), 1);
    let chain = ders(&cert.cert_chain_pem);
    let inter = ders(&intermediate.cert_pem);
    let root_der = ders(&root.cert_pem);
    assert!(
        verifies(&chain[0], &inter[0]),
        "leaf signed by intermediate"
    );
    assert!(!verifies(&chain[0], &root_der[0]));
    assert!(
        verifies(&chain[1], &root_der[0]),
        "intermediate signed by root"
    );
    assert_eq!(
        inspect(leaf_pem).expect("leaf").issuer,
        inspect(&intermediate.cert_pem).expect("inter").subject
    );

    let csr_chain = ca
        .sign_csr(&mk_csr(&[]), &mk_id("default", "ratings"), DAY)
        .expect("sign");
    assert_eq!(csr_chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(ders(&csr_chain[1]), inter);
    assert_eq!(ders(&csr_chain[2]), root_der);
}

#[test]
fn from_cacerts_leaves_roots_in_cert_chain_to_the_bundle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, intermediate) = mk_cacerts(tmp.path(), true);
    let ca = Ca::from_cacerts(tmp.path(), TD).expect("plugged-in CA");
    let cert = ca.issue(&mk_id("a", "b"), DAY).expect("issue");
    let chain = ders(&cert.cert_chain_pem);
    assert_eq!(
        chain.len(),
        2,
        "leaf + intermediate; the root travels in the bundle"
    );
    assert_eq!(chain[1], ders(&intermediate.cert_pem)[0]);
    assert_eq!(
        ca.root_not_after(),
        inspect(&root.cert_pem).expect("root").not_after
    );
}

#[test]
fn from_cacerts_reads_istios_sample_layout_with_an_rsa_pkcs1_key() {
    let dir = testdata("istio-sample-rsa");
    let ca = Ca::from_cacerts(&dir, TD).expect("Istio-style cacerts");
    let root_file = fs::read_to_string(dir.join("root-cert.pem")).expect("read");
    assert_eq!(ders(&ca.roots_pem()), ders(&root_file));
    let cert = ca.issue(&mk_id("a", "b"), DAY).expect("issue");
    let chain = ders(&cert.cert_chain_pem);
    let ca_cert = ders(&fs::read_to_string(dir.join("ca-cert.pem")).expect("read"));
    assert_eq!(chain.len(), 2);
    assert!(verifies(&chain[0], &ca_cert[0]));
    assert!(verifies(&chain[1], &ders(&root_file)[0]));
}

#[test]
fn from_cacerts_names_missing_and_invalid_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    fs::write(dir.join("ca-cert.pem"), "x").expect("write");
    let msg = Ca::from_cacerts(dir, TD).expect_err("missing").to_string();
    assert!(
        msg.contains(&format!(
            "cacerts dir {} is missing ca-key.pem, root-cert.pem, cert-chain.pem",
            dir.display()
        )),
        "{msg}"
    );

    mk_cacerts(dir, false);
    fs::write(dir.join("ca-key.pem"), "garbage").expect("write");
    let msg = Ca::from_cacerts(dir, TD).expect_err("bad key").to_string();
    assert_eq!(
        msg,
        format!("ca-key.pem in {}: not a PEM private key", dir.display())
    );

    mk_cacerts(dir, false);
    let stranger = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    fs::write(dir.join("ca-key.pem"), stranger.serialize_pem()).expect("write");
    let msg = Ca::from_cacerts(dir, TD)
        .expect_err("wrong key")
        .to_string();
    assert!(
        msg.contains("ca-key.pem in") && msg.contains("does not match"),
        "{msg}"
    );

    mk_cacerts(dir, false);
    fs::write(
        dir.join("root-cert.pem"),
        TestCa::root("unrelated").cert_pem,
    )
    .expect("write");
    let msg = Ca::from_cacerts(dir, TD)
        .expect_err("wrong root")
        .to_string();
    assert!(
        msg.contains("cert-chain.pem in")
            && msg.contains("not signed by any certificate in root-cert.pem"),
        "{msg}"
    );

    let (root, _) = mk_cacerts(dir, false);
    fs::write(dir.join("cert-chain.pem"), &root.cert_pem).expect("write");
    let msg = Ca::from_cacerts(dir, TD)
        .expect_err("chain w/o ca-cert")
        .to_string();
    assert!(msg.contains("cert-chain.pem in"), "{msg}");

    mk_cacerts(dir, false);
    fs::write(
        dir.join("ca-cert.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let msg = Ca::from_cacerts(dir, TD).expect_err("bad cert").to_string();
    assert!(msg.starts_with("ca-cert.pem in"), "{msg}");

    let leaf_dir = tempfile::tempdir().expect("tempdir");
    mk_cacerts(leaf_dir.path(), false);
    let leaf = mk_ca().issue(&mk_id("a", "b"), DAY).expect("issue");
    fs::write(leaf_dir.path().join("ca-cert.pem"), &leaf.cert_chain_pem).expect("write");
    let msg = Ca::from_cacerts(leaf_dir.path(), TD)
        .expect_err("leaf as CA")
        .to_string();
    assert!(msg.contains("not a CA certificate"), "{msg}");
}

// ---- sign_csr ----

/// A CSR asking for `dns` SANs (and a forged SPIFFE ID), signed by a fresh key.
fn mk_csr(dns: &[&str]) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    mk_csr_with(&key, dns)
}

fn mk_csr_with(key: &KeyPair, dns: &[&str]) -> String {
    let mut params = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://cluster.local/ns/kube-system/sa/admin"
            .try_into()
            .expect("ia5"),
    ));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .serialize_request(key)
        .expect("csr")
        .pem()
        .expect("pem")
}

#[test]
fn sign_csr_forces_the_spiffe_san() {
    let ca = mk_ca();
    let id = mk_id("default", "details");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = mk_csr_with(&key, &["evil.example.com"]);
    let chain = ca.sign_csr(&csr, &id, DAY).expect("sign");
    assert_eq!(chain.len(), 2, "leaf, root");
    assert_eq!(chain[1], ca.roots_pem());

    let info = inspect(&chain[0]).expect("leaf");
    assert_eq!(info.sans, vec![format!("URI:{}", id.spiffe_uri())]);
    assert!(!info.is_ca, "the CSR's CA:TRUE request is ignored");
    assert_eq!(info.subject, "");
    let leaf_der = ders(&chain[0]);
    assert!(verifies(&leaf_der[0], &ders(&ca.roots_pem())[0]));
    assert!(
        pem::key_matches(&key, &parse(&leaf_der[0])),
        "CSR's key certified"
    );
}

#[test]
fn sign_csr_accepts_an_rsa_csr_from_openssl() {
    let csr = include_str!("testdata/rsa-2048.csr");
    let id = mk_id("default", "details");
    let chain = mk_ca().sign_csr(csr, &id, DAY).expect("sign RSA CSR");
    assert_eq!(
        inspect(&chain[0]).expect("leaf").sans,
        vec![format!("URI:{}", id.spiffe_uri())]
    );
}

#[test]
fn sign_csr_refuses_garbage_and_forged_signatures() {
    let ca = mk_ca();
    let id = mk_id("a", "b");
    assert!(matches!(
        ca.sign_csr("hello", &id, DAY),
        Err(CaError::InvalidCsr(_))
    ));
    // Flip a byte in the signature at the end of the DER.
    let csr = mk_csr(&[]);
    let block = Pem::iter_from_buffer(csr.as_bytes())
        .next()
        .expect("block")
        .expect("pem");
    let mut der = block.contents;
    let last = der.len() - 3;
    der[last] ^= 0x01;
    let tampered = pem::cert_pem(&der).replace("CERTIFICATE", "CERTIFICATE REQUEST");
    let err = ca.sign_csr(&tampered, &id, DAY).expect_err("tampered");
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );
}

// ---- keys ----

#[test]
fn private_keys_load_from_sec1_and_pkcs8() {
    let sec1 = include_str!("testdata/ec-sec1-key.pem");
    let key = pem::private_key(sec1).expect("SEC1 EC key");
    assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    let pkcs8 = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    assert!(pem::private_key(&pkcs8.serialize_pem()).is_ok());
    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let msg = pem::private_key(encrypted).expect_err("encrypted");
    assert!(msg.contains("encrypted"), "{msg}");
}

// ---- rotation ----

#[test]
fn rotation_adds_then_drops_the_old_root_and_survives_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ca = Ca::load_or_create(dir, TD).expect("create");
    let id = mk_id("default", "reviews");
    let old_root = ders(&ca.roots_pem());
    let old_leaf = ca.issue(&id, DAY).expect("issue");
    assert!(ca.finish_rotation().is_err(), "nothing to finish");

    ca.begin_rotation().expect("begin");
    assert!(ca.rotation_in_progress());
    let bundle = ders(&ca.roots_pem());
    assert_eq!(bundle.len(), 2);
    assert_eq!(bundle[1], old_root[0], "old root stays trusted");
    let new_root = bundle[0].clone();
    assert_ne!(new_root, old_root[0]);
    assert_eq!(
        ders(&fs::read_to_string(dir.join("old-root-cert.pem")).expect("old file")),
        old_root
    );
    assert_eq!(
        ders(&fs::read_to_string(dir.join("root-cert.pem")).expect("root file")),
        vec![new_root.clone()]
    );
    assert_eq!(mode(&dir.join("root-key.pem")), 0o600);
    let new_leaf = ca.issue(&id, DAY).expect("issue");
    assert!(verifies(&ders(&new_leaf.cert_chain_pem)[0], &new_root));
    assert!(!verifies(&ders(&new_leaf.cert_chain_pem)[0], &old_root[0]));
    assert!(verifies(&ders(&old_leaf.cert_chain_pem)[0], &old_root[0]));
    assert!(ca.begin_rotation().is_err(), "one rotation at a time");

    let reloaded = Ca::load_or_create(dir, TD).expect("reload mid-rotation");
    assert_eq!(ders(&reloaded.roots_pem()), bundle);
    assert!(reloaded.rotation_in_progress());

    ca.finish_rotation().expect("finish");
    assert_eq!(ders(&ca.roots_pem()), vec![new_root.clone()]);
    assert!(!dir.join("old-root-cert.pem").exists());
    let reloaded = Ca::load_or_create(dir, TD).expect("reload after");
    assert_eq!(ders(&reloaded.roots_pem()), vec![new_root.clone()]);
    assert!(!reloaded.rotation_in_progress());
    let leaf = reloaded.issue(&id, DAY).expect("issue");
    assert!(verifies(&ders(&leaf.cert_chain_pem)[0], &new_root));
}

#[test]
fn rotation_is_refused_without_a_state_dir() {
    let msg = mk_ca().begin_rotation().expect_err("ephemeral").to_string();
    assert!(msg.contains("load_or_create"), "{msg}");
    let tmp = tempfile::tempdir().expect("tempdir");
    mk_cacerts(tmp.path(), false);
    let ca = Ca::from_cacerts(tmp.path(), TD).expect("plugged-in CA");
    let msg = ca.begin_rotation().expect_err("cacerts").to_string();
    assert!(msg.contains("replacing the cacerts files"), "{msg}");
    assert!(ca.finish_rotation().is_err());
}

#[test]
fn ca_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Ca>();
    shareable::<std::sync::Arc<Ca>>();
}

// ---- measurement ----

#[test]
fn minting_rate_on_one_core() {
    let ca = mk_ca();
    let id = mk_id("default", "bench");
    let n = 500;
    let start = Instant::now();
    for _ in 0..n {
        ca.issue(&id, DAY).expect("issue");
    }
    let elapsed = start.elapsed();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!(
        "ca: minted {n} workload certificates in {elapsed:?} on one thread: {:.0}/s ({profile} build)",
        f64::from(n) / elapsed.as_secs_f64()
    );
}

/// A self-signed root's PEM pair, as a CA Secret holds it.
fn mk_root_pem() -> (String, Secret) {
    Ca::new_root_pem().expect("root")
}

fn root_ca(cert: &str, key: &Secret, bundle: &str) -> Ca {
    Ca::from_root_pem("Secret ns/x", cert.to_string(), key.clone(), bundle, TD).expect("root CA")
}

#[test]
fn a_secret_root_trusts_the_other_roots_of_its_bundle() {
    let (old, _) = mk_root_pem();
    let (new, new_key) = mk_root_pem();
    // Outside a rotation: root-cert.pem empty or the signing root alone.
    for bundle in ["", new.as_str()] {
        let ca = root_ca(&new, &new_key, bundle);
        assert_eq!(ders(&ca.roots_pem()), ders(&new));
        assert!(!ca.rotation_in_progress());
    }
    // During one: the signing root first, then the old one.
    let ca = root_ca(&new, &new_key, &format!("{new}{old}"));
    assert_eq!(ders(&ca.roots_pem()), [ders(&new), ders(&old)].concat());
    assert!(ca.rotation_in_progress());
    assert_eq!(
        other_roots(&new, &format!("{new}{old}{old}"))
            .unwrap()
            .len(),
        1
    );
    assert!(other_roots(&new, &new).unwrap().is_empty());
    // Garbage in root-cert.pem is named.
    let e = Ca::from_root_pem(
        "Secret ns/x",
        new.clone(),
        new_key,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        TD,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("root-cert.pem") && e.contains("Secret ns/x"),
        "{e}"
    );
}

#[test]
fn adopt_switches_signer_and_bundle_in_place_and_says_what_changed() {
    let (old, old_key) = mk_root_pem();
    let (new, new_key) = mk_root_pem();
    let ca = std::sync::Arc::new(root_ca(&old, &old_key, ""));
    let g0 = ca.generation();
    let id = mk_id("default", "web");

    // The same Secret again: nothing changes.
    assert!(!ca.adopt(root_ca(&old, &old_key, "")).unwrap().any());
    assert_eq!(ca.generation(), g0);

    // A new signer with both roots trusted: leaves chain to the new root.
    let change = ca
        .adopt(root_ca(&new, &new_key, &format!("{new}{old}")))
        .unwrap();
    assert_eq!(
        change,
        Adopted {
            signer: true,
            roots_added: true,
            roots_dropped: false
        }
    );
    assert!(ca.generation() > g0);
    assert_eq!(ders(&ca.roots_pem()), [ders(&new), ders(&old)].concat());
    let leaf = ca.issue(&id, DAY).unwrap();
    assert!(verifies(&ders(&leaf.cert_chain_pem)[0], &ders(&new)[0]));

    // The old root leaves the Secret: dropped, signer unchanged.
    let g1 = ca.generation();
    let change = ca.adopt(root_ca(&new, &new_key, "")).unwrap();
    assert_eq!(
        change,
        Adopted {
            signer: false,
            roots_added: false,
            roots_dropped: true
        }
    );
    assert!(ca.generation() > g1);
    assert_eq!(ders(&ca.roots_pem()), ders(&new));

    // Another trust domain is refused, and nothing changes.
    let other = Ca::from_root_pem("Secret ns/x", old.clone(), old_key, "", "example.org").unwrap();
    assert!(ca.adopt(other).is_err());
    assert_eq!(ders(&ca.roots_pem()), ders(&new));
}
