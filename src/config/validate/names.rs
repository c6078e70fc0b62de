//! Istio's checks of names, hosts, addresses, ports and protocols, shared by
//! the per-kind validators. Messages follow Istio's webhook.

use std::net::IpAddr;

/// Longest DNS-1123 label.
const DNS1123_LABEL_MAX: usize = 63;
/// Longest domain name Istio accepts.
const DOMAIN_MAX: usize = 255;
/// Longest Kubernetes label value (and label name, without its prefix).
const LABEL_VALUE_MAX: usize = 63;
/// Longest Kubernetes label-key prefix (a DNS subdomain).
const LABEL_PREFIX_MAX: usize = 253;

pub const UNIX_PREFIX: &str = "unix://";

/// Istio's `IsDNS1123Label`: letters (either case), digits and `-`, starting
/// and ending with a letter or digit, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_LABEL_MAX
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Istio's `IsWildcardDNS1123Label`: a label, `*`, or `*`/`*-` before a label.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    s.len() <= DNS1123_LABEL_MAX && is_dns1123_label(rest)
}

/// The labels of `labels` (all of `domain`, or all but its first label), as
/// Istio checks them: the top-level domain not all-numeric, a trailing dot
/// allowed. Messages name the whole `domain`.
fn dns1123_labels(domain: &str, labels: &str) -> Result<(), String> {
    let parts: Vec<&str> = labels.split('.').collect();
    let top = parts.last().copied().unwrap_or_default();
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            break;
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

fn domain_preconditions(name: &str) -> Result<(), String> {
    if name.len() > DOMAIN_MAX {
        Err(format!("domain name {name:?} too long (max {DOMAIN_MAX})"))
    } else if name.is_empty() {
        Err("empty domain name not allowed".into())
    } else {
        Ok(())
    }
}

/// Istio's `ValidateFQDN`.
pub fn fqdn(name: &str) -> Result<(), String> {
    domain_preconditions(name)?;
    dns1123_labels(name, name)
}

/// Istio's `ValidateWildcardDomain`: an FQDN whose first label may be a wildcard.
pub fn wildcard_domain(domain: &str) -> Result<(), String> {
    domain_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    rest.map_or(Ok(()), |rest| dns1123_labels(domain, rest))
}

/// Istio's `ValidatePartialWildCard`: `*` only alone or as a `*.` prefix.
pub fn partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        Err(format!("partial wildcard {host:?} not allowed"))
    } else {
        Ok(())
    }
}

/// The `dnsName` of a Gateway or Sidecar host: an FQDN or `*.suffix` or `*`
/// (Gateways also take an IP address), never a short name.
fn gateway_or_sidecar_host(host: &str, is_gateway: bool) -> Vec<String> {
    let mut errors = Vec::new();
    if host != "*" && !host.contains('.') {
        errors.push("short names (non FQDN) are not allowed".to_string());
    }
    if let Err(e) = wildcard_domain(host)
        && !(is_gateway && host.parse::<IpAddr>().is_ok())
    {
        errors.push(e);
    }
    if let Err(e) = partial_wildcard(host) {
        errors.push(e);
    }
    errors
}

/// Istio's `ValidateNamespaceSlashWildcardHostname`: `namespace/dnsName`,
/// where namespace is `*`, `.`, a name, or (Sidecar only) `~`. A Gateway
/// also takes a bare `dnsName` (any namespace).
pub fn namespace_slash_host(host: &str, is_gateway: bool) -> Vec<String> {
    let Some((ns, name)) = host.split_once('/') else {
        if is_gateway {
            return gateway_or_sidecar_host(host, true);
        }
        return vec!["host must be of form namespace/dnsName".to_string()];
    };
    let mut errors = Vec::new();
    if ns.is_empty() || name.is_empty() {
        errors.push("config namespace and dnsName in host entry cannot be empty".to_string());
    }
    let special: &[&str] = if is_gateway {
        &["*", "."]
    } else {
        &["*", ".", "~"]
    };
    if !special.contains(&ns) && !is_dns1123_label(ns) {
        let what = if is_gateway { "gateway" } else { "sidecar" };
        errors.push(format!("invalid namespace value {ns:?} in {what}"));
    }
    errors.extend(gateway_or_sidecar_host(name, is_gateway));
    errors
}

/// Istio's `ValidatePort`.
pub fn port(n: u32) -> Result<(), String> {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(format!("port number {n} must be in the range 1..65535"))
    }
}

/// Istio's `ValidatePortName`: a DNS-1123 label.
pub fn port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

/// An IP address (Istio's `ValidateIPAddress`).
pub fn ip(addr: &str) -> Result<(), String> {
    addr.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("{addr} is not a valid IP"))
}

/// An IP address or a CIDR block `addr/len` (Istio's `ValidateIPs` on one value).
pub fn ip_or_cidr(value: &str) -> Result<(), String> {
    let Some((addr, len)) = value.split_once('/') else {
        return value
            .parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("bad IP address ({value})"));
    };
    let max = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => 32,
        Ok(IpAddr::V6(_)) => 128,
        Err(_) => return Err(format!("bad CIDR range ({value}): bad address {addr:?}")),
    };
    match len.parse::<u8>() {
        Ok(n) if n <= max && !len.starts_with('+') => Ok(()),
        _ => Err(format!(
            "bad CIDR range ({value}): prefix length must be 0..{max}"
        )),
    }
}

/// Istio's `ValidateUnixAddress` on the path after `unix://`.
pub fn unix_address(path: &str) -> Result<(), String> {
    if path.is_empty() {
        Err("unix address must not be empty".into())
    } else if path.starts_with('@') {
        Ok(())
    } else if !path.starts_with('/') || path.ends_with('/') {
        Err(format!("{path} is not an absolute path to a file"))
    } else {
        Ok(())
    }
}

/// An application protocol as Istio parses it (case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    HttpProxy,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
}

/// The protocols Istio accepts, for error messages.
pub const PROTOCOLS: &str =
    "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, HTTP_PROXY, TCP, TLS, UDP, MONGO, REDIS, MYSQL";

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::HttpProxy
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

/// Istio's `ValidateProtocol`: empty (sniffed) or a known protocol.
pub fn protocol(s: &str) -> Result<(), String> {
    if s.is_empty() || Protocol::parse(s).is_some() {
        Ok(())
    } else {
        Err(format!(
            "unsupported protocol: {s} (expected one of {PROTOCOLS})"
        ))
    }
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 characters.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= LABEL_PREFIX_MAX
            && prefix
                .split('.')
                .all(|l| is_dns1123_label(l) && l.bytes().all(|b| !b.is_ascii_uppercase()));
        if !ok {
            return Err(format!(
                "invalid label key {key:?}: prefix {prefix:?} must be a lower-case DNS subdomain"
            ));
        }
    }
    if name.is_empty() || !label_value_chars(name) {
        return Err(format!(
            "invalid label key {key:?}: name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A Kubernetes label value: empty, or at most 63 letters, digits, `-`, `_`
/// and `.`, starting and ending with a letter or digit.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_value_chars(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn label_value_chars(s: &str) -> bool {
    s.len() <= LABEL_VALUE_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_in_namespace_slash_form() {
        assert!(namespace_slash_host("prod/reviews.prod.svc.cluster.local", false).is_empty());
        assert!(namespace_slash_host("*/*", false).is_empty());
        assert!(namespace_slash_host("./*.example.com", false).is_empty());
        assert!(namespace_slash_host("~/*", false).is_empty());
        assert_eq!(
            namespace_slash_host("reviews.prod.svc.cluster.local", false),
            ["host must be of form namespace/dnsName"]
        );
        assert_eq!(
            namespace_slash_host("~/*", true),
            ["invalid namespace value \"~\" in gateway"]
        );
        assert_eq!(
            namespace_slash_host("prod/reviews", false),
            ["short names (non FQDN) are not allowed"]
        );
        assert_eq!(
            namespace_slash_host("prod/foo*.example.com", false),
            [
                "domain name \"foo*.example.com\" invalid (label \"foo*\" invalid)",
                "partial wildcard \"foo*.example.com\" not allowed"
            ]
        );
        // Gateways take a bare host, and an IP.
        assert!(namespace_slash_host("bookinfo.example.com", true).is_empty());
        assert!(namespace_slash_host("*", true).is_empty());
        assert!(namespace_slash_host("10.0.0.1", true).is_empty());
        assert_eq!(
            namespace_slash_host("/a.example.com", true),
            [
                "config namespace and dnsName in host entry cannot be empty",
                "invalid namespace value \"\" in gateway"
            ]
        );
    }

    #[test]
    fn domains() {
        assert!(fqdn("api.example.com").is_ok());
        assert!(fqdn("istio.io.").is_ok());
        assert_eq!(
            fqdn("a.123"),
            Err(
                "domain name \"a.123\" invalid (top level domain \"123\" cannot be all-numeric)"
                    .into()
            )
        );
        assert!(wildcard_domain("*.example.com").is_ok());
        assert!(wildcard_domain("*").is_ok());
        assert!(wildcard_domain("*-api.example.com").is_ok());
        assert!(fqdn("*.example.com").is_err());
        assert_eq!(fqdn(""), Err("empty domain name not allowed".into()));
    }

    #[test]
    fn addresses() {
        assert!(ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(ip_or_cidr("2001:db8::/32").is_ok());
        assert!(ip_or_cidr("192.0.2.1").is_ok());
        assert_eq!(
            ip_or_cidr("10.0.0.0/33"),
            Err("bad CIDR range (10.0.0.0/33): prefix length must be 0..32".into())
        );
        assert_eq!(ip_or_cidr("10.0.0"), Err("bad IP address (10.0.0)".into()));
        assert!(unix_address("/var/run/app.sock").is_ok());
        assert!(unix_address("@abstract").is_ok());
        assert!(unix_address("relative.sock").is_err());
        assert!(unix_address("/var/run/").is_err());
    }

    #[test]
    fn protocols_and_labels() {
        assert_eq!(Protocol::parse("grpc-web"), Some(Protocol::GrpcWeb));
        assert!(Protocol::parse("HTTPS").is_some_and(Protocol::is_tls));
        assert!(protocol("").is_ok());
        assert!(protocol("QUIC").is_err());
        assert!(label_key("app").is_ok());
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("-app").is_err());
        assert!(label_key("Bad_Prefix/name").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_3").is_ok());
        assert!(label_value("has space").is_err());
    }
}
