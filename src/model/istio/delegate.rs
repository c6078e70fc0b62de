//! Delegate VirtualServices merged into their root, as Istio merges them
//! (`mergeHTTPRoute` in pilot's `virtualservice.go`): each rule of the
//! delegate takes the root rule's place, its matches combined with the
//! root rule's matches, and the root rule's settings filling what the
//! delegate rule leaves unset. A delegate rule whose matches conflict with
//! every root match is dropped.

use super::{HttpMatchRequest, HttpRoute, StringMatch, StringMatchKind};

/// The rules a root rule with `delegate` becomes: one per rule of
/// `delegate` that does not conflict with it, in the delegate's order, and
/// how many were dropped for conflicting.
pub fn merge_routes(root: &HttpRoute, delegate: &[HttpRoute]) -> (Vec<HttpRoute>, usize) {
    let merged: Vec<HttpRoute> = delegate
        .iter()
        .filter_map(|d| merge_route(root, d))
        .collect();
    let dropped = delegate.len() - merged.len();
    (merged, dropped)
}

/// One delegate rule merged with its root rule; None when their matches
/// conflict.
pub fn merge_route(root: &HttpRoute, delegate: &HttpRoute) -> Option<HttpRoute> {
    let matches = merge_matches(&root.r#match, &delegate.r#match)?;
    let mut out = delegate.clone();
    out.r#match = matches;
    out.delegate = None;
    out.name = joined_name(root.name.as_deref(), delegate.name.as_deref());
    // Settings of the root rule apply where the delegate rule has none.
    fill(&mut out.rewrite, &root.rewrite);
    fill(&mut out.timeout, &root.timeout);
    fill(&mut out.retries, &root.retries);
    fill(&mut out.fault, &root.fault);
    fill(&mut out.mirror, &root.mirror);
    fill(&mut out.mirror_percent, &root.mirror_percent);
    fill(&mut out.mirror_percent_snake, &root.mirror_percent_snake);
    fill(&mut out.mirror_percentage, &root.mirror_percentage);
    fill(&mut out.cors_policy, &root.cors_policy);
    fill(&mut out.headers, &root.headers);
    Some(out)
}

fn fill<T: Clone>(field: &mut Option<T>, root: &Option<T>) {
    if field.is_none() {
        field.clone_from(root);
    }
}

/// Istio names a merged rule or match `root-delegate` (either alone when
/// the other is unnamed).
fn joined_name(root: Option<&str>, delegate: Option<&str>) -> Option<String> {
    let root = root.filter(|n| !n.is_empty());
    match (root, delegate.filter(|n| !n.is_empty())) {
        (Some(r), Some(d)) => Some(format!("{r}-{d}")),
        (None, Some(d)) => Some(d.to_string()),
        (Some(r), None) => Some(r.to_string()),
        (None, None) => None,
    }
}

/// The matches of a merged rule: with no root matches the delegate's, with
/// no delegate matches the root's; otherwise every non-conflicting
/// (delegate, root) pair combined. None (a conflict) when some delegate
/// match fits no root match.
pub fn merge_matches(
    root: &[HttpMatchRequest],
    delegate: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for leaf in delegate {
        let before = out.len();
        out.extend(
            root.iter()
                .filter(|r| !has_conflict(r, leaf))
                .map(|r| merge_match(r, leaf)),
        );
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// A delegate match narrowed by a root match: the delegate's conditions,
/// with the root's where the delegate sets none (maps are united, the
/// delegate's entries winning).
pub fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = joined_name(root.name.as_deref(), leaf.name.as_deref());
    fill(&mut out.uri, &root.uri);
    fill(&mut out.scheme, &root.scheme);
    fill(&mut out.method, &root.method);
    fill(&mut out.authority, &root.authority);
    for (mine, theirs) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        for (k, v) in theirs {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    fill(&mut out.port, &root.port);
    for (k, v) in &root.source_labels {
        out.source_labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    fill(&mut out.source_namespace, &root.source_namespace);
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    out
}

/// Whether a delegate match asks for something the root match excludes
/// (Istio's `hasConflict`): its uri, scheme, method, authority, headers,
/// withoutHeaders and queryParams must lie within the root's, with the
/// same ignoreUriCase, port, sourceNamespace, no contrary sourceLabels and
/// gateways among the root's.
pub fn has_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let singles = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if singles
        .into_iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    for (roots, leaves) in [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ] {
        if leaves
            .iter()
            .any(|(k, l)| string_match_conflict(roots.get(k), Some(l)))
        {
            return true;
        }
    }
    if root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false) {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port, leaf.port)
        && r > 0
        && l > 0
        && r != l
    {
        return true;
    }
    if let Some(ns) = root.source_namespace.as_deref().filter(|n| !n.is_empty())
        && leaf.source_namespace.as_deref() != Some(ns)
    {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    !root.gateways.is_empty()
        && !leaf.gateways.is_empty()
        && leaf.gateways.iter().any(|g| !root.gateways.contains(g))
}

/// Whether a delegate string match falls outside the root's (Istio's
/// `stringMatchConflict`): an unset side never conflicts; a regex on either
/// side conflicts with anything set on the other; under an exact root only
/// the same exact value fits; under a prefix root only a longer prefix or
/// an exact value starting with it.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    match (root.kind(), leaf.kind()) {
        (Some(StringMatchKind::Regex(_)), Some(_)) | (Some(_), Some(StringMatchKind::Regex(_))) => {
            true
        }
        (Some(StringMatchKind::Exact(r)), l) => l != Some(StringMatchKind::Exact(r)),
        (Some(StringMatchKind::Prefix(p)), Some(StringMatchKind::Prefix(l)))
        | (Some(StringMatchKind::Prefix(p)), Some(StringMatchKind::Exact(l))) => !l.starts_with(p),
        _ => true,
    }
}
