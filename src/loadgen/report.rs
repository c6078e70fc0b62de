//! What a run measured: per-proxy figures reduced to percentiles, printed
//! for people and written as JSON for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::proxy::ProxyStats;
use super::scenario::ChangeSummary;
use super::wire::ix;
use crate::xds::types::XdsType;

/// Distribution of a duration over proxies, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub n: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; None for no samples.
    pub fn of(mut v: Vec<Duration>) -> Option<Percentiles> {
        if v.is_empty() {
            return None;
        }
        v.sort();
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        Some(Percentiles {
            n: v.len(),
            min_ms: ms(v[0]),
            p50_ms: ms(rank(50.0)),
            p90_ms: ms(rank(90.0)),
            p99_ms: ms(rank(99.0)),
            max_ms: ms(v[v.len() - 1]),
        })
    }

    fn line(&self) -> String {
        format!(
            "p50 {} p90 {} p99 {} max {} (n={})",
            fmt_ms(self.p50_ms),
            fmt_ms(self.p90_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.max_ms),
            self.n
        )
    }
}

/// Milliseconds, rounded to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        format!("{ms:.1}ms")
    }
}

/// Per-type figures, keyed by short type name.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PerType<T> {
    pub cds: T,
    pub eds: T,
    pub lds: T,
    pub rds: T,
    pub sds: T,
}

impl<T> PerType<T> {
    fn from_fn(mut f: impl FnMut(XdsType) -> T) -> Self {
        PerType {
            cds: f(XdsType::Cluster),
            eds: f(XdsType::Endpoint),
            lds: f(XdsType::Listener),
            rds: f(XdsType::Route),
            sds: f(XdsType::Secret),
        }
    }

    fn get(&self, t: XdsType) -> &T {
        match t {
            XdsType::Cluster => &self.cds,
            XdsType::Endpoint => &self.eds,
            XdsType::Listener => &self.lds,
            XdsType::Route => &self.rds,
            XdsType::Secret => &self.sds,
        }
    }
}

/// Responses and bytes all proxies received in a window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Traffic {
    pub seconds: f64,
    pub responses: u64,
    pub bytes: u64,
}

/// One change the run applied and how the proxies converged on it.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeReport {
    pub change: ChangeSummary,
    /// The type convergence is measured on.
    pub primary: &'static str,
    /// Proxies synced when the change was written (those expected to
    /// converge), stuck ones left out.
    pub expected: usize,
    /// Proxies that converged, stuck ones left out.
    pub converged: usize,
    /// Stuck proxies that converged anyway (0 unless they were not stuck yet).
    pub stuck_converged: usize,
    /// From the change to the ACK of the first `primary` response after it.
    pub latency: Option<Percentiles>,
    /// Same, for every type that any proxy received after the change.
    pub per_type: PerType<Option<Percentiles>>,
    /// Last minus first proxy to converge: the fan-out alone.
    pub spread_ms: Option<f64>,
    /// What all proxies received from the change until the wait ended.
    pub traffic: Traffic,
}

/// The floor server's timed pushes, as the proxies saw them.
#[derive(Clone, Debug, Serialize)]
pub struct FloorReport {
    pub pushes: usize,
    /// From the floor's send timestamp to the ACK, over every (proxy, push).
    pub latency: Percentiles,
    /// Per push, last minus first proxy to receive it; median over pushes.
    pub spread_p50_ms: f64,
    /// Per push, the slowest proxy's latency; median over pushes.
    pub max_p50_ms: f64,
}

/// `--stuck`: proxies that synced, then stopped reading their socket.
#[derive(Clone, Debug, Serialize)]
pub struct StuckReport {
    pub proxies: usize,
    /// Of those, how many synced and stopped reading.
    pub stopped_reading: usize,
}

/// What the run's churn phase did.
#[derive(Clone, Debug)]
pub struct ChurnFacts {
    pub rate: f64,
    pub seconds: f64,
    pub kicks: usize,
}

/// Churn: proxies reconnecting as fresh Envoys.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    pub rate_per_s: f64,
    pub seconds: f64,
    /// Reconnects asked for.
    pub kicks: usize,
    /// Reconnects made (a proxy kicked again before it reconnected counts once).
    pub churns: u64,
    /// From the disconnect to fully synced again, per reconnect that synced.
    pub resync: Option<Percentiles>,
}

/// The synced count fell (streams lost, e.g. a server restart) and came back.
#[derive(Clone, Debug, Serialize)]
pub struct Outage {
    /// When the count first fell, from the start of the run.
    pub at_ms: f64,
    pub lowest_synced: usize,
    /// Until every proxy synced before was synced again (None: not by the end).
    pub synced_again_after_ms: Option<f64>,
}

/// The load generator's own cost, to show it left the machine to the server.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SelfCost {
    pub cpu_seconds: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: &'static str,
    pub proxies: usize,
    pub synced: usize,
    /// From the start of the run until the last proxy synced (None unless all did).
    pub all_synced_ms: Option<f64>,
    /// Per proxy, from its start to fully synced.
    pub sync: Option<Percentiles>,
    /// Per proxy, from its start to its first connection.
    pub connect: Option<Percentiles>,
    /// Mean over synced proxies of the bytes received until synced.
    pub sync_bytes_per_proxy: PerType<u64>,
    /// Mean over all proxies of the bytes received in the whole run.
    pub bytes_per_proxy: PerType<u64>,
    pub responses_per_proxy: PerType<f64>,
    pub resources_per_proxy: PerType<f64>,
    /// Redundant responses (SotW) or resources (delta), all proxies.
    pub redundant: PerType<u64>,
    pub unrequested: u64,
    pub connects: u64,
    pub stream_errors: u64,
    /// Distinct last errors of proxies, with how many proxies had each.
    pub errors: Vec<(String, usize)>,
    pub idle: Option<Traffic>,
    pub changes: Vec<ChangeReport>,
    pub floor: Option<FloorReport>,
    pub stuck: Option<StuckReport>,
    pub churn: Option<ChurnReport>,
    /// Per proxy whose stream was lost (not churned): from the loss to synced again.
    pub resync_after_loss: Option<Percentiles>,
    pub outages: Vec<Outage>,
    pub loadgen: SelfCost,
}

/// Inputs of a report besides the per-proxy stats.
pub struct RunFacts {
    pub target: String,
    pub delta: bool,
    pub idle: Option<Traffic>,
    pub changes: Vec<(ChangeSummary, XdsType, usize, Traffic)>,
    /// `--stuck` proxies asked for.
    pub stuck: usize,
    pub churn: Option<ChurnFacts>,
    pub outages: Vec<Outage>,
}

pub fn build(stats: &[ProxyStats], facts: RunFacts) -> Report {
    let n = stats.len();
    let synced: Vec<&ProxyStats> = stats.iter().filter(|s| s.synced_after.is_some()).collect();
    let all_synced_ms = (synced.len() == n && n > 0).then(|| {
        ms(stats
            .iter()
            .filter_map(|s| Some(s.started + s.synced_after?))
            .max()
            .unwrap_or_default())
    });
    let mean = |f: &dyn Fn(&ProxyStats) -> f64| {
        if n == 0 {
            0.0
        } else {
            stats.iter().map(f).sum::<f64>() / n as f64
        }
    };
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for s in stats {
        if let Some(e) = &s.last_error {
            *errors.entry(e.clone()).or_default() += 1;
        }
    }
    let mut errors: Vec<(String, usize)> = errors.into_iter().collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    errors.truncate(5);

    let changes = facts
        .changes
        .into_iter()
        .enumerate()
        .map(|(m, (change, primary, expected, traffic))| {
            let of_type = |t: XdsType, stuck: bool| -> Vec<Duration> {
                stats
                    .iter()
                    .filter(|s| s.stuck == stuck)
                    .filter_map(|s| s.changes.get(m).and_then(|c| c[ix(t)]))
                    .collect()
            };
            let lat = of_type(primary, false);
            let spread_ms = match (lat.iter().min(), lat.iter().max()) {
                (Some(a), Some(b)) => Some(ms(*b - *a)),
                _ => None,
            };
            ChangeReport {
                change,
                primary: primary.short(),
                expected,
                converged: lat.len(),
                stuck_converged: of_type(primary, true).len(),
                latency: Percentiles::of(lat),
                per_type: PerType::from_fn(|t| Percentiles::of(of_type(t, false))),
                spread_ms,
                traffic,
            }
        })
        .collect();

    Report {
        target: facts.target,
        mode: if facts.delta { "delta" } else { "sotw" },
        proxies: n,
        synced: synced.len(),
        all_synced_ms,
        sync: Percentiles::of(synced.iter().filter_map(|s| s.synced_after).collect()),
        connect: Percentiles::of(stats.iter().filter_map(|s| s.connected_after).collect()),
        sync_bytes_per_proxy: PerType::from_fn(|t| {
            let n = synced.len().max(1) as f64;
            (synced
                .iter()
                .map(|s| s.sync_bytes[ix(t)] as f64)
                .sum::<f64>()
                / n)
                .round() as u64
        }),
        bytes_per_proxy: PerType::from_fn(|t| (mean(&|s| s.bytes[ix(t)] as f64)).round() as u64),
        responses_per_proxy: PerType::from_fn(|t| {
            (mean(&|s| s.responses[ix(t)] as f64) * 100.0).round() / 100.0
        }),
        resources_per_proxy: PerType::from_fn(|t| {
            (mean(&|s| s.resources[ix(t)] as f64) * 100.0).round() / 100.0
        }),
        redundant: PerType::from_fn(|t| stats.iter().map(|s| s.redundant[ix(t)]).sum()),
        unrequested: stats.iter().map(|s| s.unrequested).sum(),
        connects: stats.iter().map(|s| u64::from(s.connects)).sum(),
        stream_errors: stats.iter().map(|s| u64::from(s.stream_errors)).sum(),
        errors,
        idle: facts.idle,
        changes,
        floor: floor_report(stats),
        stuck: (facts.stuck > 0).then(|| StuckReport {
            proxies: stats.iter().filter(|s| s.stuck).count(),
            stopped_reading: stats.iter().filter(|s| s.stuck_after.is_some()).count(),
        }),
        churn: facts.churn.map(|c| ChurnReport {
            rate_per_s: c.rate,
            seconds: (c.seconds * 10.0).round() / 10.0,
            kicks: c.kicks,
            churns: stats.iter().map(|s| u64::from(s.churns)).sum(),
            resync: resyncs(stats, true),
        }),
        resync_after_loss: resyncs(stats, false),
        outages: facts.outages,
        loadgen: self_cost(),
    }
}

fn resyncs(stats: &[ProxyStats], churned: bool) -> Option<Percentiles> {
    Percentiles::of(
        stats
            .iter()
            .flat_map(|s| &s.resyncs)
            .filter(|(c, _)| *c == churned)
            .map(|(_, d)| *d)
            .collect(),
    )
}

fn floor_report(stats: &[ProxyStats]) -> Option<FloorReport> {
    let mut by_push: std::collections::BTreeMap<u64, Vec<Duration>> = Default::default();
    for s in stats {
        for (seq, lat) in &s.floor_pushes {
            by_push.entry(*seq).or_default().push(*lat);
        }
    }
    if by_push.is_empty() {
        return None;
    }
    let all: Vec<Duration> = by_push.values().flatten().copied().collect();
    let mut spreads = Vec::new();
    let mut maxes = Vec::new();
    for v in by_push.values() {
        let (lo, hi) = (v.iter().min(), v.iter().max());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            spreads.push(*hi - *lo);
            maxes.push(*hi);
        }
    }
    Some(FloorReport {
        pushes: by_push.len(),
        latency: Percentiles::of(all)?,
        spread_p50_ms: Percentiles::of(spreads)
            .map(|p| p.p50_ms)
            .unwrap_or_default(),
        max_p50_ms: Percentiles::of(maxes).map(|p| p.p50_ms).unwrap_or_default(),
    })
}

/// CPU time and peak RSS of this process, from /proc (Linux).
fn self_cost() -> SelfCost {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_rss_mb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| (kb / 1024.0 * 10.0).round() / 10.0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime
    // are the 14th and 15th fields overall, in clock ticks (100 per second on Linux).
    let cpu_seconds = stat.rsplit_once(')').and_then(|(_, rest)| {
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    });
    SelfCost {
        cpu_seconds,
        peak_rss_mb,
    }
}

fn kib(b: u64) -> String {
    if b >= 10 * 1024 * 1024 {
        format!("{:.1} MiB", b as f64 / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

impl Report {
    /// The human summary.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{} proxies ({}) against {}",
            self.proxies, self.mode, self.target
        );
        let _ = writeln!(
            o,
            "synced: {}/{}{}",
            self.synced,
            self.proxies,
            match self.all_synced_ms {
                Some(ms) => format!(", all within {} of the start", fmt_ms(ms)),
                None => String::new(),
            }
        );
        if let Some(p) = &self.sync {
            let _ = writeln!(o, "initial sync per proxy: {}", p.line());
        }
        if let Some(p) = &self.connect {
            let _ = writeln!(o, "connect per proxy:      {}", p.line());
        }
        let types = super::wire::TYPES;
        let _ = writeln!(
            o,
            "initial config per proxy (mean): {}",
            types
                .iter()
                .map(|t| format!("{} {}", t.short(), kib(*self.sync_bytes_per_proxy.get(*t))))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            o,
            "whole run per proxy (mean): {}",
            types
                .iter()
                .map(|t| format!(
                    "{} {} in {} responses ({} resources)",
                    t.short(),
                    kib(*self.bytes_per_proxy.get(*t)),
                    self.responses_per_proxy.get(*t),
                    self.resources_per_proxy.get(*t)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let redundant: u64 = types.iter().map(|t| self.redundant.get(*t)).sum();
        let _ = writeln!(
            o,
            "connections: {}, stream errors: {}, redundant: {} (cds {} eds {} lds {} rds {} sds {}), unrequested responses: {}",
            self.connects,
            self.stream_errors,
            redundant,
            self.redundant.cds,
            self.redundant.eds,
            self.redundant.lds,
            self.redundant.rds,
            self.redundant.sds,
            self.unrequested
        );
        for (e, count) in &self.errors {
            let _ = writeln!(o, "  last error of {count} proxies: {e}");
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                o,
                "idle {:.0}s after sync: {} responses, {}",
                i.seconds,
                i.responses,
                kib(i.bytes)
            );
        }
        for (m, c) in self.changes.iter().enumerate() {
            let _ = writeln!(
                o,
                "change {} ({} #{}): {}",
                m + 1,
                c.change.kind.name(),
                c.change.seq,
                c.change.description
            );
            let _ = writeln!(
                o,
                "  {} converged {}/{}: {}; spread {}; pushed {} responses, {} in {:.1}s",
                c.primary,
                c.converged,
                c.expected,
                c.latency
                    .as_ref()
                    .map(|p| p.line())
                    .unwrap_or_else(|| "none".into()),
                c.spread_ms.map(fmt_ms).unwrap_or_else(|| "-".into()),
                c.traffic.responses,
                kib(c.traffic.bytes),
                c.traffic.seconds
            );
            if self.stuck.is_some() {
                let _ = writeln!(
                    o,
                    "  stuck proxies (left out above) that converged: {}",
                    c.stuck_converged
                );
            }
        }
        if let Some(s) = &self.stuck {
            let _ = writeln!(
                o,
                "stuck: {} proxies, {} synced then stopped reading their socket",
                s.proxies, s.stopped_reading
            );
        }
        if let Some(c) = &self.churn {
            let _ = writeln!(
                o,
                "churn: {} reconnects as fresh proxies asked in {:.1}s ({}/s), {} made; resync {}",
                c.kicks,
                c.seconds,
                c.rate_per_s,
                c.churns,
                c.resync
                    .as_ref()
                    .map(|p| p.line())
                    .unwrap_or_else(|| "none".into())
            );
        }
        if let Some(p) = &self.resync_after_loss {
            let _ = writeln!(o, "resync after a lost stream: {}", p.line());
        }
        for x in &self.outages {
            let _ = writeln!(
                o,
                "outage at {}: synced fell to {}, {}",
                fmt_ms(x.at_ms),
                x.lowest_synced,
                x.synced_again_after_ms
                    .map(|ms| format!("all synced again after {}", fmt_ms(ms)))
                    .unwrap_or_else(|| "not all synced again by the end".into())
            );
        }
        if let Some(f) = &self.floor {
            let _ = writeln!(
                o,
                "floor pushes: {}; latency {}; per push: spread p50 {}, slowest proxy p50 {}",
                f.pushes,
                f.latency.line(),
                fmt_ms(f.spread_p50_ms),
                fmt_ms(f.max_p50_ms)
            );
        }
        let _ = writeln!(
            o,
            "loadgen itself: {} CPU s, peak RSS {} MB",
            self.loadgen
                .cpu_seconds
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(|| "?".into()),
            self.loadgen
                .peak_rss_mb
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "?".into())
        );
        o
    }
}
