//! The validating admission webhook: Kubernetes sends an AdmissionReview
//! (`admission.k8s.io/v1`) for each create or update of an Istio object and
//! pilotfish answers allowed or denied, with the messages `pilotfish
//! validate` prints. Like istiod's, it serves HTTPS on its own port (15017).
//!
//! `review` is a pure function of the request document; `server` serves it.

mod server;

use std::path::Path;

use serde_json::{Value, json};

use super::parse::{ConfigError, parse_object};
use crate::model::Kind;

pub use server::serve;

const API_VERSION: &str = "admission.k8s.io/v1";

/// Largest AdmissionReview body read: Kubernetes objects are at most about
/// 1.5 MiB, and a review of an UPDATE carries two of them.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// `Kind ns/name: path: message`, the part of `validate`'s line after the
/// file and document (a reviewed object has neither).
fn describe(e: &ConfigError) -> String {
    let mut s = e.resource.clone().unwrap_or_default();
    if let Some(p) = &e.path {
        s.push_str(&format!(": {p}"));
    }
    format!("{s}: {}", e.message)
}

/// The AdmissionReview answering `review`, or why `review` is not one (the
/// caller answers 400 then).
pub fn review(review: &Value) -> Result<Value, String> {
    if review["apiVersion"] != API_VERSION || review["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected an AdmissionReview of apiVersion {API_VERSION}, got kind {} apiVersion {}",
            review["kind"], review["apiVersion"]
        ));
    }
    let request = &review["request"];
    let Some(uid) = request["uid"].as_str() else {
        return Err("request.uid is missing".to_string());
    };
    let answer = |response: Value| {
        let mut response = response;
        response["uid"] = json!(uid);
        json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})
    };
    let allow = || answer(json!({"allowed": true}));
    // Only creates and updates can make config invalid.
    let operation = request["operation"].as_str().unwrap_or_default();
    if !matches!(operation, "CREATE" | "UPDATE") {
        return Ok(allow());
    }
    // Objects of kinds pilotfish does not read are not its business (a
    // Gateway API `Gateway` is not Istio's).
    let group = request["kind"]["group"].as_str().unwrap_or_default();
    let kind = request["kind"]["kind"].as_str().unwrap_or_default();
    if Kind::from_name(kind).is_none_or(|k| k.group() != group) {
        return Ok(allow());
    }
    let mut object = request["object"].clone();
    if !object.is_object() {
        return Ok(answer(deny("request.object is missing".to_string())));
    }
    // The API server fills these in before calling, but be lenient.
    for (field, from) in [("namespace", "namespace"), ("name", "name")] {
        if object["metadata"][field].as_str().is_none_or(str::is_empty)
            && let Some(v) = request[from].as_str()
        {
            object["metadata"][field] = json!(v);
        }
    }
    let value = match serde_yaml_ng::to_value(&object) {
        Ok(v) => v,
        Err(e) => return Ok(answer(deny(format!("cannot read the object: {e}")))),
    };
    let parsed = parse_object(Path::new("admission"), value);
    let warnings: Vec<String> = parsed.warnings.iter().map(describe).collect();
    let mut response = if parsed.errors.is_empty() {
        json!({"allowed": true})
    } else {
        let messages: Vec<String> = parsed.errors.iter().map(describe).collect();
        deny(messages.join("; "))
    };
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    Ok(answer(response))
}

fn deny(message: String) -> Value {
    json!({
        "allowed": false,
        "status": {"code": 400, "reason": "BadRequest", "message": message},
    })
}

#[cfg(test)]
mod tests;
