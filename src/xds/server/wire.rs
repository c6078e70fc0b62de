//! gRPC framing of ADS responses from shared resource bytes.
//!
//! A response is a small per-stream head (gRPC frame header, version, type
//! URL, nonce, removed names) followed by the resources' shared bytes. Small
//! resources are coalesced into chunks of at most `COALESCE_LIMIT` so h2 does
//! not write one DATA frame per tiny resource; large ones are passed by
//! reference count, never copied. Nothing here outlives the write.

use bytes::{BufMut, Bytes, BytesMut};

use super::protocol::Push;
use crate::xds::encoded::{bytes_field_len, put_bytes_field};

/// Resources at least this large are sent as their own chunk, uncopied.
const ZERO_COPY_MIN: usize = 1024;
/// Coalesced chunks stop growing here (one h2 DATA frame's default size).
const COALESCE_LIMIT: usize = 16 * 1024;

/// Identifies pilotfish in `DiscoveryResponse.control_plane`.
const CONTROL_PLANE_ID: &str = "pilotfish";

/// Frames `push` as one gRPC message, as a list of chunks to write in order.
pub fn frame(push: &Push, delta: bool) -> Vec<Bytes> {
    let type_url = push.t.type_url();
    // Fields: SotW version_info=1, type_url=4, nonce=5, control_plane=6;
    // delta system_version_info=1, type_url=4, nonce=5, removed_resources=6.
    let mut head_len = bytes_field_len(1, push.version.len())
        + bytes_field_len(4, type_url.len())
        + bytes_field_len(5, push.nonce.len());
    let control_plane_len = bytes_field_len(1, CONTROL_PLANE_ID.len());
    if delta {
        head_len += push
            .removed
            .iter()
            .map(|r| bytes_field_len(6, r.len()))
            .sum::<usize>();
    } else {
        head_len += bytes_field_len(6, control_plane_len);
    }
    let body_len: usize = push
        .resources
        .iter()
        .map(|r| if delta { r.delta_len() } else { r.sotw.len() })
        .sum();

    // Small responses fit in one chunk; larger ones start a new one after the head.
    let whole = !push.whole_layers.is_empty();
    let head_cap = if whole {
        5 + head_len
    } else {
        (5 + head_len + body_len)
            .min(COALESCE_LIMIT)
            .max(5 + head_len)
    };
    let mut head = BytesMut::with_capacity(head_cap);
    head.put_u8(0); // not compressed
    head.put_u32((head_len + body_len) as u32);
    put_bytes_field(&mut head, 1, push.version.as_bytes());
    put_bytes_field(&mut head, 4, type_url.as_bytes());
    put_bytes_field(&mut head, 5, push.nonce.as_bytes());
    if delta {
        for r in &push.removed {
            put_bytes_field(&mut head, 6, r.as_bytes());
        }
    } else {
        prost::encoding::encode_key(6, prost::encoding::WireType::LengthDelimited, &mut head);
        prost::encoding::encode_varint(control_plane_len as u64, &mut head);
        put_bytes_field(&mut head, 1, CONTROL_PLANE_ID.as_bytes());
    }

    let mut chunks = Vec::with_capacity(1 + push.resources.len().min(64));
    if whole {
        // Whole layers: their shared blobs, nothing copied per stream.
        chunks.push(head.freeze());
        chunks.extend(
            push.whole_layers
                .iter()
                .map(|l| {
                    if delta {
                        l.delta_blob().clone()
                    } else {
                        l.sotw_blob().clone()
                    }
                })
                .filter(|b| !b.is_empty()),
        );
        return chunks;
    }
    let mut pending = head;
    let mut put = |bytes: Bytes, pending: &mut BytesMut| {
        if bytes.len() >= ZERO_COPY_MIN {
            if !pending.is_empty() {
                chunks.push(pending.split().freeze());
            }
            chunks.push(bytes);
        } else {
            if pending.capacity() - pending.len() < bytes.len() {
                if !pending.is_empty() {
                    chunks.push(pending.split().freeze());
                }
                // A fresh buffer per chunk, dropped once written: nothing is
                // kept per stream.
                *pending = BytesMut::with_capacity(COALESCE_LIMIT);
            }
            pending.put_slice(&bytes);
        }
    };
    for r in &push.resources {
        if delta {
            // The delta entry: its own small head, then the Any it shares
            // with the SotW entry.
            put(r.delta_head.clone(), &mut pending);
            put(r.any(), &mut pending);
        } else {
            put(r.sotw.clone(), &mut pending);
        }
    }
    if !pending.is_empty() {
        chunks.push(pending.freeze());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use prost::Message;

    use super::*;
    use crate::xds::encoded::Encoded;
    use crate::xds::types::XdsType;

    fn mk_push(sizes: &[usize]) -> Push {
        let resources = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let c = Cluster {
                    name: format!("c{i}"),
                    alt_stat_name: "x".repeat(*size),
                    ..Default::default()
                };
                Arc::new(Encoded::new(
                    XdsType::Cluster.type_url(),
                    c.name.clone(),
                    &c,
                ))
            })
            .collect();
        Push {
            t: XdsType::Cluster,
            version: "v1".into(),
            nonce: "7".into(),
            resources,
            removed: vec!["gone".into()],
            whole_layers: Vec::new(),
        }
    }

    fn join(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn sotw_frame_decodes() {
        let push = mk_push(&[10, 5000, 20, 30]);
        let chunks = frame(&push, false);
        let bytes = join(&chunks);
        assert_eq!(bytes[0], 0);
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len, bytes.len() - 5);
        let resp = DiscoveryResponse::decode(&bytes[5..]).unwrap();
        assert_eq!(resp.version_info, "v1");
        assert_eq!(resp.nonce, "7");
        assert_eq!(resp.type_url, XdsType::Cluster.type_url());
        assert_eq!(resp.resources.len(), 4);
        assert_eq!(resp.control_plane.unwrap().identifier, "pilotfish");
        // The large resource is shared, not copied.
        assert!(
            chunks
                .iter()
                .any(|c| c.as_ptr() == push.resources[1].sotw.as_ptr())
        );
    }

    #[test]
    fn delta_frame_decodes() {
        let push = mk_push(&[1, 2]);
        let bytes = join(&frame(&push, true));
        let resp = DeltaDiscoveryResponse::decode(&bytes[5..]).unwrap();
        assert_eq!(resp.system_version_info, "v1");
        assert_eq!(resp.resources.len(), 2);
        assert_eq!(resp.resources[1].name, "c1");
        assert_eq!(resp.removed_resources, vec!["gone".to_string()]);
    }

    #[test]
    fn whole_layers_are_written_from_their_shared_blob() {
        let mut push = mk_push(&[10, 20, 30]);
        let layer = Arc::new(crate::xds::cache::Layer::from_encoded(
            push.resources
                .iter()
                .map(|e| (e.name.to_string(), Arc::clone(e)))
                .collect(),
        ));
        push.whole_layers = vec![Arc::clone(&layer)];
        let chunks = frame(&push, false);
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[1].as_ptr(),
            layer.sotw_blob().as_ptr(),
            "shared, not copied"
        );
        let resp = DiscoveryResponse::decode(&join(&chunks)[5..]).unwrap();
        assert_eq!(resp.resources.len(), 3);
        assert_eq!(resp.nonce, "7");
    }

    #[test]
    fn whole_layers_are_written_from_their_shared_delta_blob() {
        let mut push = mk_push(&[10, 20, 30]);
        push.removed.clear();
        let layer = Arc::new(crate::xds::cache::Layer::from_encoded(
            push.resources
                .iter()
                .map(|e| (e.name.to_string(), Arc::clone(e)))
                .collect(),
        ));
        push.whole_layers = vec![Arc::clone(&layer)];
        let chunks = frame(&push, true);
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[1].as_ptr(),
            layer.delta_blob().as_ptr(),
            "shared, not copied"
        );
        let bytes = join(&chunks);
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len, bytes.len() - 5);
        let resp = DeltaDiscoveryResponse::decode(&bytes[5..]).unwrap();
        assert_eq!(resp.resources.len(), 3);
        assert_eq!(resp.resources[2].name, "c2");
        assert_eq!(resp.resources[2].version, push.resources[2].version);
        assert_eq!(resp.nonce, "7");
    }

    #[test]
    fn many_small_resources_are_coalesced() {
        let push = mk_push(&[100; 500]);
        let chunks = frame(&push, false);
        assert!(chunks.len() < 10, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= COALESCE_LIMIT + 200));
        let resp = DiscoveryResponse::decode(&join(&chunks)[5..]).unwrap();
        assert_eq!(resp.resources.len(), 500);
    }
}
