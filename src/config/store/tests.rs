//! The store keeps every file's last good version: a bad edit, a vanished
//! directory or an unreadable file is reported and changes nothing in force.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use super::*;
use crate::model::Spec;

/// A config directory of its own for one test.
fn mk_dir() -> TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Writes `text` to `rel` under `dir` (creating parent folders) and returns its path.
fn mk_file(dir: &Path, rel: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent folders");
    }
    std::fs::write(&path, text).expect("write config file");
    path
}

/// Sets the file's modification time to `secs` after the Unix epoch.
fn mk_mtime(path: &Path, secs: u64) {
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open for set_modified");
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .expect("set mtime");
}

/// A VirtualService `name` (default namespace) routing `reviews` to `subset`.
fn mk_vs(name: &str, subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: {subset}\n"
    )
}

/// A VirtualService whose only route has a negative weight (fails validation).
fn mk_bad_vs(name: &str) -> String {
    mk_vs(name, "v1").replace(
        "        subset: v1\n",
        "        subset: v1\n      weight: -1\n",
    )
}

/// A store over `dir`, loaded once.
fn mk_store(dir: &Path) -> Store {
    let mut store = Store::open(dir).expect("open config dir");
    store.reload();
    store
}

/// `Kind ns/name` of everything in force.
fn keys(state: &ConfigState) -> Vec<String> {
    state
        .snapshot
        .resources
        .keys()
        .map(ToString::to_string)
        .collect()
}

/// The subset the VirtualService `name` in force routes to.
fn subset_of(state: &ConfigState, name: &str) -> String {
    let (_, vs) = state
        .snapshot
        .virtual_services()
        .find(|(r, _)| r.name == name)
        .unwrap_or_else(|| panic!("VirtualService {name} not in force: {:?}", keys(state)));
    vs.http[0].route[0]
        .destination
        .subset
        .clone()
        .unwrap_or_default()
}

/// The file a resource in force came from.
fn origin_of(state: &ConfigState, name: &str) -> PathBuf {
    state
        .snapshot
        .resources
        .values()
        .find(|r| r.name == name)
        .map(|r| r.origin.file.clone())
        .unwrap_or_else(|| panic!("{name} not in force: {:?}", keys(state)))
}

#[test]
fn open_fails_on_a_missing_directory_naming_it() {
    let tmp = mk_dir();
    let missing = tmp.path().join("no-such-dir");
    let err = Store::open(&missing).expect_err("a missing directory cannot be opened");
    assert_eq!(err.file, missing.display().to_string());
    assert!(
        err.message.starts_with("cannot read config directory: "),
        "{err}"
    );
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn open_works_on_an_empty_directory() {
    let tmp = mk_dir();
    let mut store = Store::open(tmp.path()).expect("open empty dir");
    assert!(!store.reload(), "nothing to load, nothing changed");
    let state = store.state(1);
    assert_eq!(state.version, 1);
    assert!(state.snapshot.resources.is_empty());
    assert!(state.errors.is_empty(), "{:#?}", state.errors);
    assert_eq!(state.files, 0);
    assert_eq!(store.invalid_files(), 0);
}

#[test]
fn files_are_found_recursively_yaml_and_yml_only_hidden_ignored() {
    let tmp = mk_dir();
    let dir = tmp.path();
    mk_file(dir, "a.yaml", mk_vs("a", "v1"));
    mk_file(dir, "sub/b.yml", mk_vs("b", "v1"));
    mk_file(dir, "sub/deeper/c.yaml", mk_vs("c", "v1"));
    // Not config: other extensions, hidden files and folders.
    mk_file(dir, "d.json", mk_vs("d", "v1"));
    mk_file(dir, "e.txt", mk_vs("e", "v1"));
    mk_file(dir, "f.yaml.bak", mk_vs("f", "v1"));
    mk_file(dir, "README", "not yaml at all: [");
    mk_file(dir, ".g.yaml", mk_vs("g", "v1"));
    mk_file(dir, "sub/.h.yaml.swp", mk_vs("h", "v1"));
    mk_file(dir, ".git/i.yaml", mk_vs("i", "v1"));
    mk_file(dir, "sub/.hidden/j.yml", mk_vs("j", "v1"));

    let mut store = Store::open(dir).expect("open");
    assert!(store.reload());
    let state = store.state(1);
    assert!(state.errors.is_empty(), "{:#?}", state.errors);
    assert_eq!(state.files, 3);
    assert_eq!(
        keys(&state),
        [
            "VirtualService default/a",
            "VirtualService default/b",
            "VirtualService default/c"
        ]
    );
    assert_eq!(origin_of(&state, "b"), dir.join("sub/b.yml"));
}

#[test]
fn reload_without_changes_changes_nothing() {
    let tmp = mk_dir();
    mk_file(tmp.path(), "a.yaml", mk_vs("a", "v1"));
    let mut store = mk_store(tmp.path());
    assert!(!store.reload());
    assert!(!store.reload());
    assert_eq!(keys(&store.state(1)), ["VirtualService default/a"]);
}

#[test]
fn a_bad_edit_keeps_the_last_good_version_until_fixed() {
    let tmp = mk_dir();
    let path = mk_file(tmp.path(), "reviews.yaml", mk_vs("reviews", "v1"));
    let mut store = Store::open(tmp.path()).expect("open");
    assert!(store.reload());
    assert_eq!(subset_of(&store.state(1), "reviews"), "v1");

    // A bad edit: the old version stays in force and the file is named.
    mk_file(tmp.path(), "reviews.yaml", mk_bad_vs("reviews"));
    assert!(!store.reload(), "a bad edit changes nothing in force");
    let state = store.state(1);
    assert_eq!(keys(&state), ["VirtualService default/reviews"]);
    assert_eq!(subset_of(&state, "reviews"), "v1");
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
    let e = &state.errors[0];
    assert_eq!(e.file, path.display().to_string());
    assert_eq!(e.document, Some(1));
    assert_eq!(e.path.as_deref(), Some("spec.http[0].route[0].weight"));
    assert!(
        e.to_string().starts_with(&path.display().to_string()),
        "{e}"
    );
    assert_eq!(store.invalid_files(), 1);

    // A broken YAML edit: same.
    mk_file(tmp.path(), "reviews.yaml", "spec: [unclosed\n");
    assert!(!store.reload());
    let state = store.state(1);
    assert_eq!(subset_of(&state, "reviews"), "v1");
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
    assert!(
        state.errors[0].message.starts_with("invalid YAML"),
        "{:?}",
        state.errors
    );
    assert_eq!(store.invalid_files(), 1);

    // Fixed (with a new route): the new version is in force, errors gone.
    mk_file(tmp.path(), "reviews.yaml", mk_vs("reviews", "v2"));
    assert!(store.reload());
    let state = store.state(2);
    assert_eq!(subset_of(&state, "reviews"), "v2");
    assert!(state.errors.is_empty(), "{:#?}", state.errors);
    assert_eq!(store.invalid_files(), 0);
}

#[test]
fn a_bad_edit_keeps_every_resource_of_the_file() {
    let tmp = mk_dir();
    let good = [mk_vs("one", "v1"), mk_vs("two", "v1")].join("---\n");
    mk_file(tmp.path(), "both.yaml", &good);
    let mut store = mk_store(tmp.path());
    // The edit breaks `two` and drops `one`: neither change takes effect.
    mk_file(tmp.path(), "both.yaml", mk_bad_vs("two"));
    assert!(!store.reload());
    let state = store.state(1);
    assert_eq!(
        keys(&state),
        ["VirtualService default/one", "VirtualService default/two"]
    );
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
}

#[test]
fn a_new_file_with_one_bad_document_serves_the_good_one() {
    let tmp = mk_dir();
    let text = [mk_bad_vs("bad"), mk_vs("good", "v1")].join("---\n");
    let path = mk_file(tmp.path(), "new.yaml", text);
    let mut store = Store::open(tmp.path()).expect("open");
    assert!(store.reload());
    let state = store.state(1);
    assert_eq!(keys(&state), ["VirtualService default/good"]);
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
    let e = &state.errors[0];
    assert_eq!(e.file, path.display().to_string());
    assert_eq!(e.document, Some(1));
    assert_eq!(e.resource.as_deref(), Some("VirtualService default/bad"));
    assert_eq!(store.invalid_files(), 1);
}

#[test]
fn deleting_a_file_removes_its_resources() {
    let tmp = mk_dir();
    let a = mk_file(tmp.path(), "a.yaml", mk_vs("a", "v1"));
    mk_file(tmp.path(), "sub/b.yaml", mk_vs("b", "v1"));
    let mut store = mk_store(tmp.path());
    assert_eq!(store.state(1).files, 2);

    std::fs::remove_file(&a).expect("remove a.yaml");
    assert!(store.reload());
    let state = store.state(2);
    assert_eq!(keys(&state), ["VirtualService default/b"]);
    assert_eq!(state.files, 1);
    assert!(state.errors.is_empty(), "{:#?}", state.errors);
}

#[test]
fn deleting_a_bad_file_clears_its_errors() {
    let tmp = mk_dir();
    let bad = mk_file(tmp.path(), "bad.yaml", "kind: [\n");
    mk_file(tmp.path(), "good.yaml", mk_vs("good", "v1"));
    let mut store = mk_store(tmp.path());
    assert_eq!(store.invalid_files(), 1);
    assert_eq!(store.state(1).errors.len(), 1);

    std::fs::remove_file(&bad).expect("remove bad.yaml");
    store.reload();
    let state = store.state(1);
    assert!(state.errors.is_empty(), "{:#?}", state.errors);
    assert_eq!(store.invalid_files(), 0);
    assert_eq!(keys(&state), ["VirtualService default/good"]);
}

#[test]
fn a_duplicate_resource_is_taken_from_the_file_written_later() {
    let tmp = mk_dir();
    // `a.yaml` sorts first but is written later: the mtime decides, not the name.
    let newer = mk_file(tmp.path(), "a.yaml", mk_vs("reviews", "from-a"));
    let older = mk_file(tmp.path(), "b.yaml", mk_vs("reviews", "from-b"));
    mk_mtime(&older, 1_700_000_000);
    mk_mtime(&newer, 1_700_000_100);

    let mut store = Store::open(tmp.path()).expect("open");
    assert!(store.reload());
    let state = store.state(1);
    assert_eq!(keys(&state), ["VirtualService default/reviews"]);
    assert_eq!(subset_of(&state, "reviews"), "from-a");
    assert_eq!(origin_of(&state, "reviews"), newer);
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
    let e = &state.errors[0];
    assert_eq!(e.file, older.display().to_string());
    assert_eq!(e.document, Some(1));
    assert_eq!(
        e.resource.as_deref(),
        Some("VirtualService default/reviews")
    );
    assert!(e.message.contains("duplicate"), "{e}");
    assert!(e.message.contains(&newer.display().to_string()), "{e}");

    // Rewriting the other file makes it the newer one.
    mk_file(tmp.path(), "b.yaml", mk_vs("reviews", "from-b-again"));
    mk_mtime(&older, 1_700_000_200);
    assert!(store.reload());
    let state = store.state(2);
    assert_eq!(subset_of(&state, "reviews"), "from-b-again");
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
    assert_eq!(state.errors[0].file, newer.display().to_string());
    assert!(state.errors[0].message.contains("duplicate"));
}

#[test]

fn touching_the_older_duplicate_makes_it_win() {
    let tmp = mk_dir();
    let a = mk_file(tmp.path(), "a.yaml", mk_vs("reviews", "from-a"));
    let b = mk_file(tmp.path(), "b.yaml", mk_vs("reviews", "from-b"));
    mk_mtime(&a, 1_700_000_000);
    mk_mtime(&b, 1_700_000_100);
    let mut store = mk_store(tmp.path());
    assert_eq!(subset_of(&store.state(1), "reviews"), "from-b");

    // `a.yaml` is written again with the same content: it is now the file
    // written last, so its definition should be in force.
    mk_file(tmp.path(), "a.yaml", mk_vs("reviews", "from-a"));
    mk_mtime(&a, 1_700_000_200);
    store.reload();
    let state = store.state(2);
    assert_eq!(subset_of(&state, "reviews"), "from-a");
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
    assert_eq!(state.errors[0].file, b.display().to_string());
}

#[test]
fn a_removed_directory_keeps_the_last_config() {
    let tmp = mk_dir();
    let dir = tmp.path().join("config");
    mk_file(&dir, "a.yaml", mk_vs("a", "v1"));
    mk_file(&dir, "sub/b.yaml", mk_vs("b", "v1"));
    let mut store = Store::open(&dir).expect("open");
    assert!(store.reload());

    std::fs::remove_dir_all(&dir).expect("remove config dir");
    assert!(!store.reload(), "nothing in force may change");
    let state = store.state(1);
    assert_eq!(
        keys(&state),
        ["VirtualService default/a", "VirtualService default/b"]
    );
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
    let e = &state.errors[0];
    assert_eq!(e.file, dir.display().to_string());
    assert!(
        e.message.starts_with("cannot read config directory: "),
        "{e}"
    );
    assert!(e.message.contains("keeping the last good config"), "{e}");

    // Back again: the error clears and the content is read afresh.
    mk_file(&dir, "a.yaml", mk_vs("a", "v2"));
    assert!(store.reload());
    let state = store.state(2);
    assert!(state.errors.is_empty(), "{:#?}", state.errors);
    assert_eq!(keys(&state), ["VirtualService default/a"]);
    assert_eq!(subset_of(&state, "a"), "v2");
}

#[test]
fn a_file_that_is_not_utf8_keeps_its_last_good_version() {
    let tmp = mk_dir();
    let path = mk_file(tmp.path(), "reviews.yaml", mk_vs("reviews", "v1"));
    let mut store = mk_store(tmp.path());

    let mut bytes = mk_vs("reviews", "v2").into_bytes();
    bytes.extend_from_slice(&[0xff, 0xfe, 0x00, 0xc3, 0x28]);
    mk_file(tmp.path(), "reviews.yaml", &bytes);
    assert!(!store.reload());
    let state = store.state(1);
    assert_eq!(subset_of(&state, "reviews"), "v1");
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
    let e = &state.errors[0];
    assert_eq!(e.file, path.display().to_string());
    assert!(e.message.contains("not UTF-8"), "{e}");
    assert!(e.message.contains("keeping its last good version"), "{e}");
    assert_eq!(store.invalid_files(), 1);

    // Restoring the exact earlier content clears the error.
    mk_file(tmp.path(), "reviews.yaml", mk_vs("reviews", "v1"));
    store.reload();
    let state = store.state(1);
    assert!(state.errors.is_empty(), "{:#?}", state.errors);
    assert_eq!(subset_of(&state, "reviews"), "v1");
    assert_eq!(store.invalid_files(), 0);
}

#[test]
fn a_new_file_that_is_not_utf8_is_reported() {
    let tmp = mk_dir();
    mk_file(tmp.path(), "good.yaml", mk_vs("good", "v1"));
    let path = mk_file(tmp.path(), "binary.yaml", [0x80u8, 0x81, 0xff]);
    let store = mk_store(tmp.path());
    let state = store.state(1);
    assert_eq!(keys(&state), ["VirtualService default/good"]);
    assert_eq!(state.errors.len(), 1, "{:#?}", state.errors);
    assert_eq!(state.errors[0].file, path.display().to_string());
    assert!(state.errors[0].message.contains("not UTF-8"));
}

#[test]
fn skipped_kinds_are_not_errors() {
    let tmp = mk_dir();
    let envoy_filter = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata:\n  name: ef\nspec: {}\n";
    mk_file(
        tmp.path(),
        "mixed.yaml",
        [envoy_filter.to_string(), mk_vs("reviews", "v1")].join("---\n"),
    );
    let store = mk_store(tmp.path());
    let state = store.state(1);
    assert!(state.errors.is_empty(), "{:#?}", state.errors);
    assert_eq!(store.invalid_files(), 0);
    let specs: Vec<bool> = state
        .snapshot
        .resources
        .values()
        .map(|r| matches!(r.spec, Spec::VirtualService(_)))
        .collect();
    assert_eq!(specs, [true]);
}

#[test]

fn a_file_with_a_config_map_beside_istio_config_takes_edits() {
    let tmp = mk_dir();
    let config_map =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  key: value\n";
    let with = |subset: &str| [config_map.to_string(), mk_vs("reviews", subset)].join("---\n");
    mk_file(tmp.path(), "app.yaml", with("v1"));
    let mut store = mk_store(tmp.path());
    assert_eq!(subset_of(&store.state(1), "reviews"), "v1");

    // The edit is valid: it must take effect (today it is held back).
    mk_file(tmp.path(), "app.yaml", with("v2"));
    assert!(store.reload());
    let state = store.state(2);
    assert_eq!(subset_of(&state, "reviews"), "v2");
    assert!(state.errors.is_empty(), "{:#?}", state.errors);
    assert_eq!(store.invalid_files(), 0);
}

#[test]
fn warnings_are_reported_and_their_documents_kept() {
    let dir = mk_dir();
    mk_file(
        dir.path(),
        "pa.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {selector: {matchLabels: {}}}\n",
    );
    let state = mk_store(dir.path()).state(1);
    assert_eq!(keys(&state), ["PeerAuthentication default/p"]);
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    assert_eq!(state.warnings.len(), 1, "{:?}", state.warnings);
    assert_eq!(
        state.warnings[0].path.as_deref(),
        Some("spec.selector.matchLabels")
    );
}
