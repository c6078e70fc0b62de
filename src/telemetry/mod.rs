//! The Mixer role: a telemetry sink inside the control plane.
//!
//! Every sidecar streams its access logs (and, optionally, its stats) to
//! pilotfish over gRPC; pilotfish turns them into Istio's standard metrics
//! (`istio_requests_total` and friends, with Istio's labels) on its own
//! `/metrics`, so one scrape target replaces scraping every sidecar.
//!
//! Data flows one way: xDS snapshots (for the registry) and proxy streams in,
//! series out to the admin API.

pub mod labels;
pub mod series;
pub mod sink;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::watch;
use tracing::debug;

use self::labels::MeshView;
use self::series::SeriesStore;
use self::sink::{ProxyStats, Sink};
use crate::metrics::Metrics;
use crate::model::Registry;
use crate::xds::cache::XdsSnapshot;

/// The sink's shared state, made once at start.
#[derive(Clone, Debug)]
pub struct Telemetry {
    pub sink: Sink,
    view_tx: Arc<watch::Sender<Arc<MeshView>>>,
}

impl Telemetry {
    /// `trust_domain` is set when mesh mTLS is on (principals are known).
    pub fn new(metrics: Metrics, max_series: usize) -> Self {
        let (view_tx, view) =
            watch::channel(Arc::new(MeshView::new(Arc::new(Registry::default()), None)));
        Telemetry {
            sink: Sink {
                series: Arc::new(SeriesStore::new(max_series)),
                view,
                proxies: ProxyStats::default(),
                metrics,
            },
            view_tx: Arc::new(view_tx),
        }
    }

    /// Rebuilds the mesh view whenever translation publishes a new registry,
    /// and expires the series of workloads that left. Runs until `xds` closes.
    pub async fn follow(
        self,
        mut xds: watch::Receiver<Arc<XdsSnapshot>>,
        trust_domain: Option<String>,
    ) {
        let mut current: Option<(Arc<Registry>, Arc<crate::config::ConfigState>)> = None;
        loop {
            let (registry, config) = {
                let snap = xds.borrow_and_update();
                (Arc::clone(&snap.registry), Arc::clone(&snap.config))
            };
            let changed = current
                .as_ref()
                .is_none_or(|(r, c)| !Arc::ptr_eq(r, &registry) || !Arc::ptr_eq(c, &config));
            if changed {
                current = Some((Arc::clone(&registry), Arc::clone(&config)));
                let td = trust_domain.clone();
                let built = tokio::task::spawn_blocking(move || {
                    Arc::new(MeshView::with_config(
                        registry,
                        td.as_deref(),
                        Some(&config.snapshot),
                    ))
                })
                .await;
                let Ok(view) = built else { return };
                let live = |k: &crate::model::WorkloadKey| view.registry.workloads.contains_key(k);
                let expired = self.sink.series.expire(live);
                self.sink.proxies.expire(live);
                if expired > 0 {
                    debug!(expired, "telemetry series of departed workloads removed");
                }
                let _ = self.view_tx.send(view);
            }
            if xds.changed().await.is_err() {
                return;
            }
        }
    }
}
