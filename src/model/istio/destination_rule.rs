//! DestinationRule: policies (load balancing, connection pool, outlier
//! detection, upstream TLS) for traffic to a service and its subsets.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{IstioStatus, PortSelector, WorkloadSelector, at_most_one, field_path};

/// Istio `networking.v1.DestinationRule` (the `spec` of a DestinationRule).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    doc = "Istio DestinationRule: load balancing, connection pool, outlier detection and TLS policies for a service and its subsets.",
    namespaced,
    plural = "destinationrules",
    shortname = "dr",
    category = "istio-io",
    category = "networking-istio-io",
    status = "IstioStatus",
    printcolumn(
        name = "Host",
        type_ = "string",
        json_path = ".spec.host",
        description = "The name of a service from the service registry"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since the object was created"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// Service registry name or ServiceEntry host (may use a wildcard prefix).
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Namespaces this rule is visible to (`.`, `*` or names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

impl DestinationRuleSpec {
    /// Reports the first `oneof` group (anywhere in the spec) with more than
    /// one member set, with its field path, e.g. `trafficPolicy.loadBalancer: ...`.
    pub fn validate_one_of(&self) -> Result<(), String> {
        if let Some(policy) = &self.traffic_policy {
            policy.check_one_of("trafficPolicy")?;
        }
        for (i, subset) in self.subsets.iter().enumerate() {
            if let Some(policy) = &subset.traffic_policy {
                policy.check_one_of(&format!("subsets[{i}].trafficPolicy"))?;
            }
        }
        Ok(())
    }
}

/// Istio `networking.v1.TrafficPolicy`: policies for one destination or subset.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides of the settings above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

impl TrafficPolicy {
    fn check_one_of(&self, path: &str) -> Result<(), String> {
        if let Some(lb) = &self.load_balancer {
            lb.check_one_of(&field_path(path, "loadBalancer"))?;
        }
        for (i, port) in self.port_level_settings.iter().enumerate() {
            if let Some(lb) = &port.load_balancer {
                lb.check_one_of(&field_path(
                    path,
                    &format!("portLevelSettings[{i}].loadBalancer"),
                ))?;
            }
        }
        Ok(())
    }
}

/// Istio `networking.v1.TrafficPolicy.PortTrafficPolicy`: policies for one port.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// Istio `networking.v1.TrafficPolicy.TunnelSettings`: tunnel TCP over e.g. HTTP CONNECT.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub target_host: String,
    pub target_port: u32,
}

/// Istio `networking.v1.TrafficPolicy.ProxyProtocol`: send a PROXY protocol header upstream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// Istio `networking.v1.TrafficPolicy.ProxyProtocol.VERSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProxyProtocolVersion {
    #[default]
    V1,
    V2,
}

/// Istio `networking.v1.TrafficPolicy.RetryBudget`: cap on concurrent retries.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Percentage (0-100) of active requests that may be retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
    /// Duration such as `"10s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<String>,
}

/// Istio `networking.v1.Subset`: a named group of a service's endpoints, by labels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Overrides the rule-level policy for this subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Istio `networking.v1.LoadBalancerSettings`: load balancing algorithm and locality settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// `oneof lb_policy`: a simple algorithm ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// ... or consistent hashing ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// ... or weights from backend-reported utilization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_utilization: Option<BackendUtilization>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Deprecated: use `warmup`. Duration such as `"60s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
}

/// Enum view of the `lb_policy` oneof of [`LoadBalancerSettings`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadBalancerKind<'a> {
    Simple(SimpleLb),
    ConsistentHash(&'a ConsistentHashLb),
    BackendUtilization(&'a BackendUtilization),
}

impl LoadBalancerSettings {
    /// The algorithm, if set; when several are set the first of simple,
    /// consistentHash, backendUtilization wins.
    pub fn kind(&self) -> Option<LoadBalancerKind<'_>> {
        if let Some(simple) = self.simple {
            return Some(LoadBalancerKind::Simple(simple));
        }
        if let Some(hash) = &self.consistent_hash {
            return Some(LoadBalancerKind::ConsistentHash(hash));
        }
        self.backend_utilization
            .as_ref()
            .map(LoadBalancerKind::BackendUtilization)
    }

    /// Fails if more than one algorithm is set, or if `consistentHash` sets
    /// more than one hash key or hash algorithm.
    pub fn validate_one_of(&self) -> Result<(), String> {
        self.check_one_of("")
    }

    fn check_one_of(&self, path: &str) -> Result<(), String> {
        at_most_one(
            path,
            &[
                ("simple", self.simple.is_some()),
                ("consistentHash", self.consistent_hash.is_some()),
                ("backendUtilization", self.backend_utilization.is_some()),
            ],
        )?;
        if let Some(hash) = &self.consistent_hash {
            hash.check_one_of(&field_path(path, "consistentHash"))?;
        }
        Ok(())
    }
}

/// Istio `networking.v1.LoadBalancerSettings.SimpleLB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Let Istio pick (currently `LEAST_REQUEST`).
    #[default]
    Unspecified,
    /// Deprecated: same as `LEAST_REQUEST`.
    LeastConn,
    Random,
    /// Forward to the original destination address, no load balancing.
    Passthrough,
    RoundRobin,
    LeastRequest,
}

/// Istio `networking.v1.LoadBalancerSettings.ConsistentHashLB`: soft session affinity.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// `oneof hash_key`: a request header ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// ... or a cookie ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// ... or the source IP ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// ... or a query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// `oneof hash_algorithm`: ring hash ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// ... or Maglev.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
    /// Deprecated: use `ring_hash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Enum view of the `hash_key` oneof of [`ConsistentHashLb`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HashKey<'a> {
    HttpHeaderName(&'a str),
    HttpCookie(&'a HttpCookie),
    UseSourceIp(bool),
    HttpQueryParameterName(&'a str),
}

/// Enum view of the `hash_algorithm` oneof of [`ConsistentHashLb`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HashAlgorithm<'a> {
    RingHash(&'a RingHash),
    Maglev(&'a Maglev),
}

impl ConsistentHashLb {
    /// What to hash on, if set; when several are set the first in field order wins.
    pub fn hash_key(&self) -> Option<HashKey<'_>> {
        if let Some(name) = &self.http_header_name {
            return Some(HashKey::HttpHeaderName(name));
        }
        if let Some(cookie) = &self.http_cookie {
            return Some(HashKey::HttpCookie(cookie));
        }
        if let Some(use_ip) = self.use_source_ip {
            return Some(HashKey::UseSourceIp(use_ip));
        }
        self.http_query_parameter_name
            .as_deref()
            .map(HashKey::HttpQueryParameterName)
    }

    /// The hash algorithm, if set; when both are set `ringHash` wins.
    pub fn hash_algorithm(&self) -> Option<HashAlgorithm<'_>> {
        if let Some(ring) = &self.ring_hash {
            return Some(HashAlgorithm::RingHash(ring));
        }
        self.maglev.as_ref().map(HashAlgorithm::Maglev)
    }

    /// Fails if more than one hash key is set, or more than one of `ringHash`,
    /// `maglev` and the deprecated `minimumRingSize`.
    pub fn validate_one_of(&self) -> Result<(), String> {
        self.check_one_of("")
    }

    fn check_one_of(&self, path: &str) -> Result<(), String> {
        at_most_one(
            path,
            &[
                ("httpHeaderName", self.http_header_name.is_some()),
                ("httpCookie", self.http_cookie.is_some()),
                ("useSourceIp", self.use_source_ip.is_some()),
                (
                    "httpQueryParameterName",
                    self.http_query_parameter_name.is_some(),
                ),
            ],
        )?;
        at_most_one(
            path,
            &[
                ("ringHash", self.ring_hash.is_some()),
                ("maglev", self.maglev.is_some()),
                ("minimumRingSize", self.minimum_ring_size.is_some()),
            ],
        )
    }
}

/// Istio `networking.v1.LoadBalancerSettings.ConsistentHashLB.HTTPCookie`: hash on a cookie.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Cookie lifetime, a duration such as `"0s"` (session cookie) or `"1h"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

/// Istio `networking.v1.LoadBalancerSettings.ConsistentHashLB.HTTPCookie.Attribute`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Istio `networking.v1.LoadBalancerSettings.ConsistentHashLB.RingHash`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Istio `networking.v1.LoadBalancerSettings.ConsistentHashLB.MagLev`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    /// Should be a prime number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Istio `networking.v1.LoadBalancerSettings.BackendUtilization`: ORCA-weighted balancing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendUtilization {
    /// Duration such as `"3m"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_expiration_period: Option<String>,
    /// Duration such as `"10s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_stabilization_period: Option<String>,
    /// Duration such as `"1s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_update_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_utilization_penalty_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_names_for_computing_utilization: Vec<String>,
}

/// Istio `networking.v1.WarmupConfiguration`: slow start for new endpoints.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Duration such as `"60s"`.
    pub duration: String,
    /// Starting share of traffic, 0-100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// Istio `networking.v1.LocalityLoadBalancerSetting`: locality-weighted distribution and failover.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Labels used to order endpoints by priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Istio `networking.v1.LocalityLoadBalancerSetting.Distribute`: weights from one locality.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Originating locality, `region/zone/subzone`, `*` allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Upstream locality to traffic weight.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// Istio `networking.v1.LocalityLoadBalancerSetting.Failover`: region to fail over to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Istio `networking.v1.ZoneAwareLbSetting`: Envoy zone-aware routing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLbSetting {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u32>,
}

/// Istio `networking.v1.ConnectionPoolSettings`: upstream connection limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// Istio `networking.v1.ConnectionPoolSettings.TCPSettings`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    /// Duration such as `"10s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Duration such as `"1h"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<String>,
    /// Duration such as `"1h"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

/// Istio `networking.v1.ConnectionPoolSettings.TCPSettings.TcpKeepalive`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle duration before probing, such as `"7200s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Duration between probes, such as `"75s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// Istio `networking.v1.ConnectionPoolSettings.HTTPSettings`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Duration such as `"1h"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// Istio `networking.v1.ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Use the mesh-wide default.
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// Istio `networking.v1.ConnectionPoolSettings.HTTPSettings.HTTP2KeepAlive`: HTTP/2 PINGs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http2KeepAlive {
    /// Duration such as `"30s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Duration such as `"5s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Istio `networking.v1.OutlierDetection`: eject unhealthy hosts from the pool.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated: use `consecutive_gateway_errors` / `consecutive_5xx_errors`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Duration between ejection sweeps, such as `"10s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Duration such as `"30s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
    /// HTTP status codes (100-599) counted as errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

/// Istio `networking.v1.ClientTLSSettings`: TLS from the proxy to the upstream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// File path; required for `MUTUAL` unless `credential_name` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// File path; required for `MUTUAL` unless `credential_name` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// File path of CA certificates used to verify the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Name of a secret holding the client certificate, key and CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// File path of a certificate revocation list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

/// Istio `networking.v1.ClientTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plain text.
    #[default]
    Disable,
    /// TLS, verifying the server.
    Simple,
    /// Mutual TLS with user-supplied certificates.
    Mutual,
    /// Mutual TLS with Istio-issued workload certificates.
    IstioMutual,
}
