//! The telemetry sink with real Envoy: a known mix of traffic through real
//! sidecars, and the exact counts and labels of Istio's standard metrics on
//! pilotfish's /metrics, for both reporters.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Mesh, metric, next_net, series, series_sum, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 80;

const RATINGS_ABORT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      abort: {httpStatus: 503, percentage: {value: 10}}
    route: [{destination: {host: ratings, subset: v1}}]
";

/// productpage (host 11) calling ratings, as counted by `reporter`.
fn ratings_calls(mesh: &Mesh, reporter: &str, code: &str) -> f64 {
    series_sum(
        &mesh.metrics(),
        "istio_requests_total",
        &[
            ("reporter", reporter),
            ("source_workload", "productpage-v1"),
            ("destination_service_name", "ratings"),
            ("response_code", code),
        ],
    )
}

fn all_ratings_calls(mesh: &Mesh, reporter: &str) -> f64 {
    series_sum(
        &mesh.metrics(),
        "istio_requests_total",
        &[
            ("reporter", reporter),
            ("source_workload", "productpage-v1"),
            ("destination_service_name", "ratings"),
        ],
    )
}

/// Sends `n` requests productpage → ratings; returns how many were aborted.
fn send(mesh: &Mesh, n: usize) -> usize {
    let mut aborted = 0;
    for _ in 0..n {
        match mesh
            .via_sidecar(11, "http://ratings:9080/ratings/0", &[])
            .status
        {
            503 => aborted += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    aborted
}

#[test]
fn request_metrics_count_exactly_for_both_reporters() {
    let mut mesh = Mesh::start(
        next_net(NET_BASE),
        &["destination-rule-all.yaml", "virtual-service-all-v1.yaml"],
        false,
    );
    mesh.write("ratings-abort.yaml", RATINGS_ABORT);
    mesh.start_bookinfo();
    wait_until("the abort rule to apply", || {
        mesh.via_sidecar(11, "http://ratings:9080/ratings/0", &[])
            .status
            == 503
    });
    // Let the probes' logs arrive, then take the baseline.
    let mut last = -1.0;
    wait_until("counts to settle", || {
        std::thread::sleep(Duration::from_millis(1200));
        let now = all_ratings_calls(&mesh, "source");
        std::mem::replace(&mut last, now) == now && now > 0.0
    });
    let base_ok = ratings_calls(&mesh, "source", "200");
    let base_aborted = ratings_calls(&mesh, "source", "503");
    let base_dest = all_ratings_calls(&mesh, "destination");

    let aborted = send(&mesh, 200) as f64;
    assert!(aborted > 0.0 && aborted < 60.0, "aborted {aborted} of 200");
    wait_until("200 more requests counted by the source reporter", || {
        all_ratings_calls(&mesh, "source") >= base_ok + base_aborted + 200.0
    });
    wait_until("the destination reporter's counts", || {
        all_ratings_calls(&mesh, "destination") >= base_dest + 200.0 - aborted
    });
    // Nothing more arrives: every request is counted exactly once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ratings_calls(&mesh, "source", "200"),
        base_ok + 200.0 - aborted
    );
    assert_eq!(
        ratings_calls(&mesh, "source", "503"),
        base_aborted + aborted
    );
    // Aborted requests never left the source sidecar.
    assert_eq!(
        all_ratings_calls(&mesh, "destination"),
        base_dest + 200.0 - aborted
    );
    assert_eq!(ratings_calls(&mesh, "destination", "503"), 0.0);

    // Istio's labels, from what pilotfish knows about both workloads.
    let text = mesh.metrics();
    let one = |filter: &[(&str, &str)]| {
        let found = series(&text, "istio_requests_total", filter);
        assert_eq!(found.len(), 1, "{filter:?}: {found:?}");
        found.into_iter().next().unwrap().0
    };
    let ok = one(&[
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
        ("destination_service_name", "ratings"),
        ("response_code", "200"),
    ]);
    for (k, v) in [
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_canonical_service", "productpage"),
        ("destination_workload", "ratings-v1"),
        ("destination_workload_namespace", "default"),
        ("destination_app", "ratings"),
        ("destination_version", "v1"),
        ("destination_service", "ratings.default.svc.cluster.local"),
        ("destination_service_namespace", "default"),
        ("request_protocol", "http"),
        ("response_flags", "-"),
        ("grpc_response_status", ""),
        ("connection_security_policy", "unknown"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        ),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/default/sa/bookinfo-ratings",
        ),
    ] {
        assert_eq!(ok.get(k).map(String::as_str), Some(v), "{k} in {ok:?}");
    }
    // An aborted request never reached a workload, but names its service
    // and Envoy's fault-injected flag.
    let aborted_labels = one(&[
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
        ("destination_service_name", "ratings"),
        ("response_code", "503"),
    ]);
    assert_eq!(aborted_labels["response_flags"], "FI");
    assert_eq!(aborted_labels["destination_workload"], "unknown");
    assert_eq!(
        aborted_labels["destination_service"],
        "ratings.default.svc.cluster.local"
    );
    let dst = series(
        &text,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("source_workload", "productpage-v1"),
            ("destination_service_name", "ratings"),
        ],
    );
    assert_eq!(dst.len(), 1, "{dst:?}");
    let l = &dst[0].0;
    // The destination sidecar saw the caller's certificate (mesh mTLS).
    assert_eq!(l["connection_security_policy"], "mutual_tls", "{l:?}");
    assert_eq!(
        l["source_principal"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert_eq!(l["destination_workload"], "ratings-v1");
    assert_eq!(l["response_flags"], "-");
    // The histograms count the same requests.
    let durations = series_sum(
        &text,
        "istio_request_duration_milliseconds_count",
        &[
            ("reporter", "source"),
            ("source_workload", "productpage-v1"),
            ("destination_service_name", "ratings"),
        ],
    );
    assert_eq!(durations, all_ratings_calls(&mesh, "source"));
    assert!(
        series_sum(
            &text,
            "istio_response_bytes_sum",
            &[
                ("reporter", "destination"),
                ("destination_workload", "ratings-v1")
            ],
        ) > 0.0
    );

    // A sidecar restart does not count anything twice.
    let before = all_ratings_calls(&mesh, "source");
    mesh.kill_envoy(11);
    mesh.start_envoy_with("productpage-v1", 11, &["--metrics-sink"], |_| {});
    mesh.wait_envoy_ready(11);
    wait_until("productpage's sidecar routing again", || {
        std::net::TcpStream::connect(format!("127.{}.0.11:15001", mesh.net)).is_ok()
    });
    send(&mesh, 50);
    wait_until("50 more requests counted", || {
        all_ratings_calls(&mesh, "source") >= before + 50.0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(all_ratings_calls(&mesh, "source"), before + 50.0);
    // Envoy's own stats arrive over the metrics sink (the restarted sidecar has it on).
    wait_until("stats from productpage's sidecar", || {
        mesh.get_json(&mesh.admin_url("/debug/proxy_stats"))["default/productpage-v1"]["stats"]
            ["server.uptime"]
            .as_f64()
            .is_some_and(|v| v >= 1.0)
    });
}

#[test]
fn control_plane_metrics_observe_real_pushes() {
    let mut mesh = Mesh::start(
        next_net(NET_BASE),
        &["destination-rule-all.yaml", "virtual-service-all-v1.yaml"],
        false,
    );
    mesh.start_bookinfo();
    let count = |name: &str| metric(&mesh.metrics(), name).unwrap_or(0.0);
    let converged = count("pilot_proxy_convergence_time_count");
    let debounced = count("pilot_debounce_time_count");
    // One edit that changes the route table every bookinfo sidecar uses.
    mesh.apply("virtual-service-reviews-v3.yaml");
    wait_until("reviews v3 serving", || mesh.reviews(None).0 == "v3");
    // Every one of the six sidecars ACKed the routes the edit caused.
    wait_until("six convergence observations", || {
        count("pilot_proxy_convergence_time_count") >= converged + 6.0
    });
    let text = mesh.metrics();
    let sum = metric(&text, "pilot_proxy_convergence_time_sum").unwrap();
    assert!(sum > 0.0, "{text}");
    assert!(count("pilot_debounce_time_count") > debounced);
    assert!(metric(&text, "pilot_push_triggers_total{type=\"config\"}").unwrap_or(0.0) >= 2.0);
    assert!(
        metric(&text, "pilot_xds_config_size_bytes_count{type=\"rds\"}").unwrap_or(0.0) >= 12.0,
        "{text}"
    );
    assert!(metric(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 1e6);
    assert!(
        series_sum(
            &text,
            "galley_validation_passed_total",
            &[("kind", "VirtualService")]
        ) >= 2.0,
        "{text}"
    );
    assert!(metric(&text, "process_cpu_seconds_total").unwrap_or(0.0) > 0.0);
}

/// A Zipkin collector stand-in: records every span batch POSTed to it.
fn zipkin_collector(addr: &str) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let out = std::sync::Arc::clone(&bodies);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let out = std::sync::Arc::clone(&out);
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn);
                while let Some(body) = read_request(&mut reader) {
                    out.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    let reply = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
                    if reader.get_mut().write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    bodies
}

/// One HTTP/1.1 request's body: by Content-Length, or chunked (as Envoy
/// sends spans). None at end of connection.
fn read_request(reader: &mut impl std::io::BufRead) -> Option<Vec<u8>> {
    let mut len = 0usize;
    let mut chunked = false;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    if !chunked {
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).ok()?;
        return Some(body);
    }
    let mut body = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(line.trim(), 16).ok()?;
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

#[test]
fn telemetry_api_access_logs_tracing_and_metric_overrides() {
    let net = next_net(NET_BASE);
    let collector = format!("127.{net}.0.9:9411");
    let spans = zipkin_collector(&collector);
    let mut mesh = Mesh::start(net, &[], false);
    mesh.serve_args = vec!["--zipkin-address".into(), collector];
    mesh.stop_pilotfish();
    mesh.start_pilotfish();
    for f in ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"] {
        mesh.apply(f);
    }
    // Istio's Telemetry API: the mesh-wide `envoy` access log; productpage
    // traced at 100 % and its client-side request count relabelled; no
    // request duration from ratings' server side.
    mesh.write(
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 100}]
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_protocol: {operation: REMOVE}
        request_host: {value: request.host}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_DURATION, mode: SERVER}
      disabled: true
",
    );
    mesh.start_bookinfo();
    for _ in 0..5 {
        assert_eq!(
            mesh.via_sidecar(11, "http://ratings:9080/ratings/7", &[])
                .status,
            200
        );
    }
    // The access log line of the request, in the proxy's own output.
    wait_until("productpage's access log", || {
        mesh.envoy_log("productpage-v1").lines().any(|l| {
            l.contains("GET /ratings/7 HTTP/1.1\" 200") && l.contains("outbound|9080|v1|ratings")
        })
    });
    // Spans from productpage's sidecar reach the Zipkin collector.
    wait_until("spans at the collector", || {
        spans
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains("/ratings/7") && b.contains("traceId"))
    });
    // Metric overrides: productpage's client-side count has the new tag
    // and not the removed one; its durations keep the standard labels.
    let pp_count = |text: &str| {
        series(
            text,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("source_workload", "productpage-v1"),
                ("destination_service_name", "ratings"),
            ],
        )
    };
    wait_until("productpage's relabelled count", || {
        pp_count(&mesh.metrics())
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>()
            >= 5.0
    });
    let text = mesh.metrics();
    for (labels, _) in pp_count(&text) {
        assert!(!labels.contains_key("request_protocol"), "{labels:?}");
        assert_eq!(labels["request_host"], "ratings:9080");
    }
    let durations = series(
        &text,
        "istio_request_duration_milliseconds_count",
        &[
            ("reporter", "source"),
            ("source_workload", "productpage-v1"),
        ],
    );
    assert!(
        durations
            .iter()
            .all(|(l, _)| l["request_protocol"] == "http"),
        "{durations:?}"
    );
    // Ratings' server side counts requests but reports no durations.
    assert!(
        series_sum(
            &text,
            "istio_requests_total",
            &[
                ("reporter", "destination"),
                ("destination_workload", "ratings-v1")
            ],
        ) >= 5.0
    );
    assert_eq!(
        series(
            &text,
            "istio_request_duration_milliseconds_count",
            &[
                ("reporter", "destination"),
                ("destination_workload", "ratings-v1")
            ],
        )
        .len(),
        0
    );

    // Turning the access log off for productpage removes it from its sidecar.
    mesh.write(
        "telemetry-off.yaml",
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  accessLogging: [{disabled: true}]
",
    );
    wait_until(
        "the stdout logger gone from productpage's listeners",
        || {
            !mesh
                .envoy_admin(11, "/config_dump?resource=dynamic_listeners")
                .contains("envoy.access_loggers.stdout")
        },
    );
}

/// One connection to tcp-echo's inbound listener on ratings' sidecar
/// (from the address of host number `from`): 1,000 bytes there and back.
async fn echo(net: u8, from: Option<u8>) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4()?;
    if let Some(h) = from {
        sock.bind(format!("127.{net}.0.{h}:0").parse().unwrap())?;
    }
    let mut s = sock
        .connect(format!("127.{net}.0.16:9090").parse().unwrap())
        .await?;
    s.write_all(&[7u8; 1000]).await?;
    let mut back = vec![0u8; 1000];
    s.read_exact(&mut back).await?;
    assert_eq!(back, vec![7u8; 1000]);
    Ok(())
}

#[test]
fn tcp_connections_and_bytes_are_counted() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    let net = mesh.net;
    // A TCP service served by ratings-v1 (host 16): its app is an echo server.
    mesh.start_tcp_echo();
    mesh.start_envoy("ratings-v1", 16);
    mesh.wait_envoy_ready(16);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let filter = [
        ("reporter", "destination"),
        ("destination_service_name", "tcp-echo"),
    ];
    wait_until("an echo through the inbound TCP listener", || {
        rt.block_on(echo(net, None)).is_ok()
    });
    // The probes are counted too: settle, then take the baseline.
    let mut last = -1.0;
    wait_until("the probe connections counted", || {
        std::thread::sleep(Duration::from_millis(1200));
        let now = series_sum(
            &mesh.metrics(),
            "istio_tcp_connections_closed_total",
            &filter,
        );
        std::mem::replace(&mut last, now) == now && now > 0.0
    });
    let text = mesh.metrics();
    let base_opened = series_sum(&text, "istio_tcp_connections_opened_total", &filter);
    let base_closed = series_sum(&text, "istio_tcp_connections_closed_total", &filter);
    let base_rx = series_sum(&text, "istio_tcp_received_bytes_total", &filter);
    let base_tx = series_sum(&text, "istio_tcp_sent_bytes_total", &filter);

    // Five connections from productpage's address, 1,000 bytes each way.
    for _ in 0..5 {
        rt.block_on(echo(net, Some(11))).expect("echo");
    }
    wait_until("five connections closed", || {
        series_sum(
            &mesh.metrics(),
            "istio_tcp_connections_closed_total",
            &filter,
        ) >= base_closed + 5.0
    });
    std::thread::sleep(Duration::from_secs(1));
    let text = mesh.metrics();
    assert_eq!(
        series_sum(&text, "istio_tcp_connections_opened_total", &filter),
        base_opened + 5.0
    );
    assert_eq!(
        series_sum(&text, "istio_tcp_connections_closed_total", &filter),
        base_closed + 5.0
    );
    assert_eq!(
        series_sum(&text, "istio_tcp_received_bytes_total", &filter),
        base_rx + 5000.0
    );
    assert_eq!(
        series_sum(&text, "istio_tcp_sent_bytes_total", &filter),
        base_tx + 5000.0
    );
    let from_pp = series(
        &text,
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("destination_service_name", "tcp-echo"),
            ("source_workload", "productpage-v1"),
        ],
    );
    assert_eq!(from_pp.len(), 1, "{from_pp:?}");
    let l = &from_pp[0].0;
    assert_eq!(from_pp[0].1, 5.0);
    assert_eq!(l["destination_workload"], "ratings-v1");
    assert_eq!(l["request_protocol"], "tcp");
    // Plaintext into a PERMISSIVE port.
    assert_eq!(l["connection_security_policy"], "none");
    assert!(!l.contains_key("response_code"));
}
