//! Issue 8's figures that the load generator does not cover, measured
//! (never typed in): leaf certificates minted per second on one core, and
//! how long a file edit takes until a real Envoy serves the new route.
//! Prints `figure:` lines; `make bench` copies them into BENCHMARKS.md from
//! a release build:
//!
//! ```sh
//! cargo test --release --test perf_figures -- --nocapture --test-threads 1
//! ```
//!
//! The assertions check that every certificate is what was asked for and
//! every edit reached Envoy; the times are reported, not asserted.

mod common;

use std::time::{Duration, Instant};

use common::{Mesh, next_net, wait_until};
use pilotfish::ca::{Ca, Identity, inspect};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 14;

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    }
}

#[test]
fn leaf_certificates_minted_per_second_on_one_core() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path(), "cluster.local").expect("CA");
    let n: u32 = if cfg!(debug_assertions) { 200 } else { 5000 };
    let ids: Vec<Identity> = (0..n)
        .map(|i| {
            Identity::new("cluster.local", format!("ns-{}", i % 10), format!("sa-{i}")).unwrap()
        })
        .collect();
    let ttl = Duration::from_secs(24 * 3600);
    // One thread: a key pair and a signed leaf each, as SDS needs them.
    let start = Instant::now();
    let certs: Vec<_> = ids
        .iter()
        .map(|id| ca.issue(id, ttl).expect("issue"))
        .collect();
    let elapsed = start.elapsed();
    println!(
        "\nfigure: leaf certificates (new ECDSA P-256 key + signed SPIFFE leaf) minted on one core: {:.0}/s ({n} in {:.0} ms) [{}]; target >= 5,000/s",
        f64::from(n) / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3,
        profile()
    );
    // Each leaf names exactly its own identity.
    for (id, cert) in ids.iter().zip(&certs).step_by(97) {
        let info = inspect(&cert.cert_chain_pem).expect("parse leaf");
        assert_eq!(info.spiffe_ids, vec![id.spiffe_uri()]);
        assert!(!info.is_ca);
    }
    let serials: std::collections::HashSet<&str> =
        certs.iter().map(|c| c.serial_hex.as_str()).collect();
    assert_eq!(serials.len(), certs.len(), "serials are unique");
}

/// reviews routed to one version, as a file an operator edits.
fn reviews_to(version: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {version}}}
"
    )
}

#[test]
fn file_edit_to_a_real_envoy_serving_the_new_route() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &["destination-rule-all.yaml"], false);
    mesh.write("reviews.yaml", &reviews_to("v1"));
    mesh.start_bookinfo();
    // productpage's sidecar, used as the app's HTTP proxy, on a kept-alive
    // connection so each probe is one small request.
    let client = reqwest::blocking::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://127.{}.0.11:15001", mesh.net)).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let version = || -> Option<String> {
        let body: serde_json::Value = client
            .get("http://reviews:9080/reviews/0")
            .send()
            .ok()?
            .json()
            .ok()?;
        body["version"].as_str().map(str::to_string)
    };
    wait_until("reviews on v1", || version().as_deref() == Some("v1"));

    let mut took = Vec::new();
    for (i, next) in ["v3", "v1", "v2", "v1", "v3", "v1", "v2", "v1"]
        .iter()
        .enumerate()
    {
        // Quiet between edits, so each is its own debounce window.
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        mesh.write("reviews.yaml", &reviews_to(next));
        loop {
            if version().as_deref() == Some(*next) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "edit {i} (reviews -> {next}) never reached Envoy"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        took.push(start.elapsed().as_secs_f64() * 1e3);
        // Envoy serves only the new route from then on.
        for _ in 0..5 {
            assert_eq!(version().as_deref(), Some(*next));
        }
    }
    took.sort_by(f64::total_cmp);
    println!(
        "\nfigure: file edit -> a real Envoy serves the new route (serve's default 100 ms debounce included), over {} edits: median {:.0} ms, max {:.0} ms [{}]; target <= 300 ms",
        took.len(),
        took[took.len() / 2],
        took[took.len() - 1],
        profile()
    );
}
