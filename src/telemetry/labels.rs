//! Istio's standard metric labels for one access-log entry: pure functions
//! of the entry, the proxy that sent it and the mesh registry.
//!
//! Istio fills these labels inside each sidecar (its stats plugin and peer
//! metadata exchange); stock Envoy cannot, so pilotfish does it here from
//! what it knows: the reporting proxy (authenticated on the stream), the
//! upstream cluster name, and the addresses each workload sends from and
//! listens on (every sidecar binds its upstream connections to its
//! workload's address, see `xds::bootstrap`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{Address, address};
use envoy_types::pb::envoy::data::accesslog::v3::{
    AccessLogCommon, AccessLogType, HttpAccessLogEntry, ResponseFlags, TcpAccessLogEntry,
    tls_properties,
};

use crate::model::registry::{Service, Workload};
use crate::model::telemetry::resolve::{self, MetricPolicy};
use crate::model::{DOMAIN_SUFFIX, Registry, WorkloadKey};

const UNKNOWN: &str = "unknown";

/// Which side of a request reported it (Istio's `reporter` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reporter {
    Source,
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The labels that describe one side of a request (`source_*` or `destination_*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerLabels {
    pub workload: String,
    pub namespace: String,
    pub principal: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    /// The workload these labels name, for expiring its series once it leaves.
    pub key: Option<WorkloadKey>,
}

impl PeerLabels {
    pub fn unknown() -> Self {
        PeerLabels {
            workload: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            principal: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
            key: None,
        }
    }

    fn of(w: &Workload, principal: String) -> Self {
        let label = |k: &str| w.labels.get(k).cloned();
        let app = label("app");
        let version = label("version");
        PeerLabels {
            workload: w.key.name.clone(),
            namespace: w.key.namespace.clone(),
            principal,
            canonical_service: label("service.istio.io/canonical-name")
                .or_else(|| app.clone())
                .unwrap_or_else(|| w.key.name.clone()),
            canonical_revision: label("service.istio.io/canonical-revision")
                .or_else(|| version.clone())
                .unwrap_or_else(|| "latest".into()),
            app: app.unwrap_or_else(|| UNKNOWN.into()),
            version: version.unwrap_or_else(|| UNKNOWN.into()),
            key: Some(w.key.clone()),
        }
    }
}

/// `destination_service*` labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceLabels {
    pub host: String,
    pub name: String,
    pub namespace: String,
}

impl ServiceLabels {
    fn unknown() -> Self {
        ServiceLabels {
            host: UNKNOWN.into(),
            name: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
        }
    }

    fn of(s: &Service) -> Self {
        // `reviews.default.svc.cluster.local` is named `reviews`; a
        // ServiceEntry host outside the cluster domain is its own name.
        let in_cluster = format!(".{}.svc.", s.namespace);
        let name = match s.hostname.find(&in_cluster) {
            Some(i) => s.hostname[..i].to_string(),
            None => s.hostname.clone(),
        };
        ServiceLabels {
            host: s.hostname.clone(),
            name,
            namespace: s.namespace.clone(),
        }
    }
}

/// Every label of one series. HTTP series carry all of them; TCP series
/// leave out the response code and gRPC status, as Istio's TCP metrics do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    pub reporter: Reporter,
    pub source: Arc<PeerLabels>,
    pub destination: Arc<PeerLabels>,
    pub service: Arc<ServiceLabels>,
    pub request_protocol: &'static str,
    pub response_code: String,
    pub grpc_response_status: String,
    pub response_flags: String,
    pub connection_security_policy: &'static str,
    /// Telemetry tag overrides, resolved: tag -> new value, or None to
    /// remove the tag. Empty unless a Telemetry resource overrides tags.
    pub tags: Arc<BTreeMap<String, Option<String>>>,
}

impl Labels {
    /// Name/value pairs in Istio's order (`tcp` leaves out the HTTP-only
    /// ones), with Telemetry's tag overrides applied: removed tags left
    /// out, upserted ones replaced in place or added at the end.
    pub fn pairs(&self, tcp: bool) -> Vec<(&str, &str)> {
        let mut v = self.standard_pairs(tcp);
        if self.tags.is_empty() {
            return v;
        }
        v.retain_mut(|(k, val)| match self.tags.get(*k) {
            Some(None) => false,
            Some(Some(new)) => {
                *val = new.as_str();
                true
            }
            None => true,
        });
        for (k, new) in self.tags.iter() {
            if let Some(new) = new
                && !v.iter().any(|(name, _)| name == k)
            {
                v.push((k.as_str(), new.as_str()));
            }
        }
        v
    }

    fn standard_pairs(&self, tcp: bool) -> Vec<(&str, &str)> {
        let s = &self.source;
        let d = &self.destination;
        let mut v = vec![
            ("reporter", self.reporter.as_str()),
            ("source_workload", s.workload.as_str()),
            ("source_workload_namespace", s.namespace.as_str()),
            ("source_principal", s.principal.as_str()),
            ("source_app", s.app.as_str()),
            ("source_version", s.version.as_str()),
            ("source_canonical_service", s.canonical_service.as_str()),
            ("source_canonical_revision", s.canonical_revision.as_str()),
            ("destination_workload", d.workload.as_str()),
            ("destination_workload_namespace", d.namespace.as_str()),
            ("destination_principal", d.principal.as_str()),
            ("destination_app", d.app.as_str()),
            ("destination_version", d.version.as_str()),
            (
                "destination_canonical_service",
                d.canonical_service.as_str(),
            ),
            (
                "destination_canonical_revision",
                d.canonical_revision.as_str(),
            ),
            ("destination_service", self.service.host.as_str()),
            ("destination_service_name", self.service.name.as_str()),
            (
                "destination_service_namespace",
                self.service.namespace.as_str(),
            ),
            ("request_protocol", self.request_protocol),
        ];
        if !tcp {
            v.push(("response_code", self.response_code.as_str()));
            v.push(("grpc_response_status", self.grpc_response_status.as_str()));
        }
        v.push(("response_flags", self.response_flags.as_str()));
        v.push((
            "connection_security_policy",
            self.connection_security_policy,
        ));
        v
    }

    /// Whether either side is `key` (its series expire when it leaves).
    pub fn names(&self, key: &WorkloadKey) -> bool {
        self.source.key.as_ref() == Some(key) || self.destination.key.as_ref() == Some(key)
    }
}

/// What the sink knows about the mesh, indexed for lookups per entry. Built
/// once per registry version and shared by every stream.
#[derive(Debug)]
pub struct MeshView {
    pub registry: Arc<Registry>,
    by_ip: HashMap<IpAddr, Arc<PeerLabels>>,
    by_key: HashMap<WorkloadKey, Arc<PeerLabels>>,
    services: HashMap<String, Arc<ServiceLabels>>,
    unknown_peer: Arc<PeerLabels>,
    unknown_service: Arc<ServiceLabels>,
    /// Telemetry metric overrides per workload: [client side, server side];
    /// only workloads that have any.
    policies: HashMap<WorkloadKey, [Arc<MetricPolicy>; 2]>,
}

impl MeshView {
    /// `trust_domain` is set when the mesh runs mTLS (principals are known).
    pub fn new(registry: Arc<Registry>, trust_domain: Option<&str>) -> Self {
        Self::with_config(registry, trust_domain, None)
    }

    /// `new`, with the Telemetry resources of `config` applied to metrics.
    pub fn with_config(
        registry: Arc<Registry>,
        trust_domain: Option<&str>,
        config: Option<&crate::model::ConfigSnapshot>,
    ) -> Self {
        let mut policies = HashMap::new();
        if let Some(config) = config.filter(|c| c.telemetries().next().is_some()) {
            for w in registry.workloads.values() {
                let chain = resolve::applicable(config, &w.key.namespace, &w.labels);
                let client = resolve::metric_policy(&chain, true);
                let server = resolve::metric_policy(&chain, false);
                if !client.is_default() || !server.is_default() {
                    policies.insert(w.key.clone(), [Arc::new(client), Arc::new(server)]);
                }
            }
        }
        let mut by_ip = HashMap::new();
        let mut by_key = HashMap::new();
        for w in registry.workloads.values() {
            let principal = trust_domain.map_or_else(
                || UNKNOWN.to_string(),
                |td| {
                    format!(
                        "spiffe://{td}/ns/{}/sa/{}",
                        w.key.namespace,
                        w.service_account.as_deref().unwrap_or("default")
                    )
                },
            );
            let peer = Arc::new(PeerLabels::of(w, principal));
            if let Ok(ip) = w.address.parse::<IpAddr>() {
                by_ip.insert(ip, Arc::clone(&peer));
            }
            by_key.insert(w.key.clone(), peer);
        }
        let services = registry
            .services
            .values()
            .map(|s| (s.hostname.clone(), Arc::new(ServiceLabels::of(s))))
            .collect();
        MeshView {
            registry,
            by_ip,
            by_key,
            services,
            unknown_peer: Arc::new(PeerLabels::unknown()),
            unknown_service: Arc::new(ServiceLabels::unknown()),
            policies,
        }
    }

    /// The Telemetry metric overrides of `proxy` as `reporter` (client side
    /// for the source reporter), when it has any.
    pub fn policy(&self, proxy: &WorkloadKey, reporter: Reporter) -> Option<&Arc<MetricPolicy>> {
        let p = self.policies.get(proxy)?;
        Some(match reporter {
            Reporter::Source => &p[0],
            Reporter::Destination => &p[1],
        })
    }

    pub fn workload(&self, key: &WorkloadKey) -> Option<&Arc<PeerLabels>> {
        self.by_key.get(key)
    }

    fn at(&self, addr: Option<&Address>) -> Arc<PeerLabels> {
        ip_of(addr)
            .and_then(|ip| self.by_ip.get(&ip))
            .cloned()
            .unwrap_or_else(|| Arc::clone(&self.unknown_peer))
    }

    fn service(&self, host: &str) -> Arc<ServiceLabels> {
        self.services
            .get(host)
            .cloned()
            .unwrap_or_else(|| Arc::clone(&self.unknown_service))
    }

    /// The service a Host header names, resolved as Istio resolves short
    /// names from the caller's namespace (`ratings`, `ratings.default`,
    /// or the full host; any port is ignored).
    fn service_by_authority(&self, authority: &str, namespace: &str) -> Arc<ServiceLabels> {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let candidates = [
            host.to_string(),
            format!("{host}.{namespace}.{DOMAIN_SUFFIX}"),
            format!("{host}.{DOMAIN_SUFFIX}"),
        ];
        candidates
            .iter()
            .find_map(|h| self.services.get(h).cloned())
            .unwrap_or_else(|| Arc::clone(&self.unknown_service))
    }

    /// The service a destination workload received a request for: the one
    /// selecting it that serves the local port, preferring the requested host.
    fn inbound_service(
        &self,
        key: &WorkloadKey,
        local_port: Option<u32>,
        authority: &str,
    ) -> Arc<ServiceLabels> {
        let Some(w) = self.registry.workloads.get(key) else {
            return Arc::clone(&self.unknown_service);
        };
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let mut candidates = self.registry.services_of(w).filter(|s| {
            local_port.is_none_or(|port| {
                s.ports.iter().any(|p| {
                    w.ports
                        .get(&p.name)
                        .copied()
                        .or(p.target_port)
                        .unwrap_or(p.number)
                        == port
                })
            })
        });
        // `ratings` names `ratings.default.svc...`: no allocation per entry.
        let names_host = |s: &&Service| {
            s.hostname
                .strip_prefix(host)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        let first = candidates.next();
        let by_host = first
            .filter(|s| names_host(s))
            .or_else(|| candidates.find(|s| names_host(s)))
            .or(first);
        by_host.map_or_else(
            || Arc::clone(&self.unknown_service),
            |s| self.service(&s.hostname),
        )
    }
}

fn ip_of(addr: Option<&Address>) -> Option<IpAddr> {
    match addr?.address.as_ref()? {
        address::Address::SocketAddress(s) => s.address.parse().ok(),
        _ => None,
    }
}

fn port_of(addr: Option<&Address>) -> Option<u32> {
    match addr?.address.as_ref()? {
        address::Address::SocketAddress(s) => match s.port_specifier {
            Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    p,
                ),
            ) => Some(p),
            _ => None,
        },
        _ => None,
    }
}

/// The host of an Istio outbound cluster name (`outbound|PORT|SUBSET|HOST`).
pub fn cluster_host(cluster: &str) -> Option<&str> {
    let mut parts = cluster.splitn(4, '|');
    (parts.next()? == "outbound").then_some(())?;
    parts.nth(2).filter(|h| !h.is_empty())
}

/// The URI SAN of the downstream peer's certificate (mTLS), if any.
fn peer_principal(common: &AccessLogCommon) -> Option<String> {
    let tls = common.tls_properties.as_ref()?;
    tls.peer_certificate_properties
        .as_ref()?
        .subject_alt_name
        .iter()
        .find_map(|san| match &san.san {
            Some(tls_properties::certificate_properties::subject_alt_name::San::Uri(u)) => {
                Some(u.clone())
            }
            _ => None,
        })
}

/// The two sides of a request or connection, as one reporter sees them.
fn sides(
    view: &MeshView,
    reporter: Reporter,
    proxy: &WorkloadKey,
    common: &AccessLogCommon,
    authority: &str,
) -> (
    Arc<PeerLabels>,
    Arc<PeerLabels>,
    Arc<ServiceLabels>,
    &'static str,
) {
    let me = view
        .workload(proxy)
        .cloned()
        .unwrap_or_else(|| Arc::new(PeerLabels::unknown()));
    match reporter {
        Reporter::Source => {
            // A request answered before routing to a cluster (fault abort,
            // direct response) names its service only in the Host header.
            let service = match cluster_host(&common.upstream_cluster) {
                Some(h) => view.service(h),
                None => view.service_by_authority(authority, &proxy.namespace),
            };
            let dest = view.at(common.upstream_remote_address.as_ref());
            // The client side cannot see the server's certificate in its
            // access log; Istio reports "unknown" here too.
            (me, dest, service, UNKNOWN)
        }
        Reporter::Destination => {
            let mut source = view.at(common.downstream_remote_address.as_ref());
            let principal = peer_principal(common);
            let policy = if principal.is_some() {
                "mutual_tls"
            } else {
                "none"
            };
            match principal {
                // The certificate is the authority on who called.
                Some(p) if p != source.principal => {
                    let mut s = (*source).clone();
                    s.principal = p;
                    source = Arc::new(s);
                }
                None if source.principal != UNKNOWN => {
                    let mut s = (*source).clone();
                    s.principal = UNKNOWN.into();
                    source = Arc::new(s);
                }
                _ => {}
            }
            let local_port = port_of(common.downstream_local_address.as_ref());
            let service = view.inbound_service(proxy, local_port, authority);
            (source, me, service, policy)
        }
    }
}

/// Envoy's short response flags (`UF,URX`), or `-` when none, as Istio reports them.
pub fn response_flags(f: Option<&ResponseFlags>) -> String {
    let Some(f) = f else {
        return "-".into();
    };
    let all = [
        (f.failed_local_healthcheck, "LH"),
        (f.no_healthy_upstream, "UH"),
        (f.upstream_request_timeout, "UT"),
        (f.local_reset, "LR"),
        (f.upstream_remote_reset, "UR"),
        (f.upstream_connection_failure, "UF"),
        (f.upstream_connection_termination, "UC"),
        (f.upstream_overflow, "UO"),
        (f.no_route_found, "NR"),
        (f.delay_injected, "DI"),
        (f.fault_injected, "FI"),
        (f.rate_limited, "RL"),
        (f.unauthorized_details.is_some(), "UAEX"),
        (f.rate_limit_service_error, "RLSE"),
        (f.downstream_connection_termination, "DC"),
        (f.upstream_retry_limit_exceeded, "URX"),
        (f.stream_idle_timeout, "SI"),
        (f.invalid_envoy_request_headers, "IH"),
        (f.downstream_protocol_error, "DPE"),
        (f.upstream_max_stream_duration_reached, "UMSDR"),
        (f.response_from_cache_filter, "RFCF"),
        (f.no_filter_config_found, "NFCF"),
        (f.duration_timeout, "DT"),
        (f.upstream_protocol_error, "UPE"),
        (f.no_cluster_found, "NC"),
        (f.overload_manager, "OM"),
        (f.dns_resolution_failure, "DF"),
        (f.downstream_remote_reset, "DR"),
    ];
    let set: Vec<&str> = all.iter().filter(|(on, _)| *on).map(|(_, s)| *s).collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join(",")
    }
}

/// One HTTP request as Istio's metrics count it.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSample {
    pub labels: Labels,
    /// The metrics this sample counts in (`series::ALL_METRICS` unless a
    /// Telemetry override splits or disables them).
    pub mask: u8,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// The labels and sizes of one HTTP access-log entry.
pub fn http_sample(
    view: &MeshView,
    reporter: Reporter,
    proxy: &WorkloadKey,
    entry: &HttpAccessLogEntry,
) -> HttpSample {
    let default_common = AccessLogCommon::default();
    let common = entry.common_properties.as_ref().unwrap_or(&default_common);
    let req = entry.request.clone().unwrap_or_default();
    let resp = entry.response.clone().unwrap_or_default();
    let (source, destination, service, policy) =
        sides(view, reporter, proxy, common, &req.authority);
    let grpc = req
        .request_headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("application/grpc"));
    let grpc_status = resp
        .response_trailers
        .get("grpc-status")
        .or_else(|| resp.response_headers.get("grpc-status"))
        .cloned()
        .unwrap_or_default();
    let code = resp.response_code.map_or(0, |c| c.value);
    let duration = common
        .duration
        .or(common.time_to_last_downstream_tx_byte)
        .map_or(0.0, |d| d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6);
    HttpSample {
        labels: Labels {
            reporter,
            source,
            destination,
            service,
            request_protocol: if grpc { "grpc" } else { "http" },
            response_code: code.to_string(),
            grpc_response_status: grpc_status,
            response_flags: response_flags(common.response_flags.as_ref()),
            connection_security_policy: policy,
            tags: Arc::default(),
        },
        mask: super::series::ALL_METRICS,
        duration_ms: duration,
        request_bytes: req.request_headers_bytes + req.request_body_bytes,
        response_bytes: resp.response_headers_bytes + resp.response_body_bytes,
    }
}

/// What one TCP access-log entry adds.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpSample {
    pub labels: Labels,
    /// As `HttpSample::mask`.
    pub mask: u8,
    pub opened: bool,
    pub closed: bool,
    pub received_bytes: u64,
    pub sent_bytes: u64,
}

/// The labels and byte counts of one TCP access-log entry: Envoy logs when
/// the upstream connection opens and when the connection ends.
pub fn tcp_sample(
    view: &MeshView,
    reporter: Reporter,
    proxy: &WorkloadKey,
    entry: &TcpAccessLogEntry,
) -> TcpSample {
    let default_common = AccessLogCommon::default();
    let common = entry.common_properties.as_ref().unwrap_or(&default_common);
    let conn = entry.connection_properties.unwrap_or_default();
    let (source, destination, service, policy) = sides(view, reporter, proxy, common, "");
    let kind = AccessLogType::try_from(common.access_log_type).unwrap_or_default();
    let end = kind == AccessLogType::TcpConnectionEnd;
    // A connection whose upstream never connected only logs its end.
    let never_connected = common.upstream_local_address.is_none();
    TcpSample {
        labels: Labels {
            reporter,
            source,
            destination,
            service,
            request_protocol: "tcp",
            response_code: String::new(),
            grpc_response_status: String::new(),
            response_flags: response_flags(common.response_flags.as_ref()),
            connection_security_policy: policy,
            tags: Arc::default(),
        },
        mask: super::series::ALL_METRICS,
        opened: kind == AccessLogType::TcpUpstreamConnected || (end && never_connected),
        closed: end,
        received_bytes: if end { conn.received_bytes } else { 0 },
        sent_bytes: if end { conn.sent_bytes } else { 0 },
    }
}

/// What a tag override's value expression can refer to (a small subset of
/// Istio's CEL attributes; see `eval`).
#[derive(Debug, Default)]
pub struct Attributes<'a> {
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub code: &'a str,
}

impl<'a> Attributes<'a> {
    pub fn of(entry: &'a HttpAccessLogEntry, code: &'a str) -> Self {
        let req = entry.request.as_ref();
        let method = req
            .and_then(|r| {
                envoy_types::pb::envoy::config::core::v3::RequestMethod::try_from(r.request_method)
                    .ok()
            })
            .map_or("", |m| m.as_str_name());
        Attributes {
            host: req.map_or("", |r| r.authority.as_str()),
            method,
            path: req.map_or("", |r| r.path.as_str()),
            code,
        }
    }
}

/// The value of a tag override expression: a quoted string literal, or one
/// of `request.host`, `request.method`, `request.path`, `request.url_path`
/// (without the query), `response.code`; anything else is `unknown`.
pub fn eval(expr: &str, a: &Attributes<'_>) -> String {
    let e = expr.trim();
    let quoted = e.len() >= 2
        && ((e.starts_with('\'') && e.ends_with('\'')) || (e.starts_with('"') && e.ends_with('"')));
    if quoted {
        return e[1..e.len() - 1].to_string();
    }
    match e {
        "request.host" => a.host.to_string(),
        "request.method" => a.method.to_string(),
        "request.path" => a.path.to_string(),
        "request.url_path" => a.path.split('?').next().unwrap_or_default().to_string(),
        "response.code" => a.code.to_string(),
        _ => UNKNOWN.to_string(),
    }
}

fn resolved_tags(
    rule: Option<&crate::model::telemetry::resolve::MetricRule>,
    a: &Attributes<'_>,
) -> Arc<BTreeMap<String, Option<String>>> {
    match rule {
        Some(r) if !r.tags.is_empty() => Arc::new(
            r.tags
                .iter()
                .map(|(k, v)| (k.clone(), v.as_deref().map(|e| eval(e, a))))
                .collect(),
        ),
        _ => Arc::default(),
    }
}

/// Applies a Telemetry metric policy to one sample: each of the four
/// metrics gets the labels its overrides give (metrics whose labels come
/// out equal stay one sample), disabled metrics are left out. `first` is
/// the policy's index of the sample's first metric (0 for HTTP, 4 for TCP).
fn split<S: Clone>(
    policy: &crate::model::telemetry::resolve::MetricPolicy,
    first: usize,
    sample: S,
    a: &Attributes<'_>,
    parts: impl Fn(&mut S) -> (&mut Labels, &mut u8),
) -> Vec<S> {
    let mut out: Vec<S> = Vec::new();
    for i in 0..4 {
        let rule = policy.rule(first + i);
        if rule.is_some_and(|r| r.disabled) {
            continue;
        }
        let tags = resolved_tags(rule, a);
        let bit = 1u8 << i;
        let mut found = false;
        for o in out.iter_mut() {
            let (l, mask) = parts(o);
            if l.tags == tags {
                *mask |= bit;
                found = true;
                break;
            }
        }
        if !found {
            let mut s = sample.clone();
            let (l, mask) = parts(&mut s);
            l.tags = tags;
            *mask = bit;
            out.push(s);
        }
    }
    out
}

/// `split` for an HTTP sample.
pub fn apply_http(
    policy: &crate::model::telemetry::resolve::MetricPolicy,
    sample: HttpSample,
    a: &Attributes<'_>,
) -> Vec<HttpSample> {
    split(policy, 0, sample, a, |s| (&mut s.labels, &mut s.mask))
}

/// `split` for a TCP sample.
pub fn apply_tcp(
    policy: &crate::model::telemetry::resolve::MetricPolicy,
    sample: TcpSample,
) -> Vec<TcpSample> {
    split(policy, 4, sample, &Attributes::default(), |s| {
        (&mut s.labels, &mut s.mask)
    })
}
