//! `cargo xtask sdk-env`: the environment the Python and TypeScript SDK test suites run against.
//!
//! Starts in this process, on loopback ports: the fake identity provider (sign-in advertised,
//! Custody registered as its OIDC client), the fake OAuth provider (with its API under `/api`)
//! and Custody on a temporary SQLite directory (insecure, loopback `http` issuers allowed). It
//! then sets up one app: the IdP (its audience, the `groups` claim mapped to groups), the OIDC
//! client, a provider `acme` whose endpoints and `api_base_url` point at the fake provider, and a
//! provider `locked` (same fake provider) under a `proxy_only` policy that allows group `eng`.
//! It prints exactly one line of JSON on stdout and serves until stdin reaches EOF or it gets
//! SIGTERM or SIGINT:
//!
//! ```json
//! {"base_url": "http://127.0.0.1:P", "admin_token": "...", "app_id": "...", "api_key": "...",
//!  "idp_issuer": "http://127.0.0.1:Q", "user_token_url": "http://127.0.0.1:Q/dev/token",
//!  "provider": "acme", "proxy_only_provider": "locked", "provider_api_path": "/user"}
//! ```
//!
//! Everything else goes to stderr. The state lives in memory and a temporary directory: it is
//! gone when the process ends.
//!
//! # What an SDK test does with it
//!
//! - **A user token**: `GET {user_token_url}?sub=alice&email=alice@example.com&groups=eng`; the
//!   body (text) is an RS256 JWT valid for an hour. `name` and `roles` (comma-separated) work too.
//! - **Sign-in (`authenticate()`)**: `POST {base_url}/v1/auth/sessions` answers an
//!   `authorize_url` (on Custody). Walk it with a plain HTTP client that does NOT follow
//!   redirects automatically and keeps cookies: `GET authorize_url` redirects (302) to the IdP's
//!   `/authorize?...`; `GET` that shows an HTML login form posting to `{idp_issuer}/authorize`
//!   with hidden fields `client_id`, `redirect_uri`, `state`, `nonce`, `code_challenge`, `scope`
//!   (copy them from the form's `<input type="hidden" name=... value=...>`, HTML-unescaped) plus
//!   `username` (the subject, e.g. `alice`) and `action=sign-in` (`action=cancel` refuses),
//!   `application/x-www-form-urlencoded`. The IdP answers 302 to Custody's
//!   `/v1/auth/callback?code=...&state=...`; `GET` it (with the cookies Custody set on the first
//!   step), after which polling `GET /v1/auth/sessions/{id}` reports the session complete.
//! - **Connecting a provider**: `POST /v1/connect/sessions` answers a `connect_url`. `GET` it
//!   (keep the cookies it sets: the connect callback requires the HttpOnly cookie that
//!   `/v1/connect/start` sets), which redirects (302) to the fake provider's `/authorize`. The
//!   provider consents at once: its answer is a 302 straight back to Custody's
//!   `/v1/connect/callback?code=...&state=...`; `GET` that with the cookies, and Custody redirects
//!   to `return_url` with `status=connected&grant_id=...`. The provider account is `fake-user`
//!   unless `&login=NAME` is appended to the provider's `/authorize` URL before following it.
//! - **The proxy**: `GET {base_url}/v1/proxy/acme{provider_api_path}` with the API key and the
//!   user's token answers the provider's `{"login": ..., "id": ...}` for the connected account.
//!   `POST /v1/token` for `locked` is 403 `handout_disabled`; the proxy works for it.

use custody_tests::fake_idp::FakeIdp;
use custody_tests::fake_oauth::{FakeOAuth, CLIENT_SECRET};
use serde_json::{json, Value};

const ADMIN: &str = "sdk-env-admin-token";
const MASTER_KEYS: &str = "sdk:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OIDC_CLIENT_ID: &str = "custody-sdk-env";
const OIDC_CLIENT_SECRET: &str = "custody-sdk-env-client-secret-0123456789";

/// Runs the environment until stdin closes or a termination signal arrives.
pub async fn run(args: &[String]) -> Result<(), String> {
    if let Some(other) = args.first() {
        return Err(format!("sdk-env takes no options (got `{other}`)"));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let idp = FakeIdp::start().await;
    idp.advertise_sign_in();
    let oauth = FakeOAuth::start().await;
    let mut config = custody_server::Config::for_tests(
        &format!("sqlite://{}", dir.path().join("custody.db").display()),
        dir.path(),
        ADMIN,
        MASTER_KEYS,
    );
    config.listen = "127.0.0.1:0".parse().map_err(|_| "address")?;
    config.allow_insecure_issuers = true;
    let server = custody_server::start(config).await.map_err(|e| e.to_string())?;
    let base = server.public_url.clone();
    idp.register_client(
        OIDC_CLIENT_ID,
        OIDC_CLIENT_SECRET,
        &[&format!("{base}/v1/auth/callback"), &format!("{base}/wallet/auth/callback")],
        &[&format!("{base}/wallet/sign-in")],
    );
    let http = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        let request = http.request(method, format!("{base}{path}")).bearer_auth(ADMIN).json(&body);
        async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                Ok(body)
            } else {
                Err(format!("set-up call failed with {status}: {body}"))
            }
        }
    };
    use reqwest::Method;
    let app = admin(Method::POST, "/v1/apps", json!({"name": "SDK tests"})).await?;
    let app_id = app["id"].as_str().ok_or("no app id")?.to_owned();
    let api_key = app["api_key"].as_str().ok_or("no api key")?.to_owned();
    admin(
        Method::POST,
        &format!("/v1/apps/{app_id}/identity-provider"),
        json!({"issuer_url": idp.issuer(), "audience": idp.audience(), "claims": {"group": "groups"}}),
    )
    .await?;
    admin(
        Method::PUT,
        &format!("/v1/apps/{app_id}/identity-provider/oidc"),
        json!({"client_id": OIDC_CLIENT_ID, "client_secret": OIDC_CLIENT_SECRET}),
    )
    .await?;
    for name in ["acme", "locked"] {
        let mut provider = oauth.provider_body(&["read"]);
        provider["client_secret"] = json!(CLIENT_SECRET);
        provider["api_base_url"] = json!(oauth.api_base_url());
        admin(Method::PUT, &format!("/v1/apps/{app_id}/providers/{name}"), provider).await?;
    }
    admin(
        Method::PUT,
        &format!("/v1/apps/{app_id}/policies/locked"),
        json!({"allow_groups": ["eng"], "token_access": "proxy_only"}),
    )
    .await?;
    let line = json!({
        "base_url": base,
        "admin_token": ADMIN,
        "app_id": app_id,
        "api_key": api_key,
        "idp_issuer": idp.issuer(),
        "user_token_url": format!("{}/dev/token", idp.issuer()),
        "provider": "acme",
        "proxy_only_provider": "locked",
        "provider_api_path": "/user",
    });
    println!("{line}");
    eprintln!("sdk-env: serving; close stdin or send SIGTERM/SIGINT to stop");
    wait_for_end().await;
    server.shutdown().await;
    drop((idp, oauth, dir));
    Ok(())
}

/// Returns when stdin reaches EOF (or fails), or on SIGINT or SIGTERM.
async fn wait_for_end() {
    // A blocking thread reads stdin (the workspace's Tokio has no `io-std`); it ends with EOF.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 1024];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    });
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = stdin_closed => {}
        _ = terminated => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
