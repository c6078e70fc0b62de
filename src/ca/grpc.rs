//! Istio's CA API (`istio.v1.auth.IstioCertificateService/CreateCertificate`,
//! see `proto/istio/ca.proto`), served on the xDS port: an istio-agent style
//! client sends a CSR and gets a chain for **its own** identity, the one its
//! credential (the xDS token) names, whatever the CSR asks for.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::warn;

use super::auth::Authenticator;
use super::token::Claims;
use super::{Ca, Identity};
use crate::metrics::Metrics;

/// `istio.v1.auth.IstioCertificateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    #[prost(string, tag = "1")]
    pub csr: String,
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `istio.v1.auth.IstioCertificateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

const SERVICE: &str = "istio.v1.auth.IstioCertificateService";
const METHOD: &str = "CreateCertificate";

/// What the service needs.
#[derive(Clone)]
pub struct CaService {
    pub ca: Arc<Ca>,
    pub trust_domain: String,
    /// Longest certificate handed out (and the lifetime when none is asked for).
    pub max_ttl: Duration,
    /// Verifies callers' credentials; None on an unauthenticated port, where
    /// the API is not served at all.
    pub auth: Authenticator,
    pub metrics: Metrics,
}

impl CaService {
    /// Signs `req` for the identity `claims` name.
    pub fn create(
        &self,
        claims: &Claims,
        req: &IstioCertificateRequest,
    ) -> Result<Vec<String>, Status> {
        self.metrics.csr_count.inc();
        let id = Identity::new(
            self.trust_domain.clone(),
            claims.namespace.clone(),
            claims.service_account.clone(),
        )
        .map_err(|e| {
            self.metrics.id_extraction_errors.inc();
            Status::invalid_argument(e.to_string())
        })?;
        let requested = u64::try_from(req.validity_duration).unwrap_or(0);
        let ttl = if requested == 0 {
            self.max_ttl
        } else {
            Duration::from_secs(requested).min(self.max_ttl)
        };
        match self.ca.sign_csr(&req.csr, &id, ttl) {
            Ok(chain) => {
                self.metrics.certs_issued.inc();
                Ok(chain)
            }
            Err(e) => {
                match e {
                    crate::ca::CaError::InvalidCsr(_) => self.metrics.csr_parse_errors.inc(),
                    _ => self.metrics.csr_sign_errors.inc(),
                };
                warn!(identity = %id, error = %e, "CSR not signed");
                Err(Status::invalid_argument(e.to_string()))
            }
        }
    }
}

impl tonic::server::NamedService for CaService {
    const NAME: &'static str = SERVICE;
}

struct Unary(CaService);

impl tonic::server::UnaryService<IstioCertificateRequest> for Unary {
    type Response = IstioCertificateResponse;
    type Future = std::future::Ready<Result<Response<IstioCertificateResponse>, Status>>;

    fn call(&mut self, request: Request<IstioCertificateRequest>) -> Self::Future {
        // Checked (and put there) by `call` below before the body is read.
        let Some(claims) = request.extensions().get::<Claims>().cloned() else {
            return std::future::ready(Err(Status::unauthenticated("no credential")));
        };
        let result = self
            .0
            .create(&claims, request.get_ref())
            .map(|cert_chain| Response::new(IstioCertificateResponse { cert_chain }));
        std::future::ready(result)
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for CaService {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move {
            let method = req.uri().path().rsplit('/').next().unwrap_or_default();
            if method != METHOD {
                return Ok(Status::unimplemented(format!("unknown method {method}")).into_http());
            }
            let mut req = req;
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match svc.auth.verify_header(header).await {
                Ok(claims) => {
                    req.extensions_mut().insert(claims);
                }
                Err(e) => {
                    svc.metrics.auth_failures.inc();
                    warn!(error = %e, "CA request refused");
                    return Ok(Status::unauthenticated(e.to_string()).into_http());
                }
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                IstioCertificateResponse,
                IstioCertificateRequest,
            >::default());
            Ok(grpc.unary(Unary(svc), req).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::token::TokenKey;
    use std::time::SystemTime;

    /// pilotfish's CA API served in-process, and a bearer token for
    /// `default/productpage-v1` (service account bookinfo-productpage).
    async fn serve() -> (String, String, Metrics, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(TokenKey::load_or_create(dir.path()).unwrap());
        let token = key.sign(
            Claims {
                namespace: "default".into(),
                service_account: "bookinfo-productpage".into(),
                workload: "productpage-v1".into(),
                exp: 0,
            },
            Duration::from_secs(600),
        );
        let svc = CaService {
            ca: Arc::new(Ca::ephemeral("cluster.local").unwrap()),
            trust_domain: "cluster.local".into(),
            max_ttl: Duration::from_secs(3600),
            auth: Authenticator::new(Arc::clone(&key)),
            metrics: Metrics::default(),
        };
        let metrics = svc.metrics.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (format!("http://{addr}"), token, metrics, dir)
    }

    async fn create(
        url: &str,
        token: Option<&str>,
        csr: String,
        validity: i64,
    ) -> Result<IstioCertificateResponse, Status> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.unwrap();
        let mut req = Request::new(IstioCertificateRequest {
            csr,
            validity_duration: validity,
            metadata: None,
        });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let path = http::uri::PathAndQuery::from_static(
            "/istio.v1.auth.IstioCertificateService/CreateCertificate",
        );
        client
            .unary(
                req,
                path,
                tonic_prost::ProstCodec::<IstioCertificateRequest, IstioCertificateResponse>::default(),
            )
            .await
            .map(Response::into_inner)
    }

    /// A CSR that asks for someone else's identity.
    fn csr() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/istio-system/sa/admin"
                .try_into()
                .unwrap(),
        )];
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[tokio::test]
    async fn a_caller_gets_a_chain_for_its_own_identity_only() {
        let (url, token, metrics, _dir) = serve().await;
        let resp = create(&url, Some(&token), csr(), 7 * 24 * 3600)
            .await
            .unwrap();
        assert_eq!(resp.cert_chain.len(), 2, "leaf and root");
        let leaf = crate::ca::inspect(&resp.cert_chain[0]).unwrap();
        // The credential's identity, not the one the CSR asked for.
        assert_eq!(
            leaf.spiffe_ids,
            ["spiffe://cluster.local/ns/default/sa/bookinfo-productpage"]
        );
        // Lifetime clamped to the CA's maximum (an hour here).
        let life = leaf.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(life <= Duration::from_secs(3600), "{life:?}");
        let root = crate::ca::inspect(&resp.cert_chain[1]).unwrap();
        assert!(root.is_ca);
        assert_eq!(metrics.certs_issued.get(), 1);
        assert_eq!(metrics.csr_count.get(), 1);
    }

    #[tokio::test]
    async fn missing_forged_and_bad_requests_are_refused() {
        let (url, token, metrics, _dir) = serve().await;
        let err = create(&url, None, csr(), 0).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let last = if token.ends_with('A') { 'B' } else { 'A' };
        let forged = format!("{}{last}", &token[..token.len() - 1]);
        let err = create(&url, Some(&forged), csr(), 0).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = create(&url, Some(&token), "not a csr".into(), 0)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        // Counted by reason, under Istio's names.
        assert_eq!(metrics.auth_failures.get(), 2);
        assert_eq!(metrics.csr_count.get(), 1);
        assert_eq!(metrics.csr_parse_errors.get(), 1);
        assert_eq!(metrics.csr_sign_errors.get(), 0);
        assert_eq!(metrics.certs_issued.get(), 0);
    }
}
