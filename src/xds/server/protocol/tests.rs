use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;

use super::*;
use crate::xds::cache::{Layer, ProxyResources};

fn mk_cluster(name: &str, tag: &str) -> (String, Cluster) {
    (
        name.to_string(),
        Cluster {
            name: name.to_string(),
            alt_stat_name: tag.to_string(),
            ..Default::default()
        },
    )
}

/// Resources where every type holds the given (name, content tag) pairs.
fn mk_res(items: &[(&str, &str)]) -> ProxyResources {
    let layer = Arc::new(Layer::encode(
        XdsType::Cluster,
        items.iter().map(|(n, t)| mk_cluster(n, t)),
    ));
    ProxyResources {
        layers: [
            vec![Arc::clone(&layer)],
            vec![Arc::clone(&layer)],
            vec![Arc::clone(&layer)],
            vec![Arc::clone(&layer)],
            vec![layer],
        ],
    }
}

fn names(p: &Push) -> Vec<&str> {
    p.resources.iter().map(|e| &*e.name).collect()
}

fn sotw_req<'a>(nonce: &'a str, names: &'a [String]) -> Request<'a> {
    Request {
        nonce,
        subscribe: names,
        ..Default::default()
    }
}

#[test]
fn sotw_initial_request_gets_full_set_then_ack() {
    let res = mk_res(&[("a", "1"), ("b", "1")]);
    let mut p = StreamProtocol::new(false);
    let (ack, push) = p.on_request(XdsType::Cluster, &sotw_req("", &[]));
    assert_eq!((ack, push), (Ack::Initial, true));
    let resp = p.push(XdsType::Cluster, &res, true).unwrap();
    assert_eq!(names(&resp), ["a", "b"]);
    let (ack, push) = p.on_request(
        XdsType::Cluster,
        &Request {
            nonce: &resp.nonce,
            version: &resp.version,
            ..Default::default()
        },
    );
    assert_eq!((ack, push), (Ack::Ack, false));
    assert_eq!(p.status(XdsType::Cluster).acked_version, Some(resp.version));
    // Nothing changed: no push.
    assert!(p.push(XdsType::Cluster, &res, false).is_none());
}

#[test]
fn sotw_wildcard_type_sends_full_set_on_change_and_removal_by_absence() {
    let mut p = StreamProtocol::new(false);
    p.on_request(XdsType::Cluster, &sotw_req("", &[]));
    p.push(XdsType::Cluster, &mk_res(&[("a", "1"), ("b", "1")]), true)
        .unwrap();
    let resp = p
        .push(XdsType::Cluster, &mk_res(&[("a", "2")]), false)
        .unwrap();
    assert_eq!(names(&resp), ["a"], "b removed by leaving it out");
}

#[test]
fn sotw_nack_is_recorded_and_not_resent() {
    let res = mk_res(&[("a", "1")]);
    let mut p = StreamProtocol::new(false);
    p.on_request(XdsType::Cluster, &sotw_req("", &[]));
    let resp = p.push(XdsType::Cluster, &res, true).unwrap();
    let (ack, push) = p.on_request(
        XdsType::Cluster,
        &Request {
            nonce: &resp.nonce,
            version: "",
            error: Some("bad cluster"),
            ..Default::default()
        },
    );
    assert!(
        matches!(&ack, Ack::Nack(n) if n.message == "bad cluster" && n.version == resp.version)
    );
    assert!(!push);
    assert!(
        p.push(XdsType::Cluster, &res, false).is_none(),
        "no resend loop"
    );
    let st = p.status(XdsType::Cluster);
    assert_eq!(st.last_nack.unwrap().message, "bad cluster");
    assert_eq!(st.acked_version, None);
    // A new version is pushed (that is how a NACKed proxy recovers).
    assert!(
        p.push(XdsType::Cluster, &mk_res(&[("a", "2")]), false)
            .is_some()
    );
}

#[test]
fn sotw_stale_nonce_is_ignored() {
    let mut p = StreamProtocol::new(false);
    p.on_request(XdsType::Route, &sotw_req("", &["r".to_string()]));
    let first = p
        .push(XdsType::Route, &mk_res(&[("r", "1")]), true)
        .unwrap();
    let second = p
        .push(XdsType::Route, &mk_res(&[("r", "2")]), false)
        .unwrap();
    let (ack, push) = p.on_request(
        XdsType::Route,
        &Request {
            nonce: &first.nonce,
            error: Some("old"),
            ..Default::default()
        },
    );
    assert_eq!((ack, push), (Ack::Stale, false));
    assert!(p.status(XdsType::Route).last_nack.is_none());
    let (ack, _) = p.on_request(
        XdsType::Route,
        &Request {
            nonce: &second.nonce,
            version: &second.version,
            subscribe: &["r".to_string()],
            ..Default::default()
        },
    );
    assert_eq!(ack, Ack::Ack);
}

#[test]
fn sotw_named_type_sends_new_subscriptions_and_only_changes() {
    let res = mk_res(&[("a", "1"), ("b", "1"), ("c", "1")]);
    let mut p = StreamProtocol::new(false);
    let a = vec!["a".to_string()];
    p.on_request(XdsType::Endpoint, &sotw_req("", &a));
    let r1 = p.push(XdsType::Endpoint, &res, true).unwrap();
    assert_eq!(names(&r1), ["a"]);
    // Envoy adds b: only b is sent.
    let ab = vec!["a".to_string(), "b".to_string()];
    let (_, push) = p.on_request(XdsType::Endpoint, &sotw_req(&r1.nonce, &ab));
    assert!(push);
    let r2 = p.push(XdsType::Endpoint, &res, false).unwrap();
    assert_eq!(names(&r2), ["b"]);
    // b changes: only b is sent; c (not subscribed) never is.
    let res2 = mk_res(&[("a", "1"), ("b", "2"), ("c", "2")]);
    let r3 = p.push(XdsType::Endpoint, &res2, false).unwrap();
    assert_eq!(names(&r3), ["b"]);
    // Unsubscribe b, resubscribe: it is sent again.
    p.on_request(XdsType::Endpoint, &sotw_req(&r3.nonce, &a));
    assert!(p.push(XdsType::Endpoint, &res2, false).is_none());
    let (_, push) = p.on_request(XdsType::Endpoint, &sotw_req(&r3.nonce, &ab));
    assert!(push);
    assert_eq!(
        names(&p.push(XdsType::Endpoint, &res2, false).unwrap()),
        ["b"]
    );
}

#[test]
fn delta_wildcard_sends_changes_and_removals() {
    let mut p = StreamProtocol::new(true);
    let (ack, push) = p.on_request(XdsType::Cluster, &Request::default());
    assert_eq!((ack, push), (Ack::Initial, true));
    let r1 = p
        .push(XdsType::Cluster, &mk_res(&[("a", "1"), ("b", "1")]), true)
        .unwrap();
    assert_eq!(names(&r1), ["a", "b"]);
    assert!(r1.removed.is_empty());
    let r2 = p
        .push(XdsType::Cluster, &mk_res(&[("a", "1"), ("c", "1")]), false)
        .unwrap();
    assert_eq!(names(&r2), ["c"]);
    assert_eq!(r2.removed, ["b"]);
    assert!(
        p.push(XdsType::Cluster, &mk_res(&[("a", "1"), ("c", "1")]), false)
            .is_none()
    );
}

#[test]
fn delta_named_subscribe_unsubscribe_and_missing() {
    let res = mk_res(&[("a", "1"), ("b", "1")]);
    let mut p = StreamProtocol::new(true);
    let sub = vec!["a".to_string(), "zz".to_string()];
    p.on_request(
        XdsType::Endpoint,
        &Request {
            subscribe: &sub,
            ..Default::default()
        },
    );
    let r = p.push(XdsType::Endpoint, &res, true).unwrap();
    assert_eq!(names(&r), ["a"]);
    assert_eq!(r.removed, ["zz"], "a missing name is reported once");
    assert!(p.push(XdsType::Endpoint, &res, false).is_none());
    let unsub = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let (_, push) = p.on_request(
        XdsType::Endpoint,
        &Request {
            nonce: &r.nonce,
            subscribe: &b,
            unsubscribe: &unsub,
            ..Default::default()
        },
    );
    assert!(push);
    let r2 = p.push(XdsType::Endpoint, &res, false).unwrap();
    assert_eq!(names(&r2), ["b"]);
    assert!(
        r2.removed.is_empty(),
        "unsubscribed names are not 'removed'"
    );
}

#[test]
fn delta_reconnect_with_initial_versions_skips_what_client_has() {
    let res = mk_res(&[("a", "1"), ("b", "1")]);
    let version_a = res.get(XdsType::Cluster, "a").unwrap().version.clone();
    let mut initial = HashMap::new();
    initial.insert("a".to_string(), version_a);
    initial.insert("gone".to_string(), "old".to_string());
    let mut p = StreamProtocol::new(true);
    p.on_request(
        XdsType::Cluster,
        &Request {
            initial_versions: Some(&initial),
            ..Default::default()
        },
    );
    let r = p.push(XdsType::Cluster, &res, true).unwrap();
    assert_eq!(names(&r), ["b"]);
    assert_eq!(r.removed, ["gone"]);
}

#[test]
fn delta_nack_recorded_without_resend() {
    let res = mk_res(&[("a", "1")]);
    let mut p = StreamProtocol::new(true);
    p.on_request(XdsType::Listener, &Request::default());
    let r = p.push(XdsType::Listener, &res, true).unwrap();
    let (ack, push) = p.on_request(
        XdsType::Listener,
        &Request {
            nonce: &r.nonce,
            error: Some("bad listener"),
            ..Default::default()
        },
    );
    assert!(matches!(ack, Ack::Nack(_)));
    assert!(!push);
    assert!(p.push(XdsType::Listener, &res, false).is_none());
}

#[test]
fn reconnect_starts_fresh() {
    // A new stream (Envoy reconnecting) is a new StreamProtocol: everything is sent again.
    let res = mk_res(&[("a", "1")]);
    for delta in [false, true] {
        let mut p = StreamProtocol::new(delta);
        p.on_request(XdsType::Cluster, &Request::default());
        assert_eq!(names(&p.push(XdsType::Cluster, &res, true).unwrap()), ["a"]);
        let mut again = StreamProtocol::new(delta);
        again.on_request(XdsType::Cluster, &Request::default());
        assert_eq!(
            names(&again.push(XdsType::Cluster, &res, true).unwrap()),
            ["a"]
        );
    }
}

#[test]
fn unrequested_types_are_never_pushed() {
    let mut p = StreamProtocol::new(false);
    assert!(
        p.push(XdsType::Route, &mk_res(&[("a", "1")]), true)
            .is_none()
    );
}

#[test]
fn full_answers_use_the_shared_layer_and_partial_ones_do_not() {
    let res = mk_res(&[("a", "1"), ("b", "1")]);
    let mut p = StreamProtocol::new(false);
    p.on_request(XdsType::Cluster, &sotw_req("", &[]));
    let cds = p.push(XdsType::Cluster, &res, true).unwrap();
    assert_eq!(cds.whole_layers.len(), 1);
    let both = vec!["a".to_string(), "b".to_string()];
    p.on_request(XdsType::Endpoint, &sotw_req("", &both));
    let eds = p.push(XdsType::Endpoint, &res, true).unwrap();
    assert_eq!(eds.whole_layers.len(), 1, "every resource of the layer");
    let changed = mk_res(&[("a", "2"), ("b", "1")]);
    let eds = p.push(XdsType::Endpoint, &changed, false).unwrap();
    assert_eq!(names(&eds), ["a"]);
    assert!(
        eds.whole_layers.is_empty(),
        "a partial answer lists its resources"
    );
}

/// EDS resources served from one layer that replaces `prev` (so it carries
/// the diff from it).
fn eds_from(prev: Option<&Arc<Layer>>, items: &[(&str, &str)]) -> (Arc<Layer>, ProxyResources) {
    let layer = Layer::encode(
        XdsType::Endpoint,
        items.iter().map(|(n, t)| mk_cluster(n, t)),
    )
    .reuse(prev);
    let mut res = ProxyResources::default();
    res.layers[XdsType::Endpoint.index()] = vec![Arc::clone(&layer)];
    (layer, res)
}

/// Subscribes `p` to `subscribed` EDS names, pushes, and ACKs.
fn eds_synced(p: &mut StreamProtocol, subscribed: &[String], res: &ProxyResources) -> Push {
    p.on_request(XdsType::Endpoint, &sotw_req("", subscribed));
    let first = p.push(XdsType::Endpoint, res, true).unwrap();
    let (ack, _) = p.on_request(
        XdsType::Endpoint,
        &Request {
            nonce: &first.nonce,
            version: &first.version,
            subscribe: subscribed,
            ..Default::default()
        },
    );
    assert_eq!(ack, Ack::Ack);
    first
}

#[test]
fn sotw_named_push_after_one_change_uses_the_layer_diff() {
    let all = [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")];
    let (l1, r1) = eds_from(None, &all);
    let subscribed = vec!["a".to_string(), "b".to_string(), "d".to_string()];
    let mut p = StreamProtocol::new(false);
    let first = eds_synced(&mut p, &subscribed, &r1);
    assert_eq!(names(&first), ["a", "b", "d"]);

    // b and c change, d goes away: the diff names b and c; only b is subscribed.
    let (l2, r2) = eds_from(Some(&l1), &[("a", "1"), ("b", "2"), ("c", "2")]);
    let diff = l2.diff.as_ref().unwrap();
    assert_eq!(diff.from, l1.version);
    let changed: Vec<&str> = diff.changed.iter().map(|e| &*e.name).collect();
    assert_eq!(changed, ["b", "c"]);
    assert_eq!(diff.removed.iter().map(|n| &**n).collect::<Vec<_>>(), ["d"]);
    let st = &p.types[XdsType::Endpoint.index()];
    assert_eq!(
        st.changed_since_sync(XdsType::Endpoint, &r2)
            .map(|v| v.len()),
        Some(1),
        "the diff path applies"
    );
    let second = p.push(XdsType::Endpoint, &r2, false).unwrap();
    assert_eq!(names(&second), ["b"]);
    assert_ne!(second.version, first.version);

    // Nothing the proxy wants changed: no push at all.
    let (l3, r3) = eds_from(Some(&l2), &[("a", "1"), ("b", "2"), ("c", "3")]);
    assert!(p.push(XdsType::Endpoint, &r3, false).is_none());

    // Two changes at once (a missed snapshot): the diff does not start at
    // what the proxy has, so a full pass decides, with the same answer.
    let (l4, _) = eds_from(Some(&l3), &[("a", "2"), ("b", "2"), ("c", "3")]);
    let (_, r5) = eds_from(Some(&l4), &[("a", "2"), ("b", "3"), ("c", "3")]);
    let st = &p.types[XdsType::Endpoint.index()];
    assert!(st.changed_since_sync(XdsType::Endpoint, &r5).is_none());
    let fifth = p.push(XdsType::Endpoint, &r5, false).unwrap();
    assert_eq!(names(&fifth), ["a", "b"]);
}

#[test]
fn a_repeated_subscription_is_recognized_in_any_order() {
    let (_, res) = eds_from(None, &[("a", "1"), ("b", "1")]);
    let subscribed = vec!["a".to_string(), "b".to_string()];
    let mut p = StreamProtocol::new(false);
    let first = eds_synced(&mut p, &subscribed, &res);
    // The same names in another order: an ACK, no new push, still in sync.
    let reordered = vec!["b".to_string(), "a".to_string()];
    let (ack, push) = p.on_request(
        XdsType::Endpoint,
        &Request {
            nonce: &first.nonce,
            version: &first.version,
            subscribe: &reordered,
            ..Default::default()
        },
    );
    assert_eq!((ack, push), (Ack::Ack, false));
    assert!(p.types[XdsType::Endpoint.index()].synced.is_some());
    // A new name: a full pass sends it.
    let more = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let (_, push) = p.on_request(
        XdsType::Endpoint,
        &Request {
            nonce: &first.nonce,
            version: &first.version,
            subscribe: &more,
            ..Default::default()
        },
    );
    assert!(push);
    // Only the new name is sent: the rest is known from the synced layers.
    let (_, res) = eds_from(None, &[("a", "1"), ("b", "1"), ("c", "1")]);
    let third = p.push(XdsType::Endpoint, &res, false).unwrap();
    assert_eq!(names(&third), ["c"]);
}

#[test]
fn streams_with_the_same_subscription_share_one_set() {
    let (_, res) = eds_from(None, &[("x1", "1"), ("x2", "1")]);
    let subscribed = vec!["x1".to_string(), "x2".to_string()];
    let mut a = StreamProtocol::new(false);
    let mut b = StreamProtocol::new(false);
    eds_synced(&mut a, &subscribed, &res);
    let reversed = vec!["x2".to_string(), "x1".to_string()];
    eds_synced(&mut b, &reversed, &res);
    let (sa, sb) = (
        &a.types[XdsType::Endpoint.index()].names,
        &b.types[XdsType::Endpoint.index()].names,
    );
    assert!(Arc::ptr_eq(sa, sb));
}

fn delta_sub<'a>(nonce: &'a str, sub: &'a [String], unsub: &'a [String]) -> Request<'a> {
    Request {
        nonce,
        subscribe: sub,
        unsubscribe: unsub,
        ..Default::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn delta_named_state_follows_the_layers_without_a_per_name_map() {
    let (l1, r1) = eds_from(None, &[("a", "1"), ("b", "1")]);
    let mut p = StreamProtocol::new(true);
    let sub = strings(&["a", "b", "x"]);
    p.on_request(XdsType::Endpoint, &delta_sub("", &sub, &[]));
    let first = p.push(XdsType::Endpoint, &r1, true).unwrap();
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first.removed, ["x"], "a missing name is reported once");
    let st = &p.types[XdsType::Endpoint.index()];
    assert!(st.synced.is_some() && st.fresh.is_empty());

    // x appears, b goes: the diff path sends x and removes b.
    let (l2, r2) = eds_from(Some(&l1), &[("a", "1"), ("x", "1")]);
    assert!(
        p.types[XdsType::Endpoint.index()]
            .delta_changed_since_sync(XdsType::Endpoint, &r2)
            .is_some(),
        "the diff path applies"
    );
    let second = p.push(XdsType::Endpoint, &r2, false).unwrap();
    assert_eq!(names(&second), ["x"]);
    assert_eq!(second.removed, ["b"]);
    assert!(p.push(XdsType::Endpoint, &r2, false).is_none());

    // x goes again: removed; b, still subscribed and still absent, is not
    // reported a second time.
    let (l3, r3) = eds_from(Some(&l2), &[("a", "1")]);
    let third = p.push(XdsType::Endpoint, &r3, false).unwrap();
    assert!(third.resources.is_empty());
    assert_eq!(third.removed, ["x"]);

    // Unsubscribed, then subscribed again: the client dropped it, so it is
    // sent again although the layers did not change.
    p.on_request(
        XdsType::Endpoint,
        &delta_sub(&third.nonce, &[], &strings(&["a"])),
    );
    assert!(p.push(XdsType::Endpoint, &r3, false).is_none());
    let (_, push) = p.on_request(
        XdsType::Endpoint,
        &delta_sub(&third.nonce, &strings(&["a"]), &[]),
    );
    assert!(push);
    let again = p.push(XdsType::Endpoint, &r3, false).unwrap();
    assert_eq!(names(&again), ["a"]);
    assert!(again.removed.is_empty());

    // A missed snapshot (two changes at once): the full pass still removes
    // what the client had and sends only what changed.
    let (l4, _) = eds_from(Some(&l3), &[("a", "2"), ("b", "1")]);
    let (_, r5) = eds_from(Some(&l4), &[("b", "2"), ("x", "1")]);
    assert!(
        p.types[XdsType::Endpoint.index()]
            .delta_changed_since_sync(XdsType::Endpoint, &r5)
            .is_none()
    );
    let fifth = p.push(XdsType::Endpoint, &r5, false).unwrap();
    assert_eq!(names(&fifth), ["b", "x"]);
    assert_eq!(fifth.removed, ["a"]);
}

#[test]
fn delta_wildcard_added_later_sends_what_it_adds() {
    let (_, res) = eds_from(None, &[("a", "1"), ("b", "1"), ("c", "1")]);
    let mut p = StreamProtocol::new(true);
    let sub = strings(&["a"]);
    p.on_request(XdsType::Endpoint, &delta_sub("", &sub, &[]));
    let first = p.push(XdsType::Endpoint, &res, true).unwrap();
    assert_eq!(names(&first), ["a"]);
    let (_, push) = p.on_request(
        XdsType::Endpoint,
        &delta_sub(&first.nonce, &strings(&["*"]), &[]),
    );
    assert!(push);
    let second = p.push(XdsType::Endpoint, &res, false).unwrap();
    assert_eq!(names(&second), ["b", "c"]);
    let dump: Vec<String> = p
        .sent_resources(XdsType::Endpoint)
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(
        dump,
        ["a", "b", "c"],
        "config dumps list what the client has"
    );
}

#[test]
fn delta_streams_with_the_same_subscription_share_one_set() {
    let (_, res) = eds_from(None, &[("x1", "1"), ("x2", "1")]);
    let mut a = StreamProtocol::new(true);
    let mut b = StreamProtocol::new(true);
    a.on_request(
        XdsType::Endpoint,
        &delta_sub("", &strings(&["x1", "x2"]), &[]),
    );
    b.on_request(XdsType::Endpoint, &delta_sub("", &strings(&["x2"]), &[]));
    let pb = b.push(XdsType::Endpoint, &res, true).unwrap();
    b.on_request(
        XdsType::Endpoint,
        &delta_sub(&pb.nonce, &strings(&["x1"]), &[]),
    );
    let (sa, sb) = (
        &a.types[XdsType::Endpoint.index()].names,
        &b.types[XdsType::Endpoint.index()].names,
    );
    assert!(Arc::ptr_eq(sa, sb));
    let more = b.push(XdsType::Endpoint, &res, false).unwrap();
    assert_eq!(names(&more), ["x1"]);
}
