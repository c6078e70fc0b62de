//! The floor: the least an ADS server on pilotfish's gRPC stack (tonic's
//! server with envoy-types' generated `AggregatedDiscoveryService`) can do to
//! serve responses of given sizes to N streams. pilotfish's times are read
//! as a ratio to it.
//!
//! One response per type is built at start: `--clusters` clusters (CDS, and
//! as many EDS assignments), `--listeners` listeners whose
//! HttpConnectionManager names one of `--routes` route tables (RDS). Each
//! resource is the minimal real message (name, EDS type, RDS name) padded
//! with an unknown field to about `--X-bytes / count` bytes, so the loadgen
//! follows CDS to EDS and LDS to RDS as it does with pilotfish. With
//! `--opaque` the resources are zero-filled blobs of the same sizes that do
//! not decode: the loadgen then requests only CDS and LDS.
//!
//! The floor answers a request when it opens a type or changes the names
//! asked for, and ignores ACKs and NACKs. Every `--push-every` seconds it
//! pushes the response of each `--push-types` type to every stream that
//! asked for it, with version `floor-push-SEQ-UNIXMICROS` (the send time), so
//! the loadgen measures fan-out latency without a clock of its own.
//!
//! Unlike pilotfish, which writes shared pre-encoded bytes, each send here
//! clones the built response and tonic encodes it into the stream's buffer:
//! the cost of a stock tonic ADS server, not a theoretical minimum.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::proxy::FLOOR_PUSH_PREFIX;
use super::wire::{HCM_TYPE_URL, N, TYPES, ix};
use crate::xds::translate::ads_config_source;
use crate::xds::types::XdsType;

/// Field number of the padding: the largest valid one, unknown to every Envoy message.
const PAD_FIELD: u32 = (1 << 29) - 1;
/// Responses queued per stream before its task waits (as pilotfish's queue).
const STREAM_QUEUE: usize = 4;
/// Timed pushes a slow stream may fall behind before it skips some.
const PUSH_BACKLOG: usize = 16;
/// Largest request accepted, as pilotfish.
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// An xDS type as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TypeArg {
    Cds,
    Eds,
    Lds,
    Rds,
}

impl TypeArg {
    pub fn xds(self) -> XdsType {
        match self {
            TypeArg::Cds => XdsType::Cluster,
            TypeArg::Eds => XdsType::Endpoint,
            TypeArg::Lds => XdsType::Listener,
            TypeArg::Rds => XdsType::Route,
        }
    }
}

/// Arguments of `pilotfish loadgen floor`.
#[derive(clap::Args, Debug, Clone)]
pub struct FloorArgs {
    /// Listen address (HOST:PORT; port 0 picks one, printed at start).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Bytes of resources in the CDS response.
    #[arg(long, default_value_t = 100_000)]
    pub cds_bytes: usize,
    /// Bytes of resources in the EDS response.
    #[arg(long, default_value_t = 100_000)]
    pub eds_bytes: usize,
    /// Bytes of resources in the LDS response.
    #[arg(long, default_value_t = 10_000)]
    pub lds_bytes: usize,
    /// Bytes of resources in the RDS response.
    #[arg(long, default_value_t = 100_000)]
    pub rds_bytes: usize,
    /// Clusters in the CDS response (and assignments in the EDS one).
    #[arg(long, default_value_t = 100)]
    pub clusters: usize,
    /// Listeners in the LDS response.
    #[arg(long, default_value_t = 2)]
    pub listeners: usize,
    /// Route tables in the RDS response (the listeners name them in turn).
    #[arg(long, default_value_t = 1)]
    pub routes: usize,
    /// Push to every stream this often (seconds); never when absent.
    #[arg(long)]
    pub push_every: Option<f64>,
    /// Types pushed on the timer (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cds,eds,lds,rds"
    )]
    pub push_types: Vec<TypeArg>,
    /// Resources are zero-filled blobs that do not decode as their type.
    #[arg(long)]
    pub opaque: bool,
    /// Timed EDS and RDS pushes carry only the type's first resource, padded
    /// to about this many bytes, as pilotfish pushes only what changed (a
    /// response of these types need not repeat the others). The streams
    /// keep subscribing to every resource, so their ACKs are as large as
    /// with pilotfish. CDS and LDS pushes stay whole (their responses are
    /// the full set). Default: every push is the whole response.
    #[arg(long)]
    pub push_bytes: Option<usize>,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub duration: Option<f64>,
}

/// The built responses, one per type (indexed by `XdsType::index`).
#[derive(Debug)]
struct Built {
    sotw: [Vec<Any>; N],
    delta: [Vec<Resource>; N],
    /// What timed pushes carry (see `--push-bytes`).
    push_sotw: [Vec<Any>; N],
    push_delta: [Vec<Resource>; N],
}

/// A timed push: its number and when it was sent (unix micros).
#[derive(Clone, Copy, Debug)]
struct Push {
    seq: u64,
    micros: u64,
}

#[derive(Clone, Debug)]
struct Floor {
    built: Arc<Built>,
    pushes: broadcast::Sender<Push>,
    push_types: [bool; N],
}

/// Appends an unknown length-delimited field so `value` is about `target` bytes.
fn pad(mut value: Vec<u8>, target: usize) -> Vec<u8> {
    const OVERHEAD: usize = 5 + 4; // key of PAD_FIELD, length varint
    if value.len() + OVERHEAD < target {
        let n = target - value.len() - OVERHEAD;
        encode_key(PAD_FIELD, WireType::LengthDelimited, &mut value);
        encode_varint(n as u64, &mut value);
        value.resize(value.len() + n, 0);
    }
    value
}

fn build(args: &FloorArgs) -> Built {
    let clusters = args.clusters.max(1);
    let listeners = args.listeners.max(1);
    let routes = args.routes.max(1);
    let cluster_name = |i: usize| format!("floor-c-{i}");
    let route_name = |i: usize| format!("floor-r-{i}");
    let per = |bytes: usize, n: usize| bytes / n;
    let mut items: [Vec<(String, Vec<u8>)>; N] = Default::default();
    items[ix(XdsType::Cluster)] = (0..clusters)
        .map(|i| {
            let c = Cluster {
                name: cluster_name(i),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
                eds_cluster_config: Some(EdsClusterConfig {
                    eds_config: Some(ads_config_source()),
                    service_name: cluster_name(i),
                }),
                ..Default::default()
            };
            (cluster_name(i), c.encode_to_vec())
        })
        .collect();
    items[ix(XdsType::Endpoint)] = (0..clusters)
        .map(|i| {
            let a = ClusterLoadAssignment {
                cluster_name: cluster_name(i),
                ..Default::default()
            };
            (cluster_name(i), a.encode_to_vec())
        })
        .collect();
    items[ix(XdsType::Listener)] = (0..listeners)
        .map(|i| {
            let hcm = HttpConnectionManager {
                stat_prefix: "floor".into(),
                route_specifier: Some(RouteSpecifier::Rds(Rds {
                    config_source: Some(ads_config_source()),
                    route_config_name: route_name(i % routes),
                })),
                ..Default::default()
            };
            let l = Listener {
                name: format!("floor-l-{i}"),
                filter_chains: vec![FilterChain {
                    filters: vec![Filter {
                        name: "envoy.filters.network.http_connection_manager".into(),
                        config_type: Some(filter::ConfigType::TypedConfig(Any {
                            type_url: HCM_TYPE_URL.into(),
                            value: hcm.encode_to_vec(),
                        })),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            (l.name.clone(), l.encode_to_vec())
        })
        .collect();
    items[ix(XdsType::Route)] = (0..routes)
        .map(|i| {
            let r = RouteConfiguration {
                name: route_name(i),
                ..Default::default()
            };
            (route_name(i), r.encode_to_vec())
        })
        .collect();

    let bytes = [
        args.cds_bytes,
        args.eds_bytes,
        args.lds_bytes,
        args.rds_bytes,
        0, // no secrets: nothing the floor serves names one
    ];
    let mut built = Built {
        sotw: Default::default(),
        delta: Default::default(),
        push_sotw: Default::default(),
        push_delta: Default::default(),
    };
    for t in TYPES {
        let list = std::mem::take(&mut items[ix(t)]);
        let target = per(bytes[ix(t)], list.len().max(1));
        for (name, value) in list {
            let value = if args.opaque {
                vec![0; target.max(1)]
            } else {
                pad(value, target)
            };
            let any = Any {
                type_url: t.type_url().to_string(),
                value,
            };
            let version = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&any.value));
            built.delta[ix(t)].push(Resource {
                name,
                version,
                resource: Some(any.clone()),
                ..Default::default()
            });
            built.sotw[ix(t)].push(any);
        }
        let partial = matches!(t, XdsType::Endpoint | XdsType::Route);
        match (args.push_bytes, built.delta[ix(t)].first()) {
            (Some(target), Some(first)) if partial && !args.opaque => {
                let mut r = first.clone();
                let value = std::mem::take(&mut r.resource.as_mut().expect("built above").value);
                let unpadded = strip_pad(value);
                let any = Any {
                    type_url: t.type_url().to_string(),
                    value: pad(unpadded, target),
                };
                r.version = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&any.value));
                r.resource = Some(any.clone());
                built.push_sotw[ix(t)] = vec![any];
                built.push_delta[ix(t)] = vec![r];
            }
            _ => {
                built.push_sotw[ix(t)] = built.sotw[ix(t)].clone();
                built.push_delta[ix(t)] = built.delta[ix(t)].clone();
            }
        }
    }
    built
}

/// `value` without the padding [`pad`] appended (the message's own fields
/// come first).
fn strip_pad(value: Vec<u8>) -> Vec<u8> {
    let mut buf = value.as_slice();
    let mut end = 0;
    while !buf.is_empty() {
        let before = buf.len();
        let Ok(key) = prost::encoding::decode_varint(&mut buf) else {
            break;
        };
        if (key >> 3) as u32 == PAD_FIELD {
            return value[..end].to_vec();
        }
        let ctx = prost::encoding::DecodeContext::default();
        let Ok(wt) = WireType::try_from(key & 7) else {
            break;
        };
        if prost::encoding::skip_field(wt, (key >> 3) as u32, &mut buf, ctx).is_err() {
            break;
        }
        end += before - buf.len();
    }
    value
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

fn push_version(p: &Push) -> String {
    format!("{FLOOR_PUSH_PREFIX}{}-{}", p.seq, p.micros)
}

const INITIAL_VERSION: &str = "floor-initial";

#[tonic::async_trait]
impl AggregatedDiscoveryService for Floor {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut pushes = self.pushes.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            let mut names: [Option<Vec<String>>; N] = Default::default();
            let mut nonce = 0u64;
            let respond = |t: XdsType, version: String, nonce: &mut u64, push: bool| {
                *nonce += 1;
                let built = if push {
                    &this.built.push_sotw
                } else {
                    &this.built.sotw
                };
                DiscoveryResponse {
                    version_info: version,
                    resources: built[ix(t)].clone(),
                    type_url: t.type_url().to_string(),
                    nonce: nonce.to_string(),
                    ..Default::default()
                }
            };
            loop {
                tokio::select! {
                    req = inbound.message() => {
                        let Ok(Some(req)) = req else { break };
                        let Some(t) = XdsType::from_type_url(&req.type_url) else { continue };
                        let slot = &mut names[ix(t)];
                        if req.response_nonce.is_empty() || slot.as_ref() != Some(&req.resource_names) {
                            *slot = Some(req.resource_names);
                            let r = respond(t, INITIAL_VERSION.into(), &mut nonce, false);
                            if tx.send(Ok(r)).await.is_err() { break; }
                        }
                    }
                    p = pushes.recv() => match p {
                        Ok(p) => {
                            for t in TYPES {
                                if names[ix(t)].is_some() && this.push_types[ix(t)] {
                                    let r = respond(t, push_version(&p), &mut nonce, true);
                                    if tx.send(Ok(r)).await.is_err() { return; }
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut pushes = self.pushes.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            let mut requested = [false; N];
            let mut nonce = 0u64;
            let respond = |t: XdsType, version: String, nonce: &mut u64, push: bool| {
                *nonce += 1;
                let built = if push {
                    &this.built.push_delta
                } else {
                    &this.built.delta
                };
                DeltaDiscoveryResponse {
                    system_version_info: version,
                    resources: built[ix(t)].clone(),
                    type_url: t.type_url().to_string(),
                    nonce: nonce.to_string(),
                    ..Default::default()
                }
            };
            loop {
                tokio::select! {
                    req = inbound.message() => {
                        let Ok(Some(req)) = req else { break };
                        let Some(t) = XdsType::from_type_url(&req.type_url) else { continue };
                        if req.response_nonce.is_empty() || !req.resource_names_subscribe.is_empty() {
                            requested[ix(t)] = true;
                            let r = respond(t, INITIAL_VERSION.into(), &mut nonce, false);
                            if tx.send(Ok(r)).await.is_err() { break; }
                        }
                    }
                    p = pushes.recv() => match p {
                        Ok(p) => {
                            for t in TYPES {
                                if requested[ix(t)] && this.push_types[ix(t)] {
                                    let r = respond(t, push_version(&p), &mut nonce, true);
                                    if tx.send(Ok(r)).await.is_err() { return; }
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the floor on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    args: FloorArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (pushes, _) = broadcast::channel(PUSH_BACKLOG);
    let mut push_types = [false; N];
    for t in &args.push_types {
        push_types[ix(t.xds())] = true;
    }
    let floor = Floor {
        built: Arc::new(build(&args)),
        pushes: pushes.clone(),
        push_types,
    };
    let timer = args.push_every.filter(|s| *s > 0.0).map(|every| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(every));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            let mut seq = 0;
            loop {
                tick.tick().await;
                seq += 1;
                // No receivers (no streams yet) is fine.
                let _ = pushes.send(Push {
                    seq,
                    micros: unix_micros(),
                });
            }
        })
    });
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = tonic::transport::Server::builder()
        .add_service(
            AggregatedDiscoveryServiceServer::new(floor)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("floor server");
    if let Some(t) = timer {
        t.abort();
    }
    result
}

/// `pilotfish loadgen floor`.
pub async fn run(args: FloorArgs) -> Result<()> {
    let listener =
        crate::xds::server::listen(args.listen).with_context(|| format!("bind {}", args.listen))?;
    let addr = listener.local_addr()?;
    let built = build(&args);
    let sizes: Vec<String> = TYPES
        .iter()
        .map(|t| {
            let v = &built.sotw[ix(*t)];
            format!(
                "{} {} resources {} bytes",
                t.short(),
                v.len(),
                v.iter().map(|a| a.value.len()).sum::<usize>()
            )
        })
        .collect();
    println!("floor listening on {addr}: {}", sizes.join(", "));
    let duration = args.duration;
    let shutdown = async move {
        match duration {
            Some(s) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(s)) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    serve(listener, args, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_bytes_makes_timed_eds_pushes_one_resource_of_that_size() {
        let args = FloorArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            cds_bytes: 30_000,
            eds_bytes: 20_000,
            lds_bytes: 1_000,
            rds_bytes: 5_000,
            clusters: 100,
            listeners: 1,
            routes: 1,
            push_every: Some(1.0),
            push_types: vec![TypeArg::Eds],
            push_bytes: Some(700),
            opaque: false,
            duration: None,
        };
        let b = build(&args);
        let eds = ix(XdsType::Endpoint);
        // The initial answer: every assignment, padded to share the bytes.
        assert_eq!(b.sotw[eds].len(), 100);
        assert!(b.sotw[eds].iter().all(|a| a.value.len() <= 200));
        // A timed push: the first assignment alone, about 700 bytes, still
        // a ClusterLoadAssignment for the name the proxies subscribe to.
        let [push] = b.push_sotw[eds].as_slice() else {
            panic!("one resource")
        };
        assert!(
            (690..=700).contains(&push.value.len()),
            "{}",
            push.value.len()
        );
        let cla = ClusterLoadAssignment::decode(push.value.as_slice()).unwrap();
        assert_eq!(cla.cluster_name, "floor-c-0");
        assert_eq!(b.push_delta[eds][0].name, "floor-c-0");
        assert_ne!(b.push_delta[eds][0].version, b.delta[eds][0].version);
        // CDS pushes stay whole: a SotW CDS response is the full set.
        let cds = ix(XdsType::Cluster);
        assert_eq!(b.push_sotw[cds], b.sotw[cds]);
        // Without the flag every push is the whole response.
        let b = build(&FloorArgs {
            push_bytes: None,
            ..args
        });
        assert_eq!(b.push_sotw[eds], b.sotw[eds]);
    }

    #[test]
    fn strip_pad_finds_the_message_under_its_padding() {
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(strip_pad(pad(cla.clone(), 500)), cla);
        assert_eq!(strip_pad(cla.clone()), cla);
    }
}
