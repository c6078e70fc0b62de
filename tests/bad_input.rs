//! Hostile and broken config through the real binary (`pilotfish validate`,
//! which reads exactly as `serve` does): a clear error, a normal exit code
//! (no panic, no signal) and bounded time for each.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous for a loaded 2-core machine; each case takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `pilotfish validate FILE` on `content`; returns stdout, checking
/// the exit code is 1 (problems found) and the run was quick.
fn validate_bytes(name: &str, content: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, content).unwrap();
    validate_path(&file)
}

fn validate_path(file: &Path) -> String {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
        .arg("validate")
        .arg(file)
        .output()
        .expect("run pilotfish");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(elapsed < DEADLINE, "took {elapsed:?}");
    stdout
}

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n";

#[test]
fn billion_laughs_is_refused_quickly() {
    let mut text = String::from(VS);
    text.push_str("spec:\n  hosts: [r]\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        text.push_str(&format!("  a{i}: &a{i} [{refs}]\n"));
    }
    let out = validate_bytes("laughs.yaml", text.as_bytes());
    assert!(
        out.contains("laughs.yaml: document 1")
            && (out.contains("repetition limit") || out.contains("alias bomb")),
        "{out}"
    );
}

#[test]
fn large_alias_expansion_is_refused() {
    let items = vec!["x"; 20_000].join(", ");
    let refs = vec!["*big"; 100].join(", ");
    let text = format!("{VS}spec:\n  hosts: [r]\n  big: &big [{items}]\n  all: [{refs}]\n");
    let out = validate_bytes("expand.yaml", text.as_bytes());
    assert!(
        out.contains("YAML nodes (counting alias expansions)"),
        "{out}"
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // Flow nesting is measured before parsing (the YAML scanner is quadratic
    // in it: 100,000 levels took 85 s).
    for depth in [100, 1_000_000] {
        let text = format!("{VS}spec: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let out = validate_bytes("deep.yaml", text.as_bytes());
        assert!(
            out.contains(
                "deep.yaml: flow collections ([...], {...}) nest deeper than 64 levels at line 4"
            ),
            "{out}"
        );
    }
    // Block nesting (linear for the scanner) is stopped while reading.
    let text = format!("{VS}spec:\n  x:\n  {}x\n", "- ".repeat(200_000));
    let out = validate_bytes("block.yaml", text.as_bytes());
    assert!(out.contains("nests deeper than 64 levels"), "{out}");
}

#[test]
fn files_over_the_size_limit_are_refused_before_parsing() {
    // 16 MiB is the limit; the file is one long comment (valid YAML).
    let mut text = String::from(VS);
    text.push_str("spec: {hosts: [r]}\n#");
    text.push_str(&"x".repeat(17 * 1024 * 1024));
    let out = validate_bytes("huge.yaml", text.as_bytes());
    assert!(
        out.contains("huge.yaml: cannot read: file is") && out.contains("the limit is 16777216"),
        "{out}"
    );
}

#[test]
fn binary_garbage_gets_a_clear_error() {
    // Not UTF-8.
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i * 7919 % 251) as u8 | 0x80)
        .collect();
    let out = validate_bytes("garbage.bin.yaml", &bytes);
    assert!(
        out.contains("garbage.bin.yaml: cannot read") && out.contains("UTF-8"),
        "{out}"
    );
    // UTF-8, but control characters YAML forbids.
    let out = validate_bytes("control.yaml", b"\x01\x02\x03: \x04\x05\n\x7f");
    assert!(
        out.contains("control.yaml: document 1: invalid YAML"),
        "{out}"
    );
    // A YAML scalar, not an object.
    let out = validate_bytes("scalar.yaml", b"just some text\n");
    assert!(
        out.contains("expected a mapping with apiVersion, kind"),
        "{out}"
    );
}

#[test]
fn wrong_api_version_names_the_accepted_ones() {
    let text = "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: r}\nspec: {hosts: [r]}\n";
    let out = validate_bytes("api.yaml", text.as_bytes());
    assert!(
        out.contains("api.yaml: document 1 (VirtualService default/r): apiVersion: networking.istio.io/v2 is not an apiVersion of VirtualService; expected one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"),
        "{out}"
    );
}

#[test]
fn duplicated_keys_are_errors() {
    let text = format!("{VS}spec:\n  hosts: [r]\n  http: []\n  hosts: [s]\n");
    let out = validate_bytes("dup.yaml", text.as_bytes());
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.trim_end().ends_with(
            "dup.yaml: document 1: spec: duplicate key \"hosts\" (YAML keeps only one of them)"
        ),
        "{out}"
    );
}
