//! Request bodies of the HTTP API (pocket-server's JSON extractors and the task, chat and
//! approval request types), through the real router over an in-memory cluster with a `sim`
//! agent that works off the queue. No TCP: requests go to the router as a tower service.
//!
//! Properties: nothing panics; no body makes a 500; every error is the JSON
//! `{"error": {"type", "message"}}` shape.
//!
//! Input: byte 0 picks the route and content type; the rest is the body.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use pocket_agent::Agent;
use pocket_cluster::{Cluster, ClusterConfig};
use pocket_models::{SimConfig, SimModel};
use pocket_server::Server;
use tower::ServiceExt;

const KEY: &str = "fuzz-key";

struct Harness {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let router = rt.block_on(async {
            let config = ClusterConfig {
                poll_interval_ms: 5,
                ..ClusterConfig::default()
            };
            let store = pocket_cluster::open("memory:", config.store_options().max_queued(10_000))
                .await
                .unwrap();
            let cluster = Cluster::builder(store)
                .config(config)
                .factory(|name| {
                    Ok(Agent::builder(SimModel::new(SimConfig::default()))
                        .name(name)
                        .build()?)
                })
                .agent("default")
                .build()
                .unwrap();
            let server = Server::builder(cluster.clone())
                .api_keys([KEY])
                .request_timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            tokio::spawn(async move {
                let _ = cluster.run(std::future::pending::<()>()).await;
            });
            server.router()
        });
        Harness { rt, router }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let (method, path) = match mode % 4 {
        0 => ("POST", "/v1/tasks"),
        1 => ("POST", "/v1/chat/completions"),
        2 => ("POST", "/v1/approvals/01a2107a-2125-7233-9cfa-c2d36e5bad90"),
        _ => ("DELETE", "/v1/tasks/not-a-task"),
    };
    let ctype = match (mode / 4) % 3 {
        0 => Some("application/json"),
        1 => Some("application/json; charset=utf-8"),
        _ => None,
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {KEY}"));
    if let Some(ctype) = ctype {
        req = req.header("content-type", ctype);
    }
    let req = req.body(Body::from(body.to_vec())).unwrap();
    let h = harness();
    h.rt.block_on(async {
        let resp = h.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap();
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "a request body made a 500: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() || status.is_server_error() {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {bytes:?}"));
            assert!(v["error"]["type"].is_string(), "error shape: {v}");
            assert!(v["error"]["message"].is_string(), "error shape: {v}");
        }
    });
});
