//! Checks shared by the policy kinds (AuthorizationPolicy,
//! RequestAuthentication, Telemetry, PeerAuthentication): the workload
//! selector and the target references.

use super::findings::Findings;
use super::names;
use crate::model::istio::{PolicyTargetReference, WorkloadSelector};

/// Most target references a policy may list (Istio's CRD `maxItems`).
const MAX_TARGET_REFS: usize = 16;

/// The (group, kind) pairs a policy may target (Istio's `allowedTargetRefs`;
/// the core group is written empty or `core`).
const ALLOWED_TARGETS: &[(&str, &str)] = &[
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// `selector`, `targetRef` and `targetRefs` of a policy.
pub fn selection(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    f: &mut Findings,
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        f.error("spec", "only one of targetRefs or selector can be set");
    }
    if let Some(selector) = selector {
        workload_selector("spec.selector", selector, f);
    }
    if let Some(r) = target_ref {
        target("spec.targetRef", r, f);
    }
    if target_refs.len() > MAX_TARGET_REFS {
        f.error(
            "spec.targetRefs",
            format!("at most {MAX_TARGET_REFS} target references are allowed"),
        );
    }
    for (i, r) in target_refs.iter().enumerate() {
        target(&format!("spec.targetRefs[{i}]"), r, f);
    }
}

/// Istio's `validateWorkloadSelector` (a `type.v1beta1.WorkloadSelector`):
/// no empty keys, no wildcards; no labels at all is a warning.
pub fn workload_selector(path: &str, selector: &WorkloadSelector, f: &mut Findings) {
    for (k, v) in &selector.match_labels {
        let at = format!("{path}.matchLabels[{k}]");
        if k.is_empty() {
            f.error(&at, "key must not be empty");
        }
        if k.contains('*') || v.contains('*') {
            f.error(
                &at,
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        } else {
            f.check(&at, names::label_value(v));
        }
    }
    if selector.match_labels.is_empty() {
        f.warn(
            format!("{path}.matchLabels"),
            "workload selector specified without labels; it selects every workload in the namespace",
        );
    }
}

fn target(path: &str, r: &PolicyTargetReference, f: &mut Findings) {
    if r.name.is_empty() {
        f.error(format!("{path}.name"), "targetRef name must be set");
    }
    if r.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
        f.error(
            format!("{path}.namespace"),
            "cross namespace referencing is not currently supported",
        );
    }
    let group = match r.group.as_deref() {
        None | Some("") => "core",
        Some(g) => g,
    };
    if !ALLOWED_TARGETS.contains(&(group, r.kind.as_str())) {
        let allowed: Vec<String> = ALLOWED_TARGETS
            .iter()
            .map(|(g, k)| format!("{g}/{k}"))
            .collect();
        f.error(
            format!("{path}.kind"),
            format!(
                "targetRef must be to one of {} but was {}/{}",
                allowed.join(", "),
                r.group.as_deref().unwrap_or_default(),
                r.kind
            ),
        );
    }
}
