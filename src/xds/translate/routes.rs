//! Routes (RDS): the outbound route table a sidecar's outbound listener uses,
//! with VirtualService HTTP routing applied.

use std::collections::{BTreeMap, HashSet};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    retry_policy::{RetryBackOff, RetryHostPredicate, retry_host_predicate},
    route::Action,
    route_action::{ClusterSpecifier, HashPolicy},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::clusters::EffectivePolicy;
use super::{Mesh, OUTBOUND_ROUTE, any, duration, http_policy, outbound_cluster_name};
use crate::model::istio::{
    Destination, HeaderOperations, HttpBodyKind, HttpMatchRequest, HttpRetry, HttpRoute,
    HttpRouteDestination, RedirectPort, RedirectPortSelection, StringMatch, StringMatchKind,
    VirtualServiceSpec, parse_duration,
};
use crate::model::registry::{Service, ServicePort};
use crate::model::{Resource, host};

/// Istio's default retry policy for sidecar routes.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// How often Envoy may pick another host for a retry when the retry host
/// predicate rejects the one it picked (Istio's value).
const HOST_SELECTION_RETRY_MAX_ATTEMPTS: i64 = 5;
const PREVIOUS_HOSTS_PREDICATE: &str = "envoy.retry_host_predicates.previous_hosts";
/// The gateway name that means "sidecars" in a VirtualService's `gateways`.
const MESH_GATEWAY: &str = "mesh";

/// The outbound route table for proxies in `namespace`: one virtual host per
/// HTTP service port, named `HOST:PORT`, with the names a client in that
/// namespace may use for it as domains.
pub fn outbound(mesh: &Mesh<'_>, namespace: &str) -> RouteConfiguration {
    let mut used = HashSet::new();
    let mut virtual_hosts = Vec::new();
    for svc in mesh.registry.services.values() {
        let vs = virtual_service_for(mesh, &svc.hostname);
        for port in svc.ports.iter().filter(|p| p.protocol.is_http()) {
            if !mesh.routes_to(&svc.hostname, port.number) {
                continue; // not imported by the Sidecar, or not exported here
            }
            let domains: Vec<String> = host::domains(&svc.hostname, port.number, namespace)
                .into_iter()
                .filter(|d| used.insert(d.clone()))
                .collect();
            if domains.is_empty() {
                continue;
            }
            let mut routes = match vs {
                Some((res, spec)) => http_routes(mesh, res, spec, svc, port, namespace),
                None => Vec::new(),
            };
            if routes.is_empty() {
                // No VirtualService, or none of its rules apply to this port:
                // plain routing to the service, as Istio falls back to.
                // As in Istio, the DestinationRule's consistent hashing
                // still gets its hash key (and retries stay on the host).
                routes.push(default_route(
                    &outbound_cluster_name(port.number, "", &svc.hostname),
                    hash_policy(mesh, &svc.hostname, &svc.namespace, None, port.number),
                ));
            }
            virtual_hosts.push(VirtualHost {
                name: format!("{}:{}", svc.hostname, port.number),
                domains,
                routes,
                ..Default::default()
            });
        }
    }
    RouteConfiguration {
        name: OUTBOUND_ROUTE.to_string(),
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// The VirtualService that routes `hostname` for sidecars, as Istio picks
/// it: one naming it exactly, else the one with the most specific wildcard;
/// among equals the first in Istio's order (oldest `creationTimestamp`,
/// then namespace and name; see `model::virtual_services`). The others are
/// ignored for this host (Istio reports them as IST0109). Delegates are
/// already merged into their roots.
pub fn virtual_service_for<'a>(
    mesh: &Mesh<'a>,
    hostname: &str,
) -> Option<(&'a Resource, &'a VirtualServiceSpec)> {
    let idx = mesh.config.hosts();
    let exact = idx
        .virtual_services
        .get(hostname)
        .and_then(|l| l.iter().find(|r| mesh.imports_virtual_service(r)));
    let chosen = exact.or_else(|| {
        let mut best: Option<(&String, &std::sync::Arc<Resource>)> = None;
        for (pattern, r) in &idx.wildcard_virtual_services {
            if !host::matches(pattern, hostname) || !mesh.imports_virtual_service(r) {
                continue;
            }
            // Longer patterns are more specific; the first of equals stays.
            if best.is_none_or(|(b, _)| pattern.len() > b.len()) {
                best = Some((pattern, r));
            }
        }
        best.map(|(_, r)| r)
    })?;
    match &chosen.spec {
        crate::model::Spec::VirtualService(spec) => Some((chosen.as_ref(), spec)),
        _ => None,
    }
}

fn default_route(cluster: &str, hash: Option<HashPolicy>) -> Route {
    Route {
        name: "default".to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
            timeout: Some(duration(std::time::Duration::ZERO)),
            retry_policy: Some(default_retry_policy(hash.is_some())),
            hash_policy: hash.into_iter().collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Istio's default retry policy. Retries go to hosts not tried yet (Envoy's
/// `previous_hosts` predicate), except on routes that hash to a host
/// (`consistent_hash`), whose retries must stay on it.
fn default_retry_policy(consistent_hash: bool) -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.to_string(),
        num_retries: Some(UInt32Value {
            value: DEFAULT_RETRY_ATTEMPTS,
        }),
        retriable_status_codes: vec![503],
        retry_host_predicate: if consistent_hash {
            Vec::new()
        } else {
            vec![previous_hosts()]
        },
        host_selection_retry_max_attempts: HOST_SELECTION_RETRY_MAX_ATTEMPTS,
        ..Default::default()
    }
}

fn previous_hosts() -> RetryHostPredicate {
    RetryHostPredicate {
        name: PREVIOUS_HOSTS_PREDICATE.to_string(),
        config_type: Some(retry_host_predicate::ConfigType::TypedConfig(any(
            &PreviousHostsPredicate::default(),
        ))),
    }
}

/// A route's retry policy from its `retries`, as Istio converts it: unset
/// means the default policy, `attempts` 0 (or less) none; otherwise the
/// default policy with what `retries` sets.
fn retry_policy(retries: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    let Some(r) = retries else {
        return Some(default_retry_policy(consistent_hash));
    };
    let attempts = r.attempts.unwrap_or(0);
    if attempts <= 0 {
        return None;
    }
    let mut out = default_retry_policy(consistent_hash);
    out.num_retries = Some(UInt32Value {
        value: attempts as u32,
    });
    if let Some(on) = r.retry_on.as_deref().filter(|on| !on.is_empty()) {
        (out.retry_on, out.retriable_status_codes) = retry_on(on);
    }
    out.per_try_timeout = r
        .per_try_timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .map(duration);
    // Set either way, it overrides the default (also on hashed routes).
    if let Some(ignore) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore {
            vec![previous_hosts()]
        } else {
            Vec::new()
        };
    }
    if r.retry_remote_localities == Some(true) {
        out.retry_priority = Some(http_policy::retry_remote_localities(attempts));
    }
    // Envoy wants a base interval above zero; its maximum defaults to 10x.
    out.retry_back_off = r
        .backoff
        .as_deref()
        .and_then(|b| parse_duration(b).ok())
        .filter(|b| !b.is_zero())
        .map(|b| RetryBackOff {
            base_interval: Some(duration(b)),
            ..Default::default()
        });
    Some(out)
}

/// A VirtualService's HTTP routes for one service port. Each `match` of an
/// HTTP route becomes one Envoy route (they are ORed); matches for another
/// port or only for gateways are left out. As in Istio, the routes end at
/// the first catch-all (a rule without matches, or a match that becomes a
/// route matching every request): Envoy would never pass it, so the
/// remaining rules and matches are dropped (`pilotfish analyze` and the
/// config warnings report them as IST0130).
/// Route tables are shared by the proxies of a view, so a match on
/// `sourceNamespace` is decided here, and one on `sourceLabels` against
/// `mesh.source_labels` (the labels of the view's clients: views are split
/// by the outcome of these matches); without them it never matches rather
/// than matching every source.
pub fn http_routes(
    mesh: &Mesh<'_>,
    vs: &Resource,
    spec: &VirtualServiceSpec,
    svc: &Service,
    port: &ServicePort,
    client_ns: &str,
) -> Vec<Route> {
    let mut out = Vec::new();
    for route in &spec.http {
        let action = action(mesh, vs, route, svc, port);
        let matches: Vec<Option<&HttpMatchRequest>> = if route.r#match.is_empty() {
            vec![None]
        } else {
            route
                .r#match
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port.number))
                .filter(|m| source_labels_match(mesh, &m.source_labels))
                .filter(|m| m.source_namespace.as_ref().is_none_or(|ns| ns == client_ns))
                .filter(|m| m.gateways.is_empty() || m.gateways.iter().any(|g| g == MESH_GATEWAY))
                .map(Some)
                .collect()
        };
        for m in matches {
            let mut r = Route {
                name: route.name.clone().unwrap_or_default(),
                r#match: Some(route_match(m)),
                action: Some(action.clone()),
                ..Default::default()
            };
            // The rule's header operations, then a sole destination's.
            let sole = match route.route.as_slice() {
                [only] => only.headers.as_ref(),
                _ => None,
            };
            for h in route.headers.iter().chain(sole) {
                if let Some(req) = &h.request {
                    r.request_headers_to_add.extend(header_ops(req));
                    r.request_headers_to_remove
                        .extend(req.remove.iter().cloned());
                }
                if let Some(resp) = &h.response {
                    r.response_headers_to_add.extend(header_ops(resp));
                    r.response_headers_to_remove
                        .extend(resp.remove.iter().cloned());
                }
            }
            if let Some(f) = route.fault.as_ref().and_then(http_policy::fault) {
                r.typed_per_filter_config
                    .insert(http_policy::FAULT_FILTER.to_string(), f);
            }
            if let Some(c) = &route.cors_policy {
                r.typed_per_filter_config
                    .insert(http_policy::CORS_FILTER.to_string(), http_policy::cors(c));
            }
            let last = is_catch_all(&r);
            out.push(r);
            if last {
                return out;
            }
        }
    }
    out
}

/// Whether an Envoy route matches every request (Istio's `IsCatchAllRoute`):
/// path prefix `/` (or regex `.*`) and no header or query conditions.
pub(super) fn is_catch_all(r: &Route) -> bool {
    let Some(m) = &r.r#match else {
        return false;
    };
    let all_paths = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) | Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(re)) => re.regex == ".*",
        _ => false,
    };
    all_paths
        && m.headers.is_empty()
        && m.query_parameters.is_empty()
        && m.dynamic_metadata.is_empty()
}

/// Istio's `retryOn`: Envoy policies, and HTTP status codes which become
/// `retriable-status-codes`.
fn retry_on(spec: &str) -> (String, Vec<u32>) {
    let mut policies: Vec<&str> = Vec::new();
    let mut codes = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => policies.push(part),
        }
    }
    if !codes.is_empty() && !policies.contains(&"retriable-status-codes") {
        policies.push("retriable-status-codes");
    }
    (policies.join(","), codes)
}

fn header_ops(ops: &HeaderOperations) -> Vec<HeaderValueOption> {
    let set = ops
        .set
        .iter()
        .map(|(k, v)| (k, v, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = ops
        .add
        .iter()
        .map(|(k, v)| (k, v, HeaderAppendAction::AppendIfExistsOrAdd));
    set.chain(add)
        .map(|(k, v, action)| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        })
        .collect()
}

fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<StringMatcher> {
    let pattern = match m.kind()? {
        StringMatchKind::Exact(s) => MatchPattern::Exact(s.to_string()),
        StringMatchKind::Prefix(s) => MatchPattern::Prefix(s.to_string()),
        StringMatchKind::Regex(s) => MatchPattern::SafeRegex(regex(s)),
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    })
}

fn regex(s: &str) -> RegexMatcher {
    RegexMatcher {
        regex: s.to_string(),
        ..Default::default()
    }
}

fn header_matcher(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(match string_matcher(m, false) {
            Some(sm) => HeaderMatchSpecifier::StringMatch(sm),
            // An empty match tests presence, as in Istio.
            None => HeaderMatchSpecifier::PresentMatch(true),
        }),
        invert_match: invert,
        ..Default::default()
    }
}

fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let Some(m) = m else {
        return RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        };
    };
    let ignore_case = m.ignore_uri_case.unwrap_or(false);
    let path_specifier = match m.uri.as_ref().and_then(|u| u.kind()) {
        Some(StringMatchKind::Exact(s)) => PathSpecifier::Path(s.to_string()),
        Some(StringMatchKind::Prefix(s)) => PathSpecifier::Prefix(s.to_string()),
        Some(StringMatchKind::Regex(s)) => PathSpecifier::SafeRegex(regex(s)),
        None => PathSpecifier::Prefix("/".to_string()),
    };
    let mut headers: Vec<HeaderMatcher> = Vec::new();
    for (name, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(name, sm, false));
        }
    }
    headers.extend(m.headers.iter().map(|(k, v)| header_matcher(k, v, false)));
    headers.extend(
        m.without_headers
            .iter()
            .map(|(k, v)| header_matcher(k, v, true)),
    );
    let query_parameters = m
        .query_params
        .iter()
        .map(|(k, v)| QueryParameterMatcher {
            name: k.clone(),
            query_parameter_match_specifier: Some(match string_matcher(v, false) {
                Some(sm) => QueryParameterMatchSpecifier::StringMatch(sm),
                None => QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: ignore_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters,
        ..Default::default()
    }
}

/// The cluster a destination names, resolved from the VirtualService's namespace.
fn destination_cluster(
    mesh: &Mesh<'_>,
    vs: &Resource,
    d: &Destination,
    port: &ServicePort,
) -> String {
    let hostname = host::resolve(&d.host, &vs.namespace);
    let target_port = d
        .port
        .as_ref()
        .and_then(|p| p.number)
        .or_else(|| {
            // A destination service with a single port needs no port.
            let svc = mesh.registry.services.get(&hostname)?;
            (svc.ports.len() == 1).then(|| svc.ports[0].number)
        })
        .unwrap_or(port.number);
    outbound_cluster_name(
        target_port,
        d.subset.as_deref().unwrap_or_default(),
        &hostname,
    )
}

fn action(
    mesh: &Mesh<'_>,
    vs: &Resource,
    route: &HttpRoute,
    svc: &Service,
    port: &ServicePort,
) -> Action {
    if let Some(redirect) = &route.redirect {
        return Action::Redirect(RedirectAction {
            host_redirect: redirect.authority.clone().unwrap_or_default(),
            // FROM_PROTOCOL_DEFAULT sets no port (Envoy's default for the
            // scheme). FROM_REQUEST_PORT: Envoy cannot take the port from the
            // request, but a route table is built for one port, so Istio uses it.
            port_redirect: match redirect.redirect_port() {
                Some(RedirectPort::Number(n)) => n,
                Some(RedirectPort::Derive(RedirectPortSelection::FromRequestPort)) => port.number,
                Some(RedirectPort::Derive(RedirectPortSelection::FromProtocolDefault)) | None => 0,
            },
            response_code: match redirect.redirect_code.unwrap_or(301) {
                302 => RedirectResponseCode::Found,
                303 => RedirectResponseCode::SeeOther,
                307 => RedirectResponseCode::TemporaryRedirect,
                308 => RedirectResponseCode::PermanentRedirect,
                _ => RedirectResponseCode::MovedPermanently,
            } as i32,
            scheme_rewrite_specifier: redirect
                .scheme
                .clone()
                .map(SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier: redirect
                .uri
                .clone()
                .map(PathRewriteSpecifier::PathRedirect)
                .or(redirect
                    .prefix_rewrite
                    .clone()
                    .map(PathRewriteSpecifier::PrefixRewrite)),
            ..Default::default()
        });
    }
    if let Some(direct) = &route.direct_response {
        // Bytes that are not base64 were rejected by validation.
        let body = direct
            .body
            .as_ref()
            .and_then(|b| match b.kind()? {
                HttpBodyKind::String(s) => Some(Specifier::InlineString(s.to_string())),
                HttpBodyKind::Bytes(_) => b.decoded_bytes()?.ok().map(Specifier::InlineBytes),
            })
            .map(|specifier| DataSource {
                specifier: Some(specifier),
                ..Default::default()
            });
        return Action::DirectResponse(DirectResponseAction {
            status: direct.status,
            body,
            ..Default::default()
        });
    }
    // Weights are relative (as in current Istio). A sole destination gets all
    // traffic whatever its weight; among several, those weighted 0 get none.
    let dests: Vec<(&HttpRouteDestination, String, u32)> = route
        .route
        .iter()
        .map(|d| {
            let w = match d.weight {
                _ if route.route.len() == 1 => 100,
                Some(w) => w.max(0) as u32,
                None => 0,
            };
            (d, destination_cluster(mesh, vs, &d.destination, port), w)
        })
        .filter(|(_, _, w)| *w > 0)
        .collect();
    let cluster_specifier = match dests.as_slice() {
        [] => ClusterSpecifier::Cluster(outbound_cluster_name(port.number, "", &svc.hostname)),
        // A sole destination's header operations are merged into the route
        // (see `http_routes`).
        [(_, c, _)] => ClusterSpecifier::Cluster(c.clone()),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(d, c, w)| {
                    let ops = d.headers.as_ref();
                    let req = ops.and_then(|h| h.request.as_ref());
                    let resp = ops.and_then(|h| h.response.as_ref());
                    ClusterWeight {
                        name: c.clone(),
                        weight: Some(UInt32Value { value: *w }),
                        request_headers_to_add: req.map(header_ops).unwrap_or_default(),
                        request_headers_to_remove: req
                            .map(|r| r.remove.clone())
                            .unwrap_or_default(),
                        response_headers_to_add: resp.map(header_ops).unwrap_or_default(),
                        response_headers_to_remove: resp
                            .map(|r| r.remove.clone())
                            .unwrap_or_default(),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }),
    };
    let timeout = route
        .timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .unwrap_or_default();
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(duration(timeout)),
        ..Default::default()
    };
    // Mirroring: `mirror` (+ mirrorPercentage) or the newer `mirrors` list.
    if let Some(m) = &route.mirror {
        action.request_mirror_policies.push(http_policy::mirror(
            destination_cluster(mesh, vs, m, port),
            route.effective_mirror_percentage(),
        ));
    }
    for m in &route.mirrors {
        action.request_mirror_policies.push(http_policy::mirror(
            destination_cluster(mesh, vs, &m.destination, port),
            m.percentage.as_ref().map(|p| p.value),
        ));
    }
    // Consistent hashing is set on the destination's DestinationRule; the
    // key to hash is part of the route (Istio takes the first destination's).
    if let Some(d) = route.route.first() {
        let hostname = host::resolve(&d.destination.host, &vs.namespace);
        let dest_svc = mesh.registry.services.get(&hostname);
        let ns = dest_svc.map_or(vs.namespace.as_str(), |s| s.namespace.as_str());
        let dest_port = d
            .destination
            .port
            .as_ref()
            .and_then(|p| p.number)
            .unwrap_or(port.number);
        action.hash_policy.extend(hash_policy(
            mesh,
            &hostname,
            ns,
            d.destination.subset.as_deref(),
            dest_port,
        ));
    }
    action.retry_policy = retry_policy(route.retries.as_ref(), !action.hash_policy.is_empty());
    if let Some(rw) = &route.rewrite {
        if let Some(uri) = &rw.uri {
            action.prefix_rewrite = uri.clone();
        }
        if let Some(re) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(re.r#match.as_deref().unwrap_or_default())),
                substitution: re.rewrite.clone().unwrap_or_default(),
            });
        }
        if let Some(authority) = &rw.authority {
            action.host_rewrite_specifier = Some(
                envoy_types::pb::envoy::config::route::v3::route_action::HostRewriteSpecifier::HostRewriteLiteral(
                    authority.clone(),
                ),
            );
        }
    }
    Action::Route(action)
}

/// The route's hash key for a destination whose DestinationRule (as it
/// applies to `subset` and `port`) load-balances by consistent hashing.
fn hash_policy(
    mesh: &Mesh<'_>,
    hostname: &str,
    namespace: &str,
    subset: Option<&str>,
    port: u32,
) -> Option<HashPolicy> {
    let (_, dr) = mesh.destination_rule(hostname, namespace)?;
    let subset = subset.and_then(|name| dr.subsets.iter().find(|s| s.name == name));
    let policy = EffectivePolicy::merge(
        dr.traffic_policy.as_ref(),
        subset.and_then(|s| s.traffic_policy.as_ref()),
        port,
    );
    policy
        .load_balancer
        .and_then(|l| l.consistent_hash.as_ref())
        .and_then(http_policy::hash_policy)
}

/// Whether the client satisfies a match's `sourceLabels`: none asked, or
/// every one present on the client's workload.
pub fn source_labels_match(mesh: &Mesh<'_>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.is_empty()
        || mesh
            .source_labels
            .is_some_and(|l| wanted.iter().all(|(k, v)| l.get(k) == Some(v)))
}
