//! Who a proxy is: the credential on its xDS connection, checked by
//! pilotfish's own token key (tokens `pilotfish bootstrap` signs) and, in
//! Kubernetes mode, by a [`Reviewer`] (the API server's TokenReview) for
//! ServiceAccount tokens. Every authenticated gRPC service on the xDS port
//! (ADS, the telemetry sink, the CA API) asks the same [`Authenticator`].

use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;

use super::token::{Claims, TokenError, TokenKey};

/// Checks a bearer token that pilotfish did not sign (a Kubernetes
/// ServiceAccount JWT) and says whom it names.
pub trait Reviewer: Send + Sync {
    fn review(&self, token: String) -> BoxFuture<'static, Result<Claims, TokenError>>;
}

/// Verifies proxy credentials.
#[derive(Clone)]
pub struct Authenticator {
    key: Arc<TokenKey>,
    reviewer: Option<Arc<dyn Reviewer>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("key", &self.key)
            .field("reviewer", &self.reviewer.is_some())
            .finish()
    }
}

/// A JWT has three dot-separated parts; pilotfish's own tokens two.
fn is_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

impl Authenticator {
    /// Only pilotfish's own tokens.
    pub fn new(key: Arc<TokenKey>) -> Authenticator {
        Authenticator {
            key,
            reviewer: None,
        }
    }

    /// Also ServiceAccount tokens, checked by `reviewer`.
    pub fn with_reviewer(mut self, reviewer: Arc<dyn Reviewer>) -> Authenticator {
        self.reviewer = Some(reviewer);
        self
    }

    /// The claims of an `authorization` header value (`Bearer <token>`).
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Claims, TokenError> {
        let token = header
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::Missing)?;
        match &self.reviewer {
            Some(r) if is_jwt(token) => r.review(token.to_string()).await,
            _ => self.key.verify(token, SystemTime::now()),
        }
    }
}

/// A gRPC service behind the authenticator: the caller's claims go into
/// the request's extensions (tonic hands them on to the handler); a caller
/// without a valid credential gets `UNAUTHENTICATED` and is counted. With
/// `auth` None (the plaintext port) every call passes, with no claims.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Option<Authenticator>,
    metrics: crate::metrics::Metrics,
    what: &'static str,
}

impl<S> Authenticated<S> {
    pub fn new(
        inner: S,
        auth: Option<Authenticator>,
        metrics: crate::metrics::Metrics,
        what: &'static str,
    ) -> Self {
        Authenticated {
            inner,
            auth,
            metrics,
            what,
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Authenticated<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is not ready; take the one that is (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (auth, metrics, what) = (self.auth.clone(), self.metrics.clone(), self.what);
        Box::pin(async move {
            if let Some(auth) = auth {
                let header = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                match auth.verify_header(header).await {
                    Ok(claims) => {
                        req.extensions_mut().insert(claims);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "{what} refused");
                        metrics.auth_failures.inc();
                        return Ok(tonic::Status::unauthenticated(e.to_string()).into_http());
                    }
                }
            }
            inner.call(req).await
        })
    }
}
