//! A stand-in for one bookinfo service: answers with its name and version,
//! and calls its downstream services through its sidecar (used as an HTTP
//! proxy), propagating the `end-user` and tracing headers as bookinfo does.
//!
//! bookinfo-app --service reviews --version v2 --listen 127.0.1.14:9080 \
//!     --sidecar 127.0.0.14:15001 --call ratings:9080/ratings/0

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

/// Headers bookinfo propagates from an incoming request to its outgoing calls.
const PROPAGATED: &[&str] = &[
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
];
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

struct App {
    service: String,
    version: String,
    /// `host:port/path` of each downstream call.
    calls: Vec<String>,
    client: reqwest::Client,
    /// Requests served so far.
    served: AtomicU64,
}

fn usage() -> ! {
    eprintln!(
        "usage: bookinfo-app --service NAME --version V --listen ADDR:PORT [--sidecar ADDR:PORT] [--call HOST:PORT/PATH]..."
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut service, mut version, mut listen, mut sidecar) = (None, None, None, None);
    let mut calls = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--service" => service = Some(value),
            "--version" => version = Some(value),
            "--listen" => listen = Some(value),
            "--sidecar" => sidecar = Some(value),
            "--call" => calls.push(value),
            _ => usage(),
        }
    }
    let (Some(service), Some(version), Some(listen)) = (service, version, listen) else {
        usage()
    };
    let listen: SocketAddr = listen.parse().unwrap_or_else(|_| usage());
    let mut client = reqwest::Client::builder().timeout(CALL_TIMEOUT).no_proxy();
    if let Some(sidecar) = &sidecar {
        let proxy = reqwest::Proxy::http(format!("http://{sidecar}")).unwrap_or_else(|_| usage());
        client = client.proxy(proxy);
    }
    let app = Arc::new(App {
        service,
        version,
        calls,
        client: client.build().expect("http client"),
        served: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| panic!("bind {listen}: {e}"));
    eprintln!("{} {} listening on {listen}", app.service, app.version);
    let router = Router::new().fallback(handle).with_state(app);
    axum::serve(listener, router).await.expect("serve");
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let headers = req.headers().clone();
    let path = req.uri().path().to_string();
    // Test knobs: `sleep_ms=N` answers slowly; `flaky=N` fails every Nth request with 503.
    let query = req.uri().query().unwrap_or_default().to_string();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let seq = app.served.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(ms) = param("sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    if let Some(n) = param("flaky").filter(|n| *n > 0)
        && seq % n == 0
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "flaky\n").into_response();
    }
    let mut results = Vec::new();
    for call in &app.calls {
        results.push(call_downstream(&app.client, call, &headers).await);
    }
    // Test knob: `echo_headers=1` shows the request headers the app received.
    let echoed: Option<serde_json::Map<String, Value>> =
        (param("echo_headers") == Some(1)).then(|| {
            headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), Value::from(v.to_str().ok()?))))
                .collect()
        });
    let mut body = json!({
        "service": app.service,
        "version": app.version,
        "path": path,
        "served": seq,
        "end_user": headers.get("end-user").and_then(|v| v.to_str().ok()),
        "calls": results,
    });
    if let Some(h) = echoed {
        body["headers"] = Value::Object(h);
    }
    Json(body).into_response()
}

async fn call_downstream(client: &reqwest::Client, call: &str, incoming: &HeaderMap) -> Value {
    let url = format!("http://{call}");
    let mut req = client.get(&url);
    for name in PROPAGATED {
        if let Some(v) = incoming.get(*name) {
            req = req.header(*name, v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            json!({"target": call, "status": status, "body": body})
        }
        Err(e) => json!({"target": call, "status": 0, "error": e.to_string()}),
    }
}
