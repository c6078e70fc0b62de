//! The Envoy bootstrap for one workload's sidecar: who it is (node id and
//! metadata that name its WorkloadEntry), where pilotfish is (the ADS
//! cluster), and its admin address. Everything else comes over ADS.

use serde_json::json;

use super::translate::access_log::TELEMETRY_CLUSTER;
use crate::model::{DOMAIN_SUFFIX, WorkloadKey};

/// Name of the static cluster that points at pilotfish.
pub const XDS_CLUSTER: &str = "xds-grpc";

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// How often Envoy streams its stats to the metrics sink.
pub const STATS_FLUSH_SECS: u64 = 15;

/// A static HTTP/2 cluster that points at pilotfish.
fn pilotfish_cluster(name: &str, p: &BootstrapParams, xds_is_ip: bool) -> serde_json::Value {
    json!({
        "name": name,
        "type": if xds_is_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS: {
                "@type": format!("type.googleapis.com/{HTTP_OPTIONS}"),
                "explicit_http_config": {"http2_protocol_options": {
                    "connection_keepalive": {"interval": "30s", "timeout": "10s"},
                }},
            },
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": p.xds_host, "port_value": p.xds_port,
            }}}}]}],
        },
    })
}

/// What the bootstrap needs to know.
#[derive(Clone, Debug)]
pub struct BootstrapParams {
    pub workload: WorkloadKey,
    /// The workload's address, for the node id (Istio puts the pod IP there).
    pub ip: Option<String>,
    pub xds_host: String,
    pub xds_port: u16,
    pub admin_host: String,
    pub admin_port: u16,
    /// Use the delta (incremental) ADS variant.
    pub delta: bool,
    /// Stream Envoy's stats to pilotfish's MetricsService.
    pub metrics_sink: bool,
    /// TLS and a credential on the xDS connection; None for a plaintext port.
    pub security: Option<XdsSecurity>,
}

/// How a proxy authenticates pilotfish, and itself, on the xDS connection.
#[derive(Clone, Debug)]
pub struct XdsSecurity {
    /// PEM of the roots pilotfish's serving certificate chains to.
    pub roots_pem: String,
    /// pilotfish's SPIFFE identity, checked in its certificate.
    pub server_identity: String,
    /// Bearer token naming this workload (see `ca::token`); unused when
    /// `token_file` is set.
    pub token: String,
    /// Send the token in this file instead (a pod's projected ServiceAccount
    /// token), re-read when it is replaced.
    pub token_file: Option<TokenFile>,
}

/// A credential Envoy reads from a file (Kubernetes mode).
///
/// Envoy's own gRPC client has no way to read call metadata from a file
/// (`initial_metadata` is static; `GoogleGrpc` call credentials need
/// Envoy's Google gRPC client and an STS server or plugins), so the
/// pilotfish clusters carry an upstream `credential_injector` filter whose
/// generic credential is an SDS secret from a local file: Envoy adds
/// `authorization: Bearer <file contents>` to every request it sends to
/// pilotfish (ADS, access logs, metrics), and re-reads the token when the
/// kubelet swaps it (a move in the watched directory).
#[derive(Clone, Debug)]
pub struct TokenFile {
    /// The token, e.g. `/var/run/secrets/tokens/istio-token`.
    pub path: String,
    /// Where the SDS document pointing at `path` is written (Envoy reads a
    /// file-based SDS source from a file of its own).
    pub sds_path: String,
}

/// Name of the generic secret holding the token file's contents.
pub const TOKEN_SECRET: &str = "xds-token";

/// The SDS document (a DiscoveryResponse as Envoy reads it from a file)
/// that makes `token_file` the `xds-token` generic secret.
pub fn token_sds(t: &TokenFile) -> serde_json::Value {
    json!({"resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": TOKEN_SECRET,
        "generic_secret": {"secret": {"filename": t.path}},
    }]})
}

/// The upstream filter that adds the credential to a request to pilotfish.
fn credential_filter(sec: &XdsSecurity, bearer: &str) -> serde_json::Value {
    let Some(t) = &sec.token_file else {
        return json!({
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": [{"append": {
                    "header": {"key": "authorization", "value": bearer},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }}]},
            },
        });
    };
    let dir = std::path::Path::new(&t.path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| ".".into());
    json!({
        "name": "envoy.filters.http.credential_injector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": true,
            "credential": {
                "name": "envoy.http.injected_credentials.generic",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                    "header_value_prefix": "Bearer ",
                    "credential": {
                        "name": TOKEN_SECRET,
                        "sds_config": {"path_config_source": {
                            "path": t.sds_path,
                            // The kubelet swaps the token with a symlink
                            // move in its directory.
                            "watched_directory": {"path": dir},
                        }},
                    },
                },
            },
        },
    })
}

/// Istio's node id format: `sidecar~IP~NAME.NAMESPACE~NAMESPACE.svc.cluster.local`.
pub fn node_id(workload: &WorkloadKey, ip: Option<&str>) -> String {
    format!(
        "sidecar~{}~{}.{}~{}.{DOMAIN_SUFFIX}",
        ip.unwrap_or("0.0.0.0"),
        workload.name,
        workload.namespace,
        workload.namespace
    )
}

/// Makes a bootstrap an ingress gateway's: Istio's `router~` node id. The
/// proxy's resources follow from its workload's labels either way.
pub fn as_gateway(b: &mut serde_json::Value) {
    if let Some(id) = b["node"]["id"].as_str()
        && let Some(rest) = id.strip_prefix("sidecar~")
    {
        b["node"]["id"] = json!(format!("router~{rest}"));
    }
}

/// Makes a bootstrap a WorkloadGroup member's: node metadata
/// `AUTO_REGISTER_GROUP` and `INSTANCE_IPS`, as Istio's VM agent sends
/// them; pilotfish registers its WorkloadEntry when it connects.
pub fn as_group_member(b: &mut serde_json::Value, group: &str, ip: &str) {
    b["node"]["metadata"]["AUTO_REGISTER_GROUP"] = json!(group);
    b["node"]["metadata"]["INSTANCE_IPS"] = json!(ip);
}

/// Puts the workload's locality (`region/zone/subzone`) in the node, as
/// Istio's agent does: Envoy reports it and uses it for zone-aware routing.
/// (pilotfish shapes locality-balanced endpoints from the WorkloadEntry.)
pub fn set_locality(b: &mut serde_json::Value, locality: &str) {
    let mut parts = locality.splitn(3, '/');
    let mut node_locality = serde_json::Map::new();
    for key in ["region", "zone", "sub_zone"] {
        if let Some(v) = parts.next().filter(|v| !v.is_empty()) {
            node_locality.insert(key.to_string(), json!(v));
        }
    }
    if !node_locality.is_empty() {
        b["node"]["locality"] = serde_json::Value::Object(node_locality);
    }
}

/// The largest compiled RE2 program Envoy accepts in a regex match, as
/// Istio's bootstrap sets it.
pub const RE2_MAX_PROGRAM_SIZE: u32 = 32768;

/// The bootstrap as a JSON value (render with YAML or JSON).
pub fn bootstrap(p: &BootstrapParams) -> serde_json::Value {
    let xds_is_ip = p.xds_host.parse::<std::net::IpAddr>().is_ok();
    let mut b = json!({
        "node": {
            "id": node_id(&p.workload, p.ip.as_deref()),
            "cluster": format!("{}.{}", p.workload.name, p.workload.namespace),
            "metadata": {
                "NAMESPACE": p.workload.namespace,
                "WORKLOAD_NAME": p.workload.name,
                "INTERCEPTION_MODE": "NONE",
                "PILOTFISH_XDS_MODE": if p.delta { "delta" } else { "sotw" },
            },
        },
        "admin": {
            "address": {"socket_address": {"address": p.admin_host, "port_value": p.admin_port}},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": if p.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": true,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                pilotfish_cluster(XDS_CLUSTER, p, xds_is_ip),
                pilotfish_cluster(TELEMETRY_CLUSTER, p, xds_is_ip),
            ],
        },
        // Istio's bootstrap raises Envoy's RE2 program-size limit (100 by
        // default) so VirtualService regexes its validation accepts are
        // served: one ordinary `[a-z]{200}` would otherwise get the shared
        // route table NACKed for every service. The admin layer keeps
        // `/runtime_modify` working.
        "layered_runtime": {
            "layers": [
                {"name": "pilotfish", "static_layer": {
                    "re2.max_program_size.error_level": RE2_MAX_PROGRAM_SIZE,
                    "re2.max_program_size.warn_level": 1024,
                }},
                {"name": "admin", "admin_layer": {}},
            ],
        },
    });
    if p.metrics_sink {
        // Envoy's own stats, streamed to pilotfish's MetricsService sink.
        b["stats_sinks"] = json!([{
            "name": "envoy.stat_sinks.metrics_service",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
                "transport_api_version": "V3",
                "report_counters_as_deltas": true,
                "emit_tags_as_labels": true,
                // Many small messages rather than one over gRPC's size limit.
                "batch_size": 1000,
                "grpc_service": {"envoy_grpc": {"cluster_name": TELEMETRY_CLUSTER}},
            },
        }]);
        b["stats_flush_interval"] = json!(format!("{}s", STATS_FLUSH_SECS));
    }
    if let Some(ip) = &p.ip {
        // Connections the sidecar opens leave from the workload's own
        // address (as from a pod IP), so the receiving side can tell who sent them.
        b["cluster_manager"] = json!({"upstream_bind_config": {"source_address": {
            "address": ip, "port_value": 0,
        }}});
    }
    if let Some(sec) = &p.security {
        let bearer = format!("Bearer {}", sec.token);
        if sec.token_file.is_none() {
            b["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"] =
                json!([{"key": "authorization", "value": bearer}]);
        }
        let tls = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {
                        "trusted_ca": {"inline_string": sec.roots_pem},
                        "match_typed_subject_alt_names": [{
                            "san_type": "URI",
                            "matcher": {"exact": sec.server_identity},
                        }],
                    },
                },
            },
        });
        for c in 0..2 {
            b["static_resources"]["clusters"][c]["transport_socket"] = tls.clone();
        }
        // Access-log and metrics streams are configured in LDS and shared by
        // many proxies, so they cannot carry this proxy's credential: the
        // telemetry cluster adds it to every request it sends to pilotfish
        // (and so does the xDS cluster when the token is read from a file).
        let filters = json!([
            credential_filter(sec, &bearer),
            {
                "name": "envoy.filters.http.upstream_codec",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec",
                },
            },
        ]);
        let clusters = if sec.token_file.is_some() { 0..2 } else { 1..2 };
        for c in clusters {
            b["static_resources"]["clusters"][c]["typed_extension_protocol_options"]
                [HTTP_OPTIONS]["http_filters"] = filters.clone();
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_params(delta: bool) -> BootstrapParams {
        BootstrapParams {
            workload: WorkloadKey {
                namespace: "default".into(),
                name: "reviews-v1".into(),
            },
            ip: Some("127.0.0.5".into()),
            xds_host: "127.0.0.1".into(),
            xds_port: 15010,
            admin_host: "127.0.0.1".into(),
            admin_port: 15000,
            delta,
            metrics_sink: true,
            security: Some(XdsSecurity {
                roots_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
                server_identity: "spiffe://cluster.local/ns/istio-system/sa/pilotfish".into(),
                token: "abc.def".into(),
                token_file: None,
            }),
        }
    }

    #[test]
    fn node_identity_and_ads() {
        let b = bootstrap(&mk_params(false));
        assert_eq!(
            b["node"]["id"],
            "sidecar~127.0.0.5~reviews-v1.default~default.svc.cluster.local"
        );
        assert_eq!(b["node"]["metadata"]["WORKLOAD_NAME"], "reviews-v1");
        assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        let d = bootstrap(&mk_params(true));
        assert_eq!(
            d["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
    }

    #[test]
    fn locality_goes_into_the_node() {
        let mut b = bootstrap(&mk_params(false));
        set_locality(&mut b, "region1/zone1/sub1");
        assert_eq!(
            b["node"]["locality"],
            json!({"region": "region1", "zone": "zone1", "sub_zone": "sub1"})
        );
        let mut b = bootstrap(&mk_params(false));
        set_locality(&mut b, "region2");
        assert_eq!(b["node"]["locality"], json!({"region": "region2"}));
    }

    #[test]
    fn gateway_bootstrap_has_istios_router_node_id() {
        let mut b = bootstrap(&mk_params(false));
        as_gateway(&mut b);
        assert_eq!(
            b["node"]["id"],
            "router~127.0.0.5~reviews-v1.default~default.svc.cluster.local"
        );
        assert_eq!(b["node"]["metadata"]["WORKLOAD_NAME"], "reviews-v1");
    }

    #[test]
    fn bootstrap_is_a_valid_envoy_bootstrap_message() {
        // Parse through the Envoy descriptors: unknown fields would fail.
        let b = bootstrap(&mk_params(false));
        let pool = prost_reflect::DescriptorPool::decode(
            include_bytes!("../../proto/envoy-descriptors.bin").as_ref(),
        )
        .unwrap();
        let desc = pool
            .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
            .unwrap();
        let msg = prost_reflect::DynamicMessage::deserialize(desc, b).unwrap();
        assert!(msg.has_field_by_name("node"));
    }

    #[test]
    fn a_token_file_is_injected_into_every_request_to_pilotfish() {
        let mut p = mk_params(false);
        if let Some(s) = p.security.as_mut() {
            s.token_file = Some(TokenFile {
                path: "/var/run/secrets/tokens/istio-token".into(),
                sds_path: "/etc/pilotfish/xds-token-sds.json".into(),
            });
        }
        let b = bootstrap(&p);
        let text = b.to_string();
        assert!(!text.contains("abc.def"), "no signed token: {text}");
        assert!(
            b["dynamic_resources"]["ads_config"]["grpc_services"][0]
                .get("initial_metadata")
                .is_none()
        );
        for c in 0..2 {
            let f = &b["static_resources"]["clusters"][c]["typed_extension_protocol_options"]
                [HTTP_OPTIONS]["http_filters"][0];
            assert_eq!(f["name"], "envoy.filters.http.credential_injector");
            let cred = &f["typed_config"]["credential"]["typed_config"]["credential"];
            assert_eq!(cred["name"], TOKEN_SECRET);
            assert_eq!(
                cred["sds_config"]["path_config_source"]["watched_directory"]["path"],
                "/var/run/secrets/tokens"
            );
        }
        let sds = token_sds(p.security.as_ref().unwrap().token_file.as_ref().unwrap());
        assert_eq!(
            sds["resources"][0]["generic_secret"]["secret"]["filename"],
            "/var/run/secrets/tokens/istio-token"
        );
    }
}
