//! The admin HTTP surface: health, metrics and debug views. It reads from the
//! other roles; none of them reads from it.

pub mod client;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use prost::Message;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::config::ConfigState;
use crate::xds::cache::XdsSnapshot;
use crate::xds::server::status::SyncRegistry;
use crate::xds::types::XdsType;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<prometheus_client::registry::Registry>,
    pub syncs: SyncRegistry,
    pub config: watch::Receiver<Arc<ConfigState>>,
    pub xds: watch::Receiver<Arc<XdsSnapshot>>,
    pub telemetry: crate::telemetry::sink::Sink,
    /// Root rotation (POST /ca/rotate); None when the CA cannot rotate here.
    pub rotation: Option<Rotation>,
    /// WorkloadGroup auto-registration (/debug/autoregistration).
    pub autoreg: Option<crate::xds::autoregister::AutoRegistry>,
}

/// What a root rotation step needs: the CA, and who to wake afterwards.
#[derive(Clone)]
pub struct Rotation {
    pub ca: Arc<crate::ca::Ca>,
    pub roots_changed: Arc<tokio::sync::Notify>,
    /// The xDS serving certificate, re-issued once a rotation finishes so
    /// that it chains to the one root left in the bundle.
    pub serving: Option<Arc<crate::ca::serving::ServingCert>>,
    /// Root and chain expiry gauges, set again after each step.
    pub metrics: crate::metrics::Metrics,
    /// Where the root is kept when not in a state dir (a Kubernetes
    /// Secret): the step is written there, and every replica follows.
    pub remote: Option<RemoteRotation>,
}

/// A rotation step done elsewhere (`begin`/`finish` in, the number of
/// roots trusted out, or why not).
pub type RemoteRotation = Arc<
    dyn Fn(String) -> futures_util::future::BoxFuture<'static, Result<usize, String>> + Send + Sync,
>;

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/config_errors", get(config_errors))
        .route("/debug/proxy_stats", get(proxy_stats))
        .route("/debug/autoregistration", get(autoregistration))
        .route("/ca/rotate", axum::routing::post(rotate))
        .merge(ui::routes())
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.xds.borrow().generation > 0 {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "config not loaded yet\n").into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn syncz(State(s): State<AdminState>) -> Json<serde_json::Value> {
    Json(json!(s.syncs.syncs()))
}

async fn config_errors(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let state = Arc::clone(&s.config.borrow());
    // Found in translation: TCP services left out of a shared port.
    let xds = Arc::clone(&s.xds.borrow());
    let mut warnings = state.warnings.clone();
    warnings.extend(xds.tcp_conflict_warnings());
    Json(json!({
        "version": state.version,
        "files": state.files,
        "errors": state.errors,
        "warnings": warnings,
    }))
}

#[derive(Deserialize)]
struct RotateQuery {
    step: String,
}

/// A root rotation step: `begin` makes a new root the signer (both roots
/// trusted, every workload re-issued at once); `finish`, once every proxy
/// holds a certificate from the new root, stops trusting the old one.
async fn rotate(State(s): State<AdminState>, Query(q): Query<RotateQuery>) -> Response {
    let Some(r) = s.rotation else {
        return (StatusCode::CONFLICT, "this CA cannot rotate its root\n").into_response();
    };
    if let Some(remote) = &r.remote {
        return match remote(q.step.clone()).await {
            Ok(roots) => {
                tracing::info!(step = %q.step, "root rotation step written; every replica follows");
                Json(json!({"step": q.step, "roots": roots})).into_response()
            }
            Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
        };
    }
    let ca = Arc::clone(&r.ca);
    let step = q.step.clone();
    let serving = r.serving.clone();
    let done = tokio::task::spawn_blocking(move || match step.as_str() {
        "begin" => ca.begin_rotation(),
        "finish" => ca.finish_rotation().and_then(|()| match &serving {
            Some(s) => s.reissue(),
            None => Ok(()),
        }),
        other => Err(crate::ca::CaError::Rotation(format!(
            "unknown step {other:?}: begin or finish"
        ))),
    })
    .await;
    match done {
        Ok(Ok(())) => {
            r.roots_changed.notify_one();
            r.metrics.record_ca_expiry(&r.ca);
            tracing::info!(step = %q.step, "root rotation step done");
            Json(json!({"step": q.step, "roots": r.ca.roots_pem().matches("BEGIN CERTIFICATE").count()}))
                .into_response()
        }
        Ok(Err(e)) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The latest Envoy stats summary of each proxy (from the metrics sink).
async fn proxy_stats(State(s): State<AdminState>) -> Json<serde_json::Value> {
    Json(json!(s.telemetry.proxies.all()))
}

/// The workloads auto-registered for WorkloadGroups: each entry as the
/// model has it, its connections and grace period, or why it is left out.
async fn autoregistration(State(s): State<AdminState>) -> Json<serde_json::Value> {
    Json(json!(
        s.autoreg.as_ref().map(|r| r.debug()).unwrap_or_default()
    ))
}

#[derive(Deserialize)]
struct DumpQuery {
    proxy: Option<String>,
}

/// What pilotfish last sent one proxy, per type, as Envoy JSON.
async fn config_dump(State(s): State<AdminState>, Query(q): Query<DumpQuery>) -> Response {
    let Some(proxy) = q.proxy else {
        return (
            StatusCode::BAD_REQUEST,
            "give ?proxy=NODE_ID or ?proxy=NAMESPACE/WORKLOAD (see /debug/syncz)\n",
        )
            .into_response();
    };
    let Some(sent) = s.syncs.sent(&proxy) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no connected proxy {proxy:?} (see /debug/syncz)\n"),
        )
            .into_response();
    };
    let mut out = serde_json::Map::new();
    for t in XdsType::PUSH_ORDER {
        let resources: Vec<serde_json::Value> = sent
            .get(&t)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|e| {
                // `sotw` holds one DiscoveryResponse.resources entry.
                let any =
                    envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse::decode(
                        e.sotw.as_ref(),
                    )
                    .ok()
                    .and_then(|r| r.resources.into_iter().next());
                let mut body = any
                    .map(|a| crate::xds::dump::to_json(&a.type_url, &a.value))
                    .unwrap_or_else(|| Err("undecodable".into()))
                    .unwrap_or_else(serde_json::Value::String);
                // Private keys never leave pilotfish through the debug API.
                if let Some(key) = body.pointer_mut("/tlsCertificate/privateKey") {
                    *key = json!({"inlineString": "[redacted]"});
                }
                json!({"name": &*e.name, "version": e.version, "resource": body})
            })
            .collect();
        out.insert(t.short().to_string(), json!(resources));
    }
    Json(json!({"proxy": proxy, "resources": out})).into_response()
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
