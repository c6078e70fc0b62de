//! Host names as Istio resolves them.

use super::DOMAIN_SUFFIX;

/// Resolves a host as written in a resource of `namespace` to its FQDN, the
/// way Istio does: a name without dots is a short Kubernetes service name in
/// the resource's namespace (`reviews` in `default` is
/// `reviews.default.svc.cluster.local`); anything with a dot, and `*`, is
/// taken as written.
pub fn resolve(host: &str, namespace: &str) -> String {
    if host == "*" || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.{DOMAIN_SUFFIX}")
    }
}

/// Whether `pattern` (an exact host or a `*.suffix` wildcard, or `*`) covers `host`.
pub fn matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The names a client in `client_ns` may use for `host` when calling it
/// through its sidecar on `port`, as Istio lists them in a route's domains:
/// the FQDN, and for mesh-internal names the short forms (`reviews` only from
/// the service's own namespace, `reviews.default`, `reviews.default.svc`).
/// Each name is given with `:port`; port 80 also without it.
pub fn domains(host: &str, port: u32, client_ns: &str) -> Vec<String> {
    let mut names = vec![host.to_string()];
    if let Some(prefix) = host.strip_suffix(&format!(".{DOMAIN_SUFFIX}"))
        && let Some((svc, ns)) = prefix.split_once('.')
        && !ns.contains('.')
    {
        if ns == client_ns {
            names.push(svc.to_string());
        }
        names.push(format!("{svc}.{ns}"));
        names.push(format!("{svc}.{ns}.svc"));
    }
    let mut out = Vec::with_capacity(names.len() * 2);
    for n in names {
        out.push(format!("{n}:{port}"));
        if port == 80 {
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_namespace() {
        assert_eq!(
            resolve("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(resolve("reviews.prod", "default"), "reviews.prod");
        assert_eq!(resolve("*.example.com", "default"), "*.example.com");
        assert_eq!(resolve("*", "default"), "*");
    }

    #[test]
    fn wildcard_matching() {
        assert!(matches("*.example.com", "api.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches("*", "anything"));
        assert!(matches("a.b", "A.B"));
        assert!(!matches("a.b", "a.c"));
    }

    #[test]
    fn domains_for_same_and_other_namespace() {
        let same = domains("reviews.default.svc.cluster.local", 9080, "default");
        assert!(same.contains(&"reviews:9080".to_string()));
        assert!(same.contains(&"reviews.default:9080".to_string()));
        assert!(!same.contains(&"reviews".to_string()));
        let other = domains("reviews.default.svc.cluster.local", 9080, "prod");
        assert!(!other.contains(&"reviews:9080".to_string()));
        assert!(other.contains(&"reviews.default.svc:9080".to_string()));
        let web = domains("api.example.com", 80, "default");
        assert_eq!(web, vec!["api.example.com:80", "api.example.com"]);
    }
}
