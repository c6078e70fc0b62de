use super::*;

const ID: &str = "RequestAuthentication foo/httpbin";

/// Istio's RequestAuthentication reference example.
const DOCS_EXAMPLE: &str = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "issuer-foo"
    jwksUri: https://example.com/.well-known/jwks.json
"#;

/// Istio's example with the token in a custom header and a claim copied
/// to a header.
const DOCS_FROM_HEADERS: &str = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "issuer-foo"
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    outputClaimToHeaders:
    - header: "x-jwt-claim-foo"
      claim: "foo"
"#;

fn mk_ra(rules: &str) -> String {
    mk_doc(
        "security.istio.io/v1",
        "RequestAuthentication",
        "foo",
        "httpbin",
        &format!("{{selector: {{matchLabels: {{app: httpbin}}}}, jwtRules: {rules}}}"),
    )
}

#[test]
fn istio_docs_examples_are_valid() {
    assert_clean(DOCS_EXAMPLE, ID);
    assert_clean(DOCS_FROM_HEADERS, ID);
    let inline = mk_ra(
        r#"[{issuer: testing@secure.istio.io, jwks: '{"keys": [{"kty": "RSA", "e": "AQAB", "n": "xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}', timeout: 5s, spaceDelimitedClaims: [scope]}]"#,
    );
    assert_clean(&inline, ID);
    let snake = mk_ra("[{issuer: issuer-foo, jwks_uri: 'http://jwks.example.com:8080/keys'}]");
    assert_clean(&snake, ID);
}

#[test]
fn an_issuer_or_a_jwks_uri_is_required() {
    let doc = mk_ra("[{audiences: [a]}, {issuer: ''}, {jwksUri: 'https://example.com/jwks.json'}]");
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.jwtRules[0].issuer",
                "issuer or jwksUri must be non-empty string"
            ),
            ("spec.jwtRules[1].issuer", "issuer must be non-empty string"),
        ])
    );
}

#[test]
fn jwks_uri_is_an_http_url_exclusive_with_jwks() {
    let doc = mk_ra(
        "[{issuer: a, jwksUri: 'ftp://example.com/jwks'}, {issuer: b, jwksUri: 'example.com/jwks'}, {issuer: c, jwksUri: 'https://:443/jwks'}, {issuer: d, jwksUri: 'https://example.com:https/jwks'}, {issuer: e, jwksUri: 'https://example.com/jwks', jwks: '{\"keys\": []}'}]",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.jwtRules[0].jwksUri",
                "URI scheme \"ftp\" is not supported (http or https)"
            ),
            (
                "spec.jwtRules[1].jwksUri",
                "url must have scheme http:// or https://, got \"example.com/jwks\""
            ),
            (
                "spec.jwtRules[2].jwksUri",
                "no host in \"https://:443/jwks\""
            ),
            (
                "spec.jwtRules[3].jwksUri",
                "invalid port \"https\" in \"https://example.com:https/jwks\""
            ),
            ("spec.jwtRules[4]", "only one of jwks or jwksUri can be set"),
        ])
    );
}

#[test]
fn inline_jwks_must_be_a_key_set() {
    let doc = mk_ra(
        r#"[{issuer: a, jwks: 'not json'}, {issuer: b, jwks: '{"keys": [{"n": "x"}]}'}, {issuer: c, jwks: '[]'}]"#,
    );
    let errors = mk_errors(&doc, ID);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(errors[0].0, "spec.jwtRules[0].jwks");
    assert!(
        errors[0].1.starts_with("jwks parse error: expected"),
        "{}",
        errors[0].1
    );
    assert_eq!(
        errors[1],
        (
            "spec.jwtRules[1].jwks".to_string(),
            "jwks parse error: key 0 has no \"kty\"".to_string()
        )
    );
    assert_eq!(
        errors[2],
        (
            "spec.jwtRules[2].jwks".to_string(),
            "jwks parse error: expected a JSON key set {\"keys\": [...]} or a key with \"kty\""
                .to_string()
        )
    );
}

#[test]
fn token_locations_and_claim_headers_are_non_empty() {
    let doc = mk_ra(
        "[{issuer: a, fromHeaders: [{name: ''}], fromParams: [''], fromCookies: [''], audiences: [''], outputClaimToHeaders: [{header: '', claim: sub}, {header: x_claim, claim: sub}], timeout: 500us}]",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[
            (
                "spec.jwtRules[0].audiences[0]",
                "audience must be non-empty string"
            ),
            (
                "spec.jwtRules[0].fromHeaders[0].name",
                "location header name must be non-empty string"
            ),
            (
                "spec.jwtRules[0].fromParams[0]",
                "location query must be non-empty string"
            ),
            (
                "spec.jwtRules[0].fromCookies[0]",
                "cookie name must be non-empty string"
            ),
            (
                "spec.jwtRules[0].outputClaimToHeaders[0]",
                "outputClaimToHeaders header and claim value must be non-empty string"
            ),
            (
                "spec.jwtRules[0].outputClaimToHeaders[1].header",
                "header name x_claim is not a valid header name"
            ),
            (
                "spec.jwtRules[0].timeout",
                "must be a valid duration greater than 1ms"
            ),
        ])
    );
    let missing_name = mk_ra("[{issuer: a, fromHeaders: [{prefix: 'Bearer '}]}]");
    let errors = mk_errors(&missing_name, ID);
    assert_eq!(errors[0].0, "spec.jwtRules[0].fromHeaders[0]");
    assert!(
        errors[0].1.starts_with("missing field `name`"),
        "{}",
        errors[0].1
    );
}

#[test]
fn selector_or_target_ref() {
    let doc = mk_doc(
        "security.istio.io/v1beta1",
        "RequestAuthentication",
        "foo",
        "httpbin",
        "{selector: {matchLabels: {app: httpbin}}, targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}], jwtRules: [{issuer: a}]}",
    );
    assert_eq!(
        mk_errors(&doc, ID),
        expect(&[("spec", "only one of targetRefs or selector can be set")])
    );
}
