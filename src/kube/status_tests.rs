//! Status decisions without a network: objects through the real index and
//! build, findings from them, and the writes `plan` decides on.

use ::kube::api::DynamicObject;
use serde_json::{Value, json};

use super::*;
use crate::kube::index::{Index, build};
use crate::model::ConfigSnapshot;

const NOW: &str = "2026-12-04T12:00:00Z";
const LATER: &str = "2026-12-04T13:00:00Z";

fn mk_vs(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7", "generation": 2},
        "spec": spec,
    }))
    .unwrap()
}

fn state_of(objs: Vec<DynamicObject>) -> ConfigState {
    let mut ix = Index::default();
    for o in objs {
        ix.apply(Watched::Istio(Kind::VirtualService), o);
    }
    let built = build(&ix, &[]);
    ConfigState {
        version: 1,
        snapshot: ConfigSnapshot::new(built.resources),
        errors: built.errors,
        ..ConfigState::default()
    }
}

fn key(name: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::VirtualService,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn seen(status: Option<Value>) -> Seen {
    Seen {
        generation: Some(2),
        resource_version: "7".into(),
        status,
    }
}

/// The status after the API server applies `p` (a merge patch).
fn applied(s: &Seen, p: &Plan) -> Seen {
    let mut status = s.status.clone().unwrap_or_else(|| json!({}));
    merge(&mut status, &p.patch["status"]);
    Seen {
        resource_version: "8".into(),
        status: Some(status).filter(|s| s.as_object().is_some_and(|o| !o.is_empty())),
        ..s.clone()
    }
}

#[test]
fn invalid_objects_and_analyzer_findings_are_found_by_object() {
    let state = state_of(vec![
        mk_vs("broken", json!({"hosts": ["broken"], "htp": []})),
        mk_vs(
            "reviews",
            json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v9"}}]}]}),
        ),
    ]);
    let found = findings(&state);
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        [key("broken"), key("reviews")]
    );
    let broken = &found[&key("broken")];
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!((broken[0].code, broken[0].level), ("IST0106", Level::Error));
    assert_eq!(broken[0].path, "spec.htp");
    // No such host (no registry here) and no such subset.
    let reviews = &found[&key("reviews")];
    assert!(reviews.iter().all(|f| f.code == "IST0101"), "{reviews:?}");
    let subset = reviews
        .iter()
        .find(|f| f.path == "spec.http[0].route[0].destination.subset")
        .expect("the subset finding");
    assert!(
        subset
            .message
            .contains("reviews.default.svc.cluster.local+v9")
    );
}

#[test]
fn findings_become_istiods_validation_messages_and_a_condition() {
    let f = vec![
        Finding {
            level: Level::Error,
            code: "IST0106",
            path: "spec.htp".into(),
            message: "unknown field `htp`".into(),
        },
        Finding {
            level: Level::Warning,
            code: "IST0130",
            path: "spec.http[1]".into(),
            message: "unreachable".into(),
        },
    ];
    let s = seen(None);
    let p = plan(&s, &f, NOW).expect("a write");
    assert_eq!(p.patch["metadata"]["resourceVersion"], "7");
    let status = &p.patch["status"];
    assert_eq!(
        status["validationMessages"],
        json!([
            {"documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0106/",
             "level": "ERROR", "type": {"code": "IST0106"}},
            {"documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0130/",
             "level": "WARNING", "type": {"code": "IST0130"}},
        ])
    );
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(
        status["conditions"],
        json!([{
            "type": "PassedAnalysis", "status": "False", "reason": "ErrorsFound",
            "message": "1 error and 1 warning found: IST0106 spec.htp: unknown field `htp`; IST0130 spec.http[1]: unreachable",
            "lastTransitionTime": NOW, "observedGeneration": 2,
        }])
    );

    // Once written, the same findings ask for nothing: no write loop.
    let after = applied(&s, &p);
    assert_eq!(plan(&after, &f, LATER), None);
    // Another finding: rewritten, the condition keeps its transition time.
    let fewer = &f[..1];
    let p2 = plan(&after, fewer, LATER).expect("a write");
    assert_eq!(p2.patch["metadata"]["resourceVersion"], "8");
    assert_eq!(
        p2.patch["status"]["conditions"][0]["lastTransitionTime"],
        NOW
    );
    assert_eq!(plan(&applied(&after, &p2), fewer, LATER), None);
}

#[test]
fn a_valid_object_loses_what_pilotfish_wrote_and_keeps_the_rest() {
    let f = vec![Finding {
        level: Level::Info,
        code: "IST0131",
        path: "spec.http[0].match[1]".into(),
        message: "ineffective".into(),
    }];
    let other =
        json!({"type": "Reconciled", "status": "True", "message": "3/3 proxies up to date."});
    let s = seen(Some(json!({"conditions": [other.clone()], "extra": 1})));
    let p = plan(&s, &f, NOW).expect("a write");
    assert_eq!(p.patch["status"]["conditions"][0], other);
    assert_eq!(p.patch["status"]["conditions"][1]["reason"], "InfoFound");
    let flagged = applied(&s, &p);

    let clear = plan(&flagged, &[], LATER).expect("a clearing write");
    assert_eq!(
        clear.patch["status"],
        json!({"validationMessages": null, "observedGeneration": null, "conditions": [other]})
    );
    let cleared = applied(&flagged, &clear);
    assert_eq!(
        cleared.status,
        Some(json!({"conditions": [other], "extra": 1}))
    );
    assert_eq!(plan(&cleared, &[], LATER), None);

    // Nothing written, nothing to clear: a valid object is never touched.
    assert_eq!(plan(&seen(None), &[], NOW), None);
    // Only pilotfish's status: cleared to nothing.
    let alone = applied(&seen(None), &plan(&seen(None), &f, NOW).unwrap());
    let p = plan(&alone, &[], NOW).unwrap();
    assert_eq!(p.patch["status"]["conditions"], Value::Null);
    assert_eq!(applied(&alone, &p).status, None);
}

#[test]
fn a_new_generation_is_rewritten_and_long_messages_are_cut() {
    let many: Vec<Finding> = (0..200)
        .map(|i| Finding {
            level: Level::Error,
            code: "IST0106",
            path: format!("spec.http[{i}]"),
            message: "é".repeat(20),
        })
        .collect();
    let s = seen(None);
    let p = plan(&s, &many, NOW).unwrap();
    let message = p.patch["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.len() <= MAX_MESSAGE && message.ends_with("..."));
    assert!(message.starts_with("200 errors found: "));
    let after = applied(&s, &p);
    let next = Seen {
        generation: Some(3),
        ..after
    };
    let p = plan(&next, &many, LATER).expect("observedGeneration moves");
    assert_eq!(p.patch["status"]["observedGeneration"], 3);
}

#[test]
fn keys_are_read_back_from_error_resource_names() {
    assert_eq!(parse_key("VirtualService default/x"), Some(key("x")));
    assert_eq!(parse_key("Service default/x"), None);
    assert_eq!(parse_key("VirtualService x"), None);
}
