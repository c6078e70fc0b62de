//! The envelope around a typed spec, and the config snapshot.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A point in time (`metadata.creationTimestamp`).
pub use k8s_openapi::jiff::Timestamp;

use super::istio::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec,
    WorkloadEntrySpec, WorkloadGroupSpec,
};
use super::security::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec};
use super::telemetry::TelemetrySpec;
use super::virtual_services::VirtualServiceIndex;

/// The kinds pilotfish reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    ServiceEntry,
    WorkloadEntry,
    VirtualService,
    DestinationRule,
    PeerAuthentication,
    Gateway,
    Sidecar,
    WorkloadGroup,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::PeerAuthentication,
        Kind::Gateway,
        Kind::Sidecar,
        Kind::WorkloadGroup,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Gateway => "Gateway",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Telemetry => "Telemetry",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn group(self) -> &'static str {
        match self {
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                "security.istio.io"
            }
            Kind::Telemetry => "telemetry.istio.io",
            Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::Sidecar
            | Kind::WorkloadGroup => "networking.istio.io",
        }
    }

    /// API versions accepted for this kind (Istio serves the same schema under each).
    pub fn versions(self) -> &'static [&'static str] {
        match self.group() {
            "security.istio.io" => &["v1", "v1beta1"],
            "telemetry.istio.io" => &["v1", "v1alpha1"],
            _ => &["v1", "v1beta1", "v1alpha3"],
        }
    }

    /// The version Kubernetes stores objects in, as Istio's CRDs choose it:
    /// `v1`, except Telemetry, which Istio still stores as `v1alpha1`.
    pub fn storage_version(self) -> &'static str {
        match self {
            Kind::Telemetry => "v1alpha1",
            _ => "v1",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The part of Kubernetes object metadata pilotfish uses; other metadata
/// fields (uid, resourceVersion, ...) are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the object was created (RFC 3339); Istio orders VirtualServices,
    /// Sidecars and others by it. Files usually lack it.
    #[serde(default, rename = "creationTimestamp")]
    pub creation_timestamp: Option<Timestamp>,
}

/// A typed spec. Variants differ in size; resources are few and long-lived.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Spec {
    ServiceEntry(ServiceEntrySpec),
    WorkloadEntry(WorkloadEntrySpec),
    VirtualService(VirtualServiceSpec),
    DestinationRule(DestinationRuleSpec),
    PeerAuthentication(PeerAuthenticationSpec),
    Gateway(GatewaySpec),
    Sidecar(SidecarSpec),
    WorkloadGroup(WorkloadGroupSpec),
    AuthorizationPolicy(AuthorizationPolicySpec),
    RequestAuthentication(RequestAuthenticationSpec),
    Telemetry(TelemetrySpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::WorkloadEntry(_) => Kind::WorkloadEntry,
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::PeerAuthentication(_) => Kind::PeerAuthentication,
            Spec::Gateway(_) => Kind::Gateway,
            Spec::Sidecar(_) => Kind::Sidecar,
            Spec::WorkloadGroup(_) => Kind::WorkloadGroup,
            Spec::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Spec::RequestAuthentication(_) => Kind::RequestAuthentication,
            Spec::Telemetry(_) => Kind::Telemetry,
        }
    }
}

/// Where a resource came from, for error messages and /debug.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based document number within the file.
    pub document: usize,
}

/// One Istio resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`, when given.
    pub created: Option<Timestamp>,
    pub spec: Spec,
    pub origin: Origin,
}

impl Resource {
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.spec.kind(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Istio's order among resources of one kind: the oldest first (no
    /// creation time before any), then, as files usually have none, by
    /// namespace and name.
    pub fn creation_order(&self) -> (Option<Timestamp>, &str, &str) {
        (self.created, &self.namespace, &self.name)
    }
}

/// Identity of a resource: kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Every resource in force, at one moment. Cheap to share (`Arc`s inside).
#[derive(Clone, Debug, Default)]
pub struct ConfigSnapshot {
    pub resources: BTreeMap<ResourceKey, Arc<Resource>>,
    /// Routing resources by host, built on first use (translation looks
    /// them up once per service; scanning every resource each time would
    /// make a build quadratic in the number of services).
    hosts: std::sync::OnceLock<HostIndex>,
    /// The effective VirtualServices, built on first use.
    virtual_services: std::sync::OnceLock<VirtualServiceIndex>,
}

/// DestinationRules and (mesh) VirtualServices by the host they name,
/// resolved to an FQDN: DestinationRules in namespace/name order, the
/// effective VirtualServices (delegates merged) in Istio's order.
#[derive(Clone, Debug, Default)]
pub struct HostIndex {
    pub destination_rules: std::collections::HashMap<String, Vec<Arc<Resource>>>,
    pub wildcard_destination_rules: Vec<(String, Arc<Resource>)>,
    pub virtual_services: std::collections::HashMap<String, Vec<Arc<Resource>>>,
    pub wildcard_virtual_services: Vec<(String, Arc<Resource>)>,
}

macro_rules! typed_iter {
    ($fn:ident, $variant:ident, $ty:ty) => {
        /// All resources of this kind, ordered by namespace and name.
        pub fn $fn(&self) -> impl Iterator<Item = (&Resource, &$ty)> {
            self.of_kind(Kind::$variant).filter_map(|r| match &r.spec {
                Spec::$variant(s) => Some((r, s)),
                _ => None,
            })
        }
    };
}

impl ConfigSnapshot {
    pub fn new(resources: BTreeMap<ResourceKey, Arc<Resource>>) -> Self {
        ConfigSnapshot {
            resources,
            hosts: Default::default(),
            virtual_services: Default::default(),
        }
    }

    /// The resources of one kind, ordered by namespace and name: keys sort
    /// by kind first, so this is a range of the map, not a scan of it
    /// (translation asks per workload; a scan would make builds quadratic).
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        let first = ResourceKey {
            kind,
            namespace: String::new(),
            name: String::new(),
        };
        self.resources
            .range(first..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, r)| r.as_ref())
    }

    /// The VirtualServices in force, delegates merged into their roots, in
    /// Istio's order (built once per snapshot).
    pub fn virtual_service_index(&self) -> &VirtualServiceIndex {
        self.virtual_services
            .get_or_init(|| super::virtual_services::build(self.resources.values()))
    }

    /// The effective VirtualServices (see [`VirtualServiceIndex`]): what
    /// translation applies, in Istio's order. Delegates are not among them.
    pub fn effective_virtual_services(
        &self,
    ) -> impl Iterator<Item = (&Resource, &VirtualServiceSpec)> {
        self.virtual_service_index()
            .effective
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(s) => Some((r.as_ref(), s)),
                _ => None,
            })
    }

    /// The host index (built once per snapshot).
    pub fn hosts(&self) -> &HostIndex {
        self.hosts.get_or_init(|| {
            let mut idx = HostIndex::default();
            for r in self.resources.values() {
                let Spec::DestinationRule(dr) = &r.spec else {
                    continue;
                };
                let h = super::host::resolve(&dr.host, &r.namespace);
                if h.starts_with('*') {
                    idx.wildcard_destination_rules.push((h, Arc::clone(r)));
                } else {
                    idx.destination_rules
                        .entry(h)
                        .or_default()
                        .push(Arc::clone(r));
                }
            }
            for r in &self.virtual_service_index().effective {
                let Spec::VirtualService(vs) = &r.spec else {
                    continue;
                };
                if !(vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")) {
                    continue;
                }
                for h in &vs.hosts {
                    let h = super::host::resolve(h, &r.namespace);
                    if h.starts_with('*') {
                        idx.wildcard_virtual_services.push((h, Arc::clone(r)));
                    } else {
                        let list = idx.virtual_services.entry(h).or_default();
                        if !list.iter().any(|x| Arc::ptr_eq(x, r)) {
                            list.push(Arc::clone(r));
                        }
                    }
                }
            }
            idx
        })
    }

    typed_iter!(service_entries, ServiceEntry, ServiceEntrySpec);
    typed_iter!(workload_entries, WorkloadEntry, WorkloadEntrySpec);
    typed_iter!(virtual_services, VirtualService, VirtualServiceSpec);
    typed_iter!(destination_rules, DestinationRule, DestinationRuleSpec);
    typed_iter!(
        peer_authentications,
        PeerAuthentication,
        PeerAuthenticationSpec
    );
    typed_iter!(gateways, Gateway, GatewaySpec);
    typed_iter!(sidecars, Sidecar, SidecarSpec);
    typed_iter!(workload_groups, WorkloadGroup, WorkloadGroupSpec);
    typed_iter!(
        authorization_policies,
        AuthorizationPolicy,
        AuthorizationPolicySpec
    );
    typed_iter!(
        request_authentications,
        RequestAuthentication,
        RequestAuthenticationSpec
    );
    typed_iter!(telemetries, Telemetry, TelemetrySpec);
}
