//! Bearer keys (or a dashboard session) are required everywhere but the probes and sign-in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Harness, Options, expect_error};

const PROTECTED: [(&str, &str); 13] = [
    ("POST", "/v1/tasks"),
    ("GET", "/v1/tasks/x"),
    ("DELETE", "/v1/tasks/x"),
    ("GET", "/v1/tasks/x/events"),
    ("GET", "/v1/health"),
    ("GET", "/v1/cluster"),
    ("GET", "/metrics"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/approvals"),
    ("POST", "/v1/approvals/apr-0"),
    ("GET", "/v1/monitor"),
    ("GET", "/dashboard.js"),
];

#[tokio::test]
async fn every_route_but_the_probes_needs_a_known_key() {
    let h = Harness::start(Options::default()).await;
    for (method, path) in PROTECTED {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let bare = h
            .client
            .request(method.clone(), h.url(path))
            .send()
            .await
            .unwrap();
        expect_error(bare, 401, "unauthorized").await;
        let wrong = h
            .client
            .request(method.clone(), h.url(path))
            .bearer_auth("test-key-124")
            .send()
            .await
            .unwrap();
        expect_error(wrong, 401, "unauthorized").await;
        let basic = h
            .client
            .request(method, h.url(path))
            .header("authorization", format!("Basic {}", support::KEY))
            .send()
            .await
            .unwrap();
        expect_error(basic, 401, "unauthorized").await;
    }
    for path in ["/healthz", "/readyz"] {
        let resp = h.client.get(h.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    h.stop().await;
}

#[tokio::test]
async fn any_configured_key_is_accepted() {
    let h = Harness::start(Options::default()).await;
    for key in [support::KEY, "second-key"] {
        let resp = h
            .client
            .get(h.url("/v1/models"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    h.stop().await;
}

#[tokio::test]
async fn keys_from_a_comma_separated_variable_are_trimmed_and_blanks_skipped() {
    let h = Harness::start(Options {
        keys_csv: Some(" alpha, ,beta ,".into()),
        ..Options::default()
    })
    .await;
    for (key, status) in [
        ("alpha", 200),
        ("beta", 200),
        (support::KEY, 401),
        ("", 401),
    ] {
        let resp = h
            .client
            .get(h.url("/v1/models"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "key `{key}`");
    }
    h.stop().await;
}
