//! The xDS cache: every resource a proxy can be sent, encoded once.
//!
//! A proxy's resources of one type are the union of a few shared *layers*:
//! clusters = mesh-wide outbound clusters + the workload's inbound clusters
//! (plus per-client-locality DNS clusters, `cache/locality.rs`),
//! endpoints = mesh-wide (plus per-client-locality layers, `cache/locality.rs`),
//! routes = per view (namespace and Sidecar; see `cache/scope.rs`, which also
//! narrows clusters and endpoints for views that do not see everything),
//! listeners = per workload (plus its outbound TCP/TLS listeners, translated
//! once per view: see `cache/outbound.rs`).
//! Gateway proxies (see `cache/gateway.rs`) swap in their own listeners (per
//! workload) and route tables (per set of Gateways), plus their credentials.
//! Proxies that see the same thing hold the same `Arc<Layer>`; a layer whose
//! content did not change keeps its identity across snapshots, so a stream can
//! skip it with a pointer comparison.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prost::Message;

use super::encoded::Encoded;
use super::types::XdsType;
use crate::model::istio::OutboundMode;
use crate::model::{ConfigSnapshot, Registry, WorkloadKey};

/// Encoded resources of one type that a group of proxies shares.
#[derive(Debug, Default)]
pub struct Layer {
    /// Hash over the names and versions of the resources.
    pub version: u64,
    pub resources: BTreeMap<String, Arc<Encoded>>,
    /// Every resource's SotW bytes back to back, made once on first use: a
    /// full-set response (Listener, Cluster) to any number of proxies writes
    /// these shared bytes instead of copying small resources per stream.
    sotw_blob: std::sync::OnceLock<bytes::Bytes>,
    /// The same for delta entries: a delta stream's first answer with every
    /// resource of the layer shares these bytes too.
    delta_blob: std::sync::OnceLock<bytes::Bytes>,
    /// What changed since the layer this one replaced, computed once when
    /// it was built: a stream in sync with that layer only looks at these.
    pub diff: Option<LayerDiff>,
}

/// The difference between a layer and the one it replaced.
#[derive(Debug, Default)]
pub struct LayerDiff {
    /// `version` of the replaced layer.
    pub from: u64,
    /// Resources added or changed.
    pub changed: Vec<Arc<Encoded>>,
    /// Names no longer present.
    pub removed: Vec<Arc<str>>,
}

impl LayerDiff {
    /// Both maps are sorted by name: one merge pass.
    fn between(
        from: u64,
        old: &BTreeMap<String, Arc<Encoded>>,
        new: &BTreeMap<String, Arc<Encoded>>,
    ) -> Self {
        let mut d = LayerDiff {
            from,
            ..Default::default()
        };
        let mut o = old.iter().peekable();
        let mut n = new.iter().peekable();
        loop {
            match (o.peek(), n.peek()) {
                (None, None) => break,
                (Some((_, e)), None) => {
                    d.removed.push(Arc::clone(&e.name));
                    o.next();
                }
                (None, Some((_, e))) => {
                    d.changed.push(Arc::clone(e));
                    n.next();
                }
                (Some((ok, oe)), Some((nk, ne))) => match ok.cmp(nk) {
                    std::cmp::Ordering::Less => {
                        d.removed.push(Arc::clone(&oe.name));
                        o.next();
                    }
                    std::cmp::Ordering::Greater => {
                        d.changed.push(Arc::clone(ne));
                        n.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if oe.version != ne.version {
                            d.changed.push(Arc::clone(ne));
                        }
                        o.next();
                        n.next();
                    }
                },
            }
        }
        d
    }
}

impl Layer {
    /// Encodes each `(name, message)` once.
    pub fn encode<M: Message>(t: XdsType, items: impl IntoIterator<Item = (String, M)>) -> Self {
        let resources: BTreeMap<String, Arc<Encoded>> = items
            .into_iter()
            .map(|(name, msg)| {
                let enc = Encoded::new(t.type_url(), name.clone(), &msg);
                (name, Arc::new(enc))
            })
            .collect();
        Self::from_encoded(resources)
    }

    pub fn from_encoded(resources: BTreeMap<String, Arc<Encoded>>) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (name, enc) in &resources {
            h.update(name.as_bytes());
            h.update(&[0]);
            h.update(enc.version.as_bytes());
        }
        Layer {
            version: h.digest(),
            resources,
            sotw_blob: Default::default(),
            delta_blob: Default::default(),
            diff: None,
        }
    }

    /// All resources' SotW entries concatenated (see `sotw_blob`).
    pub fn sotw_blob(&self) -> &bytes::Bytes {
        self.sotw_blob.get_or_init(|| {
            let len = self.resources.values().map(|e| e.sotw.len()).sum();
            let mut b = bytes::BytesMut::with_capacity(len);
            for e in self.resources.values() {
                b.extend_from_slice(&e.sotw);
            }
            b.freeze()
        })
    }

    /// All resources' delta entries concatenated (see `delta_blob`).
    pub fn delta_blob(&self) -> &bytes::Bytes {
        self.delta_blob.get_or_init(|| {
            let len = self.resources.values().map(|e| e.delta_len()).sum();
            let mut b = bytes::BytesMut::with_capacity(len);
            for e in self.resources.values() {
                b.extend_from_slice(&e.delta_head);
                b.extend_from_slice(&e.any());
            }
            b.freeze()
        })
    }

    /// Keeps `prev` (and so its identity) when nothing changed; otherwise
    /// records what changed since `prev`.
    pub fn reuse(mut self, prev: Option<&Arc<Layer>>) -> Arc<Layer> {
        match prev {
            Some(p) if p.version == self.version => Arc::clone(p),
            Some(p) => {
                self.diff = Some(LayerDiff::between(p.version, &p.resources, &self.resources));
                Arc::new(self)
            }
            None => Arc::new(self),
        }
    }
}

/// What one workload's sidecar gets beyond the shared layers.
#[derive(Clone, Debug, Default)]
pub struct WorkloadLayers {
    /// Hash of everything these layers were translated from (the workload
    /// and the ports of the services selecting it): equal means reusable.
    pub input: u64,
    pub clusters: Arc<Layer>,
    pub listeners: Arc<Layer>,
}

/// Every encoded resource for every proxy, at one config generation.
#[derive(Clone, Debug, Default)]
pub struct XdsSnapshot {
    pub generation: u64,
    pub clusters: Arc<Layer>,
    pub endpoints: Arc<Layer>,
    /// Locality-balanced endpoints, per client locality (`cache/locality.rs`).
    pub locality_endpoints: locality::LocalityEndpoints,
    /// Outbound route tables, clusters and endpoints per view (namespace
    /// and Sidecar), and each workload's view (see `cache/scope.rs`).
    pub views: scope::Views,
    /// Sidecars' outbound TCP/TLS listeners before binding, by view (the
    /// Sidecar scope, plus source-dependent match outcomes: see
    /// `translate::outbound_tcp::view_key`).
    pub outbound_listeners: HashMap<
        crate::xds::translate::scope::ScopeKey,
        Arc<crate::xds::translate::outbound_tcp::Template>,
    >,
    /// The same listeners bound to each sidecar's address.
    pub outbound_bound: HashMap<WorkloadKey, outbound::BoundLayer>,
    pub workloads: HashMap<WorkloadKey, WorkloadLayers>,
    /// SDS secrets (`default` key pair, `ROOTCA` bundle), by workload: a
    /// proxy only ever sees its own workload's certificate.
    pub secrets: HashMap<WorkloadKey, Arc<Layer>>,
    /// Gateway proxies: their listeners and route tables replace a
    /// sidecar's (see `translate::gateway`).
    pub gateways: HashMap<WorkloadKey, gateway::GatewayLayers>,
    /// Gateway credentials (`credentialName`) over SDS, by gateway workload:
    /// only those its Gateways name.
    pub credentials: HashMap<WorkloadKey, Arc<Layer>>,
    /// The registry this snapshot was built from (for roles that read
    /// services and workloads downstream of translation, like telemetry).
    pub registry: Arc<Registry>,
    /// When the change this snapshot carries was first seen (config edit or
    /// certificate renewal), for the convergence histogram.
    pub changed_at: Option<std::time::Instant>,
    /// The config this snapshot was translated from (for roles downstream
    /// of translation: telemetry applies Telemetry resources to metrics).
    pub config: Arc<crate::config::ConfigState>,
}

impl XdsSnapshot {
    /// The resources `workload`'s proxy sees, or None when no such workload exists.
    pub fn resources_for(&self, workload: &WorkloadKey) -> Option<ProxyResources> {
        if let Some(gw) = self.gateways.get(workload) {
            return Some(self.gateway_resources(workload, gw));
        }
        let own = self.workloads.get(workload)?;
        let view = self.outbound_of(workload)?;
        Some(ProxyResources {
            layers: [
                self.cluster_layers(
                    workload,
                    [Arc::clone(&view.clusters), Arc::clone(&own.clusters)],
                ),
                self.endpoint_layers(workload, &view.endpoints),
                std::iter::once(Arc::clone(&own.listeners))
                    .chain(
                        self.outbound_bound
                            .get(workload)
                            .map(|o| Arc::clone(&o.listeners)),
                    )
                    .collect(),
                vec![Arc::clone(&view.routes)],
                // Its certificate, and the credentials its namespace's
                // DestinationRules name (TLS origination).
                self.secrets
                    .get(workload)
                    .into_iter()
                    .chain(self.credentials.get(workload))
                    .cloned()
                    .collect(),
            ],
        })
    }
}

/// The layers one proxy sees, per type (indexed by `XdsType::index`).
#[derive(Clone, Debug, Default)]
pub struct ProxyResources {
    pub layers: [Vec<Arc<Layer>>; XdsType::COUNT],
}

impl ProxyResources {
    pub fn get(&self, t: XdsType, name: &str) -> Option<&Arc<Encoded>> {
        self.layers[t.index()]
            .iter()
            .find_map(|l| l.resources.get(name))
    }

    pub fn all(&self, t: XdsType) -> impl Iterator<Item = &Arc<Encoded>> {
        self.layers[t.index()]
            .iter()
            .flat_map(|l| l.resources.values())
    }

    /// True when type `t` is made of exactly the same layers in both.
    pub fn same_layers(&self, other: &ProxyResources, t: XdsType) -> bool {
        let (a, b) = (&self.layers[t.index()], &other.layers[t.index()]);
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
    }
}

impl XdsSnapshot {
    /// Translates and encodes everything for `config`, keeping the layers of
    /// `prev` whose content did not change (so streams skip them cheaply).
    pub fn build(
        prev: &XdsSnapshot,
        config: &ConfigSnapshot,
        registry: &Arc<Registry>,
        trust_domain: &str,
        mtls: bool,
    ) -> XdsSnapshot {
        Self::build_with(
            prev,
            config,
            registry,
            trust_domain,
            mtls,
            None,
            OutboundMode::AllowAny,
        )
    }

    /// `build`, with the Zipkin collector Telemetry's `zipkin` provider uses.
    pub fn build_with(
        prev: &XdsSnapshot,
        config: &ConfigSnapshot,
        registry: &Arc<Registry>,
        trust_domain: &str,
        mtls: bool,
        zipkin: Option<&str>,
        outbound: OutboundMode,
    ) -> XdsSnapshot {
        use super::translate::{Mesh, clusters, endpoints, listeners};
        let mesh = Mesh::new(config, registry)
            .with_trust_domain(trust_domain)
            .with_mtls(mtls)
            .with_zipkin(zipkin)
            .with_outbound_policy(outbound);

        let clusters = Layer::encode(
            XdsType::Cluster,
            clusters::outbound(&mesh)
                .into_iter()
                .map(|c| (c.name.clone(), c)),
        )
        .reuse(Some(&prev.clusters));
        let endpoints = Layer::encode(
            XdsType::Endpoint,
            endpoints::assignments(&mesh)
                .into_iter()
                .map(|a| (a.cluster_name.clone(), a)),
        )
        .reuse(Some(&prev.endpoints));
        let locality_endpoints =
            locality::LocalityEndpoints::build(&prev.locality_endpoints, &mesh);

        // Route tables, and the clusters and endpoints of views that do not
        // see everything, per namespace and Sidecar.
        let views = scope::build(prev, &mesh, &clusters, &endpoints);

        let workloads = registry
            .workloads
            .iter()
            .map(|(key, w)| {
                let input = {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::hash::DefaultHasher::new();
                    w.hash(&mut h);
                    for s in registry.services_of(w) {
                        s.hostname.hash(&mut h);
                        s.ports.hash(&mut h);
                    }
                    // Telemetry resources that apply (access logs, tracing).
                    let telemetry = crate::model::telemetry::resolve::applicable(
                        config,
                        &key.namespace,
                        &w.labels,
                    );
                    for spec in telemetry {
                        format!("{spec:?}").hash(&mut h);
                    }
                    mesh.zipkin.hash(&mut h);
                    // AuthorizationPolicy and RequestAuthentication.
                    crate::xds::translate::authz::hash_inputs(&mesh, w, &mut h);
                    // The server side of mTLS per port (PeerAuthentication).
                    mesh.mtls.hash(&mut h);
                    // A Sidecar's ingress listeners and inbound connection pool.
                    crate::xds::translate::inbound::hash_inputs(&mesh, w, &mut h);
                    if mesh.mtls {
                        for port in crate::xds::translate::inbound::port_numbers(&mesh, w, false) {
                            crate::xds::translate::mtls::peer_mode(&mesh, w, port).hash(&mut h);
                        }
                    }
                    h.finish()
                };
                let old = prev.workloads.get(key);
                if let Some(o) = old.filter(|o| o.input == input) {
                    // Nothing this workload's own resources depend on changed.
                    let layers = WorkloadLayers {
                        input,
                        clusters: Arc::clone(&o.clusters),
                        listeners: Arc::clone(&o.listeners),
                    };
                    return (key.clone(), layers);
                }
                let layers = WorkloadLayers {
                    input,
                    clusters: Layer::encode(
                        XdsType::Cluster,
                        clusters::inbound(&mesh, w)
                            .into_iter()
                            .map(|c| (c.name.clone(), c)),
                    )
                    .reuse(old.map(|o| &o.clusters)),
                    listeners: Layer::encode(
                        XdsType::Listener,
                        listeners::for_workload(&mesh, w)
                            .into_iter()
                            .map(|l| (l.name.clone(), l)),
                    )
                    .reuse(old.map(|o| &o.listeners)),
                };
                (key.clone(), layers)
            })
            .collect();

        let (outbound_listeners, outbound_bound) = outbound::build(prev, &mesh, &views);

        XdsSnapshot {
            generation: prev.generation + 1,
            clusters,
            endpoints,
            locality_endpoints,
            views,
            outbound_listeners,
            outbound_bound,
            workloads,
            secrets: prev.secrets.clone(),
            gateways: gateway::build(prev, &mesh),
            credentials: prev.credentials.clone(),
            registry: Arc::clone(registry),
            changed_at: None,
            config: Arc::clone(&prev.config),
        }
    }
}

pub mod gateway;
pub mod locality;
pub mod outbound;
pub mod scope;
#[cfg(test)]
mod tests;
