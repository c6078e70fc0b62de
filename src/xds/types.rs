//! The xDS resource types pilotfish serves, in make-before-break push order.

/// One xDS resource type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdsType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    /// SDS: certificates and trust bundles.
    Secret,
}

impl XdsType {
    /// Push order for a change that touches several types: clusters before the
    /// endpoints they load, listeners before the routes they name (make before break).
    pub const PUSH_ORDER: [XdsType; 5] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
        XdsType::Secret,
    ];

    /// Number of types (the length of per-type arrays).
    pub const COUNT: usize = 5;

    pub fn type_url(self) -> &'static str {
        match self {
            XdsType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            XdsType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            XdsType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            XdsType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            XdsType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::PUSH_ORDER.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name used in logs, metrics and /debug (as istiod does).
    pub fn short(self) -> &'static str {
        match self {
            XdsType::Cluster => "cds",
            XdsType::Endpoint => "eds",
            XdsType::Listener => "lds",
            XdsType::Route => "rds",
            XdsType::Secret => "sds",
        }
    }

    /// Listener and Cluster are "wildcard" types: a SotW response carries the
    /// whole set, and a missing resource means it was removed.
    pub fn is_wildcard_type(self) -> bool {
        matches!(self, XdsType::Cluster | XdsType::Listener)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_round_trip() {
        for t in XdsType::PUSH_ORDER {
            assert_eq!(XdsType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(XdsType::from_type_url("type.googleapis.com/nope"), None);
    }
}
