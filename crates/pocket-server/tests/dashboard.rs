//! The dashboard: sign-in sessions over real HTTP, the page, and its data endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Harness, KEY, Options, expect_error};

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in through the form; returns the `Set-Cookie` header and the `name=value` pair.
async fn sign_in(h: &Harness, key: &str) -> (String, String) {
    let resp = no_redirects()
        .post(h.url("/v1/session"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let pair = set_cookie.split(';').next().unwrap().trim().to_owned();
    (set_cookie, pair)
}

#[tokio::test]
async fn the_page_needs_a_session_and_shows_a_sign_in_form_without_one() {
    let h = Harness::start(Options::default()).await;
    let resp = h.client.get(h.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(resp.headers().get("set-cookie").is_none());
    let page = resp.text().await.unwrap();
    assert!(page.contains(r#"action="/v1/session""#), "{page}");
    assert!(page.contains(r#"name="key""#));
    assert!(
        !page.contains("/v1/monitor"),
        "no dashboard without a session"
    );
    // A session cookie that was never issued is no session.
    let forged = h
        .client
        .get(h.url("/"))
        .header("cookie", format!("pocket_session={}", "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    h.stop().await;
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_sets_no_cookie() {
    let h = Harness::start(Options::default()).await;
    let client = no_redirects();
    for body in ["key=test-key-124", "key=", "other=1"] {
        let resp = client
            .post(h.url("/v1/session"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!([400, 401].contains(&resp.status().as_u16()), "{body}");
        assert!(resp.headers().get("set-cookie").is_none(), "{body}");
        let page = resp.text().await.unwrap();
        assert!(
            page.contains(r#"action="/v1/session""#),
            "sign-in page again"
        );
    }
    let wrong = client
        .post(h.url("/v1/session"))
        .json(&json!({"key": "test-key-124"}))
        .send()
        .await
        .unwrap();
    assert!(wrong.headers().get("set-cookie").is_none());
    expect_error(wrong, 401, "unauthorized").await;
    let malformed = client
        .post(h.url("/v1/session"))
        .header("content-type", "application/json")
        .body("{\"token\": 1}")
        .send()
        .await
        .unwrap();
    let message = expect_error(malformed, 400, "invalid_request").await;
    assert!(message.contains("key"), "{message}");
    h.stop().await;
}

#[tokio::test]
async fn the_right_key_sets_an_http_only_strict_cookie_that_opens_the_page_and_its_data() {
    let h = Harness::start(Options::default()).await;
    let (set_cookie, cookie) = sign_in(&h, KEY).await;
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&attribute), "{set_cookie}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "plain HTTP without a proxy: {set_cookie}"
    );
    assert!(cookie.starts_with("pocket_session="), "{cookie}");
    let token = cookie.trim_start_matches("pocket_session=");
    assert_eq!(token.len(), 64);
    assert!(
        !set_cookie.contains(KEY),
        "the cookie holds a token, not the key"
    );
    let (_, again) = sign_in(&h, KEY).await;
    assert_ne!(again, cookie, "each sign-in gets its own token");

    let page = h
        .client
        .get(h.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"<script src="/dashboard.js">"#));
    let script = h
        .client
        .get(h.url("/dashboard.js"))
        .header("cookie", format!("other=1; {cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    let script = script.text().await.unwrap();
    assert!(script.contains("/v1/monitor") && script.contains("/v1/approvals/"));
    for text in [&page, &script] {
        assert!(
            !text.contains("src=\"http") && !text.contains("href=\"http"),
            "nothing loaded from elsewhere"
        );
    }
    let data = h
        .client
        .get(h.url("/v1/monitor"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), 200);
    let data: Value = data.json().await.unwrap();
    assert_eq!(data["cluster"]["worker"], h.cluster.worker_id());
    // The bearer key works on the page too (scripts and curl).
    let bearer = h.get("/").send().await.unwrap();
    assert_eq!(bearer.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn a_json_sign_in_and_a_proxy_saying_https_get_a_secure_cookie() {
    let h = Harness::start(Options::default()).await;
    let resp = no_redirects()
        .post(h.url("/v1/session"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"key": format!(" {KEY} ")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.split(';').any(|a| a.trim() == "Secure"),
        "{set_cookie}"
    );
    h.stop().await;
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let h = Harness::start(Options::default()).await;
    let (_, cookie) = sign_in(&h, "second-key").await;
    let ok = h
        .client
        .get(h.url("/v1/monitor"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let out = no_redirects()
        .post(h.url("/v1/session/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("pocket_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let after = h
        .client
        .get(h.url("/v1/monitor"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    expect_error(after, 401, "unauthorized").await;
    h.stop().await;
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let h = Harness::start(Options {
        session_ttl: Some(Duration::from_millis(1)),
        ..Options::default()
    })
    .await;
    let (_, cookie) = sign_in(&h, KEY).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let resp = h
        .client
        .get(h.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    h.stop().await;
}

/// Polls `/v1/monitor` until `done` holds; returns that body.
async fn monitor_until(h: &Harness, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        last = h
            .get("/v1/monitor?history=5")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the monitor never showed it: {last}");
}

#[tokio::test]
async fn the_monitor_endpoint_shows_queue_priorities_approvals_and_the_live_series() {
    let mut h = Harness::start(Options {
        dangerous_tool: true,
        live_interval: Some(Duration::from_millis(100)),
        ..Options::default()
    })
    .await;
    // Queued before the cluster runs: the queue by priority.
    h.submit(json!({"task": "What is 2 + 2?", "priority": 5}))
        .await;
    h.submit(json!({"task": "What is 3 + 3?", "priority": 5}))
        .await;
    h.submit(json!({"task": "What is 4 + 4?", "priority": -1}))
        .await;
    let body: Value = h
        .get("/v1/monitor")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["queued_by_priority"],
        json!([{"priority": 5, "queued": 2}, {"priority": -1, "queued": 1}])
    );
    assert_eq!(body["cluster"]["queue"]["queued"], 3);
    assert!(!body["cluster"]["instances"].as_array().unwrap().is_empty());
    assert!(body["health"]["status"].is_string());
    assert!(body["resilience"]["breakers"].is_array());
    assert!(body["history"].is_array() && body["alerts"].is_array());
    assert!(
        body["errors"].is_array(),
        "no recent-log ring: an empty list"
    );
    assert_eq!(body["live"]["every_secs"], 0.1);

    h.run_cluster();
    let launch = h.submit(json!({"task": "launch 'the probe'"})).await;
    let body = monitor_until(&h, |b| b["approvals"].as_array().unwrap().len() == 1).await;
    let approval = &body["approvals"][0];
    assert_eq!(approval["tool"], "launch");
    let id = approval["id"].as_str().unwrap();
    let resp = h
        .post(&format!("/v1/approvals/{id}"))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let view = h.wait_terminal(&launch).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    // Four tasks ended, none failed: the live series counts them (store counts, any worker).
    let body = monitor_until(&h, |b| {
        let points = b["live"]["points"].as_array().unwrap();
        points
            .iter()
            .map(|p| p["finished"].as_u64().unwrap())
            .sum::<u64>()
            == 4
    })
    .await;
    let points = body["live"]["points"].as_array().unwrap();
    assert_eq!(
        points
            .iter()
            .map(|p| p["failed"].as_u64().unwrap())
            .sum::<u64>(),
        0
    );
    assert!(points.iter().all(|p| p["secs"].as_f64().unwrap() > 0.0));
    assert_eq!(body["approvals"], json!([]));
    assert!(body["queued_by_priority"].as_array().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn history_minutes_out_of_range_are_a_clear_400() {
    let h = Harness::start(Options::default()).await;
    let resp = h.get("/v1/monitor?history=0").send().await.unwrap();
    let message = expect_error(resp, 400, "invalid_request").await;
    assert!(message.contains("`history`"), "{message}");
    h.stop().await;
}
