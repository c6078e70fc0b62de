//! Entries made from WorkloadGroups as istiod makes them, and the rules
//! that leave a registration out of the model.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::model::Registry;
use crate::model::istio::{ServiceEntrySpec, WorkloadEntrySpec, WorkloadGroupSpec};

fn mk_res(ns: &str, name: &str, spec: Spec) -> Arc<Resource> {
    Arc::new(Resource {
        name: name.into(),
        namespace: ns.into(),
        labels: Default::default(),
        annotations: Default::default(),
        created: None,
        spec,
        origin: Default::default(),
    })
}

fn mk_group(ns: &str, name: &str, yaml: &str) -> Arc<Resource> {
    let spec: WorkloadGroupSpec = serde_yaml_ng::from_str(yaml).expect("group");
    mk_res(ns, name, Spec::WorkloadGroup(spec))
}

fn mk_entry(ns: &str, name: &str, yaml: &str) -> Arc<Resource> {
    let spec: WorkloadEntrySpec = serde_yaml_ng::from_str(yaml).expect("entry");
    mk_res(ns, name, Spec::WorkloadEntry(spec))
}

fn mk_service(ns: &str, name: &str, yaml: &str) -> Arc<Resource> {
    let spec: ServiceEntrySpec = serde_yaml_ng::from_str(yaml).expect("service");
    mk_res(ns, name, Spec::ServiceEntry(spec))
}

fn mk_snapshot(resources: Vec<Arc<Resource>>) -> ConfigSnapshot {
    ConfigSnapshot::new(resources.into_iter().map(|r| (r.key(), r)).collect())
}

fn mk_request(ip: &str) -> Request {
    Request {
        namespace: "vm".into(),
        group: "billing".into(),
        ip: ip.into(),
        network: None,
        locality: None,
        labels: BTreeMap::new(),
    }
}

fn mk_registration(req: Request, sa: Option<&str>) -> Registration {
    Registration {
        request: req,
        service_account: sa.map(str::to_string),
        connections: 1,
        connected_at: "2026-01-02T03:04:05Z".parse().expect("time"),
        disconnected_at: None,
    }
}

const GROUP: &str = r#"
metadata:
  labels: {app: billing, tier: back}
  annotations: {pilotfish.io/app-address: 127.0.1.9}
template:
  labels: {app: template-app, version: v1}
  serviceAccount: billing-sa
  ports: {http: 8080}
  network: net-a
  locality: r1/z1
  weight: 3
"#;

fn registered(
    snapshot: &ConfigSnapshot,
    regs: &[(Request, Option<&str>)],
) -> (Merged, BTreeMap<WorkloadKey, Registration>) {
    let map: BTreeMap<WorkloadKey, Registration> = regs
        .iter()
        .map(|(r, sa)| (r.entry_key(), mk_registration(r.clone(), *sa)))
        .collect();
    (merge(snapshot, &map), map)
}

#[test]
fn entry_names_are_istios() {
    assert_eq!(mk_request("10.0.0.1").entry_key().name, "billing-10.0.0.1");
    let mut r = mk_request("fd00::1");
    r.network = Some("net-b".into());
    assert_eq!(r.entry_key().name, "billing-fd00--1-net-b");
    assert_eq!(r.entry_key().namespace, "vm");
    // Over 253 characters: the end is kept.
    r.group = "g".repeat(300);
    let name = r.entry_key().name;
    assert_eq!(name.len(), 253);
    assert!(name.ends_with("-fd00--1-net-b"), "{name}");
}

#[test]
fn the_entry_is_the_template_with_the_proxys_address() {
    let snap = mk_snapshot(vec![mk_group("vm", "billing", GROUP)]);
    let mut req = mk_request("10.0.0.1");
    req.labels.insert("tier".into(), "node-label".into());
    req.locality = Some("r2/z2/s2".into());
    let (m, _) = registered(&snap, &[(req, Some("billing-sa"))]);
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);
    let r = &m.entries[&WorkloadKey {
        namespace: "vm".into(),
        name: "billing-10.0.0.1".into(),
    }];
    let Spec::WorkloadEntry(s) = &r.spec else {
        panic!("not an entry")
    };
    assert_eq!(s.address.as_deref(), Some("10.0.0.1"));
    assert_eq!(s.service_account.as_deref(), Some("billing-sa"));
    assert_eq!(s.ports.get("http"), Some(&8080));
    assert_eq!(s.weight, Some(3));
    assert_eq!(s.network.as_deref(), Some("net-a"));
    // The node's locality wins over the template's.
    assert_eq!(s.locality.as_deref(), Some("r2/z2/s2"));
    // Labels: template < group metadata < node.
    let want: BTreeMap<String, String> = [
        ("app", "billing"),
        ("tier", "node-label"),
        ("version", "v1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(s.labels, want);
    assert_eq!(r.annotations[GROUP_ANNOTATION], "billing");
    assert_eq!(r.annotations[CONTROLLER_ANNOTATION], CONTROLLER);
    assert_eq!(
        r.annotations[CONNECTED_AT_ANNOTATION],
        "2026-01-02T03:04:05Z"
    );
    assert!(!r.annotations.contains_key(DISCONNECTED_AT_ANNOTATION));
    assert_eq!(r.annotations["pilotfish.io/app-address"], "127.0.1.9");
}

#[test]
fn a_disconnected_entry_carries_its_disconnect_time() {
    let snap = mk_snapshot(vec![mk_group("vm", "billing", GROUP)]);
    let req = mk_request("10.0.0.1");
    let mut reg = mk_registration(req.clone(), Some("billing-sa"));
    reg.disconnected_at = Some("2026-01-02T03:05:00Z".parse().expect("time"));
    let m = merge(&snap, &BTreeMap::from([(req.entry_key(), reg)]));
    let r = m
        .entries
        .values()
        .next()
        .expect("entry during the grace period");
    assert_eq!(
        r.annotations[DISCONNECTED_AT_ANNOTATION],
        "2026-01-02T03:05:00Z"
    );
    assert!(!r.annotations.contains_key(CONNECTED_AT_ANNOTATION));
}

#[test]
fn identity_comes_from_the_template_and_the_credential() {
    let g: WorkloadGroupSpec = serde_yaml_ng::from_str(GROUP).expect("group");
    assert_eq!(
        service_account(&g, Some("billing-sa")),
        Ok(Some("billing-sa".into()))
    );
    assert_eq!(
        service_account(&g, Some("other")),
        Err(Skipped::ServiceAccount {
            template: "billing-sa".into(),
            proxy: "other".into()
        })
    );
    // The unauthenticated port: the template's.
    assert_eq!(service_account(&g, None), Ok(Some("billing-sa".into())));
    // A template without one: the credential's (never another identity).
    let open: WorkloadGroupSpec =
        serde_yaml_ng::from_str("template: {ports: {http: 80}}").expect("group");
    assert_eq!(service_account(&open, Some("x")), Ok(Some("x".into())));
    assert_eq!(service_account(&open, None), Ok(None));
}

#[test]
fn user_entries_groups_and_templates_decide_what_is_in_force() {
    let req = mk_request("10.0.0.1");
    let key = req.entry_key();
    // No group: nothing (deleting a group removes its entries).
    let (m, _) = registered(&mk_snapshot(vec![]), &[(req.clone(), None)]);
    assert_eq!(m.skipped[&key], Skipped::NoGroup);
    assert!(m.entries.is_empty());
    // A WorkloadEntry from the config with the same name wins...
    let by_name = mk_snapshot(vec![
        mk_group("vm", "billing", GROUP),
        mk_entry("vm", "billing-10.0.0.1", "address: 10.9.9.9"),
    ]);
    let (m, _) = registered(&by_name, &[(req.clone(), Some("billing-sa"))]);
    assert_eq!(
        m.skipped[&key],
        Skipped::UserEntry("billing-10.0.0.1".into())
    );
    // ...and so does one with the same address in the namespace.
    let by_address = mk_snapshot(vec![
        mk_group("vm", "billing", GROUP),
        mk_entry("vm", "my-vm", "address: 10.0.0.1"),
        mk_entry("other", "elsewhere", "address: 10.0.0.2"),
    ]);
    let (m, _) = registered(
        &by_address,
        &[
            (req.clone(), Some("billing-sa")),
            (mk_request("10.0.0.2"), Some("billing-sa")),
        ],
    );
    assert_eq!(m.skipped[&key], Skipped::UserEntry("my-vm".into()));
    // Another namespace's entry with that address does not count.
    assert_eq!(m.entries.len(), 1);
    // A template whose service account changed after the proxy connected.
    let (m, _) = registered(
        &mk_snapshot(vec![mk_group("vm", "billing", GROUP)]),
        &[(req, Some("old-sa"))],
    );
    assert!(matches!(m.skipped[&key], Skipped::ServiceAccount { .. }));
}

#[test]
fn registered_entries_are_selected_like_entries_from_files() {
    let svc = mk_service(
        "vm",
        "billing",
        "hosts: [billing]\nports: [{number: 8080, name: http}]\nworkloadSelector: {labels: {app: billing}}\nresolution: STATIC",
    );
    let snap = mk_snapshot(vec![mk_group("vm", "billing", GROUP), svc]);
    let (m, _) = registered(&snap, &[(mk_request("10.0.0.1"), Some("billing-sa"))]);
    let model = with_entries(&snap, &m.entries);
    let reg = Registry::build(&model);
    let svc = &reg.services["billing.vm.svc.cluster.local"];
    assert_eq!(svc.endpoints.len(), 1);
    assert_eq!(svc.endpoints[0].address, "10.0.0.1");
    let w = &reg.workloads[&mk_request("10.0.0.1").entry_key()];
    assert_eq!(w.app_address, "127.0.1.9");
    assert_eq!(w.service_account.as_deref(), Some("billing-sa"));
    assert_eq!(reg.services_of(w).count(), 1);
    // The source snapshot is untouched.
    assert!(snap.workload_entries().next().is_none());
}
