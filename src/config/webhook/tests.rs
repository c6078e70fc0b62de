use serde_json::{Value, json};

use super::review;

fn mk_review(operation: &str, group: &str, kind: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": "virtualservices"},
            "namespace": "default",
            "name": "reviews",
            "operation": operation,
            "object": object,
        }
    })
}

fn vs(weight: i64) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default", "uid": "x", "resourceVersion": "1"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": weight}]}]}
    })
}

#[test]
fn valid_objects_are_allowed_and_the_uid_echoed() {
    let r = review(&mk_review(
        "CREATE",
        "networking.istio.io",
        "VirtualService",
        vs(100),
    ))
    .unwrap();
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    assert_eq!(r["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["response"]["allowed"], true);
    assert!(r["response"].get("warnings").is_none());
}

#[test]
fn invalid_objects_are_denied_with_validates_message() {
    let r = review(&mk_review(
        "UPDATE",
        "networking.istio.io",
        "VirtualService",
        vs(-1),
    ))
    .unwrap();
    assert_eq!(r["response"]["allowed"], false);
    assert_eq!(r["response"]["status"]["code"], 400);
    assert_eq!(
        r["response"]["status"]["message"],
        "VirtualService default/reviews: spec.http[0].route[0].weight: weight -1 is negative"
    );
}

#[test]
fn warnings_are_returned_with_an_allowed_answer() {
    let pa = json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {}}, "mtls": {"mode": "STRICT"}}
    });
    let r = review(&mk_review(
        "CREATE",
        "security.istio.io",
        "PeerAuthentication",
        pa,
    ))
    .unwrap();
    assert_eq!(r["response"]["allowed"], true);
    let w = r["response"]["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].as_str()
            .unwrap()
            .starts_with("PeerAuthentication default/p: spec.selector.matchLabels: "),
        "{w:?}"
    );
}

#[test]
fn deletes_and_foreign_kinds_are_allowed() {
    let r = review(&mk_review(
        "DELETE",
        "networking.istio.io",
        "VirtualService",
        json!(null),
    ));
    assert_eq!(r.unwrap()["response"]["allowed"], true);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}});
    let r = review(&mk_review("CREATE", "", "ConfigMap", cm)).unwrap();
    assert_eq!(r["response"]["allowed"], true);
    // The Gateway API's Gateway is not Istio's.
    let gw = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": "g"}, "spec": {"gatewayClassName": "istio", "listeners": []}});
    let r = review(&mk_review(
        "CREATE",
        "gateway.networking.k8s.io",
        "Gateway",
        gw,
    ))
    .unwrap();
    assert_eq!(r["response"]["allowed"], true);
}

#[test]
fn a_missing_namespace_is_taken_from_the_request() {
    let mut obj = vs(-1);
    obj["metadata"].as_object_mut().unwrap().remove("namespace");
    let mut req = mk_review("CREATE", "networking.istio.io", "VirtualService", obj);
    req["request"]["namespace"] = json!("prod");
    let r = review(&req).unwrap();
    let msg = r["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.starts_with("VirtualService prod/reviews: "), "{msg}");
}

#[test]
fn what_is_not_an_admission_review_is_an_error() {
    assert!(review(&json!({"kind": "Pod"})).is_err());
    let mut r = mk_review("CREATE", "networking.istio.io", "VirtualService", vs(1));
    r["apiVersion"] = json!("admission.k8s.io/v1beta1");
    assert!(review(&r).unwrap_err().contains("admission.k8s.io/v1"));
    let mut r = mk_review("CREATE", "networking.istio.io", "VirtualService", vs(1));
    r["request"].as_object_mut().unwrap().remove("uid");
    assert_eq!(review(&r).unwrap_err(), "request.uid is missing");
    let r = mk_review(
        "CREATE",
        "networking.istio.io",
        "VirtualService",
        json!("text"),
    );
    assert_eq!(review(&r).unwrap()["response"]["allowed"], false);
}
