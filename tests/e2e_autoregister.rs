//! WorkloadGroup auto-registration with real Envoy: a "VM" sidecar
//! bootstrapped for a group (`pilotfish bootstrap --workload-group`)
//! connects, pilotfish registers its WorkloadEntry from the group's
//! template, a ServiceEntry selecting the group's labels sends traffic from
//! productpage's sidecar to the app behind it (over mTLS, with the
//! template's identity); a credential for another service account is
//! refused; a reconnect within the grace period keeps the entry, and once
//! the Envoy is gone for longer, its endpoint leaves productpage's Envoy;
//! deleting the group removes a registered entry at once.

mod common;

use std::time::{Duration, Instant};

use common::{Mesh, metric, next_net, wait_until};
use serde_json::Value;

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 242;
/// The client: productpage's sidecar.
const CLIENT: u8 = 11;
/// The VM's sidecar (127.N.0.40) and app (127.N.1.40).
const VM: u8 = 40;
/// A VM whose credential names another service account.
const IMPOSTOR: u8 = 41;
const GRACE: Duration = Duration::from_secs(4);
const BILLING_URL: &str = "http://billing:9080/bill/1";

fn group_yaml(net: u8) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata:
  name: billing
  namespace: default
spec:
  metadata:
    labels: {{app: billing, security.istio.io/tlsMode: istio}}
    annotations: {{pilotfish.io/app-address: 127.{net}.1.{VM}}}
  template:
    serviceAccount: billing
    ports: {{http: 9080}}
"#
    )
}

const SERVICE: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: billing
  namespace: default
spec:
  hosts: [billing.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  resolution: STATIC
  workloadSelector:
    labels: {app: billing}
"#;

/// Starts the VM's sidecar from a bootstrap for the group (over delta xDS,
/// while productpage's speaks SotW).
fn start_vm(mesh: &mut Mesh, host: u8, extra: &[&str]) {
    let address = format!("127.{}.0.{host}", mesh.net);
    let config = mesh.config.display().to_string();
    let mut args = vec![
        "--workload-group",
        "default/billing",
        "--address",
        &address,
        "--delta",
    ];
    if extra.is_empty() {
        args.extend(["--config-dir", &config]);
    }
    args.extend(extra);
    mesh.start_envoy_bootstrap(&format!("vm-{host}"), host, &args, |_| {});
}

/// pilotfish's view of the registrations.
fn registrations(mesh: &Mesh) -> Vec<Value> {
    mesh.get_json(&mesh.admin_url("/debug/autoregistration"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry_name(mesh: &Mesh, host: u8) -> String {
    format!("billing-127.{}.0.{host}", mesh.net)
}

/// Whether productpage's Envoy has the VM as a billing endpoint.
fn client_has_vm_endpoint(mesh: &Mesh) -> bool {
    let clusters = mesh.envoy_admin(CLIENT, "/clusters");
    let vm = format!(
        "outbound|9080||billing.default.svc.cluster.local::127.{}.0.{VM}:9080::",
        mesh.net
    );
    clusters.lines().any(|l| l.starts_with(&vm))
}

#[test]
fn a_group_member_registers_serves_and_leaves_after_the_grace_period() {
    // bookinfo's config (productpage is the client), restarted with a
    // short grace period and the group.
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    mesh.stop_pilotfish();
    mesh.serve_args = vec![
        "--workload-entry-grace-period".into(),
        format!("{}s", GRACE.as_secs()),
    ];
    mesh.write("billing.yaml", &group_yaml(mesh.net));
    mesh.write("billing-service.yaml", SERVICE);
    mesh.start_pilotfish();
    mesh.start_envoy("productpage-v1", CLIENT);
    mesh.wait_envoy_ready(CLIENT);
    mesh.start_app("billing", "v1", VM, &[]);

    // The VM connects: its entry is registered from the template.
    start_vm(&mut mesh, VM, &[]);
    mesh.wait_envoy_ready(VM);
    let name = entry_name(&mesh, VM);
    let regs = registrations(&mesh);
    assert_eq!(regs.len(), 1, "{regs:?}");
    let r = &regs[0];
    assert_eq!(r["name"], name.as_str());
    assert_eq!(r["group"], "billing");
    assert_eq!(r["connections"], 1);
    assert_eq!(r["inForce"], true);
    let entry = &r["entry"];
    assert_eq!(entry["spec"]["address"], format!("127.{}.0.{VM}", mesh.net));
    assert_eq!(entry["spec"]["serviceAccount"], "billing");
    assert_eq!(entry["spec"]["labels"]["app"], "billing");
    assert_eq!(
        entry["annotations"]["istio.io/autoRegistrationGroup"],
        "billing"
    );
    assert_eq!(
        entry["annotations"]["istio.io/workloadController"],
        "pilotfish"
    );
    assert!(
        entry["annotations"]["istio.io/connectedAt"].is_string(),
        "{entry}"
    );
    // proxy-status's source names the entry and the group.
    let syncz = mesh.get_json(&mesh.admin_url("/debug/syncz"));
    let vm = syncz
        .as_array()
        .and_then(|a| a.iter().find(|p| p["group"] == "default/billing"))
        .cloned()
        .unwrap_or_else(|| panic!("no registered proxy in {syncz}"));
    assert_eq!(vm["workload"], format!("default/{name}"));
    assert_eq!(vm["delta"], true);
    // Nothing was written into the config directory.
    for f in std::fs::read_dir(&mesh.config).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        assert!(
            !text.contains(&name),
            "the entry was written to the config dir"
        );
    }

    // Traffic from productpage's sidecar reaches the app behind the VM's
    // sidecar, over mTLS with the template's identity.
    wait_until("billing reachable through productpage's sidecar", || {
        mesh.via_sidecar(CLIENT, BILLING_URL, &[]).status == 200
    });
    let x = mesh.via_sidecar(CLIENT, BILLING_URL, &[]);
    let body: Value = serde_json::from_str(&x.body).expect("app JSON");
    assert_eq!(body["service"], "billing");
    let certs = mesh.envoy_admin(VM, "/certs");
    assert!(
        certs.contains("spiffe://cluster.local/ns/default/sa/billing"),
        "VM certificate: {certs}"
    );
    let handshakes = mesh.envoy_stat(
        CLIENT,
        "cluster.outbound|9080||billing.default.svc.cluster.local.ssl.handshake",
    );
    assert!(handshakes > 0, "no mTLS from productpage to the VM");

    // A credential for another service account may not register.
    start_vm(&mut mesh, IMPOSTOR, &["--service-account", "intruder"]);
    wait_until("the impostor refused", || {
        mesh.log().contains("auto-registration refused")
            && mesh.log().contains(&entry_name(&mesh, IMPOSTOR))
    });
    assert!(
        registrations(&mesh)
            .iter()
            .all(|r| r["name"] != entry_name(&mesh, IMPOSTOR).as_str()),
        "the impostor got an entry"
    );
    mesh.kill_envoy(IMPOSTOR);

    // A restart within the grace period keeps the entry (and the endpoint).
    mesh.kill_envoy(VM);
    wait_until("the VM seen disconnected", || {
        registrations(&mesh)
            .first()
            .is_some_and(|r| r["connections"] == 0 && r["disconnectedAt"].is_string())
    });
    assert!(
        client_has_vm_endpoint(&mesh),
        "gone during the grace period"
    );
    start_vm(&mut mesh, VM, &[]);
    mesh.wait_envoy_ready(VM);
    std::thread::sleep(GRACE + Duration::from_secs(1));
    let regs = registrations(&mesh);
    assert_eq!(regs[0]["connections"], 1, "{regs:?}");
    assert!(client_has_vm_endpoint(&mesh), "a reconnect keeps the entry");
    assert_eq!(mesh.via_sidecar(CLIENT, BILLING_URL, &[]).status, 200);

    // Stopped for good: the endpoint leaves productpage's Envoy after the
    // grace period, not before.
    mesh.kill_envoy(VM);
    let stopped = Instant::now();
    wait_until("the VM's endpoint removed", || {
        !client_has_vm_endpoint(&mesh)
    });
    let after = stopped.elapsed();
    assert!(
        after >= GRACE - Duration::from_millis(500),
        "removed after {after:?}"
    );
    assert!(
        after < GRACE + Duration::from_secs(10),
        "removed after {after:?}"
    );
    assert!(registrations(&mesh).is_empty());
    assert_eq!(mesh.via_sidecar(CLIENT, BILLING_URL, &[]).status, 503);

    // Back again, then the group deleted: its entry goes at once.
    start_vm(&mut mesh, VM, &[]);
    mesh.wait_envoy_ready(VM);
    wait_until("the VM's endpoint back", || client_has_vm_endpoint(&mesh));
    mesh.remove("billing.yaml");
    wait_until("the entry removed with its group", || {
        !client_has_vm_endpoint(&mesh)
    });
    let regs = registrations(&mesh);
    assert_eq!(regs[0]["inForce"], false, "{regs:?}");
    assert_eq!(regs[0]["skipped"], "the WorkloadGroup no longer exists");

    // Counted with istiod's names: two registrations, one reconnect, two
    // disconnects, one deletion after the grace period, and the impostor.
    let m = mesh.metrics();
    let count = |name: &str| metric(&m, name).unwrap_or_else(|| panic!("{name} in {m}"));
    assert_eq!(count("auto_registration_success_total"), 2.0);
    assert_eq!(count("auto_registration_updates_total"), 1.0);
    assert_eq!(count("auto_registration_unregister_total"), 2.0);
    assert_eq!(count("auto_registration_deletes_total"), 1.0);
    assert!(count("auto_registration_errors_total") >= 1.0);
}
