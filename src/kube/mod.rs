//! The Kubernetes source (Galley's other input): watches the API server and
//! turns Kubernetes objects into the same model the file source produces.
//!
//! ```text
//!  API server --list/watch--> watcher per type --> Index (last good object per key)
//!                                                     | build (pure, convert.rs)
//!                                                     v
//!                                 watch<ConfigState> (the channel `serve` uses for files)
//! ```
//!
//! * A Kubernetes Service becomes a ServiceEntry (host
//!   `name.namespace.svc.cluster.local`, MESH_INTERNAL, STATIC, its selector
//!   as workloadSelector; Istio's protocol selection from appProtocol or the
//!   port name prefix).
//! * A Pod with an IP becomes a WorkloadEntry named after the pod (labels,
//!   service account, pod IP); EndpointSlice readiness sets
//!   [`crate::model::registry::READY_ANNOTATION`], so a pod that is not ready
//!   keeps its sidecar's config but is no endpoint.
//! * The Istio CRDs are parsed and validated exactly as file documents are.
//!
//! The translator cannot tell the sources apart: both publish `ConfigState`s.

pub mod ca_secret;
pub mod convert;
pub mod index;
pub mod leader;
pub mod root_configmap;
pub mod secrets;
pub mod source;
pub mod status;
pub mod tokenreview;
pub mod webhook_config;

use std::path::Path;

use ::kube::Client;
use ::kube::config::{Config, KubeConfigOptions, Kubeconfig};

pub use source::{Options, run};

/// What can go wrong talking to the API server outside the watch loop.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: ::kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration found (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Infer(#[from] ::kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
    #[error("certificate authority in Kubernetes: {0}")]
    Ca(String),
    #[error("Pod {namespace}/{name}: {message}")]
    Pod {
        namespace: String,
        name: String,
        message: String,
    },
}

/// A client for the cluster named by `kubeconfig`, or the usual places
/// (`KUBECONFIG`, `~/.kube/config`, the in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| KubeError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(err)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => Config::infer().await?,
    };
    tracing::info!(server = %config.cluster_url, "Kubernetes API");
    Client::try_from(config).map_err(KubeError::Client)
}

/// What `pilotfish bootstrap --kubernetes` needs to know about a pod-backed
/// workload: its address and service account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub ip: String,
    pub service_account: String,
}

/// Reads one pod and checks that it can be a mesh workload.
pub async fn pod_identity(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<PodIdentity, KubeError> {
    use k8s_openapi::api::core::v1::Pod;
    let api: ::kube::Api<Pod> = ::kube::Api::namespaced(client, namespace);
    let err = |message: String| KubeError::Pod {
        namespace: namespace.to_string(),
        name: name.to_string(),
        message,
    };
    let pod = api.get(name).await.map_err(|e| match e {
        ::kube::Error::Api(s) if s.code == 404 => err("not found".into()),
        e => err(e.to_string()),
    })?;
    convert::pod_identity(&pod).map_err(err)
}

#[cfg(test)]
mod tests;
