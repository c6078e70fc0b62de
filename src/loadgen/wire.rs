//! What the simulated Envoys read off the wire, kept cheap.
//!
//! The load generator runs on the same machine as the control plane it
//! measures, so it decodes only the fields it acts on: responses are decoded
//! into small prost messages whose resource bytes are zero-copy slices of
//! tonic's receive buffer, and a resource is looked inside only to find what
//! it makes Envoy ask for next (a Cluster's EDS name, a Listener's RDS route
//! table names). Field numbers are those of Envoy's v3 protos; every field
//! not declared here is skipped by prost.
//!
//! Decoded resources are cached by a hash of their bytes, so N proxies that
//! receive the same resource decode it once between them.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::xds::types::XdsType;

/// `type_url` of the HttpConnectionManager network filter config.
pub const HCM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// `envoy.config.cluster.v3.Cluster.DiscoveryType.EDS`.
const DISCOVERY_TYPE_EDS: i32 = 3;
/// Decoded resources kept before the cache is cleared: far more than the
/// distinct resources of any scenario, small enough to bound memory.
const CACHE_LIMIT: usize = 1 << 20;
/// Distinct SotW response sets kept (one per distinct proxy view and version).
const SET_CACHE_LIMIT: usize = 4096;

/// `google.protobuf.Any`, both fields kept as shared bytes.
#[derive(Clone, PartialEq, Message)]
pub struct LiteAny {
    #[prost(bytes = "bytes", tag = "1")]
    pub type_url: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `envoy.service.discovery.v3.DiscoveryResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct LiteResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<LiteAny>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `envoy.service.discovery.v3.Resource`.
#[derive(Clone, PartialEq, Message)]
pub struct LiteResource {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<LiteAny>,
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `envoy.service.discovery.v3.DeltaDiscoveryResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct LiteDeltaResponse {
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<LiteResource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// `envoy.config.cluster.v3.Cluster`: name, `type` (in the
/// `cluster_discovery_type` oneof) and `eds_cluster_config.service_name`.
#[derive(Clone, PartialEq, Message)]
struct LiteCluster {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, optional, tag = "2")]
    discovery_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<LiteEdsClusterConfig>,
}

#[derive(Clone, PartialEq, Message)]
struct LiteEdsClusterConfig {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// `envoy.config.listener.v3.Listener`: name, filter chains, default chain.
#[derive(Clone, PartialEq, Message)]
struct LiteListener {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "3")]
    filter_chains: Vec<LiteFilterChain>,
    #[prost(message, optional, tag = "25")]
    default_filter_chain: Option<LiteFilterChain>,
}

#[derive(Clone, PartialEq, Message)]
struct LiteFilterChain {
    #[prost(message, repeated, tag = "3")]
    filters: Vec<LiteFilter>,
}

/// `envoy.config.listener.v3.Filter`: `typed_config` is field 4.
#[derive(Clone, PartialEq, Message)]
struct LiteFilter {
    #[prost(message, optional, tag = "4")]
    typed_config: Option<LiteAny>,
}

/// `HttpConnectionManager`: `rds` (field 3 of the `route_specifier` oneof).
#[derive(Clone, PartialEq, Message)]
struct LiteHcm {
    #[prost(message, optional, tag = "3")]
    rds: Option<LiteRds>,
}

#[derive(Clone, PartialEq, Message)]
struct LiteRds {
    #[prost(string, tag = "2")]
    route_config_name: String,
}

/// `ClusterLoadAssignment.cluster_name` and `RouteConfiguration.name` are both field 1.
#[derive(Clone, PartialEq, Message)]
struct LiteNamed {
    #[prost(string, tag = "1")]
    name: String,
}

/// What one resource tells a proxy: its name and what it makes the proxy
/// request next (EDS names for a cluster, RDS names for a listener).
#[derive(Debug, Default)]
pub struct ResourceInfo {
    /// Empty for an opaque resource (one that did not decode as its type).
    pub name: Arc<str>,
    pub next: Vec<Arc<str>>,
}

impl ResourceInfo {
    pub fn opaque(&self) -> bool {
        self.name.is_empty()
    }
}

/// Decodes the parts of a resource the proxy acts on; None when the bytes are
/// not a resource of type `t` with a name (the floor server's opaque blobs).
fn inspect(t: XdsType, value: &[u8]) -> Option<(String, Vec<String>)> {
    let (name, next) = match t {
        XdsType::Cluster => {
            let c = LiteCluster::decode(value).ok()?;
            let next = match c.discovery_type {
                Some(DISCOVERY_TYPE_EDS) => {
                    let svc = c
                        .eds_cluster_config
                        .map(|e| e.service_name)
                        .filter(|s| !s.is_empty());
                    vec![svc.unwrap_or_else(|| c.name.clone())]
                }
                _ => Vec::new(),
            };
            (c.name, next)
        }
        XdsType::Listener => {
            let l = LiteListener::decode(value).ok()?;
            let mut next = Vec::new();
            for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                for f in &chain.filters {
                    let Some(any) = &f.typed_config else { continue };
                    if any.type_url.as_ref() != HCM_TYPE_URL.as_bytes() {
                        continue;
                    }
                    let hcm = LiteHcm::decode(any.value.clone()).ok()?;
                    if let Some(rds) = hcm.rds
                        && !rds.route_config_name.is_empty()
                        && !next.contains(&rds.route_config_name)
                    {
                        next.push(rds.route_config_name);
                    }
                }
            }
            (l.name, next)
        }
        XdsType::Endpoint | XdsType::Route => (LiteNamed::decode(value).ok()?.name, Vec::new()),
    };
    (!name.is_empty()).then_some((name, next))
}

/// What a whole SotW response tells a proxy.
#[derive(Debug, Default)]
pub struct SetInfo {
    /// Names of the resources that decoded (opaque ones have none).
    pub names: Vec<Arc<str>>,
    /// What the set leads to (EDS or RDS names), sorted, without duplicates.
    pub next: Arc<[Arc<str>]>,
}

/// Decoded resources and interned names, shared by every simulated proxy.
#[derive(Debug, Default)]
pub struct DecodeCache {
    resources: Mutex<HashMap<(XdsType, u64), Arc<ResourceInfo>>>,
    sets: Mutex<HashMap<(XdsType, u64), Arc<SetInfo>>>,
    names: Mutex<HashSet<Arc<str>>>,
}

impl DecodeCache {
    /// The info of a SotW response's resources of type `t`, decoded once per
    /// distinct set.
    pub fn set(&self, t: XdsType, resources: &[LiteAny]) -> Arc<SetInfo> {
        let hashes: Vec<u64> = resources
            .iter()
            .map(|r| xxhash_rust::xxh3::xxh3_64(&r.value))
            .collect();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for x in &hashes {
            h.update(&x.to_le_bytes());
        }
        let key = (t, h.digest());
        if let Some(hit) = lock(&self.sets).get(&key) {
            return Arc::clone(hit);
        }
        let mut names = Vec::with_capacity(resources.len());
        let mut next = std::collections::BTreeSet::new();
        for (r, hash) in resources.iter().zip(hashes) {
            let info = self.info_hashed(t, hash, &r.value);
            if !info.opaque() {
                names.push(Arc::clone(&info.name));
            }
            next.extend(info.next.iter().cloned());
        }
        let set = Arc::new(SetInfo {
            names,
            next: next.into_iter().collect(),
        });
        let mut map = lock(&self.sets);
        if map.len() >= SET_CACHE_LIMIT {
            map.clear();
        }
        map.insert(key, Arc::clone(&set));
        set
    }

    /// The info of the resource of type `t` whose `Any.value` is `value`.
    pub fn info(&self, t: XdsType, value: &[u8]) -> Arc<ResourceInfo> {
        self.info_hashed(t, xxhash_rust::xxh3::xxh3_64(value), value)
    }

    fn info_hashed(&self, t: XdsType, hash: u64, value: &[u8]) -> Arc<ResourceInfo> {
        let key = (t, hash);
        if let Some(hit) = lock(&self.resources).get(&key) {
            return Arc::clone(hit);
        }
        let info = Arc::new(match inspect(t, value) {
            Some((name, next)) => ResourceInfo {
                name: self.intern(&name),
                next: next.iter().map(|n| self.intern(n)).collect(),
            },
            None => ResourceInfo::default(),
        });
        let mut map = lock(&self.resources);
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(key, Arc::clone(&info));
        info
    }

    /// One shared copy of each name and version string.
    pub fn intern(&self, s: &str) -> Arc<str> {
        let mut names = lock(&self.names);
        if let Some(hit) = names.get(s) {
            return Arc::clone(hit);
        }
        let a: Arc<str> = Arc::from(s);
        names.insert(Arc::clone(&a));
        a
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A message as received, with its size on the wire (gRPC frame payload).
#[derive(Debug)]
pub struct Sized<M> {
    pub bytes: usize,
    pub msg: M,
}

/// prost codec that encodes full Envoy requests and decodes lite responses,
/// recording each response's encoded size.
#[derive(Debug)]
pub struct LiteCodec<Req, Resp>(PhantomData<(Req, Resp)>);

impl<Req, Resp> Default for LiteCodec<Req, Resp> {
    fn default() -> Self {
        LiteCodec(PhantomData)
    }
}

impl<Req, Resp> Codec for LiteCodec<Req, Resp>
where
    Req: Message + Send + 'static,
    Resp: Message + Default + Send + 'static,
{
    type Encode = Req;
    type Decode = Sized<Resp>;
    type Encoder = LiteEncoder<Req>;
    type Decoder = LiteDecoder<Resp>;

    fn encoder(&mut self) -> Self::Encoder {
        LiteEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        LiteDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct LiteEncoder<M>(PhantomData<M>);

impl<M: Message> Encoder for LiteEncoder<M> {
    type Item = M;
    type Error = Status;

    fn encode(&mut self, item: M, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encode request: {e}")))
    }
}

#[derive(Debug)]
pub struct LiteDecoder<M>(PhantomData<M>);

impl<M: Message + Default> Decoder for LiteDecoder<M> {
    type Item = Sized<M>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Sized<M>>, Status> {
        let bytes = src.remaining();
        let msg = M::decode(src).map_err(|e| Status::internal(format!("decode response: {e}")))?;
        Ok(Some(Sized { bytes, msg }))
    }
}
