//! The istio_* series pilotfish exports: a bounded store the sink records
//! into, encoded on each scrape of `/metrics`.
//!
//! Cardinality is capped (`max_series`): a sample that would open a series
//! beyond the cap is dropped and counted, never allowed to grow memory
//! without bound. Series of workloads that left the registry are removed.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::labels::{HttpSample, Labels, TcpSample};
use crate::model::WorkloadKey;

/// Istio's buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's buckets for `istio_request_bytes` and `istio_response_bytes`.
pub const BYTES_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// Default cap on distinct label sets (HTTP and TCP together).
pub const DEFAULT_MAX_SERIES: usize = 20_000;

/// One histogram: per-bucket (not cumulative) counts, sum and count.
#[derive(Clone, Debug, Default)]
pub struct Hist {
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Hist {
    pub fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len() + 1];
        }
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.buckets[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Cumulative `(upper bound, count)` pairs, as Prometheus encodes them.
    pub fn cumulative(&self, bounds: &[f64]) -> Vec<(f64, u64)> {
        let mut acc = 0;
        bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(i, b)| {
                acc += self.buckets.get(i).copied().unwrap_or(0);
                (b, acc)
            })
            .collect()
    }

    /// The value below which `q` (0..1) of observations fall, read off the
    /// buckets the way Prometheus' histogram_quantile does.
    pub fn quantile(&self, bounds: &[f64], q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (i, upper) in bounds.iter().copied().enumerate() {
            let n = self.buckets.get(i).copied().unwrap_or(0);
            if (below + n) as f64 >= rank && n > 0 {
                let into = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * into);
            }
            below += n;
            lower = upper;
        }
        bounds.last().copied()
    }
}

/// Bits of `HttpSeries::mask` / `TcpSeries::mask`, in
/// `model::telemetry::resolve::{HTTP,TCP}_METRICS` order.
pub const ALL_METRICS: u8 = 0b1111;

/// The HTTP metrics of one label set.
#[derive(Clone, Debug, Default)]
pub struct HttpSeries {
    /// Which of the four metrics this label set reports (a Telemetry
    /// override can disable some, or give them other labels).
    pub mask: u8,
    pub requests: u64,
    pub duration_ms: Hist,
    pub request_bytes: Hist,
    pub response_bytes: Hist,
}

/// The TCP metrics of one label set.
#[derive(Clone, Debug, Default)]
pub struct TcpSeries {
    /// As `HttpSeries::mask`: opened, closed, sent, received.
    pub mask: u8,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub opened: u64,
    pub closed: u64,
}

#[derive(Debug, Default)]
struct Inner {
    http: HashMap<Labels, HttpSeries>,
    tcp: HashMap<Labels, TcpSeries>,
    dropped: u64,
}

impl Inner {
    fn full(&self, max: usize) -> bool {
        self.http.len() + self.tcp.len() >= max
    }
}

/// All istio_* series. Shared by every sink stream and the metrics endpoint.
#[derive(Debug)]
pub struct SeriesStore {
    inner: Mutex<Inner>,
    max_series: usize,
}

impl SeriesStore {
    pub fn new(max_series: usize) -> Self {
        SeriesStore {
            inner: Mutex::default(),
            max_series,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a batch of HTTP samples under one lock.
    pub fn record_http(&self, samples: &[HttpSample]) {
        let mut inner = self.lock();
        for s in samples {
            if !inner.http.contains_key(&s.labels) && inner.full(self.max_series) {
                inner.dropped += 1;
                continue;
            }
            let series = inner.http.entry(s.labels.clone()).or_default();
            series.mask |= s.mask;
            if s.mask & 1 != 0 {
                series.requests += 1;
            }
            if s.mask & 2 != 0 {
                series
                    .duration_ms
                    .observe(&DURATION_BUCKETS_MS, s.duration_ms);
            }
            if s.mask & 4 != 0 {
                series
                    .request_bytes
                    .observe(&BYTES_BUCKETS, s.request_bytes as f64);
            }
            if s.mask & 8 != 0 {
                series
                    .response_bytes
                    .observe(&BYTES_BUCKETS, s.response_bytes as f64);
            }
        }
    }

    /// Records a batch of TCP samples under one lock.
    pub fn record_tcp(&self, samples: &[TcpSample]) {
        let mut inner = self.lock();
        for s in samples {
            if !inner.tcp.contains_key(&s.labels) && inner.full(self.max_series) {
                inner.dropped += 1;
                continue;
            }
            let series = inner.tcp.entry(s.labels.clone()).or_default();
            series.mask |= s.mask;
            let on = |bit: u8| s.mask & bit != 0;
            series.opened += u64::from(s.opened && on(1));
            series.closed += u64::from(s.closed && on(2));
            if on(4) {
                series.sent_bytes += s.sent_bytes;
            }
            if on(8) {
                series.received_bytes += s.received_bytes;
            }
        }
    }

    /// Drops the series that name a workload `live` says is gone.
    pub fn expire(&self, live: impl Fn(&WorkloadKey) -> bool) -> usize {
        let mut inner = self.lock();
        let before = inner.http.len() + inner.tcp.len();
        let keep = |l: &Labels| {
            [&l.source.key, &l.destination.key]
                .into_iter()
                .flatten()
                .all(&live)
        };
        inner.http.retain(|l, _| keep(l));
        inner.tcp.retain(|l, _| keep(l));
        before - inner.http.len() - inner.tcp.len()
    }

    /// A copy of the HTTP series (for the mesh graph).
    pub fn http_snapshot(&self) -> Vec<(Labels, HttpSeries)> {
        let inner = self.lock();
        inner
            .http
            .iter()
            .map(|(l, s)| (l.clone(), s.clone()))
            .collect()
    }

    /// A copy of the TCP series.
    pub fn tcp_snapshot(&self) -> Vec<(Labels, TcpSeries)> {
        let inner = self.lock();
        inner
            .tcp
            .iter()
            .map(|(l, s)| (l.clone(), s.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.http.len() + inner.tcp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

/// Name, help, buckets and field of one istio_* histogram.
type HistogramDef = (
    &'static str,
    &'static str,
    &'static [f64],
    fn(&HttpSeries) -> &Hist,
);
/// Name, help and field of one istio_tcp_* counter.
type TcpCounterDef = (&'static str, &'static str, fn(&TcpSeries) -> u64);

impl Collector for SeriesStore {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copy out under the lock, encode without it (a scrape must not stall the sink).
        let (mut http, mut tcp, dropped) = {
            let inner = self.lock();
            let http: Vec<_> = inner
                .http
                .iter()
                .map(|(l, s)| (l.clone(), s.clone()))
                .collect();
            let tcp: Vec<_> = inner
                .tcp
                .iter()
                .map(|(l, s)| (l.clone(), s.clone()))
                .collect();
            (http, tcp, inner.dropped)
        };
        http.sort_by(|a, b| a.0.cmp(&b.0));
        tcp.sort_by(|a, b| a.0.cmp(&b.0));

        counter_family(
            &mut encoder,
            "istio_requests",
            "Requests, as Istio's standard metric (from sidecar access logs)",
            http.iter()
                .filter(|(_, s)| s.mask & 1 != 0)
                .map(|(l, s)| (l.pairs(false), s.requests)),
        )?;
        let histograms: [HistogramDef; 3] = [
            (
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds",
                &DURATION_BUCKETS_MS,
                |s| &s.duration_ms,
            ),
            (
                "istio_request_bytes",
                "Request size (headers and body) in bytes",
                &BYTES_BUCKETS,
                |s| &s.request_bytes,
            ),
            (
                "istio_response_bytes",
                "Response size (headers and body) in bytes",
                &BYTES_BUCKETS,
                |s| &s.response_bytes,
            ),
        ];
        for (bit, (name, help, bounds, pick)) in histograms.into_iter().enumerate() {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (l, s) in http.iter().filter(|(_, s)| s.mask & (2 << bit) != 0) {
                let pairs = l.pairs(false);
                let h = pick(s);
                m.encode_family(&pairs)?.encode_histogram::<NoLabelSet>(
                    h.sum,
                    h.count,
                    &h.cumulative(bounds),
                    None,
                )?;
            }
        }
        // In mask-bit order: opened, closed, sent, received.
        let tcp_counters: [TcpCounterDef; 4] = [
            (
                "istio_tcp_connections_opened",
                "TCP connections opened",
                |s| s.opened,
            ),
            (
                "istio_tcp_connections_closed",
                "TCP connections closed",
                |s| s.closed,
            ),
            (
                "istio_tcp_sent_bytes",
                "Bytes sent during TCP connections (response direction)",
                |s| s.sent_bytes,
            ),
            (
                "istio_tcp_received_bytes",
                "Bytes received during TCP connections (request direction)",
                |s| s.received_bytes,
            ),
        ];
        for (bit, (name, help, pick)) in tcp_counters.into_iter().enumerate() {
            counter_family(
                &mut encoder,
                name,
                help,
                tcp.iter()
                    .filter(|(_, s)| s.mask & (1 << bit) != 0)
                    .map(|(l, s)| (l.pairs(true), pick(s))),
            )?;
        }
        ConstGauge::new((http.len() + tcp.len()) as i64).encode(encoder.encode_descriptor(
            "pilotfish_telemetry_series",
            "istio_* label sets held",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(dropped).encode(encoder.encode_descriptor(
            "pilotfish_telemetry_samples_dropped",
            "Samples dropped because they would open a series beyond the cap",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

fn counter_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (pairs, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&pairs)?)?;
    }
    Ok(())
}
