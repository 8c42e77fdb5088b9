//! The binary's own output (issue 15, items 12 and 13): a closed or broken stderr never stops a
//! request or shutdown, nor crashes the process; with `CUSTODY_LOG_FORMAT=json` every line is
//! JSON, the first-start banner included.

use custody_tests::binary::custody_binary;
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Waits until `/healthz` answers (the process is up), at most 30 s.
async fn until_up(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("custody did not come up at {base}");
}

/// Waits for the child to exit, at most `within`; returns its exit status.
fn exit_within(mut child: std::process::Child, within: Duration) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(within) {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_neither_blocks_nor_crashes_and_sigterm_stops_it() {
    let bin = tokio::task::spawn_blocking(custody_binary).await.expect("binary");
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CUSTODY_LISTEN", format!("127.0.0.1:{port}"))
        .env("CUSTODY_DATA_DIR", dir.path().join("data"))
        .env("CUSTODY_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn custody");
    // Close the read end at once: every later write to stderr fails with EPIPE.
    drop(child.stderr.take());
    let base = format!("http://127.0.0.1:{port}");
    until_up(&base).await;
    let http = reqwest::Client::new();
    for _ in 0..200 {
        let r = http.get(format!("{base}/healthz")).send().await.expect("answered with stderr closed");
        assert_eq!(r.status(), 200);
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || exit_within(child, Duration::from_secs(15))).await.expect("join");
    let exited = exited.expect("custody stopped on SIGTERM with stderr closed");
    assert!(exited.success(), "exit status {exited:?} (101 would be a panic)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_on_every_line_including_the_first_start_banner() {
    let bin = tokio::task::spawn_blocking(custody_binary).await.expect("binary");
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let port = free_port();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CUSTODY_LISTEN", format!("127.0.0.1:{port}"))
        .env("CUSTODY_DATA_DIR", &data)
        .env("CUSTODY_LOG_FORMAT", "json")
        .env("CUSTODY_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn custody");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [Box::new(stderr) as Box<dyn std::io::Read + Send>, Box::new(stdout)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let base = format!("http://127.0.0.1:{port}");
    until_up(&base).await;
    let r = reqwest::get(format!("{base}/healthz")).await.expect("healthz");
    assert_eq!(r.status(), 200);
    // A connect and a sign-in that fail: each logs its reason at warn.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let r = http.get(format!("{base}/v1/connect/callback?state=forged&code=x")).send().await.expect("connect");
    assert_eq!(r.status(), 400);
    let r = http.get(format!("{base}/v1/auth/callback?state=forged&code=x")).send().await.expect("sign-in");
    assert_eq!(r.status(), 400);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let exited = tokio::task::spawn_blocking(move || exit_within(child, Duration::from_secs(15))).await.expect("join");
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    let lines: Vec<String> = rx.try_iter().collect();
    assert!(!lines.is_empty());
    let token = std::fs::read_to_string(data.join("admin-token")).expect("token kept in the data dir");
    let mut banner = None;
    let mut request_line = false;
    let mut warned = Vec::new();
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["event"] == "admin_token_generated" {
            banner = Some(event.clone());
        }
        if event["fields"]["message"] == "request" && event["span"]["route"] == "/healthz" {
            request_line = true;
        }
        if event["level"] == "WARN" {
            if let Some(reason) = event["fields"]["reason"].as_str() {
                warned.push(reason.to_owned());
            }
        }
    }
    let banner = banner.expect("the first-start banner as a JSON event");
    assert_eq!(banner["admin_token"], token.trim());
    assert!(banner["kept_in"].as_str().is_some_and(|p| p.ends_with("admin-token")), "{banner}");
    assert!(request_line, "one request line for GET /healthz: {lines:#?}");
    assert!(warned.iter().any(|r| r == "invalid_state"), "the failed connect, at warn: {warned:?}");
    assert!(warned.iter().any(|r| r == "unknown_state"), "the failed sign-in, at warn: {warned:?}");
    assert!(!lines.iter().any(|l| l.contains("forged")), "the states are never logged");
}
