//! Mutual TLS between sidecars: the SDS secrets each proxy uses, the client
//! side (auto mTLS toward workloads that run a sidecar), the server side
//! (PeerAuthentication: STRICT, PERMISSIVE, DISABLE), as Istio sets them up.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChainMatch, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value::Kind};

use super::{Mesh, ads_config_source, any};
use crate::model::registry::{Endpoint, Service, Workload};
use crate::model::security::MtlsMode;

/// SDS name of a workload's key pair, and of the trust bundle (Istio's names).
pub const SDS_CERT: &str = "default";
pub const SDS_ROOT: &str = "ROOTCA";
/// The endpoint label that says the workload runs a sidecar (set by Istio's
/// injector on pods; on WorkloadEntries by their author).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Metadata key Envoy matches `transport_socket_matches` against.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// ALPN values that mark mesh mTLS, so a PERMISSIVE listener tells it apart
/// from an application's own TLS.
const MESH_ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];
const SERVER_ALPN: [&str; 5] = [
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
/// Istio's root namespace: PeerAuthentication there without a selector is mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads_config_source()),
    }
}

/// The SPIFFE identity of a workload or endpoint with service account `sa`.
pub fn spiffe(trust_domain: &str, namespace: &str, sa: Option<&str>) -> String {
    format!(
        "spiffe://{trust_domain}/ns/{namespace}/sa/{}",
        sa.filter(|s| !s.is_empty()).unwrap_or("default")
    )
}

/// Whether an endpoint runs a sidecar that speaks mesh mTLS.
pub fn has_sidecar(e: &Endpoint) -> bool {
    e.labels.get(TLS_MODE_LABEL).is_some_and(|v| v == "istio")
}

/// Envoy metadata marking an endpoint as mTLS-capable (see `TRANSPORT_SOCKET_MATCH`).
pub fn endpoint_metadata() -> envoy_types::pb::envoy::config::core::v3::Metadata {
    let mut fields = std::collections::HashMap::new();
    fields.insert(
        "tlsMode".to_string(),
        Value {
            kind: Some(Kind::StringValue("istio".into())),
        },
    );
    let mut m = envoy_types::pb::envoy::config::core::v3::Metadata::default();
    m.filter_metadata
        .insert(TRANSPORT_SOCKET_MATCH.to_string(), Struct { fields });
    m
}

/// Exact URI SAN matchers: the peer must carry one of these SPIFFE identities.
pub fn uri_san_matchers<'a>(
    sans: impl IntoIterator<Item = &'a String>,
) -> Vec<SubjectAltNameMatcher> {
    sans.into_iter()
        .map(|s| SubjectAltNameMatcher {
            san_type: SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(s.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// The client side of mesh mTLS toward `sans` (SPIFFE identities).
pub fn upstream_socket(sans: &BTreeSet<String>, sni: &str) -> TransportSocket {
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(SDS_CERT)],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: uri_san_matchers(sans),
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(SDS_ROOT)),
                    ..Default::default()
                },
            )),
            alpn_protocols: MESH_ALPN.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        sni: sni.to_string(),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

fn raw_buffer() -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &RawBuffer::default(),
        ))),
    }
}

/// Auto mTLS (Istio's default): endpoints labelled as running a sidecar are
/// reached over mTLS, others in plaintext.
pub fn auto_mtls_matches(sans: &BTreeSet<String>, sni: &str) -> Vec<TransportSocketMatch> {
    let mut m = std::collections::HashMap::new();
    m.insert(
        "tlsMode".to_string(),
        Value {
            kind: Some(Kind::StringValue("istio".into())),
        },
    );
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(Struct { fields: m }),
            transport_socket: Some(upstream_socket(sans, sni)),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Struct::default()),
            transport_socket: Some(raw_buffer()),
        },
    ]
}

/// The identities a client should accept from `svc`'s endpoints (matching `labels`).
pub fn service_sans(
    trust_domain: &str,
    svc: &Service,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> BTreeSet<String> {
    svc.endpoints
        .iter()
        .filter(|e| labels.is_none_or(|l| l.iter().all(|(k, v)| e.labels.get(k) == Some(v))))
        .filter(|e| has_sidecar(e))
        .map(|e| spiffe(trust_domain, &svc.namespace, e.service_account.as_deref()))
        .collect()
}

/// Istio's SNI for a mesh cluster: `outbound_.PORT_.SUBSET_.HOST`.
pub fn sni(port: u32, subset: &str, hostname: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{hostname}")
}

/// The PeerAuthentication mode for `workload` on `port`: a policy selecting
/// the workload (its port-level setting first), else its namespace's, else
/// the mesh-wide one; UNSET inherits; the default is PERMISSIVE.
pub fn peer_mode(mesh: &Mesh<'_>, workload: &Workload, port: u32) -> MtlsMode {
    let mut workload_mode = None;
    let mut namespace_mode = None;
    let mut mesh_mode = None;
    for (r, spec) in mesh.config.peer_authentications() {
        let selector = spec
            .selector
            .as_ref()
            .filter(|s| !s.match_labels.is_empty());
        let mode = spec
            .mtls
            .as_ref()
            .and_then(|m| m.mode)
            .filter(|m| *m != MtlsMode::Unset);
        match selector {
            Some(sel) if r.namespace == workload.key.namespace => {
                let selected = sel
                    .match_labels
                    .iter()
                    .all(|(k, v)| workload.labels.get(k) == Some(v));
                if selected && workload_mode.is_none() {
                    let port_mode = spec
                        .port_level_mtls
                        .get(&port.to_string())
                        .and_then(|m| m.mode)
                        .filter(|m| *m != MtlsMode::Unset);
                    workload_mode = port_mode.or(mode).map(Some).unwrap_or(None);
                }
            }
            Some(_) => {}
            None if r.namespace == workload.key.namespace => {
                namespace_mode = namespace_mode.or(mode);
            }
            None if r.namespace == ROOT_NAMESPACE => mesh_mode = mesh_mode.or(mode),
            None => {}
        }
    }
    workload_mode
        .or(namespace_mode)
        .or(mesh_mode)
        .unwrap_or(MtlsMode::Permissive)
}

/// The server side of mesh mTLS: require a client certificate from our CA.
pub fn downstream_socket() -> TransportSocket {
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(SDS_CERT)],
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                sds(SDS_ROOT),
            )),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

/// Matches mesh mTLS connections on a PERMISSIVE listener.
pub fn mtls_chain_match() -> FilterChainMatch {
    FilterChainMatch {
        transport_protocol: "tls".into(),
        application_protocols: SERVER_ALPN.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Tells TLS from plaintext (and reads ALPN) before a filter chain is chosen.
pub fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}
