//! One ADS stream: a loop over requests from Envoy and new snapshots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::AdsShared;
use super::body::Out;
use super::protocol::{Ack, Push, Request, StreamProtocol};
use super::status::{ProxyConn, lock};
use super::wire;
use crate::ca::token::Claims;
use crate::metrics::Metrics;
use crate::model::WorkloadKey;
use crate::xds::autoregister::{self, Connection, RegisterError};
use crate::xds::cache::ProxyResources;
use crate::xds::types::XdsType;

/// A request from either ADS variant.
#[derive(Debug)]
pub struct Incoming {
    node: Option<Node>,
    type_url: String,
    nonce: String,
    version: String,
    error: Option<String>,
    subscribe: Vec<Bytes>,
    unsubscribe: Vec<Bytes>,
    initial: Option<HashMap<String, String>>,
    /// SotW: `resource_names` as they came (every entry, keys and lengths
    /// included), and its hash. Envoy repeats its whole subscription in
    /// every ACK, thousands of EDS names: when the bytes are the last
    /// request's, the names are never split, checked or hashed one by one.
    names: Option<(Bytes, u64)>,
}

/// `envoy.service.discovery.v3.DiscoveryRequest`, read by hand from the
/// wire: `resource_names` (field 3) stays one slice of the received buffer
/// when its entries are contiguous, as every encoder writes them; other
/// fields as prost reads them; `resource_locators` (7) and unknown fields
/// are skipped.
#[derive(Debug, Default)]
pub struct SotwRequest {
    pub version_info: String,
    pub node: Option<Node>,
    pub type_url: String,
    pub response_nonce: String,
    pub error_detail: Option<envoy_types::pb::google::rpc::Status>,
    /// The field-3 entries, contiguous, and how many.
    pub names_span: Bytes,
    /// The names one by one, when field 3 was not contiguous.
    pub names_split: Option<Vec<Bytes>>,
}

impl super::requests::WireDecode for SotwRequest {
    fn from_wire(whole: Bytes) -> Result<Self, String> {
        use bytes::Buf;
        use prost::Message;
        use prost::encoding::decode_varint;
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
        };
        let de = |e: prost::DecodeError| e.to_string();
        let mut out = SotwRequest::default();
        // A plain slice: Envoy's ACKs carry thousands of names, and each
        // field costs two varints here, no reference count.
        let mut buf: &[u8] = &whole;
        let total = whole.len();
        let mut span: Option<(usize, usize)> = None;
        let mut contiguous = true;
        while buf.has_remaining() {
            let start = total - buf.remaining();
            let key = decode_varint(&mut buf).map_err(de)?;
            let (tag, wire_type) = (key >> 3, key & 7);
            let skip = match wire_type {
                0 => {
                    decode_varint(&mut buf).map_err(de)?;
                    0
                }
                1 => 8,
                5 => 4,
                2 => {
                    let len = decode_varint(&mut buf).map_err(de)? as usize;
                    if len > buf.remaining() {
                        return Err("field longer than the message".to_string());
                    }
                    let (field, rest) = buf.split_at(len);
                    buf = rest;
                    match tag {
                        1 => out.version_info = text(field)?,
                        2 => out.node = Some(Node::decode(field).map_err(de)?),
                        3 => {
                            let end = total - buf.remaining();
                            match &mut span {
                                None => span = Some((start, end)),
                                Some((_, e)) if *e == start => *e = end,
                                Some(_) => contiguous = false,
                            }
                        }
                        4 => out.type_url = text(field)?,
                        5 => out.response_nonce = text(field)?,
                        6 => out.error_detail = Some(Message::decode(field).map_err(de)?),
                        _ => {}
                    }
                    0
                }
                _ => return Err("unexpected wire type".to_string()),
            };
            if skip > buf.remaining() {
                return Err("truncated field".to_string());
            }
            buf.advance(skip);
        }
        if let Some((s, e)) = span {
            if contiguous {
                out.names_span = whole.slice(s..e);
            } else {
                // Names interleaved with other fields: take them one by one.
                let mut names = Vec::new();
                let mut buf = whole.clone();
                while buf.has_remaining() {
                    let key = decode_varint(&mut buf).map_err(de)?;
                    match key & 7 {
                        0 => {
                            decode_varint(&mut buf).map_err(de)?;
                        }
                        1 => buf.advance(8.min(buf.remaining())),
                        5 => buf.advance(4.min(buf.remaining())),
                        _ => {
                            let len = (decode_varint(&mut buf).map_err(de)? as usize)
                                .min(buf.remaining());
                            let field = buf.split_to(len);
                            if key >> 3 == 3 {
                                names.push(field);
                            }
                        }
                    }
                }
                out.names_split = Some(names);
            }
        }
        Ok(out)
    }
}

/// The names in a span of `resource_names` entries, each checked as UTF-8.
fn split_names(mut span: Bytes) -> Result<Vec<Bytes>, String> {
    use bytes::Buf;
    let mut names = Vec::new();
    while span.has_remaining() {
        let key = prost::encoding::decode_varint(&mut span).map_err(|e| e.to_string())?;
        let len = prost::encoding::decode_varint(&mut span).map_err(|e| e.to_string())? as usize;
        if key != (3 << 3 | 2) || len > span.remaining() {
            return Err("malformed resource_names".to_string());
        }
        let name = span.split_to(len);
        if std::str::from_utf8(&name).is_err() {
            return Err(format!(
                "resource name {:?} is not UTF-8",
                String::from_utf8_lossy(&name)
            ));
        }
        names.push(name);
    }
    Ok(names)
}

impl Incoming {
    /// Fails, as decoding a `DiscoveryRequest` would, when a resource name
    /// is not UTF-8 (names in one span are checked when first split).
    pub fn from_sotw(r: SotwRequest) -> Result<Self, tonic::Status> {
        let (subscribe, names) = match r.names_split {
            Some(split) => {
                if let Some(bad) = split.iter().find(|n| std::str::from_utf8(n).is_err()) {
                    return Err(tonic::Status::invalid_argument(format!(
                        "undecodable request: resource name {:?} is not UTF-8",
                        String::from_utf8_lossy(bad)
                    )));
                }
                (split, None)
            }
            None => {
                let hash = xxhash_rust::xxh3::xxh3_64(&r.names_span);
                (Vec::new(), Some((r.names_span, hash)))
            }
        };
        Ok(Incoming {
            node: r.node,
            type_url: r.type_url,
            nonce: r.response_nonce,
            version: r.version_info,
            error: r.error_detail.map(|e| e.message),
            subscribe,
            unsubscribe: Vec::new(),
            initial: None,
            names,
        })
    }

    pub fn from_delta(r: DeltaDiscoveryRequest) -> Self {
        Incoming {
            node: r.node,
            type_url: r.type_url,
            nonce: r.response_nonce,
            version: String::new(),
            error: r.error_detail.map(|e| e.message),
            subscribe: r
                .resource_names_subscribe
                .into_iter()
                .map(Bytes::from)
                .collect(),
            unsubscribe: r
                .resource_names_unsubscribe
                .into_iter()
                .map(Bytes::from)
                .collect(),
            initial: Some(r.initial_resource_versions),
            names: None,
        }
    }
}

/// Which workload a proxy is: the entry it auto-registers as when its node
/// names a WorkloadGroup (`AUTO_REGISTER_GROUP`), else the bootstrap's node
/// metadata (`NAMESPACE`, `WORKLOAD_NAME`), else Istio's node id
/// `sidecar~IP~NAME.NAMESPACE~DOMAIN`.
pub fn workload_of(node: &Node) -> Option<WorkloadKey> {
    let field = |key: &str| {
        use envoy_types::pb::google::protobuf::value::Kind;
        match node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
            Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    };
    // A proxy registering for a WorkloadGroup is its auto-registered entry.
    if let Some(Ok(req)) = autoregister::request_of(node) {
        return Some(req.entry_key());
    }
    if let (Some(namespace), Some(name)) = (field("NAMESPACE"), field("WORKLOAD_NAME")) {
        return Some(WorkloadKey { namespace, name });
    }
    let mut parts = node.id.split('~');
    let (_kind, _ip, pod) = (parts.next()?, parts.next()?, parts.next()?);
    let (name, namespace) = pod.rsplit_once('.')?;
    (!name.is_empty() && !namespace.is_empty()).then(|| WorkloadKey {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// The auto-registration of a proxy whose node names a WorkloadGroup (None
/// for other proxies), or the status that refuses it.
fn register(
    shared: &AdsShared,
    node: &Node,
    claims: Option<&Claims>,
) -> Result<Option<Connection>, tonic::Status> {
    let Some(req) = autoregister::request_of(node) else {
        return Ok(None);
    };
    let registered = req.and_then(|req| match &shared.autoreg {
        Some(r) => r.connect(&node.id, req, claims),
        None => Err(RegisterError::BadNode(
            "this port does not auto-register workloads".into(),
        )),
    });
    registered.map(Some).map_err(|e| {
        warn!(node = %node.id, error = %e, "auto-registration refused");
        match &e {
            RegisterError::Identity { .. } => {
                shared.metrics.auth_failures.inc();
                tonic::Status::permission_denied(e.to_string())
            }
            RegisterError::NoGroup { .. } => tonic::Status::failed_precondition(e.to_string()),
            RegisterError::BadNode(_) => {
                if let Some(r) = &shared.autoreg {
                    r.refused();
                }
                tonic::Status::invalid_argument(e.to_string())
            }
        }
    })
}

pub async fn run(
    shared: AdsShared,
    delta: bool,
    mut requests: BoxStream<'static, Result<Incoming, tonic::Status>>,
    tx: mpsc::Sender<Out>,
    peer: String,
    claims: Option<Claims>,
) {
    // The first request names the proxy.
    let first = match requests.next().await {
        Some(Ok(r)) => r,
        Some(Err(status)) => {
            warn!(error = %status, "bad first request on ADS stream");
            return;
        }
        None => return,
    };
    let Some(node) = first.node.clone() else {
        warn!("ADS stream's first request has no node; closing");
        let _ = tx
            .send(Out::End(tonic::Status::invalid_argument(
                "the first request on a stream must carry the node",
            )))
            .await;
        return;
    };
    // A proxy registering for a WorkloadGroup is the entry its registration
    // names (checked against its credential there); others name theirs.
    let registration = match register(&shared, &node, claims.as_ref()) {
        Ok(r) => r,
        Err(status) => {
            let _ = tx.send(Out::End(status)).await;
            return;
        }
    };
    let workload = match &registration {
        Some(c) => c.key.clone(),
        None => {
            let Some(workload) = workload_of(&node) else {
                warn!(node = %node.id, "proxy names no workload (node metadata NAMESPACE and WORKLOAD_NAME, or node id sidecar~IP~NAME.NAMESPACE~...); closing");
                let _ = tx
                    .send(Out::End(tonic::Status::invalid_argument(
                        "cannot tell which workload this proxy is: set node metadata NAMESPACE and WORKLOAD_NAME (pilotfish bootstrap does)",
                    )))
                    .await;
                return;
            };
            // An authenticated proxy may only be the workload its credential names.
            let workload_sa = shared
                .snapshots
                .borrow()
                .registry
                .workloads
                .get(&workload)
                .and_then(|w| w.service_account.clone());
            if let Some(c) = &claims
                && !c.allows(&workload, workload_sa.as_deref())
            {
                warn!(node = %node.id, %workload, credential = %format!("{}/{}", c.namespace, c.workload), "proxy claims another workload than its credential; refused");
                shared.metrics.auth_failures.inc();
                let _ = tx
                    .send(Out::End(tonic::Status::permission_denied(format!(
                        "the credential is for workload {}/{} (service account {}), not {workload}",
                        c.namespace, c.workload, c.service_account
                    ))))
                    .await;
                return;
            }
            workload
        }
    };
    let conn = Arc::new(ProxyConn {
        node_id: node.id.clone(),
        workload: workload.to_string(),
        group: registration.as_ref().map(|c| c.group.clone()),
        peer,
        delta,
        connected_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        protocol: Mutex::new(StreamProtocol::new(delta)),
    });
    let conn_id = shared.syncs.add(Arc::clone(&conn));
    shared.metrics.connected_proxies.inc();
    info!(node = %node.id, %workload, "proxy connected");

    let mut stream = Stream {
        shared: &shared,
        conn: &conn,
        workload,
        tx: &tx,
        resources: None,
        // A registered entry reaches the snapshot just after it connects.
        warned_unknown: registration.is_some(),
        pending: [None; XdsType::COUNT],
        names_hash: [None; XdsType::COUNT],
    };
    let mut snapshots = shared.snapshots.clone();
    snapshots.mark_changed();
    let result = stream.handle(first).await;
    if result.is_ok() {
        loop {
            tokio::select! {
                req = requests.next() => match req {
                    Some(Ok(req)) => {
                        if stream.handle(req).await.is_err() {
                            break;
                        }
                    }
                                        Some(Err(status)) => {
                        // Mostly a proxy going away without closing the stream.
                        debug!(error = %status, "ADS stream ended with an error");
                        break;
                    }
                    None => break,
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break; // shutting down
                    }
                    let snapshot = Arc::clone(&snapshots.borrow_and_update());
                    if stream.on_snapshot(&snapshot).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    shared.syncs.remove(conn_id);
    shared.metrics.connected_proxies.dec();
    info!(node = %node.id, "proxy disconnected");
    // An auto-registered entry's grace period starts now.
    drop(registration);
}

/// The receiver is gone: the client closed the stream.
struct Closed;

struct Stream<'a> {
    shared: &'a AdsShared,
    conn: &'a ProxyConn,
    workload: WorkloadKey,
    tx: &'a mpsc::Sender<Out>,
    /// What this proxy should have, per the latest snapshot; None while its
    /// workload is unknown.
    resources: Option<ProxyResources>,
    warned_unknown: bool,
    /// Per type: when the change behind the latest unacknowledged push was
    /// first seen (for `pilot_proxy_convergence_time`).
    pending: [Option<std::time::Instant>; XdsType::COUNT],
    /// SotW, per type: the hash of the `resource_names` bytes of the last
    /// request that was not stale.
    names_hash: [Option<u64>; XdsType::COUNT],
}

impl Stream<'_> {
    async fn handle(&mut self, mut req: Incoming) -> Result<(), Closed> {
        let Some(t) = XdsType::from_type_url(&req.type_url) else {
            warn!(type_url = %req.type_url, "request for a type pilotfish does not serve; ignored");
            return Ok(());
        };
        // SotW: names byte for byte as last time need no look at all.
        let names_hash = req.names.as_ref().map(|(_, h)| *h);
        let same_names = names_hash.is_some() && self.names_hash[t.index()] == names_hash;
        if !same_names && let Some((span, _)) = req.names.take() {
            match split_names(span) {
                Ok(names) => req.subscribe = names,
                Err(e) => {
                    warn!(node = %self.conn.node_id, error = %e, "undecodable request; closing the stream");
                    return Err(Closed);
                }
            }
        }
        let mut built = true;
        if self.resources.is_none() {
            let snapshot = Arc::clone(&self.shared.snapshots.borrow());
            built = snapshot.generation > 0;
            self.resources = snapshot.resources_for(&self.workload);
        }
        let push = {
            let mut proto = lock(&self.conn.protocol);
            let r = Request {
                nonce: &req.nonce,
                version: &req.version,
                error: req.error.as_deref(),
                subscribe: &req.subscribe,
                unsubscribe: &req.unsubscribe,
                initial_versions: req.initial.as_ref(),
                same_names,
            };
            let (ack, push_now) = proto.on_request_with(t, &r, self.resources.as_ref());
            if ack != Ack::Stale {
                // The subscription these names give is now in force.
                self.names_hash[t.index()] = names_hash;
            }
            match &ack {
                Ack::Nack(nack) => {
                    self.pending[t.index()] = None;
                    warn!(node = %self.conn.node_id, r#type = t.short(), version = %nack.version, nonce = %nack.nonce, message = %nack.message, "proxy rejected config (NACK); keeping its last good config, not resending");
                    self.shared
                        .metrics
                        .rejects
                        .get_or_create(&Metrics::type_label(t.short()))
                        .inc();
                }
                Ack::Stale => debug!(r#type = t.short(), nonce = %req.nonce, "stale nonce ignored"),
                Ack::Ack => {
                    debug!(r#type = t.short(), nonce = %req.nonce, "ACK");
                    if let Some(at) = self.pending[t.index()].take() {
                        self.shared
                            .metrics
                            .convergence
                            .observe(at.elapsed().as_secs_f64());
                    }
                }
                Ack::Initial => debug!(r#type = t.short(), names = req.subscribe.len(), "request"),
            }
            match (&self.resources, push_now) {
                (Some(res), true) => proto.push(t, res, ack == Ack::Initial),
                _ => None,
            }
        };
        if self.resources.is_none() && built && !self.warned_unknown {
            self.warned_unknown = true;
            warn!(node = %self.conn.node_id, workload = %self.workload, "no WorkloadEntry {} exists; this proxy gets no config until one does", self.workload);
        }
        match push {
            Some(p) => self.send(p).await,
            None => Ok(()),
        }
    }

    async fn on_snapshot(
        &mut self,
        snapshot: &crate::xds::cache::XdsSnapshot,
    ) -> Result<(), Closed> {
        let new = snapshot.resources_for(&self.workload);
        let Some(res) = new else {
            if self.resources.take().is_some() {
                warn!(workload = %self.workload, "WorkloadEntry removed; this proxy keeps its last config");
            }
            return Ok(());
        };
        let old = self.resources.replace(res.clone());
        for t in XdsType::PUSH_ORDER {
            if old.as_ref().is_some_and(|o| o.same_layers(&res, t)) {
                continue;
            }
            let push = lock(&self.conn.protocol).push(t, &res, false);
            if let Some(p) = push {
                self.send(p).await?;
                self.pending[t.index()] = snapshot.changed_at;
            }
        }
        Ok(())
    }

    async fn send(&self, push: Push) -> Result<(), Closed> {
        let chunks = wire::frame(&push, self.conn.delta);
        let bytes: usize = chunks.iter().map(|c| c.len()).sum();
        let label = Metrics::type_label(push.t.short());
        self.shared.metrics.pushes.get_or_create(&label).inc();
        self.shared
            .metrics
            .push_bytes
            .get_or_create(&label)
            .inc_by(bytes as u64);
        self.shared
            .metrics
            .config_size
            .get_or_create(&label)
            .observe(bytes as f64);
        debug!(r#type = push.t.short(), version = %push.version, nonce = %push.nonce, resources = push.resources.len(), removed = push.removed.len(), bytes, "push");
        self.tx.send(Out::Message(chunks)).await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::requests::WireDecode;
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use prost::Message;

    fn full() -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "v7".into(),
            node: Some(Node {
                id: "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local".into(),
                ..Default::default()
            }),
            resource_names: vec![
                "outbound|9080||reviews.default.svc.cluster.local".into(),
                "b".into(),
            ],
            type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
            response_nonce: "12".into(),
            error_detail: Some(envoy_types::pb::google::rpc::Status {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            resource_locators: vec![Default::default()],
        }
    }

    #[test]
    fn sotw_request_reads_what_envoy_encodes() {
        let full = full();
        let wire = Bytes::from(full.encode_to_vec());
        let inc = Incoming::from_sotw(SotwRequest::from_wire(wire.clone()).unwrap()).unwrap();
        assert_eq!(inc.version, "v7");
        assert_eq!(inc.nonce, "12");
        assert_eq!(inc.type_url, full.type_url);
        assert_eq!(inc.node, full.node);
        assert_eq!(inc.error.as_deref(), Some("bad"));
        // The names stay one slice of the received buffer until needed.
        let (span, hash) = inc.names.clone().unwrap();
        let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        assert!(range.contains(&(span.as_ptr() as usize)));
        let names = split_names(span).unwrap();
        let names: Vec<&[u8]> = names.iter().map(|b| b.as_ref()).collect();
        assert_eq!(names, [full.resource_names[0].as_bytes(), b"b"]);
        // The same names in another ACK (new nonce and version) hash the same;
        // one name more does not.
        let mut ack = full.clone();
        ack.response_nonce = "13".into();
        ack.version_info = "v8".into();
        let again = SotwRequest::from_wire(Bytes::from(ack.encode_to_vec())).unwrap();
        assert_eq!(Incoming::from_sotw(again).unwrap().names.unwrap().1, hash);
        ack.resource_names.push("c".into());
        let more = SotwRequest::from_wire(Bytes::from(ack.encode_to_vec())).unwrap();
        assert_ne!(Incoming::from_sotw(more).unwrap().names.unwrap().1, hash);
    }

    #[test]
    fn interleaved_names_are_read_one_by_one() {
        // Field 3 twice with field 4 between (legal protobuf, unusual).
        let mut wire = Vec::new();
        prost::encoding::string::encode(3, &"a".to_string(), &mut wire);
        prost::encoding::string::encode(4, &"t".to_string(), &mut wire);
        prost::encoding::string::encode(3, &"b".to_string(), &mut wire);
        let r = SotwRequest::from_wire(Bytes::from(wire)).unwrap();
        let inc = Incoming::from_sotw(r).unwrap();
        assert!(inc.names.is_none());
        assert_eq!(
            inc.subscribe,
            [Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        assert_eq!(inc.type_url, "t");
    }

    #[test]
    fn bad_requests_are_refused() {
        // A name that is not UTF-8: refused when split.
        let mut wire = Vec::new();
        prost::encoding::bytes::encode(3, &vec![0xffu8, 0xfe], &mut wire);
        let r = SotwRequest::from_wire(Bytes::from(wire)).unwrap();
        let (span, _) = Incoming::from_sotw(r).unwrap().names.unwrap();
        assert!(split_names(span).unwrap_err().contains("not UTF-8"));
        // Truncated: a length beyond the message.
        assert!(SotwRequest::from_wire(Bytes::from_static(&[0x1a, 0x05, b'a'])).is_err());
        // A wire type that does not exist.
        assert!(SotwRequest::from_wire(Bytes::from_static(&[0x1f])).is_err());
    }
}
