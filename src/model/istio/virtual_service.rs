//! VirtualService: HTTP, TLS and TCP routing rules for a set of hosts.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    IstioStatus, Percent, PortSelector, StringMatch, StringMatchKind, at_most_one, field_path,
};

/// Istio `networking.v1.VirtualService` (the `spec` of a VirtualService).
// Clippy takes the keys repeated across `printcolumn(...)` lists for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    doc = "Istio VirtualService: HTTP, TLS and TCP routing rules for a set of hosts.",
    namespaced,
    plural = "virtualservices",
    shortname = "vs",
    category = "istio-io",
    category = "networking-istio-io",
    status = "IstioStatus",
    printcolumn(
        name = "Gateways",
        type_ = "string",
        json_path = ".spec.gateways",
        description = "The names of gateways and sidecars that should apply these routes"
    ),
    printcolumn(
        name = "Hosts",
        type_ = "string",
        json_path = ".spec.hosts",
        description = "The destination hosts to which traffic is being sent"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since the object was created"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Destination hosts the rules apply to (may use wildcard prefixes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Gateways and sidecars (`mesh`) that apply these routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// Namespaces this virtual service is visible to (`.`, `*` or names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

impl VirtualServiceSpec {
    /// Reports the first `oneof` group (anywhere in the spec) with more than
    /// one member set, with its field path, e.g. `http[0].match[1].uri: ...`.
    pub fn validate_one_of(&self) -> Result<(), String> {
        for (i, route) in self.http.iter().enumerate() {
            route.check_one_of(&format!("http[{i}]"))?;
        }
        Ok(())
    }
}

/// Istio `networking.v1.Destination`: a service (and optional subset and port) to send traffic to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service registry name or ServiceEntry host.
    pub host: String,
    /// Subset name defined in a DestinationRule for `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// Istio `networking.v1.HTTPRoute`: one ordered HTTP routing rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions (ORed) under which the rule applies; empty means always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Request timeout, a duration such as `"10s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: use `mirror_percentage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    /// Deprecated snake_case spelling of `mirrorPercent`, still accepted by the CRD.
    #[serde(rename = "mirror_percent", skip_serializing_if = "Option::is_none")]
    pub mirror_percent_snake: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

impl HttpRoute {
    /// Percentage of traffic to mirror to `mirror`, from `mirrorPercentage` or
    /// else one of the deprecated integer fields; `None` means Istio's default (100%).
    pub fn effective_mirror_percentage(&self) -> Option<f64> {
        self.mirror_percentage
            .as_ref()
            .map(|p| p.value)
            .or(self.mirror_percent.map(f64::from))
            .or(self.mirror_percent_snake.map(f64::from))
    }

    /// Reports the first `oneof` group in this route with more than one member set.
    pub fn validate_one_of(&self) -> Result<(), String> {
        self.check_one_of("")
    }

    fn check_one_of(&self, path: &str) -> Result<(), String> {
        at_most_one(
            path,
            &[
                ("route", !self.route.is_empty()),
                ("redirect", self.redirect.is_some()),
                ("directResponse", self.direct_response.is_some()),
            ],
        )?;
        at_most_one(
            path,
            &[
                ("mirror", self.mirror.is_some()),
                ("mirrors", !self.mirrors.is_empty()),
            ],
        )?;
        for (i, m) in self.r#match.iter().enumerate() {
            m.check_one_of(&field_path(path, &format!("match[{i}]")))?;
        }
        if let Some(redirect) = &self.redirect {
            redirect.check_one_of(&field_path(path, "redirect"))?;
        }
        if let Some(body) = self.direct_response.as_ref().and_then(|d| d.body.as_ref()) {
            body.check_one_of(&field_path(path, "directResponse.body"))?;
        }
        if let Some(fault) = &self.fault {
            if let Some(abort) = &fault.abort {
                abort.check_one_of(&field_path(path, "fault.abort"))?;
            }
            if let Some(delay) = &fault.delay {
                delay.check_one_of(&field_path(path, "fault.delay"))?;
            }
        }
        if let Some(cors) = &self.cors_policy {
            for (i, origin) in cors.allow_origins.iter().enumerate() {
                origin.check_one_of(&field_path(path, &format!("corsPolicy.allowOrigins[{i}]")))?;
            }
        }
        Ok(())
    }
}

/// Istio `networking.v1.Delegate`: another VirtualService that holds this route's rules.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Defaults to the namespace of the referring VirtualService.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Istio `networking.v1.Headers`: header edits for requests and responses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Istio `networking.v1.Headers.HeaderOperations`: set, append and remove headers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Append to these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Istio `networking.v1.TLSRoute`: routing for non-terminated TLS traffic, by SNI.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    pub r#match: Vec<TlsMatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Istio `networking.v1.TCPRoute`: routing for opaque TCP traffic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<L4MatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Istio `networking.v1.HTTPMatchRequest`: conditions (ANDed) an HTTP request must meet.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Lower-case header name to match; an empty match tests presence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    /// Headers that must not match for the rule to apply.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

impl HttpMatchRequest {
    /// Whether this match admits every request wherever its rule applies:
    /// no condition on the request (a `uri` of prefix `/` or regex `.*`
    /// counts as none) nor on the port, source or gateway. Istio turns it
    /// into a catch-all route, after which no rule of its VirtualService
    /// is routed.
    pub fn matches_every_request(&self) -> bool {
        let any_uri = self.uri.as_ref().is_none_or(|u| {
            matches!(
                u.kind(),
                None | Some(StringMatchKind::Prefix("/")) | Some(StringMatchKind::Regex(".*"))
            )
        });
        any_uri
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.without_headers.is_empty()
            && self.query_params.is_empty()
            && self.port.is_none()
            && self.source_labels.is_empty()
            && self.source_namespace.is_none()
            && self.gateways.is_empty()
    }

    fn check_one_of(&self, path: &str) -> Result<(), String> {
        let single = [
            ("uri", &self.uri),
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ];
        for (name, m) in single {
            if let Some(m) = m {
                m.check_one_of(&field_path(path, name))?;
            }
        }
        let maps = [
            ("headers", &self.headers),
            ("queryParams", &self.query_params),
            ("withoutHeaders", &self.without_headers),
        ];
        for (name, map) in maps {
            for (key, m) in map {
                m.check_one_of(&field_path(path, &format!("{name}[{key}]")))?;
            }
        }
        Ok(())
    }
}

/// Istio `networking.v1.HTTPRouteDestination`: a weighted HTTP destination.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    /// Relative share of traffic; weights of a route should sum to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Istio `networking.v1.RouteDestination`: a weighted TCP/TLS destination.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// Istio `networking.v1.L4MatchAttributes`: conditions on a TCP connection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// Istio `networking.v1.TLSMatchAttributes`: conditions on a TLS connection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI values to match (may use wildcard prefixes).
    pub sni_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// Istio `networking.v1.HTTPRedirect`: answer with a 3xx redirect.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// `oneof redirect_port`: a fixed port ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// ... or one derived from the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Defaults to 301.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
}

/// Enum view of the `port` / `derivePort` oneof of [`HttpRedirect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    Number(u32),
    Derive(RedirectPortSelection),
}

impl HttpRedirect {
    /// The redirect port, if set; when both members are set `port` wins
    /// (call [`HttpRedirect::validate_one_of`] to reject that).
    pub fn redirect_port(&self) -> Option<RedirectPort> {
        self.port
            .map(RedirectPort::Number)
            .or(self.derive_port.map(RedirectPort::Derive))
    }

    /// Fails if both `port` and `derivePort` are set.
    pub fn validate_one_of(&self) -> Result<(), String> {
        self.check_one_of("")
    }

    fn check_one_of(&self, path: &str) -> Result<(), String> {
        at_most_one(
            path,
            &[
                ("port", self.port.is_some()),
                ("derivePort", self.derive_port.is_some()),
            ],
        )
    }
}

/// Istio `networking.v1.HTTPRedirect.RedirectPortSelection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for http, 443 for https.
    #[default]
    FromProtocolDefault,
    /// The port the request arrived on.
    FromRequestPort,
}

/// Istio `networking.v1.HTTPDirectResponse`: answer with a fixed status and body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    pub status: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// Istio `networking.v1.HTTPBody`: a response body, as text or base64 bytes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// Base64-encoded body, kept encoded as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// Enum view of the `specifier` oneof of [`HttpBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpBodyKind<'a> {
    String(&'a str),
    /// Still base64-encoded.
    Bytes(&'a str),
}

impl HttpBody {
    /// The body, if set; when both members are set `string` wins.
    pub fn kind(&self) -> Option<HttpBodyKind<'_>> {
        if let Some(s) = &self.string {
            return Some(HttpBodyKind::String(s));
        }
        self.bytes.as_deref().map(HttpBodyKind::Bytes)
    }

    /// The `bytes` body decoded, if set. Like protobuf's JSON mapping (which
    /// Istio reads it with), standard and URL-safe base64 are accepted, with
    /// or without padding.
    pub fn decoded_bytes(&self) -> Option<Result<Vec<u8>, String>> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        let text = self.bytes.as_deref()?;
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok());
        Some(decoded.ok_or_else(|| format!("{text:?} is not valid base64")))
    }

    /// Fails if both `string` and `bytes` are set.
    pub fn validate_one_of(&self) -> Result<(), String> {
        self.check_one_of("")
    }

    fn check_one_of(&self, path: &str) -> Result<(), String> {
        at_most_one(
            path,
            &[
                ("string", self.string.is_some()),
                ("bytes", self.bytes.is_some()),
            ],
        )
    }
}

/// Istio `networking.v1.HTTPRewrite`: rewrite path and authority before forwarding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the path, or the matched prefix for prefix matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// Istio `networking.v1.RegexRewrite`: replace regex matches in the path.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#match: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
}

/// Istio `networking.v1.HTTPRetry`: retry policy for HTTP requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Number of retries; 0 disables retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Duration such as `"2s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Comma-separated Envoy retry conditions, e.g. `"5xx,connect-failure"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Minimum duration between retries, such as `"25ms"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Istio `networking.v1.CorsPolicy`: Cross-Origin Resource Sharing settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated: use `allow_origins`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Duration such as `"24h"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// Istio `networking.v1.CorsPolicy.UnmatchedPreflights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    /// Treated as `FORWARD`.
    #[default]
    Unspecified,
    Forward,
    Ignore,
}

/// Istio `networking.v1.HTTPFaultInjection`: delays and aborts injected client-side.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// Istio `networking.v1.HTTPFaultInjection.Delay`: delay before forwarding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// Deprecated: use `percentage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    /// Duration such as `"5s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<String>,
    /// Not supported by Istio yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Enum view of the `http_delay_type` oneof of [`FaultDelay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayKind<'a> {
    Fixed(&'a str),
    Exponential(&'a str),
}

impl FaultDelay {
    /// The delay, if set; when both members are set `fixedDelay` wins.
    pub fn kind(&self) -> Option<DelayKind<'_>> {
        if let Some(d) = &self.fixed_delay {
            return Some(DelayKind::Fixed(d));
        }
        self.exponential_delay
            .as_deref()
            .map(DelayKind::Exponential)
    }

    /// Share of requests to delay, from `percentage` or else the deprecated `percent`.
    pub fn effective_percentage(&self) -> Option<f64> {
        self.percentage
            .as_ref()
            .map(|p| p.value)
            .or(self.percent.map(f64::from))
    }

    /// Fails if both `fixedDelay` and `exponentialDelay` are set.
    pub fn validate_one_of(&self) -> Result<(), String> {
        self.check_one_of("")
    }

    fn check_one_of(&self, path: &str) -> Result<(), String> {
        at_most_one(
            path,
            &[
                ("fixedDelay", self.fixed_delay.is_some()),
                ("exponentialDelay", self.exponential_delay.is_some()),
            ],
        )
    }
}

/// Istio `networking.v1.HTTPFaultInjection.Abort`: fail requests with an error code.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// gRPC status name or number, e.g. `"UNAVAILABLE"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Not supported by Istio yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Enum view of the `error_type` oneof of [`FaultAbort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortKind<'a> {
    HttpStatus(i32),
    GrpcStatus(&'a str),
    Http2Error(&'a str),
}

impl FaultAbort {
    /// The error to return, if set; when several are set the first of
    /// httpStatus, grpcStatus, http2Error wins.
    pub fn kind(&self) -> Option<AbortKind<'_>> {
        if let Some(status) = self.http_status {
            return Some(AbortKind::HttpStatus(status));
        }
        if let Some(status) = &self.grpc_status {
            return Some(AbortKind::GrpcStatus(status));
        }
        self.http2_error.as_deref().map(AbortKind::Http2Error)
    }

    /// Fails if more than one of `httpStatus`, `grpcStatus`, `http2Error` is set.
    pub fn validate_one_of(&self) -> Result<(), String> {
        self.check_one_of("")
    }

    fn check_one_of(&self, path: &str) -> Result<(), String> {
        at_most_one(
            path,
            &[
                ("httpStatus", self.http_status.is_some()),
                ("grpcStatus", self.grpc_status.is_some()),
                ("http2Error", self.http2_error.is_some()),
            ],
        )
    }
}

/// Istio `networking.v1.HTTPMirrorPolicy`: one of several mirror destinations.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    pub destination: Destination,
    /// Share of traffic to mirror; `None` means 100%.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}
