//! Which Telemetry settings apply to a workload, as Istio resolves them:
//! the root namespace's (mesh-wide), then the workload's namespace's (no
//! selector), then those whose selector matches the workload. For tracing
//! and access logging the most specific setting for the traffic direction
//! wins; metric overrides apply in that order, so a workload's override
//! refines its namespace's.

use std::collections::BTreeMap;

use super::{AccessLogging, IstioMetric, TagOperation, TelemetrySpec, Tracing, WorkloadMode};
use crate::model::ConfigSnapshot;

/// Istio's root namespace: a Telemetry there without a selector is mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";
/// The access-log provider Istio's default mesh config defines: Envoy's
/// text format on the proxy's standard output.
pub const ENVOY_PROVIDER: &str = "envoy";
/// The metrics provider pilotfish's own sink stands for.
pub const PROMETHEUS_PROVIDER: &str = "prometheus";
/// The tracing provider pilotfish can configure (`serve --zipkin-address`).
pub const ZIPKIN_PROVIDER: &str = "zipkin";

/// The Telemetry specs that apply to a workload in `namespace` with
/// `labels`, least specific first (ties by namespace/name).
pub fn applicable<'a>(
    config: &'a ConfigSnapshot,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a TelemetrySpec> {
    let mut root = Vec::new();
    let mut ns = Vec::new();
    let mut selected = Vec::new();
    for (r, spec) in config.telemetries() {
        let selector = spec
            .selector
            .as_ref()
            .filter(|s| !s.match_labels.is_empty());
        match selector {
            Some(sel)
                if r.namespace == namespace
                    && sel
                        .match_labels
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v)) =>
            {
                selected.push(spec);
            }
            Some(_) => {}
            None if !spec.target_refs.is_empty() || spec.target_ref.is_some() => {}
            None if r.namespace == namespace => ns.push(spec),
            None if r.namespace == ROOT_NAMESPACE => root.push(spec),
            None => {}
        }
    }
    root.into_iter().chain(ns).chain(selected).collect()
}

impl WorkloadMode {
    /// Whether this mode covers client (outbound) or server (inbound) traffic.
    pub fn covers(self, client: bool) -> bool {
        match self {
            WorkloadMode::ClientAndServer => true,
            WorkloadMode::Client => client,
            WorkloadMode::Server => !client,
        }
    }
}

fn covers(mode: Option<WorkloadMode>, client: bool) -> bool {
    mode.unwrap_or_default().covers(client)
}

/// The access-logging setting for client (outbound) or server (inbound)
/// traffic: the most specific one that covers it.
pub fn access_logging<'a>(chain: &[&'a TelemetrySpec], client: bool) -> Option<&'a AccessLogging> {
    chain.iter().rev().find_map(|s| {
        s.access_logging
            .iter()
            .find(|a| covers(a.r#match.as_ref().and_then(|m| m.mode), client))
    })
}

/// The tracing setting for client or server traffic: the most specific one.
pub fn tracing<'a>(chain: &[&'a TelemetrySpec], client: bool) -> Option<&'a Tracing> {
    chain.iter().rev().find_map(|s| {
        s.tracing
            .iter()
            .find(|t| covers(t.r#match.as_ref().and_then(|m| m.mode), client))
    })
}

/// The istio_* metrics pilotfish reports, in `IstioMetric` terms.
pub const HTTP_METRICS: [IstioMetric; 4] = [
    IstioMetric::RequestCount,
    IstioMetric::RequestDuration,
    IstioMetric::RequestSize,
    IstioMetric::ResponseSize,
];
pub const TCP_METRICS: [IstioMetric; 4] = [
    IstioMetric::TcpOpenedConnections,
    IstioMetric::TcpClosedConnections,
    IstioMetric::TcpSentBytes,
    IstioMetric::TcpReceivedBytes,
];

/// How one metric's labels change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricRule {
    pub disabled: bool,
    /// Tag name -> new value (an expression, see `telemetry::labels`), or
    /// None to remove the tag.
    pub tags: BTreeMap<String, Option<String>>,
}

/// The metric overrides for one workload's client or server side, per
/// metric in `HTTP_METRICS` then `TCP_METRICS` order. Empty when nothing is
/// overridden (the common case).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetricPolicy {
    pub rules: Vec<MetricRule>,
}

impl MetricPolicy {
    pub fn is_default(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for metric `i` (0..8, see `rules`).
    pub fn rule(&self, i: usize) -> Option<&MetricRule> {
        self.rules.get(i)
    }
}

/// Folds the overrides of every applicable Telemetry (least specific first)
/// for the client or server side. Only the `prometheus` provider (or none
/// named) is pilotfish's sink.
pub fn metric_policy(chain: &[&TelemetrySpec], client: bool) -> MetricPolicy {
    let all: Vec<IstioMetric> = HTTP_METRICS.iter().chain(&TCP_METRICS).copied().collect();
    let mut rules = vec![MetricRule::default(); all.len()];
    let mut any = false;
    for spec in chain {
        for m in &spec.metrics {
            let ours =
                m.providers.is_empty() || m.providers.iter().any(|p| p.name == PROMETHEUS_PROVIDER);
            if !ours {
                continue;
            }
            for o in &m.overrides {
                let sel = o.r#match.clone().unwrap_or_default();
                if !covers(sel.mode, client) || sel.custom_metric.is_some() {
                    continue;
                }
                let target = sel.metric.unwrap_or(IstioMetric::AllMetrics);
                for (i, metric) in all.iter().enumerate() {
                    if target != IstioMetric::AllMetrics && target != *metric {
                        continue;
                    }
                    any = true;
                    let rule = &mut rules[i];
                    if let Some(d) = o.disabled {
                        rule.disabled = d;
                    }
                    for (tag, op) in &o.tag_overrides {
                        let value = match op.operation.unwrap_or_default() {
                            TagOperation::Remove => None,
                            TagOperation::Upsert => Some(op.value.clone().unwrap_or_default()),
                        };
                        rule.tags.insert(tag.clone(), value);
                    }
                }
            }
        }
    }
    if any {
        MetricPolicy { rules }
    } else {
        MetricPolicy::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::parse_file;

    fn mk_config(yaml: &str) -> ConfigSnapshot {
        let parsed = parse_file(std::path::Path::new("t.yaml"), yaml);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let mut c = ConfigSnapshot::default();
        for r in parsed.resources {
            c.resources.insert(r.key(), Arc::new(r));
        }
        c
    }

    const CONFIG: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides: {request_protocol: {operation: REMOVE}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: default}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_DURATION, mode: SERVER}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  accessLogging: [{match: {mode: SERVER}, disabled: true}]
  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 100}]
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides: {request_protocol: {value: \"'h'\"}, host: {value: request.host}}
";

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_string(), app.to_string())].into()
    }

    #[test]
    fn specific_settings_win_and_overrides_fold_in_order() {
        let config = mk_config(CONFIG);
        let ratings = applicable(&config, "default", &labels("ratings"));
        assert_eq!(ratings.len(), 3);
        let other = applicable(&config, "default", &labels("reviews"));
        assert_eq!(other.len(), 2);
        let elsewhere = applicable(&config, "shop", &labels("ratings"));
        assert_eq!(elsewhere.len(), 1, "only the mesh-wide one");

        // Access logging: mesh-wide envoy, except ratings' server side.
        assert!(access_logging(&ratings, true).is_some_and(|a| a.disabled.is_none()));
        assert_eq!(
            access_logging(&ratings, false).unwrap().disabled,
            Some(true)
        );
        assert_eq!(
            access_logging(&other, false).unwrap().providers[0].name,
            ENVOY_PROVIDER
        );
        assert!(tracing(&ratings, false).is_some());
        assert!(tracing(&other, false).is_none());

        // Metrics: REQUEST_COUNT's protocol tag removed mesh-wide, then set
        // for ratings; REQUEST_DURATION off on the server side in default.
        let server = metric_policy(&ratings, false);
        let count = server.rule(0).unwrap();
        assert_eq!(count.tags["request_protocol"], Some("'h'".to_string()));
        assert_eq!(count.tags["host"], Some("request.host".to_string()));
        assert!(server.rule(1).unwrap().disabled);
        let client = metric_policy(&other, true);
        assert_eq!(client.rule(0).unwrap().tags["request_protocol"], None);
        assert!(!client.rule(1).unwrap().disabled, "SERVER only");
        assert!(metric_policy(&[], true).is_default());
    }
}
