//! HTTPS for the webhook: rustls with pilotfish's serving certificate,
//! HTTP/1.1 and HTTP/2 (the API server uses either), `POST /validate`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span, warn};

/// A client that has not finished its TLS handshake by then is dropped, so
/// idle connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn validate(body: Bytes) -> (StatusCode, axum::Json<serde_json::Value>) {
    let reply = serde_json::from_slice(&body)
        .map_err(|e| format!("the body is not JSON: {e}"))
        .and_then(|v| super::review(&v));
    match reply {
        Ok(v) => {
            let r = &v["response"];
            debug!(uid = %r["uid"], allowed = %r["allowed"], "admission review");
            (StatusCode::OK, axum::Json(v))
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": e})),
        ),
    }
}

/// The webhook's routes.
pub fn router() -> Router {
    Router::new()
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(super::MAX_BODY_BYTES))
}

/// Serves the webhook on `listener` over TLS with `tls` (HTTP/1.1 and h2;
/// see `crate::ca::serving::ServingCert`, read at every handshake so a
/// renewed certificate needs no restart) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let service = TowerToHyperService::new(router());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(
            async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return debug!(error = %e, "webhook TLS handshake failed"),
                    Err(_) => return debug!("webhook TLS handshake timed out"),
                };
                let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                if let Err(e) = conn {
                    debug!(error = %e, "webhook connection ended");
                }
            }
            .instrument(info_span!("webhook", %peer)),
        );
    }
}
