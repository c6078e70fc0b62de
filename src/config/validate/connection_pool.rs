//! Istio's `validateConnectionPool`, for DestinationRule traffic policies and
//! Sidecar inbound pools.

use super::findings::Findings;
use crate::model::istio::{ConnectionPoolSettings, H2UpgradePolicy};

pub fn check(path: &str, settings: &ConnectionPoolSettings, f: &mut Findings) {
    if settings.http.is_none() && settings.tcp.is_none() {
        f.error(path, "connection pool must have at least one field");
    }
    if let Some(http) = &settings.http {
        let at = |field: &str| format!("{path}.http.{field}");
        for (field, value, what) in [
            (
                "http1MaxPendingRequests",
                http.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            (
                "http2MaxRequests",
                http.http2_max_requests,
                "http2 max requests",
            ),
            (
                "maxRequestsPerConnection",
                http.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", http.max_retries, "max retries"),
            (
                "maxConcurrentStreams",
                http.max_concurrent_streams,
                "max concurrent streams",
            ),
        ] {
            if value.is_some_and(|v| v < 0) {
                f.error(at(field), format!("{what} must be non-negative"));
            }
        }
        f.duration(at("idleTimeout"), http.idle_timeout.as_deref());
        if http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && http.use_client_protocol == Some(true)
        {
            f.error(
                at("useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &http.http2_keep_alive {
            f.duration(at("http2KeepAlive.interval"), ka.interval.as_deref());
            f.duration(at("http2KeepAlive.timeout"), ka.timeout.as_deref());
        }
    }
    if let Some(tcp) = &settings.tcp {
        let at = |field: &str| format!("{path}.tcp.{field}");
        if tcp.max_connections.is_some_and(|v| v < 0) {
            f.error(at("maxConnections"), "max connections must be non-negative");
        }
        f.duration(at("connectTimeout"), tcp.connect_timeout.as_deref());
        f.duration(
            at("maxConnectionDuration"),
            tcp.max_connection_duration.as_deref(),
        );
        // A zero idle timeout disables it (Istio skips the check then).
        let idle = tcp
            .idle_timeout
            .as_deref()
            .filter(|d| !crate::model::istio::parse_duration(d).is_ok_and(|d| d.is_zero()));
        f.duration(at("idleTimeout"), idle);
        if let Some(ka) = &tcp.tcp_keepalive {
            f.duration(at("tcpKeepalive.time"), ka.time.as_deref());
            f.duration(at("tcpKeepalive.interval"), ka.interval.as_deref());
        }
    }
}
