//! The translator loop (`run_translator`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cache::XdsSnapshot;
use super::credentials::CredentialDir;
use crate::config::ConfigState;
use crate::metrics::Metrics;

#[tokio::test]
async fn nothing_is_built_before_the_source_has_loaded() {
    // A credential directory that changes before the config is loaded (in
    // Kubernetes mode: Secrets listed before the Istio kinds).
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("gw.crt"), "not a certificate").unwrap();
    let (config_tx, config_rx) = watch::channel(Arc::new(ConfigState::default()));
    let (xds_tx, mut xds_rx) = watch::channel(Arc::new(XdsSnapshot::default()));
    let (metrics, _registry) = Metrics::new();
    tokio::spawn(super::run_translator(
        config_rx,
        xds_tx,
        None,
        Some(CredentialDir::new(creds.path().to_path_buf())),
        metrics,
        None,
        super::translate::OutboundMode::AllowAny,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        xds_rx.borrow().generation,
        0,
        "no snapshot (so /readyz stays unready) before the config is loaded"
    );
    config_tx.send_replace(Arc::new(ConfigState {
        version: 1,
        ..Default::default()
    }));
    tokio::time::timeout(
        Duration::from_secs(10),
        xds_rx.wait_for(|s| s.generation > 0),
    )
    .await
    .expect("a snapshot once the config is loaded")
    .unwrap();
}
