use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value as Json;

use super::*;

/// Our CRDs as JSON, by name (`virtualservices.networking.istio.io`).
fn mk_crds() -> BTreeMap<String, Json> {
    crds()
        .expect("CRDs merge")
        .iter()
        .map(|crd| {
            let json = serde_json::to_value(crd).expect("CRD to JSON");
            (
                json["metadata"]["name"].as_str().unwrap_or("?").to_string(),
                json,
            )
        })
        .collect()
}

fn versions(crd: &Json) -> &[Json] {
    crd["spec"]["versions"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

// --- Versions and kinds ----------------------------------------------------

#[test]
fn every_version_of_a_crd_is_the_same_but_for_its_name() {
    for (name, crd) in mk_crds() {
        let versions = versions(&crd);
        let storage: Vec<&str> = versions
            .iter()
            .filter(|v| v["storage"] == true)
            .filter_map(|v| v["name"].as_str())
            .collect();
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .and_then(crate::model::Kind::from_name)
            .unwrap_or_else(|| {
                panic!(
                    "{name}: kind {} is not a model Kind",
                    crd["spec"]["names"]["kind"]
                )
            });
        assert_eq!(
            storage,
            [kind.storage_version()],
            "{name}: storage versions"
        );
        let without_name = |v: &Json| {
            let mut v = v.clone();
            if let Some(map) = v.as_object_mut() {
                map.remove("name");
                map.remove("storage");
            }
            v
        };
        for v in versions {
            assert_eq!(
                without_name(v),
                without_name(&versions[0]),
                "{name}: version {} differs from {}",
                v["name"],
                versions[0]["name"]
            );
        }
    }
}

/// The CRDs describe the kinds, groups and versions the config parser accepts.
#[test]
fn crds_agree_with_model_kinds() {
    let crds = mk_crds();
    for kind in crate::model::Kind::ALL {
        let crd = crds
            .values()
            .find(|crd| crd["spec"]["names"]["kind"] == kind.name())
            .unwrap_or_else(|| panic!("no CRD for {kind}"));
        assert_eq!(crd["spec"]["group"], kind.group(), "{kind}");
        let mut served: Vec<&str> = versions(crd)
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        let mut accepted = kind.versions().to_vec();
        served.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(served, accepted, "{kind}: served versions");
    }
    assert_eq!(crds.len(), crate::model::Kind::ALL.len());
}

// --- crds/ is what the types generate ------------------------------------

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Istio's own CRDs by name, from the reference copy beside the checkout;
/// `None` (the caller skips) when it is not there.
fn istio_crds() -> Option<&'static BTreeMap<String, Json>> {
    static CRDS: OnceLock<Option<BTreeMap<String, Json>>> = OnceLock::new();
    CRDS.get_or_init(|| {
        let path = manifest_dir().join("../shared/reference/istio-crds/crd-all.gen.yaml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!(
                "skipping: Istio's reference CRDs not found at {}",
                path.display()
            );
            return None;
        };
        let mut crds = BTreeMap::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc: Json = serde::Deserialize::deserialize(doc).expect("Istio CRD YAML");
            if let Some(name) = doc["metadata"]["name"].as_str() {
                crds.insert(name.to_string(), doc);
            }
        }
        Some(crds)
    })
    .as_ref()
}

fn schema_of(version: &Json) -> &Json {
    &version["schema"]["openAPIV3Schema"]
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

#[test]
fn committed_crds_match_the_types() {
    let dir = manifest_dir().join("crds");
    let mut expected: BTreeMap<String, String> = crds()
        .expect("CRDs merge")
        .iter()
        .map(|crd| (file_name(crd), to_yaml(crd).expect("CRD to YAML")))
        .collect();
    let mut problems = Vec::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path: PathBuf = entry.expect("crds/ entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name == "README.md" {
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        match expected.remove(name.as_ref()) {
            None => problems.push(format!("crds/{name} is not generated by `pilotfish crds`")),
            Some(generated) if generated != committed => {
                let line = generated
                    .lines()
                    .zip(committed.lines())
                    .position(|(g, c)| g != c)
                    .unwrap_or_else(|| generated.lines().count().min(committed.lines().count()));
                problems.push(format!("crds/{name} differs from line {}", line + 1));
            }
            Some(_) => {}
        }
    }
    problems.extend(
        expected
            .keys()
            .map(|name| format!("crds/{name} is missing")),
    );
    assert!(
        problems.is_empty(),
        "crds/ is out of date with the Rust types; run `make crds` and commit the result:\n  {}",
        problems.join("\n  ")
    );
}

// --- Structural schemas ---------------------------------------------------
//
// Kubernetes accepts a CRD only if its schema is *structural*
// (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema):
// every node has a type (or is int-or-string / preserves unknown fields),
// `allOf`/`anyOf`/`oneOf`/`not` only add constraints to fields specified
// outside them, and there are no references.

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];
const JUNCTORS: &[&str] = &["allOf", "anyOf", "oneOf", "not"];
/// Keywords a junctor branch may not set (the int-or-string pattern aside).
const NOT_IN_JUNCTORS: &[&str] = &[
    "description",
    "type",
    "default",
    "additionalProperties",
    "nullable",
];
const NEVER: &[&str] = &["$ref", "$defs", "definitions", "$schema", "const"];

/// Every way `schema` (at `path`) breaks the structural-schema rules.
fn structural_problems(schema: &Json, path: &str, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        out.push(format!("{path}: a schema must be an object, got {schema}"));
        return;
    };
    let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Json::Bool(true));
    let preserve = node.get("x-kubernetes-preserve-unknown-fields");
    match node.get("type") {
        Some(Json::String(ty)) if TYPES.contains(&ty.as_str()) => {}
        None if int_or_string || preserve == Some(&Json::Bool(true)) => {}
        None => out.push(format!("{path}: no type")),
        Some(other) => out.push(format!(
            "{path}: type must be one of {TYPES:?} (nullable, not a null type), got {other}"
        )),
    }
    if preserve == Some(&Json::Bool(false)) {
        out.push(format!(
            "{path}: x-kubernetes-preserve-unknown-fields must be true or absent"
        ));
    }
    for key in NEVER {
        if node.contains_key(*key) {
            out.push(format!("{path}: {key} is not allowed"));
        }
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: properties and additionalProperties are exclusive"
        ));
    }
    if node.get("additionalProperties") == Some(&Json::Bool(false)) {
        out.push(format!(
            "{path}: additionalProperties: false is not allowed"
        ));
    }
    if node.get("uniqueItems") == Some(&Json::Bool(true)) {
        out.push(format!("{path}: uniqueItems: true is not allowed"));
    }
    for (name, child) in node
        .get("properties")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
    {
        structural_problems(child, &join(path, name), out);
    }
    if let Some(child) = node.get("additionalProperties").filter(|c| c.is_object()) {
        structural_problems(child, &format!("{path}{{}}"), out);
    }
    if let Some(child) = node.get("items") {
        structural_problems(child, &format!("{path}[]"), out);
    }
    for junctor in JUNCTORS {
        let branches = match node.get(*junctor) {
            Some(Json::Array(branches)) => branches.iter().collect(),
            Some(branch) => vec![branch],
            None => continue,
        };
        for (i, branch) in branches.into_iter().enumerate() {
            let at = format!("{path}.{junctor}[{i}]");
            junctor_problems(branch, schema, int_or_string, &at, out);
        }
    }
}

/// A junctor branch may only constrain what `outer` already specifies.
fn junctor_problems(
    branch: &Json,
    outer: &Json,
    int_or_string: bool,
    path: &str,
    out: &mut Vec<String>,
) {
    let Some(node) = branch.as_object() else {
        out.push(format!("{path}: a schema must be an object, got {branch}"));
        return;
    };
    // `anyOf: [{type: integer}, {type: string}]` beside x-kubernetes-int-or-string.
    let int_or_string_branch = int_or_string
        && node.len() == 1
        && matches!(
            node.get("type").and_then(Json::as_str),
            Some("integer" | "string")
        );
    for key in NOT_IN_JUNCTORS {
        if node.contains_key(*key) && !int_or_string_branch {
            out.push(format!("{path}: {key} is not allowed inside a junctor"));
        }
    }
    for key in NEVER {
        if node.contains_key(*key) {
            out.push(format!("{path}: {key} is not allowed"));
        }
    }
    for (name, child) in node
        .get("properties")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
    {
        let outside = &outer["properties"][name];
        if outside.is_null() {
            out.push(format!(
                "{path}: property {name} is not specified outside the junctor"
            ));
        } else {
            junctor_problems(child, outside, false, &join(path, name), out);
        }
    }
    if let Some(child) = node.get("items") {
        if outer["items"].is_null() {
            out.push(format!(
                "{path}: items are not specified outside the junctor"
            ));
        } else {
            junctor_problems(child, &outer["items"], false, &format!("{path}[]"), out);
        }
    }
    for junctor in JUNCTORS {
        let branches = match node.get(*junctor) {
            Some(Json::Array(branches)) => branches.iter().collect(),
            Some(branch) => vec![branch],
            None => continue,
        };
        for (i, nested) in branches.into_iter().enumerate() {
            junctor_problems(nested, outer, false, &format!("{path}.{junctor}[{i}]"), out);
        }
    }
}

/// Structural problems of every version's schema, `<crd> <version>: ...`.
fn crd_structural_problems(name: &str, crd: &Json) -> Vec<String> {
    let mut problems = Vec::new();
    for version in versions(crd) {
        let mut found = Vec::new();
        let schema = schema_of(version);
        if schema["type"] != "object" {
            found.push("root: type must be object".to_string());
        }
        structural_problems(schema, "", &mut found);
        let metadata = schema["properties"]["metadata"]["properties"].as_object();
        for field in metadata.into_iter().flat_map(|m| m.keys()) {
            if field != "name" && field != "generateName" {
                found.push(format!(
                    "metadata.{field}: only name and generateName may be restricted"
                ));
            }
        }
        problems.extend(
            found
                .into_iter()
                .map(|p| format!("{name} {}: {p}", version["name"])),
        );
    }
    problems
}

#[test]
fn generated_schemas_are_structural() {
    let crds = mk_crds();
    assert_eq!(crds.len(), crate::model::Kind::ALL.len());
    let problems: Vec<String> = crds
        .iter()
        .flat_map(|(name, crd)| crd_structural_problems(name, crd))
        .collect();
    assert!(
        problems.is_empty(),
        "not structural:\n  {}",
        problems.join("\n  ")
    );
}

/// The check accepts what Kubernetes accepts: Istio's own CRDs, which use
/// constraint-only `oneOf` branches and int-or-string.
#[test]
fn structural_check_accepts_istio_crds() {
    let Some(istio) = istio_crds() else { return };
    let problems: Vec<String> = istio
        .iter()
        .flat_map(|(name, crd)| crd_structural_problems(name, crd))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// ... and rejects what schemars emits by default: `$ref`s to `$defs`, and
/// `Option`s as `anyOf` with null or `type: [x, "null"]`.
#[test]
fn structural_check_rejects_plain_schemars_output() {
    let raw = serde_json::to_value(schemars::schema_for!(
        crate::model::istio::VirtualServiceSpec
    ))
    .expect("schema to JSON");
    let mut problems = Vec::new();
    structural_problems(&raw, "", &mut problems);
    for (name, definition) in raw["$defs"].as_object().into_iter().flatten() {
        structural_problems(definition, &format!("$defs.{name}"), &mut problems);
    }
    for expected in [
        "$ref is not allowed",
        "$defs is not allowed",
        "(nullable, not a null type)",
        "type is not allowed inside a junctor",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "no {expected:?} among {problems:#?}"
        );
    }
}

// --- Coverage of Istio's CRDs -----------------------------------------------

/// A field path's JSON type, enum values and required fields.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    ty: String,
    values: BTreeSet<String>,
    required: BTreeSet<String>,
}

/// Every field path under `schema` (properties, items `[]`, map values `{}`).
fn fields(schema: &Json, path: &str, out: &mut BTreeMap<String, Field>) {
    let ty = if schema["x-kubernetes-int-or-string"] == true {
        "int-or-string".to_string()
    } else {
        schema["type"].as_str().unwrap_or("any").to_string()
    };
    let strings = |key: &str| -> BTreeSet<String> {
        schema[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect()
    };
    let mut values = strings("enum");
    // schemars lists null among an `Option<enum>`'s values; `nullable` already says it.
    if schema["nullable"] == true {
        values.remove("null");
    }
    out.insert(
        path.to_string(),
        Field {
            ty,
            values,
            required: strings("required"),
        },
    );
    for (name, child) in schema["properties"].as_object().into_iter().flatten() {
        fields(child, &join(path, name), out);
    }
    if schema["additionalProperties"].is_object() {
        fields(&schema["additionalProperties"], &format!("{path}{{}}"), out);
    }
    if schema["items"].is_object() {
        fields(&schema["items"], &format!("{path}[]"), out);
    }
}

fn compatible(istio: &str, ours: &str) -> bool {
    istio == ours
        || (istio == "int-or-string" && matches!(ours, "integer" | "string"))
        || (ours == "int-or-string" && matches!(istio, "integer" | "string"))
}

/// How our CRD `name` falls short of Istio's, or goes beyond it: one line each.
fn coverage_problems(name: &str, ours: &Json, istio: &Json) -> Vec<String> {
    let kind = ours["spec"]["names"]["kind"].as_str().unwrap_or("?");
    let mut problems = Vec::new();
    for key in ["plural", "singular", "kind", "shortNames", "categories"] {
        if ours["spec"]["names"][key] != istio["spec"]["names"][key] {
            problems.push(format!(
                "names.{key}: ours {}, Istio's {}",
                ours["spec"]["names"][key], istio["spec"]["names"][key]
            ));
        }
    }
    if ours["spec"]["scope"] != istio["spec"]["scope"] {
        problems.push("scope differs".to_string());
    }
    let served = |crd: &Json| -> Vec<String> {
        versions(crd)
            .iter()
            .map(|v| format!("{}(storage={})", v["name"], v["storage"]))
            .collect()
    };
    if served(ours) != served(istio) {
        problems.push(format!(
            "versions: ours {:?}, Istio's {:?}",
            served(ours),
            served(istio)
        ));
    }
    let mut used = BTreeSet::new();
    for istio_version in versions(istio) {
        let Some(our_version) = versions(ours)
            .iter()
            .find(|v| v["name"] == istio_version["name"])
        else {
            continue;
        };
        let (mut want, mut have) = (BTreeMap::new(), BTreeMap::new());
        fields(schema_of(istio_version), "", &mut want);
        fields(schema_of(our_version), "", &mut have);
        let at = |path: &str| {
            format!(
                "{} {}",
                istio_version["name"].as_str().unwrap_or("?"),
                if path.is_empty() { "<root>" } else { path }
            )
        };
        for (path, field) in &want {
            if let Some(entry) = not_supported(kind, path) {
                used.insert(entry.path);
                if have.contains_key(path) {
                    problems.push(format!("{}: listed in NOT_SUPPORTED but present", at(path)));
                }
                continue;
            }
            let Some(ours) = have.get(path) else {
                problems.push(format!("{}: missing (Istio: {})", at(path), field.ty));
                continue;
            };
            if !compatible(&field.ty, &ours.ty) {
                problems.push(format!(
                    "{}: type {}, Istio's {}",
                    at(path),
                    ours.ty,
                    field.ty
                ));
            }
            if ours.values != field.values {
                problems.push(format!(
                    "{}: enum {:?}, Istio's {:?}",
                    at(path),
                    ours.values,
                    field.values
                ));
            }
            // kube's derive makes `spec` required at the root for every kind;
            // Istio requires it only for some. Below the root, ours must agree.
            if !path.is_empty() && ours.required != field.required {
                problems.push(format!(
                    "{}: required {:?}, Istio's {:?}",
                    at(path),
                    ours.required,
                    field.required
                ));
            }
        }
        for path in have.keys().filter(|p| !want.contains_key(*p)) {
            problems.push(format!("{}: not in Istio's CRD", at(path)));
        }
    }
    for entry in NOT_SUPPORTED.iter().filter(|n| n.kind == kind) {
        if !used.contains(entry.path) {
            problems.push(format!(
                "NOT_SUPPORTED {}: no such field in Istio's CRD",
                entry.path
            ));
        }
    }
    problems
        .into_iter()
        .map(|p| format!("{name} {p}"))
        .collect()
}

#[test]
fn crds_cover_istio_crds() {
    let Some(istio) = istio_crds() else { return };
    let ours = mk_crds();
    let mut problems = Vec::new();
    for (name, crd) in &ours {
        match istio.get(name) {
            Some(reference) => problems.extend(coverage_problems(name, crd, reference)),
            None => problems.push(format!("{name}: not among Istio's CRDs")),
        }
    }
    for entry in NOT_SUPPORTED.iter().filter(|n| n.kind == "*") {
        let listed_somewhere = ours.iter().any(|(name, _)| {
            let mut want = BTreeMap::new();
            versions(&istio[name])
                .iter()
                .for_each(|v| fields(schema_of(v), "", &mut want));
            want.contains_key(entry.path)
        });
        if !listed_somewhere {
            problems.push(format!(
                "NOT_SUPPORTED {}: no such field in Istio's CRDs",
                entry.path
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "our CRDs and Istio's differ (add a field, or list it in crd::NOT_SUPPORTED with a reason):\n  {}",
        problems.join("\n  ")
    );
}

/// The coverage check is not vacuous: a field dropped from our CRD, or one
/// Istio lacks, is reported.
#[test]
fn coverage_check_reports_missing_and_extra_fields() {
    let Some(istio) = istio_crds() else { return };
    let name = "destinationrules.networking.istio.io";
    let mut ours = mk_crds().remove(name).expect("DestinationRule CRD");
    for version in ours["spec"]["versions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        let spec = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let host = spec
            .as_object_mut()
            .and_then(|p| p.remove("host"))
            .expect("spec.host");
        spec["hostname"] = host;
    }
    let problems = coverage_problems(name, &ours, &istio[name]);
    assert!(
        problems.iter().any(|p| p.contains("v1 spec.host: missing")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("v1 spec.hostname: not in Istio's CRD")),
        "{problems:#?}"
    );
}

#[test]
fn not_supported_matches_paths_and_their_children_only() {
    let entry = &NOT_SUPPORTED[0];
    let path = entry.path;
    for kind in ["VirtualService", "PeerAuthentication"] {
        assert_eq!(not_supported(kind, path), Some(entry));
        assert_eq!(
            not_supported(kind, &format!("{path}[].reason")),
            Some(entry)
        );
        assert_eq!(not_supported(kind, &format!("{path}X")), None);
        assert_eq!(not_supported(kind, &format!("spec.{path}")), None);
    }
}
