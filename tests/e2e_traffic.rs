//! Istio's traffic-management tasks with real Envoy: fault injection,
//! request timeouts, circuit breaking, mirroring, retries.

mod common;

use std::time::Duration;

use common::{Mesh, next_net, wait_until};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 40;

fn mk_mesh(routing: &[&str]) -> Mesh {
    let mut mesh = Mesh::start(next_net(NET_BASE), routing, false);
    mesh.start_bookinfo();
    mesh
}

#[test]
fn fault_injection_with_istios_samples() {
    let mesh = mk_mesh(&[
        "destination-rule-all.yaml",
        "virtual-service-all-v1.yaml",
        "virtual-service-reviews-test-v2.yaml",
    ]);
    // Istio's virtual-service-ratings-test-delay.yaml: jason's ratings calls wait 7 s.
    mesh.apply("virtual-service-ratings-test-delay.yaml");
    wait_until("the delay rule to apply", || {
        mesh.reviews_call(Some("jason")).1 >= Duration::from_secs(7)
    });
    let (call, elapsed) = mesh.reviews_call(Some("jason"));
    assert!(elapsed >= Duration::from_secs(7), "{elapsed:?}");
    assert_eq!(call["body"]["version"], "v2");
    assert_eq!(call["body"]["calls"][0]["status"], 200, "{call}");
    let (_, fast) = mesh.reviews_call(None);
    assert!(
        fast < Duration::from_secs(2),
        "others are not delayed: {fast:?}"
    );

    // Istio's virtual-service-ratings-test-abort.yaml: jason's ratings calls get HTTP 500.
    mesh.apply("virtual-service-ratings-test-abort.yaml");
    wait_until("the abort rule to apply", || {
        mesh.reviews_call(Some("jason")).0["body"]["calls"][0]["status"] == 500
    });
    for _ in 0..10 {
        let (call, elapsed) = mesh.reviews_call(Some("jason"));
        assert_eq!(call["body"]["calls"][0]["status"], 500, "{call}");
        assert!(elapsed < Duration::from_secs(2));
    }
}

#[test]
fn abort_percentage_is_honoured() {
    let mesh = mk_mesh(&["destination-rule-all.yaml", "virtual-service-all-v1.yaml"]);
    mesh.write(
        "ratings-abort.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      abort: {httpStatus: 500, percentage: {value: 50}}
    route: [{destination: {host: ratings, subset: v1}}]
",
    );
    wait_until("aborts to start", || {
        mesh.via_sidecar(11, "http://ratings:9080/ratings/0", &[])
            .status
            == 500
    });
    let mut aborted = 0;
    for _ in 0..200 {
        match mesh
            .via_sidecar(11, "http://ratings:9080/ratings/0", &[])
            .status
        {
            500 => aborted += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    // Binomial(200, 0.5): 70..=130 is over 4 sd either side.
    assert!((70..=130).contains(&aborted), "aborted {aborted} of 200");
}

#[test]
fn request_timeout_istio_task() {
    // Istio's request-timeouts task: ratings is delayed 2 s, reviews (v2)
    // has a 0.5 s timeout, so productpage sees reviews time out fast.
    let mesh = mk_mesh(&["destination-rule-all.yaml", "virtual-service-all-v1.yaml"]);
    mesh.write(
        "timeouts.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay: {percentage: {value: 100}, fixedDelay: 2s}
    route: [{destination: {host: ratings, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
    timeout: 0.5s
",
    );
    wait_until("the timeout to apply", || {
        mesh.reviews_call(None).0["status"] == 504
    });
    for _ in 0..5 {
        let (call, elapsed) = mesh.reviews_call(None);
        assert_eq!(call["status"], 504, "{call}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }
}

#[test]
fn circuit_breaking_trips_with_overflow() {
    let mesh = mk_mesh(&["destination-rule-all.yaml", "virtual-service-all-v1.yaml"]);
    mesh.write(
        "ratings-cb.yaml",
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
  subsets:
  - {name: v1, labels: {version: v1}}
",
    );
    let cluster = "cluster.outbound|9080|v1|ratings.default.svc.cluster.local";
    wait_until("the circuit breaker config", || {
        mesh.envoy_admin(11, "/config_dump?resource=dynamic_active_clusters")
            .contains("\"max_pending_requests\": 1")
    });
    let overflowed: Vec<common::Exchange> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| mesh.via_sidecar(11, "http://ratings:9080/ratings/0?sleep_ms=500", &[]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rejected: Vec<&common::Exchange> = overflowed.iter().filter(|e| e.status == 503).collect();
    assert!(
        !rejected.is_empty(),
        "no request tripped the breaker: {overflowed:?}"
    );
    assert!(overflowed.iter().any(|e| e.status == 200));
    for e in &rejected {
        assert_eq!(
            e.headers.get("x-envoy-overloaded").map(|v| v.as_bytes()),
            Some(&b"true"[..]),
            "{e:?}"
        );
    }
    assert!(mesh.envoy_stat(11, &format!("{cluster}.upstream_rq_pending_overflow")) > 0);
}

#[test]
fn mirroring_copies_traffic_to_v2() {
    let mesh = mk_mesh(&["destination-rule-all.yaml", "virtual-service-all-v1.yaml"]);
    mesh.write(
        "mirror.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}, weight: 100}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 100.0}
",
    );
    let inbound_v2 = format!(
        "http.inbound_127.{}.0.14_9080.downstream_rq_completed",
        mesh.net
    );
    wait_until("mirrored traffic to reach v2", || {
        mesh.reviews_call(None);
        mesh.envoy_stat(14, &inbound_v2) > 0
    });
    let before = mesh.envoy_stat(14, &inbound_v2);
    for _ in 0..20 {
        let (call, _) = mesh.reviews_call(None);
        assert_eq!(
            call["body"]["version"], "v1",
            "the caller sees only the primary"
        );
    }
    wait_until("20 more mirrored requests at v2", || {
        mesh.envoy_stat(14, &inbound_v2) >= before + 20
    });
}

#[test]
fn retries_hide_a_flaky_upstream() {
    let mesh = mk_mesh(&["destination-rule-all.yaml"]);
    let vs = |attempts: u32| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings}}
spec:
  hosts: [ratings]
  http:
  - route: [{{destination: {{host: ratings, subset: v1}}}}]
    retries: {{attempts: {attempts}, retryOn: 5xx}}
"
        )
    };
    // ratings fails every 2nd request: with no retries half the calls fail.
    mesh.write("ratings.yaml", &vs(0));
    wait_until("retries off", || {
        (0..4).any(|_| {
            mesh.via_sidecar(11, "http://ratings:9080/ratings/0?flaky=2", &[])
                .status
                == 503
        })
    });
    mesh.write("ratings.yaml", &vs(3));
    wait_until("retries on", || {
        (0..6).all(|_| {
            mesh.via_sidecar(11, "http://ratings:9080/ratings/0?flaky=2", &[])
                .status
                == 200
        })
    });
    for _ in 0..20 {
        assert_eq!(
            mesh.via_sidecar(11, "http://ratings:9080/ratings/0?flaky=2", &[])
                .status,
            200
        );
    }
    let retried = mesh.envoy_stat(
        11,
        "cluster.outbound|9080|v1|ratings.default.svc.cluster.local.upstream_rq_retry",
    );
    assert!(retried >= 10, "retries counted by Envoy: {retried}");
}

#[test]
fn source_labels_route_only_the_clients_they_match() {
    let mesh = mk_mesh(&["destination-rule-all.yaml", "virtual-service-all-v1.yaml"]);
    // Calls to ratings from reviews v2 are aborted; from anyone else they pass.
    mesh.write(
        "ratings-from-reviews-v2.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match:
    - sourceLabels: {app: reviews, version: v2}
    fault:
      abort: {httpStatus: 418, percentage: {value: 100}}
    route: [{destination: {host: ratings, subset: v1}}]
  - route: [{destination: {host: ratings, subset: v1}}]
",
    );
    let status = |via: u8| {
        mesh.via_sidecar(via, "http://ratings:9080/ratings/0", &[])
            .status
    };
    wait_until("reviews-v2's sidecar to apply its rule", || {
        status(14) == 418
    });
    for _ in 0..5 {
        assert_eq!(status(14), 418, "reviews-v2 matches sourceLabels");
        assert_eq!(status(15), 200, "reviews-v3 does not");
        assert_eq!(status(11), 200, "productpage does not");
    }
}
