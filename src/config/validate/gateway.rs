//! Istio's Gateway rules: servers, hosts in `namespace/host` form, ports and
//! protocols, binds, and TLS mode constraints.

use std::collections::HashSet;

use super::findings::Findings;
use super::names::{self, PROTOCOLS, Protocol, UNIX_PREFIX};
use super::server_tls;
use crate::model::istio::{GatewaySpec, Server, ServerTlsMode};

pub fn check(name: &str, s: &GatewaySpec, f: &mut Findings) {
    if !names::is_dns1123_label(name) {
        f.error(
            "metadata.name",
            format!("invalid gateway name: {name:?} (a DNS-1123 label, without dots)"),
        );
    }
    if s.servers.is_empty() {
        f.error("spec.servers", "gateway must have at least one server");
    }
    let mut port_names = HashSet::new();
    for (i, server) in s.servers.iter().enumerate() {
        let path = format!("spec.servers[{i}]");
        self::server(&path, server, f);
        if !port_names.insert(server.port.name.as_str()) {
            f.error(
                format!("{path}.port.name"),
                format!(
                    "port names in servers must be unique: duplicate name {}",
                    server.port.name
                ),
            );
        }
        let http = Protocol::parse(&server.port.protocol).is_some_and(Protocol::is_http);
        if !http && server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
            f.warn(
                format!("{path}.tls.httpsRedirect"),
                "tls.httpsRedirect should only be used with http servers",
            );
        }
    }
}

fn server(path: &str, server: &Server, f: &mut Findings) {
    if server.hosts.is_empty() {
        f.error(
            format!("{path}.hosts"),
            "server config must contain at least one host",
        );
    }
    for (j, host) in server.hosts.iter().enumerate() {
        for e in names::namespace_slash_host(host, true) {
            f.error(format!("{path}.hosts[{j}]"), e);
        }
    }
    let port = &server.port;
    let bind = server.bind.as_deref().unwrap_or_default();
    let protocol = Protocol::parse(&port.protocol);
    if protocol.is_none() {
        f.error(
            format!("{path}.port.protocol"),
            format!(
                "invalid protocol {:?}, supported protocols are {PROTOCOLS}",
                port.protocol
            ),
        );
    }
    let unix = bind.strip_prefix(UNIX_PREFIX);
    if port.number > 0 || unix.is_none() {
        f.check(format!("{path}.port.number"), names::port(port.number));
    }
    if port.target_port.is_some_and(|t| t > 0) {
        f.error(
            format!("{path}.port.targetPort"),
            "targetPort has no impact on Gateways",
        );
    }
    if port.name.is_empty() {
        f.error(format!("{path}.port.name"), "port name must be set");
    }
    match unix {
        Some(socket) => {
            f.check(format!("{path}.bind"), names::unix_address(socket));
            if port.number != 0 {
                f.error(
                    format!("{path}.port.number"),
                    "port number must be 0 for unix domain socket",
                );
            }
        }
        None if !bind.is_empty() => f.check(format!("{path}.bind"), names::ip(bind)),
        None => {}
    }
    if let Some(tls) = &server.tls {
        server_tls::check(&format!("{path}.tls"), tls, f);
    }
    let Some(protocol) = protocol else { return };
    match &server.tls {
        None if protocol.is_tls() => f.error(
            format!("{path}.tls"),
            format!(
                "server must have TLS settings for HTTPS/TLS protocols (port protocol is {})",
                port.protocol
            ),
        ),
        Some(tls) if !protocol.is_tls() => {
            // A plain HTTP server may carry only `httpsRedirect` (its TLS
            // mode stays the default, PASSTHROUGH, and has no certificates).
            let passthrough = matches!(
                tls.mode.unwrap_or_default(),
                ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
            );
            let files = [
                &tls.ca_certificates,
                &tls.private_key,
                &tls.server_certificate,
            ]
            .iter()
            .any(|s| s.as_deref().is_some_and(|s| !s.is_empty()));
            if !protocol.is_http() {
                f.error(
                    format!("{path}.tls"),
                    "server cannot have TLS settings for non HTTPS/TLS ports",
                );
            } else if !passthrough || files {
                f.error(
                    format!("{path}.tls"),
                    "server cannot have TLS settings for plain text HTTP ports (only httpsRedirect)",
                );
            }
        }
        _ => {}
    }
}
