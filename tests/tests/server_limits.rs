//! The server's protective limits (issue 15, item 1 and 6): the caller is checked before a body
//! is read, routes without a body never read one, a body that stalls is cut off, buffered body
//! bytes and open connections are capped (503 with `Retry-After`), and API answers are never
//! cacheable. These speak raw HTTP/1.1 over TCP, because the point is what the server does with
//! a client that does not finish its request.

// Test bodies outside `#[test]` functions (backend_test!) are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use custody_tests::backend_test;
use custody_tests::harness::{backends, Backend, TestServer, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long a test waits for an answer the server must give without waiting for the client.
const PROMPT: Duration = Duration::from_secs(5);

/// Opens a connection and sends a request head plus `sent` bytes of a body that claims to be
/// `declared` bytes long, then stops sending.
async fn stalled(
    server: &TestServer,
    method: &str,
    path: &str,
    auth: Option<&str>,
    declared: usize,
    sent: usize,
) -> TcpStream {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&vec![b' '; sent]).await.expect("write body");
    stream
}

/// Reads until the response head is complete; returns the status and the head.
async fn response_head(stream: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let status = head.split(' ').nth(1)?.parse().ok()?;
                return Some((status, head));
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_a_body_answers_without_reading_one() {
    let server = TestServer::start(backends()[0]).await;
    let mut stream = stalled(&server, "GET", "/healthz", None, 1_048_576, 1000).await;
    let (status, head) =
        response_head(&mut stream, PROMPT).await.expect("healthz answered without waiting for the body");
    assert_eq!(status, 200);
    // The unread rest of the body is not drained: the connection closes, so a client that stalls
    // mid-body cannot hold it.
    assert_eq!(header(&head, "connection"), Some("close"));
    assert!(closed(&mut stream, PROMPT).await, "the connection was closed after the answer");
}

/// Whether the server closes the connection (reads reach end of stream) within `within`.
async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
    let drain = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, drain).await.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_body_is_refused_before_it_is_read() {
    let server = TestServer::start(backends()[0]).await;
    for (method, path) in
        [("POST", "/v1/apps"), ("POST", "/v1/token"), ("POST", "/v1/webhooks/00000000-0000-4000-8000-000000000000")]
    {
        let mut stream = stalled(&server, method, path, None, 1_048_575, 100).await;
        let (status, head) =
            response_head(&mut stream, PROMPT).await.unwrap_or_else(|| panic!("{method} {path} waited for the body"));
        // 401, or 404 for the webhook of an app that has none (indistinguishable from unknown).
        assert!(matches!(status, 401 | 404), "{method} {path}: {head}");
    }
    // A wrong admin token is refused the same way.
    let mut stream = stalled(&server, "POST", "/v1/apps", Some("not-the-admin-token"), 1_048_575, 100).await;
    assert_eq!(response_head(&mut stream, PROMPT).await.map(|(s, _)| s), Some(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_off_after_the_read_timeout() {
    let server = TestServer::start_with(backends()[0], |c| c.body_read_timeout_secs = 1).await;
    let started = Instant::now();
    let mut stream = stalled(&server, "POST", "/v1/apps", Some(ADMIN_TOKEN), 1000, 10).await;
    let (status, head) = response_head(&mut stream, PROMPT).await.expect("the stalled request was answered");
    assert_eq!(status, 408, "{head}");
    assert!(started.elapsed() >= Duration::from_millis(900), "answered before the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_body_bytes_are_capped_across_requests() {
    let server = TestServer::start_with(backends()[0], |c| c.max_buffered_body_mb = 1).await;
    // The first request reserves 700 KB of the 1 MiB allowance and stalls.
    let mut first = stalled(&server, "POST", "/v1/apps", Some(ADMIN_TOKEN), 700_000, 10).await;
    // Give the server the moment it needs to reach the first body; the first answer proves it did.
    let probe = server.admin(Method::GET, "/v1/apps", None).await;
    assert_eq!(probe.status, 200);
    let mut second = stalled(&server, "POST", "/v1/apps", Some(ADMIN_TOKEN), 700_000, 10).await;
    let (status, head) = response_head(&mut second, PROMPT).await.expect("the second request was answered at once");
    assert_eq!(status, 503, "{head}");
    assert_eq!(header(&head, "retry-after"), Some("1"));
    // Small bodies still fit beside the reservation.
    let created = server.admin(Method::POST, "/v1/apps", Some(json!({"name": "Small"}))).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // Once the first request gives up its body, the allowance is back.
    first.shutdown().await.expect("close");
    drop(first);
    let mut third = None;
    for _ in 0..50 {
        let mut s = stalled(&server, "POST", "/v1/apps", Some(ADMIN_TOKEN), 700_000, 700_000).await;
        match response_head(&mut s, PROMPT).await {
            Some((503, _)) => tokio::task::yield_now().await,
            other => {
                third = other;
                break;
            }
        }
    }
    let (status, _) = third.expect("an answer once the allowance was released");
    assert_eq!(status, 400, "the full body was read and parsed (spaces are not JSON)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_with_retry_after() {
    let server = TestServer::start_with(backends()[0], |c| c.max_connections = 2).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.expect("write");
        assert_eq!(response_head(&mut s, PROMPT).await.map(|(st, _)| st), Some(200));
        held.push(s);
    }
    let mut over = TcpStream::connect(&addr).await.expect("connect");
    over.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.expect("write");
    let (status, head) = response_head(&mut over, PROMPT).await.expect("answered");
    assert_eq!(status, 503, "{head}");
    assert_eq!(header(&head, "retry-after"), Some("1"));
    // Closing a held connection frees its slot.
    drop(held.pop());
    let mut answered = None;
    for _ in 0..100 {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.expect("write");
        match response_head(&mut s, PROMPT).await {
            Some((200, _)) => {
                answered = Some(200);
                break;
            }
            _ => tokio::task::yield_now().await,
        }
    }
    assert_eq!(answered, Some(200));
}

backend_test!(answers_carrying_secrets_or_user_data_are_never_cached);
async fn answers_carrying_secrets_or_user_data_are_never_cached(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server.admin(Method::POST, "/v1/apps", Some(json!({"name": "Acme"}))).await;
    assert_eq!(created.status, 201);
    let app = created.body["id"].as_str().expect("id").to_owned();
    let key = server.admin(Method::POST, &format!("/v1/apps/{app}/api-keys"), None).await;
    let listed = server.admin(Method::GET, "/v1/apps", None).await;
    let missing = server.admin(Method::GET, "/v1/apps/nope", None).await;
    for (what, answer) in [("create app", &created), ("create key", &key), ("list", &listed), ("404", &missing)] {
        assert_eq!(answer.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{what}");
    }
}
