//! Control-plane metrics, registered once and handed to each role.
//!
//! Names follow istiod's where one exists (`pilot_xds`, `pilot_xds_pushes`,
//! `pilot_total_xds_rejects`), so existing dashboards keep working.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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

/// Buckets of `pilot_xds_config_size_bytes`: 256 B to 64 MiB.
#[derive(Clone, Debug, Default)]
pub struct SizeBuckets;

impl MetricConstructor<Histogram> for SizeBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(256.0, 4.0, 10))
    }
}

/// Seconds, 5 ms to 30 s (convergence and debounce times).
const SECONDS_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric pilotfish exports. Cheap to clone (all fields are `Arc`s inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub connected_proxies: Gauge,
    pub pushes: Family<TypeLabel, Counter>,
    pub push_bytes: Family<TypeLabel, Counter>,
    pub rejects: Family<TypeLabel, Counter>,
    pub config_errors: Family<ConfigErrorLabel, Counter>,
    /// Documents in force after a (re)load that passed validation, by kind.
    pub config_passed: Family<ConfigErrorLabel, Counter>,
    pub config_files_invalid: Gauge,
    pub config_reloads: Counter,
    pub services: Gauge,
    /// Sidecar outbound listeners (bind and port) where a TCP service was
    /// left out for another on the same port.
    pub tcp_over_tcp_conflicts: Gauge,
    pub certs_issued: Counter,
    pub root_cert_expiry: Gauge,
    /// Earliest expiry on the CA's signing chain (Unix seconds).
    pub cert_chain_expiry: Gauge,
    /// 1 while this replica holds the leader-election Lease (Kubernetes mode).
    pub leader: Gauge,
    pub auth_failures: Counter,
    /// WorkloadGroup auto-registration, as istiod counts it: entries
    /// created, re-connected, disconnected (grace period started), deleted
    /// after the grace period, and registrations refused.
    pub autoreg_success: Counter,
    pub autoreg_updates: Counter,
    pub autoreg_unregister: Counter,
    pub autoreg_deletes: Counter,
    pub autoreg_errors: Counter,
    /// CSRs received on Istio's CA API, and those not signed.
    pub csr_count: Counter,
    pub csr_sign_errors: Counter,
    /// CSRs that did not parse or whose signature did not verify.
    pub csr_parse_errors: Counter,
    /// CA API callers whose credential names no valid identity.
    pub id_extraction_errors: Counter,
    /// Config change (or certificate renewal) seen → the proxy ACKed it, per push.
    pub convergence: Histogram,
    pub config_size: Family<TypeLabel, Histogram, SizeBuckets>,
    /// First file event → end of the debounce window.
    pub debounce_time: Histogram,
    /// Snapshot rebuilds, by reason (`config`, `secret`).
    pub push_triggers: Family<TypeLabel, Counter>,
}

impl Metrics {
    /// Sets the root and signing-chain expiry gauges from `ca` (at start and
    /// after each root rotation step).
    pub fn record_ca_expiry(&self, ca: &crate::ca::Ca) {
        let unix = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default()
        };
        self.root_cert_expiry.set(unix(ca.root_not_after()));
        self.cert_chain_expiry.set(unix(ca.chain_not_after()));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connected_proxies: Gauge::default(),
            pushes: Family::default(),
            push_bytes: Family::default(),
            rejects: Family::default(),
            config_errors: Family::default(),
            config_passed: Family::default(),
            config_files_invalid: Gauge::default(),
            config_reloads: Counter::default(),
            services: Gauge::default(),
            tcp_over_tcp_conflicts: Gauge::default(),
            certs_issued: Counter::default(),
            root_cert_expiry: Gauge::default(),
            cert_chain_expiry: Gauge::default(),
            leader: Gauge::default(),
            auth_failures: Counter::default(),
            autoreg_success: Counter::default(),
            autoreg_updates: Counter::default(),
            autoreg_unregister: Counter::default(),
            autoreg_deletes: Counter::default(),
            autoreg_errors: Counter::default(),
            csr_count: Counter::default(),
            csr_sign_errors: Counter::default(),
            csr_parse_errors: Counter::default(),
            id_extraction_errors: Counter::default(),
            convergence: Histogram::new(SECONDS_BUCKETS),
            config_size: Family::new_with_constructor(SizeBuckets),
            debounce_time: Histogram::new(SECONDS_BUCKETS),
            push_triggers: Family::default(),
        }
    }
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
            "galley_validation_passed",
            "Configuration documents that passed validation, by kind, counted at each (re)load",
            metrics.config_passed.clone(),
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
            "pilot_conflict_outbound_listener_tcp_over_current_tcp",
            "Number of conflicting tcp listeners with current tcp listener (sidecar outbound ports where TCP services without VIPs collide; the first in Istio's order keeps the port)",
            metrics.tcp_over_tcp_conflicts.clone(),
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
            "pilotfish_leader",
            "1 while this replica holds the leader-election Lease (Kubernetes mode), else 0",
            metrics.leader.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "xDS connections refused: missing, forged or expired credential, or another workload's",
            metrics.auth_failures.clone(),
        );
        for (name, help, c) in [
            (
                "auto_registration_success",
                "WorkloadEntries auto-registered for WorkloadGroups",
                &metrics.autoreg_success,
            ),
            (
                "auto_registration_updates",
                "Auto-registered WorkloadEntries whose proxy connected again",
                &metrics.autoreg_updates,
            ),
            (
                "auto_registration_unregister",
                "Auto-registered WorkloadEntries whose proxy disconnected (grace period started)",
                &metrics.autoreg_unregister,
            ),
            (
                "auto_registration_deletes",
                "Auto-registered WorkloadEntries deleted after the grace period",
                &metrics.autoreg_deletes,
            ),
            (
                "auto_registration_errors",
                "Auto-registrations refused (no such group, identity mismatch, bad node metadata)",
                &metrics.autoreg_errors,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        registry.register(
            "citadel_server_csr_count",
            "CSRs received on Istio's CA API (CreateCertificate)",
            metrics.csr_count.clone(),
        );
        registry.register(
            "citadel_server_csr_sign_err_count",
            "CSRs that parsed but could not be signed",
            metrics.csr_sign_errors.clone(),
        );
        registry.register(
            "citadel_server_csr_parsing_err_count",
            "CSRs that did not parse or whose signature did not verify",
            metrics.csr_parse_errors.clone(),
        );
        registry.register(
            "citadel_server_id_extraction_err_count",
            "CA API callers whose credential names no valid identity",
            metrics.id_extraction_errors.clone(),
        );
        registry.register(
            "citadel_server_cert_chain_expiry_timestamp",
            "When the earliest certificate of the CA's signing chain expires (Unix seconds)",
            metrics.cert_chain_expiry.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a config change (or certificate renewal) being seen to a proxy ACKing the push it caused",
            metrics.convergence.clone(),
        );
        registry.register(
            "pilot_xds_config_size_bytes",
            "Size of each xDS push, by type",
            metrics.config_size.clone(),
        );
        registry.register(
            "pilot_debounce_time",
            "Seconds from the first config file event to the end of its debounce window",
            metrics.debounce_time.clone(),
        );
        registry.register(
            "pilot_push_triggers",
            "xDS snapshot rebuilds, by reason (config, secret)",
            metrics.push_triggers.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        (metrics, registry)
    }

    pub fn type_label(short: &str) -> TypeLabel {
        TypeLabel {
            r#type: short.to_string(),
        }
    }
}

/// The standard `process_*` metrics, read from `/proc/self` on each scrape
/// (Linux; elsewhere they are left out).
#[derive(Debug)]
pub struct ProcessCollector;

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every
/// mainstream architecture.
const TICKS_PER_SECOND: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return Ok(());
        };
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // `fields[0]` is field 3 of proc(5)'s stat.
        let field = |n: usize| -> f64 {
            fields
                .get(n - 3)
                .and_then(|v| v.parse().ok())
                .unwrap_or_default()
        };
        let status_kb = |key: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or_default()
        };
        let boot_time: f64 = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());

        ConstCounter::new((field(14) + field(15)) / TICKS_PER_SECOND).encode(
            encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?,
        )?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                status_kb("VmRSS:") * 1024.0,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                field(23),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                boot_time + field(22) / TICKS_PER_SECOND,
            ),
            ("process_open_fds", "Open file descriptors", open_fds as f64),
            ("process_threads", "OS threads", status_kb("Threads:")),
        ];
        for (name, help, v) in gauges {
            ConstGauge::new(v).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}
