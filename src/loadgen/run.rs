//! `pilotfish loadgen run`: start N simulated proxies, wait for them to sync,
//! optionally hold them idle, apply changes at set times, and report.
//!
//! A change is written with the same code as `pilotfish loadgen change`; its
//! time is taken once its files are renamed into place. A proxy has converged
//! on a change when it has received and ACKed the first response of the
//! change's type (EDS for endpoint and subset changes, RDS for VirtualService
//! changes, CDS for new services) that arrived after that time. The loadgen
//! does not decode responses to check they carry the change: with one change
//! at a time and an otherwise idle mesh, the first response of the type is
//! the one that carries it (a response already in flight when the change was
//! written would count early; the idle window before changes makes that rare).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::watch;

use super::proxy::{self, ChangeMark, ProxySpec, Shared};
use super::report::{self, Report, RunFacts, Traffic};
use super::scenario::{self, ChangeKind, WorkloadRef};

/// How often the run checks progress (sync and convergence counts); only
/// decides when phases end, never a measured time.
const POLL: Duration = Duration::from_millis(5);

/// Arguments of `pilotfish loadgen run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// ADS server to load (HOST:PORT).
    #[arg(long)]
    pub xds_address: String,
    /// Simulated proxies (default: one per WorkloadEntry of --scenario).
    #[arg(long)]
    pub proxies: Option<usize>,
    /// Use delta (incremental) xDS instead of state of the world.
    #[arg(long)]
    pub delta: bool,
    /// Config dir whose WorkloadEntries the proxies are (in order, wrapping
    /// around when there are more proxies than workloads).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Without --scenario: proxy i is workload PREFIX{i} in --namespace.
    #[arg(long, default_value = "proxy-")]
    pub workload_prefix: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Proxies started per second (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Longest wait for every proxy to sync (seconds).
    #[arg(long, default_value_t = 120.0)]
    pub sync_timeout: f64,
    /// Seconds to hold the synced proxies idle before any change.
    #[arg(long, default_value_t = 0.0)]
    pub idle: f64,
    /// File written once the sync phase ends (for scripts sampling the server).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Run this long in all (seconds), holding connections after the last
    /// phase; phases that would run past it are cut short.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Scenario dir to apply changes to (default: --scenario).
    #[arg(long)]
    pub change_dir: Option<PathBuf>,
    /// Kinds of change to apply, in turn (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub change_kind: Vec<ChangeKind>,
    /// Seconds before each change (after sync and idle, or the previous change's settling).
    #[arg(long, default_value_t = 2.0)]
    pub change_after: f64,
    /// Changes to apply (default: one per --change-kind).
    #[arg(long)]
    pub changes: Option<usize>,
    /// Longest wait for every proxy to converge on a change (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub settle: f64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl RunArgs {
    /// Defaults for a run against `xds_address` (the clap defaults).
    pub fn new(xds_address: impl Into<String>) -> Self {
        RunArgs {
            xds_address: xds_address.into(),
            proxies: None,
            delta: false,
            scenario: None,
            workload_prefix: "proxy-".into(),
            namespace: "default".into(),
            connect_rate: 0.0,
            sync_timeout: 120.0,
            idle: 0.0,
            ready_file: None,
            duration: None,
            change_dir: None,
            change_kind: Vec::new(),
            change_after: 2.0,
            changes: None,
            settle: 10.0,
            json: None,
        }
    }
}

fn workloads(args: &RunArgs) -> Result<Vec<WorkloadRef>> {
    let list = match &args.scenario {
        Some(dir) => scenario::read_workloads(dir)?,
        None => {
            let n = args
                .proxies
                .context("--proxies is needed without --scenario")?;
            (0..n)
                .map(|i| WorkloadRef {
                    namespace: args.namespace.clone(),
                    name: format!("{}{i}", args.workload_prefix),
                    address: None,
                })
                .collect()
        }
    };
    let n = args.proxies.unwrap_or(list.len());
    Ok((0..n).map(|i| list[i % list.len()].clone()).collect())
}

/// Sleeps `d`, but not past `deadline`; false when the deadline cut it short.
async fn sleep_within(d: Duration, deadline: Option<Instant>) -> bool {
    let until = Instant::now() + d;
    match deadline {
        Some(dl) if dl < until => {
            tokio::time::sleep_until(dl.into()).await;
            false
        }
        _ => {
            tokio::time::sleep_until(until.into()).await;
            true
        }
    }
}

fn traffic(shared: &Shared, since: Instant, responses: u64, bytes: u64) -> Traffic {
    Traffic {
        seconds: since.elapsed().as_secs_f64(),
        responses: shared.responses.load(Ordering::Relaxed) - responses,
        bytes: shared.bytes.load(Ordering::Relaxed) - bytes,
    }
}

/// Runs the load; progress goes to stderr, the report is returned.
pub async fn run_load(args: &RunArgs) -> Result<Report> {
    let list = workloads(args)?;
    if list.is_empty() {
        bail!("no proxies to run");
    }
    let change_dir = args.change_dir.clone().or_else(|| args.scenario.clone());
    if !args.change_kind.is_empty() && change_dir.is_none() {
        bail!("--change-kind needs --change-dir (or --scenario)");
    }
    let n = list.len();
    let uri = format!("http://{}", args.xds_address);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(stop_rx));
    let start = shared.start;
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));

    // Start the proxies, paced by --connect-rate.
    let spawner = {
        let shared = Arc::clone(&shared);
        let rate = args.connect_rate;
        let delta = args.delta;
        let mut stop = shared.stop.clone();
        tokio::spawn(async move {
            let mut handles = Vec::with_capacity(list.len());
            for (i, workload) in list.into_iter().enumerate() {
                if rate > 0.0 {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
                let spec = ProxySpec {
                    workload,
                    uri: uri.clone(),
                    delta,
                };
                handles.push(tokio::spawn(proxy::run(spec, Arc::clone(&shared))));
            }
            handles
        })
    };

    // Sync phase.
    let sync_end = start + Duration::from_secs_f64(args.sync_timeout);
    let sync_end = deadline.map_or(sync_end, |d| d.min(sync_end));
    while shared.synced.load(Ordering::Relaxed) < n && Instant::now() < sync_end {
        tokio::time::sleep(POLL).await;
    }
    let synced = shared.synced.load(Ordering::Relaxed);
    eprintln!(
        "loadgen: {synced}/{n} proxies synced after {:.2}s ({} streams open)",
        start.elapsed().as_secs_f64(),
        shared.connected.load(Ordering::Relaxed)
    );
    if let Some(f) = &args.ready_file {
        std::fs::write(f, format!("synced {synced}/{n}\n"))
            .with_context(|| format!("write {}", f.display()))?;
    }

    // Idle phase.
    let mut idle = None;
    if args.idle > 0.0 {
        let (t0, r0, b0) = (
            Instant::now(),
            shared.responses.load(Ordering::Relaxed),
            shared.bytes.load(Ordering::Relaxed),
        );
        sleep_within(Duration::from_secs_f64(args.idle), deadline).await;
        idle = Some(traffic(&shared, t0, r0, b0));
    }

    // Changes.
    let mut changes = Vec::new();
    let count = if args.change_kind.is_empty() {
        0
    } else {
        args.changes.unwrap_or(args.change_kind.len())
    };
    for m in 0..count {
        if !sleep_within(Duration::from_secs_f64(args.change_after), deadline).await {
            break;
        }
        let kind = args.change_kind[m % args.change_kind.len()];
        let dir = change_dir.clone().unwrap_or_default();
        let summary = tokio::task::spawn_blocking(move || scenario::change(&dir, kind, None))
            .await
            .context("change task")??;
        let at = Instant::now();
        let expected = shared.synced.load(Ordering::Relaxed);
        let (r0, b0) = (
            shared.responses.load(Ordering::Relaxed),
            shared.bytes.load(Ordering::Relaxed),
        );
        let primary = kind.affected()[0];
        let mark = Arc::new(ChangeMark {
            at,
            primary,
            converged: Default::default(),
        });
        shared
            .changes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&mark));
        let settle_end = at + Duration::from_secs_f64(args.settle);
        let settle_end = deadline.map_or(settle_end, |d| d.min(settle_end));
        while mark.converged.load(Ordering::Relaxed) < expected && Instant::now() < settle_end {
            tokio::time::sleep(POLL).await;
        }
        let converged = mark.converged.load(Ordering::Relaxed);
        eprintln!(
            "loadgen: change {} ({}): {}; {converged}/{expected} converged after {:.0} ms",
            m + 1,
            kind.name(),
            summary.description,
            at.elapsed().as_secs_f64() * 1e3
        );
        changes.push((summary, primary, expected, traffic(&shared, at, r0, b0)));
    }

    if let Some(dl) = deadline {
        tokio::time::sleep_until(dl.into()).await;
    }
    let _ = stop_tx.send(true);
    let handles = spawner.await.context("proxy spawner")?;
    let mut stats = Vec::with_capacity(handles.len());
    for h in handles {
        stats.push(h.await.context("proxy task")?);
    }
    Ok(report::build(
        &stats,
        RunFacts {
            target: args.xds_address.clone(),
            delta: args.delta,
            idle,
            changes,
        },
    ))
}

/// `pilotfish loadgen run`: runs the load, prints the summary, writes JSON.
pub async fn run(args: RunArgs) -> Result<()> {
    let report = run_load(&args).await?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
