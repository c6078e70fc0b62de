//! The mesh UI in real headless Chromium: real traffic through real
//! sidecars, then `/ui` loaded in a browser that runs the page's script,
//! and the rendered DOM checked for the graph's nodes and edges, the
//! proxies' sync state and a config error. A screenshot is written as a
//! test artifact.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BOOKINFO, Mesh, next_net, series_sum, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 140;
/// Page requests sent through the mesh.
const REQUESTS: usize = 30;
/// Requests productpage's sidecar sends to a ratings that fails every 2nd one.
const FLAKY_REQUESTS: usize = 10;
/// How long Chromium may take for one page (it is one of many processes on
/// a small shared machine).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

const INSTALL: &str = "install it with `make tools` (apt-get update && apt-get install -y chromium), \
     or set CHROMIUM to a Chromium/Chrome binary";

/// The browser: $CHROMIUM, else `chromium` (Debian's package) on PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CHROMIUM={} is not a file: {INSTALL}",
            p.display()
        );
        return p;
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("Chromium not found: {INSTALL}"))
}

/// Runs headless Chromium on `url` with `extra` arguments and returns its stdout.
fn browse(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            // Ten seconds of page time: the first poll, then three more.
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(out.reopen().expect("reopen"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run Chromium ({e}): {INSTALL}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for Chromium") {
            break s;
        }
        if start.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Chromium did not finish {url} within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "Chromium failed on {url}: {status}");
    std::fs::read_to_string(out.path()).expect("Chromium's output")
}

/// The attributes of every start tag in `dom` that has attribute `attr`,
/// keyed by that attribute's value.
fn tags_with(dom: &str, attr: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let attr_re = regex::Regex::new(r#"([\w:-]+)="([^"]*)""#).unwrap();
    let needle = format!(" {attr}=\"");
    let mut found = BTreeMap::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&needle) {
        let start = rest[..i].rfind('<').expect("inside a tag");
        let end = i + rest[i..].find('>').expect("tag end");
        let attrs: BTreeMap<String, String> = attr_re
            .captures_iter(&rest[start..end])
            .map(|c| (c[1].to_string(), unescape(&c[2])))
            .collect();
        found.insert(attrs[attr].clone(), attrs);
        rest = &rest[end..];
    }
    found
}

fn unescape(s: &str) -> String {
    s.replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn num(attrs: &BTreeMap<String, String>, name: &str) -> f64 {
    attrs
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {attrs:?}"))
}

/// Requests productpage's sidecar saw arrive from `source` (destination reporter).
fn arrived(mesh: &Mesh, source: &str, app: &str) -> f64 {
    series_sum(
        &mesh.metrics(),
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("source_workload", source),
            ("destination_app", app),
        ],
    )
}

/// Waits until no more requests arrive at the sink (sidecars flush their
/// access logs every second).
fn settle(mesh: &Mesh) {
    let mut last = -1.0;
    wait_until("counts to settle", || {
        std::thread::sleep(Duration::from_millis(1200));
        let now = series_sum(&mesh.metrics(), "istio_requests_total", &[]);
        std::mem::replace(&mut last, now) == now && now > 0.0
    });
}

/// Where test artifacts go: `target/test-artifacts/` of this build.
fn artifact(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/e2e_ui-<hash> -> target/
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir.join(name)
}

#[test]
fn ui_shows_the_mesh_after_real_traffic() {
    // Fail before starting a mesh when there is no browser.
    chromium();
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    mesh.start_bookinfo();
    let names: Vec<&str> = BOOKINFO.iter().map(|b| b.0).collect();

    // Every sidecar has ACKed everything it was sent.
    wait_until("all six proxies SYNCED", || {
        let syncs = mesh.get_json(&mesh.admin_url("/debug/syncz"));
        let proxies = syncs.as_array().cloned().unwrap_or_default();
        proxies.len() == names.len()
            && proxies.iter().all(|p| {
                p["types"].as_object().is_some_and(|t| {
                    t.len() == 5 && t.values().all(|s| s["acked_version"] == s["sent_version"])
                })
            })
    });
    // A broken file: its error must show on the page (traffic is unaffected).
    mesh.write("broken.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken}\nspec:\n  hosts: [ratings]\n  htp: []\n");
    wait_until("the config error reported", || {
        mesh.get_text(&mesh.admin_url("/debug/config_errors"))
            .contains("broken.yaml")
    });

    // Let the access logs of the start-up probes arrive (sidecars flush
    // every second), then take the start of the UI's rate window.
    settle(&mesh);
    let first = mesh.get_json(&mesh.admin_url("/ui/graph.json"));
    assert_eq!(first["window_s"], serde_json::Value::Null, "{first}");
    let base_details = arrived(&mesh, "productpage-v1", "details");
    let base_reviews = arrived(&mesh, "productpage-v1", "reviews");
    let base_ratings =
        arrived(&mesh, "reviews-v2", "ratings") + arrived(&mesh, "reviews-v3", "ratings");

    // Real traffic: no routing rules, so reviews round-robins over v1..v3
    // and v2/v3 call ratings.
    let mut versions = BTreeSet::new();
    let mut ratings_calls = 0.0;
    for _ in 0..REQUESTS {
        let (version, ratings) = mesh.reviews(None);
        if ratings {
            ratings_calls += 1.0;
        }
        versions.insert(version);
    }
    assert!(versions.len() >= 2, "round robin reached only {versions:?}");
    // Errors: ratings fails every 2nd request it serves; productpage's
    // sidecar retries 503 (Istio's default policy), so its caller sees
    // none, but ratings' sidecar reports each failed attempt.
    for _ in 0..FLAKY_REQUESTS {
        let r = mesh.via_sidecar(11, "http://ratings:9080/ratings/0?flaky=2", &[]);
        assert_eq!(r.status, 200, "a retry should hide the 503: {}", r.body);
    }
    wait_until("the sink counting the traffic", || {
        arrived(&mesh, "productpage-v1", "details") >= base_details + REQUESTS as f64
            && arrived(&mesh, "productpage-v1", "reviews") >= base_reviews + REQUESTS as f64
            && arrived(&mesh, "reviews-v2", "ratings") + arrived(&mesh, "reviews-v3", "ratings")
                >= base_ratings + ratings_calls
            && arrived(&mesh, "productpage-v1", "ratings") >= FLAKY_REQUESTS as f64
    });
    settle(&mesh);
    let failed_attempts = series_sum(
        &mesh.metrics(),
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("source_workload", "productpage-v1"),
            ("destination_app", "ratings"),
            ("response_code", "503"),
        ],
    );
    let attempts = arrived(&mesh, "productpage-v1", "ratings");
    assert!(failed_attempts > 0.0, "no failed attempt reported");

    let url = mesh.admin_url("/ui");
    let dom = browse(&url, &["--dump-dom"]);
    let dom_file = artifact("e2e_ui-dom.html");
    std::fs::write(&dom_file, &dom).expect("write the DOM");
    eprintln!("rendered DOM: {}", dom_file.display());

    // The script ran and polled the JSON API.
    let status = tags_with(&dom, "data-polls");
    let (polls, status) = status.iter().next().expect("status line");
    assert!(
        polls.parse::<u32>().is_ok_and(|p| p >= 1),
        "page never polled: {status:?}"
    );
    // Rates measure from the sample taken above.
    let window_s = num(status, "data-window-s");

    // Nodes: every workload, labelled by app and version, its proxy SYNCED.
    let nodes = tags_with(&dom, "data-node");
    for (workload, app, version, _, _) in BOOKINFO {
        let n = nodes
            .get(*workload)
            .unwrap_or_else(|| panic!("no node {workload} in {:?}", nodes.keys()));
        assert_eq!(n["data-kind"], "workload");
        assert_eq!(n["data-app"], *app);
        assert_eq!(n["data-version"], *version);
        assert_eq!(n["data-proxy-state"], "SYNCED", "{workload}: {n:?}");
    }
    // The test client has no sidecar: it is the unknown caller.
    assert_eq!(nodes["unknown"]["data-kind"], "unknown");

    // Edges: what the client saw, as the callee's sidecar reported it (mTLS).
    let edges = tags_with(&dom, "data-edge");
    let mesh_edge = |id: &str| {
        let e = edges
            .get(id)
            .unwrap_or_else(|| panic!("no edge {id} in {:?}", edges.keys()));
        assert_eq!(e["data-reporter"], "destination", "{id}: {e:?}");
        assert_eq!(e["data-mtls"], "true", "{id}: {e:?}");
        assert_eq!(e["data-protocol"], "http");
        assert!(num(e, "data-rps") > 0.0, "{id}: no rate: {e:?}");
        assert_eq!(num(e, "data-error-rate"), 0.0, "{id}: {e:?}");
        assert!(num(e, "data-p99-ms") > 0.0, "{id}: {e:?}");
        e.clone()
    };
    let details = mesh_edge("productpage-v1->details-v1");
    assert!(num(&details, "data-requests-total") >= REQUESTS as f64);
    // Exactly the requests sent since the window's first sample.
    let rps = num(&details, "data-rps");
    assert!(
        (rps * window_s - REQUESTS as f64).abs() < 0.01,
        "{rps} req/s over {window_s} s is not {REQUESTS} requests"
    );
    let mut to_reviews = 0.0;
    for v in &versions {
        let e = mesh_edge(&format!("productpage-v1->reviews-{v}"));
        to_reviews += num(&e, "data-requests-total");
        if v != "v1" {
            mesh_edge(&format!("reviews-{v}->ratings-v1"));
        }
    }
    assert!(
        to_reviews >= REQUESTS as f64,
        "{to_reviews} requests to reviews"
    );
    // The flaky edge: the share of 5xx ratings' sidecar reported, drawn as failing.
    let flaky = &edges["productpage-v1->ratings-v1"];
    assert_eq!(flaky["data-mtls"], "true", "{flaky:?}");
    let share = num(flaky, "data-error-rate");
    assert!(
        (share - failed_attempts / attempts).abs() < 1e-9,
        "error rate {share}, reported {failed_attempts} of {attempts}"
    );
    assert!(
        flaky["class"].contains("health-bad"),
        "{share} of 5xx not drawn as failing: {flaky:?}"
    );
    // The client reached productpage's sidecar in plaintext.
    let client = &edges["unknown->productpage-v1"];
    assert_eq!(client["data-mtls"], "false", "{client:?}");

    // The proxy list: every sidecar, every type SYNCED.
    let proxies = tags_with(&dom, "data-proxy");
    assert_eq!(
        proxies.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut n = names.clone();
            n.sort();
            n
        },
        "proxy rows"
    );
    let states = tags_with(&dom, "data-state");
    assert_eq!(
        states.keys().map(String::as_str).collect::<Vec<_>>(),
        ["SYNCED"],
        "some type is not SYNCED"
    );
    let cells = dom.matches("data-state=\"SYNCED\"").count();
    assert_eq!(cells, names.len() * 5, "SYNCED cells");

    // The config error is listed.
    let errors = tags_with(&dom, "data-config-error");
    assert!(
        errors.keys().any(|f| f.ends_with("broken.yaml")),
        "config errors shown: {errors:?}"
    );

    // A screenshot, for a human to look at.
    let png = artifact("e2e_ui-mesh.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,900",
            "--hide-scrollbars",
        ],
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "screenshot suspiciously small: {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());
}
