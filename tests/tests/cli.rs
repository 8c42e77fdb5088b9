#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `custody` command line against the contract (section 2 of the shared surfaces document):
//! every operator command's happy path, `--output json` equal to the API's JSON, each exit code,
//! the confirmation rules, secrets read from stdin, and tables that fit the terminal.
//!
//! The commands run in-process through `custody_server::cli::run` (the same function the binary
//! calls) with captured stdout/stderr and a chosen "terminal", against the in-process server, on
//! SQLite and, when `CUSTODY_TEST_POSTGRES_URL` is set, PostgreSQL. The real binary is run by
//! `crates/server/tests/cli_binary.rs` (`--version`, `migrate`, `serve` plus client commands).

use custody_server::cli::{self, exit, Io};
use custody_tests::backend_test;
use custody_tests::fake_idp::FakeIdp;
use custody_tests::harness::{backends, Backend, TestServer, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A Clerk signing secret (Svix's documented example).
const CLERK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// What one command line did.
#[derive(Debug)]
struct Ran {
    code: u8,
    out: String,
    err: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// How a command line is run: stdin text and whether stdin/stdout are a terminal.
#[derive(Debug, Clone, Copy)]
struct Term<'a> {
    stdin: &'a str,
    terminal: bool,
    width: usize,
}

const PIPE: Term<'static> = Term { stdin: "", terminal: false, width: 80 };

async fn run_raw(args: &[&str], term: Term<'_>) -> Ran {
    let mut out: Vec<u8> = Vec::new();
    let mut err: Vec<u8> = Vec::new();
    let mut input: &[u8] = term.stdin.as_bytes();
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        input: &mut input,
        out_is_terminal: term.terminal,
        input_is_terminal: term.terminal,
        err_is_terminal: false,
        width: Some(term.width),
    };
    let mut argv = vec!["custody"];
    argv.extend_from_slice(args);
    let code = cli::run(argv, &mut io).await;
    Ran { code, out: String::from_utf8(out).unwrap(), err: String::from_utf8(err).unwrap() }
}

/// A command line with the server's URL and admin token (and `--app` when given).
async fn custody(server: &TestServer, app: Option<&str>, args: &[&str], term: Term<'_>) -> Ran {
    let mut argv = vec!["--url", &server.base, "--admin-token", ADMIN_TOKEN];
    if let Some(app) = app {
        argv.extend(["--app", app]);
    }
    argv.extend_from_slice(args);
    run_raw(&argv, term).await
}

/// Runs a command that must succeed and answers its JSON output.
async fn ok_json(server: &TestServer, app: Option<&str>, args: &[&str]) -> Value {
    ok_json_stdin(server, app, args, "").await
}

async fn ok_json_stdin(server: &TestServer, app: Option<&str>, args: &[&str], stdin: &str) -> Value {
    let ran = custody(server, app, args, Term { stdin, ..PIPE }).await;
    assert_eq!(ran.code, 0, "{args:?}: {ran:?}");
    ran.json()
}

/// The API's JSON for a GET (a list's items as one array).
async fn api(server: &TestServer, path: &str) -> Value {
    let a = server.admin(Method::GET, path, None).await;
    assert_eq!(a.status, StatusCode::OK, "{path}: {:?}", a.body);
    match a.body.get("items") {
        Some(items) if a.body.get("next_cursor").is_some() => items.clone(),
        _ => a.body,
    }
}

backend_test!(every_operator_command_works_and_prints_the_apis_json);
async fn every_operator_command_works_and_prints_the_apis_json(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;

    // Apps.
    let created = ok_json(&server, None, &["apps", "create", "Billing"]).await;
    assert!(created["api_key"].as_str().unwrap().starts_with("ck_"), "{created}");
    let app = created["id"].as_str().unwrap().to_owned();
    let app = app.as_str();
    let mut listed_app = created.clone();
    listed_app.as_object_mut().unwrap().remove("api_key");
    assert_eq!(ok_json(&server, None, &["apps", "show", app]).await, listed_app);
    assert_eq!(ok_json(&server, Some(app), &["apps", "show"]).await, listed_app);
    assert_eq!(ok_json(&server, None, &["apps", "list"]).await, api(&server, "/v1/apps").await);

    // API keys.
    let key = ok_json(&server, Some(app), &["api-keys", "create"]).await;
    assert!(key["api_key"].as_str().unwrap().starts_with(key["prefix"].as_str().unwrap()));
    let keys = ok_json(&server, Some(app), &["api-keys", "list"]).await;
    assert_eq!(keys, api(&server, &format!("/v1/apps/{app}/api-keys")).await);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let ran = custody(&server, Some(app), &["api-keys", "delete", key["id"].as_str().unwrap(), "--yes"], PIPE).await;
    assert_eq!((ran.code, ran.out.as_str()), (0, ""), "{ran:?}");
    assert_eq!(ok_json(&server, Some(app), &["api-keys", "list"]).await.as_array().unwrap().len(), 1);

    // Identity provider: discover stores nothing, create, show, update, OIDC client.
    let issuer = idp.issuer();
    let found = ok_json(&server, Some(app), &["idp", "discover", &issuer]).await;
    assert_eq!(found["jwks_uri"], json!(idp.jwks_uri()));
    assert_eq!(server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await.status, 404);
    let created_idp = ok_json(
        &server,
        Some(app),
        &["idp", "create", &issuer, "--kind", "clerk", "--audience", idp.audience(), "--role-claim", "roles"],
    )
    .await;
    assert_eq!(created_idp["kind"], "clerk");
    assert_eq!(created_idp["claims"]["role"], "roles");
    let shown = ok_json(&server, Some(app), &["idp", "show"]).await;
    assert_eq!(shown, api(&server, &format!("/v1/apps/{app}/identity-provider")).await);
    let updated = ok_json(&server, Some(app), &["idp", "update", "--clear-audience", "--clear-role-claim"]).await;
    assert_eq!((updated["audience"].clone(), updated["claims"]["role"].clone()), (Value::Null, Value::Null));
    let oidc = ok_json_stdin(
        &server,
        Some(app),
        &["idp", "oidc", "set", "--client-id", "web", "--client-secret", "-"],
        "s3cret\n",
    )
    .await;
    assert_eq!((oidc["oidc"]["configured"].clone(), oidc["oidc"]["client_id"].clone()), (json!(true), json!("web")));
    assert!(!oidc.to_string().contains("s3cret"));
    let ran = custody(&server, Some(app), &["idp", "oidc", "delete", "--yes"], PIPE).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(api(&server, &format!("/v1/apps/{app}/identity-provider")).await["oidc"]["configured"], false);

    // Webhooks (Clerk: the signing secret comes from stdin, never echoed).
    let status = ok_json(&server, Some(app), &["idp", "webhook", "status"]).await;
    assert_eq!(status, api(&server, &format!("/v1/apps/{app}/identity-provider/webhook")).await);
    assert_eq!(status["enabled"], false);
    let enabled =
        ok_json_stdin(&server, Some(app), &["idp", "webhook", "enable", "--secret", "-"], &format!("{CLERK_SECRET}\n"))
            .await;
    assert_eq!((enabled["enabled"].clone(), enabled["secret_source"].clone()), (json!(true), json!("provided")));
    assert!(!enabled.to_string().contains("whsec_"));
    let rotated = ok_json(&server, Some(app), &["idp", "webhook", "rotate", "--secret", CLERK_SECRET]).await;
    assert!(rotated["rotated_at"].is_string(), "{rotated}");
    let disabled = ok_json(&server, Some(app), &["idp", "webhook", "disable", "--yes"]).await;
    assert_eq!(disabled["enabled"], false);

    // Providers and policies.
    let provider = ok_json_stdin(
        &server,
        Some(app),
        &[
            "providers",
            "set",
            "crm",
            "--client-id",
            "cid",
            "--client-secret",
            "-",
            "--authorization-url",
            "https://crm.example.com/authorize",
            "--token-url",
            "https://crm.example.com/token",
            "--scope",
            "read,write",
        ],
        "provider-secret",
    )
    .await;
    assert_eq!(provider["scopes"], json!(["read", "write"]));
    assert!(!provider.to_string().contains("provider-secret"));
    assert_eq!(ok_json(&server, Some(app), &["providers", "show", "crm"]).await, provider);
    assert_eq!(
        ok_json(&server, Some(app), &["providers", "list"]).await,
        api(&server, &format!("/v1/apps/{app}/providers")).await
    );
    let policy =
        ok_json(&server, Some(app), &["policies", "set", "crm", "--allow-group", "sales", "--allow-role", "admin,ops"])
            .await;
    assert_eq!(
        (policy["allow_groups"].clone(), policy["allow_roles"].clone()),
        (json!(["sales"]), json!(["admin", "ops"]))
    );
    assert_eq!(ok_json(&server, Some(app), &["policies", "show", "crm"]).await, policy);
    assert_eq!(ok_json(&server, Some(app), &["policies", "list"]).await, json!([policy]));
    assert_eq!(custody(&server, Some(app), &["policies", "delete", "crm", "--yes"], PIPE).await.code, 0);
    assert_eq!(ok_json(&server, Some(app), &["policies", "list"]).await, json!([]));

    // Grants and users: import (the access token from stdin), list, show, revoke, deprovision.
    let grant = ok_json_stdin(
        &server,
        Some(app),
        &[
            "grants",
            "import",
            "--provider",
            "crm",
            "--subject",
            "user-1",
            "--access-token",
            "-",
            "--expires-in",
            "3600",
        ],
        "at-123\n",
    )
    .await;
    assert_eq!((grant["status"].clone(), grant["provider"].clone()), (json!("active"), json!("crm")));
    let user_id = grant["user_id"].as_str().unwrap().to_owned();
    let users = ok_json(&server, Some(app), &["users", "list"]).await;
    assert_eq!(users, api(&server, &format!("/v1/apps/{app}/users")).await);
    assert_eq!(users[0]["subject"], "user-1");
    assert_eq!(ok_json(&server, Some(app), &["users", "list", "--status", "suspended"]).await, json!([]));
    assert_eq!(ok_json(&server, Some(app), &["users", "show", &user_id]).await, users[0]);
    let grants = ok_json(&server, Some(app), &["grants", "list", "--provider", "crm"]).await;
    assert_eq!(grants, api(&server, &format!("/v1/apps/{app}/grants?provider=crm")).await);
    assert_eq!(grants.as_array().unwrap().len(), 1);
    let revoked =
        ok_json(&server, Some(app), &["grants", "revoke", grant["id"].as_str().unwrap(), "--reason", "test", "--yes"])
            .await;
    assert_eq!(revoked["status"], "revoked");
    let user = ok_json(&server, Some(app), &["users", "deprovision", &user_id, "--yes"]).await;
    assert_eq!(user["status"], "deprovisioned");

    // Audit.
    let audit = ok_json(&server, Some(app), &["audit", "list"]).await;
    assert_eq!(audit, api(&server, &format!("/v1/apps/{app}/audit")).await);
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    for action in ["app.create", "grant.import", "grant.revoke", "user.deprovision", "webhook.enable", "policy.delete"]
    {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    let only = ok_json(&server, Some(app), &["audit", "list", "--action", "grant.revoke"]).await;
    assert_eq!(only.as_array().unwrap().len(), 1);

    // Deleting: provider, identity provider, app.
    assert_eq!(custody(&server, Some(app), &["providers", "delete", "crm", "--yes"], PIPE).await.code, 0);
    assert_eq!(ok_json(&server, Some(app), &["providers", "list"]).await, json!([]));
    assert_eq!(custody(&server, Some(app), &["idp", "delete", "--yes"], PIPE).await.code, 0);
    assert_eq!(server.admin(Method::GET, &format!("/v1/apps/{app}/identity-provider"), None).await.status, 404);
    assert_eq!(custody(&server, None, &["apps", "delete", app, "--yes"], PIPE).await.code, 0);
    assert_eq!(ok_json(&server, None, &["apps", "list"]).await, json!([]));
}

backend_test!(lists_follow_every_cursor);
async fn lists_follow_every_cursor(backend: Backend) {
    let server = TestServer::start(backend).await;
    for i in 0..3 {
        server.create_app(&format!("app {i}")).await;
    }
    // Pages of 2: the client (which the command line lists through) follows the cursor.
    let page = server.admin(Method::GET, "/v1/apps?limit=2", None).await;
    assert!(page.body["next_cursor"].is_string(), "{:?}", page.body);
    let client = custody_client::Client::new(&server.base, ADMIN_TOKEN).unwrap().with_page_size(2);
    let all: Vec<custody_client::App> = client.list_apps().await.unwrap();
    assert_eq!(all.len(), 3);
    let names: std::collections::BTreeSet<String> = all.into_iter().map(|a| a.name).collect();
    assert_eq!(names.len(), 3);
    assert_eq!(ok_json(&server, None, &["apps", "list"]).await.as_array().unwrap().len(), 3);
}

backend_test!(exit_codes_follow_the_contract_and_errors_show_code_and_detail);
async fn exit_codes_follow_the_contract_and_errors_show_code_and_detail(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.app_with_idp(&idp).await;
    let app = app.as_str();

    // 3: a wrong admin token.
    let ran = run_raw(&["--url", &server.base, "--admin-token", "wrong", "apps", "list"], PIPE).await;
    assert_eq!(ran.code, exit::UNAUTHORIZED, "{ran:?}");
    assert!(ran.err.contains("unauthorized"), "{ran:?}");
    // 4: an unknown app.
    let ran = custody(&server, None, &["apps", "show", "00000000-0000-4000-8000-000000000000"], PIPE).await;
    assert_eq!(ran.code, exit::NOT_FOUND, "{ran:?}");
    assert!(ran.err.contains("app_not_found"), "{ran:?}");
    assert!(ran.out.is_empty());
    // 5: a second identity provider.
    let ran = custody(&server, Some(app), &["idp", "create", &idp.issuer()], PIPE).await;
    assert_eq!(ran.code, exit::CONFLICT, "{ran:?}");
    assert!(ran.err.contains("idp_already_configured"), "{ran:?}");
    // 6: nothing listens there.
    let ran = run_raw(&["--url", "http://127.0.0.1:1", "--admin-token", "x", "apps", "list"], PIPE).await;
    assert_eq!(ran.code, exit::UNAVAILABLE, "{ran:?}");
    assert!(ran.err.contains("127.0.0.1:1"), "{ran:?}");
    // 7: a refused request (400), with the problem's detail.
    let ran = custody(
        &server,
        Some(app),
        &["providers", "set", "Not A Name", "--client-id", "x", "--client-secret", "y"],
        PIPE,
    )
    .await;
    assert_eq!(ran.code, exit::REFUSED, "{ran:?}");
    assert!(ran.err.contains("invalid_request") && ran.err.contains("provider"), "{ran:?}");
    // 7: a Clerk-style secret on a custom OIDC provider is refused.
    let ran = custody(&server, Some(app), &["idp", "webhook", "enable", "--secret", CLERK_SECRET], PIPE).await;
    assert_eq!(ran.code, exit::REFUSED, "{ran:?}");
    // 2: usage errors name what is missing.
    let ran = custody(&server, None, &["providers", "list"], PIPE).await;
    assert_eq!(ran.code, exit::USAGE, "{ran:?}");
    assert!(ran.err.contains("--app") && ran.err.contains("CUSTODY_APP_ID"), "{ran:?}");
    let ran =
        run_raw(&["--url", &server.base, "--admin-token-file", "/nonexistent/admin-token", "apps", "list"], PIPE).await;
    assert_eq!(ran.code, exit::USAGE, "{ran:?}");
    assert!(ran.err.contains("--admin-token-file /nonexistent/admin-token"), "{ran:?}");
    let ran = custody(&server, None, &["apps", "frobnicate"], PIPE).await;
    assert_eq!(ran.code, exit::USAGE, "{ran:?}");
    let ran = custody(&server, Some(app), &["idp", "update"], PIPE).await;
    assert_eq!(ran.code, exit::USAGE, "{ran:?}");
    assert!(ran.err.contains("--audience"), "{ran:?}");
    let ran =
        custody(&server, Some(app), &["idp", "oidc", "set", "--client-id", "c", "--client-secret", "-"], PIPE).await;
    assert_eq!(ran.code, exit::USAGE, "{ran:?}");
    assert!(ran.err.contains("--client-secret") && ran.err.contains("empty"), "{ran:?}");
}

#[tokio::test]
async fn the_admin_token_can_come_from_a_file() {
    let server = TestServer::start(backends()[0]).await;
    let path = server.dir.path().join("token");
    std::fs::write(&path, format!("{ADMIN_TOKEN}\n")).unwrap();
    let ran =
        run_raw(&["--url", &server.base, "--admin-token-file", path.to_str().unwrap(), "apps", "list"], PIPE).await;
    assert_eq!((ran.code, ran.json()), (0, json!([])), "{ran:?}");
}

backend_test!(destructive_commands_confirm_on_a_terminal_and_refuse_without_one);
async fn destructive_commands_confirm_on_a_terminal_and_refuse_without_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (app, _) = server.create_app("Keep me").await;
    let exists =
        || async { server.admin(Method::GET, &format!("/v1/apps/{app}"), None).await.status == StatusCode::OK };

    // No terminal, no --yes: refused, exit 2, nothing deleted.
    let ran = custody(&server, None, &["apps", "delete", &app], PIPE).await;
    assert_eq!(ran.code, exit::USAGE, "{ran:?}");
    assert!(ran.err.contains("--yes"), "{ran:?}");
    assert!(exists().await);
    // A terminal, answered "n": aborted, nothing deleted.
    let tty = Term { stdin: "n\n", terminal: true, width: 100 };
    let ran = custody(&server, None, &["apps", "delete", &app], tty).await;
    assert_eq!(ran.code, exit::OTHER, "{ran:?}");
    assert!(ran.err.contains("[y/N]") && ran.err.contains("aborted"), "{ran:?}");
    assert!(exists().await);
    // The same for the other destructive commands.
    for args in [
        vec!["users", "deprovision", "00000000-0000-4000-8000-000000000000"],
        vec!["grants", "revoke", "00000000-0000-4000-8000-000000000000"],
        vec!["idp", "webhook", "disable"],
        vec!["providers", "delete", "github"],
    ] {
        let ran = custody(&server, Some(&app), &args, PIPE).await;
        assert_eq!(ran.code, exit::USAGE, "{args:?}: {ran:?}");
    }
    // A terminal, answered "y": deleted, and the table output says so.
    let tty = Term { stdin: "y\n", terminal: true, width: 100 };
    let ran = custody(&server, None, &["apps", "delete", &app], tty).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.out.contains("deleted app"), "{ran:?}");
    assert!(!exists().await);
}

#[tokio::test]
async fn tables_on_a_terminal_fit_its_width() {
    let server = TestServer::start(backends()[0]).await;
    server.create_app("An app with a rather long name that will not fit in a narrow terminal").await;
    let narrow = Term { stdin: "", terminal: true, width: 50 };
    let ran = custody(&server, None, &["apps", "list"], narrow).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let lines: Vec<&str> = ran.out.lines().collect();
    assert_eq!(lines.len(), 2, "{ran:?}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("NAME"), "{ran:?}");
    assert!(lines.iter().all(|l| l.chars().count() <= 50), "{ran:?}");
    assert!(lines[1].contains('…'), "{ran:?}");
    // --output json wins over the terminal.
    let ran = custody(&server, None, &["--output", "json", "apps", "list"], narrow).await;
    assert_eq!(ran.json().as_array().unwrap().len(), 1);
    // One object: field  value lines.
    let ran = custody(&server, None, &["apps", "create", "Second"], narrow).await;
    assert!(ran.out.lines().any(|l| l.starts_with("api_key") && l.contains("ck_")), "{ran:?}");
}

#[tokio::test]
async fn completions_and_help_come_from_the_same_definitions() {
    for (shell, marker) in [("bash", "_custody"), ("zsh", "#compdef custody"), ("fish", "complete -c custody")] {
        let ran = run_raw(&["completions", shell], PIPE).await;
        assert_eq!(ran.code, 0, "{ran:?}");
        assert!(ran.out.contains(marker), "{shell}: {}", &ran.out[..200.min(ran.out.len())]);
        assert!(ran.out.contains("api-keys") && ran.out.contains("refresh-keys"), "{shell}");
    }
    let ran = run_raw(&["--help"], PIPE).await;
    assert_eq!(ran.code, 0);
    assert!(ran.out.contains("Exit codes"), "{ran:?}");
    let ran = run_raw(&["--version"], PIPE).await;
    assert!(ran.out.starts_with(&format!("custody {}", env!("CARGO_PKG_VERSION"))), "{ran:?}");
    let dir = tempfile::tempdir().unwrap();
    let ran = run_raw(&["generate-man", dir.path().to_str().unwrap()], PIPE).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let page = std::fs::read_to_string(dir.path().join("custody.1")).unwrap();
    assert!(page.contains(".TH custody"), "{page}");
    assert!(dir.path().join("custody-idp-webhook.1").exists());
}

backend_test!(idp_refresh_keys_fetches_the_keys);
async fn idp_refresh_keys_fetches_the_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let idp = FakeIdp::start().await;
    let (app, _) = server.app_with_idp(&idp).await;
    let before = idp.jwks_fetches();
    let refreshed = ok_json(&server, Some(&app), &["idp", "refresh-keys"]).await;
    assert!(idp.jwks_fetches() > before);
    assert!(refreshed["kids"].as_array().is_some_and(|k| !k.is_empty()), "{refreshed}");
}
