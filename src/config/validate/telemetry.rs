//! Istio's Telemetry rules: selector vs target references, provider names,
//! sampling percentage, custom tags, metric overrides and durations.

use super::findings::Findings;
use super::policy;
use crate::model::telemetry::{ProviderRef, TagOperation, TelemetrySpec};

/// Largest `randomSamplingPercentage`.
const MAX_PERCENT: f64 = 100.0;

pub fn check(s: &TelemetrySpec, f: &mut Findings) {
    policy::selection(
        s.selector.as_ref(),
        s.target_ref.as_ref(),
        &s.target_refs,
        f,
    );
    for (i, m) in s.metrics.iter().enumerate() {
        let path = format!("spec.metrics[{i}]");
        providers(&path, &m.providers, f);
        f.duration(
            format!("{path}.reportingInterval"),
            m.reporting_interval.as_deref(),
        );
        for (j, o) in m.overrides.iter().enumerate() {
            let at = format!("{path}.overrides[{j}]");
            for (tag, t) in &o.tag_overrides {
                let here = format!("{at}.tagOverrides[{tag}]");
                if tag.is_empty() {
                    f.warn(&here, "tagOverrides.name may not be empty");
                }
                let value = t.value.as_deref().unwrap_or_default();
                match t.operation.unwrap_or_default() {
                    TagOperation::Upsert if value.is_empty() => f.error(
                        format!("{here}.value"),
                        "tagOverrides.value must be set when operation is UPSERT",
                    ),
                    TagOperation::Remove if t.value.is_some() => f.error(
                        format!("{here}.value"),
                        "tagOverrides.value may only be set when operation is UPSERT",
                    ),
                    _ => {}
                }
            }
            if let Some(selector) = &o.r#match {
                if selector.metric.is_some() && selector.custom_metric.is_some() {
                    f.error(
                        format!("{at}.match"),
                        "only one of metric, customMetric may be set",
                    );
                }
                if selector.custom_metric.as_deref() == Some("") {
                    f.error(
                        format!("{at}.match.customMetric"),
                        "customMetric may not be empty",
                    );
                }
            }
        }
    }
    if s.tracing.len() > 1 {
        f.warn(
            "spec.tracing",
            "multiple tracing is not currently supported",
        );
    }
    for (i, t) in s.tracing.iter().enumerate() {
        let path = format!("spec.tracing[{i}]");
        if t.providers.len() > 1 {
            f.warn(
                format!("{path}.providers"),
                "multiple providers is not currently supported",
            );
        }
        providers(&path, &t.providers, f);
        if let Some(p) = t.random_sampling_percentage
            && !(0.0..=MAX_PERCENT).contains(&p)
        {
            f.error(
                format!("{path}.randomSamplingPercentage"),
                format!("randomSamplingPercentage must be in range [0.0, 100.0], got {p}"),
            );
        }
        for (name, tag) in &t.custom_tags {
            let at = format!("{path}.customTags[{name}]");
            if name.is_empty() {
                f.error(&at, "tag name may not be empty");
            }
            let kinds = tag.kinds();
            if kinds.len() > 1 {
                f.error(
                    &at,
                    format!(
                        "only one of literal, environment, header, formatter may be set, but found {}",
                        kinds.join(" and ")
                    ),
                );
            }
            for (field, value, what) in [
                (
                    "literal.value",
                    tag.literal.as_ref().map(|l| &l.value),
                    "literal tag value",
                ),
                (
                    "formatter.value",
                    tag.formatter.as_ref().map(|l| &l.value),
                    "formatter tag value",
                ),
                (
                    "header.name",
                    tag.header.as_ref().map(|h| &h.name),
                    "header tag name",
                ),
                (
                    "environment.name",
                    tag.environment.as_ref().map(|e| &e.name),
                    "environment tag name",
                ),
            ] {
                if value.is_some_and(String::is_empty) {
                    f.error(format!("{at}.{field}"), format!("{what} may not be empty"));
                }
            }
        }
    }
    for (i, l) in s.access_logging.iter().enumerate() {
        providers(&format!("spec.accessLogging[{i}]"), &l.providers, f);
    }
}

fn providers(path: &str, providers: &[ProviderRef], f: &mut Findings) {
    for (k, p) in providers.iter().enumerate() {
        if p.name.is_empty() {
            f.error(
                format!("{path}.providers[{k}].name"),
                "providers.name may not be empty",
            );
        }
    }
}
