//! The Kubernetes manifests (`manifests/`) and CRDs (`crds/`) as a cluster
//! would take them: every document is checked against the Kubernetes OpenAPI
//! schemas (the `kubernetes-validate` package that `make tools` installs into
//! `.tools`), the RBAC against what `src/kube` actually watches, and the
//! args the manifests pass to `pilotfish` against the real binary.

mod common;
mod kube_api;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use kube_api::FakeApi;
use serde::Deserialize;
use serde_json::json;
use serde_yaml_ng::Value;

/// The Kubernetes version whose schemas the manifests must match: the oldest
/// one we claim to run on (Deployment, PodDisruptionBudget policy/v1,
/// EndpointSlice discovery.k8s.io/v1 and CRD apiextensions v1 are all GA).
const KUBERNETES_VERSION: &str = "1.33.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> PathBuf {
    let p = root().join(".tools/bin/kubernetes-validate");
    assert!(
        p.exists(),
        "{} is missing: run `make tools` (installs PyPI's kubernetes-validate into .tools)",
        p.display()
    );
    p
}

/// `*.yaml` below `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Runs the schema check; Ok with its output when every document passed.
/// A kind it has no schema for is only a warning to the tool: a failure here.
fn validate(files: &[PathBuf]) -> Result<String, String> {
    let out = Command::new(validator())
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && !text.contains("WARN") && !text.contains("ERROR") {
        Ok(text)
    } else {
        Err(text)
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn all_documents() -> Vec<(PathBuf, Value)> {
    yaml_files(&root().join("manifests"))
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

fn find<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in manifests/"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_manifest_and_crd_matches_the_kubernetes_schemas() {
    let manifests = yaml_files(&root().join("manifests"));
    let crds = yaml_files(&root().join("crds"));
    assert_eq!(crds.len(), 11, "one CRD per Istio kind: {crds:?}");
    assert!(manifests.len() >= 6, "{manifests:?}");
    let files: Vec<PathBuf> = manifests.into_iter().chain(crds).collect();
    if let Err(out) = validate(&files) {
        panic!(
            "manifests or CRDs do not match the Kubernetes {KUBERNETES_VERSION} schemas:\n{out}"
        );
    }
}

/// The check above is only worth something if it fails on mistakes.
#[test]
fn the_schema_check_rejects_typos_and_unknown_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(root().join("manifests/30-deployment.yaml")).unwrap();
    let cases = [
        (
            "readinessProbe:",
            "readinesProbe:",
            "'readinesProbe' was unexpected",
        ),
        (
            "replicas: 2",
            "replicas: two",
            "'two' is not of type 'integer'",
        ),
        (
            "kind: Deployment",
            "kind: Deploymnet",
            "Couldn't find schema",
        ),
    ];
    for (from, to, expect) in cases {
        assert!(good.contains(from), "{from:?} not in the Deployment");
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        match validate(&[path]) {
            Ok(out) => panic!("{from} -> {to} passed the schema check:\n{out}"),
            Err(out) => assert!(out.contains(expect), "{from} -> {to}: {out}"),
        }
    }
}

/// The ClusterRole grants list and watch (all a kube-runtime watcher does)
/// on exactly the types the Kubernetes source watches; the Role only the
/// Lease verbs the leader elector uses.
#[test]
fn rbac_grants_exactly_what_the_code_uses() {
    let docs = all_documents();
    let watched: BTreeSet<(String, String)> = pilotfish::kube::index::Watched::all()
        .into_iter()
        .map(|w| {
            let ar = w.api_resource();
            (ar.group, ar.plural)
        })
        .collect();
    let role = find(&docs, "ClusterRole", "pilotfish");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        assert_eq!(strs(&rule["verbs"]), ["list", "watch"], "{rule:?}");
        assert!(rule.get("nonResourceURLs").is_none(), "{rule:?}");
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                assert!(granted.insert((g.clone(), r)), "granted twice: {rule:?}");
            }
        }
    }
    assert_eq!(
        granted, watched,
        "ClusterRole pilotfish vs src/kube's watched types"
    );

    let lease = find(&docs, "Role", "pilotfish-leader-election");
    let mut verbs = BTreeSet::new();
    for rule in lease["rules"].as_sequence().expect("rules") {
        assert_eq!(
            strs(&rule["apiGroups"]),
            ["coordination.k8s.io"],
            "{rule:?}"
        );
        assert_eq!(strs(&rule["resources"]), ["leases"], "{rule:?}");
        verbs.extend(strs(&rule["verbs"]));
    }
    let expected: BTreeSet<String> = pilotfish::kube::leader::LEASE_VERBS
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(verbs, expected, "Role pilotfish-leader-election");

    // Nothing else in manifests/ grants pilotfish (or anyone) more.
    let roles: Vec<String> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .map(|(_, d)| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            "ClusterRole/pilotfish",
            "Role/pilotfish-leader-election",
            "ClusterRole/pilotfish-tokenreview",
            "ClusterRole/pilotfish-secrets",
            "Role/pilotfish-ca",
            "ClusterRole/pilotfish-status",
            "ClusterRole/pilotfish-webhook-config",
            "Role/pilotfish-webhook-check",
            "ClusterRole/pilotfish-root-cert-publisher",
            "Role/pilotfish-bootstrap",
            "Role/pilotfish-root-cert"
        ],
        "a new Role needs a check here"
    );
    // TokenReview: create, nothing else.
    assert_eq!(
        serde_json::to_value(&find(&docs, "ClusterRole", "pilotfish-tokenreview")["rules"])
            .unwrap(),
        json!([{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}])
    );
    // Credentials: list and watch Secrets (what a watcher does), no get.
    assert_eq!(
        serde_json::to_value(&find(&docs, "ClusterRole", "pilotfish-secrets")["rules"]).unwrap(),
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}])
    );
    // The CA: the two CA Secrets by name (read, and watched by a
    // metadata.name field selector), istio-ca-secret updated to rotate its
    // root (create cannot be limited by name), in pilotfish's namespace only.
    use pilotfish::kube::ca_secret::{CA_SECRET, CACERTS_SECRET, ROOT_CONFIGMAP};
    let ca = find(&docs, "Role", "pilotfish-ca");
    assert_eq!(ca["metadata"]["namespace"], "istio-system");
    assert_eq!(
        serde_json::to_value(&ca["rules"]).unwrap(),
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [CACERTS_SECRET, CA_SECRET], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [CA_SECRET], "verbs": ["update"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        ])
    );
    // The root in every namespace: ConfigMaps of that one name (create
    // cannot be limited by name).
    assert_eq!(
        serde_json::to_value(&find(&docs, "ClusterRole", "pilotfish-root-cert-publisher")["rules"])
            .unwrap(),
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ROOT_CONFIGMAP],
             "verbs": ["get", "list", "update", "watch"]},
        ])
    );
    // Status: patch the /status subresource of exactly the watched Istio
    // kinds (src/kube/status.rs), nothing on the objects themselves.
    let mut status_granted = BTreeSet::new();
    let status = find(&docs, "ClusterRole", "pilotfish-status");
    for rule in status["rules"].as_sequence().expect("rules") {
        assert_eq!(
            strs(&rule["verbs"]),
            pilotfish::kube::status::STATUS_VERBS,
            "{rule:?}"
        );
        assert!(rule.get("resourceNames").is_none(), "{rule:?}");
        for g in strs(&rule["apiGroups"]) {
            assert!(g.ends_with("istio.io"), "{rule:?}");
            for r in strs(&rule["resources"]) {
                assert!(
                    status_granted.insert((g.clone(), r)),
                    "granted twice: {rule:?}"
                );
            }
        }
    }
    let istio_status: BTreeSet<(String, String)> = pilotfish::kube::index::Watched::all()
        .into_iter()
        .filter(|w| matches!(w, pilotfish::kube::index::Watched::Istio(_)))
        .map(|w| {
            let ar = w.api_resource();
            (ar.group, format!("{}/status", ar.plural))
        })
        .collect();
    assert_eq!(status_granted, istio_status, "ClusterRole pilotfish-status");
    // The webhook's configuration: get and patch that one object.
    use pilotfish::kube::webhook_config::{WEBHOOK_CONFIG, WEBHOOK_CONFIG_VERBS};
    assert_eq!(
        serde_json::to_value(&find(&docs, "ClusterRole", "pilotfish-webhook-config")["rules"])
            .unwrap(),
        json!([{"apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingwebhookconfigurations"],
                "resourceNames": [WEBHOOK_CONFIG], "verbs": WEBHOOK_CONFIG_VERBS}])
    );
    // The webhook check: a dry-run create of a Gateway in pilotfish's namespace.
    use pilotfish::kube::webhook_config::DRY_RUN_VERBS;
    let check = find(&docs, "Role", "pilotfish-webhook-check");
    assert_eq!(check["metadata"]["namespace"], "istio-system");
    let gateway =
        pilotfish::kube::index::Watched::Istio(pilotfish::model::Kind::Gateway).api_resource();
    assert_eq!(
        serde_json::to_value(&check["rules"]).unwrap(),
        json!([{"apiGroups": [gateway.group], "resources": [gateway.plural], "verbs": DRY_RUN_VERBS}])
    );
    // The example's bootstrap reads the public root, nothing more.
    assert_eq!(
        serde_json::to_value(&find(&docs, "Role", "pilotfish-root-cert")["rules"]).unwrap(),
        json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ROOT_CONFIGMAP], "verbs": ["get"]}])
    );
    // The example's sidecar bootstrap reads its own pod, nothing more.
    let boot = find(&docs, "Role", "pilotfish-bootstrap");
    assert_eq!(
        serde_json::to_value(&boot["rules"]).unwrap(),
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    );
}

/// The Deployment's args name flags `serve` has.
#[test]
fn the_deployment_passes_flags_serve_accepts() {
    let docs = all_documents();
    let deploy = find(&docs, "Deployment", "pilotfish");
    let args = strs(&deploy["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert_eq!(args[..2], ["serve", "--kubernetes"]);
    let help = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for a in &args[1..] {
        let flag = a.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "serve has no {flag}:\n{help}"
        );
    }
    for a in [
        "--xds-address=0.0.0.0:15012",
        "--admin-address=0.0.0.0:15014",
    ] {
        assert!(args.iter().any(|x| x == a), "{a} missing from {args:?}");
    }
}

/// The example's init container, run as the kubelet would (its args, the
/// pod's name and namespace from the downward API) against the fake API
/// server, writes a bootstrap that real Envoy accepts.
#[test]
fn the_example_init_container_writes_a_bootstrap_envoy_accepts() {
    let docs = all_documents();
    let deploy = find(&docs, "Deployment", "ratings-v1");
    let pod_spec = &deploy["spec"]["template"]["spec"];
    let init = &pod_spec["initContainers"][0];
    let pod = "ratings-v1-7c9f5-x2x4b";
    let api = FakeApi::start("127.0.0.1");
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod, "namespace": "default",
            "labels": serde_json::to_value(&deploy["spec"]["template"]["metadata"]["labels"]).unwrap(),
        },
        "spec": {
            "serviceAccountName": pod_spec["serviceAccountName"].as_str().unwrap(),
            "containers": [{"name": "ratings", "image": "x"}],
        },
        "status": {"phase": "Running", "podIP": "10.244.1.7"},
    }));
    // What pilotfish publishes, and the pod's projected token.
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": "istio-system"},
        "data": {"root-cert.pem": pilotfish::ca::Ca::ephemeral("cluster.local").unwrap().roots_pem()}}));
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("bootstrap.yaml");
    let token_file = dir.path().join("tokens/istio-token");
    std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
    std::fs::write(&token_file, "header.payload.signature").unwrap();
    let args: Vec<String> = strs(&init["args"])
        .into_iter()
        .map(|a| {
            let a = a
                .replace("$(POD_NAME)", pod)
                .replace("$(POD_NAMESPACE)", "default");
            match a.split_once('=') {
                Some(("--state-dir", _)) => {
                    format!("--state-dir={}", dir.path().join("state").display())
                }
                Some(("--out", _)) => format!("--out={}", out_file.display()),
                Some(("--token-file", t)) => {
                    assert_eq!(t, "/var/run/secrets/tokens/istio-token");
                    format!("--token-file={}", token_file.display())
                }
                _ => a,
            }
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .args(&args)
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "--out writes the file, not stdout");
    let text = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        text.contains(
            "sidecar~10.244.1.7~ratings-v1-7c9f5-x2x4b.default~default.svc.cluster.local"
        ),
        "{text}"
    );
    assert!(text.contains("pilotfish.istio-system.svc"), "{text}");
    // The credential is the token file, through the SDS file beside the bootstrap.
    assert!(text.contains("credential_injector"), "{text}");
    assert!(dir.path().join("xds-token-sds.json").exists());
    // The Envoy container mounts the projected token where the bootstrap says.
    let mounts = serde_json::to_value(&pod_spec["containers"][1]["volumeMounts"]).unwrap();
    assert!(
        mounts.to_string().contains("/var/run/secrets/tokens"),
        "{mounts}"
    );
    // The sidecar container reads it from the shared emptyDir.
    let envoy_args = strs(&pod_spec["containers"][1]["args"]);
    assert!(envoy_args.contains(&"/etc/envoy/bootstrap.yaml".to_string()));
    let envoy = Command::new(common::envoy_bin())
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        envoy.status.success(),
        "envoy rejected the bootstrap:\n{}",
        String::from_utf8_lossy(&envoy.stderr)
    );
}

/// The ValidatingWebhookConfiguration sends creates and updates of exactly
/// the Istio kinds pilotfish reads to `/validate` on the Service in front of
/// `--webhook-address`, fail-open until the Lease holder patches in the
/// caBundle (istiod's way), and the Deployment's webhook certificate names
/// that Service.
#[test]
fn the_webhook_configuration_points_at_pilotfishs_webhook() {
    use pilotfish::kube::index::Watched;
    let docs = all_documents();
    let config = find(
        &docs,
        "ValidatingWebhookConfiguration",
        pilotfish::kube::webhook_config::WEBHOOK_CONFIG,
    );
    let hooks = config["webhooks"].as_sequence().expect("webhooks");
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(strs(&hook["admissionReviewVersions"]), ["v1"]);
    assert!(hook["clientConfig"].get("caBundle").is_none());
    let svc = &hook["clientConfig"]["service"];
    assert_eq!(svc["path"], "/validate");
    let mut covered = BTreeSet::new();
    for rule in hook["rules"].as_sequence().expect("rules") {
        assert_eq!(strs(&rule["operations"]), ["CREATE", "UPDATE"], "{rule:?}");
        assert_eq!(strs(&rule["apiVersions"]), ["*"], "{rule:?}");
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                assert!(covered.insert((g.clone(), r)), "twice: {rule:?}");
            }
        }
    }
    let istio: BTreeSet<(String, String)> = Watched::all()
        .into_iter()
        .filter(|w| matches!(w, Watched::Istio(_)))
        .map(|w| {
            let ar = w.api_resource();
            (ar.group, ar.plural)
        })
        .collect();
    assert_eq!(covered, istio, "webhook rules vs the Istio kinds");

    // The Service's port leads to the container's webhook port, and the
    // certificate names the Service as the API server calls it.
    let service = find(&docs, "Service", svc["name"].as_str().unwrap());
    assert_eq!(service["metadata"]["namespace"], svc["namespace"]);
    let port = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["port"] == svc["port"])
        .expect("the webhook port on the Service");
    let deploy = find(&docs, "Deployment", "pilotfish");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let target = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("the Service's targetPort on the container");
    let args = strs(&container["args"]);
    assert!(
        args.contains(&format!(
            "--webhook-address=0.0.0.0:{}",
            target["containerPort"].as_u64().unwrap()
        )),
        "{args:?}"
    );
    assert_eq!(deploy["metadata"]["namespace"], "istio-system");
    assert!(
        args.contains(&format!(
            "--webhook-dns-name={}.$(POD_NAMESPACE).svc",
            svc["name"].as_str().unwrap()
        )),
        "{args:?}"
    );
}
