//! Sidecars' outbound TCP/TLS listeners (`translate::outbound_tcp`): one
//! template per view, shared by the sidecars that see the same thing (the
//! key is the namespace, plus the outcome of source-dependent matches), then
//! bound to each workload's address in a layer of its own, so a sidecar's
//! other listeners do not depend on every service.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Layer, XdsSnapshot};
use crate::model::WorkloadKey;
use crate::xds::translate::outbound_tcp::{self, Source, Template};
use crate::xds::translate::{Mesh, gateway};
use crate::xds::types::XdsType;

/// One sidecar's outbound TCP/TLS listeners.
#[derive(Clone, Debug, Default)]
pub struct BoundLayer {
    /// Hash of what binding used (template version, address, inbound ports).
    pub input: u64,
    pub listeners: Arc<Layer>,
}

/// The templates by view key, and every sidecar's bound layer, reusing
/// `prev`'s where their inputs did not change.
pub(super) fn build(
    prev: &XdsSnapshot,
    mesh: &Mesh<'_>,
) -> (
    HashMap<String, Arc<Template>>,
    HashMap<WorkloadKey, BoundLayer>,
) {
    let mut templates: HashMap<String, Arc<Template>> = HashMap::new();
    let mut bound = HashMap::new();
    for (key, w) in &mesh.registry.workloads {
        if gateway::is_gateway(mesh, w) {
            continue;
        }
        let view = outbound_tcp::view_key(mesh, w);
        let t = Arc::clone(templates.entry(view.clone()).or_insert_with(|| {
            let t = outbound_tcp::template(mesh, Source::of(w));
            match prev.outbound_listeners.get(&view) {
                Some(p) if p.version == t.version => Arc::clone(p),
                _ => Arc::new(t),
            }
        }));
        let input = outbound_tcp::bind_input(mesh, &t, w);
        let old = prev.outbound_bound.get(key);
        let layer = match old.filter(|o| o.input == input) {
            Some(o) => o.clone(),
            None => BoundLayer {
                input,
                listeners: Layer::encode(
                    XdsType::Listener,
                    outbound_tcp::bind(mesh, &t, w)
                        .0
                        .into_iter()
                        .map(|l| (l.name.clone(), l)),
                )
                .reuse(old.map(|o| &o.listeners)),
            },
        };
        bound.insert(key.clone(), layer);
    }
    (templates, bound)
}
