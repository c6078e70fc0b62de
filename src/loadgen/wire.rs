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
//! Secrets: a cluster's or listener's transport socket whose TLS context
//! names SDS secrets makes Envoy request them over ADS; the loadgen does too.
//!
//! Decoded resources are cached by a hash of their bytes, so N proxies that
//! receive the same resource decode it once between them.

use std::collections::{BTreeSet, HashMap, HashSet};
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

/// `envoy.service.discovery.v3.DiscoveryRequest` as a simulated Envoy sends
/// it, with `resource_names` (field 3) already encoded: a SotW ACK repeats
/// the whole subscription (thousands of EDS names), and building and
/// encoding those strings anew for every ACK of every proxy would charge
/// the loadgen's cost to the control plane it shares the machine with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SotwRequestOut {
    pub version_info: String,
    pub node: Option<envoy_types::pb::envoy::config::core::v3::Node>,
    /// The field-3 entries, as [`encode_names`] writes them.
    pub names: Bytes,
    pub type_url: String,
    pub response_nonce: String,
}

/// `names` as `resource_names` (field 3) entries of a `DiscoveryRequest`.
pub fn encode_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Bytes {
    let mut out = Vec::new();
    for n in names {
        prost::encoding::encode_key(3, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(n.len() as u64, &mut out);
        out.extend_from_slice(n.as_bytes());
    }
    Bytes::from(out)
}

impl Message for SotwRequestOut {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        use prost::encoding::{message, string};
        if !self.version_info.is_empty() {
            string::encode(1, &self.version_info, buf);
        }
        if let Some(node) = &self.node {
            message::encode(2, node, buf);
        }
        buf.put_slice(&self.names);
        if !self.type_url.is_empty() {
            string::encode(4, &self.type_url, buf);
        }
        if !self.response_nonce.is_empty() {
            string::encode(5, &self.response_nonce, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever encoded; decoding keeps nothing.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{message, string};
        let s = |tag, v: &String| {
            if v.is_empty() {
                0
            } else {
                string::encoded_len(tag, v)
            }
        };
        s(1, &self.version_info)
            + self.node.as_ref().map_or(0, |n| message::encoded_len(2, n))
            + self.names.len()
            + s(4, &self.type_url)
            + s(5, &self.response_nonce)
    }

    fn clear(&mut self) {
        *self = SotwRequestOut::default();
    }
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
/// `cluster_discovery_type` oneof), `eds_cluster_config.service_name`, and
/// the transport sockets whose TLS contexts name SDS secrets.
#[derive(Clone, PartialEq, Message)]
struct LiteCluster {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, optional, tag = "2")]
    discovery_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<LiteEdsClusterConfig>,
    #[prost(message, optional, tag = "24")]
    transport_socket: Option<LiteTransportSocket>,
    #[prost(message, repeated, tag = "43")]
    transport_socket_matches: Vec<LiteTransportSocketMatch>,
}

#[derive(Clone, PartialEq, Message)]
struct LiteEdsClusterConfig {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// `Cluster.TransportSocketMatch.transport_socket`.
#[derive(Clone, PartialEq, Message)]
struct LiteTransportSocketMatch {
    #[prost(message, optional, tag = "3")]
    transport_socket: Option<LiteTransportSocket>,
}

/// `envoy.config.core.v3.TransportSocket.typed_config`.
#[derive(Clone, PartialEq, Message)]
struct LiteTransportSocket {
    #[prost(message, optional, tag = "3")]
    typed_config: Option<LiteAny>,
}

/// `UpstreamTlsContext` and `DownstreamTlsContext`: `common_tls_context`.
#[derive(Clone, PartialEq, Message)]
struct LiteTlsContext {
    #[prost(message, optional, tag = "1")]
    common_tls_context: Option<LiteCommonTlsContext>,
}

/// `CommonTlsContext`: the SDS configs of certificates and validation contexts.
#[derive(Clone, PartialEq, Message)]
struct LiteCommonTlsContext {
    #[prost(message, repeated, tag = "6")]
    tls_certificate_sds_secret_configs: Vec<LiteNamed>,
    #[prost(message, optional, tag = "7")]
    validation_context_sds_secret_config: Option<LiteNamed>,
    #[prost(message, optional, tag = "8")]
    combined_validation_context: Option<LiteCombinedValidation>,
}

/// `CombinedCertificateValidationContext.validation_context_sds_secret_config`.
#[derive(Clone, PartialEq, Message)]
struct LiteCombinedValidation {
    #[prost(message, optional, tag = "2")]
    validation_context_sds_secret_config: Option<LiteNamed>,
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
    #[prost(message, optional, tag = "6")]
    transport_socket: Option<LiteTransportSocket>,
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

/// Field 1 is the name of a `ClusterLoadAssignment` (`cluster_name`), a
/// `RouteConfiguration`, a `Secret` and an `SdsSecretConfig`.
#[derive(Clone, PartialEq, Message)]
struct LiteNamed {
    #[prost(string, tag = "1")]
    name: String,
}

/// The types a simulated proxy asks for, in the order of its per-type arrays.
pub const TYPES: [XdsType; 5] = [
    XdsType::Cluster,
    XdsType::Endpoint,
    XdsType::Listener,
    XdsType::Route,
    XdsType::Secret,
];
/// Length of per-type arrays.
pub const N: usize = TYPES.len();

/// Index of `t` in the loadgen's per-type arrays; None for a type it never requests.
pub fn slot(t: XdsType) -> Option<usize> {
    TYPES.iter().position(|x| *x == t)
}

/// Index of one of `TYPES` (callers only pass those).
pub fn ix(t: XdsType) -> usize {
    slot(t).unwrap_or(0)
}

/// What one resource tells a proxy: its name and what it makes the proxy
/// request next (EDS names for a cluster, RDS names for a listener, SDS
/// names for either).
#[derive(Debug, Default)]
pub struct ResourceInfo {
    /// Empty for an opaque resource (one that did not decode as its type).
    pub name: Arc<str>,
    pub endpoints: Vec<Arc<str>>,
    pub routes: Vec<Arc<str>>,
    pub secrets: Vec<Arc<str>>,
}

impl ResourceInfo {
    pub fn opaque(&self) -> bool {
        self.name.is_empty()
    }

    /// Names of type `d` this resource makes the proxy request.
    pub fn leads_to(&self, d: XdsType) -> &[Arc<str>] {
        match d {
            XdsType::Endpoint => &self.endpoints,
            XdsType::Route => &self.routes,
            XdsType::Secret => &self.secrets,
            _ => &[],
        }
    }
}

/// A resource's name and what it leads to, before interning.
#[derive(Default)]
struct Inspected {
    name: String,
    endpoints: Vec<String>,
    routes: Vec<String>,
    secrets: Vec<String>,
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !s.is_empty() && !v.contains(&s) {
        v.push(s);
    }
}

/// SDS names in a transport socket's TLS context (upstream or downstream).
fn socket_secrets(ts: &LiteTransportSocket, out: &mut Vec<String>) {
    let Some(any) = &ts.typed_config else { return };
    if !any.type_url.ends_with(b"TlsContext") {
        return; // raw_buffer and other sockets name no secret
    }
    let Some(common) = LiteTlsContext::decode(any.value.clone())
        .ok()
        .and_then(|c| c.common_tls_context)
    else {
        return;
    };
    for sds in common.tls_certificate_sds_secret_configs {
        push_unique(out, sds.name);
    }
    if let Some(sds) = common.validation_context_sds_secret_config {
        push_unique(out, sds.name);
    }
    if let Some(sds) = common
        .combined_validation_context
        .and_then(|c| c.validation_context_sds_secret_config)
    {
        push_unique(out, sds.name);
    }
}

/// Decodes the parts of a resource the proxy acts on; None when the bytes are
/// not a resource of type `t` with a name (the floor server's opaque blobs).
fn inspect(t: XdsType, value: &[u8]) -> Option<Inspected> {
    let mut out = Inspected::default();
    match t {
        XdsType::Cluster => {
            let c = LiteCluster::decode(value).ok()?;
            if c.discovery_type == Some(DISCOVERY_TYPE_EDS) {
                let svc = c
                    .eds_cluster_config
                    .map(|e| e.service_name)
                    .filter(|s| !s.is_empty());
                out.endpoints.push(svc.unwrap_or_else(|| c.name.clone()));
            }
            let sockets = c.transport_socket.iter().chain(
                c.transport_socket_matches
                    .iter()
                    .filter_map(|m| m.transport_socket.as_ref()),
            );
            for ts in sockets {
                socket_secrets(ts, &mut out.secrets);
            }
            out.name = c.name;
        }
        XdsType::Listener => {
            let l = LiteListener::decode(value).ok()?;
            for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                if let Some(ts) = &chain.transport_socket {
                    socket_secrets(ts, &mut out.secrets);
                }
                for f in &chain.filters {
                    let Some(any) = &f.typed_config else { continue };
                    if any.type_url.as_ref() != HCM_TYPE_URL.as_bytes() {
                        continue;
                    }
                    let hcm = LiteHcm::decode(any.value.clone()).ok()?;
                    if let Some(rds) = hcm.rds {
                        push_unique(&mut out.routes, rds.route_config_name);
                    }
                }
            }
            out.name = l.name;
        }
        _ => out.name = LiteNamed::decode(value).ok()?.name,
    }
    (!out.name.is_empty()).then_some(out)
}

/// What a whole SotW response tells a proxy.
#[derive(Debug, Default)]
pub struct SetInfo {
    /// Names of the resources that decoded (opaque ones have none).
    pub names: Vec<Arc<str>>,
    /// What the set leads to, sorted, without duplicates.
    pub endpoints: Arc<[Arc<str>]>,
    pub routes: Arc<[Arc<str>]>,
    pub secrets: Arc<[Arc<str>]>,
}

impl SetInfo {
    /// Names of type `d` this set makes the proxy request.
    pub fn leads_to(&self, d: XdsType) -> &Arc<[Arc<str>]> {
        match d {
            XdsType::Endpoint => &self.endpoints,
            XdsType::Route => &self.routes,
            _ => &self.secrets,
        }
    }
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
        let mut leads: [BTreeSet<Arc<str>>; 3] = Default::default();
        for (r, hash) in resources.iter().zip(hashes) {
            let info = self.info_hashed(t, hash, &r.value);
            if !info.opaque() {
                names.push(Arc::clone(&info.name));
            }
            leads[0].extend(info.endpoints.iter().cloned());
            leads[1].extend(info.routes.iter().cloned());
            leads[2].extend(info.secrets.iter().cloned());
        }
        let [endpoints, routes, secrets] = leads.map(|l| l.into_iter().collect());
        let set = Arc::new(SetInfo {
            names,
            endpoints,
            routes,
            secrets,
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
            Some(i) => {
                let interned = |v: &[String]| v.iter().map(|n| self.intern(n)).collect();
                ResourceInfo {
                    name: self.intern(&i.name),
                    endpoints: interned(&i.endpoints),
                    routes: interned(&i.routes),
                    secrets: interned(&i.secrets),
                }
            }
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
