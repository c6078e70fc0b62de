//! Watches the config directory and publishes a new state after each change,
//! once the debounce window has passed with no further change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::store::{ConfigState, Store};
use crate::metrics::{ConfigErrorLabel, Metrics};

/// Re-reads the directory this often even without events, in case a change
/// was missed (network file systems, a watch limit reached).
const RESCAN_INTERVAL: Duration = Duration::from_secs(30);

/// Loads `dir` once (failing if it cannot be read) and returns the first state
/// and the store to keep watching with.
pub fn load(
    dir: &std::path::Path,
    metrics: &Metrics,
) -> Result<(Store, ConfigState), super::ConfigError> {
    let mut store = Store::open(dir)?;
    store.reload();
    let state = store.state(1);
    record(&state, &store, metrics);
    Ok((store, state))
}

fn record(state: &ConfigState, store: &Store, metrics: &Metrics) {
    for e in &state.errors {
        metrics
            .config_errors
            .get_or_create(&ConfigErrorLabel {
                kind: e.kind().to_string(),
            })
            .inc();
    }
    for r in state.snapshot.resources.values() {
        metrics
            .config_passed
            .get_or_create(&ConfigErrorLabel {
                kind: r.spec.kind().to_string(),
            })
            .inc();
    }
    metrics
        .config_files_invalid
        .set(store.invalid_files() as i64);
}

/// Runs until `tx` has no receivers: re-reads the directory after changes and
/// publishes the new state when anything changed (errors included).
pub async fn run(
    dir: PathBuf,
    mut store: Store,
    debounce: Duration,
    tx: watch::Sender<Arc<ConfigState>>,
    metrics: Metrics,
) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reading files (our own reloads included) raises access events: skip them.
        if let Ok(ev) = res
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            // Full channel: a reload is already pending.
            let _ = ev_tx.try_send(());
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::Recursive) {
            Ok(()) => Some(w),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot watch config directory; rescanning every {RESCAN_INTERVAL:?}");
                None
            }
        },
        Err(e) => {
            warn!(error = %e, "no file watcher; rescanning every {RESCAN_INTERVAL:?}");
            None
        }
    };
    let mut version = tx.borrow().version;
    let mut last_errors = tx.borrow().errors.clone();
    loop {
        tokio::select! {
            ev = ev_rx.recv() => if ev.is_none() { return },
            _ = tokio::time::sleep(RESCAN_INTERVAL) => {},
            _ = tx.closed() => return,
        }
        let first_event = std::time::Instant::now();
        // Debounce: wait until the directory has been quiet for the window.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(debounce) => break,
                ev = ev_rx.recv() => if ev.is_none() { return },
            }
        }
        metrics
            .debounce_time
            .observe(first_event.elapsed().as_secs_f64());
        // File I/O and parsing off the async workers.
        let joined = tokio::task::spawn_blocking(move || {
            let changed = store.reload();
            (store, changed)
        })
        .await;
        let changed;
        (store, changed) = match joined {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "config reload task failed");
                return;
            }
        };
        metrics.config_reloads.inc();
        let mut next = store.state(version + u64::from(changed));
        next.changed_at = Some(first_event);
        if changed || next.errors != last_errors {
            version = next.version;
            last_errors = next.errors.clone();
            info!(
                version,
                resources = next.snapshot.resources.len(),
                errors = next.errors.len(),
                "config reloaded"
            );
            record(&next, &store, &metrics);
            if tx.send(Arc::new(next)).is_err() {
                return;
            }
        }
    }
}
