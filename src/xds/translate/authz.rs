//! AuthorizationPolicy on a sidecar's inbound listeners, as Envoy RBAC
//! filters the way Istio builds them: `envoy.filters.http.rbac` in the
//! inbound HTTP connection manager, `envoy.filters.network.rbac` before
//! `tcp_proxy` on TCP ports.
//!
//! Evaluation order is Istio's: an AUDIT filter (Envoy's LOG action, which
//! only marks the request for the access log), then DENY, then ALLOW. When
//! any ALLOW policy applies to the workload, a request that matches none of
//! their rules is denied (an ALLOW policy without rules therefore denies
//! everything; `rules: [{}]` allows everything).
//!
//! CUSTOM policies need an external authorizer from the mesh config, which
//! pilotfish does not have: like Istio with an unknown provider, their
//! rules are enforced as DENY (fail closed).
//!
//! A key that cannot be enforced on a port (HTTP-only attributes such as
//! methods, paths, hosts, request principals, headers or JWT claims on a
//! TCP port, or an unsupported condition) is handled as Istio does: in an
//! ALLOW policy the whole rule is dropped (less is allowed); in a DENY or
//! AUDIT policy only that key is left out (more is denied).

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, SourcedMetadata, permission, principal,
    rbac::Action as RbacAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, header_matcher::HeaderMatchSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, PathMatcher, RegexMatcher, StringMatcher, ValueMatcher,
    list_matcher, metadata_matcher::PathSegment, metadata_matcher::path_segment::Segment,
    path_matcher, string_matcher::MatchPattern, value_matcher,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};

use super::{Mesh, jwt, mtls};
use crate::model::Resource;
use crate::model::istio::WorkloadSelector;
use crate::model::registry::Workload;
use crate::model::security::{Action, AuthorizationPolicySpec, Condition, Operation, Rule, Source};

pub const HTTP_RBAC: &str = "envoy.filters.http.rbac";
pub const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
const SPIFFE_PREFIX: &str = "spiffe://";

/// Whether a policy of kind AuthorizationPolicy, RequestAuthentication (or
/// any with the same scoping) in `r`'s namespace applies to `workload`'s
/// sidecar: no selector (or one without labels) means the whole namespace,
/// and the whole mesh in the root namespace; a selector picks workloads of
/// its namespace by label, and of every namespace from the root namespace.
/// Policies with `targetRef(s)` attach to gateways and waypoints, never to
/// sidecars.
pub fn selects(
    r: &Resource,
    selector: Option<&WorkloadSelector>,
    has_target_ref: bool,
    workload: &Workload,
) -> bool {
    if has_target_ref {
        return false;
    }
    let root = r.namespace == mtls::ROOT_NAMESPACE;
    if r.namespace != workload.key.namespace && !root {
        return false;
    }
    selector.is_none_or(|s| {
        s.match_labels
            .iter()
            .all(|(k, v)| workload.labels.get(k) == Some(v))
    })
}

/// What guards one workload's inbound listeners: the AuthorizationPolicies
/// and RequestAuthentications that select it, translated once.
pub struct Inbound {
    /// `jwt_authn` then the RBAC filters, for HTTP ports.
    http: Vec<HttpFilter>,
    /// The RBAC filters for TCP ports.
    network: Vec<Filter>,
}

impl Inbound {
    pub fn for_workload(mesh: &Mesh<'_>, workload: &Workload) -> Self {
        let policies = policies_for(mesh.config, workload);
        let mut http: Vec<HttpFilter> =
            jwt::http_filter(mesh, &jwt::policies_for(mesh.config, workload))
                .into_iter()
                .collect();
        http.extend(http_filters(&policies));
        Inbound {
            http,
            network: network_filters(&policies),
        }
    }

    /// The filters before the router of an inbound HTTP connection manager.
    pub fn http_filters(&self) -> Vec<HttpFilter> {
        self.http.clone()
    }

    /// The filters before `tcp_proxy` on an inbound TCP listener.
    pub fn network_filters(&self) -> Vec<Filter> {
        self.network.clone()
    }
}

/// Feeds everything `Inbound::for_workload` reads for `workload` into `h`
/// (the policies that select it, and the clusters their remote JWKS use),
/// so the cache re-translates exactly the workloads a policy change affects.
pub fn hash_inputs(mesh: &Mesh<'_>, workload: &Workload, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    fn spec(r: &Resource, json: serde_json::Result<String>, h: &mut impl std::hash::Hasher) {
        r.namespace.hash(h);
        r.name.hash(h);
        json.unwrap_or_default().hash(h);
    }
    for (r, s) in policies_for(mesh.config, workload) {
        spec(r, serde_json::to_string(s), h);
    }
    for (r, s) in jwt::policies_for(mesh.config, workload) {
        spec(r, serde_json::to_string(s), h);
        for rule in s.jwt_rules.iter().filter(|r| r.jwks.is_none()) {
            rule.jwks_uri()
                .and_then(|u| jwt::jwks_cluster(mesh, u))
                .hash(h);
        }
    }
}

/// The AuthorizationPolicies that apply to `workload`, by namespace and name.
pub fn policies_for<'a>(
    config: &'a crate::model::ConfigSnapshot,
    workload: &Workload,
) -> Vec<(&'a Resource, &'a AuthorizationPolicySpec)> {
    config
        .authorization_policies()
        .filter(|(r, s)| {
            let has_target = s.target_ref.is_some() || !s.target_refs.is_empty();
            selects(r, s.selector.as_ref(), has_target, workload)
        })
        .collect()
}

/// The RBAC filters for an inbound HTTP port, in evaluation order (they go
/// after JWT authentication and before the router).
pub fn http_filters(policies: &[(&Resource, &AuthorizationPolicySpec)]) -> Vec<HttpFilter> {
    rbac_rules(policies, false)
        .into_iter()
        .map(|rules| HttpFilter {
            name: HTTP_RBAC.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(typed(
                &HttpRbac::default(),
                rules,
            ))),
            ..Default::default()
        })
        .collect()
}

/// The RBAC filters for an inbound TCP port (they go before `tcp_proxy`).
pub fn network_filters(policies: &[(&Resource, &AuthorizationPolicySpec)]) -> Vec<Filter> {
    rbac_rules(policies, true)
        .into_iter()
        .map(|rules| Filter {
            name: NETWORK_RBAC.to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(typed(
                &NetworkRbac {
                    // Istio's prefix: stats read `tcp.rbac.allowed` etc.
                    stat_prefix: "tcp.".to_string(),
                    ..Default::default()
                },
                rules,
            ))),
        })
        .collect()
}

/// `outer` (an HTTP or network RBAC filter config, `rules` unset) with
/// `rules` as its field 1, packed in an `Any` (see `SortedRbac`).
fn typed<M: prost::Name>(outer: &M, rules: SortedRbac) -> Any {
    let mut value = outer.encode_to_vec();
    prost::encoding::message::encode(1, &rules, &mut value);
    Any {
        type_url: M::type_url(),
        value,
    }
}

/// Envoy's `config.rbac.v3.RBAC` with its `policies` map as a list sorted by
/// name: the same bytes on the wire (a map is a repeated key/value entry),
/// but the same bytes every time, where a `HashMap` would encode in a
/// different order on each translation and look like a change to the cache.
#[derive(Clone, PartialEq, prost::Message)]
struct SortedRbac {
    #[prost(enumeration = "RbacAction", tag = "1")]
    action: i32,
    #[prost(message, repeated, tag = "2")]
    policies: Vec<PolicyEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PolicyEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Policy>,
}

impl SortedRbac {
    fn new(action: RbacAction, policies: BTreeMap<String, Policy>) -> Self {
        SortedRbac {
            action: action as i32,
            policies: policies
                .into_iter()
                .map(|(key, value)| PolicyEntry {
                    key,
                    value: Some(value),
                })
                .collect(),
        }
    }
}

/// AUDIT, DENY, ALLOW rule sets (each only when it has a reason to exist).
fn rbac_rules(policies: &[(&Resource, &AuthorizationPolicySpec)], tcp: bool) -> Vec<SortedRbac> {
    let mut audit = BTreeMap::new();
    let mut deny = BTreeMap::new();
    let mut allow = BTreeMap::new();
    let mut any_allow = false;
    for (r, spec) in policies {
        let action = spec.action.unwrap_or_default();
        // CUSTOM has no provider here: enforce its rules as DENY (fail closed).
        let (set, act) = match action {
            Action::Allow => {
                any_allow = true;
                (&mut allow, Action::Allow)
            }
            Action::Deny | Action::Custom => (&mut deny, Action::Deny),
            Action::Audit => (&mut audit, Action::Audit),
        };
        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            if let Some(p) = rule_policy(rule, &r.namespace, tcp, act) {
                set.insert(
                    format!("ns[{}]-policy[{}]-rule[{i}]", r.namespace, r.name),
                    p,
                );
            }
        }
    }
    let mut out = Vec::new();
    if !audit.is_empty() {
        out.push(SortedRbac::new(RbacAction::Log, audit));
    }
    if !deny.is_empty() {
        out.push(SortedRbac::new(RbacAction::Deny, deny));
    }
    if any_allow {
        out.push(SortedRbac::new(RbacAction::Allow, allow));
    }
    out
}

/// A key that cannot be enforced here (HTTP-only on TCP, or unsupported).
struct Unenforceable;

/// Which side of an Envoy policy a condition lands on.
enum Side {
    Principal(Principal),
    Permission(Permission),
}

/// One rule as one Envoy policy: any of its `to` entries (each with the
/// permission-side conditions) and any of its `from` entries (each with the
/// principal-side conditions). None when an ALLOW rule must be dropped.
fn rule_policy(rule: &Rule, ns: &str, tcp: bool, action: Action) -> Option<Policy> {
    let mut cond_principals = Vec::new();
    let mut cond_permissions = Vec::new();
    for c in &rule.when {
        for side in keep(condition(c, ns, tcp), action)? {
            match side {
                Side::Principal(p) => cond_principals.push(p),
                Side::Permission(p) => cond_permissions.push(p),
            }
        }
    }
    let principals = match &rule.from {
        None => vec![and_ids(cond_principals)],
        Some(from) => {
            let mut out = Vec::new();
            for f in from {
                let mut ids = Vec::new();
                if let Some(src) = &f.source {
                    for key in source(src, ns, tcp) {
                        ids.extend(keep(key, action)?);
                    }
                }
                ids.extend(cond_principals.iter().cloned());
                out.push(and_ids(ids));
            }
            out
        }
    };
    let permissions = match &rule.to {
        None => vec![and_rules(cond_permissions)],
        Some(to) => {
            let mut out = Vec::new();
            for t in to {
                let mut rules = Vec::new();
                if let Some(op) = &t.operation {
                    for key in operation(op, tcp) {
                        rules.extend(keep(key, action)?);
                    }
                }
                rules.extend(cond_permissions.iter().cloned());
                out.push(and_rules(rules));
            }
            out
        }
    };
    Some(Policy {
        permissions,
        principals,
        ..Default::default()
    })
}

/// ALLOW: an unenforceable key drops the rule (None); DENY, AUDIT: only the key.
fn keep<T>(r: Result<Vec<T>, Unenforceable>, action: Action) -> Option<Vec<T>> {
    match r {
        Ok(v) => Some(v),
        Err(Unenforceable) if action == Action::Allow => None,
        Err(Unenforceable) => Some(Vec::new()),
    }
}

/// Each key of a source: one principal (values ORed, `not*` negated).
fn source(s: &Source, ns: &str, tcp: bool) -> Vec<Result<Vec<Principal>, Unenforceable>> {
    let ids = |values: &[String], not: bool, f: &dyn Fn(&str) -> Principal| {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let p = or_ids(values.iter().map(|v| f(v)).collect());
        Ok(vec![if not { not_id(p) } else { p }])
    };
    let http_ids = |values: &[String], not: bool, f: &dyn Fn(&str) -> Principal| {
        if tcp && !values.is_empty() {
            return Err(Unenforceable);
        }
        ids(values, not, f)
    };
    let account = |v: &str| service_account(v, ns);
    vec![
        ids(&s.principals, false, &peer_principal),
        ids(&s.not_principals, true, &peer_principal),
        http_ids(&s.request_principals, false, &request_principal),
        http_ids(&s.not_request_principals, true, &request_principal),
        ids(&s.namespaces, false, &namespace),
        ids(&s.not_namespaces, true, &namespace),
        ids(&s.ip_blocks, false, &direct_remote_ip),
        ids(&s.not_ip_blocks, true, &direct_remote_ip),
        ids(&s.remote_ip_blocks, false, &remote_ip),
        ids(&s.not_remote_ip_blocks, true, &remote_ip),
        ids(&s.service_accounts, false, &account),
        ids(&s.not_service_accounts, true, &account),
        ids(&s.trust_domains, false, &trust_domain),
        ids(&s.not_trust_domains, true, &trust_domain),
    ]
}

/// Each key of an operation: one permission (values ORed, `not*` negated).
fn operation(o: &Operation, tcp: bool) -> Vec<Result<Vec<Permission>, Unenforceable>> {
    let rules = |values: &[String], not: bool, http: bool, f: &dyn Fn(&str) -> Permission| {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        if http && tcp {
            return Err(Unenforceable);
        }
        let p = or_rules(values.iter().map(|v| f(v)).collect());
        Ok(vec![if not { not_rule(p) } else { p }])
    };
    vec![
        rules(&o.hosts, false, true, &host),
        rules(&o.not_hosts, true, true, &host),
        rules(&o.ports, false, false, &port),
        rules(&o.not_ports, true, false, &port),
        rules(&o.methods, false, true, &method),
        rules(&o.not_methods, true, true, &method),
        rules(&o.paths, false, true, &path),
        rules(&o.not_paths, true, true, &path),
    ]
}

/// How one value of a principal-side attribute becomes a matcher.
type ValueToPrincipal = Box<dyn Fn(&str) -> Principal>;

/// A `when` condition: its values ORed, its notValues negated, both ANDed.
fn condition(c: &Condition, ns: &str, tcp: bool) -> Result<Vec<Side>, Unenforceable> {
    let key = c.key.as_str();
    let http = key.starts_with("request.");
    if http && tcp {
        return Err(Unenforceable);
    }
    let principal: Option<ValueToPrincipal> = if let Some(name) = bracketed(key, "request.headers")
    {
        let name = name.first().cloned().ok_or(Unenforceable)?;
        Some(Box::new(move |v| header_id(&name, v)))
    } else if let Some(path) = bracketed(key, "request.auth.claims") {
        Some(Box::new(move |v| jwt_claim(&path, v)))
    } else {
        match key {
            "source.ip" => Some(Box::new(direct_remote_ip)),
            "remote.ip" => Some(Box::new(remote_ip)),
            "source.namespace" => Some(Box::new(namespace)),
            "source.principal" => Some(Box::new(peer_principal)),
            "source.serviceAccount" => {
                let ns = ns.to_string();
                Some(Box::new(move |v| service_account(v, &ns)))
            }
            "request.auth.principal" => Some(Box::new(request_principal)),
            "request.auth.audiences" => Some(Box::new(|v| jwt_claim(&["aud".to_string()], v))),
            "request.auth.presenter" => Some(Box::new(|v| jwt_claim(&["azp".to_string()], v))),
            _ => None,
        }
    };
    if let Some(f) = principal {
        let mut out = Vec::new();
        if !c.values.is_empty() {
            out.push(Side::Principal(or_ids(
                c.values.iter().map(|v| f(v)).collect(),
            )));
        }
        if !c.not_values.is_empty() {
            out.push(Side::Principal(not_id(or_ids(
                c.not_values.iter().map(|v| f(v)).collect(),
            ))));
        }
        return Ok(out);
    }
    let permission: fn(&str) -> Permission = match key {
        "destination.ip" => destination_ip,
        "destination.port" => port,
        "connection.sni" => sni,
        // `experimental.envoy.filters.*` and inline headers: not supported.
        _ => return Err(Unenforceable),
    };
    let mut out = Vec::new();
    if !c.values.is_empty() {
        out.push(Side::Permission(or_rules(
            c.values.iter().map(|v| permission(v)).collect(),
        )));
    }
    if !c.not_values.is_empty() {
        out.push(Side::Permission(not_rule(or_rules(
            c.not_values.iter().map(|v| permission(v)).collect(),
        ))));
    }
    Ok(out)
}

/// `prefix[a][b]` -> `["a", "b"]`; None when `key` is not `prefix[...]`.
fn bracketed(key: &str, prefix: &str) -> Option<Vec<String>> {
    let rest = key
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    Some(rest.split("][").map(str::to_string).collect())
}

// ---- principals -------------------------------------------------------

fn id(identifier: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(identifier),
    }
}

fn and_ids(mut ids: Vec<Principal>) -> Principal {
    match ids.len() {
        0 => id(principal::Identifier::Any(true)),
        1 => ids.remove(0),
        _ => id(principal::Identifier::AndIds(principal::Set { ids })),
    }
}

fn or_ids(mut ids: Vec<Principal>) -> Principal {
    match ids.len() {
        1 => ids.remove(0),
        _ => id(principal::Identifier::OrIds(principal::Set { ids })),
    }
}

fn not_id(p: Principal) -> Principal {
    id(principal::Identifier::NotId(Box::new(p)))
}

/// The peer certificate's identity (URI SAN, else subject), from mTLS.
fn authenticated(m: StringMatcher) -> Principal {
    id(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(m),
        },
    ))
}

/// `cluster.local/ns/NS/sa/SA` matches `spiffe://cluster.local/ns/NS/sa/SA`.
fn peer_principal(v: &str) -> Principal {
    authenticated(string_match(v, SPIFFE_PREFIX))
}

/// Any identity in namespace `v` (`*` globs allowed).
fn namespace(v: &str) -> Principal {
    authenticated(regex(&format!(".*/ns/{}/.*", glob(v))))
}

/// `sa` (in the policy's namespace) or `ns/sa`, in any trust domain.
fn service_account(v: &str, policy_ns: &str) -> Principal {
    let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
    authenticated(regex(&format!(
        "spiffe://[^/]+/ns/{}/sa/{}",
        regex::escape(ns),
        regex::escape(sa)
    )))
}

fn trust_domain(v: &str) -> Principal {
    if v == "*" {
        return authenticated(regex(".+"));
    }
    authenticated(string_match(&format!("{v}/*"), SPIFFE_PREFIX))
}

fn direct_remote_ip(v: &str) -> Principal {
    id(principal::Identifier::DirectRemoteIp(cidr(v)))
}

fn remote_ip(v: &str) -> Principal {
    id(principal::Identifier::RemoteIp(cidr(v)))
}

fn header_id(name: &str, v: &str) -> Principal {
    id(principal::Identifier::Header(header(name, v)))
}

/// A request principal `ISS/SUB` (from a JWT that `jwt_authn` verified),
/// matched on the token's `iss` and `sub` claims. The value is split at its
/// last `/` (issuers are often URLs; subjects rarely contain `/`).
fn request_principal(v: &str) -> Principal {
    let claim = |name: &str, m: Option<StringMatcher>| {
        jwt_metadata(&[name.to_string()], m.map_or(present(), string_value))
    };
    let non_empty =
        |s: &str, f: fn(String) -> MatchPattern| (!s.is_empty()).then(|| matcher(f(s.to_string())));
    if v == "*" {
        return claim("iss", None);
    }
    if let Some(head) = v.strip_suffix('*') {
        return match head.rsplit_once('/') {
            Some((iss, sub)) => and_ids(vec![
                claim("iss", Some(matcher(MatchPattern::Exact(iss.to_string())))),
                claim("sub", non_empty(sub, MatchPattern::Prefix)),
            ]),
            None => claim("iss", non_empty(head, MatchPattern::Prefix)),
        };
    }
    if let Some(tail) = v.strip_prefix('*') {
        return match tail.rsplit_once('/') {
            Some((iss, sub)) => and_ids(vec![
                claim("iss", non_empty(iss, MatchPattern::Suffix)),
                claim("sub", Some(matcher(MatchPattern::Exact(sub.to_string())))),
            ]),
            None => claim("sub", non_empty(tail, MatchPattern::Suffix)),
        };
    }
    let (iss, sub) = v.rsplit_once('/').unwrap_or((v, ""));
    and_ids(vec![
        claim("iss", Some(matcher(MatchPattern::Exact(iss.to_string())))),
        claim("sub", Some(matcher(MatchPattern::Exact(sub.to_string())))),
    ])
}

/// A JWT claim (a path into nested claims) equal to `v`, or containing it
/// when the claim is a list (`aud`, `groups`, ...).
fn jwt_claim(path: &[String], v: &str) -> Principal {
    if v == "*" {
        return jwt_metadata(path, present());
    }
    let m = string_match(v, "");
    or_ids(vec![
        jwt_metadata(path, string_value(m.clone())),
        jwt_metadata(
            path,
            ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                    ListMatcher {
                        match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(
                            string_value(m),
                        ))),
                    },
                ))),
            },
        ),
    ])
}

fn jwt_metadata(path: &[String], value: ValueMatcher) -> Principal {
    let mut segments = vec![jwt::PAYLOAD_METADATA_KEY.to_string()];
    segments.extend(path.iter().cloned());
    // Dynamic metadata (the default source): what jwt_authn wrote.
    id(principal::Identifier::SourcedMetadata(SourcedMetadata {
        metadata_matcher: Some(MetadataMatcher {
            filter: jwt::JWT_AUTHN.to_string(),
            path: segments
                .into_iter()
                .map(|k| PathSegment {
                    segment: Some(Segment::Key(k)),
                })
                .collect(),
            value: Some(value),
            invert: false,
        }),
        ..Default::default()
    }))
}

fn string_value(m: StringMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
    }
}

fn present() -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::PresentMatch(true)),
    }
}

// ---- permissions ------------------------------------------------------

fn rule(r: permission::Rule) -> Permission {
    Permission { rule: Some(r) }
}

fn and_rules(mut rules: Vec<Permission>) -> Permission {
    match rules.len() {
        0 => rule(permission::Rule::Any(true)),
        1 => rules.remove(0),
        _ => rule(permission::Rule::AndRules(permission::Set { rules })),
    }
}

fn or_rules(mut rules: Vec<Permission>) -> Permission {
    match rules.len() {
        1 => rules.remove(0),
        _ => rule(permission::Rule::OrRules(permission::Set { rules })),
    }
}

fn not_rule(p: Permission) -> Permission {
    rule(permission::Rule::NotRule(Box::new(p)))
}

/// The Host (`:authority`), case-insensitive; without a port in the value,
/// any port matches.
fn host(v: &str) -> Permission {
    let m = if v == "*" {
        HeaderMatchSpecifier::PresentMatch(true)
    } else {
        let pattern = glob(v);
        let port = if v.contains(':') { "" } else { "(:[0-9]+)?" };
        HeaderMatchSpecifier::StringMatch(regex(&format!("(?i){pattern}{port}")))
    };
    rule(permission::Rule::Header(HeaderMatcher {
        name: ":authority".to_string(),
        header_match_specifier: Some(m),
        ..Default::default()
    }))
}

fn method(v: &str) -> Permission {
    rule(permission::Rule::Header(header(":method", v)))
}

/// The path without its query string: exact, `prefix*`, `*suffix`, `*`,
/// or a template with `{*}` (one segment) and `{**}` (the rest).
fn path(v: &str) -> Permission {
    let m = if v.contains("{*}") || v.contains("{**}") {
        let re: Vec<String> = v
            .split('/')
            .map(|seg| match seg {
                "{*}" => "[^/]+".to_string(),
                "{**}" => ".*".to_string(),
                lit => regex::escape(lit),
            })
            .collect();
        regex(&re.join("/"))
    } else {
        string_match(v, "")
    };
    rule(permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(m)),
    }))
}

/// Validation guarantees a number; a bad one matches no real port.
fn port(v: &str) -> Permission {
    rule(permission::Rule::DestinationPort(v.parse().unwrap_or(0)))
}

fn destination_ip(v: &str) -> Permission {
    rule(permission::Rule::DestinationIp(cidr(v)))
}

fn sni(v: &str) -> Permission {
    rule(permission::Rule::RequestedServerName(string_match(v, "")))
}

// ---- matchers ---------------------------------------------------------

fn matcher(p: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    }
}

fn regex(re: &str) -> StringMatcher {
    matcher(MatchPattern::SafeRegex(RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }))
}

/// Istio's value forms with `prefix` added: `*` (present), `*suffix`,
/// `prefix*`, exact. Envoy forbids empty prefixes and suffixes, hence `*`
/// first.
fn string_match(v: &str, prefix: &str) -> StringMatcher {
    if v == "*" {
        regex(".+")
    } else if let Some(suffix) = v.strip_prefix('*') {
        if prefix.is_empty() {
            matcher(MatchPattern::Suffix(suffix.to_string()))
        } else {
            regex(&format!(
                "{}.*{}",
                regex::escape(prefix),
                regex::escape(suffix)
            ))
        }
    } else if let Some(head) = v.strip_suffix('*') {
        matcher(MatchPattern::Prefix(format!("{prefix}{head}")))
    } else {
        matcher(MatchPattern::Exact(format!("{prefix}{v}")))
    }
}

fn header(name: &str, v: &str) -> HeaderMatcher {
    let m = if v == "*" {
        HeaderMatchSpecifier::PresentMatch(true)
    } else {
        HeaderMatchSpecifier::StringMatch(string_match(v, ""))
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(m),
        ..Default::default()
    }
}

/// A value with `*` wildcards as a regex (the rest literal).
fn glob(v: &str) -> String {
    v.split('*')
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(".*")
}

/// `10.0.0.0/8`, or one address (`/32`, `/128`). Validation guarantees the
/// form; anything else becomes an address Envoy rejects loudly.
pub(super) fn cidr(v: &str) -> CidrRange {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()),
        None => (v, None),
    };
    let len = len.unwrap_or(match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => 128,
        _ => 32,
    });
    CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}

#[cfg(test)]
mod tests;
