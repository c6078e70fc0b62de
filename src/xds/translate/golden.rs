//! Golden tests of the whole translation: each folder under `tests/golden/`
//! is one feature, with `in.yaml` (Istio resources as users write them) and
//! `out.yaml` (every Envoy resource pilotfish makes from them, in the proto3
//! JSON mapping with `Any` expanded, as YAML). Adding a folder adds a case.
//!
//! After a deliberate change in the output, re-bless and review the diff:
//! `PILOTFISH_BLESS=1 cargo test --lib golden`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Mesh, OutboundMode, clusters, egress, endpoints, gateway, listeners, outbound_tcp};
use crate::config::parse_file;
use crate::model::{ConfigSnapshot, Registry};
use crate::xds::dump::message_json;

const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
const BLESS_VAR: &str = "PILOTFISH_BLESS";
const BLESS_CMD: &str = "PILOTFISH_BLESS=1 cargo test --lib golden";
/// Namespace of the proxies whose outbound route table is rendered: the one
/// the fixtures put their workloads in, so short host names show up.
const CLIENT_NAMESPACE: &str = "default";
/// Lines of each side shown on a mismatch: enough to see what changed,
/// short enough to read in a test log.
const DIFF_CONTEXT_LINES: usize = 12;
/// Unchanged lines shown before the first difference, to place it in the YAML.
const DIFF_LEAD_LINES: usize = 3;

/// The feature folders, sorted by name.
fn feature_dirs() -> Vec<PathBuf> {
    let entries = std::fs::read_dir(GOLDEN_DIR)
        .unwrap_or_else(|e| panic!("cannot read golden folder {GOLDEN_DIR}: {e}"));
    let mut dirs: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("cannot list {GOLDEN_DIR}: {e}")))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no feature folders in {GOLDEN_DIR}: each needs an in.yaml"
    );
    dirs
}

fn feature_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// One rendered message; a rendering failure (an unknown `Any` type, say)
/// comes back from `message_json` as a string, and fails the test here.
fn json<M: prost::Name>(msg: &M) -> Value {
    let v = message_json(msg);
    assert!(v.is_object(), "cannot render {}: {v}", M::full_name());
    v
}

fn json_all<M: prost::Name>(msgs: &[M]) -> Value {
    Value::Array(msgs.iter().map(json).collect())
}

/// Everything pilotfish generates from `in.yaml`, as YAML.
fn render(dir: &Path) -> String {
    let path = dir.join("in.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let parsed = parse_file(&path, &text);
    let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert!(
        errors.is_empty(),
        "errors in {}:\n{}",
        path.display(),
        errors.join("\n")
    );
    assert!(
        parsed.skipped.is_empty(),
        "documents skipped in {}: {:?}",
        path.display(),
        parsed.skipped
    );

    let mut config = ConfigSnapshot::default();
    for r in parsed.resources {
        let key = r.key();
        let doc = r.origin.document;
        let dup = config.resources.insert(key.clone(), Arc::new(r));
        assert!(
            dup.is_none(),
            "{}: document {doc}: {key} is defined twice",
            path.display()
        );
    }
    let registry = Registry::build(&config);
    // A folder whose in.yaml starts with `# golden: mtls` is translated with mesh mTLS on.
    let mesh = Mesh::new(&config, &registry).with_mtls(text.starts_with("# golden: mtls"));
    // A line `# golden: zipkin` configures a Zipkin collector for tracing.
    let mesh = mesh.with_zipkin(
        text.lines()
            .any(|l| l == "# golden: zipkin")
            .then_some("127.0.0.9:9411"),
    );
    // A line `# golden: registry-only` sets the mesh-wide outbound traffic policy.
    let mesh = mesh.with_outbound_policy(if text.lines().any(|l| l == "# golden: registry-only") {
        OutboundMode::RegistryOnly
    } else {
        OutboundMode::AllowAny
    });

    let locality_labels = endpoints::client_labels(&mesh);
    let dns_labels = endpoints::dns_client_labels(&mesh);
    let mut workloads = Map::new();
    for (key, w) in &registry.workloads {
        let mut out = Map::new();
        if let Some(labels) = &locality_labels {
            // Locality-balanced endpoints, as this proxy's locality sees them.
            let client = super::locality::Client::of_workload(w, labels);
            out.insert(
                "locality_endpoints".into(),
                json_all(&endpoints::for_client(&mesh, &client)),
            );
        }
        if let Some(labels) = &dns_labels {
            // Locality-balanced DNS clusters, as this proxy's locality sees them.
            let client = super::locality::Client::of_workload(w, labels);
            let shaped = clusters::for_client(&mesh, &client);
            if !shaped.is_empty() {
                out.insert("locality_clusters".into(), json_all(&shaped));
            }
        }
        if gateway::is_gateway(&mesh, w) {
            // A gateway proxy: its own listeners, route tables and credentials.
            out.insert(
                "gateway_listeners".into(),
                json_all(&gateway::listeners(&mesh, w)),
            );
            out.insert(
                "gateway_routes".into(),
                json_all(&gateway::route_tables(&mesh, w)),
            );
            let sni_dnat = gateway::sni_dnat_clusters(&mesh, w);
            if !sni_dnat.is_empty() {
                out.insert("gateway_clusters".into(), json_all(&sni_dnat));
            }
            // A line `# golden: gateway-clusters` renders the outbound
            // clusters the gateway gets: its namespace's view, where its
            // DestinationRules are looked up (TLS origination).
            if text.lines().any(|l| l == "# golden: gateway-clusters") {
                let scope = super::scope::Scope::new(&config, &registry, &key.namespace, None);
                out.insert(
                    "outbound_clusters".into(),
                    json_all(&clusters::outbound(&mesh.with_scope(&scope))),
                );
            }
            let names: Vec<String> = gateway::credential_names(&mesh, w).into_iter().collect();
            out.insert("credentials".into(), names.into());
            let warnings = gateway::warnings(&mesh, w);
            if !warnings.is_empty() {
                out.insert("gateway_warnings".into(), warnings.into());
            }
            workloads.insert(key.to_string(), Value::Object(out));
            continue;
        }
        out.insert("clusters".into(), json_all(&clusters::inbound(&mesh, w)));
        // Its outbound traffic policy when REGISTRY_ONLY (mesh-wide or from a
        // Sidecar resource), and the credentials it gets for TLS origination.
        if egress::outbound_mode(&mesh, w) == OutboundMode::RegistryOnly {
            out.insert("outbound_traffic_policy".into(), "REGISTRY_ONLY".into());
        }
        let names: Vec<String> = egress::sidecar_credential_names(&mesh, &key.namespace)
            .into_iter()
            .collect();
        if !names.is_empty() {
            out.insert("credentials".into(), names.into());
        }
        out.insert(
            "listeners".into(),
            json_all(&listeners::for_workload(&mesh, w)),
        );
        // Outbound TCP/TLS listeners (a separate layer in the xDS cache).
        let outbound = outbound_tcp::for_workload(&mesh, w);
        if !outbound.is_empty() {
            out.insert("outbound_tcp_listeners".into(), json_all(&outbound));
        }
        workloads.insert(key.to_string(), Value::Object(out));
    }
    let mut all = Map::new();
    all.insert("clusters".into(), json_all(&clusters::outbound(&mesh)));
    all.insert("endpoints".into(), json_all(&endpoints::assignments(&mesh)));
    all.insert(
        "routes".into(),
        Value::Array(vec![json(&egress::outbound_routes(
            &mesh,
            CLIENT_NAMESPACE,
            mesh.outbound_policy.into(),
        ))]),
    );
    all.insert("workloads".into(), Value::Object(workloads));
    // A line `# golden: scopes` renders each Sidecar/exportTo view too.
    if text.lines().any(|l| l == "# golden: scopes") {
        all.insert("views".into(), render_views(&mesh));
    }
    let missing = gateway::reference_warnings(&mesh);
    if !missing.is_empty() {
        all.insert("gateway_reference_warnings".into(), missing.into());
    }
    let outbound = outbound_tcp::warnings(&mesh);
    if !outbound.is_empty() {
        all.insert("outbound_tcp_warnings".into(), outbound.into());
    }
    let egress_proxy = egress::warnings(&mesh);
    if !egress_proxy.is_empty() {
        all.insert("egress_proxy_warnings".into(), egress_proxy.into());
    }
    let inbound = super::inbound::warnings(&mesh);
    if !inbound.is_empty() {
        all.insert("inbound_warnings".into(), inbound.into());
    }
    if !registry.warnings.is_empty() {
        all.insert("warnings".into(), registry.warnings.clone().into());
    }
    // Sidecar host conflicts and delegate problems, as serve reports them.
    let routing: Vec<String> = crate::config::analyze::serve_warnings(&config)
        .iter()
        .map(|m| format!("[{}] {}: {}: {}", m.code, m.resource, m.path, m.message))
        .collect();
    if !routing.is_empty() {
        all.insert("virtual_service_warnings".into(), routing.into());
    }
    serde_yaml_ng::to_string(&Value::Object(all))
        .unwrap_or_else(|e| panic!("cannot write YAML for {}: {e}", dir.display()))
}

/// One rendered view: its workloads, a Sidecar conflict, its resources.
type View = (Vec<String>, Option<String>, Map<String, Value>);

/// Every view (namespace and Sidecar) of the sidecars in the fixture: its
/// workloads, clusters, endpoints and outbound route table.
fn render_views(mesh: &Mesh<'_>) -> Value {
    use super::scope::{Scope, select_sidecar};
    let mut views: std::collections::BTreeMap<String, View> = Default::default();
    for (key, w) in &mesh.registry.workloads {
        if gateway::is_gateway(mesh, w) {
            continue;
        }
        let choice = select_sidecar(mesh.config, &key.namespace, &w.labels);
        let scope = Scope::new(mesh.config, mesh.registry, &key.namespace, choice.sidecar);
        let entry = views.entry(scope.key.to_string()).or_insert_with(|| {
            let m = mesh.with_scope(&scope);
            let mut out = Map::new();
            out.insert("clusters".into(), json_all(&clusters::outbound(&m)));
            out.insert("endpoints".into(), json_all(&endpoints::assignments(&m)));
            let mode = egress::policy_of(mesh, choice.sidecar.map(|(_, s)| s));
            let rc = egress::outbound_routes(&m, &key.namespace, mode);
            out.insert("routes".into(), json(&rc));
            // Route tables of the Sidecar's HTTP egress listeners with a port.
            let own = choice
                .sidecar
                .map(|s| super::sidecar_egress::route_tables(&m, &key.namespace, s, mode))
                .unwrap_or_default();
            if !own.is_empty() {
                out.insert("egress_listener_routes".into(), json_all(&own));
            }
            (Vec::new(), None, out)
        });
        entry.0.push(key.to_string());
        if let Some(c) = choice.conflict {
            entry.1 = Some(c);
        }
    }
    let mut out = Map::new();
    for (name, (workloads, conflict, mut v)) in views {
        v.insert("workloads".into(), workloads.into());
        if let Some(c) = conflict {
            v.insert("sidecar_conflict".into(), c.into());
        }
        out.insert(name, Value::Object(v));
    }
    Value::Object(out)
}

/// A short line diff: a few unchanged lines, then the lines between the
/// common head and the common tail of both texts, at most
/// `DIFF_CONTEXT_LINES` of each side.
fn line_diff(expected: &str, actual: &str) -> String {
    let exp: Vec<&str> = expected.lines().collect();
    let act: Vec<&str> = actual.lines().collect();
    let head = exp.iter().zip(&act).take_while(|(a, b)| a == b).count();
    let tail = exp[head..]
        .iter()
        .rev()
        .zip(act[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = format!("first difference at line {}:\n", head + 1);
    let lead = head.saturating_sub(DIFF_LEAD_LINES);
    for (i, line) in exp[lead..head].iter().enumerate() {
        let _ = writeln!(out, " {:>5} | {line}", lead + i + 1);
    }
    for (sign, lines) in [
        ('-', &exp[head..exp.len() - tail]),
        ('+', &act[head..act.len() - tail]),
    ] {
        for (i, line) in lines.iter().take(DIFF_CONTEXT_LINES).enumerate() {
            let _ = writeln!(out, "{sign}{:>5} | {line}", head + i + 1);
        }
        if lines.len() > DIFF_CONTEXT_LINES {
            let _ = writeln!(out, "{sign}  ... {} more", lines.len() - DIFF_CONTEXT_LINES);
        }
    }
    out
}

#[test]
fn golden_outputs_match() {
    let bless = std::env::var(BLESS_VAR).is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for dir in feature_dirs() {
        let actual = render(&dir);
        let out_path = dir.join("out.yaml");
        if bless {
            std::fs::write(&out_path, &actual)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", out_path.display()));
            continue;
        }
        match std::fs::read_to_string(&out_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}: output differs from out.yaml (- out.yaml, + now)\n{}",
                feature_name(&dir),
                line_diff(&expected, &actual)
            )),
            Err(e) => failures.push(format!(
                "{}: cannot read {}: {e}",
                feature_name(&dir),
                out_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch in tests/golden/\n\n{}\nIf the new output is right, re-bless and review the diff:\n  {BLESS_CMD}",
        failures.join("\n")
    );
}

#[test]
fn golden_rendering_is_deterministic() {
    for dir in feature_dirs() {
        let first = render(&dir);
        let second = render(&dir);
        assert!(
            first == second,
            "{}: two translations differ\n{}",
            feature_name(&dir),
            line_diff(&first, &second)
        );
    }
}

#[test]
fn line_diff_shows_the_changed_lines() {
    let d = line_diff("a\nb\nc\nd\n", "a\nB\nc\nd\n");
    assert_eq!(
        d,
        "first difference at line 2:\n     1 | a\n-    2 | b\n+    2 | B\n"
    );
    let added = line_diff("a\n", "a\nb\n");
    assert!(added.contains("+    2 | b"), "{added}");
}
