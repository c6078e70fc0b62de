//! The ADS protocol state machine, per stream and per type, with no I/O.
//!
//! Follows Envoy's xDS protocol document: per-type versions and nonces, ACK
//! and NACK through `response_nonce`/`error_detail`, stale nonces ignored in
//! state-of-the-world, wildcard and named subscriptions, resend on new
//! subscription, and per-type removal semantics (SotW: a Listener or Cluster
//! missing from the full set is removed; delta: `removed_resources`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::xds::cache::ProxyResources;
use crate::xds::encoded::Encoded;
use crate::xds::types::XdsType;

/// One response to write, before framing.
#[derive(Debug)]
pub struct Push {
    pub t: XdsType,
    pub version: String,
    pub nonce: String,
    pub resources: Vec<Arc<Encoded>>,
    /// Delta only.
    pub removed: Vec<String>,
    /// Set when `resources` is exactly these layers' resources, in order:
    /// the response is written from their shared blobs.
    pub whole_layers: Vec<Arc<crate::xds::cache::Layer>>,
}

/// A rejected response, as Envoy reported it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Nack {
    pub nonce: String,
    pub version: String,
    pub message: String,
}

/// What a request meant, for logging and metrics.
#[derive(Debug, PartialEq)]
pub enum Ack {
    /// First request of the type on this stream (or a re-request with no nonce).
    Initial,
    Ack,
    Nack(Nack),
    /// The request answered an older response; ignored.
    Stale,
}

/// Sync state of one type, shown at /debug/syncz.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TypeStatus {
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    pub acked_version: Option<String>,
    pub last_nack: Option<Nack>,
    pub subscribed: Vec<String>,
    pub wildcard: bool,
    /// Resource name -> version, of what this proxy was last sent.
    pub sent: std::collections::BTreeMap<String, String>,
}

/// A request's fields that matter to the state machine (both variants).
/// Names are anything that reads as UTF-8 bytes: `String`, or `Bytes`
/// sliced from the request's wire buffer (checked as UTF-8 when decoded), so
/// an ACK repeating thousands of names allocates none of them.
#[derive(Debug, Default)]
pub struct Request<'a, N = String> {
    pub nonce: &'a str,
    pub version: &'a str,
    pub error: Option<&'a str>,
    /// SotW: the full list of names. Delta: names newly subscribed.
    pub subscribe: &'a [N],
    /// Delta only.
    pub unsubscribe: &'a [N],
    /// Delta only: what the client already has (reconnect).
    pub initial_versions: Option<&'a HashMap<String, String>>,
    /// SotW: the caller saw that this request's names are byte for byte
    /// the last accepted request's (of this type), and left `subscribe`
    /// empty: the subscription stands as it is.
    pub same_names: bool,
}

#[derive(Debug, Default)]
struct TypeState {
    requested: bool,
    wildcard: bool,
    /// Subscribed names, interned: the resource's own name when it exists.
    /// SotW streams with the same subscription share one set (see `intern_set`).
    names: Arc<NameSet>,
    /// SotW Listener/Cluster to a named subscription: the set last sent.
    sent_all: Vec<Arc<Encoded>>,
    /// SotW Listener/Cluster to a wildcard subscription: the layers last
    /// sent whole (a pointer each, shared with every other stream).
    sent_layers: Vec<Arc<crate::xds::cache::Layer>>,
    /// Delta reconnect: versions the client reported it already has.
    initial: HashMap<String, String>,
    last_nonce: Option<String>,
    sent_version: Option<String>,
    acked_version: Option<String>,
    last_nack: Option<Nack>,
    /// Order-independent hash of `names` (XOR of each name's hash): an ACK
    /// that repeats the same subscription is recognized without lookups.
    names_hash: u64,
    /// SotW named types, and every delta type: the layers the client was
    /// last brought in sync with. It has, for every wanted name (subscribed,
    /// or any under a wildcard) not in `fresh`, exactly the resource these
    /// layers hold, and knows that a wanted name they lack does not exist
    /// (shared, so no per-name state per stream: a delta stream of 6,000
    /// resources used to keep a 6,000-entry map of what it was sent).
    synced: Option<Vec<Arc<crate::xds::cache::Layer>>>,
    /// Names wanted since the last push: the client has nothing for them.
    fresh: HashSet<Arc<str>>,
}

type NameSet = BTreeSet<Arc<str>>;

/// Subscription sets in use, by hash: thousands of proxies that subscribe to
/// the same thousand EDS names hold one set between them.
#[derive(Default)]
struct SetInterner {
    sets: HashMap<u64, Vec<std::sync::Weak<NameSet>>>,
    inserts: usize,
}

static SUBSCRIPTIONS: std::sync::LazyLock<std::sync::Mutex<SetInterner>> =
    std::sync::LazyLock::new(Default::default);

/// The shared copy of `set` (whose `names_hash` is `hash`).
fn intern_set(set: NameSet, hash: u64) -> Arc<NameSet> {
    let key = hash ^ (set.len() as u64).rotate_left(32);
    let mut interner = SUBSCRIPTIONS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = interner
        .sets
        .get(&key)
        .and_then(|v| v.iter().filter_map(|w| w.upgrade()).find(|s| **s == set))
    {
        return found;
    }
    let set = Arc::new(set);
    interner
        .sets
        .entry(key)
        .or_default()
        .push(Arc::downgrade(&set));
    interner.inserts += 1;
    if interner.inserts.is_multiple_of(1024) {
        interner.sets.retain(|_, v| {
            v.retain(|w| w.strong_count() > 0);
            !v.is_empty()
        });
    }
    set
}

/// A name as text: validated as UTF-8 when decoded; anything else reads as "".
fn text<N: AsRef<[u8]>>(n: &N) -> &str {
    std::str::from_utf8(n.as_ref()).unwrap_or_default()
}

fn name_hash(name: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name)
}

/// Per-stream protocol state, for either ADS variant.
#[derive(Debug)]
pub struct StreamProtocol {
    delta: bool,
    types: [TypeState; XdsType::COUNT],
    nonce_seq: u64,
}

impl StreamProtocol {
    pub fn new(delta: bool) -> Self {
        StreamProtocol {
            delta,
            types: Default::default(),
            nonce_seq: 0,
        }
    }

    pub fn is_delta(&self) -> bool {
        self.delta
    }

    /// Applies a request; returns what it meant and whether a push should follow
    /// right away (initial request or new subscriptions).
    pub fn on_request(&mut self, t: XdsType, req: &Request<'_>) -> (Ack, bool) {
        self.on_request_with(t, req, None)
    }

    /// `on_request`, interning subscribed names from `res` (what the proxy
    /// can be sent), so a stream's subscriptions share the resources' names.
    pub fn on_request_with<N: AsRef<[u8]>>(
        &mut self,
        t: XdsType,
        req: &Request<'_, N>,
        res: Option<&ProxyResources>,
    ) -> (Ack, bool) {
        let intern = |name: &str| -> Arc<str> {
            res.and_then(|r| r.get(t, name))
                .map(|e| Arc::clone(&e.name))
                .unwrap_or_else(|| Arc::from(name))
        };
        let delta = self.delta;
        let st = &mut self.types[t.index()];
        let ack = if req.nonce.is_empty() {
            Ack::Initial
        } else if !delta && st.last_nonce.as_deref() != Some(req.nonce) {
            // SotW: a response to an older nonce carries stale state.
            return (Ack::Stale, false);
        } else if let Some(message) = req.error {
            let nack = Nack {
                nonce: req.nonce.to_string(),
                version: st.sent_version.clone().unwrap_or_default(),
                message: message.to_string(),
            };
            st.last_nack = Some(nack.clone());
            Ack::Nack(nack)
        } else {
            if delta {
                if st.last_nonce.as_deref() == Some(req.nonce) {
                    st.acked_version = st.sent_version.clone();
                }
            } else {
                st.acked_version = Some(req.version.to_string());
            }
            Ack::Ack
        };

        let first = !st.requested;
        st.requested = true;
        let mut push = first;
        if delta {
            if first {
                if let Some(initial) = req.initial_versions {
                    st.initial = initial.clone();
                }
                st.wildcard = t.is_wildcard_type() && req.subscribe.is_empty();
            }
            let mut names_changed = false;
            for name in req.subscribe.iter().map(text) {
                if name == "*" {
                    if !st.wildcard {
                        st.wildcard = true;
                        // What the wildcard adds, the client does not have.
                        if let Some(layers) = &st.synced {
                            for l in layers {
                                for e in l.resources.values() {
                                    if !st.names.contains(&*e.name) {
                                        st.fresh.insert(Arc::clone(&e.name));
                                    }
                                }
                            }
                        }
                    }
                    push = true;
                } else if !st.names.contains(name) {
                    st.names_hash ^= name_hash(name.as_bytes());
                    let name = intern(name);
                    if st.synced.is_some() && !st.wildcard {
                        st.fresh.insert(Arc::clone(&name));
                    }
                    Arc::make_mut(&mut st.names).insert(name);
                    names_changed = true;
                    push = true;
                }
            }
            for name in req.unsubscribe.iter().map(text) {
                if name == "*" {
                    st.wildcard = false;
                } else if st.names.contains(name) {
                    Arc::make_mut(&mut st.names).remove(name);
                    st.names_hash ^= name_hash(name.as_bytes());
                    names_changed = true;
                }
                // The client dropped it; subscribed again, it is fresh.
                st.fresh.remove(name);
                st.initial.remove(name);
            }
            if names_changed {
                // Streams with the same subscription share one set.
                let set = std::mem::take(&mut st.names);
                st.names = intern_set(Arc::unwrap_or_clone(set), st.names_hash);
            }
        } else if !req.same_names {
            let wildcard = req.subscribe.iter().any(|n| n.as_ref() == b"*")
                || (t.is_wildcard_type() && req.subscribe.is_empty());
            if wildcard != st.wildcard {
                push = true;
                // What a wildcard adds was never sent under the old subscription.
                st.synced = None;
            }
            // Envoy repeats its whole subscription in every SotW request
            // (thousands of EDS names in each ACK): only rebuild on change.
            // Compared by an order-independent hash, without lookups.
            let hash = req
                .subscribe
                .iter()
                .fold(0u64, |h, n| h ^ name_hash(n.as_ref()));
            let same = req.subscribe.len() == st.names.len() && hash == st.names_hash;
            if !same {
                let names: NameSet = req.subscribe.iter().map(|n| intern(text(n))).collect();
                let names = intern_set(names, hash);
                if st.synced.is_some() {
                    for added in names.difference(&st.names) {
                        st.fresh.insert(Arc::clone(added));
                        push = true;
                    }
                    st.fresh.retain(|n| names.contains(n));
                } else {
                    // Nothing synced yet: every name is new to the client
                    // and `fresh` is not consulted. Recording thousands of
                    // EDS names per stream here cost ~70 KB per proxy.
                    push |= names.difference(&st.names).next().is_some();
                    st.fresh = HashSet::new();
                }
                st.names_hash = hash;
                st.names = names;
            }
            st.wildcard = wildcard;
        }
        if !delta && ack == Ack::Initial {
            // A request without a nonce asks for the current state.
            push = true;
            st.sent_all = Vec::new();
            st.sent_layers.clear();
            st.sent_version = None;
            st.synced = None;
            // A new set, not clear(): a cleared set keeps its capacity.
            st.fresh = HashSet::new();
        }
        (ack, push)
    }

    /// Whether the client asked for this type at all.
    pub fn requested(&self, t: XdsType) -> bool {
        self.types[t.index()].requested
    }

    /// Computes the response for type `t` given what the proxy should have now;
    /// None when the client is already up to date. `force` answers a request
    /// even when nothing changed (Envoy waits for a reply to initial requests).
    pub fn push(&mut self, t: XdsType, res: &ProxyResources, force: bool) -> Option<Push> {
        if !self.types[t.index()].requested {
            return None;
        }
        if self.delta {
            self.push_delta(t, res, force)
        } else {
            self.push_sotw(t, res, force)
        }
    }

    fn next_nonce(&mut self) -> String {
        self.nonce_seq += 1;
        self.nonce_seq.to_string()
    }

    fn push_sotw(&mut self, t: XdsType, res: &ProxyResources, force: bool) -> Option<Push> {
        self.nonce_seq += 1;
        let nonce_seq = self.nonce_seq;
        let st = &mut self.types[t.index()];
        let layers = &res.layers[t.index()];
        let mut whole_layers = Vec::new();
        let (resources, version): (Vec<Arc<Encoded>>, String) = if t.is_wildcard_type() {
            // The full set each time: absence means removal.
            let wanted: Vec<&Arc<Encoded>> = if st.wildcard {
                res.all(t).collect()
            } else {
                st.names.iter().filter_map(|n| res.get(t, n)).collect()
            };
            let version = set_version(&wanted);
            if !force && st.sent_version.as_deref() == Some(version.as_str()) {
                return None;
            }
            if st.wildcard {
                whole_layers = layers.clone();
            }
            (wanted.into_iter().cloned().collect(), version)
        } else {
            // Named types: only what the client does not have yet.
            let version = st.layered_version(layers);
            let changed = match st.changed_since_sync(t, res) {
                Some(c) if !force => c,
                _ => {
                    let changed: Vec<Arc<Encoded>> = if st.wildcard {
                        res.all(t).filter(|e| !st.has(e)).cloned().collect()
                    } else {
                        st.names
                            .iter()
                            .filter_map(|n| res.get(t, n))
                            .filter(|e| !st.has(e))
                            .cloned()
                            .collect()
                    };
                    // Every resource of the only layer (an initial EDS answer
                    // to a proxy that subscribes to all clusters): both are
                    // sorted by name, so the response is that layer's blob.
                    if let [layer] = layers.as_slice()
                        && !changed.is_empty()
                        && changed.len() == layer.resources.len()
                    {
                        whole_layers = vec![Arc::clone(layer)];
                    }
                    changed
                }
            };
            // Whatever is sent now, the client then has everything it asked
            // for as these layers hold it.
            st.synced = Some(layers.clone());
            // A new set, not clear(): a cleared set keeps its capacity.
            st.fresh = HashSet::new();
            if changed.is_empty() && !force {
                return None;
            }
            (changed, version)
        };
        let nonce = nonce_seq.to_string();
        if t.is_wildcard_type() {
            if whole_layers.is_empty() {
                st.sent_all = resources.clone();
                st.sent_layers.clear();
            } else {
                st.sent_all = Vec::new();
                st.sent_layers = whole_layers.clone();
            }
        }
        st.last_nonce = Some(nonce.clone());
        st.sent_version = Some(version.clone());
        Some(Push {
            t,
            version,
            nonce,
            resources,
            removed: Vec::new(),
            whole_layers,
        })
    }

    fn push_delta(&mut self, t: XdsType, res: &ProxyResources, force: bool) -> Option<Push> {
        let layers = &res.layers[t.index()];
        let fast = if force {
            None
        } else {
            self.types[t.index()].delta_changed_since_sync(t, res)
        };
        let (resources, mut removed, version) = if let Some((resources, removed)) = fast {
            let st = &mut self.types[t.index()];
            if resources.is_empty() && removed.is_empty() {
                st.synced = Some(layers.clone());
                return None;
            }
            let version = st.layered_version(layers);
            (resources, removed, version)
        } else {
            let st = &self.types[t.index()];
            let mut resources = Vec::new();
            let mut removed = Vec::new();
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            if st.wildcard {
                for e in res.all(t) {
                    seen.insert(&*e.name);
                    if !st.has(e) {
                        resources.push(Arc::clone(e));
                    }
                }
            }
            for name in st.names.iter() {
                match res.get(t, name) {
                    Some(e) if seen.insert(&**name) && !st.has(e) => {
                        resources.push(Arc::clone(e));
                    }
                    Some(_) => {}
                    None if !seen.contains(&**name) => {
                        // Tell the client once that a subscribed name does not exist.
                        if !st.knows_absent(name) {
                            removed.push(name.to_string());
                        }
                        seen.insert(&**name);
                    }
                    None => {}
                }
            }
            // What the client had that is gone now.
            if let Some(synced) = &st.synced {
                for l in synced {
                    for name in l.resources.keys() {
                        if st.wanted(name)
                            && !st.fresh.contains(name.as_str())
                            && seen.insert(name.as_str())
                        {
                            removed.push(name.to_string());
                        }
                    }
                }
            }
            for name in st.initial.keys() {
                if seen.insert(name.as_str()) {
                    removed.push(name.clone());
                }
            }
            if resources.is_empty() && removed.is_empty() && !force {
                return None;
            }
            let all: Vec<&Arc<Encoded>> = if st.wildcard {
                res.all(t).collect()
            } else {
                st.names.iter().filter_map(|n| res.get(t, n)).collect()
            };
            let version = set_version(&all);
            (resources, removed, version)
        };
        // Every resource of every layer, nothing removed, nothing the client
        // already had (a first answer): the layers' shared delta bytes are
        // the response body, no per-stream copy of small resources.
        let whole_layers = {
            let st = &self.types[t.index()];
            let total: usize = layers.iter().map(|l| l.resources.len()).sum();
            let whole = !resources.is_empty()
                && removed.is_empty()
                && resources.len() == total
                && (st.wildcard || layers.len() == 1);
            if whole { layers.clone() } else { Vec::new() }
        };
        let nonce = self.next_nonce();
        let st = &mut self.types[t.index()];
        removed.sort();
        // The client now has every wanted name as these layers hold it.
        st.synced = Some(layers.clone());
        // New collections, not clear(): cleared ones keep their capacity.
        st.fresh = HashSet::new();
        st.initial = HashMap::new();
        st.last_nonce = Some(nonce.clone());
        st.sent_version = Some(version.clone());
        Some(Push {
            t,
            version,
            nonce,
            resources,
            removed,
            whole_layers,
        })
    }

    pub fn status(&self, t: XdsType) -> TypeStatus {
        let st = &self.types[t.index()];
        TypeStatus {
            sent_version: st.sent_version.clone(),
            sent_nonce: st.last_nonce.clone(),
            acked_version: st.acked_version.clone(),
            last_nack: st.last_nack.clone(),
            subscribed: st.names.iter().map(|n| n.to_string()).collect(),
            wildcard: st.wildcard,
            sent: st
                .sent_entries()
                .iter()
                .map(|e| (e.name.to_string(), e.version.clone()))
                .collect(),
        }
    }

    /// The resources of type `t` this client was last sent (for config dumps).
    pub fn sent_resources(&self, t: XdsType) -> Vec<Arc<Encoded>> {
        self.types[t.index()].sent_entries()
    }
}

impl TypeState {
    /// A SotW version for a named type: the subscription and the versions
    /// of the layers it is served from (no walk over every resource).
    fn layered_version(&self, layers: &[Arc<crate::xds::cache::Layer>]) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&[u8::from(self.wildcard)]);
        h.update(&self.names_hash.to_le_bytes());
        for l in layers {
            h.update(&l.version.to_le_bytes());
        }
        format!("{:016x}", h.digest())
    }

    /// Delta: when the client was last brought in sync with the layers
    /// these replaced (each unchanged, or changed exactly once since) and
    /// its subscription has not changed, what to send and remove now,
    /// looking only at the layers' diffs; None when that cannot be told
    /// without a full pass.
    #[allow(clippy::type_complexity)]
    fn delta_changed_since_sync(
        &self,
        t: XdsType,
        res: &ProxyResources,
    ) -> Option<(Vec<Arc<Encoded>>, Vec<String>)> {
        let st = self;
        let synced = st.synced.as_ref()?;
        let layers = &res.layers[t.index()];
        if synced.len() != layers.len() || !st.initial.is_empty() || !st.fresh.is_empty() {
            return None;
        }
        let wanted = |name: &str| st.wanted(name);
        let mut changed: Vec<Arc<Encoded>> = Vec::new();
        let mut removed = Vec::new();
        for (l, s) in layers.iter().zip(synced) {
            if l.version == s.version {
                continue;
            }
            let d = l.diff.as_ref().filter(|d| d.from == s.version)?;
            for e in &d.changed {
                // The name's resource as the proxy sees it (an earlier layer
                // may hold the same name).
                if wanted(&e.name)
                    && res.get(t, &e.name).is_some_and(|x| Arc::ptr_eq(x, e))
                    && !st.has(e)
                {
                    changed.push(Arc::clone(e));
                }
            }
            for name in &d.removed {
                if !wanted(name) {
                    continue;
                }
                match res.get(t, name) {
                    // Still held by another layer: that one is what it sees.
                    Some(e) => {
                        if !st.has(e) && !changed.iter().any(|c| Arc::ptr_eq(c, e)) {
                            changed.push(Arc::clone(e));
                        }
                    }
                    None => {
                        if synced_get(synced, name).is_some() {
                            removed.push(name.to_string());
                        }
                    }
                }
            }
        }
        Some((changed, removed))
    }

    /// When the client is in sync with the layers these replaced (each
    /// layer unchanged, or changed exactly once since), what it must be sent
    /// now, looking only at the layers' diffs; None when that cannot be told
    /// without a full pass.
    fn changed_since_sync(&self, t: XdsType, res: &ProxyResources) -> Option<Vec<Arc<Encoded>>> {
        let synced = self.synced.as_ref()?;
        let layers = &res.layers[t.index()];
        if synced.len() != layers.len() || !self.fresh.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for (l, s) in layers.iter().zip(synced) {
            if l.version == s.version {
                continue;
            }
            let d = l.diff.as_ref().filter(|d| d.from == s.version)?;
            for e in &d.changed {
                let wanted = self.wildcard || self.names.contains(&*e.name);
                // The name's resource as the proxy sees it (an earlier layer
                // may hold the same name).
                if wanted && res.get(t, &e.name).is_some_and(|x| Arc::ptr_eq(x, e)) && !self.has(e)
                {
                    out.push(Arc::clone(e));
                }
            }
        }
        Some(out)
    }

    /// Whether the client asked for this name (by name or by wildcard).
    fn wanted(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Whether the client already has exactly this resource.
    fn has(&self, e: &Encoded) -> bool {
        match &self.synced {
            Some(layers) => {
                !self.fresh.contains(&*e.name)
                    && synced_get(layers, &e.name).is_some_and(|s| s.version == e.version)
            }
            // Delta: what it reported having on reconnect.
            None => self.initial.get(&*e.name) == Some(&e.version),
        }
    }

    /// Delta: whether the client was told that this wanted name does not
    /// exist (it was in sync with layers that lack it).
    fn knows_absent(&self, name: &str) -> bool {
        self.synced
            .as_ref()
            .is_some_and(|l| !self.fresh.contains(name) && synced_get(l, name).is_none())
    }

    /// What the client was last sent, by name (SotW or delta).
    fn sent_entries(&self) -> Vec<Arc<Encoded>> {
        let mut v: Vec<Arc<Encoded>> = self
            .sent_all
            .iter()
            .chain(self.sent_layers.iter().flat_map(|l| l.resources.values()))
            .cloned()
            .collect();
        if let Some(layers) = &self.synced {
            if self.wildcard {
                v.extend(
                    layers
                        .iter()
                        .flat_map(|l| l.resources.values())
                        .filter(|e| !self.fresh.contains(&*e.name))
                        .cloned(),
                );
            }
            v.extend(
                self.names
                    .iter()
                    .filter(|n| !self.fresh.contains(&***n))
                    .filter_map(|n| synced_get(layers, n))
                    .cloned(),
            );
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.dedup_by(|a, b| a.name == b.name);
        v
    }
}

/// A name's resource in `layers`, as `ProxyResources::get` finds it.
fn synced_get<'a>(
    layers: &'a [Arc<crate::xds::cache::Layer>],
    name: &str,
) -> Option<&'a Arc<Encoded>> {
    layers.iter().find_map(|l| l.resources.get(name))
}

/// Version of a set of resources: a hash of their names and versions.
fn set_version(set: &[&Arc<Encoded>]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for e in set {
        h.update(e.name.as_bytes());
        h.update(&[0]);
        h.update(e.version.as_bytes());
    }
    format!("{:016x}", h.digest())
}

#[cfg(test)]
mod tests;
