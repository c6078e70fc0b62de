//! Envoy's AccessLogService and MetricsService, served next to ADS on the
//! same (authenticated) port.
//!
//! Access logs become Istio's request and TCP metrics (see `labels`). Stats
//! from the metrics sink keep a small per-proxy summary (uptime, memory,
//! xDS connection state) for the debug API and the mesh page; the full stats
//! stay in Envoy, where `/stats/prometheus` serves them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::{
    AccessLogService, AccessLogServiceServer,
};
use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse, stream_access_logs_message::LogEntries,
};
use envoy_types::pb::envoy::service::metrics::v3::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use envoy_types::pb::envoy::service::metrics::v3::{StreamMetricsMessage, StreamMetricsResponse};
use envoy_types::pb::io::prometheus::client::MetricFamily;
use serde::Serialize;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::labels::{
    Attributes, MeshView, Reporter, apply_http, apply_tcp, http_sample, tcp_sample,
};
use super::series::SeriesStore;
use crate::ca::auth::{Authenticated, Authenticator};
use crate::ca::token::Claims;
use crate::metrics::Metrics;
use crate::model::WorkloadKey;
use crate::xds::server::workload_of;
use crate::xds::translate::access_log::{
    LOG_HTTP_INBOUND, LOG_HTTP_OUTBOUND, LOG_TCP_INBOUND, LOG_TCP_OUTBOUND,
};

/// Largest message accepted from a proxy (Envoy batches 16 KiB of logs).
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// What the sink shares between streams.
#[derive(Clone, Debug)]
pub struct Sink {
    pub series: Arc<SeriesStore>,
    pub view: watch::Receiver<Arc<MeshView>>,
    pub proxies: ProxyStats,
    pub metrics: Metrics,
}

/// The proxy a telemetry stream is from: its node, checked against the
/// stream's credential when the port authenticates.
fn proxy_of(node: Option<&Node>, claims: Option<&Claims>) -> Result<WorkloadKey, Status> {
    let node = node.ok_or_else(|| {
        Status::invalid_argument("the first message on a stream must carry the identifier")
    })?;
    let key = workload_of(node).ok_or_else(|| {
        Status::invalid_argument("the node names no workload (set NAMESPACE and WORKLOAD_NAME)")
    })?;
    // A ServiceAccount token without a pod (empty workload) reports for
    // workloads of its namespace: telemetry labels, not an identity.
    if let Some(c) = claims
        && (c.namespace != key.namespace || (!c.workload.is_empty() && c.workload != key.name))
    {
        return Err(Status::permission_denied(format!(
            "the credential is for workload {}/{}, not {key}",
            c.namespace, c.workload
        )));
    }
    Ok(key)
}

#[tonic::async_trait]
impl AccessLogService for Sink {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let claims = request.extensions().get::<Claims>().cloned();
        let mut stream = request.into_inner();
        let mut who: Option<(WorkloadKey, String)> = None;
        while let Some(msg) = stream.message().await? {
            if let Some(id) = &msg.identifier {
                let key = proxy_of(id.node.as_ref(), claims.as_ref()).inspect_err(|e| {
                    warn!(error = %e, "access-log stream refused");
                    self.metrics.auth_failures.inc();
                })?;
                who = Some((key, id.log_name.clone()));
            }
            let Some((proxy, log_name)) = &who else {
                return Err(Status::invalid_argument(
                    "the first message on a stream must carry the identifier",
                ));
            };
            let reporter = match log_name.as_str() {
                LOG_HTTP_OUTBOUND | LOG_TCP_OUTBOUND => Reporter::Source,
                LOG_HTTP_INBOUND | LOG_TCP_INBOUND => Reporter::Destination,
                other => {
                    debug!(
                        log_name = other,
                        "access log from a logger pilotfish did not configure; ignored"
                    );
                    continue;
                }
            };
            let view = Arc::clone(&self.view.borrow());
            match msg.log_entries {
                Some(LogEntries::HttpLogs(logs)) => {
                    let policy = view.policy(proxy, reporter);
                    let mut samples = Vec::with_capacity(logs.log_entry.len());
                    for e in &logs.log_entry {
                        let s = http_sample(&view, reporter, proxy, e);
                        match policy {
                            None => samples.push(s),
                            Some(p) => {
                                let code = s.labels.response_code.clone();
                                samples.extend(apply_http(p, s, &Attributes::of(e, &code)));
                            }
                        }
                    }
                    self.series.record_http(&samples);
                }
                Some(LogEntries::TcpLogs(logs)) => {
                    let policy = view.policy(proxy, reporter);
                    let mut samples = Vec::with_capacity(logs.log_entry.len());
                    for e in &logs.log_entry {
                        let s = tcp_sample(&view, reporter, proxy, e);
                        match policy {
                            None => samples.push(s),
                            Some(p) => samples.extend(apply_tcp(p, s)),
                        }
                    }
                    self.series.record_tcp(&samples);
                }
                None => {}
            }
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}

/// The few Envoy stats pilotfish keeps per proxy (the rest stays in Envoy).
const KEPT_STATS: &[&str] = &[
    "server.uptime",
    "server.memory_allocated",
    "server.memory_heap_size",
    "server.live",
    "server.total_connections",
    "control_plane.connected_state",
    "cluster_manager.active_clusters",
    "cluster_manager.warming_clusters",
    "listener_manager.total_listeners_active",
    "listener_manager.total_listeners_warming",
];

/// One proxy's latest stats summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProxyStat {
    pub updated_unix: u64,
    pub stats: BTreeMap<String, f64>,
}

/// Latest stats summary per proxy (from the MetricsService sink).
#[derive(Clone, Debug, Default)]
pub struct ProxyStats {
    inner: Arc<Mutex<HashMap<WorkloadKey, ProxyStat>>>,
}

impl ProxyStats {
    fn update(&self, key: &WorkloadKey, families: &[MetricFamily]) {
        let mut stats = BTreeMap::new();
        for f in families {
            let name = f.name.as_deref().unwrap_or_default();
            if !KEPT_STATS.contains(&name) {
                continue;
            }
            for m in &f.metric {
                let v = m
                    .gauge
                    .and_then(|g| g.value)
                    .or(m.counter.as_ref().and_then(|c| c.value))
                    .unwrap_or_default();
                stats.insert(name.to_string(), v);
            }
        }
        let updated_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.insert(
            key.clone(),
            ProxyStat {
                updated_unix,
                stats,
            },
        );
    }

    /// Forgets proxies whose workload left the mesh.
    pub fn expire(&self, live: impl Fn(&WorkloadKey) -> bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.retain(|k, _| live(k));
    }

    /// Every proxy's summary, keyed `namespace/name`.
    pub fn all(&self) -> BTreeMap<String, ProxyStat> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn stream_metrics(
        &self,
        request: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let claims = request.extensions().get::<Claims>().cloned();
        let mut stream = request.into_inner();
        let mut who: Option<WorkloadKey> = None;
        while let Some(msg) = stream.message().await? {
            if let Some(id) = &msg.identifier {
                let key = proxy_of(id.node.as_ref(), claims.as_ref()).inspect_err(|e| {
                    warn!(error = %e, "metrics stream refused");
                    self.metrics.auth_failures.inc();
                })?;
                who = Some(key);
            }
            let Some(proxy) = &who else {
                return Err(Status::invalid_argument(
                    "the first message on a stream must carry the identifier",
                ));
            };
            self.proxies.update(proxy, &msg.envoy_metrics);
        }
        Ok(Response::new(StreamMetricsResponse {}))
    }
}

/// Both sink services, for the gRPC server that also serves ADS.
pub fn routes(sink: Sink, auth: Option<Authenticator>) -> tonic::service::Routes {
    let metrics = sink.metrics.clone();
    let als =
        AccessLogServiceServer::new(sink.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let ms = MetricsServiceServer::new(sink).max_decoding_message_size(MAX_MESSAGE_BYTES);
    tonic::service::Routes::new(Authenticated::new(
        als,
        auth.clone(),
        metrics.clone(),
        "access-log stream",
    ))
    .add_service(Authenticated::new(ms, auth, metrics, "metrics stream"))
}
