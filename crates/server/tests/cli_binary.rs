#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real `custody` binary (`CARGO_BIN_EXE_custody`): `--version`, `migrate` (including
//! `status` on a database that does not exist, which must not create it), and `serve` started the
//! way an operator starts it, then driven by the binary's own operator commands: exit codes,
//! JSON output, the admin token file, and the confirmation rule without a terminal.
//! The in-process suite (`tests/tests/cli.rs`) covers every command in depth.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_custody");

/// `custody ARGS` with a clean CUSTODY_* environment plus `env`.
fn custody(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("CUSTODY_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("custody starts");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_names_the_package_version_and_the_commit() {
    let out = custody(&["--version"], &[], "");
    assert!(out.status.success());
    let line = text(&out.stdout);
    let expected = format!("custody {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&expected), "{line}");
    let commit = line.trim().trim_start_matches(&expected).trim_end_matches(')');
    assert!(!commit.is_empty() && commit.chars().all(|c| c.is_ascii_alphanumeric()), "{line}");
}

#[test]
fn migrate_status_names_a_missing_sqlite_database_and_does_not_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested").join("custody.db");
    let url = format!("sqlite://{}", db.display());
    let out = custody(&["migrate", "status"], &[("CUSTODY_DATABASE_URL", &url)], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains(&db.display().to_string()), "{out:?}");
    assert!(!db.exists() && !db.parent().unwrap().exists());

    // `up` creates it; `status` then lists every migration as applied, in JSON off a terminal.
    let out = custody(&["migrate", "up"], &[("CUSTODY_DATABASE_URL", &url)], "");
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("applied"), "{out:?}");
    let out = custody(&["migrate", "status"], &[("CUSTODY_DATABASE_URL", &url)], "");
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!list.as_array().unwrap().is_empty());
    assert!(list.as_array().unwrap().iter().all(|m| m["applied"] == true), "{list}");
    // `down` reverts the last one.
    let out = custody(&["migrate", "down"], &[("CUSTODY_DATABASE_URL", &url)], "");
    assert!(out.status.success() && text(&out.stdout).starts_with("reverted"), "{out:?}");
}

#[test]
fn migrate_status_names_a_missing_postgres_database() {
    let Ok(base) = std::env::var("CUSTODY_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED migrate_status_names_a_missing_postgres_database: CUSTODY_TEST_POSTGRES_URL is not set");
        return;
    };
    let mut url = url::Url::parse(&base).unwrap();
    let name = format!("custody_missing_{}", std::process::id());
    url.set_path(&name);
    let out = custody(&["migrate", "status"], &[("CUSTODY_DATABASE_URL", url.as_str())], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains(&name), "{out:?}");
}

/// A `custody serve` child, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthy(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn serve(data_dir: &Path) -> (Served, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("CUSTODY_") {
            command.env_remove(name);
        }
    }
    let child = command
        .arg("serve")
        .env("CUSTODY_LISTEN", &addr)
        .env("CUSTODY_DATA_DIR", data_dir)
        .env("CUSTODY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served(child);
    // Wait until it answers (start-up migrates a fresh database), at most 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(&addr) {
        assert!(Instant::now() < deadline, "custody serve did not answer /healthz on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (served, format!("http://{addr}"))
}

#[test]
fn serve_then_operator_commands_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, url) = serve(&data);
    let token_file = data.join("admin-token");
    assert!(token_file.exists(), "serve generates the admin token file");
    let token_file = token_file.to_str().unwrap();
    let op = |args: &[&str], stdin: &str| {
        let mut all = vec!["--url", url.as_str(), "--admin-token-file", token_file];
        all.extend_from_slice(args);
        custody(&all, &[], stdin)
    };

    let out = op(&["apps", "create", "From the binary"], "");
    assert!(out.status.success(), "{out:?}");
    let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = app["id"].as_str().unwrap();
    let out = op(&["apps", "list"], "");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], app["id"]);

    // No terminal and no --yes: refused with 2, nothing deleted.
    let out = op(&["apps", "delete", id], "y\n");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("--yes"));
    assert!(op(&["apps", "show", id], "").status.success());
    let out = op(&["apps", "delete", id, "--yes"], "");
    assert!(out.status.success(), "{out:?}");
    let out = op(&["apps", "show", id], "");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(text(&out.stderr).contains("app_not_found"), "{out:?}");

    // The token from CUSTODY_ADMIN_TOKEN, a wrong one: 3.
    let out = custody(&["--url", &url, "apps", "list"], &[("CUSTODY_ADMIN_TOKEN", "wrong")], "");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // A usage error: 2.
    assert_eq!(op(&["apps", "create"], "").status.code(), Some(2));
    // `migrate status` on the server's own database (the default in its data dir).
    let out = custody(&["migrate", "status", "--output", "table"], &[("CUSTODY_DATA_DIR", data.to_str().unwrap())], "");
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).lines().all(|l| l.starts_with("applied")), "{out:?}");
}
