use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::config::parse_file;

fn mk_config(yaml: &str) -> (ConfigSnapshot, Registry) {
    let parsed = parse_file(std::path::Path::new("t.yaml"), yaml);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let mut config = ConfigSnapshot::default();
    for r in parsed.resources {
        config.resources.insert(r.key(), Arc::new(r));
    }
    let registry = Registry::build(&config);
    (config, registry)
}

fn mk_labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mk_sidecar(ns: &str, name: &str, selector: Option<&str>, hosts: &[&str]) -> String {
    let selector = selector
        .map(|app| format!("  workloadSelector:\n    labels: {{app: {app}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}  egress:\n  - hosts: [{}]\n---\n",
        hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn mk_service(ns: &str, name: &str, host: &str, export_to: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 80, name: http}}, {{number: 9000, name: tcp}}]\n  resolution: STATIC\n  endpoints: [{{address: 10.0.0.1}}]\n{export_to}---\n"
    )
}

fn chosen(c: &SidecarChoice<'_>) -> Option<String> {
    c.sidecar
        .map(|(r, _)| format!("{}/{}", r.namespace, r.name))
}

#[test]
fn exported_to_follows_istio() {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(exported_to(&[], "a", "b"));
    assert!(exported_to(&v(&["*"]), "a", "b"));
    assert!(exported_to(&v(&["."]), "a", "a"));
    assert!(!exported_to(&v(&["."]), "a", "b"));
    assert!(!exported_to(&v(&["~"]), "a", "a"));
    assert!(exported_to(&v(&["b", "c"]), "a", "c"));
    assert!(!exported_to(&v(&["b", "c"]), "a", "a"));
}

#[test]
fn subset_of_is_istios() {
    assert!(subset_of("a.example.com", "*"));
    assert!(subset_of("a.example.com", "*.example.com"));
    assert!(!subset_of("example.com", "*.example.com"));
    assert!(subset_of("*.a.example.com", "*.example.com"));
    assert!(!subset_of("*.example.com", "a.example.com"));
    assert!(subset_of("A.example.com", "a.example.com"));
    assert!(!subset_of("b.example.com", "a.example.com"));
}

#[test]
fn sidecar_selection_prefers_selector_then_namespace_then_root() {
    let yaml = [
        mk_sidecar("istio-system", "default", None, &["./*"]),
        mk_sidecar("prod", "ns-wide", None, &["./*"]),
        mk_sidecar("prod", "for-web", Some("web"), &["./*"]),
        mk_sidecar("istio-system", "selecting", Some("web"), &["./*"]),
    ]
    .concat();
    let (config, _) = mk_config(&yaml);
    let web = mk_labels(&[("app", "web")]);
    let db = mk_labels(&[("app", "db")]);
    let pick = |ns: &str, l: &BTreeMap<String, String>| chosen(&select_sidecar(&config, ns, l));
    assert_eq!(pick("prod", &web).as_deref(), Some("prod/for-web"));
    assert_eq!(pick("prod", &db).as_deref(), Some("prod/ns-wide"));
    // Other namespaces fall back to the root default; a selector in the
    // root namespace only selects root-namespace workloads.
    assert_eq!(pick("dev", &web).as_deref(), Some("istio-system/default"));
    assert_eq!(
        pick("istio-system", &web).as_deref(),
        Some("istio-system/selecting")
    );
    let (empty, _) = mk_config("");
    assert!(select_sidecar(&empty, "prod", &web).sidecar.is_none());
}

#[test]
fn sidecar_conflicts_pick_the_first_by_name_and_are_reported() {
    let yaml = [
        mk_sidecar("prod", "b", Some("web"), &["./*"]),
        mk_sidecar("prod", "a", Some("web"), &["./*"]),
        mk_sidecar("prod", "y", None, &["./*"]),
        mk_sidecar("prod", "x", None, &["./*"]),
    ]
    .concat();
    let (config, _) = mk_config(&yaml);
    let c = select_sidecar(&config, "prod", &mk_labels(&[("app", "web")]));
    assert_eq!(chosen(&c).as_deref(), Some("prod/a"));
    let msg = c.conflict.expect("conflict reported");
    assert!(msg.contains("prod/a, prod/b"), "{msg}");
    let c = select_sidecar(&config, "prod", &mk_labels(&[("app", "db")]));
    assert_eq!(chosen(&c).as_deref(), Some("prod/x"));
    assert!(c.conflict.is_some());
    let single = mk_config(&mk_sidecar("prod", "only", None, &["./*"])).0;
    assert!(
        select_sidecar(&single, "prod", &BTreeMap::new())
            .conflict
            .is_none()
    );
}

fn mk_mesh() -> String {
    [
        mk_service("prod", "api", "api.prod.svc.cluster.local", ""),
        mk_service("prod", "db", "db.prod.svc.cluster.local", ""),
        mk_service("dev", "api", "api.dev.svc.cluster.local", ""),
        mk_service("istio-system", "ext", "ext.example.com", ""),
        mk_service(
            "shared",
            "private",
            "private.shared.svc.cluster.local",
            "  exportTo: [\".\"]\n",
        ),
        mk_service(
            "shared",
            "to-prod",
            "to-prod.example.com",
            "  exportTo: [prod]\n",
        ),
        mk_service(
            "shared",
            "hidden",
            "hidden.example.com",
            "  exportTo: [\"~\"]\n",
        ),
    ]
    .concat()
}

fn routed(scope: &Scope<'_>) -> Vec<String> {
    let mut v: Vec<String> = scope.routed.keys().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn without_a_sidecar_every_exported_service_is_visible() {
    let (config, registry) = mk_config(&mk_mesh());
    let prod = Scope::default_for(&config, &registry, "prod");
    assert_eq!(
        routed(&prod),
        [
            "api.dev.svc.cluster.local",
            "api.prod.svc.cluster.local",
            "db.prod.svc.cluster.local",
            "ext.example.com",
            "to-prod.example.com"
        ]
    );
    assert!(!prod.everything);
    let shared = Scope::default_for(&config, &registry, "shared");
    assert!(routed(&shared).contains(&"private.shared.svc.cluster.local".to_string()));
    assert!(!routed(&shared).contains(&"hidden.example.com".to_string()));
}

#[test]
fn egress_hosts_import_by_namespace_and_name() {
    let yaml = mk_mesh() + &mk_sidecar("prod", "s", None, &["./*", "istio-system/*.example.com"]);
    let (config, registry) = mk_config(&yaml);
    let choice = select_sidecar(&config, "prod", &BTreeMap::new());
    let scope = Scope::new(&config, &registry, "prod", choice.sidecar);
    assert_eq!(
        routed(&scope),
        [
            "api.prod.svc.cluster.local",
            "db.prod.svc.cluster.local",
            "ext.example.com"
        ]
    );
    assert_eq!(scope.key.sidecar.as_deref(), Some("prod/s"));

    // `*/host` and a namespace list that decides alone.
    let yaml = mk_mesh()
        + &mk_sidecar(
            "prod",
            "s",
            None,
            &["prod/db.prod.svc.cluster.local", "*/*.svc.cluster.local"],
        );
    let (config, registry) = mk_config(&yaml);
    let choice = select_sidecar(&config, "prod", &BTreeMap::new());
    let scope = Scope::new(&config, &registry, "prod", choice.sidecar);
    assert_eq!(
        routed(&scope),
        ["api.dev.svc.cluster.local", "db.prod.svc.cluster.local"]
    );

    // `~/*` imports nothing.
    let yaml = mk_mesh() + &mk_sidecar("prod", "s", None, &["~/*"]);
    let (config, registry) = mk_config(&yaml);
    let choice = select_sidecar(&config, "prod", &BTreeMap::new());
    assert!(routed(&Scope::new(&config, &registry, "prod", choice.sidecar)).is_empty());
}

#[test]
fn root_default_sidecar_resolves_dot_to_the_workload_namespace() {
    let yaml = mk_mesh() + &mk_sidecar("istio-system", "default", None, &["./*"]);
    let (config, registry) = mk_config(&yaml);
    let choice = select_sidecar(&config, "dev", &BTreeMap::new());
    let scope = Scope::new(&config, &registry, "dev", choice.sidecar);
    assert_eq!(routed(&scope), ["api.dev.svc.cluster.local"]);
}

#[test]
fn egress_port_listeners_import_only_their_port() {
    let yaml = mk_mesh()
        + "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: prod}\nspec:\n  egress:\n  - port: {number: 9000, protocol: TCP, name: tcp}\n    hosts: [\"./db.prod.svc.cluster.local\"]\n  - hosts: [\"./api.prod.svc.cluster.local\"]\n";
    let (config, registry) = mk_config(&yaml);
    let choice = select_sidecar(&config, "prod", &BTreeMap::new());
    let scope = Scope::new(&config, &registry, "prod", choice.sidecar);
    assert_eq!(
        scope.routed["db.prod.svc.cluster.local"],
        Ports::Only([9000].into())
    );
    assert_eq!(scope.routed["api.prod.svc.cluster.local"], Ports::All);
}

#[test]
fn imported_virtual_services_make_their_destinations_reachable() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: prod}\nspec:\n  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api.dev.svc.cluster.local}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: private, namespace: dev}\nspec:\n  hosts: [api.prod.svc.cluster.local]\n  exportTo: [\".\"]\n  http:\n  - route:\n    - destination: {host: db.prod.svc.cluster.local}\n---\n";
    let yaml = mk_mesh() + vs + &mk_sidecar("prod", "s", None, &["./api.prod.svc.cluster.local"]);
    let (config, registry) = mk_config(&yaml);
    let choice = select_sidecar(&config, "prod", &BTreeMap::new());
    let scope = Scope::new(&config, &registry, "prod", choice.sidecar);
    assert_eq!(routed(&scope), ["api.prod.svc.cluster.local"]);
    assert!(scope.reachable.contains_key("api.dev.svc.cluster.local"));
    assert!(!scope.reachable.contains_key("db.prod.svc.cluster.local"));
    assert!(scope.virtual_services.contains(&("prod", "api")));
    // dev's VirtualService is exported to dev only.
    assert!(!scope.virtual_services.contains(&("dev", "private")));
    let dev = Scope::default_for(&config, &registry, "dev");
    assert!(dev.virtual_services.contains(&("dev", "private")));
}

#[test]
fn destination_rules_are_looked_up_client_then_service_then_root() {
    let dr = |ns: &str, name: &str, host: &str, export: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  host: \"{host}\"\n{export}---\n"
        )
    };
    let yaml = [
        mk_mesh(),
        dr("istio-system", "root", "*.svc.cluster.local", ""),
        dr("prod", "svc", "api.prod.svc.cluster.local", ""),
        dr(
            "prod",
            "private",
            "db.prod.svc.cluster.local",
            "  exportTo: [\".\"]\n",
        ),
        dr("dev", "client", "api.prod.svc.cluster.local", ""),
        dr("other", "elsewhere", "db.prod.svc.cluster.local", ""),
    ]
    .concat();
    let (config, _) = mk_config(&yaml);
    let name = |host: &str, client: &str| {
        destination_rule(&config, host, "prod", client)
            .map(|(r, _)| format!("{}/{}", r.namespace, r.name))
    };
    assert_eq!(
        name("api.prod.svc.cluster.local", "dev").as_deref(),
        Some("dev/client")
    );
    assert_eq!(
        name("api.prod.svc.cluster.local", "web").as_deref(),
        Some("prod/svc")
    );
    assert_eq!(
        name("db.prod.svc.cluster.local", "prod").as_deref(),
        Some("prod/private")
    );
    // Not exported to web; a rule in an unrelated namespace never applies.
    assert_eq!(
        name("db.prod.svc.cluster.local", "web").as_deref(),
        Some("istio-system/root")
    );
}
