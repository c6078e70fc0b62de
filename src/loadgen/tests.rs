use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::google::protobuf::{Any, value::Kind as ValueKind};
use prost::Message;
use tokio::sync::watch;

use super::floor::{self, FloorArgs, TypeArg};
use super::proxy::node_for;
use super::report::Report;
use super::run::{RunArgs, run_load};
use super::scenario::{self, ChangeKind, ScenarioParams, WorkloadRef};
use super::wire::{DecodeCache, HCM_TYPE_URL};
use crate::config::{self, parse_file};
use crate::metrics::Metrics;
use crate::model::Kind;
use crate::xds::cache::XdsSnapshot;
use crate::xds::server::{self, AdsShared, status::SyncRegistry};
use crate::xds::types::XdsType;

fn mk_params(
    services: usize,
    endpoints: usize,
    namespaces: usize,
    routes: usize,
) -> ScenarioParams {
    ScenarioParams {
        services,
        endpoints,
        namespaces,
        routes,
    }
}

/// Every file of `dir` (hidden ones included), name -> content.
fn read_dir(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Parses every YAML file of `dir`, asserting no errors; counts resources by kind.
fn parse_all(dir: &Path) -> BTreeMap<Kind, usize> {
    let mut kinds = BTreeMap::new();
    for (name, text) in read_dir(dir) {
        if !name.ends_with(".yaml") {
            continue;
        }
        let parsed = parse_file(&dir.join(&name), &text);
        assert!(parsed.errors.is_empty(), "{name}: {:?}", parsed.errors);
        assert!(parsed.skipped.is_empty(), "{name}: {:?}", parsed.skipped);
        for r in parsed.resources {
            *kinds.entry(r.spec.kind()).or_default() += 1;
        }
    }
    kinds
}

#[test]
fn scenario_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    scenario::generate(a.path(), mk_params(7, 3, 2, 4)).unwrap();
    scenario::generate(b.path(), mk_params(7, 3, 2, 4)).unwrap();
    let (fa, fb) = (read_dir(a.path()), read_dir(b.path()));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        [
            ".loadgen-scenario.json",
            "extra.yaml",
            "routing.yaml",
            "services.yaml",
            "workloads.yaml"
        ]
    );
    assert_eq!(fa, fb);
    // The same changes give the same files too.
    for kind in [
        ChangeKind::Endpoint,
        ChangeKind::Virtualservice,
        ChangeKind::Service,
    ] {
        scenario::change(a.path(), kind, None).unwrap();
        scenario::change(b.path(), kind, None).unwrap();
    }
    assert_eq!(read_dir(a.path()), read_dir(b.path()));
}

#[test]
fn generated_files_parse_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let files = scenario::generate(dir.path(), mk_params(12, 2, 3, 5)).unwrap();
    assert_eq!(files.len(), 4);
    let kinds = parse_all(dir.path());
    assert_eq!(kinds.get(&Kind::ServiceEntry), Some(&12));
    assert_eq!(kinds.get(&Kind::WorkloadEntry), Some(&24));
    assert_eq!(kinds.get(&Kind::DestinationRule), Some(&12));
    assert_eq!(kinds.get(&Kind::VirtualService), Some(&5));

    // The whole config loads, every workload is selected, nothing is warned about.
    let (_, state) = config::watch::load(dir.path(), &Metrics::default()).unwrap();
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    let registry = crate::model::Registry::build(&state.snapshot);
    assert!(registry.warnings.is_empty(), "{:?}", registry.warnings);
    assert_eq!(registry.services.len(), 12);
    assert_eq!(registry.workloads.len(), 24);

    // Workload addresses are distinct loopback addresses; names match the files.
    let workloads = scenario::read_workloads(dir.path()).unwrap();
    assert_eq!(workloads.len(), 24);
    let mut addrs: Vec<&str> = workloads
        .iter()
        .map(|w| w.address.as_deref().unwrap())
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 24);
    assert!(addrs.iter().all(|a| {
        a.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
    }));
    for w in &workloads {
        assert!(
            registry
                .workloads
                .keys()
                .any(|k| k.name == w.name && k.namespace == w.namespace),
            "{w:?}"
        );
    }
}

#[test]
fn changes_write_valid_files_that_differ_as_intended() {
    let dir = tempfile::tempdir().unwrap();
    scenario::generate(dir.path(), mk_params(6, 2, 1, 3)).unwrap();
    let base = parse_all(dir.path());
    let mut before = read_dir(dir.path());

    // Applies a change, checks it rewrote exactly the files it names.
    fn apply(
        dir: &Path,
        before: &mut BTreeMap<String, String>,
        kind: ChangeKind,
    ) -> (scenario::ChangeSummary, BTreeMap<Kind, usize>) {
        let summary = scenario::change(dir, kind, None).unwrap();
        let after = read_dir(dir);
        let changed: Vec<String> = after
            .iter()
            .filter(|(k, v)| k.ends_with(".yaml") && before.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(changed, summary.files, "{summary:?}");
        assert!(!after.keys().any(|k| k.ends_with(".tmp")));
        *before = after;
        (summary, parse_all(dir))
    }
    let d = dir.path();

    let (s, kinds) = apply(d, &mut before, ChangeKind::Endpoint);
    assert_eq!(s.seq, 1);
    assert!(s.description.starts_with("added WorkloadEntry"), "{s:?}");
    assert_eq!(kinds[&Kind::WorkloadEntry], base[&Kind::WorkloadEntry] + 1);

    let (s, kinds) = apply(d, &mut before, ChangeKind::Endpoint);
    assert!(s.description.starts_with("removed WorkloadEntry"), "{s:?}");
    assert_eq!(kinds[&Kind::WorkloadEntry], base[&Kind::WorkloadEntry]);

    let routing_before = before["routing.yaml"].clone();
    let (s, kinds) = apply(d, &mut before, ChangeKind::Virtualservice);
    assert!(s.description.contains("weights 90/10 ->"), "{s:?}");
    assert_eq!(kinds, base);
    let after = &before["routing.yaml"];
    let diff: Vec<(&str, &str)> = routing_before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(diff.len(), 2, "{diff:?}"); // the two weights of one VirtualService
    assert!(diff.iter().all(|(a, _)| a.trim().starts_with("weight:")));

    let (s, kinds) = apply(d, &mut before, ChangeKind::Service);
    assert!(s.description.starts_with("added ServiceEntry"), "{s:?}");
    assert_eq!(kinds[&Kind::ServiceEntry], base[&Kind::ServiceEntry] + 1);

    let routing_before = before["routing.yaml"].clone();
    let (s, _) = apply(d, &mut before, ChangeKind::Subset);
    assert!(
        s.description.contains("subset v2 now selects version v1"),
        "{s:?}"
    );
    let diff: Vec<(&str, &str)> = routing_before
        .lines()
        .zip(before["routing.yaml"].lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        diff,
        [("    labels: {version: v2}", "    labels: {version: v1}")]
    );

    // An explicit --seq picks the service.
    let s = scenario::change(dir.path(), ChangeKind::Subset, Some(9)).unwrap();
    assert_eq!(s.seq, 9);
    assert!(s.description.contains("svc-0003"), "{s:?}");
    // The result still loads as a whole.
    let (_, state) = config::watch::load(dir.path(), &Metrics::default()).unwrap();
    assert!(state.errors.is_empty(), "{:?}", state.errors);
}

#[test]
fn node_is_the_one_pilotfish_bootstrap_writes() {
    let w = WorkloadRef {
        namespace: "mesh-1".into(),
        name: "svc-0001-0".into(),
        address: Some("127.100.0.2".into()),
    };
    let node = node_for(&w, true);
    assert_eq!(
        node.id,
        "sidecar~127.100.0.2~svc-0001-0.mesh-1~mesh-1.svc.cluster.local"
    );
    let md = node.metadata.unwrap().fields;
    let text = |k: &str| match md[k].kind.as_ref().unwrap() {
        ValueKind::StringValue(s) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("NAMESPACE"), "mesh-1");
    assert_eq!(text("WORKLOAD_NAME"), "svc-0001-0");
    assert_eq!(text("PILOTFISH_XDS_MODE"), "delta");
}

#[test]
fn sotw_request_with_encoded_names_is_the_request_envoy_sends() {
    use super::wire::{SotwRequestOut, encode_names};
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    let names = ["outbound|9080||reviews.default.svc.cluster.local", "b", ""];
    let node = node_for(
        &WorkloadRef {
            namespace: "default".into(),
            name: "reviews-v1".into(),
            address: None,
        },
        false,
    );
    let out = SotwRequestOut {
        version_info: "v3".into(),
        node: Some(node.clone()),
        names: encode_names(names),
        type_url: XdsType::Endpoint.type_url().into(),
        response_nonce: "7".into(),
    };
    let full = DiscoveryRequest {
        version_info: "v3".into(),
        node: Some(node),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        type_url: XdsType::Endpoint.type_url().into(),
        response_nonce: "7".into(),
        ..Default::default()
    };
    let wire = out.encode_to_vec();
    assert_eq!(wire.len(), out.encoded_len());
    assert_eq!(DiscoveryRequest::decode(wire.as_slice()).unwrap(), full);
    assert_eq!(wire, full.encode_to_vec());
    // An initial wildcard request: no names, no version, no nonce.
    let empty = SotwRequestOut {
        type_url: XdsType::Cluster.type_url().into(),
        ..Default::default()
    };
    assert_eq!(
        empty.encode_to_vec(),
        DiscoveryRequest {
            type_url: XdsType::Cluster.type_url().into(),
            ..Default::default()
        }
        .encode_to_vec()
    );
}

#[test]
fn decode_cache_finds_what_resources_lead_to() {
    let cache = DecodeCache::default();
    let eds = Cluster {
        name: "outbound|9080||a".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: None,
            service_name: "a-eds".into(),
        }),
        ..Default::default()
    };
    let info = cache.info(XdsType::Cluster, &eds.encode_to_vec());
    assert_eq!(&*info.name, "outbound|9080||a");
    assert_eq!(info.endpoints, vec![Arc::from("a-eds")]);
    let static_cluster = Cluster {
        name: "inbound|9080||".into(),
        ..Default::default()
    };
    assert!(
        cache
            .info(XdsType::Cluster, &static_cluster.encode_to_vec())
            .endpoints
            .is_empty()
    );
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: None,
            route_config_name: "outbound".into(),
        })),
        ..Default::default()
    };
    let listener = Listener {
        name: "127.0.0.1_15001".into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "hcm".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: HCM_TYPE_URL.into(),
                    value: hcm.encode_to_vec(),
                })),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let info = cache.info(XdsType::Listener, &listener.encode_to_vec());
    assert_eq!(info.routes, vec![Arc::from("outbound")]);
    // Bytes that are not a resource are opaque.
    assert!(cache.info(XdsType::Cluster, &[0; 64]).opaque());
    assert!(cache.info(XdsType::Listener, &[0; 64]).opaque());
}

/// pilotfish's ADS server in-process, wired as `pilotfish serve` wires it.
struct Pilotfish {
    addr: SocketAddr,
    metrics: Metrics,
    _stop: watch::Sender<bool>,
}

/// With `ca`, a CA keeping its state there mints workload certificates
/// (mTLS on, SDS served), as `pilotfish serve` runs it.
async fn start_pilotfish(dir: &Path, ca: Option<&Path>) -> Pilotfish {
    let (metrics, _registry) = Metrics::new();
    let (store, state) = config::watch::load(dir, &metrics).unwrap();
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    let (config_tx, config_rx) = watch::channel(Arc::new(state));
    let (xds_tx, xds_rx) = watch::channel(Arc::new(XdsSnapshot::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(config::watch::run(
        dir.to_path_buf(),
        store,
        Duration::from_millis(50),
        config_tx,
        metrics.clone(),
    ));
    let certs = ca.map(|state| {
        let ca = crate::ca::Ca::load_or_create(state, "cluster.local").unwrap();
        crate::xds::secrets::CertBook::new(Arc::new(ca), Duration::from_secs(24 * 3600))
    });
    tokio::spawn(crate::xds::run_translator(
        config_rx,
        xds_tx,
        certs,
        None,
        metrics.clone(),
        None,
        crate::xds::translate::OutboundMode::AllowAny,
    ));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(server::serve(
        listener,
        AdsShared {
            snapshots: xds_rx,
            metrics: metrics.clone(),
            syncs: SyncRegistry::default(),
            // The loadgen speaks to pilotfish's plaintext port.
            auth: None,
            autoreg: None,
        },
        tonic::service::Routes::default(),
        None,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    Pilotfish {
        addr,
        metrics,
        _stop: stop_tx,
    }
}

fn assert_all_synced(r: &Report, n: usize) {
    assert_eq!(r.proxies, n, "{}", r.text());
    assert_eq!(r.synced, n, "{}", r.text());
    assert!(r.all_synced_ms.is_some(), "{}", r.text());
    assert_eq!(r.stream_errors, 0, "{}", r.text());
    assert_eq!(r.unrequested, 0, "{}", r.text());
}

async fn end_to_end(delta: bool, mtls: bool) {
    let dir = tempfile::tempdir().unwrap();
    scenario::generate(dir.path(), mk_params(5, 2, 1, 5)).unwrap();
    let state = tempfile::tempdir().unwrap();
    let pf = start_pilotfish(dir.path(), mtls.then_some(state.path())).await;
    let mut args = RunArgs::new(pf.addr.to_string());
    args.scenario = Some(dir.path().to_path_buf());
    args.proxies = Some(10);
    args.delta = delta;
    args.sync_timeout = 30.0;
    args.change_kind = vec![ChangeKind::Endpoint];
    args.change_after = 0.3;
    args.settle = 15.0;
    let r = run_load(&args).await.unwrap();
    eprintln!("{}", r.text());
    assert_all_synced(&r, 10);
    for t in [
        r.bytes_per_proxy.cds,
        r.bytes_per_proxy.eds,
        r.bytes_per_proxy.lds,
        r.bytes_per_proxy.rds,
    ] {
        assert!(t > 0, "{}", r.text());
    }
    // 5 services × (plain, v1, v2) outbound EDS clusters; one route table.
    assert!(r.resources_per_proxy.cds >= 15.0, "{}", r.text());
    assert_eq!(r.resources_per_proxy.rds, 1.0, "{}", r.text());
    if delta {
        assert_eq!(r.resources_per_proxy.eds, 15.0, "{}", r.text());
    }
    if mtls {
        // The workload's key pair and the trust bundle, named by its listeners and clusters.
        assert!(r.sync_bytes_per_proxy.sds > 0, "{}", r.text());
        assert_eq!(r.resources_per_proxy.sds, 2.0, "{}", r.text());
    } else {
        assert_eq!(r.bytes_per_proxy.sds, 0, "{}", r.text());
    }
    assert_eq!(r.connects, 10, "{}", r.text());
    assert_eq!(r.changes.len(), 1);
    let c = &r.changes[0];
    assert_eq!(c.expected, 10, "{}", r.text());
    assert_eq!(c.converged, 10, "{}", r.text());
    assert_eq!(c.latency.as_ref().unwrap().n, 10);
    // Nothing beyond the endpoint change was pushed again.
    assert!(c.per_type.cds.is_none(), "{}", r.text());
    assert!(c.per_type.rds.is_none(), "{}", r.text());
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["changes"][0]["change"]["kind"], "endpoint");
    assert_eq!(json["synced"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_sotw_against_pilotfish() {
    end_to_end(false, false).await;
    end_to_end(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_delta_against_pilotfish() {
    end_to_end(true, false).await;
    end_to_end(true, true).await;
}

fn mk_floor_args(opaque: bool) -> FloorArgs {
    FloorArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        cds_bytes: 20_000,
        eds_bytes: 10_000,
        lds_bytes: 2_000,
        rds_bytes: 5_000,
        clusters: 20,
        listeners: 2,
        routes: 1,
        push_every: Some(0.2),
        push_types: vec![TypeArg::Eds, TypeArg::Cds],
        push_bytes: None,
        opaque,
        duration: None,
    }
}

async fn against_floor(opaque: bool, delta: bool) -> Report {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = tokio::spawn(floor::serve(listener, mk_floor_args(opaque), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let mut args = RunArgs::new(addr.to_string());
    args.proxies = Some(5);
    args.delta = delta;
    args.workload_prefix = "floor-".into();
    args.sync_timeout = 10.0;
    args.duration = Some(1.5);
    let r = run_load(&args).await.unwrap();
    let _ = stop_tx.send(true);
    server.await.unwrap().unwrap();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_runs_against_the_floor() {
    for delta in [false, true] {
        let r = against_floor(false, delta).await;
        eprintln!("{}", r.text());
        assert_all_synced(&r, 5);
        // Real (padded) resources: the proxies follow CDS to EDS and LDS to RDS.
        assert!(r.bytes_per_proxy.eds > 10_000, "{}", r.text());
        assert!(r.bytes_per_proxy.rds > 5_000, "{}", r.text());
        assert!(r.bytes_per_proxy.cds > 20_000, "{}", r.text());
        let f = r.floor.as_ref().expect("floor pushes measured");
        assert!(f.pushes >= 3, "{}", r.text());
        assert_eq!(f.latency.n % 5, 0, "{}", r.text());
        assert!(f.latency.max_ms < 1000.0, "{}", r.text());

        // Opaque blobs: only CDS and LDS are requested.
        let r = against_floor(true, delta).await;
        assert_all_synced(&r, 5);
        assert_eq!(r.bytes_per_proxy.eds, 0, "{}", r.text());
        assert_eq!(r.bytes_per_proxy.rds, 0, "{}", r.text());
        assert!(r.bytes_per_proxy.cds > 20_000, "{}", r.text());
        assert!(r.floor.is_some(), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_reconnect_when_the_server_comes_back() {
    // Nothing listens at first: every proxy fails to connect and backs off.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut args = RunArgs::new(addr.to_string());
    args.proxies = Some(3);
    args.workload_prefix = "floor-".into();
    args.sync_timeout = 15.0;
    let run = tokio::spawn(async move { run_load(&args).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut fa = mk_floor_args(false);
    fa.push_every = None;
    let server = tokio::spawn(floor::serve(listener, fa, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let r = run.await.unwrap().unwrap();
    assert_eq!(r.synced, 3, "{}", r.text());
    assert!(r.stream_errors >= 3, "{}", r.text());
    assert!(
        r.errors.iter().any(|(e, _)| e.starts_with("connect")),
        "{}",
        r.text()
    );
    let _ = stop_tx.send(true);
    server.await.unwrap().unwrap();
}

/// Waits (up to 10 s) for pilotfish to count `n` open ADS streams.
async fn wait_streams(pf: &Pilotfish, n: i64) -> i64 {
    for _ in 0..200 {
        if pf.metrics.connected_proxies.get() == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pf.metrics.connected_proxies.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_proxies_are_left_out_and_do_not_hold_back_the_others() {
    let dir = tempfile::tempdir().unwrap();
    scenario::generate(dir.path(), mk_params(5, 2, 1, 5)).unwrap();
    let pf = start_pilotfish(dir.path(), None).await;
    let mut args = RunArgs::new(pf.addr.to_string());
    args.scenario = Some(dir.path().to_path_buf());
    args.proxies = Some(10);
    args.stuck = 3;
    args.sync_timeout = 30.0;
    args.change_kind = vec![ChangeKind::Endpoint, ChangeKind::Virtualservice];
    args.changes = Some(4);
    args.change_after = 0.3;
    args.settle = 15.0;
    let r = run_load(&args).await.unwrap();
    eprintln!("{}", r.text());
    assert_all_synced(&r, 10);
    let stuck = r.stuck.as_ref().expect("stuck proxies reported");
    assert_eq!((stuck.proxies, stuck.stopped_reading), (3, 3));
    for c in &r.changes {
        // Every proxy that reads converged; no stuck one did.
        assert_eq!((c.expected, c.converged), (7, 7), "{}", r.text());
        assert_eq!(c.latency.as_ref().unwrap().n, 7);
        assert_eq!(c.stuck_converged, 0, "{}", r.text());
        assert!(c.latency.as_ref().unwrap().max_ms < 5000.0, "{}", r.text());
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["stuck"]["stopped_reading"], 3);
    // The run's end closes every connection, stuck ones too.
    assert_eq!(wait_streams(&pf, 0).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churned_proxies_resync_as_fresh_envoys_and_leave_no_streams() {
    let dir = tempfile::tempdir().unwrap();
    scenario::generate(dir.path(), mk_params(3, 2, 1, 3)).unwrap();
    let pf = start_pilotfish(dir.path(), None).await;
    let ready = tempfile::NamedTempFile::new().unwrap();
    let mut args = RunArgs::new(pf.addr.to_string());
    args.scenario = Some(dir.path().to_path_buf());
    args.proxies = Some(6);
    args.stuck = 1;
    args.sync_timeout = 30.0;
    args.churn_rate = 20.0;
    args.churn_for = Some(1.0);
    args.ready_file = Some(ready.path().to_path_buf());
    args.change_kind = vec![ChangeKind::Endpoint];
    args.change_after = 0.2;
    let r = run_load(&args).await.unwrap();
    eprintln!("{}", r.text());
    assert_eq!(r.synced, 6, "{}", r.text());
    let churn = r.churn.as_ref().expect("churn reported");
    assert_eq!(churn.kicks, 20, "{}", r.text());
    assert!(churn.churns >= 10, "{}", r.text());
    let resync = churn.resync.as_ref().expect("resyncs measured");
    assert!(resync.n >= 10, "{}", r.text());
    // Each reconnect is a new connection; the stuck proxy is never churned.
    assert_eq!(r.connects, 6 + churn.churns, "{}", r.text());
    assert!(r.resync_after_loss.is_none(), "{}", r.text());
    // After the churn every reading proxy is synced and converges on a change.
    assert_eq!(
        (r.changes[0].expected, r.changes[0].converged),
        (5, 5),
        "{}",
        r.text()
    );
    let lines = std::fs::read_to_string(ready.path()).unwrap();
    assert!(lines.starts_with("synced 6/6 at "), "{lines}");
    assert!(lines.contains("\nchurned 20; synced 6/6 at "), "{lines}");
    // Nothing left open in pilotfish once the proxies are gone.
    assert_eq!(wait_streams(&pf, 0).await, 0);
}

/// A floor server on its own runtime, so it can be killed outright
/// (connections and all), as a crashed server is.
fn floor_runtime(addr: SocketAddr) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut fa = mk_floor_args(false);
    fa.push_every = None;
    rt.spawn(async move {
        let listener = server::listen(addr).unwrap();
        floor::serve(listener, fa, std::future::pending()).await
    });
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_an_outage_until_all_resync() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let first = floor_runtime(addr);
    let ready = tempfile::NamedTempFile::new().unwrap();
    let mut args = RunArgs::new(addr.to_string());
    args.proxies = Some(4);
    args.workload_prefix = "floor-".into();
    args.sync_timeout = 10.0;
    args.duration = Some(6.0);
    args.ready_file = Some(ready.path().to_path_buf());
    let run = {
        let args = args.clone();
        tokio::spawn(async move { run_load(&args).await })
    };
    let read = || std::fs::read_to_string(ready.path()).unwrap_or_default();
    for _ in 0..100 {
        if read().starts_with("synced 4/4") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(read().starts_with("synced 4/4"), "{}", read());
    first.shutdown_background();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = floor_runtime(addr);
    let r = run.await.unwrap().unwrap();
    eprintln!("{}", r.text());
    assert_eq!(r.outages.len(), 1, "{}", r.text());
    let o = &r.outages[0];
    assert_eq!(o.lowest_synced, 0, "{}", r.text());
    let again = o.synced_again_after_ms.expect("all synced again");
    assert!(again >= 200.0, "{}", r.text());
    let resync = r.resync_after_loss.as_ref().unwrap();
    assert_eq!(resync.n, 4, "{}", r.text());
    assert!(read().contains("\nresynced 4/4 at "), "{}", read());
    second.shutdown_background();
}
