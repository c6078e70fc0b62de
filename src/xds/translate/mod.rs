//! Pure translation from the mesh model to Envoy resources.
//!
//! Every function here takes the config snapshot and the registry (and the
//! proxy it is for, where the output depends on it) and returns Envoy protos.
//! No I/O, no shared state: golden tests run them on YAML fixtures.

pub mod access_log;
pub mod authz;
pub mod cluster_policy;
pub mod clusters;
pub mod egress;
pub mod endpoints;
pub mod gateway;
pub mod http_policy;
pub mod inbound;
pub mod jwt;
pub mod l4;
pub mod listeners;
pub mod locality;
pub mod mtls;
pub mod outbound_tcp;
pub mod routes;
pub mod scope;
pub mod sidecar_egress;
pub mod tracing;

#[cfg(test)]
mod golden;

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};

use crate::model::istio::DestinationRuleSpec;
pub use crate::model::istio::OutboundMode;
use crate::model::{ConfigSnapshot, Registry, Resource, host};

/// The port every sidecar's outbound HTTP listener binds on its workload's
/// address. Apps send their outbound HTTP there (with the target service in
/// the Host header, or as an HTTP proxy). 15001 is Istio's outbound port.
pub const OUTBOUND_PORT: u32 = 15001;
/// Name of the outbound route table (RDS) every sidecar's outbound listener uses.
pub const OUTBOUND_ROUTE: &str = "outbound";
/// Istio's default connect timeout for upstream clusters.
pub const CONNECT_TIMEOUT_SECS: i64 = 10;

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The inputs of every translation.
#[derive(Clone, Copy, Debug)]
pub struct Mesh<'a> {
    pub config: &'a ConfigSnapshot,
    pub registry: &'a Registry,
    /// The SPIFFE trust domain of workload identities.
    pub trust_domain: &'a str,
    /// Whether proxies get certificates (a CA is running): mesh mTLS is only
    /// configured then, since Envoy would wait for secrets that never come.
    pub mtls: bool,
    /// The Zipkin collector (`host:port`) the `zipkin` tracing provider of
    /// Telemetry resources reports to; None when not configured.
    pub zipkin: Option<&'a str>,
    /// The view being translated for (Sidecar egress hosts, exportTo);
    /// None: every service and rule, as if exported everywhere.
    pub scope: Option<&'a scope::Scope<'a>>,
    /// The client workloads' labels when translating for proxies that share
    /// the outcome of every `sourceLabels` match (see `cache/scope.rs`);
    /// None: such matches never apply.
    pub source_labels: Option<&'a std::collections::BTreeMap<String, String>>,
    /// Mesh-wide `outboundTrafficPolicy` (meshConfig's), which a Sidecar
    /// resource may override per workload; Istio's default is ALLOW_ANY.
    pub outbound_policy: OutboundMode,
}

impl<'a> Mesh<'a> {
    pub fn new(config: &'a ConfigSnapshot, registry: &'a Registry) -> Self {
        Mesh {
            config,
            registry,
            trust_domain: DEFAULT_TRUST_DOMAIN,
            mtls: false,
            zipkin: None,
            scope: None,
            source_labels: None,
            outbound_policy: OutboundMode::AllowAny,
        }
    }

    /// Translation for client proxies carrying `labels` (HTTP `sourceLabels`).
    pub fn with_source_labels(
        self,
        source_labels: Option<&'a std::collections::BTreeMap<String, String>>,
    ) -> Self {
        Mesh {
            source_labels,
            ..self
        }
    }

    /// The mesh-wide outbound traffic policy (see `egress`).
    pub fn with_outbound_policy(self, outbound_policy: OutboundMode) -> Self {
        Mesh {
            outbound_policy,
            ..self
        }
    }

    /// The Zipkin collector for the `zipkin` tracing provider.
    pub fn with_zipkin(self, zipkin: Option<&'a str>) -> Self {
        Mesh { zipkin, ..self }
    }

    /// Mesh mTLS on (certificates served over SDS) or off.
    pub fn with_mtls(self, mtls: bool) -> Self {
        Mesh { mtls, ..self }
    }

    pub fn with_trust_domain(self, trust_domain: &'a str) -> Self {
        Mesh {
            trust_domain,
            ..self
        }
    }

    /// The DestinationRule for `hostname`, as Istio picks it: exact host
    /// before wildcard, the service's own namespace first, then by namespace/name.
    pub fn destination_rule(
        &self,
        hostname: &str,
        service_ns: &str,
    ) -> Option<(&'a Resource, &'a DestinationRuleSpec)> {
        if let Some(scope) = self.scope {
            // Istio's lookup from the client's namespace, exportTo applied.
            return scope::destination_rule(self.config, hostname, service_ns, scope.namespace());
        }
        let idx = self.config.hosts();
        let exact = idx
            .destination_rules
            .get(hostname)
            .into_iter()
            .flatten()
            .map(|r| (true, r));
        let wild = idx
            .wildcard_destination_rules
            .iter()
            .filter(|(pattern, _)| host::matches(pattern, hostname))
            .map(|(_, r)| (false, r));
        exact
            .chain(wild)
            .filter_map(|(exact, r)| match &r.spec {
                crate::model::Spec::DestinationRule(spec) => Some((exact, r.as_ref(), spec)),
                _ => None,
            })
            .min_by_key(|(exact, r, _)| (!*exact, r.namespace != service_ns))
            .map(|(_, r, spec)| (r, spec))
    }
}

/// Istio's cluster name: `outbound|PORT|SUBSET|HOST`.
pub fn outbound_cluster_name(port: u32, subset: &str, hostname: &str) -> String {
    format!("outbound|{port}|{subset}|{hostname}")
}

/// Istio's inbound cluster name: `inbound|PORT||`.
pub fn inbound_cluster_name(port: u32) -> String {
    format!("inbound|{port}||")
}

pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

pub fn socket_address(ip: &str, port: u32) -> envoy_types::pb::envoy::config::core::v3::Address {
    envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// Packs a typed config into an `Any`.
pub fn any<M: prost::Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

pub fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
