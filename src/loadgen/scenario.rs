//! Generated meshes and the changes applied to them.
//!
//! A scenario is S services × E workloads each, spread over K namespaces,
//! with a VirtualService for R of the services, written as Istio YAML that
//! `pilotfish serve` reads:
//!
//! * `services.yaml`: one STATIC, MESH_INTERNAL ServiceEntry per service
//!   (`svc-0000`, HTTP port 9080 named `http`, selecting `app: svc-0000`);
//! * `workloads.yaml`: S×E WorkloadEntries (`svc-0000-0`, ...), one per
//!   simulated proxy, each on its own loopback address (127.100.0.1, ...;
//!   nothing listens there), labels `app`, `version` (v1, v2, v1, ...) and
//!   `security.istio.io/tlsMode: istio` (as Istio's injector labels pods
//!   with a sidecar, so clients use mTLS to them when a CA runs);
//! * `routing.yaml`: a DestinationRule per service (subsets v1, v2) and a
//!   VirtualService for the first R services (`end-user: tester` to v2, the
//!   rest split 90/10 between v1 and v2);
//! * `extra.yaml`: what `endpoint` and `service` changes add (empty at first).
//!
//! The scenario's parameters and the changes applied so far live in the
//! hidden file `.loadgen-scenario.json` (pilotfish skips hidden files); each
//! file is a pure function of that state, so generation is deterministic and
//! a change rewrites only the files it touches, each atomically (a hidden
//! temporary file, then a rename).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::model::DOMAIN_SUFFIX;
use crate::xds::types::XdsType;

/// Hidden state file: pilotfish ignores files whose name starts with a dot.
pub const STATE_FILE: &str = ".loadgen-scenario.json";
pub const SERVICES_FILE: &str = "services.yaml";
pub const WORKLOADS_FILE: &str = "workloads.yaml";
pub const ROUTING_FILE: &str = "routing.yaml";
pub const EXTRA_FILE: &str = "extra.yaml";
/// The one service port, as in bookinfo.
pub const PORT: u32 = 9080;
/// First octet after 127 of workload addresses; extra endpoints use the one below.
const ADDRESS_BASE: u32 = 100;
/// Hosts per address octet (1..=250, keeping clear of .0 and .255).
const HOSTS_PER_OCTET: u32 = 250;
/// Default route split of a generated VirtualService (percent to v1).
const DEFAULT_V1_WEIGHT: u32 = 90;
/// The header a generated VirtualService matches to send traffic to v2.
const TEST_USER: &str = "tester";

/// What to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioParams {
    pub services: usize,
    /// Workloads (endpoints) per service.
    pub endpoints: usize,
    pub namespaces: usize,
    /// Services that get a VirtualService (the first `routes` of them).
    pub routes: usize,
}

/// One change kind, as `pilotfish loadgen change --kind` names it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Add one WorkloadEntry to a service, or remove the one added last.
    Endpoint,
    /// Change the weights of one VirtualService.
    Virtualservice,
    /// Add a new ServiceEntry.
    Service,
    /// Change the labels of one DestinationRule subset.
    Subset,
}

impl ChangeKind {
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Endpoint => "endpoint",
            ChangeKind::Virtualservice => "virtualservice",
            ChangeKind::Service => "service",
            ChangeKind::Subset => "subset",
        }
    }

    /// The xDS types a proxy must receive again, the one that completes the
    /// change first (what convergence is measured on).
    pub fn affected(self) -> &'static [XdsType] {
        match self {
            ChangeKind::Endpoint | ChangeKind::Subset => &[XdsType::Endpoint],
            ChangeKind::Virtualservice => &[XdsType::Route],
            ChangeKind::Service => &[XdsType::Cluster, XdsType::Endpoint, XdsType::Route],
        }
    }
}

/// A WorkloadEntry added by an `endpoint` change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ExtraEndpoint {
    service: usize,
    seq: u64,
}

/// The scenario and every change applied to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioState {
    pub params: ScenarioParams,
    /// Sequence number of the last change applied.
    pub seq: u64,
    /// Percent to v1 of VirtualServices whose weights were changed.
    vs_weights: BTreeMap<usize, u32>,
    /// DestinationRules whose v2 subset now selects `version: v1`.
    flipped_subsets: BTreeMap<usize, bool>,
    extra_endpoints: Vec<ExtraEndpoint>,
    /// Services added by `service` changes: (seq, service whose workloads they select).
    added_services: Vec<(u64, usize)>,
}

/// One workload of the scenario (what a simulated proxy is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadRef {
    pub namespace: String,
    pub name: String,
    pub address: Option<String>,
}

/// What a change did.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeSummary {
    pub kind: ChangeKind,
    pub seq: u64,
    pub description: String,
    pub files: Vec<String>,
}

impl ScenarioParams {
    pub fn check(&self) -> Result<()> {
        if self.services == 0 || self.endpoints == 0 || self.namespaces == 0 {
            bail!("--services, --endpoints and --namespaces must be at least 1");
        }
        if self.routes > self.services {
            bail!(
                "--routes {} is more than --services {}",
                self.routes,
                self.services
            );
        }
        let workloads = self.services * self.endpoints;
        if workloads as u64 > u64::from(HOSTS_PER_OCTET * HOSTS_PER_OCTET * (255 - ADDRESS_BASE)) {
            bail!("{workloads} workloads do not fit in the loopback addresses this generator uses");
        }
        Ok(())
    }

    /// Digits in service numbers: at least 4, so names sort in order.
    fn width(&self) -> usize {
        self.services.saturating_sub(1).to_string().len().max(4)
    }

    pub fn service_name(&self, s: usize) -> String {
        format!("svc-{s:0w$}", w = self.width())
    }

    pub fn namespace(&self, s: usize) -> String {
        if self.namespaces == 1 {
            "default".to_string()
        } else {
            format!("mesh-{}", s % self.namespaces)
        }
    }

    pub fn workload_name(&self, s: usize, j: usize) -> String {
        format!("{}-{j}", self.service_name(s))
    }

    /// Every workload, in the order proxies are started.
    pub fn workloads(&self) -> Vec<WorkloadRef> {
        let mut out = Vec::with_capacity(self.services * self.endpoints);
        for s in 0..self.services {
            for j in 0..self.endpoints {
                out.push(WorkloadRef {
                    namespace: self.namespace(s),
                    name: self.workload_name(s, j),
                    address: Some(address(ADDRESS_BASE, (s * self.endpoints + j) as u32)),
                });
            }
        }
        out
    }
}

/// `127.A.B.C` for the `n`th address of block `A = base + ...`.
fn address(base: u32, n: u32) -> String {
    let per_block = HOSTS_PER_OCTET * HOSTS_PER_OCTET;
    format!(
        "127.{}.{}.{}",
        base + n / per_block,
        (n / HOSTS_PER_OCTET) % HOSTS_PER_OCTET,
        n % HOSTS_PER_OCTET + 1
    )
}

/// Address of an endpoint added by change `seq`, in the block below the workloads'.
fn extra_address(seq: u64) -> String {
    address(
        ADDRESS_BASE - 1,
        (seq % u64::from(HOSTS_PER_OCTET * HOSTS_PER_OCTET)) as u32,
    )
}

fn version_label(j: usize) -> &'static str {
    if j.is_multiple_of(2) { "v1" } else { "v2" }
}

impl ScenarioState {
    pub fn new(params: ScenarioParams) -> Self {
        ScenarioState {
            params,
            seq: 0,
            vs_weights: BTreeMap::new(),
            flipped_subsets: BTreeMap::new(),
            extra_endpoints: Vec::new(),
            added_services: Vec::new(),
        }
    }

    fn render_services(&self) -> String {
        let p = &self.params;
        let mut out = String::with_capacity(p.services * 400);
        out.push_str(
            "# Generated by `pilotfish loadgen scenario`: one ServiceEntry per service.\n",
        );
        for s in 0..p.services {
            service_entry(
                &mut out,
                &p.service_name(s),
                &p.namespace(s),
                &p.service_name(s),
            );
        }
        out
    }

    fn render_workloads(&self) -> String {
        let p = &self.params;
        let mut out = String::with_capacity(p.services * p.endpoints * 350);
        out.push_str(
            "# Generated by `pilotfish loadgen scenario`: one WorkloadEntry per simulated proxy.\n",
        );
        for (i, w) in p.workloads().iter().enumerate() {
            let s = i / p.endpoints;
            let j = i % p.endpoints;
            workload_entry(
                &mut out,
                &w.name,
                &w.namespace,
                w.address.as_deref().unwrap_or_default(),
                &p.service_name(s),
                version_label(j),
            );
        }
        out
    }

    fn render_routing(&self) -> String {
        let p = &self.params;
        let mut out = String::with_capacity(p.services * 300 + p.routes * 500);
        out.push_str(
            "# Generated by `pilotfish loadgen scenario`: DestinationRules and VirtualServices.\n",
        );
        for s in 0..p.services {
            let name = p.service_name(s);
            let v2 = if self.flipped_subsets.get(&s).copied().unwrap_or(false) {
                "v1"
            } else {
                "v2"
            };
            let _ = write!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  host: {name}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v2\n    labels: {{version: {v2}}}\n",
                ns = p.namespace(s),
            );
        }
        for s in 0..p.routes {
            let name = p.service_name(s);
            let w1 = self
                .vs_weights
                .get(&s)
                .copied()
                .unwrap_or(DEFAULT_V1_WEIGHT);
            let _ = write!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [{name}]\n  http:\n  - match:\n    - headers:\n        end-user: {{exact: {TEST_USER}}}\n    route:\n    - destination: {{host: {name}, subset: v2}}\n  - route:\n    - destination: {{host: {name}, subset: v1}}\n      weight: {w1}\n    - destination: {{host: {name}, subset: v2}}\n      weight: {w2}\n",
                ns = p.namespace(s),
                w2 = 100 - w1,
            );
        }
        out
    }

    fn render_extra(&self) -> String {
        let p = &self.params;
        let mut out = String::from(
            "# Written by `pilotfish loadgen change`: endpoints and services added by changes.\n",
        );
        for e in &self.extra_endpoints {
            workload_entry(
                &mut out,
                &extra_endpoint_name(p, e),
                &p.namespace(e.service),
                &extra_address(e.seq),
                &p.service_name(e.service),
                "v1",
            );
        }
        for (seq, s) in &self.added_services {
            service_entry(
                &mut out,
                &added_service_name(*seq),
                &p.namespace(*s),
                &p.service_name(*s),
            );
        }
        out
    }

    fn render(&self, file: &str) -> String {
        match file {
            SERVICES_FILE => self.render_services(),
            WORKLOADS_FILE => self.render_workloads(),
            ROUTING_FILE => self.render_routing(),
            _ => self.render_extra(),
        }
    }

    /// Applies change `seq` of `kind` to the state; returns what it did and
    /// the files to rewrite.
    fn apply(&mut self, kind: ChangeKind, seq: u64) -> Result<(String, &'static [&'static str])> {
        let p = self.params.clone();
        let pick = (seq as usize) % p.services;
        self.seq = seq;
        Ok(match kind {
            ChangeKind::Endpoint => {
                if let Some(last) = self.extra_endpoints.pop() {
                    (
                        format!(
                            "removed WorkloadEntry {}/{} from service {}",
                            p.namespace(last.service),
                            extra_endpoint_name(&p, &last),
                            p.service_name(last.service)
                        ),
                        &[EXTRA_FILE],
                    )
                } else {
                    let e = ExtraEndpoint { service: pick, seq };
                    let what = format!(
                        "added WorkloadEntry {}/{} ({}) to service {}",
                        p.namespace(pick),
                        extra_endpoint_name(&p, &e),
                        extra_address(seq),
                        p.service_name(pick)
                    );
                    self.extra_endpoints.push(e);
                    (what, &[EXTRA_FILE])
                }
            }
            ChangeKind::Virtualservice => {
                if p.routes == 0 {
                    bail!("the scenario has no VirtualServices (--routes 0)");
                }
                let s = (seq as usize) % p.routes;
                let old = self
                    .vs_weights
                    .get(&s)
                    .copied()
                    .unwrap_or(DEFAULT_V1_WEIGHT);
                let mut new = 10 + (seq * 37 % 81) as u32;
                if new == old {
                    new = if new >= 90 { 10 } else { new + 1 };
                }
                self.vs_weights.insert(s, new);
                (
                    format!(
                        "VirtualService {}/{}: v1/v2 weights {old}/{} -> {new}/{}",
                        p.namespace(s),
                        p.service_name(s),
                        100 - old,
                        100 - new
                    ),
                    &[ROUTING_FILE],
                )
            }
            ChangeKind::Service => {
                if self.added_services.iter().any(|(q, _)| *q == seq) {
                    bail!("change {seq} already added a service; pick another --seq");
                }
                self.added_services.push((seq, pick));
                (
                    format!(
                        "added ServiceEntry {}/{} selecting the workloads of {}",
                        p.namespace(pick),
                        added_service_name(seq),
                        p.service_name(pick)
                    ),
                    &[EXTRA_FILE],
                )
            }
            ChangeKind::Subset => {
                let flipped = self.flipped_subsets.entry(pick).or_default();
                *flipped = !*flipped;
                (
                    format!(
                        "DestinationRule {}/{}: subset v2 now selects version {}",
                        p.namespace(pick),
                        p.service_name(pick),
                        if *flipped { "v1" } else { "v2" }
                    ),
                    &[ROUTING_FILE],
                )
            }
        })
    }
}

fn extra_endpoint_name(p: &ScenarioParams, e: &ExtraEndpoint) -> String {
    format!("{}-extra-{}", p.service_name(e.service), e.seq)
}

fn added_service_name(seq: u64) -> String {
    format!("added-{seq}")
}

fn service_entry(out: &mut String, name: &str, ns: &str, app: &str) {
    let _ = write!(
        out,
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [{name}.{ns}.{DOMAIN_SUFFIX}]\n  location: MESH_INTERNAL\n  ports:\n  - {{number: {PORT}, name: http, protocol: HTTP}}\n  resolution: STATIC\n  workloadSelector:\n    labels: {{app: {app}}}\n"
    );
}

fn workload_entry(out: &mut String, name: &str, ns: &str, addr: &str, app: &str, version: &str) {
    let _ = write!(
        out,
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  address: {addr}\n  labels: {{app: {app}, version: {version}, security.istio.io/tlsMode: istio}}\n  serviceAccount: {app}\n  ports: {{http: {PORT}}}\n"
    );
}

/// Writes `text` to `dir/file` atomically: a hidden temporary file (which
/// pilotfish's watcher ignores), then a rename over the target.
fn write_atomic(dir: &Path, file: &str, text: &str) -> Result<PathBuf> {
    let target = dir.join(file);
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &target)
        .with_context(|| format!("rename {} to {}", tmp.display(), target.display()))?;
    Ok(target)
}

fn load_state(dir: &Path) -> Result<ScenarioState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "read {} (is {} a directory made by `pilotfish loadgen scenario`?)",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn save_state(dir: &Path, state: &ScenarioState) -> Result<()> {
    let text = serde_json::to_string_pretty(state)? + "\n";
    write_atomic(dir, STATE_FILE, &text)?;
    Ok(())
}

/// Writes a fresh scenario into `dir` (created if missing); returns the files.
pub fn generate(dir: &Path, params: ScenarioParams) -> Result<Vec<PathBuf>> {
    params.check()?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let state = ScenarioState::new(params);
    let mut files = Vec::new();
    for file in [SERVICES_FILE, WORKLOADS_FILE, ROUTING_FILE, EXTRA_FILE] {
        files.push(write_atomic(dir, file, &state.render(file))?);
    }
    save_state(dir, &state)?;
    Ok(files)
}

/// Applies one change to the scenario in `dir`: `seq` defaults to one more
/// than the last change's. Returns what changed once the files are in place.
pub fn change(dir: &Path, kind: ChangeKind, seq: Option<u64>) -> Result<ChangeSummary> {
    let mut state = load_state(dir)?;
    let seq = seq.unwrap_or(state.seq + 1);
    let (description, files) = state.apply(kind, seq)?;
    // State first: if a file write fails, rerunning the change re-renders it.
    save_state(dir, &state)?;
    let mut written = Vec::new();
    for file in files {
        write_atomic(dir, file, &state.render(file))?;
        written.push(file.to_string());
    }
    Ok(ChangeSummary {
        kind,
        seq,
        description,
        files: written,
    })
}

/// The WorkloadEntries of the YAML files in `dir` (any config dir, not only
/// generated ones), sorted by namespace and name.
pub fn read_workloads(dir: &Path) -> Result<Vec<WorkloadRef>> {
    // The generated scenario knows its workloads (in proxy order) without parsing.
    if let Ok(state) = load_state(dir) {
        return Ok(state.params.workloads());
    }
    let (_, config) = crate::config::watch::load(dir, &crate::metrics::Metrics::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out: Vec<WorkloadRef> = config
        .snapshot
        .resources
        .values()
        .filter_map(|r| match &r.spec {
            crate::model::Spec::WorkloadEntry(w) => Some(WorkloadRef {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                address: w.address.clone(),
            }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    if out.is_empty() {
        bail!("no WorkloadEntry in {}", dir.display());
    }
    Ok(out)
}
