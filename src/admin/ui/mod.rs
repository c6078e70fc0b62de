//! The mesh UI at `/ui`: one self-contained page (HTML, CSS and JS embedded
//! in the binary, nothing fetched from elsewhere) that polls `/ui/graph.json`
//! and draws the service graph, the proxies' sync state and the config errors.

pub mod graph;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use self::graph::{Baseline, Graph, Totals};
use super::AdminState;

const PAGE: &str = include_str!("page.html");

/// The page may run only its own inline script and style and talk only to
/// this server: a config error message shown on it can never load anything.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Rates are averaged over about this long: long enough to smooth the
/// page's 3 s polls and the sidecars' access-log flushes, short enough that
/// a change in traffic shows within half a minute.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);
/// At most one sample per this long is kept, so memory stays bounded (about
/// `RATE_WINDOW / SAMPLE_EVERY` samples) however many pages poll.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Below this the rate of a sample pair is too noisy to show.
pub const MIN_SPAN: Duration = Duration::from_secs(1);

/// Recent per-edge totals, so rates compare two moments. Shared by every
/// client of the page: each call measures against the same window.
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<(Instant, Arc<Totals>)>,
}

impl Window {
    /// Records `current` (taken at `now`) and returns the sample to measure
    /// against: the newest one at least `RATE_WINDOW` old, else the oldest
    /// one at least `MIN_SPAN` old, else none.
    pub fn advance(
        &mut self,
        now: Instant,
        current: Arc<Totals>,
    ) -> Option<(Duration, Arc<Totals>)> {
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let base = self
            .samples
            .front()
            .map(|(t, s)| (now.saturating_duration_since(*t), Arc::clone(s)))
            .filter(|(age, _)| *age >= MIN_SPAN);
        if self
            .samples
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= SAMPLE_EVERY)
        {
            self.samples.push_back((now, current));
        }
        base
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// `/ui` and `/ui/graph.json`.
pub fn routes() -> Router<AdminState> {
    let window = Arc::new(Mutex::new(Window::default()));
    Router::new().route("/ui", get(page)).route(
        "/ui/graph.json",
        get(move |State(s): State<AdminState>| {
            let window = Arc::clone(&window);
            async move { Json(graph(&s, &window)) }
        }),
    )
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        PAGE,
    )
        .into_response()
}

/// Reads every role's current state and builds the graph (no lock is held
/// across another).
fn graph(s: &AdminState, window: &Mutex<Window>) -> Graph {
    let registry = Arc::clone(&s.xds.borrow().registry);
    let config = Arc::clone(&s.config.borrow());
    let syncs = s.syncs.syncs();
    let http = s.telemetry.series.http_snapshot();
    let tcp = s.telemetry.series.tcp_snapshot();
    let now = Arc::new(Totals::of(&http, &tcp));
    let base = window
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .advance(Instant::now(), Arc::clone(&now));
    let baseline = base.as_ref().map(|(age, totals)| Baseline {
        age: *age,
        totals: totals.as_ref(),
    });
    graph::build(
        &registry,
        &now,
        baseline.as_ref(),
        &syncs,
        config.version,
        &config.errors,
    )
}
