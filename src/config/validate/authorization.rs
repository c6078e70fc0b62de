//! Istio's AuthorizationPolicy rules: the action and its provider, rule
//! lists that are either absent or non-empty, source and operation formats,
//! and `when` conditions on Istio's supported attributes.

use super::findings::Findings;
use super::names;
use super::policy;
use crate::model::security::{Action, AuthorizationPolicySpec, Condition, Operation, Source};

/// Most rules (and `from` entries per rule) a policy may have (Istio's CRD).
const MAX_RULES: usize = 512;
/// Most service accounts per list (Istio's CRD and webhook).
const MAX_SERVICE_ACCOUNTS: usize = 16;
/// Longest service account entry (Istio's CRD and webhook).
const SERVICE_ACCOUNT_MAX_LEN: usize = 320;

/// pilotfish has no mesh config and so no extension providers; like Istio
/// with an unknown provider, it fails closed.
pub const CUSTOM_UNSUPPORTED: &str =
    "pilotfish has no extension providers: requests matching this CUSTOM policy's rules are denied";

pub fn check(s: &AuthorizationPolicySpec, f: &mut Findings) {
    policy::selection(
        s.selector.as_ref(),
        s.target_ref.as_ref(),
        &s.target_refs,
        f,
    );
    let action = s.action.unwrap_or_default();
    let rules = s.rules.as_deref().unwrap_or_default();
    let no_rules = rules.is_empty();
    if rules.len() > MAX_RULES {
        f.error(
            "spec.rules",
            format!("at most {MAX_RULES} rules are allowed"),
        );
    }
    match action {
        Action::Custom => {
            if no_rules {
                f.error(
                    "spec.rules",
                    "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
                );
            } else if s
                .provider
                .as_ref()
                .and_then(|p| p.name.as_deref())
                .is_none_or(str::is_empty)
            {
                f.error("spec.provider.name", "`provider.name` must not be empty");
            } else {
                f.warn("spec.provider.name", CUSTOM_UNSUPPORTED);
            }
        }
        _ if s.provider.is_some() => f.error(
            "spec.provider",
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                action.name()
            ),
        ),
        Action::Deny if no_rules => f.error(
            "spec.rules",
            "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        ),
        _ => {}
    }
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        let mut from_exists = false;
        let mut tcp_in_from = false;
        if let Some(from) = &rule.from {
            if from.is_empty() {
                f.error(format!("{path}.from"), "`from` must not be empty");
            }
            if from.len() > MAX_RULES {
                f.error(
                    format!("{path}.from"),
                    format!("at most {MAX_RULES} entries are allowed"),
                );
            }
            for (j, entry) in from.iter().enumerate() {
                let at = format!("{path}.from[{j}].source");
                match &entry.source {
                    None => f.error(at, "`from.source` must not be nil"),
                    Some(src) => {
                        from_exists = true;
                        tcp_in_from |= source(&at, src, action, f);
                    }
                }
            }
        }
        let mut to_exists = false;
        let mut tcp_in_to = false;
        if let Some(to) = &rule.to {
            if to.is_empty() {
                f.error(format!("{path}.to"), "`to` must not be empty");
            }
            for (j, entry) in to.iter().enumerate() {
                let at = format!("{path}.to[{j}].operation");
                match &entry.operation {
                    None => f.error(at, "`to.operation` must not be nil"),
                    Some(op) => {
                        to_exists = true;
                        tcp_in_to |= operation(&at, op, f);
                    }
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            condition(&format!("{path}.when[{j}]"), c, action, f);
        }
        if action == Action::Deny
            && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
        {
            f.warn(
                path,
                "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port",
            );
        }
    }
}

/// Checks one source; returns whether it uses attributes TCP traffic has.
fn source(path: &str, src: &Source, action: Action, f: &mut Findings) -> bool {
    let lists: [(&str, &Vec<String>); 14] = [
        ("principals", &src.principals),
        ("notPrincipals", &src.not_principals),
        ("requestPrincipals", &src.request_principals),
        ("notRequestPrincipals", &src.not_request_principals),
        ("namespaces", &src.namespaces),
        ("notNamespaces", &src.not_namespaces),
        ("ipBlocks", &src.ip_blocks),
        ("notIpBlocks", &src.not_ip_blocks),
        ("remoteIpBlocks", &src.remote_ip_blocks),
        ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
        ("serviceAccounts", &src.service_accounts),
        ("notServiceAccounts", &src.not_service_accounts),
        ("trustDomains", &src.trust_domains),
        ("notTrustDomains", &src.not_trust_domains),
    ];
    let identity = [
        &src.principals,
        &src.not_principals,
        &src.namespaces,
        &src.not_namespaces,
    ];
    let accounts = [&src.service_accounts, &src.not_service_accounts];
    if identity.iter().any(|l| !l.is_empty()) && accounts.iter().any(|l| !l.is_empty()) {
        f.error(
            path,
            "cannot set serviceAccounts with namespaces or principals",
        );
    }
    if lists
        .iter()
        .filter(|(name, _)| !name.to_ascii_lowercase().contains("trustdomains"))
        .all(|(_, l)| l.is_empty())
    {
        f.error(path, "`from.source` must not be empty");
    }
    for (name, list) in lists {
        let ip = name.to_ascii_lowercase().contains("ipblocks");
        let account = name.to_ascii_lowercase().contains("serviceaccounts");
        if account && list.len() > MAX_SERVICE_ACCOUNTS {
            f.error(
                format!("{path}.{name}"),
                format!("may not have more than {MAX_SERVICE_ACCOUNTS} values"),
            );
        }
        for (k, value) in list.iter().enumerate() {
            let at = format!("{path}.{name}[{k}]");
            if value.is_empty() {
                f.error(at, format!("empty value not allowed, found in {name}"));
            } else if ip {
                f.check(at, names::ip_or_cidr(value));
            } else if account {
                f.check(at, service_account(name, value));
            }
        }
    }
    if action == Action::Custom {
        for (name, list) in &lists[..6] {
            if !list.is_empty() {
                f.error(
                    format!("{path}.{name}"),
                    format!("{name} is currently not supported with CUSTOM action"),
                );
            }
        }
        for (name, list) in &lists[10..12] {
            if !list.is_empty() {
                f.error(
                    format!("{path}.{name}"),
                    format!("{name} is currently not supported with CUSTOM action"),
                );
            }
        }
    }
    // Peer identities, namespaces and addresses apply to TCP too; request
    // principals need HTTP (Istio leaves trust domains out as well).
    lists
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            !name.contains("requestprincipals") && !name.contains("trustdomains")
        })
        .any(|(_, l)| !l.is_empty())
}

/// Istio's `CheckServiceAccount` on one value: `sa` or `namespace/sa`.
fn service_account(list: &str, value: &str) -> Result<(), String> {
    let form = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
    if value.contains('*') {
        return Err(format!("wildcard not allowed, found in {list}"));
    }
    if value.len() > SERVICE_ACCOUNT_MAX_LEN {
        return Err(format!(
            "value cannot exceed {SERVICE_ACCOUNT_MAX_LEN} characters, found {value:?} in {list}"
        ));
    }
    match value.split_once('/') {
        Some((_, sa)) if sa.contains('/') => Err(format!("{form}, found {value:?} in {list}")),
        Some(("", _)) => Err(format!("{form}, found empty namespace {value:?} in {list}")),
        Some((_, "")) => Err(format!(
            "{form}, found empty serviceAccount {value:?} in {list}"
        )),
        _ => Ok(()),
    }
}

/// Checks one operation; returns whether it names ports (which TCP traffic has).
fn operation(path: &str, op: &Operation, f: &mut Findings) -> bool {
    let lists: [(&str, &Vec<String>); 8] = [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("ports", &op.ports),
        ("notPorts", &op.not_ports),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        f.error(path, "`to.operation` must not be empty");
    }
    for (name, list) in lists {
        for (k, value) in list.iter().enumerate() {
            let at = format!("{path}.{name}[{k}]");
            if value.is_empty() {
                f.error(at, format!("empty value not allowed, found in {name}"));
            } else if name.ends_with("orts") {
                f.check(at, port_value(value));
            } else if name.ends_with("aths") {
                f.check(at, path_template(name, value));
            }
        }
    }
    !op.ports.is_empty() || !op.not_ports.is_empty()
}

/// A port as a string, `0`..`65535` (Istio's `ValidatePorts`).
fn port_value(value: &str) -> Result<(), String> {
    match value.parse::<u32>() {
        Ok(p) if p <= 65535 && !value.starts_with('+') => Ok(()),
        _ => Err(format!("bad port ({value}): expected a number 0-65535")),
    }
}

/// Istio's `CheckValidPathTemplate`: `{*}` matches one segment, `{**}` any
/// number and must come last; no other braces; with a template, every
/// segment must be a valid path literal.
fn path_template(list: &str, path: &str) -> Result<(), String> {
    let templated = path.contains("{*}") || path.contains("{**}");
    let trimmed = path.trim_matches('/');
    let mut any_seen = false;
    for glob in trimmed.split('/') {
        match glob {
            "{*}" | "{**}" if any_seen => {
                return Err(format!(
                    "invalid or unsupported path {trimmed}, found in {list}. {{**}} is not the last operator"
                ));
            }
            "{*}" => continue,
            "{**}" => {
                any_seen = true;
                continue;
            }
            _ => {}
        }
        if glob.contains(['{', '}']) {
            return Err(format!(
                "invalid or unsupported path {trimmed}, found in {list}. Contains '{{' or '}}' beyond a supported path template"
            ));
        }
        let literal = !glob.is_empty()
            && glob
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b));
        if templated && !literal {
            return Err(format!(
                "invalid or unsupported path {trimmed}, found in {list}. Contains segment {glob} with invalid string literal"
            ));
        }
    }
    Ok(())
}

/// Istio's supported condition keys and what each value must be.
fn condition(path: &str, c: &Condition, action: Action, f: &mut Findings) {
    let key = c.key.as_str();
    if key.is_empty() {
        f.error(format!("{path}.key"), "`key` must not be empty");
        return;
    }
    if action == Action::Custom
        && (matches!(
            key,
            "source.namespace" | "source.serviceAccount" | "source.principal"
        ) || key.starts_with("request.auth."))
    {
        f.error(
            format!("{path}.key"),
            format!("{key} is currently not supported with CUSTOM action"),
        );
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        f.error(
            path,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        );
        return;
    }
    for (field, list) in [("values", &c.values), ("notValues", &c.not_values)] {
        if list.is_empty() {
            continue;
        }
        if let Err(e) = attribute(key, list) {
            let what = if field == "values" {
                "value"
            } else {
                "notValue"
            };
            f.error(
                format!("{path}.{field}"),
                format!("invalid `{what}` for `key` {key}: {e}"),
            );
        }
    }
}

/// Istio's `ValidateAttribute`: the key must be a supported attribute, and
/// the values of the right form for it.
fn attribute(key: &str, values: &[String]) -> Result<(), String> {
    if let Some(v) = values.iter().find(|v| v.is_empty()) {
        return Err(format!("empty value not allowed, found in {key} ({v:?})"));
    }
    let map_key = || {
        let open = key.find('[');
        if key.ends_with(']') && open.is_some_and(|o| o > 0 && o + 2 < key.len()) {
            Ok(())
        } else {
            Err(format!("bad key ({key}): should have format a[b]"))
        }
    };
    let ips = || values.iter().try_for_each(|v| names::ip_or_cidr(v));
    match key {
        k if k.starts_with("request.headers")
            || k.starts_with("request.experimental.inline.headers")
            || k.starts_with("request.auth.claims")
            || k.starts_with("experimental.envoy.filters.") =>
        {
            map_key()
        }
        "source.ip" | "remote.ip" | "destination.ip" => ips(),
        "source.serviceAccount" => values
            .iter()
            .try_for_each(|v| service_account("source.serviceAccount", v)),
        "destination.port" => values.iter().try_for_each(|v| port_value(v)),
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(()),
        "destination.namespace" => Err(format!(
            "attribute {key} is replaced by the metadata.namespace"
        )),
        k if k.starts_with("destination.labels") => Err(format!(
            "attribute {key} is replaced by the workload selector"
        )),
        "destination.name" | "destination.user" => Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        _ => Err(format!("unknown attribute: {key}")),
    }
}
