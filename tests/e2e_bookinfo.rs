//! End-to-end: real pilotfish, real Envoy sidecars, bookinfo stand-in apps.
//! Assertions are on traffic and on Envoy's admin API.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Mesh, metric, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 20;

#[test]
fn all_v1_routes_every_request_to_v1() {
    let mut mesh = Mesh::start(
        next_net(NET_BASE),
        &["destination-rule-all.yaml", "virtual-service-all-v1.yaml"],
        false,
    );
    mesh.start_bookinfo();
    for _ in 0..30 {
        assert_eq!(mesh.reviews(None), ("v1".to_string(), false));
        assert_eq!(mesh.reviews(Some("jason")), ("v1".to_string(), false));
    }

    // Envoy's own view: Istio-named clusters with endpoints from the registry.
    let clusters = mesh.envoy_admin(11, "/clusters");
    let reviews_v1 = format!(
        "outbound|9080|v1|reviews.default.svc.cluster.local::127.{}.0.13:9080",
        mesh.net
    );
    assert!(
        clusters.contains(&reviews_v1),
        "missing {reviews_v1} in\n{clusters}"
    );
    assert!(clusters.contains("outbound|9080|v3|reviews.default.svc.cluster.local"));
    let dump = mesh.envoy_admin(11, "/config_dump?resource=dynamic_route_configs");
    assert!(dump.contains("\"name\": \"outbound\""), "{dump}");
    let listeners = mesh.envoy_admin(11, "/listeners");
    assert!(
        listeners.contains(&format!("127.{}.0.11_9080", mesh.net)),
        "{listeners}"
    );
    assert!(
        listeners.contains(&format!("127.{}.0.11_15001", mesh.net)),
        "{listeners}"
    );

    // pilotfish's view: 6 proxies, every type ACKed at the version sent.
    let syncz = mesh.get_json(&mesh.admin_url("/debug/syncz"));
    let proxies = syncz.as_array().expect("syncz array");
    assert_eq!(proxies.len(), 6, "{syncz}");
    for p in proxies {
        for t in ["cds", "eds", "lds", "rds"] {
            let st = &p["types"][t];
            assert!(!st["sent_version"].is_null(), "{t} not sent: {p}");
            assert_eq!(
                st["sent_version"], st["acked_version"],
                "{t} not ACKed: {p}"
            );
        }
    }
    assert_eq!(metric(&mesh.metrics(), "pilot_xds"), Some(6.0));
    let dump = mesh.get_json(&mesh.admin_url("/debug/config_dump?proxy=default/productpage-v1"));
    assert_eq!(dump["resources"]["rds"][0]["resource"]["name"], "outbound");

    // A proxy whose workload does not exist gets no config; nothing else breaks.
    mesh.start_envoy("ghost", 40);
    wait_until("pilotfish to log the unknown workload", || {
        mesh.log().contains("no WorkloadEntry default/ghost exists")
    });
    std::thread::sleep(Duration::from_millis(500));
    let ghost_listeners = mesh.envoy_admin(40, "/listeners?format=json");
    assert!(!ghost_listeners.contains("15001"), "{ghost_listeners}");

    // Garbage on the gRPC port is refused without harm.
    let mut s = std::net::TcpStream::connect(format!("{}:15010", mesh.pilotfish_ip())).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01garbage\xff\xfe")
        .unwrap();
    drop(s);
    assert_eq!(mesh.reviews(None).0, "v1");
    assert_eq!(metric(&mesh.metrics(), "pilot_xds"), Some(7.0));
}

#[test]
fn jason_goes_to_v2_over_delta_xds() {
    let mut mesh = Mesh::start(
        next_net(NET_BASE),
        &[
            "destination-rule-all.yaml",
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-test-v2.yaml",
        ],
        true,
    );
    mesh.start_bookinfo();
    for _ in 0..20 {
        assert_eq!(mesh.reviews(Some("jason")), ("v2".to_string(), true));
        assert_eq!(mesh.reviews(None), ("v1".to_string(), false));
        assert_eq!(mesh.reviews(Some("alice")).0, "v1");
    }
    let syncz = mesh.get_json(&mesh.admin_url("/debug/syncz"));
    assert!(
        syncz.as_array().unwrap().iter().all(|p| p["delta"] == true),
        "{syncz}"
    );

    // Removing the file restores all-v1's reviews rule (pushed over delta).
    mesh.remove("virtual-service-reviews-test-v2.yaml");
    wait_until("jason back on v1", || mesh.reviews(Some("jason")).0 == "v1");
    for _ in 0..10 {
        assert_eq!(mesh.reviews(Some("jason")).0, "v1");
    }
}

#[test]
fn fifty_fifty_split_between_v1_and_v3() {
    let mut mesh = Mesh::start(
        next_net(NET_BASE),
        &[
            "destination-rule-all.yaml",
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-50-v3.yaml",
        ],
        false,
    );
    mesh.start_bookinfo();
    let (mut v1, mut v3) = (0, 0);
    for _ in 0..200 {
        let (call, _) = mesh.reviews_call(None);
        let ratings = &call["body"]["calls"][0];
        match call["body"]["version"].as_str() {
            Some("v1") if ratings.is_null() => v1 += 1,
            Some("v3") if ratings["status"] == 200 => v3 += 1,
            _ => panic!("unexpected reviews answer {call}"),
        }
    }
    // Binomial(200, 0.5): sd ~7.1; 70..=130 is over 4 sd either side.
    assert!((70..=130).contains(&v1), "v1={v1} v3={v3}");
    assert_eq!(v1 + v3, 200);
}

const REVIEWS_V3: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v3
";

#[test]
fn live_edit_applies_and_bad_edits_keep_serving() {
    let mut mesh = Mesh::start(
        next_net(NET_BASE),
        &["destination-rule-all.yaml", "virtual-service-all-v1.yaml"],
        false,
    );
    mesh.start_bookinfo();
    assert_eq!(mesh.reviews(None).0, "v1");

    let edited = Instant::now();
    mesh.write("reviews.yaml", REVIEWS_V3);
    wait_until("reviews v3 after the edit", || mesh.reviews(None).0 == "v3");
    eprintln!("edit -> traffic on v3 in {:?}", edited.elapsed());
    for _ in 0..10 {
        assert_eq!(mesh.reviews(None), ("v3".to_string(), true));
    }

    // Malformed YAML: reported with file and position, v3 keeps serving.
    mesh.write("reviews.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews\nspec: [");
    wait_until("the YAML error to be reported", || {
        mesh.get_text(&mesh.admin_url("/debug/config_errors"))
            .contains("invalid YAML")
    });
    let errors = mesh.get_json(&mesh.admin_url("/debug/config_errors"));
    let e = &errors["errors"][0];
    assert!(
        e["file"].as_str().unwrap().ends_with("reviews.yaml"),
        "{errors}"
    );
    assert_eq!(e["document"], 1);
    for _ in 0..10 {
        assert_eq!(mesh.reviews(None).0, "v3");
    }
    let m = mesh.metrics();
    assert_eq!(
        metric(&m, "pilotfish_config_files_invalid"),
        Some(1.0),
        "{m}"
    );

    // An unknown field: the error names the field path; v3 keeps serving.
    mesh.write(
        "reviews.yaml",
        &REVIEWS_V3.replace("subset: v3", "subsett: v3"),
    );
    wait_until("the field error to be reported", || {
        mesh.get_text(&mesh.admin_url("/debug/config_errors"))
            .contains("subsett")
    });
    let errors = mesh.get_json(&mesh.admin_url("/debug/config_errors"));
    let e = &errors["errors"][0];
    assert_eq!(e["resource"], "VirtualService default/reviews", "{errors}");
    assert!(
        e["path"]
            .as_str()
            .unwrap()
            .starts_with("spec.http[0].route[0].destination"),
        "{errors}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `subsett`"),
        "{errors}"
    );
    for _ in 0..10 {
        assert_eq!(mesh.reviews(None).0, "v3");
    }

    // Fixing the file clears the error and applies the fix.
    mesh.write(
        "reviews.yaml",
        &REVIEWS_V3.replace("subset: v3", "subset: v2"),
    );
    wait_until("reviews v2 after the fix", || mesh.reviews(None).0 == "v2");
    let errors = mesh.get_json(&mesh.admin_url("/debug/config_errors"));
    assert!(
        errors["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["file"].as_str().unwrap().ends_with("reviews.yaml")),
        "{errors}"
    );
}

#[test]
fn nack_is_surfaced_and_not_looped() {
    let mut mesh = Mesh::start(
        next_net(NET_BASE),
        &["destination-rule-all.yaml", "virtual-service-all-v1.yaml"],
        false,
    );
    mesh.start_bookinfo();
    // An ordinary regex well over Envoy's default program-size limit (100)
    // is served: the bootstrap raises it to Istio's 32768.
    let fine = REVIEWS_V3.replace(
        "  - route:\n",
        "  - match:\n    - uri:\n        regex: \"^/(a|b)[a-z]{200}$\"\n    route:\n      - destination: {host: reviews, subset: v2}\n  - route:\n",
    );
    mesh.write("reviews.yaml", &fine);
    wait_until("the regex route served", || {
        mesh.envoy_admin(11, "/config_dump?resource=dynamic_route_configs")
            .contains("[a-z]{200}")
    });
    assert!(
        !mesh
            .get_text(&mesh.admin_url("/debug/syncz"))
            .contains("last_nack\":{"),
        "no NACK for a regex within Istio's limit"
    );
    // A valid RE2 regex that Envoy still refuses: its compiled program is
    // larger than that limit. Istio's validation accepts it too.
    let huge = format!("^/(a|b){}$", "[a-z]{1000}".repeat(40));
    let bad = REVIEWS_V3.replace(
        "  - route:\n",
        &format!("  - match:\n    - uri:\n        regex: \"{huge}\"\n    route:\n"),
    );
    mesh.write("reviews.yaml", &bad);
    wait_until("a NACK in /debug/syncz", || {
        mesh.get_text(&mesh.admin_url("/debug/syncz"))
            .contains("last_nack\":{")
    });
    let syncz = mesh.get_text(&mesh.admin_url("/debug/syncz"));
    assert!(
        syncz.contains("program size"),
        "Envoy's own message is shown: {syncz}"
    );
    let m = mesh.metrics();
    assert!(
        metric(&m, "pilot_total_xds_rejects_total{type=\"rds\"}").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    // The proxies keep their last good routes (the regex edit's: v3).
    for _ in 0..10 {
        assert_eq!(mesh.reviews(None).0, "v3");
    }
    // Not resent in a loop: the RDS push count stays put.
    let pushes = |m: &str| metric(m, "pilot_xds_pushes_total{type=\"rds\"}").unwrap_or(0.0);
    let before = pushes(&mesh.metrics());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pushes(&mesh.metrics()), before);
    assert!(mesh.log().contains("proxy rejected config (NACK)"));
    // `pilotfish proxy-status` shows it, as istioctl proxy-status would.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .args(["proxy-status", "--admin-address"])
        .arg(format!("{}:15014", mesh.pilotfish_ip()))
        .output()
        .unwrap();
    assert!(out.status.success());
    let status = String::from_utf8_lossy(&out.stdout);
    let nacked: Vec<&str> = status.lines().filter(|l| l.contains("NACKED")).collect();
    assert_eq!(nacked.len(), 6, "every sidecar NACKed its routes: {status}");
}
