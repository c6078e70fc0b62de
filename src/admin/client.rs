//! `pilotfish proxy-status` and `pilotfish proxy-config`: istioctl-style
//! views that read a running pilotfish's admin API.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Runs one root rotation step; returns how many roots are trusted after it.
pub fn rotate_root(admin: &str, step: &str) -> Result<u64> {
    let url = format!("http://{admin}/ca/rotate?step={step}");
    let resp = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()?
        .post(&url)
        .send()
        .with_context(|| {
            format!("cannot reach pilotfish's admin API at {url} (--admin-address)")
        })?;
    let status = resp.status();
    let text = resp.text()?;
    if !status.is_success() {
        bail!("{step}: {}", text.trim());
    }
    let v: Value = serde_json::from_str(&text)?;
    Ok(v["roots"].as_u64().unwrap_or_default())
}

fn get(admin: &str, path: &str) -> Result<Value> {
    let url = format!("http://{admin}{path}");
    let resp = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()?
        .get(&url)
        .send()
        .with_context(|| {
            format!("cannot reach pilotfish's admin API at {url} (--admin-address)")
        })?;
    let status = resp.status();
    let text = resp.text()?;
    if !status.is_success() {
        bail!("{url}: {status}: {}", text.trim());
    }
    serde_json::from_str(&text).with_context(|| format!("{url}: not JSON"))
}

/// SYNCED when the proxy ACKed what it was last sent, NACKED when it rejected
/// it, STALE when an answer is outstanding, NOT SENT when nothing was sent.
pub fn sync_state(t: &Value) -> &'static str {
    let sent = &t["sent_version"];
    if sent.is_null() {
        "NOT SENT"
    } else if t["last_nack"]["version"] == *sent {
        "NACKED"
    } else if t["acked_version"] == *sent {
        "SYNCED"
    } else {
        "STALE"
    }
}

/// One row per connected proxy, one column per xDS type.
pub fn proxy_status(admin: &str, json: bool) -> Result<String> {
    let syncs = get(admin, "/debug/syncz")?;
    let proxies = syncs.as_array().cloned().unwrap_or_default();
    let types = ["cds", "lds", "eds", "rds", "sds"];
    if json {
        let rows: Vec<Value> = proxies
            .iter()
            .map(|p| {
                let states: BTreeMap<&str, &str> = types
                    .iter()
                    .map(|t| (*t, sync_state(&p["types"][*t])))
                    .collect();
                serde_json::json!({"proxy": p["node_id"], "workload": p["workload"], "group": p["group"],
                    "xds": if p["delta"] == true { "delta" } else { "sotw" }, "status": states})
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&rows)? + "\n");
    }
    let mut out = format!(
        "{:<60} {:<32} {:<6} {:<9} {:<9} {:<9} {:<9} {:<9}\n",
        "NAME", "WORKLOAD", "XDS", "CDS", "LDS", "EDS", "RDS", "SDS"
    );
    for p in &proxies {
        let s = |t: &str| sync_state(&p["types"][t]);
        out.push_str(&format!(
            "{:<60} {:<32} {:<6} {:<9} {:<9} {:<9} {:<9} {:<9}\n",
            p["node_id"].as_str().unwrap_or_default(),
            p["workload"].as_str().unwrap_or_default(),
            if p["delta"] == true { "delta" } else { "sotw" },
            s("cds"),
            s("lds"),
            s("eds"),
            s("rds"),
            s("sds"),
        ));
    }
    Ok(out)
}

/// What pilotfish last sent one proxy, for one type.
pub fn proxy_config(admin: &str, proxy: &str, kind: &str, json: bool) -> Result<String> {
    let t = match kind {
        "clusters" | "cluster" | "cds" => "cds",
        "listeners" | "listener" | "lds" => "lds",
        "routes" | "route" | "rds" => "rds",
        "endpoints" | "endpoint" | "eds" => "eds",
        "secrets" | "secret" | "sds" => "sds",
        other => bail!(
            "unknown config type {other:?}: expected clusters, listeners, routes, endpoints or secrets"
        ),
    };
    let proxy_q: String = proxy
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let dump = get(admin, &format!("/debug/config_dump?proxy={proxy_q}"))?;
    let resources = dump["resources"][t].clone();
    if json {
        return Ok(serde_json::to_string_pretty(&resources)? + "\n");
    }
    let mut out = format!("{:<70} {:<18}\n", "NAME", "VERSION");
    for r in resources.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<70} {:<18}\n",
            r["name"].as_str().unwrap_or_default(),
            r["version"].as_str().unwrap_or_default()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sync_states() {
        assert_eq!(sync_state(&json!({"sent_version": null})), "NOT SENT");
        assert_eq!(
            sync_state(&json!({"sent_version": "a", "acked_version": "a"})),
            "SYNCED"
        );
        assert_eq!(
            sync_state(&json!({"sent_version": "b", "acked_version": "a"})),
            "STALE"
        );
        assert_eq!(
            sync_state(
                &json!({"sent_version": "b", "acked_version": "a", "last_nack": {"version": "b"}})
            ),
            "NACKED"
        );
    }
}
