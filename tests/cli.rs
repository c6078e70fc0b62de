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
