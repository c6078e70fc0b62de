//! Reading one YAML document into a `Value` within limits, so hostile input
//! (alias bombs, deep nesting, huge documents) costs bounded time and memory
//! and gets a clear error, and duplicated keys are rejected instead of one
//! silently winning.
//!
//! The YAML crate expands aliases while it deserializes, replaying the
//! anchored events into the visitor; counting every node the visitor builds
//! therefore bounds alias expansion exactly (the crate's own limit allows
//! 100 alias jumps per event of the document, which for a large document
//! would still build gigabytes).

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::{Mapping, Value};

/// Nodes (scalars, sequences, mappings, counting alias expansions) one
/// document may have. The largest real Istio resources (a VirtualService
/// with hundreds of routes) have a few tens of thousands.
pub const MAX_NODES: usize = 200_000;

/// Nesting depth of one document. Istio's deepest fields (e.g.
/// `spec.rules[].from[].source.principals[]`) are about 10 levels down; the
/// YAML crate stops at 128.
pub const MAX_DEPTH: usize = 64;

/// The first line where flow collections (`[...]`, `{...}`) nest deeper
/// than [`MAX_DEPTH`], found by a scan before parsing: the YAML scanner's
/// cost grows with the square of flow nesting (100,000 levels take more
/// than a minute), so such text must not reach it. Quoted scalars and
/// comments are skipped; text in block scalars (`|`, `>`) is counted, which
/// can only over-count.
pub fn flow_too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut quote: Option<char> = None;
    let mut comment = false;
    // The last character other than whitespace on this line (None at its
    // start), and whether whitespace came right before the current one.
    let mut last: Option<char> = None;
    let mut after_space = true;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            // Quotes are taken to end with the line: a scanner that thought
            // a quote went on could be made to skip brackets YAML counts.
            quote = None;
            comment = false;
            last = None;
            after_space = true;
            continue;
        }
        if comment {
            continue;
        }
        match quote {
            Some('"') if c == '\\' => {
                chars.next();
                continue;
            }
            Some(q) if c == q => {
                quote = None;
                last = Some(c);
                after_space = false;
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        match c {
            ' ' | '\t' | '\r' => {
                after_space = true;
                continue;
            }
            '#' if after_space => comment = true,
            // A quoted scalar starts only where a token can.
            '\'' | '"' if matches!(last, None | Some('[' | '{' | ',' | ':' | '-' | '?')) => {
                quote = Some(c)
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(line);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        last = Some(c);
        after_space = false;
    }
    None
}

/// A limit or rule a document broke: the field path where, and what.
#[derive(Debug, PartialEq)]
pub struct Violation {
    pub path: Option<String>,
    pub message: String,
}

/// Shared across one document's visitors.
struct State {
    nodes_left: Cell<usize>,
    /// Set when a visitor rejects the document (as opposed to a YAML
    /// syntax error); path segments are added while the error unwinds.
    violation: RefCell<Option<(Vec<String>, String)>>,
}

impl State {
    fn fail<E: de::Error>(&self, message: String) -> E {
        *self.violation.borrow_mut() = Some((Vec::new(), message.clone()));
        E::custom(message)
    }

    /// Adds `segment` to the path of a violation unwinding through here.
    fn unwind(&self, segment: impl FnOnce() -> String) {
        if let Some((path, _)) = self.violation.borrow_mut().as_mut() {
            path.push(segment());
        }
    }

    fn node<E: de::Error>(&self) -> Result<(), E> {
        match self.nodes_left.get().checked_sub(1) {
            Some(n) => {
                self.nodes_left.set(n);
                Ok(())
            }
            None => Err(self.fail(format!(
                "the document has more than {MAX_NODES} YAML nodes (counting alias expansions): \
                 too large, or an alias bomb"
            ))),
        }
    }
}

struct Seed<'s> {
    state: &'s State,
    depth: usize,
}

impl Seed<'_> {
    fn child(&self) -> Self {
        Seed {
            state: self.state,
            depth: self.depth + 1,
        }
    }

    fn nest<E: de::Error>(&self) -> Result<(), E> {
        self.state.node()?;
        if self.depth >= MAX_DEPTH {
            return Err(self
                .state
                .fail(format!("the document nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }
}

/// Reads one document. `Err(Ok(v))` is a rule or limit the document broke;
/// `Err(Err(e))` is the YAML crate's error. Either ends the stream: the
/// crate panics when asked for the next document after one it stopped
/// reading midway (found by tests/config_fuzz.rs).
pub fn value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, Result<Violation, D::Error>> {
    let state = State {
        nodes_left: Cell::new(MAX_NODES),
        violation: RefCell::new(None),
    };
    let result = Seed {
        state: &state,
        depth: 0,
    }
    .deserialize(d);
    result.map_err(|e| match state.violation.into_inner() {
        Some((mut segments, message)) => {
            segments.reverse();
            let path = segments.concat();
            let path = path.strip_prefix('.').unwrap_or(&path).to_string();
            Ok(Violation {
                path: (!path.is_empty()).then_some(path),
                message,
            })
        }
        None => Err(e),
    })
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A mapping key as it appears in a field path.
fn key_segment(key: &Value) -> String {
    match key {
        Value::String(s) => format!(".{s}"),
        Value::Number(n) => format!(".{n}"),
        Value::Bool(b) => format!(".{b}"),
        _ => ".(key)".to_string(),
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.state.node()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.state.node()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.state.node()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.state.node()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.state.node()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.state.node()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.state.node()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.nest()?;
        let mut out = Vec::new();
        loop {
            match seq.next_element_seed(self.child()) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return Ok(Value::Sequence(out)),
                Err(e) => {
                    self.state.unwind(|| format!("[{}]", out.len()));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.nest()?;
        let mut out = Mapping::new();
        while let Some(key) = map.next_key_seed(self.child())? {
            let value = map.next_value_seed(self.child()).inspect_err(|_| {
                self.state.unwind(|| key_segment(&key));
            })?;
            if out.contains_key(&key) {
                let shown = match &key {
                    Value::String(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                let e = self.state.fail(format!(
                    "duplicate key {shown:?} (YAML keeps only one of them)"
                ));
                return Err(e);
            }
            out.insert(key, value);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(self
            .state
            .fail("YAML tags (`!tag`) are not supported in Istio resources".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Value, String> {
        let doc = serde_yaml_ng::Deserializer::from_str(text).next().unwrap();
        value(doc).map_err(|e| match e {
            Ok(v) => format!("{:?}: {}", v.path, v.message),
            Err(e) => format!("yaml: {e}"),
        })
    }

    #[test]
    fn reads_ordinary_documents_like_the_yaml_crate() {
        let text = "a: [1, -2, 3.5, x, true, null]\nb: {c: &x {d: 1}, e: *x}\n";
        let expected: Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(read(text), Ok(expected));
    }

    #[test]
    fn duplicate_keys_are_errors_with_their_path() {
        assert_eq!(
            read("spec:\n  hosts: [a]\n  http: []\n  hosts: [b]\n"),
            Err("Some(\"spec\"): duplicate key \"hosts\" (YAML keeps only one of them)".into())
        );
        assert_eq!(
            read("spec:\n  http:\n  - route: []\n  - {a: 1, a: 2}\n"),
            Err("Some(\"spec.http[1]\"): duplicate key \"a\" (YAML keeps only one of them)".into())
        );
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = read(&deep).unwrap_err();
        assert!(e.contains("nests deeper than 64 levels"), "{e}");
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(read(&ok).is_ok());
    }

    #[test]
    fn alias_bombs_are_stopped() {
        // Billion laughs: 9 levels of 9 aliases each, 9^9 leaves.
        let mut text = String::from("a0: &a0 [lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let t = std::time::Instant::now();
        let e = read(&text).unwrap_err();
        assert!(
            e.contains("alias bomb") || e.contains("repetition limit"),
            "{e}"
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn expansion_below_the_yaml_crates_limit_is_bounded_too() {
        // Few alias jumps (50), each expanding a 10,000-element anchor.
        let items = vec!["x"; 10_000].join(", ");
        let refs = vec!["*big"; 50].join(", ");
        let text = format!("big: &big [{items}]\nall: [{refs}]\n");
        let e = read(&text).unwrap_err();
        assert!(e.contains("more than 200000 YAML nodes"), "{e}");
    }

    #[test]
    fn flow_nesting_is_measured_before_parsing() {
        let deep = |n: usize| format!("a: 1\nb: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert_eq!(flow_too_deep(&deep(MAX_DEPTH)), None);
        assert_eq!(flow_too_deep(&deep(MAX_DEPTH + 1)), Some(2));
        // Brackets in quotes and comments do not count; in plain scalars
        // after a quote character they do.
        let hidden = "[".repeat(100);
        assert_eq!(
            flow_too_deep(&format!("a: '{hidden}'\nb: \"{hidden}\\\"\"\n")),
            None
        );
        assert_eq!(flow_too_deep(&format!("a: 1 # {hidden}\n")), None);
        assert_eq!(flow_too_deep(&format!("a: [x '{hidden}]\n")), Some(1));
        assert_eq!(flow_too_deep(&format!("a: 'x\n{hidden}'\n")), Some(2));
        // Realistic text: regexes and JSON with balanced brackets.
        let ok = "uri: {regex: '^/api/[a-z]+/[0-9]{1,3}$'}\nbody: {string: '{\"a\": [1, {\"b\": []}]}'}\n";
        assert_eq!(flow_too_deep(ok), None);
    }

    #[test]
    fn tags_are_rejected() {
        let e = read("spec: !foo {a: 1}\n").unwrap_err();
        assert!(e.contains("spec") && e.contains("tags"), "{e}");
    }
}
