//! Parsing YAML files into typed resources, with errors that say where.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod bounded;

use super::validate;
use crate::model::istio::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec,
    WorkloadEntrySpec, WorkloadGroupSpec,
};
use crate::model::resource::Origin;
use crate::model::security::{
    AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use crate::model::telemetry::TelemetrySpec;
use crate::model::{Kind, ObjectMeta, Resource, Spec};

/// Namespace of resources whose metadata names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One problem in the config: where it is and what was expected.
#[derive(Clone, Debug, PartialEq, Serialize, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    /// 1-based document number in the file.
    pub document: Option<usize>,
    /// `Kind namespace/name`, when known.
    pub resource: Option<String>,
    /// Field path, e.g. `spec.http[0].route[0].weight`.
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(d) = self.document {
            write!(f, ": document {d}")?;
        }
        if let Some(r) = &self.resource {
            write!(f, " ({r})")?;
        }
        if let Some(p) = &self.path {
            write!(f, ": {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.display().to_string(),
            document: None,
            resource: None,
            path: None,
            message: message.into(),
        }
    }

    /// The kind named in `resource`, for metrics ("file" when unknown).
    pub fn kind(&self) -> &str {
        self.resource
            .as_deref()
            .and_then(|r| r.split(' ').next())
            .unwrap_or("file")
    }
}

/// What one file holds.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub resources: Vec<Resource>,
    pub errors: Vec<ConfigError>,
    /// Problems that do not reject their document (Istio's warnings): the
    /// resource is in `resources` all the same.
    pub warnings: Vec<ConfigError>,
    /// Documents skipped on purpose (kinds pilotfish does not serve).
    pub skipped: Vec<String>,
}

/// Top-level fields of a Kubernetes-style object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: serde_yaml_ng::Value,
    #[serde(default)]
    spec: serde_yaml_ng::Value,
    #[serde(default)]
    #[allow(dead_code)]
    status: serde_yaml_ng::Value,
}

/// Parses every document of a YAML file.
pub fn parse_file(path: &Path, text: &str) -> ParsedFile {
    let mut out = ParsedFile::default();
    if let Some(line) = bounded::flow_too_deep(text) {
        out.errors.push(ConfigError::file(
            path,
            format!(
                "flow collections ([...], {{...}}) nest deeper than {} levels at line {line}; the file is not parsed",
                bounded::MAX_DEPTH
            ),
        ));
        return out;
    }
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let err = |resource: Option<String>, field: Option<String>, message: String| ConfigError {
            file: path_str(path),
            document: Some(document),
            resource,
            path: field,
            message,
        };
        let value = match bounded::value(doc) {
            Ok(v) => v,
            Err(Ok(v)) => {
                // The document broke a limit or rule. Later documents are
                // not read: the YAML crate cannot go on from a document it
                // stopped reading midway.
                out.errors.push(err(None, v.path, v.message));
                break;
            }
            Err(Err(e)) => {
                // A syntax error ends the stream: later documents can't be trusted.
                out.errors.push(err(None, None, yaml_message(&e)));
                break;
            }
        };
        if value.is_null() {
            continue; // empty document (e.g. a trailing `---`)
        }
        parse_one(path, Some(document), value, &mut out);
    }
    out
}

/// Parses one object that is not part of a file (an object from the
/// Kubernetes API, named by `source`) with exactly the checks a file
/// document gets. Errors name `source` and no document number.
pub fn parse_object(source: &Path, value: serde_yaml_ng::Value) -> ParsedFile {
    let mut out = ParsedFile::default();
    parse_one(source, None, value, &mut out);
    out
}

fn parse_one(
    path: &Path,
    document: Option<usize>,
    value: serde_yaml_ng::Value,
    out: &mut ParsedFile,
) {
    let err = |resource: Option<String>, field: Option<String>, message: String| ConfigError {
        file: path_str(path),
        document,
        resource,
        path: field,
        message,
    };
    match parse_document(value) {
        Ok(Parsed::Resource(r)) => {
            let mut r = *r;
            r.origin = Origin {
                file: path.to_path_buf(),
                document: document.unwrap_or_default(),
            };
            let findings = validate::check(&r);
            let id = resource_id(&r);
            for (p, message) in findings.warnings {
                out.warnings.push(err(Some(id.clone()), Some(p), message));
            }
            if findings.errors.is_empty() {
                out.resources.push(r);
            } else {
                for (p, message) in findings.errors {
                    out.errors.push(err(Some(id.clone()), Some(p), message));
                }
            }
        }
        Ok(Parsed::Skipped(what)) => out.skipped.push(match document {
            Some(d) => format!("{}: document {d}: {what}", path.display()),
            None => format!("{}: {what}", path.display()),
        }),
        Err(e) => out.errors.push(err(e.resource, e.path, e.message)),
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn resource_id(r: &Resource) -> String {
    format!("{} {}/{}", r.spec.kind(), r.namespace, r.name)
}

fn yaml_message(e: &serde_yaml_ng::Error) -> String {
    match e.location() {
        Some(loc) => format!(
            "invalid YAML at line {}, column {}: {e}",
            loc.line(),
            loc.column()
        ),
        None => format!("invalid YAML: {e}"),
    }
}

enum Parsed {
    Resource(Box<Resource>),
    Skipped(String),
}

struct DocError {
    resource: Option<String>,
    path: Option<String>,
    message: String,
}

fn doc_error(path: Option<&str>, message: impl Into<String>) -> DocError {
    DocError {
        resource: None,
        path: path.map(str::to_string),
        message: message.into(),
    }
}

fn parse_document(value: serde_yaml_ng::Value) -> Result<Parsed, DocError> {
    if !value.is_mapping() {
        return Err(doc_error(
            None,
            "expected a mapping with apiVersion, kind, metadata and spec",
        ));
    }
    // Look at the kind first: kinds pilotfish does not serve (ConfigMap,
    // Secret, ...) have top-level fields of their own and are skipped whole.
    let str_at = |v: &serde_yaml_ng::Value, key: &str| {
        v.get(key).and_then(|x| x.as_str()).map(str::to_string)
    };
    let raw_kind = str_at(&value, "kind");
    if let Some(k) = &raw_kind
        && Kind::from_name(k).is_none()
    {
        let api = str_at(&value, "apiVersion").unwrap_or_default();
        return Ok(Parsed::Skipped(format!(
            "kind {k} ({api}) is not served by pilotfish; skipped"
        )));
    }
    // Name the resource in errors as early as it can be named.
    let early_id = raw_kind.map(|k| {
        let meta = value.get("metadata");
        let field = |f: &str| meta.and_then(|m| str_at(m, f)).filter(|s| !s.is_empty());
        let ns = field("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let name = field("name").unwrap_or_else(|| "(no name)".to_string());
        format!("{k} {ns}/{name}")
    });
    let with_early_id = |mut e: DocError| {
        e.resource = early_id.clone();
        e
    };
    let env: Envelope = serde_path_to_error::deserialize(value).map_err(|e| {
        let p = e.path().to_string();
        with_early_id(doc_error(
            (p != ".").then_some(p.as_str()),
            e.into_inner().to_string(),
        ))
    })?;
    let Some(kind) = Kind::from_name(&env.kind) else {
        return Ok(Parsed::Skipped(format!(
            "kind {} ({}) is not served by pilotfish; skipped",
            env.kind, env.api_version
        )));
    };
    let (group, version) = env
        .api_version
        .split_once('/')
        .unwrap_or(("", &env.api_version));
    if group != kind.group() || !kind.versions().contains(&version) {
        let expected: Vec<String> = kind
            .versions()
            .iter()
            .map(|v| format!("{}/{v}", kind.group()))
            .collect();
        return Err(with_early_id(doc_error(
            Some("apiVersion"),
            format!(
                "{} is not an apiVersion of {kind}; expected one of {}",
                env.api_version,
                expected.join(", ")
            ),
        )));
    }
    let meta: ObjectMeta = if env.metadata.is_null() {
        ObjectMeta::default()
    } else {
        serde_path_to_error::deserialize(env.metadata).map_err(|e| {
            doc_error(
                Some(&format!("metadata.{}", e.path())),
                e.into_inner().to_string(),
            )
        })?
    };
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let id = early_id.unwrap_or_else(|| format!("{kind} {namespace}/{}", meta.name));
    let with_id = |mut e: DocError| {
        e.resource = Some(id.clone());
        e
    };
    if meta.name.is_empty() {
        return Err(with_id(doc_error(
            Some("metadata.name"),
            "a name is required",
        )));
    }
    for (field, value) in [
        ("metadata.name", &meta.name),
        ("metadata.namespace", &namespace),
    ] {
        if let Err(m) = validate::dns1123_label(value) {
            return Err(with_id(doc_error(Some(field), m)));
        }
    }
    if env.spec.is_null() {
        return Err(with_id(doc_error(Some("spec"), "a spec is required")));
    }
    let spec = match kind {
        Kind::ServiceEntry => typed::<ServiceEntrySpec>(env.spec).map(Spec::ServiceEntry),
        Kind::WorkloadEntry => typed::<WorkloadEntrySpec>(env.spec).map(Spec::WorkloadEntry),
        Kind::VirtualService => typed::<VirtualServiceSpec>(env.spec).map(Spec::VirtualService),
        Kind::DestinationRule => typed::<DestinationRuleSpec>(env.spec).map(Spec::DestinationRule),
        Kind::PeerAuthentication => {
            typed::<PeerAuthenticationSpec>(env.spec).map(Spec::PeerAuthentication)
        }
        Kind::Gateway => typed::<GatewaySpec>(env.spec).map(Spec::Gateway),
        Kind::Sidecar => typed::<SidecarSpec>(env.spec).map(Spec::Sidecar),
        Kind::WorkloadGroup => typed::<WorkloadGroupSpec>(env.spec).map(Spec::WorkloadGroup),
        Kind::AuthorizationPolicy => {
            typed::<AuthorizationPolicySpec>(env.spec).map(Spec::AuthorizationPolicy)
        }
        Kind::RequestAuthentication => {
            typed::<RequestAuthenticationSpec>(env.spec).map(Spec::RequestAuthentication)
        }
        Kind::Telemetry => typed::<TelemetrySpec>(env.spec).map(Spec::Telemetry),
    }
    .map_err(with_id)?;
    Ok(Parsed::Resource(Box::new(Resource {
        name: meta.name,
        namespace,
        labels: meta.labels,
        annotations: meta.annotations,
        created: meta.creation_timestamp,
        spec,
        origin: Origin::default(),
    })))
}

fn typed<T: serde::de::DeserializeOwned>(spec: serde_yaml_ng::Value) -> Result<T, DocError> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let p = e.path().to_string();
        let path = if p == "." {
            "spec".to_string()
        } else {
            format!("spec.{p}")
        };
        doc_error(Some(&path), e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests;
