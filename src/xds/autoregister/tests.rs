//! Registration at run time: the node's request, the identity check, the
//! grace period and reconnects, and groups going away.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::google::protobuf::{Struct, Value, value};

use super::*;
use crate::model::istio::WorkloadGroupSpec;
use crate::model::{ConfigSnapshot, Resource};

fn text(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.into())),
    }
}

fn mk_node(fields: &[(&str, Value)]) -> Node {
    Node {
        id: "sidecar~10.0.0.1~x.vm~vm.svc.cluster.local".into(),
        metadata: Some(Struct {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }),
        ..Default::default()
    }
}

fn mk_state(version: u64, with_group: bool) -> Arc<ConfigState> {
    let mut resources = BTreeMap::new();
    if with_group {
        let spec: WorkloadGroupSpec = serde_yaml_ng::from_str(
            "metadata: {labels: {app: billing}}\ntemplate: {serviceAccount: billing-sa, ports: {http: 8080}}",
        )
        .expect("group");
        let r = Arc::new(Resource {
            name: "billing".into(),
            namespace: "vm".into(),
            labels: Default::default(),
            annotations: Default::default(),
            created: None,
            spec: Spec::WorkloadGroup(spec),
            origin: Default::default(),
        });
        resources.insert(r.key(), r);
    }
    Arc::new(ConfigState {
        version,
        snapshot: ConfigSnapshot::new(resources),
        ..Default::default()
    })
}

fn mk_request() -> Request {
    Request {
        namespace: "vm".into(),
        group: "billing".into(),
        ip: "10.0.0.1".into(),
        network: None,
        locality: None,
        labels: BTreeMap::new(),
    }
}

fn mk_claims(sa: &str, workload: &str) -> Claims {
    Claims {
        namespace: "vm".into(),
        service_account: sa.into(),
        workload: workload.into(),
        exp: 0,
    }
}

fn key() -> WorkloadKey {
    WorkloadKey {
        namespace: "vm".into(),
        name: "billing-10.0.0.1".into(),
    }
}

fn entry_in(state: &ConfigState) -> Option<Arc<Resource>> {
    state
        .snapshot
        .resources
        .get(&crate::model::ResourceKey {
            kind: crate::model::Kind::WorkloadEntry,
            namespace: "vm".into(),
            name: "billing-10.0.0.1".into(),
        })
        .cloned()
}

/// Waits (up to 2 s) until the published state satisfies `f`.
async fn until(
    rx: &mut watch::Receiver<Arc<ConfigState>>,
    what: &str,
    f: impl Fn(&ConfigState) -> bool,
) {
    let waited = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|s| f(s))).await;
    assert!(matches!(waited, Ok(Ok(_))), "timed out waiting for {what}");
}

#[test]
fn the_node_names_group_namespace_address_labels_and_locality() {
    let mut labels = Struct::default();
    labels.fields.insert("version".into(), text("v2"));
    let mut node = mk_node(&[
        ("AUTO_REGISTER_GROUP", text("billing")),
        ("NAMESPACE", text("vm")),
        ("INSTANCE_IPS", text("10.0.0.1,fd00::1")),
        ("NETWORK", text("net-a")),
        (
            "LABELS",
            Value {
                kind: Some(value::Kind::StructValue(labels)),
            },
        ),
    ]);
    node.locality = Some(Locality {
        region: "r1".into(),
        zone: "z1".into(),
        sub_zone: String::new(),
    });
    let req = request_of(&node).expect("a request").expect("valid");
    assert_eq!(req.group, "billing");
    assert_eq!(req.namespace, "vm");
    assert_eq!(req.ip, "10.0.0.1");
    assert_eq!(req.network.as_deref(), Some("net-a"));
    assert_eq!(req.locality.as_deref(), Some("r1/z1"));
    assert_eq!(req.labels["version"], "v2");
    assert_eq!(req.entry_key().name, "billing-10.0.0.1-net-a");
    // Not a group member.
    assert!(request_of(&mk_node(&[("NAMESPACE", text("vm"))])).is_none());
    // A group without an address or namespace is refused with the reason.
    for fields in [
        vec![
            ("AUTO_REGISTER_GROUP", text("g")),
            ("NAMESPACE", text("vm")),
        ],
        vec![
            ("AUTO_REGISTER_GROUP", text("g")),
            ("NAMESPACE", text("vm")),
            ("INSTANCE_IPS", text("not-an-ip")),
        ],
        vec![
            ("AUTO_REGISTER_GROUP", text("g")),
            ("INSTANCE_IPS", text("10.0.0.1")),
        ],
    ] {
        let err = request_of(&mk_node(&fields))
            .expect("a request")
            .unwrap_err();
        assert!(matches!(err, RegisterError::BadNode(_)), "{err}");
    }
}

#[test]
fn only_the_groups_identity_may_register() {
    let (_tx, rx) = watch::channel(mk_state(1, true));
    let metrics = Metrics::default();
    let r = AutoRegistry::new(rx, DEFAULT_GRACE, metrics.clone());
    // Another service account, another namespace, a credential bound to
    // another workload: refused, nothing registered.
    for claims in [
        mk_claims("other-sa", ""),
        Claims {
            namespace: "default".into(),
            ..mk_claims("billing-sa", "")
        },
        mk_claims("billing-sa", "reviews-v1"),
    ] {
        let err = r.connect("n", mk_request(), Some(&claims)).unwrap_err();
        assert!(matches!(err, RegisterError::Identity { .. }), "{err}");
    }
    assert!(r.debug().is_empty());
    // No such group.
    let mut req = mk_request();
    req.group = "nope".into();
    let err = r.connect("n", req, None).unwrap_err();
    assert!(matches!(err, RegisterError::NoGroup { .. }), "{err}");
    // The group's service account: registered as the group's entry.
    let c = r
        .connect("n", mk_request(), Some(&mk_claims("billing-sa", "")))
        .expect("registered");
    assert_eq!(c.key, key());
    assert_eq!(c.group, "vm/billing");
    assert_eq!(r.debug()[0].connections, 1);
    // Counted as istiod counts them.
    assert_eq!(metrics.autoreg_errors.get(), 4);
    assert_eq!(metrics.autoreg_success.get(), 1);
    drop(c);
    assert_eq!(metrics.autoreg_unregister.get(), 1);
    let _again = r
        .connect("n", mk_request(), Some(&mk_claims("billing-sa", "")))
        .expect("reconnected");
    assert_eq!(metrics.autoreg_updates.get(), 1);
}

#[tokio::test]
async fn entries_live_while_connected_and_for_the_grace_period() {
    let (src_tx, src_rx) = watch::channel(mk_state(1, true));
    let grace = Duration::from_millis(300);
    let metrics = Metrics::default();
    let r = AutoRegistry::new(src_rx.clone(), grace, metrics.clone());
    let (out_tx, mut out) = watch::channel(Arc::clone(&src_rx.borrow()));
    tokio::spawn(run(r.clone(), out_tx));
    let claims = mk_claims("billing-sa", "");

    let first = r.connect("n", mk_request(), Some(&claims)).expect("first");
    until(&mut out, "the entry", |s| entry_in(s).is_some()).await;
    let e = entry_in(&out.borrow()).expect("entry");
    assert!(e.annotations.contains_key(model::CONNECTED_AT_ANNOTATION));
    let v1 = out.borrow().version;
    assert!(v1 > 1, "a new version for the translator: {v1}");

    // Envoy reconnects before its old stream is seen to end: the entry
    // stays connected until both are gone.
    let second = r.connect("n", mk_request(), Some(&claims)).expect("second");
    drop(first);
    assert_eq!(r.debug()[0].connections, 1);
    assert!(r.debug()[0].disconnected_at.is_none());
    drop(second);
    until(&mut out, "disconnectedAt", |s| {
        entry_in(s).is_some_and(|e| {
            e.annotations
                .contains_key(model::DISCONNECTED_AT_ANNOTATION)
        })
    })
    .await;

    // A reconnect within the grace period keeps it.
    tokio::time::sleep(grace / 2).await;
    let again = r.connect("n", mk_request(), Some(&claims)).expect("again");
    tokio::time::sleep(grace).await;
    assert!(entry_in(&out.borrow()).is_some(), "kept by the reconnect");
    assert!(r.debug()[0].deleted_in_seconds.is_none());

    // Gone once the grace period passes without one.
    drop(again);
    let left = std::time::Instant::now();
    until(&mut out, "the entry's deletion", |s| entry_in(s).is_none()).await;
    assert!(
        left.elapsed() >= grace,
        "deleted after {:?}",
        left.elapsed()
    );
    assert!(r.debug().is_empty());
    assert_eq!(metrics.autoreg_deletes.get(), 1);

    // A config change from the source still flows through.
    src_tx.send_replace(mk_state(2, true));
    until(&mut out, "the source's next version", |s| s.version > v1).await;
}

#[tokio::test]
async fn deleting_the_group_removes_its_entries() {
    let (src_tx, src_rx) = watch::channel(mk_state(1, true));
    let r = AutoRegistry::new(src_rx.clone(), DEFAULT_GRACE, Metrics::default());
    let (out_tx, mut out) = watch::channel(Arc::clone(&src_rx.borrow()));
    tokio::spawn(run(r.clone(), out_tx));
    let _conn = r.connect("n", mk_request(), None).expect("registered");
    until(&mut out, "the entry", |s| entry_in(s).is_some()).await;
    src_tx.send_replace(mk_state(2, false));
    until(&mut out, "the entry's removal", |s| entry_in(s).is_none()).await;
    let d = r.debug();
    assert!(!d[0].in_force);
    assert_eq!(
        d[0].skipped.as_deref(),
        Some("the WorkloadGroup no longer exists")
    );
}

#[tokio::test]
async fn a_source_state_with_only_new_errors_is_passed_on() {
    // A bad edit keeps the config (and its version) but adds an error: the
    // model must carry it, or /debug/config_errors never shows it.
    let (src_tx, src_rx) = watch::channel(mk_state(2, true));
    let r = AutoRegistry::new(src_rx.clone(), Duration::from_secs(10), Metrics::default());
    let (out_tx, mut out) = watch::channel(Arc::clone(&src_rx.borrow()));
    tokio::spawn(run(r.clone(), out_tx));
    for registered in [false, true] {
        let _conn = registered.then(|| {
            r.connect("n", mk_request(), Some(&mk_claims("billing-sa", "")))
                .expect("registered")
        });
        if registered {
            until(&mut out, "the entry", |s| entry_in(s).is_some()).await;
        }
        let same = &src_rx.borrow().clone();
        let message = format!("invalid YAML ({registered})");
        src_tx.send_replace(Arc::new(ConfigState {
            version: same.version,
            snapshot: same.snapshot.clone(),
            errors: vec![crate::config::ConfigError::file(
                std::path::Path::new("reviews.yaml"),
                message.clone(),
            )],
            ..Default::default()
        }));
        until(&mut out, "the new error", |s| {
            s.errors.iter().any(|e| e.message == message)
        })
        .await;
    }
}
