//! Gateway credentials (`credentialName`) from Kubernetes Secrets: a
//! watcher on Secrets in every namespace (but ServiceAccount tokens), keeping
//! only the keys a credential uses, published on a watch channel that the
//! translator reads as file mode reads `--credentials-dir`
//! (`xds::credentials`), so a rotated Secret reaches the gateway over SDS.
//!
//! Like the config source, nothing is published until the first list is
//! complete, and a relist is swapped in whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use ::kube::Api;
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::xds::credentials::{CREDENTIAL_KEYS, SecretStore};

/// ServiceAccount token Secrets are never credentials (and are many).
pub const FIELD_SELECTOR: &str = "type!=kubernetes.io/service-account-token";

/// One Secret's credential keys.
type Data = Arc<BTreeMap<String, Vec<u8>>>;

/// What a Secret may contribute: its credential keys, if it has any.
fn entry(s: &Secret) -> Option<((String, String), Data)> {
    let data: BTreeMap<String, Vec<u8>> = s
        .data
        .as_ref()?
        .iter()
        .filter(|(k, _)| CREDENTIAL_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    if data.is_empty() {
        return None;
    }
    let key = (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    );
    Some((key, Arc::new(data)))
}

fn key_of(s: &Secret) -> (String, String) {
    (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

/// Watches Secrets until `tx` has no receivers.
pub async fn run(client: ::kube::Client, tx: watch::Sender<Arc<SecretStore>>) {
    let api: Api<Secret> = Api::all(client);
    let config = watcher::Config::default().fields(FIELD_SELECTOR);
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut store = SecretStore::new();
    let mut listing: Option<SecretStore> = None;
    let mut listed = false;
    loop {
        let ev = tokio::select! {
            ev = events.next() => match ev { Some(ev) => ev, None => return },
            _ = tx.closed() => return,
        };
        let changed = match ev {
            Ok(Event::Init) => {
                listing = Some(SecretStore::new());
                false
            }
            Ok(Event::InitApply(s)) => {
                if let (Some(l), Some((k, v))) = (listing.as_mut(), entry(&s)) {
                    l.insert(k, v);
                }
                false
            }
            Ok(Event::InitDone) => {
                let new = listing.take().unwrap_or_default();
                let changed = new != store || !listed;
                store = new;
                if !listed {
                    listed = true;
                    info!(secrets = store.len(), "credential Secrets listed");
                }
                changed
            }
            Ok(Event::Apply(s)) => match entry(&s) {
                Some((k, v)) => store.insert(k, Arc::clone(&v)).as_ref() != Some(&v),
                None => store.remove(&key_of(&s)).is_some(),
            },
            Ok(Event::Delete(s)) => store.remove(&key_of(&s)).is_some(),
            Err(e) => {
                warn!(error = %e, "Secret watch failed; retrying with backoff");
                false
            }
        };
        if changed && listed {
            debug!(secrets = store.len(), "credential Secrets changed");
            if tx.send(Arc::new(store.clone())).is_err() {
                return;
            }
        }
    }
}
