//! CustomResourceDefinitions of the Istio kinds pilotfish reads, generated
//! from the typed specs by kube's `CustomResource` derive.
//!
//! The derive describes one version per type. The storage version (`v1`) is
//! derived on the spec types themselves ([`VirtualService`] and the others);
//! each older version Istio still serves is derived on a newtype around the
//! same spec (so every version has the same schema, as in Istio), in the
//! [`v1beta1`] and [`v1alpha3`] modules. [`crds`] merges them per kind with
//! kube's `merge_crds`. `pilotfish crds` prints the result, and `crds/` holds
//! it (`make crds`); a test fails when the two differ.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::crd::{CustomResourceExt, MergeError, merge_crds};

use super::istio::{DestinationRule, ServiceEntry, VirtualService, WorkloadEntry};
use super::security::PeerAuthentication;

#[cfg(test)]
mod tests;

/// The version Kubernetes stores objects in (Istio's choice too).
pub const STORAGE_VERSION: &str = "v1";

/// An older version Istio still serves: for each kind, a newtype around the
/// v1 spec with the same group, kind and plural, served but not stored. (No
/// doc comment on the newtype: it would replace the spec's description.)
macro_rules! served_version {
    ($version:literal: $( $spec:ident($inner:path) = $group:literal, $kind:literal, $plural:literal, $doc:literal; )*) => {
        use kube::CustomResource;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};

        use crate::model::istio::IstioStatus;
        $(
            #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, CustomResource)]
            #[kube(
                group = $group,
                version = $version,
                kind = $kind,
                doc = $doc,
                namespaced,
                plural = $plural,
                status = "IstioStatus",
                storage = false
            )]
            #[serde(transparent)]
            pub struct $spec(pub $inner);
        )*
    };
}

/// The Istio kinds as served at `v1beta1`.
pub mod v1beta1 {
    use crate::model::{istio, security};

    served_version!("v1beta1":
        VirtualServiceSpec(istio::VirtualServiceSpec) = "networking.istio.io", "VirtualService", "virtualservices",
            "Istio VirtualService: HTTP, TLS and TCP routing rules for a set of hosts.";
        DestinationRuleSpec(istio::DestinationRuleSpec) = "networking.istio.io", "DestinationRule", "destinationrules",
            "Istio DestinationRule: load balancing, connection pool, outlier detection and TLS policies for a service and its subsets.";
        ServiceEntrySpec(istio::ServiceEntrySpec) = "networking.istio.io", "ServiceEntry", "serviceentries",
            "Istio ServiceEntry: adds services (usually outside the mesh) to the service registry.";
        WorkloadEntrySpec(istio::WorkloadEntrySpec) = "networking.istio.io", "WorkloadEntry", "workloadentries",
            "Istio WorkloadEntry: a non-Kubernetes workload (VM, bare metal) in the mesh.";
        PeerAuthenticationSpec(security::PeerAuthenticationSpec) = "security.istio.io", "PeerAuthentication", "peerauthentications",
            "Istio PeerAuthentication: how workloads accept peer traffic (mutual TLS).";
    );
}

/// The `networking.istio.io` kinds as served at `v1alpha3`.
pub mod v1alpha3 {
    use crate::model::istio;

    served_version!("v1alpha3":
        VirtualServiceSpec(istio::VirtualServiceSpec) = "networking.istio.io", "VirtualService", "virtualservices",
            "Istio VirtualService: HTTP, TLS and TCP routing rules for a set of hosts.";
        DestinationRuleSpec(istio::DestinationRuleSpec) = "networking.istio.io", "DestinationRule", "destinationrules",
            "Istio DestinationRule: load balancing, connection pool, outlier detection and TLS policies for a service and its subsets.";
        ServiceEntrySpec(istio::ServiceEntrySpec) = "networking.istio.io", "ServiceEntry", "serviceentries",
            "Istio ServiceEntry: adds services (usually outside the mesh) to the service registry.";
        WorkloadEntrySpec(istio::WorkloadEntrySpec) = "networking.istio.io", "WorkloadEntry", "workloadentries",
            "Istio WorkloadEntry: a non-Kubernetes workload (VM, bare metal) in the mesh.";
    );
}

/// Every CRD, ordered by name (`<plural>.<group>`), each with its versions
/// ordered by name.
pub fn crds() -> Result<Vec<CustomResourceDefinition>, MergeError> {
    let mut crds = vec![
        merge(vec![
            VirtualService::crd(),
            v1beta1::VirtualService::crd(),
            v1alpha3::VirtualService::crd(),
        ])?,
        merge(vec![
            DestinationRule::crd(),
            v1beta1::DestinationRule::crd(),
            v1alpha3::DestinationRule::crd(),
        ])?,
        merge(vec![
            ServiceEntry::crd(),
            v1beta1::ServiceEntry::crd(),
            v1alpha3::ServiceEntry::crd(),
        ])?,
        merge(vec![
            WorkloadEntry::crd(),
            v1beta1::WorkloadEntry::crd(),
            v1alpha3::WorkloadEntry::crd(),
        ])?,
        merge(vec![
            PeerAuthentication::crd(),
            v1beta1::PeerAuthentication::crd(),
        ])?,
    ];
    crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(crds)
}

/// One CRD from the single-version CRDs of one kind. The printer columns are
/// declared once, on the v1 spec, and shown by every version (as in Istio).
fn merge(versions: Vec<CustomResourceDefinition>) -> Result<CustomResourceDefinition, MergeError> {
    let mut crd = merge_crds(versions, STORAGE_VERSION)?;
    let columns = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == STORAGE_VERSION)
        .and_then(|v| v.additional_printer_columns.clone());
    for version in &mut crd.spec.versions {
        version.additional_printer_columns.clone_from(&columns);
    }
    crd.spec.versions.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(crd)
}
