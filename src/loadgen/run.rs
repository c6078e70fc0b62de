//! `pilotfish loadgen run`: start N simulated proxies, wait for them to sync,
//! optionally hold them idle, apply changes at set times, and report.
//!
//! Bad load (issue 8): `--stuck K` proxies sync, then stop reading their
//! socket; they are left out of every change's figures (and reported on
//! their own). `--churn-rate R` adds a churn phase after the idle one: R
//! proxies a second (round robin, stuck ones never) drop their connection
//! and reconnect at once as fresh Envoys, for `--churn-for` seconds or until
//! `--duration` ends; then the run waits (up to `--settle`) for all to be
//! synced again. While the run holds its connections until `--duration`,
//! every fall of the synced count and its recovery (a server restart) is
//! recorded as an outage. `--ready-file` gets a line at the end of each of
//! these phases, with the wall-clock time, for scripts.
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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tokio::sync::{Notify, watch};

use super::proxy::{self, ChangeMark, ProxySpec, Shared};
use super::report::{self, ChurnFacts, Outage, Report, RunFacts, Traffic};
use super::scenario::{self, ChangeKind, WorkloadRef};

/// How often the run checks progress (sync and convergence counts); only
/// decides when phases end, never a measured time.
const POLL: Duration = Duration::from_millis(5);
/// Outages recorded at most (a flapping server must not grow the report without end).
const MAX_OUTAGES: usize = 1000;

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
    /// Proxies (spread evenly over the N) that sync, then stop reading
    /// their socket for the rest of the run: never ACK, never drain.
    #[arg(long, default_value_t = 0)]
    pub stuck: usize,
    /// Churn: proxies a second that drop their connection and reconnect at
    /// once as fresh Envoys, after the idle phase (0: no churn).
    #[arg(long, default_value_t = 0.0)]
    pub churn_rate: f64,
    /// Seconds of churn (default: until --duration ends).
    #[arg(long)]
    pub churn_for: Option<f64>,
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
            stuck: 0,
            churn_rate: 0.0,
            churn_for: None,
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

/// Whether proxy `i` of `n` is one of `k` stuck ones, spread evenly.
fn is_stuck(i: usize, n: usize, k: usize) -> bool {
    (i + 1) * k / n > i * k / n
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// Writes (first) or appends a line to the ready file.
fn ready_line(args: &RunArgs, first: bool, line: &str) -> Result<()> {
    use std::io::Write as _;
    let Some(f) = &args.ready_file else {
        return Ok(());
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!first)
        .truncate(first)
        .open(f)
        .with_context(|| format!("write {}", f.display()))?;
    writeln!(file, "{line}").with_context(|| format!("write {}", f.display()))
}

/// Runs the load; progress goes to stderr, the report is returned.
pub async fn run_load(args: &RunArgs) -> Result<Report> {
    run_load_until(args, std::future::pending()).await
}

/// `run_load`, ending the churn phase, changes and the hold early (with a
/// report) once `early` completes.
pub async fn run_load_until(
    args: &RunArgs,
    early: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Report> {
    let list = workloads(args)?;
    if list.is_empty() {
        bail!("no proxies to run");
    }
    if args.stuck > list.len() {
        bail!(
            "--stuck {} is more than the {} proxies",
            args.stuck,
            list.len()
        );
    }
    if args.churn_rate > 0.0 && args.churn_for.is_none() && args.duration.is_none() {
        bail!("--churn-rate needs --churn-for or --duration");
    }
    let (early_tx, early_rx) = watch::channel(false);
    tokio::spawn(async move {
        early.await;
        let _ = early_tx.send(true);
    });
    let ended_early = || *early_rx.borrow();
    let change_dir = args.change_dir.clone().or_else(|| args.scenario.clone());
    if !args.change_kind.is_empty() && change_dir.is_none() {
        bail!("--change-kind needs --change-dir (or --scenario)");
    }
    let n = list.len();
    let stuck: Vec<bool> = (0..n).map(|i| is_stuck(i, n, args.stuck)).collect();
    let kicks: Vec<Option<Arc<Notify>>> = stuck
        .iter()
        .map(|s| (args.churn_rate > 0.0 && !s).then(|| Arc::new(Notify::new())))
        .collect();
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
        let kicks = kicks.clone();
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
                    stuck: stuck[i],
                    kick: kicks[i].clone(),
                };
                handles.push(tokio::spawn(proxy::run(spec, Arc::clone(&shared))));
            }
            handles
        })
    };

    // Sync phase.
    let sync_end = start + Duration::from_secs_f64(args.sync_timeout);
    let sync_end = deadline.map_or(sync_end, |d| d.min(sync_end));
    while shared.synced.load(Ordering::Relaxed) < n && Instant::now() < sync_end && !ended_early() {
        tokio::time::sleep(POLL).await;
    }
    let synced = shared.synced.load(Ordering::Relaxed);
    eprintln!(
        "loadgen: {synced}/{n} proxies synced after {:.2}s ({} streams open)",
        start.elapsed().as_secs_f64(),
        shared.connected.load(Ordering::Relaxed)
    );
    ready_line(args, true, &format!("synced {synced}/{n} at {}", unix_ms()))?;

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

    // Churn.
    let mut churn = None;
    if args.churn_rate > 0.0 && !ended_early() {
        let kicks: Vec<Arc<Notify>> = kicks.iter().flatten().cloned().collect();
        let t0 = Instant::now();
        let end = args.churn_for.map(|s| t0 + Duration::from_secs_f64(s));
        let end = match (end, deadline) {
            (Some(e), Some(d)) => e.min(d),
            (e, d) => e.or(d).unwrap_or(t0),
        };
        let before = shared.synced.load(Ordering::Relaxed);
        let period = Duration::from_secs_f64(1.0 / args.churn_rate);
        let mut early = early_rx.clone();
        let mut sent = 0usize;
        while !kicks.is_empty() {
            let at = t0 + period.mul_f64(sent as f64);
            if at >= end {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = early.wait_for(|e| *e) => break,
            }
            kicks[sent % kicks.len()].notify_one();
            sent += 1;
        }
        // The phase lasts its whole time, not until the last kick.
        tokio::select! {
            _ = tokio::time::sleep_until(end.into()) => {}
            _ = early.wait_for(|e| *e) => {}
        }
        let seconds = t0.elapsed().as_secs_f64();
        // Every proxy synced again (or --settle, or the end of the run).
        let settle_end = Instant::now() + Duration::from_secs_f64(args.settle);
        let settle_end = deadline.map_or(settle_end, |d| d.min(settle_end));
        while shared.synced.load(Ordering::Relaxed) < before
            && Instant::now() < settle_end
            && !ended_early()
        {
            tokio::time::sleep(POLL).await;
        }
        let synced = shared.synced.load(Ordering::Relaxed);
        eprintln!(
            "loadgen: churn: {sent} reconnects as fresh proxies in {seconds:.1}s; {synced}/{n} synced {:.0} ms later",
            (t0.elapsed().as_secs_f64() - seconds) * 1e3
        );
        ready_line(
            args,
            false,
            &format!("churned {sent}; synced {synced}/{n} at {}", unix_ms()),
        )?;
        churn = Some(ChurnFacts {
            rate: args.churn_rate,
            seconds,
            kicks: sent,
        });
    }

    // Changes.
    let mut changes = Vec::new();
    let count = if args.change_kind.is_empty() {
        0
    } else {
        args.changes.unwrap_or(args.change_kind.len())
    };
    for m in 0..count {
        if ended_early()
            || !sleep_within(Duration::from_secs_f64(args.change_after), deadline).await
        {
            break;
        }
        let kind = args.change_kind[m % args.change_kind.len()];
        let dir = change_dir.clone().unwrap_or_default();
        let summary = tokio::task::spawn_blocking(move || scenario::change(&dir, kind, None))
            .await
            .context("change task")??;
        let at = Instant::now();
        // Stuck proxies never ACK: they are left out (and reported apart).
        let expected = shared
            .synced
            .load(Ordering::Relaxed)
            .saturating_sub(shared.stuck.load(Ordering::Relaxed));
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
        while mark.converged.load(Ordering::Relaxed) < expected
            && Instant::now() < settle_end
            && !ended_early()
        {
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

    // Hold until --duration ends, recording outages: the synced count
    // falling (streams lost) until all are synced again.
    let mut outages: Vec<Outage> = Vec::new();
    if let Some(dl) = deadline {
        let target = shared.synced.load(Ordering::Relaxed);
        let mut down: Option<(Instant, usize)> = None;
        while !ended_early() {
            let now = Instant::now();
            if now >= dl {
                break;
            }
            tokio::time::sleep(POLL.min(dl - now)).await;
            let s = shared.synced.load(Ordering::Relaxed);
            match &mut down {
                None if s < target => down = Some((Instant::now(), s)),
                None => {}
                Some((_, lowest)) if s < target => *lowest = (*lowest).min(s),
                Some((at, lowest)) => {
                    let again = at.elapsed();
                    eprintln!(
                        "loadgen: all {s} synced again {:.0} ms after the synced count fell (lowest {lowest})",
                        again.as_secs_f64() * 1e3
                    );
                    ready_line(args, false, &format!("resynced {s}/{n} at {}", unix_ms()))?;
                    if outages.len() < MAX_OUTAGES {
                        outages.push(Outage {
                            at_ms: (*at - start).as_secs_f64() * 1e3,
                            lowest_synced: *lowest,
                            synced_again_after_ms: Some(again.as_secs_f64() * 1e3),
                        });
                    }
                    down = None;
                }
            }
        }
        if let Some((at, lowest)) = down
            && outages.len() < MAX_OUTAGES
        {
            outages.push(Outage {
                at_ms: (at - start).as_secs_f64() * 1e3,
                lowest_synced: lowest,
                synced_again_after_ms: None,
            });
        }
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
            stuck: args.stuck,
            churn,
            outages,
        },
    ))
}

/// `pilotfish loadgen run`: runs the load, prints the summary, writes JSON.
/// SIGINT or SIGTERM ends the run early, with a report.
pub async fn run(args: RunArgs) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listen for SIGTERM")?;
    let signalled = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("loadgen: signalled; ending the run");
    };
    let report = run_load_until(&args, signalled).await?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
