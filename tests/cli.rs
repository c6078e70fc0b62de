//! The CLI as a user meets it: the real binary, real Envoy validating output.

mod common;

use std::process::Command;

fn pilotfish(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .args(args)
        .output()
        .expect("run pilotfish")
}

#[test]
fn serve_with_missing_config_dir_fails_clearly() {
    let out = pilotfish(&["serve", "--config-dir", "/nonexistent/pilotfish-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/pilotfish-config")
            && err.contains("cannot read config directory"),
        "{err}"
    );
}

#[test]
fn bootstrap_is_accepted_by_envoy_in_validate_mode() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for delta in [false, true] {
        let mut args = vec![
            "bootstrap",
            "--workload",
            "reviews-v1",
            "--namespace",
            "default",
            "--state-dir",
            state.to_str().unwrap(),
        ];
        if delta {
            args.push("--delta");
        }
        let out = pilotfish(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("sidecar~0.0.0.0~reviews-v1.default~default.svc.cluster.local"),
            "{text}"
        );
        let path = dir.path().join(format!("b-{delta}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let envoy = Command::new(common::envoy_bin())
            .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
            .arg(&path)
            .output()
            .expect("run envoy --mode validate");
        assert!(
            envoy.status.success(),
            "envoy rejected the bootstrap:\n{}\n{text}",
            String::from_utf8_lossy(&envoy.stderr)
        );
    }
}

#[test]
fn bootstrap_checks_the_workload_exists_and_uses_its_address() {
    let mesh = format!("{}/examples/bookinfo/mesh", common::ROOT);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let out = pilotfish(&[
        "bootstrap",
        "--workload",
        "reviews-v2",
        "--state-dir",
        state,
        "--config-dir",
        &mesh,
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        b["node"]["id"],
        "sidecar~127.0.0.14~reviews-v2.default~default.svc.cluster.local"
    );

    let out = pilotfish(&[
        "bootstrap",
        "--workload",
        "nope",
        "--state-dir",
        state,
        "--config-dir",
        &mesh,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no WorkloadEntry default/nope") && err.contains("default/reviews-v2"),
        "{err}"
    );
}

#[test]
fn bootstrap_for_a_workload_group_names_the_group_and_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("group.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: billing, namespace: vm}\n\
         spec:\n  metadata: {labels: {app: billing}}\n  template: {serviceAccount: billing-sa, locality: r1/z1}\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let base = [
        "bootstrap",
        "--workload-group",
        "vm/billing",
        "--address",
        "10.1.2.3",
        "--state-dir",
        state.to_str().unwrap(),
        "--config-dir",
        config.to_str().unwrap(),
    ];
    let out = pilotfish(&[&base[..], &["-o", "json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        b["node"]["id"],
        "sidecar~10.1.2.3~billing-10.1.2.3.vm~vm.svc.cluster.local"
    );
    let meta = &b["node"]["metadata"];
    assert_eq!(meta["AUTO_REGISTER_GROUP"], "billing");
    assert_eq!(meta["INSTANCE_IPS"], "10.1.2.3");
    assert_eq!(meta["NAMESPACE"], "vm");
    assert_eq!(b["node"]["locality"]["region"], "r1");
    // The credential names the template's service account and no workload.
    let bearer =
        b["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"][0]["value"]
            .as_str()
            .unwrap();
    let payload = bearer
        .trim_start_matches("Bearer ")
        .split('.')
        .next()
        .unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["namespace"], "vm");
    assert_eq!(claims["service_account"], "billing-sa");
    assert_eq!(claims["workload"], "");
    // Envoy takes it.
    let path = dir.path().join("group.json");
    std::fs::write(&path, &out.stdout).unwrap();
    let envoy = Command::new(common::envoy_bin())
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy --mode validate");
    assert!(
        envoy.status.success(),
        "envoy rejected the bootstrap:\n{}",
        String::from_utf8_lossy(&envoy.stderr)
    );

    // Another service account than the template's, a missing group, no address.
    let out = pilotfish(&[&base[..], &["--service-account", "other"]].concat());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("billing-sa") && err.contains("other"), "{err}");
    let mut missing = base.to_vec();
    missing[2] = "vm/nope";
    let out = pilotfish(&missing);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no WorkloadGroup vm/nope") && err.contains("vm/billing"),
        "{err}"
    );
    let out = pilotfish(&["bootstrap", "--workload-group", "vm/billing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--address"));
}

#[test]
fn bad_flags_are_rejected_with_usage() {
    let out = pilotfish(&["serve", "--config-dir", ".", "--debounce", "soon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--debounce"));
    let out = pilotfish(&[
        "bootstrap",
        "--workload",
        "x",
        "--xds-address",
        "nohostport",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected HOST:PORT"));
}

#[test]
fn validate_accepts_istio_samples_and_reports_problems() {
    let samples = format!(
        "{}/../shared/reference/istio-samples/bookinfo",
        common::ROOT
    );
    let examples = format!("{}/examples/bookinfo", common::ROOT);
    let out = pilotfish(&["validate", &examples, &samples]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec: {host: r}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n\
         spec: {hosts: [a], http: [{route: [{destination: {host: a}, weight: x}]}]}\n",
    )
    .unwrap();
    let out = pilotfish(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(
            "bad.yaml: document 2 (VirtualService default/x): spec.http[0].route[0].weight"
        ),
        "{text}"
    );

    let out = pilotfish(&["validate", "-o", "json", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["document"], 2);
    assert_eq!(v[0]["path"], "spec.http[0].route[0].weight");

    let mut child = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .args(["validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec: {hosts: [a.b], ports: [{number: 0, name: http}]}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("<stdin>: document 1 (ServiceEntry default/s): spec.ports[0].number")
    );
}

#[test]
fn validate_reports_istios_warnings_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pa.yaml");
    std::fs::write(
        &file,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\n\
         spec: {selector: {matchLabels: {}}, mtls: {mode: STRICT}}\n",
    )
    .unwrap();
    let out = pilotfish(&["validate", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("warning: ")
            && l.contains("PeerAuthentication default/p")
            && l.contains("spec.selector.matchLabels")),
        "{text}"
    );
}

#[test]
fn analyze_bookinfo_warns_about_subsets_without_workloads_and_exits_0() {
    let ex = format!("{}/examples/bookinfo", common::ROOT);
    let routing = |f: &str| format!("{ex}/routing/{f}");
    let out = pilotfish(&[
        "analyze",
        &format!("{ex}/mesh"),
        &routing("destination-rule-all.yaml"),
        &routing("virtual-service-all-v1.yaml"),
        &routing("bookinfo-gateway.yaml"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // bookinfo's mesh/ has ratings v1 and details v1 only: Istio's sample
    // DestinationRules name subsets no workload carries.
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "{text}");
    for l in &lines {
        assert!(
            l.starts_with("Warning [IST0173] (DestinationRule default/"),
            "{l}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DestinationRule default/ratings")
                && l.contains("destination-rule-all.yaml: document 3: spec.subsets[1]")
                && l.contains("\"v2\"")),
        "{text}"
    );
    // A second VirtualService for reviews under another name: a conflict.
    let dir = tempfile::tempdir().unwrap();
    let second = std::fs::read_to_string(routing("virtual-service-reviews-test-v2.yaml"))
        .unwrap()
        .replace("name: reviews\n", "name: reviews-jason\n");
    std::fs::write(dir.path().join("jason.yaml"), second).unwrap();
    let out = pilotfish(&[
        "analyze",
        &format!("{ex}/mesh"),
        &routing("destination-rule-all.yaml"),
        &routing("virtual-service-all-v1.yaml"),
        dir.path().to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Error [IST0109] (VirtualService default/reviews)"),
        "{text}"
    );
}

#[test]
fn analyze_reports_every_code_on_a_broken_config() {
    let out = pilotfish(&[
        "analyze",
        "-o",
        "json",
        &format!("{}/examples/bookinfo/mesh", common::ROOT),
        &format!("{}/tests/analyze/broken", common::ROOT),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(String, String, String)> = v
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (s("code"), s("resource"), s("path"))
        })
        .collect();
    let has = |code: &str, resource: &str, path: &str| {
        assert!(
            found
                .iter()
                .any(|(c, r, p)| c == code && r == resource && p == path),
            "no {code} {resource} {path} in {found:#?}"
        );
    };
    has(
        "IST0101",
        "VirtualService default/reviews",
        "spec.http[0].route[0].destination.subset",
    );
    has(
        "IST0101",
        "VirtualService default/reviews",
        "spec.gateways[1]",
    );
    has(
        "IST0101",
        "VirtualService default/reviews-canary",
        "spec.http[0].route[0].destination.host",
    );
    has(
        "IST0101",
        "AuthorizationPolicy default/ratings",
        "spec.rules[0].from[0].source.namespaces[0]",
    );
    has(
        "IST0106",
        "VirtualService default/details",
        "spec.http[0].route[0].weight",
    );
    has("IST0109", "VirtualService default/reviews", "spec.hosts[0]");
    has(
        "IST0109",
        "VirtualService default/reviews-canary",
        "spec.hosts[0]",
    );
    has(
        "IST0113",
        "DestinationRule default/ratings",
        "spec.trafficPolicy.tls.mode",
    );
    has("IST0130", "VirtualService default/reviews", "spec.http[1]");
    has(
        "IST0131",
        "VirtualService default/reviews-canary",
        "spec.http[1].match[0]",
    );
    has(
        "IST0173",
        "DestinationRule default/reviews",
        "spec.subsets[2]",
    );
    for m in &v {
        let level = m["level"].as_str().unwrap();
        let expected = match m["code"].as_str().unwrap() {
            "IST0130" | "IST0173" => "Warning",
            "IST0131" => "Info",
            _ => "Error",
        };
        assert_eq!(level, expected, "{m}");
        assert!(m["file"].as_str().unwrap().ends_with(".yaml"), "{m}");
        assert!(m["document"].as_u64().unwrap() >= 1, "{m}");
    }
    assert_eq!(found.len(), 11, "{found:#?}");
}
