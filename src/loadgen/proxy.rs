//! One simulated Envoy: an ADS stream over its own gRPC connection,
//! following Envoy's xDS client behaviour closely enough to load a control
//! plane the way real sidecars do.
//!
//! * The node is the one `pilotfish bootstrap` writes (id
//!   `sidecar~IP~NAME.NS~NS.svc.cluster.local`, metadata `NAMESPACE`,
//!   `WORKLOAD_NAME`, ...), sent on the first request of each stream only
//!   (`set_node_on_first_message_only`).
//! * CDS and LDS are requested as wildcards; every response is ACKed with its
//!   version and nonce (the loadgen never NACKs). EDS is then requested for
//!   every EDS cluster (its `service_name`, else its name), RDS for every
//!   route table an HttpConnectionManager names, and SDS for every secret a
//!   cluster's or listener's TLS transport socket names; each is
//!   re-requested whenever its set of names changes. SotW requests carry the
//!   full name list (ACKs too, as Envoy's do); delta requests carry only what
//!   was (un)subscribed.
//! * When the stream ends the proxy reconnects on a new connection after a
//!   jittered exponential backoff (Envoy's defaults: 500 ms doubling to
//!   30 s), re-requesting what it had (delta: with `initial_resource_versions`).
//!
//! * A proxy whose stream is lost is unsynced until every type is answered
//!   again on the new stream (its resync time is reported).
//! * Bad load (issue 8): a `stuck` proxy syncs like the others, then stops
//!   reading its socket for good (never ACKs, never drains, never
//!   reconnects): its connection goes through [`StuckIo`], which stops
//!   returning data once the proxy is synced. A `kick` makes a proxy drop its
//!   connection and reconnect at once as a fresh Envoy (churn): nothing
//!   requested, nothing held.
//!
//! Against a server whose resources do not decode as their type (the floor's
//! `--opaque` blobs) every resource is treated as opaque: nothing follows
//! from CDS or LDS, so only those two types are requested.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::transport::Endpoint;

use super::scenario::WorkloadRef;
use super::wire::{
    DecodeCache, LiteCodec, LiteDeltaResponse, LiteResponse, N, ResourceInfo, SetInfo, Sized,
    SotwRequestOut, encode_names, ix, slot,
};
use crate::model::WorkloadKey;
use crate::xds::bootstrap::{BootstrapParams, bootstrap};
use crate::xds::types::XdsType;

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Envoy's default ADS retry backoff: 500 ms base, 30 s cap, jittered.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Envoy's HTTP/2 defaults for its gRPC client (256 MiB stream and connection
/// windows): the server is never held back by flow control.
const H2_WINDOW: u32 = 256 * 1024 * 1024;
/// The HTTP/2 keepalive `pilotfish bootstrap` gives the xds-grpc cluster.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted (Envoy sets no limit of its own).
const MAX_RESPONSE_BYTES: usize = 1 << 30;
/// Requests queued for the stream's writer: a few ACKs and subscriptions.
const REQUEST_QUEUE: usize = 16;
/// Version prefix of the floor server's timed pushes: `floor-push-SEQ-UNIXMICROS`.
pub const FLOOR_PUSH_PREFIX: &str = "floor-push-";
/// Floor pushes remembered per proxy.
const MAX_FLOOR_PUSHES: usize = 10_000;

/// A change the run applied, as the proxies see it.
#[derive(Debug)]
pub struct ChangeMark {
    /// When the change's files were in place.
    pub at: Instant,
    /// The type whose first response after `at` completes the change.
    pub primary: XdsType,
    /// Proxies that received and ACKed a `primary` response since `at`.
    pub converged: AtomicUsize,
}

/// What every proxy task shares with the run.
#[derive(Debug)]
pub struct Shared {
    pub start: Instant,
    pub cache: DecodeCache,
    pub changes: RwLock<Vec<Arc<ChangeMark>>>,
    /// Proxies synced now (a proxy whose stream was lost counts again once
    /// it has resynced; stuck proxies stay counted).
    pub synced: AtomicUsize,
    /// Proxies that stopped reading their socket (`--stuck`).
    pub stuck: AtomicUsize,
    pub connected: AtomicUsize,
    pub responses: AtomicU64,
    pub bytes: AtomicU64,
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    pub fn new(stop: watch::Receiver<bool>) -> Self {
        Shared {
            start: Instant::now(),
            cache: DecodeCache::default(),
            changes: RwLock::new(Vec::new()),
            synced: AtomicUsize::new(0),
            stuck: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            responses: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stop,
        }
    }
}

/// Who a simulated proxy is and where it connects.
#[derive(Clone, Debug)]
pub struct ProxySpec {
    pub workload: WorkloadRef,
    /// `http://HOST:PORT` of the ADS server.
    pub uri: String,
    pub delta: bool,
    /// Stop reading the socket once synced, for the rest of the run.
    pub stuck: bool,
    /// Notified to make the proxy reconnect as a fresh Envoy (churn).
    pub kick: Option<Arc<Notify>>,
}

/// What one proxy measured.
#[derive(Clone, Debug, Default)]
pub struct ProxyStats {
    pub workload: String,
    /// When the proxy task started, from the start of the run.
    pub started: Duration,
    /// First connection established, from the proxy's start.
    pub connected_after: Option<Duration>,
    /// CDS and LDS received and ACKed, and EDS, RDS and SDS for every name
    /// the proxy asked for (when it asked for any), from the proxy's start.
    pub synced_after: Option<Duration>,
    /// Bytes of responses (gRPC message payload), per type.
    pub bytes: [u64; N],
    /// `bytes` when the proxy synced: the initial config alone.
    pub sync_bytes: [u64; N],
    pub responses: [u64; N],
    /// Resources the proxy holds now, per type (SotW EDS/RDS/SDS: in the last response).
    pub resources: [usize; N],
    /// SotW: responses whose version equals the one last ACKed for the type.
    /// Delta: resources received again with the version the proxy has.
    pub redundant: [u64; N],
    /// Responses of a type the proxy never asked for (not ACKed).
    pub unrequested: u64,
    pub connects: u32,
    pub stream_errors: u32,
    /// One of the `--stuck` proxies.
    pub stuck: bool,
    /// Stopped reading its socket (`--stuck`), this long after its start.
    pub stuck_after: Option<Duration>,
    /// Times the proxy was made to reconnect as a fresh Envoy (churn).
    pub churns: u32,
    /// From losing sync (kicked, or its stream lost) to synced again on a
    /// new stream; `true` for a churn.
    pub resyncs: Vec<(bool, Duration)>,
    pub last_error: Option<String>,
    /// Per change applied by the run, per type: from the change to the ACK of
    /// the first response of that type received after it.
    pub changes: Vec<[Option<Duration>; N]>,
    /// Floor pushes: (push number, latency from the floor's send timestamp).
    pub floor_pushes: Vec<(u64, Duration)>,
}

/// Builds the node exactly as `pilotfish bootstrap` writes it.
pub fn node_for(w: &WorkloadRef, delta: bool) -> Node {
    let b = bootstrap(&BootstrapParams {
        workload: WorkloadKey {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        },
        ip: w.address.clone(),
        xds_host: String::new(),
        xds_port: 0,
        admin_host: String::new(),
        admin_port: 0,
        delta,
        metrics_sink: false,
        // The node is all that is used here; the loadgen talks to a plaintext port.
        security: None,
    });
    let node = &b["node"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let metadata = match json_to_value(&node["metadata"]).kind {
        Some(Kind::StructValue(s)) => Some(s),
        _ => None,
    };
    Node {
        id: text(&node["id"]),
        cluster: text(&node["cluster"]),
        metadata,
        user_agent_name: "envoy".to_string(),
        ..Default::default()
    }
}

fn json_to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// Why a session ended.
enum Ended {
    Stopped,
    /// Kicked: reconnect at once as a fresh Envoy.
    Churned,
    /// The stream or connection failed (after `responses` responses).
    Failed {
        error: String,
        responses: u64,
    },
}

impl Ended {
    fn closed(responses: u64) -> Self {
        Ended::Failed {
            error: "request stream closed".into(),
            responses,
        }
    }
}

/// Runs one simulated proxy until the run stops; returns what it measured.
pub async fn run(spec: ProxySpec, shared: Arc<Shared>) -> ProxyStats {
    let mut p = Proxy::new(&spec, &shared);
    let mut backoff = BACKOFF_BASE;
    let mut rng = Jitter::new(xxhash_rust::xxh3::xxh3_64(p.stats.workload.as_bytes()));
    loop {
        if *shared.stop.borrow() {
            break;
        }
        let ended = p.session(&spec).await;
        if !matches!(ended, Ended::Stopped) {
            p.lost();
        }
        match ended {
            Ended::Stopped => break,
            Ended::Churned => {
                p.fresh();
                backoff = BACKOFF_BASE;
            }
            Ended::Failed { error, responses } => {
                p.stats.stream_errors += 1;
                p.stats.last_error = Some(error);
                if responses > 0 {
                    backoff = BACKOFF_BASE;
                }
                let wait = rng.up_to(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                let mut stop = shared.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }
    p.stats
}

/// Jittered backoff (half to all of `max`) without a random-number crate (xorshift).
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        Jitter(seed | 1)
    }

    fn up_to(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let frac = (self.0 % 1_000_000) as f64 / 1e6;
        max.mul_f64(0.5 + frac / 2.0)
    }
}

/// The types requested as wildcards, whose resources name the others.
const ROOTS: [XdsType; 2] = [XdsType::Cluster, XdsType::Listener];
/// Types requested by name, in the order they are requested after a reconnect.
const DEPENDENTS: [XdsType; 3] = [XdsType::Endpoint, XdsType::Route, XdsType::Secret];

/// The named types a root type's resources lead to.
fn dependents_of(t: XdsType) -> &'static [XdsType] {
    match t {
        XdsType::Cluster => &[XdsType::Endpoint, XdsType::Secret],
        XdsType::Listener => &[XdsType::Route, XdsType::Secret],
        _ => &[],
    }
}

fn is_root(t: XdsType) -> bool {
    ROOTS.contains(&t)
}

/// Per-type state that survives reconnects.
#[derive(Debug, Default)]
struct TypeState {
    /// Asked for on this stream.
    requested: bool,
    /// SotW: version and nonce of the last response (ACKed at once).
    version: String,
    nonce: String,
    acked: bool,
    /// Named types: the names asked for, sorted.
    names: Arc<[Arc<str>]>,
    /// SotW: `names` encoded as a request's `resource_names`.
    names_wire: Bytes,
    /// SotW roots: what the last response holds and leads to.
    set: Option<Arc<SetInfo>>,
    /// Delta: what the proxy holds, name -> (version, what it leads to).
    have: HashMap<Arc<str>, (Arc<str>, Arc<ResourceInfo>)>,
    /// Until synced: named-type names answered (received, or said not to exist).
    answered: HashSet<Arc<str>>,
}

struct Proxy<'a> {
    shared: &'a Shared,
    node: Node,
    delta: bool,
    started_at: Instant,
    types: [TypeState; N],
    synced: bool,
    last_floor_push: u64,
    /// When the proxy last lost sync (kicked, or its stream lost).
    lost_at: Option<Instant>,
    /// The current connection's switch to stop reading (`--stuck` only).
    stuck_io: Option<Arc<AtomicBool>>,
    stuck_now: bool,
    /// Kicked since the last sync: the next resync is a churn's.
    churn_pending: bool,
    stats: ProxyStats,
}

/// The request stream's sender, either variant.
enum Tx {
    Sotw(mpsc::Sender<SotwRequestOut>),
    Delta(mpsc::Sender<DeltaDiscoveryRequest>),
}

impl Tx {
    async fn sotw(&self, req: SotwRequestOut) -> Result<(), ()> {
        match self {
            Tx::Sotw(tx) => tx.send(req).await.map_err(|_| ()),
            Tx::Delta(_) => Err(()),
        }
    }

    async fn delta(&self, req: DeltaDiscoveryRequest) -> Result<(), ()> {
        match self {
            Tx::Delta(tx) => tx.send(req).await.map_err(|_| ()),
            Tx::Sotw(_) => Err(()),
        }
    }
}

/// A response of either variant.
enum Resp {
    Sotw(Sized<LiteResponse>),
    Delta(Sized<LiteDeltaResponse>),
}

impl<'a> Proxy<'a> {
    fn new(spec: &ProxySpec, shared: &'a Shared) -> Self {
        let started_at = Instant::now();
        Proxy {
            shared,
            node: node_for(&spec.workload, spec.delta),
            delta: spec.delta,
            started_at,
            types: Default::default(),
            synced: false,
            last_floor_push: 0,
            lost_at: None,
            stuck_io: None,
            stuck_now: false,
            churn_pending: false,
            stats: ProxyStats {
                workload: format!("{}/{}", spec.workload.namespace, spec.workload.name),
                stuck: spec.stuck,
                started: started_at - shared.start,
                ..Default::default()
            },
        }
    }

    /// The stream was lost (or the proxy kicked): unsynced until every type
    /// is answered again on the next stream.
    fn lost(&mut self) {
        if self.synced {
            self.synced = false;
            self.lost_at = Some(Instant::now());
            self.shared.synced.fetch_sub(1, Ordering::Relaxed);
        }
        for st in &mut self.types {
            st.acked = false;
        }
    }

    /// Forgets everything, as a restarted Envoy has: the next stream starts
    /// with wildcards and learns its names again.
    fn fresh(&mut self) {
        self.types = Default::default();
        self.stats.churns += 1;
        self.churn_pending = true;
    }

    /// The source address of the proxy's connection: each sidecar connects
    /// from its own address, as real ones do.
    fn local_ip(spec: &ProxySpec) -> Option<std::net::IpAddr> {
        spec.workload
            .address
            .as_deref()
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
            .filter(|ip| ip.is_loopback())
    }

    fn endpoint(spec: &ProxySpec) -> Result<Endpoint, String> {
        let mut ep = Endpoint::from_shared(spec.uri.clone())
            .map_err(|e| format!("bad address {}: {e}", spec.uri))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW);
        // A stuck Envoy runs no keepalive either (its event loop is what is stuck).
        if !spec.stuck {
            ep = ep
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        }
        if let Some(ip) = Self::local_ip(spec) {
            ep = ep.local_address(Some(ip));
        }
        Ok(ep)
    }

    /// Connects; a stuck proxy through [`StuckIo`], whose switch it keeps.
    async fn connect(&mut self, spec: &ProxySpec) -> Result<tonic::transport::Channel, String> {
        let ep = Self::endpoint(spec)?;
        if !spec.stuck {
            return ep.connect().await.map_err(|e| format!("connect: {e}"));
        }
        let stop_reading = Arc::new(AtomicBool::new(false));
        self.stuck_io = Some(Arc::clone(&stop_reading));
        let local = Self::local_ip(spec);
        let connector = tower::service_fn(move |uri: http::Uri| {
            let stop_reading = Arc::clone(&stop_reading);
            async move {
                let host = uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
                let addr = tokio::net::lookup_host((host, uri.port_u16().unwrap_or(80)))
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("{uri}: no address")))?;
                let socket = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                if let Some(ip) = local {
                    socket.bind(std::net::SocketAddr::new(ip, 0))?;
                }
                let tcp = socket.connect(addr).await?;
                tcp.set_nodelay(true)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(StuckIo { tcp, stop_reading }))
            }
        });
        ep.connect_with_connector(connector)
            .await
            .map_err(|e| format!("connect: {e}"))
    }

    /// Once synced, a stuck proxy stops reading its socket.
    fn maybe_get_stuck(&mut self) {
        if self.synced
            && !self.stuck_now
            && let Some(flag) = &self.stuck_io
        {
            flag.store(true, Ordering::Relaxed);
            self.stuck_now = true;
            self.stats.stuck_after = Some(self.started_at.elapsed());
            self.shared.stuck.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One connection and stream, until it ends or the run stops.
    async fn session(&mut self, spec: &ProxySpec) -> Ended {
        let failed = |error: String| Ended::Failed {
            error,
            responses: 0,
        };
        let mut stop = self.shared.stop.clone();
        let channel = tokio::select! {
            c = self.connect(spec) => match c {
                Ok(c) => c,
                Err(e) => return failed(e),
            },
            _ = stop.wait_for(|s| *s) => return Ended::Stopped,
        };
        self.stats.connects += 1;
        if self.stats.connected_after.is_none() {
            self.stats.connected_after = Some(self.started_at.elapsed());
        }
        let mut grpc =
            tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        // A new stream: nothing requested on it yet, no nonce to answer.
        for t in &mut self.types {
            t.requested = false;
            t.nonce.clear();
        }
        if let Err(e) = grpc.ready().await {
            return failed(format!("channel: {e}"));
        }
        self.shared.connected.fetch_add(1, Ordering::Relaxed);
        // The opening requests are queued before the call, so they go out
        // with the stream's headers.
        let ended = if self.delta {
            let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
            let tx = Tx::Delta(tx);
            let codec = LiteCodec::<DeltaDiscoveryRequest, LiteDeltaResponse>::default();
            let path = http::uri::PathAndQuery::from_static(DELTA_PATH);
            match self.open_all(&tx).await {
                Err(()) => Ended::closed(0),
                Ok(()) => {
                    let call = grpc.streaming(Request::new(ReceiverStream::new(rx)), path, codec);
                    match self.call(call).await {
                        Ok(s) => {
                            let s = s.map(|r| r.map(Resp::Delta)).boxed();
                            self.serve(tx, s, spec.kick.as_deref()).await
                        }
                        Err(e) => e,
                    }
                }
            }
        } else {
            let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
            let tx = Tx::Sotw(tx);
            let codec = LiteCodec::<SotwRequestOut, LiteResponse>::default();
            let path = http::uri::PathAndQuery::from_static(SOTW_PATH);
            match self.open_all(&tx).await {
                Err(()) => Ended::closed(0),
                Ok(()) => {
                    let call = grpc.streaming(Request::new(ReceiverStream::new(rx)), path, codec);
                    match self.call(call).await {
                        Ok(s) => {
                            let s = s.map(|r| r.map(Resp::Sotw)).boxed();
                            self.serve(tx, s, spec.kick.as_deref()).await
                        }
                        Err(e) => e,
                    }
                }
            }
        };
        self.shared.connected.fetch_sub(1, Ordering::Relaxed);
        ended
    }

    /// The opening requests of a stream: the wildcards, then what the proxy
    /// already had (after a reconnect). The node goes on the first only.
    async fn open_all(&mut self, tx: &Tx) -> Result<(), ()> {
        let mut node = Some(self.node.clone());
        for t in ROOTS.into_iter().chain(DEPENDENTS) {
            if is_root(t) || !self.types[ix(t)].names.is_empty() {
                self.open(tx, t, node.take()).await?;
            }
        }
        Ok(())
    }

    /// Waits for the call's response headers (or the end of the run).
    async fn call<T>(
        &self,
        call: impl std::future::Future<
            Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
        >,
    ) -> Result<tonic::Streaming<T>, Ended> {
        let mut stop = self.shared.stop.clone();
        tokio::select! {
            r = call => r.map(|r| r.into_inner()).map_err(|status| Ended::Failed {
                error: format!("call: {status}"),
                responses: 0,
            }),
            _ = stop.wait_for(|s| *s) => Err(Ended::Stopped),
        }
    }

    /// Handles responses until the stream ends, the proxy is kicked or the
    /// run stops. A stuck proxy, once synced, only waits for the end.
    async fn serve(
        &mut self,
        tx: Tx,
        mut inbound: BoxStream<'static, Result<Resp, tonic::Status>>,
        kick: Option<&Notify>,
    ) -> Ended {
        let mut stop = self.shared.stop.clone();
        let mut responses = 0;
        loop {
            self.maybe_get_stuck();
            if self.stuck_now {
                let _ = stop.wait_for(|s| *s).await;
                return Ended::Stopped;
            }
            let kicked = async {
                match kick {
                    Some(k) => k.notified().await,
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                m = inbound.next() => m,
                _ = kicked => return Ended::Churned,
                _ = stop.wait_for(|s| *s) => return Ended::Stopped,
            };
            let handled = match msg {
                Some(Ok(Resp::Sotw(r))) => self.on_sotw(&tx, r).await,
                Some(Ok(Resp::Delta(r))) => self.on_delta(&tx, r).await,
                Some(Err(status)) => {
                    return Ended::Failed {
                        error: format!("stream: {status}"),
                        responses,
                    };
                }
                None => {
                    return Ended::Failed {
                        error: "stream ended by server".into(),
                        responses,
                    };
                }
            };
            responses += 1;
            if handled.is_err() {
                return Ended::closed(responses);
            }
        }
    }

    /// The first request of type `t` on a stream: wildcard for the roots, the
    /// names for the others; with what the proxy already has (reconnect).
    async fn open(&mut self, tx: &Tx, t: XdsType, node: Option<Node>) -> Result<(), ()> {
        let st = &mut self.types[ix(t)];
        st.requested = true;
        match tx {
            Tx::Sotw(_) => {
                let req = SotwRequestOut {
                    node,
                    ..self.sotw_request(t)
                };
                tx.sotw(req).await
            }
            Tx::Delta(_) => {
                let req = DeltaDiscoveryRequest {
                    node,
                    type_url: t.type_url().to_string(),
                    resource_names_subscribe: st.names.iter().map(|n| n.to_string()).collect(),
                    initial_resource_versions: st
                        .have
                        .iter()
                        .map(|(k, (v, _))| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                };
                tx.delta(req).await
            }
        }
    }

    /// A SotW request (or ACK) of type `t` as Envoy sends it: the last
    /// version and nonce, and the full list of names.
    fn sotw_request(&self, t: XdsType) -> SotwRequestOut {
        let st = &self.types[ix(t)];
        SotwRequestOut {
            version_info: st.version.clone(),
            names: st.names_wire.clone(),
            type_url: t.type_url().to_string(),
            response_nonce: st.nonce.clone(),
            ..Default::default()
        }
    }

    /// The type of a response, counted; None (and counted as unrequested)
    /// for a type the proxy did not ask for.
    fn accept(&mut self, type_url: &str, bytes: usize) -> Option<XdsType> {
        let t = XdsType::from_type_url(type_url).filter(|t| slot(*t).is_some());
        let Some(t) = t else {
            self.stats.unrequested += 1;
            return None;
        };
        self.stats.bytes[ix(t)] += bytes as u64;
        self.stats.responses[ix(t)] += 1;
        self.shared.responses.fetch_add(1, Ordering::Relaxed);
        self.shared.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if !self.types[ix(t)].requested {
            self.stats.unrequested += 1;
            return None;
        }
        Some(t)
    }

    async fn on_sotw(&mut self, tx: &Tx, resp: Sized<LiteResponse>) -> Result<(), ()> {
        let received = Instant::now();
        let Sized { bytes, msg } = resp;
        let Some(t) = self.accept(&msg.type_url, bytes) else {
            return Ok(());
        };
        let set = self.shared.cache.set(t, &msg.resources);
        self.stats.resources[ix(t)] = msg.resources.len();
        let synced = self.synced;
        let st = &mut self.types[ix(t)];
        if st.acked && st.version == msg.version_info {
            self.stats.redundant[ix(t)] += 1;
        }
        st.version = msg.version_info;
        st.nonce = msg.nonce;
        st.acked = true;
        if !synced && !is_root(t) {
            st.answered.extend(set.names.iter().cloned());
        }
        if is_root(t) {
            st.set = Some(set);
        }
        let floor = floor_push(&st.version);
        // ACK, then follow what the new set leads to.
        tx.sotw(self.sotw_request(t)).await?;
        for d in dependents_of(t) {
            let wanted = self.wanted(*d);
            let ds = &mut self.types[ix(*d)];
            if !same_names(&ds.names, &wanted) {
                ds.names_wire = encode_names(wanted.iter().map(|n| &**n));
                ds.names = wanted;
                if !ds.names.is_empty() || ds.requested {
                    ds.requested = true;
                    tx.sotw(self.sotw_request(*d)).await?;
                }
            }
        }
        self.after_response(t, received, floor);
        Ok(())
    }

    async fn on_delta(&mut self, tx: &Tx, resp: Sized<LiteDeltaResponse>) -> Result<(), ()> {
        let received = Instant::now();
        let Sized { bytes, msg } = resp;
        let Some(t) = self.accept(&msg.type_url, bytes) else {
            return Ok(());
        };
        let synced = self.synced;
        let cache = &self.shared.cache;
        let st = &mut self.types[ix(t)];
        for r in &msg.resources {
            let info = match &r.resource {
                Some(any) => cache.info(t, &any.value),
                None => Arc::new(ResourceInfo::default()),
            };
            let name = cache.intern(&r.name);
            let version = cache.intern(&r.version);
            if let Some((old, _)) = st.have.get(&name)
                && *old == version
            {
                self.stats.redundant[ix(t)] += 1;
            }
            if !synced && !is_root(t) {
                st.answered.insert(Arc::clone(&name));
            }
            st.have.insert(name, (version, info));
        }
        for name in &msg.removed_resources {
            st.have.remove(name.as_str());
            if !synced && !is_root(t) {
                st.answered.insert(cache.intern(name));
            }
        }
        if !synced && !is_root(t) {
            // After a reconnect the server leaves out what the proxy still
            // has (its initial versions): held names are answered too.
            st.answered.extend(st.have.keys().cloned());
        }
        st.acked = true;
        self.stats.resources[ix(t)] = st.have.len();
        let floor = floor_push(&msg.system_version_info);
        let ack = DeltaDiscoveryRequest {
            type_url: msg.type_url,
            response_nonce: msg.nonce,
            ..Default::default()
        };
        tx.delta(ack).await?;
        for d in dependents_of(t) {
            let wanted = self.wanted(*d);
            let ds = &mut self.types[ix(*d)];
            if same_names(&ds.names, &wanted) {
                continue;
            }
            let old: BTreeSet<&Arc<str>> = ds.names.iter().collect();
            let new: BTreeSet<&Arc<str>> = wanted.iter().collect();
            let subscribe: Vec<String> = new.difference(&old).map(|n| n.to_string()).collect();
            let unsubscribe: Vec<String> = old.difference(&new).map(|n| n.to_string()).collect();
            for gone in &unsubscribe {
                ds.have.remove(gone.as_str());
            }
            ds.names = wanted;
            if ds.requested {
                let req = DeltaDiscoveryRequest {
                    type_url: d.type_url().to_string(),
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..Default::default()
                };
                tx.delta(req).await?;
            } else if !ds.names.is_empty() {
                self.open(tx, *d, None).await?;
            }
        }
        self.after_response(t, received, floor);
        Ok(())
    }

    /// The names of named type `d` the roots' resources lead to, sorted.
    fn wanted(&self, d: XdsType) -> Arc<[Arc<str>]> {
        let roots: Vec<XdsType> = ROOTS
            .into_iter()
            .filter(|r| dependents_of(*r).contains(&d))
            .collect();
        if !self.delta
            && let [root] = roots[..]
        {
            // One SotW root: its set's list, shared by every proxy with that set.
            return self.types[ix(root)]
                .set
                .as_ref()
                .map(|s| Arc::clone(s.leads_to(d)))
                .unwrap_or_default();
        }
        let mut out: BTreeSet<Arc<str>> = BTreeSet::new();
        for r in roots {
            let st = &self.types[ix(r)];
            if self.delta {
                for (_, info) in st.have.values() {
                    out.extend(info.leads_to(d).iter().cloned());
                }
            } else if let Some(set) = &st.set {
                out.extend(set.leads_to(d).iter().cloned());
            }
        }
        out.into_iter().collect()
    }

    /// After a response of type `t` (received at `received`) was ACKed:
    /// convergence of changes, floor push latency, initial sync.
    fn after_response(&mut self, t: XdsType, received: Instant, floor: Option<(u64, u64)>) {
        let now = Instant::now();
        {
            let marks = self
                .shared
                .changes
                .read()
                .unwrap_or_else(|e| e.into_inner());
            while self.stats.changes.len() < marks.len() {
                self.stats.changes.push([None; N]);
            }
            for (m, mark) in marks.iter().enumerate() {
                if mark.at > received {
                    break;
                }
                let slot = &mut self.stats.changes[m][ix(t)];
                if slot.is_none() {
                    *slot = Some(now - mark.at);
                    if t == mark.primary {
                        mark.converged.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        // Floor pushes count once the proxy is synced: during its initial
        // sync a push waits behind the large first responses.
        if let Some((seq, micros)) = floor
            && self.synced
            && seq > self.last_floor_push
            && self.stats.floor_pushes.len() < MAX_FLOOR_PUSHES
        {
            self.last_floor_push = seq;
            let sent = UNIX_EPOCH + Duration::from_micros(micros);
            let latency = SystemTime::now().duration_since(sent).unwrap_or_default();
            self.stats.floor_pushes.push((seq, latency));
        }
        if !self.synced && self.is_synced() {
            self.synced = true;
            if self.stats.synced_after.is_none() {
                self.stats.synced_after = Some(now - self.started_at);
                self.stats.sync_bytes = self.stats.bytes;
            } else if let Some(lost) = self.lost_at.take() {
                let churned = std::mem::take(&mut self.churn_pending);
                self.stats.resyncs.push((churned, now - lost));
            }
            for st in &mut self.types {
                st.answered = HashSet::new();
            }
            self.shared.synced.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_synced(&self) -> bool {
        ROOTS.iter().all(|t| self.types[ix(*t)].acked)
            && DEPENDENTS.iter().all(|t| {
                let st = &self.types[ix(*t)];
                st.names.is_empty()
                    || (st.acked && st.names.iter().all(|n| st.answered.contains(n)))
            })
    }
}

fn same_names(a: &Arc<[Arc<str>]>, b: &Arc<[Arc<str>]>) -> bool {
    Arc::ptr_eq(a, b) || a[..] == b[..]
}

/// `(push number, unix micros)` of a floor server's timed push version.
fn floor_push(version: &str) -> Option<(u64, u64)> {
    let rest = version.strip_prefix(FLOOR_PUSH_PREFIX)?;
    let (seq, micros) = rest.split_once('-')?;
    Some((seq.parse().ok()?, micros.parse().ok()?))
}

/// A proxy's TCP connection that stops returning data once `stop_reading`
/// is set: the kernel's receive buffer fills, then the server's send
/// buffer, as with an Envoy whose event loop is wedged. Writes go through.
struct StuckIo {
    tcp: tokio::net::TcpStream,
    stop_reading: Arc<AtomicBool>,
}

impl AsyncRead for StuckIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.stop_reading.load(Ordering::Relaxed) {
            // Never ready again, and never woken: nothing is read any more.
            return Poll::Pending;
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for StuckIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
