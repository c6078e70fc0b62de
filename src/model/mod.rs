//! The domain every role shares: typed Istio resources, the config snapshot,
//! and the service registry derived from it. Depends on nothing else in the crate.

pub mod autoregister;
pub mod crd;
pub mod host;
pub mod istio;
pub mod registry;
pub mod resource;
pub mod security;
pub mod telemetry;
pub mod virtual_services;

use std::fmt;

pub use registry::Registry;
pub use resource::{ConfigSnapshot, Kind, ObjectMeta, Resource, ResourceKey, Spec, Timestamp};

/// The DNS suffix of mesh-internal service names (Istio's default).
pub const DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// A workload (a WorkloadEntry) and so the proxy that runs beside it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct WorkloadKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
