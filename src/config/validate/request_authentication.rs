//! Istio's RequestAuthentication rules: per JWT rule, an issuer (or a JWKS
//! URI), an http(s) JWKS URI exclusive with inline keys, and non-empty token
//! locations and claim mappings.

use super::findings::Findings;
use super::policy;
use crate::model::security::{JwtRule, RequestAuthenticationSpec};

/// Most JWT rules per resource (Istio's CRD).
const MAX_JWT_RULES: usize = 4096;
/// Longest JWKS URI (Istio's CRD).
const MAX_JWKS_URI: usize = 2048;
/// Most space-delimited claims per rule (Istio's CRD).
const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;

pub fn check(s: &RequestAuthenticationSpec, f: &mut Findings) {
    policy::selection(
        s.selector.as_ref(),
        s.target_ref.as_ref(),
        &s.target_refs,
        f,
    );
    if s.jwt_rules.len() > MAX_JWT_RULES {
        f.error(
            "spec.jwtRules",
            format!("at most {MAX_JWT_RULES} rules are allowed"),
        );
    }
    for (i, rule) in s.jwt_rules.iter().enumerate() {
        jwt_rule(&format!("spec.jwtRules[{i}]"), rule, f);
    }
}

fn non_empty_items(path: &str, items: &[String], what: &str, f: &mut Findings) {
    for (k, item) in items.iter().enumerate() {
        if item.is_empty() {
            f.error(
                format!("{path}[{k}]"),
                format!("{what} must be non-empty string"),
            );
        }
    }
}

fn jwt_rule(path: &str, rule: &JwtRule, f: &mut Findings) {
    let at = |field: &str| format!("{path}.{field}");
    let issuer = rule.issuer.as_deref().unwrap_or_default();
    let uri = rule.jwks_uri().unwrap_or_default();
    if rule.issuer.is_some() && issuer.is_empty() {
        f.error(at("issuer"), "issuer must be non-empty string");
    } else if issuer.is_empty() && uri.is_empty() {
        f.error(at("issuer"), "issuer or jwksUri must be non-empty string");
    }
    non_empty_items(&at("audiences"), &rule.audiences, "audience", f);
    let sources = usize::from(rule.jwks_uri.is_some())
        + usize::from(rule.jwks_uri_snake.is_some())
        + usize::from(rule.jwks.is_some());
    if sources > 1 {
        f.error(path, "only one of jwks or jwksUri can be set");
    }
    for (field, value) in [
        ("jwksUri", &rule.jwks_uri),
        ("jwks_uri", &rule.jwks_uri_snake),
    ] {
        if let Some(uri) = value {
            f.check(at(field), jwks_uri(uri));
        }
    }
    if let Some(jwks) = rule.jwks.as_deref().filter(|j| !j.is_empty()) {
        f.check(at("jwks"), jwks_document(jwks));
    }
    for (k, header) in rule.from_headers.iter().enumerate() {
        if header.name.is_empty() {
            f.error(
                format!("{path}.fromHeaders[{k}].name"),
                "location header name must be non-empty string",
            );
        }
    }
    non_empty_items(&at("fromParams"), &rule.from_params, "location query", f);
    non_empty_items(&at("fromCookies"), &rule.from_cookies, "cookie name", f);
    for (k, c) in rule.output_claim_to_headers.iter().enumerate() {
        let here = format!("{path}.outputClaimToHeaders[{k}]");
        if c.claim.is_empty() || c.header.is_empty() {
            f.error(
                here,
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
        } else if !c
            .header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            f.error(
                format!("{here}.header"),
                format!("header name {} is not a valid header name", c.header),
            );
        }
    }
    f.duration(at("timeout"), rule.timeout.as_deref());
    if rule.space_delimited_claims.len() > MAX_SPACE_DELIMITED_CLAIMS {
        f.error(
            at("spaceDelimitedClaims"),
            format!("at most {MAX_SPACE_DELIMITED_CLAIMS} claims are allowed"),
        );
    }
    non_empty_items(
        &at("spaceDelimitedClaims"),
        &rule.space_delimited_claims,
        "claim",
        f,
    );
}

/// Istio's `ParseJwksURI` and the CRD's rule: an `http://` or `https://`
/// URL with a host and, if given, a numeric port; 1-2048 characters.
fn jwks_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() || uri.len() > MAX_JWKS_URI {
        return Err(format!("must be 1-{MAX_JWKS_URI} characters"));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!(
            "url must have scheme http:// or https://, got {uri:?}"
        ));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(format!(
            "URI scheme {scheme:?} is not supported (http or https)"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, after)) => (h, after.strip_prefix(':')),
            None => return Err(format!("invalid IPv6 host in {uri:?}")),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in {uri:?}"));
    }
    if let Some(port) = port
        && !port.is_empty()
        && port.parse::<u16>().is_err()
    {
        return Err(format!("invalid port {port:?} in {uri:?}"));
    }
    Ok(())
}

/// An inline JWKS: a JSON key set (`{"keys": [...]}`) or a single key
/// (`{"kty": ...}`), as the JWK parser Istio uses accepts.
fn jwks_document(jwks: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(jwks).map_err(|e| format!("jwks parse error: {e}"))?;
    let keys: Vec<&serde_json::Value> = match (value.get("keys"), value.get("kty")) {
        (Some(serde_json::Value::Array(keys)), _) => keys.iter().collect(),
        (None, Some(_)) => vec![&value],
        _ => {
            return Err(
                "jwks parse error: expected a JSON key set {\"keys\": [...]} or a key with \"kty\""
                    .into(),
            );
        }
    };
    match keys
        .iter()
        .position(|k| !k.get("kty").is_some_and(|t| t.is_string()))
    {
        Some(i) => Err(format!("jwks parse error: key {i} has no \"kty\"")),
        None => Ok(()),
    }
}
