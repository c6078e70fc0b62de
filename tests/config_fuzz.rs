//! Property test of parse + validate + analyze on mutated Istio YAML: for
//! any input, reading returns (never panics), within a time bound, and
//! gives the same result twice; every error names the file.
//!
//! The seeds are the repository's own YAML (examples/, tests/golden/*/in.yaml,
//! tests/analyze/); each case applies a few random mutations (byte flips,
//! cut or repeated ranges, YAML tokens inserted: brackets, anchors, aliases,
//! tags, document markers, odd numbers, ...), and sometimes splices two
//! seeds. Longer runs:
//!
//! ```sh
//! PILOTFISH_FUZZ_CASES=200000 cargo test --release --test config_fuzz -- --nocapture
//! PILOTFISH_FUZZ_SEED=1234 cargo test --test config_fuzz   # replay a reported seed
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pilotfish::config::{analyze, parse_file, store};

/// Cases per `cargo test` run: quick enough for `make test` in debug.
const DEFAULT_CASES: u64 = 1500;
/// One case (parse + validate + analyze of a document of at most a few
/// tens of KiB) takes milliseconds; this catches super-linear blow-ups.
const CASE_DEADLINE: Duration = Duration::from_secs(5);

const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "[[[[[[[[",
    "]]]]",
    "&a ",
    "*a",
    "&b [*a, *a, *a] ",
    "!tag ",
    "!!str ",
    "---\n",
    "...\n",
    ": ",
    "- ",
    "\n  ",
    "\n- ",
    "\"",
    "'",
    "#",
    "|\n  ",
    ">-\n  ",
    "~",
    "null",
    "-1",
    "0",
    "4294967296",
    "99999999999999999999999",
    "1e400",
    ".nan",
    "true",
    "yes",
    "0x1F",
    "*",
    "*.",
    "a..b",
    "/",
    "\\u0000",
    "\t",
    "\r\n",
    "\u{feff}",
    "é",
    "<<: *a\n",
    "apiVersion: networking.istio.io/v1\n",
    "kind: VirtualService\n",
    "spec: {}\n",
    "metadata: {name: x}\n",
    "hosts: [\"*\"]\n",
];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn seeds() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["examples", "tests/golden", "tests/analyze"] {
        files.extend(store::yaml_files(&root.join(dir)).unwrap());
    }
    let out: Vec<(PathBuf, String)> = files
        .into_iter()
        .filter_map(|f| std::fs::read_to_string(&f).ok().map(|t| (f, t)))
        .collect();
    assert!(out.len() > 20, "few seeds: {}", out.len());
    out
}

/// A char boundary at or below `i`.
fn floor(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(rng: &mut fastrand::Rng, text: &str, other: &str) -> String {
    let mut s = text.to_string();
    for _ in 0..rng.usize(1..=4) {
        let at = floor(&s, rng.usize(0..=s.len()));
        match rng.u8(0..6) {
            0 => s.insert_str(at, TOKENS[rng.usize(0..TOKENS.len())]),
            1 => {
                let end = floor(&s, at + rng.usize(0..64));
                s.replace_range(at..end, "");
            }
            2 => {
                let end = floor(&s, at + rng.usize(0..200));
                let piece = s[at..end].to_string();
                for _ in 0..rng.usize(1..20) {
                    s.insert_str(at, &piece);
                }
            }
            3 => {
                // Flip one ASCII byte to another printable or control char.
                if let Some(c) = s[at..].chars().next()
                    && c.is_ascii()
                {
                    let n = char::from(rng.u8(0..128));
                    s.replace_range(at..at + 1, &n.to_string());
                }
            }
            4 => {
                // Splice: the head of this seed, the tail of another.
                let cut = floor(other, rng.usize(0..=other.len()));
                s.truncate(at);
                s.push_str(&other[cut..]);
            }
            _ => {
                // Re-indent a line.
                let line_start = s[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
                let pad = " ".repeat(rng.usize(0..6));
                s.insert_str(line_start, &pad);
            }
        }
    }
    s
}

#[test]
fn parse_validate_analyze_never_panic_on_mutated_yaml() {
    let seeds = seeds();
    let cases = env_u64("PILOTFISH_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let seed = env_u64("PILOTFISH_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..));
    eprintln!("config_fuzz: {cases} cases, PILOTFISH_FUZZ_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut parsed_ok = 0u64;
    let mut slowest = Duration::ZERO;
    for case in 0..cases {
        let (path, text) = &seeds[rng.usize(0..seeds.len())];
        let (_, other) = &seeds[rng.usize(0..seeds.len())];
        let input = mutate(&mut rng, text, other);
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(|| {
            let a = parse_file(path, &input);
            let b = parse_file(path, &input);
            assert_eq!(a.errors, b.errors, "parsing is not deterministic");
            assert_eq!(a.resources, b.resources, "parsing is not deterministic");
            let file = path.display().to_string();
            for e in a.errors.iter().chain(&a.warnings) {
                assert_eq!(e.file, file, "{e}");
                assert!(!e.message.is_empty(), "{e}");
            }
            let n = a.resources.len();
            let messages = analyze::analyze(&analyze::snapshot_of(a.resources));
            for m in &messages {
                assert!(!m.code.is_empty() && !m.message.is_empty(), "{m}");
            }
            n
        });
        let elapsed = start.elapsed();
        slowest = slowest.max(elapsed);
        match outcome {
            Ok(n) => parsed_ok += u64::from(n > 0),
            Err(_) => {
                let keep = std::env::temp_dir().join(format!("pilotfish-fuzz-{seed}-{case}.yaml"));
                let _ = std::fs::write(&keep, &input);
                panic!(
                    "case {case} (PILOTFISH_FUZZ_SEED={seed}) panicked; input kept in {}",
                    keep.display()
                );
            }
        }
        assert!(
            elapsed < CASE_DEADLINE,
            "case {case} (PILOTFISH_FUZZ_SEED={seed}) took {elapsed:?}"
        );
    }
    eprintln!(
        "config_fuzz: {cases} cases, {parsed_ok} still had valid resources, slowest {slowest:?}"
    );
    // The mutations must not be so destructive that nothing parses.
    assert!(
        parsed_ok > cases / 10,
        "only {parsed_ok} of {cases} cases parsed"
    );
}
