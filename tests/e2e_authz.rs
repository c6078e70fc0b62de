//! Authorization with real Envoy, after Istio's security tasks: deny all in a
//! namespace, then allow productpage's identity to GET details and reviews;
//! a DENY on a header; a policy on a TCP port; JWT (RequestAuthentication)
//! with tokens signed here, alone and combined with `requestPrincipals`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Mesh, next_net, wait_until};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// 127.N blocks used by this test binary.
const NET_BASE: u8 = 180;
/// Host numbers of the bookinfo sidecars (see common::BOOKINFO).
const PRODUCTPAGE: u8 = 11;
const DETAILS: u8 = 12;
const REVIEWS_V1: u8 = 13;
const RATINGS: u8 = 16;
/// Envoy's body for a request its RBAC filter denies.
const RBAC_DENIED: &str = "RBAC: access denied";

fn mk_mesh() -> Mesh {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    for f in ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"] {
        mesh.apply(f);
    }
    mesh.start_bookinfo();
    mesh
}

/// One request to `url`, optionally through the sidecar on host `via` (as
/// its app would send it): (status, body).
fn send(
    mesh: &Mesh,
    via: Option<u8>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy();
    if let Some(h) = via {
        client = client
            .proxy(reqwest::Proxy::http(format!("http://127.{}.0.{h}:15001", mesh.net)).unwrap());
    }
    let client = client.build().unwrap();
    let mut req = client.request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The statuses of productpage's calls to details and reviews, or the
/// page's own status when it failed.
fn page_calls(mesh: &Mesh) -> Result<Vec<u64>, u16> {
    let url = format!("http://127.{}.0.{PRODUCTPAGE}:9080/productpage", mesh.net);
    let (status, body) = send(mesh, None, "GET", &url, &[]);
    if status != 200 {
        return Err(status);
    }
    let page: Value = serde_json::from_str(&body).map_err(|_| status)?;
    Ok(page["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["status"].as_u64().unwrap_or(0))
        .collect())
}

fn authz(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}\n"
    )
}

#[test]
fn deny_all_then_allow_by_principal_and_method_and_deny_by_header() {
    let mesh = mk_mesh();
    let net = mesh.net;
    let details = "http://details:9080/details/0";

    // Istio's "allow-nothing": an ALLOW policy without rules, namespace-wide.
    mesh.write("allow-nothing.yaml", &authz("allow-nothing", "  {}"));
    wait_until("productpage denied", || page_calls(&mesh) == Err(403));
    let (status, body) = send(
        &mesh,
        None,
        "GET",
        &format!("http://127.{net}.0.{PRODUCTPAGE}:9080/productpage"),
        &[],
    );
    assert_eq!((status, body.as_str()), (403, RBAC_DENIED));
    // Each sidecar gets its listeners on its own stream: wait for details' too.
    wait_until("details denied", || {
        send(&mesh, Some(PRODUCTPAGE), "GET", details, &[]).0 == 403
    });

    // productpage open to GET; its own calls are still denied downstream.
    mesh.write(
        "productpage-viewer.yaml",
        &authz(
            "productpage-viewer",
            "  selector: {matchLabels: {app: productpage}}\n  action: ALLOW\n  rules:\n  - to: [{operation: {methods: [GET]}}]",
        ),
    );
    wait_until("productpage up, its calls denied", || {
        page_calls(&mesh) == Ok(vec![403, 403])
    });

    // details and reviews: only productpage's identity, only GET.
    for app in ["details", "reviews"] {
        mesh.write(
            &format!("{app}-viewer.yaml"),
            &authz(
                &format!("{app}-viewer"),
                &format!(
                    "  selector: {{matchLabels: {{app: {app}}}}}\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}}}]\n    to: [{{operation: {{methods: [GET]}}}}]"
                ),
            ),
        );
    }
    wait_until("productpage's calls allowed", || {
        page_calls(&mesh) == Ok(vec![200, 200])
    });
    // Over mTLS from productpage's sidecar: GET yes, POST no.
    assert_eq!(send(&mesh, Some(PRODUCTPAGE), "GET", details, &[]).0, 200);
    let (status, body) = send(&mesh, Some(PRODUCTPAGE), "POST", details, &[]);
    assert_eq!((status, body.as_str()), (403, RBAC_DENIED));
    // Another identity (reviews' sidecar), and no identity (plaintext from outside).
    assert_eq!(send(&mesh, Some(REVIEWS_V1), "GET", details, &[]).0, 403);
    let direct = format!("http://127.{net}.0.{DETAILS}:9080/details/0");
    assert_eq!(send(&mesh, None, "GET", &direct, &[]).0, 403);
    // productpage's reviews (v1) does not call ratings; ratings stays closed.
    assert_eq!(
        send(
            &mesh,
            Some(REVIEWS_V1),
            "GET",
            "http://ratings:9080/ratings/0",
            &[]
        )
        .0,
        403
    );

    // DENY is evaluated before ALLOW: a header denies even productpage.
    mesh.write(
        "deny-header.yaml",
        &authz(
            "deny-header",
            "  selector: {matchLabels: {app: details}}\n  action: DENY\n  rules:\n  - when: [{key: 'request.headers[x-block]', values: ['yes', 'always-*']}]",
        ),
    );
    wait_until("header denied", || {
        send(
            &mesh,
            Some(PRODUCTPAGE),
            "GET",
            details,
            &[("x-block", "always-now")],
        )
        .0 == 403
    });
    assert_eq!(
        send(
            &mesh,
            Some(PRODUCTPAGE),
            "GET",
            details,
            &[("x-block", "yes")]
        )
        .0,
        403
    );
    assert_eq!(
        send(
            &mesh,
            Some(PRODUCTPAGE),
            "GET",
            details,
            &[("x-block", "no")]
        )
        .0,
        200
    );
    assert_eq!(page_calls(&mesh), Ok(vec![200, 200]));
    // Envoy counts what its RBAC filter denied.
    let stats = mesh.envoy_admin(DETAILS, "/stats?filter=rbac.denied");
    assert!(
        stats
            .lines()
            .any(|l| l.contains("rbac.denied") && !l.ends_with(": 0")),
        "{stats}"
    );

    // Removing every policy opens the namespace again.
    for f in [
        "allow-nothing.yaml",
        "productpage-viewer.yaml",
        "details-viewer.yaml",
        "reviews-viewer.yaml",
        "deny-header.yaml",
    ] {
        mesh.remove(f);
    }
    wait_until("policies removed", || {
        send(&mesh, None, "GET", &direct, &[]).0 == 200
    });
}

/// One connection to tcp-echo on ratings' sidecar from the address of host
/// `from`: true when 100 bytes come back.
fn echo(net: u8, from: u8) -> bool {
    async fn go(net: u8, from: u8) -> std::io::Result<bool> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(format!("127.{net}.0.{from}:0").parse().unwrap())?;
        let mut s = sock
            .connect(format!("127.{net}.0.{RATINGS}:9090").parse().unwrap())
            .await?;
        s.write_all(&[7u8; 100]).await?;
        let mut back = [0u8; 100];
        s.read_exact(&mut back).await?;
        Ok(back == [7u8; 100])
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), go(net, from))
            .await
            .is_ok_and(|r| r.unwrap_or(false))
    })
}

#[test]
fn a_tcp_port_is_guarded_by_network_rbac() {
    let mut mesh = Mesh::start(next_net(NET_BASE), &[], false);
    let net = mesh.net;
    mesh.start_tcp_echo();
    mesh.start_envoy("ratings-v1", RATINGS);
    mesh.wait_envoy_ready(RATINGS);
    wait_until("an echo through the inbound TCP listener", || {
        echo(net, 11) && echo(net, 13)
    });

    // Only connections from productpage's address, only to port 9090. The
    // rule naming a method is HTTP-only: on the TCP port Istio drops it
    // (it would otherwise let everyone in).
    mesh.write(
        "tcp-policy.yaml",
        &authz(
            "tcp-echo",
            &format!(
                "  selector: {{matchLabels: {{app: ratings}}}}\n  action: ALLOW\n  rules:\n  - from: [{{source: {{ipBlocks: [127.{net}.0.11]}}}}]\n    to: [{{operation: {{ports: ['9090']}}}}]\n  - to: [{{operation: {{methods: [GET]}}}}]"
            ),
        ),
    );
    wait_until("the other address refused", || !echo(net, 13));
    assert!(
        echo(net, 11),
        "productpage's address must still get through"
    );
    for _ in 0..5 {
        assert!(!echo(net, 13));
        assert!(echo(net, 11));
    }
    // A DENY on the same port wins over the ALLOW.
    mesh.write(
        "tcp-deny.yaml",
        &authz(
            "tcp-deny",
            &format!(
                "  selector: {{matchLabels: {{app: ratings}}}}\n  action: DENY\n  rules:\n  - from: [{{source: {{ipBlocks: [127.{net}.0.0/24]}}}}]\n    to: [{{operation: {{ports: ['9090']}}}}]"
            ),
        ),
    );
    wait_until("everyone refused", || !echo(net, 11));
    let stats = mesh.envoy_admin(RATINGS, "/stats?filter=tcp.rbac");
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("tcp.rbac.denied") && !l.ends_with(": 0")),
        "{stats}"
    );
}

/// An ES256 signer with its public key as a JWKS.
struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    fn new() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Signer { key, rng }
    }

    /// `{"keys": [...]}` with the public key (uncompressed point: 04 || x || y).
    fn jwks(&self) -> String {
        let point = self.key.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "test",
            "use": "sig", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}]})
        .to_string()
    }

    fn token(&self, claims: &Value) -> String {
        let header = B64.encode(json!({"alg": "ES256", "typ": "JWT", "kid": "test"}).to_string());
        let payload = B64.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }
}

const ISSUER: &str = "testing@secure.istio.io";

fn claims(sub: &str, aud: &str, exp_offset: i64) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    json!({"iss": ISSUER, "sub": sub, "aud": aud, "iat": now, "exp": now + exp_offset,
        "groups": ["group1", "readers"]})
}

#[test]
fn jwt_tokens_are_verified_and_request_principals_required() {
    let mesh = mk_mesh();
    let net = mesh.net;
    let signer = Signer::new();
    let other = Signer::new();
    let jwks = signer.jwks().replace('\'', "''");
    mesh.write(
        "jwt.yaml",
        &format!(
            "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt-example, namespace: default}}
spec:
  selector: {{matchLabels: {{app: details}}}}
  jwtRules:
  - issuer: {ISSUER}
    audiences: [details]
    jwks: '{jwks}'
    outputPayloadToHeader: x-jwt-payload
"
        ),
    );
    let url = format!("http://127.{net}.0.{DETAILS}:9080/details/0?echo_headers=1");
    let bearer = |t: &str| format!("Bearer {t}");
    let good = signer.token(&claims("alice", "details", 600));
    let get = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        send(&mesh, None, "GET", &url, &headers)
    };
    let forged = bearer(&other.token(&claims("alice", "details", 600)));
    wait_until("the RequestAuthentication applied", || {
        get(Some(&forged)).0 == 401
    });

    // A valid token passes; the app sees its payload, not the token (not forwarded).
    let (status, body) = get(Some(&bearer(&good)));
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    let payload = seen["headers"]["x-jwt-payload"]
        .as_str()
        .unwrap_or_default();
    let decoded: Value =
        serde_json::from_slice(&B64.decode(payload.trim_end_matches('=')).unwrap()).unwrap();
    assert_eq!(decoded["sub"], "alice");
    assert!(seen["headers"]["authorization"].is_null(), "{seen}");
    // Invalid: bad signature, expired, garbage, another issuer -> 401.
    for (what, token) in [
        ("bad signature", forged.clone()),
        (
            "expired",
            bearer(&signer.token(&claims("alice", "details", -600))),
        ),
        ("not a JWT", bearer("not.a.jwt")),
        ("unknown issuer", {
            let mut c = claims("alice", "details", 600);
            c["iss"] = json!("someone@else.example");
            bearer(&signer.token(&c))
        }),
    ] {
        let (status, body) = get(Some(&token));
        assert_eq!(status, 401, "{what}: {body}");
    }
    // A token for another audience is refused too (Envoy answers 403 for that one).
    let (status, body) = get(Some(&bearer(
        &signer.token(&claims("alice", "reviews", 600)),
    )));
    assert_eq!(
        (status, body.as_str()),
        (403, "Audiences in Jwt are not allowed")
    );
    // No token: RequestAuthentication alone lets it through.
    assert_eq!(get(None).0, 200);
    // Through productpage's sidecar too (over mTLS): the token travels.
    let details = "http://details:9080/details/0";
    let auth = bearer(&good);
    // productpage's sidecar may hold a connection from before the policy
    // (served by the replaced listener until it closes): wait for a fresh one.
    wait_until("the policy on productpage's connections", || {
        send(
            &mesh,
            Some(PRODUCTPAGE),
            "GET",
            details,
            &[("authorization", &forged)],
        )
        .0 == 401
    });
    assert_eq!(
        send(
            &mesh,
            Some(PRODUCTPAGE),
            "GET",
            details,
            &[("authorization", &auth)]
        )
        .0,
        200
    );
    assert_eq!(
        send(
            &mesh,
            Some(PRODUCTPAGE),
            "GET",
            details,
            &[("authorization", &forged)]
        )
        .0,
        401
    );

    // Require a token: ALLOW only requests with a request principal.
    mesh.write(
        "require-jwt.yaml",
        &authz(
            "require-jwt",
            "  selector: {matchLabels: {app: details}}\n  action: ALLOW\n  rules:\n  - from: [{source: {requestPrincipals: ['*']}}]",
        ),
    );
    wait_until("a token required", || get(None).0 == 403);
    assert_eq!(get(None).1, RBAC_DENIED);
    assert_eq!(get(Some(&bearer(&good))).0, 200);
    assert_eq!(get(Some(&forged)).0, 401);

    // A specific principal (iss/sub) and a claim condition.
    mesh.write(
        "require-jwt.yaml",
        &authz(
            "require-jwt",
            &format!(
                "  selector: {{matchLabels: {{app: details}}}}\n  action: ALLOW\n  rules:\n  - from: [{{source: {{requestPrincipals: ['{ISSUER}/alice']}}}}]\n    when: [{{key: 'request.auth.claims[groups]', values: [group1]}}]"
            ),
        ),
    );
    let bob = bearer(&signer.token(&claims("bob", "details", 600)));
    wait_until("only alice", || get(Some(&bob)).0 == 403);
    assert_eq!(get(Some(&bearer(&good))).0, 200);
    let mut no_group = claims("alice", "details", 600);
    no_group["groups"] = json!(["readers"]);
    assert_eq!(get(Some(&bearer(&signer.token(&no_group)))).0, 403);
    assert_eq!(get(None).0, 403);
}
