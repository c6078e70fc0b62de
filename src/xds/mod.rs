//! The Pilot role: translate the model into Envoy resources, encode them once,
//! and serve them to every connected Envoy over ADS.

pub mod autoregister;
pub mod bootstrap;
pub mod cache;
pub mod credentials;
pub mod dump;
pub mod encoded;
pub mod secrets;
pub mod server;
pub mod translate;
pub mod types;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::ConfigState;
use crate::metrics::Metrics;
use crate::model::Registry;

/// Longest sleep between certificate checks, so a clock jump (suspend,
/// NTP step) cannot push a renewal far past its due time.
const MAX_RENEWAL_SLEEP: Duration = Duration::from_secs(60);
/// Shortest: a renewal that keeps failing must not spin.
const MIN_RENEWAL_SLEEP: Duration = Duration::from_secs(1);

/// Turns each new config state into a new xDS snapshot, and keeps workload
/// certificates fresh when a CA runs (`certs`), and gateway credentials
/// current when a credentials directory is given (`creds`, polled), off the
/// async workers; runs until either channel closes.
pub async fn run_translator(
    mut config: watch::Receiver<Arc<ConfigState>>,
    out: watch::Sender<Arc<cache::XdsSnapshot>>,
    mut certs: Option<secrets::CertBook>,
    mut creds: Option<credentials::CredentialDir>,
    metrics: Metrics,
    zipkin: Option<String>,
    outbound: translate::OutboundMode,
) {
    let mut last_version = 0;
    let mut registry = Arc::new(Registry::default());
    let mut next_renewal: Option<SystemTime> = None;
    let roots_changed = certs.as_ref().map(secrets::CertBook::roots_changed);
    let mut woken = false;
    loop {
        let state = Arc::clone(&config.borrow_and_update());
        let config_changed = state.version != last_version;
        let renewal_due = woken || next_renewal.is_some_and(|t| SystemTime::now() >= t);
        woken = false;
        // A handful of small files: read in place.
        let creds_changed = creds.as_mut().is_some_and(|c| c.reload());
        if creds_changed && let Some(c) = &creds {
            info!(source = %c.describe(), credentials = ?c.names().collect::<Vec<_>>(), "gateway credentials read");
            for e in &c.errors {
                warn!(error = %e, "gateway credential not usable");
            }
        }
        // Version 0 is a source that has not loaded yet (Kubernetes before
        // every watched kind is listed): build nothing, so /readyz stays
        // unready, even if credentials or a renewal come first.
        let loaded = state.version != 0;
        if loaded && (config_changed || renewal_due || creds_changed) {
            last_version = state.version;
            let prev = Arc::clone(&out.borrow());
            let old_registry = Arc::clone(&registry);
            let book = certs.take();
            let zipkin = zipkin.clone();
            let mut dir = creds.take();
            let built = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let trigger = if config_changed { "config" } else { "secret" };
                let mut gateway_warnings = Vec::new();
                let mtls = book.is_some();
                let trust_domain = book
                    .as_ref()
                    .map_or(translate::DEFAULT_TRUST_DOMAIN, |b| b.trust_domain())
                    .to_string();
                let (mut snap, registry) = if config_changed {
                    let registry = Arc::new(Registry::build(&state.snapshot));
                    let snap = cache::XdsSnapshot::build_with(
                        &prev,
                        &state.snapshot,
                        &registry,
                        &trust_domain,
                        mtls,
                        zipkin.as_deref(),
                        outbound,
                    );
                    let mesh = translate::Mesh::new(&state.snapshot, &registry).with_mtls(mtls);
                    gateway_warnings.extend(translate::gateway::reference_warnings(&mesh));
                    for w in registry.workloads.values() {
                        gateway_warnings.extend(translate::gateway::warnings(&mesh, w));
                    }
                    gateway_warnings.extend(translate::outbound_tcp::warnings(&mesh));
                    gateway_warnings.extend(translate::inbound::warnings(&mesh));
                    gateway_warnings.extend(translate::egress::warnings(&mesh));
                    (snap, registry)
                } else {
                    let mut snap = (*prev).clone();
                    snap.generation += 1;
                    (snap, old_registry)
                };
                let mut book = book;
                let refresh = book
                    .as_mut()
                    .map(|b| b.refresh(&registry, SystemTime::now()));
                if let Some(r) = &refresh {
                    snap.secrets = r.layers.clone();
                }
                if config_changed {
                    snap.config = Arc::clone(&state);
                }
                let wants = snap.credential_wants();
                if let Some(d) = dir.as_mut() {
                    snap.credentials = d.layers(&wants);
                    let missing = d.missing(&wants);
                    if !missing.is_empty() && (config_changed || creds_changed) {
                        gateway_warnings.push(format!(
                            "credentials {missing:?} not in {} (files NAME.crt and NAME.key, NAME.ca for MUTUAL gateways and TLS origination; Secrets tls.crt/tls.key or cert/key, ca.crt/cacert or NAME-cacert)",
                            d.describe()
                        ));
                    }
                } else if config_changed && wants.values().any(|w| !w.is_empty()) {
                    gateway_warnings.push(
                        "Gateways or DestinationRules name credentials (credentialName) but serve has no --credentials-dir".to_string(),
                    );
                }
                snap.changed_at = if config_changed {
                    state.changed_at.or(Some(started))
                } else {
                    Some(started)
                };
                (snap, registry, book, refresh, started.elapsed(), trigger, dir, gateway_warnings)
            })
            .await;
            match built {
                Ok((snap, reg, book, refresh, took, trigger, dir, gateway_warnings)) => {
                    creds = dir;
                    for w in &gateway_warnings {
                        warn!("{w}");
                    }
                    metrics
                        .push_triggers
                        .get_or_create(&crate::metrics::TypeLabel {
                            r#type: trigger.to_string(),
                        })
                        .inc();
                    certs = book;
                    if config_changed {
                        for w in &reg.warnings {
                            warn!("{w}");
                        }
                    }
                    registry = reg;
                    metrics.services.set(registry.services.len() as i64);
                    metrics
                        .tcp_over_tcp_conflicts
                        .set(snap.tcp_conflicted_listeners() as i64);
                    if let Some(r) = refresh {
                        for e in &r.errors {
                            warn!(error = %e, "certificate not issued");
                        }
                        metrics.certs_issued.inc_by(r.issued as u64);
                        next_renewal = r.next_renewal;
                    }
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
                    warn!(error = %e, "translation task failed; keeping the previous snapshot");
                    return;
                }
            }
        }
        let sleep = next_renewal
            .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
            .unwrap_or(MAX_RENEWAL_SLEEP)
            .clamp(MIN_RENEWAL_SLEEP, MAX_RENEWAL_SLEEP);
        let sleep = if creds.is_some() {
            sleep.min(credentials::POLL_INTERVAL)
        } else {
            sleep
        };
        tokio::select! {
            changed = config.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(sleep) => {},
            _ = async {
                match &roots_changed {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            } => woken = true,
        }
    }
}

#[cfg(test)]
mod tests;
