//! The ADS gRPC server: state of the world and delta.
//!
//! The service is written at the HTTP level (still served by tonic's server)
//! so the response path can write pre-encoded, shared resource bytes: tonic's
//! codec path would copy every response into a per-stream encode buffer that
//! keeps the size of the largest message ever sent. Requests are decoded by
//! `requests`, which keeps no buffer between messages.

mod body;
pub mod protocol;
mod requests;
pub mod status;
mod stream;
mod tls;

pub use stream::workload_of;
pub mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tonic::body::Body;
use tonic::server::NamedService;
use tracing::Instrument;

use self::body::AdsBody;
use self::status::SyncRegistry;
use self::stream::Incoming;
use super::cache::XdsSnapshot;
use crate::ca::auth::Authenticator;
use crate::metrics::Metrics;

const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
/// Largest request accepted from a proxy. Requests carry subscriptions and
/// NACK messages; 16 MiB is far beyond what a real Envoy sends.
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Responses queued for one stream before its task waits for Envoy to read:
/// a slow proxy holds back only its own stream.
const RESPONSE_QUEUE: usize = 4;

/// Everything a stream needs, shared by all streams.
#[derive(Clone, Debug)]
pub struct AdsShared {
    pub snapshots: watch::Receiver<Arc<XdsSnapshot>>,
    pub metrics: Metrics,
    pub syncs: SyncRegistry,
    /// Verifies proxy credentials; None on an unauthenticated (plaintext) port.
    pub auth: Option<Authenticator>,
    /// Registers proxies that name a WorkloadGroup; None: they are refused.
    pub autoreg: Option<crate::xds::autoregister::AutoRegistry>,
}

/// The tower service that tonic's server routes ADS calls to.
#[derive(Clone, Debug)]
pub struct AdsService {
    shared: AdsShared,
}

impl AdsService {
    pub fn new(shared: AdsShared) -> Self {
        AdsService { shared }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<http::Request<Body>> for AdsService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.clone().start(req))
    }
}

impl AdsService {
    /// Checks the credential, then spawns the stream's task.
    async fn start(self, req: http::Request<Body>) -> Result<http::Response<Body>, Infallible> {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        let delta = match method {
            "StreamAggregatedResources" => false,
            "DeltaAggregatedResources" => true,
            _ => {
                let status = tonic::Status::unimplemented(format!("unknown method {method}"));
                return Ok(status.into_http());
            }
        };
        let ext = req.extensions();
        let peer = ext
            .get::<tonic::transport::server::TcpConnectInfo>()
            .or_else(|| {
                ext.get::<tonic::transport::server::TlsConnectInfo<
                    tonic::transport::server::TcpConnectInfo,
                >>()
                .map(|t| t.get_ref())
            })
            .and_then(|i| i.remote_addr())
            .map(|a| a.to_string())
            .unwrap_or_default();
        // The credential, checked before anything else is read.
        let claims = match &self.shared.auth {
            None => None,
            Some(key) => {
                let header = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                match key.verify_header(header).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "xDS connection refused");
                        self.shared.metrics.auth_failures.inc();
                        let status = tonic::Status::unauthenticated(e.to_string());
                        return Ok(status.into_http());
                    }
                }
            }
        };
        let body = req.into_body();
        let incoming = if delta {
            requests::decode::<DeltaDiscoveryRequest, _>(body, MAX_REQUEST_BYTES)
                .map(|r| r.map(Incoming::from_delta))
                .boxed()
        } else {
            requests::decode::<stream::SotwRequest, _>(body, MAX_REQUEST_BYTES)
                .map(|r| r.and_then(Incoming::from_sotw))
                .boxed()
        };
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        let span = tracing::info_span!("ads", peer = %peer, delta);
        tokio::spawn(
            stream::run(
                self.shared.clone(),
                delta,
                incoming,
                tx,
                peer.clone(),
                claims,
            )
            .instrument(span),
        );
        let response = http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(Body::new(AdsBody::new(rx)))
            .unwrap_or_else(|_| tonic::Status::internal("response").into_http());
        Ok(response)
    }
}

/// Pending connections the kernel queues on an xDS port: thousands of proxies
/// reconnect at once after a restart, and the default (128) drops their SYNs.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds an xDS port with `LISTEN_BACKLOG`.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves ADS, and the gRPC services in `others` (the telemetry sink), on
/// `listener` until `shutdown`; over TLS with `tls` (see
/// [`crate::ca::serving::ServingCert::server_config`]: the certificate is
/// read at every handshake, so a renewed one needs no restart).
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: AdsShared,
    others: tonic::service::Routes,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let builder = tonic::transport::Server::builder()
        // Detect dead proxies even when no config changes flow.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_routes(others.add_service(AdsService::new(shared)));
    match tls {
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            builder
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Some(config) => {
            builder
                .serve_with_incoming_shutdown(tls::incoming(listener, config), shutdown)
                .await
        }
    }
}
