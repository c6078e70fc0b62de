//! Envoy resources rendered as JSON (proto3 JSON mapping, `Any` expanded),
//! as Envoy's own config dump shows them. Used by /debug/config_dump and the
//! golden tests.
//!
//! The descriptors come from `proto/envoy-descriptors.bin`, a trimmed
//! FileDescriptorSet of the Envoy types pilotfish emits, cut from the one
//! envoy-types ships (`make descriptors` regenerates it).

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

static DESCRIPTORS: &[u8] = include_bytes!("../../proto/envoy-descriptors.bin");

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(DESCRIPTORS).map_err(|e| format!("bad descriptor set: {e}"))
});

/// Proto files whose messages pilotfish sends; their imports come along.
pub const ROOT_FILES: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/access_loggers/grpc/v3/als.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/filters/http/header_mutation/v3/header_mutation.proto",
    "envoy/extensions/filters/http/upstream_codec/v3/upstream_codec.proto",
    "envoy/config/metrics/v3/metrics_service.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/access_loggers/filters/cel/v3/cel.proto",
    "envoy/config/trace/v3/zipkin.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/transport_sockets/proxy_protocol/v3/upstream_proxy_protocol.proto",
    "envoy/extensions/clusters/dynamic_forward_proxy/v3/cluster.proto",
    "envoy/extensions/filters/http/dynamic_forward_proxy/v3/dynamic_forward_proxy.proto",
];

/// Renders one encoded message of `type_url` (`type.googleapis.com/NAME`) as JSON.
pub fn to_json(type_url: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
    let pool = POOL.as_ref().map_err(Clone::clone)?;
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let desc = pool
        .get_message_by_name(name)
        .ok_or_else(|| format!("no descriptor for {name}"))?;
    let msg = DynamicMessage::decode(desc, bytes).map_err(|e| format!("decode {name}: {e}"))?;
    let opts = SerializeOptions::new().skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| format!("render {name}: {e}"))
}

/// Renders a prost message as JSON.
pub fn message_json<M: prost::Name>(msg: &M) -> serde_json::Value {
    to_json(&M::type_url(), &msg.encode_to_vec())
        .unwrap_or_else(|e| serde_json::Value::String(format!("<{e}>")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    #[test]
    fn renders_cluster_json() {
        let c = Cluster {
            name: "outbound|9080||reviews.default.svc.cluster.local".into(),
            ..Default::default()
        };
        let v = message_json(&c);
        assert_eq!(
            v["name"],
            "outbound|9080||reviews.default.svc.cluster.local"
        );
    }

    /// Regenerates proto/envoy-descriptors.bin from envoy-types' full set:
    /// `ENVOY_TYPES_BIN=path/to/types.bin cargo test --lib regen_descriptors`.
    #[test]
    fn regen_descriptors() {
        use prost::Message;
        use std::collections::{BTreeSet, HashMap};
        let Ok(path) = std::env::var("ENVOY_TYPES_BIN") else {
            return;
        };
        let all = prost_types::FileDescriptorSet::decode(
            std::fs::read(&path).expect("read types.bin").as_slice(),
        )
        .expect("decode types.bin");
        let by_name: HashMap<&str, &prost_types::FileDescriptorProto> =
            all.file.iter().map(|f| (f.name(), f)).collect();
        let mut keep = BTreeSet::new();
        let mut todo: Vec<&str> = ROOT_FILES.to_vec();
        while let Some(f) = todo.pop() {
            if keep.insert(f.to_string()) {
                let fd = by_name.get(f).unwrap_or_else(|| panic!("{f} not in set"));
                todo.extend(fd.dependency.iter().map(String::as_str));
            }
        }
        // Keep dependency order (the full set is topologically sorted).
        let trimmed = prost_types::FileDescriptorSet {
            file: all
                .file
                .iter()
                .filter(|f| keep.contains(f.name()))
                .cloned()
                .collect(),
        };
        let out = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/envoy-descriptors.bin");
        std::fs::write(out, trimmed.encode_to_vec()).expect("write descriptors");
    }
}
