//! `cargo xtask demo`: the whole product on one machine, narrated.
//!
//! Starts Custody in-process on a temporary SQLite store, next to a demo identity provider and a
//! demo OAuth provider on loopback, then walks through the product, printing each step and the
//! HTTP call it makes: an app, its identity provider (detection and claim defaults), a user's
//! first JWT (the user created, the mappings locked), connecting a provider, fetching a token, a
//! refresh, the proxy (and a `proxy_only` policy), a policy denial, a Clerk-style signed deletion webhook, and the user's tokens gone.
//! Every step checks its answer and the demo stops loudly if one does not do what it says. It
//! ends with the Wallet URL and keeps serving until Ctrl-C.

use custody_tests::fake_idp::FakeIdp;
use custody_tests::fake_oauth::FakeOAuth;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "demo-admin-token";
const MASTER_KEYS: &str = "demo:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Demo {
    base: String,
    http: reqwest::Client,
    step: usize,
    /// The browser's cookies for Custody (the connect flow binds itself to the browser that
    /// opened it with a cookie), by name.
    cookies: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

fn dim(s: &str) -> String {
    format!("\x1b[2m{s}\x1b[0m")
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 300 {
        format!("{}…", &text[..300])
    } else {
        text
    }
}

impl Demo {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!("\n\x1b[1m{}. {title}\x1b[0m", self.step);
    }

    fn say(&self, text: &str) {
        println!("   {text}");
    }

    /// One HTTP call, printed, with its expected status checked.
    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        user_token: Option<&str>,
        body: Option<Value>,
        expect: StatusCode,
    ) -> Result<(Value, reqwest::header::HeaderMap), String> {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let mut shown = format!("{method} {}", url.trim_start_matches(&self.base));
        let mut req = self.http.request(method, &url);
        let cookies = self.cookie_header();
        if url.starts_with(&self.base) && !cookies.is_empty() {
            req = req.header(reqwest::header::COOKIE, cookies);
        }
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
            shown.push_str(if b == ADMIN { "  [admin token]" } else { "  [app API key]" });
        }
        if let Some(t) = user_token {
            req = req.header("x-user-token", t);
            shown.push_str("  [X-User-Token]");
        }
        if let Some(body) = &body {
            req = req.json(body);
            shown.push_str(&format!("  {}", short(body)));
        }
        println!("   {}", dim(&format!("→ {shown}")));
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if url.starts_with(&self.base) {
            self.keep_cookies(&headers);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let location = headers.get("location").and_then(|v| v.to_str().ok()).map(|l| format!(" Location: {l}"));
        println!("   {}", dim(&format!("← {status}{} {}", location.unwrap_or_default(), short(&value))));
        if status != expect {
            return Err(format!("step {}: expected {expect}, got {status}: {value}", self.step));
        }
        Ok((value, headers))
    }

    fn cookie_header(&self) -> String {
        let jar = self.cookies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        jar.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }

    /// Keeps the cookies a response of Custody sets, forgetting those it deletes (`Max-Age=0`).
    fn keep_cookies(&self, headers: &reqwest::header::HeaderMap) {
        let mut jar = self.cookies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for value in headers.get_all(reqwest::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let mut parts = value.split(';');
            let Some((name, val)) = parts.next().and_then(|p| p.trim().split_once('=')) else { continue };
            if val.is_empty() || parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0")) {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), val.to_owned());
            }
        }
    }

    fn check(&self, ok: bool, what: &str) -> Result<(), String> {
        if ok {
            println!("   \x1b[32m✓\x1b[0m {what}");
            Ok(())
        } else {
            Err(format!("step {}: {what} — did not hold", self.step))
        }
    }
}

fn location(headers: &reqwest::header::HeaderMap) -> Result<String, String> {
    headers.get("location").and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or_else(|| "no Location header".into())
}

/// `cargo xtask demo [--listen ADDR] [--no-wait]`.
pub async fn run(args: &[String]) -> Result<(), String> {
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut wait = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => listen = it.next().cloned().ok_or("--listen needs an address")?,
            "--no-wait" => wait = false,
            other => return Err(format!("unknown demo option `{other}`")),
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let idp = FakeIdp::start().await;
    // The demo IdP also offers OpenID Connect sign-in (for the Wallet at the end).
    idp.advertise_sign_in();
    let oauth = FakeOAuth::start().await;
    let mut config = custody_server::Config::for_tests(
        &format!("sqlite://{}", dir.path().join("custody.db").display()),
        dir.path(),
        ADMIN,
        MASTER_KEYS,
    );
    config.listen = listen.parse().map_err(|_| format!("--listen: bad address `{listen}`"))?;
    let server = match custody_server::start(config.clone()).await {
        Ok(s) => s,
        Err(_) => {
            // The port is taken: any free one will do.
            config.listen = "127.0.0.1:0".parse().map_err(|_| "address")?;
            custody_server::start(config).await.map_err(|e| e.to_string())?
        }
    };
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().map_err(|e| e.to_string())?;
    let mut d = Demo { base: server.public_url.clone(), http, step: 0, cookies: Default::default() };
    println!(
        "Custody demo: Custody at {}, a demo identity provider at {}, a demo OAuth provider at {}.",
        d.base,
        idp.issuer(),
        oauth.base_url()
    );
    println!("{}", dim("(SQLite store in a temporary directory; everything is gone when the demo stops)"));

    d.step("The operator creates an app");
    let (app, _) = d
        .call(Method::POST, "/v1/apps", Some(ADMIN), None, Some(json!({"name": "Acme Assistant"})), StatusCode::CREATED)
        .await?;
    let app_id = app["id"].as_str().ok_or("no id")?.to_owned();
    let key = app["api_key"].as_str().ok_or("no api key")?.to_owned();
    d.check(key.starts_with("ck_"), "the app's API key is shown once, in this answer only")?;

    d.step("Discover the app's identity provider");
    let (found, _) = d
        .call(
            Method::POST,
            &format!("/v1/apps/{app_id}/identity-provider/discover"),
            Some(ADMIN),
            None,
            Some(json!({"issuer_url": idp.issuer()})),
            StatusCode::OK,
        )
        .await?;
    d.say(&format!("detected kind `{}`, claim defaults {}", found["kind"], found["claims"]));
    d.say("(a loopback host is detected as custom OIDC; this demo tenant plays a Clerk instance on a custom domain, so it overrides the kind)");
    let (created, _) = d
        .call(
            Method::POST,
            &format!("/v1/apps/{app_id}/identity-provider"),
            Some(ADMIN),
            None,
            Some(json!({"issuer_url": idp.issuer(), "audience": idp.audience(), "kind": "clerk"})),
            StatusCode::CREATED,
        )
        .await?;
    d.check(created["claims"]["group"] == "org_memberships", "Clerk's organisation memberships are the group claim")?;
    d.check(created["claims_locked"] == false, "the claim mappings are not locked yet")?;

    d.step("A user's first JWT: the user is created and the mappings lock");
    let mut claims = idp.claims_for("user_2alice");
    claims["email"] = json!("alice@acme.example");
    claims["name"] = json!("Alice");
    claims["org_memberships"] = json!({"org_research": "member"});
    claims["exp"] = json!(claims["exp"].as_i64().unwrap_or(0) + 3600);
    let alice = idp.sign(claims, custody_tests::fake_idp::Alg::Rs256);
    let (me, _) = d.call(Method::GET, "/v1/me", Some(&key), Some(&alice), None, StatusCode::OK).await?;
    d.check(
        me["status"] == "active" && me["groups"] == json!(["org_research"]),
        "Alice is active, in group org_research",
    )?;
    let (idp_now, _) = d
        .call(Method::GET, &format!("/v1/apps/{app_id}/identity-provider"), Some(ADMIN), None, None, StatusCode::OK)
        .await?;
    d.check(idp_now["claims_locked"] == true, "the claim mappings are now locked")?;

    d.step("Alice connects the demo provider (OAuth authorization code with PKCE)");
    let mut provider = oauth.provider_body(&["mail.read"]);
    provider["client_secret"] = json!(custody_tests::fake_oauth::CLIENT_SECRET);
    provider["api_base_url"] = json!(oauth.api_base_url());
    d.call(
        Method::PUT,
        &format!("/v1/apps/{app_id}/providers/mail"),
        Some(ADMIN),
        None,
        Some(provider),
        StatusCode::OK,
    )
    .await?;
    // Access tokens that expire within the refresh window, so the next hand-outs refresh.
    oauth.set_expires_in(30);
    let (session, _) = d
        .call(
            Method::POST,
            "/v1/connect/sessions",
            Some(&key),
            Some(&alice),
            Some(json!({"provider": "mail", "return_url": "http://127.0.0.1:9/connected"})),
            StatusCode::CREATED,
        )
        .await?;
    let connect_url = session["connect_url"].as_str().ok_or("no connect_url")?.to_owned();
    let (_, h) = d.call(Method::GET, &connect_url, None, None, None, StatusCode::FOUND).await?;
    d.say("the browser goes to the provider, which asks for consent (the demo provider consents at once)");
    let (_, h) = d.call(Method::GET, &location(&h)?, None, None, None, StatusCode::FOUND).await?;
    let (_, h) = d.call(Method::GET, &location(&h)?, None, None, None, StatusCode::FOUND).await?;
    let back = location(&h)?;
    d.check(back.contains("status=connected"), "back at the app's return URL with status=connected")?;

    d.step("The app fetches Alice's access token");
    let (t1, _) = d
        .call(Method::POST, "/v1/token", Some(&key), Some(&alice), Some(json!({"provider": "mail"})), StatusCode::OK)
        .await?;
    d.check(oauth.refresh_calls() == 1, "the token expired within the refresh window, so Custody refreshed it first")?;
    oauth.set_expires_in(3600);

    d.step("A refresh, and the audit trail");
    let (t2, _) = d
        .call(Method::POST, "/v1/token", Some(&key), Some(&alice), Some(json!({"provider": "mail"})), StatusCode::OK)
        .await?;
    d.check(
        t1["access_token"] != t2["access_token"] && oauth.refresh_calls() == 2,
        "a new access token from a second refresh",
    )?;
    let (t3, _) = d
        .call(Method::POST, "/v1/token", Some(&key), Some(&alice), Some(json!({"provider": "mail"})), StatusCode::OK)
        .await?;
    d.check(
        t3["access_token"] == t2["access_token"] && oauth.refresh_calls() == 2,
        "a fresh token is handed out as is",
    )?;
    let (audit, _) = d
        .call(
            Method::GET,
            &format!("/v1/apps/{app_id}/audit?action=token.refresh"),
            Some(ADMIN),
            None,
            None,
            StatusCode::OK,
        )
        .await?;
    d.check(audit["items"].as_array().is_some_and(|a| a.len() == 2), "every refresh is in the audit log")?;

    d.step("The proxy: the app calls the provider's API and never sees the token");
    let (who, h) = d.call(Method::GET, "/v1/proxy/mail/user", Some(&key), Some(&alice), None, StatusCode::OK).await?;
    d.check(
        who["login"].is_string() && h.get("x-custody-proxy").is_some_and(|v| v == "upstream"),
        "the provider's own answer, through Custody, with X-Custody-Proxy: upstream",
    )?;
    d.call(
        Method::PUT,
        &format!("/v1/apps/{app_id}/policies/mail"),
        Some(ADMIN),
        None,
        Some(json!({"allow_groups": ["org_research"], "token_access": "proxy_only"})),
        StatusCode::OK,
    )
    .await?;
    let (refused, _) = d
        .call(
            Method::POST,
            "/v1/token",
            Some(&key),
            Some(&alice),
            Some(json!({"provider": "mail"})),
            StatusCode::FORBIDDEN,
        )
        .await?;
    d.check(refused["code"] == "handout_disabled", "with a proxy_only policy the token is never handed out")?;
    let (again, _) = d.call(Method::GET, "/v1/proxy/mail/user", Some(&key), Some(&alice), None, StatusCode::OK).await?;
    d.check(again["login"] == who["login"], "and the proxy still works")?;

    d.step("A policy: only the org_finance group may use the provider");
    d.call(
        Method::PUT,
        &format!("/v1/apps/{app_id}/policies/mail"),
        Some(ADMIN),
        None,
        Some(json!({"allow_groups": ["org_finance"]})),
        StatusCode::OK,
    )
    .await?;
    let (denied, _) = d
        .call(
            Method::POST,
            "/v1/token",
            Some(&key),
            Some(&alice),
            Some(json!({"provider": "mail"})),
            StatusCode::FORBIDDEN,
        )
        .await?;
    d.check(denied["code"] == "policy_denied", "Alice is denied: policy_denied")?;
    d.call(
        Method::DELETE,
        &format!("/v1/apps/{app_id}/policies/mail"),
        Some(ADMIN),
        None,
        None,
        StatusCode::NO_CONTENT,
    )
    .await?;

    d.step("Clerk says Alice was deleted: a signed webhook");
    let secret = format!("whsec_{}", base64_std(b"custody-demo-webhook-secret-32b!"));
    d.call(
        Method::POST,
        &format!("/v1/apps/{app_id}/identity-provider/webhook/enable"),
        Some(ADMIN),
        None,
        Some(json!({"signing_secret": secret})),
        StatusCode::OK,
    )
    .await?;
    let body = json!({"type": "user.deleted", "object": "event", "timestamp": now_ms(),
                      "data": {"id": "user_2alice", "deleted": true, "object": "user"}})
    .to_string();
    let msg_id = "msg_demo_deletion_1";
    let timestamp = now_secs();
    let wh = svix::webhooks::Webhook::new(&secret).map_err(|e| format!("svix: {e:?}"))?;
    let signature = wh.sign(msg_id, timestamp, body.as_bytes()).map_err(|e| format!("svix: {e:?}"))?;
    println!("   {}", dim(&format!("→ POST /v1/webhooks/{app_id}  [svix-id, svix-timestamp, svix-signature]  {body}")));
    let resp = d
        .http
        .post(format!("{}/v1/webhooks/{app_id}", d.base))
        .header("svix-id", msg_id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let counts: Value = resp.json().await.unwrap_or(Value::Null);
    println!("   {}", dim(&format!("← {status} {counts}")));
    d.check(status == StatusCode::OK && counts["processed"] == 1, "the deletion was processed")?;

    d.step("Alice's tokens are gone");
    let (gone, _) = d
        .call(
            Method::POST,
            "/v1/token",
            Some(&key),
            Some(&alice),
            Some(json!({"provider": "mail"})),
            StatusCode::FORBIDDEN,
        )
        .await?;
    d.check(gone["code"] == "user_deprovisioned", "every later request for Alice is refused, even with a valid JWT")?;
    let (grants, _) =
        d.call(Method::GET, &format!("/v1/apps/{app_id}/grants"), Some(ADMIN), None, None, StatusCode::OK).await?;
    d.check(
        grants["items"].as_array().is_some_and(|g| g.iter().all(|g| g["status"] == "revoked")),
        "her grant is revoked and its tokens deleted",
    )?;
    server.state.vault().drain_outbox(100).await.map_err(|e| e.to_string())?;
    d.check(!oauth.revoked_tokens().is_empty(), "and the provider was told to revoke them (RFC 7009)")?;

    let wallet = wallet_step(&mut d, &idp, &app_id, &oauth).await?;
    println!("\n\x1b[1mAll steps passed.\x1b[0m");
    if let Some(url) = wallet {
        println!("Open the Wallet: {url}");
    }
    if wait {
        println!("Custody keeps serving at {} until Ctrl-C.", d.base);
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    }
    server.shutdown().await;
    Ok(())
}

/// Prepares the Wallet for a second user, Bob, with one imported grant, and returns its URL.
async fn wallet_step(d: &mut Demo, idp: &FakeIdp, app_id: &str, oauth: &FakeOAuth) -> Result<Option<String>, String> {
    d.step("The Wallet: Bob's own page of grants");
    let (client_id, client_secret) = ("custody-demo", "custody-demo-client-secret");
    idp.register_client(
        client_id,
        client_secret,
        &[&format!("{}/v1/auth/callback", d.base), &format!("{}/wallet/auth/callback", d.base)],
        &[&format!("{}/wallet/sign-in", d.base)],
    );
    d.call(
        Method::PUT,
        &format!("/v1/apps/{app_id}/identity-provider/oidc"),
        Some(ADMIN),
        None,
        Some(json!({"client_id": client_id, "client_secret": client_secret})),
        StatusCode::OK,
    )
    .await?;
    let (access, refresh) = oauth.issue_tokens();
    d.call(
        Method::POST,
        &format!("/v1/apps/{app_id}/grants"),
        Some(ADMIN),
        None,
        Some(json!({"subject": "bob", "provider": "mail", "access_token": access, "refresh_token": refresh, "expires_in": 3600, "scopes": ["mail.read"]})),
        StatusCode::CREATED,
    )
    .await?;
    let url = format!("{}/wallet/sign-in?app_id={app_id}", d.base);
    let (_, _) = d.call(Method::GET, &url, None, None, None, StatusCode::OK).await?;
    d.check(
        idp_discovery_has_sign_in(d, idp).await?,
        "the identity provider advertises sign-in, and the Wallet's client is registered with Custody",
    )?;
    let (_, h) =
        d.call(Method::GET, &format!("/wallet/login?app_id={app_id}"), None, None, None, StatusCode::FOUND).await?;
    d.check(
        location(&h)?.starts_with(&idp.authorization_endpoint()),
        "the Wallet's sign-in button leads to the identity provider",
    )?;
    d.say("sign in as `bob` at the demo identity provider's login form to see and revoke the grant");
    Ok(Some(url))
}

/// Whether the demo IdP's discovery document now lists the sign-in endpoints.
async fn idp_discovery_has_sign_in(d: &Demo, idp: &FakeIdp) -> Result<bool, String> {
    let doc: Value = d
        .http
        .get(format!("{}/.well-known/openid-configuration", idp.issuer()))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok(doc["authorization_endpoint"].is_string() && doc["end_session_endpoint"].is_string())
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn now_ms() -> i64 {
    now_secs() * 1000
}
