//! RequestAuthentication on a sidecar's inbound HTTP listeners, as Envoy's
//! `envoy.filters.http.jwt_authn`, with Istio's semantics: a request with an
//! invalid token (bad signature, expired, wrong audience or issuer) gets
//! 401; a request without a token passes authentication, and an
//! AuthorizationPolicy (`requestPrincipals`, `request.auth.*`) decides.
//!
//! Every RequestAuthentication that selects the workload contributes its
//! `jwtRules` as providers of one filter. The verified payload is kept in
//! dynamic metadata (`PAYLOAD_METADATA_KEY`), where the RBAC filters that
//! follow match request principals (`iss/sub`) and claims.
//!
//! Keys: inline `jwks`; `jwksUri` through the outbound cluster of a
//! ServiceEntry for the URI's host and port (Envoy fetches and caches the
//! keys; for `https` the cluster needs TLS, e.g. a DestinationRule with
//! `tls.mode: SIMPLE`). A `jwksUri` with no such cluster gets keys that
//! verify nothing, so tokens of that issuer are rejected (fail closed, as
//! Istio does when it cannot fetch the keys).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{DataSource, HttpUri, data_source, http_uri};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match::PathSpecifier};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementOrList, RemoteJwks, RequirementRule, jwt_provider, jwt_requirement,
    requirement_rule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, Empty};
use prost::Message;

use super::{Mesh, duration, outbound_cluster_name};
use crate::model::Resource;
use crate::model::registry::Workload;
use crate::model::security::{JwtPresence, JwtRule, RequestAuthenticationSpec};

pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
/// The key under `envoy.filters.http.jwt_authn` dynamic metadata that holds
/// a verified token's payload (the same for every provider: a request is
/// authenticated by one token).
pub const PAYLOAD_METADATA_KEY: &str = "payload";
/// Claims Istio always treats as space-delimited lists (RFC 8693 `scope`).
const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];
/// Istio's default timeout for fetching a remote JWKS.
const JWKS_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long Envoy keeps fetched keys (Istio's default refresh interval).
const JWKS_CACHE_DURATION: std::time::Duration = std::time::Duration::from_secs(20 * 60);
/// A JWKS with one RSA public key whose private key nobody has: used when
/// an issuer's keys cannot be reached, so that its tokens fail to verify.
const UNVERIFIABLE_JWKS: &str = r#"{"keys":[{"kty":"RSA","alg":"RS256","kid":"pilotfish-unverifiable","e":"AQAB","n":"-9txeu-Ubrixoao7M0bPTalaHpxtTqmIjlSTKikVRIARKXf9FlAdNutcXerRshHEJPZlXhZNLuWB960xZdV7DUEjlakzEuJOTvdUt72hxNkRkSgVoKhRXsJvqfueRu7FSwOetz11c2VL5lOz8HfFOzrC7n524jheMJjpz-6oTOjBKPlJfsW_hJKhWGJ_y3CJGoU5tF8_8_7JYVV6gaKN8tL17OWFhpLrgUC5pEPuwajceNSMvetai1EOh5ohVbFDHk2WxBVqMtkqG7wRYqLBv6Yl3ywV3Qo9EiIQlrQxzVllSy8JzBOMBMy6BYn1qzVMvGtT4QHFkmHCFmknqzKRIQ"}]}"#;

/// The RequestAuthentications that apply to `workload`, by namespace and name.
pub fn policies_for<'a>(
    config: &'a crate::model::ConfigSnapshot,
    workload: &Workload,
) -> Vec<(&'a Resource, &'a RequestAuthenticationSpec)> {
    config
        .request_authentications()
        .filter(|(r, s)| {
            let has_target = s.target_ref.is_some() || !s.target_refs.is_empty();
            super::authz::selects(r, s.selector.as_ref(), has_target, workload)
        })
        .collect()
}

/// The `jwt_authn` filter for an inbound HTTP port, when any jwtRule applies.
pub fn http_filter(
    mesh: &Mesh<'_>,
    policies: &[(&Resource, &RequestAuthenticationSpec)],
) -> Option<HttpFilter> {
    let rules: Vec<&JwtRule> = policies
        .iter()
        .flat_map(|(_, s)| s.jwt_rules.iter())
        .collect();
    if rules.is_empty() {
        return None;
    }
    // Istio's provider names: `origins-N`, in policy then rule order.
    let providers: BTreeMap<String, JwtProvider> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("origins-{i}"), provider(mesh, r)))
        .collect();
    let mut requirements: Vec<JwtRequirement> = providers
        .keys()
        .map(|name| requirement(jwt_requirement::RequiresType::ProviderName(name.clone())))
        .collect();
    // No token passes unless a rule says a token is required.
    if !rules
        .iter()
        .any(|r| r.presence == Some(JwtPresence::Required))
    {
        requirements.push(requirement(jwt_requirement::RequiresType::AllowMissing(
            Empty {},
        )));
    }
    let base = JwtAuthentication {
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                ..Default::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(requirement(
                jwt_requirement::RequiresType::RequiresAny(JwtRequirementOrList { requirements }),
            ))),
        }],
        // CORS preflights carry no token (Istio sets this too).
        bypass_cors_preflight: true,
        ..Default::default()
    };
    let mut value = base.encode_to_vec();
    SortedProviders {
        providers: providers
            .into_iter()
            .map(|(key, value)| ProviderEntry {
                key,
                value: Some(value),
            })
            .collect(),
    }
    .encode(&mut value)
    .ok()?;
    Some(HttpFilter {
        name: JWT_AUTHN.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: <JwtAuthentication as prost::Name>::type_url(),
            value,
        })),
        ..Default::default()
    })
}

/// `JwtAuthentication.providers` (field 1) as a list sorted by name: the
/// same wire format as the map, in a stable order (a `HashMap` would encode
/// differently on each translation, which the cache would see as a change).
/// Its bytes are appended to the rest of the message (protobuf merges).
#[derive(Clone, PartialEq, prost::Message)]
struct SortedProviders {
    #[prost(message, repeated, tag = "1")]
    providers: Vec<ProviderEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProviderEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<JwtProvider>,
}

fn requirement(t: jwt_requirement::RequiresType) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(t),
    }
}

fn provider(mesh: &Mesh<'_>, r: &JwtRule) -> JwtProvider {
    let mut claims: Vec<String> = SPACE_DELIMITED_CLAIMS.map(str::to_string).to_vec();
    for c in &r.space_delimited_claims {
        if !claims.contains(c) {
            claims.push(c.clone());
        }
    }
    JwtProvider {
        issuer: r.issuer.clone().unwrap_or_default(),
        audiences: r.audiences.clone(),
        forward: r.forward_original_token.unwrap_or(false),
        from_headers: r
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone().unwrap_or_default(),
            })
            .collect(),
        from_params: r.from_params.clone(),
        from_cookies: r.from_cookies.clone(),
        forward_payload_header: r.output_payload_to_header.clone().unwrap_or_default(),
        payload_in_metadata: PAYLOAD_METADATA_KEY.to_string(),
        normalize_payload_in_metadata: Some(jwt_provider::NormalizePayload {
            space_delimited_claims: claims,
        }),
        claim_to_headers: r
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        jwks_source_specifier: Some(jwks(mesh, r)),
        ..Default::default()
    }
}

fn inline(jwks: &str) -> jwt_provider::JwksSourceSpecifier {
    jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
        specifier: Some(data_source::Specifier::InlineString(jwks.to_string())),
        ..Default::default()
    })
}

/// Inline keys, or the remote JWKS through a mesh cluster (see the module doc).
fn jwks(mesh: &Mesh<'_>, r: &JwtRule) -> jwt_provider::JwksSourceSpecifier {
    if let Some(j) = &r.jwks {
        return inline(j);
    }
    let Some(uri) = r.jwks_uri() else {
        return inline(UNVERIFIABLE_JWKS);
    };
    let Some(cluster) = jwks_cluster(mesh, uri) else {
        return inline(UNVERIFIABLE_JWKS);
    };
    let timeout = r
        .timeout
        .as_deref()
        .and_then(|t| crate::model::istio::parse_duration(t).ok())
        .unwrap_or(JWKS_FETCH_TIMEOUT);
    jwt_provider::JwksSourceSpecifier::RemoteJwks(RemoteJwks {
        http_uri: Some(HttpUri {
            uri: uri.to_string(),
            timeout: Some(duration(timeout)),
            http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster)),
        }),
        cache_duration: Some(duration(JWKS_CACHE_DURATION)),
        ..Default::default()
    })
}

/// The outbound cluster of the ServiceEntry port serving `uri`
/// (`scheme://host[:port]/...`; the default port follows the scheme).
pub fn jwks_cluster(mesh: &Mesh<'_>, uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, p.parse().ok()?)
        }
        _ => (authority, if scheme == "https" { 443 } else { 80 }),
    };
    let svc = mesh.registry.services.get(host)?;
    svc.port(port)?;
    Some(outbound_cluster_name(port, "", &svc.hostname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverifiable_jwks_is_json_with_one_key() {
        let v: serde_json::Value = serde_json::from_str(UNVERIFIABLE_JWKS).unwrap();
        assert_eq!(v["keys"].as_array().map(Vec::len), Some(1));
    }
}
