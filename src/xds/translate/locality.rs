//! Locality load balancing (DestinationRule `localityLbSetting`), as Istio
//! applies it: endpoints are grouped by locality (`region/zone/subzone`) and
//! the groups get Envoy priorities or weights *relative to the client's
//! locality*. So a cluster with locality load balancing has one
//! ClusterLoadAssignment per distinct client (see `Client`), and the xDS
//! cache keys those by client; every other cluster stays in the shared layer.
//!
//! * `distribute`: the first rule whose `from` matches the client sets the
//!   weight of each matching upstream locality (a weight shared by the
//!   groups a wildcard matches, in proportion to their size); groups no
//!   rule names get no traffic. The cluster gets Envoy's locality-weighted
//!   load balancing.
//! * otherwise, when the cluster has outlier detection (without it Envoy
//!   never sees an endpoint fail, so priorities would never move): failover
//!   priorities. `failoverPriority` labels first (endpoints whose label
//!   values equal the client's, in order, come first; `label=value` fixes the
//!   value), then locality: same region/zone/subzone 0, same zone 1, same
//!   region 2, elsewhere 3, and with `failover` rules for the client's
//!   region, regions other than `to` 4. Priorities are then made contiguous.
//! * `enabled: false` turns it off; a DestinationRule without
//!   `localityLbSetting` gets Istio's mesh default (enabled, no rules), so
//!   outlier detection alone gives locality-prioritized failover.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{
        CommonLbConfig,
        common_lb_config::{LocalityConfigSpecifier, LocalityWeightedLbConfig},
    },
};
use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::{LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::clusters::EffectivePolicy;
use crate::model::istio::{LocalityDistribute, LocalityFailover, LocalityLoadBalancerSetting};
use crate::model::registry::{Endpoint, Workload};

/// Istio's mesh-wide default `localityLbSetting`: enabled, no rules.
static MESH_DEFAULT: LocalityLoadBalancerSetting = LocalityLoadBalancerSetting {
    distribute: Vec::new(),
    failover: Vec::new(),
    failover_priority: Vec::new(),
    enabled: None,
};
/// Locality failover yields at most 5 priorities (0-4); a failoverPriority
/// level is multiplied by this so both orders combine, as Istio does.
const LOCALITY_PRIORITIES: u32 = 5;

/// How one cluster balances across localities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode<'a> {
    Distribute(&'a [LocalityDistribute]),
    Failover {
        failover: &'a [LocalityFailover],
        failover_priority: &'a [String],
    },
}

/// The locality mode of a cluster with `policy`, or None when its endpoints
/// are the same for every client.
pub fn mode<'a>(policy: &EffectivePolicy<'a>) -> Option<Mode<'a>> {
    let setting = policy
        .load_balancer
        .and_then(|l| l.locality_lb_setting.as_ref());
    if setting.and_then(|s| s.enabled) == Some(false) {
        return None;
    }
    let s = setting.unwrap_or(&MESH_DEFAULT);
    if !s.distribute.is_empty() {
        return Some(Mode::Distribute(&s.distribute));
    }
    policy.outlier_detection.map(|_| Mode::Failover {
        failover: &s.failover,
        failover_priority: &s.failover_priority,
    })
}

/// The labels a mode reads from the client (failoverPriority label names).
pub fn client_labels<'a>(mode: &Mode<'a>) -> impl Iterator<Item = &'a str> {
    let labels: &[String] = match mode {
        Mode::Failover {
            failover_priority, ..
        } => failover_priority,
        Mode::Distribute(_) => &[],
    };
    labels
        .iter()
        .filter(|l| !l.contains('='))
        .map(String::as_str)
}

/// Istio's topology labels, which it adds to the labels of every proxy and
/// endpoint (from their locality and network) so failoverPriority can name
/// them: region, zone and subzone come from the locality (over a label of
/// the same name), the network from a label if one is set, else from the
/// workload's `network`.
pub const TOPOLOGY_NETWORK: &str = "topology.istio.io/network";
pub const TOPOLOGY_REGION: &str = "topology.kubernetes.io/region";
pub const TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
pub const TOPOLOGY_SUBZONE: &str = "topology.istio.io/subzone";

/// The value of `label` on a proxy or endpoint with `labels`, `locality` and
/// `network`, with Istio's synthesized topology labels (see `TOPOLOGY_*`).
pub fn label_value<'a>(
    labels: &'a BTreeMap<String, String>,
    locality: Option<&'a str>,
    network: Option<&'a str>,
    label: &str,
) -> Option<&'a str> {
    let part = match label {
        TOPOLOGY_REGION => Some(0),
        TOPOLOGY_ZONE => Some(1),
        TOPOLOGY_SUBZONE => Some(2),
        _ => None,
    };
    if let Some(i) = part {
        let value = split(locality.unwrap_or_default())[i];
        if !value.is_empty() {
            return Some(value);
        }
    }
    let own = labels.get(label).map(String::as_str);
    if label == TOPOLOGY_NETWORK {
        return own.or(network.filter(|n| !n.is_empty()));
    }
    own
}

/// What locality load balancing needs to know about a client proxy: its
/// locality and the labels failoverPriority reads. Proxies with equal
/// `Client`s get the same endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// `region/zone/subzone` (empty when unknown).
    pub locality: String,
    /// The labels in `wanted` (synthesized topology labels included).
    pub labels: BTreeMap<String, String>,
}

impl Client {
    /// The client key of a workload, keeping only the labels in `wanted`.
    pub fn of(
        locality: Option<&str>,
        network: Option<&str>,
        labels: &BTreeMap<String, String>,
        wanted: &BTreeSet<String>,
    ) -> Client {
        Client {
            locality: locality.unwrap_or_default().to_string(),
            labels: wanted
                .iter()
                .filter_map(|k| {
                    label_value(labels, locality, network, k).map(|v| (k.clone(), v.to_string()))
                })
                .collect(),
        }
    }

    /// The client key of `w`'s proxy.
    pub fn of_workload(w: &Workload, wanted: &BTreeSet<String>) -> Client {
        Client::of(
            w.locality.as_deref(),
            w.network.as_deref(),
            &w.labels,
            wanted,
        )
    }
}

/// Endpoints of one locality (or, after failoverPriority, part of one).
#[derive(Clone, Debug)]
pub struct Group<'e> {
    pub locality: &'e str,
    pub endpoints: Vec<(&'e Endpoint, LbEndpoint)>,
    pub priority: u32,
    /// Locality weight (set by `distribute`).
    pub weight: Option<u32>,
}

impl<'e> Group<'e> {
    /// An empty group of `locality`, priority 0.
    pub fn new(locality: &'e str) -> Self {
        Group {
            locality,
            endpoints: Vec::new(),
            priority: 0,
            weight: None,
        }
    }

    pub fn into_envoy(self) -> LocalityLbEndpoints {
        LocalityLbEndpoints {
            locality: parse(self.locality),
            lb_endpoints: self.endpoints.into_iter().map(|(_, lb)| lb).collect(),
            priority: self.priority,
            load_balancing_weight: self.weight.map(|value| UInt32Value { value }),
            ..Default::default()
        }
    }

    /// Sum of the endpoints' weights (1 each when unset), as Istio weighs a locality.
    fn size(&self) -> u32 {
        self.endpoints
            .iter()
            .map(|(e, _)| e.weight.filter(|w| *w > 0).unwrap_or(1))
            .sum()
    }
}

/// Istio's `region/zone/subzone` locality string.
pub fn parse(s: &str) -> Option<Locality> {
    if s.is_empty() {
        return None;
    }
    let mut parts = s.splitn(3, '/');
    Some(Locality {
        region: parts.next().unwrap_or_default().to_string(),
        zone: parts.next().unwrap_or_default().to_string(),
        sub_zone: parts.next().unwrap_or_default().to_string(),
    })
}

fn split(s: &str) -> [&str; 3] {
    let mut parts = s.splitn(3, '/');
    [
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    ]
}

/// Whether `locality` matches a rule's `region/zone/subzone` with `*`
/// wildcards (missing parts match anything), as Istio matches them.
pub fn matches(locality: &str, rule: &str) -> bool {
    let [r, z, s] = split(rule);
    let [lr, lz, ls] = split(locality);
    (r == "*" || r == lr)
        && (z.is_empty() || z == "*" || z == lz)
        && (s.is_empty() || s == "*" || s == ls)
}

/// 0 same subzone, 1 same zone, 2 same region, 3 elsewhere.
fn distance(client: &str, endpoint: &str) -> u32 {
    let [cr, cz, cs] = split(client);
    let [er, ez, es] = split(endpoint);
    match (cr == er, cz == ez, cs == es) {
        (true, true, true) => 0,
        (true, true, false) => 1,
        (true, false, _) => 2,
        (false, _, _) => 3,
    }
}

/// Applies `mode` for `client` to the locality groups of one cluster.
pub fn apply<'e>(groups: Vec<Group<'e>>, client: &Client, mode: &Mode<'_>) -> Vec<Group<'e>> {
    match mode {
        Mode::Distribute(rules) => distribute(groups, &client.locality, rules),
        Mode::Failover {
            failover,
            failover_priority,
        } => {
            let groups = if failover_priority.is_empty() || client.labels.is_empty() {
                groups
            } else {
                by_labels(groups, &client.labels, failover_priority)
            };
            // With failoverPriority, region failover only when rules are given.
            if !failover_priority.is_empty() && failover.is_empty() && !client.labels.is_empty() {
                return compact(groups);
            }
            by_locality(groups, &client.locality, failover)
        }
    }
}

fn distribute<'e>(
    mut groups: Vec<Group<'e>>,
    client: &str,
    rules: &[LocalityDistribute],
) -> Vec<Group<'e>> {
    // Envoy sends nothing to a locality without a weight: each starts with
    // its size, as Istio weighs localities.
    for g in &mut groups {
        g.weight = Some(g.size());
    }
    let Some(rule) = rules
        .iter()
        .find(|r| matches(client, r.from.as_deref().unwrap_or_default()))
    else {
        return groups;
    };
    let mut unmatched: BTreeSet<usize> = (0..groups.len()).collect();
    for (to, weight) in &rule.to {
        let hits: Vec<usize> = unmatched
            .iter()
            .copied()
            .filter(|i| matches(groups[*i].locality, to))
            .collect();
        let total: u32 = hits.iter().map(|i| groups[*i].size()).sum();
        for i in hits {
            unmatched.remove(&i);
            let share = f64::from(groups[i].size()) * f64::from(*weight) / f64::from(total.max(1));
            if share > 0.0 {
                groups[i].weight = Some(share.ceil() as u32);
            }
        }
    }
    for i in unmatched {
        groups[i].endpoints.clear();
        groups[i].weight = None;
    }
    groups
}

fn by_locality<'e>(
    mut groups: Vec<Group<'e>>,
    client: &str,
    failover: &[LocalityFailover],
) -> Vec<Group<'e>> {
    let [region, _, _] = split(client);
    for g in &mut groups {
        let mut p = distance(client, g.locality);
        let rule = failover.iter().find(|f| f.from.as_deref() == Some(region));
        if let Some(f) = rule.filter(|_| p == 3)
            && split(g.locality)[0] != f.to.as_deref().unwrap_or_default()
        {
            p = 4;
        }
        g.priority = g.priority * LOCALITY_PRIORITIES + p;
    }
    compact(groups)
}

/// Splits each group by how many leading failoverPriority labels the
/// endpoint shares with the client.
fn by_labels<'e>(
    groups: Vec<Group<'e>>,
    client: &BTreeMap<String, String>,
    priority_labels: &[String],
) -> Vec<Group<'e>> {
    let wanted: Vec<(&str, Option<&str>)> = priority_labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (l.as_str(), None),
        })
        .collect();
    let lowest = wanted.len() as u32;
    let mut out = Vec::new();
    for g in groups {
        let mut by_priority: BTreeMap<u32, Vec<(&'e Endpoint, LbEndpoint)>> = BTreeMap::new();
        for (e, lb) in g.endpoints {
            let mut p = 0;
            for (j, (label, fixed)) in wanted.iter().enumerate() {
                let want = fixed.or_else(|| client.get(*label).map(String::as_str));
                let have = label_value(
                    &e.labels,
                    e.locality.as_deref(),
                    e.network.as_deref(),
                    label,
                );
                if want != have {
                    p = lowest - j as u32;
                    break;
                }
            }
            by_priority.entry(p).or_default().push((e, lb));
        }
        for (priority, endpoints) in by_priority {
            let mut part = Group {
                locality: g.locality,
                endpoints,
                priority,
                weight: None,
            };
            part.weight = Some(part.size());
            out.push(part);
        }
    }
    out
}

/// Renumbers priorities 0..N without gaps, keeping their order.
fn compact(mut groups: Vec<Group<'_>>) -> Vec<Group<'_>> {
    let used: BTreeSet<u32> = groups.iter().map(|g| g.priority).collect();
    let rank: BTreeMap<u32, u32> = used.into_iter().zip(0..).collect();
    for g in &mut groups {
        g.priority = rank[&g.priority];
    }
    groups
}

/// Cluster-side settings a mode needs: `distribute` weights are locality
/// weights, which Envoy only honours with locality-weighted load balancing.
pub fn configure_cluster(c: &mut Cluster, mode: &Mode<'_>) {
    if let Mode::Distribute(_) = mode {
        c.common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .locality_config_specifier = Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(
            LocalityWeightedLbConfig {},
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_endpoint(address: &str, locality: &str, labels: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            address: address.to_string(),
            ports: BTreeMap::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            locality: Some(locality.to_string()),
            network: None,
            weight: None,
            service_account: None,
            workload: None,
        }
    }

    fn mk_groups(eps: &[Endpoint]) -> Vec<Group<'_>> {
        let mut by: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
        for e in eps {
            by.entry(e.locality.as_deref().unwrap_or_default())
                .or_default()
                .push(e);
        }
        by.into_iter()
            .map(|(locality, es)| Group {
                locality,
                endpoints: es.into_iter().map(|e| (e, LbEndpoint::default())).collect(),
                priority: 0,
                weight: None,
            })
            .collect()
    }

    fn mk_client(locality: &str) -> Client {
        Client {
            locality: locality.to_string(),
            labels: BTreeMap::new(),
        }
    }

    fn priorities(groups: &[Group<'_>]) -> Vec<(String, u32)> {
        groups
            .iter()
            .map(|g| (g.locality.to_string(), g.priority))
            .collect()
    }

    #[test]
    fn locality_rules_match_with_wildcards() {
        assert!(matches("r1/z1/s1", "r1/z1/*"));
        assert!(matches("r1/z1/s1", "r1"));
        assert!(matches("r1/z1/s1", "*"));
        assert!(!matches("r1/z2/s1", "r1/z1/*"));
        assert!(!matches("r2/z1", "r1/*"));
    }

    #[test]
    fn failover_orders_by_distance_and_is_contiguous() {
        let eps = [
            mk_endpoint("a", "r1/z1/s1", &[]),
            mk_endpoint("b", "r1/z2/s1", &[]),
            mk_endpoint("c", "r2/z1/s1", &[]),
        ];
        let mode = Mode::Failover {
            failover: &[],
            failover_priority: &[],
        };
        let out = apply(mk_groups(&eps), &mk_client("r1/z1/s1"), &mode);
        // 0 (same subzone), 2 (same region) and 3 (elsewhere) become 0, 1, 2.
        assert_eq!(
            priorities(&out),
            [
                ("r1/z1/s1".into(), 0),
                ("r1/z2/s1".into(), 1),
                ("r2/z1/s1".into(), 2)
            ]
        );
    }

    #[test]
    fn failover_rules_put_other_regions_last() {
        let eps = [
            mk_endpoint("a", "r1/z1", &[]),
            mk_endpoint("b", "r2/z1", &[]),
            mk_endpoint("c", "r3/z1", &[]),
        ];
        let failover = [LocalityFailover {
            from: Some("r1".into()),
            to: Some("r3".into()),
        }];
        let mode = Mode::Failover {
            failover: &failover,
            failover_priority: &[],
        };
        let out = apply(mk_groups(&eps), &mk_client("r1/z1"), &mode);
        assert_eq!(
            priorities(&out),
            [
                ("r1/z1".into(), 0),
                ("r2/z1".into(), 2),
                ("r3/z1".into(), 1)
            ]
        );
    }

    #[test]
    fn distribute_weighs_matching_localities_and_drops_the_rest() {
        let eps = [
            mk_endpoint("a", "r1/z1", &[]),
            mk_endpoint("b", "r1/z2", &[]),
            mk_endpoint("c", "r1/z2", &[]),
            mk_endpoint("d", "r2/z1", &[]),
        ];
        let rules = [LocalityDistribute {
            from: Some("r1/z1/*".into()),
            to: [("r1/z1/*".to_string(), 80), ("r1/z2/*".to_string(), 20)]
                .into_iter()
                .collect(),
        }];
        let out = apply(
            mk_groups(&eps),
            &mk_client("r1/z1/s9"),
            &Mode::Distribute(&rules),
        );
        let w: Vec<(&str, Option<u32>, usize)> = out
            .iter()
            .map(|g| (g.locality, g.weight, g.endpoints.len()))
            .collect();
        assert_eq!(
            w,
            [
                ("r1/z1", Some(80), 1),
                ("r1/z2", Some(20), 2),
                ("r2/z1", None, 0)
            ]
        );
        // A client no rule names keeps every locality, weighted by size.
        let other = apply(
            mk_groups(&eps),
            &mk_client("r2/z1"),
            &Mode::Distribute(&rules),
        );
        let sizes: Vec<Option<u32>> = other.iter().map(|g| g.weight).collect();
        assert_eq!(sizes, [Some(1), Some(2), Some(1)]);
    }

    #[test]
    fn failover_priority_prefers_matching_labels_then_locality() {
        let eps = [
            mk_endpoint("a", "r1/z1", &[("net", "n1")]),
            mk_endpoint("b", "r1/z1", &[("net", "n2")]),
            mk_endpoint("c", "r2/z1", &[("net", "n1")]),
        ];
        let labels = ["net".to_string()];
        let failover = [LocalityFailover {
            from: Some("r1".into()),
            to: Some("r2".into()),
        }];
        let mode = Mode::Failover {
            failover: &failover,
            failover_priority: &labels,
        };
        let client = Client {
            locality: "r1/z1".into(),
            labels: [("net".to_string(), "n1".to_string())]
                .into_iter()
                .collect(),
        };
        let out = apply(mk_groups(&eps), &client, &mode);
        let got: Vec<(&str, &str, u32)> = out
            .iter()
            .map(|g| (g.locality, g.endpoints[0].0.address.as_str(), g.priority))
            .collect();
        // label match first (a, then c in the other region), then b.
        assert_eq!(
            got,
            [("r1/z1", "a", 0), ("r1/z1", "b", 2), ("r2/z1", "c", 1)]
        );
    }

    #[test]
    fn topology_labels_are_synthesized_from_locality_and_network() {
        let labels: BTreeMap<String, String> = [
            (TOPOLOGY_ZONE.to_string(), "from-label".to_string()),
            (TOPOLOGY_NETWORK.to_string(), "net-label".to_string()),
            ("app".to_string(), "a".to_string()),
        ]
        .into_iter()
        .collect();
        let value = |labels, locality, network, key| label_value(labels, locality, network, key);
        // The locality wins over a label for region/zone/subzone...
        assert_eq!(
            value(&labels, Some("r1/z1/s1"), None, TOPOLOGY_ZONE),
            Some("z1")
        );
        assert_eq!(
            value(&labels, Some("r1/z1/s1"), None, TOPOLOGY_REGION),
            Some("r1")
        );
        assert_eq!(
            value(&labels, Some("r1/z1/s1"), None, TOPOLOGY_SUBZONE),
            Some("s1")
        );
        // ...and a locality without that part leaves the label.
        assert_eq!(
            value(&labels, Some("r1"), None, TOPOLOGY_ZONE),
            Some("from-label")
        );
        assert_eq!(value(&labels, Some("r1"), None, TOPOLOGY_SUBZONE), None);
        // The network label wins over the workload's network.
        assert_eq!(
            value(&labels, None, Some("n1"), TOPOLOGY_NETWORK),
            Some("net-label")
        );
        let none = BTreeMap::new();
        assert_eq!(value(&none, None, Some("n1"), TOPOLOGY_NETWORK), Some("n1"));
        assert_eq!(value(&labels, None, Some("n1"), "app"), Some("a"));
        // A client key keeps only the labels failoverPriority reads.
        let wanted: BTreeSet<String> = [TOPOLOGY_REGION.to_string(), TOPOLOGY_NETWORK.to_string()]
            .into_iter()
            .collect();
        let client = Client::of(Some("r1/z1"), Some("n1"), &none, &wanted);
        assert_eq!(
            client.labels.into_iter().collect::<Vec<_>>(),
            [
                (TOPOLOGY_NETWORK.to_string(), "n1".to_string()),
                (TOPOLOGY_REGION.to_string(), "r1".to_string())
            ]
        );
    }

    #[test]
    fn disabled_or_without_outlier_detection_is_off() {
        use crate::model::istio::{LoadBalancerSettings, OutlierDetection};
        let od = OutlierDetection::default();
        let off = LoadBalancerSettings {
            locality_lb_setting: Some(LocalityLoadBalancerSetting {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = EffectivePolicy {
            load_balancer: Some(&off),
            outlier_detection: Some(&od),
            ..Default::default()
        };
        assert_eq!(mode(&p), None);
        let plain = EffectivePolicy::default();
        assert_eq!(mode(&plain), None);
        let with_od = EffectivePolicy {
            outlier_detection: Some(&od),
            ..Default::default()
        };
        assert!(matches!(mode(&with_od), Some(Mode::Failover { .. })));
    }
}
