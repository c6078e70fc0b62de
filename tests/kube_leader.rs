//! Lease-based leader election (`src/kube/leader.rs`) against the fake API
//! server (`tests/kube_api`), through the real `kube` client: electors in
//! this process with short timings, then two real `pilotfish serve
//! --kubernetes` replicas with the default ones.

mod common;
mod kube_api;

use std::time::Duration;

use kube_api::FakeApi;
use pilotfish::kube::leader::{self, Options};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

const LEASE: Duration = Duration::from_secs(2);
const RENEW_DEADLINE: Duration = Duration::from_millis(1200);
const RETRY: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(20);

struct Replica {
    leader: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An elector whose client presents `identity` as its token, so the test
/// can cut it off from the API server alone.
async fn replica(api: &FakeApi, dir: &std::path::Path, identity: &str) -> Replica {
    let client = pilotfish::kube::client(Some(&api.kubeconfig_with_token(dir, identity)))
        .await
        .unwrap();
    let opts = Options {
        lease_duration: LEASE,
        renew_deadline: RENEW_DEADLINE,
        retry_period: RETRY,
        ..Options::new("istio-system", identity)
    };
    let (tx, rx) = watch::channel(false);
    Replica {
        leader: rx,
        task: tokio::spawn(leader::run(client, opts, tx)),
    }
}

fn is(r: &Replica) -> bool {
    *r.leader.borrow()
}

fn holder(api: &FakeApi) -> Option<String> {
    api.get("Lease", "istio-system", "pilotfish")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

async fn wait_for(what: &str, f: impl Fn() -> bool) -> Instant {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holds_and_the_other_takes_over_after_it_stops_renewing() {
    let api = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&api, dir.path(), "pilotfish-a").await;
    wait_for("a to lead", || is(&a)).await;
    let b = replica(&api, dir.path(), "pilotfish-b").await;
    // For longer than a lease: a keeps renewing, b stays a follower.
    let until = Instant::now() + LEASE + LEASE / 2;
    while Instant::now() < until {
        assert!(is(&a) && !is(&b), "a={} b={}", is(&a), is(&b));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(holder(&api).as_deref(), Some("pilotfish-a"));
    let renewals = api.writes("Lease");
    assert!(renewals >= 5, "a renewed only {renewals} times");

    // a stops (killed): b must wait out the lease, then take it.
    let stopped = Instant::now();
    drop(a);
    let took = wait_for("b to lead", || is(&b)).await;
    let after = took - stopped;
    assert!(
        after >= LEASE - 2 * RETRY && after < LEASE + 4 * RETRY,
        "b took over {after:?} after a stopped (lease {LEASE:?})"
    );
    let lease = api.get("Lease", "istio-system", "pilotfish").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "pilotfish-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2);
}

/// A holder cut off from the API server gives up within its renew deadline,
/// before the lease expires, so two replicas never both claim it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_cannot_renew_stops_claiming_before_its_lease_expires() {
    let api = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&api, dir.path(), "pilotfish-a").await;
    wait_for("a to lead", || is(&a)).await;
    let b = replica(&api, dir.path(), "pilotfish-b").await;
    tokio::time::sleep(RETRY * 3).await;
    assert!(is(&a) && !is(&b));

    // The last renewal a got through is at most one retry period old.
    let writes = api.writes("Lease");
    wait_for("a's next renewal", || api.writes("Lease") > writes).await;
    api.block_token("pilotfish-a", true);
    let cut = Instant::now();
    let mut a_gave_up = None;
    let mut b_took = None;
    while b_took.is_none() {
        assert!(cut.elapsed() < WAIT, "b never took over");
        assert!(!(is(&a) && is(&b)), "two leaders at once");
        if a_gave_up.is_none() && !is(&a) {
            a_gave_up = Some(cut.elapsed());
        }
        if is(&b) {
            b_took = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (gave_up, took) = (a_gave_up.expect("a still claims"), b_took.unwrap());
    assert!(
        gave_up <= RENEW_DEADLINE + RETRY / 2,
        "a gave up {gave_up:?} after it was cut off (deadline {RENEW_DEADLINE:?})"
    );
    assert!(
        gave_up < LEASE - RETRY,
        "a claimed until {gave_up:?}, too close to expiry"
    );
    assert!(
        took > gave_up && took >= LEASE - 2 * RETRY,
        "b took at {took:?}"
    );
    assert_eq!(holder(&api).as_deref(), Some("pilotfish-b"));

    // a, back in touch, follows.
    api.block_token("pilotfish-a", false);
    tokio::time::sleep(LEASE).await;
    assert!(!is(&a) && is(&b));
}

/// The fake's conflict rules, which the elector relies on, and a race:
/// electors started together end up with exactly one leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_conflict_and_one_elector_wins() {
    use ::kube::api::{Api, PostParams};
    use k8s_openapi::api::coordination::v1::Lease;
    let api = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let client = pilotfish::kube::client(Some(&api.kubeconfig(dir.path())))
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(client, "istio-system");
    let mk = |holder: &str| -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "race", "namespace": "istio-system"},
            "spec": {"holderIdentity": holder},
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    let first = leases.create(&pp, &mk("x")).await.unwrap();
    match leases.create(&pp, &mk("y")).await {
        Err(::kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"))
        }
        other => panic!("second create: {other:?}"),
    }
    let mut update = first.clone();
    update.spec = mk("y").spec;
    leases.replace("race", &pp, &update).await.unwrap();
    // Same resourceVersion again: someone wrote meanwhile.
    match leases.replace("race", &pp, &update).await {
        Err(::kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("stale replace: {other:?}"),
    }

    let replicas = [
        replica(&api, dir.path(), "r1").await,
        replica(&api, dir.path(), "r2").await,
        replica(&api, dir.path(), "r3").await,
    ];
    wait_for("a leader", || replicas.iter().any(is)).await;
    let until = Instant::now() + LEASE;
    while Instant::now() < until {
        let n = replicas.iter().filter(|r| is(r)).count();
        assert_eq!(n, 1, "{n} leaders");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lead = replicas.iter().position(is).unwrap();
    assert_eq!(holder(&api), Some(format!("r{}", lead + 1)));
}

/// Two real replicas: both serve; one holds the Lease (`pilotfish_leader`
/// 1); when it is killed the other takes over with the default timings.
#[test]
fn two_serve_replicas_one_leader_and_failover() {
    let api = FakeApi::start("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let leader_of = |m: &common::Mesh| common::metric(&m.metrics(), "pilotfish_leader");
    let mut a = common::Mesh::start_kubernetes_with(
        common::next_net(160),
        &kc,
        &["--leader-election-identity", "pilotfish-a"],
    );
    common::wait_until("a to lead", || leader_of(&a) == Some(1.0));
    let b = common::Mesh::start_kubernetes_with(
        common::next_net(160),
        &kc,
        &["--leader-election-identity", "pilotfish-b"],
    );
    assert_eq!(leader_of(&b), Some(0.0), "b must follow");
    assert_eq!(holder(&api).as_deref(), Some("pilotfish-a"));

    a.stop_pilotfish();
    let stopped = std::time::Instant::now();
    common::wait_until("b to take over", || {
        // The follower keeps serving throughout.
        assert_eq!(b.get_text(&b.admin_url("/readyz")), "ready\n");
        leader_of(&b) == Some(1.0)
    });
    assert!(
        stopped.elapsed() >= leader::LEASE_DURATION - 2 * leader::RETRY_PERIOD,
        "b took over after {:?}",
        stopped.elapsed()
    );
    assert_eq!(holder(&api).as_deref(), Some("pilotfish-b"));
}
