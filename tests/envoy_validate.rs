//! Every golden translation, checked by real Envoy (`--mode validate`): the
//! resources pilotfish would send are loaded as static config, so anything
//! Envoy would NACK fails here first.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use pilotfish::config::parse_file;
use pilotfish::model::{ConfigSnapshot, Registry};
use pilotfish::xds::dump::message_json;
use pilotfish::xds::translate::{
    Mesh, OutboundMode, clusters, egress, endpoints, gateway, listeners, outbound_tcp, scope,
    sidecar_egress,
};
use serde_json::{Value, json};

/// Real PEM files standing in for the `/etc/certs/` paths the golden inputs name.
fn write_certs(dir: &Path) {
    let cert = rcgen::generate_simple_self_signed(vec!["api.example.com".to_string()]).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("client.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("client-key.pem"), cert.signing_key.serialize_pem()).unwrap();
}

fn bootstrap(in_yaml: &Path, certs: &Path) -> Value {
    let text = std::fs::read_to_string(in_yaml)
        .unwrap()
        .replace("/etc/certs/", &format!("{}/", certs.display()));
    let parsed = parse_file(in_yaml, &text);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let mut config = ConfigSnapshot::default();
    for r in parsed.resources {
        config.resources.insert(r.key(), Arc::new(r));
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

    let mut clusters: Vec<Value> = vec![json!({
        "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint":
            {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]},
    })];
    // The telemetry sink's cluster, which access logs name (as the bootstrap has it).
    let mut telemetry = clusters[0].clone();
    telemetry["name"] = json!("pilotfish-telemetry");
    telemetry["load_assignment"]["cluster_name"] = json!("pilotfish-telemetry");
    clusters.push(telemetry);
    clusters.extend(clusters::outbound(&mesh).iter().map(message_json));
    // Each assignment as a static cluster's load assignment.
    for (i, cla) in endpoints::assignments(&mesh).iter().enumerate() {
        let mut cla = message_json(cla);
        cla["clusterName"] = json!(format!("eds-check-{i}"));
        clusters.push(json!({"name": format!("eds-check-{i}"), "type": "STATIC",
            "connect_timeout": "1s", "load_assignment": cla}));
    }
    // Locality-balanced assignments (priorities, locality weights), per client.
    if let Some(labels) = endpoints::client_labels(&mesh) {
        let mut n = 0;
        for w in registry.workloads.values() {
            let client = pilotfish::xds::translate::locality::Client::of_workload(w, &labels);
            for cla in endpoints::for_client(&mesh, &client) {
                let name = format!("eds-locality-check-{n}");
                n += 1;
                let mut cla = message_json(&cla);
                cla["clusterName"] = json!(name);
                clusters.push(json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
                    "common_lb_config": {"locality_weighted_lb_config": {}}, "load_assignment": cla}));
            }
        }
    }
    // Locality-balanced DNS clusters, per client: the first under its own
    // name (routes name it), the others renamed.
    if let Some(labels) = endpoints::dns_client_labels(&mesh) {
        let mut n = 0;
        for w in registry.workloads.values() {
            let client = pilotfish::xds::translate::locality::Client::of_workload(w, &labels);
            for c in clusters::for_client(&mesh, &client) {
                let mut c = message_json(&c);
                if clusters.iter().any(|x| x["name"] == c["name"]) {
                    let name = format!("dns-locality-check-{n}");
                    n += 1;
                    c["name"] = json!(name);
                    c["loadAssignment"]["clusterName"] = json!(name);
                }
                clusters.push(c);
            }
        }
    }
    let mut listeners_json = Vec::new();
    let mut inbound_names = std::collections::HashSet::new();
    let mut route_tables = vec![egress::outbound_routes(
        &mesh,
        "default",
        mesh.outbound_policy.into(),
    )];
    let mut secrets = Vec::new();
    for w in registry.workloads.values() {
        if gateway::is_gateway(&mesh, w) {
            // A gateway: its listeners, its route tables (checked inline
            // below) and its credentials' SDS secrets, made from a real
            // certificate as the credentials directory would give them.
            listeners_json.extend(gateway::listeners(&mesh, w).iter().map(message_json));
            // Its SNI-DNAT clusters (AUTO_PASSTHROUGH), once per name.
            for c in gateway::sni_dnat_clusters(&mesh, w) {
                let c = message_json(&c);
                if !clusters.iter().any(|x| x["name"] == c["name"]) {
                    clusters.push(c);
                }
            }
            route_tables.extend(gateway::route_tables(&mesh, w));
            for name in gateway::credential_names(&mesh, w) {
                let cred = pilotfish::xds::credentials::Credential {
                    cert_pem: std::fs::read_to_string(certs.join("client.pem")).unwrap(),
                    key_pem: pilotfish::ca::Secret::new(
                        std::fs::read_to_string(certs.join("client-key.pem")).unwrap(),
                    ),
                    ca_pem: Some(std::fs::read_to_string(certs.join("ca.pem")).unwrap()),
                };
                // Once per name: a sidecar may name the same credential.
                for s in pilotfish::xds::credentials::secrets(&name, &cred) {
                    let s = message_json(&s);
                    if !secrets.iter().any(|x: &Value| x["name"] == s["name"]) {
                        secrets.push(s);
                    }
                }
            }
            continue;
        }
        for c in clusters::inbound(&mesh, w) {
            if inbound_names.insert(c.name.clone()) {
                clusters.push(message_json(&c));
            }
        }
        listeners_json.extend(listeners::for_workload(&mesh, w).iter().map(message_json));
        listeners_json.extend(
            outbound_tcp::for_workload(&mesh, w)
                .iter()
                .map(message_json),
        );
        // Route tables of its Sidecar's HTTP egress listeners with a port.
        let sidecar = scope::select_sidecar(&config, &w.key.namespace, &w.labels).sidecar;
        if let Some(s) = sidecar {
            let view = scope::Scope::new(&config, &registry, &w.key.namespace, sidecar);
            route_tables.extend(sidecar_egress::route_tables(
                &mesh.with_scope(&view),
                &w.key.namespace,
                s,
                egress::policy_of(&mesh, Some(s.1)),
            ));
        }
        // TLS origination credentials (CA only) of its namespace's DestinationRules.
        for name in egress::sidecar_credential_names(&mesh, &w.key.namespace) {
            let cred = pilotfish::xds::credentials::Credential {
                cert_pem: String::new(),
                key_pem: pilotfish::ca::Secret::new(String::new()),
                ca_pem: Some(std::fs::read_to_string(certs.join("ca.pem")).unwrap()),
            };
            for s in pilotfish::xds::credentials::secrets(&name, &cred) {
                let s = message_json(&s);
                if !secrets.iter().any(|x: &Value| x["name"] == s["name"]) {
                    secrets.push(s);
                }
            }
        }
    }
    // Each route table, inline in a listener of its own.
    for (i, rc) in route_tables.iter().enumerate() {
        let rc = message_json(rc);
        listeners_json.push(json!({
        "name": format!("route-check-{i}"),
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 2 + i}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "route_check", "route_config": rc,
                "http_filters": [
                    {"name": "envoy.filters.http.fault", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
                    {"name": "envoy.filters.http.cors", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
                    {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}],
    }));
    }
    json!({
        "node": {"id": "validate", "cluster": "validate"},
        "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
        "static_resources": {"clusters": clusters, "listeners": listeners_json, "secrets": secrets},
    })
}

#[test]
fn envoy_accepts_every_golden_translation() {
    let root = Path::new(common::ROOT).join("tests/golden");
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let folder = entry.unwrap().path();
        let input = folder.join("in.yaml");
        if !input.exists() {
            continue;
        }
        let name = folder.file_name().unwrap().to_string_lossy().to_string();
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&bootstrap(&input, dir.path())).unwrap(),
        )
        .unwrap();
        let out = Command::new(common::envoy_bin())
            .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
            .arg(&path)
            .output()
            .expect("run envoy");
        assert!(
            out.status.success(),
            "Envoy rejects the translation of tests/golden/{name}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} golden folders checked");
}
