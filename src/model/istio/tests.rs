use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use super::*;

/// A bookinfo sample file's name and text.
macro_rules! bookinfo {
    ($file:literal) => {
        (
            $file,
            include_str!(concat!(
                "../../../../shared/reference/istio-samples/bookinfo/",
                $file
            )),
        )
    };
}

/// Every bookinfo sample holding Istio networking kinds (all but
/// `platform-kube-bookinfo.yaml` and `bookinfo-gateway.yaml`).
const BOOKINFO: &[(&str, &str)] = &[
    bookinfo!("destination-rule-all-mtls.yaml"),
    bookinfo!("destination-rule-all.yaml"),
    bookinfo!("destination-rule-reviews.yaml"),
    bookinfo!("fault-injection-details-v1.yaml"),
    bookinfo!("virtual-service-all-v1.yaml"),
    bookinfo!("virtual-service-details-v2.yaml"),
    bookinfo!("virtual-service-ratings-test-abort.yaml"),
    bookinfo!("virtual-service-ratings-test-delay.yaml"),
    bookinfo!("virtual-service-reviews-50-v3.yaml"),
    bookinfo!("virtual-service-reviews-80-20.yaml"),
    bookinfo!("virtual-service-reviews-90-10.yaml"),
    bookinfo!("virtual-service-reviews-jason-v2-v3.yaml"),
    bookinfo!("virtual-service-reviews-test-v2.yaml"),
    bookinfo!("virtual-service-reviews-v2-v3.yaml"),
    bookinfo!("virtual-service-reviews-v3.yaml"),
];

const CRDS: &str = include_str!("../../../../shared/reference/istio-crds/crd-all.gen.yaml");

/// The Istio kinds of one bookinfo sample file, by `metadata.name`.
#[derive(Debug, Default)]
struct Sample {
    virtual_services: BTreeMap<String, VirtualServiceSpec>,
    destination_rules: BTreeMap<String, DestinationRuleSpec>,
}

type PathError = serde_path_to_error::Error<serde_yaml_ng::Error>;

/// Deserializes YAML, reporting the field path of any error.
fn mk_spec<T: DeserializeOwned>(yaml: &str) -> Result<T, PathError> {
    serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(yaml))
}

/// Parses a bookinfo file: every document's `spec` into its kind's type.
fn mk_sample(file: &str) -> Sample {
    let (_, text) = BOOKINFO
        .iter()
        .find(|(name, _)| *name == file)
        .unwrap_or_else(|| panic!("{file} is not in BOOKINFO"));
    let mut sample = Sample::default();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let doc: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc)
            .unwrap_or_else(|e| panic!("{file} document {index}: {e}"));
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let spec = doc
            .get("spec")
            .cloned()
            .unwrap_or_else(|| panic!("{file} document {index} has no spec"));
        let context = format!("{file} document {index} ({kind} {name})");
        match kind.as_str() {
            "VirtualService" => {
                let vs: VirtualServiceSpec = deserialize_value(spec, &context);
                vs.validate_one_of()
                    .unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_roundtrips(&vs, &context);
                sample.virtual_services.insert(name, vs);
            }
            "DestinationRule" => {
                let dr: DestinationRuleSpec = deserialize_value(spec, &context);
                dr.validate_one_of()
                    .unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_roundtrips(&dr, &context);
                sample.destination_rules.insert(name, dr);
            }
            other => panic!("{context}: unexpected kind {other}"),
        }
    }
    sample
}

fn deserialize_value<T: DeserializeOwned>(value: serde_yaml_ng::Value, context: &str) -> T {
    serde_path_to_error::deserialize(value)
        .unwrap_or_else(|e| panic!("{context}: at {}: {}", e.path(), e.inner()))
}

/// Serializing and parsing again gives the same value.
fn assert_roundtrips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
    context: &str,
) {
    let yaml = serde_yaml_ng::to_string(value).unwrap_or_else(|e| panic!("{context}: {e}"));
    let again: T = mk_spec(&yaml).unwrap_or_else(|e| panic!("{context}: reparse: {e}"));
    assert_eq!(
        &again, value,
        "{context}: changed by a YAML round trip:\n{yaml}"
    );
}

fn weights(route: &HttpRoute) -> Vec<(Option<&str>, Option<i32>)> {
    route
        .route
        .iter()
        .map(|d| (d.destination.subset.as_deref(), d.weight))
        .collect()
}

#[test]
fn every_bookinfo_document_parses() {
    let mut documents = 0;
    for (file, _) in BOOKINFO {
        let sample = mk_sample(file);
        documents += sample.virtual_services.len() + sample.destination_rules.len();
    }
    assert_eq!(documents, 25);
}

#[test]
fn bookinfo_all_v1_routes_everything_to_v1() {
    let sample = mk_sample("virtual-service-all-v1.yaml");
    let names: Vec<&str> = sample.virtual_services.keys().map(String::as_str).collect();
    assert_eq!(names, ["details", "productpage", "ratings", "reviews"]);
    for (name, vs) in &sample.virtual_services {
        assert_eq!(vs.hosts, [name.as_str()]);
        let dest = &vs.http[0].route[0].destination;
        assert_eq!(dest.host, *name);
        assert_eq!(dest.subset.as_deref(), Some("v1"));
    }
}

#[test]
fn bookinfo_weighted_routes() {
    let cases = [
        (
            "virtual-service-reviews-80-20.yaml",
            vec![(Some("v1"), Some(80)), (Some("v2"), Some(20))],
        ),
        (
            "virtual-service-reviews-90-10.yaml",
            vec![(Some("v1"), Some(90)), (Some("v2"), Some(10))],
        ),
        (
            "virtual-service-reviews-50-v3.yaml",
            vec![(Some("v1"), Some(50)), (Some("v3"), Some(50))],
        ),
        ("virtual-service-reviews-v3.yaml", vec![(Some("v3"), None)]),
    ];
    for (file, expected) in cases {
        let sample = mk_sample(file);
        let reviews = &sample.virtual_services["reviews"];
        assert_eq!(weights(&reviews.http[0]), expected, "{file}");
    }
}

#[test]
fn bookinfo_header_matches() {
    for (file, vs_name) in [
        ("virtual-service-reviews-jason-v2-v3.yaml", "reviews"),
        ("virtual-service-reviews-test-v2.yaml", "reviews"),
        ("virtual-service-ratings-test-abort.yaml", "ratings"),
        ("virtual-service-ratings-test-delay.yaml", "ratings"),
    ] {
        let sample = mk_sample(file);
        let vs = &sample.virtual_services[vs_name];
        assert_eq!(vs.http.len(), 2, "{file}");
        let end_user = &vs.http[0].r#match[0].headers["end-user"];
        assert_eq!(
            end_user.kind(),
            Some(StringMatchKind::Exact("jason")),
            "{file}"
        );
        assert!(
            vs.http[1].r#match.is_empty(),
            "{file}: second rule is the default"
        );
    }
    let jason = mk_sample("virtual-service-reviews-jason-v2-v3.yaml");
    let reviews = &jason.virtual_services["reviews"];
    assert_eq!(weights(&reviews.http[0]), [(Some("v2"), None)]);
    assert_eq!(weights(&reviews.http[1]), [(Some("v3"), None)]);
}

#[test]
fn bookinfo_fault_injection() {
    let abort = mk_sample("virtual-service-ratings-test-abort.yaml");
    let fault = abort.virtual_services["ratings"].http[0].fault.as_ref();
    let abort = fault.and_then(|f| f.abort.as_ref()).expect("abort");
    assert_eq!(abort.kind(), Some(AbortKind::HttpStatus(500)));
    assert_eq!(abort.percentage, Some(Percent { value: 100.0 }));

    let delay = mk_sample("virtual-service-ratings-test-delay.yaml");
    let fault = delay.virtual_services["ratings"].http[0].fault.as_ref();
    let delay = fault.and_then(|f| f.delay.as_ref()).expect("delay");
    assert_eq!(delay.kind(), Some(DelayKind::Fixed("7s")));
    assert_eq!(parse_duration("7s"), Ok(Duration::from_secs(7)));
    assert_eq!(delay.effective_percentage(), Some(100.0));

    let details = mk_sample("fault-injection-details-v1.yaml");
    let route = &details.virtual_services["details"].http[0];
    let abort = route.fault.as_ref().and_then(|f| f.abort.as_ref());
    assert_eq!(
        abort.and_then(FaultAbort::kind),
        Some(AbortKind::HttpStatus(555))
    );
    assert_eq!(details.destination_rules["details"].subsets[0].name, "v1");
}

#[test]
fn bookinfo_destination_rules() {
    let mtls = mk_sample("destination-rule-all-mtls.yaml");
    assert_eq!(mtls.destination_rules.len(), 4);
    for (name, dr) in &mtls.destination_rules {
        assert_eq!(dr.host, *name);
        let tls = dr.traffic_policy.as_ref().and_then(|p| p.tls.as_ref());
        assert_eq!(
            tls.and_then(|t| t.mode),
            Some(TlsMode::IstioMutual),
            "{name}"
        );
    }
    let ratings = &mtls.destination_rules["ratings"];
    let subsets: Vec<&str> = ratings.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(subsets, ["v1", "v2", "v2-mysql", "v2-mysql-vm"]);
    assert_eq!(ratings.subsets[2].labels["version"], "v2-mysql");

    let plain = mk_sample("destination-rule-all.yaml");
    assert!(
        plain
            .destination_rules
            .values()
            .all(|dr| dr.traffic_policy.is_none())
    );

    let reviews = mk_sample("destination-rule-reviews.yaml");
    let lb = reviews.destination_rules["reviews"]
        .traffic_policy
        .as_ref()
        .and_then(|p| p.load_balancer.as_ref())
        .expect("loadBalancer");
    assert_eq!(lb.kind(), Some(LoadBalancerKind::Simple(SimpleLb::Random)));
}

#[test]
fn unknown_field_is_rejected_with_its_path() {
    let yaml = "
hosts: [reviews]
http:
- match:
  - uri: {exakt: /x}
  route:
  - destination: {host: reviews}
";
    let err = mk_spec::<VirtualServiceSpec>(yaml).expect_err("exakt is not a StringMatch field");
    let path = err.path().to_string();
    assert!(path.contains("exakt"), "path {path:?}");
    assert!(path.starts_with("http[0].match[0].uri"), "path {path:?}");
    assert!(
        err.inner().to_string().contains("unknown field `exakt`"),
        "{}",
        err.inner()
    );
}

#[test]
fn bad_enum_value_and_missing_required_field_are_rejected() {
    let err = mk_spec::<ServiceEntrySpec>("hosts: [a.example]\nresolution: DNZ\n")
        .expect_err("DNZ is not a resolution");
    assert_eq!(err.path().to_string(), "resolution");
    assert!(
        err.inner().to_string().contains("DNS_ROUND_ROBIN"),
        "{}",
        err.inner()
    );

    let err =
        mk_spec::<DestinationRuleSpec>("subsets: [{name: v1}]\n").expect_err("host is required");
    assert!(
        err.inner().to_string().contains("missing field `host`"),
        "{}",
        err.inner()
    );
}

#[test]
fn service_entry_with_dns_endpoints() {
    let yaml = "
hosts: [api.example.com]
location: MESH_EXTERNAL
resolution: DNS
ports:
- {number: 443, name: https, protocol: TLS}
- {number: 80, name: http, protocol: HTTP, targetPort: 8080}
endpoints:
- address: us.api.example.com
  ports: {https: 8443}
  locality: us-east1/us-east1-b
  weight: 3
- address: eu.api.example.com
  labels: {region: eu}
exportTo: ['.']
subjectAltNames: [spiffe://example.com/api]
";
    let se: ServiceEntrySpec = mk_spec(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(se.resolution, Some(Resolution::Dns));
    assert_eq!(se.location.unwrap_or_default(), Location::MeshExternal);
    assert_eq!(se.ports[1].target_port, Some(8080));
    assert_eq!(se.ports[0].protocol.as_deref(), Some("TLS"));
    assert_eq!(se.endpoints.len(), 2);
    assert_eq!(se.endpoints[0].ports["https"], 8443);
    assert_eq!(se.endpoints[0].weight, Some(3));
    assert_eq!(se.endpoints[1].labels["region"], "eu");
    assert_eq!(se.subject_alt_names, ["spiffe://example.com/api"]);
    assert_eq!(se.validate_one_of(), Ok(()));
    assert_roundtrips(&se, "service entry");

    let both = "
hosts: [db.internal]
resolution: STATIC
endpoints: [{address: 10.0.0.1}]
workloadSelector: {labels: {app: db}}
";
    let se: ServiceEntrySpec = mk_spec(both).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        se.workload_selector
            .as_ref()
            .map(|s| &s.labels["app"])
            .map(String::as_str),
        Some("db")
    );
    let err = se
        .validate_one_of()
        .expect_err("endpoints and workloadSelector are exclusive");
    assert!(err.contains("workloadSelector and endpoints"), "{err}");
}

#[test]
fn workload_entry_fields() {
    let yaml = "
address: 10.1.2.3
ports: {http: 8080, grpc: 9090}
labels: {app: ratings, version: v1}
serviceAccount: bookinfo-ratings
network: vm-network
locality: us-west1/us-west1-a
weight: 5
";
    let we: WorkloadEntrySpec = mk_spec(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(we.address.as_deref(), Some("10.1.2.3"));
    assert_eq!(
        we.ports,
        BTreeMap::from([("grpc".into(), 9090), ("http".into(), 8080)])
    );
    assert_eq!(we.labels["version"], "v1");
    assert_eq!(we.service_account.as_deref(), Some("bookinfo-ratings"));
    assert_eq!(we.locality.as_deref(), Some("us-west1/us-west1-a"));
    assert_eq!(we.network.as_deref(), Some("vm-network"));
    assert_eq!(we.weight, Some(5));
    assert_roundtrips(&we, "workload entry");

    let err = mk_spec::<WorkloadEntrySpec>("address: 10.1.2.3\nports: {http: eighty}\n")
        .expect_err("port must be a number");
    assert_eq!(err.path().to_string(), "ports.http");
}

#[test]
fn destination_rule_traffic_policy() {
    let yaml = "
host: reviews.prod.svc.cluster.local
workloadSelector: {matchLabels: {app: productpage}}
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie: {name: user, ttl: 0s, attributes: [{name: SameSite, value: Strict}]}
      ringHash: {minimumRingSize: 1024}
    localityLbSetting:
      enabled: true
      distribute:
      - from: us-west/zone1/*
        to: {us-west/zone1/*: 80, us-west/zone2/*: 20}
    warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}
  connectionPool:
    tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}}
    http: {http2MaxRequests: 1000, h2UpgradePolicy: UPGRADE, http2KeepAlive: {interval: 30s}}
  outlierDetection:
    consecutive5xxErrors: 7
    interval: 5m
    baseEjectionTime: 15m
    outlierDetectionHttpErrorCodes: [503, 504]
  tls: {mode: SIMPLE, sni: reviews.example.com, subjectAltNames: [reviews]}
  portLevelSettings:
  - port: {number: 9080}
    loadBalancer: {simple: LEAST_REQUEST}
  tunnel: {protocol: CONNECT, targetHost: 10.0.0.1, targetPort: 8443}
  proxyProtocol: {version: V2}
  retryBudget: {percent: 20.5, minRetryConcurrency: 3, budgetInterval: 10s}
subsets:
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
";
    let dr: DestinationRuleSpec = mk_spec(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dr.validate_one_of(), Ok(()));
    assert_roundtrips(&dr, "destination rule");
    let policy = dr.traffic_policy.as_ref().expect("trafficPolicy");
    let lb = policy.load_balancer.as_ref().expect("loadBalancer");
    let Some(LoadBalancerKind::ConsistentHash(hash)) = lb.kind() else {
        panic!("expected consistentHash, got {:?}", lb.kind());
    };
    assert!(matches!(hash.hash_key(), Some(HashKey::HttpCookie(c)) if c.name == "user"));
    assert_eq!(
        hash.hash_algorithm(),
        Some(HashAlgorithm::RingHash(&RingHash {
            minimum_ring_size: Some(1024)
        }))
    );
    let locality = lb.locality_lb_setting.as_ref().expect("localityLbSetting");
    assert_eq!(locality.distribute[0].to["us-west/zone2/*"], 20);
    assert_eq!(
        lb.warmup.as_ref().and_then(|w| w.minimum_percent),
        Some(10.0)
    );
    let http = policy
        .connection_pool
        .as_ref()
        .and_then(|c| c.http.as_ref());
    assert_eq!(
        http.and_then(|h| h.h2_upgrade_policy),
        Some(H2UpgradePolicy::Upgrade)
    );
    let outlier = policy.outlier_detection.as_ref().expect("outlierDetection");
    assert_eq!(outlier.consecutive_5xx_errors, Some(7));
    assert_eq!(outlier.outlier_detection_http_error_codes, [503, 504]);
    assert_eq!(policy.tunnel.as_ref().map(|t| t.target_port), Some(8443));
    assert_eq!(
        policy.proxy_protocol.as_ref().and_then(|p| p.version),
        Some(ProxyProtocolVersion::V2)
    );
    let port_lb = policy.port_level_settings[0]
        .load_balancer
        .as_ref()
        .and_then(LoadBalancerSettings::kind);
    assert_eq!(
        port_lb,
        Some(LoadBalancerKind::Simple(SimpleLb::LeastRequest))
    );
    assert_eq!(
        dr.workload_selector.as_ref().map(|s| s.match_labels.len()),
        Some(1)
    );
}

#[test]
fn one_of_violations_are_reported_with_their_path() {
    let yaml = "
hosts: [reviews]
http:
- route: [{destination: {host: reviews}}]
- match:
  - uri: {prefix: /api}
  - headers: {x-user: {exact: a, regex: b.*}}
  route: [{destination: {host: reviews}}]
";
    let vs: VirtualServiceSpec = mk_spec(yaml).unwrap_or_else(|e| panic!("{e}"));
    let err = vs.validate_one_of().expect_err("exact and regex together");
    assert_eq!(
        err,
        "http[1].match[1].headers[x-user]: only one of exact, prefix, regex may be set, \
         but found exact and regex"
    );

    let both = StringMatch {
        exact: Some("a".into()),
        prefix: Some("b".into()),
        regex: None,
    };
    assert!(both.validate_one_of().is_err());
    assert_eq!(both.kind(), Some(StringMatchKind::Exact("a")));
    assert_eq!(StringMatch::default().kind(), None);
    assert_eq!(StringMatch::default().validate_one_of(), Ok(()));

    let redirect_and_route = "
hosts: [reviews]
http:
- redirect: {uri: /v2, derivePort: FROM_REQUEST_PORT}
  route: [{destination: {host: reviews}}]
";
    let vs: VirtualServiceSpec = mk_spec(redirect_and_route).unwrap_or_else(|e| panic!("{e}"));
    let err = vs
        .validate_one_of()
        .expect_err("route and redirect together");
    assert!(
        err.starts_with("http[0]: only one of route, redirect, directResponse"),
        "{err}"
    );
    let redirect = vs.http[0].redirect.as_ref().expect("redirect");
    assert_eq!(
        redirect.redirect_port(),
        Some(RedirectPort::Derive(RedirectPortSelection::FromRequestPort))
    );

    let lb: LoadBalancerSettings = mk_spec("simple: RANDOM\nconsistentHash: {useSourceIp: true}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let err = lb
        .validate_one_of()
        .expect_err("simple and consistentHash together");
    assert!(err.contains("found simple and consistentHash"), "{err}");

    let dr: DestinationRuleSpec = mk_spec(
        "host: r\nsubsets:\n- name: v1\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}, minimumRingSize: 10}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = dr
        .validate_one_of()
        .expect_err("maglev and minimumRingSize together");
    assert!(
        err.starts_with(
            "subsets[0].trafficPolicy.loadBalancer.consistentHash: only one of ringHash, maglev"
        ),
        "{err}"
    );
}

#[test]
fn http_route_optional_features() {
    let yaml = "
hosts: ['*.example.com']
gateways: [mesh, istio-system/gw]
exportTo: ['*']
http:
- name: api
  match:
  - uri: {regex: '^/api/v[0-9]+'}
    method: {exact: GET}
    queryParams: {debug: {exact: '1'}}
    withoutHeaders: {x-canary: {}}
    ignoreUriCase: true
    sourceLabels: {app: web}
    port: 8080
  rewrite: {uriRegexRewrite: {match: '^/api/(.*)', rewrite: '/\\1'}, authority: backend}
  timeout: 1.5s
  retries: {attempts: 3, perTryTimeout: 500ms, retryOn: '5xx,connect-failure'}
  mirror: {host: shadow, port: {number: 80}}
  mirrorPercentage: {value: 12.5}
  corsPolicy:
    allowOrigins: [{prefix: 'https://'}]
    allowMethods: [GET, POST]
    maxAge: 24h
    allowCredentials: false
    unmatchedPreflights: IGNORE
  headers:
    request: {set: {x-api: '1'}, remove: [cookie]}
    response: {add: {x-served-by: pilotfish}}
  route:
  - destination: {host: backend, subset: v1, port: {number: 9080}}
    weight: 100
    headers: {response: {set: {x-route: v1}}}
- directResponse: {status: 503, body: {string: unavailable}}
- delegate: {name: reviews-delegate, namespace: team}
tcp:
- match: [{port: 3306, destinationSubnets: [10.0.0.0/8], sourceSubnet: 10.1.0.0/16}]
  route: [{destination: {host: mysql}, weight: 100}]
tls:
- match: [{sniHosts: [login.example.com], port: 443}]
  route: [{destination: {host: login}}]
";
    let vs: VirtualServiceSpec = mk_spec(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vs.validate_one_of(), Ok(()));
    assert_roundtrips(&vs, "virtual service");
    let api = &vs.http[0];
    assert_eq!(
        api.r#match[0].uri.as_ref().and_then(StringMatch::kind),
        Some(StringMatchKind::Regex("^/api/v[0-9]+"))
    );
    assert_eq!(api.r#match[0].without_headers["x-canary"].kind(), None);
    assert_eq!(
        api.timeout.as_deref().map(parse_duration),
        Some(Ok(Duration::from_millis(1500)))
    );
    assert_eq!(api.retries.as_ref().and_then(|r| r.attempts), Some(3));
    assert_eq!(api.effective_mirror_percentage(), Some(12.5));
    let cors = api.cors_policy.as_ref().expect("corsPolicy");
    assert_eq!(cors.unmatched_preflights, Some(UnmatchedPreflights::Ignore));
    let rewrite = api
        .rewrite
        .as_ref()
        .and_then(|r| r.uri_regex_rewrite.as_ref());
    assert_eq!(
        rewrite.and_then(|r| r.r#match.as_deref()),
        Some("^/api/(.*)")
    );
    let body = vs.http[1]
        .direct_response
        .as_ref()
        .and_then(|d| d.body.as_ref());
    assert_eq!(
        body.and_then(HttpBody::kind),
        Some(HttpBodyKind::String("unavailable"))
    );
    assert_eq!(
        vs.http[2]
            .delegate
            .as_ref()
            .and_then(|d| d.namespace.as_deref()),
        Some("team")
    );
    assert_eq!(vs.tcp[0].r#match[0].port, Some(3306));
    assert_eq!(vs.tls[0].r#match[0].sni_hosts, ["login.example.com"]);

    let legacy: HttpRoute =
        mk_spec("mirror: {host: shadow}\nmirror_percent: 5\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(legacy.effective_mirror_percentage(), Some(5.0));
}

#[test]
fn parse_duration_accepts_istio_syntax() {
    let ok = [
        ("1s", Duration::from_secs(1)),
        ("100ms", Duration::from_millis(100)),
        ("1.5s", Duration::from_millis(1500)),
        ("1h30m", Duration::from_secs(5400)),
        ("1h2m3.5s", Duration::from_millis(3_723_500)),
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        (".5s", Duration::from_millis(500)),
        ("10us", Duration::from_micros(10)),
        ("10µs", Duration::from_micros(10)),
        ("7ns", Duration::from_nanos(7)),
        ("0.000000001s", Duration::from_nanos(1)),
        ("+2m", Duration::from_secs(120)),
        ("2562047h", Duration::from_secs(2_562_047 * 3600)),
    ];
    for (input, expected) in ok {
        assert_eq!(parse_duration(input), Ok(expected), "{input:?}");
    }
}

#[test]
fn parse_duration_rejects_bad_input() {
    let bad = [
        ("", "empty duration"),
        ("5x", "unknown unit \"x\""),
        ("-1s", "must not be negative"),
        ("10", "missing unit"),
        ("1.5", "missing unit"),
        ("s", "expected a number"),
        (".s", "expected a number"),
        ("1s ", "unknown unit \"s \""),
        ("1..5s", "missing unit"),
        ("2562048h", "too large"),
        ("99999999999999999999999999999999999999999h", "too large"),
    ];
    for (input, expected) in bad {
        let err = parse_duration(input).expect_err(input);
        assert!(err.contains(expected), "{input:?}: {err}");
    }
}

// --- Every field of the CRD schema round-trips --------------------------
//
// A document setting every field of the v1 `spec` schema of Istio's CRD must
// parse and serialize back unchanged. (That our generated CRDs have the same
// fields and types as Istio's is checked in `model::crd`'s tests.)

/// The v1 `spec` schema of an Istio CRD, by `plural` (for
/// `networking.istio.io`, e.g. `virtualservices`) or `plural.group`.
fn crd_spec_schema(plural: &str) -> Json {
    let wanted = if plural.contains('.') {
        plural.to_string()
    } else {
        format!("{plural}.networking.istio.io")
    };
    for doc in serde_yaml_ng::Deserializer::from_str(CRDS) {
        let doc: Json = serde::Deserialize::deserialize(doc).expect("CRD YAML");
        if doc["metadata"]["name"] != wanted.as_str() {
            continue;
        }
        let versions = doc["spec"]["versions"].as_array().expect("versions");
        let specs: Vec<&Json> = versions
            .iter()
            .map(|v| &v["schema"]["openAPIV3Schema"]["properties"]["spec"])
            .collect();
        let v1 = versions
            .iter()
            .position(|v| v["name"] == "v1")
            .expect("v1 version");
        for spec in &specs {
            assert_eq!(
                strip_descriptions(spec),
                strip_descriptions(specs[v1]),
                "{plural}: versions differ in schema"
            );
        }
        return specs[v1].clone();
    }
    panic!("{wanted} not found in crd-all.gen.yaml");
}

fn strip_descriptions(schema: &Json) -> Json {
    match schema {
        Json::Object(map) => Json::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "description")
                .map(|(k, v)| (k.clone(), strip_descriptions(v)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(strip_descriptions).collect()),
        other => other.clone(),
    }
}

/// A document setting every field the CRD schema allows, with sample values.
fn mk_full_document(schema: &Json) -> Json {
    if let Some(values) = schema["enum"].as_array() {
        return values.last().cloned().unwrap_or(Json::Null);
    }
    match schema["type"].as_str() {
        Some("object") => {
            let mut doc = serde_json::Map::new();
            for (name, child) in schema["properties"].as_object().into_iter().flatten() {
                doc.insert(name.clone(), mk_full_document(child));
            }
            if schema["additionalProperties"].is_object() {
                doc.insert(
                    "some-key".into(),
                    mk_full_document(&schema["additionalProperties"]),
                );
            }
            Json::Object(doc)
        }
        Some("array") => Json::Array(vec![mk_full_document(&schema["items"])]),
        Some("string") if schema["format"] == "byte" => Json::from("aGVsbG8="),
        Some("string") => Json::from("1s"),
        Some("integer") => schema
            .get("minimum")
            .and_then(Json::as_u64)
            .map_or(Json::from(7), |min| Json::from(min.max(7))),
        Some("number") => Json::from(2.5),
        Some("boolean") => Json::from(true),
        other => panic!("unexpected schema type {other:?}"),
    }
}

fn assert_full_document_roundtrips<T: Serialize + DeserializeOwned>(plural: &str) {
    let doc = mk_full_document(&crd_spec_schema(plural));
    let parsed: T = serde_path_to_error::deserialize(&doc)
        .unwrap_or_else(|e| panic!("{plural}: at {}: {}", e.path(), e.inner()));
    let back = serde_json::to_value(&parsed).expect("serialize");
    assert_eq!(back, doc, "{plural}: a field was lost or changed");
}

#[test]
fn every_crd_field_roundtrips() {
    assert_full_document_roundtrips::<VirtualServiceSpec>("virtualservices");
    assert_full_document_roundtrips::<DestinationRuleSpec>("destinationrules");
    assert_full_document_roundtrips::<ServiceEntrySpec>("serviceentries");
    assert_full_document_roundtrips::<WorkloadEntrySpec>("workloadentries");
    assert_full_document_roundtrips::<GatewaySpec>("gateways");
    assert_full_document_roundtrips::<SidecarSpec>("sidecars");
    assert_full_document_roundtrips::<WorkloadGroupSpec>("workloadgroups");
    use crate::model::security::{
        AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
    };
    assert_full_document_roundtrips::<PeerAuthenticationSpec>(
        "peerauthentications.security.istio.io",
    );
    assert_full_document_roundtrips::<AuthorizationPolicySpec>(
        "authorizationpolicies.security.istio.io",
    );
    assert_full_document_roundtrips::<RequestAuthenticationSpec>(
        "requestauthentications.security.istio.io",
    );
    assert_full_document_roundtrips::<crate::model::telemetry::TelemetrySpec>(
        "telemetries.telemetry.istio.io",
    );
}

#[test]
fn a_match_matches_every_request_without_request_port_or_source_conditions() {
    let m = |yaml: &str| -> HttpMatchRequest { serde_yaml_ng::from_str(yaml).unwrap() };
    for all in [
        "{}",
        "{name: n}",
        "{uri: {prefix: /}}",
        "{uri: {regex: '.*'}, ignoreUriCase: true}",
        "{uri: {}}",
    ] {
        assert!(m(all).matches_every_request(), "{all}");
    }
    for some in [
        "{uri: {prefix: /a}}",
        "{uri: {exact: /}}",
        "{method: {exact: GET}}",
        "{headers: {x: {}}}",
        "{withoutHeaders: {x: {exact: y}}}",
        "{queryParams: {q: {exact: y}}}",
        "{port: 9080}",
        "{sourceLabels: {app: a}}",
        "{sourceNamespace: ns}",
        "{gateways: [mesh]}",
    ] {
        assert!(!m(some).matches_every_request(), "{some}");
    }
}
