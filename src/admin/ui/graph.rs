//! The mesh graph the UI draws, as pure functions: the istio_* series become
//! per-edge totals ([`Totals::of`]), and [`build`] turns the registry, the
//! totals now and at the start of the rate window, the proxies' sync state
//! and the config errors into the JSON the page polls.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::config::ConfigError;
use crate::model::{Registry, WorkloadKey};
use crate::telemetry::labels::{Labels, PeerLabels, Reporter};
use crate::telemetry::series::{DURATION_BUCKETS_MS, Hist, HttpSeries, TcpSeries};
use crate::xds::server::status::ProxySync;

/// At most this many config errors go to the page (the full list is at
/// /debug/config_errors); a broken directory can produce thousands.
pub const MAX_CONFIG_ERRORS: usize = 50;

/// One end of an edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeRef {
    Workload(WorkloadKey),
    /// A service whose workload the reporter could not tell (e.g. a request
    /// a fault rule aborted before it left the caller).
    Service(String),
    /// Outside the mesh, or not known to pilotfish (a client without a sidecar).
    Unknown,
}

impl NodeRef {
    fn source(p: &PeerLabels) -> NodeRef {
        p.key.clone().map_or(NodeRef::Unknown, NodeRef::Workload)
    }

    fn destination(p: &PeerLabels, service_host: &str) -> NodeRef {
        match &p.key {
            Some(k) => NodeRef::Workload(k.clone()),
            None if service_host != "unknown" => NodeRef::Service(service_host.to_string()),
            None => NodeRef::Unknown,
        }
    }

    /// Unique id (`namespace/name` for workloads).
    pub fn id(&self) -> String {
        match self {
            NodeRef::Workload(k) => k.to_string(),
            NodeRef::Service(h) => format!("service:{h}"),
            NodeRef::Unknown => "unknown".into(),
        }
    }

    /// What the page shows and tests look for (`data-node`).
    pub fn name(&self) -> &str {
        match self {
            NodeRef::Workload(k) => &k.name,
            NodeRef::Service(h) => h,
            NodeRef::Unknown => "unknown",
        }
    }
}

/// Caller, callee and whether the traffic is TCP (connections) or HTTP/gRPC (requests).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    pub source: NodeRef,
    pub destination: NodeRef,
    pub tcp: bool,
}

/// Counters of one edge as one reporter saw them, summed over its series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeTotals {
    /// HTTP/gRPC requests, or TCP connections opened.
    pub requests: u64,
    /// Requests answered 5xx or not answered at all (response code 0).
    pub errors: u64,
    /// Of `requests`, those that arrived over mTLS (destination reporter only).
    pub mtls: u64,
    /// Per-bucket request durations (`DURATION_BUCKETS_MS` plus +Inf).
    pub duration: Vec<u64>,
    /// TCP bytes both ways.
    pub bytes: u64,
    /// Destination service hosts.
    pub services: BTreeSet<String>,
}

impl EdgeTotals {
    /// What happened since `base`. A counter that went down was reset (its
    /// series expired and came back): then everything now counts, as
    /// Prometheus' `rate()` treats a reset.
    pub fn since(&self, base: &EdgeTotals) -> EdgeTotals {
        if self.requests < base.requests || self.bytes < base.bytes {
            return self.clone();
        }
        EdgeTotals {
            requests: self.requests - base.requests,
            errors: self.errors.saturating_sub(base.errors),
            mtls: self.mtls.saturating_sub(base.mtls),
            duration: self
                .duration
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(base.duration.get(i).copied().unwrap_or(0)))
                .collect(),
            bytes: self.bytes - base.bytes,
            services: self.services.clone(),
        }
    }

    fn p99_ms(&self) -> Option<f64> {
        let hist = Hist {
            count: self.duration.iter().sum(),
            buckets: self.duration.clone(),
            sum: 0.0,
        };
        hist.quantile(&DURATION_BUCKETS_MS, 0.99)
    }
}

/// Per-edge totals of every reporter at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub edges: BTreeMap<(EdgeKey, Reporter), EdgeTotals>,
    /// `app` and `version` labels of workloads seen in series, for workloads
    /// the registry no longer has.
    pub seen: BTreeMap<WorkloadKey, (String, String)>,
}

impl Totals {
    /// Sums the istio_* series by edge and reporter.
    pub fn of(http: &[(Labels, HttpSeries)], tcp: &[(Labels, TcpSeries)]) -> Totals {
        let mut t = Totals::default();
        for (l, s) in http {
            let e = t.edge(l, false);
            e.requests += s.requests;
            if l.response_code == "0" || l.response_code.starts_with('5') {
                e.errors += s.requests;
            }
            if l.connection_security_policy == "mutual_tls" {
                e.mtls += s.requests;
            }
            if e.duration.len() < s.duration_ms.buckets.len() {
                e.duration.resize(s.duration_ms.buckets.len(), 0);
            }
            for (acc, n) in e.duration.iter_mut().zip(&s.duration_ms.buckets) {
                *acc += n;
            }
        }
        for (l, s) in tcp {
            let e = t.edge(l, true);
            e.requests += s.opened;
            e.bytes += s.sent_bytes + s.received_bytes;
            if l.connection_security_policy == "mutual_tls" {
                e.mtls += s.opened;
            }
        }
        t
    }

    fn edge(&mut self, l: &Labels, tcp: bool) -> &mut EdgeTotals {
        for p in [&l.source, &l.destination] {
            if let Some(k) = &p.key {
                self.seen
                    .entry(k.clone())
                    .or_insert_with(|| (p.app.clone(), p.version.clone()));
            }
        }
        let key = EdgeKey {
            source: NodeRef::source(&l.source),
            destination: NodeRef::destination(&l.destination, &l.service.host),
            tcp,
        };
        let e = self.edges.entry((key, l.reporter)).or_default();
        e.services.insert(l.service.host.clone());
        e
    }
}

/// Totals from the start of the rate window, and how long ago that was.
pub struct Baseline<'a> {
    pub age: Duration,
    pub totals: &'a Totals,
}

#[derive(Debug, Serialize)]
pub struct Graph {
    /// Seconds the rates are averaged over (null until there are two samples).
    pub window_s: Option<f64>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub proxies: Vec<Proxy>,
    pub config_version: u64,
    pub config_errors_total: usize,
    pub config_errors: Vec<ConfigError>,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct Node {
    pub id: String,
    /// `workload`, `service` or `unknown`.
    pub kind: &'static str,
    pub name: String,
    pub namespace: Option<String>,
    pub app: Option<String>,
    pub version: Option<String>,
    /// The worst xDS state of its connected proxy (NACKED, STALE, SYNCED,
    /// NOT SENT); null when no proxy is connected.
    pub proxy: Option<&'static str>,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct Edge {
    /// `source->destination` by node name (`productpage-v1->reviews-v1`),
    /// with ` (tcp)` for TCP.
    pub id: String,
    /// Node ids.
    pub source: String,
    pub destination: String,
    /// `http` (HTTP and gRPC requests) or `tcp` (connections).
    pub protocol: &'static str,
    /// The reporter whose series this edge shows: the destination when it
    /// reported (it saw the caller's certificate), else the source.
    pub reporter: &'static str,
    pub services: Vec<String>,
    /// Requests (or connections) ever counted.
    pub requests_total: u64,
    /// Per second over the window; null until the window has two samples.
    pub rps: Option<f64>,
    /// `window` when requests arrived in the window and the figures below
    /// cover only those, `all_time` otherwise.
    pub basis: &'static str,
    /// Share of requests answered 5xx or not at all (HTTP only).
    pub error_rate: Option<f64>,
    /// 99th percentile of request duration, from the histogram buckets (HTTP only).
    pub p99_ms: Option<f64>,
    /// Whether every request arrived over mTLS; null when only the source
    /// reported (it cannot tell).
    pub mtls: Option<bool>,
    pub tcp_bytes_total: Option<u64>,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct Proxy {
    pub node_id: String,
    pub workload: String,
    pub xds: &'static str,
    pub connected_unix: u64,
    /// Per xDS type: SYNCED, STALE, NACKED or NOT SENT (as `pilotfish proxy-status`).
    pub types: BTreeMap<&'static str, &'static str>,
    /// Envoy's message for each type whose latest version it rejected.
    pub nacks: BTreeMap<&'static str, String>,
}

/// Ranks sync states, worst last.
fn severity(state: &str) -> u8 {
    match state {
        "SYNCED" => 0,
        "NOT SENT" => 1,
        "STALE" => 2,
        _ => 3,
    }
}

fn proxies(syncs: &[ProxySync]) -> Vec<Proxy> {
    let mut out: Vec<Proxy> = syncs
        .iter()
        .map(|p| {
            let mut types = BTreeMap::new();
            let mut nacks = BTreeMap::new();
            for (t, status) in &p.types {
                // The fields `proxy-status` reads (not the sent names, which
                // can be thousands).
                let json = serde_json::json!({
                    "sent_version": status.sent_version,
                    "acked_version": status.acked_version,
                    "last_nack": status.last_nack,
                });
                let state = crate::admin::client::sync_state(&json);
                if state == "NACKED"
                    && let Some(n) = &status.last_nack
                {
                    nacks.insert(*t, n.message.clone());
                }
                types.insert(*t, state);
            }
            Proxy {
                node_id: p.node_id.clone(),
                workload: p.workload.clone(),
                xds: if p.delta { "delta" } else { "sotw" },
                connected_unix: p.connected_unix,
                types,
                nacks,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.workload, &a.node_id).cmp(&(&b.workload, &b.node_id)));
    out
}

fn edge(key: &EdgeKey, reporter: Reporter, now: &EdgeTotals, baseline: Option<&Baseline>) -> Edge {
    let base = baseline.map(|b| {
        let then = b
            .totals
            .edges
            .get(&(key.clone(), reporter))
            .cloned()
            .unwrap_or_default();
        (b.age.as_secs_f64(), now.since(&then))
    });
    let rps = base
        .as_ref()
        .filter(|(secs, _)| *secs > 0.0)
        .map(|(secs, d)| d.requests as f64 / secs);
    let (basis, d) = match base {
        Some((_, d)) if d.requests > 0 => ("window", d),
        _ => ("all_time", now.clone()),
    };
    let share = |n: u64| (d.requests > 0).then(|| n as f64 / d.requests as f64);
    let tcp_suffix = if key.tcp { " (tcp)" } else { "" };
    Edge {
        id: format!(
            "{}->{}{tcp_suffix}",
            key.source.name(),
            key.destination.name()
        ),
        source: key.source.id(),
        destination: key.destination.id(),
        protocol: if key.tcp { "tcp" } else { "http" },
        reporter: reporter.as_str(),
        services: now.services.iter().cloned().collect(),
        requests_total: now.requests,
        rps,
        basis,
        error_rate: if key.tcp { None } else { share(d.errors) },
        p99_ms: if key.tcp { None } else { d.p99_ms() },
        mtls: (reporter == Reporter::Destination && d.requests > 0).then_some(d.mtls == d.requests),
        tcp_bytes_total: key.tcp.then_some(now.bytes),
    }
}

/// The graph: every workload of the registry (and any other end of an
/// edge), one edge per caller, callee and protocol.
pub fn build(
    registry: &Registry,
    now: &Totals,
    baseline: Option<&Baseline>,
    syncs: &[ProxySync],
    config_version: u64,
    config_errors: &[ConfigError],
) -> Graph {
    // One reporter per edge: the destination's when it reported.
    let mut chosen: BTreeMap<&EdgeKey, (Reporter, &EdgeTotals)> = BTreeMap::new();
    for ((key, reporter), totals) in &now.edges {
        let entry = chosen.entry(key).or_insert((*reporter, totals));
        if *reporter == Reporter::Destination {
            *entry = (*reporter, totals);
        }
    }
    let edges: Vec<Edge> = chosen
        .iter()
        .map(|(key, (reporter, totals))| edge(key, *reporter, totals, baseline))
        .collect();

    let proxies = proxies(syncs);
    let proxy_state = |k: &WorkloadKey| {
        let workload = k.to_string();
        proxies
            .iter()
            .filter(|p| p.workload == workload)
            .flat_map(|p| p.types.values().copied())
            .max_by_key(|s| severity(s))
            .or_else(|| {
                proxies
                    .iter()
                    .any(|p| p.workload == workload)
                    .then_some("NOT SENT")
            })
    };

    let mut refs: BTreeSet<NodeRef> = registry
        .workloads
        .keys()
        .cloned()
        .map(NodeRef::Workload)
        .collect();
    for key in chosen.keys() {
        refs.insert(key.source.clone());
        refs.insert(key.destination.clone());
    }
    let nodes = refs
        .into_iter()
        .map(|r| match &r {
            NodeRef::Workload(k) => {
                let (app, version) = match registry.workloads.get(k) {
                    Some(w) => (
                        w.labels.get("app").cloned(),
                        w.labels.get("version").cloned(),
                    ),
                    None => now
                        .seen
                        .get(k)
                        .map(|(a, v)| (Some(a.clone()), Some(v.clone())))
                        .unwrap_or_default(),
                };
                Node {
                    id: r.id(),
                    kind: "workload",
                    name: k.name.clone(),
                    namespace: Some(k.namespace.clone()),
                    app,
                    version,
                    proxy: proxy_state(k),
                }
            }
            NodeRef::Service(h) => Node {
                id: r.id(),
                kind: "service",
                name: h.clone(),
                namespace: registry.services.get(h).map(|s| s.namespace.clone()),
                app: None,
                version: None,
                proxy: None,
            },
            NodeRef::Unknown => Node {
                id: r.id(),
                kind: "unknown",
                name: "unknown".into(),
                namespace: None,
                app: None,
                version: None,
                proxy: None,
            },
        })
        .collect();

    Graph {
        window_s: baseline.map(|b| b.age.as_secs_f64()),
        nodes,
        edges,
        proxies,
        config_version,
        config_errors_total: config_errors.len(),
        config_errors: config_errors
            .iter()
            .take(MAX_CONFIG_ERRORS)
            .cloned()
            .collect(),
    }
}
