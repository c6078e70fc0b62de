//! The Pilot role: translate the model into Envoy resources, encode them once,
//! and serve them to every connected Envoy over ADS.

pub mod bootstrap;
pub mod cache;
pub mod dump;
pub mod encoded;
pub mod server;
pub mod translate;
pub mod types;

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::ConfigState;
use crate::metrics::Metrics;
use crate::model::Registry;

/// Turns each new config state into a new xDS snapshot, off the async
/// workers; runs until either channel closes.
pub async fn run_translator(
    mut config: watch::Receiver<Arc<ConfigState>>,
    out: watch::Sender<Arc<cache::XdsSnapshot>>,
    metrics: Metrics,
) {
    let mut last_version = 0;
    loop {
        let state = Arc::clone(&config.borrow_and_update());
        if state.version != last_version {
            last_version = state.version;
            let prev = Arc::clone(&out.borrow());
            let built = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let registry = Registry::build(&state.snapshot);
                let snap = cache::XdsSnapshot::build(&prev, &state.snapshot, &registry, translate::DEFAULT_TRUST_DOMAIN);
                (snap, registry, started.elapsed())
            })
            .await;
            match built {
                Ok((snap, registry, took)) => {
                    for w in &registry.warnings {
                        warn!("{w}");
                    }
                    metrics.services.set(registry.services.len() as i64);
                    info!(
                        generation = snap.generation,
                        services = registry.services.len(),
                        workloads = registry.workloads.len(),
                        took_ms = took.as_secs_f64() * 1e3,
                        "xDS snapshot built"
                    );
                    if out.send(Arc::new(snap)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "translation task failed; keeping the previous snapshot")
                }
            }
        }
        if config.changed().await.is_err() {
            return;
        }
    }
}
