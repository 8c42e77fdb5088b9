#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The proxy (`/v1/proxy/{provider}/{path...}`) over HTTP against the fake OAuth provider's API,
//! on every backend: forwarding, header filtering both ways, path confinement, the body size
//! limit, the time limit, the forced refresh and retry after an upstream 401, streaming of a
//! large answer, audit rows, `proxy_only` policies, policy denials and deprovisioned users.

use custody_tests::backend_test;
use custody_tests::fake_idp::FakeIdp;
use custody_tests::fake_oauth::FakeOAuth;
use custody_tests::harness::{Answer, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PROVIDER: &str = "acme";

struct World {
    server: TestServer,
    idp: FakeIdp,
    oauth: FakeOAuth,
    app: String,
    key: String,
}

impl World {
    async fn start(backend: custody_store::Backend, adjust: impl FnOnce(&mut custody_server::Config)) -> World {
        let idp = FakeIdp::start().await;
        let oauth = FakeOAuth::start().await;
        let server = TestServer::start_with(backend, adjust).await;
        let (app, key) = server.create_app("Proxy app").await;
        server.attach_idp(&app, &idp, json!({"claims": {"group": "groups"}})).await;
        let mut body = oauth.provider_body(&["read"]);
        body["api_base_url"] = json!(oauth.api_base_url());
        let a = server.admin(Method::PUT, &format!("/v1/apps/{app}/providers/{PROVIDER}"), Some(body)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["api_base_url"], json!(oauth.api_base_url()));
        World { server, idp, oauth, app, key }
    }

    /// Imports a live grant for `subject`; returns its id.
    async fn connect(&self, subject: &str) -> String {
        let (access, refresh) = self.oauth.issue_tokens();
        let a = self
            .server
            .admin(
                Method::POST,
                &format!("/v1/apps/{}/grants", self.app),
                Some(json!({"subject": subject, "provider": PROVIDER, "access_token": access,
                            "refresh_token": refresh, "expires_in": 3600})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }

    fn request(&self, method: Method, path: &str, subject: &str) -> reqwest::RequestBuilder {
        self.server
            .http
            .request(method, self.server.url(path))
            .bearer_auth(&self.key)
            .header("x-user-token", self.idp.token_for(subject))
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        let a = self.server.admin(Method::GET, &format!("/v1/apps/{}/audit?action={action}", self.app), None).await;
        a.body["items"].as_array().cloned().unwrap_or_default()
    }

    /// The `proxy.request` rows once there is at least one: the row of a proxied request is
    /// written after its answer's body went out, so it may lag the answer slightly.
    async fn proxy_rows(&self) -> Vec<Value> {
        for _ in 0..500 {
            let rows = self.audit("proxy.request").await;
            if !rows.is_empty() {
                return rows;
            }
            tokio::task::yield_now().await;
        }
        Vec::new()
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer { status, body, headers }
}

backend_test!(forwards_with_the_grant_token_and_filters_headers_both_ways);
async fn forwards_with_the_grant_token_and_filters_headers_both_ways(backend: Backend) {
    let w = World::start(backend, |_| {}).await;
    let grant = w.connect("alice").await;
    let a = answer(
        w.request(Method::POST, "/v1/proxy/acme/echo/repos/a%20b?x=1&x=2&y=%2F", "alice")
            .header("x-trace", "t-1")
            .header("cookie", "session=app")
            .header("x-custody-grant-id", &grant)
            .header("connection", "x-private")
            .header("x-private", "hop")
            .body("hello")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "[{backend}] {}", a.body);
    assert_eq!(a.body["login"], "imported", "[{backend}] the provider accepted the grant's token");
    assert_eq!(a.body["method"], "POST");
    assert_eq!(a.body["path"], "/repos/a%20b", "[{backend}] the raw path");
    assert_eq!(a.body["query"], "x=1&x=2&y=%2F", "[{backend}] the raw query, repeated keys kept");
    assert_eq!(a.body["body_bytes"], 5);
    let sent = a.body["headers"].as_object().unwrap();
    assert_eq!(sent["x-trace"], "t-1");
    for gone in ["x-user-token", "cookie", "x-custody-grant-id", "x-private", "connection"] {
        assert!(!sent.contains_key(gone), "[{backend}] {gone} was forwarded");
    }
    assert_eq!(a.headers["x-upstream"], "fake");
    assert_eq!(a.headers["x-custody-proxy"], "upstream");
    assert_eq!(a.headers["x-custody-grant-id"], grant.as_str());
    assert!(a.headers.get("set-cookie").is_none() && a.headers.get("keep-alive").is_none(), "[{backend}]");

    let rows = w.proxy_rows().await;
    assert_eq!(rows.len(), 1, "[{backend}] {rows:?}");
    let detail = rows[0]["detail"].as_str().unwrap();
    assert!(detail.starts_with("POST 127.0.0.1/api/echo/repos/a%20b -> 200; 5 bytes sent"), "[{backend}] {detail}");
    assert!(!detail.contains("x=1") && !detail.contains("hello"), "[{backend}] no query or body: {detail}");
}

backend_test!(paths_that_leave_the_api_base_are_refused);
async fn paths_that_leave_the_api_base_are_refused(backend: Backend) {
    let w = World::start(backend, |_| {}).await;
    w.connect("alice").await;
    let calls = w.oauth.api_calls();
    for path in [
        "/v1/proxy/acme/../token",
        "/v1/proxy/acme/echo/%2e%2e/%2E%2E/token",
        "/v1/proxy/acme/echo%2f..%2ftoken",
        "/v1/proxy/acme//evil.example/x",
        "/v1/proxy/acme/http://evil.example/x",
        "/v1/proxy/acme/https:%2f%2fevil.example",
    ] {
        // reqwest would normalise `..`; send the raw request target over a socket.
        let (status, body, headers) = raw_get(&w, path).await;
        assert_eq!(status, 400, "[{backend}] {path}: {body}");
        assert!(body.contains("invalid_proxy_path"), "[{backend}] {path}: {body}");
        assert!(!headers.to_ascii_lowercase().contains("x-custody-proxy"), "[{backend}] {path}");
    }
    assert_eq!(w.oauth.api_calls(), calls, "[{backend}] nothing reached the provider");
}

/// A GET with the raw `path` as request target; (status, body, head).
async fn raw_get(w: &World, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = w.server.base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nX-User-Token: {}\r\nConnection: close\r\n\r\n",
        w.key,
        w.idp.token_for("alice")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned(), head.to_owned())
}

backend_test!(request_bodies_over_ten_mib_are_refused);
async fn request_bodies_over_ten_mib_are_refused(backend: Backend) {
    let w = World::start(backend, |_| {}).await;
    w.connect("alice").await;
    let calls = w.oauth.api_calls();
    let big = vec![b'x'; 10 * 1024 * 1024 + 1];
    let a = answer(w.request(Method::PUT, "/v1/proxy/acme/echo/upload", "alice").body(big).send().await.unwrap()).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "[{backend}] {}", a.body);
    assert_eq!(a.code(), "payload_too_large");
    assert!(a.headers.get("x-custody-proxy").is_none());
    assert_eq!(w.oauth.api_calls(), calls, "[{backend}]");
    // Just under the limit streams through.
    let ok = vec![b'x'; 10 * 1024 * 1024];
    let a = answer(w.request(Method::PUT, "/v1/proxy/acme/echo/upload", "alice").body(ok).send().await.unwrap()).await;
    assert_eq!((a.status, a.body["body_bytes"].as_u64()), (StatusCode::OK, Some(10 * 1024 * 1024)), "[{backend}]");
}

backend_test!(a_stalled_provider_times_out);
async fn a_stalled_provider_times_out(backend: Backend) {
    let w = World::start(backend, |c| c.proxy_timeout_secs = 1).await;
    w.connect("alice").await;
    w.oauth.stall_api(true);
    let a = answer(w.request(Method::GET, "/v1/proxy/acme/user", "alice").send().await.unwrap()).await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "[{backend}] {}", a.body);
    assert_eq!(a.code(), "provider_timeout");
    let rows = w.audit("proxy.request").await;
    assert_eq!(rows[0]["outcome"], "failure", "[{backend}] {rows:?}");
    assert!(rows[0]["detail"].as_str().unwrap().contains("no answer"));
}

backend_test!(an_upstream_401_forces_one_refresh_and_one_retry);
async fn an_upstream_401_forces_one_refresh_and_one_retry(backend: Backend) {
    let w = World::start(backend, |_| {}).await;
    w.connect("alice").await;
    // The token looks valid for an hour, but the provider no longer takes it.
    w.oauth.invalidate_access_tokens();
    let a = answer(w.request(Method::GET, "/v1/proxy/acme/user", "alice").send().await.unwrap()).await;
    assert_eq!(a.status, StatusCode::OK, "[{backend}] {}", a.body);
    assert_eq!(a.body["login"], "imported");
    assert_eq!(w.oauth.refresh_calls(), 1, "[{backend}] one forced refresh");
    // A provider that keeps saying 401: one retry only, and its 401 comes back as is.
    w.oauth.fail_next_api_calls(5);
    let calls = w.oauth.api_calls();
    let a = answer(w.request(Method::GET, "/v1/proxy/acme/user", "alice").send().await.unwrap()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "[{backend}]");
    assert_eq!(a.headers["x-custody-proxy"], "upstream", "[{backend}] the provider's answer");
    assert_eq!(w.oauth.api_calls() - calls, 2, "[{backend}] one request, one retry");
    assert_eq!(w.oauth.refresh_calls(), 2);
}

backend_test!(a_large_answer_streams_through);
async fn a_large_answer_streams_through(backend: Backend) {
    let w = World::start(backend, |_| {}).await;
    w.connect("alice").await;
    w.oauth.gate_large_bodies(true);
    let size: u64 = 50 * 1024 * 1024;
    let mut resp = w.request(Method::GET, &format!("/v1/proxy/acme/large?bytes={size}"), "alice").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "[{backend}]");
    // The provider holds back everything after its first chunk until the gate opens: the
    // first bytes arriving here prove the proxy does not wait for (or hold) the whole body.
    let first = resp.chunk().await.unwrap().expect("a first chunk");
    let mut received = first.len() as u64;
    assert!(received < size);
    w.oauth.open_gate();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        received += chunk.len() as u64;
    }
    assert_eq!(received, size, "[{backend}]");
    let rows = w.proxy_rows().await;
    let detail = rows[0]["detail"].as_str().unwrap().to_owned();
    assert!(detail.ends_with(&format!("{size} bytes received")), "[{backend}] {detail}");
}

backend_test!(proxy_only_policies_keep_the_token_inside);
async fn proxy_only_policies_keep_the_token_inside(backend: Backend) {
    let w = World::start(backend, |_| {}).await;
    w.connect("alice").await;
    let a = w
        .server
        .admin(
            Method::PUT,
            &format!("/v1/apps/{}/policies/{PROVIDER}", w.app),
            Some(json!({"allow_groups": [], "allow_roles": [], "token_access": "proxy_only"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["token_access"], "proxy_only");
    // An empty policy allows nobody: denied on both paths.
    let a = answer(w.request(Method::GET, "/v1/proxy/acme/user", "alice").send().await.unwrap()).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "policy_denied"), "[{backend}]");
    assert!(a.headers.get("x-custody-proxy").is_none());
    // A user in the policy's group may use the grant, through the proxy only.
    let mut claims = w.idp.claims_for("alice");
    claims["groups"] = json!(["eng"]);
    let alice = w.idp.sign(claims, custody_tests::fake_idp::Alg::Rs256);
    let a = w
        .server
        .admin(
            Method::PUT,
            &format!("/v1/apps/{}/policies/{PROVIDER}", w.app),
            Some(json!({"allow_groups": ["eng"], "token_access": "proxy_only"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let t = w.server.runtime(Method::POST, "/v1/token", &w.key, &alice, Some(json!({"provider": PROVIDER}))).await;
    assert_eq!((t.status, t.code()), (StatusCode::FORBIDDEN, "handout_disabled"), "[{backend}] {}", t.body);
    assert!(!t.body.to_string().contains("fake-access"), "[{backend}] no token in the refusal");
    let p = w
        .server
        .http
        .get(w.server.url("/v1/proxy/acme/user"))
        .bearer_auth(&w.key)
        .header("x-user-token", &alice)
        .send()
        .await
        .unwrap();
    let p = answer(p).await;
    assert_eq!((p.status, &p.body["login"]), (StatusCode::OK, &json!("imported")), "[{backend}] {}", p.body);
    let denied = w.audit("token.handout").await;
    assert!(denied.iter().any(|r| r["outcome"] == "denied"), "[{backend}] the refusal is audited");
}

backend_test!(a_deprovisioned_user_and_unknown_grants_are_refused);
async fn a_deprovisioned_user_and_unknown_grants_are_refused(backend: Backend) {
    let w = World::start(backend, |_| {}).await;
    w.connect("alice").await;
    let a = answer(w.request(Method::GET, "/v1/proxy/acme/user", "bob").send().await.unwrap()).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "grant_not_found"), "[{backend}]");
    let me = w.server.runtime(Method::GET, "/v1/me", &w.key, &w.idp.token_for("alice"), None).await;
    let user = me.body["user_id"].as_str().unwrap().to_owned();
    let d =
        w.server.admin(Method::POST, &format!("/v1/apps/{}/users/{user}/deprovision", w.app), Some(json!({}))).await;
    assert!(d.status.is_success(), "{}", d.body);
    let a = answer(w.request(Method::GET, "/v1/proxy/acme/user", "alice").send().await.unwrap()).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "user_deprovisioned"), "[{backend}] {}", a.body);
    assert!(a.headers.get("x-custody-proxy").is_none());
    let a = answer(w.server.http.get(w.server.url("/v1/proxy/acme/user")).bearer_auth("ck_nope").send().await.unwrap())
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "[{backend}] a bad API key");
}
