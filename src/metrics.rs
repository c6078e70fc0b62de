//! Control-plane metrics, registered once and handed to each role.
//!
//! Names follow istiod's where one exists (`pilot_xds`, `pilot_xds_pushes`,
//! `pilot_total_xds_rejects`), so existing dashboards keep working.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Short xDS type name: cds, eds, lds, rds.
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigErrorLabel {
    /// Resource kind, or "file" for a file that could not be read or parsed.
    pub kind: String,
}

/// Every metric pilotfish exports. Cheap to clone (all fields are `Arc`s inside).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub connected_proxies: Gauge,
    pub pushes: Family<TypeLabel, Counter>,
    pub push_bytes: Family<TypeLabel, Counter>,
    pub rejects: Family<TypeLabel, Counter>,
    pub config_errors: Family<ConfigErrorLabel, Counter>,
    pub config_files_invalid: Gauge,
    pub config_reloads: Counter,
    pub services: Gauge,
    pub certs_issued: Counter,
    pub root_cert_expiry: Gauge,
    pub auth_failures: Counter,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> (Self, Registry) {
        let metrics = Self::default();
        let mut registry = Registry::default();
        registry.register(
            "pilot_xds",
            "Number of proxies connected to this pilotfish over ADS",
            metrics.connected_proxies.clone(),
        );
        registry.register(
            "pilot_xds_pushes",
            "xDS responses sent, by type",
            metrics.pushes.clone(),
        );
        registry.register(
            "pilot_xds_push_bytes",
            "Bytes of xDS responses sent, by type",
            metrics.push_bytes.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "xDS responses rejected (NACKed) by proxies, by type",
            metrics.rejects.clone(),
        );
        registry.register(
            "galley_validation_failed",
            "Configuration documents rejected by parsing or validation, by kind",
            metrics.config_errors.clone(),
        );
        registry.register(
            "pilotfish_config_files_invalid",
            "Config files whose latest version is invalid (their last good version is serving)",
            metrics.config_files_invalid.clone(),
        );
        registry.register(
            "pilotfish_config_reloads",
            "Times the config directory was re-read after a change",
            metrics.config_reloads.clone(),
        );
        registry.register(
            "pilot_services",
            "Services in the mesh registry",
            metrics.services.clone(),
        );
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "Workload certificates issued",
            metrics.certs_issued.clone(),
        );
        registry.register(
            "citadel_server_root_cert_expiry_timestamp",
            "When the root certificate expires (Unix seconds)",
            metrics.root_cert_expiry.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "xDS connections refused: missing, forged or expired credential, or another workload's",
            metrics.auth_failures.clone(),
        );
        (metrics, registry)
    }

    pub fn type_label(short: &str) -> TypeLabel {
        TypeLabel {
            r#type: short.to_string(),
        }
    }
}
