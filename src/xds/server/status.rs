//! What each connected proxy was sent and acknowledged, for /debug.
//!
//! Each stream owns its protocol state behind a mutex that only it and the
//! debug handlers take, briefly; nothing awaits while holding it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::protocol::{StreamProtocol, TypeStatus};
use crate::xds::encoded::Encoded;
use crate::xds::types::XdsType;

/// One connected proxy.
#[derive(Debug)]
pub struct ProxyConn {
    pub node_id: String,
    /// `namespace/name` of its WorkloadEntry.
    pub workload: String,
    /// `namespace/name` of the WorkloadGroup it registered with, if any.
    pub group: Option<String>,
    pub peer: String,
    pub delta: bool,
    pub connected_unix: u64,
    pub protocol: Mutex<StreamProtocol>,
}

/// All connected proxies, by connection id.
#[derive(Clone, Debug, Default)]
pub struct SyncRegistry {
    conns: Arc<Mutex<BTreeMap<u64, Arc<ProxyConn>>>>,
    next_id: Arc<AtomicU64>,
}

/// One proxy's sync state, as /debug/syncz shows it.
#[derive(Debug, Serialize)]
pub struct ProxySync {
    pub node_id: String,
    pub workload: String,
    /// The WorkloadGroup it auto-registered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub peer: String,
    pub delta: bool,
    pub connected_unix: u64,
    pub types: BTreeMap<&'static str, TypeStatus>,
}

impl SyncRegistry {
    pub fn add(&self, conn: Arc<ProxyConn>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.conns).insert(id, conn);
        id
    }

    pub fn remove(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    fn conns(&self) -> Vec<Arc<ProxyConn>> {
        lock(&self.conns).values().cloned().collect()
    }

    pub fn syncs(&self) -> Vec<ProxySync> {
        self.conns()
            .iter()
            .map(|c| {
                let p = lock(&c.protocol);
                ProxySync {
                    node_id: c.node_id.clone(),
                    workload: c.workload.clone(),
                    group: c.group.clone(),
                    peer: c.peer.clone(),
                    delta: c.delta,
                    connected_unix: c.connected_unix,
                    types: XdsType::PUSH_ORDER
                        .iter()
                        .filter(|t| p.requested(**t))
                        .map(|t| (t.short(), p.status(*t)))
                        .collect(),
                }
            })
            .collect()
    }

    /// What the proxy with this node id (or workload `ns/name`) was last sent.
    pub fn sent(&self, proxy: &str) -> Option<BTreeMap<XdsType, Vec<Arc<Encoded>>>> {
        let conn = self
            .conns()
            .into_iter()
            .rev()
            .find(|c| c.node_id == proxy || c.workload == proxy)?;
        let p = lock(&conn.protocol);
        Some(
            XdsType::PUSH_ORDER
                .iter()
                .map(|t| (*t, p.sent_resources(*t)))
                .collect(),
        )
    }
}

/// Locks a mutex, recovering the data if a panicking holder poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
