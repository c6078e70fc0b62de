//! Resources encoded once and shared by every stream that sends them.
//!
//! A resource is encoded to protobuf bytes exactly once per distinct content.
//! The bytes are kept as a `DiscoveryResponse.resources` entry; a
//! `DeltaDiscoveryResponse.resources` entry is a small head followed by the
//! same `Any` bytes (one copy of each resource, whichever variant a proxy
//! speaks). A push to N proxies writes N small per-stream headers and shares
//! the resource bytes by reference count: no per-stream copy, no per-stream
//! encode buffer that outlives the push.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// `DiscoveryResponse.resources` and `DeltaDiscoveryResponse.resources` field number.
const RESOURCES_FIELD: u32 = 2;

/// One encoded xDS resource.
#[derive(Debug)]
pub struct Encoded {
    /// Shared by every stream that tracks this resource (no per-stream copy).
    pub name: std::sync::Arc<str>,
    /// Content hash of the resource bytes, hex; equal bytes give equal versions.
    pub version: String,
    /// `google.protobuf.Any` as a SotW `resources` field (key, length, Any).
    pub sotw: Bytes,
    /// `envoy.service.discovery.v3.Resource` as a delta `resources` field,
    /// up to its `resource` (field 2) payload, which is [`Encoded::any`]:
    /// key and length of the entry, `version` (1), `name` (3), key and
    /// length of `resource`.
    pub delta_head: Bytes,
    /// Where the `Any` starts in `sotw`.
    any_start: usize,
}

impl Encoded {
    /// Encodes `msg` as an `Any` of `type_url` named `name`.
    pub fn new<M: Message>(type_url: &str, name: impl Into<String>, msg: &M) -> Self {
        let name: std::sync::Arc<str> = std::sync::Arc::from(name.into());
        let value = msg.encode_to_vec();
        let version = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&value));

        // Any { type_url = 1; value = 2; }
        let mut any = BytesMut::with_capacity(type_url.len() + value.len() + 16);
        put_bytes_field(&mut any, 1, type_url.as_bytes());
        put_bytes_field(&mut any, 2, &value);

        let mut sotw = BytesMut::with_capacity(any.len() + 8);
        put_bytes_field(&mut sotw, RESOURCES_FIELD, &any);
        let any_start = sotw.len() - any.len();

        // Resource { version = 1; resource = 2 (Any); name = 3; }, with the
        // Any last so the entry ends in the bytes `sotw` holds.
        let resource_len = bytes_field_len(1, version.len())
            + bytes_field_len(3, name.len())
            + bytes_field_len(2, any.len());
        let mut head = BytesMut::with_capacity(version.len() + name.len() + 24);
        encode_key(RESOURCES_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint(resource_len as u64, &mut head);
        put_bytes_field(&mut head, 1, version.as_bytes());
        put_bytes_field(&mut head, 3, name.as_bytes());
        encode_key(2, WireType::LengthDelimited, &mut head);
        encode_varint(any.len() as u64, &mut head);

        Encoded {
            name,
            version,
            sotw: sotw.freeze(),
            delta_head: head.freeze(),
            any_start,
        }
    }

    /// The `Any` (type URL and message bytes), shared with `sotw`.
    pub fn any(&self) -> Bytes {
        self.sotw.slice(self.any_start..)
    }

    /// Length of the delta `resources` entry (`delta_head` then `any`).
    pub fn delta_len(&self) -> usize {
        self.delta_head.len() + self.sotw.len() - self.any_start
    }

    /// The size of the bare resource (as Envoy's config dump would count it).
    pub fn size(&self) -> usize {
        self.sotw.len()
    }
}

/// Writes a length-delimited protobuf field.
pub fn put_bytes_field(buf: &mut impl BufMut, tag: u32, value: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

/// Encoded length of a length-delimited field of `len` payload bytes.
pub fn bytes_field_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    fn mk_cluster(name: &str) -> Cluster {
        Cluster {
            name: name.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn sotw_bytes_decode_as_discovery_response() {
        let a = Encoded::new(CDS, "a", &mk_cluster("a"));
        let b = Encoded::new(CDS, "b", &mk_cluster("b"));
        let mut buf = a.sotw.to_vec();
        buf.extend_from_slice(&b.sotw);
        let resp = DiscoveryResponse::decode(buf.as_slice()).unwrap();
        assert_eq!(resp.resources.len(), 2);
        assert_eq!(resp.resources[0].type_url, CDS);
        let c = Cluster::decode(resp.resources[1].value.as_slice()).unwrap();
        assert_eq!(c.name, "b");
    }

    #[test]
    fn delta_bytes_decode_as_delta_response() {
        let a = Encoded::new(CDS, "a", &mk_cluster("a"));
        let delta = [a.delta_head.as_ref(), a.any().as_ref()].concat();
        assert_eq!(delta.len(), a.delta_len());
        let resp = DeltaDiscoveryResponse::decode(delta.as_slice()).unwrap();
        assert_eq!(resp.resources.len(), 1);
        assert_eq!(resp.resources[0].name, "a");
        assert_eq!(resp.resources[0].version, a.version);
        let any = resp.resources[0].resource.as_ref().unwrap();
        assert_eq!(Cluster::decode(any.value.as_slice()).unwrap().name, "a");
    }

    #[test]
    fn version_is_content_hash() {
        let a1 = Encoded::new(CDS, "a", &mk_cluster("a"));
        let a2 = Encoded::new(CDS, "a", &mk_cluster("a"));
        let b = Encoded::new(CDS, "a", &mk_cluster("b"));
        assert_eq!(a1.version, a2.version);
        assert_ne!(a1.version, b.version);
    }
}
